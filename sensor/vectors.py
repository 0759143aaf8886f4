"""Pure functions: drained eBPF map contents plus attribution -> :class:`~baseliner.models.vector.FeatureVector`.

No bcc, no root, no clock: ``sensor/probes.py`` produces a :class:`WindowCounts` (plain dicts keyed by
cgroup id), ``sensor/attribution/`` says which container each cgroup belongs to (``None`` to ignore it), and
:func:`build_vectors` merges the cgroups of one container into one vector per window.  Windows of containers
whose metadata is not known yet are held back as :meth:`WindowCounts.select` of their cgroups.  What each
field counts is in ``docs/sensor.md`` ("What is counted"; kernel side in ``sensor/bpf/sensor.c``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from baseliner.models.syscalls import name_of
from baseliner.models.vector import MAX_ENDPOINTS, MAX_EXECUTABLES, Endpoint, FeatureVector
from baseliner.sensor.attribution.resolver import ContainerInfo

#: Order of ``struct cg_counters`` in ``sensor/bpf/sensor.c``.
CG_FIELDS: tuple[str, ...] = (
    "execs", "forks", "exits", "connects", "established", "connects_failed", "accepts", "listens",
    "bytes_sent", "bytes_received", "packets_sent", "packets_received", "dns_queries", "write_opens",
    "sensitive_writes", "unresolved_writes", "lost", "socket_attributed",
)
KIND_EXEC = 0
KIND_SENSITIVE = 1
MAX_SENSITIVE_PATHS = 64

# counters copied as they are into the vector field of the same name
_DIRECT = ("execs", "forks", "exits", "connects", "connects_failed", "accepts", "listens", "bytes_sent",
           "bytes_received", "packets_sent", "packets_received", "dns_queries", "write_opens",
           "sensitive_writes", "unresolved_writes")


@dataclass(frozen=True, slots=True)
class Endpoint4:
    """One drained entry of the endpoints map."""

    family: int  # 2 = AF_INET, 10 = AF_INET6
    addr: bytes  # 4 or 16 bytes, network order
    port: int
    inbound: bool
    count: int

    @property
    def address(self) -> str:
        return str(ipaddress.ip_address(self.addr))


@dataclass
class WindowCounts:
    """Everything the kernel counted in one window, keyed by cgroup id (plain data)."""

    syscalls: dict[int, dict[int, int]] = field(default_factory=dict)  # cgid -> nr -> count
    ngrams: dict[int, dict[int, int]] = field(default_factory=dict)  # cgid -> bucket -> count
    counters: dict[int, dict[str, int]] = field(default_factory=dict)  # cgid -> CG_FIELDS -> count
    exec_paths: dict[int, dict[str, int]] = field(default_factory=dict)  # cgid -> path -> execs
    sensitive_paths: dict[int, dict[str, int]] = field(default_factory=dict)
    endpoints: dict[int, list[Endpoint4]] = field(default_factory=dict)
    lost_global: int = 0
    #: of lost_global, the events the kernel ran no program for (a tracing program nested on one CPU)
    missed: int = 0

    def cgroups(self) -> set[int]:
        """Every cgroup id with anything counted."""
        out: set[int] = set()
        for m in (self.syscalls, self.ngrams, self.counters, self.exec_paths, self.sensitive_paths,
                  self.endpoints):
            out.update(m)
        return out

    def counter(self, cgid: int, name: str) -> int:
        return self.counters.get(cgid, {}).get(name, 0)

    def select(self, cgids: set[int]) -> WindowCounts:
        """The counts of ``cgids`` only (shared, not copied), with the window's global losses.

        >>> w = WindowCounts(syscalls={1: {0: 5}, 2: {0: 7}}, lost_global=3)
        >>> w.select({2}).syscalls, w.select({2}).lost_global
        ({2: {0: 7}}, 3)
        """
        def pick(m: dict[int, Any]) -> dict[int, Any]:
            return {cg: v for cg, v in m.items() if cg in cgids}

        return WindowCounts(syscalls=pick(self.syscalls), ngrams=pick(self.ngrams), counters=pick(self.counters),
                            exec_paths=pick(self.exec_paths), sensitive_paths=pick(self.sensitive_paths),
                            endpoints=pick(self.endpoints), lost_global=self.lost_global, missed=self.missed)


def _top(counts: Mapping[str, int], limit: int) -> list[str]:
    return [p for p, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]]


def build_vectors(
    counts: WindowCounts,
    attribution: Mapping[int, ContainerInfo | None],
    *,
    window_start: float,
    window_seconds: float,
) -> list[FeatureVector]:
    """One vector per container for the window.  Cgroups missing from ``attribution`` or mapped to
    ``None`` are ignored; cgroups of the same container (same identity) are summed."""
    groups: dict[object, list[tuple[int, ContainerInfo]]] = {}
    for cg in sorted(counts.cgroups()):
        info = attribution.get(cg)
        if info is None:
            continue
        groups.setdefault(info.identity, []).append((cg, info))

    out: list[FeatureVector] = []
    for members in groups.values():
        info0 = members[0][1]
        v = FeatureVector(identity=info0.identity, window_start=window_start, window_seconds=window_seconds)
        execs: dict[str, int] = {}
        sens: dict[str, int] = {}
        eps: dict[tuple[str, int, bool], int] = {}
        for cg, info in members:
            for nr, n in counts.syscalls.get(cg, {}).items():
                name = name_of(nr)
                v.syscalls[name] = v.syscalls.get(name, 0) + n
            for b, n in counts.ngrams.get(cg, {}).items():
                v.ngrams[b] = v.ngrams.get(b, 0) + n
            c = counts.counters.get(cg, {})
            for f in _DIRECT:
                setattr(v, f, getattr(v, f) + c.get(f, 0))
            v.events_lost += c.get("lost", 0)
            for p, n in counts.exec_paths.get(cg, {}).items():
                execs[p] = execs.get(p, 0) + n
            for p, n in counts.sensitive_paths.get(cg, {}).items():
                sens[p] = sens.get(p, 0) + n
            for e in counts.endpoints.get(cg, []):
                k = (e.address, e.port, not e.inbound)
                eps[k] = eps.get(k, 0) + e.count
            v.container_exited = v.container_exited or info.exited
        v.executables = _top(execs, MAX_EXECUTABLES)
        v.sensitive_paths = _top(sens, MAX_SENSITIVE_PATHS)
        v.remote_addresses = len({a for a, _, _ in eps})
        v.remote_ports = len({p for _, p, outbound in eps if outbound})
        ranked = sorted(eps.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_ENDPOINTS]
        v.endpoints = [Endpoint(address=a, port=p, protocol="tcp", outbound=o) for (a, p, o), _ in ranked]
        v.complete = v.events_lost == 0 and counts.lost_global == 0
        starts = [i.started_at for _, i in members if i.started_at is not None]
        if starts:
            v.seconds_since_start = max(0.0, window_start - min(starts))
        out.append(v)
    return out
