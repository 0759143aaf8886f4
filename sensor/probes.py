"""Build, load and attach the eBPF program, flip its double-buffered maps and drain them.

The only module that imports ``bcc``.  The kernel C lives in ``sensor/bpf/``; this module prepends the
configuration (map sizes, n-gram orders, the sensitive-prefix matcher), compiles with BCC against the headers
:func:`find_kernel_source` finds, fills the syscall-number -> canonical-id table and returns drained map
contents as :class:`baseliner.sensor.vectors.WindowCounts`.  How a flip drains without loss (every count map
twice, the parity of ``ctl[0]``, the window's epoch, selects the set programs write, :data:`GRACE_SECONDS`)
is in ``docs/sensor.md``.
"""

from __future__ import annotations

import ctypes as ct
import glob
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from baseliner.models import syscalls
from baseliner.models.ngrams import BUCKETS, ORDERS, SENSOR_ORDERS, SHORT_BUCKETS, check_orders
from baseliner.sensor.vectors import CG_FIELDS, KIND_EXEC, KIND_SENSITIVE, Endpoint4, WindowCounts

log = logging.getLogger(__name__)

BPF_DIR = Path(__file__).resolve().parent / "bpf"
DEFAULT_KERNEL_SRC = "/opt/baseliner/kernel-src"
GRACE_SECONDS = 0.005
PATH_LEN = 256

DEFAULT_SENSITIVE_PREFIXES: tuple[str, ...] = (
    "/etc", "/bin", "/sbin", "/usr", "/lib", "/lib64", "/boot", "/root", "/var/spool/cron",
)
MAX_PREFIXES = 32
MAX_PREFIX_LEN = 128


class PrerequisiteError(RuntimeError):
    """The machine cannot run the eBPF sensor; the message says what to do."""


@dataclass(frozen=True)
class ProbeConfig:
    """Kernel-side configuration (compiled into the program)."""

    ngrams: bool = True
    #: n-gram orders counted (a non-empty subset of baseliner.models.ngrams.ORDERS); default the model's (4, 6)
    ngram_orders: tuple[int, ...] = SENSOR_ORDERS
    syscall_args: bool = True  # file-open and DNS features (per-syscall tracepoints; see docs/sensor.md)
    sensitive_prefixes: tuple[str, ...] = DEFAULT_SENSITIVE_PREFIXES
    # Sizes of the count maps (entries per window, each of the two sets), from distinct keys measured per
    # container per 5 s window under load (bench/busy_containers.py, docs/benchmarks.md): 100 busy containers
    # reached 4,687 syscall keys (<= 77 a container), 72,785 n-gram buckets (<= 1,854 a container) and
    # 10,700 endpoints; one container port-scanning at full speed adds up to 65,535 endpoints in a window.
    # Syscall counts take one row per cgroup active in the window: 512 per-CPU counters and, with n-grams, 128
    # n-gram slots (6 KiB a CPU).
    max_syscall_rows: int = 512
    max_ngram_entries: int = 262144
    max_cgroups: int = 8192
    max_paths: int = 8192
    max_endpoints: int = 131072
    max_sockets: int = 65536
    extra_cflags: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        try:
            orders = check_orders(self.ngram_orders)
        except ValueError as exc:
            raise ValueError(f"ngram_orders: {exc}") from None
        object.__setattr__(self, "ngram_orders", orders)  # sorted
        if len(self.sensitive_prefixes) > MAX_PREFIXES:
            raise ValueError(f"at most {MAX_PREFIXES} sensitive prefixes")
        for p in self.sensitive_prefixes:
            if not p.startswith("/") or len(p) > MAX_PREFIX_LEN or any(c in p for c in "\\'\"\0"):
                raise ValueError(f"sensitive prefix must be an absolute path of <= {MAX_PREFIX_LEN} "
                                 f"plain characters: {p!r}")


# ---------------------------------------------------------------- kernel headers and prerequisites


def find_kernel_source() -> str | None:
    """Header tree for BCC: ``$BCC_KERNEL_SOURCE``, else the running kernel's own headers (None: BCC
    finds them itself), else the newest tree that ``scripts/kernel_headers.sh`` unpacked."""
    env = os.environ.get("BCC_KERNEL_SOURCE")
    if env:
        return env
    if Path(f"/lib/modules/{os.uname().release}/build/include").exists():
        return None
    trees = sorted(glob.glob(os.path.join(DEFAULT_KERNEL_SRC, "linux-headers-*")))
    trees = [t for t in trees if Path(t, "include/generated/autoconf.h").exists()]
    return trees[-1] if trees else None


def check_prerequisites() -> list[str]:
    """Problems that stop the sensor, each with what to do about it (empty: ready)."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append("not root: the eBPF sensor must run as root (or with CAP_BPF, CAP_PERFMON and "
                        "CAP_SYS_RESOURCE)")
    try:
        import bcc  # noqa: F401
    except ImportError:
        problems.append("the bcc Python module is missing: apt-get install bpfcc-tools python3-bpfcc "
                        "libbpfcc, and make it importable (scripts/bootstrap.sh links it into .venv)")
    if not Path("/sys/fs/bpf").exists() and not Path("/proc/sys/kernel/unprivileged_bpf_disabled").exists():
        problems.append("this kernel has no BPF support (CONFIG_BPF_SYSCALL)")
    if not Path("/sys/kernel/btf/vmlinux").exists():
        problems.append("this kernel has no BTF (CONFIG_DEBUG_INFO_BTF), which the sensor's per-thread n-gram "
                        "history (task-local storage) needs")
    if not Path("/sys/kernel/tracing/events/raw_syscalls").exists() and \
            not Path("/sys/kernel/debug/tracing/events/raw_syscalls").exists():
        problems.append("tracefs is not mounted: mount -t tracefs nodev /sys/kernel/tracing")
    src = find_kernel_source()
    env = os.environ.get("BCC_KERNEL_SOURCE")
    if env and not Path(env, "include").is_dir():
        problems.append(f"BCC_KERNEL_SOURCE={env} has no include/ directory")
    elif src is None and not Path(f"/lib/modules/{os.uname().release}/build/include").exists():
        problems.append("no kernel headers: run scripts/kernel_headers.sh (unpacks Debian's "
                        "linux-headers-*-amd64 and -common into /opt/baseliner/kernel-src) or set "
                        "BCC_KERNEL_SOURCE to a header tree")
    return problems


# ---------------------------------------------------------------- program text

#: the syscalls whose arguments the program reads (each by its program ``arg_<name>`` in sensor.c)
ARG_SYSCALLS = ("open", "openat", "openat2", "creat", "close", "chdir", "fchdir", "rename", "renameat", "renameat2",
                "link", "linkat", "symlink", "symlinkat", "connect", "sendto")


#: when ``sys_enter`` tail-calls a syscall's argument program (ARGS_* in sensor.c; the others: always): a close
#: only while directory fds are tracked, an open only when its flags (second / third argument) are counted
ARGS_ALWAYS, ARGS_DIRFDS, ARGS_FLAGS_SI, ARGS_FLAGS_DX = 1, 2, 3, 4
ARGS_WHEN = {"close": ARGS_DIRFDS, "open": ARGS_FLAGS_SI, "openat": ARGS_FLAGS_DX}


def arg_syscall_numbers() -> dict[str, int]:
    """x86_64 syscall number of each of :data:`ARG_SYSCALLS`."""
    numbers = {syscalls.name_of(nr): nr for nr in range(len(syscalls.id_table("x86_64")))}
    return {name: numbers[name] for name in ARG_SYSCALLS}


def _prefix_matcher(prefixes: tuple[str, ...]) -> str:
    """C function ``sensitive_match(path)``: 1 if ``path`` is a prefix directory or lies under one."""
    lines = ["static __always_inline int sensitive_match(const char *p)", "{"]
    for prefix in prefixes:
        d = prefix.rstrip("/") or "/"
        conds = [f"p[{i}] == {ord(c)}" for i, c in enumerate(d)]
        n = len(d)
        if d == "/":
            lines.append("    return 1; /* / */")
            continue
        # exactly the directory, or the directory followed by '/'
        lines.append(f"    if ({' && '.join(conds)} && (p[{n}] == 0 || p[{n}] == 47)) return 1; /* {d} */")
    lines += ["    return 0;", "}"]
    return "\n".join(lines)


def build_program(config: ProbeConfig) -> str:
    """The complete C text BCC compiles (printable: ``python -m baseliner.sensor.cli_bpf --print-program``)."""
    body = (BPF_DIR / "sensor.c").read_text()
    defines = {
        "BASELINER_NGRAMS": int(config.ngrams),
        **{f"BASELINER_NGRAM_ORDER_{n}": int(n in config.ngram_orders) for n in ORDERS},
        "BASELINER_SYSCALL_ARGS": int(config.syscall_args),
        "MAX_SYSCALL_ROWS": config.max_syscall_rows,
        "MAX_NGRAM_ENTRIES": config.max_ngram_entries,
        "MAX_CGROUPS": config.max_cgroups,
        "MAX_PATHS": config.max_paths,
        "MAX_ENDPOINTS": config.max_endpoints,
        "MAX_SOCKETS": config.max_sockets,
    }
    head = "\n".join(f"#define {k} {v}" for k, v in defines.items())
    body = body.replace("/* @SENSITIVE_PREFIXES@ */", _prefix_matcher(config.sensitive_prefixes))
    return f"/* generated by sensor/probes.py */\n{head}\n{body}"


# ---------------------------------------------------------------- map draining

#: struct gram_key: a cgroup and the n-grams one syscall closed, each order's bucket + 1 (0: none) packed
_GRAM_KEY = np.dtype([("cgid", "<u8"), ("grams", "<u8")])
#: each order's bit position in gram_key.grams (GRAM_SHIFT_n in sensor.c) and its field's width
GRAM_SHIFT = {2: 0, 3: 13, 4: 26, 6: 39}
GRAM_BITS = {2: 13, 3: 13, 4: 13, 6: 17}
#: struct odd_key: a cgroup and a syscall number outside the count rows
_ODD_KEY = np.dtype([("cgid", "<u8"), ("nr", "<u4"), ("pad", "<u4")])
#: syscall numbers with a counter in a cgroup's row (NGRAM_NR_LIMIT), and its n-gram slots (GRAM_SLOTS: a
#: (grams, count) pair each)
ROW_SYSCALLS = 512
GRAM_SLOTS = 128
#: where each order's buckets start in the n-gram vector (docs/ngram-spec.md, section 2)
_ORDER_OFFSET = {2: 0, 3: BUCKETS, 4: 2 * BUCKETS, 6: SHORT_BUCKETS}
_EP_KEY = np.dtype([("cgid", "<u8"), ("addr", "u1", (16,)), ("port", "<u2"), ("family", "u1"),
                    ("inbound", "u1"), ("pad", "<u4")])
_PATH_KEY = np.dtype([("cgid", "<u8"), ("kind", "<u4"), ("pad", "<u4"), ("path", f"S{PATH_LEN}")])


class _Drainer:
    """Reads and deletes all entries of one map with the batch syscalls, into numpy arrays."""

    def __init__(self, lib: Any, table: Any, key_dtype: np.dtype, value_size: int, ncpu: int) -> None:
        self.lib = lib
        self.fd = table.map_fd
        self.max_entries = int(table.max_entries)
        self.key_dtype = key_dtype
        self.value_size = value_size  # bytes per CPU slot (per-CPU maps) or per value
        self.ncpu = ncpu
        self.keys = (ct.c_ubyte * (key_dtype.itemsize * self.max_entries))()
        self.values = (ct.c_ubyte * (value_size * ncpu * self.max_entries))()

    def drain(self, delete: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(keys, values[n, ncpu, value_size // 8] as uint64); deletes what it returns unless told not to
        (a plain batch lookup, for counting entries of maps that programs keep writing)."""
        batch = self.lib.bpf_lookup_and_delete_batch if delete else self.lib.bpf_lookup_batch
        ksz, vsz = self.key_dtype.itemsize, self.value_size * self.ncpu
        total = 0
        in_batch = ct.c_uint32(0)
        out_batch = ct.c_uint32(0)
        count = ct.c_uint32(0)
        while total < self.max_entries:
            count.value = self.max_entries - total
            res = batch(
                self.fd, ct.byref(in_batch) if total else None, ct.byref(out_batch),
                ct.byref(self.keys, ksz * total), ct.byref(self.values, vsz * total), ct.byref(count))
            err = ct.get_errno()
            total += count.value
            if res != 0:
                if err not in (0, 2):  # ENOENT: done
                    raise OSError(err, f"BPF_MAP_LOOKUP(_AND_DELETE)_BATCH failed: {os.strerror(err)}")
                break
            if count.value == 0:
                break
            in_batch.value = out_batch.value
        keys = np.frombuffer(memoryview(self.keys), dtype=self.key_dtype, count=total).copy()
        vals = np.frombuffer(memoryview(self.values), dtype="<u8", count=total * vsz // 8).copy()
        return keys, vals.reshape(total, self.ncpu, self.value_size // 8)


class _Rows:
    """The first rows of a per-CPU array of counters: read them and zero them, one batch syscall each."""

    def __init__(self, lib: Any, table: Any, value_size: int, ncpu: int, most: int) -> None:
        self.lib = lib
        self.fd = table.map_fd
        self.max_entries = int(table.max_entries)
        self.row_bytes = value_size * ncpu
        self.ncpu = ncpu
        self.value_size = value_size
        self.keys = (ct.c_uint32 * self.max_entries)(*range(self.max_entries))
        # buffers for the most rows one take reads (one set's), not the whole array: they grow with the CPUs
        self.most = most
        self.values = (ct.c_ubyte * (self.row_bytes * most))()
        self.zeros = (ct.c_ubyte * (self.row_bytes * most))()

    def take(self, start: int, n: int) -> np.ndarray:
        """Rows start .. start + n - 1 as uint64[n, ncpu, value_size // 8], then zeroed in the map."""
        n = min(n, self.max_entries - start, self.most)
        if n <= 0:
            return np.zeros((0, self.ncpu, self.value_size // 8), dtype=np.uint64)
        in_batch = ct.c_uint32(start - 1)  # the batch goes on after this key
        out_batch = ct.c_uint32(0)
        count = ct.c_uint32(n)
        if self.lib.bpf_lookup_batch(self.fd, ct.byref(in_batch) if start else None, ct.byref(out_batch),
                                     ct.byref(self.keys, 4 * start), ct.byref(self.values),
                                     ct.byref(count)) != 0 and ct.get_errno() not in (0, 2):
            err = ct.get_errno()
            raise OSError(err, f"BPF_MAP_LOOKUP_BATCH failed: {os.strerror(err)}")
        if count.value != n:
            raise OSError(0, f"BPF_MAP_LOOKUP_BATCH read {count.value} of {n} rows")
        vals = np.frombuffer(memoryview(self.values), dtype="<u8", count=n * self.row_bytes // 8).copy()
        count.value = n
        if self.lib.bpf_update_batch(self.fd, ct.byref(self.keys, 4 * start), ct.byref(self.zeros), ct.byref(count),
                                     None) != 0:
            err = ct.get_errno()
            raise OSError(err, f"BPF_MAP_UPDATE_BATCH failed: {os.strerror(err)}")
        return vals.reshape(n, self.ncpu, self.value_size // 8)


class Probes:
    """The loaded, attached program.  ``with Probes(cfg) as p: ... p.flip()``."""

    def __init__(self, config: ProbeConfig | None = None) -> None:
        self.config = config or ProbeConfig()
        problems = check_prerequisites()
        if problems:
            raise PrerequisiteError("the eBPF sensor cannot start:\n  - " + "\n  - ".join(problems))
        src = find_kernel_source()
        if src:
            os.environ["BCC_KERNEL_SOURCE"] = src
        from bcc import BPF  # the only bcc import in the project
        from bcc.libbcc import lib
        from bcc.utils import get_possible_cpus

        t0 = time.monotonic()
        text = build_program(self.config)
        self._bpf = BPF(text=text.encode(), cflags=[f"-I{BPF_DIR}", "-Wno-unused-function",
                                                    *self.config.extra_cflags])
        log.info("eBPF program compiled and attached in %.1fs (kernel headers: %s)",
                 time.monotonic() - t0, src or "the running kernel's")
        ids = self._bpf[b"sysids"]
        with_args = ({nr: ARGS_WHEN.get(name, ARGS_ALWAYS) for name, nr in arg_syscall_numbers().items()}
                     if self.config.syscall_args else {})
        for nr, cid in enumerate(syscalls.id_table("x86_64")):
            ids[ct.c_uint32(nr)] = ids.Leaf(cid, with_args.get(nr, 0))
        if self.config.syscall_args:
            self._fill_arg_programs(BPF)
        self._ctl = self._bpf[b"ctl"]
        self._rows_used = self._bpf[b"rows_used"]
        self.epoch = 0  # the window's epoch (ctl[0]); the active set is its parity
        self._ctl[ct.c_uint32(0)] = ct.c_uint64(0)
        self.ncpu = len(get_possible_cpus())
        self._sets = [self._drainers(lib, s) for s in (0, 1)]
        row_words = ROW_SYSCALLS + (2 * GRAM_SLOTS if self.config.ngrams else 0)
        # set N: rows N * max_syscall_rows onwards
        self._rows = _Rows(lib, self._bpf[b"rows"], 8 * row_words, self.ncpu, self.config.max_syscall_rows)
        b = self._bpf
        self._shared = {
            "sock_owner": _Drainer(lib, b[b"sock_owner"], np.dtype("<u8"), 8, 1),
            "sock_pending_in": _Drainer(lib, b[b"sock_pending_in"], np.dtype("<u8"), 24, 1),
        }
        self._closed = False
        self._misses = self.kernel_misses()

    def _fill_arg_programs(self, bpf_class: Any) -> None:
        """Load each ``arg_<syscall>`` program and enter it in ``arg_progs`` under its x86_64 number, where
        ``sys_enter`` tail-calls it."""
        progs = self._bpf[b"arg_progs"]
        for name, nr in arg_syscall_numbers().items():
            fn = self._bpf.load_func(f"arg_{name}".encode(), bpf_class.RAW_TRACEPOINT)
            progs[ct.c_int(nr)] = ct.c_int(fn.fd)

    def _drainers(self, lib: Any, s: int) -> dict[str, Any]:
        b = self._bpf
        d: dict[str, Any] = {
            "row_of": _Drainer(lib, b[f"row_of_{s}".encode()], np.dtype("<u8"), 8, self.ncpu),
            "odd": _Drainer(lib, b[f"odd_{s}".encode()], _ODD_KEY, 8, self.ncpu),
            "cgroups": _Drainer(lib, b[f"cgroups_{s}".encode()], np.dtype("<u8"), 8 * len(CG_FIELDS), self.ncpu),
            "paths": _Drainer(lib, b[f"paths_{s}".encode()], _PATH_KEY, 8, 1),
            "endpoints": _Drainer(lib, b[f"endpoints_{s}".encode()], _EP_KEY, 8, 1),
        }
        if self.config.ngrams:
            d["grams"] = _Drainer(lib, b[f"grams_{s}".encode()], _GRAM_KEY, 8, self.ncpu)
        return d

    # ------------------------------------------------------------ operations

    def flip(self) -> WindowCounts:
        """Switch programs to the other map set and return (and clear) what the old set counted.

        Events the kernel did not run a program for (it skips a tracing program that would nest inside
        another on the same CPU, e.g. a softirq TCP transition during a send) are added to
        ``lost_global``: no cgroup can be charged with them, so the window's vectors are incomplete."""
        old = self.epoch & 1
        self.epoch += 1
        self._ctl[ct.c_uint32(0)] = ct.c_uint64(self.epoch)
        time.sleep(GRACE_SECONDS)
        out = self._drain_set(old)
        misses = self.kernel_misses()
        if misses > self._misses:
            out.lost_global += misses - self._misses
            out.missed = misses - self._misses
        self._misses = misses
        return out

    def kernel_misses(self) -> int:
        """Sum of the programs' ``recursion_misses`` (``/proc/self/fdinfo`` of each program fd)."""
        return sum(self.kernel_misses_by_program().values())

    def _drain_set(self, s: int) -> WindowCounts:
        dr = self._sets[s]
        out = WindowCounts()
        row_cgids, row_grams, row_counts = self._drain_rows(s, out)
        if self.config.ngrams:
            keys, vals = dr["grams"].drain()
            cgids = np.concatenate([keys["cgid"], row_cgids])
            grams = np.concatenate([keys["grams"], row_grams])
            tot = np.concatenate([vals[:, :, 0].sum(axis=1), row_counts])
            for order in self.config.ngram_orders:
                g = (grams >> np.uint64(GRAM_SHIFT[order])) & np.uint64((1 << GRAM_BITS[order]) - 1)
                has = g != 0
                buckets = g[has].astype(np.int64) - 1 + _ORDER_OFFSET[order]
                for cg, b, v in _sum_by(cgids[has], buckets, tot[has]):
                    out.ngrams.setdefault(cg, {})[b] = v
        keys, vals = dr["cgroups"].drain()
        sums = vals.sum(axis=1)
        for cg, row in zip(keys.tolist(), sums.tolist(), strict=True):
            out.counters[cg] = dict(zip(CG_FIELDS, row, strict=True))
        keys, vals = dr["paths"].drain()
        for k, v in zip(keys, vals[:, 0, 0].tolist(), strict=True):
            path = bytes(k["path"]).split(b"\0", 1)[0].decode("utf-8", "replace")
            kind = int(k["kind"])
            target = out.exec_paths if kind == KIND_EXEC else out.sensitive_paths
            if kind in (KIND_EXEC, KIND_SENSITIVE):
                target.setdefault(int(k["cgid"]), {})[path] = v
        keys, vals = dr["endpoints"].drain()
        for k, v in zip(keys, vals[:, 0, 0].tolist(), strict=True):
            fam = int(k["family"])
            addr = bytes(k["addr"][:4] if fam == 2 else k["addr"])
            out.endpoints.setdefault(int(k["cgid"]), []).append(
                Endpoint4(family=fam, addr=addr, port=int(k["port"]), inbound=bool(k["inbound"]), count=v))
        lost = self._bpf[f"lost_{s}".encode()]
        out.lost_global = int(sum(lost[ct.c_int(0)]))
        lost.clear()  # per-CPU array: zero every slot (inactive set: nothing writes to it)
        return out

    def _drain_rows(self, s: int, out: WindowCounts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The set's syscall counts into ``out.syscalls``: each cgroup's rows (summed over CPUs), then the numbers
        outside the rows; the rows are zeroed and their assignment cleared for the set's next window.  Returns the
        (cgroup, grams, count) pairs left in the rows' n-gram slots."""
        dr = self._sets[s]
        key = ct.c_uint32(s)
        used = max(int(v) for v in self._rows_used[key])  # rows taken, per CPU
        cgids, rows = dr["row_of"].drain()  # [cgroup, cpu, 1]: row + 1 (0: none on that CPU)
        table = self._rows.take(s * self.config.max_syscall_rows, used)  # [row, cpu, nr]
        self._rows_used[key] = self._rows_used.Leaf(*([0] * self.ncpu))
        cg_index, cpu = np.nonzero(rows[:, :, 0])
        mine = table[rows[cg_index, cpu, 0].astype(np.int64) - 1, cpu]  # [(cgroup, cpu), words of a row]
        counts = np.zeros((len(cgids), ROW_SYSCALLS), dtype=np.uint64)
        np.add.at(counts, cg_index, mine[:, :ROW_SYSCALLS])
        for cg, row in zip(cgids.tolist(), counts, strict=True):
            nrs = np.flatnonzero(row)
            if len(nrs):
                out.syscalls[cg] = dict(zip(nrs.tolist(), row[nrs].tolist(), strict=True))
        keys, vals = dr["odd"].drain()
        tot = vals[:, :, 0].sum(axis=1)
        for cg, nr, v in _sum_by(keys["cgid"], keys["nr"], tot):
            out.syscalls.setdefault(cg, {})[_signed_nr(nr)] = v
        slots = mine[:, ROW_SYSCALLS:].reshape(len(mine), -1, 2)  # [(cgroup, cpu), slot, (grams, count)]
        taken = slots[:, :, 0] != 0
        owner = np.broadcast_to(cgids[cg_index][:, None], taken.shape)
        return owner[taken], slots[:, :, 0][taken], slots[:, :, 1][taken]

    def kernel_misses_by_program(self) -> dict[str, int]:
        """``recursion_misses`` of each program (events the kernel ran it not for)."""
        out: dict[str, int] = {}
        for name, fn in self._bpf.funcs.items():
            misses = _fdinfo_field(fn.fd, b"recursion_misses:")
            if misses is not None:
                out[name.decode() if isinstance(name, bytes) else str(name)] = misses
        return out

    def map_memory(self) -> dict[str, int]:
        """Kernel memory of each map in bytes (``memlock`` of its fd; per-CPU maps count every CPU's copy)."""
        names = ["ctl", "cpu_cache", "sysids", "rows", "rows_used", "threads", "sock_owner", "sock_pending_in",
                 "scratch", "sensitive_cwd", "sensitive_dirfd", "dir_pending"]
        for s in (0, 1):
            names += [f"{m}_{s}" for m in ("row_of", "odd", "grams", "cgroups", "paths", "endpoints", "lost")]
        out: dict[str, int] = {}
        for name in names:
            try:
                with open(f"/proc/self/fdinfo/{self._bpf[name.encode()].map_fd}") as f:
                    for line in f:
                        if line.startswith("memlock:"):
                            out[name] = int(line.split()[1])
            except (OSError, ValueError, IndexError, KeyError):
                continue
        return out

    def map_entries(self) -> dict[str, int]:
        """Entries in the shared (not double-buffered) maps, for self-metrics; ``history``: threads with an
        n-gram history (task-local storage, counted by the programs as made minus deleted)."""
        out = {name: len(d.drain(delete=False)[0]) for name, d in self._shared.items()}
        out["history"] = sum(self._bpf[b"threads"][ct.c_int(0)]) % (1 << 64)
        return out

    def close(self) -> None:
        if not self._closed:
            self._bpf.cleanup()
            self._closed = True

    def __enter__(self) -> Probes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sum_by(cgids: np.ndarray, sub: np.ndarray, counts: np.ndarray) -> list[tuple[int, int, int]]:
    """(cgroup, sub-key, summed count) for each distinct (cgroup, sub-key) pair with a count above 0."""
    if not len(cgids):
        return []
    cg_ids, cg_index = np.unique(cgids, return_inverse=True)
    pairs, inverse = np.unique((cg_index.astype(np.int64) << 32) | sub.astype(np.int64), return_inverse=True)
    sums = np.zeros(len(pairs), dtype=np.uint64)
    np.add.at(sums, inverse, counts)
    keep = sums > 0
    cgs = cg_ids[(pairs >> 32)[keep]].tolist()
    return list(zip(cgs, (pairs & 0xFFFFFFFF)[keep].tolist(), sums[keep].tolist(), strict=True))


def _fdinfo_field(fd: int, field: bytes) -> int | None:
    """An integer field of ``/proc/self/fdinfo/<fd>`` (None: no such fd or field); read with one os.read, as it
    is read for every program at every flip."""
    try:
        f = os.open(f"/proc/self/fdinfo/{fd}", os.O_RDONLY)
    except OSError:
        return None
    try:
        text = os.read(f, 4096)
    finally:
        os.close(f)
    at = text.find(field)
    if at < 0:
        return None
    try:
        return int(text[at + len(field):text.index(b"\n", at)])
    except ValueError:
        return None


def _signed_nr(nr: int) -> int:
    return nr - (1 << 32) if nr >= (1 << 31) else nr
