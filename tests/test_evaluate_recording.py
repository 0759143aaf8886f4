"""``baseliner evaluate recording``: a synthetic recording with ground truth, replayed as the service does."""

from __future__ import annotations

import json

from baseliner.models.evaluate.run import evaluate_recording
from baseliner.sensor.record import record, synthetic_header
from baseliner.sensor.synthetic import AttackSpec, ScenarioConfig, SyntheticSource


def test_recording_run_scores_the_ground_truth(tmp_path):
    cfg = ScenarioConfig(hours=3.0, window_seconds=30.0, replicas=(("web", 2), ("worker", 1)),
                         attacks=(AttackSpec("reverse_shell", "web", 1, 2.0, 5),
                                  AttackSpec("etc_write", "worker", 0, 2.5, 2)),
                         rollout_at_hours=None, restarts_per_day=0.0)
    src = SyntheticSource(cfg)
    path = tmp_path / "rec.jsonl.gz"
    n = record(iter(src), str(path), synthetic_header(src))
    run = evaluate_recording(path, progress=False, learn_hours=0.5)
    assert run.vectors == n and run.images == 2 and run.rejected == 0
    assert [a.kind for a in run.attacks] == ["reverse_shell", "etc_write"]
    assert all(a.windows > 0 for a in run.attacks)
    assert all(a.detected and a.delay is not None and a.delay >= 0 for a in run.attacks)
    # detection starts after the half hour of learning
    assert 2.0 < run.hours < 3.0 and run.false_alarms >= 0 and run.scored < run.vectors


def test_cli_recording_report(tmp_path, capsys):
    from baseliner.service.cli import main

    cfg = ScenarioConfig(hours=2.0, window_seconds=60.0, replicas=(("web", 1),),
                         attacks=(AttackSpec("reverse_shell", "web", 0, 1.5, 5),), rollout_at_hours=None)
    src = SyntheticSource(cfg)
    path = tmp_path / "rec.jsonl"
    record(iter(src), str(path), synthetic_header(src))
    out = tmp_path / "out"
    assert main(["evaluate", "recording", str(path), "--quiet", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["attacks"][0]["kind"] == "reverse_shell"
    assert "Detected" in (out / "report.md").read_text()
