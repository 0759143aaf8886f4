"""Overhead of the eBPF sensor, measured in one run (needs root; see docs/sensor.md for results).

(a) time added per syscall: a single-threaded C loop of getppid() timed (CPU clock of the loop process,
    minimum of --reps runs) with and without the sensor attached, for counts only (--no-ngrams program),
    counts + n-grams, and counts without the per-syscall argument tracepoints (--no-syscall-args);
(b) total CPU per syscall at a realistic load: a C workload of mixed syscalls (getppid, getuid, pipe write
    and read, openat/fstat/close of /dev/null) paced at --rate syscalls/s; CPU = the workload's own CPU
    (user + system, which includes the BPF programs run in its context) plus the sensor process's CPU
    (draining every --window seconds), divided by the syscalls made; reported as the increment over the
    same workload without a sensor;
(c) the same two for the per-event design: a raw tracepoint that sends one perf-buffer event per syscall
    to a Python consumer that aggregates them, with that design's dropped events.

    sudo .venv/bin/python bench/sensor_overhead.py            # about two minutes
    sudo .venv/bin/python bench/sensor_overhead.py --quick    # fewer repetitions
    sudo .venv/bin/python bench/sensor_overhead.py --quick --ngram-orders 2,3,4,6   # n-gram orders counted

The "counts + n-grams" design counts the orders of ``--ngram-orders`` (default the sensor's, 4 and 6).
"""

from __future__ import annotations

import argparse
import ctypes as ct
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baseliner.models.ngrams import SENSOR_ORDERS, parse_orders  # noqa: E402
from baseliner.sensor.probes import ProbeConfig, Probes, find_kernel_source  # noqa: E402

LOOP_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
static double ts(clockid_t c) { struct timespec t; clock_gettime(c, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static double now(void) { return ts(CLOCK_MONOTONIC); }
static double cpu(void) { return ts(CLOCK_PROCESS_CPUTIME_ID); }
int main(int argc, char **argv) {
    long n = atol(argv[2]);
    if (!strcmp(argv[1], "getppid")) {
        double t0 = cpu();  /* CPU time of this process: robust to other load on the machine */
        for (long i = 0; i < n; i++) syscall(SYS_getppid);
        printf("%.3f\n", (cpu() - t0) * 1e9 / n);
        return 0;
    }
    /* mixed, paced: n syscalls at argv[3] syscalls/s, in batches of 7000 (1000 iterations of 7 calls) */
    double rate = atof(argv[3]);
    int p[2]; if (pipe(p)) return 1;
    char buf[64] = {0}; struct stat st;
    long done = 0, sleeps = 0; double t0 = now();
    while (done < n) {
        for (int i = 0; i < 1000; i++) {
            syscall(SYS_getppid); syscall(SYS_getuid);
            if (write(p[1], buf, sizeof buf) < 0 || read(p[0], buf, sizeof buf) < 0) return 1;
            int fd = open("/dev/null", O_RDONLY); fstat(fd, &st); close(fd);
        }
        done += 7000;
        double ahead = done / rate - (now() - t0);
        if (ahead > 0) { struct timespec ts = {(time_t)ahead, (long)((ahead - (long)ahead) * 1e9)};
                         nanosleep(&ts, 0); sleeps++; }
    }
    printf("%ld %.3f\n", done + sleeps, now() - t0);
    return 0;
}
"""

PER_EVENT_C = r"""
struct ev { u64 cgid; u32 nr; u32 tid; };
BPF_PERF_OUTPUT(events);
RAW_TRACEPOINT_PROBE(sys_enter) {
    struct ev e = {.cgid = bpf_get_current_cgroup_id(), .nr = (u32)ctx->args[1],
                   .tid = (u32)bpf_get_current_pid_tgid()};
    events.perf_submit(ctx, &e, sizeof(e));
    return 0;
}
"""


def build_loop(workdir: Path) -> Path:
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise SystemExit("needs a C compiler (gcc) for the timing loops")
    src, exe = workdir / "loop.c", workdir / "loop"
    src.write_text(LOOP_C)
    subprocess.run([cc, "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def ns_per_getppid(exe: Path, n: int, reps: int) -> float:
    """CPU ns per getppid (process CPU clock), the minimum over ``reps`` runs: the machine may be shared,
    and interference only ever adds time."""
    runs = [float(subprocess.run([str(exe), "getppid", str(n)], capture_output=True, text=True,
                                 check=True).stdout) for _ in range(reps)]
    return min(runs)


def run_mixed(exe: Path, n: int, rate: float) -> tuple[int, float, float]:
    """(syscalls made, workload CPU seconds, wall seconds)."""
    proc = subprocess.Popen([str(exe), "mixed", str(n), str(rate)], stdout=subprocess.PIPE, text=True)
    _, status, ru = os.wait4(proc.pid, 0)
    assert proc.stdout is not None
    made, wall = proc.stdout.read().split()
    if status != 0:
        raise SystemExit("mixed workload failed")
    return int(made), ru.ru_utime + ru.ru_stime, float(wall)


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def with_consumer(exe: Path, n: int, rate: float, consume: Callable[[threading.Event], None]) -> dict[str, float]:
    """Run the mixed workload while ``consume`` runs in this process; CPU of this process = consumer."""
    stop = threading.Event()
    t = threading.Thread(target=consume, args=(stop,), daemon=True)
    c0 = self_cpu()
    t.start()
    made, wcpu, wall = run_mixed(exe, n, rate)
    stop.set()
    t.join()
    return {"syscalls": made, "workload_cpu_s": wcpu, "consumer_cpu_s": self_cpu() - c0, "wall_s": wall}


def bench_sensor(exe: Path, ngrams: bool, args: argparse.Namespace, syscall_args: bool = True) -> dict[str, Any]:
    with Probes(ProbeConfig(ngrams=ngrams, ngram_orders=args.ngram_orders, syscall_args=syscall_args)) as p:
        added = ns_per_getppid(exe, args.loop, args.reps)

        def drain(stop: threading.Event) -> None:
            while not stop.wait(args.window):
                p.flip()
            p.flip()

        load = with_consumer(exe, args.mixed, args.rate, drain)
        lost = 0
        w = p.flip()
        lost += w.lost_global + sum(c.get("lost", 0) for c in w.counters.values())
    return {"ns_per_getppid": added, "load": load, "lost": lost}


def bench_per_event(exe: Path, args: argparse.Namespace) -> dict[str, Any]:
    from bcc import BPF

    src = find_kernel_source()
    if src:
        os.environ["BCC_KERNEL_SOURCE"] = src
    b = BPF(text=PER_EVENT_C.encode())
    counts: Counter[tuple[int, int]] = Counter()
    dropped = [0]
    received = [0]

    class Ev(ct.Structure):
        _fields_ = [("cgid", ct.c_uint64), ("nr", ct.c_uint32), ("tid", ct.c_uint32)]

    def on_event(_cpu: int, data: Any, _size: int) -> None:
        e = ct.cast(data, ct.POINTER(Ev)).contents
        counts[(e.cgid, e.nr)] += 1
        received[0] += 1

    def on_lost(n: int) -> None:
        dropped[0] += n

    b[b"events"].open_perf_buffer(on_event, page_cnt=256, lost_cb=on_lost)
    try:
        # (a) with a consumer polling, as the design would run
        stop = threading.Event()

        def poll(stop: threading.Event) -> None:
            while not stop.is_set():
                b.perf_buffer_poll(timeout=50)

        t = threading.Thread(target=poll, args=(stop,), daemon=True)
        t.start()
        # about 100x slower per call: fewer calls keep the run short
        added = ns_per_getppid(exe, max(args.loop // 20, 10_000), min(args.reps, 3))
        stop.set()
        t.join()
        received[0] = dropped[0] = 0
        load = with_consumer(exe, args.mixed, args.rate, poll)
        load_dropped, load_received = dropped[0], received[0]
    finally:
        b.cleanup()
    return {"ns_per_getppid": added, "load": load, "dropped": load_dropped, "received": load_received}


MINIMAL_C = b"""
struct k { u64 cgid; u32 nr; u32 pad; };
BPF_PERCPU_HASH(counts, struct k, u64, 65536);
RAW_TRACEPOINT_PROBE(sys_enter) {
    struct k key = {.cgid = bpf_get_current_cgroup_id(), .nr = (u32)ctx->args[1]};
    u64 *v = counts.lookup(&key);
    if (v) { *v += 1; } else { u64 one = 1; counts.update(&key, &one); }
    return 0;
}
"""


def bench_reference(exe: Path, args: argparse.Namespace, text: bytes) -> float:
    """Reference programs: an empty raw tracepoint on sys_enter (what attaching alone costs), and a minimal
    one-map (cgroup, nr) counter without double buffering, loss accounting or other tracepoints."""
    from bcc import BPF

    src = find_kernel_source()
    if src:
        os.environ["BCC_KERNEL_SOURCE"] = src
    b = BPF(text=text)
    try:
        return ns_per_getppid(exe, args.loop, args.reps)
    finally:
        b.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loop", type=int, default=2_000_000, help="getppid calls per timing run")
    ap.add_argument("--reps", type=int, default=7, help="timing runs per configuration (minimum)")
    ap.add_argument("--mixed", type=int, default=3_500_000, help="syscalls of the paced mixed workload")
    ap.add_argument("--rate", type=float, default=200_000, help="syscalls/s of the mixed workload")
    ap.add_argument("--window", type=float, default=1.0, help="sensor drain interval (s)")
    ap.add_argument("--ngram-orders", type=parse_orders, default=SENSOR_ORDERS,
                    help="n-gram orders the counts + n-grams design counts (default 4,6, the sensor's)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if args.quick:
        args.loop, args.reps, args.mixed = 500_000, 3, 1_400_000
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    with tempfile.TemporaryDirectory() as d:
        exe = build_loop(Path(d))
        base_ns = ns_per_getppid(exe, args.loop, args.reps)

        def idle(stop: threading.Event) -> None:
            stop.wait()

        base_load = with_consumer(exe, args.mixed, args.rate, idle)
        empty_ns = bench_reference(exe, args, b"RAW_TRACEPOINT_PROBE(sys_enter) { return 0; }")
        minimal_ns = bench_reference(exe, args, MINIMAL_C)
        bare = bench_sensor(exe, False, args, syscall_args=False)
        counts = bench_sensor(exe, False, args)
        ngrams = bench_sensor(exe, True, args)
        per_event = bench_per_event(exe, args)

    def cpu_per_syscall_ns(load: dict[str, float]) -> float:
        return (load["workload_cpu_s"] + load["consumer_cpu_s"]) / load["syscalls"] * 1e9

    base_cpu = cpu_per_syscall_ns(base_load)
    rows = []
    designs = (("counts, no syscall args", bare), ("counts only", counts), ("counts + n-grams", ngrams),
               ("per-event perf buffer", per_event))
    for name, r in designs:
        rows.append({
            "design": name,
            "getppid_ns": r["ns_per_getppid"],
            "added_ns_per_syscall": r["ns_per_getppid"] - base_ns,
            "cpu_ns_per_syscall": cpu_per_syscall_ns(r["load"]),
            "added_cpu_ns_per_syscall": cpu_per_syscall_ns(r["load"]) - base_cpu,
            "consumer_cpu_s": r["load"]["consumer_cpu_s"],
            "syscalls": r["load"]["syscalls"],
            "lost_or_dropped": r.get("dropped", r.get("lost", 0)),
            "received": r.get("received"),
        })
    print(f"kernel {os.uname().release}, {os.cpu_count()} CPUs; getppid loop {args.loop} x {args.reps} (min); "
          f"mixed workload {args.mixed} syscalls at {args.rate:.0f}/s, drain every {args.window}s; "
          f"n-gram orders {','.join(map(str, args.ngram_orders))}")
    print(f"no sensor: getppid {base_ns:.1f} ns; mixed workload CPU {base_cpu:.1f} ns/syscall; "
          f"empty sys_enter program attached: getppid {empty_ns:.1f} ns (+{empty_ns - base_ns:.1f}); "
          f"minimal one-map counter: {minimal_ns:.1f} ns (+{minimal_ns - base_ns:.1f})")
    hdr = f"{'design':<26}{'getppid ns':>12}{'added ns':>10}{'CPU ns/sc':>11}{'added CPU':>11}" \
          f"{'consumer s':>12}{'dropped':>10}"
    print(hdr)
    for r in rows:
        print(f"{r['design']:<26}{r['getppid_ns']:>12.1f}{r['added_ns_per_syscall']:>10.1f}"
              f"{r['cpu_ns_per_syscall']:>11.1f}{r['added_cpu_ns_per_syscall']:>11.1f}"
              f"{r['consumer_cpu_s']:>12.3f}{r['lost_or_dropped']:>10}")
    if args.json:
        out = {"base_ns": base_ns, "empty_ns": empty_ns, "minimal_ns": minimal_ns, "base_cpu_ns": base_cpu,
               "rows": rows, "args": vars(args)}
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
