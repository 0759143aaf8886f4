"""Sharded service: throughput of 1, 2 and 3 shards, the sensor's routing cost, handover and recovery times.

    .venv/bin/python bench/shards.py [--hours 12] [--rounds 2]

What it does (real processes on loopback; ``docs/sharding.md``, figures in ``docs/benchmarks.md``):

1. **Throughput**: N ``baseliner serve`` shards (N = 1, 2, 3, alternating, ``--rounds`` times) and three
   ``baseliner sensor --source replay`` processes (one recording per node, 11 image repositories, the sensor's
   default batching, as fast as they go) on this machine's cores: the shards and the senders share them.
   Figures: vectors acknowledged per wall second, and vectors per CPU-second of all shards together (from
   /proc), which is what capacity planning needs (one shard uses at most one core).
2. **Routing cost in the sensor**: CPU time per vector of ``ShardRouter.submit`` with 1 and 3 shards against
   ``Transport.submit`` alone (the same windows, encoded into batches and buffered; no service: the streams
   never connect), alternating in one run.
3. **Handover**: two shards learn, a third is added to the list; the time from the list change until every
   shard is settled, and the time per routing key pulled (``baseliner_shard_handover_seconds``).
4. **Recovery after kill -9**: three shards while the sensors stream; one is killed and started again at once:
   the time from its start to serving (its log replayed) and until the sensors have delivered everything.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from baseliner.models.integrity import new_key  # noqa: E402

from bench.procs import cpu_seconds  # noqa: E402
from tests.reliability_procs import free_port  # noqa: E402
from tests.shard_procs import NODES, Shard, make_inputs, sensor, shard_list, start_shards, statuses  # noqa: E402


def _run_sensors(root: Path, targets: list[str], inputs: dict[str, Path], extra: tuple[str, ...] = ()) -> float:
    t0 = time.monotonic()
    procs = [sensor(targets[i % len(targets)], inputs[n], n, root / f"sensor-{n}.log", extra)
             for i, n in enumerate(NODES)]
    for p in procs:
        if p.wait(1200) != 0:
            raise RuntimeError(f"a sensor failed: {root}")
    return time.monotonic() - t0


def throughput(inputs: dict[str, Path], total: int, rounds: int) -> dict[int, list[tuple[float, float]]]:
    out: dict[int, list[tuple[float, float]]] = {1: [], 2: [], 3: []}
    for r in range(rounds):
        for n in (1, 2, 3):
            root = Path(tempfile.mkdtemp(prefix=f"bench-shards-{n}-"))
            shards, _ = start_shards(root, [f"s{i}" for i in range(n)])
            try:
                cpu0 = sum(cpu_seconds(s.proc.pid) for s in shards.values())  # type: ignore[union-attr]
                wall = _run_sensors(root, [s.target for s in shards.values()], inputs)
                cpu = sum(cpu_seconds(s.proc.pid) for s in shards.values()) - cpu0  # type: ignore[union-attr]
            finally:
                for s in shards.values():
                    s.stop()
            out[n].append((total / wall, total / cpu))
            print(f"round {r + 1}, {n} shard(s): {total / wall:,.0f} vectors/s wall, {total / cpu:,.0f} vectors per "
                  f"shard CPU-second ({cpu:.1f} CPU-s over {wall:.1f} s)", flush=True)
    return out


def routing_cost(inputs: dict[str, Path], repeats: int = 5) -> dict[str, float]:
    """CPU microseconds per vector of submit, by path (median of ``repeats`` alternating runs)."""
    from baseliner.models.shards import Shard as Entry
    from baseliner.models.shards import ShardMap
    from baseliner.sensor.buffer import MemoryBuffer
    from baseliner.sensor.replay import ReplaySource
    from baseliner.sensor.routing import ShardRouter
    from baseliner.sensor.transport import Transport

    windows = list(ReplaySource(inputs[NODES[0]]))
    vectors = sum(len(w) for w in windows)
    dead = [f"127.0.0.1:{free_port()}" for _ in range(3)]

    def big() -> MemoryBuffer:
        return MemoryBuffer(max_batches=1_000_000, max_bytes=1 << 34)

    async def one(kind: str) -> float:
        if kind == "transport":
            t: object = Transport(dead[0], sensor_id="b", node="b", buffer=big(), on_full="drop")
        else:
            n = 1 if kind == "router-1" else 3
            t = ShardRouter([dead[0]], sensor_id="b", node="b", make_buffer=lambda _: big(), on_full="drop",
                            max_held=10**9)
            t._apply_map(ShardMap(1, [Entry(f"s{i}", dead[i]) for i in range(n)]), persist=False)  # type: ignore[attr-defined]
        c0 = time.process_time()
        for w in windows:
            await t.submit(w, flush=False)  # type: ignore[attr-defined]
        c = time.process_time() - c0
        await t.close(0.1)  # type: ignore[attr-defined]
        return c / vectors * 1e6

    got: dict[str, list[float]] = {"transport": [], "router-1": [], "router-3": []}
    for _ in range(repeats):
        for kind in got:
            got[kind].append(asyncio.run(one(kind)))
    return {k: statistics.median(v) for k, v in got.items()}


def _metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    m = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def handover(inputs: dict[str, Path]) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="bench-handover-"))
    mports = {n: free_port() for n in ("s0", "s1", "s2")}
    shards, list_file = start_shards(root, ["s0", "s1"])
    for n, s in shards.items():  # with a metrics endpoint
        s.stop()
        s.extra += ["--metrics-listen", f"127.0.0.1:{mports[n]}"]
        s.start()
    try:
        _run_sensors(root, [s.target for s in shards.values()], inputs)
        third = Shard(root, "s2", free_port(), list_file, ["--metrics-listen", f"127.0.0.1:{mports['s2']}"])
        third.start()
        shards["s2"] = third
        t0 = time.monotonic()
        list_file.write_text(shard_list({n: s.port for n, s in shards.items()}))
        while True:
            st = statuses([s.target for s in shards.values()])
            if all(x.epoch >= 2 and x.settled for x in st):
                break
            time.sleep(0.05)
        settled = time.monotonic() - t0
        count = _metric(mports["s2"], "baseliner_shard_handover_seconds_count")
        total = _metric(mports["s2"], "baseliner_shard_handover_seconds_sum")
        count += _metric(mports["s0"], "baseliner_shard_handover_seconds_count")
        total += _metric(mports["s0"], "baseliner_shard_handover_seconds_sum")
        count += _metric(mports["s1"], "baseliner_shard_handover_seconds_count")
        total += _metric(mports["s1"], "baseliner_shard_handover_seconds_sum")
    finally:
        for s in shards.values():
            s.stop()
    return {"settled_s": settled, "keys": count, "per_key_s": total / count if count else float("nan")}


def recovery(inputs: dict[str, Path]) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="bench-recovery-"))
    shards, _ = start_shards(root, ["s0", "s1", "s2"])
    targets = [s.target for s in shards.values()]
    keys = root / "spool.keys"
    keys.write_text(new_key() + "\n")
    procs = [sensor(targets[i], inputs[n], n, root / f"sensor-{n}.log",
                    ("--spool-dir", str(root / f"spool-{n}"), "--spool-key-file", str(keys), "--speed", "3000"))
             for i, n in enumerate(NODES)]
    try:
        time.sleep(8)
        victim = shards["s1"]
        os.kill(victim.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
        victim.proc.wait()  # type: ignore[union-attr]
        t0 = time.monotonic()
        victim.start()
        serving = time.monotonic() - t0
        for p in procs:
            p.wait(600)
        drained = time.monotonic() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        for s in shards.values():
            s.stop()
    return {"serving_s": serving, "sensors_done_s": drained}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=12.0, help="synthetic hours per recording (default 12)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of 1, 2, 3 shards (default 2)")
    ap.add_argument("--only", choices=("throughput", "routing", "handover", "recovery"), action="append")
    args = ap.parse_args(argv)
    inputs = make_inputs(Path(tempfile.mkdtemp(prefix="bench-shards-in-")), args.hours)
    from baseliner.sensor.replay import ReplaySource

    total = sum(sum(len(w) for w in ReplaySource(p)) for p in inputs.values())
    print(f"{total:,} vectors in {len(inputs)} recordings; {os.cpu_count()} cores shared by shards and senders",
          flush=True)
    only = set(args.only or ("throughput", "routing", "handover", "recovery"))
    if "routing" in only:
        r = routing_cost(inputs)
        print("routing cost, CPU us per vector submitted (median of 5, alternating): "
              + ", ".join(f"{k} {v:.2f}" for k, v in r.items()), flush=True)
    if "throughput" in only:
        t = throughput(inputs, total, args.rounds)
        for n, runs in t.items():
            print(f"{n} shard(s): median {statistics.median(w for w, _ in runs):,.0f} vectors/s wall, "
                  f"{statistics.median(c for _, c in runs):,.0f} vectors per shard CPU-second", flush=True)
    if "handover" in only:
        h = handover(inputs)
        print(f"handover 2 -> 3 shards: {h['keys']:.0f} routing keys pulled, {h['per_key_s'] * 1000:.0f} ms per key, "
              f"every shard settled {h['settled_s']:.2f} s after the list changed", flush=True)
    if "recovery" in only:
        rc = recovery(inputs)
        print(f"kill -9 of one of 3 shards: serving again {rc['serving_s']:.2f} s after its start; the sensors "
              f"delivered everything {rc['sensors_done_s']:.1f} s after it", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
