"""The service's throughput as a share of the floor's, learning and detecting, and its latency at 80% load.

    .venv/bin/python bench/service_vs_floor.py [--reps 3] [--vectors 25000] [--ngrams 200]

Two servers run side by side on CPU 0: ``baseliner serve`` with its defaults (default model, write-ahead
log on with an fsync before each ack, events to a file, metrics on) and the floor (``bench/floor_server.py``:
the same gRPC API, it only receives each batch and acknowledges it).  The senders run on CPU 1 and stream
pre-encoded batches (the sensor's wire form, ``baseliner.sensor.wire``), waiting for every acknowledgement.
Each window carries ``--ngrams`` n-gram entries spread over the orders the default sensor counts (4 and 6).

For each shape (one sensor sending 500-window batches; ten sensors sending 50-window batches), the run
alternates, repetition by repetition: the floor and the service on windows of images that are still
*learning* (a fresh set of images each repetition), then the floor and the service on windows of images
that are *detecting* (learnt in a warm-up, then set to detect with ``Admin.SetMode``: by default learning
ends on its own only after ~17 hours of event time).  Each figure is wall-clock vectors per second from the first
request to the last acknowledgement; the ratio of a repetition compares the service with the floor of the
same repetition, and the median over repetitions is reported, with the CPU time per vector of each server.

Then the latency: one sensor sends 500-window batches of detecting images, paced at 80% of the service's
measured detecting capacity, for ``--latency-seconds``; each batch's latency is the time from sending it
to receiving its acknowledgement (which the service sends once the batch is scored, learnt and logged:
an upper bound on arrival to verdict).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from baseliner.models.baseline import BaselineConfig  # noqa: E402
from baseliner.protos.v1 import admin_pb2, admin_pb2_grpc, ingest_pb2  # noqa: E402
from baseliner.sensor import wire  # noqa: E402
from procs import cpu_seconds, free_port, state_key_args  # noqa: E402
from service_throughput import WINDOW, Workload, _per_stream  # noqa: E402

SHAPES = {"1x500": (1, 500), "10x50": (10, 50)}


def start(cmd: list[str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen(["taskset", "-c", "0", *cmd], cwd=REPO, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                grpc.channel_ready_future(ch).result(timeout=1)
            return proc
        except grpc.FutureTimeoutError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{cmd[:3]} did not start") from None


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()


class Sender:
    """Streams pre-encoded requests to one server on channels opened (and connected) before timing starts."""

    def __init__(self, port: int, streams: int) -> None:
        opts = [("grpc.max_send_message_length", 64 << 20)]
        self.channels = [grpc.insecure_channel(f"127.0.0.1:{port}", options=opts) for _ in range(streams)]
        for ch in self.channels:
            grpc.channel_ready_future(ch).result(timeout=30)
        self.calls = [ch.stream_stream("/baseliner.v1.Ingest/Stream", request_serializer=lambda b: b,
                                       response_deserializer=ingest_pb2.IngestResponse.FromString)
                      for ch in self.channels]
        self.pool = ThreadPoolExecutor(streams)

    def send(self, requests: list[list[bytes]]) -> tuple[float, int]:
        """Every stream's requests at once; (seconds until the last acknowledgement, windows applied)."""
        def one(k: int) -> int:
            return sum(r.ack.applied for r in self.calls[k](iter(requests[k]), timeout=3600)
                       if r.WhichOneof("body") == "ack")

        t0 = time.perf_counter()
        applied = sum(self.pool.map(one, range(len(requests))))
        return time.perf_counter() - t0, applied

    def close(self) -> None:
        self.pool.shutdown()
        for ch in self.channels:
            ch.close()


def encode(batches: list[list[Any]], streams: int, size: int, sensor: str) -> list[list[bytes]]:
    """The windows split among ``streams`` sensors (by container) in batches of ``size``, as requests."""
    out = []
    for k, own in enumerate(_per_stream(batches, streams, size)):
        reqs = [wire.hello_request_bytes(f"{sensor}-{k}", f"node-{k}", "bench")]
        reqs += [wire.batch_request_bytes(s + 1, wire.encode_batch_body(b)) for s, b in enumerate(own)]
        out.append(reqs)
    return out


def fresh(images: int, containers: int, ngrams: int, tag: str) -> Workload:
    """A workload of images nobody has seen (image names carry ``tag``)."""
    wl = Workload(images, containers, ngrams, seed=zlib.crc32(tag.encode()))
    wl.ids = [dataclasses.replace(i, image_repository=f"{i.image_repository}-{tag}",
                                                container_id=f"{tag}-{i.container_id}") for i in wl.ids]
    return wl


def switch_to_detect(port: int) -> int:
    """Set every baseline the warm-up learnt to detect (``Admin.SetMode``, as an operator would): with the
    default ``stable_confidence`` learning ends on its own only after ~17 hours of event time, which a
    warm-up cannot afford.  Returns how many baselines are detecting."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        admin = admin_pb2_grpc.AdminStub(ch)
        for b in admin.ListBaselines(admin_pb2.ListBaselinesRequest()).baselines:
            admin.SetMode(admin_pb2.SetModeRequest(key=b.key, mode=admin_pb2.MODE_DETECT))
        return sum(b.state == admin_pb2.STATE_DETECTING
                   for b in admin.ListBaselines(admin_pb2.ListBaselinesRequest()).baselines)


def measure(senders: dict[str, Sender], procs: dict[str, subprocess.Popen], who: str,
            requests: list[list[bytes]]) -> dict[str, float]:
    cpu0 = cpu_seconds(procs[who].pid)
    seconds, applied = senders[who].send(requests)
    cpu = cpu_seconds(procs[who].pid) - cpu0
    return {"vectors_per_s": applied / seconds, "cpu_us_per_vector": cpu / max(applied, 1) * 1e6,
            "cpu_share": cpu / seconds, "applied": applied}


def latency(port: int, requests: list[bytes], rate: float, size: int) -> dict[str, float]:
    """Send ``requests`` (a Hello, then batches of ``size``) paced at ``rate`` windows/s; per-batch latency."""
    sent: dict[int, float] = {}
    got: dict[int, float] = {}
    interval = size / rate
    lock = threading.Lock()

    def paced() -> Iterator[bytes]:
        yield requests[0]
        t0 = time.perf_counter()
        for k, r in enumerate(requests[1:]):
            delay = t0 + k * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            with lock:
                sent[k + 1] = time.perf_counter()
            yield r

    with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        call = ch.stream_stream("/baseliner.v1.Ingest/Stream", request_serializer=lambda b: b,
                                response_deserializer=ingest_pb2.IngestResponse.FromString)
        for r in call(paced(), timeout=3600):
            if r.WhichOneof("body") == "ack":
                got[r.ack.sequence] = time.perf_counter()
    lat = sorted((got[s] - sent[s]) * 1e3 for s in got if s in sent)
    q = statistics.quantiles(lat, n=100, method="inclusive")  # (never past the largest)
    return {"batches": len(lat), "offered_vectors_per_s": rate, "p50_ms": q[49], "p99_ms": q[98], "max_ms": lat[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3, help="alternating repetitions")
    ap.add_argument("--vectors", type=int, default=25_000, help="windows per measurement (learning: at most 30,000)")
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--containers", type=int, default=50, help="containers per image")
    ap.add_argument("--ngrams", type=int, default=200, help="n-gram entries per window (the sensor's orders)")
    ap.add_argument("--shapes", default="1x500,10x50", help=f"sensors x batch size, of {sorted(SHAPES)}")
    ap.add_argument("--latency-seconds", type=float, default=5.0, help="0: no latency run")
    ap.add_argument("--json", help="write results here as JSON")
    args = ap.parse_args()
    cfg = BaselineConfig()
    per_round = args.images * args.containers
    if args.vectors / per_round * WINDOW >= cfg.min_learn_seconds:
        ap.error("--vectors: a fresh image would leave learning during the measurement (fewer, or more images)")
    tmp = Path(tempfile.mkdtemp(prefix="baseliner-floor-"))
    ports = {"service": free_port(), "floor": free_port()}
    procs = {
        "service": start([str(REPO / ".venv/bin/baseliner"), "serve", "--listen", f"127.0.0.1:{ports['service']}",
                          "--metrics-listen", f"127.0.0.1:{free_port()}", "--events", str(tmp / "events.jsonl"),
                          "--state-dir", str(tmp / "state"), *state_key_args(tmp / "state"), "--log-level", "WARNING",
                          "--set", "grpc.max_message_bytes=67108864"], ports["service"]),
        "floor": start([sys.executable, str(HERE / "floor_server.py"), "--listen", f"127.0.0.1:{ports['floor']}"],
                       ports["floor"]),
    }
    results: dict[str, Any] = {"args": vars(args), "shapes": {}}
    try:
        os.sched_setaffinity(0, {1})
        detect = Workload(args.images, args.containers, args.ngrams)
        rounds = max(int(cfg.min_learn_windows / args.containers) + 2, int(cfg.min_learn_seconds / WINDOW) + 2)
        warm = Sender(ports["service"], 1)
        warm.send(encode(detect.batches(rounds * per_round, 500), 1, 500, "warm"))
        warm.close()
        detecting = switch_to_detect(ports["service"])
        print(f"workload: {args.images} images x {args.containers} containers, {args.ngrams} n-gram entries a "
              f"window, {args.vectors} windows a measurement, {args.reps} repetitions; {detecting} images "
              f"detecting after the warm-up", flush=True)
        for shape in args.shapes.split(","):
            streams, size = SHAPES[shape]
            senders = {who: Sender(ports[who], streams) for who in ports}
            rows: dict[str, list[dict[str, Any]]] = {"learning": [], "detecting": []}
            for rep in range(args.reps):
                learn_wl = fresh(args.images, args.containers, args.ngrams, f"{shape}-{rep}")
                phases = {"learning": learn_wl.batches(args.vectors, size),
                          "detecting": detect.batches(args.vectors, size)}
                for phase, batches in phases.items():
                    row: dict[str, Any] = {}
                    for who in ("floor", "service"):
                        row[who] = measure(senders, procs, who, encode(batches, streams, size, f"{shape}-{phase}-"
                                                                        f"{rep}-{who}"))
                    row["ratio"] = row["service"]["vectors_per_s"] / row["floor"]["vectors_per_s"]
                    rows[phase].append(row)
                    print(f"{shape} rep {rep} {phase:9s}: service {row['service']['vectors_per_s']:9.0f} vectors/s "
                          f"({row['service']['cpu_us_per_vector']:.2f} CPU us/vector), floor "
                          f"{row['floor']['vectors_per_s']:9.0f} ({row['floor']['cpu_us_per_vector']:.2f}, "
                          f"CPU share {row['floor']['cpu_share']:.2f}): {100 * row['ratio']:.1f}% of the floor",
                          flush=True)
            for s in senders.values():
                s.close()
            summary = {phase: statistics.median(r["ratio"] for r in rs) for phase, rs in rows.items()}
            summary["learning_over_detecting"] = statistics.median(
                a["service"]["vectors_per_s"] / b["service"]["vectors_per_s"]
                for a, b in zip(rows["learning"], rows["detecting"], strict=True))
            results["shapes"][shape] = {"reps": rows, "median": summary}
            print(f"{shape}: service / floor, median: learning {100 * summary['learning']:.1f}%, detecting "
                  f"{100 * summary['detecting']:.1f}%; learning / detecting {summary['learning_over_detecting']:.2f}",
                  flush=True)
        if args.latency_seconds > 0:
            cap = statistics.median(r["service"]["vectors_per_s"]
                                    for r in results["shapes"].get("1x500", next(iter(results["shapes"].values())))
                                    ["reps"]["detecting"])
            rate = 0.8 * cap
            n = max(20, int(args.latency_seconds * rate / 500))
            reqs = encode(detect.batches(n * 500, 500), 1, 500, "latency")[0]
            lat = latency(ports["service"], reqs, rate, 500)
            lat["capacity_vectors_per_s"] = cap
            results["latency"] = lat
            print(f"latency at 80% of capacity ({rate:.0f} of {cap:.0f} vectors/s, {lat['batches']} batches of 500): "
                  f"p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms", flush=True)
    finally:
        for p in procs.values():
            stop(p)
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
