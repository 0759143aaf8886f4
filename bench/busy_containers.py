"""A busy node: N containers of real servers under load, one of them port-scanned, under the real eBPF sensor.

Each container (Docker, host network, an image built from the locally made Debian base with Debian's
nginx-light, redis-server, postgresql, apache2-utils and nmap) runs one server on its own port and a load
generator against it in bursts: nginx with ``ab``, redis with ``redis-benchmark``, PostgreSQL with ``pgbench``
(select-only, over TCP).  After a warm-up, the sensor's source (``BpfSource``, the sensor's own defaults
unless --map-scale) drains windows; midway, ``nmap -sT -p-`` scans every port of 127.0.0.1 from inside the
first container.  Reported, per window and in all:

* kernel events lost: map full (charged to a cgroup, or to no cgroup) and programs the kernel skipped
  (nested tracing programs on one CPU), separately;
* distinct keys per container per window in each count map (syscalls, n-gram buckets, endpoints, paths)
  and the entries of each whole map against its capacity;
* attribution: runtime lookups, their time, cache entries, time per window; the source's CPU per window;
* kernel memory of every map (``memlock`` of the map fds).

    sudo .venv/bin/python bench/busy_containers.py                      # 100 containers, 24 windows of 5 s
    sudo .venv/bin/python bench/busy_containers.py --containers 10 --windows 6 --map-scale 8 --out r.json

Needs root, BPF, scripts/runtimes.sh's runtimes; builds its image once (Debian's mirror).  Loads both cores
for a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from baseliner.sensor.bpf_source import BpfSource, BpfSourceConfig  # noqa: E402
from baseliner.sensor.probes import ROW_SYSCALLS, ProbeConfig  # noqa: E402
from baseliner.sensor.vectors import WindowCounts  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

IMAGE = "localhost/baseliner-bench/servers:1"
CONTAINERFILE = """FROM localhost/baseliner/debian:bookworm
RUN apt-get update -qq \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light redis-server \\
      redis-tools postgresql apache2-utils nmap >/dev/null \\
 && rm -rf /var/lib/apt/lists/*
RUN su postgres -c '/usr/lib/postgresql/15/bin/initdb -A trust -D /var/lib/postgresql/bench >/dev/null' \\
 && sed -i '/listen \\[::\\]:80/d' /etc/nginx/sites-enabled/default
"""
# one server on port P and bursts of load against it, forever
WORKLOADS = {
    "nginx": ("sed -i 's/listen 80 default_server;/listen {port} default_server;/' /etc/nginx/sites-enabled/default"
              " && nginx && while :; do ab -q -n 300 -c 2 http://127.0.0.1:{port}/ >/dev/null 2>&1; sleep 1; done"),
    "redis": ("redis-server --port {port} --daemonize yes --save '' --appendonly no && sleep 1 && while :; do "
              "redis-benchmark -p {port} -q -n 1000 -c 2 -t set,get,incr,lpush,lpop >/dev/null; sleep 1; done"),
    "postgres": ("su postgres -c \"/usr/lib/postgresql/15/bin/pg_ctl -D /var/lib/postgresql/bench "
                 "-o '-p {port} -k /tmp' -l /tmp/pg.log -w start\" >/dev/null "
                 "&& su postgres -c 'pgbench -h 127.0.0.1 -p {port} -i -q postgres' >/dev/null 2>&1 "
                 "&& while :; do su postgres -c 'pgbench -h 127.0.0.1 -p {port} -c 2 -T 3 -S postgres' "
                 ">/dev/null 2>&1; sleep 1; done"),
}
BASE_PORT = {"nginx": 20000, "redis": 21000, "postgres": 22000}
SCAN = "nmap -sT -p- --min-rate 3000 -T4 127.0.0.1"


def sh(*cmd: str, stdin: str | None = None, timeout: float = 600) -> str:
    r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr[-2000:]}")
    return r.stdout.strip()


def build_image() -> None:
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode == 0:
        return
    print(f"building {IMAGE} (once)", file=sys.stderr)
    ctx = Path("/tmp/baseliner-bench-ctx")
    ctx.mkdir(exist_ok=True)
    (ctx / "Containerfile").write_text(CONTAINERFILE)
    sh("docker", "build", "-q", "--network", "host", "-t", IMAGE, "-f", str(ctx / "Containerfile"), str(ctx),
       timeout=1800)


def start_containers(n: int, prefix: str) -> dict[str, str]:
    """container id -> kind."""
    kinds = list(WORKLOADS)
    out = {}
    for i in range(n):
        kind = kinds[i % len(kinds)]
        port = BASE_PORT[kind] + i
        cid = sh("docker", "run", "-d", "--name", f"{prefix}-{kind}-{i}", "--network", "host", IMAGE, "bash", "-c",
                 WORKLOADS[kind].format(port=port))
        out[cid] = kind
    return out


def percentiles(xs: list[int]) -> dict[str, float]:
    if not xs:
        return {"p50": 0, "p99": 0, "max": 0}
    s = sorted(xs)
    return {"p50": float(statistics.median(s)), "p99": float(s[min(len(s) - 1, int(0.99 * len(s)))]),
            "max": float(s[-1])}


def window_stats(counts: WindowCounts, containers: set[int]) -> dict[str, Any]:
    """Distinct keys per container cgroup and whole-map entries of one window."""
    per: dict[str, list[int]] = {"syscalls": [], "ngrams": [], "endpoints": [], "paths": []}
    for cg in containers:
        per["syscalls"].append(len(counts.syscalls.get(cg, {})))
        per["ngrams"].append(len(counts.ngrams.get(cg, {})))
        per["endpoints"].append(len(counts.endpoints.get(cg, [])))
        per["paths"].append(len(counts.exec_paths.get(cg, {})) + len(counts.sensitive_paths.get(cg, {})))
    total = {"syscalls": sum(len(d) for d in counts.syscalls.values()),
             "ngrams": sum(len(d) for d in counts.ngrams.values()),
             "endpoints": sum(len(e) for e in counts.endpoints.values()),
             "paths": sum(len(d) for d in counts.exec_paths.values()) + sum(
                 len(d) for d in counts.sensitive_paths.values()),
             "cgroups": len(counts.counters)}
    lost_cg = sum(c.get("lost", 0) for c in counts.counters.values())
    return {"per_container": per, "total": total, "lost_map_cgroup": lost_cg,
            "lost_map_global": counts.lost_global - counts.missed, "missed": counts.missed}


def run(args: argparse.Namespace) -> dict[str, Any]:
    build_image()
    prefix = f"bbench{os.getpid()}"
    ids = start_containers(args.containers, prefix)
    try:
        print(f"{len(ids)} containers started; warming up {args.warmup:g}s", file=sys.stderr)
        time.sleep(args.warmup)
        base = ProbeConfig()
        scaled = {f: int(getattr(base, f) * args.map_scale) for f in
                  ("max_syscall_rows", "max_ngram_entries", "max_cgroups", "max_paths", "max_endpoints")}
        probes_cfg = replace(base, **scaled) if args.map_scale != 1 else base
        reg = CollectorRegistry()
        src = BpfSource(BpfSourceConfig(window_seconds=args.window, probes=probes_cfg), registry=reg)
        counts_seen: list[WindowCounts] = []
        flip = src.probes.flip

        def recording_flip() -> WindowCounts:
            c = flip()
            counts_seen.append(c)
            return c

        src.probes.flip = recording_flip  # type: ignore[method-assign]
        memory = src.probes.map_memory()
        windows: list[dict[str, Any]] = []
        scan: threading.Thread | None = None
        scan_window = args.windows // 2
        first = next(iter(ids))
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        for w in range(args.windows):
            if w == scan_window:
                scan = threading.Thread(target=lambda: subprocess.run(["docker", "exec", first, "bash", "-c", SCAN],
                                                                      capture_output=True, timeout=900))
                scan.start()
            t0 = time.monotonic()
            cpu0 = time.process_time()
            vectors = next(src)
            mine = {v.identity.container_id for v in vectors} & set(ids)
            cgs = {cg for cg, info in src.resolver._infos._d.items()  # noqa: SLF001 - the bench reads the cache
                   if info is not None and info.identity.container_id in ids}
            st = window_stats(counts_seen[-1], cgs & counts_seen[-1].cgroups())
            st.update(window=w, vectors=len(vectors), containers_attributed=len(mine), scan=w >= scan_window,
                      resolve_seconds=src.resolve_seconds,
                      collect_cpu_seconds=time.process_time() - cpu0, wall=time.monotonic() - t0)
            windows.append(st)
            print(f"window {w}: {len(mine)} containers, entries {st['total']}, lost map "
                  f"{st['lost_map_cgroup'] + st['lost_map_global']}, missed {st['missed']}", file=sys.stderr)
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        if scan is not None:  # a scan still running (a starved CPU) ends with its container
            scan.join(timeout=30)
        misses_by_program = {k: v for k, v in src.probes.kernel_misses_by_program().items() if v}

        def sample(name: str, **labels: str) -> float:
            return reg.get_sample_value(name, labels or None) or 0.0

        lookups = sum(sample("baseliner_sensor_runtime_lookups_total", runtime="docker", result=r)
                      for r in ("found", "not_found", "unavailable", "bad_answer"))
        lookup_time = sample("baseliner_sensor_runtime_lookup_seconds_sum", runtime="docker")
        attribution = sample("baseliner_sensor_attribution_seconds_sum")
        src.close()
        capacity = {"syscalls": probes_cfg.max_syscall_rows * ROW_SYSCALLS,  # a row per cgroup (and CPU)
                    "ngrams": probes_cfg.max_ngram_entries,
                    "endpoints": probes_cfg.max_endpoints, "paths": probes_cfg.max_paths,
                    "cgroups": probes_cfg.max_cgroups}
        per_map = {m: percentiles([x for w in windows for x in w["per_container"][m]]) for m in capacity
                   if m != "cgroups"}
        result = {
            "containers": len(ids), "windows": args.windows, "window_seconds": args.window,
            "map_scale": args.map_scale, "capacity": capacity,
            "max_entries": {m: max(w["total"][m] for w in windows) for m in capacity},
            "distinct_keys_per_container": per_map,
            "lost_map_full": sum(w["lost_map_cgroup"] + w["lost_map_global"] for w in windows),
            "missed_by_kernel": sum(w["missed"] for w in windows),
            "missed_by_program": misses_by_program,
            "containers_attributed_min": min(w["containers_attributed"] for w in windows),
            "attribution": {"lookups": lookups, "lookup_seconds_total": lookup_time,
                            "resolve_seconds_per_window": attribution / len(windows),
                            "resolve_seconds_max": max(w["resolve_seconds"] for w in windows),
                            "cache_entries": sample("baseliner_sensor_attribution_cache_entries", cache="cgroups"),
                            "cgroup_tree_scans": src.resolver.index.scans,
                            "unattributed_windows": {r: sample("baseliner_sensor_windows_unattributed_total",
                                                               reason=r) for r in ("cgroup_gone", "unknown_container",
                                                                                   "exited_before_lookup")}},
            "source_cpu_seconds_per_window": (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime)
                                             / len(windows),
            "kernel_memory_bytes": sum(memory.values()), "kernel_memory_by_map": memory,
            "windows_detail": windows,
        }
        return result
    finally:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, timeout=600)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--containers", type=int, default=100)
    p.add_argument("--windows", type=int, default=24)
    p.add_argument("--window", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=30.0)
    p.add_argument("--map-scale", type=float, default=1.0, help="multiply the count maps' sizes (measuring keys)")
    p.add_argument("--out", default="")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2
    subprocess.run([str(REPO / "scripts" / "runtimes.sh")], check=True, capture_output=True, timeout=1800)
    result = run(args)
    summary = {k: v for k, v in result.items() if k != "windows_detail"}
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
