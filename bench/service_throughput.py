"""End-to-end service throughput on one core, per-stage cost, baseline size and live memory.

    .venv/bin/python bench/service_throughput.py [--vectors 100000] [--batch 500] [--ngrams 0]

What it does:

1. **End to end**: starts ``baseliner serve`` as a subprocess pinned to CPU 0 (events to a file, metrics
   on, default model), and a client pinned to CPU 1 that streams pre-encoded batches (so the client's
   encoding cost is not the service's) and waits for every acknowledgement.  A learning phase first
   brings every image baseline to ``detecting``; then the measured phase streams ``--vectors`` windows.
   Throughput = vectors acknowledged / wall time of the measured phase; the service's CPU time (from
   /proc) gives vectors per CPU-second, which other load on a shared machine does not distort.
   **Inside the service** during the measured phase (the service runs through this file, which wraps a
   few functions with CPU-time counters of the event loop's thread, and reads /proc per thread): parse
   (``serde.parse_request``), decode, the pipeline (``Pipeline.apply_block``), the write-ahead log's
   append, the rest of the servicer, what the event loop's thread spends outside the servicer (gRPC
   receive and send, asyncio), and the other threads (the log's fsync worker, gRPC's event engine).
2. **Per stage** (CPU time of this thread, in this process, same batches, no gRPC): protobuf parse,
   decode to a block of windows (``baseliner.service.serde.Decoder.decode_block``), domain validation
   (``baseliner.models.validate.validate_block``), feature transform
   (``baseliner.models.rate_features.transform_block``); then the
   pipeline as the service runs it: validation, ordering and routing, scoring + learning
   (``ImageBaseline.process_block``, which includes the transform), events + metrics.  These run on
   batches already in the cache (the stage timers touch them first): the pipeline costs more inside the
   service, whose figures (1.) are the ones that add up to its CPU time.
3. **Size**: the serialized baseline state file (``baseliner.service.store``) and live memory of one baseline
   (tracemalloc, allocated while building it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from baseliner.models.baseline import BaselineConfig, ImageBaseline  # noqa: E402
from baseliner.models.integrity import Keyring  # noqa: E402
from baseliner.models.ngrams import OFFSETS, ORDER_BUCKETS, ORDERS, SENSOR_ORDERS  # noqa: E402
from baseliner.models.rate_features import SYSCALL_VOCABULARY, transform_block  # noqa: E402
from baseliner.models.validate import validate_block  # noqa: E402
from baseliner.models.vector import Endpoint, FeatureVector, Identity  # noqa: E402
from baseliner.protos.v1 import ingest_pb2, vectors_pb2  # noqa: E402
from baseliner.sensor import wire  # noqa: E402
from baseliner.service import serde  # noqa: E402
from baseliner.service.pipeline import Pipeline  # noqa: E402
from baseliner.service.sinks.events import JsonLinesSink  # noqa: E402
from baseliner.service.sinks.metrics import ServiceMetrics  # noqa: E402
from baseliner.service.store import StateStore  # noqa: E402
from procs import cpu_seconds, free_port, state_key_args  # noqa: E402

T0 = 1.76e9
WINDOW = 10.0
# Learning ends on the stability rule alone (no 17 h of quiet for the budget's evidence): this measures the
# cost of detecting, after a learning phase of minutes.
QUIET = 0.0
#: The orders the sensor counts by default (``baseliner.models.ngrams.SENSOR_ORDERS``: what the default model
#: uses).  A real window has about as many entries of each (the LID-DS sample's 5 s windows: 103 order-4
#: and 121 order-6 entries in one of 386), so a vector's entries are spread equally over them.
DEFAULT_NGRAM_ORDERS = SENSOR_ORDERS


def _share(total: int, orders: tuple[int, ...], order: int) -> int:
    """Order ``order``'s part of ``total`` entries spread equally over ``orders`` (the first get the rest)."""
    k = sorted(orders).index(order)
    return total // len(orders) + (1 if k < total % len(orders) else 0)


class Workload:
    """``images`` x ``containers`` steady containers; one window per container per round."""

    def __init__(self, images: int, containers: int, ngrams: int, seed: int = 1,
                 ngram_orders: tuple[int, ...] = DEFAULT_NGRAM_ORDERS) -> None:
        self.rng = random.Random(seed)
        self.ngrams = ngrams
        self.ids = []
        self.profiles = []
        vocab = list(SYSCALL_VOCABULARY) + ["getrandom", "madvise", "sched_yield", "prctl", "uname"]
        for i in range(images):
            calls = self.rng.sample(vocab, 30)
            rates = {c: self.rng.uniform(1, 2000) for c in calls}
            grams = [b for n in ORDERS if n in ngram_orders
                     for b in self.rng.sample(range(OFFSETS[n], OFFSETS[n] + ORDER_BUCKETS[n]),
                                              _share(ngrams, ngram_orders, n))]
            for c in range(containers):
                self.ids.append(Identity(f"node-{c % 8}", f"{i:03d}{c:05d}" * 5, f"registry.local/team/app{i}",
                                         "1.4.2", "", f"app{i}-{c}", f"app{i}-{c}-7d9f", f"ns{i % 5}"))
                self.profiles.append((rates, grams, f"/usr/bin/app{i}"))
        self.round = 0

    def next_round(self) -> list[FeatureVector]:
        r = self.rng
        t = T0 + WINDOW * self.round
        out = []
        for ident, (rates, grams, exe) in zip(self.ids, self.profiles, strict=True):
            f = r.uniform(0.8, 1.25)
            sc = {c: int(rate * WINDOW * f * r.uniform(0.9, 1.1)) for c, rate in rates.items()}
            v = FeatureVector(
                ident, t, WINDOW, sc,
                ngrams={b: r.randint(1, 500) for b in grams},
                forks=r.randint(0, 2), exits=r.randint(0, 2),
                connects=r.randint(2, 6), accepts=r.randint(10, 30), bytes_sent=int(2e5 * f),
                bytes_received=int(5e4 * f), packets_sent=int(300 * f), packets_received=int(280 * f),
                remote_addresses=r.randint(1, 4), remote_ports=r.randint(1, 2), dns_queries=r.randint(0, 2),
                endpoints=[Endpoint("10.0.3.17", 5432), Endpoint("10.0.0.10", 53, "udp")],
                write_opens=r.randint(0, 3), executables=[exe] if r.random() < 0.05 else [],
                seconds_since_start=86400.0 + WINDOW * self.round,
            )
            out.append(v)
        self.round += 1
        return out

    def batches(self, n_vectors: int, batch: int) -> list[list[FeatureVector]]:
        out: list[list[FeatureVector]] = []
        pending: list[FeatureVector] = []
        while sum(len(b) for b in out) + len(pending) < n_vectors:
            pending.extend(self.next_round())
            while len(pending) >= batch:
                out.append(pending[:batch])
                pending = pending[batch:]
        if pending:
            out.append(pending)
        return out


def _serve_accounted(out: str, serve_args: list[str]) -> None:
    """Run ``baseliner serve`` with CPU-time counters (this thread) around the servicer's steps.

    SIGUSR1 starts a measurement, SIGUSR2 writes the counters since then to ``out`` as JSON.
    """
    from baseliner.service import pipeline, serde, servicer, wal
    from baseliner.service.cli import main as cli_main

    clock = time.thread_time
    acc = {"batch": 0.0, "parse": 0.0, "decode": 0.0, "pipeline": 0.0, "wal_append": 0.0, "nested": 0.0}

    def wrap(owner: Any, name: str, label: str) -> None:
        f = getattr(owner, name, None)
        if f is None:  # (an older tree: gRPC parses the request; it counts as outside the servicer)
            return

        def counted(*a: Any, **k: Any) -> Any:
            t = clock()
            try:
                return f(*a, **k)
            finally:
                acc[label] += clock() - t

        setattr(owner, name, counted)

    wrap(servicer.IngestServicer, "_batch", "batch")
    wrap(serde, "parse_request", "parse")  # looked up at registration, after this
    wrap(serde.Decoder, "decode_block", "decode")
    # the pipeline: called by the servicer's applier, outside _batch (apply_block, on an older tree, inside it)
    nested = not hasattr(pipeline.Pipeline, "apply_blocks")
    wrap(pipeline.Pipeline, "apply_block" if nested else "apply_blocks", "pipeline")
    wrap(wal.WriteAheadLog, "append", "wal_append")
    start: dict[str, float] = {}

    def begin(*_: Any) -> None:
        start.update(acc, thread=clock())

    def end(*_: Any) -> None:
        result = {k: v - start[k] for k, v in acc.items()}
        result["nested"] = float(nested)
        result["thread"] = clock() - start["thread"]
        Path(out + ".tmp").write_text(json.dumps(result))
        os.replace(out + ".tmp", out)  # whole, as soon as it exists

    signal.signal(signal.SIGUSR1, begin)
    signal.signal(signal.SIGUSR2, end)
    sys.argv = ["baseliner", *serve_args]
    cli_main()


def _threads(pid: int) -> dict[str, tuple[float, int]]:
    """Per thread of ``pid``: CPU seconds (user + system) and minor page faults, from /proc."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            f = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[tid] = ((int(f[11]) + int(f[12])) / tick, int(f[7]))
    return out


def _stream(port: int, requests: list[bytes]) -> tuple[float, int, int]:
    """Send pre-serialised IngestRequests on one stream; returns (seconds, applied, rejected)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        call = ch.stream_stream("/baseliner.v1.Ingest/Stream", request_serializer=lambda b: b,
                                response_deserializer=ingest_pb2.IngestResponse.FromString)
        t0 = time.perf_counter()
        applied = rejected = 0
        for resp in call(iter(requests), timeout=3600):
            if resp.WhichOneof("body") == "ack":
                applied += resp.ack.applied
                rejected += len(resp.ack.rejected) + (1 if resp.ack.batch_rejected else 0)
        return time.perf_counter() - t0, applied, rejected


def _per_stream(batches: list[list[FeatureVector]], streams: int, size: int) -> list[list[list[FeatureVector]]]:
    """The windows of ``batches`` split among ``streams`` sensors by container, in batches of ``size``."""
    if streams == 1:
        return [batches]
    own: list[list[FeatureVector]] = [[] for _ in range(streams)]
    slot: dict[str, int] = {}
    for b in batches:
        for v in b:
            own[slot.setdefault(v.identity.container_id, len(slot) % streams)].append(v)
    return [[vs[a : a + size] for a in range(0, len(vs), size)] for vs in own]


def _streams(port: int, requests: list[list[bytes]]) -> tuple[float, int, int]:
    """:func:`_stream` for each list of requests at once (a thread each); seconds until the last ends."""
    if len(requests) == 1:
        return _stream(port, requests[0])
    from concurrent.futures import ThreadPoolExecutor

    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(requests)) as pool:
        done = list(pool.map(lambda r: _stream(port, r), requests))
    return time.perf_counter() - t0, sum(d[1] for d in done), sum(d[2] for d in done)


def end_to_end(args: argparse.Namespace, learn: list[list[FeatureVector]], measure: list[list[FeatureVector]]) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="baseliner-bench-"))
    port, mport = free_port(), free_port()
    accounts = tmp / "accounts.json"
    cmd = ["taskset", "-c", "0", sys.executable, __file__, "--serve-accounted", str(accounts),
           "serve", "--listen", f"127.0.0.1:{port}",
           "--metrics-listen", f"127.0.0.1:{mport}", "--events", str(tmp / "events.jsonl"),
           "--state-dir", str(tmp / "state"), *state_key_args(tmp / "state"), "--log-level", "WARNING",
           "--set", "grpc.max_message_bytes=67108864",
           "--set", f"state.wal={'false' if args.no_wal else 'true'}", f"--set=baseline.stable_confidence={QUIET}",
           *(f"--set={s}" for s in args.set)]
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE)
    try:
        os.sched_setaffinity(0, {1})
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("service did not start") from None
                time.sleep(0.2)
        seqs = [0] * args.streams

        def encode(batches: list[list[FeatureVector]], k: int) -> list[bytes]:
            out = [wire.hello_request_bytes(f"bench-sensor-{k}", "bench", "bench")]
            for b in batches:
                seqs[k] += 1
                out.append(wire.batch_request_bytes(seqs[k], wire.encode_batch_body(b)))
            return out

        # each stream (sensor) sends its own containers' windows, in batches of --batch
        learn_req = [encode(b, k) for k, b in enumerate(_per_stream(learn, args.streams, args.batch))]
        measure_req = [encode(b, k) for k, b in enumerate(_per_stream(measure, args.streams, args.batch))]
        bytes_per_vector = sum(len(r) for req in measure_req for r in req[1:]) / sum(len(b) for b in measure)
        t_learn, applied_learn, _ = _streams(port, learn_req)
        threads0 = _threads(proc.pid)
        proc.send_signal(signal.SIGUSR1)
        cpu0 = cpu_seconds(proc.pid)
        t, applied, rejected = _streams(port, measure_req)
        cpu = cpu_seconds(proc.pid) - cpu0
        proc.send_signal(signal.SIGUSR2)
        threads1 = _threads(proc.pid)
        deadline = time.monotonic() + 10
        while not accounts.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        inside = json.loads(accounts.read_text())
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics") as r:
            text = r.read().decode()
        states = {line.split('"')[1]: float(line.split()[-1]) for line in text.splitlines()
                  if line.startswith("baseliner_baselines{")}
        n = sum(len(b) for b in measure)
        events = (tmp / "events.jsonl").read_text().count("\n") if (tmp / "events.jsonl").exists() else 0
        main_tid = str(proc.pid)
        main_cpu, main_faults = (threads1[main_tid][k] - threads0[main_tid][k] for k in (0, 1))
        others = sum(c for tid, (c, _) in threads1.items() if tid != main_tid) - \
            sum(c for tid, (c, _) in threads0.items() if tid != main_tid)
        us = {
            "parse": inside["parse"], "decode": inside["decode"], "pipeline (apply_block)": inside["pipeline"],
            "write-ahead log append": inside["wal_append"],
            "rest of the servicer": inside["batch"] - inside["decode"] - inside["wal_append"]
            - (inside["pipeline"] if inside.get("nested", 1.0) else 0.0),
            "event loop thread outside the servicer (gRPC, asyncio)": inside["thread"] - inside["batch"]
            - inside["parse"] - (0.0 if inside.get("nested", 1.0) else inside["pipeline"]),
            "other threads (fsync worker, gRPC event engine)": others,
        }
        return {
            "in_service_us_per_vector": {k: v / n * 1e6 for k, v in us.items()},
            "main_thread_cpu_seconds": main_cpu, "main_thread_minor_faults": main_faults,
            "learn_vectors": sum(len(b) for b in learn), "learn_seconds": t_learn,
            "learn_vectors_per_s": applied_learn / t_learn,
            "vectors": n, "applied": applied, "rejected": rejected, "seconds": t,
            "vectors_per_s": applied / t, "us_per_vector": t / n * 1e6, "bytes_per_vector": bytes_per_vector,
            "service_cpu_seconds": cpu, "vectors_per_cpu_s": applied / cpu, "cpu_us_per_vector": cpu / n * 1e6,
            "baseline_states": states, "events_written": events,
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))


def stages(learn: list[list[FeatureVector]], measure: list[list[FeatureVector]]) -> dict:
    """Per-stage cost in this process (one thread), on the same workload, after the same learning."""
    import gc

    from prometheus_client import CollectorRegistry

    gc.collect()
    gc.freeze()  # as the service does after start-up: the benchmark's own workload lists are not scanned
    pipeline = Pipeline(metrics=ServiceMetrics(CollectorRegistry()), sinks=[JsonLinesSink(os.devnull)],
                        stage_clock=time.thread_time, baseline_config=BaselineConfig(stable_confidence=QUIET))
    decoder = serde.Decoder(100_000)
    seq = 0
    for b in learn:
        seq += 1
        msg = vectors_pb2.VectorBatch.FromString(wire.to_columns(b, seq).SerializeToString())
        pipeline.apply_block("s", seq, *decoder.decode_block(msg))
    payloads = [wire.encode_batch_body(b) for b in measure]
    clock = time.thread_time  # CPU time of this thread: other processes on the machine do not count
    n = sum(len(b) for b in measure)
    t = {"parse": 0.0, "decode": 0.0, "validate": 0.0, "transform": 0.0}
    before = dict(pipeline.stage_seconds)
    t_pipeline = 0.0
    for p in payloads:
        t0 = clock()
        msg = vectors_pb2.VectorBatch.FromString(p)
        t1 = clock()
        block, rejected = decoder.decode_block(msg)
        t2 = clock()
        validate_block(block)
        t3 = clock()
        transform_block(block)
        t4 = clock()
        t["parse"] += t1 - t0
        t["decode"] += t2 - t1
        t["validate"] += t3 - t2
        t["transform"] += t4 - t3
        # the pipeline proper (validates again: it is the service's code path, timed on its own)
        seq += 1
        t5 = clock()
        pipeline.apply_block("s", seq, block, rejected)
        t_pipeline += clock() - t5
    after = pipeline.stage_seconds
    score = after["score"] - before["score"]
    route = after["validate"] - before["validate"]
    ev = after["events"] - before["events"]
    us = {k: v / n * 1e6 for k, v in t.items()}
    us["validate_and_route (pipeline)"] = route / n * 1e6
    us["score_and_learn incl. transform (ImageBaseline.process_block)"] = score / n * 1e6
    us["events_and_metrics"] = ev / n * 1e6
    us["pipeline_total (validate..events)"] = t_pipeline / n * 1e6
    return {"us_per_vector": us, "pipeline": pipeline}


def sizes(pipeline: Pipeline, measure: list[list[FeatureVector]]) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="baseliner-bench-state-"))
    st = StateStore(tmp, Keyring.of("k" * 32))
    st.write(StateStore.snapshot(pipeline, everything=True))
    file_sizes = sorted(st.sizes.values())
    # live memory of one baseline: build one from scratch under tracemalloc on one image's windows
    key = next(iter(pipeline.baselines))
    vectors = [v for b in measure for v in b if v.identity.image == key]
    tracemalloc.start()
    snap0 = tracemalloc.take_snapshot()
    b = ImageBaseline(key, BaselineConfig(stable_confidence=QUIET))
    for i in range(0, len(vectors), 50):
        b.process(vectors[i:i + 50])
    snap1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    live = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
    meta, arrays = b.to_state()
    return {
        "state_file_bytes_max": max(file_sizes), "state_file_bytes_median": int(np.median(file_sizes)),
        "state_arrays_bytes": int(sum(a.nbytes for a in arrays.values())),
        "state_meta_json_bytes": len(json.dumps(meta)),
        "live_bytes_one_baseline": live, "windows_in_that_baseline": len(vectors),
    }


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--serve-accounted":  # the service side of the end-to-end run
        _serve_accounted(sys.argv[2], sys.argv[3:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vectors", type=int, default=100_000, help="vectors in the measured phase")
    ap.add_argument("--batch", type=int, default=500, help="vectors per batch")
    ap.add_argument("--streams", type=int, default=1,
                    help="sensors streaming at once, each with its own containers (a thread each)")
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--containers", type=int, default=50, help="containers per image")
    ap.add_argument("--ngrams", type=int, default=0, help="n-gram buckets per vector (0 = none)")
    ap.add_argument("--ngram-orders", default=",".join(map(str, DEFAULT_NGRAM_ORDERS)),
                    help="orders the entries are spread over, equally (default: the sensor's)")
    ap.add_argument("--learn-rounds", type=int, default=0, help="learning rounds (default: enough to detect)")
    ap.add_argument("--no-wal", action="store_true",
                    help="serve without the write-ahead log (acks then mean applied in memory, not durable)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra `baseliner serve --set` for the end-to-end run (e.g. state.wal_fsync=group)")
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--skip-stages", action="store_true", help="only the end-to-end run (no stages, no sizes)")
    ap.add_argument("--json", help="write results here as JSON")
    args = ap.parse_args()

    cfg = BaselineConfig(stable_confidence=QUIET)
    orders = tuple(sorted({int(o) for o in args.ngram_orders.split(",")}))
    if not orders or not set(orders) <= set(ORDERS):
        ap.error(f"--ngram-orders: a subset of {ORDERS}")
    wl = Workload(args.images, args.containers, args.ngrams, ngram_orders=orders)
    per_round = args.images * args.containers
    # enough windows per image and event time to leave learning: min windows and min seconds, with margin
    rounds = args.learn_rounds or max(
        int(cfg.min_learn_windows / args.containers) + 2, int(cfg.min_learn_seconds / WINDOW) + 2
    )
    learn = wl.batches(rounds * per_round, args.batch)
    measure = wl.batches(args.vectors, args.batch)
    print(f"workload: {args.images} images x {args.containers} containers, batch {args.batch}, "
          f"{args.streams} stream(s), "
          f"{sum(map(len, learn))} learning + {sum(map(len, measure))} measured vectors, "
          f"n-grams {args.ngrams} (orders {args.ngram_orders})",
          flush=True)
    results: dict = {"args": vars(args)}
    if not args.skip_e2e:
        e2e = end_to_end(args, learn, measure)
        results["end_to_end"] = e2e
        print(f"end to end (service on 1 core): {e2e['vectors_per_s']:.0f} vectors/s wall "
              f"({e2e['us_per_vector']:.1f} us/vector); service CPU {e2e['vectors_per_cpu_s']:.0f} vectors per "
              f"CPU-second ({e2e['cpu_us_per_vector']:.1f} us/vector), {e2e['applied']} applied, "
              f"{e2e['rejected']} rejected, "
              f"{e2e['bytes_per_vector']:.0f} wire bytes/vector; learning phase {e2e['learn_vectors_per_s']:.0f}"
              f" vectors/s; baselines {e2e['baseline_states']}; {e2e['events_written']} events", flush=True)
        print(f"inside the service (CPU us/vector; event loop thread {e2e['main_thread_cpu_seconds']:.2f} s, "
              f"{e2e['main_thread_minor_faults']} minor page faults):")
        for k, v in e2e["in_service_us_per_vector"].items():
            print(f"  {k:58s} {v:8.2f}")
    if not args.skip_stages:
        os.sched_setaffinity(0, {0})
        st = stages(learn, measure)
        results["stages_us_per_vector"] = st["us_per_vector"]
        print("per stage (CPU us/vector, one thread, no gRPC):")
        for k, v in st["us_per_vector"].items():
            print(f"  {k:58s} {v:8.2f}")
        sz = sizes(st["pipeline"], measure)
        results["sizes"] = sz
        print(f"baseline state file: max {sz['state_file_bytes_max']} B, median {sz['state_file_bytes_median']} B "
              f"(arrays {sz['state_arrays_bytes']} B uncompressed, meta {sz['state_meta_json_bytes']} B); "
              f"live memory of one baseline after {sz['windows_in_that_baseline']} windows: "
              f"{sz['live_bytes_one_baseline']} B")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
