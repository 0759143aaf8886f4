"""Novelty tier: the share of a window's length-6 syscall contexts the image has never shown (hashed STIDE)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from baseliner.models.block import segment_sums
from baseliner.models.detectors.ngram_likelihood import matrix_entries, sparse_row
from baseliner.models.ngrams import LONG_BUCKETS, NUM_BUCKETS, SHORT_BUCKETS
from baseliner.models.syscalls import fnv1a32
from river import base

__all__ = ["GramNoveltyDetector"]

_BYTES = LONG_BUCKETS // 8


class GramNoveltyDetector(base.AnomalyDetector):
    """Fraction of a window's order-6 n-grams whose hashed bucket was never learnt.

    STIDE (Forrest et al., 1996) remembers every length-6 syscall sequence of normal runs and scores a
    trace by the share of its sequences never seen.  The sensor hashes every order-6 gram into one of
    :data:`baseliner.models.ngrams.LONG_BUCKETS` (65,536) buckets (global indices ``[SHORT_BUCKETS, NUM_BUCKETS)``,
    ``docs/ngram-spec.md``), so the detector keeps one bit per bucket: *seen while learning*.  A window
    with order-6 bucket counts ``x`` scores

        score = sum_{b unseen} x[b] / sum_b x[b]      (0 when the window has no order-6 gram),

    the share of its length-6 contexts that are new to the image, in ``[0, 1]``.  The score is linear in
    the counts, so the gram-weighted mean of a trace's window scores (:meth:`grams` gives the weights)
    equals the score of the whole trace.  Buckets of other orders are ignored.

    State is 8 KiB (the bitset, one ``uint8`` array of ``LONG_BUCKETS / 8``) plus a window counter,
    exported by :meth:`to_arrays` and restored by :meth:`from_arrays` / :meth:`load_arrays` (no pickle).
    In memory it is the sorted order-6 buckets seen (``uint16`` offsets into the order-6 range, 2 bytes a
    bucket seen; nothing before the image shows any); scoring spreads them into one flag per global bucket
    index for the while, *order-6 and never seen*, and looks each entry up there (:meth:`new_flags`).

    :meth:`learn_new` and :meth:`score_stacked` (many detectors' windows at once, as flat entries) are the
    implementation; the River contract and the batch methods call them.  ``learn_one`` / ``score_one`` take
    a dict of bucket index -> count (``FeatureVector.ngrams``); a key that is not a bucket index is hashed
    into the order-6 range, and non-positive or non-finite counts count as 0.  ``learn_many`` /
    ``score_many`` take a ``scipy.sparse`` matrix or dense array of shape ``(n, NUM_BUCKETS)``
    (:func:`baseliner.models.detectors.ngram_likelihood.dicts_to_matrix`).

    Examples
    --------
    >>> from baseliner.models.ngrams import ngram_counts
    >>> det = GramNoveltyDetector()
    >>> loop = ["epoll_wait", "read", "write", "close"] * 25
    >>> det.learn_one(ngram_counts(loop))
    >>> det.score_one(ngram_counts(loop))
    0.0
    >>> shell = ["read", "clone", "execve", "dup2", "dup2", "connect"] * 5
    >>> det.score_one(ngram_counts(shell))
    1.0
    >>> mixed = ngram_counts(loop + shell)
    >>> 0.0 < det.score_one(mixed) < 1.0
    True
    >>> GramNoveltyDetector.from_arrays(det.to_arrays()).score_one(mixed) == det.score_one(mixed)
    True
    """

    def __init__(self) -> None:
        self._seen = np.zeros(0, dtype=np.uint16)  # sorted offsets (bucket - SHORT_BUCKETS) of the order-6 buckets seen
        self._windows = 0

    # -- model ----------------------------------------------------------------------------------

    @property
    def windows_learned(self) -> int:
        return self._windows

    @property
    def buckets_seen(self) -> int:
        """How many of the order-6 buckets have been seen."""
        return len(self._seen)

    def new_flags(self, cols: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """For global bucket indices (valid ones, of any order): is each an order-6 bucket never seen?
        (into ``out``, a bool array of ``len(cols)``, when given)"""
        new = np.zeros(NUM_BUCKETS, dtype=bool)  # for the while (76 KiB: cheaper than a search per entry)
        new[SHORT_BUCKETS:] = True
        new[SHORT_BUCKETS + self._seen.astype(np.int64)] = False
        return new.take(cols, out=out)

    def learn_new(self, cols: np.ndarray, n_windows: int) -> None:
        """Learn ``n_windows`` windows whose order-6 buckets are ``cols`` (global indices; those already seen
        may be left out): the one way this detector learns."""
        if len(cols):
            self._seen = np.union1d(self._seen, (cols - SHORT_BUCKETS).astype(np.uint16))
        self._windows += n_windows

    @staticmethod
    def score_stacked(
        dets: Sequence[GramNoveltyDetector], wb: np.ndarray, ptr: np.ndarray, cols: np.ndarray, counts: np.ndarray,
        short_totals: Callable[[], np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scores of windows, each against its own detector: the one way these detectors score.

        The windows are sorted by detector: ``dets[t]``'s are ``[wb[t], wb[t + 1])``; window ``k``'s entries
        are ``[ptr[k], ptr[k + 1])`` of ``cols`` / ``counts`` (valid global buckets of any order, counts >= 0).
        Returns the scores, the positions of the entries that are order-6 buckets never seen (what learning
        the windows would add) and their windows.  One lookup per entry in its detector's flags.
        ``short_totals`` gives each window's count of grams of the other orders when the caller has them.
        """
        n = len(ptr) - 1
        eb = ptr[wb]  # detector t's entries: [eb[t], eb[t + 1])
        new_flags = np.empty(len(cols), dtype=bool)
        for t in (eb[1:] != eb[:-1]).nonzero()[0].tolist():
            dets[t].new_flags(cols[eb[t] : eb[t + 1]], out=new_flags[eb[t] : eb[t + 1]])
        new = new_flags.nonzero()[0]
        new_rows = np.searchsorted(ptr, new, side="right") - 1
        unseen = np.zeros(n)
        if len(new):
            short = short_totals() if short_totals is not None else \
                segment_sums(np.where(cols < SHORT_BUCKETS, counts, 0.0), ptr)
            long_total = segment_sums(counts, ptr) - short
            np.divide(np.bincount(new_rows, counts[new], n), long_total, out=unseen, where=long_total > 0)
        return unseen, new, new_rows

    @staticmethod
    def _row(x: Mapping[Any, Any]) -> tuple[np.ndarray, np.ndarray]:
        """A dict row's order-6 entries (global buckets; positive, finite counts)."""
        if all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) for k in x):
            idx, val = sparse_row(x)
        else:  # not bucket indices: hash every key into the order-6 range
            idx = np.fromiter(
                (int(k) if isinstance(k, (int, np.integer)) and not isinstance(k, bool) and 0 <= k < NUM_BUCKETS
                 else SHORT_BUCKETS + fnv1a32(repr(k).encode()) % LONG_BUCKETS for k in x),
                dtype=np.int64, count=len(x))
            val = np.fromiter((_number(v) for v in x.values()), dtype=np.float64, count=len(x))
        keep = (idx >= SHORT_BUCKETS) & (idx < NUM_BUCKETS) & np.isfinite(val) & (val > 0)
        return idx[keep], val[keep]

    def learn_one(self, x: dict) -> None:
        self.learn_new(self._row(x)[0], 1)

    def score_one(self, x: dict) -> float:
        cols, counts = self._row(x)
        return float(self.score_stacked([self], np.array([0, 1]), np.array([0, len(cols)]), cols, counts)[0][0])

    def learn_many(self, X: Any) -> None:
        """Learn the rows of a ``scipy.sparse`` matrix or dense array of shape ``(n, NUM_BUCKETS)``."""
        ptr, cols, _ = matrix_entries(X)
        self.learn_new(cols[cols >= SHORT_BUCKETS], len(ptr) - 1)

    def score_many(self, X: Any) -> np.ndarray:
        """Scores of the rows of a ``scipy.sparse`` matrix or dense array of shape ``(n, NUM_BUCKETS)``."""
        ptr, cols, counts = matrix_entries(X)
        return self.score_stacked([self], np.array([0, len(ptr) - 1]), ptr, cols, counts)[0]

    def grams(self, X: Any) -> np.ndarray:
        """Order-6 gram count of each row (the denominator of its score; the weight of a window in a trace)."""
        ptr, cols, counts = matrix_entries(X)
        return segment_sums(np.where(cols >= SHORT_BUCKETS, counts, 0.0), ptr)

    # -- persistence (no pickle) ---------------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        seen = np.zeros(LONG_BUCKETS, dtype=bool)
        seen[self._seen] = True
        return {"seen": np.packbits(seen), "windows": np.array([self._windows], dtype=np.int64)}

    def load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore state written by :meth:`to_arrays`."""
        seen, windows = np.asarray(arrays["seen"]), np.asarray(arrays["windows"])
        if seen.shape != (_BYTES,) or seen.dtype != np.uint8 or windows.shape != (1,) or windows[0] < 0:
            raise ValueError(f"state shapes {seen.shape} {seen.dtype}/{windows.shape}, expected ({_BYTES},) "
                             "uint8/(1,) and a window count >= 0")
        self._seen = np.flatnonzero(np.unpackbits(seen)).astype(np.uint16)
        self._windows = int(windows[0])

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> GramNoveltyDetector:
        det = cls()
        det.load_arrays(arrays)
        return det

    @classmethod
    def _unit_test_params(cls) -> Any:
        yield {}


def _number(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return 0.0
