"""Hashed syscall n-grams: the Python side of the sensor's n-gram specification (``docs/ngram-spec.md``).

Orders 2, 3 and 4 have :data:`BUCKETS` buckets each at ``[0, 12288)``, order 6 has :data:`LONG_BUCKETS` at
``[12288, 77824)``.  The kernel program (``sensor/bpf/ngrams.h``) implements the same arithmetic;
``tests/test_evaluate_grams.py``, ``tests/test_sensor_bpf_decode.py`` and ``tests/test_sensor_bpf_kernel.py``
check both sides against golden values.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
from baseliner.models.syscalls import canonical_id

#: Version of the specification (the wire's ``ngram_spec``).  Version 1 had orders 2-4 only; its buckets
#: are version 2's buckets ``[0, SHORT_BUCKETS)`` unchanged, so a v1 vector is a v2 vector without order-6
#: counts.
SPEC_VERSION = 2
ORDERS: tuple[int, ...] = (2, 3, 4, 6)
MIN_ORDER = ORDERS[0]
MAX_ORDER = ORDERS[-1]
#: The short orders, 4,096 buckets each (the sequence tier's likelihood model).
SHORT_ORDERS: tuple[int, ...] = (2, 3, 4)
BUCKETS = 4096  # per short order, a power of two
SHORT_BUCKETS = BUCKETS * len(SHORT_ORDERS)  # 12288: the whole index space of version 1
#: The long order (the novelty tier: has this length-6 context ever been seen?).
LONG_ORDER = 6
LONG_BUCKETS = 65536  # a power of two
ORDER_BUCKETS: dict[int, int] = {2: BUCKETS, 3: BUCKETS, 4: BUCKETS, LONG_ORDER: LONG_BUCKETS}
OFFSETS: dict[int, int] = {2: 0, 3: BUCKETS, 4: 2 * BUCKETS, LONG_ORDER: SHORT_BUCKETS}
NUM_BUCKETS = SHORT_BUCKETS + LONG_BUCKETS  # 77824
#: The orders a sensor counts by default: those the default model uses (order 4: the sequence tier's
#: likelihood, ``NgramDetector(order_weights=(0, 0, 1))``; order 6: ``GramNoveltyDetector``).  A sensor may
#: count any non-empty subset of :data:`ORDERS` (``docs/ngram-spec.md``, section 2); the buckets stay v2's.
SENSOR_ORDERS: tuple[int, ...] = (4, LONG_ORDER)

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
    return OFFSETS[n] + (gram_hash(ids) & (ORDER_BUCKETS[n] - 1))


def check_orders(orders: Iterable[int]) -> tuple[int, ...]:
    """A valid set of orders to count, sorted: a non-empty subset of :data:`ORDERS` without repeats.

    >>> check_orders([6, 4])
    (4, 6)
    >>> check_orders((4, 5))
    Traceback (most recent call last):
    ...
    ValueError: n-gram order 5 is not one of 2, 3, 4, 6 (spec v2 has no order 5)
    """
    if isinstance(orders, (str, bytes)):
        raise ValueError(f"n-gram orders must be integers, got the string {orders!r}")
    out = list(orders)
    if not out:
        raise ValueError(f"at least one n-gram order is needed (any of {', '.join(map(str, ORDERS))})")
    for n in out:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise ValueError(f"n-gram order {n!r} is not an integer")
        if n not in ORDERS:
            why = f" (spec v{SPEC_VERSION} has no order {n})" if MIN_ORDER < n < MAX_ORDER else ""
            raise ValueError(f"n-gram order {n} is not one of {', '.join(map(str, ORDERS))}{why}")
    if len(set(out)) != len(out):
        raise ValueError(f"n-gram orders repeat: {', '.join(map(str, out))}")
    return tuple(sorted(int(n) for n in out))


def parse_orders(text: str) -> tuple[int, ...]:
    """Orders written as a comma-separated list, e.g. ``"4,6"`` (:func:`check_orders` applies).

    >>> parse_orders("2, 3,4,6")
    (2, 3, 4, 6)
    >>> parse_orders("4,x")
    Traceback (most recent call last):
    ...
    ValueError: n-gram orders are comma-separated integers out of 2, 3, 4, 6 (e.g. 4,6), got '4,x'
    """
    parts = [p.strip() for p in text.split(",")]
    try:
        orders = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"n-gram orders are comma-separated integers out of {', '.join(map(str, ORDERS))} "
                         f"(e.g. 4,6), got {text!r}") from None
    return check_orders(orders)


def order_of(bucket: int) -> int:
    """The n-gram order a global bucket index belongs to.

    >>> order_of(0), order_of(8191), order_of(12287), order_of(12288), order_of(NUM_BUCKETS - 1)
    (2, 3, 4, 6, 6)
    """
    if not 0 <= bucket < NUM_BUCKETS:
        raise ValueError(f"bucket {bucket} outside [0, {NUM_BUCKETS})")
    return LONG_ORDER if bucket >= SHORT_BUCKETS else MIN_ORDER + bucket // BUCKETS


class NgramCounter:
    """Per-thread history and bucket counts, exactly as the sensor keeps them.

    ``orders`` are the orders counted (default all of :data:`ORDERS`, as datasets are turned into the
    representation; the sensor counts :data:`SENSOR_ORDERS` by default).  The history always holds
    ``MAX_ORDER - 1`` ids, so the grams of each order are the same whatever else is counted.

    >>> c = NgramCounter()
    >>> c.feed(["read", "write", "read", "close"])
    >>> sum(c.drain().values())  # 3 bigrams + 2 trigrams + 1 four-gram (no six-gram yet)
    6
    >>> c.feed(["read", "write"])  # history carries on: 6 calls, the first six-gram
    >>> sorted(order_of(b) for b in c.drain())
    [2, 2, 3, 3, 4, 4, 6]
    >>> c = NgramCounter(orders=SENSOR_ORDERS)
    >>> c.feed(["read", "write", "read", "close", "read", "write"])
    >>> sorted(order_of(b) for b in c.drain())
    [4, 4, 4, 6]
    """

    def __init__(self, orders: Iterable[int] = ORDERS) -> None:
        self.orders = check_orders(orders)
        self._history: dict[int, list[int]] = {}
        self._counts: Counter[int] = Counter()

    def feed_ids(self, ids: Iterable[int], thread: int = 0) -> None:
        hist = self._history.setdefault(thread, [])
        for sid in ids:
            hist.append(sid)
            if len(hist) > MAX_ORDER:
                del hist[0]
            for n in self.orders:
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


def ngram_counts(names: Sequence[str], orders: Iterable[int] = ORDERS) -> dict[int, int]:
    """Bucket counts of one single-threaded trace of syscall names, from an empty history."""
    c = NgramCounter(orders)
    c.feed(names)
    return c.drain()


def dense(counts: dict[int, int]) -> np.ndarray:
    """Sparse bucket counts -> dense float64 vector of length :data:`NUM_BUCKETS`."""
    out = np.zeros(NUM_BUCKETS, dtype=np.float64)
    if counts:
        idx = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        out[idx] = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
    return out
