"""The console's history stays within its bounds and keeps what its pages show: fed as in the service, by a real
pipeline's score observer and event sinks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from baseliner.models.block import VectorBlock
from baseliner.service.config import PipelineConfig
from baseliner.service.console.history import BUCKET_SECONDS, History
from baseliner.service.pipeline import Pipeline
from baseliner.service.sinks.events import iso8601

from tests.service_fixtures import T0, WINDOW, vector


def fed(history: History, dedup: float = 0.0) -> Pipeline:
    p = Pipeline(PipelineConfig(dedup_window_seconds=dedup))
    p.baseline_config.min_learn_windows, p.baseline_config.min_learn_seconds = 20, 0
    p.baseline_config.stable_confidence = 0.0
    p.sinks.append(history)
    p.score_observers.append(history.observe)
    return p


def test_scores_containers_and_nodes_of_each_image() -> None:
    h = History(chart_points=16, max_containers_per_image=3)
    p = fed(h)
    seq = 0
    for i in range(0, 40, 10):  # 10 windows a batch, from 5 containers on 2 nodes
        seq += 1
        vs = [vector(i + k, c, node=f"node-{c % 2}") for k in range(10) for c in range(5)]
        p.apply_block("s", seq, VectorBlock.from_vectors(vs))
    act = h.images["nginx:1.27"]
    times, scores, thresholds, flagged = act.chart()
    assert list(times) == [T0 + WINDOW * i for i in range(24, 40)]  # one point per window time, the latest 16
    b = p.get("nginx:1.27")
    assert np.isfinite(scores).all() and thresholds[-1] == np.float32(b.threshold)
    assert flagged.sum() == 0
    assert act.containers_seen == 5 and list(act.containers) == ["node-0/c2", "node-1/c3", "node-0/c4"]
    assert list(act.nodes) == ["node-0", "node-1"] and list(h.nodes) == ["node-0", "node-1"]
    assert list(h.namespaces) == ["default"]
    assert h.now == T0 + WINDOW * 40
    # a second sensor's windows of the same time merge into the same point (the highest score)
    before = act.filled
    seq += 1
    p.apply_block("t", 1, VectorBlock.from_vectors([vector(39, 7)]))
    assert act.filled == before


def test_anomalies_are_bounded_and_counted_by_severity_in_event_time() -> None:
    h = History(max_anomalies=5)
    p = fed(h)
    p.apply_block("s", 1, VectorBlock.from_vectors([vector(i, c) for i in range(30) for c in range(2)]))
    shells = [vector(100 + 10 * k, 0, attack="shell") for k in range(8)]
    for k, v in enumerate(shells):
        p.apply_block("s", 2 + k, VectorBlock.from_vectors([v]))
    assert h.events_seen == 8 and len(h.anomalies) == 5  # the oldest 3 let go
    newest = next(h.newest())
    assert newest.first_seen == shells[-1].window_start and newest.novel[0] == ("executable", "/bin/sh")
    act = h.images["nginx:1.27"]
    assert act.anomalies == 8 and act.last is newest and len(act.latest) == 8
    sev = newest.severity
    assert sum(act.counts_since(h.now - 3600)) == 8
    # a Falco escalation (an update of the same event) moves its count to the new severity
    ev = {"schema": "baseliner.anomaly/v1", "event_id": newest.event_id, "update": True, "severity": "critical",
          "count": 3, "last_seen": iso8601(newest.last_seen + 60), "falco": {"rules": ["r"], "priority": "critical",
                                                                             "alerts": 1}}
    h.emit(ev)
    counts = dict(zip(("critical", "high", "medium", "low"), act.counts_since(h.now - 3600), strict=True))
    assert newest.severity == "critical" and newest.count == 3 and newest.falco == {
        "rules": ["r"], "priority": "critical", "alerts": 1}
    assert counts["critical"] >= 1 and (sev == "critical" or counts[sev] == 7)
    # buckets older than a day before the newest go
    act.count(newest.first_seen + 2 * 86_400, "low")
    assert min(act.buckets) >= int((newest.first_seen + 2 * 86_400) // BUCKET_SECONDS) - 289
    assert sum(act.counts_since(-math.inf)) == 1


def test_live_subscribers_get_each_batch_and_a_broken_event_costs_nothing() -> None:
    h = History()
    got: list[list[dict]] = []
    unsubscribe = h.subscribe(got.append)
    p = fed(h)
    p.apply_block("s", 1, VectorBlock.from_vectors([vector(i, c) for i in range(30) for c in range(2)]))
    p.apply_block("s", 2, VectorBlock.from_vectors([vector(100, 0, attack="etc")]))
    assert len(got) == 1 and got[0][0]["novel"] == ["sensitive_path /etc/passwd"] and got[0][0]["update"] is False
    h.emit({"schema": "baseliner.anomaly/v1"})  # no event_id: logged, nothing held
    h.observe("x", None, np.arange(3), None)  # nonsense: logged, nothing raised
    unsubscribe()
    p.apply_block("s", 3, VectorBlock.from_vectors([vector(110, 1, attack="etc")]))
    assert len(got) == 1 and len(h.anomalies) == 2


def test_fleet_and_anomaly_views_take_a_baseline_whose_file_was_refused() -> None:
    from baseliner.service.console import views
    from baseliner.service.spill import RefusedBaseline, SpilledSummary

    h = History()
    p = fed(h)
    p.apply_block("s", 1, VectorBlock.from_vectors([vector(i, c) for i in range(30) for c in range(2)]))
    p.apply_block("s", 2, VectorBlock.from_vectors([vector(100, 0, attack="shell")]))
    b = p.get("nginx:1.27")
    p.baselines["nginx:1.27"] = RefusedBaseline(SpilledSummary.of(b), "tag mismatch")  # type: ignore[assignment]
    page, _ = views.fleet(p.all(), h, views.FleetFilter(), 50)
    assert [r.status.state for r in page.rows] == ["detecting"]
    view = views.anomaly(next(h.newest()), h, p)
    assert view.novel[0] == ("executable", "/bin/sh", False) and view.baseline_state == "detecting"


def test_anomalies_list_filters_sorts_and_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    from baseliner.service.console import views

    h = History()
    severities = ("low", "medium", "high", "critical")
    for k in range(40):
        h.emit({"schema": "baseliner.anomaly/v1", "event_id": f"e{k:02d}", "image": {"key": f"img{k % 4}:1"},
                "namespace": f"ns{k % 2}", "node": "n", "severity": severities[k % 4], "score": 10.0 + k,
                "threshold": 2.0 + (k % 5), "kinds": ["rate"] if k % 3 else ["novel_executable", "rate"],
                "first_seen": iso8601(T0 + k), "last_seen": iso8601(T0 + k + 10), "count": 1 + k % 7})

    def ids(**kw: object) -> list[str]:
        return [a.event_id for a in views.anomalies(h, views.AnomalyFilter(**kw), 5).rows]  # type: ignore[arg-type]

    assert ids() == ["e39", "e38", "e37", "e36", "e35"]
    assert ids(desc=False, page=2) == ["e05", "e06", "e07", "e08", "e09"]
    assert ids(image="img1:1", namespace="ns1") == ["e37", "e33", "e29", "e25", "e21"]
    assert ids(severity="critical", kind="novel_executable") == ["e39", "e27", "e15", "e03"]
    ratios = [(10.0 + k) / (2.0 + k % 5) for k in range(40)]
    assert ids(sort="score") == [f"e{k:02d}" for k in sorted(range(40), key=lambda k: (ratios[k], k),
                                                                      reverse=True)[:5]]
    assert ids(sort="severity") == ["e39", "e35", "e31", "e27", "e23"]
    page = views.anomalies(h, views.AnomalyFilter(image="img0:1", page=99), 5)
    assert (page.total, page.number, page.pages) == (10, 2, 2)
    partial = [ids(sort=s, desc=d, page=p) for s in ("score", "count", "image") for d in (True, False) for p in (1, 3)]
    monkeypatch.setattr(views, "_PARTIAL_SORT", 0)  # every page by a full sort: the same rows
    assert partial == [ids(sort=s, desc=d, page=p) for s in ("score", "count", "image") for d in (True, False)
                       for p in (1, 3)]
