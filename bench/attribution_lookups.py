"""Cost of attribution on a quiet node: runtime lookups per second, and the resolver's time per window.

For each runtime (containerd through CRI, Docker, podman) ``--containers`` idle containers are started; then
(a) each client's ``inspect`` of those containers is timed, ``--rounds`` rounds alternating the runtimes
(image and sandbox answers stay cached in the clients, as in the sensor; container metadata is asked anew
each time: a lookup is what a new container costs), and (b) a ``Resolver`` resolves all their cgroups for
``--windows`` windows, the first from nothing (every container looked up), the rest from its cache (each
cached cgroup checked to exist: what every window costs).

    sudo .venv/bin/python bench/attribution_lookups.py                  # 20 containers per runtime
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from baseliner.sensor.attribution import AttributionConfig, Resolver  # noqa: E402
from baseliner.sensor.attribution.cri import CriRuntime  # noqa: E402
from baseliner.sensor.attribution.docker import DockerRuntime  # noqa: E402
from baseliner.sensor.attribution.podman import PodmanRuntime  # noqa: E402

from tests.runtime_containers import Cri, Docker, Podman  # noqa: E402

SLEEP = "while :; do sleep 3600; done"


def cgroup_ids(root: str, ids: set[str]) -> list[int]:
    out = []
    for dirpath, _dirs, _files in os.walk(root):
        if any(cid in os.path.basename(dirpath) for cid in ids):
            out.append(os.stat(dirpath).st_ino)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--containers", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--windows", type=int, default=20)
    args = p.parse_args()
    subprocess.run([str(REPO / "scripts" / "runtimes.sh")], check=True, capture_output=True, timeout=1800)
    helpers = {"cri": Cri(), "docker": Docker(), "podman": Podman()}
    clients = {"cri": CriRuntime("/run/containerd/containerd.sock").connect(), "docker": DockerRuntime(),
               "podman": PodmanRuntime()}
    made: dict[str, list[str]] = {}
    try:
        for name, h in helpers.items():
            made[name] = [h.run(f"idle{i}", "localhost/baseliner/debian:bookworm", SLEEP).id
                          for i in range(args.containers)]
        per_lookup: dict[str, list[float]] = {n: [] for n in clients}
        for _ in range(args.rounds):
            for name, client in clients.items():
                t0 = time.perf_counter()
                for cid in made[name]:
                    assert client.inspect(cid) is not None
                per_lookup[name].append((time.perf_counter() - t0) / len(made[name]))
        resolver = Resolver(AttributionConfig(cache_size=8192))
        every = {cid for ids in made.values() for cid in ids}
        cgs = cgroup_ids(resolver.index.root, every)
        window_seconds = []
        cpu = []
        for _ in range(args.windows):
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            res = resolver.resolve_all(cgs)
            window_seconds.append(time.perf_counter() - t0)
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
            assert not res.pending and not res.dropped
        out = {
            "containers_per_runtime": args.containers,
            "lookup_ms_median": {n: round(1000 * statistics.median(v), 3) for n, v in per_lookup.items()},
            "lookups_per_second": {n: round(1 / statistics.median(v)) for n, v in per_lookup.items()},
            "cgroups": len(cgs),
            "first_window_seconds": round(window_seconds[0], 4),
            "cached_window_ms_median": round(1000 * statistics.median(window_seconds[1:]), 3),
            "cached_window_cpu_ms_median": round(1000 * statistics.median(cpu[1:]), 3),
            "cache_entries": len(resolver._infos),  # noqa: SLF001 - the bench reads the cache's size
        }
        print(json.dumps(out, indent=2))
    finally:
        for h in helpers.values():
            h.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
