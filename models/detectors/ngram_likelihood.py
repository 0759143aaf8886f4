"""NgramDetector: the likelihood of a window's hashed order-2..4 syscall n-grams under the image's n-gram model."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from baseliner.models.block import row_ids, segment_sums
from baseliner.models.ngrams import BUCKETS, NUM_BUCKETS, SHORT_BUCKETS, SHORT_ORDERS
from baseliner.models.syscalls import fnv1a32
from river import base

__all__ = ["NgramDetector", "dicts_to_matrix", "matrix_entries", "sparse_row"]


def key_bucket(key: Any) -> int:
    """Bucket a feature key maps to: an int in ``[0, NUM_BUCKETS)`` is itself, anything else is hashed.

    >>> key_bucket(5), key_bucket(NUM_BUCKETS - 1), 0 <= key_bucket("v0") < NUM_BUCKETS
    (5, 77823, True)
    """
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool) and 0 <= key < NUM_BUCKETS:
        return int(key)
    return fnv1a32(repr(key).encode()) % NUM_BUCKETS


def sparse_row(x: Mapping[Any, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Bucket indices and counts of one dict row; non-positive and non-finite counts are dropped.

    >>> idx, val = sparse_row({3: 2, 7: 0, 9: float("nan"), "v": 1.5})
    >>> idx.tolist()[:1], val.tolist()
    ([3], [2.0, 1.5])
    """
    n = len(x)
    try:
        if n and type(next(iter(x))) not in (int, np.int64):
            raise TypeError
        idx = np.fromiter(x.keys(), dtype=np.int64, count=n)
        if n and (idx.min() < 0 or idx.max() >= NUM_BUCKETS):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        idx = np.fromiter((key_bucket(k) for k in x), dtype=np.int64, count=n)
    try:
        val = np.fromiter(x.values(), dtype=np.float64, count=n)
    except (TypeError, ValueError):
        val = np.fromiter((_number(v) for v in x.values()), dtype=np.float64, count=n)
    keep = np.isfinite(val) & (val > 0)
    if not keep.all():
        idx, val = idx[keep], val[keep]
    return idx, val


def _number(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return 0.0


def dicts_to_matrix(rows: Iterable[Mapping[Any, float]]) -> Any:
    """Stack sparse bucket counts (``FeatureVector.ngrams``) into a ``scipy.sparse`` CSR matrix.

    Rows whose keys are all bucket indices (the normal case) are converted in one pass over all rows;
    anything else goes through :func:`sparse_row`.
    """
    from scipy import sparse

    rows = list(rows)
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    total = int(lengths.sum())
    try:
        idx = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=total)
        val = np.fromiter(itertools.chain.from_iterable(r.values() for r in rows), dtype=np.float64, count=total)
        fast = total == 0 or (idx.min() >= 0 and idx.max() < NUM_BUCKETS and all(
            type(next(iter(r))) in (int, np.int64) for r in rows if r))
    except (TypeError, ValueError, OverflowError):
        fast = False
    if fast:
        keep = np.isfinite(val) & (val > 0)
        indptr = np.concatenate(([0], np.cumsum(lengths)))
        if not keep.all():
            row_of = np.repeat(np.arange(len(rows)), lengths)
            indptr = np.concatenate(([0], np.cumsum(np.bincount(row_of[keep], minlength=len(rows)))))
            idx, val = idx[keep], val[keep]
    else:
        parts = [sparse_row(r) for r in rows]
        idx = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
        val = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
        indptr = np.concatenate(([0], np.cumsum([len(p[0]) for p in parts]))).astype(np.int64)
    m = sparse.csr_matrix((val, idx, indptr), shape=(len(rows), NUM_BUCKETS))
    m.sum_duplicates()
    return m


class NgramDetector(base.AnomalyDetector):
    """Per-gram negative log-likelihood of a window's hashed syscall n-grams.

    The sensor sends, for every window, how often each hashed n-gram bucket occurred
    (:mod:`baseliner.models.ngrams`: one global index space of ``NUM_BUCKETS``).  This detector models the short
    orders 2, 3 and 4 (``BUCKETS`` buckets each, the first ``SHORT_BUCKETS`` indices) and ignores the
    order-6 buckets, which :class:`baseliner.models.detectors.gram_novelty.GramNoveltyDetector` covers.  It keeps one
    count per bucket over everything it has learnt: that is an n-gram language model of the image, order by
    order.  The probability of bucket ``b`` of order
    ``n`` is estimated with additive smoothing,

        p(b) = (C[b] + alpha) / (N_n + alpha * BUCKETS),

    and a window with bucket counts ``x`` scores the weighted mean surprise of its grams,

        score = sum_b w(b) x[b] (-log p(b)) / sum_b w(b) x[b],

    where ``w(b)`` is ``order_weights`` of the bucket's order.  With ``tail < 1`` the mean is taken over
    the most surprising ``tail`` share of the window's (weighted) grams only, a conditional value at risk
    that does not let a window's ordinary grams dilute a short unusual run.  The score is in nats per gram: a
    window made of grams the image makes all the time scores low, a window of rare or never-seen
    sequences scores high.  A window without any weighted gram scores 0.  With ``tail = 1`` the score is
    linear in the counts, so the gram-weighted mean of the window scores of a trace (:meth:`grams` gives
    the weights) equals the score of the whole trace.

    State is a count per bucket and a window counter, exported by :meth:`to_arrays` (one dense array of
    ``SHORT_BUCKETS`` counts) and restored by :meth:`from_arrays` / :meth:`load_arrays` (no pickle).  In
    memory only the buckets the image has shown are held: their sorted indices (uint16), counts (float64)
    and ``log(C[b] + alpha)`` (float64, updated for the buckets each learnt batch touches, so that scoring
    looks a logarithm up instead of computing it), 18 bytes a bucket shown; a bucket never shown is
    ``log(alpha)``.

    :meth:`learn_entries` and :meth:`score_stacked` (many detectors' windows at once, as flat entries) are
    the implementation; the River contract and the batch methods call them.  ``learn_one`` / ``score_one``
    take a dict of bucket index -> count (``FeatureVector.ngrams``); a key that is not a bucket index is
    hashed into the bucket space (:func:`key_bucket`), and negative or non-finite counts count as 0.
    ``learn_many`` / ``score_many`` take a dense ``(n, NUM_BUCKETS)`` array (``baseliner.models.ngrams.dense``
    rows) or a ``scipy.sparse`` matrix of that shape (:func:`dicts_to_matrix`).

    Parameters
    ----------
    alpha
        Additive smoothing per bucket (the pseudo-count of a never-seen bucket).  The default, 3, gave
        held-out normal ADFA-LD training traces the highest likelihood in 5-fold cross-validation
        (``bench/evaluate_cv.py --likelihood``).
    order_weights
        Weight of each order in :data:`baseliner.models.ngrams.SHORT_ORDERS` (2, 3, 4) in the mean.
    tail
        Share of the window's grams, most surprising first, that the mean is taken over (1 = all).

    Examples
    --------
    >>> from baseliner.models.ngrams import ngram_counts
    >>> det = NgramDetector()
    >>> loop = ["epoll_wait", "read", "write", "close"] * 25
    >>> for _ in range(20):
    ...     det.learn_one(ngram_counts(loop))
    >>> normal = det.score_one(ngram_counts(loop))
    >>> shell = det.score_one(ngram_counts(["read", "clone", "execve", "dup2", "dup2", "connect"] * 5))
    >>> normal < 4.0 < 8.0 < shell
    True
    >>> restored = NgramDetector.from_arrays(det.to_arrays())
    >>> restored.score_one(ngram_counts(loop)) == normal
    True
    """

    def __init__(self, alpha: float = 3.0, order_weights: tuple[float, ...] = (0.0, 0.0, 1.0),
                 tail: float = 1.0) -> None:
        self.alpha = alpha
        self.order_weights = order_weights
        self.tail = tail
        if not 0 < tail <= 1:
            raise ValueError(f"tail must be in (0, 1], got {tail}")
        if not (alpha > 0 and math.isfinite(alpha)):
            raise ValueError(f"alpha must be a positive finite number, got {alpha}")
        if len(order_weights) != len(SHORT_ORDERS) or any(not (w >= 0 and math.isfinite(w)) for w in order_weights):
            raise ValueError(f"order_weights needs {len(SHORT_ORDERS)} finite weights >= 0, got {order_weights}")
        if sum(order_weights) <= 0:
            raise ValueError("order_weights must not all be 0")
        self._order_weights = np.asarray(order_weights, dtype=np.float64)  # per order: a bucket's is [b // BUCKETS]
        weighted = [j for j, w in enumerate(order_weights) if w > 0]
        self._one_order = weighted[0] if len(weighted) == 1 and tail >= 1 else -1  # see score_stacked
        self._log_alpha = math.log(alpha)
        # The buckets shown so far, sorted, with their counts and log(C[b] + alpha) (kept up to date bucket
        # by bucket as counts are learnt: scoring looks it up instead of taking a logarithm per entry)
        self._keys = np.zeros(0, dtype=np.uint16)
        self._counts = np.zeros(0, dtype=np.float64)
        self._log_counts = np.zeros(0, dtype=np.float64)
        self._totals = np.zeros(len(SHORT_ORDERS), dtype=np.float64)  # sum of the counts, order by order
        self._windows = 0

    # -- model ----------------------------------------------------------------------------------

    @property
    def windows_learned(self) -> int:
        return self._windows

    def _log_norms(self) -> np.ndarray:
        """``log(N_n + alpha * BUCKETS)`` per order: ``-log p(b) = log_norm - log(C[b] + alpha)``."""
        return np.log(self._totals + self.alpha * BUCKETS)

    def learn_entries(self, cols: np.ndarray, counts: np.ndarray, n_windows: int) -> None:
        """Learn ``n_windows`` windows whose order-2..4 entries are ``cols`` / ``counts`` (counts >= 0; a
        bucket may repeat): the one way this detector learns."""
        if len(cols):
            added = np.bincount(cols, counts, SHORT_BUCKETS)
            self._totals += added.reshape(len(SHORT_ORDERS), BUCKETS).sum(axis=1)
            touched = (added > 0).nonzero()[0]  # (a bool mask: nonzero() of a float array is several times slower)
            self._add(touched, added[touched])
        self._windows += n_windows

    def _add(self, buckets: np.ndarray, added: np.ndarray) -> None:
        """Add ``added`` (> 0) to the counts of the sorted, distinct ``buckets``; new ones are inserted."""
        keys = self._keys
        pos = keys.searchsorted(buckets)  # (sorted needles: fast)
        known = keys.take(np.minimum(pos, len(keys) - 1)) == buckets if len(keys) else np.zeros(len(buckets), bool)
        at = pos[known]
        new_counts = self._counts[at] + added[known]
        self._counts[at] = new_counts
        self._log_counts[at] = np.log(new_counts + self.alpha)
        if not known.all():
            fresh = ~known
            at = pos[fresh]
            self._keys = np.insert(keys, at, buckets[fresh].astype(np.uint16))
            self._counts = np.insert(self._counts, at, added[fresh])
            self._log_counts = np.insert(self._log_counts, at, np.log(added[fresh] + self.alpha))

    def _dense(self, values: np.ndarray, fill: float) -> np.ndarray:
        """``values`` (one per bucket shown) spread over all ``SHORT_BUCKETS``, ``fill`` elsewhere."""
        out = np.full(SHORT_BUCKETS, fill)
        out[self._keys] = values
        return out

    def log_counts(self, cols: np.ndarray, out: np.ndarray) -> None:
        """``log(C[b] + alpha)`` of the short-order buckets ``cols``, into ``out``."""
        self._dense(self._log_counts, self._log_alpha).take(cols, out=out)

    @staticmethod
    def score_stacked(
        dets: Sequence[NgramDetector], which: np.ndarray, wb: np.ndarray, ptr: np.ndarray, cols: np.ndarray,
        counts: np.ndarray,
    ) -> np.ndarray:
        """Scores of windows, each against its own detector: the one way these detectors score.

        The windows are sorted by detector: ``dets[t]``'s are ``[wb[t], wb[t + 1])`` (``which[k]`` is
        window ``k``'s); window ``k``'s entries are ``[ptr[k], ptr[k + 1])`` of ``cols`` / ``counts``
        (order-2..4 buckets, counts >= 0).  One set of NumPy operations for all detectors: a gather of
        ``log(C[b] + alpha)`` per entry from its detector's model (one call per detector), window sums
        segment by segment (no per-entry window index unless some ``tail < 1``).
        """
        n = len(ptr) - 1
        eb = ptr[wb]  # detector t's entries: [eb[t], eb[t + 1])
        present = (eb[1:] != eb[:-1]).nonzero()[0].tolist()
        if not present:
            return np.zeros(n)
        order = dets[present[0]]._one_order
        if order >= 0 and all(dets[t]._one_order == order for t in present):
            return _one_order_scores(dets, present, order, which, eb, ptr, cols, counts)
        return _weighted_scores(dets, present, which, eb, ptr, cols, counts)

    @staticmethod
    def _row(x: Mapping[Any, Any]) -> tuple[np.ndarray, np.ndarray]:
        idx, val = sparse_row(x)
        short = idx < SHORT_BUCKETS
        return (idx, val) if short.all() else (idx[short], val[short])

    def learn_one(self, x: dict) -> None:
        self.learn_entries(*self._row(x), 1)

    def score_one(self, x: dict) -> float:
        cols, counts = self._row(x)
        ptr = np.array([0, len(cols)])
        return float(self.score_stacked([self], np.zeros(1, dtype=np.int64), np.array([0, 1]), ptr, cols, counts)[0])

    def learn_many(self, X: Any) -> None:
        """Learn the rows of a ``scipy.sparse`` matrix or dense array of shape ``(n, NUM_BUCKETS)``."""
        ptr, cols, counts = _short(*matrix_entries(X))
        self.learn_entries(cols, counts, len(ptr) - 1)

    def score_many(self, X: Any) -> np.ndarray:
        """Scores of the rows of a ``scipy.sparse`` matrix or dense array of shape ``(n, NUM_BUCKETS)``."""
        ptr, cols, counts = _short(*matrix_entries(X))
        n = len(ptr) - 1
        return self.score_stacked([self], np.zeros(n, dtype=np.int64), np.array([0, n]), ptr, cols, counts)

    def grams(self, X: Any) -> np.ndarray:
        """Weighted gram count of each row (the denominator of its score; the weight of a window in a trace)."""
        ptr, cols, counts = _short(*matrix_entries(X))
        return segment_sums(counts * self._order_weights[cols // BUCKETS], ptr)

    # -- persistence (no pickle) ---------------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        dense = np.zeros(SHORT_BUCKETS, dtype=np.float64)
        dense[self._keys] = self._counts
        return {"counts": dense, "windows": np.array([self._windows], dtype=np.int64)}

    def load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore state written by :meth:`to_arrays`."""
        counts, windows = np.asarray(arrays["counts"]), np.asarray(arrays["windows"])
        if counts.shape != (SHORT_BUCKETS,) or windows.shape != (1,):
            raise ValueError(f"state shapes {counts.shape}/{windows.shape}, expected ({SHORT_BUCKETS},)/(1,)")
        if not np.all(np.isfinite(counts)) or np.any(counts < 0) or windows[0] < 0:
            raise ValueError("state contains negative or non-finite counts")
        counts = counts.astype(np.float64)
        self._totals = counts.reshape(len(SHORT_ORDERS), BUCKETS).sum(axis=1)
        self._keys = np.flatnonzero(counts).astype(np.uint16)
        self._counts = counts[self._keys]
        self._log_counts = np.log(self._counts + self.alpha)
        self._windows = int(windows[0])

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], **params: Any) -> NgramDetector:
        det = cls(**params)
        det.load_arrays(arrays)
        return det

    @classmethod
    def _unit_test_params(cls) -> Any:
        yield {}
        yield {"alpha": 1.0, "order_weights": (1.0, 1.0, 1.0), "tail": 0.25}

    def _unit_test_skips(self) -> set[str]:
        # River's ROC AUC check is run on n-gram count data in tests/test_evaluate_detector.py: a model
        # of count mixes has nothing to say about the generic Gaussian stream the shared check uses.
        return {"check_roc_auc"}


def matrix_entries(X: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of a ``scipy.sparse`` matrix or dense array of shape ``(n, NUM_BUCKETS)`` as CSR entries
    ``(ptr, cols, counts)``: row ``k``'s are ``[ptr[k], ptr[k + 1])``; only finite counts > 0 are kept."""
    from scipy import sparse

    if not sparse.issparse(X):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"expected a 2-D array of shape (n, {NUM_BUCKETS}), got shape {X.shape}")
    if X.shape[1] != NUM_BUCKETS:
        raise ValueError(f"expected {NUM_BUCKETS} columns (baseliner.models.ngrams.NUM_BUCKETS), got {X.shape[1]}")
    m = sparse.csr_matrix(X, dtype=np.float64)
    ptr, cols, counts = m.indptr.astype(np.int64), m.indices.astype(np.int64), m.data
    return _keep(ptr, cols, counts, np.isfinite(counts) & (counts > 0))


def _keep(ptr: np.ndarray, cols: np.ndarray, counts: np.ndarray,
          mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The entries of a CSR layout where ``mask`` holds."""
    if mask.all():
        return ptr, cols, counts
    kept = np.flatnonzero(mask)
    return np.searchsorted(kept, ptr), cols[kept], counts[kept]


def _short(ptr: np.ndarray, cols: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _keep(ptr, cols, counts, cols < SHORT_BUCKETS)


def _gather_logs(dets: Sequence[NgramDetector], present: list[int], eb: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``log(C[col] + alpha)`` of each entry in its detector, detector ``t``'s entries being ``[eb[t], eb[t + 1])``."""
    out = np.empty(len(cols))
    for t in present:
        dets[t].log_counts(cols[eb[t] : eb[t + 1]], out[eb[t] : eb[t + 1]])
    return out


def _gather_weights(dets: Sequence[NgramDetector], present: list[int], eb: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The order weight of each entry in its detector (entries ``[eb[t], eb[t + 1])`` are detector ``t``'s)."""
    out = np.empty(len(cols))
    orders = cols // BUCKETS
    for t in present:
        dets[t]._order_weights.take(orders[eb[t] : eb[t + 1]], out=out[eb[t] : eb[t + 1]])
    return out


def _one_order_scores(
    dets: Sequence[NgramDetector], present: list[int], order: int, which: np.ndarray, eb: np.ndarray,
    ptr: np.ndarray, cols: np.ndarray, counts: np.ndarray,
) -> np.ndarray:
    """:meth:`NgramDetector.score_stacked` when one order is weighted (the default, order 4; ``order`` is its
    index in ``SHORT_ORDERS``) and ``tail`` is 1: ``-log p = log_norm - log(C + alpha)``, so a window's score
    is its detector's ``log_norm`` minus the count-weighted mean of ``log(C + alpha)`` (the order's weight
    cancels out of the mean)."""
    lo = order * BUCKETS
    if len(cols) and not (lo <= int(cols.min()) and int(cols.max()) < lo + BUCKETS):
        kept = np.flatnonzero((cols >= lo) & (cols < lo + BUCKETS))
        cols, counts = cols.take(kept), counts.take(kept)
        ptr, eb = np.searchsorted(kept, ptr), np.searchsorted(kept, eb)
    logs = _gather_logs(dets, present, eb, cols)
    num = segment_sums(counts * logs, ptr)
    den = segment_sums(counts, ptr)
    norms = np.zeros(len(dets))
    for t in present:
        norms[t] = dets[t]._log_norms()[order]
    out = np.zeros(len(ptr) - 1)
    np.divide(num, den, out=out, where=den > 0)
    np.subtract(norms[which], out, out=out, where=den > 0)
    return out


def _weighted_scores(
    dets: Sequence[NgramDetector], present: list[int], which: np.ndarray, eb: np.ndarray, ptr: np.ndarray,
    cols: np.ndarray, counts: np.ndarray,
) -> np.ndarray:
    """:meth:`NgramDetector.score_stacked` for any order weights and tails, each detector its own."""
    n = len(ptr) - 1
    w = _gather_weights(dets, present, eb, cols)
    weighted = w > 0
    if not weighted.all():
        kept = np.flatnonzero(weighted)
        cols, counts, w = cols.take(kept), counts.take(kept), w.take(kept)
        ptr, eb = np.searchsorted(kept, ptr), np.searchsorted(kept, eb)
    logs = _gather_logs(dets, present, eb, cols)
    entry_det = which.repeat(ptr[1:] - ptr[:-1])
    norms = np.zeros((len(dets), len(SHORT_ORDERS)))
    for t in present:
        norms[t] = dets[t]._log_norms()
    value = norms.ravel()[entry_det * len(SHORT_ORDERS) + cols // BUCKETS] - logs  # -log p of each entry
    mass = counts * w
    tails = np.array([d.tail for d in dets])
    if (tails[present] < 1).any():
        num, den = _tail_sums(row_ids(ptr), mass, value, tails[entry_det], n)
    else:
        num, den = segment_sums(mass * value, ptr), segment_sums(mass, ptr)
    out = np.zeros(n)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _tail_sums(
    rows: np.ndarray, mass: np.ndarray, value: np.ndarray, tail: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's sums of ``mass x value`` and ``mass`` over its most surprising ``tail`` share of mass
    (``tail`` per entry; entries ranked by ``value``, the one across the boundary counted in part)."""
    order = np.lexsort((-value, rows))
    rows, mass, value, tail = rows[order], mass[order], value[order], tail[order]
    total = np.bincount(rows, mass, n)
    start = np.concatenate(([0.0], np.cumsum(total)))[rows]  # mass of the rows before
    above = np.cumsum(mass) - mass - start  # mass of this row ranked above the entry
    mass = np.clip(tail * total[rows] - above, 0.0, mass)
    return np.bincount(rows, mass * value, n), np.bincount(rows, mass, n)
