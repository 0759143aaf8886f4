"""A new version's baseline (models/lineage.py) on its own: faster adaptation, threshold recalibration, the end
of the period, a reset."""

from __future__ import annotations

import numpy as np
from baseliner.models.baseline import BaselineConfig, ImageBaseline
from baseliner.models.lineage import ADAPT_MEMORY_WINDOWS, ADAPTED, ADAPTING, FALLBACK, LineagePolicy, detach, inherit
from baseliner.models.rate_features import FEATURE_NAMES
from baseliner.models.vector import FeatureVector, Identity

T0 = 1.7e9
READ = FEATURE_NAMES.index("syscall.read")


def windows(tag: str, start: int, n: int, read: float, spread: float, seed: int) -> list[FeatureVector]:
    rng = np.random.default_rng(seed)
    return [FeatureVector(Identity("n", f"c{i % 2}", "web", tag), T0 + 5.0 * (start + i), 5.0,
                          {"read": max(1, int(rng.normal(read, spread))), "write": 300}, seconds_since_start=3600.0)
            for i in range(n)]


def feed(b: ImageBaseline, vectors: list[FeatureVector]) -> int:
    """Process the windows a window time at a time (as the service gets them); the windows flagged."""
    return sum(v.anomalous for k in range(0, len(vectors), 2) for v in b.process(vectors[k:k + 2]))


def parent() -> ImageBaseline:
    b = ImageBaseline("web:1", BaselineConfig(min_learn_windows=100, min_learn_seconds=0, stable_confidence=0.0))
    b.process(windows("1", 0, 400, 500, 10, seed=1))
    assert b.state.value == "detecting"
    return b


def child_of(p: ImageBaseline, policy: LineagePolicy) -> ImageBaseline:
    meta, arrays = p.to_state()
    c = ImageBaseline.from_state(meta, arrays)
    c.key = "web:2"
    inherit(c, p.key, ["repository web"], policy)
    return c


def test_a_version_adapts_faster_and_recalibrates_then_settles() -> None:
    p = parent()
    meta, arrays = p.to_state()
    plain = ImageBaseline.from_state(meta, arrays)  # the parent's model going on without lineage
    child = child_of(p, LineagePolicy(observe_seconds=60, adapt_seconds=1500))
    # the new version reads a little more, and more unevenly: within the parent's threshold mostly
    newer = windows("2", 400, 200, 560, 30, seed=2)
    flagged = feed(child, newer)
    feed(plain, newer)
    assert flagged <= 4
    target = np.log1p(560 / 5.0)
    moved = [abs(b.steady.detector.means()[READ] - target) for b in (child, plain)]
    assert moved[0] < 0.6 * moved[1], moved  # the version's model is nearer its own level
    assert child.steady.detector.window == ADAPT_MEMORY_WINDOWS and child.lineage.status == ADAPTING
    rate_parent, _ = child.lineage.parent_thresholds
    assert child.lineage.rate_scores is not None and child.lineage.rate_scores.n_scores > 150
    assert child.threshold >= rate_parent  # recalibrated on the version's unflagged windows, never below
    # after adapt_seconds of event time the period ends: memory back to memory_windows
    feed(child, windows("2", 600, 120, 560, 30, seed=3))
    assert child.lineage.status == ADAPTED and child.steady.detector.window == child.config.memory_windows
    assert child.lineage.rate_scores is None


def test_a_reset_ends_the_adaptation() -> None:
    child = child_of(parent(), LineagePolicy())
    child.process(windows("2", 400, 20, 500, 10, seed=4))
    child.reset()
    detach(child, "reset by an operator")
    assert child.lineage.status == FALLBACK and child.lineage.reason == "reset by an operator"
    assert child.state.value == "learning"
    child.process(windows("2", 420, 20, 500, 10, seed=5))  # learns, nothing of the version logic applies
    assert child.lineage.status == FALLBACK and child.windows_learned == 20
