"""The sensor's on-disk spool: unit behaviour, refusal of tampered files, and ``kill -9`` of a real sensor.

The process test: a sensor streams part A of a synthetic scenario into a spool while the service is
killed (``kill -9``); then the sensor itself is killed with batches unacknowledged; the service restarts
from its checkpoint and log; a new sensor process on the same spool and sensor id resends what the spool
holds, in order, then part B.  The service must end up with exactly A + B windows: nothing lost, nothing
learned twice (resends of batches applied before the kill are recognised by sequence number).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from baseliner.models.errors import StateError
from baseliner.models.integrity import Keyring
from baseliner.sensor.spool import DiskSpool, SpoolError

from tests.reliability_procs import REPO, ServeProcess, windows_scored

KEY = b"spool-key-0123456789abcdef0123456789"
KEYS = Keyring.of(KEY)


def test_spool_survives_reopen_in_order_with_counter(tmp_path: Path) -> None:
    s = DiskSpool(tmp_path, KEYS, fsync=False)
    for i in range(5):
        s.add(bytes([i]) * 10, i + 1, [f"img{i}"])
    assert s.release(2) is not None
    s.close()
    s2 = DiskSpool(tmp_path, KEYS)
    assert [(p.sequence, p.body[:1], p.vectors, p.keys) for p in s2.entries()] == [
        (1, b"\0", 1, ("img0",)), (3, b"\2", 3, ("img2",)), (4, b"\3", 4, ("img3",)), (5, b"\4", 5, ("img4",))]
    assert s2.holds("img3") and not s2.holds("img1")
    assert [p.sequence for p in s2.release_through(4)] == [1, 3, 4]
    s2.release(5)
    assert s2.batches == 0
    # the counter survives an empty spool: numbering never goes back
    assert DiskSpool(tmp_path, KEYS).add(b"x", 1)[0].sequence == 6


def test_spool_bounds_evict_oldest(tmp_path: Path) -> None:
    s = DiskSpool(tmp_path, KEYS, max_batches=10, max_bytes=250, fsync=False)
    evicted = []
    first = s.next_sequence
    for _ in range(5):
        evicted += s.add(b"y" * 100, 1)[1]
    assert [p.sequence - first for p in evicted] == [0, 1, 2]
    assert s.nbytes == 200 and len(list(tmp_path.glob("*.batch"))) == 2


@pytest.mark.parametrize("damage", ["flip", "other_key", "counter", "rename"])
def test_tampered_spool_is_refused(tmp_path: Path, damage: str) -> None:
    s = DiskSpool(tmp_path, KEYS, fsync=False)
    s.add(b"batch-bytes" * 20, 3)
    f = next(tmp_path.glob("*.batch"))
    keys = KEYS
    if damage == "flip":
        data = bytearray(f.read_bytes())
        data[-5] ^= 0x20
        f.write_bytes(bytes(data))
    elif damage == "other_key":
        keys = Keyring.of(b"another-key-0123456789abcdef0123456789")
    elif damage == "counter":  # the sequence counter is signed too: moving it back would reuse numbers
        (tmp_path / "next").write_bytes((tmp_path / "next").read_bytes().replace(b"\n2", b"\n1"))
    else:
        f.rename(tmp_path / f"{int(f.stem) + 99:020d}.batch")
    with pytest.raises(SpoolError, match="refusing") as e:
        DiskSpool(tmp_path, keys)
    assert isinstance(e.value, StateError) and str(tmp_path) in str(e.value)


def test_spool_key_rotation_resigns_files(tmp_path: Path) -> None:
    s = DiskSpool(tmp_path, KEYS, fsync=False)
    s.add(b"a" * 50, 1)
    s.add(b"b" * 50, 2)
    new = Keyring.of(b"new-spool-key-0123456789abcdef0123456789", KEY)
    assert [p.body[:1] for p in DiskSpool(tmp_path, new).entries()] == [b"a", b"b"]
    only_new = Keyring.of(b"new-spool-key-0123456789abcdef0123456789")
    reopened = DiskSpool(tmp_path, only_new)  # everything was signed again: the old key is no longer needed
    assert [p.sequence for p in reopened.entries()] == [1, 2] and reopened.add(b"c", 1)[0].sequence == 3


def _sensor(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as f:
        return subprocess.Popen([sys.executable, "-m", "baseliner.service.cli", "sensor", *args], cwd=REPO, stdout=f,
                                stderr=subprocess.STDOUT)


def _wait_for(pred: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise TimeoutError(what)


@pytest.mark.slow
def test_kill9_sensor_and_service_spool_resent_once(tmp_path: Path) -> None:
    key_file = tmp_path / "spool.key"
    key_file.write_bytes(KEY + b"\n")
    spool = tmp_path / "spool"
    serve = ServeProcess(tmp_path / "state", extra=["--set", "state.save_interval_seconds=0.5"]).start()
    t0 = 1_767_225_600.0
    common = ["--target", serve.target, "--node", "node-a", "--sensor-id", "node-a/spooled", "--spool-dir",
              str(spool), "--spool-key-file", str(key_file), "--backoff-max", "0.5", "--no-attacks", "--hours",
              "0.5", "--ack-timeout", "5"]
    log1 = tmp_path / "sensor1.log"
    s1 = _sensor([*common, "--source", "synthetic", "--start", str(t0), "--speed", "900"], log1)
    try:
        _wait_for(lambda: windows_scored(serve.target) > 0, 60, "service never applied anything")
        serve.kill9()  # service dies mid-stream; the sensor keeps spooling
        _wait_for(lambda: "source finished" in log1.read_text(), 60, "sensor 1 did not finish its source")
        s1.kill()  # SIGKILL: the spool holds every unacknowledged batch
        s1.wait(10)
    finally:
        if s1.poll() is None:
            s1.kill()
    text1 = log1.read_text()
    m = re.search(r"source finished: (\d+) vectors submitted", text1)
    assert m, text1
    a_vectors = int(m.group(1))
    spooled = list(spool.rglob("*.batch"))  # one directory per shard
    assert spooled, "nothing was left unacknowledged: the test did not exercise the spool"

    serve.start()
    applied_before = windows_scored(serve.target)
    assert 0 < applied_before < a_vectors
    log2 = tmp_path / "sensor2.log"
    s2 = _sensor([*common, "--source", "synthetic", "--start", str(t0 + 1800.0), "--speed", "0"], log2)
    try:
        assert s2.wait(180) == 0, log2.read_text()
        text2 = log2.read_text()
        assert "unacknowledged batches" in text2  # the spool was picked up
        m2 = re.search(r"source finished: (\d+) vectors submitted", text2)
        assert m2, text2
        b_vectors = int(m2.group(1))
        assert windows_scored(serve.target) == a_vectors + b_vectors
        assert not list(spool.rglob("*.batch"))
    finally:
        if s2.poll() is None:
            s2.kill()
        serve.stop()
