"""Choosing settings by cross-validation inside the learning traces (synthetic intrusions, nested CV)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from baseliner.models.evaluate import crossval
from baseliner.models.evaluate.intrusions import KINDS, Intruder
from baseliner.models.evaluate.scorers import RATE_TIER, SEQUENCE_TIER, PipelineScorer

LOOP = ["open", "fstat", "read", "read", "write", "close", "poll", "futex", "mmap", "munmap"]


def _traces(n: int, seed: int = 0) -> list[tuple[str, ...]]:
    """Programs that walk one loop with a little noise: intrusions break its order."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        calls = []
        for _ in range(rng.randrange(25, 40)):
            calls.extend(LOOP if rng.random() < 0.9 else LOOP[:5] + ["stat"] + LOOP[5:])
        out.append(tuple(calls))
    return out


class RandomScorer:
    """Scores windows at random: a candidate the cross-validation must rank last."""

    name = "random"

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def learn(self, vectors):
        pass

    def freeze(self):
        pass

    def score(self, vectors):
        return self.rng.random(len(vectors))

    def score_with_alarms(self, vectors):  # and alarms on every window
        return self.score(vectors), np.ones(len(vectors), dtype=bool)

    def tiers(self, vectors):
        return {}

    def weights(self, vectors):
        return np.ones(len(vectors))

    def state_bytes(self):
        return 0


def test_folds_partition_the_traces():
    folds = crossval.folds_of(23, 5, seed=1)
    assert sorted(i for f in folds for i in f) == list(range(23)) and [len(f) for f in folds] == [5, 5, 5, 4, 4]
    assert crossval.folds_of(23, 5, seed=1) == folds and crossval.folds_of(23, 5, seed=2) != folds
    with pytest.raises(ValueError, match="folds"):
        crossval.folds_of(3, 5, seed=1)


def test_intrusions_splice_a_foreign_segment_of_each_kind():
    rng = random.Random(4)
    learn = _traces(10)
    it = Intruder(learn, rng)
    for kind in KINDS:
        base = learn[0]
        s = it.splice(base, kind, donor=("execve", "socket", "connect") * 30, share=0.2)
        assert s.kind == kind and s.end - s.start == max(10, int(len(base) * 0.2))
        assert s.calls[: s.start] == base[: s.start] and s.calls[s.end :] == base[s.start :]
    assert it.splice(learn[1], "donor", donor=("execve",) * 200).calls.count("execve") >= 10
    with pytest.raises(ValueError, match="unknown intrusion kind"):
        it.splice(learn[0], "bitflip", donor=())


def test_intrusions_that_change_how_much_of_each_call_a_window_holds():
    rng = random.Random(2)
    learn = _traces(10)
    it = Intruder(learn, rng)
    vocabulary = {c for t in learn for c in t}
    base = learn[0]
    for _ in range(20):
        loop = it.splice(base, "loop", donor=(), share=0.5)
        seg = loop.calls[loop.start : loop.end]
        periods = [p for p in range(2, 13) if seg[p:] == seg[:-p]]
        assert periods and set(seg) <= vocabulary  # a learnt stretch of 2-12 calls, repeated
        burst = it.splice(base, "burst", donor=(), share=0.5)
        assert len(set(burst.calls[burst.start : burst.end])) == 1 <= len(set(base))
        mix = it.splice(base, "mix", donor=(), share=0.5)
        assert set(mix.calls[mix.start : mix.end]) <= vocabulary
    # a mix is one learning trace's: calls no learning trace holds never appear
    odd = Intruder([("read",) * 50, ("write",) * 50], random.Random(0))
    assert {len(set(odd.segment("mix", 40, None, ()))) for _ in range(10)} == {1}


def test_fold_marks_the_windows_that_hold_foreign_calls():
    learn, held = _traces(12), _traces(6, seed=1)
    fold = crossval.Fold.make(learn, held, random.Random(0), share=0.2, calls_per_window=100)
    assert fold.labels.tolist() == [0] * 6 + [1] * 6 and fold.kinds.tolist()[6:] == list(KINDS)[:6]
    assert not fold.foreign_windows[fold.normal_windows].any()
    for trace in range(6, 12):  # each intruded trace: its foreign windows are one run covering the segment
        rows = np.flatnonzero(fold.index == trace)
        marked = fold.foreign_windows[rows]
        assert marked.any() and np.all(np.diff(np.flatnonzero(marked)) == 1)


def test_cross_validation_ranks_the_model_above_chance_and_reports_its_tiers():
    traces = _traces(30)
    candidates = [*crossval.config_candidates([{}]), crossval.Candidate("random", RandomScorer)]
    assert candidates[0].label == "defaults"
    rows = crossval.cross_validate(traces, candidates, folds=3, seed=5)
    assert [r.candidate.label for r in rows] == ["defaults", "random"]
    best, chance = rows
    assert best.mean["auc"] > 0.8 and abs(chance.mean["auc"] - 0.5) < 0.25 and len(best.folds) == 3
    assert f"{SEQUENCE_TIER} auc" in best.mean and f"{RATE_TIER} auc" in best.mean
    assert 0 <= best.mean["normal_windows_flagged"] <= 1 and 0 <= best.mean["foreign_windows_flagged"] <= 1
    assert chance.mean["normal_windows_flagged"] == 1.0
    assert crossval.choose(rows) is best
    # a cap on held-out false alarms leaves out the candidates above it, whatever their rank
    assert crossval.choose([chance, best], max_normal_flagged=0.5) is best
    assert crossval.choose([chance, best]) is chance
    # when none qualifies, the one that alarms least
    assert crossval.choose([chance, best], max_normal_flagged=-1.0) is best
    # "never below its tiers": a row whose model loses to one of its tiers alone is passed over
    tier_auc, tier_dr = crossval.best_tier(best)
    assert tier_auc == max(best.mean[f"{t} auc"] for t in (RATE_TIER, SEQUENCE_TIER))
    weak = crossval.Row(best.candidate, {**best.mean, "auc": tier_auc - 0.01}, best.folds)
    assert not crossval.not_below_tiers(weak)
    assert crossval.choose([weak, chance], above_tiers=True) is chance  # chance has no tiers to lose to


def test_grid_and_config_candidates_make_fresh_models():
    configs = crossval.grid(sequence_unseen_nats=[0.0, 128.0], sequence_unseen_scale=[0.2])
    cands = crossval.config_candidates(configs)
    assert [c.label for c in cands] == ["sequence_unseen_nats=0, sequence_unseen_scale=0.2",
                                        "sequence_unseen_nats=128, sequence_unseen_scale=0.2"]
    a, b = cands[1].make(), cands[1].make()
    assert isinstance(a, PipelineScorer) and a is not b and a.baseline is not b.baseline
    assert a.baseline.config.sequence_unseen_nats == 128.0


def test_nested_cross_validation_chooses_inside_each_outer_fold():
    traces = _traces(24)
    candidates = [*crossval.config_candidates([{}]), crossval.Candidate("random", RandomScorer)]
    outer = crossval.nested(traces, candidates, outer=3, inner=2, seed=3)
    assert len(outer) == 3
    for fold in outer:
        assert fold.chosen.candidate.label == "defaults" and len(fold.chosen.folds) == 2
        assert fold.figures["auc"] > 0.7
