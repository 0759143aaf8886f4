"""Falco, complemented, through the real service: the alert endpoint over real HTTP, bad payloads, correlation
(escalation both ways round, alerts on learned behaviour), and the Falcosidekick sink against a real HTTP
receiver."""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import http.server
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from baseliner.models.block import VectorBlock
from baseliner.models.vector import FeatureVector
from baseliner.service.falco import FalcoPayloadError, parse_alert
from baseliner.service.sinks.events import iso8601
from baseliner.service.sinks.falcosidekick import FalcosidekickSink, to_falco
from prometheus_client import CollectorRegistry

sys.path.insert(0, os.path.dirname(__file__))
from service_fixtures import T0, WINDOW, config, running, sample, scrape, vector  # noqa: E402

CID = ["3ad7b26ded6d" + "0" * 52, "9f1e2d3c4b5a" + "1" * 52]


def hexvec(i: int, container: int = 0, attack: str = "") -> FeatureVector:
    v = vector(i, container, attack=attack)
    v.identity = dataclasses.replace(v.identity, container_id=CID[container])
    return v


def alert(t: float, container: int = 0, rule: str = "Terminal shell in container", priority: str = "Notice",
          **fields: Any) -> dict[str, Any]:
    of = {"container.id": CID[container][:12], "container.image.repository": "docker.io/library/nginx",
          "container.image.tag": "1.27", "container.name": f"web-{container}", "k8s.pod.name": f"web-{container}-pod",
          "k8s.ns.name": "default", "proc.exepath": "/bin/sh", "proc.cmdline": "sh -i", "evt.type": "execve"}
    of.update(fields)
    return {"output": f"{rule} (container={CID[container][:12]})", "priority": priority, "rule": rule,
            "time": iso8601(t)[:-1] + "123456Z", "source": "syscall", "tags": ["container", "shell"],
            "hostname": "node-1", "output_fields": of}


def post(port: int, body: bytes | dict[str, Any], conn: http.client.HTTPConnection | None = None,
         path: str = "/") -> tuple[int, dict[str, Any]]:
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    c.request("POST", path, body=data, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    out = json.loads(r.read())
    if conn is None:
        c.close()
    return r.status, out


def learn(srv: Any, windows: int = 60) -> None:
    seq = srv.pipeline.last_sequence("s1")
    for w in range(0, windows, 10):
        seq += 1
        vs = [hexvec(w + k, c) for k in range(10) for c in range(2)]
        srv.pipeline.apply_block("s1", seq, VectorBlock.from_vectors(vs))
    assert srv.pipeline.baselines["nginx:1.27"].state.value == "detecting"


def apply(srv: Any, vectors: list[FeatureVector]) -> None:
    seq = srv.pipeline.last_sequence("s1") + 1
    r = srv.pipeline.apply_block("s1", seq, VectorBlock.from_vectors(vectors))
    assert r.applied == len(vectors), r.rejected


def falco_cfg(*extra: tuple[str, Any]) -> Any:
    return config(None, ("falco.listen", "127.0.0.1:0"), *extra)


# -- parsing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not_json"),
        (b"[1, 2]", "not_object"),
        (json.dumps({"rule": "r", "priority": "Notice", "time": "2026-01-01T00:00:00Z"}).encode(), "missing_field"),
        (json.dumps({**alert(T0), "priority": "Loud"}).encode(), "bad_priority"),
        (json.dumps({**alert(T0), "time": "yesterday"}).encode(), "bad_time"),
        (json.dumps({**alert(T0), "rule": ""}).encode(), "bad_field"),
        (json.dumps({**alert(T0), "output_fields": "x"}).encode(), "bad_field"),
        (json.dumps(alert(T0, **{"container.id": None})).encode(), "no_container"),
        (json.dumps(alert(T0, **{"container.image.repository": None})).encode(), "no_container"),
        (json.dumps(alert(T0, **{"container.id": "host"})).encode(), "not_container"),
        (json.dumps(alert(T0, **{"container.id": "a b"})).encode(), "bad_field"),
        (json.dumps(alert(T0, **{"proc.cmdline": "x" * 10_000})).encode(), "bad_field"),
        (b" " * 70_000, "too_large"),
    ],
)
def test_bad_payloads_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(FalcoPayloadError) as e:
        parse_alert(body)
    assert e.value.reason == reason and e.value.message


def test_a_falco_alert_is_parsed_with_its_container_and_time() -> None:
    a = parse_alert(json.dumps(alert(T0 + 5)).encode())
    assert a.container_id == CID[0][:12] and a.priority == "notice" and a.namespace == "default"
    assert a.time == pytest.approx(T0 + 5.123456) and a.node == "node-1" and a.tags == ("container", "shell")


# -- the endpoint -----------------------------------------------------------------------------------


def test_endpoint_counts_alerts_and_refuses_bad_ones_without_affecting_the_rest() -> None:
    async def main() -> None:
        async with running(falco_cfg(("falco.max_body_bytes", 4096))) as (srv, events):
            port = srv.falco.port

            def client() -> dict[str, Any]:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                out: dict[str, Any] = {}
                # several requests on one kept-alive connection, good and bad interleaved
                out["ok1"] = post(port, alert(T0), conn)
                out["bad"] = post(port, b"{oops", conn)
                out["nocontainer"] = post(port, alert(T0, **{"container.id": ""}), conn)
                out["host"] = post(port, alert(T0, **{"container.id": "host"}), conn)
                out["ok2"] = post(port, alert(T0 + 1, 1, priority="Critical", rule="Write below etc"), conn)
                out["path"] = post(port, alert(T0 + 2), conn, path="/falco")
                conn.close()
                out["huge"] = post(port, json.dumps(alert(T0, **{"x": "y" * 5000})).encode())
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                c.request("GET", "/healthz")
                r = c.getresponse()
                r.read()
                out["health"] = r.status
                c.request("GET", "/")
                r = c.getresponse()
                r.read()
                out["get"] = r.status
                c.close()
                return out

            out = await asyncio.to_thread(client)
            assert out["ok1"][0] == 200 and out["ok1"][1]["accepted"] is True
            assert out["ok1"][1]["image_key"] == "nginx:1.27"  # docker.io/library/ prefix handled
            assert out["ok1"][1]["baseline"]["outcome"] == "no_baseline"
            assert out["bad"] == (400, {"error": "not_json", "message": out["bad"][1]["message"]})
            assert out["nocontainer"][0] == 422 and out["nocontainer"][1]["error"] == "no_container"
            assert out["host"][0] == 422 and out["host"][1]["error"] == "not_container"
            assert out["ok2"][0] == 200 and out["path"][0] == 200
            assert out["huge"][0] == 413 and out["huge"][1]["error"] == "too_large"
            assert out["health"] == 200 and out["get"] == 405

            text = await asyncio.to_thread(scrape, srv.metrics_port)
            labels = {"image": "nginx:1.27", "namespace": "default", "node": "node-1"}
            assert sample(text, "baseliner_falco_alerts_total", priority="notice", **labels) == 2
            assert sample(text, "baseliner_falco_alerts_total", priority="critical", **labels) == 1
            assert sample(text, "baseliner_falco_rule_alerts_total", rule="Write below etc", priority="critical") == 1
            for reason, n in (("not_json", 1), ("no_container", 1), ("not_container", 1), ("too_large", 1),
                              ("bad_time", 0)):
                assert sample(text, "baseliner_falco_alerts_rejected_total", reason=reason) == n, reason
            assert sample(text, "baseliner_falco_correlations_total", outcome="no_baseline",
                          image="nginx:1.27", namespace="default") == 3
            # every accepted alert was written beside the anomaly events, as a baseliner.falco/v1 event
            falco_events = [e for e in events if e["schema"] == "baseliner.falco/v1"]
            assert [e["rule"] for e in falco_events] == ["Terminal shell in container", "Write below etc",
                                                         "Terminal shell in container"]
            assert falco_events[0]["container"]["id"] == CID[0][:12]
            # ingest still works
            learn(srv, 60)

    asyncio.run(main())


def test_endpoint_is_off_by_default_and_on_loopback_when_enabled() -> None:
    async def main() -> None:
        async with running(config(None)) as (srv, _):
            assert srv.falco is None
        async with running(falco_cfg()) as (srv, _):
            assert srv.falco.host == "127.0.0.1"

    asyncio.run(main())


# -- correlation ------------------------------------------------------------------------------------


def test_anomaly_after_a_rule_hit_is_raised_in_severity() -> None:
    async def main() -> None:
        async with running(falco_cfg()) as (srv, events):
            learn(srv)
            t_attack = T0 + WINDOW * 60
            status, body = await asyncio.to_thread(post, srv.falco.port, alert(t_attack + 3))
            assert status == 200 and body["anomalies"] == [] and body["baseline"]["outcome"] == "novel"
            assert {"kind": "executable", "value": "/bin/sh", "learned": False} in body["baseline"]["items"]
            apply(srv, [hexvec(60, 0, attack="shell"), hexvec(60, 1)])
            anomalies = [e for e in events if e["schema"] == "baseliner.anomaly/v1"]
            assert len(anomalies) == 1
            ev = anomalies[0]
            assert ev["severity_model"] in ("high", "critical") and ev["severity"] == "critical"
            assert ev["falco"] == {"rules": ["Terminal shell in container"], "priority": "notice", "alerts": 1}
            # a repeat folded into the event keeps the raised severity in its update
            apply(srv, [hexvec(61, 0, attack="shell"), hexvec(61, 1)])
            srv.pipeline.flush_events()
            updates = [e for e in events if e.get("update") and e["schema"] == "baseliner.anomaly/v1"]
            assert updates and all(u["severity"] == "critical" and u["falco"] for u in updates)
            text = await asyncio.to_thread(scrape, srv.metrics_port)
            assert sample(text, "baseliner_falco_correlations_total", outcome="escalated",
                          image="nginx:1.27", namespace="default") == 1

    asyncio.run(main())


def test_rule_hit_after_an_anomaly_rewrites_the_event_with_the_same_id() -> None:
    async def main() -> None:
        async with running(falco_cfg(("pipeline.dedup_window_seconds", 0))) as (srv, events):
            learn(srv)
            apply(srv, [hexvec(60, 0, attack="etc"), hexvec(60, 1)])
            first = [e for e in events if e["schema"] == "baseliner.anomaly/v1"]
            assert len(first) == 1 and "falco" not in first[0]
            model_severity = first[0]["severity"]
            # an alert on another container, or far away in time, changes nothing
            await asyncio.to_thread(post, srv.falco.port, alert(T0 + WINDOW * 60 + 5, 1, rule="Write below etc"))
            await asyncio.to_thread(post, srv.falco.port, alert(T0 + WINDOW * 60 + 3600, 0, rule="Write below etc"))
            assert len([e for e in events if e["schema"] == "baseliner.anomaly/v1"]) == 1
            status, body = await asyncio.to_thread(
                post, srv.falco.port, alert(T0 + WINDOW * 60 + 5, 0, rule="Write below etc", priority="Error",
                                            **{"proc.exepath": "/usr/bin/tee", "evt.type": "openat"}))
            assert status == 200 and body["anomalies"] == [first[0]["event_id"]]
            again = [e for e in events if e["schema"] == "baseliner.anomaly/v1"]
            assert len(again) == 2
            up = again[1]
            assert up["event_id"] == first[0]["event_id"] and up["update"] is True
            assert up["severity_model"] == model_severity
            order = ("low", "medium", "high", "critical")
            assert order.index(up["severity"]) == min(order.index(model_severity) + 1, 3)
            assert up["falco"]["rules"] == ["Write below etc"]
            # the same alert again: nothing new to say, nothing rewritten
            await asyncio.to_thread(
                post, srv.falco.port, alert(T0 + WINDOW * 60 + 6, 0, rule="Write below etc", priority="Error"))
            assert len([e for e in events if e["schema"] == "baseliner.anomaly/v1"]) == 2

    asyncio.run(main())


def test_rule_hit_on_learned_behaviour_is_annotated_in_baseline() -> None:
    async def main() -> None:
        async with running(falco_cfg()) as (srv, events):
            # while learning: said so
            apply(srv, [hexvec(0, 0), hexvec(0, 1)])
            _, body = await asyncio.to_thread(post, srv.falco.port, alert(T0, rule="Read sensitive file"))
            assert body["baseline"]["outcome"] == "learning"
            learn(srv)
            # the image reads and writes all day and talks to 5432: a rule on that is a rule on its baseline
            noisy = alert(T0 + WINDOW * 61, rule="Unexpected outbound connection", **{
                "proc.exepath": None, "evt.type": "read", "fd.rport": 5432, "fd.l4proto": "tcp"})
            status, body = await asyncio.to_thread(post, srv.falco.port, noisy)
            assert status == 200 and body["baseline"]["outcome"] == "in_baseline", body
            assert all(i["learned"] for i in body["baseline"]["items"])
            ev = [e for e in events if e["schema"] == "baseliner.falco/v1"][-1]
            assert ev["in_baseline"] is True and ev["baseline"]["state"] == "detecting"
            # a shell is not part of it
            _, body = await asyncio.to_thread(post, srv.falco.port, alert(T0 + WINDOW * 61))
            assert body["baseline"]["outcome"] == "novel"
            # nothing to compare
            _, body = await asyncio.to_thread(post, srv.falco.port, alert(
                T0 + WINDOW * 61, **{"proc.exepath": None, "evt.type": None}))
            assert body["baseline"]["outcome"] == "not_comparable"
            text = await asyncio.to_thread(scrape, srv.metrics_port)
            assert sample(text, "baseliner_falco_correlations_total", outcome="in_baseline",
                          image="nginx:1.27", namespace="default") == 1

    asyncio.run(main())


# -- Falcosidekick ----------------------------------------------------------------------------------


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []
    fail_first = 0

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if _Receiver.fail_first > 0:
            _Receiver.fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        _Receiver.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.received = []
    _Receiver.fail_first = 0
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()
    srv.server_close()


def _wait(pred: Any, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_anomalies_reach_falcosidekick_in_falco_format(receiver: str) -> None:
    async def main() -> None:
        async with running(falco_cfg(("falco.sidekick_url", receiver))) as (srv, _):
            learn(srv)
            _Receiver.fail_first = 1  # one 503 first: retried
            apply(srv, [hexvec(60, 0, attack="shell"), hexvec(60, 1)])
            apply(srv, [hexvec(61, 0, attack="shell"), hexvec(61, 1)])  # a repeat: folded, not sent again
            srv.pipeline.flush_events()
            assert await asyncio.to_thread(_wait, lambda: len(_Receiver.received) >= 1)
            await asyncio.sleep(0.3)
            assert len(_Receiver.received) == 1
            a = _Receiver.received[0]
            assert a["source"] == "baseliner" and a["rule"].startswith("Baseliner anomaly (")
            assert a["priority"] in ("Error", "Critical") and a["hostname"] == "node-1"
            f = a["output_fields"]
            assert f["container.id"] == CID[0] and f["container.image.repository"] == "nginx"
            assert f["k8s.ns.name"] == "default" and f["k8s.pod.name"] == "web-0-pod"
            assert isinstance(f["evt.time"], int) and "new executable /bin/sh" in f["baseliner.novel"]
            assert "/bin/sh" in a["output"]
            # the falco events themselves are never sent back to Falcosidekick
            await asyncio.to_thread(post, srv.falco.port, alert(T0 + WINDOW * 61 + 1))
            # ...but the raised severity is
            assert await asyncio.to_thread(_wait, lambda: len(_Receiver.received) >= 2)
            await asyncio.sleep(0.3)
            assert len(_Receiver.received) == 2
            assert _Receiver.received[1]["priority"] == "Critical"
            assert _Receiver.received[1]["output_fields"]["baseliner.falco_rules"] == ["Terminal shell in container"]
            text = await asyncio.to_thread(scrape, srv.metrics_port)
            assert sample(text, "baseliner_falcosidekick_events_sent_total") == 2
            assert sample(text, "baseliner_falcosidekick_events_failed_total") == 0

    asyncio.run(main())


def test_falcosidekick_unreachable_or_full_is_counted_not_blocking() -> None:
    reg = CollectorRegistry()
    sink = FalcosidekickSink("http://127.0.0.1:9/", reg, timeout=0.5, queue_size=2, retries=(0.01,))
    ev = {"schema": "baseliner.anomaly/v1", "event_id": "e", "severity": "high", "@timestamp": iso8601(T0),
          "kinds": ["rate"], "container": {"id": "c"}, "image": {}}
    t0 = time.monotonic()
    for i in range(50):
        sink.emit({**ev, "event_id": f"e{i}"})
    assert time.monotonic() - t0 < 0.5  # emit never waits for the network
    sink.close()
    failed = reg.get_sample_value("baseliner_falcosidekick_events_failed_total")
    dropped = reg.get_sample_value("baseliner_falcosidekick_events_dropped_total")
    assert failed is not None and dropped is not None
    assert failed >= 1 and dropped >= 40 and failed + dropped == 50


def test_to_falco_maps_severity_to_priority() -> None:
    base = {"kinds": ["rate"], "@timestamp": iso8601(T0), "container": {}, "image": {}}
    assert [to_falco({**base, "severity": s})["priority"] for s in ("low", "medium", "high", "critical")] == [
        "Notice", "Warning", "Error", "Critical"]


class _SecretGate:
    """The gate protocol FalcoEndpoint takes (service/auth.py's FalcoGate implements it for real)."""

    def allowed(self, target: str) -> tuple[bool, str]:
        if target.startswith("/falco/s3cret-s3cret-s3cret"):
            return True, "/falco"
        return False, target

    def ssl_context(self) -> None:
        return None


def test_endpoint_behind_a_gate_needs_the_secret_but_health_stays_open() -> None:
    from baseliner.service.falco_http import FalcoEndpoint

    async def main() -> None:
        async with running(falco_cfg()) as (srv, _):
            gated = FalcoEndpoint(srv.falco.config, srv.falco_correlator, srv.falco.metrics, _SecretGate())
            await gated.start()
            try:
                port = gated.port
                ok = await asyncio.to_thread(post, port, alert(T0), None, "/falco/s3cret-s3cret-s3cret")
                no = await asyncio.to_thread(post, port, alert(T0), None, "/falco/wrong")
                bare = await asyncio.to_thread(post, port, alert(T0))

                def health() -> int:
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    c.request("GET", "/healthz")
                    r = c.getresponse()
                    r.read()
                    c.close()
                    return r.status

                assert ok[0] == 200 and no[0] == 401 and bare[0] == 401
                assert no[1]["error"] == "unauthorized"
                assert await asyncio.to_thread(health) == 200
                text = await asyncio.to_thread(scrape, srv.metrics_port)
                assert sample(text, "baseliner_falco_alerts_rejected_total", reason="unauthorized") == 2
            finally:
                await gated.stop()

    asyncio.run(main())


def test_endpoint_edges_bounded_body_slow_clients_and_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the HTTP server does at its edges: oversized bodies (declared or chunked) are refused unread, a body
    that does not arrive in time gets 408, an idle connection is closed, unknown routes and methods are named."""
    import socket

    from baseliner.service import falco_http
    from baseliner.service.config import FalcoConfig
    from baseliner.service.falco import FalcoCorrelator, FalcoMetrics

    monkeypatch.setattr(falco_http, "BODY_SECONDS", 0.5)
    monkeypatch.setattr(falco_http, "IDLE_SECONDS", 0.5)
    reg = CollectorRegistry()
    cfg = FalcoConfig(listen="127.0.0.1:0", max_body_bytes=1024)
    ep = falco_http.FalcoEndpoint(cfg, FalcoCorrelator(cfg, [], lambda a, k: None), FalcoMetrics(reg))

    def raw(data: bytes, pause: float = 0.0) -> bytes:
        with socket.create_connection(("127.0.0.1", ep.port), timeout=5) as s:
            s.sendall(data)
            if pause:
                time.sleep(pause)
            out = b""
            try:
                while chunk := s.recv(65536):
                    out += chunk
            except OSError:
                pass
            return out

    def requests() -> dict[str, bytes]:
        return {
            "declared": raw(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\n" + b"{" * 100),
            "chunked": raw(b"POST /falco HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                           + b"800\r\n" + b" " * 2048 + b"\r\n0\r\n\r\n"),
            "slow": raw(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"),
            "idle": raw(b""),
            "head": raw(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            "post_health": raw(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
            "unknown": raw(b"POST /elsewhere HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"),
            "garbage": raw(b"\x16\x03\x01 not http\r\n\r\n"),
        }

    async def main() -> dict[str, bytes]:
        await ep.start()
        try:
            return await asyncio.to_thread(requests)
        finally:
            await ep.stop()

    t0 = time.monotonic()
    out = asyncio.run(main())
    assert time.monotonic() - t0 < 10  # every connection above ended by the server, none waited for a client timeout
    assert out["declared"].startswith(b"HTTP/1.1 413") and b'"error":"too_large"' in out["declared"]
    assert out["chunked"].startswith(b"HTTP/1.1 413") and b'"error":"too_large"' in out["chunked"]
    assert out["slow"].startswith(b"HTTP/1.1 408") and b'"error":"timeout"' in out["slow"]
    assert out["idle"] == b""
    assert out["head"].startswith(b"HTTP/1.1 200") and not out["head"].endswith(b"}")
    assert out["post_health"].startswith(b"HTTP/1.1 405")
    assert out["unknown"].startswith(b"HTTP/1.1 404") and b'"error":"not_found"' in out["unknown"]
    assert out["garbage"].split(b"\r\n")[0].endswith(b" 400 Bad Request")  # aiohttp's own answer
    assert reg.get_sample_value("baseliner_falco_alerts_rejected_total", {"reason": "too_large"}) == 2
    assert reg.get_sample_value("baseliner_falco_alerts_rejected_total", {"reason": "timeout"}) == 1


def test_correlator_forgets_the_least_recently_seen_container_first() -> None:
    from baseliner.service.config import FalcoConfig
    from baseliner.service.falco import FalcoCorrelator

    cfg = FalcoConfig(max_containers=2)
    sink: list[dict[str, Any]] = []

    class Sink:
        emit, flush, close = sink.append, lambda: None, lambda: None

    c = FalcoCorrelator(cfg, [Sink()], lambda a, k: None)
    ids = ["aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc"]
    for cid in (ids[0], ids[1], ids[0], ids[2]):  # a seen again after b: b is the least recently seen when c comes
        c.on_alert(parse_alert(json.dumps(alert(T0, **{"container.id": cid})).encode()))

    def anomaly(cid: str) -> dict[str, Any]:
        ev = {"schema": "baseliner.anomaly/v1", "event_id": cid, "severity": "medium", "container": {"id": cid},
              "image": {"key": "nginx:1.27"}, "first_seen": iso8601(T0), "last_seen": iso8601(T0)}
        c.emit(ev)
        return ev

    assert anomaly(ids[0]).get("falco") and anomaly(ids[2]).get("falco")  # their alerts are remembered
    assert "falco" not in anomaly(ids[1])  # forgotten: nothing to correlate with
