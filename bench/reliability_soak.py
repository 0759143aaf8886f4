"""Soak test: many simulated sensors against one ``baseliner serve`` for a fixed time.

    python bench/reliability_soak.py --sensors 50 --containers 100 --interval 1 --seconds 180

Starts ``baseliner serve`` as a real process (state directory, write-ahead log with the default fsync
policy, durable acknowledgements), then runs ``--sensors`` gRPC streams from this process, each
reporting ``--containers`` containers (20 images shared by all sensors) and sending one window per
container every ``--interval`` seconds of wall time (event time advances 10 s per window, so the
baselines learn and then detect).  Each sensor waits for the ack of a batch before the next one, like
a live sensor with nothing buffered.

Reported: vectors acknowledged per second, ack latency percentiles (batch written -> durable ack), the
service's resident memory sampled every 5 s (and its slope after a warm-up), and the check that every
acknowledged window is in the baselines exactly once (sum of ``windows_scored`` over ``Admin.ListBaselines``
equals the sum of ``applied`` over durable acks).  Exit status 1 if that check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from baseliner.models.vector import Endpoint, FeatureVector, Identity  # noqa: E402
from baseliner.protos.v1 import admin_pb2, admin_pb2_grpc, ingest_pb2  # noqa: E402
from baseliner.sensor import wire  # noqa: E402
from procs import free_port, rss, state_key_args  # noqa: E402

T0 = 1_767_225_600.0
WINDOW = 10.0
IMAGES = 20


def window(sensor: int, containers: int, k: int, rng: random.Random) -> list[FeatureVector]:
    out = []
    for c in range(containers):
        img = (sensor * containers + c) % IMAGES
        ident = Identity(f"node-{sensor}", f"s{sensor}c{c}", f"soak/app{img}", "1.0", "", f"app{img}-{c}",
                         f"app{img}-{sensor}-{c}", "soak")
        base = 50 + 10 * img
        out.append(FeatureVector(
            ident, T0 + WINDOW * k, WINDOW,
            {"read": base * 10 + rng.randint(0, 40), "write": base * 6 + rng.randint(0, 30),
             "epoll_wait": 200 + rng.randint(0, 10), "futex": 80 + rng.randint(0, 10)},
            accepts=20 + rng.randint(0, 3), connects=4 + rng.randint(0, 1),
            bytes_sent=100_000 + rng.randint(0, 5000), bytes_received=20_000 + rng.randint(0, 1000),
            packets_sent=100 + rng.randint(0, 10), packets_received=90 + rng.randint(0, 10),
            remote_addresses=3, remote_ports=1, endpoints=[Endpoint("10.0.0.2", 5432)],
            seconds_since_start=3600.0 + WINDOW * k,
        ))
    return out


class Stats:
    def __init__(self) -> None:
        self.latencies: list[tuple[float, float]] = []  # (monotonic time of the ack, seconds)
        self.applied = 0
        self.rejected = 0
        self.batches = 0
        self.not_durable = 0
        self.errors = 0


async def sensor_loop(target: str, sensor: int, containers: int, interval: float, stop_at: float,
                      stats: Stats) -> None:
    rng = random.Random(sensor)
    async with grpc.aio.insecure_channel(target) as ch:
        # bytes in (as the sensor's transport sends them: encoded once, framed without re-serialising)
        call = ch.stream_stream("/baseliner.v1.Ingest/Stream", request_serializer=lambda b: b,
                                response_deserializer=ingest_pb2.IngestResponse.FromString)()
        await call.write(wire.hello_request_bytes(f"soak-{sensor}", f"node-{sensor}", "soak"))
        welcome = await call.read()
        assert welcome.welcome.durable_acks, "service does not offer durable acks"
        k = 0
        next_tick = time.monotonic() + rng.random() * interval  # spread the sensors over the interval
        while True:
            delay = next_tick - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if time.monotonic() >= stop_at:
                break
            k += 1
            body = wire.encode_batch_body(window(sensor, containers, k, rng))
            t = time.perf_counter()
            await call.write(wire.batch_request_bytes(k, body))
            resp = await call.read()
            stats.latencies.append((time.monotonic(), time.perf_counter() - t))
            ack = resp.ack
            stats.batches += 1
            if not ack.durable:
                stats.not_durable += 1
            stats.applied += ack.applied
            stats.rejected += len(ack.rejected)
            next_tick += interval
        await call.done_writing()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    state = Path(args.state_dir or tempfile.mkdtemp(prefix="baseliner-soak-"))
    port = free_port()
    target = f"127.0.0.1:{port}"
    log_path = state.parent / f"{state.name}-serve.log"
    cmd = [sys.executable, "-m", "baseliner.service.cli", "serve", "--listen", target, "--metrics-listen", "",
           "--state-dir", str(state), *state_key_args(state), "--events", "none", "--log-level", "WARNING",
           "--set", f"state.wal_fsync={args.fsync}", "--set", f"state.save_interval_seconds={args.save_interval}"]
    with open(log_path, "wb") as logf:
        serve = subprocess.Popen(cmd, cwd=REPO, stdout=logf, stderr=subprocess.STDOUT)
    try:
        async with grpc.aio.insecure_channel(target) as ch:
            await asyncio.wait_for(ch.channel_ready(), 60)
        stats = Stats()
        start = time.monotonic()
        stop_at = start + args.seconds
        memory: list[tuple[float, int]] = []

        async def sample() -> None:
            while time.monotonic() < stop_at:
                memory.append((time.monotonic() - start, rss(serve.pid)))
                await asyncio.sleep(5)

        sampler = asyncio.create_task(sample())
        await asyncio.gather(*(sensor_loop(target, s, args.containers, args.interval, stop_at, stats)
                               for s in range(args.sensors)))
        elapsed = time.monotonic() - start
        await sampler
        async with grpc.aio.insecure_channel(target) as ch:
            lst = await admin_pb2_grpc.AdminStub(ch).ListBaselines(admin_pb2.ListBaselinesRequest(), timeout=60)
        scored = sum(b.windows_scored for b in lst.baselines)
        states: dict[str, int] = {}
        for b in lst.baselines:
            name = admin_pb2.State.Name(b.state)
            states[name] = states.get(name, 0) + 1
        memory.append((time.monotonic() - start, rss(serve.pid)))
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(60)
        except subprocess.TimeoutExpired:
            serve.kill()
    lat_all = np.array([x for _, x in stats.latencies]) * 1000.0
    lat_warm = np.array([x for at, x in stats.latencies if at - start >= args.warmup]) * 1000.0

    def pct(lat: np.ndarray) -> dict[str, float]:
        return {p: round(float(np.percentile(lat, q)), 2) for p, q in
                (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))} if lat.size else {}

    t = np.array([m[0] for m in memory])
    r = np.array([m[1] for m in memory]) / 2**20
    warm = t >= args.warmup
    slope = float(np.polyfit(t[warm], r[warm], 1)[0]) * 60.0 if warm.sum() >= 3 else float("nan")
    return {
        "command": " ".join(["python bench/reliability_soak.py", *sys.argv[1:]]),
        "sensors": args.sensors, "containers_per_sensor": args.containers, "interval_s": args.interval,
        "seconds": round(elapsed, 1), "fsync": args.fsync,
        "batches_acked": stats.batches, "vectors_acked": stats.applied, "vectors_rejected": stats.rejected,
        "acks_not_durable": stats.not_durable,
        "throughput_vectors_per_s": round(stats.applied / elapsed, 1),
        "ack_latency_ms": pct(lat_all), "ack_latency_ms_after_warmup": pct(lat_warm),
        "load_average_at_end": os.getloadavg(),
        "service_rss_mib": {"first": round(float(r[0]), 1), "after_warmup": round(float(r[warm][0]), 1)
                            if warm.any() else None, "last": round(float(r[-1]), 1), "max": round(float(r.max()), 1),
                            "slope_mib_per_min_after_warmup": round(slope, 2)},
        "memory_samples": [(round(a, 1), round(float(b), 1)) for a, b in zip(t, r, strict=True)],
        "baselines": len(lst.baselines), "baseline_states": states,
        "windows_scored_in_baselines": scored,
        "lost_acknowledged_windows": stats.applied - scored if scored <= stats.applied else 0,
        "double_counted_windows": scored - stats.applied if scored > stats.applied else 0,
        "serve_log": str(log_path),
        "cpu": os.cpu_count(),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sensors", type=int, default=50)
    p.add_argument("--containers", type=int, default=100, help="containers per sensor")
    p.add_argument("--interval", type=float, default=1.0, help="wall seconds between a sensor's windows")
    p.add_argument("--seconds", type=float, default=180.0)
    p.add_argument("--warmup", type=float, default=60.0, help="seconds before the memory slope is fitted")
    p.add_argument("--fsync", default="batch", choices=("batch", "group", "off"))
    p.add_argument("--save-interval", type=float, default=30.0, help="checkpoint interval of the service")
    p.add_argument("--state-dir", help="state directory (default: a new temporary one)")
    p.add_argument("--out", help="write the result as JSON here")
    args = p.parse_args()
    res = asyncio.run(run(args))
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    ok = res["lost_acknowledged_windows"] == 0 and res["double_counted_windows"] == 0 and res["acks_not_durable"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
