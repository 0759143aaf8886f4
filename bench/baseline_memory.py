"""Resident memory per image baseline: the RSS slope of a pipeline holding more and more images.

    .venv/bin/python bench/baseline_memory.py [--images 1000,10000] [--windows 40] [--ngrams 200] [--pool 4]

A :class:`baseliner.service.pipeline.Pipeline` with the default model (as ``baseliner serve`` builds it, no
spilling) learns ``--windows`` windows of every image (two containers an image, 30 s windows, 500-window
batches of many images, as a sensor sends them).  Each window carries ``--ngrams`` n-gram entries spread
over the orders the default sensor counts (4 and 6), drawn from a pool of ``--pool`` x as many buckets the
image uses (so an image shows more distinct grams over its life than in one window), syscall counts of 30
syscalls, network counters and endpoints.  After each step of ``--images`` the process's RSS is read
(after a garbage collection); the slope between two steps is the memory one more resident baseline costs.

With ``--restore N`` it then fills the pipeline up to ``N`` images with baselines restored from the state of
the learnt ones (``ImageBaseline.to_state`` / ``from_state`` under new image keys, as a restarting service
loads them), which is how 100,000 resident images are measured without learning each one here.

It then says what a baseline holds: the bytes of every NumPy array reachable from one baseline, by part,
and the rest of the slope (Python objects: dicts, sets, strings, the detectors' attributes, allocator slack).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from baseliner.models.baseline import ImageBaseline  # noqa: E402
from baseliner.models.block import VectorBlock  # noqa: E402
from baseliner.models.ngrams import OFFSETS, ORDER_BUCKETS, SENSOR_ORDERS  # noqa: E402
from baseliner.models.rate_features import SYSCALL_VOCABULARY  # noqa: E402
from baseliner.models.vector import Endpoint, FeatureVector, Identity  # noqa: E402
from baseliner.service.config import PipelineConfig  # noqa: E402
from baseliner.service.pipeline import Pipeline  # noqa: E402
from procs import rss  # noqa: E402

T0 = 1.76e9
WINDOW = 30.0
CONTAINERS = 2


class Images:
    """Image ``i``'s profile (syscalls, rates, n-gram pool) made from its own seed, so any image can be made
    again without keeping all of them."""

    def __init__(self, ngrams: int, pool: int) -> None:
        self.ngrams, self.pool = ngrams, pool
        self.vocab = list(SYSCALL_VOCABULARY)

    def windows(self, i: int, rounds: int, round0: int) -> list[FeatureVector]:
        r = random.Random(i)
        g = np.random.default_rng([i, round0])
        calls = r.sample(self.vocab, 30)
        rates = {c: r.uniform(1, 2000) for c in calls}
        per = self.ngrams // len(SENSOR_ORDERS)
        pools = [OFFSETS[n] + np.random.default_rng(i).choice(ORDER_BUCKETS[n], per * self.pool, replace=False)
                 for n in SENSOR_ORDERS]
        out = []
        for k in range(round0, round0 + rounds):
            t = T0 + WINDOW * k
            for c in range(CONTAINERS):
                ident = Identity(f"node-{c}", f"{i:08d}{c:04d}" * 5, f"registry.local/team/app{i}", "1.0", "",
                                 f"app{i}-{c}", f"app{i}-{c}-x", f"ns{i % 5}")
                f = r.uniform(0.8, 1.25)
                keys = np.concatenate([g.choice(p, per, replace=False) for p in pools]).tolist()
                grams = dict(zip(keys, g.integers(1, 501, len(keys)).tolist(), strict=True))
                out.append(FeatureVector(
                    ident, t, WINDOW, {s: int(rate * WINDOW * f) for s, rate in rates.items()}, ngrams=grams,
                    connects=r.randint(2, 6), accepts=r.randint(10, 30), bytes_sent=int(2e5 * f),
                    bytes_received=int(5e4 * f), packets_sent=int(300 * f), packets_received=int(280 * f),
                    remote_addresses=2, remote_ports=2, endpoints=[Endpoint("10.0.3.17", 5432)],
                    executables=[f"/usr/bin/app{i}"] if k == 0 else [], seconds_since_start=86400.0 + WINDOW * k,
                ))
        return out


def learn(pipe: Pipeline, images: Images, lo: int, hi: int, windows: int, seq: list[int]) -> None:
    """Images ``[lo, hi)`` learn ``windows`` windows each, in 500-window batches of 10-image rounds."""
    rounds = max(1, windows // CONTAINERS)
    for g in range(lo, hi, 10):
        step = 5
        for r0 in range(0, rounds, step):
            vectors = [v for i in range(g, min(g + 10, hi)) for v in images.windows(i, min(step, rounds - r0), r0)]
            vectors.sort(key=lambda v: v.window_start)
            for b in range(0, len(vectors), 500):
                seq[0] += 1
                chunk = vectors[b:b + 500]
                pipe.apply_block("bench", seq[0], VectorBlock.from_vectors(chunk, list(range(len(chunk)))))


def array_parts(b: ImageBaseline) -> dict[str, int]:
    """Bytes of the NumPy arrays reachable from a baseline, by attribute path (two levels)."""
    parts: dict[str, int] = {}
    seen: set[int] = set()

    def walk(obj: Any, path: str, depth: int) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            key = ".".join(path.split(".")[:3])
            parts[key] = parts.get(key, 0) + obj.nbytes
        elif isinstance(obj, dict) and depth < 6:
            for k, v in obj.items():
                walk(v, f"{path}[{k}]", depth + 1)
        elif isinstance(obj, (list, tuple)) and depth < 6:
            for k, v in enumerate(obj):
                walk(v, f"{path}[{k}]", depth + 1)
        elif hasattr(obj, "__dict__") and depth < 6 and not isinstance(obj, type):
            for k, v in vars(obj).items():
                walk(v, f"{path}.{k}" if path else k, depth + 1)

    walk(b, "", 0)
    return dict(sorted(parts.items(), key=lambda kv: -kv[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", default="1000,10000", help="image counts to read RSS at (ascending)")
    ap.add_argument("--windows", type=int, default=64, help="windows learnt per image (64: enough to detect)")
    ap.add_argument("--ngrams", type=int, default=200, help="n-gram entries per window (0 = none)")
    ap.add_argument("--pool", type=int, default=4, help="an image's distinct buckets, as a multiple of --ngrams")
    ap.add_argument("--restore", type=int, default=0, help="then fill up to this many images from saved states")
    ap.add_argument("--json", help="write results here as JSON")
    args = ap.parse_args()
    steps = [int(s) for s in args.images.split(",")]
    pipe = Pipeline(PipelineConfig(max_baselines=max(steps), max_containers=CONTAINERS * max(steps)))
    images = Images(args.ngrams, args.pool)
    seq = [0]
    points: list[tuple[int, int]] = []
    done = 0
    for n in steps:
        learn(pipe, images, done, n, args.windows, seq)
        done = n
        gc.collect()
        points.append((n, rss(os.getpid())))
        print(f"{n:7d} images resident: RSS {points[-1][1] / 2**20:8.1f} MiB", flush=True)
    if args.restore > done:
        states = [b.to_state() for b in list(pipe.baselines.values())[:100]]
        for i in range(done, args.restore):
            meta, arrays = states[i % len(states)]
            pipe.baselines[f"restored/app{i}:1.0"] = ImageBaseline.from_state({**meta, "key": f"restored/app{i}:1.0"},
                                                                              arrays)
        del states
        gc.collect()
        points.append((args.restore, rss(os.getpid())))
        print(f"{args.restore:7d} images resident ({args.restore - done} restored from saved states): RSS "
              f"{points[-1][1] / 2**20:8.1f} MiB", flush=True)
    result: dict[str, Any] = {"args": vars(args), "rss": points}
    for (n0, r0), (n1, r1) in zip(points, points[1:], strict=False):
        slope = (r1 - r0) / (n1 - n0)
        result.setdefault("bytes_per_baseline", []).append([n0, n1, slope])
        print(f"RSS slope {n0} -> {n1} images: {slope / 1024:.1f} KiB per resident baseline")
    b = next(iter(pipe.baselines.values()))
    parts = array_parts(b)
    result["array_parts"] = parts
    result["state"] = b.state.value
    print(f"one baseline ({b.state.value}, {b.windows_learned} windows learnt): NumPy arrays by part "
          f"({sum(parts.values()) / 1024:.1f} KiB in all)")
    for k, v in parts.items():
        print(f"  {k:40s} {v / 1024:8.1f} KiB")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
