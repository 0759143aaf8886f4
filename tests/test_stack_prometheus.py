"""The dashboards and alert rules against a REAL Prometheus scraping a real service and a real sensor.

Starts ``baseliner serve`` (Falco endpoint, Falcosidekick sink to a local receiver, a state directory),
``baseliner sensor --source synthetic`` (attacks injected early), Falco-format alerts POSTed to the service
for containers it reported anomalies on, and Debian's ``/usr/bin/prometheus`` with the repository's own
scrape config (targets pointed at the local processes, 1 s scrapes) and alert rules.  Then every PromQL
expression of every Prometheus-backed Grafana panel (template variables substituted the way Grafana does)
and every alert rule goes through Prometheus' HTTP API: each must be valid, panels must return data, and
every metric an alert rule selects must exist.  Grafana cannot be installed here; this is how the
dashboards are known to work.

Where the eBPF sensor can run (root, BCC, kernel headers; required in CI), ``baseliner sensor --source bpf``
streams too and the panels marked "eBPF sensor only" must return data as well; elsewhere they are checked
for validity only (and their metric names against the eBPF source's code).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.service_fixtures import state_key_file

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
RULES = DEPLOY / "prometheus" / "baseliner-rules.yml"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
BPF_ONLY_MARK = "eBPF sensor only"
#: Grafana's built-in variables, as Grafana would expand them for a short time range.
BUILTINS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "10m"}

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def wait_for(pred: Any, timeout: float, what: str, procs: tuple[subprocess.Popen[bytes], ...] = ()) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"{what}: {p.args!r} exited with {p.returncode}")
        try:
            v = pred()
            if v:
                return v
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


class Prom:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}/api/v1"

    def query(self, expr: str) -> dict[str, Any]:
        url = f"{self.base}/query?" + urllib.parse.urlencode({"query": expr})
        try:
            return dict(get_json(url))
        except urllib.error.HTTPError as e:  # 400/422: the error body says why
            return dict(json.loads(e.read()))

    def query_range(self, expr: str, seconds: float = 60.0, step: str = "5s") -> dict[str, Any]:
        now = time.time()
        url = f"{self.base}/query_range?" + urllib.parse.urlencode(
            {"query": expr, "start": now - seconds, "end": now, "step": step})
        try:
            return dict(get_json(url))
        except urllib.error.HTTPError as e:
            return dict(json.loads(e.read()))

    def series(self, expr: str) -> list[dict[str, Any]]:
        r = self.query(expr)
        assert r["status"] == "success", f"{expr}: {r.get('error')}"
        return list(r["data"]["result"])

    def label_values(self, label: str, match: str) -> list[str]:
        url = f"{self.base}/label/{label}/values?" + urllib.parse.urlencode({"match[]": match})
        return list(get_json(url)["data"])


class _Sidekick(http.server.BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802
        _Sidekick.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _post(port: int, body: Any) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/", data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def falco_alert(event: dict[str, Any], rule: str, priority: str, offset: float = 1.0,
                fields: dict[str, Any] | None = None) -> dict[str, Any]:
    from baseliner.service.falco import parse_time
    from baseliner.service.sinks.events import iso8601

    t = parse_time(event["first_seen"]) + offset
    of = {"container.id": event["container"]["id"][:12], "container.name": event["container"]["name"],
          "container.image.repository": event["image"]["repository"], "container.image.tag": event["image"]["tag"],
          "k8s.pod.name": event["pod"], "k8s.ns.name": event["namespace"], "proc.exepath": "/bin/sh",
          "evt.type": "execve"}
    of.update(fields or {})
    return {"output": f"{rule} in {event['pod']}", "priority": priority, "rule": rule, "time": iso8601(t),
            "source": "syscall", "tags": ["container"], "hostname": event["node"], "output_fields": of}


def bpf_prerequisites() -> list[str]:
    """What keeps the eBPF sensor from running here (empty: it runs); in CI it must run."""
    if os.geteuid() != 0:
        problems = ["not root"]
    else:
        from baseliner.sensor.probes import check_prerequisites

        problems = check_prerequisites()
    if problems and os.environ.get("CI"):
        pytest.fail("eBPF prerequisites missing in CI: " + "; ".join(problems))
    if problems:
        warnings.warn("eBPF sensor not run: " + "; ".join(problems) + " (eBPF-only panels checked for validity)",
                      stacklevel=2)
    return problems


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    assert Path(PROMETHEUS).exists(), "Prometheus is needed: scripts/bootstrap.sh installs Debian's prometheus"
    tmp = tmp_path_factory.mktemp("stack")
    procs: list[subprocess.Popen[bytes]] = []
    sidekick = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sidekick)
    threading.Thread(target=sidekick.serve_forever, daemon=True).start()
    ports = {k: free_port() for k in ("grpc", "metrics", "falco", "sensor", "sensor-bpf", "prometheus")}
    events = tmp / "events.jsonl"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("BASELINER_")}
    logs = {name: open(tmp / f"{name}.log", "wb")  # noqa: SIM115
            for name in ("serve", "sensor", "sensor-bpf", "prometheus")}

    def spawn(name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=logs[name], stderr=subprocess.STDOUT,
                             start_new_session=True)
        procs.append(p)
        return p

    try:
        serve = spawn("serve", [
            sys.executable, "-m", "baseliner.service.cli", "serve", "--listen", f"127.0.0.1:{ports['grpc']}",
            "--metrics-listen", f"127.0.0.1:{ports['metrics']}", "--events", str(events),
            "--state-dir", str(tmp / "state"), "--state-key-file", str(state_key_file(tmp / "state")),
            "--log-level", "WARNING", "--set", f"falco.listen=127.0.0.1:{ports['falco']}",
            "--set", f"falco.sidekick_url=http://127.0.0.1:{sidekick.server_address[1]}/",
            "--set", "state.save_interval_seconds=2",
            # learning ends after its minimum period, not the ~17 h of quiet a one-alarm-a-day budget asks for
            "--set", "baseline.stable_confidence=0",
        ])
        wait_for(lambda: get_json(f"http://127.0.0.1:{ports['falco']}/healthz"), 60, "the service", (serve,))
        # 48 simulated hours at 600x (about 5 minutes, stopped when the test is done); attacks from 1.5 h on
        sensor = spawn("sensor", [
            sys.executable, "-m", "baseliner.service.cli", "sensor", "--source", "synthetic",
            "--target", f"127.0.0.1:{ports['grpc']}", "--node", "node-a", "--hours", "48", "--speed", "600",
            "--attacks-after", "1.5", "--metrics-listen", f"127.0.0.1:{ports['sensor']}",
        ])
        # the eBPF sensor too, where it can run (root, BCC, kernel headers): then the sensor panels that only
        # it fills must return data as well
        bpf = bpf_prerequisites()
        if not bpf:
            spawn("sensor-bpf", [
                sys.executable, "-m", "baseliner.service.cli", "sensor", "--source", "bpf", "--window", "2",
                "--target", f"127.0.0.1:{ports['grpc']}", "--node", "bpf-node",
                "--metrics-listen", f"127.0.0.1:{ports['sensor-bpf']}",
            ])
        # the repository's scrape config, pointed at the local processes, scraping every second
        cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
        cfg["global"].update({"scrape_interval": "1s", "evaluation_interval": "1s"})
        cfg["rule_files"] = [str(RULES)]
        targets = {"baseliner-service": f"127.0.0.1:{ports['metrics']}",
                   "baseliner-sensor": f"127.0.0.1:{ports['sensor']}",
                   "prometheus": f"127.0.0.1:{ports['prometheus']}"}
        for job in cfg["scrape_configs"]:
            for sc in job["static_configs"]:
                sc["targets"] = [targets[job["job_name"]]]
                if job["job_name"] == "baseliner-sensor":
                    sc["labels"] = {"node": "node-a"}
            if job["job_name"] == "baseliner-sensor" and not bpf:
                job["static_configs"].append({"targets": [f"127.0.0.1:{ports['sensor-bpf']}"],
                                              "labels": {"node": "bpf-node"}})
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))
        prom_proc = spawn("prometheus", [
            PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{ports['prometheus']}", "--log.level=warn",
        ])
        prom = Prom(ports["prometheus"])
        wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{ports['prometheus']}/-/ready", timeout=2),
                 60, "Prometheus ready", (prom_proc,))

        # anomalies from the injected attacks (novel executables: reverse shell, crypto miner)
        def anomalies() -> list[dict[str, Any]]:
            if not events.exists():
                return []
            out = [json.loads(line) for line in events.read_text().splitlines() if line.strip()]
            return [e for e in out if e["schema"] == "baseliner.anomaly/v1" and not e["update"]]

        found = wait_for(lambda: [e for e in anomalies() if "novel_executable" in e["kinds"]], 180,
                         "anomaly events with a novel executable", (serve, sensor))
        # Falco alerts: on anomalous containers (escalation), on learnt behaviour, and bad payloads
        responses = []
        for ev in found[-3:]:  # the latest: surely still in the correlator's per-container memory
            responses.append(_post(ports["falco"], falco_alert(ev, "Terminal shell in container", "Notice")))
        ev = found[-1]
        responses.append(_post(ports["falco"], falco_alert(
            ev, "Read sensitive file untrusted", "Warning", 3600.0, {"proc.exepath": None, "evt.type": "read"})))
        bad = [_post(ports["falco"], b"{not json"),
               _post(ports["falco"], falco_alert(ev, "x", "Notice", 1.0, {"container.id": "host"}))]
        wait_for(lambda: prom.series("baseliner_falco_correlations_total"), 60, "Falco metrics in Prometheus",
                 (serve, sensor, prom_proc))
        wait_for(lambda: prom.series("baseliner_baseline_threshold"), 60, "calibrated thresholds in Prometheus")
        wait_for(lambda: prom.series('baseliner_anomalies_total{severity="critical"}') or True, 1, "")
        if not bpf:
            wait_for(lambda: any(float(x["value"][1]) >= 3 for x in prom.series(
                'baseliner_sensor_windows_sent_total{node="bpf-node"}')), 120, "eBPF sensor windows",
                tuple(procs))
        time.sleep(5)  # a few more scrapes, so that rate() over every counter has two points after the alerts

        # The image drill-down shows the image with the most anomalies: its counters must have been scraped a
        # few times (its first anomaly may have come in the last second, and increase() needs two points).
        def most_anomalous_image_scraped() -> bool:
            top = prom.series("topk(1, sum by (image) (baseliner_anomalies_total))")
            if not top:
                return False
            image = top[0]["metric"]["image"]
            return bool(prom.series(f'count_over_time(baseliner_anomalies_total{{image="{image}"}}[1m]) >= 3'))

        wait_for(most_anomalous_image_scraped, 60, "the most anomalous image's counters in Prometheus", tuple(procs))
        assert all(p.poll() is None for p in procs), "a process died during the run"
        yield {"prom": prom, "responses": responses, "bad": bad, "events": events, "tmp": tmp,
               "sidekick": _Sidekick.received, "bpf": not bpf}
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        for f in logs.values():
            f.close()
        sidekick.shutdown()
        sidekick.server_close()


# --------------------------------------------------------------------------------------------------
# What the dashboards ask


def panel_targets() -> list[tuple[str, str, str, bool, dict[str, Any]]]:
    """(dashboard, panel title, expr, bpf_only, dashboard json) for every Prometheus target."""
    out = []
    for path in DASHBOARDS:
        d = json.loads(path.read_text())
        for p in d["panels"]:
            for t in p.get("targets", []):
                ds = t.get("datasource") or p.get("datasource") or {}
                if ds.get("type") == "prometheus":
                    out.append((path.name, p["title"], t["expr"], BPF_ONLY_MARK in p.get("description", ""), d))
    return out


def substitute(expr: str, values: dict[str, str]) -> str:
    for k, v in {**BUILTINS, **{f"${n}": v for n, v in values.items()}}.items():
        expr = expr.replace(k, v)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def grafana_regex_escape(value: str) -> str:
    """As Grafana's Prometheus datasource escapes a value for ``=~``: a backslash before each regex
    metacharacter, itself escaped for the PromQL string (``2.4`` becomes the characters ``2\\\\.4``)."""
    value = value.replace("\\", "\\\\\\\\")
    return re.sub(r"([$^*{}\[\]'+?.()|])", r"\\\\\1", value)


def variable_values(prom: Prom, dashboard: dict[str, Any]) -> dict[str, str]:
    """What Grafana would put in for each variable: All for multi-value ones, else the most anomalous image."""
    values: dict[str, str] = {}
    for v in dashboard["templating"]["list"]:
        m = re.fullmatch(r"label_values\((.+), *(\w+)\)", v["definition"])
        assert m, f"variable {v['name']}: unexpected query {v['definition']}"
        found = prom.label_values(m.group(2), m.group(1))
        assert found, f"variable ${v['name']} ({v['definition']}) has no values"
        if v.get("multi"):  # "All": Grafana joins every value, regex-escaped, into an alternation
            values[v["name"]] = v.get("allValue") or "(" + "|".join(grafana_regex_escape(x) for x in found) + ")"
        else:
            # the drill-down: the image with the most anomalies
            top = prom.series("topk(1, sum by (image) (baseliner_anomalies_total))")
            values[v["name"]] = top[0]["metric"]["image"] if top else found[0]
            assert values[v["name"]] in found
    return values


def test_the_run_itself(stack: dict[str, Any]) -> None:
    assert stack["responses"] == [(200, {"accepted": True})] * len(stack["responses"])  # nothing about baselines
    found = [json.loads(line) for line in stack["events"].read_text().splitlines() if line.strip()]
    found = [e for e in found if e["schema"] == "baseliner.falco/v1"]  # what the correlation found: events only
    assert len(found) == len(stack["responses"])
    assert any(e["anomalies"] for e in found), "no alert coincided with an anomaly"
    assert found[-1]["baseline"]["outcome"] == "in_baseline"
    assert [s for s, _ in stack["bad"]] == [400, 422]
    assert stack["sidekick"], "no anomaly reached the Falcosidekick receiver"
    nodes = stack["prom"].label_values("node", "baseliner_vectors_received_total")
    assert "node-a" in nodes
    if stack["bpf"]:  # the eBPF sensor's windows reached the service and Prometheus
        assert "bpf-node" in nodes


def test_every_dashboard_query_is_valid_and_returns_data(stack: dict[str, Any]) -> None:
    prom: Prom = stack["prom"]
    targets = panel_targets()
    assert len(targets) > 40
    problems = []
    checked = 0
    for board, title, expr, bpf_only, dash in targets:
        q = substitute(expr, variable_values(prom, dash))
        r = prom.query(q)
        if r["status"] != "success":
            problems.append(f"{board} / {title}: invalid: {q}: {r.get('error')}")
            continue
        rr = prom.query_range(q)
        if rr["status"] != "success":
            problems.append(f"{board} / {title}: invalid as a range query: {q}: {rr.get('error')}")
            continue
        if bpf_only and not stack["bpf"]:
            continue
        checked += 1
        if not r["data"]["result"] and not rr["data"]["result"]:
            problems.append(f"{board} / {title}: no data: {q}")
    assert not problems, "\n".join(problems)
    assert checked > 30


def test_every_alert_rule_is_valid_evaluates_cleanly_and_selects_existing_series(stack: dict[str, Any]) -> None:
    prom: Prom = stack["prom"]
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    problems = []
    for rule in rules:
        r = prom.query(rule["expr"])
        if r["status"] != "success":
            problems.append(f"{rule['alert']}: invalid: {r.get('error')}")
        for sel in re.findall(r"\b(?:baseliner_\w+|up)(?:\{[^}]*\})?", rule["expr"]):
            if "baseliner_sensor_events_lost_total" in sel and not stack["bpf"]:
                continue  # eBPF source only (checked against sensor/bpf_source.py below)
            if prom.series(sel):
                continue
            # no series *now* with this label value (e.g. no critical anomaly yet): the metric must exist and
            # every matched value must be one the code can produce
            name, _, matchers = sel.partition("{")
            if not prom.series(name):
                problems.append(f"{rule['alert']}: selects nothing: {sel}")
            for label, value in re.findall(r'(\w+)="([^"]*)"', matchers):
                if value not in closed_sets().get(label, ()):
                    problems.append(f"{rule['alert']}: {sel}: {label}={value!r} is not a value the code produces")
    # and Prometheus itself evaluated every rule without error
    groups = get_json(prom.base + "/rules")["data"]["groups"]
    loaded = {r["name"]: r for g in groups for r in g["rules"]}
    assert set(loaded) == {r["alert"] for r in rules}
    for name, r in loaded.items():
        if r["health"] != "ok":
            problems.append(f"{name}: health {r['health']}: {r.get('lastError')}")
    # a healthy run fires none of the health alerts
    firing = {a["labels"]["alertname"] for a in get_json(prom.base + "/alerts")["data"]["alerts"]}
    assert not firing & {"BaselinerServiceDown", "BaselinerSensorDown", "BaselinerIngestRejections",
                         "BaselinerStateSaveFailing"}, firing
    assert not problems, "\n".join(problems)


def closed_sets() -> dict[str, tuple[str, ...]]:
    """Label values the code can produce, for the closed-set labels alert rules match on."""
    from baseliner.models.baseline import SEVERITIES
    from baseliner.models.lineage import FALLBACK_EVENT, FALLBACK_REASONS, VERSION_DIFF
    from baseliner.service import falco, serde
    from baseliner.service.sinks.metrics import STATES

    return {"severity": SEVERITIES, "state": STATES, "kind": (VERSION_DIFF, FALLBACK_EVENT),
            "reason": (*serde.REJECT_REASONS, "BASELINE_LIMIT", *falco.REJECT_REASONS, *FALLBACK_REASONS)}


def test_bpf_only_metrics_exist_in_the_ebpf_source() -> None:
    """The panels that the synthetic run cannot fill name metrics the eBPF source really exports."""
    src = (ROOT / "sensor" / "bpf_source.py").read_text()
    exported = {f"baseliner_sensor_{m}" for m in re.findall(r'f"\{ns\}_(\w+)"', src)}
    exported |= {"baseliner_sensor_process_cpu_seconds_total"}  # ProcessCollector(namespace=ns)
    names = set()
    for _, _, expr, bpf_only, _ in panel_targets():
        if bpf_only:
            names |= set(re.findall(r"baseliner_sensor_\w+", expr))
    assert names
    for n in names:
        base = re.sub(r"_(bucket|sum|count)$", "", n)
        assert n in exported or base in exported, f"{n} is not exported by sensor/bpf_source.py"
