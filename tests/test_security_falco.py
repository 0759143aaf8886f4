"""The Falco endpoint against someone who is not Falco (issue 19, hole 3): it tells nobody what a baseline has
learned, refuses a poster without the secret from the request line alone (the body is never read, no
``100 Continue`` is sent), and bounds bodies and connections.  A real ``baseliner serve`` process, raw sockets."""

from __future__ import annotations

import http.client
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.reliability_procs import ServeProcess, free_port
from tests.service_fixtures import T0, WINDOW, batch_request, hello, sample, scrape
from tests.test_service_falco import CID, alert, hexvec

SECRET = "falco-secret-0123456789abcdef"


def post(port: int, body: dict[str, Any], path: str = f"/falco/{SECRET}") -> tuple[int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        data = json.dumps(body).encode()
        c.request("POST", path, data, {"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def raw(port: int, data: bytes, wait: float = 2.0) -> bytes:
    """What the endpoint answers to ``data`` sent as is, until it closes or ``wait`` seconds pass in silence."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, OSError):
            pass
        return out


@pytest.fixture()
def serve(tmp_path: Path) -> Any:
    (tmp_path / "falco.secret").write_text(SECRET + "\n")
    proc = ServeProcess(tmp_path / "state", extra=[
        "--set", f"falco.listen=127.0.0.1:{free_port()}", "--set", f"falco.secret_file={tmp_path / 'falco.secret'}",
        "--set", "falco.max_connections=4", "--set", "falco.max_body_bytes=4096",
        "--events", str(tmp_path / "events.jsonl"), "--metrics-listen", f"127.0.0.1:{free_port()}",
        "--set", "baseline.min_learn_windows=20", "--set", "baseline.min_learn_seconds=0",
        "--set", "baseline.stable_confidence=0"]).start()
    proc.falco = int(next(a for a in proc.extra if a.startswith("falco.listen=")).rsplit(":", 1)[1])
    proc.metrics = int(proc.extra[proc.extra.index("--metrics-listen") + 1].rsplit(":", 1)[1])
    proc.events = tmp_path / "events.jsonl"
    yield proc
    proc.stop()


def _learn(target: str) -> None:
    """A learnt nginx baseline whose containers exec /usr/sbin/nginx now and then (a real sensor's stream)."""
    import asyncio

    from tests.test_security_identity import stream

    batches = []
    for b in range(8):
        vs = [hexvec(10 * b + k, c) for k in range(10) for c in range(2)]
        for v in vs[:4]:
            v.executables = ["/usr/sbin/nginx"]
        batches.append(batch_request(vs, b + 1))
    asyncio.run(stream(target, [hello("node-1/bpf"), *batches]))


def test_the_answer_says_nothing_about_what_a_baseline_learned(serve: Any) -> None:
    _learn(serve.target)
    t = T0 + WINDOW * 100
    learned = alert(t, **{"proc.exepath": "/usr/sbin/nginx", "evt.type": "read"})
    novel = alert(t, **{"proc.exepath": "/tmp/x", "evt.type": "read"})
    port = alert(t, **{"proc.exepath": None, "evt.type": "read", "fd.rport": 5432, "fd.l4proto": "tcp"})
    answers = [post(serve.falco, a) for a in (learned, novel, port)]
    # the same bytes whatever the baseline holds: no oracle of which binaries and ports evade the exact tier
    assert answers == [(200, b'{"accepted":true}')] * 3
    assert serve.stop() == 0  # (events are flushed with the next batch, or at the end)
    events = [json.loads(x) for x in serve.events.read_text().splitlines()]
    falco = [e for e in events if e["schema"] == "baseliner.falco/v1"]
    assert [e["baseline"]["outcome"] for e in falco] == ["in_baseline", "novel", "in_baseline"]
    assert falco[0]["container"]["id"] == CID[0][:12]


def test_a_poster_without_the_secret_is_refused_before_its_body_is_read(serve: Any) -> None:
    port = serve.falco
    # a declared gigabyte, never sent: the answer comes at once, and the connection closes
    t0 = time.monotonic()
    out = raw(port, b"POST /falco/wrong-secret HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 401") and b'"error":"unauthorized"' in out and b"Connection: close" in out
    assert time.monotonic() - t0 < 1.9  # closed by the server, not by the client's wait
    # Expect: 100-continue is not answered with 100 Continue for a refused request line
    out = raw(port, b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 50000\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 401") and b"100 Continue" not in out
    # ... nor for one declaring a body over the limit, even from Falco
    out = raw(port, f"POST /falco/{SECRET} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                    "Content-Length: 50000\r\n\r\n".encode())
    assert out.startswith(b"HTTP/1.1 413")
    small = json.dumps(alert(T0)).encode()
    out = raw(port, f"POST /falco/{SECRET} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nConnection: close\r\n"
                    f"Content-Length: {len(small)}\r\n\r\n".encode() + small)
    assert out.startswith(b"HTTP/1.1 100 Continue") and b"HTTP/1.1 200" in out
    metrics = scrape(serve.metrics)
    assert sample(metrics, "baseliner_falco_alerts_rejected_total", reason="unauthorized") == 2
    assert sample(metrics, "baseliner_falco_alerts_rejected_total", reason="too_large") == 1


def test_connections_are_capped(serve: Any) -> None:
    port = serve.falco
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(4)]
    try:
        time.sleep(0.3)
        out = raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 503") and b'"error":"connections"' in out
    finally:
        for s in idle:
            s.close()
    time.sleep(0.3)
    assert post(port, alert(T0))[0] == 200  # room again once they are gone
    assert sample(scrape(serve.metrics), "baseliner_falco_alerts_rejected_total", reason="connections") == 1
