"""Per-container window order and start time, for whole batches at once.

:class:`ContainerTracker` remembers, per container key (``node/container``), the start of the first and
of the last window the service accepted, in NumPy arrays indexed by a *slot* per container (a dict maps
the key to its slot once per distinct container and batch; the pipeline caches the slot per identity).
A batch is recorded with one call, :meth:`ContainerTracker.observe`, whose work is array operations:

* a window is accepted when it starts after every window of its container seen before it (earlier
  batches, and earlier windows of the same batch in arrival order); otherwise it is out of order and
  its container's state does not change;
* the first window seen of a container fixes its first start (the container's age is counted from it
  when the sensor does not know it).

The tracker is bounded: beyond ``capacity`` containers the least recently seen are dropped (exactly
least recently seen, by batch; ties within a batch in any order).  The candidates for dropping are found
with one partial sort per ``capacity // 64`` drops, so a full tracker with a steady churn of containers
does not scan its arrays per new container.

>>> t = ContainerTracker(capacity=2)
>>> ok, prev, first = t.observe(t.slots(["n/a", "n/b", "n/a"]), np.array([10.0, 5.0, 10.0]))
>>> ok.tolist(), prev.tolist(), first.tolist()
([True, True, False], [-inf, -inf, 10.0], [10.0, 5.0, 10.0])
>>> t.last("n/a"), t.to_list()
(10.0, [['n/a', 10.0, 10.0], ['n/b', 5.0, 5.0]])
>>> _ = t.observe(t.slots(["n/c"]), np.array([20.0]))  # a third container: the least recently seen goes
>>> len(t), t.last("n/c"), t.last("n/a") == -math.inf or t.last("n/b") == -math.inf
(2, 20.0, True)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

_I64 = np.int64
_F64 = np.float64
_NEVER = np.iinfo(np.int64).max  # "seen" of a free slot: never a candidate for dropping


class ContainerTracker:
    """First and last accepted window start per container, bounded (see the module docstring)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._tick = 0
        self._gens = 0
        self._clear()

    def _clear(self) -> None:
        """No container tracked (the batch ticks and assignment numbers go on)."""
        self._slot: dict[str, int] = {}
        self._keys: list[str | None] = []
        self._free: list[int] = []
        self._first = np.empty(0, dtype=_F64)  # per slot; NaN until the container's first window
        self._last = np.empty(0, dtype=_F64)  # per slot; -inf until then
        self._seen = np.empty(0, dtype=_I64)  # per slot: tick of the batch that last saw it (_NEVER: free)
        self.gen = np.empty(0, dtype=_I64)  # per slot: unique number of the assignment (never reused)
        self._victims: list[int] = []  # slots in least recently seen order, as of _victim_ticks
        self._victim_ticks: list[int] = []

    def __len__(self) -> int:
        return len(self._slot)

    # -- slots ----------------------------------------------------------------------------------------
    def slots(self, keys: Sequence[str]) -> np.ndarray:
        """The slot of each key (new containers get one; nothing is dropped until :meth:`observe`)."""
        found = list(map(self._slot.get, keys))
        try:
            return np.array(found, dtype=_I64)
        except TypeError:  # some are new
            pass
        for j, s in enumerate(found):
            if s is None:
                found[j] = self.slot(keys[j])
        return np.array(found, dtype=_I64)

    def slot(self, key: str) -> int:
        """The slot of ``key``, a new one when the container is not tracked."""
        s = self._slot.get(key)
        if s is not None:
            return s
        if self._free:
            s = self._free.pop()
            self._keys[s] = key
        else:
            s = len(self._keys)
            self._keys.append(key)
            if s >= len(self._first):
                self._grow(max(64, 2 * len(self._first)))
        self._slot[key] = s
        self._gens += 1
        self.gen[s] = self._gens
        self._first[s] = math.nan
        self._last[s] = -math.inf
        self._seen[s] = self._tick
        return s

    def _grow(self, size: int) -> None:
        n = len(self._first)
        self._first = np.concatenate([self._first, np.full(size - n, math.nan)])
        self._last = np.concatenate([self._last, np.full(size - n, -math.inf)])
        self._seen = np.concatenate([self._seen, np.full(size - n, _NEVER, dtype=_I64)])
        self.gen = np.concatenate([self.gen, np.zeros(size - n, dtype=_I64)])

    # -- batches --------------------------------------------------------------------------------------
    def observe(self, slots: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Record windows ``(slot, start)`` given in arrival order.

        Returns ``(accepted, previous, first)`` per window: whether it starts after its container's last
        window before it, that last start (``-inf`` for a container's first window), and the first start
        of its container after the batch.  Then drops the least recently seen containers beyond capacity.
        """
        m = len(slots)
        if m == 0:
            return np.zeros(0, dtype=bool), np.zeros(0, dtype=_F64), np.zeros(0, dtype=_F64)
        self._tick += 1
        s_sorted = np.sort(slots)
        if m == 1 or (s_sorted[1:] != s_sorted[:-1]).all():  # one window per container: the usual batch
            prev = self._last[slots]
            accepted = starts > prev
            new = np.isnan(self._first[slots])
            self._first[slots[new]] = starts[new]
            self._last[slots[accepted]] = starts[accepted]
        else:
            accepted, prev = self._observe_repeated(slots, starts)
        self._seen[slots] = self._tick
        first = self._first[slots]
        if len(self._slot) > self.capacity:
            self._drop(len(self._slot) - self.capacity)
        return accepted, prev, first

    def _observe_repeated(self, slots: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`observe` for batches with several windows of a container (exact, still array work).

        The last start before a window is the greater of the container's stored last start and the
        greatest start among the container's earlier windows in the batch (an exclusive running maximum
        per container, computed on ranks so that it can run over all containers at once).
        """
        m = len(slots)
        order = np.argsort(slots, kind="stable")  # per container, in arrival order
        ss = slots[order]
        ts = starts[order]
        head = np.ones(m, dtype=bool)
        head[1:] = ss[1:] != ss[:-1]
        group = np.cumsum(head) - 1
        by_value = np.argsort(ts, kind="stable")
        sorted_ts = ts[by_value]
        rank = np.empty(m, dtype=_I64)
        rank[by_value] = np.arange(m, dtype=_I64)
        # running maximum of the rank within each group: the group offset dominates every earlier group
        offset = group * m
        incl = np.maximum.accumulate(offset + rank) - offset
        excl = np.empty(m, dtype=_I64)
        excl[0] = -1
        excl[1:] = incl[:-1]
        excl[head] = -1
        within = np.where(excl >= 0, sorted_ts[np.maximum(excl, 0)], -math.inf)
        prev_sorted = np.maximum(self._last[ss], within)
        acc_sorted = ts > prev_sorted
        heads = ss[head]
        new = np.isnan(self._first[heads])
        self._first[heads[new]] = ts[head][new]  # a container's first window is always accepted
        tail = np.ones(m, dtype=bool)
        tail[:-1] = head[1:]
        ends = ss[tail]
        self._last[ends] = np.maximum(self._last[ends], sorted_ts[incl[tail]])
        accepted = np.empty(m, dtype=bool)
        accepted[order] = acc_sorted
        prev = np.empty(m, dtype=_F64)
        prev[order] = prev_sorted
        return accepted, prev

    def _drop(self, n: int) -> None:
        """Forget the ``n`` least recently seen containers."""
        victims, ticks = self._victims, self._victim_ticks
        seen = self._seen
        while n > 0:
            if not victims:
                live = len(self._slot)
                k = min(live, max(n, self.capacity // 64, 1))
                cand = np.argpartition(seen, k - 1)[:k]  # k <= live slots: free ones (_NEVER) come last
                cand = cand[np.argsort(seen[cand], kind="stable")]
                # popped from the end: oldest last
                victims.extend(cand[::-1].tolist())
                ticks.extend(seen[cand[::-1]].tolist())
            s = victims.pop()
            t = ticks.pop()
            if seen[s] != t:  # seen again since (or already dropped): no longer among the oldest
                continue
            key = self._keys[s]
            assert key is not None
            del self._slot[key]
            self._keys[s] = None
            seen[s] = _NEVER
            self._first[s] = math.nan
            self._last[s] = -math.inf
            self._free.append(s)
            n -= 1

    # -- single containers and persistence ------------------------------------------------------------
    def last(self, key: str) -> float:
        """Start of the last accepted window of a container (``-inf`` when not tracked)."""
        s = self._slot.get(key)
        return float(self._last[s]) if s is not None else -math.inf

    def rows(self, keys: Iterable[str]) -> list[list[Any]]:
        """``[key, first, last]`` of the tracked containers among ``keys`` (an image's, handed to another shard)."""
        out = []
        for k in keys:
            s = self._slot.get(k)
            if s is not None:
                out.append([k, float(self._first[s]), float(self._last[s])])
        return out

    def put(self, rows: Iterable[Sequence[Any]]) -> None:
        """Track the containers of ``[key, first, last]`` rows as given (an image handed over from another shard;
        the least recently seen beyond capacity are dropped).

        >>> t = ContainerTracker(capacity=4)
        >>> t.put([["n/a", 5.0, 30.0]]); t.last("n/a"), t.rows(["n/a", "n/b"])
        (30.0, [['n/a', 5.0, 30.0]])
        """
        self._tick += 1
        for k, first, last in rows:
            s = self.slot(str(k))
            self._first[s] = float(first)
            self._last[s] = float(last)
            self._seen[s] = self._tick
        if len(self._slot) > self.capacity:
            self._drop(len(self._slot) - self.capacity)

    def to_list(self) -> list[list[Any]]:
        """``[key, first, last]`` per container, least recently seen first (the saved form)."""
        slots = np.fromiter(self._slot.values(), dtype=_I64, count=len(self._slot))
        slots = slots[np.argsort(self._seen[slots], kind="stable")]
        keys = self._keys
        return [[keys[s], f, la] for s, f, la in
                zip(slots.tolist(), self._first[slots].tolist(), self._last[slots].tolist(), strict=True)]

    def load(self, rows: Iterable[Sequence[Any]]) -> None:
        """Replace the state with saved ``[key, first, last]`` rows (least recently seen first)."""
        self._clear()
        for row in rows:
            self.put([row])  # one batch tick per row: their order is kept
