"""Architecture-neutral syscall identities.

Every syscall is identified by its *canonical name*: the x86_64 name of the call that does the same
thing.  Legacy i386 variants collapse onto it (``stat64`` -> ``stat``, ``mmap2`` -> ``mmap``,
``getuid32`` -> ``getuid``, ``_llseek`` -> ``lseek``, ``clock_gettime64`` -> ``clock_gettime`` ...).
The multiplexers ``socketcall`` and ``ipc`` stay themselves: a trace of bare numbers (ADFA-LD) does not
say which sub-call was made, so no honest mapping exists.

The canonical *id* of a syscall is the FNV-1a 32-bit hash of its canonical name, so ids agree across
architectures without a shared numbering (see ``docs/ngram-spec.md``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

# i386 (and other legacy) names whose x86_64 equivalent has another name.
_ALIASES: dict[str, str] = {
    "_llseek": "lseek",
    "_newselect": "select",
    "fadvise64_64": "fadvise64",
    "fcntl64": "fcntl",
    "fstat64": "fstat",
    "fstatat64": "newfstatat",
    "fstatfs64": "fstatfs",
    "ftruncate64": "ftruncate",
    "lstat64": "lstat",
    "mmap2": "mmap",
    "oldfstat": "fstat",
    "oldlstat": "lstat",
    "oldolduname": "uname",
    "olduname": "uname",
    "oldstat": "stat",
    "readdir": "getdents",
    "sendfile64": "sendfile",
    "sigaction": "rt_sigaction",
    "signal": "rt_sigaction",
    "sigpending": "rt_sigpending",
    "sigprocmask": "rt_sigprocmask",
    "sigreturn": "rt_sigreturn",
    "sigsuspend": "rt_sigsuspend",
    "stat64": "stat",
    "statfs64": "statfs",
    "truncate64": "truncate",
    "ugetrlimit": "getrlimit",
    "umount": "umount2",
    "waitpid": "wait4",
}

_UID32 = {
    "chown32", "fchown32", "getegid32", "geteuid32", "getgid32", "getgroups32", "getresgid32",
    "getresuid32", "getuid32", "lchown32", "setfsgid32", "setfsuid32", "setgid32", "setgroups32",
    "setregid32", "setresgid32", "setresuid32", "setreuid32", "setuid32",
}


def _load_tables() -> dict[str, dict[int, str]]:
    """Number -> name per architecture, from the table scripts/gen_syscall_tables.py writes."""
    tables: dict[str, dict[int, str]] = {}
    for line in (Path(__file__).parent / "syscall_tables.tsv").read_text().splitlines():
        arch, nr, name = line.split("\t")
        tables.setdefault(arch, {})[int(nr)] = name
    return tables


_TABLES = _load_tables()
_X86_64_NAMES = frozenset(_TABLES["x86_64"].values())


def canonical_name(name: str) -> str:
    """Return the architecture-neutral name of a syscall.

    >>> canonical_name("stat64"), canonical_name("getuid32"), canonical_name("futex_time64")
    ('stat', 'getuid', 'futex')
    >>> canonical_name("socketcall")
    'socketcall'
    """
    if name in _ALIASES:
        return _ALIASES[name]
    if name in _UID32:
        return name[:-2]
    if name.endswith("_time64"):
        return name[: -len("_time64")]
    if name.endswith("64") and name[:-2] in _X86_64_NAMES:
        return name[:-2]
    return name


def fnv1a32(data: bytes) -> int:
    """FNV-1a, 32 bit.

    >>> hex(fnv1a32(b"read"))
    '0xcedfa3c5'
    """
    h = 0x811C9DC5
    for byte in data:
        h ^= byte
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


@lru_cache(maxsize=4096)
def canonical_id(name: str) -> int:
    """Canonical 32-bit id of a syscall name (FNV-1a of its canonical name)."""
    return fnv1a32(canonical_name(name).encode())


def _table(arch: str) -> dict[int, str]:
    try:
        return _TABLES[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; known: {sorted(_TABLES)}") from None


def name_of(nr: int, arch: str = "x86_64") -> str:
    """Canonical name for syscall number ``nr`` on ``arch`` (``sys_<nr>`` when unknown)."""
    raw = _table(arch).get(nr)
    return canonical_name(raw) if raw is not None else f"sys_{nr}"


def id_table(arch: str = "x86_64", size: int = 512) -> list[int]:
    """Syscall number -> canonical id, as a dense list (the sensor loads it into a BPF array)."""
    table = _table(arch)
    out = []
    for nr in range(size):
        raw = table.get(nr)
        out.append(canonical_id(raw) if raw is not None else fnv1a32(f"sys_{nr}".encode()))
    return out
