"""ImageBaseline: lifecycle, decisions, learning policy, persistence."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from baseliner.models.baseline import BaselineConfig, ImageBaseline, Mode, State
from baseliner.models.errors import StateError, StateVersionError
from baseliner.models.vector import Endpoint, FeatureVector, Identity

IDENT = Identity("node-1", "c1", "nginx", "1.27")
T0 = 1.7e9


def window(i: int, rng: np.random.Generator, **extra) -> FeatureVector:
    reads = int(rng.lognormal(np.log(800), 0.2))
    base = dict(
        identity=IDENT,
        window_start=T0 + 5.0 * i,
        window_seconds=5.0,
        syscalls={"read": reads, "write": int(reads * 0.6), "epoll_wait": 200, "close": 40},
        accepts=int(rng.poisson(20)),
        bytes_sent=int(rng.lognormal(np.log(2e5), 0.3)),
        bytes_received=int(rng.lognormal(np.log(5e4), 0.3)),
        executables=["/usr/sbin/nginx"] if i == 0 else [],
        endpoints=[Endpoint("10.0.0.5", 5432)],
    )
    base.update(extra)
    return FeatureVector(**base)


def learned(n: int = 200, seed: int = 0, **cfg) -> tuple[ImageBaseline, np.random.Generator]:
    rng = np.random.default_rng(seed)
    b = ImageBaseline("nginx:1.27",
                      BaselineConfig(min_learn_windows=60, min_learn_seconds=300, stable_confidence=0, **cfg))
    b.process([window(i, rng) for i in range(n)])
    return b, rng


def test_learning_then_detecting_needs_windows_and_duration():
    rng = np.random.default_rng(1)
    b = ImageBaseline("k", BaselineConfig(min_learn_windows=60, min_learn_seconds=1000, stable_confidence=0))
    b.process([window(i, rng) for i in range(100)])  # 100 windows but only 500 s
    assert b.state is State.LEARNING and not math.isfinite(b.threshold)
    b.process([window(i, rng) for i in range(100, 200)])  # now 1000 s
    assert b.state is State.DETECTING and math.isfinite(b.threshold)


def test_nothing_is_flagged_while_learning():
    rng = np.random.default_rng(2)
    b = ImageBaseline("k", BaselineConfig(min_learn_windows=60, min_learn_seconds=0, stable_confidence=0))
    verdicts = b.process([window(i, rng, executables=[f"/bin/x{i}"]) for i in range(30)])
    assert not any(v.anomalous for v in verdicts)
    assert all(v.learned for v in verdicts)


def test_false_alarms_stay_near_budget_on_normal_data():
    b, rng = learned(400)
    verdicts = b.process([window(i, rng) for i in range(400, 4400)])
    alarms = sum(v.anomalous for v in verdicts)
    # budget: 1 alarm/day at 5 s windows = 17280 windows/day; 4000 windows ~ 0.23 expected
    assert alarms <= 3


@pytest.mark.parametrize(
    ("extra", "kind"),
    [
        ({"executables": ["/tmp/xmrig"], "execs": 1}, "novel_executable"),
        ({"endpoints": [Endpoint("203.0.113.9", 4444)], "connects": 1}, "novel_port"),
        ({"sensitive_paths": ["/etc/passwd"], "sensitive_writes": 1, "write_opens": 1}, "novel_sensitive_path"),
        ({"connects_failed": 400, "connects": 400, "remote_ports": 400}, "rate"),
        ({"bytes_sent": 5e8}, "rate"),
    ],
)
def test_attacks_are_flagged_explained_and_not_learned(extra, kind):
    b, rng = learned()
    learned_before = b.windows_learned
    v = b.process([window(1000, rng, **extra)])[0]
    assert v.anomalous and kind in v.kinds and v.severity
    assert v.score > v.threshold
    assert not v.learned and b.windows_learned == learned_before
    if kind == "rate":
        assert v.explanation and "baseline" in v.explanation[0].text()
    else:
        assert v.novel
    # not learned: the same window is flagged again
    assert b.process([window(1001, rng, **extra)])[0].anomalous


def test_ephemeral_ports_are_not_novel():
    b, rng = learned()
    v = b.process([window(1000, rng, endpoints=[Endpoint("10.0.0.5", 5432), Endpoint("10.0.0.7", 40000)])])[0]
    assert not v.anomalous


def test_freeze_learns_nothing_and_reset_forgets():
    b, rng = learned()
    b.set_mode(Mode.FREEZE)
    n = b.windows_learned
    verdicts = b.process([window(i, rng) for i in range(300, 320)])
    assert b.state is State.FROZEN and b.windows_learned == n
    assert not any(v.learned for v in verdicts)
    b.reset()
    assert b.windows_learned == 0 and b.state is State.FROZEN and b.novelty_sets()["executable"] == []
    b.set_mode(Mode.AUTO)
    assert b.state is State.LEARNING


def test_feedback_accepts_behaviour():
    b, rng = learned()
    odd = window(1000, rng, executables=["/usr/bin/logrotate"], execs=1)
    assert b.process([odd])[0].anomalous
    accepted = b.accept(odd)
    assert [i.value for i in accepted] == ["/usr/bin/logrotate"]
    assert not b.process([window(1001, rng, executables=["/usr/bin/logrotate"])])[0].anomalous


def test_startup_windows_use_their_own_profile():
    b, rng = learned()
    # A restart: entrypoint work far from the steady state, but marked as start-up.
    boot = [window(2000 + i, rng, seconds_since_start=5.0 * i, execs=30, forks=30) for i in range(6)]
    verdicts = b.process(boot)
    assert all(v.startup for v in verdicts)
    assert not any(v.anomalous for v in verdicts)
    # The same burst in steady state is an anomaly.
    assert b.process([window(3000, rng, execs=30, forks=30)])[0].anomalous


def test_incomplete_windows_are_scored_but_not_learned():
    b, rng = learned()
    n = b.windows_learned
    v = b.process([window(1000, rng, complete=False, events_lost=10)])[0]
    assert not v.learned and b.windows_learned == n


def test_state_roundtrip_gives_identical_scores():
    b, rng = learned()
    meta, arrays = b.to_state()
    clone = ImageBaseline.from_state(meta, arrays)
    probe = [window(i, rng, bytes_sent=1e7 * (i % 2)) for i in range(1000, 1010)]
    a, c = b.process(probe), clone.process(probe)
    assert [v.score for v in a] == pytest.approx([v.score for v in c])
    assert [v.anomalous for v in a] == [v.anomalous for v in c]
    assert any(v.anomalous for v in a)
    assert clone.novelty_sets() == b.novelty_sets()


def test_state_version_and_layout_are_checked():
    b, _ = learned()
    meta, arrays = b.to_state()
    with pytest.raises(StateVersionError, match="version 99"):
        ImageBaseline.from_state({**meta, "state_version": 99}, arrays)
    with pytest.raises(StateError, match="feature layout"):
        ImageBaseline.from_state({**meta, "features": ["x"]}, arrays)
    broken = dict(arrays)
    broken["steady.det.mean"] = np.full(3, np.nan)
    with pytest.raises(StateError):
        ImageBaseline.from_state(meta, broken)


def test_config_is_validated_with_every_problem_named():
    with pytest.raises(ValueError, match="min_learn_windows.*false_alarms_per_day"):
        BaselineConfig(min_learn_windows=1, false_alarms_per_day=0)
    with pytest.raises(ValueError, match="unknown baseline config keys: bogus"):
        BaselineConfig.from_dict({"bogus": 1})


def test_slow_ramp_is_flagged_within_100_windows():
    """An attacker raising exfiltration by 3% per window (x20 over 100 windows) cannot drag the baseline
    along: the rate model moves at most ``learn_clip_sigma`` deviations per ``memory_windows``."""
    b, rng = learned(400)
    first = None
    for k in range(300):
        v = b.process([window(1000 + k, rng, bytes_sent=2e5 * 1.03**k)])[0]
        if v.anomalous and first is None:
            first = k
    assert first is not None and first <= 100
    # once flagged, the container is quarantined and the ramp stays flagged
    tail = b.process([window(1400 + k, rng, bytes_sent=2e5 * 1.03**300) for k in range(5)])
    assert all(v.anomalous for v in tail)


def test_flagged_container_is_not_learnt_while_quarantined():
    b, rng = learned()
    n = b.windows_learned
    assert b.process([window(1000, rng, executables=["/tmp/x"])])[0].anomalous
    # the next normal-looking windows of that container fall inside the quarantine (300 s of event time)
    verdicts = b.process([window(1001 + i, rng) for i in range(10)])
    assert not any(v.learned for v in verdicts) and b.windows_learned == n
    other = Identity("node-1", "c2", "nginx", "1.27")
    assert b.process([window(1011, rng, identity=other)])[0].learned


def test_quarantine_holds_for_a_replica_whose_stream_is_behind():
    b, rng = learned()
    behind = Identity("node-2", "c9", "nginx", "1.27")
    assert b.process([window(1000, rng, identity=behind, executables=["/tmp/x"])])[0].anomalous
    # another node's sensor is ahead: its replica's windows 2,500 s later, learnt ...
    assert b.process([window(1500 + i, rng) for i in range(3)])[-1].learned
    # ... say nothing of the first replica's next windows, still inside its quarantine (300 s of event time)
    verdicts = b.process([window(1001 + i, rng, identity=behind) for i in range(10)])
    assert not any(v.learned for v in verdicts)
    # its own window after the quarantine is learnt, and the quarantine forgotten
    assert b.process([window(1100, rng, identity=behind)])[0].learned
    assert "node-2/c9" not in b.quarantine


def test_learning_length_counts_from_the_earliest_window_of_any_replica():
    rng = np.random.default_rng(4)
    b = ImageBaseline("k", BaselineConfig(min_learn_windows=60, min_learn_seconds=2000, stable_confidence=0))
    b.process([window(i, rng) for i in range(100, 200)])  # one node's sensor: 500 s of windows from 500 s on
    assert b.learned_seconds == pytest.approx(500.0)
    behind = Identity("node-2", "c2", "nginx", "1.27")
    b.process([window(i, rng, identity=behind) for i in range(100)])  # another's, behind: from 0 s
    assert b.learned_seconds == pytest.approx(1000.0)


def test_items_need_support_across_windows_and_replicas():
    rng = np.random.default_rng(3)
    b = ImageBaseline("k", BaselineConfig(min_learn_windows=60, min_learn_seconds=0, stable_confidence=0))
    r1, r2 = Identity("node-1", "r1", "nginx", "1.27"), Identity("node-2", "r2", "nginx", "1.27")
    windows = [window(i, rng, identity=r1 if i % 2 else r2) for i in range(100)]
    windows[10].executables = ["/tmp/once"]  # seen once while learning: a poisoned window
    for i in (20, 22, 24):  # seen three times, but only ever in one replica
        windows[i].executables = ["/usr/bin/one-replica"]
    for i in (30, 31):  # seen in both replicas
        windows[i].executables = ["/usr/bin/logrotate"]
    b.process(windows)
    assert b.state is State.DETECTING
    known = b.novelty_sets()["executable"]
    assert "/usr/bin/logrotate" in known
    assert "/tmp/once" not in known and "/usr/bin/one-replica" not in known
    assert b.process([window(200, rng, identity=r1, executables=["/tmp/once"])])[0].anomalous


def test_startup_items_need_one_window():
    rng = np.random.default_rng(4)
    b = ImageBaseline("k", BaselineConfig(min_learn_windows=60, min_learn_seconds=0, stable_confidence=0))
    windows = [window(i, rng) for i in range(100)]
    windows[0].executables = ["/docker-entrypoint.sh"]
    windows[0].seconds_since_start = 0.0
    b.process(windows)
    assert "/docker-entrypoint.sh" in b.novelty_sets()["executable"]


def test_an_item_seen_long_enough_in_one_container_is_normal():
    """A primary does what its replicas never do (fsync, say): support over many windows suffices."""
    rng = np.random.default_rng(5)
    b = ImageBaseline("k", BaselineConfig(min_learn_windows=60, min_learn_seconds=0, stable_confidence=0))
    r1, r2 = Identity("node-1", "r1", "pg", "16"), Identity("node-2", "r2", "pg", "16")
    windows = [window(i, rng, identity=r1 if i % 2 else r2) for i in range(100)]
    for w in windows[:60]:
        if w.identity is r1:
            w.syscalls["fsync"] = 3
    b.process(windows)
    assert "fsync" in b.novelty_sets()["syscall"]


def test_rare_normal_bursts_learnt_before_detection_stay_normal() -> None:
    """A nightly-upload-like burst seen while learning is not forgotten once detection starts: bursts are
    never learnt again then (flagged or gated), so without the spread held from calibration the memory
    would shrink the spread and flag the same normal burst later."""
    rng = np.random.default_rng(3)

    def w(i: int) -> FeatureVector:
        burst = i % 15 == 7  # one window in 15 uploads ~50 MB
        return window(i, rng, connects=3 if burst else 0, remote_addresses=1 if burst else 0,
                      remote_ports=1 if burst else 0, bytes_sent=int(5e7) if burst else int(rng.lognormal(9, 0.3)))

    b = ImageBaseline("nginx:1.27", BaselineConfig(min_learn_windows=150, min_learn_seconds=0, stable_confidence=0,
                                                   memory_windows=200))
    b.process([w(i) for i in range(300)])
    assert b.state is State.DETECTING
    det = b.steady.detector
    j = det._index["net.bytes_sent"]
    held = math.sqrt(det.to_arrays()["var_floor"][j])  # the spread when the thresholds were calibrated
    assert held > 1.0  # bursts had been learnt
    for start in range(300, 1500, 10):  # 1200 windows of detection, six memories long, bursts included
        verdicts = b.process([w(i) for i in range(start, start + 10)])
        flagged = [start + k for k, v in enumerate(verdicts) if v.anomalous]
        assert not flagged, (flagged, [v.explanation[:2] for v in verdicts if v.anomalous])
    assert det.stds()[j] >= held * 0.999
    # the other features are as sharp as before: a hundredfold rise in accepted connections is flagged
    flood = w(1500)
    flood.accepts = 2000
    assert b.process([flood])[0].anomalous


def test_zscore_hold_spread_keeps_the_variance_in_bounded_learning() -> None:
    from baseliner.models.detectors.zscore import ZScoreDetector

    rng = np.random.default_rng(0)
    det = ZScoreDetector(window=100, features=("a",), clip=8.0)
    det.learn_many(rng.normal(0, 3, (300, 1)), bound=False)
    det.hold_spread()
    before = det.stds()[0]
    for _ in range(50):
        det.learn_many(rng.normal(0, 0.1, (20, 1)))  # bounded: much narrower behaviour for ten memories
    assert det.stds()[0] >= before * 0.999
    free = ZScoreDetector(window=100, features=("a",), clip=8.0)
    free.learn_many(rng.normal(0, 3, (300, 1)), bound=False)
    for _ in range(50):
        free.learn_many(rng.normal(0, 0.1, (20, 1)))
    assert free.stds()[0] < before / 5  # without the hold the spread is forgotten
    restored = ZScoreDetector(window=100, features=("a",), clip=8.0)
    restored.load_arrays(det.to_arrays())
    np.testing.assert_array_equal(restored.to_arrays()["var_floor"], det.to_arrays()["var_floor"])


def _fed_scores(batches: int) -> list[np.ndarray]:
    """Batches of 50 scores: a quiet first half, a busy second half."""
    rng = np.random.default_rng(1)
    return [rng.uniform(10, 11, 50) if k >= batches // 2 else rng.uniform(0, 1, 50) for k in range(batches)]


def test_threshold_sample_represents_the_whole_learning_period() -> None:
    """Thresholds calibrate on a uniform sample of every learning score (reservoir), not on the latest ones:
    a quiet first half and a busy second half of a long learning period both count."""
    from baseliner.models.threshold import TailThreshold

    def fed(batches: int) -> TailThreshold:
        t = TailThreshold(capacity=4096)
        for scores in _fed_scores(batches):
            t.add(scores, window_seconds=5.0)
        return t

    t = fed(400)  # 20,000 scores, five times the sample
    sample = t.to_arrays()["scores"]
    assert len(sample) == 4096
    quiet = float(np.mean(sample < 5))
    assert 0.45 < quiet < 0.55, quiet  # a ring of the latest scores would hold none of the quiet half
    again = fed(400)
    np.testing.assert_array_equal(again.to_arrays()["scores"], sample)  # deterministic: replays agree
    scores = np.concatenate(_fed_scores(400))
    for sizes in ([len(scores)], [1] * 5000 + [len(scores) - 5000], [7, 4089, 3, 15901]):
        batched = TailThreshold(capacity=4096)  # however the same scores are batched: the same sample
        for part in np.split(scores, np.cumsum(sizes)[:-1]):
            batched.add(part, window_seconds=5.0)
        np.testing.assert_array_equal(batched.to_arrays()["scores"], sample)
    restored = TailThreshold(capacity=4096)
    restored.load_arrays(t.to_arrays())
    assert restored.n_scores == 4096 and restored.recompute() == t.recompute()
    restored.add(np.full(20_000, 100.0, dtype=np.float32), 5.0)  # as many scores again: about half replaced
    assert 0.4 < float(np.mean(restored.to_arrays()["scores"] == 100.0)) < 0.6


def test_threshold_tail_is_fitted_on_the_largest_scores_not_on_the_sample() -> None:
    """The anchor and the exceedances are the exact largest scores ever recorded: a threshold whose sample
    holds an eighth of the scores fits the same tail as one that holds them all, and a restored one keeps
    fitting it."""
    from baseliner.models.threshold import TailThreshold

    scores = np.random.default_rng(3).exponential(1.0, 40_000)
    small, full = TailThreshold(capacity=4096, min_scores=20), TailThreshold(capacity=65_536, min_scores=20)
    for t in (small, full):
        for part in np.array_split(scores, 37):
            t.add(part, window_seconds=10.0)
    assert small.n_scores == 4096 and full.n_scores == 40_000
    assert small.recompute() == full.recompute()
    assert 9.0 < small.value < 11.0  # Exp(1): the budget's quantile is ln(8640) = 9.06; the bound is above it
    restored = TailThreshold(capacity=4096, min_scores=20)
    restored.load_arrays(small.to_arrays())
    extra = np.random.default_rng(4).exponential(1.0, 10_000)
    for t in (small, full, restored):
        t.add(extra, window_seconds=10.0)
    assert small.recompute() == full.recompute() == restored.recompute()


def test_threshold_keeps_scores_beyond_half_precision_finite_and_restorable() -> None:
    """Scores beyond the sample's half-precision range are kept at its ends, so a saved state loads."""
    from baseliner.models.threshold import TailThreshold

    t = TailThreshold(capacity=256, min_scores=20)
    t.add(np.concatenate([np.linspace(0.0, 5.0, 100), [1e9, -1e9]]), window_seconds=10.0)
    arrays = t.to_arrays()
    assert np.isfinite(arrays["scores"]).all() and np.isfinite(arrays["top"]).all()
    restored = TailThreshold(capacity=256, min_scores=20)
    restored.load_arrays(arrays)
    assert restored.recompute() == t.recompute()


def _with_grams(b: ImageBaseline, n: int, seed: int) -> tuple[ImageBaseline, list[FeatureVector]]:
    from baseliner.models.ngrams import ngram_counts

    rng = np.random.default_rng(seed)
    loop = ngram_counts(["epoll_wait", "read", "write", "close", "read", "write"] * 30)
    vs = [window(i, rng, ngrams=dict(loop)) for i in range(n)]
    b.process(vs)
    return b, vs


def test_unseen_six_grams_raise_the_sequence_score_explained_and_state_stays_small():
    import dataclasses

    from baseliner.models.ngrams import LONG_BUCKETS, SHORT_BUCKETS

    cfg = dict(min_learn_windows=60, min_learn_seconds=300, stable_confidence=0)
    for nats in (128.0, 0.0):
        b, vs = _with_grams(ImageBaseline("k", BaselineConfig(sequence_unseen_nats=nats, **cfg)), 200, 1)
        assert b.state is State.DETECTING
        seen = {k: c for k, c in vs[0].ngrams.items() if k >= SHORT_BUCKETS}
        unseen_bucket = next(SHORT_BUCKETS + k for k in range(LONG_BUCKETS) if SHORT_BUCKETS + k not in seen)
        familiar = vs[-1]
        novel = dataclasses.replace(familiar, window_start=familiar.window_start + 5.0,
                                    ngrams={**familiar.ngrams, unseen_bucket: sum(seen.values())})
        base, probe = b.process([familiar, novel])
        if nats:
            # half of the window's 6-grams are new: 128 x 0.25 / (0.25 + 0.04) = 110 nats/gram more
            assert not base.anomalous and probe.anomalous and probe.score > base.score
            assert "sequence" in probe.kinds
            assert [d.feature for d in probe.explanation[:2]] == ["sequence.surprise", "sequence.unseen_6grams"]
            assert probe.explanation[1].observed == 0.5 and probe.explanation[1].unit == "share"
        else:
            assert probe.score == pytest.approx(base.score)
        meta, arrays = b.to_state()
        assert arrays["steady.seq.seen"].nbytes == 8192
        assert sum(a.nbytes for a in arrays.values()) < 256 * 1024
        clone = ImageBaseline.from_state(meta, arrays)
        # a flagged window is not learnt; an unflagged one is (its new bucket joins the bitset)
        assert clone.steady.sequence.novelty.buckets_seen == b.steady.sequence.novelty.buckets_seen
        assert b.steady.sequence.novelty.buckets_seen == len(seen) + (0 if nats else 1)
        assert clone.process([novel])[0].score == pytest.approx(b.process([novel])[0].score)


def test_state_of_spec_v1_builds_is_refused():
    b, _ = learned()
    meta, arrays = b.to_state()
    assert meta["state_version"] == 7
    for old in (1, 2, 3, 4, 5, 6):  # n-gram spec v1; lineage; learning's end; unresolved writes; combined; top
        with pytest.raises(StateVersionError, match=f"version {old} .*re-learn"):
            ImageBaseline.from_state({**meta, "state_version": old}, arrays)


def test_sequence_settings_are_validated():
    with pytest.raises(ValueError, match="sequence_unseen_nats.*sequence_unseen_scale"):
        BaselineConfig(sequence_unseen_nats=-1.0, sequence_unseen_scale=0.0)


def test_zscore_bounded_learning_clips_each_value_to_clip_deviations() -> None:
    """Once warm, a bounded batch learns each value as if it lay at most ``clip`` deviations (std +
    std_floor) from the mean: a poisoned window pulls the baseline no further than a clipped one; an
    unbounded batch (learning) is taken as it is.  Stacked with a detector that needs no clipping."""
    from baseliner.models.detectors.zscore import ZScoreDetector

    rng = np.random.default_rng(3)
    warm = rng.normal(5.0, 1.0, (200, 2))
    dets = [ZScoreDetector(window=100, features=("a", "b"), clip=4.0) for _ in range(4)]
    for d in dets:
        d.learn_many(warm, bound=False)
    mean, den = dets[0].means(), dets[0].stds() + dets[0].std_floor
    batch = np.array([[5.0, 5.2], [500.0, 4.9], [5.1, -300.0]])
    clipped = np.clip(batch, mean - 4.0 * den, mean + 4.0 * den)
    assert (clipped != batch).sum() == 2
    quiet = rng.normal(5.0, 1.0, (3, 2))
    ZScoreDetector.learn_stacked([dets[0], dets[2]], np.vstack([batch, quiet]), np.array([0, 0, 0, 1, 1, 1]),
                                 [True, True])
    dets[1].learn_many(clipped)  # nothing left to clip
    dets[3].learn_many(quiet)
    np.testing.assert_allclose(dets[0].means(), dets[1].means(), rtol=1e-12)
    np.testing.assert_allclose(dets[0].stds(), dets[1].stds(), rtol=1e-9)
    np.testing.assert_allclose(dets[2].means(), dets[3].means(), rtol=1e-12)
    free = ZScoreDetector(window=100, features=("a", "b"), clip=4.0)
    free.learn_many(warm, bound=False)
    free.learn_many(batch, bound=False)
    assert free.means()[0] > dets[0].means()[0] + 3.0  # unbounded: the outlier counts in full


# -- calibration and learning's end ------------------------------------------------------------------


def test_threshold_is_a_conservative_bound_that_tightens_with_evidence() -> None:
    """Exponential scores: the threshold for the budget sits above the true quantile (the scale's upper
    confidence bound), far above with 30 scores, close with 4,000; a score at the threshold has exactly
    the budget's tail probability."""
    from baseliner.models.threshold import TailThreshold

    rng = np.random.default_rng(3)
    exact = math.log(86_400 / 5.0)  # Exp(1) quantile for one alarm a day at 5 s windows: 9.76
    few, many = TailThreshold(min_scores=20), TailThreshold(min_scores=20)
    few.update(rng.exponential(1.0, 30), window_seconds=5.0)
    many.update(rng.exponential(1.0, 4000), window_seconds=5.0)
    assert few.value > many.value > exact
    assert many.value < 1.3 * exact
    assert float(many.surprise(np.array([many.value]))[0]) == pytest.approx(-math.log10(5.0 / 86_400))


def test_a_tail_lighter_than_exponential_is_not_extrapolated_as_one(monkeypatch) -> None:
    """Scores that stop short (uniform on [0, 10]: the budget's exact quantile is 9.9994): the exponential
    extrapolation puts the threshold well past 10; the bounded generalized Pareto shape brings it closer,
    still above every score the distribution can give; the surprise at the threshold is still the budget's."""
    from baseliner.models import threshold as thr

    scores = np.random.default_rng(5).uniform(0.0, 10.0, 4096)
    fitted = thr.TailThreshold(min_scores=20)
    fitted.update(scores, window_seconds=5.0)
    monkeypatch.setattr(thr, "shape_bound", lambda excess, confidence: 0.0)
    exponential = thr.TailThreshold(min_scores=20)
    exponential.update(scores, window_seconds=5.0)
    assert 10.0 < fitted.value < exponential.value - 0.2
    assert float(fitted.surprise(np.array([fitted.value]))[0]) == pytest.approx(-math.log10(5.0 / 86_400))


def test_the_combined_score_is_calibrated_too() -> None:
    """The tiers' combined score has a threshold of its own, fitted on the learnt windows' combined scores
    and held once detecting as the tiers' are; the decision threshold is the higher of it and the budget's:
    where normal windows' combined scores reach past the budget (tiers that move together), they set the
    bar."""
    b, rng = learned(300)
    assert b.state is State.DETECTING
    combined = b.steady.combined_threshold
    assert combined.n_seen > 200 and combined.calibrated and combined.ceiling == combined.value
    budget = -math.log10(2.0 * b.steady.threshold.p)
    assert b.threshold == max(budget, combined.value)
    probe = window(400, rng, accepts=400)  # twenty times the usual accepted connections: over the budget
    flagged = b.process([probe])[0]
    assert flagged.anomalous and flagged.score > budget
    combined.value = flagged.score + 1.0  # as if normal windows' combined scores reached that high
    assert b.threshold == flagged.score + 1.0
    again = b.process([dataclasses.replace(probe, window_start=probe.window_start + 5.0)])[0]
    assert again.score == pytest.approx(flagged.score, rel=0.05) and not again.anomalous


def test_tier_weights_scale_a_tiers_evidence_and_zero_leaves_it_out() -> None:
    """A tier's tail probability enters the combination as ``p ** w``: a rate-only anomaly's evidence shrinks
    with the rate tier's weight and is gone at 0; weights outside [0, 1] are refused."""
    scores = {}
    for w in (1.0, 0.5, 0.0):
        b, rng = learned(300, tier_weight_rate=w)
        probe = window(400, rng, accepts=400)
        scores[w] = b.process([probe])[0]
    assert scores[1.0].anomalous and scores[1.0].score > scores[0.5].score > scores[0.0].score == 0.0
    assert not scores[0.0].anomalous
    with pytest.raises(ValueError, match="tier weights must be in"):
        BaselineConfig(tier_weight_sequence=1.5)


def test_held_threshold_tightens_but_never_loosens() -> None:
    from baseliner.models.threshold import TailThreshold

    rng = np.random.default_rng(4)
    t = TailThreshold(min_scores=20)
    t.update(rng.exponential(1.0, 200), window_seconds=5.0)
    t.hold()
    start = t.value
    t.update(rng.exponential(1.0, 4000), window_seconds=5.0)  # more evidence: tighter
    assert t.value < start
    tightened = t.value
    t.update(np.full(4000, tightened * 0.99), window_seconds=5.0)  # a ramp just under it cannot lift it
    assert t.value <= tightened + 1e-9


def test_learning_ends_only_after_a_quiet_later_half_with_the_reason_shown() -> None:
    """A change in the second half of learning (a new busier mode) is a rehearsal alarm: learning goes on
    until the later half of it is quiet, and says why at every step."""
    rng = np.random.default_rng(5)
    b = ImageBaseline("k", BaselineConfig(min_learn_windows=60, min_learn_seconds=600, stable_confidence=0))
    b.process([window(i, rng) for i in range(100)])
    assert b.learning_reason == "time" and "of at least 600 s" in b.learning_detail
    b.process([window(i, rng, bytes_sent=3e7, accepts=900) for i in range(100, 130)])  # a new mode
    assert b.state is State.LEARNING and b.learning_reason == "unstable" and b.rehearsals > 0
    assert "rate" in b.rehearsal_kinds and "rehearsal alarm" in b.learning_detail
    changed = b.last_rehearsal
    b.process([window(i, rng, bytes_sent=3e7 * (i % 2) or 2e5, accepts=900 * (i % 2) or 20)
               for i in range(130, 400)])
    assert b.state is State.DETECTING and b.learning_reason == "stable"
    assert b.last_rehearsal >= changed
    assert b.last_window + 5.0 - b.last_rehearsal >= 0.5 * b.learned_seconds
    meta, arrays = b.to_state()
    clone = ImageBaseline.from_state(meta, arrays)
    assert clone.learning_reason == "stable" and clone.rehearsals == b.rehearsals


def test_default_learning_waits_for_the_evidence_the_budget_asks_for() -> None:
    """With every default, a quiet image learns until it has been quiet long enough to bound its alarm rate
    by the budget at 50% confidence: -ln(0.5) days = 16.6 h for one alarm a day."""
    rng = np.random.default_rng(6)
    b = ImageBaseline("k")
    assert b.evidence_seconds == pytest.approx(math.log(2.0) * 86_400)
    hour = 720  # 5 s windows
    b.process([window(i, rng) for i in range(16 * hour)])
    assert b.state is State.LEARNING and b.learning_reason == "unstable" and 0.9 < b.quiet_progress < 1.0
    b.process([window(i, rng) for i in range(16 * hour, 17 * hour)])
    assert b.state is State.DETECTING and b.learning_reason == "stable"


def test_calibration_goes_on_while_detecting() -> None:
    b, rng = learned(200)
    seen = b.steady.threshold.n_seen
    b.process([window(i, rng) for i in range(200, 400)])
    assert b.steady.threshold.n_seen == seen + 200



def test_a_novel_executable_alerts_on_its_own_in_the_most_ordinary_window() -> None:
    """The continuous score of a typical window is below 0 (more ordinary than the calibration's anchor); a
    novel executable must still put the window over its threshold on its own."""
    b, rng = learned(300)
    typical = window(1000, np.random.default_rng(99))
    ordinary = FeatureVector(IDENT, typical.window_start, 5.0, {"read": 800, "write": 480, "epoll_wait": 200,
                                                                  "close": 40},
                             accepts=20, bytes_sent=200_000, bytes_received=50_000,
                             endpoints=[Endpoint("10.0.0.5", 5432)])
    v = b.process([dataclasses.replace(ordinary, executables=["/tmp/payload"])])[0]
    assert v.continuous < 0
    assert v.anomalous and "novel_executable" in v.kinds and v.score >= v.threshold
