"""Vectorised n-gram bucketing, identical to :mod:`baseliner.models.ngrams` (the sensor's specification).

:class:`baseliner.models.ngrams.NgramCounter` is the reference: one Python loop per call.  Evaluation runs over
millions of calls, so this module computes the same buckets with numpy over a whole trace at once.
``tests/test_evaluate_grams.py`` checks both agree bucket for bucket, including across window
boundaries.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from baseliner.models.ngrams import OFFSETS, ORDER_BUCKETS, ORDERS
from baseliner.models.syscalls import canonical_id

_FNV_OFFSET = np.uint64(0x811C9DC5)
_FNV_PRIME = np.uint64(0x01000193)
_M32 = np.uint64(0xFFFFFFFF)


def _fmix32(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(16))
    h = (h * np.uint64(0x85EBCA6B)) & _M32
    h = h ^ (h >> np.uint64(13))
    h = (h * np.uint64(0xC2B2AE35)) & _M32
    return h ^ (h >> np.uint64(16))


def canonical_ids(names: Sequence[str]) -> np.ndarray:
    """Canonical ids (``baseliner.models.syscalls.canonical_id``) of a sequence of syscall names, as uint64."""
    return np.fromiter((canonical_id(n) for n in names), dtype=np.uint64, count=len(names))


def gram_buckets(ids: np.ndarray, order: int) -> np.ndarray:
    """Global bucket of every n-gram of ``order`` in ``ids``; element ``k`` is the gram ending at ``k + order - 1``."""
    if order not in ORDERS:
        raise ValueError(f"order {order} is not one of {ORDERS}")
    ids = np.asarray(ids, dtype=np.uint64) & _M32
    m = len(ids) - order + 1
    if m <= 0:
        return np.zeros(0, dtype=np.int64)
    h = np.full(m, ((int(_FNV_OFFSET) ^ order) * int(_FNV_PRIME)) & 0xFFFFFFFF, dtype=np.uint64)
    for j in range(order):
        h = ((h ^ ids[j : j + m]) * _FNV_PRIME) & _M32
    h = _fmix32(h)
    return OFFSETS[order] + (h & np.uint64(ORDER_BUCKETS[order] - 1)).astype(np.int64)


def trace_grams(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All grams of a single-threaded trace from an empty history.

    Returns ``(buckets, end)``: the global bucket of each gram and the position of its last call, so a
    caller can assign each gram to the window of its last call (history carried across windows).
    """
    buckets, ends = [], []
    for n in ORDERS:
        b = gram_buckets(ids, n)
        buckets.append(b)
        ends.append(np.arange(n - 1, n - 1 + len(b), dtype=np.int64))
    return np.concatenate(buckets), np.concatenate(ends)
