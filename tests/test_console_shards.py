"""The console at one shard of two real ``baseliner serve`` shards on loopback: its Fleet lists both shards'
images, its Image page shows an image the other shard holds, and an action taken there reaches that shard.

Credentials as in production: operator and viewer tokens (the console's logins, passed on to the holder), a
sensor token, and the shards' peer token.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import re
import zlib
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import grpc
from baseliner.protos.v1 import admin_pb2, admin_pb2_grpc, shards_pb2, shards_pb2_grpc
from baseliner.sensor.record import record
from baseliner.sensor.synthetic import AttackSpec, ScenarioConfig, SyntheticSource
from baseliner.service.console.sessions import COOKIE

from tests.reliability_procs import free_port
from tests.shard_procs import Shard, sensor, shard_list, wait_for

OPERATOR = "operator-token-0123456789abcdef"
VIEWER = "viewer-token-0123456789abcdef"
SENSOR = "sensor-token-0123456789abcdef"
PEER = "peer-token-0123456789abcdef0123"


class Visitor:
    """A console visitor over plain HTTP/1.1 that keeps its session cookie by hand (a Secure cookie)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookie = ""

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"Cookie": f"{COOKIE}={self.cookie}"} if self.cookie else {}
        body = None
        if form is not None:
            body = urlencode(form)
            headers |= {"Content-Type": "application/x-www-form-urlencoded", "Origin": f"http://127.0.0.1:{self.port}"}
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        out = r.status, r.read().decode(), r.headers
        conn.close()
        return out

    def login(self, token: str) -> None:
        status, _, headers = self.request("POST", "/login", {"token": token, "next": "/"})
        assert status == 303, status
        self.cookie = re.search(rf"{COOKIE}=([^;]+)", headers["Set-Cookie"]).group(1)  # type: ignore[union-attr]

    def page(self, path: str, **params: str) -> str:
        status, html, _ = self.request("GET", path + (f"?{urlencode(params)}" if params else ""))
        assert status == 200, (status, html[-2000:])
        return unescape(html)

    def act(self, action: str, target: str, value: str = "") -> tuple[int, str, Any]:
        html = self.page("/confirm", action=action, target=target, value=value)
        csrf = re.search(r'name="csrf" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
        return self.request("POST", "/act", {"csrf": csrf, "action": action, "target": target, "value": value})


def one_node_recording(path: Path) -> Path:
    """An hour of one node, its image repositories split four ways by container (a dozen images: both shards
    hold some), with three attacks in its second half (anomalies with novel items)."""
    attacks = (AttackSpec("reverse_shell", "web", 1, 0.6, 4), AttackSpec("etc_write", "worker", 1, 0.7, 0.5),
               AttackSpec("port_scan", "worker", 0, 0.8, 3))
    windows = []
    for window in SyntheticSource(ScenarioConfig(seed=7, hours=1.0, nodes=("node-1",), attacks=attacks)):
        split = []
        for v in window:
            k = zlib.crc32(v.identity.container_id.encode()) % 4
            split.append(dataclasses.replace(v, identity=dataclasses.replace(
                v.identity, image_repository=f"{v.identity.image_repository}-{k}")))
        windows.append(split)
    record(windows, str(path))
    return path


def _auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def settled(target: str) -> bool:
    with grpc.insecure_channel(target) as ch:
        try:
            st = shards_pb2_grpc.ShardsStub(ch).Status(shards_pb2.StatusRequest(), metadata=_auth(PEER), timeout=5)
        except grpc.RpcError:
            return False
    return bool(st.settled and st.epoch >= 1)


def admin(target: str, method: str, request: Any) -> Any:
    with grpc.insecure_channel(target) as ch:
        return getattr(admin_pb2_grpc.AdminStub(ch), method)(request, metadata=_auth(OPERATOR), timeout=30)


def test_console_at_one_shard_shows_and_acts_on_an_image_the_other_shard_holds(tmp_path: Path) -> None:
    recording = one_node_recording(tmp_path / "node-1.jsonl")
    (tmp_path / "ops.tokens").write_text(f"olga {OPERATOR}\n")
    (tmp_path / "views.tokens").write_text(f"vic {VIEWER}\n")
    (tmp_path / "sensor.tokens").write_text(f"node-1 replay {SENSOR}\n")
    (tmp_path / "sensor.token").write_text(SENSOR + "\n")
    (tmp_path / "peer.token").write_text(PEER + "\n")
    ports = {"a": free_port(), "b": free_port()}
    consoles = {"a": free_port(), "b": free_port()}
    list_file = tmp_path / "shards.list"
    list_file.write_text(shard_list(ports))
    common = ["--set", f"grpc.admin_tokens_file={tmp_path / 'ops.tokens'}",
              "--set", f"grpc.viewer_tokens_file={tmp_path / 'views.tokens'}",
              "--set", f"grpc.sensor_tokens_file={tmp_path / 'sensor.tokens'}",
              "--set", f"shards.peer_token_file={tmp_path / 'peer.token'}",
              # detecting within the hour (the attacks are flagged)
              "--set", "baseline.min_learn_windows=10", "--set", "baseline.min_learn_seconds=0",
              "--set", "baseline.stable_confidence=0", "--set", "baseline.startup_seconds=0",
              "--set", "baseline.novelty_min_containers=1", "--set", "pipeline.dedup_window_seconds=0"]
    shards = {n: Shard(tmp_path, n, ports[n], list_file, [*common, "--set", f"console.listen=127.0.0.1:{consoles[n]}"])
              for n in ports}
    try:
        for s in shards.values():
            s.start()
        wait_for(lambda: all(settled(s.target) for s in shards.values()), 60, "the shards agree on a map")
        feed = sensor(shards["a"].target, recording, "node-1", tmp_path / "sensor.log",
                      ["--token-file", str(tmp_path / "sensor.token"), "--max-in-flight", "1"])
        assert feed.wait(300) == 0, (tmp_path / "sensor.log").read_text()[-3000:]

        listing = admin(shards["a"].target, "ListBaselines", admin_pb2.ListBaselinesRequest())
        holders = {b.key: b.shard for b in listing.baselines}
        assert set(holders.values()) == {"a", "b"}, holders
        here = sorted(k for k, s in holders.items() if s == "a")
        there = sorted(k for k, s in holders.items() if s == "b")

        visitor = Visitor(consoles["a"])
        visitor.login(OPERATOR)
        fleet = visitor.page("/")
        assert f"{len(holders)} images" in fleet
        for key in holders:  # every shard's images
            assert f">{key}</a>" in fleet
        assert f"{len(here)} held by this shard, <strong>a</strong>" in " ".join(fleet.split())
        assert fleet.count("held by shard <strong>b</strong>") == len(there)

        key = there[0]  # the Image page of an image shard b holds, at shard a's console
        want = admin(shards["b"].target, "GetBaseline", admin_pb2.GetBaselineRequest(key=key))
        page = " ".join(visitor.page("/image", key=key).split())
        assert "Held by shard <strong>b</strong>" in page
        assert f'<dd id="windows-learnt">{want.windows_learned:,}</dd>' in page
        assert want.windows_learned > 0
        for exe in want.executables:
            assert f"<code>{exe}</code>" in page
        assert "Held by this shard, <strong>a</strong>" in " ".join(visitor.page("/image", key=here[0]).split())
        assert "is held by shard <strong>b</strong>" in visitor.page("/anomalies", image=key)

        status, html, headers = visitor.act("mode", key, "freeze")  # acted on at a, done by b
        assert status == 303, html[-2000:]
        got = admin(shards["b"].target, "GetBaseline", admin_pb2.GetBaselineRequest(key=key))
        assert got.mode == admin_pb2.MODE_FREEZE and got.state == admin_pb2.STATE_FROZEN
        assert "(held by shard b)" in visitor.page(headers["Location"])  # the flash message
        assert re.search(rf"who=olga role=operator action=mode target=image:{re.escape(key)} result=ok .*"
                         r"mode=freeze shard=b", shards["a"].log())
        # "accept into the baseline" of an anomaly shard b holds, posted at shard a's console, is done by b
        flagged = [json.loads(line) for line in (tmp_path / "events-b.jsonl").read_text().splitlines()]
        event = next(e for e in flagged if e.get("novel") and e["image"]["key"] != key)
        csrf = re.search(r'name="csrf" value="([^"]+)"', visitor.page("/")).group(1)  # type: ignore[union-attr]
        status, html, _ = visitor.request("POST", "/act", {"csrf": csrf, "action": "feedback",
                                                            "target": event["event_id"], "value": ""})
        assert status == 303, html[-2000:]
        learnt = admin(shards["b"].target, "GetBaseline", admin_pb2.GetBaselineRequest(key=event["image"]["key"]))
        sets = {"executable": learnt.executables, "port": learnt.remote_ports, "syscall": learnt.syscalls,
                "sensitive_path": learnt.sensitive_paths}
        assert all(n["value"] in sets[n["kind"]] for n in event["novel"]), (event["novel"], learnt)
        assert re.search(rf"action=feedback target=event:{event['event_id']} result=ok .*image=\S+ shard=b accepted=",
                         shards["a"].log())

        status, html, _ = visitor.act("reset", key)
        assert status == 303, html[-2000:]
        got = admin(shards["b"].target, "GetBaseline", admin_pb2.GetBaselineRequest(key=key))
        assert got.windows_learned == 0 and got.mode == admin_pb2.MODE_FREEZE

        viewer = Visitor(consoles["a"])  # a viewer sees the other shard's image and may not act on it
        viewer.login(VIEWER)
        assert "Held by shard <strong>b</strong>" in viewer.page("/image", key=key)
        status, _, _ = viewer.request("GET", "/confirm?" + urlencode({"action": "mode", "target": key,
                                                                     "value": "auto"}))
        assert status == 403
        got = admin(shards["b"].target, "GetBaseline", admin_pb2.GetBaselineRequest(key=key))
        assert got.mode == admin_pb2.MODE_FREEZE
    finally:
        for s in shards.values():
            s.stop()
