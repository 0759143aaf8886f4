"""Recordings (models/recording.py), replay, and the ``baseliner sensor`` command end to end."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from baseliner.models.recording import RecordingError, RecordingReader, RecordingWriter
from baseliner.protos.v1 import admin_pb2, admin_pb2_grpc
from baseliner.sensor.replay import ReplaySource
from baseliner.sensor.synthetic import AttackSpec, ScenarioConfig, SyntheticSource
from baseliner.service.cli import main

BIN = Path(sys.executable).parent / "baseliner"


def _source() -> SyntheticSource:
    return SyntheticSource(ScenarioConfig(hours=0.3, attacks=(AttackSpec("reverse_shell", "web", 0, 0.1, 2),)))


@pytest.mark.parametrize("name", ["rec.jsonl", "rec.jsonl.gz"])
def test_record_then_replay_gives_the_same_windows(tmp_path: Path, name: str) -> None:
    src = _source()
    windows = list(src)
    path = tmp_path / name
    with RecordingWriter(path, {"source": "synthetic", "attacks": [a.to_dict() for a in src.attacks]}) as w:
        for window in windows:
            w.write(window)
    if name.endswith(".gz"):
        with gzip.open(path, "rt") as f:
            assert json.loads(f.readline())["format"] == "baseliner-vectors"
    replay = ReplaySource(path)
    assert list(replay) == windows
    assert replay.attacks[0]["kind"] == "reverse_shell"
    assert replay.attacks[0]["container_id"] == src.attacks[0].container_id
    assert replay.bad_lines == 0


def test_bad_lines_are_reported_skipped_and_counted(tmp_path: Path) -> None:
    src = _source()
    window = next(iter(src))
    path = tmp_path / "rec.jsonl"
    with RecordingWriter(path) as w:
        w.write(window[:2])
    lines = path.read_text().splitlines()
    lines.insert(2, '{"identity": {"node": "n"}, "window_start": 1}')  # missing fields: TypeError inside
    lines.insert(3, "not json")
    lines.insert(4, json.dumps({"window_start": 1.0, "window_seconds": 1.0, "colour": "red"}))
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordingError, match="line 3"):
        list(RecordingReader(path).vectors())
    r = RecordingReader(path, skip_bad=True)
    assert list(r.vectors()) == window[:2]
    assert r.bad_lines == 3


def test_foreign_or_newer_recordings_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "x.jsonl"
    p.write_text(json.dumps({"format": "baseliner-vectors", "version": 99}) + "\n")
    with pytest.raises(RecordingError, match="version 99"):
        RecordingReader(p)
    p.write_text(json.dumps({"format": "something-else"}) + "\n")
    with pytest.raises(RecordingError, match="not a Baseliner recording"):
        RecordingReader(p)


def test_headerless_recording_is_read(tmp_path: Path) -> None:
    window = next(iter(_source()))
    p = tmp_path / "rec.jsonl"
    with RecordingWriter(p) as w:
        w.write(window)
    p.write_text("\n".join(p.read_text().splitlines()[1:]) + "\n")
    assert list(RecordingReader(p).vectors()) == window


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_record_then_replay_into_a_running_service(tmp_path: Path) -> None:
    out = tmp_path / "cluster.jsonl.gz"
    labels = tmp_path / "labels.json"
    assert main(["sensor", "record", "--out", str(out), "--hours", "4", "--attacks-after", "0",
                 "--node", "node-9", "--labels", str(labels)]) == 0
    header = RecordingReader(out).header
    assert header["source"] == "synthetic" and len(header["attacks"]) == 5
    assert json.loads(labels.read_text()) == header["attacks"]
    n = sum(1 for _ in RecordingReader(out).vectors())
    assert n == 4 * 360 * 8

    port = _free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    serve = subprocess.Popen([str(BIN), "serve", "--listen", f"127.0.0.1:{port}", "--metrics-listen", "",
                              "--events", "none"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        sensor = subprocess.run(
            [str(BIN), "sensor", "--source", "replay", str(out), "--target", f"127.0.0.1:{port}",
             "--node", "node-9", "--batch-size", "100", "--ack-timeout", "10"],
            env=env, capture_output=True, text=True, timeout=120,
        )
        assert sensor.returncode == 0, sensor.stderr[-2000:]
        assert f"{n} vectors applied, 0 rejected, 0 dropped" in sensor.stderr

        async def scored() -> int:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                resp = await admin_pb2_grpc.AdminStub(ch).ListBaselines(admin_pb2.ListBaselinesRequest())
                return sum(b.windows_scored for b in resp.baselines)

        import asyncio

        assert asyncio.run(scored()) == n
    finally:
        serve.terminate()
        serve.wait(timeout=30)


def test_cli_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sensor", "--source", "replay"]) == 2
    assert "needs a FILE" in capsys.readouterr().err
    assert main(["sensor", "--source", "kafka"]) == 2
    assert "must be one of" in capsys.readouterr().err
    assert main(["sensor", "record"]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["sensor", "record", "--out", str(tmp_path / "x"), "--hours", "2"]) == 2
    assert "ends after the scenario" in capsys.readouterr().err
    assert main(["sensor", "--token-file", str(tmp_path / "no-token")]) == 2
    assert "--token-file" in capsys.readouterr().err
    assert main(["sensor", "--tls-cert", str(tmp_path / "c.crt")]) == 2
    assert f"argument --tls-cert: '{tmp_path / 'c.crt'}' is not a readable file" in capsys.readouterr().err
    t0 = time.monotonic()
    assert main(["sensor", "--source", "replay", str(tmp_path / "missing.jsonl")]) == 2
    assert time.monotonic() - t0 < 5


def test_sigterm_sends_what_is_buffered_then_exits(tmp_path: Path) -> None:
    import signal

    port = _free_port()
    serve = subprocess.Popen([str(BIN), "serve", "--listen", f"127.0.0.1:{port}", "--metrics-listen", "",
                              "--events", "none"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        sensor = subprocess.Popen(
            [str(BIN), "sensor", "--source", "synthetic", "--target", f"127.0.0.1:{port}", "--node", "n1",
             "--speed", "600"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(4)
        sensor.send_signal(signal.SIGTERM)
        _, err = sensor.communicate(timeout=60)
        assert sensor.returncode == 0, err[-2000:]
        assert "signal received" in err
        import re

        m = re.search(r"(\d+) vectors applied, 0 rejected, 0 dropped", err)
        assert m and int(m.group(1)) > 0

        async def scored() -> int:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                resp = await admin_pb2_grpc.AdminStub(ch).ListBaselines(admin_pb2.ListBaselinesRequest())
                return sum(b.windows_scored for b in resp.baselines)

        import asyncio

        # a reconnect under load can lose an ack: that batch's windows are counted as applied before
        before = re.search(r"(\d+) vectors in batches applied before their ack was lost", err)
        assert before is not None
        assert asyncio.run(scored()) == int(m.group(1)) + int(before.group(1))
    finally:
        serve.terminate()
        serve.wait(timeout=30)
