"""The pipeline (domain core, no gRPC): anomaly folding, idle close, bounded recent events, event schema."""

from __future__ import annotations

import io
import json
import math
import os
import sys

from baseliner.models.block import VectorBlock
from baseliner.service.config import PipelineConfig
from baseliner.service.pipeline import Pipeline, image_key
from baseliner.service.sinks.events import CallbackSink, JsonLinesSink, iso8601

sys.path.insert(0, os.path.dirname(__file__))
from service_fixtures import config, vector  # noqa: E402

EVENT_FIELDS = {
    "@timestamp", "schema", "event_id", "update", "node", "container", "image", "pod", "namespace", "score",
    "threshold", "severity", "kinds", "novel", "explanation", "startup", "baseline_state", "window", "count",
    "first_seen", "last_seen",
}


def _pipeline(**kw: object) -> tuple[Pipeline, list[dict], io.StringIO]:
    events: list[dict] = []
    out = io.StringIO()
    p = Pipeline(PipelineConfig(**kw), config().baseline_config(),  # type: ignore[arg-type]
                 sinks=[CallbackSink(events.append), JsonLinesSink(stream=out)])
    vs = [vector(i, c) for i in range(60) for c in range(3)]
    assert p.apply_block("s", 1, VectorBlock.from_vectors(vs)).applied == 180
    assert p.baselines["nginx:1.27"].state.value == "detecting"
    return p, events, out


def test_repeats_fold_into_one_event_and_idle_aggregates_close() -> None:
    p, events, out = _pipeline(dedup_window_seconds=300.0)
    seq = 2
    for k in range(5):  # five flagged windows of container 0, and one of container 1
        batch = [vector(60 + k, 0, attack="shell"), vector(60 + k, 2)]
        if k == 2:
            batch.append(vector(62, 1, attack="shell"))
        p.apply_block("s", seq, VectorBlock.from_vectors(batch))
        seq += 1
    assert [e["container"]["id"] for e in events] == ["c0", "c1"] and events[0]["count"] == 1
    n = len(events)
    assert p.close_idle(now=math.inf) == 2
    assert len(events) == n + 1  # only c0 repeated: its count is written again, same id
    update = events[-1]
    assert update["update"] and update["event_id"] == events[0]["event_id"] and update["count"] == 5
    assert update["first_seen"] == iso8601(vector(60, 0).window_start)
    assert update["last_seen"] == iso8601(vector(64, 0).window_end)
    # the JSON lines are exactly the events, one per line, strict JSON
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert lines == events
    for e in events:
        assert set(e) == EVENT_FIELDS
        assert e["@timestamp"].endswith("Z") and e["schema"] == "baseliner.anomaly/v1"
        assert set(e["image"]) == {"key", "repository", "tag", "digest"}
        for x in e["explanation"]:
            assert set(x) == {"feature", "observed", "baseline_mean", "baseline_std", "unit", "z", "text"}


def test_a_new_event_after_the_window_and_event_time_closes_aggregates() -> None:
    p, events, _ = _pipeline(dedup_window_seconds=30.0)
    p.apply_block("s", 2, VectorBlock.from_vectors([vector(60, 0, attack="shell"), vector(61, 0, attack="shell")]))
    assert len(events) == 1
    # the container moves on past the window in event time: the aggregate closes with its count
    p.apply_block("s", 3, VectorBlock.from_vectors([vector(65, 0)]))
    assert events[-1]["update"] and events[-1]["count"] == 2
    p.apply_block("s", 4, VectorBlock.from_vectors([vector(70, 0, attack="shell")]))
    assert len([e for e in events if not e["update"]]) == 2


def test_recent_events_are_bounded_and_feedback_accepts() -> None:
    p, events, _ = _pipeline(recent_events=2, dedup_window_seconds=0.0)
    for k in range(4):
        p.apply_block("s", 2 + k, VectorBlock.from_vectors([vector(60 + k, k % 3, attack="etc")]))
    assert len(p.recent) == 2
    newest = events[-1]["event_id"]
    b, items = p.feedback(newest)
    assert [(i.kind, i.value) for i in items] == [("sensitive_path", "/etc/passwd")]
    assert "/etc/passwd" in b.novelty_sets()["sensitive_path"]


def test_image_key_modes_route_baselines() -> None:
    v = vector(0)
    assert image_key(v.identity, "tag") == "nginx:1.27"
    assert image_key(v.identity, "repository") == "nginx"
    assert image_key(v.identity, "digest") == "nginx:1.27"  # no digest: falls back to repository:tag


def test_a_vector_validation_cannot_handle_is_rejected_not_fatal() -> None:
    p, _, _ = _pipeline()
    broken = vector(70, 0)
    broken.identity = None  # type: ignore[assignment]
    result = p.apply_block("s", 2, VectorBlock.from_vectors([broken, vector(70, 1)]))
    assert result.applied == 1
    assert [(e.index, e.reason) for e in result.rejected] == [(0, "UNSPECIFIED")]


def test_a_batch_validation_cannot_handle_costs_only_its_own_windows(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Batches applied together are validated together; when that fails unforeseen, each is validated on
    its own again, and only the batch it fails on is rejected (``UNSPECIFIED``)."""
    from baseliner.models.block import VectorBlock
    from baseliner.service import pipeline as pipeline_module

    p, _, _ = _pipeline()
    real = pipeline_module.validate_block

    def fails_on_container_7(block: VectorBlock, **kw: object) -> object:
        if any(i.container_id == "c7" for i in block.identities):
            raise RuntimeError("unforeseen")
        return real(block, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline_module, "validate_block", fails_on_container_7)
    calls = [("a", 2, VectorBlock.from_vectors([vector(61, 0), vector(61, 1)]), []),
             ("b", 2, VectorBlock.from_vectors([vector(61, 7, node="node-2"), vector(61, 2, node="node-2")]), []),
             ("c", 2, VectorBlock.from_vectors([vector(61, 2)]), [])]
    a, b, c = p.apply_blocks(calls)
    assert (a.applied, c.applied, a.rejected, c.rejected) == (2, 1, [], [])
    assert (b.applied, [(e.index, e.reason) for e in b.rejected]) == (0, [(0, "UNSPECIFIED"), (1, "UNSPECIFIED")])


def test_batches_applied_together_equal_batches_applied_one_by_one() -> None:
    """``apply_blocks`` (what the service does with the batches of many sensors that arrive together) gives
    every batch the result it gets on its own, and leaves the same baselines and events: rejections and
    applied counts per batch, duplicates, windows out of order, attacks, a baseline limit, a new image."""
    import numpy as np
    from baseliner.models.block import VectorBlock

    def batches() -> list[tuple[str, int, VectorBlock, list]]:
        out = []
        seq = {"s1": 0, "s2": 0, "s3": 0}
        for i in range(70):
            for sensor, node, repo, containers in (("s1", "node-1", "nginx", 3), ("s2", "node-2", "nginx", 2),
                                                   ("s3", "node-3", "redis", 2)):
                vs = [vector(i, c, repo=repo, node=node) for c in range(containers)]
                if i == 65 and sensor == "s2":
                    vs[1] = vector(i, 1, repo=repo, node=node, attack="shell")
                if i == 66 and sensor == "s1":
                    vs.append(vector(i - 5, 0, repo=repo, node=node))  # out of order
                    vs[0].syscalls["read"] = -3  # refused by validation
                if i == 67 and sensor == "s3":
                    vs.append(vector(i, 9, repo="postgres", node=node))  # over the baseline limit
                if i == 64 and sensor == "s2":
                    vs.append(vector(i, 5, repo="Not An Image", node=node))  # a bad identity
                    vs[0].syscalls["x" * 65] = 1  # a bad syscall name
                if i == 63 and sensor == "s3":
                    vs[0].syscalls["membarrier"] = 3  # a new syscall name, among the others' known ones
                if i == 62 and sensor == "s2":
                    vs[1].identity = None  # type: ignore[assignment]  # not an identity at all
                seq[sensor] += 1
                out.append((sensor, seq[sensor], VectorBlock.from_vectors(vs), []))
                if i == 68 and sensor == "s1":  # a resent batch
                    out.append((sensor, seq[sensor], VectorBlock.from_vectors(vs), []))
        return out

    def run(together: bool) -> tuple[Pipeline, list, list[dict]]:
        events: list[dict] = []
        p = Pipeline(PipelineConfig(max_baselines=2), config().baseline_config(), sinks=[CallbackSink(events.append)])
        todo, results, call = batches(), [], []
        for item in todo:  # a call takes at most one batch of each sensor (as the service's applier does)
            if call and (not together or item[0] in {c[0] for c in call}):
                results.extend(p.apply_blocks(call))
                call = []
            call.append(item)
        results.extend(p.apply_blocks(call))
        return p, results, events

    (one, r1, e1), (many, r2, e2) = run(False), run(True)
    assert [(r.sequence, r.applied, r.duplicate, [(e.index, e.reason, e.message) for e in r.rejected]) for r in r1] == \
        [(r.sequence, r.applied, r.duplicate, [(e.index, e.reason, e.message) for e in r.rejected]) for r in r2]
    reasons = {e.reason for r in r1 for e in r.rejected}
    assert {"OUT_OF_ORDER", "NEGATIVE", "TOO_LARGE", "BAD_IDENTITY", "BAD_REFERENCE"} <= reasons
    assert any(r.duplicate for r in r1)
    assert sorted(one.baselines) == sorted(many.baselines) == ["nginx:1.27", "redis:1.27"]
    for key in one.baselines:
        a, b = one.baselines[key], many.baselines[key]
        assert (a.state, a.windows_scored, a.windows_learned, a.anomalies) == \
            (b.state, b.windows_scored, b.windows_learned, b.anomalies)
        # the same windows learnt in fewer updates (bounded learning caps each update's spread growth)
        np.testing.assert_allclose(a.steady.detector.means(), b.steady.detector.means(), atol=1e-3)
        np.testing.assert_allclose(a.steady.detector.stds(), b.steady.detector.stds(), rtol=0.02, atol=1e-3)
    assert [(e["event_id"], e["kinds"]) for e in e1] == [(e["event_id"], e["kinds"]) for e in e2]
    assert any("exec" in " ".join(e["kinds"]) for e in e1)
    assert one.sensors == many.sensors


def test_identity_tables_are_looked_up_by_content_not_by_object() -> None:
    """A table the pipeline has seen and that was then changed in place routes its windows by what it holds
    now (a new image gets its own baseline; a bad identity is refused), and an immutable table (what the
    decoder hands out) is used as it is."""
    from baseliner.models.block import VectorBlock

    p, _, _ = _pipeline()
    block = VectorBlock.from_vectors([vector(60, 0), vector(60, 1)])
    table = block.identities
    assert isinstance(table, list)
    assert p.apply_block("s", 2, block).applied == 2
    again = VectorBlock.from_vectors([vector(61, 0), vector(61, 1)])
    again.identities = table  # the same list object, one of its identities now another image's
    table[1] = vector(61, 1, repo="redis").identity
    assert p.apply_block("s", 3, again).applied == 2
    assert p.baselines["redis:1.27"].windows_scored == 1 and p.baselines["nginx:1.27"].windows_scored == 183
    table[1] = vector(62, 1, repo="Not An Image").identity
    bad = VectorBlock.from_vectors([vector(62, 0), vector(62, 1)])
    bad.identities = table
    result = p.apply_block("s", 4, bad)
    assert result.applied == 1 and [(e.index, e.reason) for e in result.rejected] == [(1, "BAD_IDENTITY")]
    frozen = VectorBlock.from_vectors([vector(63, 0), vector(63, 1)])
    frozen.identities = tuple(frozen.identities)
    assert p.apply_block("s", 5, frozen).applied == 2
