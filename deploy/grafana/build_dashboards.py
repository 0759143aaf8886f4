"""Builds Baseliner's Grafana dashboards (``deploy/grafana/dashboards/*.json``) from one description.

    python deploy/grafana/build_dashboards.py          # rewrite the JSON files
    python deploy/grafana/build_dashboards.py --check  # exit 1 if a committed file differs

The JSON files are what Grafana's file provisioning loads (``provisioning/dashboards/baseliner.yml``);
this script is how they are kept consistent: datasources by fixed uid, unique panel ids, one grid.
``tests/test_stack_grafana.py`` checks that the committed files equal this script's output, and
``tests/test_stack_prometheus.py`` runs every Prometheus query below against a real Prometheus.

A panel's ``description`` says "eBPF sensor only" when its metric comes only from ``--source bpf``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

PROM = {"type": "prometheus", "uid": "baseliner-prometheus"}
ES = {"type": "elasticsearch", "uid": "baseliner-elasticsearch"}
SCHEMA_VERSION = 39
OUT = Path(__file__).resolve().parent / "dashboards"
BPF_ONLY = "eBPF sensor only (--source bpf)."

SEL_IMG = 'image=~"$image", namespace=~"$namespace"'


def _variable(name: str, label: str, query: str, multi: bool = True) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": PROM,
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "multi": multi,
        "includeAll": multi,  # All = every current value (a regex alternation; Lucene OR for Elasticsearch)
        "current": {},
        "sort": 1,
        "hide": 0,
        "options": [],
    }


_WITH_NAMESPACE = '{__name__=~"baseliner_anomalies_total|baseliner_falco_alerts_total"}'
VAR_NAMESPACE = _variable("namespace", "Namespace", f"label_values({_WITH_NAMESPACE}, namespace)")
VAR_IMAGE = _variable("image", "Image", "label_values(baseliner_baseline_state, image)")
VAR_IMAGE_ONE = _variable("image", "Image", "label_values(baseliner_baseline_state, image)", multi=False)
VAR_NODE = _variable("node", "Node", "label_values(baseliner_vectors_received_total, node)")


def prom(expr: str, legend: str = "", instant: bool = False, fmt: str = "time_series") -> dict[str, Any]:
    return {"datasource": PROM, "expr": expr, "legendFormat": legend or "__auto", "range": not instant,
            "instant": instant, "format": fmt, "editorMode": "code"}


def es(query: str, size: int = 50) -> dict[str, Any]:
    return {"datasource": ES, "query": query, "alias": "", "timeField": "@timestamp",
            "metrics": [{"id": "1", "type": "raw_data", "settings": {"size": str(size)}}], "bucketAggs": []}


class Board:
    """Lays panels out on Grafana's 24-column grid, row by row, and numbers them."""

    def __init__(self, uid: str, title: str, description: str, variables: list[dict[str, Any]]) -> None:
        self.uid, self.title, self.description, self.variables = uid, title, description, variables
        self.panels: list[dict[str, Any]] = []
        self._x = 0
        self._y = 0
        self._row_h = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append({"type": "row", "title": title, "collapsed": False, "panels": [],
                            "gridPos": {"x": 0, "y": self._y, "w": 24, "h": 1}})
        self._y += 1

    def _newline(self) -> None:
        if self._x:
            self._y += self._row_h
            self._x = 0
            self._row_h = 0

    def add(self, kind: str, title: str, targets: list[dict[str, Any]], w: int = 12, h: int = 8,
            description: str = "", unit: str = "", options: dict[str, Any] | None = None,
            field_config: dict[str, Any] | None = None, transformations: list[dict[str, Any]] | None = None) -> None:
        if self._x + w > 24:
            self._newline()
        refs = "ABCDEFGH"
        ds = targets[0]["datasource"]
        panel: dict[str, Any] = {
            "type": kind,
            "title": title,
            "description": description,
            "datasource": ds,
            "gridPos": {"x": self._x, "y": self._y, "w": w, "h": h},
            "targets": [{"refId": refs[i], **t} for i, t in enumerate(targets)],
            "fieldConfig": field_config or {"defaults": {"unit": unit} if unit else {}, "overrides": []},
            "options": options or {},
        }
        if transformations:
            panel["transformations"] = transformations
        self.panels.append(panel)
        self._x += w
        self._row_h = max(self._row_h, h)

    def json(self, links: list[dict[str, Any]]) -> dict[str, Any]:
        for i, p in enumerate(self.panels, start=1):
            p["id"] = i
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["baseliner", "security"],
            "timezone": "utc",
            "editable": True,
            "graphTooltip": 1,
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "refresh": "30s",
            "time": {"from": "now-6h", "to": "now"},
            "templating": {"list": self.variables},
            "annotations": {"list": [{
                "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
                "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard",
            }]},
            "links": links,
            "panels": self.panels,
        }


LINKS = [{"type": "dashboards", "tags": ["baseliner"], "asDropdown": True, "title": "Baseliner", "includeVars": True,
          "keepTime": True}]
TS_BARS = {"defaults": {"custom": {"drawStyle": "bars", "fillOpacity": 80, "stacking": {"mode": "normal"}}},
           "overrides": []}
LEGEND_TABLE = {"legend": {"displayMode": "table", "placement": "right", "calcs": ["sum"]}}


def fleet() -> dict[str, Any]:
    b = Board("baseliner-fleet", "Baseliner / Fleet overview",
              "Anomalies across the fleet, baselines by state, the most anomalous images, Falco beside them.",
              [VAR_NAMESPACE, VAR_IMAGE, VAR_NODE])
    b.row("Anomalies")
    b.add("stat", "Anomalous windows (range)",
          [prom(f"sum(increase(baseliner_anomalies_total{{{SEL_IMG}}}[$__range]))", instant=True)],
          w=6, h=4, description="Anomalous windows in the selected time range (a window with two kinds counts twice).")
    b.add("stat", "Critical anomalies (range)",
          [prom(f'sum(increase(baseliner_anomalies_total{{{SEL_IMG}, severity="critical"}}[$__range])) or vector(0)',
                instant=True)], w=6, h=4)
    b.add("stat", "Falco alerts (range)",
          [prom(f"sum(increase(baseliner_falco_alerts_total{{{SEL_IMG}}}[$__range]))", instant=True)], w=6, h=4)
    b.add("stat", "Vectors scored / s", [prom("sum(rate(baseliner_vectors_applied_total[$__rate_interval]))")],
          w=6, h=4, unit="ops")
    b.add("timeseries", "Anomalies by kind",
          [prom(f"sum by (kind) (increase(baseliner_anomalies_total{{{SEL_IMG}}}[$__rate_interval]))", "{{kind}}")],
          field_config=TS_BARS, options=LEGEND_TABLE)
    b.add("timeseries", "Anomalies by severity",
          [prom(f"sum by (severity) (increase(baseliner_anomalies_total{{{SEL_IMG}}}[$__rate_interval]))",
                "{{severity}}")], field_config=TS_BARS, options=LEGEND_TABLE)
    b.add("bargauge", "Top anomalous images (range)",
          [prom(f"topk(10, sum by (image, namespace) (increase(baseliner_anomalies_total{{{SEL_IMG}}}[$__range])))",
                "{{image}} ({{namespace}})", instant=True)],
          options={"orientation": "horizontal", "displayMode": "gradient", "showUnfilled": True})
    b.add("piechart", "Images by baseline state",
          [prom('sum by (state) (baseliner_baseline_state{image=~"$image"})', "{{state}}", instant=True)],
          w=6, description="Per-image baselines (images within metrics.max_images).",
          options={"pieType": "donut", "legend": {"displayMode": "table", "placement": "right", "values": ["value"]}})
    b.add("stat", "Baselines in memory by state", [prom("sum by (state) (baseliner_baselines)", "{{state}}")],
          w=6, description="All baselines, including images beyond the label cap.")
    b.add("table", "Baselines: state, threshold, windows learned",
          [prom('max by (image, state) (baseliner_baseline_state{image=~"$image"} == 1)', instant=True, fmt="table"),
           prom('max by (image) (baseliner_baseline_threshold{image=~"$image"})', instant=True, fmt="table"),
           prom('max by (image) (baseliner_baseline_windows_learned{image=~"$image"})', instant=True, fmt="table")],
          w=24, transformations=[{"id": "merge", "options": {}},
                                 {"id": "organize", "options": {"excludeByName": {"Time": True, "Value #A": True},
                                                                "renameByName": {"Value #B": "threshold",
                                                                                 "Value #C": "windows learned"}}}])
    b.row("Falco rules beside anomalies")
    b.add("timeseries", "Falco alerts and anomalies",
          [prom(f"sum(increase(baseliner_anomalies_total{{{SEL_IMG}}}[$__rate_interval]))", "anomalies"),
           prom(f"sum by (priority) (increase(baseliner_falco_alerts_total{{{SEL_IMG}, node=~\"$node\"}}"
                "[$__rate_interval]))", "Falco {{priority}}")],
          options=LEGEND_TABLE)
    b.add("timeseries", "Correlation outcomes",
          [prom(f"sum by (outcome) (increase(baseliner_falco_correlations_total{{{SEL_IMG}}}[$__rate_interval]))",
                "{{outcome}}")], field_config=TS_BARS, options=LEGEND_TABLE,
          description="escalated: an anomaly's severity raised by a coinciding rule hit; in_baseline: a rule hit on "
                      "behaviour the image's baseline has learnt (a candidate for a rule exception).")
    b.add("bargauge", "Falco rules firing (range)",
          [prom("topk(15, sum by (rule) (increase(baseliner_falco_rule_alerts_total[$__range])))", "{{rule}}",
                instant=True)], options={"orientation": "horizontal", "displayMode": "basic"})
    b.add("table", "Latest Falco alerts with their baseline verdict",
          [es('schema:"baseliner.falco/v1" AND namespace:${namespace:lucene}')],
          description="From Elasticsearch (index baseliner-events): in_baseline = the rule hit behaviour the image "
                      "has learnt.",
          transformations=[{"id": "organize", "options": {"includeByName": {
              "@timestamp": True, "rule": True, "priority": True, "image.key": True, "pod": True, "namespace": True,
              "in_baseline": True, "baseline.outcome": True, "anomalies": True}}}])
    b.row("Latest anomalies (Elasticsearch)")
    b.add("table", "Latest anomalies and the features behind them",
          [es('schema:"baseliner.anomaly/v1" AND namespace:${namespace:lucene}')], w=24, h=10,
          transformations=[{"id": "organize", "options": {"includeByName": {
              "@timestamp": True, "severity": True, "kinds": True, "image.key": True, "pod": True, "namespace": True,
              "node": True, "score": True, "threshold": True, "novel.value": True, "explanation.text": True,
              "falco.rules": True, "count": True}}}])
    return b.json(LINKS)


def image() -> dict[str, Any]:
    one = 'image="$image"'
    b = Board("baseliner-image", "Baseliner / Image drill-down",
              "One image: its score against its calibrated threshold, the score distribution, its lifecycle, and "
              "the features behind its latest anomalies.", [VAR_IMAGE_ONE])
    b.add("timeseries", "Score against threshold",
          [prom(f"histogram_quantile(0.99, sum by (le) (rate(baseliner_anomaly_score_bucket{{{one}}}"
                "[$__rate_interval])))", "p99 score"),
           prom(f"histogram_quantile(0.5, sum by (le) (rate(baseliner_anomaly_score_bucket{{{one}}}"
                "[$__rate_interval])))", "median score"),
           prom(f"max(baseliner_baseline_threshold{{{one}}})", "threshold")],
          w=16, description="Scores come from the score histogram (bucket bounds limit the resolution); the "
                            "threshold is calibrated from the false-alarm budget while learning.")
    b.add("state-timeline", "Lifecycle", [prom(f"max by (state) (baseliner_baseline_state{{{one}}})", "{{state}}")],
          w=8, options={"showValue": "never", "mergeValues": True})
    b.add("heatmap", "Score distribution",
          [prom(f"sum by (le) (increase(baseliner_anomaly_score_bucket{{{one}}}[$__rate_interval]))", "{{le}}",
                fmt="heatmap")],
          w=16, options={"calculate": False, "yAxis": {"unit": "none"}, "cellGap": 1, "color": {"scheme": "Oranges"}})
    b.add("stat", "Windows learned", [prom(f"max(baseliner_baseline_windows_learned{{{one}}})")], w=4)
    b.add("stat", "Data seen", [prom(f"max(baseliner_baseline_observed_seconds{{{one}}})")], w=4, unit="s")
    b.add("timeseries", "Anomalies by kind and severity",
          [prom(f"sum by (kind, severity) (increase(baseliner_anomalies_total{{{one}}}[$__rate_interval]))",
                "{{kind}} / {{severity}}")], field_config=TS_BARS, options=LEGEND_TABLE)
    b.add("timeseries", "Windows scored / s",
          [prom(f"sum(rate(baseliner_anomaly_score_count{{{one}}}[$__rate_interval]))", "windows / s")], unit="ops")
    b.add("table", "Features behind the latest anomalies",
          [es('schema:"baseliner.anomaly/v1" AND image.key:"$image"')], w=24, h=10,
          description="From Elasticsearch: each anomaly's explanation (observed versus baseline) and novel items.",
          transformations=[{"id": "organize", "options": {"includeByName": {
              "@timestamp": True, "severity": True, "severity_model": True, "kinds": True, "pod": True, "node": True,
              "score": True, "threshold": True, "novel.value": True, "explanation.text": True, "falco.rules": True,
              "count": True, "event_id": True}}}])
    b.add("table", "Falco alerts on this image",
          [es('schema:"baseliner.falco/v1" AND image.key:"$image"')], w=24,
          transformations=[{"id": "organize", "options": {"includeByName": {
              "@timestamp": True, "rule": True, "priority": True, "pod": True, "in_baseline": True,
              "baseline.outcome": True, "baseline.items.value": True, "anomalies": True}}}])
    return b.json(LINKS)


def service() -> dict[str, Any]:
    b = Board("baseliner-service", "Baseliner / Service health",
              "Ingest, rejections, latency, baselines and memory, checkpoints, the Falco endpoint and Falcosidekick.",
              [VAR_NODE])
    b.add("timeseries", "Ingest rate",
          [prom('sum by (node) (rate(baseliner_vectors_received_total{node=~"$node"}[$__rate_interval]))',
                "received {{node}}"),
           prom("sum(rate(baseliner_vectors_applied_total[$__rate_interval]))", "applied"),
           prom("sum(rate(baseliner_batches_received_total[$__rate_interval]))", "batches")], unit="ops")
    b.add("timeseries", "Rejected vectors by reason",
          [prom("sum by (reason) (rate(baseliner_vectors_rejected_total[$__rate_interval]))", "{{reason}}"),
           prom("sum by (reason) (rate(baseliner_batches_refused_total[$__rate_interval]))",
                "batch refused {{reason}}"),
           prom("sum(rate(baseliner_batches_duplicate_total[$__rate_interval]))", "duplicate batches")], unit="ops")
    b.add("timeseries", "Ingest latency (batch arrival to ack)",
          [prom("histogram_quantile(0.5, sum by (le) (rate(baseliner_ingest_latency_seconds_bucket"
                "[$__rate_interval])))", "p50"),
           prom("histogram_quantile(0.99, sum by (le) (rate(baseliner_ingest_latency_seconds_bucket"
                "[$__rate_interval])))", "p99")], unit="s")
    b.add("timeseries", "Scoring latency (one batch, every image)",
          [prom("histogram_quantile(0.99, sum by (le) (rate(baseliner_scoring_latency_seconds_bucket"
                "[$__rate_interval])))", "p99"),
           prom("sum(rate(baseliner_scoring_latency_seconds_sum[$__rate_interval])) / "
                "sum(rate(baseliner_scoring_latency_seconds_count[$__rate_interval]))", "mean")], unit="s")
    b.add("timeseries", "Baselines in memory",
          [prom("sum by (state) (baseliner_baselines)", "{{state}}"),
           prom("max(baseliner_baselines_limit)", "limit")])
    b.add("timeseries", "Model memory", [prom("sum(baseliner_model_memory_bytes)", "state of all baselines")],
          unit="bytes")
    b.add("timeseries", "Events written", [prom("sum(rate(baseliner_events_emitted_total[$__rate_interval]))",
                                                "events / s")], w=8, unit="ops")
    b.add("timeseries", "Checkpoints",
          [prom("sum(increase(baseliner_state_saves_total[$__rate_interval]))", "saved"),
           prom("sum(increase(baseliner_state_save_failures_total[$__rate_interval]))", "failed")], w=8)
    b.add("stat", "Since last checkpoint",
          [prom("time() - max(baseliner_state_last_save_timestamp_seconds > 0)", instant=True)], w=8, unit="s",
          description="Empty when the service keeps state in memory only (no state.dir).")
    b.row("Shards")
    b.add("timeseries", "Ingest rate by shard",
          [prom("sum by (shard) (rate(baseliner_vectors_received_total[$__rate_interval]))", "{{shard}}")],
          w=8, unit="ops", description="One line per shard (docs/sharding.md); an unsharded service shows one.")
    b.add("timeseries", "Image repositories held by shard",
          [prom("sum by (shard) (baseliner_shard_routing_keys)", "{{shard}}"),
           prom("sum by (shard) (baseliner_shard_handovers_pending)", "pending {{shard}}")], w=8)
    b.add("timeseries", "Handovers and forwarding",
          [prom('sum by (direction, outcome) (increase(baseliner_shard_handovers_total[$__rate_interval]))',
                "{{direction}} {{outcome}}"),
           prom("sum by (shard) (rate(baseliner_shard_received_forwarded_vectors_total[$__rate_interval]))",
                "forwarded to {{shard}}"),
           prom("min by (peer) (baseliner_shard_peer_up)", "peer up {{peer}}")], w=8)
    b.row("Falco")
    b.add("timeseries", "Falco alerts received by priority",
          [prom('sum by (priority) (rate(baseliner_falco_alerts_total{node=~"$node"}[$__rate_interval]))',
                "{{priority}}")], w=8, unit="ops")
    b.add("timeseries", "Falco payloads refused by reason",
          [prom("sum by (reason) (increase(baseliner_falco_alerts_rejected_total[$__rate_interval]))", "{{reason}}")],
          w=8)
    b.add("timeseries", "Falcosidekick",
          [prom("sum(increase(baseliner_falcosidekick_events_sent_total[$__rate_interval]))", "sent"),
           prom("sum(increase(baseliner_falcosidekick_events_failed_total[$__rate_interval]))", "failed"),
           prom("sum(increase(baseliner_falcosidekick_events_dropped_total[$__rate_interval]))", "dropped")],
          w=8, description="Anomaly events posted to falco.sidekick_url (empty when it is not set).")
    return b.json(LINKS)


def sensors() -> dict[str, Any]:
    n = 'node=~"$node"'
    b = Board("baseliner-sensors", "Baseliner / Sensor health",
              "Per-node coverage, windows, lost kernel events, the transport to the service.", [VAR_NODE])
    b.add("state-timeline", "Sensors up", [prom(f'max by (node) (up{{job="baseliner-sensor", {n}}})', "{{node}}")],
          options={"showValue": "never"}, description="Scrape health of each node's sensor.")
    b.add("timeseries", "Per-node coverage: vectors received by the service",
          [prom(f"sum by (node) (rate(baseliner_vectors_received_total{{{n}}}[$__rate_interval]))", "{{node}}")],
          unit="ops", description="Containers watched per node, as windows per second reaching the service.")
    b.add("timeseries", "Windows per node",
          [prom(f"sum by (node) (rate(baseliner_sensor_windows_sent_total{{{n}}}[$__rate_interval]))", "{{node}}")],
          w=8, unit="ops", description=BPF_ONLY)
    b.add("timeseries", "Lost kernel events",
          [prom(f"sum by (node) (rate(baseliner_sensor_events_lost_total{{{n}}}[$__rate_interval]))", "{{node}}")],
          w=8, unit="ops", description=BPF_ONLY + " Above zero: kernel maps full, windows marked incomplete.")
    b.add("timeseries", "Containers per window (p90)",
          [prom(f"histogram_quantile(0.9, sum by (node, le) (rate(baseliner_sensor_vectors_per_window_bucket{{{n}}}"
                "[$__rate_interval])))", "{{node}}")], w=8, description=BPF_ONLY)
    b.add("timeseries", "Batches: sent, acknowledged, resent",
          [prom(f"sum by (node) (rate(baseliner_sensor_batches_sent_total{{{n}}}[$__rate_interval]))", "sent {{node}}"),
           prom(f"sum by (node) (rate(baseliner_sensor_batches_acked_total{{{n}}}[$__rate_interval]))",
                "acked {{node}}"),
           prom(f"sum by (node) (rate(baseliner_sensor_batches_resent_total{{{n}}}[$__rate_interval]))",
                "resent {{node}}")], unit="ops")
    b.add("timeseries", "Unacknowledged buffer",
          [prom(f"sum by (node) (baseliner_sensor_buffer_batches{{{n}}})", "batches {{node}}"),
           prom(f"sum by (node) (baseliner_sensor_buffer_bytes{{{n}}})", "bytes {{node}}")])
    b.add("timeseries", "Lost to the transport: dropped and rejected vectors, broken streams",
          [prom(f"sum by (node) (increase(baseliner_sensor_vectors_dropped_total{{{n}}}[$__rate_interval]))",
                "dropped {{node}}"),
           prom(f"sum by (node) (increase(baseliner_sensor_vectors_rejected_total{{{n}}}[$__rate_interval]))",
                "rejected {{node}}"),
           prom(f"sum by (node) (increase(baseliner_sensor_connect_failures_total{{{n}}}[$__rate_interval]))",
                "stream failures {{node}}")])
    b.add("timeseries", "Kernel map drain time (p99)",
          [prom(f"histogram_quantile(0.99, sum by (node, le) (rate(baseliner_sensor_drain_seconds_bucket{{{n}}}"
                "[$__rate_interval])))", "{{node}}")], w=8, unit="s", description=BPF_ONLY)
    b.add("timeseries", "Sensor CPU",
          [prom(f"sum by (node) (rate(baseliner_sensor_process_cpu_seconds_total{{{n}}}[$__rate_interval]))",
                "{{node}}")], w=8, unit="percentunit", description=BPF_ONLY)
    b.add("timeseries", "Kernel tracking tables",
          [prom(f"sum by (node) (baseliner_sensor_threads_tracked{{{n}}})", "threads {{node}}"),
           prom(f"sum by (node) (baseliner_sensor_sockets_tracked{{{n}}})", "sockets {{node}}")],
          w=8, description=BPF_ONLY)
    return b.json(LINKS)


DASHBOARDS = {"baseliner-fleet.json": fleet, "baseliner-image.json": image, "baseliner-service.json": service,
              "baseliner-sensors.json": sensors}


def render() -> dict[str, str]:
    return {name: json.dumps(fn(), indent=2) + "\n" for name, fn in DASHBOARDS.items()}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, text in render().items():
        path = OUT / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)} (run python {Path(__file__).name})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
