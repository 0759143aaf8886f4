"""The feature transform: counts -> log-rate space, against the definition (``log1p(count / seconds)`` for
rate features, ``log1p(count)`` for count features) computed one value at a time with ``math.log1p``."""

from __future__ import annotations

import math

import numpy as np
from baseliner.models.rate_features import FEATURES, N_FEATURES, transform


def test_transform_matches_log1p_of_the_rate_within_single_precision() -> None:
    rng = np.random.default_rng(0)
    counts = np.floor(10 ** rng.uniform(0, 13, (400, N_FEATURES)))
    counts[:, ::4] = 0
    counts[0, :4] = [1, 2, 1e17, 1e19]  # the last is over the cap of 1e18 per second
    seconds = rng.choice([0.5, 1.0, 10.0, 3600.0], len(counts))
    got = transform(counts, seconds)
    worst = 0.0
    for i in range(len(counts)):
        for j, f in enumerate(FEATURES):
            value = counts[i, j] / seconds[i] if f.kind == "rate" else counts[i, j]
            expected = math.log1p(min(value, 1e18))
            worst = max(worst, abs(got[i, j] - expected))
            # near 0 (rare calls in long windows) the error stays far below the value itself
            assert abs(got[i, j] - expected) <= 2.5e-6 + 1e-3 * expected, (i, f.name, got[i, j], expected)
    assert worst > 0  # single precision: not bit-exact, and the bound above is what is promised
    assert got.dtype == np.float64 and got[1:, ::4].max() == 0.0


def test_transform_of_hostile_but_finite_input_is_finite_and_non_negative() -> None:
    counts = np.full((3, N_FEATURES), 1e300)
    counts[1] = -5.0
    counts[2] = 0.0
    got = transform(counts, np.array([1e-300, 10.0, 10.0]))
    assert np.isfinite(got).all() and (got >= 0).all()
    assert got[1].max() == 0.0 and got[0].max() == np.float32(math.log1p(1e18))


def test_a_name_table_changed_in_place_maps_to_its_new_columns() -> None:
    """The syscall columns of the last name table are remembered by content: the same list with a name
    replaced (same length) is mapped again."""
    from baseliner.models.block import VectorBlock
    from baseliner.models.rate_features import FEATURE_INDEX, block_counts
    from baseliner.models.vector import FeatureVector, Identity

    block = VectorBlock.from_vectors([FeatureVector(Identity("n", "c", "app"), 1.7e9, 5.0, {"read": 4.0})])
    assert block_counts(block)[0, FEATURE_INDEX["syscall.read"]] == 4.0
    names = block.syscall_names
    assert isinstance(names, list)
    names[0] = "write"  # the same list object
    counts = block_counts(block)[0]
    assert counts[FEATURE_INDEX["syscall.write"]] == 4.0 and counts[FEATURE_INDEX["syscall.read"]] == 0.0
