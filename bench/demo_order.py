"""How much the demo's detection depends on the order in which the service learns the nodes' batches.

The demo's scenario (seed 7 by default, 28 h of 30 s windows, 20 h of learning) is cut into the batches its
three node sensors send (``--batch-size`` vectors per node per round, every node's windows of the same
stretch of event time, as ``baseliner demo`` sends them), and applied in-process to a ``Pipeline`` with the
demo's baseline settings, in several orders:

* ``in-step``: round by round, node after node (``baseliner demo``'s order);
* ``reversed``: round by round, the nodes in reverse order;
* ``one-call``: round by round, the three batches in one pipeline call (as the service's applier joins
  batches that arrive together);
* ``drift:S``: free-running streams as the demo had them, each call one batch of a stream drawn at random
  (seed S), so the streams drift apart in event time.

For each it prints the database image's (``postgres:16.6``: replicas on two nodes) steady rate threshold held
when learning ended, the score of the data exfiltration's first window, anomaly events, false alarms and
attack types detected.

    .venv/bin/python bench/demo_order.py                      # in-step reversed one-call drift:1 drift:2 drift:3
    .venv/bin/python bench/demo_order.py in-step drift:7
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from baseliner.models.baseline import BaselineConfig  # noqa: E402
from baseliner.models.block import VectorBlock  # noqa: E402
from baseliner.sensor.synthetic import HOUR, ScenarioConfig, SyntheticSource  # noqa: E402
from baseliner.sensor.transport import _image_of  # noqa: E402
from baseliner.service.config import PipelineConfig  # noqa: E402
from baseliner.service.demo import score_events  # noqa: E402
from baseliner.service.pipeline import Pipeline  # noqa: E402
from baseliner.service.sinks.events import CallbackSink  # noqa: E402

IMAGE = "postgres:16.6"


def rounds(source: SyntheticSource, batch_size: int) -> list[dict[str, list[Any]]]:
    """The demo's rounds: per node, its windows of one stretch of event time (sorted by image, as sent)."""
    out: list[dict[str, list[Any]]] = []
    pending: dict[str, list[Any]] = {n: [] for n in source.config.nodes}
    for _, window in source.windows():
        by_node: dict[str, list[Any]] = {}
        for v in window:
            by_node.setdefault(v.identity.node, []).append(v)
        if any(pending[n] and len(pending[n]) + len(vs) > batch_size for n, vs in by_node.items()):
            out.append({n: sorted(vs, key=_image_of) for n, vs in pending.items() if vs})  # as Transport.stage
            pending = {n: [] for n in source.config.nodes}
        for n, vs in by_node.items():
            pending[n].extend(vs)
    out.append({n: sorted(vs, key=_image_of) for n, vs in pending.items() if vs})
    return out


def calls(order: str, rs: list[dict[str, list[Any]]]) -> Iterator[list[tuple[str, list[Any]]]]:
    """Pipeline calls, each a list of ``(node, vectors)`` batches, in the order named."""
    if order in ("in-step", "reversed", "one-call"):
        for r in rs:
            batches = list(r.items())[:: -1 if order == "reversed" else 1]
            if order == "one-call":
                yield batches
            else:
                yield from ([b] for b in batches)
        return
    if not order.startswith("drift:"):
        raise SystemExit(f"unknown order {order!r}")
    rng = np.random.default_rng(int(order.split(":", 1)[1]))
    streams = {n: [r[n] for r in rs if n in r] for n in rs[0]}
    while any(streams.values()):
        ready = [n for n, q in streams.items() if q]
        n = ready[int(rng.integers(len(ready)))]
        yield [(n, streams[n].pop(0))]


def run(order: str, scenario: ScenarioConfig, batch_size: int) -> dict[str, Any]:
    source = SyntheticSource(scenario)
    baseline = BaselineConfig(min_learn_seconds=20 * HOUR, min_learn_windows=1000, stable_confidence=0.0)
    pipeline = Pipeline(PipelineConfig(), baseline)
    events: list[dict[str, Any]] = []
    pipeline.sinks.append(CallbackSink(events.append))
    exfil = next(a for a in source.attacks if a.kind == "data_exfiltration")
    seen: dict[str, float] = {}

    def observe(key: str, block: VectorBlock, rows: np.ndarray, verdicts: Any) -> None:
        b = pipeline.baselines[key]
        if key == IMAGE and b.state.value != "learning" and "held" not in seen:
            seen["held"] = b.steady.threshold.ceiling
        for i, r in enumerate(rows.tolist()):
            if block.window_start[r] == exfil.start and block.identity(r).container_id == exfil.container_id:
                seen["exfil"], seen["threshold"] = float(verdicts.score[i]), float(verdicts.threshold[i])

    pipeline.score_observers.append(observe)
    seqs: dict[str, int] = {}
    for call in calls(order, rounds(source, batch_size)):
        batch = []
        for node, vectors in call:
            seqs[node] = seqs.get(node, 0) + 1
            batch.append((node, seqs[node], VectorBlock.from_vectors(vectors), ()))
        pipeline.apply_blocks(batch)
    pipeline.flush_events()
    end = scenario.start + scenario.windows * scenario.window_seconds
    summary = score_events(events, source.attacks, scenario.start + 20 * HOUR, end, scenario.window_seconds)
    return {**seen, "events": summary.events, "false": summary.per_image_false,
            "detected": sum(r.detected for r in summary.attacks), "attacks": len(summary.attacks)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("orders", nargs="*", default=["in-step", "reversed", "one-call", "drift:1", "drift:2", "drift:3"])
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--batch-size", type=int, default=120)
    args = p.parse_args()
    scenario = ScenarioConfig(seed=args.seed, hours=28, window_seconds=30, attack_after_hours=24, rollout_at_hours=25)
    print(f"{'order':<10} {'held rate threshold':>20} {'exfiltration':>13} {'events':>7} {'detected':>9}  false alarms")
    for order in args.orders:
        r = run(order, scenario, args.batch_size)
        false = ", ".join(f"{k}: {n}" for k, n in sorted(r["false"].items())) or "0"
        print(f"{order:<10} {r['held']:>20.3f} {r['exfil']:>6.2f} > {r['threshold']:.2f} {r['events']:>7} "
              f"{r['detected']:>7}/{r['attacks']}  {false}", flush=True)


if __name__ == "__main__":
    main()
