"""Real ``baseliner serve`` shards and ``baseliner sensor`` processes for the sharding tests and bench.

The input is a synthetic scenario whose image repositories are renamed per node and per container
(``<repo>-<node>-<k>``): every image is fed by one sensor only, so its windows reach the service in one order
whatever the number of shards, and a per-image state is comparable between runs.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from baseliner.models.integrity import Keyring
from baseliner.protos.v1 import admin_pb2, admin_pb2_grpc
from baseliner.sensor.record import record
from baseliner.sensor.synthetic import ScenarioConfig, SyntheticSource
from baseliner.service.store import decode_file

from tests.reliability_procs import REPO, ServeProcess, free_port
from tests.service_fixtures import STATE_KEY

NODES = ("node-1", "node-2", "node-3")


def make_inputs(out: Path, hours: float, per_container: int = 2, seed: int = 7) -> dict[str, Path]:
    """One recording per node (a sensor each); returns node -> recording."""
    src = SyntheticSource(ScenarioConfig(seed=seed, hours=hours, nodes=NODES, attack_after_hours=hours * 0.6,
                                         rollout_at_hours=hours * 0.7))
    by_node: dict[str, list[list[Any]]] = {n: [] for n in NODES}
    for window in src:
        split: dict[str, list[Any]] = {}
        for v in window:
            i = v.identity
            k = zlib.crc32(i.container_id.encode()) % per_container
            ident = dataclasses.replace(i, image_repository=f"{i.image_repository}-{i.node}-{k}")
            split.setdefault(i.node, []).append(dataclasses.replace(v, identity=ident))
        for node, vs in split.items():
            by_node[node].append(vs)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for node, windows in by_node.items():
        files[node] = out / f"{node}.jsonl"
        record(windows, str(files[node]))
    return files


#: Learning ends on the stability rule alone (the scenarios are hours long, not the day of quiet a budget of one
#: alarm a day asks for by default); lineage by repository only: these tests spread one workload over many
#: repositories (one per node and slot) to spread it over the shards, and a workload's parent on another shard
#: is not looked for (docs/sharding.md).
LEARNING = ("--set", "baseline.stable_confidence=0", "--set", "pipeline.lineage=repository")


def shard_list(ports: dict[str, int]) -> str:
    return ",".join(f"{name}=127.0.0.1:{port}" for name, port in sorted(ports.items()))


class Shard(ServeProcess):
    """A ``baseliner serve`` shard named ``name`` following ``shards.list`` from ``list_file`` (re-read: a resize
    is a new file), with its events in ``events-NAME.jsonl`` and a Falco endpoint on a free port."""

    def __init__(self, root: Path, name: str, port: int, list_file: Path, extra: Sequence[str] = ()) -> None:
        self.name = name
        super().__init__(root / f"state-{name}", port, [
            "--set", f"shards.name={name}", "--set", f"shards.list=@{list_file}",
            "--set", "shards.refresh_seconds=0.5", "--set", "state.save_interval_seconds=2",
            "--set", "falco.listen=127.0.0.1:0", "--events", str(root / f"events-{name}.jsonl"), *LEARNING, *extra],
            log_path=root / f"serve-{name}.log")


def start_shards(root: Path, names: Sequence[str], extra: Sequence[str] = ()) -> tuple[dict[str, Shard], Path]:
    """Shards on free ports, all started; returns them by name and the list file."""
    ports = {n: free_port() for n in names}
    list_file = root / "shards.list"
    list_file.write_text(shard_list(ports))
    shards = {n: Shard(root, n, ports[n], list_file, extra) for n in names}
    for s in shards.values():
        s.start()
    wait_for(lambda: all(status_epoch(s.target) >= 1 for s in shards.values()), 60, "the shards agree on a map")
    return shards, list_file


def status_epoch(target: str) -> int:
    from baseliner.protos.v1 import shards_pb2, shards_pb2_grpc

    with grpc.insecure_channel(target) as ch:
        try:
            st = shards_pb2_grpc.ShardsStub(ch).Status(shards_pb2.StatusRequest(), timeout=5)
        except grpc.RpcError:
            return -1
    return int(st.epoch) if st.settled else 0


def statuses(targets: Sequence[str]) -> list[Any]:
    from baseliner.protos.v1 import shards_pb2, shards_pb2_grpc

    out = []
    for t in targets:
        with grpc.insecure_channel(t) as ch:
            out.append(shards_pb2_grpc.ShardsStub(ch).Status(shards_pb2.StatusRequest(), timeout=5))
    return out


def sensor(targets: str, recording: Path, node: str, log: Path, extra: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    with open(log, "ab") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "baseliner.service.cli", "sensor", "--source", "replay", str(recording),
             "--target", targets, "--node", node, "--sensor-id", f"{node}/replay", "--metrics-listen", "",
             "--backoff-max", "0.5", "--ack-timeout", "10", *extra],
            cwd=REPO, stdout=f, stderr=subprocess.STDOUT)


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise TimeoutError(what)


def listed(target: str) -> tuple[list[Any], list[str]]:
    """``ListBaselines`` at one shard: every shard's baselines, and the shards that did not answer."""
    with grpc.insecure_channel(target) as ch:
        r = admin_pb2_grpc.AdminStub(ch).ListBaselines(admin_pb2.ListBaselinesRequest(), timeout=30)
    return list(r.baselines), list(r.unavailable_shards)


def detail(target: str, key: str) -> dict[str, Any]:
    """``GetBaseline`` at ``target`` (any shard): the fields that say what was learnt."""
    with grpc.insecure_channel(target) as ch:
        b = admin_pb2_grpc.AdminStub(ch).GetBaseline(admin_pb2.GetBaselineRequest(key=key), timeout=30)
    return {
        "mode": b.mode, "state": b.state, "windows_learned": b.windows_learned, "windows_scored": b.windows_scored,
        "anomalies": b.anomalies, "first": b.first_window, "last": b.last_window, "threshold": b.threshold,
        "learned_seconds": b.learned_seconds, "executables": sorted(b.executables), "syscalls": sorted(b.syscalls),
        "ports": sorted(b.remote_ports), "features": [(f.name, f.mean, f.std) for f in b.features],
        "detector": b.detector,
    }


def file_states(state_dirs: Sequence[Path]) -> dict[str, tuple[dict[str, Any], dict[str, np.ndarray]]]:
    """Every baseline file of the state directories: image key -> (meta, arrays)."""
    out = {}
    for d in state_dirs:
        for f in sorted((d / "baselines").glob("*.state")):
            header, meta, arrays = decode_file(f.read_bytes(), Keyring.of(STATE_KEY), str(f))  # (every test key)
            key = str(header["key"])
            assert key not in out, f"{key} is held by two shards"
            out[key] = (meta, arrays)
    return out


def close(a: Any, b: Any) -> bool:
    """Equal, floats to 1e-9 relative (the order of a float sum may differ with how the windows were batched;
    one window more or less moves a count by one and a moment far more than this)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def same_state(a: tuple[dict[str, Any], dict[str, np.ndarray]], b: tuple[dict[str, Any], dict[str, np.ndarray]]
               ) -> list[str]:
    """What differs between two baselines' saved states (empty when they are the same: every integer, set and
    string exactly, floats as :func:`close`)."""
    diffs = [f"meta {k}" for k in sorted(set(a[0]) | set(b[0]))
             if k != "applied_through" and not close(a[0].get(k), b[0].get(k))]  # (sequence numbers: per run)
    for k in sorted(set(a[1]) | set(b[1])):
        x, y = a[1].get(k), b[1].get(k)
        if x is None or y is None or x.shape != y.shape or x.dtype != y.dtype:
            diffs.append(f"array {k}")
        elif x.dtype.kind == "f":
            if not np.allclose(x, y, rtol=1e-9, atol=1e-12, equal_nan=True):
                diffs.append(f"array {k}")
        elif not np.array_equal(x, y):
            diffs.append(f"array {k}")
    return diffs


def anomaly_ids(event_files: Sequence[Path]) -> dict[str, set[str]]:
    """Image key -> the event ids of its anomalous windows (first reports; updates repeat the id)."""
    import json

    out: dict[str, set[str]] = {}
    for f in event_files:
        if not f.exists():
            continue
        for line in f.read_text().splitlines():
            e = json.loads(line)
            out.setdefault(e["image"]["key"], set()).add(e["event_id"])
    return out
