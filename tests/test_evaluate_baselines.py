"""The classic baselines: dense vectors over the learning vocabulary, scaled where the model needs it."""

from __future__ import annotations

import numpy as np
from baseliner.models.evaluate.baselines import (
    BagNearestNeighbour,
    Frequencies,
    HalfSpaceTreesBaseline,
    IsolationForestBaseline,
    Stide,
    default_baselines,
)
from baseliner.models.evaluate.metrics import roc_auc

CALLS = ["read", "write", "open", "close", "mmap", "futex", "poll", "stat"]


def _programs(rng: np.random.Generator, n: int, mix: np.ndarray) -> list[list[str]]:
    return [[str(c) for c in rng.choice(CALLS, size=int(rng.integers(80, 160)), p=mix)] for _ in range(n)]


def test_frequencies_are_dense_over_the_learning_vocabulary():
    f = Frequencies()
    f.learn_vocabulary([["read", "read"], ["write", "open"]])
    assert f.columns == ["read", "write", "open", "(unseen)"]
    m = f.matrix([["read", "futex", "futex", "write"], []])
    assert m.tolist() == [[0.25, 0.25, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0]]


def test_half_space_trees_see_every_syscall_not_only_the_first_traces():
    """The first learning trace uses one syscall: River would build its trees from that sample's keys
    alone if it were fed sparse dicts, and be blind to every other column."""
    rng = np.random.default_rng(0)
    normal_mix = np.array([0.3, 0.3, 0.1, 0.1, 0.1, 0.05, 0.05, 0.0])
    learn = [["read"] * 50] + _programs(rng, 400, normal_mix)
    odd_mix = np.array([0.3, 0.05, 0.05, 0.05, 0.05, 0.2, 0.1, 0.2])  # as much read; futex, stat (never learnt)
    test = _programs(rng, 60, normal_mix) + _programs(rng, 60, odd_mix)
    labels = np.r_[np.zeros(60), np.ones(60)]
    model = HalfSpaceTreesBaseline(seed=1)
    model.fit(learn)
    # every learnt syscall (stat never was) and the unseen column, every time, in [0, 1]
    assert sorted(model._rows(test[:1])[0]) == sorted([*CALLS[:7], "(unseen)"])
    assert all(0.0 <= v <= 1.0 for v in model._rows(test[-1:])[0].values())
    assert roc_auc(labels, model.score(test)) > 0.9


def test_every_baseline_ranks_a_foreign_mix_above_the_learnt_one():
    rng = np.random.default_rng(3)
    normal_mix = np.array([0.3, 0.3, 0.1, 0.1, 0.1, 0.05, 0.05, 0.0])
    learn = _programs(rng, 300, normal_mix)
    odd = [list(rng.choice(CALLS, size=120, p=[0.02, 0.02, 0.3, 0.3, 0.02, 0.02, 0.02, 0.3])) for _ in range(40)]
    test = _programs(rng, 40, normal_mix) + odd
    labels = np.r_[np.zeros(40), np.ones(40)]
    for model in default_baselines(seed=2):
        model.fit(learn)
        assert roc_auc(labels, model.score(test)) > 0.9, model.name


def test_seeds_reach_the_randomised_baselines():
    names = [type(m) for m in default_baselines(5)]
    assert names == [Stide, BagNearestNeighbour, IsolationForestBaseline, HalfSpaceTreesBaseline]
    rng = np.random.default_rng(1)
    learn = _programs(rng, 300, np.full(8, 1 / 8))
    test = _programs(rng, 20, np.full(8, 1 / 8))
    a, b, c = (IsolationForestBaseline(s) for s in (1, 1, 2))
    for m in (a, b, c):
        m.fit(learn)
    assert np.array_equal(a.score(test), b.score(test)) and not np.array_equal(a.score(test), c.score(test))
