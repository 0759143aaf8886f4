"""Evaluation metrics against cases computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
from baseliner.models.evaluate.metrics import (
    RecordingScores,
    alarm_runs,
    detection_rate_at_fpr,
    lidds_rule,
    per_type,
    rate_on_curve,
    roc_auc,
    roc_curve,
    summarise,
)


def test_auc_by_hand():
    # pairs (attack, normal): 0.35 beats 0.1 but not 0.4; 0.8 beats both -> 3 of 4
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert roc_auc([0, 1], [1.0, 2.0]) == 1.0
    assert roc_auc([0, 1], [2.0, 1.0]) == 0.0


def test_auc_ties_count_half():
    # attack 0.5 ties normal 0.5 (1/2) and beats normal 0.2 (1) -> 1.5 / 2
    assert roc_auc([0, 0, 1], [0.2, 0.5, 0.5]) == 0.75
    assert roc_auc([0, 0, 1, 1], [1, 1, 1, 1]) == 0.5


def test_auc_matches_sklearn_on_random_data():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.normal(size=500) + y, 1)  # rounding makes ties
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_needs_both_classes_and_finite_scores():
    with pytest.raises(ValueError, match="both"):
        roc_auc([0, 0], [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        roc_auc([0, 1], [1.0, float("nan")])
    with pytest.raises(ValueError, match="labels"):
        roc_auc([0, 2], [1.0, 2.0])
    with pytest.raises(ValueError, match="both"):
        detection_rate_at_fpr([1, 1], [1.0, 2.0], 0.05)


def test_detection_rate_by_hand_without_ties():
    normal = list(range(1, 101))  # 1..100
    labels = [0] * 100 + [1] * 4
    scores = normal + [99.5, 96.5, 95.5, 10.0]
    assert detection_rate_at_fpr(labels, scores, 0.01) == 0.25  # 100 flagged, then 99.5
    assert detection_rate_at_fpr(labels, scores, 0.05) == 0.75  # 96..100 flagged: 99.5, 96.5 and 95.5 above 95
    assert detection_rate_at_fpr(labels, scores, 0.0) == 0.0  # the top item is normal
    s = summarise(labels, scores)
    assert (s.n_normal, s.n_attack, s.dr_1, s.dr_5) == (100, 4, 0.25, 0.75)


def test_ties_at_the_threshold_are_broken_at_random():
    # STIDE's case: many normal items tie at the top score with some attacks.  Ten normals and two of
    # four attacks score 1.0.  A 10% budget flags one of the ten tied normals: in expectation a tenth of
    # the tied attacks comes with it (0.1 x 2 / 4 = 0.05); the strict rule would say 0, a lenient 0.5.
    labels = [0] * 100 + [1] * 4
    scores = [1.0] * 10 + [0.1] * 90 + [1.0, 1.0, 0.5, 0.05]
    assert detection_rate_at_fpr(labels, scores, 0.01) == pytest.approx(0.05)
    assert detection_rate_at_fpr(labels, scores, 0.05) == pytest.approx(0.25)  # half of the tied group
    # the whole tied group fits in a 10% budget: both tied attacks, and the attack at 0.5, which is
    # above the 90 normals at 0.1, comes at no extra cost
    assert detection_rate_at_fpr(labels, scores, 0.10) == pytest.approx(0.75)
    # the rule does not depend on the order of tied items
    order = np.random.default_rng(0).permutation(len(labels))
    assert detection_rate_at_fpr(np.asarray(labels)[order], np.asarray(scores)[order], 0.01) == pytest.approx(0.05)
    # all tied: chance
    assert detection_rate_at_fpr([0, 0, 1, 1], [3.0, 3.0, 3.0, 3.0], 0.5) == 0.5


def test_rate_on_curve_reads_the_highest_vertex_at_a_rate():
    fpr, tpr = np.array([0.0, 0.0, 0.2, 0.2, 1.0]), np.array([0.0, 0.3, 0.3, 0.9, 1.0])
    assert rate_on_curve(fpr, tpr, 0.0) == 0.3  # attacks above every normal come for free
    assert rate_on_curve(fpr, tpr, 0.2) == 0.9
    assert rate_on_curve(fpr, tpr, 0.1) == 0.3  # a diagonal only where tied normals and attacks share a vertex
    assert rate_on_curve(fpr, tpr, 0.6) == pytest.approx(0.95)
    assert rate_on_curve(fpr, tpr, 1.0) == 1.0
    with pytest.raises(ValueError, match="false-positive rate"):
        rate_on_curve(fpr, tpr, 1.5)


def test_roc_curve_ends_and_steps():
    fpr, tpr = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert fpr.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert np.trapezoid(tpr, fpr) == pytest.approx(0.75)
    # tied scores make one vertex, and the area under the curve is the AUC with ties counting half
    y, s = [0, 0, 1, 1, 0, 1], [1, 2, 2, 3, 2, 0]
    fpr, tpr = roc_curve(y, s)
    assert len(fpr) == 5 and np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(y, s))


def test_per_type_uses_all_normals_for_each_type():
    r = per_type([0, 0, 0, 0, 1, 1, 1], [1, 2, 3, 4, 5, 2.5, 0], ["", "", "", "", "a", "a", "b"])
    assert r["a"].auc == pytest.approx((4 + 2) / 8)
    assert r["b"].auc == 0.0
    assert r["a"].n_normal == 4 and r["a"].n_attack == 2


def test_alarm_runs():
    assert alarm_runs(np.array([], dtype=bool)) == 0
    assert alarm_runs(np.array([True])) == 1
    assert alarm_runs(np.array([False, True, True, False, True])) == 2


def test_lidds_rule_by_hand():
    t = np.arange(10.0)
    normal = RecordingScores("n", t, 1.0, np.array([0, 0, 5, 5, 0, 5, 0, 0, 0, 0.0]), None)  # 2 runs over 4
    attack = RecordingScores("a", t, 1.0, np.array([0, 6, 0, 0, 0, 0, 0, 7, 7, 0.0]), 6.5)
    missed = RecordingScores("m", t, 1.0, np.array([0, 0, 0, 0, 0, 9, 0, 1, 1, 1.0]), 6.0)
    r = lidds_rule([1, 4, 2], [normal, attack, missed])
    assert r.threshold == 4.0
    assert r.exploits == 2 and r.detected == 1 and r.detection_rate == 0.5
    # normal: 2 runs; attack: window 1 alarms before the exploit (1 run); missed: window 5 ends at 6.0,
    # not after the exploit at 6.0 -> a false alarm too
    assert r.false_alarms == 4
    # attack detected by window 7 ([7, 8)), which ends 1.5 s after the exploit at 6.5
    assert r.delays == (1.5,)


def test_lidds_rule_alarm_in_exploit_window_counts_as_detection():
    rec = RecordingScores("a", np.array([0.0, 1.0, 2.0]), 1.0, np.array([0, 3, 0.0]), 1.2)
    r = lidds_rule([1.0], [rec])
    assert r.detected == 1 and r.false_alarms == 0 and r.delays == (pytest.approx(0.8),)


def test_paired_difference_of_auc_and_detection_rate():
    from baseliner.models.evaluate.metrics import paired_differences

    rng = np.random.default_rng(4)
    y = np.r_[np.zeros(300, dtype=int), np.ones(60, dtype=int)]
    good = np.round(rng.normal(y * 1.5, 1.0), 1)  # rounded: ties
    weak = np.round(rng.normal(y * 0.3, 1.0), 1)
    (d, r), = paired_differences(y, good, [weak], resamples=300)
    assert d.value == pytest.approx(roc_auc(y, good) - roc_auc(y, weak))
    assert 0 < d.low < d.value < d.high
    assert r.value == pytest.approx(detection_rate_at_fpr(y, good, 0.05) - detection_rate_at_fpr(y, weak, 0.05))
    assert r.low <= r.value <= r.high
    # the same model against itself: exactly 0, whatever the draw
    same = paired_differences(y, good, [good], resamples=50)[0][0]
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)
    # reversed, the interval is mirrored
    back = paired_differences(y, weak, [good], resamples=300)[0][0]
    assert back.value == pytest.approx(-d.value) and back.high == pytest.approx(-d.low)
    with pytest.raises(ValueError, match="both"):
        paired_differences(np.zeros(5, dtype=int), np.arange(5.0), [np.arange(5.0)])
