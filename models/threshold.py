"""Per-image alarm thresholds calibrated from the scores an image's own normal windows get.

A bare percentile does not say how many alarms a user will see.  The threshold is set from a
*false-alarm budget*: at most ``alarms_per_day`` alarms per image per day at the window length in use,
so the target exceedance probability is ``p = alarms_per_day * window_seconds / 86400``.  For 5 s
windows and one alarm a day that is p = 5.8e-5, far beyond what a few hundred learning windows can
estimate directly, so the upper tail is extrapolated: scores above the 90th percentile are taken to
fall off exponentially (the peaks-over-threshold view, with a shape of zero), the scale estimated
from the 90th and 99th percentiles::

    beta = (q99 - q90) / ln(10)
    threshold = q99 + beta * ln(0.01 / p)

The quantiles come from a bounded ring of recent unflagged scores (``capacity`` floats), so the
threshold follows slow drift of normal behaviour but never learns from flagged windows.
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
        self, alarms_per_day: float = 1.0, capacity: int = 4096, min_scores: int = 30, floor: float = 1.0
    ) -> None:
        if alarms_per_day <= 0:
            raise ValueError(f"alarms_per_day must be positive, got {alarms_per_day}")
        self.alarms_per_day = alarms_per_day
        self.capacity = capacity
        self.min_scores = min_scores
        self.floor = floor
        self._ring = np.zeros(capacity, dtype=np.float32)
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
        if len(scores) == 0:
            return
        if len(scores) >= self.capacity:
            scores = scores[-self.capacity :]
        start = self._count % self.capacity
        end = start + len(scores)
        if end <= self.capacity:
            self._ring[start:end] = scores
        else:
            split = self.capacity - start
            self._ring[start:] = scores[:split]
            self._ring[: end - self.capacity] = scores[split:]
        self._count += len(scores)
        self._window_seconds = float(window_seconds)

    def recompute(self) -> float:
        """Recompute the threshold from the recorded scores (``inf`` until there are enough)."""
        n = self.n_scores
        if n < self.min_scores or self._window_seconds <= 0:
            self.value = math.inf
            return self.value
        q90, q99 = np.quantile(self._ring[:n].astype(np.float64), [0.90, 0.99])
        p = min(self.alarms_per_day * self._window_seconds / SECONDS_PER_DAY, 0.01)
        beta = max((q99 - q90) / math.log(10.0), 1e-9)
        self.value = float(max(q99 + beta * math.log(0.01 / p), self.floor))
        return self.value

    def update(self, scores: np.ndarray, window_seconds: float) -> None:
        self.add(scores, window_seconds)
        self.recompute()

    def reset(self) -> None:
        self._count = 0
        self.value = math.inf

    def to_arrays(self) -> dict[str, np.ndarray]:
        n = self.n_scores
        order = np.roll(self._ring, -(self._count % self.capacity))[-n:] if self._count > n else self._ring[:n]
        return {
            "scores": order.copy(),
            "meta": np.array([self._count, self._window_seconds, self.value], dtype=np.float64),
        }

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        scores = np.asarray(arrays["scores"], dtype=np.float32)
        count, window_seconds, value = (float(v) for v in arrays["meta"])
        if len(scores) > self.capacity or not np.all(np.isfinite(scores)):
            raise ValueError("threshold state is inconsistent")
        self._ring[:] = 0
        self._ring[: len(scores)] = scores
        self._count = len(scores)
        self._window_seconds = window_seconds
        self.value = value if not math.isnan(value) else math.inf
        del count
