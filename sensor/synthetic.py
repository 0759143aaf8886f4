"""A synthetic cluster: realistic per-container windows with labelled attacks, in event time.

The workloads (``web``, ``db``, ``worker``), their daily cycle, restarts and rollout, and the attacks of
:data:`ATTACK_KINDS` are described in ``docs/sensor-client.md`` ("The synthetic cluster").  Syscall counts and
n-grams come from the same per-activity syscall sequences ("motifs"), so a window's n-grams agree with its
syscall counts as the kernel sensor's would.  Everything is a pure function of the :class:`ScenarioConfig`
(seed included): the same config gives the same vectors, byte for byte.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from baseliner.models.ngrams import SENSOR_ORDERS, NgramCounter, check_orders
from baseliner.models.vector import MAX_ENDPOINTS, Endpoint, FeatureVector, Identity

ATTACK_KINDS: tuple[str, ...] = ("reverse_shell", "crypto_miner", "port_scan", "data_exfiltration", "etc_write")
HOUR = 3600.0
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class AttackSpec:
    """Where and when to inject an attack: ``deployment`` replica ``replica`` at ``at_hours`` into the run."""

    kind: str
    deployment: str
    replica: int
    at_hours: float
    minutes: float

    def __post_init__(self) -> None:
        if self.kind not in ATTACK_KINDS:
            raise ValueError(f"unknown attack kind {self.kind!r}; known: {', '.join(ATTACK_KINDS)}")
        if self.minutes <= 0 or self.at_hours < 0:
            raise ValueError("attack needs at_hours >= 0 and minutes > 0")


@dataclass(frozen=True, slots=True)
class Attack:
    """Ground truth of one injected attack (event time, seconds since the epoch)."""

    kind: str
    node: str
    namespace: str
    pod: str
    container_id: str
    image: str
    start: float
    end: float
    description: str

    def covers(self, v: FeatureVector) -> bool:
        """Whether window ``v`` belongs to this attack's container and overlaps its time span."""
        return (v.identity.container_id == self.container_id and v.window_start < self.end
                and v.window_end > self.start)

    def to_dict(self) -> dict[str, object]:
        return {f: getattr(self, f) for f in self.__slots__}


def default_attacks(after_hours: float) -> tuple[AttackSpec, ...]:
    """One attack of each kind, 40 minutes apart, from ``after_hours`` on."""
    return (
        AttackSpec("reverse_shell", "web", 1, after_hours + 0.5, 4),
        AttackSpec("etc_write", "worker", 1, after_hours + 1.2, 0.5),
        AttackSpec("port_scan", "worker", 0, after_hours + 1.9, 3),
        AttackSpec("data_exfiltration", "db", 0, after_hours + 2.6, 4),
        AttackSpec("crypto_miner", "worker", 2, after_hours + 3.3, 30),
    )


@dataclass(frozen=True)
class ScenarioConfig:
    seed: int = 7
    start: float = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    hours: float = 30.0
    window_seconds: float = 10.0
    nodes: tuple[str, ...] = ("node-1", "node-2", "node-3")
    replicas: tuple[tuple[str, int], ...] = (("web", 3), ("db", 2), ("worker", 3))
    attack_after_hours: float = 24.0  # where default attacks start (the baseline learns before)
    attacks: tuple[AttackSpec, ...] | None = None  # None: default_attacks(attack_after_hours)
    restarts_per_day: float = 0.5  # per container, random
    rollout_at_hours: float | None = 25.0  # rolling restart of the web deployment; None: no rollout
    rollout_tag: str | None = None  # the web image's tag after the rollout (a new version); None: the same image
    rollout_kind: str = "version"  # "version": changed entrypoint + one new helper; "different": another program
    ngrams: bool = True
    ngram_orders: tuple[int, ...] = SENSOR_ORDERS  # the orders counted, as the eBPF sensor's ProbeConfig

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "ngram_orders", check_orders(self.ngram_orders))
        except ValueError as exc:
            raise ValueError(f"ngram_orders: {exc}") from None
        if not (self.window_seconds > 0 and self.hours > 0):
            raise ValueError("window_seconds and hours must be > 0")
        if not self.nodes:
            raise ValueError("at least one node is needed")
        if self.rollout_kind not in ("version", "different"):
            raise ValueError(f"rollout_kind must be 'version' or 'different', got {self.rollout_kind!r}")
        known = {name for name, _ in self.replicas}
        for spec in self.attack_specs:
            if spec.deployment not in known:
                raise ValueError(f"attack {spec.kind} targets unknown deployment {spec.deployment!r}")
            if spec.replica >= dict(self.replicas)[spec.deployment]:
                raise ValueError(f"attack {spec.kind} targets replica {spec.replica} of {spec.deployment}, "
                                 f"which has {dict(self.replicas)[spec.deployment]}")
            if spec.at_hours * HOUR + spec.minutes * 60 > self.hours * HOUR:
                raise ValueError(f"attack {spec.kind} ends after the scenario ({self.hours} h)")

    @property
    def attack_specs(self) -> tuple[AttackSpec, ...]:
        return self.attacks if self.attacks is not None else default_attacks(self.attack_after_hours)

    @property
    def windows(self) -> int:
        return int(self.hours * HOUR // self.window_seconds)


# -- syscall motifs -------------------------------------------------------------------------------------

M = tuple[str, ...]
WEB_REQUEST: M = ("epoll_wait", "recvfrom", "openat", "newfstatat", "sendfile", "writev", "close", "write")
WEB_NOT_MODIFIED: M = ("epoll_wait", "recvfrom", "newfstatat", "writev", "write")
WEB_ACCEPT: M = ("epoll_wait", "accept4", "setsockopt", "epoll_ctl")
WEB_CLOSE: M = ("epoll_wait", "recvfrom", "close")
WEB_TIMER: M = ("epoll_wait", "gettimeofday")
DB_QUERY: M = ("epoll_wait", "recvfrom", "lseek", "pread64", "sendto")
DB_WRITE_TXN: M = ("epoll_wait", "recvfrom", "pread64", "pwrite64", "fdatasync", "sendto")
DB_CONNECTION: M = ("accept", "clone", "rt_sigprocmask", "close", "getpid", "openat", "read", "close", "mmap")
DB_BACKEND_EXIT: M = ("close", "munmap", "exit_group")
DB_CHECKPOINT: M = ("openat", "pwrite64", "pwrite64", "pwrite64", "pwrite64", "fsync", "close")
DB_AUTOVACUUM: M = ("clone", "openat", "pread64", "pread64", "pwrite64", "close", "exit_group")
DB_WAL_SEND: M = ("epoll_wait", "pread64", "sendto")
DB_IDLE: M = ("epoll_wait", "read", "kill")
WK_POLL: M = ("sendto", "recvfrom", "poll", "clock_nanosleep")
WK_JOB_START: M = ("clone", "execve", "brk", "openat", "read", "mmap", "mprotect", "close")
WK_RENDER: M = ("brk", "mmap", "munmap", "futex", "read", "write", "lseek")
WK_DB_FETCH: M = ("sendto", "recvfrom", "recvfrom", "recvfrom", "poll")
WK_UPLOAD_CONNECT: M = ("socket", "sendto", "recvfrom", "close", "socket", "connect", "poll", "getsockopt")
WK_UPLOAD: M = ("poll", "read", "sendto", "sendto", "recvfrom")
WK_TMPFILE: M = ("openat", "write", "write", "close", "unlink")
START_LOAD: M = ("openat", "read", "fstat", "mmap", "mmap", "mprotect", "close")
START_EXEC: M = ("clone", "execve", "brk", "arch_prctl", "access", "openat", "mmap", "close", "wait4")
START_LISTEN: M = ("socket", "setsockopt", "bind", "listen")
BACKGROUND: M = ("futex", "clock_nanosleep", "futex", "getpid")
# attacks
RS_SPAWN: M = ("clone", "execve", "socket", "connect", "dup2", "dup2", "dup2", "execve", "read")
RS_COMMAND: M = ("read", "clone", "execve", "openat", "read", "write", "exit_group", "wait4", "write")
RS_IDLE: M = ("read", "write")
MINER_DROP: M = ("socket", "connect", "recvfrom", "openat", "write", "write", "close", "fchmodat")
MINER_START: M = ("clone", "execve", "mmap", "mprotect", "clone", "clone", "clone", "clone")
MINER_POOL: M = ("socket", "connect", "sendto", "recvfrom")
MINER_WORK: M = ("futex", "futex", "sched_yield", "futex")
MINER_SHARE: M = ("sendto", "recvfrom", "futex")
SCAN_PROBE: M = ("socket", "fcntl", "connect", "poll", "getsockopt", "close")
EXFIL_PAGE: M = ("pread64", "pread64", "sendto")
#: the data theft's send rate: a ``COPY ... TO STDOUT`` over one client connection (bench/exfil_rate.py sweeps it)
EXFIL_BYTES_PER_SECOND = 30e6
ETC_WRITE: M = ("openat", "write", "close")


@cache
def motif_counts(motif: M, orders: tuple[int, ...] = SENSOR_ORDERS,
                 ) -> tuple[tuple[tuple[str, int], ...], tuple[tuple[int, int], ...]]:
    """(syscall counts, n-gram bucket counts of ``orders``) of one run of ``motif`` (cached)."""
    c = NgramCounter(orders)
    c.feed(motif)
    return tuple(Counter(motif).items()), tuple(sorted(c.drain().items()))


class _Window:
    """Accumulates one container's counts for one window."""

    __slots__ = ("sys", "ngrams", "want_ngrams", "orders")

    def __init__(self, want_ngrams: bool, orders: tuple[int, ...] = SENSOR_ORDERS) -> None:
        self.sys: dict[str, int] = {}
        self.ngrams: dict[int, int] = {}
        self.want_ngrams = want_ngrams
        self.orders = orders

    def run(self, motif: M, times: int) -> None:
        if times <= 0:
            return
        sc, ng = motif_counts(motif, self.orders)
        s = self.sys
        for name, k in sc:
            s[name] = s.get(name, 0) + k * times
        if self.want_ngrams:
            g = self.ngrams
            for b, k in ng:
                g[b] = g.get(b, 0) + k * times


# -- cluster layout -------------------------------------------------------------------------------------

_IMAGES = {
    "web": ("nginx", "1.27.3", "shop", "nginx", 80),
    "db": ("postgres", "16.6", "shop", "postgres", 5432),
    "worker": ("acme/report-worker", "2.4.1", "batch", "worker", 0),
}
_ENTRYPOINTS = {
    "web": ["/docker-entrypoint.sh", "/usr/bin/find", "/docker-entrypoint.d/10-listen-on-ipv6-by-default.sh",
            "/docker-entrypoint.d/20-envsubst-on-templates.sh", "/usr/bin/envsubst",
            "/docker-entrypoint.d/30-tune-worker-processes.sh", "/usr/sbin/nginx"],
    "db": ["/usr/local/bin/docker-entrypoint.sh", "/usr/bin/id", "/usr/local/bin/gosu",
           "/usr/lib/postgresql/16/bin/postgres"],
    "worker": ["/usr/local/bin/python3.12"],
}
_ENTRYPOINTS["web-next"] = ["/entrypoint.sh", "/usr/local/bin/nginx-conf-check",
                             *_ENTRYPOINTS["web"][1:]]  # the rollout_tag version's
_WORKLOADS = {"web": "deployment/web", "db": "statefulset/db", "worker": "deployment/worker"}
_WKHTML = "/usr/local/bin/wkhtmltopdf"
_DNS = Endpoint("10.96.0.10", 53, "udp", True)


def _hex(*parts: object, n: int = 64) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:n]


@dataclass
class _Incarnation:
    container_id: str
    pod: str
    started: float  # event time
    ended: float  # event time (math.inf while running)
    version: int = 0  # rollouts before this incarnation started


@dataclass
class _Container:
    deployment: str
    replica: int
    node: str
    share: float  # load-balancer share multiplier
    lives: list[_Incarnation] = field(default_factory=list)
    job_until: float = -1.0  # worker: end of the running job
    job_start: float = -1.0
    job_bytes: float = 0.0

    def at(self, t: float) -> _Incarnation | None:
        for life in self.lives:
            if life.started <= t < life.ended:
                return life
        return None


def _daily(t: float) -> float:
    """Traffic shape over the day: 0.2 at 02:00 UTC, 1.0 at 14:00 UTC."""
    hour = (t % DAY) / HOUR
    return 0.2 + 0.8 * (0.5 - 0.5 * math.cos(2 * math.pi * (hour - 2.0) / 24.0))


class SyntheticSource:
    """Iterate to get one list of :class:`FeatureVector` per window (all running containers)."""

    def __init__(self, config: ScenarioConfig | None = None) -> None:
        self.config = cfg = config or ScenarioConfig()
        rng = np.random.default_rng([cfg.seed, 0])
        self.containers: list[_Container] = []
        k = 0
        for deployment, n in cfg.replicas:
            for r in range(n):
                node = cfg.nodes[k % len(cfg.nodes)]
                k += 1
                self.containers.append(_Container(deployment, r, node, float(rng.lognormal(0, 0.12))))
        end = cfg.start + cfg.windows * cfg.window_seconds
        # traffic bursts shared by the web tier and the database: (start, end, factor)
        self.bursts: list[tuple[float, float, float]] = []
        t = cfg.start
        while True:
            t += float(rng.exponential(DAY / 3))
            if t >= end:
                break
            self.bursts.append((t, t + float(rng.uniform(300, 1200)), float(rng.uniform(1.8, 3.5))))
        self._plan_lives(rng, end)
        self.attacks: list[Attack] = [self._attack(spec) for spec in cfg.attack_specs]
        self._by_container: dict[str, list[tuple[Attack, AttackSpec]]] = {}
        for attack, spec in zip(self.attacks, cfg.attack_specs, strict=True):
            self._by_container.setdefault(attack.container_id, []).append((attack, spec))

    # -- plan ----------------------------------------------------------------------------------------

    def _attack_windows(self, c: _Container) -> list[tuple[float, float]]:
        cfg = self.config
        out = []
        for spec in cfg.attack_specs:
            if spec.deployment == c.deployment and spec.replica == c.replica:
                s = cfg.start + spec.at_hours * HOUR
                out.append((s - 600.0, s + spec.minutes * 60 + 600.0))
        return out

    def _plan_lives(self, rng: np.random.Generator, end: float) -> None:
        cfg = self.config
        w = cfg.window_seconds
        for ci, c in enumerate(self.containers):
            quiet = self._attack_windows(c)
            restarts: list[float] = []
            t = cfg.start
            rate = cfg.restarts_per_day / DAY
            while rate > 0:
                t += float(rng.exponential(1 / rate))
                if t >= end:
                    break
                aligned = cfg.start + math.ceil((t - cfg.start) / w) * w
                if not any(a <= aligned <= b for a, b in quiet):
                    restarts.append(aligned)
            new_pod_at: set[float] = set()
            if cfg.rollout_at_hours is not None and c.deployment == "web":
                t_roll = cfg.start + cfg.rollout_at_hours * HOUR + 60.0 * c.replica
                aligned = cfg.start + math.ceil((t_roll - cfg.start) / w) * w
                if aligned < end:
                    restarts.append(aligned)
                    new_pod_at.add(aligned)
            restarts.sort()
            generation = 0
            pod = self._pod_name(c, generation)
            begin = cfg.start
            for i, r in enumerate(restarts):
                if r <= begin:
                    continue
                c.lives.append(_Incarnation(_hex(cfg.seed, ci, i), pod, begin, r, generation))
                if r in new_pod_at:
                    generation += 1
                    pod = self._pod_name(c, generation)
                begin = r
            c.lives.append(_Incarnation(_hex(cfg.seed, ci, len(restarts)), pod, begin, math.inf, generation))

    def _pod_name(self, c: _Container, generation: int) -> str:
        cfg = self.config
        if c.deployment == "db":
            return f"db-{c.replica}"
        rs = _hex(cfg.seed, c.deployment, "rs", generation, n=9)
        return f"{c.deployment}-{rs}-{_hex(cfg.seed, c.deployment, c.replica, generation, n=5)}"

    def _attack(self, spec: AttackSpec) -> Attack:
        cfg = self.config
        c = next(c for c in self.containers if c.deployment == spec.deployment and c.replica == spec.replica)
        start = cfg.start + spec.at_hours * HOUR
        life = c.at(start)
        assert life is not None
        repo, tag, ns, _, _ = _IMAGES[c.deployment]
        return Attack(spec.kind, c.node, ns, life.pod, life.container_id, f"{repo}:{tag}", start,
                      start + spec.minutes * 60, _DESCRIPTIONS[spec.kind])

    # -- iteration -----------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[list[FeatureVector]]:
        for _, vectors in self.windows():
            yield vectors

    def windows(self) -> Iterator[tuple[float, list[FeatureVector]]]:
        """``(window_start, vectors)`` for every window of the scenario, in event-time order."""
        cfg = self.config
        rngs = [np.random.default_rng([cfg.seed, 1, i]) for i in range(len(self.containers))]
        for c in self.containers:
            c.job_until = c.job_start = -1.0
        for k in range(cfg.windows):
            t = cfg.start + k * cfg.window_seconds
            out = []
            for c, rng in zip(self.containers, rngs, strict=True):
                for life in c.lives:
                    if life.started <= t < life.ended:
                        out.append(self._vector(c, life, t, rng))
            yield t, out

    def label_of(self, v: FeatureVector) -> Attack | None:
        """The attack a window belongs to, if any."""
        for attack, _ in self._by_container.get(v.identity.container_id, ()):
            if attack.covers(v):
                return attack
        return None

    def _burst(self, t: float) -> float:
        f = 1.0
        for s, e, factor in self.bursts:
            if s <= t < e:
                f *= factor
        return f

    def _vector(self, c: _Container, life: _Incarnation, t: float, rng: np.random.Generator) -> FeatureVector:
        cfg = self.config
        w = cfg.window_seconds
        repo, tag, ns, name, _ = _IMAGES[c.deployment]
        behaviour = c.deployment
        if life.version and cfg.rollout_tag is not None and c.deployment == "web":
            tag = cfg.rollout_tag
            behaviour = "web-next" if cfg.rollout_kind == "version" else "worker"
        ident = Identity(c.node, life.container_id, repo, tag, "sha256:" + _hex(repo, tag), name, life.pod, ns,
                         _WORKLOADS[c.deployment])
        v = FeatureVector(ident, t, w, seconds_since_start=t - life.started)
        acc = _Window(cfg.ngrams, cfg.ngram_orders)
        age = t - life.started
        load = _daily(t) * self._burst(t) * c.share
        if behaviour in ("web", "web-next"):
            self._web(v, acc, load, age, rng)
        elif behaviour == "db":
            self._db(c, v, acc, load, age, t, rng)
        else:
            self._worker(c, v, acc, age, t, rng)
        if age < 2 * w:
            self._startup(behaviour, v, acc, age, rng)
        acc.run(BACKGROUND, int(rng.poisson(3 * w)))
        for attack, spec in self._by_container.get(life.container_id, ()):
            if attack.start < t + w and attack.end > t:
                _ATTACKS[spec.kind](v, acc, t, attack, rng)
        if t + w >= life.ended:
            v.container_exited = True
            v.complete = False
        v.syscalls = acc.sys
        v.ngrams = acc.ngrams
        v.executables = v.executables[:64]
        v.endpoints = v.endpoints[:MAX_ENDPOINTS]
        return v

    # -- workloads -----------------------------------------------------------------------------------

    def _web(self, v: FeatureVector, acc: _Window, load: float, age: float, rng: np.random.Generator) -> None:
        w = v.window_seconds
        ramp = min(1.0, max(0.0, (age - 10.0) / 20.0))  # readiness probe passes ~10 s after start
        reqs = int(rng.poisson(35.0 * load * ramp * w))
        not_modified = int(rng.binomial(reqs, 0.3))
        conns = int(rng.poisson(reqs / 4)) if reqs else 0
        acc.run(WEB_REQUEST, reqs - not_modified)
        acc.run(WEB_NOT_MODIFIED, not_modified)
        acc.run(WEB_ACCEPT, conns)
        acc.run(WEB_CLOSE, conns)
        acc.run(WEB_TIMER, int(rng.poisson(2 * w)))
        v.accepts += conns
        v.bytes_received += int(reqs * rng.lognormal(math.log(650), 0.2))
        v.bytes_sent += int((reqs - not_modified) * rng.lognormal(math.log(24_000), 0.4) + not_modified * 300)
        v.packets_received += reqs + 2 * conns
        v.packets_sent += reqs + v.bytes_sent // 1448
        if conns:
            ingress = int(rng.integers(1, 4))
            v.remote_addresses += ingress
            v.remote_ports += conns
            for i in range(ingress):
                v.endpoints.append(Endpoint(f"10.42.0.{11 + i}", 80, "tcp", False))
        if rng.random() < 0.02:  # a large upload buffered to a client body temp file
            acc.run(WK_TMPFILE, 1)
            v.write_opens += 1

    def _db(self, c: _Container, v: FeatureVector, acc: _Window, load: float, age: float, t: float,
            rng: np.random.Generator) -> None:
        w = v.window_seconds
        ramp = min(1.0, max(0.0, (age - 5.0) / 15.0))
        primary = c.replica == 0
        queries = int(rng.poisson((90.0 if primary else 60.0) * load * ramp * w))
        writes = int(rng.binomial(queries, 0.25)) if primary else 0
        conns = int(rng.poisson(queries / 60)) if queries else 0
        acc.run(DB_QUERY, queries - writes)
        acc.run(DB_WRITE_TXN, writes)
        acc.run(DB_CONNECTION, conns)
        acc.run(DB_BACKEND_EXIT, conns)
        acc.run(DB_IDLE, int(rng.poisson(1.5 * w)))
        v.accepts += conns
        v.forks += conns
        v.exits += conns
        v.bytes_received += int(queries * rng.lognormal(math.log(320), 0.3))
        v.bytes_sent += int(queries * rng.lognormal(math.log(2_200), 0.5))
        v.packets_received += queries
        v.packets_sent += queries + v.bytes_sent // 1448
        if conns:
            clients = int(rng.integers(1, 5))
            v.remote_addresses += clients
            v.remote_ports += conns
            for i in range(clients):
                v.endpoints.append(Endpoint(f"10.42.1.{20 + i}", 5432, "tcp", False))
        if age >= 60:
            phase = int((t - self.config.start) // w)
            if primary and phase % int(max(1, 300 // w)) == 0:  # checkpoint
                acc.run(DB_CHECKPOINT, int(rng.poisson(400 * max(load, 0.3))))
                v.write_opens += int(rng.integers(10, 40))
            if phase % int(max(1, 60 // w)) == c.replica:  # autovacuum worker
                acc.run(DB_AUTOVACUUM, 1 + int(rng.poisson(20)))
                v.forks += 1
                v.exits += 1
            if primary:  # WAL streaming to the replica
                acc.run(DB_WAL_SEND, writes)
                v.bytes_sent += writes * 600
            else:
                v.bytes_received += int(rng.poisson(90 * 0.25 * load * w)) * 600
        if not primary and 0 <= age < w:
            v.connects += 1
            v.remote_addresses += 1
            v.remote_ports += 1
            v.endpoints.append(Endpoint("10.42.2.10", 5432, "tcp", True))

    def _worker(self, c: _Container, v: FeatureVector, acc: _Window, age: float, t: float,
                rng: np.random.Generator) -> None:
        w = v.window_seconds
        acc.run(WK_POLL, int(rng.poisson(w / 5)))
        v.bytes_sent += int(rng.poisson(w / 5)) * 180
        v.bytes_received += int(rng.poisson(w / 5)) * 240
        v.packets_sent += 2
        v.packets_received += 2
        if age < 5:
            v.connects += 1
            v.remote_addresses += 1
            v.remote_ports += 1
            v.dns_queries += 2
            v.endpoints.extend([_DNS, Endpoint("10.42.2.10", 5432, "tcp", True)])
            return
        hour = (t % DAY) / HOUR
        if c.job_until <= t:
            c.job_until = -1.0
            nightly = c.replica == 0 and abs(hour - 2.0) * HOUR < w / 2
            p_job = (8.0 * _daily(t)) / HOUR * w  # jobs per replica per window
            if nightly or rng.random() < p_job:
                c.job_start = t
                c.job_until = t + (1800.0 if nightly else float(rng.lognormal(math.log(120), 0.4)))
                c.job_bytes = float(rng.lognormal(math.log(2.5e8 if nightly else 4e6), 0.5))
                v.forks += 1
                v.execs += 1
                v.executables.append(_WKHTML)
                acc.run(WK_JOB_START, 1)
        if c.job_until > t:
            share = min(w, c.job_until - t) / max(w, c.job_until - c.job_start)
            rows = int(rng.poisson(40 * w))
            acc.run(WK_DB_FETCH, rows)
            acc.run(WK_RENDER, int(rng.poisson(300 * w)))
            acc.run(WK_TMPFILE, int(rng.poisson(0.5 * w)))
            v.write_opens += int(rng.poisson(0.5 * w))
            v.bytes_received += rows * int(rng.lognormal(math.log(6000), 0.5))
            v.packets_sent += rows
            v.packets_received += rows * 3
            if c.job_until <= t + w:  # the last window uploads the result
                v.exits += 1
                addr = f"52.218.{int(rng.integers(0, 256))}.{int(rng.integers(1, 255))}"
                acc.run(WK_UPLOAD_CONNECT, 1)
                sent = int(c.job_bytes)
                acc.run(WK_UPLOAD, sent // 65536 + 1)
                v.bytes_sent += sent
                v.packets_sent += sent // 1448
                v.dns_queries += 2
                v.connects += 1
                v.remote_addresses += 2
                v.remote_ports += 2
                v.endpoints.extend([_DNS, Endpoint(addr, 443, "tcp", True)])
            elif c.job_until - c.job_start > 600:  # long exports stream their output as they go
                sent = int(c.job_bytes * share)
                acc.run(WK_UPLOAD, sent // 65536 + 1)
                v.bytes_sent += sent
                v.packets_sent += sent // 1448

    def _startup(self, behaviour: str, v: FeatureVector, acc: _Window, age: float,
                 rng: np.random.Generator) -> None:
        """Entry point, library loading, listening sockets: the first windows of a container."""
        if age >= v.window_seconds:  # second window: finishing initialisation
            acc.run(START_LOAD, int(rng.poisson(40)))
            return
        execs = _ENTRYPOINTS[behaviour]
        v.execs += len(execs)
        v.forks += len(execs) - 1 + (2 if behaviour.startswith("web") else 5 if behaviour == "db" else 0)
        v.exits += len(execs) - 1
        v.executables.extend(execs)
        acc.run(START_EXEC, len(execs))
        acc.run(START_LOAD, int(rng.poisson(600 if behaviour == "worker" else 150)))
        v.write_opens += int(rng.integers(1, 5))
        if behaviour.startswith("web"):
            acc.run(START_LISTEN, 2)
            v.listens += 2
            v.write_opens += 1
            v.sensitive_writes += 1
            v.sensitive_paths.append("/etc/nginx/conf.d/default.conf")
        elif behaviour == "db":
            acc.run(START_LISTEN, 2)
            v.listens += 2
            v.write_opens += int(rng.integers(10, 30))  # pid file, WAL, stats under /var/lib/postgresql


# -- attacks ----------------------------------------------------------------------------------------------

_DESCRIPTIONS = {
    "reverse_shell": "web server spawns /bin/sh connected to 203.0.113.45:4444, attacker runs commands",
    "crypto_miner": "worker downloads and runs /tmp/kdevtmpfsi, stratum connection to 198.51.100.23:3333",
    "port_scan": "compromised worker probes 10.42.0.0/24 on 10 service ports (~20 connects/s, mostly refused)",
    "data_exfiltration": "stolen credentials dump a table from the primary over a client connection (~30 MB/s)",
    "etc_write": "compromised worker opens /etc/ld.so.preload and /etc/passwd for writing",
}


def _first(v: FeatureVector, attack: Attack) -> bool:
    return v.window_start <= attack.start < v.window_end


def _reverse_shell(v: FeatureVector, acc: _Window, t: float, attack: Attack, rng: np.random.Generator) -> None:
    if _first(v, attack):
        acc.run(RS_SPAWN, 1)
        v.forks += 1
        v.execs += 2
        v.executables.extend(["/bin/sh", "/bin/bash"])
        v.connects += 1
        v.remote_addresses += 1
        v.remote_ports += 1
        v.endpoints.append(Endpoint("203.0.113.45", 4444, "tcp", True))
    commands = int(rng.poisson(0.1 * v.window_seconds))
    if commands:
        picks = rng.choice(["/usr/bin/id", "/bin/uname", "/bin/cat", "/bin/ls", "/usr/bin/env", "/bin/ps"],
                           size=commands)
        acc.run(RS_COMMAND, commands)
        v.forks += commands
        v.execs += commands
        v.exits += commands
        v.executables.extend(dict.fromkeys(str(p) for p in picks))
    acc.run(RS_IDLE, 2 + 4 * commands)
    v.bytes_sent += 40 + commands * int(rng.integers(200, 4000))
    v.bytes_received += 20 + commands * 30
    v.packets_sent += 1 + 2 * commands
    v.packets_received += 1 + commands


def _crypto_miner(v: FeatureVector, acc: _Window, t: float, attack: Attack, rng: np.random.Generator) -> None:
    if _first(v, attack):
        acc.run(MINER_DROP, 1)
        acc.run(MINER_START, 1)
        acc.run(MINER_POOL, 1)
        v.dns_queries += 2
        v.connects += 2
        v.forks += 5
        v.execs += 1
        v.executables.append("/tmp/kdevtmpfsi")
        v.write_opens += 1
        v.bytes_received += 2_600_000
        v.remote_addresses += 3
        v.remote_ports += 3
        v.endpoints.extend([_DNS, Endpoint("203.0.113.80", 80, "tcp", True),
                            Endpoint("198.51.100.23", 3333, "tcp", True)])
    acc.run(MINER_WORK, int(rng.poisson(60 * v.window_seconds)))
    shares = int(rng.poisson(v.window_seconds / 20))
    acc.run(MINER_SHARE, shares + 1)
    v.bytes_sent += 90 + shares * 220
    v.bytes_received += 90 + shares * 140
    v.packets_sent += 1 + shares
    v.packets_received += 1 + shares


_SCAN_PORTS = (22, 80, 443, 2375, 3306, 5432, 6379, 8080, 9200, 10250)


def _port_scan(v: FeatureVector, acc: _Window, t: float, attack: Attack, rng: np.random.Generator) -> None:
    probes = int(rng.poisson(20 * v.window_seconds))
    opened = int(rng.binomial(probes, 0.03))
    acc.run(SCAN_PROBE, probes)
    v.connects += probes
    v.connects_failed += probes - opened
    offset = int((t - attack.start) // v.window_seconds) * probes
    hosts = sorted({(offset + i) // len(_SCAN_PORTS) % 254 + 1 for i in range(probes)})
    v.remote_addresses += len(hosts)
    v.remote_ports += len(_SCAN_PORTS)
    v.packets_sent += probes
    v.packets_received += probes
    for i in range(min(probes, 64)):
        host = (offset + i) // len(_SCAN_PORTS) % 254 + 1
        v.endpoints.append(Endpoint(f"10.42.0.{host}", _SCAN_PORTS[(offset + i) % len(_SCAN_PORTS)], "tcp", True))


def _data_exfiltration(v: FeatureVector, acc: _Window, t: float, attack: Attack,
                       rng: np.random.Generator) -> None:
    sent = int(rng.normal(EXFIL_BYTES_PER_SECOND, EXFIL_BYTES_PER_SECOND / 8) * v.window_seconds)
    pages = sent // 8192
    acc.run(EXFIL_PAGE, pages)
    v.bytes_sent += sent
    v.packets_sent += sent // 1448
    if _first(v, attack):
        acc.run(DB_CONNECTION, 1)
        v.accepts += 1
        v.forks += 1
        v.remote_addresses += 1
        v.remote_ports += 1
        v.bytes_received += 400
        v.endpoints.append(Endpoint("10.42.3.77", 5432, "tcp", False))


def _etc_write(v: FeatureVector, acc: _Window, t: float, attack: Attack, rng: np.random.Generator) -> None:
    if _first(v, attack):
        acc.run(ETC_WRITE, 2)
        v.write_opens += 2
        v.sensitive_writes += 2
        v.sensitive_paths.extend(["/etc/ld.so.preload", "/etc/passwd"])


_ATTACKS = {
    "reverse_shell": _reverse_shell,
    "crypto_miner": _crypto_miner,
    "port_scan": _port_scan,
    "data_exfiltration": _data_exfiltration,
    "etc_write": _etc_write,
}

