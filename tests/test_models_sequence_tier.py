"""The sequence tier (order-4 likelihood + saturating order-6 novelty penalty): River's checks on n-gram
counts, the score by hand (one tier, and many tiers' windows at once), dicts and matrices alike, state, and
why the penalty saturates (its threshold stays within reach)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from baseliner.models.detectors.gram_novelty import GramNoveltyDetector
from baseliner.models.detectors.ngram_likelihood import NgramDetector, dicts_to_matrix
from baseliner.models.detectors.sequence import SequenceTier
from baseliner.models.ngrams import BUCKETS, SHORT_BUCKETS, ngram_counts
from baseliner.models.threshold import TailThreshold
from river import checks

from tests.test_evaluate_detector import ATTACK, LOOPS, count_stream

NAMES = ["read", "write", "openat", "close", "mmap", "brk", "futex", "fstat", "lseek", "poll", "ioctl", "getpid",
         "socket", "connect", "sendto", "recvfrom", "clone", "execve", "dup2", "pipe", "stat", "access", "munmap"]


def _local_datasets(model, scale=1):
    yield count_stream()


def test_river_estimator_checks_on_count_data(monkeypatch):
    """The checks of tests/test_models_river_checks.py again, on n-gram counts, with ROC AUC."""
    monkeypatch.setattr(checks, "_yield_datasets", _local_datasets)
    tier = SequenceTier()
    names = []
    for check in checks.yield_checks(tier):
        check(tier.clone())
        names.append(check.__name__)
    assert "check_roc_auc" in names and len(names) > 15


def test_score_is_the_likelihood_plus_the_saturating_penalty():
    tier = SequenceTier(alpha=3.0, unseen_nats=100.0, unseen_scale=0.25)
    lik, nov = NgramDetector(alpha=3.0), GramNoveltyDetector()
    loop = ngram_counts(["epoll_wait", "read", "write", "close"] * 10)
    for d in (tier, lik, nov):
        d.learn_one(loop)
    x = ngram_counts(["epoll_wait", "read", "write", "close"] * 10 + ATTACK)
    u = nov.score_one(x)
    assert 0 < u < 1
    assert tier.score_one(x) == pytest.approx(lik.score_one(x) + 100.0 * u**2 / (u**2 + 0.25**2))
    # a familiar window pays no penalty, a few new contexts almost none, a share of unseen_scale half of
    # it; it never exceeds unseen_nats
    assert tier.score_one(loop) == pytest.approx(lik.score_one(loop))
    assert tier.penalty(np.array([0.0, 0.025, 0.25, 1.0])).tolist() == pytest.approx(
        [0.0, 100.0 / 101.0, 50.0, 100.0 / (1.0 + 0.0625)])
    # unseen_nats = 0 is the order-4 likelihood alone
    plain = SequenceTier(unseen_nats=0.0)
    plain.learn_one(loop)
    assert plain.score_one(x) == lik.score_one(x)


def test_dicts_and_matrices_are_learnt_and_scored_alike():
    stream = count_stream(200, seed=5)
    one, many = SequenceTier(), SequenceTier()
    for x, _ in stream[:100]:
        one.learn_one(x)
    many.learn_many(dicts_to_matrix(x for x, _ in stream[:100]))
    rows = [x for x, _ in stream[100:]]
    want = [one.score_one(x) for x in rows]
    assert many.score_many(dicts_to_matrix(rows)).tolist() == pytest.approx(want)
    assert one.windows_learned == many.windows_learned == 100


def test_state_round_trip_and_bad_state():
    tier = SequenceTier()
    for x, _ in count_stream(80):
        tier.learn_one(x)
    arrays = tier.to_arrays()
    assert set(arrays) == {"counts", "windows", "seen"}
    assert arrays["counts"].dtype == np.float32 and arrays["counts"].shape == (SHORT_BUCKETS,)
    assert arrays["seen"].nbytes == 8192 and sum(a.nbytes for a in arrays.values()) < 64 * 1024
    back = SequenceTier.from_arrays(arrays)
    x = count_stream(3, seed=11)[0][0]
    assert back.score_one(x) == tier.score_one(x) and back.windows_learned == 80
    with pytest.raises(ValueError):
        SequenceTier.from_arrays({**arrays, "seen": np.zeros(10, dtype=np.uint8)})
    with pytest.raises(ValueError):
        SequenceTier.from_arrays({**arrays, "counts": np.full(SHORT_BUCKETS, -1.0, dtype=np.float32)})


def test_bad_parameters_are_refused():
    for bad in ({"unseen_nats": -1.0}, {"unseen_nats": math.inf}, {"unseen_scale": 0.0}, {"alpha": 0.0}):
        with pytest.raises(ValueError):
            SequenceTier(**bad)


class _Linear(SequenceTier):
    """The penalty the tier does not use: ``unseen_nats`` x the share of new contexts."""

    def penalty(self, unseen: np.ndarray) -> np.ndarray:
        return self.unseen_nats * np.asarray(unseen, dtype=np.float64)


def _prequential_threshold(tier: SequenceTier, windows: list[dict[int, int]]) -> float:
    """The baseline's calibration: scores taken before each window is learnt, the first 30 left out."""
    scores = []
    for x in windows:
        scores.append(tier.score_one(x))
        tier.learn_one(x)
    t = TailThreshold(alarms_per_day=0.5, capacity=4096, min_scores=20, floor=0.0, min_excess=0.5)
    t.update(np.array(scores[30:]), window_seconds=1.0)
    return t.value


def test_saturation_keeps_the_threshold_within_reach_when_learning_keeps_meeting_new_contexts():
    """An image whose learning windows often show new length-6 contexts (3% of them here, as a young model
    meets them): the threshold is calibrated on those windows too.  A linear penalty calibrates it far above
    a window half of whose contexts are new; the saturating one puts that window near it."""
    rng = random.Random(1)
    windows = []
    for _ in range(3000):
        calls: list[str] = []
        while len(calls) < 100:
            calls.extend(rng.choice(LOOPS))
        if rng.random() < 0.03:
            calls[40:] = [rng.choice(NAMES) for _ in range(60)]
        windows.append(ngram_counts(calls))
    probe: list[str] = []
    while len(probe) < 100:
        probe.extend(rng.choice(LOOPS))
    probe[50:] = [rng.choice(NAMES) for _ in range(50)]
    x = ngram_counts(probe)
    saturating = SequenceTier(unseen_nats=128.0, unseen_scale=0.2)
    linear = _Linear(unseen_nats=128.0)
    ratios = {}
    for name, tier in (("saturating", saturating), ("linear", linear)):
        threshold = _prequential_threshold(tier, windows)
        ratios[name] = tier.score_one(x) / threshold
    assert saturating.novelty.score_one(x) > 0.3
    assert ratios["saturating"] > 0.85 and ratios["linear"] < 0.8, ratios


def _stacked_case(seed: int, weights: str = "default"):
    """Windows of three tiers with entries of every order (some counts 0, some windows empty), in an order
    where the tiers' windows interleave.  ``weights``: the likelihood models' order weights, the default
    (order 4 alone), every order weighted alike in all tiers, or different per tier."""
    rng = np.random.default_rng(seed)
    from baseliner.models.ngrams import NUM_BUCKETS

    tiers = [SequenceTier(), SequenceTier(alpha=1.0, unseen_nats=0.0), SequenceTier(unseen_nats=50.0, unseen_scale=0.1)]
    if weights != "default":
        for k, tier in enumerate(tiers):
            w = (1.0, 0.5, 1.0) if weights == "all orders" or k == 0 else (0.0, 1.0, 0.0)
            tier.likelihood = NgramDetector(alpha=tier.alpha, order_weights=w)
    pools = [rng.choice(NUM_BUCKETS, 300, replace=False) for _ in tiers]
    which = rng.integers(0, len(tiers), 60)
    which[:5] = 0  # a run at the start, then interleaved
    lengths = rng.integers(0, 40, len(which))
    lengths[7] = 0
    cols = np.concatenate([rng.choice(pools[t], k, replace=False) if rng.random() < 0.8
                           else rng.choice(NUM_BUCKETS, k, replace=False)  # never-seen contexts
                           for t, k in zip(which, lengths, strict=True)]).astype(np.int64)
    counts = rng.integers(0, 30, len(cols)).astype(np.float64)
    ptr = np.concatenate(([0], np.cumsum(lengths)))
    for t, tier in enumerate(tiers):  # some history: a part of the pool
        part = pools[t][:200]
        history = np.zeros((5, NUM_BUCKETS))
        history[np.arange(200) % 5, part] = rng.integers(1, 50, len(part))
        tier.learn_many(history)
    return tiers, ptr, cols, counts, which


def _by_hand(tier: SequenceTier, cols: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    """A window's score and share of unseen order-6 grams, from the tier's state, written out: the
    weighted mean of -log p(b) = log(N_order + alpha x BUCKETS) - log(C[b] + alpha) over its order-2..4
    grams, plus unseen_nats x u² / (u² + unseen_scale²) for its share u of order-6 grams never seen."""
    lik = tier.likelihood
    c = lik.to_arrays()["counts"]
    norms = np.log(c.reshape(3, BUCKETS).sum(axis=1) + lik.alpha * BUCKETS)
    short = cols < SHORT_BUCKETS
    w = np.asarray(lik.order_weights)[cols[short] // BUCKETS] * counts[short]
    surprise = norms[cols[short] // BUCKETS] - np.log(c[cols[short]] + lik.alpha)
    s = float((w * surprise).sum() / w.sum()) if w.sum() > 0 else 0.0
    seen = np.unpackbits(tier.novelty.to_arrays()["seen"]).astype(bool)
    long_cols, long_counts = cols[~short] - SHORT_BUCKETS, counts[~short]
    u = float(long_counts[~seen[long_cols]].sum() / long_counts.sum()) if long_counts.sum() > 0 else 0.0
    return s + tier.unseen_nats * u**2 / (u**2 + tier.unseen_scale**2), u


@pytest.mark.parametrize(("seed", "weights"), [(0, "default"), (1, "default"), (2, "default"), (3, "all orders"),
                                             (4, "per tier")])
def test_stacked_scores_and_learning_follow_the_formula_tier_by_tier(seed, weights):
    """``score_stacked`` / ``learn_stacked`` (every image's tiers in one pass) give each window the score
    the formula gives against its own tier, and each tier learns exactly its learnt windows' grams."""
    tiers, ptr, cols, counts, which = _stacked_case(seed, weights)
    scored = SequenceTier.score_stacked(tiers, ptr, cols, counts, which)
    expected = [_by_hand(tiers[t], cols[ptr[k] : ptr[k + 1]], counts[ptr[k] : ptr[k + 1]]) for k, t in enumerate(which)]
    np.testing.assert_allclose(scored.score, [e[0] for e in expected], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(scored.unseen, [e[1] for e in expected], rtol=1e-12, atol=1e-12)
    assert scored.unseen.max() > 0.3 and (scored.score > 0).sum() > 30  # the case is not trivial
    assert scored.has_grams.tolist() == (np.diff(ptr) > 0).tolist()

    learn = np.random.default_rng(seed + 10).random(len(which)) < (1.0 if seed == 2 else 0.7)  # some / every window
    before = [(t.likelihood.to_arrays()["counts"], np.unpackbits(t.novelty.to_arrays()["seen"]).astype(bool),
               t.windows_learned) for t in tiers]
    SequenceTier.learn_stacked(tiers, scored, learn)
    rows = np.repeat(np.arange(len(which)), np.diff(ptr))
    for t, (tier, (c, seen, windows)) in enumerate(zip(tiers, before, strict=True)):
        mine = (which[rows] == t) & learn[rows]
        short, pos = mine & (cols < SHORT_BUCKETS), mine & (cols >= SHORT_BUCKETS) & (counts > 0)
        np.testing.assert_array_equal(tier.likelihood.to_arrays()["counts"],
                                      c + np.bincount(cols[short], counts[short], SHORT_BUCKETS))
        seen[cols[pos] - SHORT_BUCKETS] = True
        np.testing.assert_array_equal(np.unpackbits(tier.novelty.to_arrays()["seen"]).astype(bool), seen)
        assert tier.windows_learned == windows + int(((which == t) & learn & (np.diff(ptr) > 0)).sum())
        assert tier.likelihood._totals.tolist() == tier.likelihood.to_arrays()["counts"].reshape(3, -1).sum(1).tolist()
    # and they go on scoring by the formula
    again = SequenceTier.score_stacked(tiers, ptr, cols, counts, which)
    np.testing.assert_allclose(
        again.score,
        [_by_hand(tiers[t], cols[ptr[k] : ptr[k + 1]], counts[ptr[k] : ptr[k + 1]])[0] for k, t in enumerate(which)],
        rtol=1e-9, atol=1e-12)


def test_log_table_follows_the_counts_through_every_way_of_learning():
    """``NgramDetector`` keeps log(C + alpha) per bucket for scoring instead of taking a logarithm per
    entry: after each way of learning (and a restore) it equals the table computed afresh, and the scores
    are those of the counts."""
    from scipy import sparse

    rng = np.random.default_rng(3)
    det = NgramDetector(alpha=2.0, order_weights=(1.0, 0.5, 1.0))
    cols = rng.integers(0, SHORT_BUCKETS, 400)
    counts = rng.integers(0, 9, 400).astype(np.float64)
    windows = sparse.csr_matrix((counts, (np.arange(len(cols)) % 7, cols)), shape=(7, 77824))

    def check(where: str) -> None:
        np.testing.assert_array_equal(det._log_counts, np.log(det._counts + det.alpha), err_msg=where)
        fresh = NgramDetector.from_arrays(det.to_arrays(), alpha=2.0, order_weights=(1.0, 0.5, 1.0))
        np.testing.assert_allclose(det.score_many(windows), fresh.score_many(windows), rtol=1e-12, err_msg=where)

    det.learn_one({int(b): 3 for b in cols[:20]})
    check("learn_one")
    dense = np.zeros((2, 77824))
    dense[0, cols[:50]] = 4.0
    det.learn_many(dense)
    check("learn_many")
    det.learn_entries(cols[150:300], counts[150:300], 2)
    check("learn_entries")
    restored = NgramDetector.from_arrays(det.to_arrays(), alpha=2.0, order_weights=(1.0, 0.5, 1.0))
    np.testing.assert_array_equal(restored._log_counts, det._log_counts)
    assert det._log_counts.max() > math.log(2.0) + 1  # the case is not trivial
