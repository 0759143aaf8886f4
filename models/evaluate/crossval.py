"""Choosing settings by cross-validation inside the learning traces only (nested where settings interact).

The learning traces of a split (for the standard split, ``Training_Data_Master``) are cut into folds
(seeded, by trace).  For each fold and candidate, a fresh model learns the other folds in their order and
scores the fold's traces twice: as they are (normal) and with a synthetic intrusion spliced in
(:mod:`baseliner.models.evaluate.intrusions`; the kinds in turn).  Per candidate the mean over folds of

* ROC AUC and DR @ 5% FPR of traces (a trace scores the call-weighted mean of its window scores, as in
  ``baseliner evaluate``), also per intrusion kind and for each tier of the model alone;
* the share of held-out normal windows the model flags at its own threshold, and the share of
  *foreign* windows (windows holding calls of the spliced segment) it flags.

Candidates are ranked by mean AUC + DR @ 5%; :func:`choose` takes the best-ranked one that passes the
rules given (held-out normal windows alarm at most so often; alarms separate intrusions at least as well
as a reference candidate's).  :func:`nested` estimates what the whole choice is
worth: each outer fold chooses by an inner cross-validation of the other outer folds, then the chosen
candidate learns them all and is measured on the outer fold.  Settings that interact are searched as one
joint grid (:func:`grid`), so the inner choice sees their combinations, not one axis at a time.

Nothing here reads test or attack traces.  ``bench/choose_settings.py`` is the command.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from baseliner.models.evaluate.intrusions import KINDS, Intruder
from baseliner.models.evaluate.metrics import summarise
from baseliner.models.evaluate.scorers import PipelineScorer, WindowScorer, trace_scores
from baseliner.models.evaluate.windows import DEFAULT_CALLS_PER_WINDOW, count_vectors
from baseliner.models.vector import FeatureVector, Identity

log = logging.getLogger(__name__)

Calls = Sequence[str]


@dataclass(frozen=True)
class Candidate:
    """A model to try: its label and a factory of fresh, unlearnt scorers."""

    label: str
    make: Callable[[], WindowScorer]
    settings: dict[str, Any] = field(default_factory=dict)


def grid(**axes: Sequence[Any]) -> list[dict[str, Any]]:
    """Every combination of the values of each setting (a joint grid).

    >>> grid(a=[1, 2], b=["x"])
    [{'a': 1, 'b': 'x'}, {'a': 2, 'b': 'x'}]
    """
    names = list(axes)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*(axes[n] for n in names))]


def config_candidates(configs: Sequence[dict[str, Any]]) -> list[Candidate]:
    """The default model (``PipelineScorer``) with each set of ``BaselineConfig`` settings."""
    out = []
    for cfg in configs:
        label = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in cfg.items()) or "defaults"
        out.append(Candidate(label, functools.partial(PipelineScorer, **cfg), dict(cfg)))
    return out


def folds_of(n: int, k: int, seed: int) -> list[list[int]]:
    """``k`` folds of ``range(n)`` (seeded shuffle), each sorted.

    >>> folds_of(5, 2, 0)
    [[0, 2, 3], [1, 4]]
    """
    if not 2 <= k <= n:
        raise ValueError(f"need 2 <= folds <= {n} traces, got {k}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [sorted(order[i::k]) for i in range(k)]


def _vectors(traces: Sequence[Calls], calls_per_window: int) -> tuple[list[FeatureVector], np.ndarray]:
    out: list[FeatureVector] = []
    index: list[int] = []
    clock = 1.7e9
    for i, calls in enumerate(traces):
        ident = Identity(node="cv", container_id=f"t{i}", image_repository="cv")
        vs = count_vectors(calls, ident, clock, calls_per_window)
        clock += len(vs) + 10.0
        out.extend(vs)
        index.extend([i] * len(vs))
    return out, np.asarray(index, dtype=np.int64)


@dataclass
class Fold:
    """One fold's windows: the learning traces', and the held-out traces' as they are and intruded."""

    learn: list[FeatureVector]
    test: list[FeatureVector]
    index: np.ndarray  # test window -> test trace
    labels: np.ndarray  # per test trace: 0 normal, 1 intruded
    kinds: np.ndarray  # per test trace: "" or the intrusion kind
    normal_windows: np.ndarray  # per test window
    foreign_windows: np.ndarray  # per test window: holds calls of a spliced segment

    @classmethod
    def make(cls, learn: Sequence[Calls], held: Sequence[Calls], rng: random.Random, share: float = 0.2,
             calls_per_window: int = DEFAULT_CALLS_PER_WINDOW) -> Fold:
        intruder = Intruder(learn, rng)
        kinds = [KINDS[k % len(KINDS)] for k in range(len(held))]
        spliced = [intruder.splice(t, kinds[k], held[(k + 1) % len(held)], share) for k, t in enumerate(held)]
        learn_vecs, _ = _vectors(learn, calls_per_window)
        test_vecs, index = _vectors([*held, *(s.calls for s in spliced)], calls_per_window)
        normal = index < len(held)
        position = np.arange(len(index)) - np.searchsorted(index, index)  # window number within its trace
        first = np.array([0] * len(held) + [s.start for s in spliced])[index]
        last = np.array([0] * len(held) + [s.end for s in spliced])[index]
        foreign = ~normal & (position * calls_per_window < last) & ((position + 1) * calls_per_window > first)
        labels = np.r_[np.zeros(len(held)), np.ones(len(held))].astype(np.int64)
        return cls(learn_vecs, test_vecs, index, labels, np.array([""] * len(held) + kinds, dtype=object),
                   normal, foreign)


def measure(candidate: Candidate, fold: Fold) -> dict[str, float]:
    """Learn the fold's learning windows with a fresh model, score its test windows: the figures."""
    scorer = candidate.make()
    for i in range(0, len(fold.learn), 2048):
        scorer.learn(fold.learn[i : i + 2048])
    scorer.freeze()
    scores, alarms = scorer.score_with_alarms(fold.test)
    weights = scorer.weights(fold.test)
    n = len(fold.labels)
    out: dict[str, float] = {}

    def trace_figures(prefix: str, window_scores: np.ndarray) -> None:
        ts = trace_scores(window_scores, weights, fold.index, n)
        sm = summarise(fold.labels, ts)
        out[f"{prefix}auc"], out[f"{prefix}dr_5"] = sm.auc, sm.dr_5
        for kind in KINDS:
            keep = (fold.labels == 0) | (fold.kinds == kind)
            if fold.labels[keep].sum():
                k_sm = summarise(fold.labels[keep], ts[keep])
                out[f"{prefix}{kind}_auc"], out[f"{prefix}{kind}_dr_5"] = k_sm.auc, k_sm.dr_5

    trace_figures("", scores)
    out["normal_windows_flagged"] = float(alarms[fold.normal_windows].mean())
    out["foreign_windows_flagged"] = float(alarms[fold.foreign_windows].mean())
    for name, tier_scores in scorer.tiers(fold.test).items():
        trace_figures(f"{name} ", tier_scores)
    return out


@dataclass
class Row:
    """A candidate's mean figures over folds, and the figures of each fold."""

    candidate: Candidate
    mean: dict[str, float]
    folds: list[dict[str, float]]

    @property
    def rank_value(self) -> float:
        return self.mean["auc"] + self.mean["dr_5"]


def _mean(folds: Sequence[dict[str, float]]) -> dict[str, float]:
    keys = [k for k in folds[0] if all(k in f for f in folds)]
    return {k: float(np.nanmean([f[k] for f in folds])) for k in keys}


def cross_validate(traces: Sequence[Calls], candidates: Sequence[Candidate], folds: int = 5, seed: int = 7,
                   share: float = 0.2, calls_per_window: int = DEFAULT_CALLS_PER_WINDOW,
                   progress: Callable[[str], None] | None = None) -> list[Row]:
    """Every candidate on every fold of ``traces`` (learning traces, in learning order); rows best first
    by mean AUC + DR @ 5%."""
    if not candidates:
        raise ValueError("no candidates")
    rng = random.Random(seed)
    per: dict[int, list[dict[str, float]]] = {i: [] for i in range(len(candidates))}
    t0 = time.perf_counter()
    for f, held in enumerate(folds_of(len(traces), folds, seed)):
        held_set = set(held)
        fold = Fold.make([traces[i] for i in range(len(traces)) if i not in held_set], [traces[i] for i in held],
                         rng, share, calls_per_window)
        for i, c in enumerate(candidates):
            per[i].append(measure(c, fold))
        if progress:
            progress(f"fold {f + 1}/{folds} done ({time.perf_counter() - t0:.0f} s)")
    rows = [Row(c, _mean(per[i]), per[i]) for i, c in enumerate(candidates)]
    return sorted(rows, key=lambda r: -r.rank_value)


def separation(row: Row) -> float:
    """Share of foreign windows flagged minus share of held-out normal windows flagged, at the model's own
    threshold: how well its alarms (not its ranking) tell intrusions apart."""
    return row.mean.get("foreign_windows_flagged", 0.0) - row.mean.get("normal_windows_flagged", 0.0)


def best_tier(row: Row) -> tuple[float, float]:
    """The best mean CV AUC and DR @ 5% of the row's tiers alone (each figure over the same folds)."""
    tiers = {k.rsplit(" ", 1)[0] for k in row.mean if k.endswith(" auc")}
    if not tiers:
        return -math.inf, -math.inf
    return max(row.mean[f"{t} auc"] for t in tiers), max(row.mean[f"{t} dr_5"] for t in tiers)


def not_below_tiers(row: Row) -> bool:
    """The row's model is at least as good as each of its tiers alone, by mean CV AUC and by DR @ 5%."""
    auc, dr_5 = best_tier(row)
    return row.mean["auc"] >= auc and row.mean["dr_5"] >= dr_5


def choose(rows: Sequence[Row], max_normal_flagged: float | None = None, reference: str | None = None,
           above_tiers: bool = False) -> Row:
    """The best-ranked row that passes the rules given:

    * ``max_normal_flagged``: its held-out normal windows alarm at most that share of the time;
    * ``reference`` (a candidate's label): its alarms separate (:func:`separation`) at least as well as
      that candidate's;
    * ``above_tiers``: it is at least as good as each of its tiers alone (:func:`not_below_tiers`).

    With no row passing, the one whose normal windows alarm least."""
    fit = list(rows)
    if above_tiers:
        fit = [r for r in fit if not_below_tiers(r)]
    if max_normal_flagged is not None:
        fit = [r for r in fit if r.mean.get("normal_windows_flagged", 0.0) <= max_normal_flagged]
    if reference is not None:
        ref = next((r for r in rows if r.candidate.label == reference), None)
        if ref is None:
            raise ValueError(f"no candidate labelled {reference!r}")
        fit = [r for r in fit if separation(r) >= separation(ref)]
    return fit[0] if fit else min(rows, key=lambda r: r.mean.get("normal_windows_flagged", 0.0))


@dataclass
class OuterFold:
    chosen: Row  # the inner cross-validation's choice
    figures: dict[str, float]  # the chosen candidate learnt on all inner folds, measured on this outer fold


def nested(traces: Sequence[Calls], candidates: Sequence[Candidate], outer: int = 5, inner: int = 4, seed: int = 7,
           share: float = 0.2, calls_per_window: int = DEFAULT_CALLS_PER_WINDOW,
           max_normal_flagged: float | None = None, reference: str | None = None, above_tiers: bool = False,
           progress: Callable[[str], None] | None = None) -> list[OuterFold]:
    """Nested cross-validation: per outer fold, :func:`cross_validate` on the other outer folds chooses
    (:func:`choose`), and the choice is measured on the outer fold.  The mean of the outer figures is an
    estimate of the whole procedure (choice included) on traces it never saw."""
    rng = random.Random(seed + 1)
    out = []
    for f, held in enumerate(folds_of(len(traces), outer, seed)):
        held_set = set(held)
        rest = [traces[i] for i in range(len(traces)) if i not in held_set]
        rows = cross_validate(rest, candidates, inner, seed + 1 + f, share, calls_per_window)
        best = choose(rows, max_normal_flagged, reference, above_tiers)
        fold = Fold.make(rest, [traces[i] for i in held], rng, share, calls_per_window)
        out.append(OuterFold(best, measure(best.candidate, fold)))
        if progress:
            progress(f"outer fold {f + 1}/{outer}: chose {best.candidate.label}; outer AUC "
                     f"{out[-1].figures['auc']:.4f}, DR@5% {out[-1].figures['dr_5']:.4f}")
    return out
