"""The operator console's pages with 10,000 images and 100,000 anomalies held: how long each page takes.

    .venv/bin/python bench/console_pages.py [--images 10000] [--anomalies 100000] [--requests 20]

1. Starts the service in-process (``BaselinerServer``: gRPC, the console on a free loopback port, a state
   directory with ``pipeline.max_resident_baselines=--resident``, as a service with that many images runs: a
   loaded baseline takes about 0.7 MB) and ``console.max_anomalies=--anomalies``.
2. Teaches it ``--images`` images, 2 containers each on 3 nodes in 20 namespaces, ``--windows`` windows per
   container, through ``Pipeline.apply_blocks`` (the ingest path after decoding; the console's score observer
   and event sink run as in the service), evicting baselines to disk between calls as the service's applier does.
3. Hands the console ``--anomalies`` anomaly events through its event-sink interface: one real event of the
   pipeline (a reverse shell) varied over images, containers, severities and the last day of event time (made
   beforehand: the time and the memory growth reported are the console's).
4. Logs in and fetches each page ``--requests`` times in turn from a client thread (one connection at a time,
   over loopback), and prints the median and 95th percentile latency and the size of each page, the time to
   feed the events, and the growth of the process's resident memory per anomaly held.

First, what the console costs on the ingest path: ``Pipeline.apply_blocks`` on batches of 500 windows with and
without its history attached, alternating (``--ingest-rounds``; see ``ingest_cost``); and what it keeps per image
(``image_memory``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from baseliner.models.block import VectorBlock  # noqa: E402
from baseliner.models.integrity import new_key  # noqa: E402
from baseliner.models.vector import Endpoint, FeatureVector, Identity  # noqa: E402
from baseliner.service import config as config_mod  # noqa: E402
from baseliner.service.server import BaselinerServer  # noqa: E402
from baseliner.service.sinks.events import CallbackSink, iso8601  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

TOKEN = "bench-operator-token-0123456789"
T0 = 1.767e9
WINDOW = 30.0
SEVERITIES = ("low", "low", "low", "medium", "medium", "high", "critical")


def window(image: int, container: int, i: int, shell: bool = False) -> FeatureVector:
    r = random.Random(image * 7919 + container * 104729 + i)
    ident = Identity(f"node-{(image + container) % 3}", f"{image:05d}{container:02d}" + "ab" * 26, f"app-{image:05d}",
                     "1.0", "", f"app-{image:05d}", f"app-{image:05d}-{container}", f"ns-{image % 20:02d}")
    v = FeatureVector(ident, T0 + WINDOW * i, WINDOW,
                      {"read": 500 + r.randint(0, 40), "write": 300 + r.randint(0, 30), "epoll_wait": 200,
                       "accept4": 20 + r.randint(0, 3), "close": 40 + r.randint(0, 5)},
                      accepts=20, connects=4, bytes_sent=100_000 + r.randint(0, 5000), bytes_received=20_000,
                      packets_sent=100, packets_received=90, remote_addresses=3, remote_ports=1,
                      endpoints=[Endpoint("10.0.0.2", 5432)], executables=["/usr/sbin/app"] if i == 0 else [],
                      seconds_since_start=3600.0 + WINDOW * i)
    if shell:
        v.executables = ["/bin/sh"]
        v.syscalls["execve"] = 2
        v.execs = 2
        v.endpoints = [*v.endpoints, Endpoint("203.0.113.7", 4444)]
    return v


def teach(server: BaselinerServer, images: int, windows: int, chunk: int = 100) -> None:
    """Every image's windows through the pipeline, ``chunk`` images a call; baselines spill in between."""
    p = server.pipeline
    seq = 0
    for first in range(0, images, chunk):
        vs = [window(im, c, i) for i in range(windows) for im in range(first, min(images, first + chunk))
              for c in range(2)]
        seq += 1
        p.apply_blocks([("bench", seq, VectorBlock.from_vectors(vs), [])])
        p.baselines.evict_excess()  # type: ignore[attr-defined]


def real_event(server: BaselinerServer, windows: int) -> dict[str, Any]:
    """One anomaly event as the pipeline writes it (image 0 detects from its own windows, then a shell)."""
    events: list[dict[str, Any]] = []
    server.pipeline.sinks.append(CallbackSink(events.append))
    vs = [window(0, c, i) for i in range(windows, windows + 60) for c in range(2)]
    server.pipeline.apply_blocks([("bench-0", 1, VectorBlock.from_vectors(vs), [])])
    shell = window(0, 0, windows + 60, shell=True)
    server.pipeline.apply_blocks([("bench-0", 2, VectorBlock.from_vectors([shell]), [])])
    server.pipeline.sinks.pop()
    assert events, "no anomaly: the image did not detect"
    return events[0]


def make_events(server: BaselinerServer, template: dict[str, Any], n: int, images: int) -> list[dict[str, Any]]:
    """``n`` variations of ``template`` over the images, their containers and the last day of event time."""
    history = server.console.pages.history
    r = random.Random(1)
    day = 86_400.0
    t_end = history.now
    events = []
    for k in range(n):
        im, c = r.randrange(images), r.randrange(2)
        t = t_end - day * (1 - k / n)
        ident = window(im, c, 0).identity
        ev = dict(template, event_id=f"{k:020x}", node=ident.node, pod=ident.pod, namespace=ident.namespace,
                  severity=SEVERITIES[k % len(SEVERITIES)], score=template["score"] * (1 + r.random()),
                  container={"id": ident.container_id, "name": ident.container_name},
                  image={**template["image"], "key": f"app-{im:05d}:1.0", "repository": f"app-{im:05d}"},
                  first_seen=iso8601(t), last_seen=iso8601(t + WINDOW), window={"start": iso8601(t),
                                                                                 "seconds": WINDOW},
                  **{"@timestamp": iso8601(t + WINDOW)})
        events.append(ev)
    return events


def feed_events(server: BaselinerServer, events: list[dict[str, Any]]) -> float:
    """The events to the console's history, as the pipeline's sinks hand them over; seconds taken."""
    history = server.console.pages.history
    started = time.perf_counter()
    for k, ev in enumerate(events):
        history.emit(ev)
        if k % 100 == 99:
            history.flush()
    history.flush()
    return time.perf_counter() - started


def ingest_cost(rounds: int) -> None:
    """CPU time of ``Pipeline.apply_blocks`` per window with and without the console's history attached (its
    score observer and event sink), batches of 500 windows (10 images x 50 containers, one round each), the two
    alternating batch by batch in one process; printed as microseconds per window."""
    from baseliner.service.config import PipelineConfig
    from baseliner.service.console.history import History
    from baseliner.service.pipeline import Pipeline

    p = Pipeline(PipelineConfig())
    p.baseline_config.min_learn_windows, p.baseline_config.min_learn_seconds = 20, 0
    p.baseline_config.stable_confidence = 0.0
    history = History()

    def block(i: int) -> VectorBlock:
        return VectorBlock.from_vectors([window(im, c, i) for im in range(10) for c in range(50)])

    for i in range(40):  # every image detects
        p.apply_blocks([("bench", i + 1, block(i), [])])
    blocks = [block(40 + i) for i in range(2 * rounds)]
    cost: dict[bool, list[float]] = {False: [], True: []}
    for k, b in enumerate(blocks):
        on = k % 2 == 1
        p.score_observers[:] = [history.observe] if on else []
        p.sinks[:] = [history] if on else []
        t0 = time.process_time()
        p.apply_blocks([("bench", 41 + k, b, [])])
        cost[on].append((time.process_time() - t0) / len(b) * 1e6)
    off_us, on_us = statistics.median(cost[False]), statistics.median(cost[True])
    print(f"ingest: Pipeline.apply_blocks, median CPU per window over {rounds} batches of 500 each: "
          f"{off_us:.2f} us without the console, {on_us:.2f} us with it ({(on_us / off_us - 1) * 100:+.1f}%)")


def image_memory(images: int = 2000, points: int = 240) -> None:
    """Bytes the console keeps per image (tracemalloc): a full chart ring and 2 containers each."""
    import tracemalloc
    from types import SimpleNamespace

    from baseliner.service.console.history import ImageActivity

    tracemalloc.start()
    kept = []
    for i in range(images):
        act = ImageActivity(points, 256)
        for t in range(points):
            act.add_point(float(t), 1.0, 2.0, 0)
        for c in range(2):
            ident = window(i, c, 0).identity
            act.note(SimpleNamespace(node=ident.node, container_id=ident.container_id,
                                     container_name=ident.container_name, pod=ident.pod, namespace=ident.namespace))
        kept.append(act)
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(f"per image: {size / images:,.0f} bytes ({points} chart points, 2 containers; tracemalloc over {images:,})")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def fetch(url: str, cookie: str) -> tuple[float, int, int]:
    req = urllib.request.Request(url, headers={"Cookie": cookie})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as r:
        body = r.read()
        status = r.status
    return time.perf_counter() - t0, len(body), status


def login(base: str) -> str:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a: Any, **k: Any) -> None:
            return None

    data = urllib.parse.urlencode({"token": TOKEN, "next": "/"}).encode()
    try:
        urllib.request.build_opener(NoRedirect).open(urllib.request.Request(base + "/login", data=data), timeout=10)
    except urllib.error.HTTPError as e:  # the 303
        return str(e.headers["Set-Cookie"]).split(";")[0]
    raise RuntimeError("login did not redirect")


async def measure(args: argparse.Namespace, tmp: str) -> None:
    tokens = Path(tmp) / "ops.tokens"
    tokens.write_text(f"bench {TOKEN}\n")
    keys = Path(tmp) / "state.keys"
    keys.write_text(new_key() + "\n")
    cfg = config_mod.load(None, environ={}, overrides=[
        ("grpc.listen", "127.0.0.1:0"), ("metrics.listen", ""), ("events.output", "none"),
        ("state.dir", str(Path(tmp) / "state")), ("state.wal", "false"), ("state.save_interval_seconds", "3600"),
        ("state.key_file", str(keys)), ("pipeline.max_resident_baselines", str(args.resident)),
        ("pipeline.max_baselines", str(args.images + 10)),
        ("console.listen", "127.0.0.1:0"), ("grpc.admin_tokens_file", str(tokens)),
        ("console.max_anomalies", str(args.anomalies)), ("baseline.min_learn_windows", "20"),
        ("baseline.min_learn_seconds", "0"), ("baseline.stable_confidence", "0"),
    ])
    server = BaselinerServer(cfg, registry=CollectorRegistry())
    await server.start()
    try:
        t0 = time.perf_counter()
        template = real_event(server, 40)
        teach(server, args.images, args.windows)
        taught = time.perf_counter() - t0
        events = make_events(server, template, args.anomalies, args.images)
        gc.collect()
        before = rss()
        fed = feed_events(server, events)
        gc.collect()
        grown = rss() - before
        del events
        history = server.console.pages.history
        print(f"images {len(server.pipeline.baselines):,} ({args.resident} resident), taught in {taught:.1f} s; "
              f"anomalies held {len(history.anomalies):,}, fed in {fed:.2f} s "
              f"({fed / args.anomalies * 1e6:.1f} us each); resident memory +{grown / 2**20:.0f} MiB "
              f"({grown / args.anomalies:,.0f} bytes per anomaly)")
        base = server.console.url.rstrip("/")
        cookie = await asyncio.to_thread(login, base)
        spilled = next(iter(server.pipeline.baselines.spilled), "app-00001:1.0")  # type: ignore[attr-defined]
        newest = next(history.newest())
        pages = {
            "Fleet, first page": "/",
            "Fleet, sorted by anomalies in the last day": "/?sort=day&desc=1",
            "Fleet, one namespace": "/?namespace=ns-07",
            "Fleet, page 150": "/?page=150",
            "Image (spilled baseline, read from disk)": "/image?" + urllib.parse.urlencode({"key": spilled}),
            "Image (resident baseline)": "/image?" + urllib.parse.urlencode({"key": newest.image}),
            "Anomalies, newest first": "/anomalies",
            "Anomalies, sorted by score": "/anomalies?sort=score&desc=1",
            "Anomalies of one image": "/anomalies?" + urllib.parse.urlencode({"image": newest.image}),
            "Anomalies, critical, page 40": "/anomalies?severity=critical&page=40",
            "Anomaly": f"/anomaly/{newest.event_id}",
            "Live": "/live",
        }
        print("\n| page | median ms | p95 ms | KiB |\n| --- | ---: | ---: | ---: |")
        for name, path in pages.items():
            times, size = [], 0
            for _ in range(args.requests):
                elapsed, size, status = await asyncio.to_thread(fetch, base + path, cookie)
                assert status == 200, (path, status)
                times.append(elapsed * 1000)
            times.sort()
            p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
            print(f"| {name} | {statistics.median(times):.1f} | {p95:.1f} | {size / 1024:.0f} |")
    finally:
        await server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--anomalies", type=int, default=100_000)
    ap.add_argument("--windows", type=int, default=4, help="windows per container taught (default 4)")
    ap.add_argument("--resident", type=int, default=500, help="pipeline.max_resident_baselines (default 500)")
    ap.add_argument("--requests", type=int, default=20, help="fetches of each page (default 20)")
    ap.add_argument("--ingest-rounds", type=int, default=200,
                    help="batches with and without the console for its cost on the ingest path (0: skip)")
    args = ap.parse_args()
    if args.ingest_rounds:
        ingest_cost(args.ingest_rounds)
    image_memory()
    with tempfile.TemporaryDirectory(prefix="baseliner-console-bench-") as tmp:
        asyncio.run(measure(args, tmp))


if __name__ == "__main__":
    main()
