"""The deploy/ files, checked as far as real tools here allow: promtool (config, rules, rule unit tests),
Grafana's provisioning format, compose and Kubernetes manifests against the code's own defaults and
configuration loader, Fluent Bit's pipeline, and the Elasticsearch mapping against real events."""

from __future__ import annotations

import asyncio
import base64
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from baseliner.service import config as service_config
from baseliner.service import init_secrets
from baseliner.service.config import FalcoConfig, GrpcConfig, MetricsConfig, split_address

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
GRPC_PORT = split_address(GrpcConfig().listen)[1]
METRICS_PORT = split_address(MetricsConfig().listen)[1]
FALCO_PORT = 2802  # documented port of the Falco endpoint (off by default: falco.listen = "")
SENSOR_METRICS_PORT = 9465  # the port every deployment gives `baseliner sensor --metrics-listen`


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_all(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert Path(PROMTOOL).exists(), "promtool is needed: scripts/bootstrap.sh installs Debian's prometheus"
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120)


# -- Prometheus -------------------------------------------------------------------------------------

RULES = DEPLOY / "prometheus" / "baseliner-rules.yml"


def test_promtool_check_config() -> None:
    r = promtool("check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_check_kubernetes_scrape_config(tmp_path: Path) -> None:
    """Debian's Prometheus is built without Kubernetes discovery: promtool checks everything else (the
    relabelling included) with each ``kubernetes_sd_configs`` block swapped for a static target."""
    cfg = load_yaml(DEPLOY / "prometheus" / "scrape-kubernetes.yml")
    for job in cfg["scrape_configs"]:
        sd = job.pop("kubernetes_sd_configs")
        assert sd[0]["role"] == "pod" and sd[0]["namespaces"]["names"] == ["baseliner"]
        job["static_configs"] = [{"targets": ["127.0.0.1:1"]}]
        keep = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
        assert any("__meta_kubernetes_pod_label_app_kubernetes_io_component" in r["source_labels"] for r in keep)
    shutil.copy(RULES, tmp_path / RULES.name)
    (tmp_path / "scrape.yml").write_text(yaml.safe_dump(cfg))
    r = promtool("check", "config", str(tmp_path / "scrape.yml"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_check_rules() -> None:
    r = promtool("check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "17 rules found" in r.stdout


def test_promtool_test_rules() -> None:
    r = promtool("test", "rules", str(DEPLOY / "prometheus" / "tests" / "baseliner-rules.test.yml"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_is_unit_tested_and_has_a_runbook() -> None:
    rules = [r for g in load_yaml(RULES)["groups"] for r in g["rules"]]
    tests = load_yaml(DEPLOY / "prometheus" / "tests" / "baseliner-rules.test.yml")["tests"]
    tested = {case["alertname"] for t in tests for case in t["alert_rule_test"] if case["exp_alerts"]}
    quiet = {case["alertname"] for t in tests for case in t["alert_rule_test"] if not case["exp_alerts"]}
    docs = (ROOT / "docs" / "stack.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).strip().replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", docs, re.M)}
    for r in rules:
        name = r["alert"]
        assert name in tested, f"{name}: no promtool test where it fires"
        assert name in quiet, f"{name}: no promtool test where it stays quiet"
        assert r["labels"]["severity"] in ("info", "warning", "critical")
        ann = r["annotations"]
        assert {"summary", "description", "runbook", "runbook_section"} <= set(ann), name
        assert len(ann["runbook"]) > 80, f"{name}: runbook too short to help"
        section = ann["runbook_section"]
        assert section.startswith("docs/stack.md#") and section.split("#")[1] in anchors, section


def test_scrape_jobs_match_rules_and_dashboards() -> None:
    cfg = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert {"baseliner-service", "baseliner-sensor"} <= set(jobs)
    assert jobs["baseliner-service"]["static_configs"][0]["targets"] == [f"baseliner:{METRICS_PORT}",
                                                                         f"baseliner-1:{METRICS_PORT}"]  # two shards
    sensor = jobs["baseliner-sensor"]["static_configs"][0]
    assert sensor["targets"] == [f"sensor:{SENSOR_METRICS_PORT}"] and "node" in sensor["labels"]
    assert cfg["rule_files"] == [RULES.name]
    k8s = load_yaml(DEPLOY / "prometheus" / "scrape-kubernetes.yml")
    assert {j["job_name"] for j in k8s["scrape_configs"]} == {"baseliner-service", "baseliner-sensor"}
    text = RULES.read_text() + "".join(p.read_text() for p in (DEPLOY / "grafana" / "dashboards").glob("*.json"))
    for job in re.findall(r'job=\\?"([\w-]+)\\?"', text):
        assert job in jobs, f"rules/dashboards use job {job!r}, which no scrape config defines"


# -- Grafana ----------------------------------------------------------------------------------------

DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))


def test_dashboards_are_the_generators_output() -> None:
    r = subprocess.run([sys.executable, str(DEPLOY / "grafana" / "build_dashboards.py"), "--check"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_datasource_provisioning() -> None:
    ds = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "baseliner.yml")
    assert ds["apiVersion"] == 1
    by_uid = {d["uid"]: d for d in ds["datasources"]}
    assert by_uid["baseliner-prometheus"]["type"] == "prometheus"
    es = by_uid["baseliner-elasticsearch"]
    assert es["type"] == "elasticsearch" and es["jsonData"]["timeField"] == "@timestamp"
    assert es["jsonData"]["index"] == fluent_bit_index()
    prov = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "baseliner.yml")
    assert prov["apiVersion"] == 1 and prov["providers"][0]["type"] == "file"
    compose = load_yaml(DEPLOY / "compose" / "compose.yaml")
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"../grafana/dashboards:{prov['providers'][0]['options']['path']}:ro" in mounts


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_valid_provisioning_json(path: Path) -> None:
    d = json.loads(path.read_text())
    uids = {x["uid"] for x in load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "baseliner.yml")
            ["datasources"]}
    assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
    assert re.fullmatch(r"[a-z0-9-]{1,40}", d["uid"]) and d["title"].startswith("Baseliner / ")
    assert "id" not in d or d["id"] is None  # provisioning assigns database ids
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] in uids, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] in uids, f"{p['title']}: datasource by uid"
            assert t["refId"]
            if t["datasource"]["type"] == "prometheus":
                assert t["expr"].strip()
            else:
                assert t["query"] and t["timeField"] == "@timestamp"
    names = {v["name"] for v in d["templating"]["list"]}
    for v in d["templating"]["list"]:
        assert v["datasource"]["uid"] == "baseliner-prometheus"
        assert re.fullmatch(r"label_values\((\w+|\{[^}]+\}), *\w+\)", v["definition"])
    used = set(re.findall(r"\$\{?(\w+)", path.read_text())) - {"__rate_interval", "__range", "__interval", "labels"}
    assert used <= names, f"variables used but not defined: {used - names}"


def test_dashboards_cover_the_issue() -> None:
    titles = {json.loads(p.read_text())["uid"]: json.loads(p.read_text()) for p in DASHBOARDS}
    assert set(titles) == {"baseliner-fleet", "baseliner-image", "baseliner-service", "baseliner-sensors"}
    all_vars = {v["name"] for d in titles.values() for v in d["templating"]["list"]}
    assert {"image", "namespace", "node"} <= all_vars
    assert {v["name"] for v in titles["baseliner-fleet"]["templating"]["list"]} == {"image", "namespace", "node"}
    text = json.dumps(titles)
    for metric in ("baseliner_anomalies_total", "baseliner_baseline_threshold", "baseliner_anomaly_score_bucket",
                   "baseliner_vectors_rejected_total", "baseliner_ingest_latency_seconds_bucket",
                   "baseliner_baselines", "baseliner_sensor_events_lost_total", "baseliner_falco_alerts_total",
                   "baseliner_falco_correlations_total"):
        assert metric in text, metric
    es_panels = [p for d in titles.values() for p in d["panels"] if p.get("datasource", {}).get("type") ==
                 "elasticsearch"]
    assert any("explanation.text" in json.dumps(p) for p in es_panels)
    assert any(p["type"] == "heatmap" for p in titles["baseliner-image"]["panels"])


# -- Fluent Bit and Elasticsearch -------------------------------------------------------------------


def fluent_bit_index() -> str:
    cfg = load_yaml(DEPLOY / "fluent-bit" / "fluent-bit.yaml")
    return str(cfg["pipeline"]["outputs"][0]["index"])


@pytest.mark.parametrize("name", ["fluent-bit.yaml", "fluent-bit-kubernetes.yaml"])
def test_fluent_bit_pipeline(name: str) -> None:
    cfg = load_yaml(DEPLOY / "fluent-bit" / name)
    parsers = (DEPLOY / "fluent-bit" / "parsers.conf").read_text()
    assert cfg["service"]["parsers_file"] == "/fluent-bit/etc/parsers.conf"
    inp = cfg["pipeline"]["inputs"]
    assert len(inp) == 1 and inp[0]["name"] == "tail"
    parser = inp[0].get("parser") or next(f["parser"] for f in cfg["pipeline"]["filters"] if f["name"] == "parser")
    assert re.search(rf"Name\s+{parser}\b", parsers) and re.search(r"Format\s+json", parsers)
    assert re.search(r"Time_Key\s+@timestamp", parsers)
    grep = next(f for f in cfg["pipeline"]["filters"] if f["name"] == "grep")
    assert grep["regex"] == r"schema ^baseliner\."
    out = cfg["pipeline"]["outputs"][0]
    assert out["name"] == "es" and out["id_key"] == "event_id" and out["write_operation"] == "index"
    assert out["index"] == fluent_bit_index()
    tag = inp[0]["tag"]
    assert all(x["match"] == tag for x in [*cfg["pipeline"]["filters"], out])
    if name == "fluent-bit.yaml":  # compose: the files both shards write, on the shared volume
        compose_cfg = service_config.load(str(DEPLOY / "compose" / "baseliner.yaml"), environ={}, validate=False)
        second = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())["services"]["baseliner-1"]
        (output,) = [a.split("=", 1)[1] for a in second["command"] if a.startswith("events.output=")]
        assert fnmatch.fnmatch(compose_cfg.events.output, inp[0]["path"]) and fnmatch.fnmatch(output, inp[0]["path"])


def test_index_template_matches_fluent_bit() -> None:
    t = json.loads((DEPLOY / "fluent-bit" / "elasticsearch-index-template.json").read_text())
    assert any(re.fullmatch(p.replace("*", ".*"), fluent_bit_index()) for p in t["index_patterns"])
    assert t["template"]["mappings"]["dynamic"] is False


def _mapped_type(props: dict[str, Any], path: list[str]) -> str | None:
    node: dict[str, Any] = {"properties": props}
    for part in path:
        node = node.get("properties", {}).get(part)  # type: ignore[assignment]
        if node is None:
            return None
    return str(node.get("type", "object"))


def _leaves(value: Any, path: list[str]) -> list[tuple[list[str], Any]]:
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _leaves(v, [*path, k])]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v, path)]
    return [(path, value)]


def _real_events() -> list[dict[str, Any]]:
    """Anomaly events (first and escalated update), Falco events and a version diff from the real service."""
    sys.path.insert(0, os.path.dirname(__file__))
    from service_fixtures import config, running, vector  # noqa: PLC0415
    from test_service_falco import T0, WINDOW, alert, apply, hexvec, learn, post  # noqa: PLC0415

    async def main() -> list[dict[str, Any]]:
        async with running(config(None, ("falco.listen", "127.0.0.1:0"),
                                  ("pipeline.lineage_observe_seconds", 30))) as (srv, events):
            learn(srv)
            apply(srv, [hexvec(60, 0, attack="shell"), hexvec(60, 1)])
            apply(srv, [hexvec(61, 0, attack="etc"), hexvec(61, 1)])
            await asyncio.to_thread(post, srv.falco.port, alert(T0 + WINDOW * 60 + 2))
            await asyncio.to_thread(post, srv.falco.port, alert(T0 + WINDOW * 60, 1, **{
                "proc.exepath": None, "evt.type": "read", "fd.rport": 5432, "fd.l4proto": "tcp"}))
            # a new version of the image starts (lineage): its diff after 30 s of event time
            for i in range(62, 67):
                apply(srv, [vector(i, 2, tag="1.28")])
            srv.pipeline.flush_events()
            return list(events)

    return asyncio.run(main())


def test_index_template_maps_every_field_of_real_events() -> None:
    t = json.loads((DEPLOY / "fluent-bit" / "elasticsearch-index-template.json").read_text())
    props = t["template"]["mappings"]["properties"]
    events = _real_events()
    schemas = {e["schema"] for e in events}
    assert schemas == {"baseliner.anomaly/v1", "baseliner.falco/v1", "baseliner.version/v1"}
    assert any("falco" in e for e in events if e["schema"] == "baseliner.anomaly/v1"), "no escalated anomaly"
    compatible = {bool: {"boolean"}, int: {"long", "integer", "double"}, float: {"double", "float"},
                  str: {"keyword", "text", "date"}}
    dates = {"@timestamp", "first_seen", "last_seen", "start"}
    problems = set()
    for e in events:
        assert e["event_id"], "Fluent Bit indexes by event_id"
        # parsers.conf reads it with Time_Format %Y-%m-%dT%H:%M:%S.%LZ
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["@timestamp"]), e["@timestamp"]
        for path, value in _leaves(e, []):
            typ = _mapped_type(props, path)
            name = ".".join(path)
            if typ is None:
                problems.add(f"{name}: not mapped (dynamic mapping is off: it would not be searchable)")
            elif value is not None and typ not in compatible[type(value)]:
                problems.add(f"{name}: {type(value).__name__} value mapped as {typ}")
            elif path[-1] in dates and typ != "date":
                problems.add(f"{name}: should be a date")
    assert not problems, "\n".join(sorted(problems))


# -- compose ----------------------------------------------------------------------------------------

COMPOSE = DEPLOY / "compose" / "compose.yaml"


def _ports_of(cfg: service_config.ServeConfig) -> dict[str, int]:
    return {"grpc": split_address(cfg.grpc.listen)[1], "metrics": split_address(cfg.metrics.listen)[1],
            "falco": split_address(cfg.falco.listen)[1]}


def test_compose_service_config_is_valid_and_uses_the_default_ports() -> None:
    path = DEPLOY / "compose" / "baseliner.yaml"
    cfg = service_config.load(str(path), environ={}, validate=False)
    problems = [p for p in _validate(cfg) if "state.dir" not in p]
    assert not problems
    assert _ports_of(cfg) == {"grpc": GRPC_PORT, "metrics": METRICS_PORT, "falco": FALCO_PORT}
    assert FalcoConfig().listen == ""  # off by default; the deployments turn it on


def _validate(cfg: service_config.ServeConfig) -> list[str]:
    """The service's problems with a shipped configuration, but for the files init-secrets writes where the
    deployment mounts them (tests/test_security_deploy.py runs the configurations with them in place)."""
    mount = init_secrets.SERVICE_MOUNT
    return [p for p in service_config.problems(cfg) if f"'{mount}/" not in p and f"'{SHARD_LIST}'" not in p]


#: Where both deployments mount their shard list (deploy/compose/shards; the Kubernetes ConfigMap's).
SHARD_LIST = "@/etc/baseliner/shards"


def secrets_written(tmp: Path, node: str) -> set[str]:
    """The files ``baseliner init-secrets --node NODE`` writes (relative names)."""
    out = tmp / "secrets"
    init_secrets.create(out, [node])
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}


def test_compose_stack(tmp_path: Path) -> None:
    c = load_yaml(COMPOSE)
    s = c["services"]
    assert {"baseliner", "sensor", "mlflow", "prometheus", "grafana", "falco", "fluent-bit", "elasticsearch",
            "kibana"} <= set(s)
    for name, svc in s.items():
        image = svc["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image ({image})"
    sensor = s["sensor"]
    assert sensor["cap_add"] == ["SYS_ADMIN"] and sensor["pid"] == "host" and "privileged" not in sensor
    mounts = {v.split(":")[1] for v in sensor["volumes"]}
    assert "/var/run/docker.sock:/var/run/docker.sock:ro" in sensor["volumes"]
    assert {"/lib/modules", "/usr/src", "/sys/kernel/tracing", "/sys/fs/cgroup", "/var/run/docker.sock"} <= mounts
    args = sensor["command"]
    assert args[:3] == ["sensor", "--source", "bpf"]
    assert args[args.index("--target") + 1] == SHARD_LIST  # the sensor streams to every shard of the list
    assert args[args.index("--metrics-listen") + 1] == f"0.0.0.0:{SENSOR_METRICS_PORT}"
    # the node the sensor reports (service-side `node` label) is the node Prometheus labels its target with
    node_default = re.fullmatch(r"\$\{BASELINER_NODE:-([\w.-]+)\}", args[args.index("--node") + 1])
    assert node_default
    prom_cfg = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    (sensor_job,) = [j for j in prom_cfg["scrape_configs"] if j["job_name"] == "baseliner-sensor"]
    assert sensor_job["static_configs"][0]["labels"]["node"] == node_default.group(1)
    svc = s["baseliner"]
    assert {"50051", "9464", "2802"} == set(svc["expose"]) == {str(p) for p in (GRPC_PORT, METRICS_PORT, FALCO_PORT)}
    assert "./baseliner.yaml:/etc/baseliner/baseliner.yaml:ro" in svc["volumes"]
    assert f"./secrets:{init_secrets.SERVICE_MOUNT}:ro" in svc["volumes"]
    assert svc["command"][svc["command"].index("--config") + 1] == "/etc/baseliner/baseliner.yaml"
    falco = s["falco"]["command"]
    opts = dict(falco[i + 1].split("=", 1) for i, a in enumerate(falco) if a == "-o")
    assert opts["json_output"] == "true" and opts["http_output.enabled"] == "true"
    # compose passes $${VAR} on as ${VAR}, which Falco expands from the env_file init-secrets writes
    assert opts["http_output.url"] == "$${BASELINER_FALCO_URL}" and s["falco"]["env_file"] == "./secrets/falco.env"
    # the volumes the service writes are the ones Fluent Bit and the state directory use
    cfg = service_config.load(str(DEPLOY / "compose" / "baseliner.yaml"), environ={}, validate=False)
    vols = dict(v.split(":")[:2] for v in svc["volumes"])
    assert vols["baseliner_state"] == cfg.state.dir
    assert os.path.dirname(cfg.events.output) == vols["baseliner_events"]
    fb = dict(v.split(":")[:2] for v in s["fluent-bit"]["volumes"])
    assert fb["baseliner_events"] == vols["baseliner_events"]
    # every relative file mounted exists in the repository, or is one baseliner init-secrets writes
    written = secrets_written(tmp_path, "docker-host")
    for svc_def in s.values():
        for v in svc_def.get("volumes", []):
            src = v.replace("${BASELINER_NODE:-docker-host}", "docker-host").split(":")[0]
            if src.startswith("./secrets"):
                assert src == "./secrets" or src.removeprefix("./secrets/") in written, src
            elif src.startswith("."):
                assert (COMPOSE.parent / src).resolve().exists(), src
    assert set(c["volumes"]) >= {v.split(":")[0] for d in s.values() for v in d.get("volumes", [])
                                 if not v.startswith(("/", "."))}
    # the one-shots: the index template goes in before Fluent Bit writes, and Kibana gets a data view over it
    es_setup = s["es-setup"]["command"][0]
    assert "/_index_template/baseliner-events" in es_setup and "@/setup/baseliner-events.json" in es_setup
    assert s["fluent-bit"]["depends_on"]["es-setup"]["condition"] == "service_completed_successfully"
    body = json.loads(re.search(r"-d '(.*)' &&", s["kibana-setup"]["command"][0]).group(1))  # type: ignore[union-attr]
    assert re.fullmatch(body["data_view"]["title"].replace("*", ".*"), fluent_bit_index())
    assert body["data_view"]["timeFieldName"] == "@timestamp"
    build = svc["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    _check_compose_shards(c, cfg)


def _set(command: list[str], key: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in command if a.startswith(f"{key}=")]
    return value


def _check_compose_shards(c: dict[str, Any], cfg: service_config.ServeConfig) -> None:
    """Two shards, each named in the list the shards and the sensor read, each with its own state and events
    file, calling each other over TLS with the peer token init-secrets writes (here and in compose.host.yaml)."""
    from baseliner.models.shards import parse_shard_list

    s = c["services"]
    assert cfg.shards.list == SHARD_LIST and cfg.shards.peer_token_file == f"{init_secrets.SERVICE_MOUNT}/peer.token"
    assert cfg.shards.tls_ca_file == f"{init_secrets.SERVICE_MOUNT}/ca.pem"
    listed = {sh.name: sh.address for sh in parse_shard_list((COMPOSE.parent / "shards").read_text())}
    assert listed == {"baseliner-0": f"baseliner:{GRPC_PORT}", "baseliner-1": f"baseliner-1:{GRPC_PORT}"}
    for service, name in (("baseliner", "baseliner-0"), ("baseliner-1", "baseliner-1")):
        svc = s[service]
        assert _set(svc["command"], "shards.name") == name
        assert listed[name].split(":")[0] == service  # its address is its compose host name
        assert listed[name].split(":")[0] in init_secrets.DEFAULT_SERVER_NAMES  # in the server certificate
        assert f"./shards:{SHARD_LIST[1:]}:ro" in svc["volumes"]
        assert set(svc["expose"]) == {str(p) for p in (GRPC_PORT, METRICS_PORT, FALCO_PORT)}
    assert f"./shards:{SHARD_LIST[1:]}:ro" in s["sensor"]["volumes"]
    states = [dict(v.split(":")[:2] for v in s[n]["volumes"]) for n in ("baseliner", "baseliner-1")]
    assert [v for v in states[0] if states[0][v] == cfg.state.dir] != [v for v in states[1]
                                                                        if states[1][v] == cfg.state.dir]
    assert _set(s["baseliner-1"]["command"], "events.output") != cfg.events.output
    host = load_yaml(COMPOSE.parent / "compose.host.yaml")["services"]
    on_host = {sh.name: sh.address for sh in parse_shard_list((COMPOSE.parent / "shards.host").read_text())}
    for service, name in (("baseliner", "baseliner-0"), ("baseliner-1", "baseliner-1")):
        assert _set(host[service]["command"], "grpc.listen") == on_host[name]
        assert _set(host[service]["command"], "shards.name") == name
    for service in ("baseliner", "baseliner-1", "sensor"):
        assert f"./shards.host:{SHARD_LIST[1:]}:ro" in host[service]["volumes"]
    assert host["sensor"]["command"][host["sensor"]["command"].index("--target") + 1] == SHARD_LIST


def test_dockerfile() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE=debian:bookworm", text, re.M) and re.search(r"^FROM \$\{BASE\}$", text, re.M)
    assert re.search(r"python3-bpfcc", text) and 'ENTRYPOINT ["baseliner"]' in text
    exposed = {int(p) for line in re.findall(r"^EXPOSE (.+)$", text, re.M) for p in line.split()}
    assert exposed == {GRPC_PORT, METRICS_PORT, FALCO_PORT, SENSOR_METRICS_PORT}
    for path in re.findall(r"^COPY (\S+) ", text, re.M):
        assert (ROOT / path).exists(), path
    import tomllib

    folders = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values()
    for folder in folders:
        assert f"COPY {folder} " in text, f"the image must contain package folder {folder}"


@pytest.mark.slow
def test_dockerfile_copies_enough_to_build_the_package(tmp_path: Path) -> None:
    """What the image's `pip install .` sees (only the COPY'd paths) builds a complete wheel."""
    import zipfile

    text = (DEPLOY / "Dockerfile").read_text()
    src = tmp_path / "src"
    src.mkdir()
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        *paths, _dest = line.split()
        for p in paths:
            if (ROOT / p).is_dir():
                shutil.copytree(ROOT / p, src / p, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy(ROOT / p, src / p)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path / "out"), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    (whl,) = (tmp_path / "out").glob("baseliner-*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    for needed in ("service/cli.py", "service/falco.py", "service/falco_http.py", "service/sinks/falcosidekick.py",
                   "sensor/bpf/sensor.c", "protos/v1/vectors_pb2.py", "models/baseline.py"):
        assert f"baseliner/{needed}" in names, needed
    assert all(n.startswith(("baseliner/", "baseliner-")) for n in names), "nothing installs outside baseliner.*"
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "baseliner = baseliner.service.cli:main" in zipfile.ZipFile(whl).read(entry).decode()


# -- Kubernetes -------------------------------------------------------------------------------------

K8S = DEPLOY / "kubernetes"


def k8s_objects() -> dict[tuple[str, str], dict[str, Any]]:
    kust = load_yaml(K8S / "kustomization.yaml")
    out = {}
    for f in kust["resources"]:
        for d in load_all(K8S / f):
            assert {"apiVersion", "kind", "metadata"} <= set(d), f
            out[(d["kind"], d["metadata"]["name"])] = d
    return out


def test_kustomization_lists_every_manifest() -> None:
    kust = load_yaml(K8S / "kustomization.yaml")
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "falco-values.yaml"}
    assert set(kust["resources"]) == manifests
    assert kust["namespace"] == "baseliner"
    assert kust["images"][0]["name"] == "baseliner"


def test_k8s_service_statefulset() -> None:
    objs = k8s_objects()
    ss = objs[("StatefulSet", "baseliner-service")]
    cm = objs[("ConfigMap", "baseliner-config")]
    cfg_path = K8S / "_baseliner.yaml"
    try:
        cfg_path.write_text(cm["data"]["baseliner.yaml"])
        cfg = service_config.load(str(cfg_path), environ={}, validate=False)
    finally:
        cfg_path.unlink()
    assert not [p for p in _validate(cfg) if "state.dir" not in p]
    assert _ports_of(cfg) == {"grpc": GRPC_PORT, "metrics": METRICS_PORT, "falco": FALCO_PORT}
    assert cfg.events.output == "-"  # stdout: the node's Fluent Bit ships it
    spec = ss["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc": GRPC_PORT, "metrics": METRICS_PORT, "falco": FALCO_PORT}
    assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["cpu"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["state"] == cfg.state.dir
    assert [t["metadata"]["name"] for t in spec["volumeClaimTemplates"]] == ["state"]
    assert c["args"][-1] == f"{mounts['config']}/baseliner.yaml"
    assert c["readinessProbe"]["tcpSocket"]["port"] == GRPC_PORT  # kubelet's gRPC probe cannot speak mutual TLS
    # the credentials and keys of the configuration come from the Secret init-secrets writes
    assert mounts["secrets"] == init_secrets.SERVICE_MOUNT
    (secret,) = [v["secret"] for v in pod["volumes"] if v["name"] == "secrets"]
    assert secret["secretName"] == "baseliner-service"
    assert objs[("Service", spec["serviceName"])]["spec"]["clusterIP"] == "None"


def test_k8s_sensor_daemonset(tmp_path: Path) -> None:
    objs = k8s_objects()
    ds = objs[("DaemonSet", "baseliner-sensor")]
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    (c,) = pod["containers"]
    assert c["securityContext"]["privileged"] is True
    assert c["resources"]["limits"]["cpu"] and c["resources"]["limits"]["memory"]
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    mounted = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/lib/modules", "/usr/src", "/sys/kernel/tracing", "/sys/fs/cgroup"} <= set(host_paths.values())
    assert {"/lib/modules", "/usr/src", "/sys/kernel/tracing", "/sys/fs/cgroup"} <= mounted
    args = c["args"]
    svc = objs[("Service", "baseliner")]
    assert args[args.index("--target") + 1] == f"{svc['metadata']['name']}.baseliner.svc:{GRPC_PORT}"
    assert args[args.index("--metrics-listen") + 1] == f"0.0.0.0:{SENSOR_METRICS_PORT}"
    assert args[args.index("--node") + 1] == "$(NODE_NAME)"
    assert any(e["name"] == "NODE_NAME" for e in c["env"])
    sock = args[args.index("--runtime") + 1].split("=", 1)[1]  # tests/test_deploy_manifests.py: more
    assert any(sock == m["mountPath"] and m["readOnly"] for m in c["volumeMounts"])
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": SENSOR_METRICS_PORT}
    # the sensor CLI really has these options
    import argparse

    from baseliner.sensor.cli import add_parser

    # TLS, the node's certificate and token from the Secret init-secrets writes, a spool that outlives the pod
    mount = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}["credentials"]
    (secret,) = [v["secret"] for v in pod["volumes"] if v["name"] == "credentials"]
    assert secret["secretName"] == "baseliner-sensors" and mount == init_secrets.SENSOR_MOUNT
    assert args[args.index("--token-file") + 1] == f"{mount}/$(NODE_NAME).token"
    assert args[args.index("--spool-dir") + 1] == host_paths["spool"]
    # the sensor CLI really has these options, and the files the Secret holds are the ones they name
    node = "node-1"
    init_secrets.create(tmp_path / "secrets", [node])
    objs = yaml.safe_load_all((tmp_path / "secrets" / "kubernetes" / "secrets.yaml").read_text())
    (sensors,) = [o for o in objs if o and o["metadata"]["name"] == secret["secretName"]]
    (tmp_path / "sensor").mkdir()
    for name, data in sensors["data"].items():
        (tmp_path / "sensor" / name).write_bytes(base64.b64decode(data))
    local = [a.replace("$(NODE_NAME)", node).replace(mount, str(tmp_path / "sensor"))
             .replace(host_paths["spool"], str(tmp_path / "spool")) for a in args]
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    parser.parse_args(local)


def test_k8s_services_and_monitors_select_the_pods() -> None:
    objs = k8s_objects()
    pods = {k[1]: v["spec"]["template"] for k, v in objs.items() if k[0] in ("StatefulSet", "DaemonSet")}
    for (kind, name), o in objs.items():
        if kind == "Service":
            sel = o["spec"]["selector"]
            (tmpl,) = [t for t in pods.values() if sel.items() <= t["metadata"]["labels"].items()]
            port_names = {p["name"] for c in tmpl["spec"]["containers"] for p in c["ports"]}
            for p in o["spec"]["ports"]:
                assert p["targetPort"] in port_names, f"{name}: targetPort {p['targetPort']}"
    for (kind, name), o in objs.items():
        if kind == "ServiceMonitor":
            sel = o["spec"]["selector"]["matchLabels"]
            services = [s for (k, _), s in objs.items() if k == "Service" and
                        sel.items() <= s["metadata"]["labels"].items()]
            assert services, name
            for ep in o["spec"]["endpoints"]:
                assert all(ep["port"] in {p["name"] for p in s["spec"]["ports"]} for s in services)
                jobs = [r["replacement"] for r in ep["relabelings"] if r.get("targetLabel") == "job"]
                assert jobs == [name]  # the job names the rules and dashboards use
    sensor_ep = objs[("ServiceMonitor", "baseliner-sensor")]["spec"]["endpoints"][0]
    assert any(r.get("targetLabel") == "node" for r in sensor_ep["relabelings"])


def test_prometheusrule_equals_the_rule_file() -> None:
    pr = k8s_objects()[("PrometheusRule", "baseliner")]
    assert pr["spec"]["groups"] == load_yaml(RULES)["groups"]


def test_falco_helm_values_point_at_the_service(tmp_path: Path) -> None:
    values = load_yaml(K8S / "falco-values.yaml")
    v = values["falco"]
    assert v["json_output"] is True and v["http_output"]["enabled"] is True
    # the URL (with the endpoint's secret) and the CA come from the Secret init-secrets writes
    assert v["http_output"]["url"] == "${BASELINER_FALCO_URL}"
    (env,) = values["extra"]["env"]
    ref = env["valueFrom"]["secretKeyRef"]
    init_secrets.create(tmp_path / "secrets", ["node-1"])
    objs = yaml.safe_load_all((tmp_path / "secrets" / "kubernetes" / "secrets.yaml").read_text())
    (secret,) = [o for o in objs if o and o["metadata"]["name"] == ref["name"]]
    url = base64.b64decode(secret["data"][ref["key"]]).decode()
    assert re.fullmatch(rf"https://baseliner\.baseliner\.svc:{FALCO_PORT}/falco/[\w-]{{16,}}", url), url
    (vol,) = values["mounts"]["volumes"]
    (mount,) = values["mounts"]["volumeMounts"]
    assert vol["secret"]["secretName"] == ref["name"] and mount["name"] == vol["name"]
    assert v["http_output"]["ca_cert"] == f"{mount['mountPath']}/ca.pem" and "ca.pem" in secret["data"]


def test_falco_config_section_defaults_are_documented() -> None:
    names = list(FalcoConfig.model_fields)
    docs = (ROOT / "docs" / "stack.md").read_text()
    for n in names:
        assert f"falco.{n}" in docs, f"falco.{n} is not documented in docs/stack.md"
