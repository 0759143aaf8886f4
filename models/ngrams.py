"""Hashed syscall n-grams: the Python side of the sensor's n-gram specification.

The specification (``docs/ngram-spec.md``) in short:

* each syscall is its canonical id (:func:`models.syscalls.canonical_id`, FNV-1a of the canonical name);
* every thread keeps its last ``MAX_ORDER - 1`` ids; when a syscall arrives, for each order ``n`` in
  :data:`ORDERS` for which the thread has at least ``n - 1`` ids of history, the n-gram
  ``(id_{t-n+1}, ..., id_t)`` is hashed by :func:`gram_hash` and the bucket
  ``(n - MIN_ORDER) * BUCKETS + (hash & (BUCKETS - 1))`` is incremented;
* history belongs to the thread, not the window: a gram that spans a window boundary counts in the
  window of its last call; history is dropped when the thread exits.

The kernel program (``sensor/bpf/ngrams.h``) implements the same arithmetic with 32-bit unsigned
wrap-around; ``tests/test_evaluate_grams.py``, ``tests/test_sensor_bpf_decode.py`` and (as root, against
the real kernel) ``tests/test_sensor_bpf_kernel.py`` check both sides against golden values.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from models.syscalls import canonical_id

ORDERS: tuple[int, ...] = (2, 3, 4)
MIN_ORDER = ORDERS[0]
MAX_ORDER = ORDERS[-1]
BUCKETS = 4096  # per order, a power of two
NUM_BUCKETS = BUCKETS * len(ORDERS)

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193
_M32 = 0xFFFFFFFF


def _fmix32(h: int) -> int:
    """MurmurHash3's 32-bit finaliser (avalanche)."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    h ^= h >> 16
    return h


def gram_hash(ids: Sequence[int]) -> int:
    """32-bit hash of an n-gram of canonical syscall ids (oldest first).

    Word-wise FNV-1a seeded with the order, then MurmurHash3's finaliser.

    >>> gram_hash([1, 2]) != gram_hash([2, 1])
    True
    >>> hex(gram_hash([canonical_id("read"), canonical_id("write")]))
    '0x15a481fe'
    """
    h = ((_FNV_OFFSET ^ len(ids)) * _FNV_PRIME) & _M32
    for i in ids:
        h = ((h ^ (i & _M32)) * _FNV_PRIME) & _M32
    return _fmix32(h)


def bucket_of(ids: Sequence[int]) -> int:
    """Global bucket index in ``[0, NUM_BUCKETS)`` of an n-gram of order ``len(ids)``."""
    n = len(ids)
    if n not in ORDERS:
        raise ValueError(f"order {n} is not one of {ORDERS}")
    return (n - MIN_ORDER) * BUCKETS + (gram_hash(ids) & (BUCKETS - 1))


def order_of(bucket: int) -> int:
    """The n-gram order a global bucket index belongs to."""
    return MIN_ORDER + bucket // BUCKETS


class NgramCounter:
    """Per-thread history and bucket counts, exactly as the sensor keeps them.

    >>> c = NgramCounter()
    >>> c.feed(["read", "write", "read", "close"])
    >>> sum(c.drain().values())  # 3 bigrams + 2 trigrams + 1 four-gram
    6
    """

    def __init__(self) -> None:
        self._history: dict[int, list[int]] = {}
        self._counts: Counter[int] = Counter()

    def feed_ids(self, ids: Iterable[int], thread: int = 0) -> None:
        hist = self._history.setdefault(thread, [])
        for sid in ids:
            hist.append(sid)
            if len(hist) > MAX_ORDER:
                del hist[0]
            for n in ORDERS:
                if len(hist) >= n:
                    self._counts[bucket_of(hist[-n:])] += 1

    def feed(self, names: Iterable[str], thread: int = 0) -> None:
        self.feed_ids((canonical_id(n) for n in names), thread)

    def thread_exit(self, thread: int) -> None:
        self._history.pop(thread, None)

    def drain(self) -> dict[int, int]:
        """Counts since the last drain (history is kept)."""
        out = dict(self._counts)
        self._counts.clear()
        return out


def ngram_counts(names: Sequence[str]) -> dict[int, int]:
    """Bucket counts of one single-threaded trace of syscall names, from an empty history."""
    c = NgramCounter()
    c.feed(names)
    return c.drain()


def dense(counts: dict[int, int]) -> np.ndarray:
    """Sparse bucket counts -> dense float64 vector of length :data:`NUM_BUCKETS`."""
    out = np.zeros(NUM_BUCKETS, dtype=np.float64)
    if counts:
        idx = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        out[idx] = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
    return out
