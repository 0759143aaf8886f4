"""Unacknowledged batches waiting for the service: the interface and its in-memory implementation.

The transport talks to a :class:`BatchBuffer` only: :meth:`BatchBuffer.add` assigns the next sequence number,
a batch leaves when the service has applied it or when the buffer evicts it to stay within its bounds
(returned from ``add``).  :class:`MemoryBuffer` starts its counter from the wall clock in microseconds, so a
restarted sensor keeps numbering above what the service has seen; ``sensor/spool.py`` survives restarts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True)
class Pending:
    """One encoded batch (``baseliner.sensor.wire.encode_batch_body``) and its sequence number."""

    sequence: int
    body: bytes
    vectors: int


class BatchBuffer(Protocol):
    #: True when sequence numbers (and content) survive a restart of the sensor process.
    persistent_sequences: bool

    def add(self, body: bytes, vectors: int) -> tuple[Pending, list[Pending]]:
        """Store a batch under the next sequence number; return it and the batches evicted (oldest first)."""
        ...

    def entries(self) -> Iterator[Pending]:
        """Batches in ascending sequence order."""
        ...

    def release(self, sequence: int) -> Pending | None:
        """Forget one batch (applied by the service); None when it is not (or no longer) held."""
        ...

    def release_through(self, sequence: int) -> list[Pending]:
        """Forget every batch with a sequence number ``<= sequence``."""
        ...

    def advance(self, last_sequence: int) -> None:
        """Make sure batches added from now on get sequence numbers above ``last_sequence``."""
        ...

    def renumber(self, first: int) -> None:
        """Give every held batch a new consecutive number from ``first`` (order kept)."""
        ...

    def is_full(self) -> bool: ...

    def close(self) -> None: ...

    @property
    def batches(self) -> int: ...

    @property
    def nbytes(self) -> int: ...

    @property
    def next_sequence(self) -> int: ...


class MemoryBuffer:
    """Bounded in-memory buffer: at most ``max_batches`` batches and ``max_bytes`` bytes.

    When a new batch would exceed a bound, the oldest batches are evicted: during an outage the
    newest behaviour is what an operator needs first.

    >>> b = MemoryBuffer(max_batches=2, first_sequence=1)
    >>> [p.sequence for p in (b.add(b"a", 1)[0], b.add(b"b", 1)[0])]
    [1, 2]
    >>> entry, evicted = b.add(b"c", 1)
    >>> entry.sequence, [p.sequence for p in evicted], [p.sequence for p in b.entries()]
    (3, [1], [2, 3])
    """

    persistent_sequences = False

    def __init__(self, max_batches: int = 1024, max_bytes: int = 256 * 1024 * 1024,
                 first_sequence: int | None = None) -> None:
        if max_batches < 1:
            raise ValueError(f"max_batches must be >= 1, got {max_batches}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.max_batches = max_batches
        self.max_bytes = max_bytes
        self._next = first_sequence if first_sequence is not None else time.time_ns() // 1000
        if self._next < 1:
            raise ValueError("first_sequence must be >= 1")
        self._items: dict[int, Pending] = {}
        self._bytes = 0

    @property
    def batches(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes

    @property
    def next_sequence(self) -> int:
        return self._next

    def is_full(self) -> bool:
        return len(self._items) >= self.max_batches or self._bytes >= self.max_bytes

    def add(self, body: bytes, vectors: int) -> tuple[Pending, list[Pending]]:
        entry = Pending(self._next, body, vectors)
        self._next += 1
        self._numbered()  # before the batch is stored: a number is never handed out twice
        evicted: list[Pending] = []
        while self._items and (
            len(self._items) + 1 > self.max_batches or self._bytes + len(body) > self.max_bytes
        ):
            oldest = next(iter(self._items))
            evicted.append(self._pop(oldest))
        self._store(entry)
        return entry, evicted

    def _store(self, entry: Pending) -> None:
        self._items[entry.sequence] = entry
        self._bytes += len(entry.body)

    def _pop(self, sequence: int) -> Pending:
        entry = self._items.pop(sequence)
        self._bytes -= len(entry.body)
        return entry

    def _numbered(self) -> None:
        """Hook: ``next_sequence`` moved (a persistent buffer records it)."""

    def entries(self) -> Iterator[Pending]:
        return iter(list(self._items.values()))

    def release(self, sequence: int) -> Pending | None:
        return self._pop(sequence) if sequence in self._items else None

    def release_through(self, sequence: int) -> list[Pending]:
        out = []
        for seq in list(self._items):
            if seq > sequence:
                break
            out.append(self._pop(seq))
        return out

    def advance(self, last_sequence: int) -> None:
        if last_sequence + 1 > self._next:
            self._next = last_sequence + 1
            self._numbered()

    def renumber(self, first: int) -> None:
        items = [self._pop(seq) for seq in list(self._items)]
        self._next = max(self._next, first + len(items))
        self._numbered()
        for i, entry in enumerate(items):
            entry.sequence = first + i
            self._store(entry)

    def close(self) -> None:
        """Nothing to flush: memory content ends with the process."""
