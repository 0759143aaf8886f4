"""The order-6 novelty detector (hashed STIDE): River's checks on n-gram counts, batch = one-by-one, state."""

from __future__ import annotations

import random

import numpy as np
import pytest
from baseliner.models.detectors.gram_novelty import GramNoveltyDetector
from baseliner.models.detectors.ngram_likelihood import NgramDetector, dicts_to_matrix
from baseliner.models.evaluate.windows import count_windows
from baseliner.models.ngrams import NUM_BUCKETS, SHORT_BUCKETS, ngram_counts, order_of
from river import checks

from tests.test_evaluate_detector import ATTACK, count_stream


def _local_datasets(model, scale=1):
    yield count_stream()


def test_river_estimator_checks_on_count_data(monkeypatch):
    monkeypatch.setattr(checks, "_yield_datasets", _local_datasets)
    det = GramNoveltyDetector()
    names = []
    for check in checks.yield_checks(det):
        check(det.clone())
        names.append(check.__name__)
    assert "check_roc_auc" in names and len(names) > 15


def test_score_is_the_share_of_unseen_six_grams():
    det = GramNoveltyDetector()
    loop = ["epoll_wait", "read", "write", "close"] * 10
    det.learn_one(ngram_counts(loop))
    x = ngram_counts(loop + ATTACK)
    six = {b: c for b, c in x.items() if order_of(b) == 6}
    seen = {b for b in ngram_counts(loop) if order_of(b) == 6}
    want = sum(c for b, c in six.items() if b not in seen) / sum(six.values())
    assert 0 < want < 1 and det.score_one(x) == pytest.approx(want)
    # grams of other orders do not count, whatever their novelty
    assert det.score_one({5: 3.0, 9000: 1.0}) == 0.0
    assert det.score_one({}) == 0.0


def test_batch_methods_equal_one_by_one():
    stream = count_stream(200, seed=5)
    one, many = GramNoveltyDetector(), GramNoveltyDetector()
    for x, _ in stream[:100]:
        one.learn_one(x)
    many.learn_many(dicts_to_matrix(x for x, _ in stream[:100]))
    rows = [x for x, _ in stream[100:]]
    want = [one.score_one(x) for x in rows]
    assert many.score_many(dicts_to_matrix(rows)).tolist() == pytest.approx(want)
    assert many.buckets_seen == one.buckets_seen and many.windows_learned == 100


def test_trace_score_is_the_gram_weighted_mean_of_window_scores():
    rng = random.Random(2)
    det = GramNoveltyDetector()
    names = ["read", "write", "openat", "close", "mmap", "brk"]
    det.learn_one(ngram_counts([rng.choice(names) for _ in range(400)]))
    trace = [rng.choice(names + ["execve"]) for _ in range(333)]
    windows = dicts_to_matrix(ng for _, ng in count_windows(trace, 50))
    s, w = det.score_many(windows), det.grams(windows)
    assert float(s @ w / w.sum()) == pytest.approx(det.score_one(ngram_counts(trace)))


def test_state_is_an_8_kib_bitset_and_checked():
    det = GramNoveltyDetector()
    for x, _ in count_stream(50):
        det.learn_one(x)
    arrays = det.to_arrays()
    assert arrays["seen"].dtype == np.uint8 and arrays["seen"].nbytes == 8192
    back = GramNoveltyDetector.from_arrays(arrays)
    assert back.windows_learned == 50 and back.buckets_seen == det.buckets_seen > 0
    x = count_stream(3, seed=11)[0][0]
    assert back.score_one(x) == det.score_one(x)
    with pytest.raises(ValueError, match="shapes"):
        GramNoveltyDetector.from_arrays({"seen": np.zeros(10, dtype=np.uint8), "windows": np.array([1])})
    with pytest.raises(ValueError, match="shapes"):
        GramNoveltyDetector.from_arrays({"seen": arrays["seen"], "windows": np.array([-1])})


def test_bad_input_and_foreign_keys():
    det = GramNoveltyDetector()
    det.learn_one({"v0": 1.0, SHORT_BUCKETS + 1: float("nan"), NUM_BUCKETS + 5: 2})
    assert det.buckets_seen == 2  # "v0" and the out-of-range key are hashed into the order-6 range
    assert det.score_one({"v0": 2.0, SHORT_BUCKETS + 1: -1}) == 0.0
    with pytest.raises(ValueError, match="columns"):
        det.score_many(np.zeros((2, 10)))


def test_likelihood_detector_ignores_order_six():
    det = NgramDetector()
    loop = ngram_counts(["epoll_wait", "read", "write", "close"] * 10)
    det.learn_one(loop)
    short = {b: c for b, c in loop.items() if b < SHORT_BUCKETS}
    assert det.score_one(loop) == det.score_one(short)
    assert det.to_arrays()["counts"].shape == (SHORT_BUCKETS,)
