"""A baseline holds memory only for what its image has shown (bench/baseline_memory.py measures the RSS)."""

from __future__ import annotations

from typing import Any

import numpy as np
from baseliner.models.baseline import ImageBaseline
from baseliner.models.detectors.sequence import SequenceTier
from baseliner.models.ngrams import OFFSETS, SHORT_BUCKETS
from baseliner.models.threshold import TailThreshold
from baseliner.models.vector import FeatureVector, Identity


def array_bytes(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes of the NumPy arrays reachable from ``obj`` through attributes, dicts, lists and tuples."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, dict):
        return sum(array_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(array_bytes(v, seen) for v in obj)
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        return sum(array_bytes(v, seen) for v in vars(obj).values())
    return 0


def test_a_new_baseline_allocates_no_tables() -> None:
    assert array_bytes(ImageBaseline("nginx:1")) < 8 * 1024


def test_tables_grow_by_the_buckets_shown_and_keep_their_scores() -> None:
    rng = np.random.default_rng(0)
    order4 = OFFSETS[4] + rng.choice(4096, 300, replace=False)
    order6 = SHORT_BUCKETS + rng.choice(65536, 500, replace=False)
    windows = [{int(b): int(rng.integers(1, 50)) for b in np.concatenate([rng.choice(order4, 100),
                                                                         rng.choice(order6, 100)])}
               for _ in range(40)]
    tier = SequenceTier()
    for w in windows:
        tier.learn_one(w)
    shown4 = {b for w in windows for b in w if b < SHORT_BUCKETS}
    shown6 = {b for w in windows for b in w if b >= SHORT_BUCKETS}
    assert len(tier.likelihood._keys) == len(shown4) and tier.novelty.buckets_seen == len(shown6)
    assert array_bytes(tier) < 18 * len(shown4) + 2 * len(shown6) + 1024
    # the same model as a dense one: restored from the (dense) state, it scores every window alike
    back = SequenceTier.from_arrays(tier.to_arrays())
    probe = windows[:5] + [{int(b): 3 for b in rng.choice(SHORT_BUCKETS + 65536, 60)}]
    assert [back.score_one(w) for w in probe] == [tier.score_one(w) for w in probe]


def test_threshold_sample_grows_with_the_scores() -> None:
    t = TailThreshold(capacity=4096)
    t.add(np.arange(10.0), 5.0)
    assert t._ring.nbytes <= 64 * 4
    t.add(np.arange(5000.0), 5.0)
    assert len(t._ring) == 4096 and t.n_scores == 4096


def test_baseline_memory_after_learning_stays_small() -> None:
    ident = Identity("node-1", "c1", "shop/api", "1.0")
    rng = np.random.default_rng(1)
    grams = OFFSETS[4] + rng.choice(4096, 200, replace=False)
    b = ImageBaseline("shop/api:1.0")
    b.process([FeatureVector(ident, 1.7e9 + 10 * i, 10.0, {"read": 100 + i % 5, "write": 50},
                             ngrams={int(g): 2 for g in rng.choice(grams, 50)}) for i in range(100)])
    assert array_bytes(b) < 16 * 1024
