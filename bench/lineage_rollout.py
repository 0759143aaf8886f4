"""A rollout on the synthetic cluster with every default: is the new version blind, and does it alarm?

The default scenario (``ScenarioConfig()``: 30 h, three workloads, the default attacks) with one change: its
``web`` rollout at 25 h deploys a new image version, ``nginx:1.28.0`` (``rollout_tag``: a changed entrypoint
and one new helper binary; ``--kind different`` deploys another program under the same repository).  The
service runs with the default configuration (``PipelineConfig()``, ``BaselineConfig()``), once per lineage
rule given (default: ``auto`` and ``off``, alternating within the run).  Reported per rule, for the new
version's windows in the hour after its first one:

* ``blind_windows``: windows scored while its baseline was not detecting (learning, or no threshold);
* ``false_alarm_events`` / ``false_alarm_windows``: anomaly events (first writes) and flagged windows not
  covered by an injected attack (the default attacks all happen before the rollout or in other workloads);
* ``version_events``: the version diff or fallback events, with what they list;
* with ``--shell``, a reverse shell in the new version's fifth minute (replica 1, which rolled out a minute in;
  on top of the default attacks): ``shell_flagged``, the windows of it flagged, and the first one's delay.

    .venv/bin/python bench/lineage_rollout.py                      # auto vs off, the default cluster
    .venv/bin/python bench/lineage_rollout.py --kind different --rules auto
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from baseliner.models.block import VectorBlock  # noqa: E402
from baseliner.sensor.synthetic import HOUR, AttackSpec, ScenarioConfig, SyntheticSource, default_attacks  # noqa: E402
from baseliner.service.config import PipelineConfig  # noqa: E402
from baseliner.service.pipeline import Pipeline  # noqa: E402
from baseliner.service.sinks.events import SCHEMA, VERSION_SCHEMA, CallbackSink  # noqa: E402

TAG = "1.28.0"
CHILD = f"nginx:{TAG}"


def run(rule: str, kind: str, shell: bool) -> dict[str, Any]:
    base = ScenarioConfig()
    rollout_hours = base.rollout_at_hours or 0.0
    attacks = default_attacks(base.attack_after_hours)
    if shell:
        attacks += (AttackSpec("reverse_shell", "web", 1, rollout_hours + 5 / 60, 3),)
    cfg = ScenarioConfig(rollout_tag=TAG, rollout_kind=kind, attacks=attacks)
    src = SyntheticSource(cfg)
    events: list[dict[str, Any]] = []
    p = Pipeline(PipelineConfig(lineage=rule), sinks=[CallbackSink(events.append)])  # type: ignore[arg-type]
    rollout = cfg.start + (cfg.rollout_at_hours or 0.0) * HOUR
    hour_end = rollout + HOUR
    scored: list[tuple[float, bool]] = []  # (window start, detecting with a threshold)
    flagged: list[tuple[float, str]] = []  # (window start, container)

    def observe(key: str, block: Any, rows: np.ndarray, verdicts: Any) -> None:
        if key != CHILD:
            return
        detecting = verdicts.state.value == "detecting"
        for i, row in enumerate(rows.tolist()):
            t = float(block.window_start[row])
            scored.append((t, detecting and math.isfinite(float(verdicts.threshold[i]))))
            if verdicts.anomalous[i]:
                flagged.append((t, block.identity(row).container_id))

    p.score_observers.append(observe)
    vectors: dict[tuple[float, str], Any] = {}
    t0 = time.process_time()
    for seq, (t, vs) in enumerate(src.windows(), 1):
        p.apply_block("sensor-1", seq, VectorBlock.from_vectors(vs))
        if rollout <= t < hour_end:
            vectors.update({(v.window_start, v.identity.container_id): v for v in vs if v.identity.image == CHILD})
    p.flush_events()
    cpu = time.process_time() - t0
    in_hour = [(t, ok) for t, ok in scored if t < hour_end]
    false_windows = [(t, c) for t, c in flagged if t < hour_end and src.label_of(vectors[(t, c)]) is None]
    late = [a for a in src.attacks if a.start >= rollout and a.kind == "reverse_shell"]
    shell_windows = sorted(t for t, c in flagged if t < hour_end and src.label_of(vectors[(t, c)]) in late)
    alarms = [e for e in events if e["schema"] == SCHEMA and not e["update"] and e["image"]["key"] == CHILD]
    false_events = [e for e in alarms if e["window"]["start"] < _iso(hour_end)
                    and src.label_of(vectors[(_epoch(e["window"]["start"]), e["container"]["id"])]) is None]
    return {
        "rule": rule, "kind": kind, "cpu_seconds": round(cpu, 1),
        "child_windows_in_hour": len(in_hour),
        "blind_windows": sum(1 for _, ok in in_hour if not ok),
        "first_window_detecting": bool(in_hour and in_hour[0][1]),
        "false_alarm_events": len(false_events),
        "false_alarm_windows": len(false_windows),
        "false_alarm_kinds": sorted({k for e in false_events for k in e["kinds"]}),
        **({"shell_flagged_windows": len(shell_windows),
            "shell_first_flag_delay_seconds": (shell_windows[0] - late[0].start) if shell_windows else None}
           if shell else {}),
        "version_events": [{k: e[k] for k in ("kind", "added", "vanished", "lineage")}
                           for e in events if e["schema"] == VERSION_SCHEMA],
    }


def _iso(t: float) -> str:
    from baseliner.service.sinks.events import iso8601

    return iso8601(t)


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rules", nargs="+", default=["auto", "off"], choices=["auto", "repository", "workload", "off"])
    ap.add_argument("--kind", default="version", choices=["version", "different"])
    ap.add_argument("--shell", action="store_true", help="a reverse shell in the new version's fifth minute")
    args = ap.parse_args()
    for rule in args.rules:
        print(json.dumps(run(rule, args.kind, args.shell)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
