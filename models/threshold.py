"""Per-image alarm thresholds and tail probabilities from the scores an image's own normal windows get.

A bare percentile does not say how many alarms a user will see.  The threshold is set from a
*false-alarm budget*: at most ``alarms_per_day`` alarms per image per day at the window length in use,
so the target exceedance probability is ``p = alarms_per_day * window_seconds / 86400``.  For 5 s
windows and one alarm a day that is p = 5.8e-5: its quantile needs tens of thousands of normal windows
to be read off directly, far more than a learning period has.  So the upper tail is modelled (peaks over
threshold with a shape of zero): the ``k = ceil(sqrt(n))`` largest of ``n`` recorded scores are taken as
exceedances over the anchor ``u`` (the next largest score), their mean excess estimates the exponential
scale, and the scale used is its **upper confidence bound** at ``confidence`` (0.9): the k excesses of an
exponential tail sum to a Gamma(k, beta) variable, so ``beta_up = 2 k beta_hat / chi2_{1-confidence}(2k)``.
With few scores the bound is wide (k = 5 at n = 20: 3.1 times the estimate) and the threshold sits far out;
it tightens as scores accumulate (k = 64 at n = 4,096: 1.18 times).  Then::

    P(score >= s) = (k / n) * exp(-(s - u) / beta_up)     for s > u (empirical below)
    threshold     = u + beta_up * ln((k / n) / p)

so a score over the threshold is exactly a tail probability under ``p``.  :meth:`TailThreshold.surprise`
gives ``-log10 P(score >= s)`` for any score, the unit the baseline combines its tiers in.
``floor`` and ``min_excess`` (the threshold at least ``floor``, and at least ``min_excess`` above the
anchor: a score that hardly varies would otherwise get a threshold a hair above its usual value) widen
the scale so that the tail still meets the threshold.  What this assumes: a tail no heavier than
exponential; a heavier one (a power law) is under-estimated, which the confidence bound only partly covers.

A tail can also be *lighter* than exponential: a score built from standard scores, or a cluster of
recurring windows (a database's checkpoints) with nothing above it, has a mean excess that shrinks further
out, and the exponential extrapolated over the ``ln((k / n) / p)`` e-folds to the budget's quantile (about
7 at one alarm a day, 10 s windows and 4,096 scores) then sits far above anything normal, so that only a
huge rise of a rate crosses it.  So the shape of the tail is estimated too (:func:`shape_bound`): a
generalized Pareto shape ``xi`` from the exceedances (probability-weighted moments, Hosking and Wallis
1987), its **upper** confidence bound at the same ``confidence`` (standard error ``(1 + xi) / sqrt(k)``;
an estimate below ``-0.5``, where that no longer holds, is taken as ``-0.5``), and at most 0.  Only a tail
that is lighter than exponential at that confidence shortens the extrapolation: the threshold is the
generalized Pareto quantile ``u + sigma (exp(xi L) - 1) / xi`` with ``sigma = beta_up (1 - xi)`` and
``L = ln((k / n) / p)``, and the scale kept (for :meth:`TailThreshold.surprise` too) is the exponential
one through the anchor and that threshold, so the surprise at the threshold is still exactly the budget's
probability.  With few scores the bound is 0 and the tail exponential.

The tail is fitted on the exact largest scores ever recorded (the :data:`TOP` largest are kept, so ``k`` is
at most ``TOP - 1``, reached at about a million scores): no sample decides the anchor or the exceedances, so
the threshold does not depend on which scores a sample happened to keep.  The bulk (the median the
explanations quote, and a generous budget's quantile inside the data) comes from a bounded uniform sample
(``capacity`` scores, reservoir sampling).  Both hold half-precision floats (2 bytes each: a relative
rounding of 2^-11, far below the sampling error of a tail fit).  The scores recorded are the learning
period's (prequential, each window scored before it was learnt) and, once detecting, every window that was
learnt (not flagged, inside the learning gate), so calibration goes on while detecting and the threshold
tightens towards the budget's quantile as evidence grows.  The sampling is deterministic: the draw that
decides whether the ``k``-th score seen enters the sample is a hash of ``k`` (:func:`_uniforms`), so a
replay gives the same sample however the scores were batched.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np
from scipy.special import gammaincinv

SECONDS_PER_DAY = 86_400.0
MIN_SHAPE = -0.5  # the lightest tail shape an estimate is taken at (below it the estimate's error is not known)
_SAMPLE = np.float16  # the sample's dtype (a mature baseline holds three samples of 4,096 per profile)
_SAMPLE_MAX = float(np.finfo(_SAMPLE).max)
TOP = 1024  # the largest scores kept exactly, for the tail fit


class TailThreshold:
    """Threshold and tail probabilities from a false-alarm budget (exponential or lighter tail, conservative
    scale).

    >>> t = TailThreshold(alarms_per_day=1.0, min_scores=50)
    >>> rng = np.random.default_rng(0)
    >>> t.update(rng.exponential(1.0, 4000), window_seconds=5.0)
    >>> 9.0 < t.value < 12.5  # Exp(1): the exact quantile is ln(1 / 5.8e-5) = 9.76; the bound is above it
    True
    >>> round(float(t.surprise(np.array([t.value]))[0]), 2)  # -log10 of the budget's probability
    4.24
    """

    def __init__(
        self,
        alarms_per_day: float = 1.0,
        capacity: int = 8192,
        min_scores: int = 30,
        floor: float = 1.0,
        min_excess: float = 0.0,
        confidence: float = 0.9,
    ) -> None:
        if alarms_per_day <= 0:
            raise ValueError(f"alarms_per_day must be positive, got {alarms_per_day}")
        if not 0.5 <= confidence < 1.0:
            raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
        self.alarms_per_day = alarms_per_day
        self.capacity = capacity
        self.min_scores = min_scores
        self.floor = floor
        self.min_excess = min_excess
        self.confidence = confidence
        self._ring = np.zeros(0, dtype=_SAMPLE)  # the sample; grown as scores come, up to capacity
        self._top = np.zeros(0, dtype=_SAMPLE)  # the TOP largest scores ever recorded (unordered)
        self._top_min = 0.0  # the smallest of them (once there are TOP)
        self._count = 0  # total scores ever added
        self._window_seconds = 0.0
        self.value = math.inf
        # the fitted tail: sorted sample, anchor, tail share at the anchor, scale
        self._fitted_at = -1  # scores seen at the last fit (-1: no fit)
        self._anchor = math.inf
        self._share = 1.0
        self._scale = 1.0
        self.ceiling = math.inf  # the threshold never rises above this (see :meth:`hold`)
        self._held_at = 0  # scores seen when the ceiling was last lowered

    @property
    def n_seen(self) -> int:
        """Scores ever recorded (the sample holds at most ``capacity`` of them)."""
        return self._count

    @property
    def n_scores(self) -> int:
        return min(self._count, self.capacity)

    @property
    def calibrated(self) -> bool:
        return math.isfinite(self.value)

    def add(self, scores: np.ndarray, window_seconds: float) -> None:
        """Record scores of normal windows (without recomputing the threshold)."""
        # (stored in half precision, whose range ends at +-65,504: a score beyond would be stored infinite)
        scores = np.maximum(np.minimum(np.asarray(scores, dtype=np.float32).ravel(), _SAMPLE_MAX), -_SAMPLE_MAX)
        m = len(scores)
        if m == 0:
            return
        cap = self.capacity
        if self._count + m > cap:  # the sample no longer holds every score: keep the largest apart
            self._keep_largest(scores)
        free = max(0, min(cap - self._count, m))  # the sample is not full yet: keep these as they come
        if free:
            self._grow(self._count + free)
            self._ring[self._count : self._count + free] = scores[:free]
        rest = scores[free:]
        if len(rest):
            # Reservoir sampling (Vitter's algorithm R): the k-th score seen replaces a random slot with
            # probability capacity / k, so every score seen is in the sample with the same probability.
            seen = np.arange(self._count + free + 1, self._count + m + 1, dtype=np.uint64)
            slots = (_uniforms(seen) * seen).astype(np.int64)
            keep = slots < cap
            self._ring[slots[keep]] = rest[keep]  # a slot drawn twice in one batch keeps the later score
        self._count += m
        self._window_seconds = float(window_seconds)

    @property
    def p(self) -> float:
        """The budget's exceedance probability per window (``nan`` before any window length is known)."""
        if self._window_seconds <= 0:
            return math.nan
        return min(self.alarms_per_day * self._window_seconds / SECONDS_PER_DAY, 1.0)

    def _keep_largest(self, scores: np.ndarray) -> None:
        """Merge ``scores`` into the :data:`TOP` largest recorded (which start as the largest of the sample
        when it first overflows: until then it holds every score)."""
        if len(self._top) == TOP:
            scores = scores[scores > self._top_min]
            if not len(scores):
                return
        seen = self._top if len(self._top) or not self._count else self._ring[: self._count]
        top = np.concatenate((seen, scores))
        if len(top) > TOP:
            top.partition(len(top) - TOP)
            top = top[len(top) - TOP :]
        self._top = top.astype(_SAMPLE)
        self._top_min = float(top.min())

    def _grow(self, size: int) -> None:
        """Make room for ``size`` scores (doubling, at most ``capacity``)."""
        if size > len(self._ring):
            ring = np.zeros(min(self.capacity, max(size, 2 * len(self._ring), 64)), dtype=_SAMPLE)
            ring[: len(self._ring)] = self._ring
            self._ring = ring

    def recompute(self) -> float:
        """Refit the tail and the threshold from the recorded scores (``inf`` until there are enough)."""
        if self.n_scores < self.min_scores or self._window_seconds <= 0:
            self.value = math.inf
            self._fitted_at = -1
            return self.value
        n = self._count
        k = min(max(2, math.ceil(math.sqrt(n))), n - 1, TOP - 1)
        top = (self._ring[:n] if n <= self.capacity else self._top).astype(np.float32)  # all, or the largest
        top.partition(len(top) - k - 1)
        top = top[len(top) - k - 1 :].astype(np.float64)  # u, then the k largest
        u = float(top[0])
        excess = top[1:] - u
        beta_hat = max(float(np.add.reduce(excess)) / k, 1e-9)
        # the upper confidence bound of the exponential scale: 2 k beta_hat / beta ~ chi2(2k)
        beta = 2.0 * k * beta_hat / (2.0 * _gamma_quantile(k, 1.0 - self.confidence))
        share, p = k / n, self.p
        self._anchor, self._share, self._fitted_at = u, share, self._count
        if p >= share:  # a generous budget: its quantile is inside the sample
            self._scale = beta
            self.value = max(self.quantile(1.0 - p), self.floor)
            return self.value
        span = math.log(share / p)
        excess.sort()
        xi = shape_bound(excess, self.confidence)
        if xi < 0.0:  # a tail lighter than exponential: the generalized Pareto quantile, as an exponential scale
            beta *= (1.0 - xi) * math.expm1(xi * span) / (xi * span)
        self._scale = max(beta, self.min_excess / span, (self.floor - u) / span)
        if u + self._scale * span > self.ceiling:  # held: the tail may tighten, never loosen
            self._scale = max((self.ceiling - u) / span, 1e-9)
        self.value = max(u + self._scale * span, min(u, self.ceiling))
        if math.isfinite(self.ceiling) and self._count >= 2 * self._held_at:
            self.hold()
        return self.value

    def refit_due(self, every: int) -> bool:
        """Whether ``every`` scores (or a 64th of the sample, if more) were recorded since the last fit."""
        return self._fitted_at < 0 or self._count - self._fitted_at >= max(every, self.n_scores // 64)

    def hold(self) -> None:
        """From now on the threshold may fall as evidence grows, never rise above its current value: scores
        recorded while detecting refine the fit, but a slow drift of windows just under the threshold
        (a poisoning ramp) cannot pull it up.  The ceiling is lowered to the fitted value each time the
        scores seen double (a few estimates on growing evidence, not the minimum of every refit, which
        would ratchet below the budget's quantile by chance)."""
        self.ceiling = min(self.ceiling, self.value)
        self._held_at = self._count

    def surprise(self, scores: np.ndarray) -> np.ndarray:
        """``-log10`` of each score's tail probability under the fitted exponential tail,
        ``-log10(k / n) + (s - u) / (beta ln 10)``: exact in the tail, and the same straight line below the
        anchor (where it is no longer a probability, and may go below 0), so that it is an increasing affine
        map of the score: a mean of it over windows ranks traces as the mean of the raw score does.
        0 before the threshold is calibrated."""
        s = np.asarray(scores, dtype=np.float64)
        flat = s.reshape(-1)
        one = np.zeros(len(flat), dtype=np.int64)
        return TailThreshold.surprise_stacked([self], flat, one, np.ones(len(flat), dtype=bool)).reshape(s.shape)

    @staticmethod
    def surprise_stacked(
        thresholds: Sequence[TailThreshold], scores: np.ndarray, which: np.ndarray, mask: np.ndarray
    ) -> np.ndarray:
        """:meth:`surprise` of many thresholds' scores at once: score ``i`` under ``thresholds[which[i]]``
        where ``mask[i]`` (0 elsewhere), in one set of NumPy operations."""
        fitted = [t._fitted_at >= 0 and math.isfinite(t.value) for t in thresholds]
        if not any(fitted):
            return np.zeros(len(scores))
        # per threshold: -log10(k / n), the anchor and the scale in decades (1 where not fitted: unused)
        offset = np.array([-math.log10(t._share) if f else 0.0 for t, f in zip(thresholds, fitted, strict=True)])
        anchor = np.array([t._anchor if f else 0.0 for t, f in zip(thresholds, fitted, strict=True)])
        scale = np.array([t._scale * math.log(10.0) if f else 1.0 for t, f in zip(thresholds, fitted, strict=True)])
        out = offset[which] + (scores - anchor[which]) / scale[which]
        out[~(mask & np.array(fitted)[which])] = 0.0
        return out

    def update(self, scores: np.ndarray, window_seconds: float) -> None:
        self.add(scores, window_seconds)
        self.recompute()

    def quantile(self, q: float) -> float:
        """A quantile of the recorded scores (``nan`` when there are none)."""
        n = self.n_scores
        return float(np.quantile(self._ring[:n].astype(np.float64), q)) if n else math.nan

    def reset(self) -> None:
        self._count = 0
        self._top = self._top[:0]
        self.value = math.inf
        self._fitted_at = -1
        self.ceiling = math.inf
        self._held_at = 0

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "scores": self._ring[: self.n_scores].copy(),
            "top": self._top.copy(),
            "meta": np.array([self._count, self._window_seconds, self.value, self.ceiling, self._held_at,
                              self.alarms_per_day, self._fitted_at, self._anchor, self._share, self._scale],
                             dtype=np.float64),
        }

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        scores = np.asarray(arrays["scores"], dtype=_SAMPLE)
        top = np.asarray(arrays["top"], dtype=_SAMPLE)
        (count, window_seconds, value, ceiling, held_at, alarms_per_day, fitted_at, anchor, share,
         scale) = (float(v) for v in arrays["meta"])
        if not (alarms_per_day > 0 and share > 0 and scale > 0 and not math.isnan(value)):
            raise ValueError("threshold state is inconsistent")
        self.alarms_per_day = alarms_per_day
        if (len(scores) > self.capacity or len(top) > TOP or not np.all(np.isfinite(scores))
                or not np.all(np.isfinite(top))):
            raise ValueError("threshold state is inconsistent")
        self._ring = scores.copy()
        self._top = top.copy()
        self._top_min = float(top.min()) if len(top) else 0.0
        # scores seen, for the sampling odds (a sample that is not full holds every score seen)
        self._count = int(count) if len(scores) == self.capacity and count > len(scores) else len(scores)
        self._window_seconds = window_seconds
        self.ceiling = ceiling if not math.isnan(ceiling) else math.inf
        self._held_at = int(held_at)
        # the fit as it was (refits follow the scores seen, so a restored threshold decides as the original)
        self.value, self._fitted_at = value, int(fitted_at)
        self._anchor, self._share, self._scale = anchor, share, scale


def shape_bound(excess: np.ndarray, confidence: float) -> float:
    """An upper confidence bound, at ``confidence``, on the generalized Pareto shape of exceedances
    ``excess`` (sorted, ascending, >= 0), capped at 0 (exponential): probability-weighted moments
    (Hosking and Wallis 1987), an estimate below :data:`MIN_SHAPE` taken as :data:`MIN_SHAPE`, and the
    bound one-sided at the maximum-likelihood standard error ``(1 + xi) / sqrt(k)``.

    >>> rng = np.random.default_rng(1)
    >>> shape_bound(np.sort(rng.exponential(1.0, 64)), 0.9)  # an exponential tail stays exponential
    0.0
    >>> round(shape_bound(np.sort(rng.uniform(0.0, 1.0, 64)), 0.9), 2)  # a bounded tail (shape -1)
    -0.42
    """
    k = len(excess)
    if k < 2:
        return 0.0
    a0 = float(np.add.reduce(excess)) / k
    a1 = float(np.dot(_pwm_weights(k), excess))
    if a0 <= 0.0 or a0 - 2.0 * a1 <= 0.0:
        return 0.0
    xi = max(2.0 - a0 / (a0 - 2.0 * a1), MIN_SHAPE)
    return min(0.0, xi + _normal_quantile(confidence) * (1.0 + xi) / math.sqrt(k))


# splitmix64 (Steele, Lea and Flood 2014): the golden-ratio increment and the finalizer's multipliers
_GOLDEN, _MIX1, _MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_SHIFTS = tuple(np.uint64(s) for s in (30, 27, 31, 11))


def _uniforms(k: np.ndarray) -> np.ndarray:
    """A uniform draw in ``[0, 1)`` for each counter of ``k`` (uint64), a function of the counter alone: the
    splitmix64 output for state ``k x golden``, its top 53 bits.  Counter-based, so no generator is made
    per call and a draw does not depend on which other counters were drawn with it.

    >>> u = _uniforms(np.arange(1, 100_001, dtype=np.uint64))
    >>> bool(0.0 <= u.min() and u.max() < 1.0), round(float(u.mean()), 2)
    (True, 0.5)
    >>> bool(_uniforms(np.array([7], dtype=np.uint64))[0] == u[6])
    True
    """
    s30, s27, s31, s11 = _SHIFTS
    z = k * _GOLDEN
    z ^= z >> s30
    z *= _MIX1
    z ^= z >> s27
    z *= _MIX2
    z ^= z >> s31
    z >>= s11
    return z * 2.0**-53


@functools.lru_cache(maxsize=128)
def _pwm_weights(k: int) -> np.ndarray:
    """``(1 - p_i) / k`` at the plotting positions ``p_i = (i - 0.35) / k`` of ``k`` sorted exceedances."""
    w = (1.0 - (np.arange(1, k + 1) - 0.35) / k) / k
    w.flags.writeable = False  # (shared by every caller)
    return w


@functools.lru_cache(maxsize=1024)
def _gamma_quantile(k: int, q: float) -> float:
    """The ``q`` quantile of Gamma(``k``, 1) (a fit needs it for each sample size's ``k``: cached)."""
    return float(gammaincinv(k, q))


@functools.lru_cache(maxsize=16)
def _normal_quantile(q: float) -> float:
    return NormalDist().inv_cdf(q)
