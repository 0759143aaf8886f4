"""Per-image alarm thresholds calibrated from the scores an image's own normal windows get.

A bare percentile does not say how many alarms a user will see.  The threshold is set from a
*false-alarm budget*: at most ``alarms_per_day`` alarms per image per day at the window length in use,
so the target exceedance probability is ``p = alarms_per_day * window_seconds / 86400``.  For 5 s
windows and one alarm a day that is p = 5.8e-5, far beyond what a few hundred learning windows can
estimate directly, so the upper tail is extrapolated: scores beyond an anchor quantile are taken to
fall off exponentially (the peaks-over-threshold view, with a shape of zero), the scale estimated
from two quantiles a decade apart in exceedance::

    beta = (q_hi - q_lo) / ln(10)
    threshold = q_hi + beta * ln((1 - hi) / p)

With fewer than ``deep_scores`` scores the pair is (q90, q99); with more, (q99, q99.9): the fit then
sits in the far tail itself, so a frequent benign mode (a database checkpoint every minute, say) that
dominates the 90-99% range no longer inflates the scale.

The quantiles come from a bounded uniform sample of the scores (``capacity`` floats, reservoir sampling)
recorded by the baseline while it learns, so a long learning period is represented as a whole (a day of
5 s windows is 17,280 scores; a ring of the latest 4,096 would calibrate on its last hours only); flagged
windows never enter it.  The sampling is deterministic (seeded by the number of scores seen), so a replay
gives the same threshold.  ``min_excess`` keeps the threshold at least that far above
the anchor quantile: a score that hardly varies (a mean over thousands of n-grams, say) would otherwise
get a threshold a hair above its usual value, and the slightest drift would flood.
"""

from __future__ import annotations

import math

import numpy as np

SECONDS_PER_DAY = 86_400.0


class TailThreshold:
    """Threshold from a false-alarm budget by exponential tail extrapolation.

    >>> t = TailThreshold(alarms_per_day=1.0, min_scores=50)
    >>> rng = np.random.default_rng(0)
    >>> t.update(rng.exponential(1.0, 2000), window_seconds=5.0)
    >>> 9.0 < t.value < 11.0  # exact for Exp(1): ln(1 / 5.8e-5) = 9.76
    True
    """

    def __init__(
        self,
        alarms_per_day: float = 1.0,
        capacity: int = 8192,
        min_scores: int = 30,
        floor: float = 1.0,
        deep_scores: int = 2000,
        min_excess: float = 0.0,
    ) -> None:
        if alarms_per_day <= 0:
            raise ValueError(f"alarms_per_day must be positive, got {alarms_per_day}")
        self.alarms_per_day = alarms_per_day
        self.capacity = capacity
        self.min_scores = min_scores
        self.floor = floor
        self.deep_scores = deep_scores
        self.min_excess = min_excess
        self._ring = np.zeros(0, dtype=np.float32)  # the sample; grown as scores come, up to capacity
        self._count = 0  # total scores ever added
        self._window_seconds = 0.0
        self.value = math.inf

    @property
    def n_scores(self) -> int:
        return min(self._count, self.capacity)

    @property
    def calibrated(self) -> bool:
        return math.isfinite(self.value)

    def add(self, scores: np.ndarray, window_seconds: float) -> None:
        """Record scores of normal windows (without recomputing the threshold)."""
        scores = np.asarray(scores, dtype=np.float32).ravel()
        m = len(scores)
        if m == 0:
            return
        cap = self.capacity
        free = max(0, min(cap - self._count, m))  # the sample is not full yet: keep these as they come
        if free:
            self._grow(self._count + free)
            self._ring[self._count : self._count + free] = scores[:free]
        rest = scores[free:]
        if len(rest):
            # Reservoir sampling (Vitter's algorithm R): the k-th score seen replaces a random slot with
            # probability capacity / k, so every score seen is in the sample with the same probability.
            rng = np.random.default_rng([self._count, m])
            seen = self._count + free + np.arange(1, len(rest) + 1)
            slots = np.floor(rng.random(len(rest)) * seen).astype(np.int64)
            keep = slots < cap
            self._ring[slots[keep]] = rest[keep]  # a slot drawn twice in one batch keeps one of the two
        self._count += m
        self._window_seconds = float(window_seconds)

    def _grow(self, size: int) -> None:
        """Make room for ``size`` scores (doubling, at most ``capacity``)."""
        if size > len(self._ring):
            ring = np.zeros(min(self.capacity, max(size, 2 * len(self._ring), 64)), dtype=np.float32)
            ring[: len(self._ring)] = self._ring
            self._ring = ring

    def recompute(self) -> float:
        """Recompute the threshold from the recorded scores (``inf`` until there are enough)."""
        n = self.n_scores
        if n < self.min_scores or self._window_seconds <= 0:
            self.value = math.inf
            return self.value
        lo, hi = (0.99, 0.999) if n >= self.deep_scores else (0.90, 0.99)
        q_lo, q_hi = np.quantile(self._ring[:n].astype(np.float64), [lo, hi])
        p = min(self.alarms_per_day * self._window_seconds / SECONDS_PER_DAY, 1.0 - hi)
        beta = max((q_hi - q_lo) / math.log(10.0), 1e-9)
        excess = max(beta * math.log((1.0 - hi) / p), self.min_excess)
        self.value = float(max(q_hi + excess, self.floor))
        return self.value

    def update(self, scores: np.ndarray, window_seconds: float) -> None:
        self.add(scores, window_seconds)
        self.recompute()

    def quantile(self, q: float) -> float:
        """A quantile of the recorded scores (``nan`` when there are none)."""
        n = self.n_scores
        return float(np.quantile(self._ring[:n], q)) if n else math.nan

    def reset(self) -> None:
        self._count = 0
        self.value = math.inf

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "scores": self._ring[: self.n_scores].copy(),
            "meta": np.array([self._count, self._window_seconds, self.value], dtype=np.float64),
        }

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        scores = np.asarray(arrays["scores"], dtype=np.float32)
        count, window_seconds, value = (float(v) for v in arrays["meta"])
        if len(scores) > self.capacity or not np.all(np.isfinite(scores)):
            raise ValueError("threshold state is inconsistent")
        self._ring = scores.copy()
        # scores seen, for the sampling odds (a sample that is not full holds every score seen)
        self._count = int(count) if len(scores) == self.capacity and count > len(scores) else len(scores)
        self._window_seconds = window_seconds
        self.value = value if not math.isnan(value) else math.inf
