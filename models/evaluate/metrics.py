"""Detection metrics: ROC AUC, detection rate at a false-positive budget, the LID-DS rule, delays.

Conventions: label 1 = attack, 0 = normal; a higher score is more anomalous.  ROC AUC and the ROC
curve are scikit-learn's (``sklearn.metrics``; tied scores count one half in the AUC).

**The tie rule of every detection rate.**  The detection rate at a false-positive rate ``f`` is the
ROC curve read at ``f``, linearly interpolated between its vertices: the expected detection rate of the
threshold that flags every item scoring above it and, of the items tied at it, a random share chosen so
that exactly ``f`` of the normal items are flagged.  Items with equal scores are never told apart by
their order, and a group of tied normal items neither hides all the attacks tied with them (a strict
rule: STIDE's 69 normal ADFA-LD traces at exactly 1.0 gave it DR @ 1% = 0) nor lets them all through
(a lenient one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm


def _arrays(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D of equal length, got {y.shape} and {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0 (normal) or 1 (attack)")
    return y, s


def _both_classes(y: np.ndarray) -> None:
    if y.sum() == 0 or y.sum() == len(y):
        raise ValueError("ROC figures need both normal and attack items")


def roc_auc(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve (``sklearn.metrics.roc_auc_score``): P(score of a random attack > score
    of a random normal), ties counting 1/2.

    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y, s = _arrays(labels, scores)
    _both_classes(y)
    return float(skm.roc_auc_score(y, s))


def roc_curve(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct score (``sklearn.metrics.roc_curve``), from
    (0, 0) to (1, 1); tied scores make one vertex.

    >>> [v.tolist() for v in roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])]
    [[0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0]]
    """
    y, s = _arrays(labels, scores)
    _both_classes(y)
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    return fpr, tpr


def rate_on_curve(fpr: np.ndarray, tpr: np.ndarray, at: float) -> float:
    """The detection rate of a ROC curve at false-positive rate ``at`` (the tie rule above): the highest
    vertex at or left of ``at``, joined linearly to the next one.

    >>> rate_on_curve(np.array([0.0, 0.0, 0.5, 1.0]), np.array([0.0, 0.5, 0.5, 1.0]), 0.75)
    0.75
    """
    if not 0 <= at <= 1:
        raise ValueError(f"a false-positive rate must be in [0, 1], got {at}")
    i = int(np.searchsorted(fpr, at, side="right")) - 1  # last vertex with fpr <= at (highest tpr of them)
    if i + 1 >= len(fpr):
        return float(tpr[i])
    step = fpr[i + 1] - fpr[i]
    return float(tpr[i] + (tpr[i + 1] - tpr[i]) * (at - fpr[i]) / step)


def detection_rate_at_fpr(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray,
                          fpr: float) -> float:
    """Share of attacks detected at false-positive rate ``fpr``, ties at the threshold broken at random
    (the expected share; see the tie rule above).

    >>> detection_rate_at_fpr([0, 0, 0, 0, 1, 1], [1, 2, 3, 4, 3.5, 5], 0.0)
    0.5
    >>> detection_rate_at_fpr([0, 0, 0, 0, 1, 1], [1, 2, 3, 4, 3.5, 5], 0.25)
    1.0
    >>> detection_rate_at_fpr([0, 0, 0, 0, 1, 1], [1, 1, 1, 1, 1, 0], 0.25)  # a quarter of the tied ones
    0.125
    """
    return rate_on_curve(*roc_curve(labels, scores), fpr)


@dataclass(frozen=True)
class Summary:
    """Headline figures of one model on one labelled set."""

    auc: float
    dr_1: float  # detection rate at 1% FPR
    dr_5: float  # detection rate at 5% FPR
    n_normal: int
    n_attack: int


def summarise(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> Summary:
    y, s = _arrays(labels, scores)
    return Summary(roc_auc(y, s), detection_rate_at_fpr(y, s, 0.01), detection_rate_at_fpr(y, s, 0.05),
                   int((y == 0).sum()), int((y == 1).sum()))


def per_type(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray,
             types: Sequence[str]) -> dict[str, Summary]:
    """Each attack type against all normal items (the threshold comes from the normals alone).

    >>> r = per_type([0, 0, 0, 0, 1, 1], [1, 2, 3, 4, 5, 0], ["", "", "", "", "a", "b"])
    >>> r["a"].auc, r["b"].auc
    (1.0, 0.0)
    """
    y, s = _arrays(labels, scores)
    t = np.asarray(types, dtype=object)
    out = {}
    for name in sorted({str(v) for v in t[y == 1]}):
        keep = (y == 0) | ((y == 1) & (t == name))
        out[name] = summarise(y[keep], s[keep])
    return out


@dataclass(frozen=True)
class Difference:
    """A figure of one model minus the same figure of another on the same items, with an interval."""

    value: float
    low: float
    high: float


def _figures(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """ROC AUC and detection rate at 5% FPR from one ROC curve (the AUC is the curve's area, which
    equals ``roc_auc_score``; one sort serves both)."""
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    return float(skm.auc(fpr, tpr)), rate_on_curve(fpr, tpr, 0.05)


def paired_differences(labels: Sequence[int] | np.ndarray, a: Sequence[float] | np.ndarray,
                       others: Sequence[Sequence[float] | np.ndarray], resamples: int = 1000, seed: int = 0,
                       level: float = 0.95) -> list[tuple[Difference, Difference]]:
    """ROC AUC and detection rate at 5% FPR of scores ``a`` minus those of each of ``others`` on the same
    items, each with a ``level`` interval from a paired, stratified bootstrap: attacks and normals are
    resampled separately (with replacement, their numbers kept) and every model is measured on the same
    draw, so what they share does not widen the intervals.

    >>> y = [0, 0, 0, 1, 1, 1]
    >>> [(d.value, d.low, d.high) for d in paired_differences(y, [1, 2, 3, 4, 5, 6], [[1, 2, 3, 4, 5, 6]])[0]]
    [(0.0, 0.0, 0.0), (0.0, 0.0, 0.0)]
    >>> paired_differences(y, [1, 2, 3, 4, 5, 6], [[4, 5, 6, 1, 2, 3]])[0][0].value
    1.0
    """
    y, sa = _arrays(labels, a)
    sbs = [_arrays(labels, b)[1] for b in others]
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("a difference needs both normal and attack items")
    rng = np.random.default_rng(seed)
    diffs = np.empty((resamples, len(sbs), 2))
    for k in range(resamples):
        idx = np.concatenate((rng.choice(pos, len(pos)), rng.choice(neg, len(neg))))
        yy = y[idx]
        ours = _figures(yy, sa[idx])
        for j, sb in enumerate(sbs):
            theirs = _figures(yy, sb[idx])
            diffs[k, j] = (ours[0] - theirs[0], ours[1] - theirs[1])
    ours = _figures(y, sa)
    out = []
    for j, sb in enumerate(sbs):
        theirs = _figures(y, sb)
        pair = []
        for f in range(2):
            lo, hi = (np.quantile(diffs[:, j, f], [(1 - level) / 2, (1 + level) / 2]) if resamples
                      else (math.nan, math.nan))
            pair.append(Difference(ours[f] - theirs[f], float(lo), float(hi)))
        out.append((pair[0], pair[1]))
    return out


# -- LID-DS ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordingScores:
    """Window scores of one timed recording."""

    name: str
    window_starts: np.ndarray  # seconds (event time)
    window_seconds: float
    scores: np.ndarray
    exploit_time: float | None  # None for a normal recording


@dataclass(frozen=True)
class LiddsResult:
    threshold: float
    recordings: int
    exploits: int
    detected: int
    false_alarms: int  # runs of consecutive alarms outside an attack, each run counted once
    delays: tuple[float, ...]  # seconds from exploit to first alarm, per detected recording

    @property
    def detection_rate(self) -> float:
        return self.detected / self.exploits if self.exploits else float("nan")

    @property
    def mean_delay(self) -> float:
        return float(np.mean(self.delays)) if self.delays else float("nan")


def alarm_runs(alarms: np.ndarray) -> int:
    """Number of runs of consecutive ``True`` values.

    >>> alarm_runs(np.array([True, True, False, True, False, False, True, True]))
    3
    """
    a = np.asarray(alarms, dtype=bool)
    if len(a) == 0:
        return 0
    return int(a[0]) + int(np.sum(a[1:] & ~a[:-1]))


def lidds_rule(validation_normal_scores: Sequence[float] | np.ndarray,
               test: Sequence[RecordingScores]) -> LiddsResult:
    """The LID-DS 2021 rule.

    The threshold is the highest score on normal validation data.  A window alarms when its score is
    above the threshold.  An exploit recording is detected when some window that ends after the
    exploit time alarms (an alarm at or after the exploit); its delay is from the exploit time to the
    end of that window.  Alarms in normal recordings, or in an exploit recording's windows that end
    before the exploit, are false alarms; consecutive alarming windows count as one false alarm.
    """
    v = np.asarray(validation_normal_scores, dtype=np.float64)
    if len(v) == 0:
        raise ValueError("no validation scores to set the threshold from")
    thr = float(v.max())
    exploits = detected = false_alarms = 0
    delays: list[float] = []
    for rec in test:
        alarms = np.asarray(rec.scores) > thr
        ends = np.asarray(rec.window_starts) + rec.window_seconds
        if rec.exploit_time is None:
            false_alarms += alarm_runs(alarms)
            continue
        exploits += 1
        after = ends > rec.exploit_time
        false_alarms += alarm_runs(alarms & ~after)
        hits = np.nonzero(alarms & after)[0]
        if len(hits):
            detected += 1
            delays.append(max(0.0, float(ends[hits[0]] - rec.exploit_time)))
    return LiddsResult(thr, len(test), exploits, detected, false_alarms, tuple(delays))
