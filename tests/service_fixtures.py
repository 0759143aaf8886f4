"""Helpers for the service tests: vectors, an in-process server on a free port, a stream client."""

from __future__ import annotations

import contextlib
import random
import urllib.request
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
from baseliner.models.vector import Endpoint, FeatureVector, Identity
from baseliner.protos.v1 import admin_pb2_grpc, ingest_pb2, ingest_pb2_grpc, vectors_pb2
from baseliner.sensor import wire
from baseliner.service.config import load
from baseliner.service.server import BaselinerServer
from baseliner.service.sinks.events import CallbackSink
from prometheus_client import CollectorRegistry

T0 = 1.75e9
WINDOW = 10.0
#: The state integrity key of the tests (a keyring file of one line; baseliner.models.integrity).
STATE_KEY = "test-state-key-0123456789abcdefghijklmnop"


def state_key_file(state_dir: Path, *keys: str) -> Path:
    """The keyring file beside ``state_dir``: written with ``keys`` (the first signs) when given, else with
    ``STATE_KEY`` unless it exists."""
    path = state_dir.parent / f"{state_dir.name}.keys"
    if keys or not path.exists():
        path.write_text("".join(f"{k}\n" for k in (keys or (STATE_KEY,))))
    return path


def vector(
    i: int,
    container: int = 0,
    repo: str = "nginx",
    tag: str = "1.27",
    attack: str = "",
    node: str = "node-1",
    age: float | None = None,
) -> FeatureVector:
    """Window ``i`` of a steady web-server-like container (``attack`` adds a reverse shell etc.)."""
    r = random.Random(i * 1009 + container)
    ident = Identity(node, f"c{container}", repo, tag, "", f"web-{container}", f"web-{container}-pod", "default")
    v = FeatureVector(
        ident,
        T0 + WINDOW * i,
        WINDOW,
        {"read": 500 + r.randint(0, 40), "write": 300 + r.randint(0, 30), "epoll_wait": 200 + r.randint(0, 10),
         "accept4": 20 + r.randint(0, 3), "close": 40 + r.randint(0, 5)},
        accepts=20 + r.randint(0, 3),
        connects=4 + r.randint(0, 1),
        bytes_sent=100_000 + r.randint(0, 5000),
        bytes_received=20_000 + r.randint(0, 1000),
        packets_sent=100 + r.randint(0, 10),
        packets_received=90 + r.randint(0, 10),
        remote_addresses=3,
        remote_ports=1,
        endpoints=[Endpoint("10.0.0.2", 5432)],
        seconds_since_start=(3600.0 + WINDOW * i) if age is None else age,
    )
    if attack == "shell":
        v.syscalls["execve"] = 2
        v.syscalls["connect"] = 1
        v.execs = 2
        v.executables = ["/bin/sh"]
        v.endpoints = [*v.endpoints, Endpoint("203.0.113.7", 4444)]
    elif attack == "etc":
        v.write_opens = 1
        v.sensitive_writes = 1
        v.sensitive_paths = ["/etc/passwd"]
    return v


def batch_request(vectors: Sequence[FeatureVector], sequence: int) -> ingest_pb2.IngestRequest:
    return ingest_pb2.IngestRequest(batch=wire.to_columns(vectors, sequence))


def raw_batch_request(batch: vectors_pb2.VectorBatch) -> ingest_pb2.IngestRequest:
    return ingest_pb2.IngestRequest(batch=batch)


def hello(
    sensor_id: str = "sensor-1", node: str = "node-1", schema_version: int = wire.SCHEMA_VERSION
) -> ingest_pb2.IngestRequest:
    return ingest_pb2.IngestRequest(
        hello=ingest_pb2.Hello(sensor_id=sensor_id, node=node, sensor_version="test", schema_version=schema_version)
    )


def config(tmp: Path | None = None, *extra: tuple[str, Any]) -> Any:
    overrides: list[tuple[str, Any]] = [
        ("grpc.listen", "127.0.0.1:0"),
        ("metrics.listen", "127.0.0.1:0"),
        ("events.output", "none"),
        ("baseline.min_learn_windows", 20),
        ("baseline.min_learn_seconds", 0),
        ("baseline.stable_confidence", 0),
        ("grpc.shutdown_grace_seconds", 1),
    ]
    if tmp is not None:
        overrides.append(("state.dir", str(tmp)))
        if not any(key == "state.key_file" for key, _ in extra):
            overrides.append(("state.key_file", str(state_key_file(Path(tmp)))))
    overrides.extend(extra)
    return load(None, environ={}, overrides=overrides)


@contextlib.asynccontextmanager
async def running(cfg: Any) -> AsyncIterator[tuple[BaselinerServer, list[dict[str, Any]]]]:
    """An in-process server; yields it and the list its anomaly events are collected into."""
    events: list[dict[str, Any]] = []
    srv = BaselinerServer(cfg, CollectorRegistry(), sinks=[CallbackSink(events.append)])
    await srv.start()
    try:
        yield srv, events
    finally:
        await srv.stop()


async def exchange(port: int, requests: Sequence[ingest_pb2.IngestRequest]) -> list[ingest_pb2.IngestResponse]:
    """Send all requests on one stream, return every response."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = ingest_pb2_grpc.IngestStub(ch)

        async def gen() -> AsyncIterator[ingest_pb2.IngestRequest]:
            for r in requests:
                yield r

        return [r async for r in stub.Stream(gen())]


def admin(port: int) -> tuple[grpc.aio.Channel, admin_pb2_grpc.AdminStub]:
    ch = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return ch, admin_pb2_grpc.AdminStub(ch)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def sample(text: str, name: str, **labels: str) -> float | None:
    """Value of one sample in a Prometheus text exposition (None when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def learn_batches(n_batches: int, per_batch: int = 10, containers: int = 2, start_seq: int = 1,
                  start_window: int = 0) -> list[ingest_pb2.IngestRequest]:
    """Normal traffic: ``n_batches`` batches of ``per_batch`` windows for each container."""
    out = []
    w = start_window
    for b in range(n_batches):
        vs = [vector(w + k, c) for k in range(per_batch) for c in range(containers)]
        w += per_batch
        out.append(batch_request(vs, start_seq + b))
    return out
