"""Flood of distinct image names against one ``baseliner serve``: memory and label cardinality stay bounded.

    python bench/reliability_flood.py --images 100000 --resident 1000 --batch 500

Every vector names a new image (``flood-N:1.0``).  The service runs with
``pipeline.max_resident_baselines`` (least recently used baselines spill to the state directory) and the
default metric label caps.  Reported: the service's resident memory every ``--sample`` images, the
number of baselines in memory and on disk, the number of distinct ``image`` label values in the
Prometheus exposition, and the cost per new image.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from baseliner.models.vector import FeatureVector, Identity  # noqa: E402
from baseliner.protos.v1 import ingest_pb2  # noqa: E402
from baseliner.sensor import wire  # noqa: E402
from procs import free_port, rss, state_key_args  # noqa: E402


def image_labels(metrics_port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30) as r:
        text = r.read().decode()
    return len({line.split('image="', 1)[1].split('"', 1)[0] for line in text.splitlines()
                if line.startswith("baseliner_anomaly_score_count{")})


async def run(args: argparse.Namespace) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="baseliner-flood-"))
    port, mport = free_port(), free_port()
    target = f"127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "baseliner.service.cli", "serve", "--listen", target, "--metrics-listen",
           f"127.0.0.1:{mport}", "--state-dir", str(state), *state_key_args(state), "--events", "none",
           "--log-level", "WARNING",
           "--set", f"pipeline.max_resident_baselines={args.resident}", "--set", "pipeline.max_baselines=1000000",
           "--set", "pipeline.max_containers=10000"]
    log_path = state.parent / f"{state.name}-serve.log"
    with open(log_path, "wb") as logf:
        serve = subprocess.Popen(cmd, cwd=REPO, stdout=logf, stderr=subprocess.STDOUT)
    samples: list[tuple[int, float, float]] = []
    try:
        async with grpc.aio.insecure_channel(target) as ch:
            await asyncio.wait_for(ch.channel_ready(), 60)
            call = ch.stream_stream("/baseliner.v1.Ingest/Stream", request_serializer=lambda b: b,
                                    response_deserializer=ingest_pb2.IngestResponse.FromString)()
            await call.write(wire.hello_request_bytes("flood", "node-1", "bench"))
            await call.read()
            t0 = time.perf_counter()
            sent = 0
            seq = 0
            while sent < args.images:
                seq += 1
                vs = [FeatureVector(Identity("node-1", f"c{(sent + i) % 10000}", f"flood-{sent + i}", "1.0"),
                                    1.75e9 + 10.0 * seq, 10.0, {"read": 100, "write": 50})
                      for i in range(min(args.batch, args.images - sent))]
                await call.write(wire.batch_request_bytes(seq, wire.encode_batch_body(vs)))
                ack = (await call.read()).ack
                if ack.applied != len(vs):
                    raise RuntimeError(f"batch {seq}: {ack}")
                sent += len(vs)
                if sent % args.sample < args.batch or sent == args.images:
                    samples.append((sent, time.perf_counter() - t0, rss(serve.pid) / 2**20))
                    print(f"{sent:>8} images  {samples[-1][1]:8.1f}s  rss {samples[-1][2]:8.1f} MiB", flush=True)
            elapsed = time.perf_counter() - t0
            await call.done_writing()
        labels = image_labels(mport)
        on_disk = len(list((state / "baselines").glob("*.state")))
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(600)
        except subprocess.TimeoutExpired:
            serve.kill()
    return {
        "command": " ".join(["python bench/reliability_flood.py", *sys.argv[1:]]),
        "images": args.images, "max_resident_baselines": args.resident, "seconds": round(elapsed, 1),
        "ms_per_new_image": round(1000 * elapsed / args.images, 2),
        "rss_mib": [(n, round(r, 1)) for n, _, r in samples],
        "baseline_files_on_disk": on_disk, "image_label_values": labels,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=100_000)
    p.add_argument("--resident", type=int, default=1000)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--sample", type=int, default=5000)
    p.add_argument("--out")
    args = p.parse_args()
    res = asyncio.run(run(args))
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
