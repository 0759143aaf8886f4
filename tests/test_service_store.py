"""State at rest: atomic, versioned, integrity-checked files; persistence across restarts (in-process and
with `baseliner serve` as a real subprocess)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from baseliner.models import integrity
from baseliner.models.baseline import ImageBaseline
from baseliner.models.block import VectorBlock
from baseliner.models.errors import StateError, StateVersionError
from baseliner.protos.v1 import admin_pb2, admin_pb2_grpc, ingest_pb2, ingest_pb2_grpc
from baseliner.service import store
from baseliner.service.pipeline import Pipeline

sys.path.insert(0, os.path.dirname(__file__))
from service_fixtures import (  # noqa: E402
    batch_request,
    config,
    exchange,
    hello,
    learn_batches,
    running,
    vector,
)

KEY = "nginx:1.27"
REPO = Path(__file__).resolve().parents[1]


def _learnt_pipeline() -> Pipeline:
    p = Pipeline(baseline_config=config().baseline_config())
    vs = [vector(i, c) for i in range(60) for c in range(2)]
    r = p.apply_block("s1", 1, VectorBlock.from_vectors(vs))
    assert r.applied == 120
    return p


def test_file_roundtrip_and_every_refusal(tmp_path: Path) -> None:
    meta, arrays = {"a": 1}, {"x": np.arange(5.0)}
    for key in (None, b"k" * 32):
        data = store.encode_file("baseline", "k", meta, arrays, key)
        header, m, a = store.decode_file(data, key, "f")
        assert header["format"] == store.FORMAT_VERSION and m == meta and np.array_equal(a["x"], arrays["x"])
    data = store.encode_file("baseline", "k", meta, arrays, b"secret")
    # tampered payload (one byte flipped), tampered header, wrong key, missing key, downgrade to sha256
    flipped = bytearray(data)
    flipped[-10] ^= 1
    with pytest.raises(StateError, match="tampered with or corrupt"):
        store.decode_file(bytes(flipped), b"secret", "f")
    with pytest.raises(StateError, match="tampered"):
        store.decode_file(data.replace(b'"kind":"baseline"', b'"kind":"baselinf"'), b"secret", "f")
    with pytest.raises(StateError, match="HMAC mismatch"):
        store.decode_file(data, b"other", "f")
    with pytest.raises(StateError, match="no state key is configured"):
        store.decode_file(data, None, "f")
    plain = store.encode_file("baseline", "k", meta, arrays, None)
    with pytest.raises(StateError, match="carries no HMAC"):
        store.decode_file(plain, b"secret", "f")
    corrupt = bytearray(plain)
    corrupt[len(corrupt) // 2] ^= 0xFF
    with pytest.raises(StateError, match="corrupt \\(checksum mismatch\\)"):
        store.decode_file(bytes(corrupt), None, "f")
    with pytest.raises(StateError, match="bad magic"):
        store.decode_file(b"\x80\x04\x95pickle", None, "f")
    with pytest.raises(StateError, match="truncated"):
        store.decode_file(plain[:20], None, "f")
    # a newer format version is refused with a clear message (a valid tag, so the version check is reached)
    newer = store.encode_file("baseline", "k", meta, arrays, None)
    head_end = newer.index(b"\n", len(store.MAGIC)) + 1
    body = newer[head_end:]
    hdr, payload = body.split(b"\n", 1)
    hdr2 = hdr.replace(b'"format":1', b'"format":99')
    algo, tag = integrity.tag(None, hdr2, payload)
    forged = store.MAGIC + f"{algo} {tag}\n".encode() + hdr2 + b"\n" + payload
    with pytest.raises(StateVersionError, match="newer Baseliner"):
        store.decode_file(forged, None, "f")
    hdr0 = hdr.replace(b'"format":1', b'"format":0')
    algo, tag = integrity.tag(None, hdr0, payload)
    with pytest.raises(StateVersionError, match="version 0 was written by an older Baseliner"):
        store.decode_file(store.MAGIC + f"{algo} {tag}\n".encode() + hdr0 + b"\n" + payload, None, "f")
    # pickled object arrays are never loaded
    obj = store.encode_file("baseline", "k", meta, {"x": np.arange(3.0)}, None)
    assert b"pickle" not in obj


def test_pipeline_state_roundtrip_and_bad_baseline_state(tmp_path: Path) -> None:
    p = _learnt_pipeline()
    s = store.StateStore(tmp_path, b"key")
    s.write(store.StateStore.snapshot(p, everything=True))
    assert p.memory_sizes[KEY] > 0
    q = Pipeline(baseline_config=config().baseline_config())
    assert s.restore(q) == 1
    a, b = p.baselines[KEY], q.baselines[KEY]
    assert (a.windows_learned, a.state, a.threshold) == (b.windows_learned, b.state, b.threshold)
    assert a.novelty_sets() == b.novelty_sets()
    assert q.last_sequence("s1") == 1
    # same input -> same verdicts from the original and the restored baseline
    probe = [vector(500, 0, attack="shell"), vector(501, 1)]
    va, vb = a.process(probe), b.process([vector(500, 0, attack="shell"), vector(501, 1)])
    assert [(x.score, x.anomalous) for x in va] == [(y.score, y.anomalous) for y in vb]

    # a baseline file of an unknown baseline state version: refused, naming the file
    meta, arrays = a.to_state()
    meta["state_version"] = ImageBaseline.STATE_VERSION + 1
    path = s.baselines_dir / store.baseline_filename(KEY)
    path.write_bytes(store.encode_file("baseline", KEY, meta, arrays, b"key"))
    with pytest.raises(StateVersionError, match=str(path)):
        s.restore(Pipeline())
    # a renamed file (key and file name disagree) is refused
    path.unlink()
    other = s.baselines_dir / store.baseline_filename("redis:7")
    other.write_bytes(store.encode_file("baseline", KEY, *a.to_state(), b"key"))
    with pytest.raises(StateError, match="does not match"):
        s.restore(Pipeline())


def test_atomic_write_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "x.state"
    store.atomic_write(target, b"one")

    class Boom(bytes):
        pass

    with pytest.raises(TypeError):
        store.atomic_write(target, object())  # type: ignore[arg-type]
    assert target.read_bytes() == b"one"
    assert [p.name for p in tmp_path.iterdir()] == ["x.state"]


def test_state_survives_a_restart_and_resends_are_still_duplicates(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(config(tmp_path)) as (srv, _):
            resps = await exchange(srv.port, [hello("s1"), *learn_batches(6)])
            assert resps[-1].ack.sequence == 6
            ch = grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}")
            stub = admin_pb2_grpc.AdminStub(ch)
            await stub.SetMode(admin_pb2.SetModeRequest(key=KEY, mode=admin_pb2.MODE_DETECT))
            before = await stub.GetBaseline(admin_pb2.GetBaselineRequest(key=KEY))
            await ch.close()
        # graceful stop wrote everything
        assert (tmp_path / "service.state").exists()
        assert list((tmp_path / "baselines").glob("*.state"))
        async with running(config(tmp_path)) as (srv, _):
            ch = grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}")
            stub = admin_pb2_grpc.AdminStub(ch)
            after = await stub.GetBaseline(admin_pb2.GetBaselineRequest(key=KEY))
            await ch.close()
            for field in ("windows_learned", "windows_scored", "state", "mode", "threshold", "first_window"):
                assert getattr(after, field) == getattr(before, field), field
            assert list(after.executables) == list(before.executables)
            assert after.serialized_bytes > 0
            resps = await exchange(srv.port, [hello("s1"), *learn_batches(6)[4:], batch_request([vector(60, 0)], 7)])
            assert resps[0].welcome.last_sequence == 6
            assert [r.ack.duplicate for r in resps[1:]] == [True, True, False]
            # windows the container already sent are out of order now, not learnt twice
            resps = await exchange(srv.port, [hello("s9"), batch_request([vector(59, 0)], 1)])
            assert resps[1].ack.rejected[0].reason == ingest_pb2.REJECT_REASON_OUT_OF_ORDER

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_serving(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"baseliner serve exited early: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                admin_pb2_grpc.AdminStub(ch).ListBaselines(admin_pb2.ListBaselinesRequest(), timeout=1)
            return
        except grpc.RpcError:
            time.sleep(0.2)
    raise AssertionError("baseliner serve did not come up")


def _serve(state: Path, port: int, mport: int, events: Path, key_file: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BASELINER_STATE_HMAC_KEY_FILE": str(key_file), "BASELINER_BASELINE_MIN_LEARN_SECONDS": "0"}
    return subprocess.Popen(
        [sys.executable, "-m", "baseliner.service.cli", "serve", "--listen", f"127.0.0.1:{port}",
         "--metrics-listen", f"127.0.0.1:{mport}", "--state-dir", str(state), "--events", str(events),
         "--set", "baseline.min_learn_windows=20"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def _stream_sync(port: int, requests: list) -> list:  # type: ignore[type-arg]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        return list(ingest_pb2_grpc.IngestStub(ch).Stream(iter(requests), timeout=30))


@pytest.mark.slow
def test_baseliner_serve_subprocess_persists_across_sigterm_restart_and_refuses_tampered_state(tmp_path: Path) -> None:
    state, events = tmp_path / "state", tmp_path / "events.jsonl"
    key_file = tmp_path / "key"
    key_file.write_text("0123456789abcdef0123456789abcdef\n")
    port, mport = _free_port(), _free_port()
    proc = _serve(state, port, mport, events, key_file)
    try:
        _wait_serving(port, proc)
        resps = _stream_sync(port, [hello("s1"), *learn_batches(6),
                                    batch_request([vector(60, 0, attack="shell"), vector(60, 1)], 7)])
        assert [r.ack.sequence for r in resps[1:]] == [1, 2, 3, 4, 5, 6, 7]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    assert len(lines) == 1 and "novel_executable" in lines[0]["kinds"] and lines[0]["@timestamp"].endswith("Z")

    proc = _serve(state, port, mport, events, key_file)
    try:
        _wait_serving(port, proc)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            b = admin_pb2_grpc.AdminStub(ch).GetBaseline(admin_pb2.GetBaselineRequest(key=KEY), timeout=5)
        assert b.windows_learned == 121 and b.state == admin_pb2.STATE_DETECTING
        resps = _stream_sync(port, [hello("s1")])
        assert resps[0].welcome.last_sequence == 7
        # the admin CLI against the running service
        cli = subprocess.run([sys.executable, "-m", "baseliner.service.cli", "admin", "--target", f"127.0.0.1:{port}",
                              "list"],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0 and KEY in cli.stdout and "detecting" in cli.stdout
        cli = subprocess.run([sys.executable, "-m", "baseliner.service.cli", "admin", "--target", f"127.0.0.1:{port}",
                              "feedback", lines[0]["event_id"]], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert cli.returncode == 1 and "NOT_FOUND" in cli.stderr  # events are not kept across restarts
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0

    # tamper with a baseline: the service refuses to start and says which file and why
    f = next((state / "baselines").glob("*.state"))
    data = bytearray(f.read_bytes())
    data[-5] ^= 1
    f.write_bytes(bytes(data))
    proc = _serve(state, port, mport, events, key_file)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "tampered with or corrupt" in err.decode() and f.name in err.decode()
