"""Geometry of the console's two drawings, as numbers for the templates' inline SVG (no script needed).

* :func:`score_chart`: an image's recent scores against its threshold.  Each point is one window time (the
  highest score among the image's containers then); the threshold is drawn as a line.  The vertical axis
  ends a little above twice the threshold (or above nearly all of the scores): a score beyond it is drawn on
  the top edge as a triangle, its value in its tooltip and in the table beside the chart.
* :func:`bands`: each deviating feature of an explanation as the observed value against the baseline's band
  (mean ± spread, in the feature's unit) on a ``log(1 + x)`` axis, the scale the rate tier models.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from baseliner.models.explain import fmt

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 52, 14, 12, 30
BAND_WIDTH = 320


def _clock(t: float, with_date: bool = False) -> str:
    fmt = "%Y-%m-%d %H:%M" if with_date else "%H:%M"
    return datetime.fromtimestamp(t, UTC).strftime(fmt)


@dataclass(frozen=True)
class ChartPoint:
    x: float
    y: float
    time: float
    score: float
    threshold: float | None
    flagged: int
    clipped: bool


@dataclass
class ScoreChart:
    points: list[ChartPoint] = field(default_factory=list)
    threshold_lines: list[str] = field(default_factory=list)  # SVG polyline "points" attributes
    y_ticks: list[tuple[float, str]] = field(default_factory=list)
    x_ticks: list[tuple[float, str]] = field(default_factory=list)
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    bottom: float = HEIGHT - BOTTOM
    right: float = WIDTH - RIGHT
    top: int = TOP

    @property
    def empty(self) -> bool:
        return not self.points

    @property
    def flagged(self) -> int:
        return sum(p.flagged for p in self.points)


def score_chart(times: np.ndarray, scores: np.ndarray, thresholds: np.ndarray, flagged: np.ndarray) -> ScoreChart:
    """The chart of an image's recent window times (see the module docstring).

    >>> scores = np.r_[np.full(99, 2.0), 50.0]  # one window far out: off the scale, not squashing the others
    >>> c = score_chart(np.arange(100) * 60.0, scores, np.full(100, 5.0), (scores > 5).astype(int))
    >>> [(round(p.x), p.clipped) for p in c.points[-2:]], c.flagged, c.y_ticks[-1][1]
    ([(699, False), (706, True)], 1, '11.0')
    """
    chart = ScoreChart()
    ok = np.isfinite(scores)
    times, scores, thresholds, flagged = times[ok], scores[ok], thresholds[ok], flagged[ok]
    if len(times) == 0:
        return chart
    finite_thr = thresholds[np.isfinite(thresholds)]
    thr_max = float(finite_thr.max()) if len(finite_thr) else 0.0
    typical_top = float(np.quantile(scores, 0.98))
    y_max = max(2.2 * thr_max, 1.1 * typical_top, 1e-9)
    if float(scores.max()) <= y_max:
        y_max = max(1.1 * float(scores.max()), 1.2 * thr_max, 1e-9)
    t0, t1 = float(times.min()), float(times.max())
    span = t1 - t0

    def x_of(t: float) -> float:
        return LEFT + (chart.right - LEFT) * ((t - t0) / span if span > 0 else 0.5)

    def y_of(v: float) -> float:
        return chart.bottom - (chart.bottom - TOP) * min(max(v, 0.0), y_max) / y_max

    for t, s, thr, f in zip(times.tolist(), scores.tolist(), thresholds.tolist(), flagged.tolist(), strict=True):
        chart.points.append(ChartPoint(x_of(t), y_of(s), t, s, thr if math.isfinite(thr) else None, int(f),
                                       s > y_max))
    line: list[str] = []
    for p in chart.points:
        if p.threshold is None:
            if len(line) > 1:
                chart.threshold_lines.append(" ".join(line))
            line = []
            continue
        line.append(f"{p.x:.1f},{y_of(p.threshold):.1f}")
    if len(line) > 1:
        chart.threshold_lines.append(" ".join(line))
    elif len(line) == 1:  # one point: a short level mark
        x, y = line[0].split(",")
        chart.threshold_lines.append(f"{float(x) - 6:.1f},{y} {float(x) + 6:.1f},{y}")
    chart.y_ticks = [(y_of(v), fmt(v)) for v in (0.0, y_max / 2, y_max)]
    chart.x_ticks = [(x_of(t0), _clock(t0, with_date=True))]
    if span > 0:
        chart.x_ticks += [(x_of(t0 + span / 2), _clock(t0 + span / 2)), (x_of(t1), _clock(t1))]
    return chart


@dataclass(frozen=True)
class Band:
    """One deviation drawn: positions in pixels on a ``log(1 + x)`` axis from 0 to a quarter past the larger of the
    observed value and the band's top."""

    deviation: Any  # baseliner.service.console.history.Deviation
    low: float  # the band's value range (mean ± spread, at least 0)
    high: float
    x_low: float
    x_high: float
    x_mean: float
    x_observed: float | None
    width: int = BAND_WIDTH


def bands(explanation: Iterable[Any]) -> list[Band]:
    """A :class:`Band` per deviation of an anomaly's explanation.

    >>> from baseliner.service.console.history import Deviation
    >>> b = bands([Deviation("syscall.execve", 14.0, 0.02, 0.05, "calls/s", 30.0, "")])[0]
    >>> round(b.x_low), round(b.x_high) > round(b.x_low), round(b.x_observed) < b.width
    (0, True, True)
    """
    out = []
    for d in explanation:
        mean = d.mean if math.isfinite(d.mean) else 0.0
        std = d.std if math.isfinite(d.std) else 0.0
        low, high = max(0.0, mean - std), max(0.0, mean + std)
        observed = d.observed if math.isfinite(d.observed) else None
        axis_max = 1.25 * max(observed or 0.0, high, 1e-9)
        scale = math.log1p(axis_max)

        def x(v: float, scale: float = scale) -> float:
            return BAND_WIDTH * math.log1p(max(0.0, v)) / scale

        out.append(Band(d, low, high, x(low), x(high), x(mean), None if observed is None else x(observed)))
    return out
