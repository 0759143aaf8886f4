"""Cut a syscall trace into windows and turn each into the sensor's :class:`~baseliner.models.vector.FeatureVector`.

A window holds the syscall counts by canonical name and the hashed n-gram counts of
:mod:`baseliner.models.ngrams` (orders 2, 3, 4 and 6).  As on the sensor, n-gram history belongs to the thread and is
carried across windows: a gram that spans a boundary counts in the window of its last call; history
starts empty at the start of a trace.

Untimed traces (ADFA-LD) are cut every ``calls_per_window`` calls; timed ones (LID-DS) by their
timestamps, see :mod:`baseliner.models.evaluate.lidds`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from baseliner.models.evaluate.grams import canonical_ids, trace_grams
from baseliner.models.vector import FeatureVector, Identity

#: Calls per window for untimed traces.  Median ADFA-LD trace: 201 (training) / 343 (validation) calls.
DEFAULT_CALLS_PER_WINDOW = 100


def window_counts(calls: Sequence[str], window_of_call: np.ndarray,
                  n_windows: int) -> list[tuple[dict[str, int], dict[int, int]]]:
    """Syscall and n-gram counts per window for one single-threaded trace.

    ``window_of_call[k]`` is the window index of call ``k`` (non-decreasing).  Grams are attributed to
    the window of their last call, with history carried across windows.
    """
    out: list[tuple[dict[str, int], dict[int, int]]] = [({}, {}) for _ in range(n_windows)]
    if len(calls) == 0:
        return out
    ids = canonical_ids(calls)
    buckets, ends = trace_grams(ids)
    gw = window_of_call[ends]
    order = np.lexsort((buckets, gw))
    gw, buckets = gw[order], buckets[order]
    if len(buckets):
        key = gw * (1 << 20) + buckets
        uniq, counts = np.unique(key, return_counts=True)
        for k, c in zip((uniq >> 20).tolist(), zip((uniq & ((1 << 20) - 1)).tolist(), counts.tolist(),
                                                    strict=True), strict=True):
            out[k][1][c[0]] = c[1]
    w = window_of_call.tolist()
    start = 0
    for i in range(1, len(calls) + 1):
        if i == len(calls) or w[i] != w[start]:
            out[w[start]][0].update(Counter(calls[start:i]))
            start = i
    return out


def count_windows(calls: Sequence[str], calls_per_window: int = DEFAULT_CALLS_PER_WINDOW
                  ) -> list[tuple[dict[str, int], dict[int, int]]]:
    """Counts of consecutive windows of ``calls_per_window`` calls (the last may be shorter)."""
    if calls_per_window <= 0:
        raise ValueError("calls_per_window must be positive")
    n = len(calls)
    n_windows = max(1, -(-n // calls_per_window))
    return window_counts(calls, np.arange(n, dtype=np.int64) // calls_per_window, n_windows)


def count_vectors(calls: Sequence[str], identity: Identity, start: float,
                  calls_per_window: int = DEFAULT_CALLS_PER_WINDOW, window_seconds: float = 1.0,
                  seconds_since_start: float = -1.0) -> list[FeatureVector]:
    """Feature vectors for an untimed trace: one per ``calls_per_window`` calls.

    Untimed traces have no clock: each window is given a nominal length of ``window_seconds`` and
    consecutive start times from ``start``, so per-second rates equal per-window counts.
    ``seconds_since_start`` (when >= 0) is the first window's container age; later windows add their
    offset.
    """
    vecs = []
    for i, (sc, ng) in enumerate(count_windows(calls, calls_per_window)):
        age = seconds_since_start + i * window_seconds if seconds_since_start >= 0 else -1.0
        vecs.append(FeatureVector(identity=identity, window_start=start + i * window_seconds,
                                  window_seconds=window_seconds, syscalls=sc, ngrams=ng,
                                  seconds_since_start=age))
    return vecs
