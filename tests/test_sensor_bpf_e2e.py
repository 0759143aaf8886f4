"""End to end on the real kernel: ``baseliner sensor --source bpf`` + ``baseliner serve`` (two processes,
gRPC between them) learn two cgroup "containers" with different workloads, then a reverse-shell-like action
(exec of a shell plus a new outbound connection) in one of them is flagged, in that container only.

Needs root and BPF (fails instead of skipping when ``CI`` is set).  About a minute.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bpf_required import CG_ROOT, require_bpf

pytestmark = [pytest.mark.root, pytest.mark.slow]

BASELINER = [sys.executable, "-m", "baseliner.service.cli"]
REPO = Path(__file__).resolve().parents[1]

LEARN_WINDOWS = 10
WINDOW = 1.0

WEB = """
import socket, sys, time
sys.stdin.readline()
port = int(sys.argv[1])
while True:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n"); s.recv(1024)
    time.sleep(0.05)
"""

WORKER = """
import os, sys, tempfile, time
sys.stdin.readline()
d = tempfile.mkdtemp()
while True:
    p = os.path.join(d, "job")
    with open(p, "w") as f: f.write("x" * 4096)
    with open(p) as f: f.read()
    os.getppid(); os.unlink(p)
    time.sleep(0.05)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Listener:
    """A tiny TCP server on the host that answers every connection."""

    def __init__(self, ports: range | None = None) -> None:
        self.sock = socket.socket()
        if ports is None:
            self.sock.bind(("127.0.0.1", 0))
        else:  # a port below the ephemeral range, so that the service's novelty tier considers it
            for port in ports:
                try:
                    self.sock.bind(("127.0.0.1", port))
                    break
                except OSError:
                    continue
            else:
                raise RuntimeError(f"no free port in {ports}")
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except TimeoutError:
                continue
            with c:
                with contextlib.suppress(OSError):
                    c.recv(1024)
                    c.sendall(b"HTTP/1.0 200 OK\r\n\r\n")

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


def start_in_cgroup(cg: Path, code: str, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE, text=True)
    assert proc.stdin is not None
    (cg / "cgroup.procs").write_text(str(proc.pid))
    proc.stdin.write("go\n")
    proc.stdin.flush()
    return proc


def baseline_states(port: int, env: dict[str, str]) -> dict[str, str]:
    """image key -> state, from ``baseliner admin list`` against the running service."""
    out = subprocess.run([*BASELINER, "admin", "--target", f"127.0.0.1:{port}", "list"], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=30)
    states = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            states[parts[0]] = parts[1]
    return states


def read_events(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in reversed(procs):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_sensor_and_service_learn_two_containers_and_flag_reverse_shell(
        tmp_path: Path, processes: list[subprocess.Popen[str]]) -> None:
    require_bpf()
    parent = CG_ROOT / f"baseliner-e2e-{os.getpid()}"
    web_cg, worker_cg = parent / "web", parent / "worker"
    for cg in (web_cg, worker_cg):
        cg.mkdir(parents=True, exist_ok=True)
    app, c2 = Listener(), Listener(range(4444, 4544))  # c2: the "attacker's" port, never used while learning
    events = tmp_path / "events.jsonl"
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        processes.append(subprocess.Popen([
            *BASELINER, "serve", "--listen", f"127.0.0.1:{port}", "--metrics-listen", "", "--events", str(events),
            "--set", f"baseline.min_learn_windows={LEARN_WINDOWS}", "--set", "baseline.min_learn_seconds=0",
            "--set", "baseline.stable_confidence=0",
            "--set", "baseline.startup_seconds=0", "--set", "baseline.novelty_min_containers=1",
        ], env=env, cwd=REPO, text=True))
        processes.append(subprocess.Popen([
            *BASELINER, "sensor", "--source", "bpf", "--target", f"127.0.0.1:{port}", "--node", "e2e-node",
            "--window", str(WINDOW), "--host", "ignore",
            "--cgroup-image", rf"^/baseliner-e2e-{os.getpid()}/(?P<app>[a-z]+)$=e2e/{{app}}:1",
        ], env=env, cwd=REPO, text=True))
        processes.append(start_in_cgroup(web_cg, WEB, str(app.port)))
        processes.append(start_in_cgroup(worker_cg, WORKER))
        # learning: both images need LEARN_WINDOWS windows and a calibrated threshold; ask the service
        deadline = time.monotonic() + 180
        while True:
            for p in processes:
                assert p.poll() is None, f"{p.args!r} exited with {p.returncode}"
            states = baseline_states(port, env)
            if states.get("e2e/web:1") == "detecting" and states.get("e2e/worker:1") == "detecting":
                break
            assert time.monotonic() < deadline, f"baselines still not detecting: {states}"
            time.sleep(2)
        quiet = read_events(events)
        # the reverse shell: a shell in the web container that opens a connection to a new port
        attack = subprocess.Popen(
            [sys.executable, "-c", "import sys, os; sys.stdin.readline(); "
             f"os.execv('/bin/sh', ['sh', '-c', 'exec {sys.executable} -c \"import socket; "
             f"socket.create_connection((\\'127.0.0.1\\', {c2.port})).close()\"'])"],
            stdin=subprocess.PIPE, text=True)
        assert attack.stdin is not None
        (web_cg / "cgroup.procs").write_text(str(attack.pid))
        attack.stdin.write("go\n")
        attack.stdin.flush()
        assert attack.wait(30) == 0
        def novel_items(e: dict[str, object]) -> set[tuple[str, str]]:
            return {(n["kind"], n["value"]) for n in e["novel"]}  # type: ignore[attr-defined]

        # The attack process ran in the web cgroup before its exec too (reading its go signal), so a
        # window before the shell's may be flagged first (a new syscall of that interpreter): look for
        # the shell's event among the web image's events, not at the first one.  The shell's Python
        # connects once it has started, which may be in the next 1 s window: look for the new port in
        # the shell's event or a later one of the web image.
        deadline = time.monotonic() + 30
        flagged: list[dict[str, object]] = []
        shell: list[dict[str, object]] = []
        port: list[dict[str, object]] = []
        while time.monotonic() < deadline and not (shell and port):
            time.sleep(1)
            flagged = [e for e in read_events(events)[len(quiet):]
                       if e["image"]["repository"] == "e2e/web"]  # type: ignore[index]
            shell = [e for e in flagged if ("executable", "/bin/sh") in novel_items(e)]
            after = flagged[flagged.index(shell[0]):] if shell else []
            port = [e for e in after
                    if any("port" in kind and str(c2.port) in value for kind, value in novel_items(e))]
        assert flagged, f"no anomaly for e2e/web; events: {read_events(events)}"
        assert shell, [novel_items(e) for e in flagged]
        assert port, [novel_items(e) for e in flagged]
        ev = shell[0]
        assert ev["baseline_state"] != "learning"
        # the worker container did nothing unusual: no anomaly for it after learning
        assert not [e for e in read_events(events)[len(quiet):]
                    if e["image"]["repository"] == "e2e/worker"]  # type: ignore[index]
    finally:
        app.close()
        c2.close()
        for p in reversed(processes):
            if p.poll() is None:
                p.terminate()
        for p in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(15)
        for cg in (web_cg, worker_cg, parent):
            with contextlib.suppress(OSError):
                cg.rmdir()
