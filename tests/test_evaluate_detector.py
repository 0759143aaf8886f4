"""The n-gram sequence detector: River's checks on n-gram count data, batch = one-by-one, state, traces."""

from __future__ import annotations

import random

import numpy as np
import pytest
from baseliner.models.detectors.ngram_likelihood import NgramDetector, dicts_to_matrix
from baseliner.models.evaluate.windows import count_windows
from baseliner.models.ngrams import NUM_BUCKETS, dense, ngram_counts
from river import checks
from scipy import sparse

LOOPS = [
    ["epoll_wait", "read", "write", "close"],
    ["openat", "fstat", "read", "read", "close"],
    ["futex", "clock_gettime", "futex", "nanosleep"],
]
ATTACK = ["clone", "execve", "dup2", "dup2", "connect", "socket", "setuid", "execve"]


def count_stream(n=600, seed=3):
    """Windows of a loop-driven program; ~3% of them carry an injected foreign sequence."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        calls = []
        while len(calls) < 60:
            calls.extend(rng.choice(LOOPS))
        anomalous = i > 40 and rng.random() < 0.03
        if anomalous:
            at = rng.randrange(len(calls))
            calls[at:at] = ATTACK
        out.append(({k: float(v) for k, v in ngram_counts(calls).items()}, anomalous))
    return out


def _local_datasets(model, scale=1):
    yield count_stream()


@pytest.mark.parametrize("params", list(NgramDetector._unit_test_params()), ids=str)
def test_river_estimator_checks_on_count_data(params, monkeypatch):
    monkeypatch.setattr(checks, "_yield_datasets", _local_datasets)
    det = NgramDetector(**params)
    names = []
    for check in checks.yield_checks(det):
        check(det.clone())
        names.append(check.__name__)
    assert "check_roc_auc" in names and len(names) > 15


def test_detects_the_injected_sequences():
    det = NgramDetector()
    scores, labels = [], []
    for x, y in count_stream(seed=9):
        scores.append(det.score_one(x))
        det.learn_one(x)
        labels.append(y)
    from baseliner.models.evaluate.metrics import roc_auc

    assert roc_auc(np.array(labels[50:], int), scores[50:]) > 0.95


@pytest.mark.parametrize("tail", [1.0, 0.3])
def test_batch_methods_equal_one_by_one(tail):
    stream = [x for x, _ in count_stream(120)]
    params = {"tail": tail, "order_weights": (0.2, 0.5, 1.0)}
    a, b = NgramDetector(**params), NgramDetector(**params)
    for x in stream[:80]:
        a.learn_one(x)
    b.learn_many(np.stack([dense({int(k): int(v) for k, v in x.items()}) for x in stream[:80]]))
    np.testing.assert_allclose(a.to_arrays()["counts"], b.to_arrays()["counts"])
    one = [a.score_one(x) for x in stream[80:]]
    dense_rows = np.stack([dense({int(k): int(v) for k, v in x.items()}) for x in stream[80:]])
    np.testing.assert_allclose(b.score_many(dense_rows), one, rtol=1e-12)
    np.testing.assert_allclose(b.score_many(sparse.csr_matrix(dense_rows)), one, rtol=1e-12)
    np.testing.assert_allclose(b.score_many(dicts_to_matrix(stream[80:])), one, rtol=1e-12)


def test_tail_is_the_mean_of_the_most_surprising_grams():
    det = NgramDetector(tail=0.5, order_weights=(0.0, 0.0, 1.0))
    det.learn_one({8192: 99.0, 8193: 1.0})
    # -log p(b) = log(N + alpha x BUCKETS) - log(C[b] + alpha): 100 order-4 grams learnt, alpha 3
    norm = np.log(100.0 + 3.0 * 4096)
    s = {8192: norm - np.log(99.0 + 3.0), 9000: norm - np.log(3.0)}
    # 4 grams of bucket 8192 and 4 of an unseen bucket: the top half is the 4 unseen ones
    assert det.score_one({8192: 4, 9000: 4}) == pytest.approx(s[9000])
    # 1 unseen + 3 common: half (2 grams) = the unseen one and one common one
    assert det.score_one({8192: 3, 9000: 1}) == pytest.approx((s[9000] + s[8192]) / 2)


def test_trace_score_is_the_gram_weighted_mean_of_window_scores():
    rng = random.Random(5)
    train = [rng.choice(LOOPS) * 30 for _ in range(20)]
    det = NgramDetector(order_weights=(0.3, 0.3, 1.0))
    det.learn_many(dicts_to_matrix(ngram_counts(t) for t in train))
    trace = [c for _ in range(40) for c in rng.choice(LOOPS + [ATTACK])]
    windows = dicts_to_matrix(ng for _, ng in count_windows(trace, 37))
    s, w = det.score_many(windows), det.grams(windows)
    assert float(s @ w / w.sum()) == pytest.approx(det.score_one(ngram_counts(trace)))


def test_state_roundtrip_is_small_and_checked():
    det = NgramDetector()
    for x, _ in count_stream(50):
        det.learn_one(x)
    arrays = det.to_arrays()
    assert sum(a.nbytes for a in arrays.values()) < 256 * 1024
    assert all(isinstance(a, np.ndarray) for a in arrays.values())
    back = NgramDetector.from_arrays(arrays)
    assert back.windows_learned == 50
    x = count_stream(3, seed=11)[0][0]
    assert back.score_one(x) == det.score_one(x)
    with pytest.raises(ValueError, match="shapes"):
        NgramDetector.from_arrays({"counts": np.zeros(10), "windows": np.array([1])})
    bad = dict(arrays, counts=arrays["counts"].copy())
    bad["counts"][3] = -1
    with pytest.raises(ValueError, match="negative"):
        NgramDetector.from_arrays(bad)


def test_bad_input_is_handled():
    det = NgramDetector()
    assert det.score_one({}) == 0.0
    det.learn_one({5: float("nan"), 6: -3, "weird": 2.0, 7: 1})
    assert det.to_arrays()["counts"][[5, 6, 7]].tolist() == [0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="columns"):
        det.score_many(np.zeros((2, 5)))
    with pytest.raises(ValueError):
        NgramDetector(alpha=0)
    with pytest.raises(ValueError):
        NgramDetector(order_weights=(0.0, 0.0, 0.0))
    with pytest.raises(ValueError):
        NgramDetector(tail=0)
    assert det.score_many(np.zeros((0, NUM_BUCKETS))).shape == (0,)


def test_dicts_to_matrix_equals_row_by_row():
    from baseliner.models.detectors.ngram_likelihood import sparse_row

    rng = random.Random(4)
    rows = [{rng.randrange(NUM_BUCKETS): rng.choice([1, 2, 0, -1, float("nan"), 3.5]) for _ in range(rng.randrange(6))}
            for _ in range(60)] + [{}, {"v0": 2.0, 7: 1}]
    m = dicts_to_matrix(rows)
    assert m.shape == (len(rows), NUM_BUCKETS)
    for i, r in enumerate(rows):
        idx, val = sparse_row(r)
        expected = np.zeros(NUM_BUCKETS)
        np.add.at(expected, idx, val)
        np.testing.assert_array_equal(m[i].toarray().ravel(), expected)
    assert dicts_to_matrix([]).shape == (0, NUM_BUCKETS)
