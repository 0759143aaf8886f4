"""Novelty tier: the share of a window's length-6 syscall contexts the image has never shown (hashed STIDE)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from baseliner.models.detectors.ngram import sparse_row
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
    In memory it is one flag per global bucket index, *order-6 and never seen* (76 KiB): one lookup per
    entry, whatever its order, is all that scoring a window takes (:meth:`new_flags`).

    ``learn_one`` / ``score_one`` take a dict of bucket index -> count (``FeatureVector.ngrams``); a key
    that is not a bucket index is hashed into the order-6 range, and non-positive or non-finite counts
    count as 0.  ``learn_many`` / ``score_many`` take a ``scipy.sparse`` matrix or dense array of shape
    ``(n, NUM_BUCKETS)`` (:func:`baseliner.models.detectors.ngram.dicts_to_matrix`); ``learn_sparse`` /
    ``score_sparse`` take flat (row, bucket, count) arrays (the service's fast path).

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
        self._new = np.zeros(NUM_BUCKETS, dtype=bool)  # per global bucket: order 6 and never seen
        self._new[SHORT_BUCKETS:] = True
        self._windows = 0

    # -- model ----------------------------------------------------------------------------------

    @property
    def windows_learned(self) -> int:
        return self._windows

    @property
    def buckets_seen(self) -> int:
        """How many of the order-6 buckets have been seen."""
        return LONG_BUCKETS - int(np.count_nonzero(self._new))

    def new_flags(self, cols: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """For global bucket indices (valid ones, of any order): is each an order-6 bucket never seen?
        (into ``out``, a bool array of ``len(cols)``, when given)"""
        return np.take(self._new, cols, out=out)

    def learn_new(self, cols: np.ndarray, n_windows: int) -> None:
        """Learn ``n_windows`` windows whose order-6 buckets not seen before are ``cols`` (global indices;
        :meth:`new_flags` found them): what :meth:`learn_sparse` does with all of their entries."""
        self._new[cols] = False
        self._windows += n_windows

    @staticmethod
    def _long(idx: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keep = (idx >= SHORT_BUCKETS) & (idx < NUM_BUCKETS) & np.isfinite(val) & (val > 0)
        return idx[keep] - SHORT_BUCKETS, val[keep]

    @staticmethod
    def _row(x: Mapping[Any, Any]) -> tuple[np.ndarray, np.ndarray]:
        if all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) for k in x):
            idx, val = sparse_row(x)
        else:  # not bucket indices: hash every key into the order-6 range
            idx = np.fromiter(
                (int(k) if isinstance(k, (int, np.integer)) and not isinstance(k, bool) and 0 <= k < NUM_BUCKETS
                 else SHORT_BUCKETS + fnv1a32(repr(k).encode()) % LONG_BUCKETS for k in x),
                dtype=np.int64, count=len(x))
            val = np.fromiter((_number(v) for v in x.values()), dtype=np.float64, count=len(x))
        return GramNoveltyDetector._long(idx, val)

    @staticmethod
    def _coo(X: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        from scipy import sparse

        if not sparse.issparse(X):
            X = np.asarray(X, dtype=np.float64)
            if X.ndim != 2:
                raise ValueError(f"expected a 2-D array of shape (n, {NUM_BUCKETS}), got shape {X.shape}")
        if X.shape[1] != NUM_BUCKETS:
            raise ValueError(f"expected {NUM_BUCKETS} columns (baseliner.models.ngrams.NUM_BUCKETS), got {X.shape[1]}")
        m = sparse.coo_matrix(X[:, SHORT_BUCKETS:], dtype=np.float64)
        keep = np.isfinite(m.data) & (m.data > 0)
        return m.row[keep].astype(np.int64), m.col[keep].astype(np.int64), m.data[keep], m.shape[0]

    def learn_one(self, x: dict) -> None:
        idx, _ = self._row(x)
        self._new[idx + SHORT_BUCKETS] = False
        self._windows += 1

    def score_one(self, x: dict) -> float:
        idx, val = self._row(x)
        total = float(val.sum())
        return float(val[self._new[idx + SHORT_BUCKETS]].sum()) / total if total > 0 else 0.0

    def learn_many(self, X: Any) -> None:
        _, cols, _, n = self._coo(X)
        self._new[cols + SHORT_BUCKETS] = False
        self._windows += n

    def score_many(self, X: Any) -> np.ndarray:
        rows, cols, vals, n = self._coo(X)
        return self._scores(rows, cols, vals, n)

    def _scores(self, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_rows: int) -> np.ndarray:
        total = np.bincount(rows, vals, n_rows)
        unseen = np.bincount(rows, np.where(self._new[cols + SHORT_BUCKETS], vals, 0.0), n_rows)
        out = np.zeros(n_rows, dtype=np.float64)
        np.divide(unseen, total, out=out, where=total > 0)
        return out

    def learn_sparse(self, cols: np.ndarray, counts: np.ndarray, n_windows: int) -> None:
        """Learn ``n_windows`` windows given as flat global bucket indices and counts (all rows together).

        Entries must be valid buckets with finite counts (``baseliner.models.validate`` guarantees it); buckets of
        other orders and non-positive counts are ignored.
        """
        long = (cols >= SHORT_BUCKETS) & (counts > 0)
        self._new[cols[long]] = False
        self._windows += n_windows

    def score_sparse(self, rows: np.ndarray, cols: np.ndarray, counts: np.ndarray, n_rows: int) -> np.ndarray:
        """Scores of ``n_rows`` windows given as flat (row, global bucket, count) entries."""
        long = (cols >= SHORT_BUCKETS) & (counts > 0)
        return self._scores(rows[long], cols[long] - SHORT_BUCKETS, counts[long], n_rows)

    def grams_sparse(self, rows: np.ndarray, cols: np.ndarray, counts: np.ndarray, n_rows: int) -> np.ndarray:
        """Order-6 gram count of each of ``n_rows`` windows given as flat entries."""
        long = (cols >= SHORT_BUCKETS) & (counts > 0)
        return np.bincount(rows[long], counts[long], n_rows)

    def grams(self, X: Any) -> np.ndarray:
        """Order-6 gram count of each row (the denominator of its score; the weight of a window in a trace)."""
        rows, _, vals, n = self._coo(X)
        return np.bincount(rows, vals, n)

    # -- persistence (no pickle) ---------------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        seen = ~self._new[SHORT_BUCKETS:]
        return {"seen": np.packbits(seen), "windows": np.array([self._windows], dtype=np.int64)}

    def load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore state written by :meth:`to_arrays`."""
        seen, windows = np.asarray(arrays["seen"]), np.asarray(arrays["windows"])
        if seen.shape != (_BYTES,) or seen.dtype != np.uint8 or windows.shape != (1,) or windows[0] < 0:
            raise ValueError(f"state shapes {seen.shape} {seen.dtype}/{windows.shape}, expected ({_BYTES},) "
                             "uint8/(1,) and a window count >= 0")
        self._new[SHORT_BUCKETS:] = np.unpackbits(seen) == 0
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
