"""Fixed, documented feature layout and the transforms that turn vectors into model inputs.

A :class:`~baseliner.models.vector.FeatureVector` holds raw counts for one window.  Models see a dense row of
``len(FEATURES)`` floats in *log-rate space*:

* ``rate`` features: ``log1p(count / window_seconds)`` (per-second rates, log scaled);
* ``count`` features: ``log1p(count)`` for per-window distinct counts (remote addresses, ports);

The per-syscall features cover a fixed vocabulary of calls that matter for security or describe a
workload's shape; every other call adds to ``sys.other``.  Exact first-seen syscalls, executables and
ports are the novelty tier's job (``models/novelty.py``), not these features'.

Time is the vectors' own window length (event time): nothing here reads the wall clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from baseliner.models.block import COUNTER_INDEX, VectorBlock, row_ids
from baseliner.models.vector import FeatureVector


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    unit: str
    kind: str  # "rate" | "count"
    doc: str


_CORE: tuple[Feature, ...] = (
    Feature("sys.total", "calls/s", "rate", "all syscalls"),
    Feature("sys.other", "calls/s", "rate", "syscalls outside the named vocabulary"),
    Feature("proc.execs", "execs/s", "rate", "successful execve/execveat"),
    Feature("proc.forks", "forks/s", "rate", "new processes and threads"),
    Feature("proc.exits", "exits/s", "rate", "process exits"),
    Feature("net.connects", "connects/s", "rate", "outbound connect attempts"),
    Feature("net.connects_failed", "connects/s", "rate", "outbound connects that never established"),
    Feature("net.accepts", "accepts/s", "rate", "inbound connections accepted"),
    Feature("net.listens", "listens/s", "rate", "sockets put into listen state"),
    Feature("net.bytes_sent", "B/s", "rate", "bytes sent"),
    Feature("net.bytes_received", "B/s", "rate", "bytes received"),
    Feature("net.packets_sent", "packets/s", "rate", "send calls / packets sent"),
    Feature("net.packets_received", "packets/s", "rate", "receive calls / packets received"),
    Feature("net.dns_queries", "queries/s", "rate", "DNS queries (UDP/TCP to port 53)"),
    Feature("net.remote_addresses", "addresses", "count", "distinct remote addresses in the window"),
    Feature("net.remote_ports", "ports", "count", "distinct remote ports in the window"),
    Feature("file.write_opens", "opens/s", "rate", "opens with write intent"),
    Feature("file.sensitive_writes", "opens/s", "rate", "write opens under sensitive prefixes"),
    Feature("file.unresolved_writes", "opens/s", "rate",
            "write opens whose directory the sensor cannot place (directory fd, after fchdir, too long)"),
)

#: Syscalls with a feature of their own (canonical names, see ``models/syscalls.py``).
SYSCALL_VOCABULARY: tuple[str, ...] = (
    "read", "write", "pread64", "pwrite64", "readv", "writev", "sendfile",
    "open", "openat", "close", "stat", "fstat", "lstat", "newfstatat", "statx", "access", "getdents64",
    "unlink", "unlinkat", "rename", "renameat", "renameat2", "chmod", "fchmod", "fchmodat", "chown",
    "fchown", "mkdir", "mkdirat",
    "mmap", "mprotect", "munmap", "brk",
    "clone", "clone3", "fork", "vfork", "execve", "execveat", "wait4", "kill", "exit_group", "ptrace",
    "setuid", "setgid", "setresuid", "capset", "mount", "umount2", "chroot", "setns", "unshare",
    "socket", "connect", "accept", "accept4", "bind", "listen", "sendto", "recvfrom", "sendmsg",
    "recvmsg", "socketcall",
    "futex", "epoll_wait", "epoll_pwait", "poll", "ppoll", "select", "pselect6", "nanosleep",
    "clock_nanosleep", "clock_gettime", "ioctl", "fcntl", "dup2", "pipe2", "lseek", "getpid",
    "rt_sigaction", "rt_sigprocmask",
)

FEATURES: tuple[Feature, ...] = _CORE + tuple(
    Feature(f"syscall.{name}", "calls/s", "rate", f"{name} calls") for name in SYSCALL_VOCABULARY
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
N_FEATURES = len(FEATURES)
FEATURE_INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURE_NAMES)}

_SYSCALL_COLUMN: dict[str, int] = {name: FEATURE_INDEX[f"syscall.{name}"] for name in SYSCALL_VOCABULARY}
_RATE_MASK = np.array([f.kind == "rate" for f in FEATURES])
_TOTAL = FEATURE_INDEX["sys.total"]
_OTHER = FEATURE_INDEX["sys.other"]

#: The FeatureVector attribute of each scalar feature: every core feature but the syscall totals, named
#: ``GROUP.ATTRIBUTE``.
SCALAR_ATTRIBUTES: dict[str, str] = {f.name: f.name.partition(".")[2] for f in _CORE if not f.name.startswith("sys.")}
_SCALARS: tuple[tuple[str, int], ...] = tuple((attr, FEATURE_INDEX[name]) for name, attr in SCALAR_ATTRIBUTES.items())


_SCALAR_COLS = np.array([j for _, j in _SCALARS])
_SCALAR_COUNTERS = np.array([COUNTER_INDEX[attr] for attr, _ in _SCALARS])


# (a syscall name table, its columns): the last table asked about, by content (a service's tables repeat)
_last_columns: tuple[tuple[str, ...], np.ndarray] = ((), np.zeros(0, dtype=np.intp))


def _columns(names: Sequence[str]) -> np.ndarray:
    """The feature column of each syscall name (``sys.other`` outside the vocabulary)."""
    global _last_columns
    key = tuple(names)
    last, cols = _last_columns  # (one read: a tuple, consistent)
    if key == last:
        return cols
    column = _SYSCALL_COLUMN.get
    cols = np.fromiter((column(name, _OTHER) for name in key), dtype=np.intp, count=len(key))
    _last_columns = (key, cols)
    return cols


def block_counts(block: VectorBlock) -> np.ndarray:
    """Raw counts matrix ``(n, N_FEATURES)`` of a block of windows.

    Columnar: the batch's syscall-name dictionary maps to feature columns once, and one ``bincount``
    sums every entry into the matrix (``sys.other`` collects every call outside the vocabulary,
    ``sys.total`` all of them; entries naming the same syscall add up).
    """
    n = len(block)
    if len(block.sc_name):
        colmap = _columns(block.syscall_names)
        rows = row_ids(block.sc_ptr)
        counts = block.sc_count
        out = np.bincount(rows * N_FEATURES + colmap[block.sc_name], weights=counts,
                          minlength=n * N_FEATURES).reshape(n, N_FEATURES)
        out[:, _TOTAL] = np.bincount(rows, weights=counts, minlength=n)
        np.maximum(out[:, _OTHER], 0.0, out=out[:, _OTHER])  # never negative
    else:
        out = np.zeros((n, N_FEATURES), dtype=np.float64)
    out[:, _SCALAR_COLS] = block.counters[:, _SCALAR_COUNTERS]
    return out


_MAX_RATE = 1e18


def transform(counts: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """Raw counts -> log-rate space (see module docstring). Pure and vectorised."""
    # rate columns divide by the window's length, count columns by 1 (one broadcast, no masked copies)
    with np.errstate(over="ignore"):  # absurd but finite input overflows to inf, clipped just below
        x = np.divide(counts, np.where(_RATE_MASK, np.asarray(seconds, dtype=np.float64)[:, None], 1.0))
    # Hostile but finite input (1e300 counts, 1e-300 s windows) must not become inf/NaN features: no real
    # counter exceeds _MAX_RATE per second, and none is negative.
    np.clip(x, 0.0, _MAX_RATE, out=x)
    # log(1 + x) in single precision, back in double: a vectorised log (double precision log1p is one libm
    # call per value here, four times the cost of the whole transform otherwise).  The absolute error,
    # below 2.5e-6 over the whole range (1.2e-7 near 0), is far inside every spread the models use
    # (std_floor 0.1): tests/test_models_features.py holds it to that against math.log1p.
    y = np.add(x, 1.0, out=x).astype(np.float32)
    return np.log(y, out=y).astype(np.float64)


def transform_block(block: VectorBlock) -> np.ndarray:
    """The model input matrix of a block of windows."""
    return transform(block_counts(block), block.window_seconds)


def transform_vectors(vectors: Sequence[FeatureVector]) -> np.ndarray:
    """The model input matrix of a batch of vectors."""
    return transform_block(VectorBlock.from_vectors(vectors))
