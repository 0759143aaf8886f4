"""cgroup id -> :class:`ContainerInfo`, once per window for every cgroup the kernel counted.

In order, for a cgroup not resolved before:

1. its path (:class:`~baseliner.sensor.attribution.cgroups.CgroupIndex`); a cgroup gone before it could be
   seen is dropped (``cgroup_gone``);
2. the operator's rules (first match wins);
3. the runtimes' layouts (:func:`~baseliner.sensor.attribution.layouts.parse_cgroup_path`): no layout (or a
   runtime's monitor process) is the host, grouped or ignored;
4. the metadata of the container from the runtimes that serve its layout (:mod:`.detect`), cached by
   container id.  When no runtime describes it yet (socket missing or failing, container not registered
   yet, lookup budget of the window spent) the cgroup is **pending**: the caller holds its windows back and
   asks again next window.  A cgroup pending longer than ``hold_seconds`` is given up: its windows are
   dropped (counted by reason) until a runtime describes it, never learnt as an ``unknown`` image.

Resolved cgroups are cached (bounded, least recently used first out); a cached container's cgroup that no
longer exists gives one last window marked ``exited`` and is forgotten with its metadata.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from baseliner.models.vector import Identity
from baseliner.sensor.attribution.cgroups import CgroupIndex
from baseliner.sensor.attribution.detect import RuntimeSet, RuntimeSocket
from baseliner.sensor.attribution.layouts import CgroupMatch, parse_cgroup_path
from baseliner.sensor.attribution.metrics import AttributionMetrics
from baseliner.sensor.attribution.rules import ImageRule, first_match, split_image
from baseliner.sensor.attribution.runtime import ContainerMeta, RuntimeFault
from cachetools import LRUCache
from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """Who a cgroup belongs to."""

    identity: Identity
    cgroup_path: str
    runtime: str = ""  # containerd | cri-o | docker | podman | rule | host
    exited: bool = False  # the cgroup no longer exists (its last window)
    started_at: float | None = None  # when the container started (runtime), else when the sensor saw it appear


@dataclass
class AttributionConfig:
    node: str = field(default_factory=socket.gethostname)
    rules: tuple[ImageRule, ...] = ()
    host: str = "group"  # "group": one "host" container; "ignore": drop
    host_image: str = "host"
    #: runtime sockets to ask; None: detect them (detect.DEFAULT_SOCKETS); () : none, rules only
    runtimes: tuple[RuntimeSocket, ...] | None = None
    cgroup_root: str | None = None
    hold_seconds: float = 30.0  # how long windows of a container without metadata are held back
    lookup_timeout: float = 1.0  # one runtime call
    lookup_budget_seconds: float = 2.0  # runtime calls per window, in all
    cache_size: int = 8192  # cgroups and containers remembered (each)
    retry_seconds: float = 10.0  # how often a given-up container is looked up again

    def __post_init__(self) -> None:
        if self.host not in ("group", "ignore"):
            raise ValueError(f"host must be 'group' or 'ignore', not {self.host!r}")
        if self.hold_seconds < 0 or self.lookup_timeout <= 0 or self.lookup_budget_seconds <= 0:
            raise ValueError("hold_seconds must be >= 0, lookup_timeout and lookup_budget_seconds > 0")
        if self.cache_size < 16:
            raise ValueError(f"cache_size must be at least 16, got {self.cache_size}")


@dataclass
class Resolution:
    """One window's answer: attributed cgroups (None: ignore), pending ones (hold their windows back) and
    dropped ones with the reason (``metrics.DROP_REASONS``)."""

    attribution: dict[int, ContainerInfo | None] = field(default_factory=dict)
    pending: set[int] = field(default_factory=set)
    dropped: dict[int, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Pending:
    path: str
    match: CgroupMatch
    since: float  # monotonic
    reason: str
    next_try: float = 0.0


def identity_of(meta: ContainerMeta, node: str) -> Identity:
    """The vector identity of a container the runtime described."""
    repo, tag, digest = split_image(meta.image)
    return Identity(node=node, container_id=meta.container_id, image_repository=repo, image_tag=tag,
                    image_digest=digest or meta.image_digest, container_name=meta.name, pod=meta.pod,
                    namespace=meta.namespace, workload=meta.workload)


class Resolver:
    """Resolves cgroup ids to :class:`ContainerInfo`: rules, layouts, runtime metadata (see the module doc)."""

    def __init__(self, config: AttributionConfig | None = None, index: CgroupIndex | None = None,
                 runtimes: RuntimeSet | None = None, registry: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = c = config or AttributionConfig()
        self.index = index or CgroupIndex(c.cgroup_root)
        self.clock = clock
        self.runtimes = runtimes or RuntimeSet(c.runtimes, timeout=c.lookup_timeout, clock=clock)
        self.metrics = AttributionMetrics(registry)
        self._infos: LRUCache[int, ContainerInfo | None] = LRUCache(c.cache_size)
        self._metas: LRUCache[str, ContainerMeta] = LRUCache(c.cache_size)
        self._pending: dict[int, _Pending] = {}
        self._given_up: LRUCache[int, _Pending] = LRUCache(c.cache_size)
        self._first_seen: LRUCache[int, float] = LRUCache(c.cache_size)
        self._unmatched_logged: LRUCache[str, bool] = LRUCache(1024)
        # ids of cgroups gone before they were resolved (cgroup2 never reuses an id): no rescan for them
        self._gone: LRUCache[int, bool] = LRUCache(c.cache_size)
        self._known_at_start = set(self.index.scan())
        for e in self.runtimes.endpoints:
            self.metrics.runtime_up(e.name, e.socket.path, True)
        self._missing: set[RuntimeSocket] = set()
        self._report_missing()

    # ------------------------------------------------------------ the window's call

    def resolve_all(self, cgids: Iterable[int], now: float | None = None) -> Resolution:
        """Resolve one window's cgroups (``now``: the window's start, wall clock); the hierarchy is rescanned
        at most once, if any id is new."""
        ids = list(cgids)
        if any(cg not in self._infos and cg not in self._gone and not self.index.known(cg) for cg in ids):
            self.index.scan()
        wall = time.time() if now is None else now
        deadline = self.clock() + self.config.lookup_budget_seconds
        res = Resolution()
        for cg in ids:
            self._resolve(cg, wall, deadline, res)
        self.metrics.caches(len(self._infos), len(self._metas))
        self._report_missing()
        return res

    def resolve(self, cgid: int, now: float | None = None) -> ContainerInfo | None:
        """One cgroup, for callers without windows to hold: pending and dropped cgroups give None."""
        return self.resolve_all([cgid], now).attribution.get(cgid)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        self.runtimes.close()

    # ------------------------------------------------------------ steps

    def _resolve(self, cg: int, now: float, deadline: float, res: Resolution) -> None:
        if cg in self._infos:
            res.attribution[cg] = self._cached(cg)
            return
        if cg in self._gone:
            res.dropped[cg] = "cgroup_gone"
            return
        path = self.index.path_of(cg)
        held = self._pending.get(cg) or self._given_up.get(cg)
        if path is None or (held is not None and not self.index.exists(cg, held.path)):
            self._pending.pop(cg, None)
            self._given_up.pop(cg, None)
            self.index.forget(cg)
            self._gone[cg] = True
            res.dropped[cg] = "exited_before_lookup" if held is not None else "cgroup_gone"
            if held is not None:
                log.info("container %s (cgroup %s) exited before its runtime described it: its windows are dropped",
                         held.match.container_id[:12], held.path)
            return
        ident = first_match(self.config.rules, path, self.config.node)
        if ident is not None:
            self._settle(cg, ContainerInfo(ident, path, "rule", started_at=self._started(cg, now)), "rule", res)
            return
        match = parse_cgroup_path(path)
        if match is None or match.monitor:
            if match is None:
                self._note_unmatched(path)
            info = self._host(path)
            self._settle(cg, info, "host" if info else "ignored", res)
            return
        meta, reason = self._lookup(match, held, deadline)
        if meta is None:
            self._hold(cg, path, match, reason, res)
        elif meta.sandbox:
            self._settle(cg, None, "sandbox", res)
        else:
            info = ContainerInfo(identity_of(meta, self.config.node), path, meta.runtime,
                                 started_at=meta.started_at if meta.started_at is not None else self._started(cg, now))
            if held is not None:
                log.info("container %s (%s) attributed after %.1fs", match.container_id[:12], info.identity.image,
                         self.clock() - held.since)
            self._settle(cg, info, "runtime", res)

    def _cached(self, cg: int) -> ContainerInfo | None:
        info = self._infos.get(cg)
        if info is not None and info.runtime != "host" and not self.index.exists(cg, info.cgroup_path):
            info = replace(info, exited=True)  # the last window of this cgroup
            self._infos.pop(cg, None)
            self._metas.pop(info.identity.container_id, None)
            self._first_seen.pop(cg, None)
            self.index.forget(cg)
        return info

    def _settle(self, cg: int, info: ContainerInfo | None, outcome: str, res: Resolution) -> None:
        self._infos[cg] = info
        self._pending.pop(cg, None)
        self._given_up.pop(cg, None)
        res.attribution[cg] = info
        self.metrics.attributed(outcome)

    def _lookup(self, match: CgroupMatch, held: _Pending | None, deadline: float) -> tuple[ContainerMeta | None, str]:
        meta = self._metas.get(match.container_id)
        if meta is not None:
            return meta, ""
        if held is not None and self.clock() < held.next_try:
            return None, held.reason
        endpoints = self.runtimes.for_hint(match.runtime)
        if not endpoints:
            return None, "no_runtime"
        reason = "runtime_down"
        for ep in endpoints:
            if not ep.allowed():
                continue
            if self.clock() > deadline:
                return None, reason if reason != "runtime_down" else "unknown_container"
            t0 = self.clock()
            try:
                meta = ep.client.inspect(match.container_id)
            except RuntimeFault as e:
                ep.failed(e)
                self.metrics.lookup(ep.name, e.kind, self.clock() - t0)
                self.metrics.runtime_up(ep.name, ep.socket.path, False)
                continue
            ep.succeeded()
            self.metrics.runtime_up(ep.name, ep.socket.path, True)
            self.metrics.lookup(ep.name, "found" if meta else "not_found", self.clock() - t0)
            if meta is not None:
                self._metas[match.container_id] = meta
                return meta, ""
            reason = "unknown_container"
        return None, reason

    def _hold(self, cg: int, path: str, match: CgroupMatch, reason: str, res: Resolution) -> None:
        now = self.clock()
        given_up = self._given_up.get(cg)
        if given_up is not None:  # windows are dropped until a runtime describes it; looked up now and then
            if now >= given_up.next_try:
                given_up.next_try = now + self.config.retry_seconds
            given_up.reason = reason
            res.dropped[cg] = reason
            return
        p = self._pending.get(cg)
        if p is None:
            if len(self._pending) >= self.config.cache_size:
                res.dropped[cg] = "hold_full"
                return
            p = self._pending[cg] = _Pending(path, match, now, reason)
        p.reason = reason
        if now - p.since < self.config.hold_seconds:
            res.pending.add(cg)
            return
        del self._pending[cg]
        p.next_try = now + self.config.retry_seconds
        self._given_up[cg] = p
        res.dropped[cg] = reason
        log.warning("container %s (cgroup %s, %s layout): no metadata after %.0fs (%s); its windows are dropped "
                    "until a runtime describes it (sockets: %s). Containers no runtime socket describes need a "
                    "--cgroup-image rule", match.container_id[:12], path, match.layout, now - p.since, reason,
                    ", ".join(f"{e.name}={e.socket.path}" for e in self.runtimes.endpoints) or "none found")

    def _report_missing(self) -> None:
        """Sockets named with --runtime that have no client show as down (detected ones are optional)."""
        if self.runtimes.detect:
            return
        missing = set(self.runtimes.missing())
        for sock in missing ^ self._missing:
            self.metrics.socket_missing(sock.kind, sock.path, sock in missing)
        self._missing = missing

    def _host(self, path: str) -> ContainerInfo | None:
        if self.config.host == "ignore":
            return None
        repo, tag, _ = split_image(self.config.host_image)
        ident = Identity(node=self.config.node, container_id="host", image_repository=repo, image_tag=tag,
                         container_name="host")
        return ContainerInfo(identity=ident, cgroup_path=path, runtime="host")

    def _started(self, cg: int, now: float) -> float | None:
        if cg in self._known_at_start:
            return None
        first = self._first_seen.get(cg)
        if first is None:
            first = now
            self._first_seen[cg] = now
        return first

    def _note_unmatched(self, path: str) -> None:
        self.metrics.no_layout()
        if path not in self._unmatched_logged:
            self._unmatched_logged[path] = True
            log.log(logging.DEBUG if path == "/" else logging.INFO,
                    "cgroup %s matches no container layout and no rule: the host's (%s)", path, self.config.host)
