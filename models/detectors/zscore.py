"""Standard-score detector over log-rate features, the continuous tier for rates and mixes."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from river import base

__all__ = ["ZScoreDetector"]


class ZScoreDetector(base.AnomalyDetector):
    """Per-feature running mean and variance; scores by the largest standard scores.

    Each feature keeps a mean and variance learnt online (Welford, with the effective count capped at
    ``window`` so that old behaviour fades and one window can move the estimate by at most
    ``1 / window`` of the way).  A vector's score is the root mean square of its ``top_k`` largest
    standard scores ``|x - mean| / (std + std_floor)``: a single feature far off its baseline raises
    the score as much as several moderately off.  ``std_floor`` (in the input's units) keeps features
    that never varied from turning noise into alarms.

    ``learn_stacked`` / ``score_stacked`` are the implementation: many detectors' rows of one 2-D array
    (columns ``features``) at once, in a few NumPy calls (the service's path); ``learn_one`` /
    ``score_one`` (River) and ``learn_many`` / ``score_many`` (one detector's batch) call them.

    Parameters
    ----------
    window
        Effective memory, in vectors.
    std_floor
        Added to every standard deviation.
    top_k
        How many of the largest standard scores make up the score.
    features
        Fixed feature names for the array methods; ``None`` learns names as they appear.
    upper_only
        Count only values above the mean (a drop in activity is rarely an attack).
    clip
        Once warm (30 vectors), values are clipped to ``mean ± clip x (std + std_floor)`` before they
        are learnt, and a variance may grow by at most a factor ``1 + 2 / window`` (plus
        ``std_floor² / window``) per vector learnt.  Together they bound how fast the baseline can
        move: a slow ramp cannot drag the mean faster than ``clip`` deviations per ``window`` vectors,
        nor widen the spread to hide in.  ``None`` learns values as they are.

    Examples
    --------
    >>> det = ZScoreDetector(std_floor=0.1)
    >>> for i in range(50):
    ...     det.learn_one({"reads": 3.0 + (i % 5) * 0.1, "execs": 0.0})
    >>> normal = det.score_one({"reads": 3.2, "execs": 0.0})
    >>> attack = det.score_one({"reads": 3.2, "execs": 2.7})
    >>> normal < 1.0 < attack
    True
    >>> det.means().round(2).tolist()  # reads, execs
    [3.2, 0.0]
    """

    def __init__(
        self,
        window: int = 2000,
        std_floor: float = 0.1,
        top_k: int = 3,
        features: tuple[str, ...] | None = None,
        upper_only: bool = False,
        clip: float | None = None,
    ) -> None:
        if window < 2:
            raise ValueError(f"window must be at least 2, got {window}")
        if std_floor <= 0:
            raise ValueError(f"std_floor must be positive, got {std_floor}")
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        self.window = window
        self.std_floor = std_floor
        self.top_k = top_k
        self.features = features
        self.upper_only = upper_only
        if clip is not None and not clip > 0:
            raise ValueError(f"clip must be positive or None, got {clip}")
        self.clip = clip
        self._index: dict[Any, int] = {}
        self._index_shared = False  # the index is _layout(features)'s, shared with other detectors: copy to grow
        self._mean = np.zeros(0)
        self._m2 = np.zeros(0)
        self._var_floor = np.zeros(0)  # see hold_spread()
        self._n = 0.0
        self._den: np.ndarray | None = None  # std + std_floor, cached between updates
        if features is not None:
            self._index, self._index_shared = _layout(tuple(features)), True
            self._mean, self._m2, self._var_floor = (np.zeros(len(self._index)) for _ in range(3))

    # -- state -----------------------------------------------------------------------------------

    def _grow(self, names: list[Any]) -> None:
        new = [n for n in names if n not in self._index]
        if not new:
            return
        if self._index_shared:
            self._index, self._index_shared = dict(self._index), False
        for name in new:
            self._index[name] = len(self._index)
        pad = len(self._index) - len(self._mean)
        self._mean = np.concatenate([self._mean, np.zeros(pad)])
        self._m2 = np.concatenate([self._m2, np.zeros(pad)])
        self._var_floor = np.concatenate([self._var_floor, np.zeros(pad)])
        self._den = None

    @property
    def n_seen(self) -> float:
        """Effective number of vectors learnt (capped at ``window``)."""
        return self._n

    def means(self) -> np.ndarray:
        return self._mean.copy()

    def stds(self) -> np.ndarray:
        return self._std()

    def _std(self) -> np.ndarray:
        if self._n < 2:
            return np.zeros_like(self._mean)
        return np.sqrt(np.maximum(self._m2 / (self._n - 1), 0.0))

    def _denominator(self) -> np.ndarray:
        """``std + std_floor`` per feature (what a deviation is divided by)."""
        if self._den is None:
            self._den = self._std() + self.std_floor
        return self._den

    def hold_spread(self) -> None:
        """From now on, bounded learning (``learn_many(bound=True)``) keeps every feature's variance at
        least where it is now.

        A baseline calls this when its thresholds are calibrated: they were set against this spread,
        and windows that are rare but normal (a nightly upload, a burst of requests) are flagged and so
        never learnt again; without the floor the memory would forget them, the spread would shrink
        and the same normal burst would score higher every day.
        """
        self._var_floor = self._std() ** 2

    def _row(self, x: Mapping[Any, Any], grow: bool) -> np.ndarray:
        if grow:
            self._grow([k for k in x if k not in self._index])
        row = np.zeros(len(self._mean))
        extra = []
        for k, v in x.items():
            i = self._index.get(k)
            if i is None:
                extra.append(float(v))
            else:
                row[i] = float(v)
        if extra:  # features never learnt: mean 0, std 0
            row = np.concatenate([row, np.asarray(extra)])
        return row

    def _as_array(self, X: Any) -> np.ndarray:
        arr = np.asarray(X, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != len(self._mean):
            raise ValueError(f"expected an array of shape (n, {len(self._mean)}), got {arr.shape}")
        return arr

    # -- River contract, and batches -------------------------------------------------------------

    def learn_one(self, x: dict) -> None:
        self.learn_many(self._row(x, grow=True)[None, :])

    def score_one(self, x: dict) -> float:
        return float(self.score_stacked([self], self._row(x, grow=False)[None, :], np.zeros(1, dtype=np.int64))[0])

    def learn_many(self, X: Any, *, bound: bool = True) -> None:
        """Learn a batch (rows in arrival order; columns ``features``): :meth:`learn_stacked` with this
        detector alone.

        ``bound=False`` skips the ``clip`` bounds for this batch (a baseline's initial learning period,
        when the spread is still being discovered).
        """
        X = self._as_array(X)
        self.learn_stacked([self], X, np.zeros(len(X), dtype=np.int64), [bound])

    def score_many(self, X: Any) -> np.ndarray:
        """Scores of a batch, without learning it: :meth:`score_stacked` with this detector alone."""
        X = self._as_array(X)
        return self.score_stacked([self], X, np.zeros(len(X), dtype=np.int64))

    def standard_scores(self, X: np.ndarray) -> np.ndarray:
        """Signed standard scores ``(x - mean) / (std + std_floor)`` per feature."""
        mean = self._mean
        den = self._denominator()
        width = X.shape[1]
        if width > len(mean):  # features never learnt
            mean = np.concatenate([mean, np.zeros(width - len(mean))])
            den = np.concatenate([den, np.full(width - len(den), self.std_floor)])
        return (X - mean) / den

    # -- many detectors at once: the implementation -----------------------------------------------
    #
    # The service scores and learns every image of a batch together: row ``i`` of ``X`` belongs to
    # ``detectors[which[i]]`` (detectors sharing one feature layout).  Scoring and learning both work on
    # the rows' standard scores ``z``, computed once per batch: a window's deviation from its baseline
    # is ``z x (std + std_floor)``, so per-detector sums of ``z`` and ``z²`` are all learning needs.

    @staticmethod
    def standard_scores_stacked(detectors: Sequence[ZScoreDetector], X: np.ndarray, which: np.ndarray) -> np.ndarray:
        """:meth:`standard_scores` of the rows of ``X``, row ``i`` against ``detectors[which[i]]``."""
        if len(detectors) == 1:
            return detectors[0].standard_scores(X)
        mean = np.stack([d._mean for d in detectors])
        den = np.stack([d._denominator() for d in detectors])
        return (X - mean[which]) / den[which]

    @staticmethod
    def score_stacked(
        detectors: Sequence[ZScoreDetector], X: np.ndarray, which: np.ndarray, z: np.ndarray | None = None
    ) -> np.ndarray:
        """Scores of the rows of ``X``, row ``i`` by ``detectors[which[i]]``, in one set of NumPy
        operations (``z``: :meth:`standard_scores_stacked` of the same rows, when the caller has it).

        >>> a, b = ZScoreDetector(std_floor=0.1), ZScoreDetector(std_floor=0.1)
        >>> for i in range(20):
        ...     a.learn_one({"x": 1.0 + (i % 2)}); b.learn_one({"x": 10.0 + (i % 2)})
        >>> # means 1.5 and 10.5, standard deviations 0.513 (+ 0.1): 10.5 is 14.7 of a's off its mean
        >>> ZScoreDetector.score_stacked([a, b], np.array([[1.5], [10.5], [10.5]]), np.array([0, 1, 0])).round(2)
        array([ 0.  ,  0.  , 14.68])
        """
        if X.shape[1] == 0 or not len(X):
            return np.zeros(len(X))
        if z is None:
            z = ZScoreDetector.standard_scores_stacked(detectors, X, which)
        first = detectors[0]
        if all(d.top_k == first.top_k and d.upper_only == first.upper_only for d in detectors):
            return _top_rms(z, first.top_k, first.upper_only)
        out = np.empty(len(X))
        for j, d in enumerate(detectors):  # mixed settings: each detector's rows on their own
            rows = which == j
            out[rows] = _top_rms(z[rows], d.top_k, d.upper_only)
        return out

    @staticmethod
    def learn_stacked(
        detectors: Sequence[ZScoreDetector],
        X: np.ndarray,
        which: np.ndarray,
        bound: Sequence[bool],
        z: np.ndarray | None = None,
    ) -> None:
        """Learn the rows of ``X``, row ``i`` by ``detectors[which[i]]`` (``bound[j]``: see
        :meth:`learn_many`; ``z``: :meth:`standard_scores_stacked` of the rows, when the caller has it).

        Each detector's rows are one batch, in row order; all detectors are updated together: Chan et al.'s
        parallel update of (count, mean, M2) from the sums of the rows' standard scores, the old count
        capped at ``window - len(batch)`` so that the batch keeps at least its own weight; once warm and
        bounded, values clipped to ``mean ± clip x (std + std_floor)`` (``|z| <= clip``) and a variance
        that grows by at most a factor ``1 + 2 / window`` (plus ``std_floor² / window``) per row learnt.
        """
        if not len(X):
            return
        if z is None:
            z = ZScoreDetector.standard_scores_stacked(detectors, X, which)
        batch = _Batch.of(np.asarray(which, dtype=np.int64))
        dets = [detectors[j] for j in batch.used.tolist()]
        terms = _ChanTerms.of(dets, batch.sizes, [bool(bound[j]) for j in batch.used.tolist()])
        z = _clipped(z, terms.limit, batch.inverse)
        s1, s2 = batch.sums(z)
        new_mean, new_m2 = terms.update(dets, s1, s2, batch.single)
        for k, d in enumerate(dets):
            m2_k = new_m2[k]
            if terms.bounded_floor[k] and len(d._var_floor) == len(m2_k) and terms.n[k] > 1:
                m2_k = np.maximum(m2_k, d._var_floor * terms.nm1[k])
            if not batch.single:  # own copies: a row of the stacked arrays would keep all of them alive
                m2_k = m2_k.copy() if m2_k.base is not None else m2_k
                d._mean, d._m2, d._n, d._den = new_mean[k].copy(), m2_k, terms.n[k], None
            else:
                d._mean, d._m2, d._n, d._den = new_mean[k], m2_k, terms.n[k], None

    # -- persistence (no pickle) ---------------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"mean": self._mean.copy(), "m2": self._m2.copy(), "n": np.array([self._n]),
                "var_floor": self._var_floor.copy()}

    def load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore state written by :meth:`to_arrays` (feature order must be ``features``)."""
        mean, m2, n = arrays["mean"], arrays["m2"], arrays["n"]
        if mean.shape != self._mean.shape or m2.shape != mean.shape or n.shape != (1,):
            raise ValueError(f"state shapes {mean.shape}/{m2.shape} do not match {self._mean.shape}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(m2)) and math.isfinite(n[0])):
            raise ValueError("state contains non-finite values")
        self._mean, self._m2, self._n = mean.astype(np.float64), m2.astype(np.float64), float(n[0])
        self._den = None
        floor = arrays.get("var_floor")  # absent in state written before hold_spread() existed: no floor
        if floor is not None:
            if floor.shape != mean.shape or not np.all(np.isfinite(floor)) or np.any(floor < 0):
                raise ValueError("var_floor does not match the features or is not finite and >= 0")
            self._var_floor = floor.astype(np.float64)
        else:
            self._var_floor = np.zeros_like(self._mean)

    @classmethod
    def _unit_test_params(cls) -> Any:
        yield {}
        yield {"window": 50, "top_k": 1, "upper_only": True, "clip": 3.0}


@dataclass(slots=True)
class _Batch:
    """How the rows of a stacked batch fall to detectors: detector ``used[u]`` has the rows where
    ``inverse == u`` (``sizes[u]`` of them); ``runs``: where each detector's rows start when each has one
    run, in detector order (the service's usual block); ``single``: one detector has them all."""

    used: np.ndarray
    inverse: np.ndarray
    sizes: list[float]
    runs: np.ndarray | None
    single: bool

    @classmethod
    def of(cls, which: np.ndarray) -> _Batch:
        if bool((which == which[0]).all()):
            return cls(which[:1], np.zeros(len(which), dtype=np.int64), [float(len(which))], None, True)
        change = (which[1:] != which[:-1]).nonzero()[0] + 1
        if bool((which[change] > which[change - 1]).all()):  # sorted
            runs = np.concatenate(([0], change))
            sizes = np.append(runs[1:], len(which)) - runs
            inverse = np.arange(len(runs)).repeat(sizes)
            return cls(which[runs], inverse, sizes.astype(np.float64).tolist(), runs, False)
        used, inverse = np.unique(which, return_inverse=True)
        return cls(used, inverse, np.bincount(inverse, minlength=len(used)).astype(np.float64).tolist(), None, False)

    def sums(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per detector, the sums of its rows' ``z`` and ``z²`` (one row each; 1-D for a single detector)."""
        if self.single:
            return z.sum(axis=0), np.einsum("ij,ij->j", z, z)
        if self.runs is not None:
            return np.add.reduceat(z, self.runs, axis=0), np.add.reduceat(z * z, self.runs, axis=0)
        onehot = np.zeros((len(self.used), len(z)))
        onehot[self.inverse, np.arange(len(z))] = 1.0
        return onehot @ z, onehot @ (z * z)


@dataclass(slots=True)
class _ChanTerms:
    """Per detector of a stacked batch, the scalars of its update (see :meth:`ZScoreDetector.learn_stacked`)."""

    limit: list[float]  # |z| above this is clipped (inf: not bounded)
    bounded: list[bool]  # warm, with a clip, and asked to learn bounded: variance growth capped
    bounded_floor: list[bool]  # asked to learn bounded: the variance held by hold_spread() is kept
    keep: list[float]  # share of the old M2 kept (the old count capped: old behaviour fades)
    w_b: list[float]
    w_ab: list[float]
    inv_nb: list[float]
    cap_mul: list[float]
    cap_add: list[float]
    nm1: list[float]
    old_nm1: list[float]
    n: list[float]

    @classmethod
    def of(cls, dets: list[ZScoreDetector], sizes: list[float], bound: list[bool]) -> _ChanTerms:
        t = cls(*([] for _ in range(12)))
        for d, nb, asked in zip(dets, sizes, bound, strict=True):
            no = d._n
            na = min(no, max(d.window - nb, 1.0)) if no else 0.0
            n = na + nb
            is_bounded = asked and d.clip is not None and no >= 30
            t.bounded.append(is_bounded)
            t.bounded_floor.append(asked)
            t.limit.append(d.clip if is_bounded and d.clip is not None else math.inf)
            t.keep.append(na / no if no and na < no else 1.0)  # forget proportionally
            t.w_b.append(nb / n)
            t.w_ab.append(na * nb / n)
            t.inv_nb.append(1.0 / nb)
            t.cap_mul.append((1.0 + 2.0 / d.window) ** nb)
            t.cap_add.append(d.std_floor**2 * nb / d.window)
            t.nm1.append(n - 1.0)
            t.old_nm1.append(max(no - 1.0, 1.0))
            t.n.append(n)
        return t

    def update(self, dets: list[ZScoreDetector], s1: np.ndarray, s2: np.ndarray,
               single: bool) -> tuple[np.ndarray, np.ndarray]:
        """The detectors' new means and M2 (a row each) from the sums of their rows' ``z`` and ``z²``
        (``den`` is constant per detector, so the batch's mean and M2 follow from them)."""
        if single:
            d0 = dets[0]
            mean, den, m2 = d0._mean, d0._denominator(), d0._m2

            def col(values: list[float]) -> Any:
                return values[0]
        else:
            mean = np.stack([d._mean for d in dets])
            den = np.stack([d._denominator() for d in dets])
            m2 = np.stack([d._m2 for d in dets])

            def col(values: list[float]) -> Any:
                return np.array(values)[:, None]
        inb = col(self.inv_nb)
        delta = den * (s1 * inb)  # mean of the batch - mean
        m2_b = den**2 * np.maximum(s2 - s1**2 * inb, 0.0)
        new_mean = mean + delta * col(self.w_b)
        new_m2 = m2 * col(self.keep) + m2_b + delta**2 * col(self.w_ab)
        if any(self.bounded):
            cap = (m2 / col(self.old_nm1) * col(self.cap_mul) + col(self.cap_add)) * col(self.nm1)
            capped = np.minimum(new_m2, cap)
            if not (single or all(self.bounded)):
                capped = np.where(np.array(self.bounded)[:, None], capped, new_m2)
            new_m2 = capped
        if single:
            return new_mean[None, :], new_m2[None, :]
        return new_mean, new_m2


def _clipped(z: np.ndarray, limit: list[float], inverse: np.ndarray) -> np.ndarray:
    """``z`` with each row's values clipped to its detector's ``[-limit, limit]`` (a copy, where any is)."""
    lowest = min(limit)
    if lowest == math.inf or (-lowest <= z.min() and z.max() <= lowest):  # (NaN-free: z is finite)
        return z
    lim = np.array(limit)[inverse][:, None]  # per row
    rows = (np.abs(z) > lim).any(axis=1).nonzero()[0]  # the few windows with a value to clip
    if len(rows):
        z = z.copy()
        z[rows] = np.clip(z[rows], -lim[rows], lim[rows])
    return z


def _top_rms(z: np.ndarray, top_k: int, upper_only: bool) -> np.ndarray:
    """Root mean square of each row's ``top_k`` largest standard scores (increases only if ``upper_only``)."""
    a = np.maximum(z, 0.0) if upper_only else np.abs(z)  # a fresh array: picked entries are blanked below
    k = min(top_k, a.shape[1])
    if k > 4:
        top = np.partition(a, a.shape[1] - k, axis=1)[:, -k:]
        return np.sqrt((top * top).mean(axis=1))
    rows = np.arange(len(a))
    total = np.zeros(len(a))
    for _ in range(k):  # k passes of argmax beat a partition of every row for the usual k of 3
        j = a.argmax(axis=1)
        picked = a[rows, j]
        total += picked * picked
        a[rows, j] = -1.0
    return np.sqrt(total / k)


@functools.lru_cache(maxsize=8)
def _layout(features: tuple[Any, ...]) -> dict[Any, int]:
    """Position of each of a fixed feature layout's names: one dict for every detector of that layout
    (a baseline's two profiles, every image's), never changed (a detector copies it before it grows)."""
    return {name: i for i, name in enumerate(dict.fromkeys(features))}
