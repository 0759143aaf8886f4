"""Image lineage on the synthetic cluster: a new version of ``nginx`` rolled out over the ``web`` deployment.

The parent (``nginx:1.27.3``) learns for an hour; then ``nginx:1.28.0`` replaces it replica by replica
(``rollout_tag``): its entrypoint is ``/entrypoint.sh`` instead of ``/docker-entrypoint.sh`` and it runs one
new helper, ``/usr/local/bin/nginx-conf-check``.  Everything else is the default configuration.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from baseliner.models.baseline import BaselineConfig, ImageBaseline
from baseliner.models.block import VectorBlock
from baseliner.models.integrity import Keyring
from baseliner.models.lineage import ADAPTING, FALLBACK, ROOT
from baseliner.sensor.synthetic import HOUR, AttackSpec, ScenarioConfig, SyntheticSource
from baseliner.service.config import PipelineConfig
from baseliner.service.pipeline import Pipeline
from baseliner.service.sinks.events import SCHEMA, VERSION_SCHEMA, CallbackSink
from baseliner.service.sinks.metrics import ServiceMetrics
from baseliner.service.store import StateStore
from prometheus_client import CollectorRegistry

KEY = "lineage-test-state-key-0123456789"
KEYS = Keyring.of(KEY)

ROLLOUT_HOURS = 1.5
PARENT, CHILD = "nginx:1.27.3", "nginx:1.28.0"
# a reverse shell in the new version's fifth minute, in the replica that rolled out a minute in
SHELL = AttackSpec("reverse_shell", "web", 1, ROLLOUT_HOURS + 5 / 60, 3)


@dataclass
class Run:
    source: SyntheticSource
    pipeline: Pipeline
    registry: CollectorRegistry
    events: list[dict[str, Any]] = field(default_factory=list)
    child_windows: list[tuple[float, str, float]] = field(default_factory=list)  # (start, state, threshold)

    def version_events(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["schema"] == VERSION_SCHEMA]

    def alarms(self, key: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["schema"] == SCHEMA and e["image"]["key"] == key and not e["update"]]


def rollout(kind: str, attacks: tuple[AttackSpec, ...] = (), lineage: str = "auto") -> Run:
    cfg = ScenarioConfig(hours=ROLLOUT_HOURS + 1.0, rollout_at_hours=ROLLOUT_HOURS, rollout_tag="1.28.0",
                         rollout_kind=kind, restarts_per_day=0.0, attacks=attacks)
    registry = CollectorRegistry()
    run = Run(SyntheticSource(cfg), Pipeline(PipelineConfig(lineage=lineage),  # type: ignore[arg-type]
                                             BaselineConfig(min_learn_seconds=HOUR, stable_confidence=0.0),
                                             metrics=ServiceMetrics(registry)), registry)
    run.pipeline.sinks.append(CallbackSink(run.events.append))

    def observe(key: str, block: Any, rows: np.ndarray, verdicts: Any) -> None:
        if key == CHILD:
            for i, row in enumerate(rows.tolist()):
                run.child_windows.append((float(block.window_start[row]), verdicts.state.value,
                                          float(verdicts.threshold[i])))

    run.pipeline.score_observers.append(observe)
    for seq, (_, vectors) in enumerate(run.source.windows(), 1):
        run.pipeline.apply_block("sensor-1", seq, VectorBlock.from_vectors(vectors))
    run.pipeline.flush_events()
    return run


@pytest.fixture(scope="module")
def version() -> Run:
    return rollout("version", (SHELL,))


def test_the_new_version_inherits_and_detects_from_its_first_window(version: Run) -> None:
    child = version.pipeline.get(CHILD)
    assert child.lineage is not None and child.lineage.parent == PARENT and child.lineage.status == ADAPTING
    assert version.pipeline.get(PARENT).lineage.status == ROOT
    assert version.child_windows, "the new version was never scored"
    first = min(t for t, _, _ in version.child_windows)
    assert first == version.source.config.start + ROLLOUT_HOURS * HOUR
    blind = [t for t, state, threshold in version.child_windows if state != "detecting" or not math.isfinite(threshold)]
    assert blind == []


def test_one_version_diff_names_exactly_what_changed(version: Run) -> None:
    diffs = version.version_events()
    assert [e["kind"] for e in diffs] == ["version_diff"]
    diff = diffs[0]
    assert diff["image"]["key"] == CHILD and diff["image"]["parent"] == PARENT
    assert diff["severity"] == "info" and diff["lineage"]["groups"] == ["workload shop/deployment/web"]
    assert diff["added"] == {"executable": ["/entrypoint.sh", "/usr/local/bin/nginx-conf-check"]}
    assert diff["vanished"] == {"executable": ["/docker-entrypoint.sh"]}


def test_no_alarm_on_normal_windows_and_the_reverse_shell_is_flagged(version: Run) -> None:
    (shell,) = version.source.attacks
    alarms = version.alarms(CHILD)
    assert alarms, "the reverse shell in the new version's first minutes was not flagged"
    assert {e["container"]["id"] for e in alarms} == {shell.container_id}
    assert all(e["image"]["parent"] == PARENT for e in alarms)
    first = alarms[0]
    assert "novel_executable" in first["kinds"] and {"kind": "port", "value": "tcp/4444"} in first["novel"]
    assert shell.start - 10 <= version.source.config.start + ROLLOUT_HOURS * HOUR + 300 <= shell.start


def test_lineage_is_in_the_metrics_and_survives_a_state_round_trip(version: Run) -> None:
    reg = version.registry
    assert reg.get_sample_value("baseliner_baseline_lineage",
                                {"image": CHILD, "parent": PARENT, "status": ADAPTING}) == 1.0
    assert reg.get_sample_value("baseliner_lineage_events_total", {"kind": "version_diff", "reason": "none"}) == 1.0
    child = version.pipeline.get(CHILD)
    meta, arrays = child.to_state()
    copy = ImageBaseline.from_state(meta, arrays)
    assert copy.lineage is not None and copy.lineage.to_meta() == child.lineage.to_meta()
    assert copy.lineage.rate_scores is not None and child.lineage.rate_scores is not None
    assert copy.lineage.rate_scores.n_scores == child.lineage.rate_scores.n_scores > 0
    assert copy.threshold == child.threshold


def test_a_different_program_under_the_same_repository_falls_back_with_its_reason() -> None:
    run = rollout("different")
    (event,) = run.version_events()
    assert event["kind"] == "lineage_fallback" and event["severity"] == "medium"
    assert event["image"]["parent"] == PARENT and event["lineage"]["reason_code"] == "executables"
    assert "/usr/local/bin/python3.12" in event["added"]["executable"]
    assert "/usr/sbin/nginx" in event["vanished"]["executable"]
    child = run.pipeline.get(CHILD)
    assert child.lineage.status == FALLBACK and "executables of the version and its parent differ" in \
        child.lineage.reason
    assert child.windows_learned < 1000  # learnt from scratch, not the parent's count
    assert run.registry.get_sample_value("baseliner_lineage_events_total",
                                         {"kind": "lineage_fallback", "reason": "executables"}) == 1.0


def test_lineage_off_learns_every_version_from_scratch() -> None:
    run = rollout("version", lineage="off")
    assert run.version_events() == []
    child = run.pipeline.get(CHILD)
    assert child.lineage is None
    assert {state for _, state, _ in run.child_windows[:10]} == {"learning"}


def test_admin_shows_the_lineage_and_its_diff(version: Run, capsys: pytest.CaptureFixture[str]) -> None:
    from baseliner.service import admin, serde

    msg = serde.baseline_to_proto(version.pipeline.get(CHILD), detail=True)
    assert (msg.lineage.parent, msg.lineage.status, list(msg.lineage.groups)) == (
        PARENT, ADAPTING, ["workload shop/deployment/web"])
    assert list(msg.lineage.added) == ["executable /entrypoint.sh", "executable /usr/local/bin/nginx-conf-check"]
    assert list(msg.lineage.vanished) == ["executable /docker-entrypoint.sh"]
    listed = serde.baseline_to_proto(version.pipeline.get(CHILD))
    assert listed.lineage.parent == PARENT and not listed.lineage.added  # the diff is GetBaseline's detail
    admin._print_details(msg)
    out = capsys.readouterr().out
    assert f"lineage=adapting parent={PARENT}" in out
    assert "new in this version: executable /entrypoint.sh, executable /usr/local/bin/nginx-conf-check" in out


def test_baselines_diff_compares_two_versions_of_the_live_state(version: Run, tmp_path: Path) -> None:
    store = StateStore(tmp_path, KEYS)
    store.write(StateStore.snapshot(version.pipeline, everything=True))
    restored = Pipeline(PipelineConfig())
    assert store.restore(restored) == 4
    assert restored.get(CHILD).lineage.to_meta() == version.pipeline.get(CHILD).lineage.to_meta()
    (tmp_path / "state.keys").write_text(KEY + "\n")
    r = subprocess.run([sys.executable, "-m", "baseliner.service.cli", "baselines", "diff", PARENT, CHILD,
                        "--state-dir", str(tmp_path), "--state-key-file", str(tmp_path / "state.keys"), "--json"],
                       capture_output=True, text=True, timeout=120,
                       env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")})
    assert r.returncode == 0, r.stderr
    (entry,) = json.loads(r.stdout).values()
    assert entry["lineage"] == ["root", f"adapting from {PARENT}"]
    assert entry["novelty"]["executable"]["added"] == ["/entrypoint.sh", "/usr/local/bin/nginx-conf-check"]
    assert entry["features"] and all({"typical_a", "typical_b", "shift_std"} <= set(f) for f in entry["features"])
    r = subprocess.run([sys.executable, "-m", "baseliner.service.cli", "baselines", "diff", "run-a", CHILD,
                        "--state-dir", str(tmp_path), "--state-key-file", str(tmp_path / "state.keys")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no baseline for image(s) run-a" in r.stderr


def test_export_and_import_keep_the_lineage_and_diff_reads_an_export(version: Run, tmp_path: Path) -> None:
    import mlflow
    from baseliner.service.baselines_cli import export, import_run

    live, back = tmp_path / "live", tmp_path / "back"
    live.mkdir()
    (tmp_path / "state.keys").write_text(KEY + "\n")
    StateStore(live, KEYS).write(StateStore.snapshot(version.pipeline, everything=True))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.create_experiment("lineage", artifact_location=(tmp_path / "artifacts").as_uri())
        run_id = export(live, KEYS, [CHILD, PARENT], "lineage", "rollout")
        assert import_run(run_id, back, KEYS, [CHILD], force=False) == [CHILD]
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    restored = Pipeline(PipelineConfig())
    assert StateStore(back, KEYS).restore(restored) == 1
    assert restored.get(CHILD).lineage.to_meta() == version.pipeline.get(CHILD).lineage.to_meta()
    r = subprocess.run([sys.executable, "-m", "baseliner.service.cli", "baselines", "diff", f"{run_id}#{PARENT}",
                        CHILD, "--state-dir", str(live), "--state-key-file", str(tmp_path / "state.keys"),
                        "--tracking-uri", uri], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"{PARENT} (run {run_id}) -> {CHILD}:" in r.stdout
    assert f"lineage: root -> adapting from {PARENT}" in r.stdout
    assert "new executable: /entrypoint.sh, /usr/local/bin/nginx-conf-check" in r.stdout


def test_a_spilled_parent_is_found_from_its_summary_and_loaded_once_inherited(tmp_path: Path) -> None:
    """With at most one baseline resident, the parent lies on disk when its new version arrives."""
    import asyncio

    from tests.service_fixtures import batch_request, config, exchange, hello, learn_batches, running, vector

    cfg = config(tmp_path / "state", ("pipeline.max_resident_baselines", 1))

    async def main() -> None:
        async with running(cfg) as (srv, _):
            other = [vector(100, 5, repo="redis", tag="7")]  # another image pushes nginx:1.27 out to disk
            newer = [vector(60 + k, 2, tag="1.28") for k in range(3)]
            await exchange(srv.port, [hello(), *learn_batches(4), batch_request(other, 5), batch_request(newer, 6)])
            child = srv.pipeline.baselines["nginx:1.28"]
            assert child.lineage.parent == "nginx:1.27" and child.state.value == "detecting"
            summary = srv.spill.spilled.get("nginx:1.27") or srv.spill.spilled.get("redis:7")
            assert summary is not None and summary.lineage is not None  # a spilled one keeps its lineage summary
            listed = {b.key: b.lineage.parent for b in srv.pipeline.all()}
            assert listed == {"nginx:1.27": "", "nginx:1.28": "nginx:1.27", "redis:7": ""}

    asyncio.run(main())
