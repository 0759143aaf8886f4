"""What resolving sensitive-path writes costs in the kernel: the sensor's program against the one of another
commit (default main), loaded alternately in one run (needs root).

A C loop opens a file for writing and closes it, N times, timed with the loop process's CPU clock (which
includes the BPF programs run in its context): absolute paths outside the sensitive prefixes (a short and a
long one: the kernel normalises an absolute name byte by byte), one inside them, a relative name in a working
directory outside them, and a relative name in a sensitive working directory.  Reported per open+close, the
minimum of the runs of each program.

    sudo .venv/bin/python bench/sensitive_path_cost.py --rounds 2
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baseliner.sensor import probes as probes_mod  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LOOP = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long n = atol(argv[2]);
    if (chdir(argv[3]) != 0) return 2;
    struct timespec a, b;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
    for (long i = 0; i < n; i++) {
        int fd = openat(AT_FDCWD, argv[1], O_WRONLY | O_CREAT, 0600);
        if (fd < 0) return 1;
        close(fd);
    }
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
    printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
    return 0;
}
"""


def loop_binary(work: Path) -> Path:
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise SystemExit("needs a C compiler (gcc)")
    (work / "loop.c").write_text(LOOP)
    subprocess.run([cc, "-O2", "-o", str(work / "loop"), str(work / "loop.c")], check=True)
    return work / "loop"


def program_dir(commit: str, work: Path) -> Path:
    """sensor/bpf as of ``commit``."""
    out = work / commit.replace("/", "_")
    out.mkdir()
    for name in ("sensor.c", "ngrams.h"):
        text = subprocess.run(["git", "show", f"{commit}:sensor/bpf/{name}"], cwd=REPO, check=True,
                              capture_output=True, text=True).stdout
        (out / name).write_text(text)
    return out


def measure(loop: Path, cases: dict[str, tuple[str, Path]], n: int, reps: int) -> dict[str, float]:
    out = {}
    for name, (path, cwd) in cases.items():
        runs = [float(subprocess.run([str(loop), path, str(n), str(cwd)], check=True, capture_output=True,
                                     text=True).stdout) for _ in range(reps)]
        out[name] = min(runs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="main", help="commit whose program is compared (default main)")
    ap.add_argument("--rounds", type=int, default=2, help="loads of each program, alternating")
    ap.add_argument("--n", type=int, default=200_000, help="opens per timing run")
    ap.add_argument("--reps", type=int, default=5, help="timing runs per case and load (minimum taken)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="baseliner-pathcost-"))
    try:
        loop = loop_binary(work)
        sensitive, plain = work / "sensitive", work / "plain"
        deep = plain / ("d" * 160)  # a long absolute name: normalising it walks ~200 bytes
        sensitive.mkdir()
        deep.mkdir(parents=True)
        cases = {"absolute, not sensitive": (str(plain / "f"), plain),
                 f"absolute, {len(str(deep / 'f'))} bytes": (str(deep / "f"), plain),
                 "absolute, sensitive": (str(sensitive / "f"), plain),
                 "relative, cwd not sensitive": ("f", plain), "relative, cwd sensitive": ("f", sensitive)}
        programs = {"base": program_dir(args.base, work), "this tree": REPO / "sensor" / "bpf"}
        config = probes_mod.ProbeConfig(sensitive_prefixes=(*probes_mod.DEFAULT_SENSITIVE_PREFIXES, str(sensitive)))
        best: dict[str, dict[str, float]] = {p: {} for p in programs}
        for _ in range(args.rounds):
            for name, directory in programs.items():
                probes_mod.BPF_DIR = directory
                with probes_mod.Probes(config):
                    got = measure(loop, cases, args.n, args.reps)
                for case, ns in got.items():
                    best[name][case] = min(ns, best[name].get(case, ns))
        print(f"ns per openat(O_WRONLY|O_CREAT)+close, minimum of {args.rounds} loads x {args.reps} runs "
              f"of {args.n:,}; base = {args.base}")
        for case in cases:
            b, t = best["base"][case], best["this tree"][case]
            print(f"  {case:30s} base {b:8.1f}  this tree {t:8.1f}  ({t - b:+.1f})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
