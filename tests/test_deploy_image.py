"""The deploy image, built here (scripts/build_image.sh: the locally made Debian base, wheels from the host) and
run: as the service (its default user) and as the eBPF sensor (CAP_SYS_ADMIN, host PID, the BPF mounts and
the Docker socket), both as Docker containers; an app container's reverse shell is flagged.  And
deploy/compose's Baseliner services (two shards and the sensor) start with docker-compose (the third-party ones
need registry images).

Needs root, BPF and the runtimes; fails instead of skipping when ``CI`` is set.  The first build takes a few
minutes (docker keeps its layers for the next).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from baseliner.service import init_secrets

from tests.bpf_required import require_bpf
from tests.runtime_containers import REPO, Docker, require_runtimes
from tests.test_sensor_bpf_e2e import BASELINER, Listener, baseline_states, free_port, read_events
from tests.test_sensor_runtimes import REVERSE_SHELL, WEB

pytestmark = [pytest.mark.root, pytest.mark.slow]

IMAGE = "baseliner:0.1.0"
APP_IMAGE = "localhost/baseliner-test/deploy-app:1"
COMPOSE = REPO / "deploy" / "compose"
SENSOR_MOUNTS = ("/lib/modules:/lib/modules:ro", "/usr/src:/usr/src:ro",
                 "/opt/baseliner/kernel-src:/opt/baseliner/kernel-src:ro", "/sys/kernel/tracing:/sys/kernel/tracing",
                 "/sys/fs/cgroup:/sys/fs/cgroup:ro", "/var/run/docker.sock:/var/run/docker.sock:ro")


def docker(*args: str, timeout: float = 120) -> str:
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"docker {' '.join(args)}: {r.stderr[-2000:]}"
    return r.stdout.strip()


@pytest.fixture(scope="module")
def image() -> str:
    require_bpf()
    require_runtimes()
    r = subprocess.run([str(REPO / "scripts" / "build_image.sh"), IMAGE], capture_output=True, text=True,
                       timeout=2400)
    assert r.returncode == 0, r.stderr[-4000:]
    return IMAGE


@pytest.fixture
def containers() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for n in names:
        subprocess.run(["docker", "rm", "-f", n], capture_output=True, timeout=60)


def test_the_image_runs_as_service_and_sensor_and_flags_a_reverse_shell(
        image: str, containers: list[str], tmp_path: Path) -> None:
    events_dir = tmp_path / "events"
    events_dir.mkdir()
    os.chmod(events_dir, 0o777)  # the service runs as the image's user 10001
    port = free_port()
    tag = f"{os.getpid()}"
    app, c2 = Listener(), Listener(range(4444, 4544))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        containers.append(f"bt-service-{tag}")
        docker("run", "-d", "--name", containers[-1], "--network", "host", "-v", f"{events_dir}:/var/log/baseliner",
               image, "serve", "--listen", f"127.0.0.1:{port}", "--metrics-listen", "",
               "--events", "/var/log/baseliner/events.jsonl", "--set", "baseline.min_learn_windows=10",
               "--set", "baseline.min_learn_seconds=0", "--set", "baseline.stable_confidence=0",
               "--set", "baseline.startup_seconds=0",
               "--set", "baseline.novelty_min_containers=1")
        assert docker("inspect", "-f", "{{.Config.User}}", containers[-1]) == "10001"
        containers.append(f"bt-sensor-{tag}")
        mounts = [a for m in SENSOR_MOUNTS for a in ("-v", m)]
        docker("run", "-d", "--name", containers[-1], "--cap-add", "SYS_ADMIN", "--security-opt", "apparmor:unconfined",
               "--pid", "host", "--network", "host", "--user", "0", *mounts, image,
               "sensor", "--source", "bpf", "--target", f"127.0.0.1:{port}", "--window", "1", "--host", "ignore",
               "--node", "deploy-node")
        rt = Docker()
        rt.build(APP_IMAGE, "deploy-app")
        web = rt.run(f"bt-app-{tag}", APP_IMAGE, WEB.format(port=app.port))
        containers.append(web.id)
        deadline = time.monotonic() + 240
        while baseline_states(port, env).get(APP_IMAGE) != "detecting":
            for name in containers[:2]:
                assert docker("inspect", "-f", "{{.State.Running}}", name) == "true", docker("logs", name)
            assert time.monotonic() < deadline, baseline_states(port, env)
            time.sleep(2)
        events = events_dir / "events.jsonl"
        quiet = len(read_events(events))
        rt.exec(web, REVERSE_SHELL.format(port=c2.port))
        hits: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while not hits and time.monotonic() < deadline:
            time.sleep(1)
            hits = [e for e in read_events(events)[quiet:] if e["container"]["id"] == web.id
                    and any(str(c2.port) in n["value"] for n in e["novel"])]
        assert hits, [e["novel"] for e in read_events(events)[quiet:]]
        assert (hits[0]["image"]["repository"], hits[0]["container"]["name"]) == (APP_IMAGE.rsplit(":", 1)[0],
                                                                                   web.name)
        # the Baseliner containers themselves are attributed to their image too
        assert baseline_states(port, env).get(image) is not None
    finally:
        app.close()
        c2.close()


def secured_states(secrets: Path, port: int, env: dict[str, str]) -> dict[str, str]:
    """``baseliner admin list`` with the operator's credentials (the compose service needs them)."""
    out = subprocess.run([*BASELINER, "admin", "--target", f"127.0.0.1:{port}", "--tls-ca", str(secrets / "ca.pem"),
                          "--tls-cert", str(secrets / "admin.pem"), "--tls-key", str(secrets / "admin.key"),
                          "--token-file", str(secrets / "admin.token"), "list"],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=30)
    return {p[0]: p[1] for p in (line.split() for line in out.stdout.splitlines()) if len(p) >= 2}


def shard_listing(secrets: Path, port: int) -> tuple[dict[str, str], list[str]]:
    """``ListBaselines`` at one shard with the operator's credentials: image key -> the shard holding it, and the
    shards that did not answer."""
    import grpc
    from baseliner.protos.v1 import admin_pb2, admin_pb2_grpc

    creds = grpc.ssl_channel_credentials((secrets / "ca.pem").read_bytes(), (secrets / "admin.key").read_bytes(),
                                         (secrets / "admin.pem").read_bytes())
    token = (secrets / "admin.token").read_text().strip()
    with grpc.secure_channel(f"127.0.0.1:{port}", creds) as ch:
        r = admin_pb2_grpc.AdminStub(ch).ListBaselines(admin_pb2.ListBaselinesRequest(),
                                                       metadata=(("authorization", f"Bearer {token}"),), timeout=30)
    return {b.key: b.shard for b in r.baselines}, list(r.unavailable_shards)


def test_compose_starts_the_baseliner_services(image: str, tmp_path: Path) -> None:
    """The documented setup: init-secrets into deploy/compose/secrets (owned by the service's user), then up: two
    shards that agree on the map and answer for each other, and the sensor streaming to them."""
    secrets = COMPOSE / "secrets"
    assert not secrets.exists(), f"{secrets} exists: this test creates (and removes) its own"
    init_secrets.create(secrets, ["compose-node"], mount_dir=init_secrets.SERVICE_MOUNT)
    for p in [secrets, *secrets.rglob("*")]:
        os.chown(p, 10001, -1)
    project = f"bltest{os.getpid()}"
    env = {**os.environ, "GRAFANA_PASSWORD": "unused", "ELASTIC_PASSWORD": "unused", "KIBANA_PASSWORD": "unused",
           "BASELINER_NODE": "compose-node", "PYTHONPATH": str(REPO)}
    compose = ["docker-compose", "-p", project, "-f", "compose.yaml", "-f", "compose.host.yaml"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*compose, *args], cwd=COMPOSE, env=env, capture_output=True, text=True, timeout=300)

    up = run("up", "-d", "--no-deps", "--no-build", "baseliner", "baseliner-1", "sensor")
    try:
        assert up.returncode == 0, up.stderr
        deadline = time.monotonic() + 120
        while True:
            states = secured_states(secrets, 50051, env)
            if states.get(image):
                break
            logs = run("logs", "--no-color", "--tail", "20").stdout
            assert time.monotonic() < deadline, f"no baseline from the compose sensor: {states}\n{logs}"
            time.sleep(2)
        ps = run("ps").stdout
        assert ps.count(" Up ") == 3, ps
        assert "connected" in run("logs", "--no-color", "sensor").stdout
        deadline = time.monotonic() + 60
        while True:  # either shard lists both shards' images, each named with its shard
            listings = [shard_listing(secrets, port) for port in (50051, 50052)]
            if all(not unavailable and got.get(image) for got, unavailable in listings):
                break
            assert time.monotonic() < deadline, listings
            time.sleep(2)
        assert listings[0][0] == listings[1][0]
        assert set(listings[0][0].values()) <= {"baseliner-0", "baseliner-1"}, listings
        assert baseline_states(50051, env) == {}  # nothing without the operator's credentials
    finally:
        down = run("down", "-v")
        shutil.rmtree(secrets)
        assert down.returncode == 0, down.stderr
