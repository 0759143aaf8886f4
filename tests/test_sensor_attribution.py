"""Attribution without root: cgroup layouts, rules, the resolver's order, caches, pending containers and their
held-back windows, and runtime sockets that are missing, slow or answer garbage (real unix sockets).

The runtime clients against the real runtimes: tests/test_sensor_runtimes.py (root, real containers)."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socketserver
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from baseliner.sensor.attribution import (
    AttributionConfig,
    CgroupIndex,
    ContainerMeta,
    ImageRule,
    Resolver,
    RuntimeSet,
    RuntimeSocket,
    RuntimeUnavailable,
    find_cgroup2_mount,
    parse_cgroup_path,
    split_image,
)
from baseliner.sensor.attribution.cri import CriRuntime
from baseliner.sensor.attribution.detect import Endpoint
from baseliner.sensor.attribution.docker import DockerRuntime
from baseliner.sensor.attribution.podman import PodmanRuntime
from baseliner.sensor.attribution.runtime import RuntimeBadAnswer, RuntimeFault
from baseliner.sensor.bpf_source import BpfSource, BpfSourceConfig
from baseliner.sensor.vectors import WindowCounts
from prometheus_client import CollectorRegistry

A, B, C = "a" * 64, "b" * 64, "c" * 64
UID = "0e4f5c1a-1b2c-4d5e-8f90-0123456789ab"


# ---------------------------------------------------------------- layouts


@pytest.mark.parametrize(("path", "want"), [
    # Kubernetes, systemd driver: every QoS class and runtime prefix
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID.replace('-', '_')}.slice/"
     f"cri-containerd-{A}.scope", ("kubepods-systemd", "containerd", A, UID, "burstable", False)),
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID.replace('-', '_')}.slice/crio-{A}.scope",
     ("kubepods-systemd", "crio", A, UID, "besteffort", False)),
    (f"/kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice/crio-conmon-{A}.scope",
     ("kubepods-systemd", "crio", A, UID, "guaranteed", True)),
    (f"/kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice/docker-{A}.scope",
     ("kubepods-systemd", "docker", A, UID, "guaranteed", False)),
    (f"/kubelet.slice/kubelet-kubepods.slice/kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice/"
     f"cri-containerd-{A}.scope", ("kubepods-systemd", "containerd", A, UID, "guaranteed", False)),
    # Kubernetes, cgroupfs driver
    (f"/kubepods/besteffort/pod{UID}/{B}", ("kubepods-cgroupfs", "cri", B, UID, "besteffort", False)),
    (f"/kubepods/burstable/pod{UID}/{B}", ("kubepods-cgroupfs", "cri", B, UID, "burstable", False)),
    (f"/kubepods/pod{UID}/{B}", ("kubepods-cgroupfs", "cri", B, UID, "guaranteed", False)),
    (f"/kubepods/burstable/pod{UID}/crio-{B}", ("kubepods-cgroupfs", "crio", B, UID, "burstable", False)),
    # Docker, podman, CRI-O, containerd namespaces
    (f"/system.slice/docker-{C}.scope", ("docker", "docker", C, "", "", False)),
    (f"/docker/{C}", ("docker", "docker", C, "", "", False)),
    (f"/docker/{C}/init.scope", ("docker", "docker", C, "", "", False)),
    (f"/machine.slice/libpod-{C}.scope/container", ("podman", "podman", C, "", "", False)),
    (f"/libpod_parent/libpod-{C}", ("podman", "podman", C, "", "", False)),
    (f"/machine.slice/libpod-conmon-{C}.scope", ("podman", "podman", C, "", "", True)),
    (f"/system.slice/crio-{C}.scope", ("crio", "crio", C, "", "", False)),
    (f"/default/{C}", ("containerd", "containerd", C, "", "", False)),
    (f"/system.slice/nerdctl-{C}.scope", ("containerd", "containerd", C, "", "", False)),
])
def test_every_layout_gives_its_container(path: str, want: tuple[str, str, str, str, str, bool]) -> None:
    m = parse_cgroup_path(path)
    assert m is not None
    assert (m.layout, m.runtime, m.container_id, m.pod_uid, m.qos, m.monitor) == want


@pytest.mark.parametrize("path", [
    "/", "/system.slice/cron.service", "/user.slice/user-0.slice/session-1.scope", "/docker/abc",
    f"/kubepods/besteffort/pod{UID}", "/kubepods.slice/kubepods-besteffort.slice", "/libpod_parent/conmon",
    f"/docker/{A}x",
])
def test_paths_of_no_layout(path: str) -> None:
    assert parse_cgroup_path(path) is None


# ---------------------------------------------------------------- rules, index


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="PATTERN=IMAGE"):
        ImageRule.parse("no-equals-sign")
    with pytest.raises(ValueError, match="bad cgroup path pattern"):
        ImageRule("(", "x")
    with pytest.raises(ValueError, match="does not capture"):
        ImageRule("^/x$", "img/{app}").apply("/x", "n")
    with pytest.raises(ValueError):
        AttributionConfig(host="maybe")
    with pytest.raises(ValueError, match="KIND=PATH"):
        RuntimeSocket.parse("/run/containerd/containerd.sock")
    with pytest.raises(ValueError, match="one of cri, docker, podman"):
        RuntimeSocket.parse("lxc=/run/lxc.sock")


def test_split_image() -> None:
    assert split_image("registry:5000/team/app:1.2@sha256:ab") == ("registry:5000/team/app", "1.2", "sha256:ab")
    assert split_image("nginx") == ("nginx", "", "")


def test_find_cgroup2_mount(tmp_path: Path) -> None:
    f = tmp_path / "mounts"
    f.write_text("tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n")
    assert find_cgroup2_mount(str(f)) == "/sys/fs/cgroup/unified"
    f.write_text("tmpfs /sys/fs/cgroup tmpfs rw 0 0\n")
    with pytest.raises(FileNotFoundError, match="cgroup v2"):
        find_cgroup2_mount(str(f))


def test_cgroup_index_ids_are_inodes(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    idx = CgroupIndex(str(tmp_path))
    ids = idx.scan()
    assert ids[os.stat(tmp_path).st_ino] == "/"
    assert ids[os.stat(tmp_path / "a" / "b").st_ino] == "/a/b"


def test_rules_and_host_grouping(tmp_path: Path) -> None:
    (tmp_path / "apps" / "web").mkdir(parents=True)
    (tmp_path / "system.slice").mkdir()
    rules = (ImageRule(r"^/apps/(?P<app>[^/]+)$", "demo/{app}:1.0", namespace="prod"),)
    r = Resolver(AttributionConfig(node="n1", rules=rules, cgroup_root=str(tmp_path), runtimes=()))
    web = os.stat(tmp_path / "apps" / "web").st_ino
    sysd = os.stat(tmp_path / "system.slice").st_ino
    info = r.resolve(web)
    assert info is not None
    assert (info.identity.image_repository, info.identity.image_tag, info.identity.namespace,
            info.identity.container_name, info.runtime) == ("demo/web", "1.0", "prod", "web", "rule")
    host = r.resolve(sysd)
    assert host is not None and host.identity.container_id == "host"
    assert Resolver(AttributionConfig(host="ignore", cgroup_root=str(tmp_path), runtimes=())).resolve(sysd) is None
    # a cgroup created after the resolver started gets a start time; removal marks its last window
    (tmp_path / "apps" / "new").mkdir()
    new = os.stat(tmp_path / "apps" / "new").st_ino
    r.index.min_rescan_seconds = 0
    first = r.resolve(new, now=42.0)
    assert first is not None and first.started_at == 42.0 and not first.exited
    (tmp_path / "apps" / "new").rmdir()
    last = r.resolve(new)
    assert last is not None and last.exited


# ---------------------------------------------------------------- the resolver with a runtime


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class ScriptedRuntime:
    """A runtime client whose answers the test sets (the real clients: tests/test_sensor_runtimes.py)."""

    name = "containerd"
    endpoint = "/run/test.sock"

    def __init__(self) -> None:
        self.known: dict[str, ContainerMeta] = {}
        self.fail: RuntimeFault | None = None
        self.calls = 0

    def serves(self, hint: str) -> bool:
        return hint in ("cri", "containerd")

    def inspect(self, container_id: str) -> ContainerMeta | None:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return self.known.get(container_id)

    def close(self) -> None:
        pass


def runtime_set(rt: ScriptedRuntime, clock: Clock) -> RuntimeSet:
    rs = RuntimeSet(sockets=(), clock=clock)
    rs.endpoints.append(Endpoint(RuntimeSocket("cri", rt.endpoint), rt, clock))
    return rs


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[tuple[Path, Clock, ScriptedRuntime, Resolver, CollectorRegistry]]:
    """A kubepods cgroup tree (in memory where /dev/shm exists), a scripted CRI runtime and a resolver (hold
    10 s, cache of 16)."""
    shm = Path("/dev/shm")
    root = Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path
    pod = root / "kubepods" / "besteffort" / f"pod{UID}"
    pod.mkdir(parents=True)
    clock, rt, reg = Clock(), ScriptedRuntime(), CollectorRegistry()
    cfg = AttributionConfig(node="n1", cgroup_root=str(root), hold_seconds=10, cache_size=16, retry_seconds=5)
    r = Resolver(cfg, runtimes=runtime_set(rt, clock), registry=reg, clock=clock)
    r.index.min_rescan_seconds = 0
    yield pod, clock, rt, r, reg
    if root != tmp_path:
        shutil.rmtree(root, ignore_errors=True)


def meta(cid: str, image: str = "shop/web:1.2", **kw: object) -> ContainerMeta:
    return ContainerMeta(container_id=cid, name="web", image=image, pod="web-0", namespace="shop", pod_uid=UID,
                         runtime="containerd", **kw)  # type: ignore[arg-type]


def cgroup(pod: Path, cid: str) -> int:
    (pod / cid).mkdir(exist_ok=True)
    return os.stat(pod / cid).st_ino


def metric(reg: CollectorRegistry, name: str, **labels: str) -> float:
    return reg.get_sample_value(name, labels or None) or 0.0


def test_runtime_metadata_makes_the_identity_and_is_cached(kube) -> None:  # type: ignore[no-untyped-def]
    pod, clock, rt, r, reg = kube
    rt.known[A] = meta(A, "registry.local/shop/web:1.2@sha256:99", started_at=500.0)
    cg = cgroup(pod, A)
    info = r.resolve(cg, now=900.0)
    assert info is not None and info.runtime == "containerd" and info.started_at == 500.0
    i = info.identity
    assert (i.node, i.container_id, i.image_repository, i.image_tag, i.image_digest, i.container_name, i.pod,
            i.namespace) == ("n1", A, "registry.local/shop/web", "1.2", "sha256:99", "web", "web-0", "shop")
    assert r.resolve(cg) == info and rt.calls == 1  # cached
    assert metric(reg, "baseliner_sensor_runtime_lookups_total", runtime="containerd", result="found") == 1
    assert metric(reg, "baseliner_sensor_runtime_up", runtime="containerd", socket=rt.endpoint) == 1
    # the container exits: one last window marked exited, then its cgroup and metadata are forgotten
    (pod / A).rmdir()
    last = r.resolve(cg)
    assert last is not None and last.exited
    assert len(r._metas) == 0 and cg not in r._infos


def test_a_sandbox_is_ignored_and_a_monitor_is_the_host(kube) -> None:  # type: ignore[no-untyped-def]
    pod, clock, rt, r, reg = kube
    rt.known[B] = ContainerMeta(container_id=B, name="POD", image="", runtime="containerd", sandbox=True)
    assert r.resolve(cgroup(pod, B)) is None
    assert metric(reg, "baseliner_sensor_attributed_cgroups_total", outcome="sandbox") == 1
    conmon = Path(r.index.root) / "libpod_parent" / f"libpod-conmon-{C}"
    conmon.mkdir(parents=True)
    info = r.resolve(os.stat(conmon).st_ino)
    assert info is not None and info.runtime == "host"


def test_a_container_described_late_is_pending_then_attributed(kube) -> None:  # type: ignore[no-untyped-def]
    pod, clock, rt, r, reg = kube
    cg = cgroup(pod, A)
    res = r.resolve_all([cg])
    assert res.pending == {cg} and cg not in res.attribution
    clock.t += 3
    rt.known[A] = meta(A)
    res = r.resolve_all([cg])
    assert res.pending == set() and res.attribution[cg] is not None  # type: ignore[union-attr]
    assert res.attribution[cg].identity.image == "shop/web:1.2"  # type: ignore[union-attr]


def test_a_container_never_described_is_given_up_not_learnt_as_unknown(kube) -> None:  # type: ignore[no-untyped-def]
    pod, clock, rt, r, reg = kube
    cg = cgroup(pod, A)
    for _ in range(10):
        res = r.resolve_all([cg])
        assert res.pending == {cg} and not res.attribution
        clock.t += 1
    clock.t += 1
    res = r.resolve_all([cg])
    assert res.dropped == {cg: "unknown_container"} and not res.attribution and not res.pending
    calls = rt.calls
    res = r.resolve_all([cg])  # given up: dropped at once, looked up again only after retry_seconds
    assert res.dropped == {cg: "unknown_container"} and rt.calls == calls
    clock.t += 6
    rt.known[A] = meta(A)
    res = r.resolve_all([cg])
    assert res.attribution[cg] is not None and rt.calls == calls + 1  # type: ignore[union-attr]


def test_a_container_that_exits_before_its_lookup_is_dropped(kube) -> None:  # type: ignore[no-untyped-def]
    pod, clock, rt, r, reg = kube
    cg = cgroup(pod, A)
    assert r.resolve_all([cg]).pending == {cg}
    (pod / A).rmdir()
    assert r.resolve_all([cg]).dropped == {cg: "exited_before_lookup"}
    assert r.resolve_all([987654321]).dropped == {987654321: "cgroup_gone"}  # never seen at all


def test_a_failing_runtime_is_backed_off_reported_and_recovers(kube, caplog) -> None:  # type: ignore[no-untyped-def]
    pod, clock, rt, r, reg = kube
    rt.fail = RuntimeUnavailable("connection refused")
    a, b = cgroup(pod, A), cgroup(pod, B)
    res = r.resolve_all([a, b])
    assert res.pending == {a, b}
    assert rt.calls == 1  # the second container is not asked while the runtime is down
    assert metric(reg, "baseliner_sensor_runtime_up", runtime="containerd", socket=rt.endpoint) == 0
    assert metric(reg, "baseliner_sensor_runtime_lookups_total", runtime="containerd", result="unavailable") == 1
    assert "does not answer" in caplog.text
    r.resolve_all([a, b])
    assert rt.calls == 1  # within the back-off
    rt.fail = None
    rt.known.update({A: meta(A), B: meta(B, "shop/db:7")})
    clock.t += 1
    res = r.resolve_all([a, b])
    assert {i.identity.image for i in res.attribution.values() if i} == {"shop/web:1.2", "shop/db:7"}
    assert "answers again" in caplog.text
    assert metric(reg, "baseliner_sensor_runtime_up", runtime="containerd", socket=rt.endpoint) == 1


def test_no_runtime_socket_falls_back_to_rules(tmp_path: Path) -> None:
    cg_dir = tmp_path / "docker" / A
    cg_dir.mkdir(parents=True)
    cg = os.stat(cg_dir).st_ino
    bare = Resolver(AttributionConfig(cgroup_root=str(tmp_path), runtimes=()))
    assert bare.resolve_all([cg]).pending == {cg}  # held: no runtime describes it
    rules = (ImageRule(r"^/docker/(?P<id>[0-9a-f]{12})", "from-rule/app:1"),)
    ruled = Resolver(AttributionConfig(cgroup_root=str(tmp_path), runtimes=(), rules=rules))
    info = ruled.resolve(cg)
    assert info is not None and info.identity.image == "from-rule/app:1" and info.runtime == "rule"


def test_ten_thousand_short_lived_containers_keep_the_caches_bounded(kube) -> None:  # type: ignore[no-untyped-def]
    """In batches of 100 per window: two in three exit with a last window seen; the others stop being counted
    and stay (their cgroups are kept here so that this file system cannot reuse their inode numbers as
    cgroup ids, which cgroup2 never does)."""
    pod, clock, rt, r, reg = kube
    r.index.min_rescan_seconds = 3600  # one scan per window (for its new cgroups), as a sensor does
    for batch in range(100):
        cids = [f"{batch * 100 + k:064x}" for k in range(100)]
        rt.known.update({cid: meta(cid) for cid in cids})
        cgs = [cgroup(pod, cid) for cid in cids]
        res = r.resolve_all(cgs)
        assert [res.attribution[cg].identity.container_id for cg in cgs] == cids  # type: ignore[union-attr]
        gone = [cg for k, cg in enumerate(cgs) if k % 3]
        for k, cid in enumerate(cids):
            if k % 3:
                (pod / cid).rmdir()
            rt.known.pop(cid)
        assert all(i is not None and i.exited for i in r.resolve_all(gone).attribution.values())
        assert len(r._infos) <= 16 and len(r._metas) <= 16 and len(r._first_seen) <= 16
    assert metric(reg, "baseliner_sensor_attribution_cache_entries", cache="cgroups") <= 16
    assert metric(reg, "baseliner_sensor_attributed_cgroups_total", outcome="runtime") == 10_000


# ---------------------------------------------------------------- held-back windows through the eBPF source


class NoProbes:
    """The eBPF source's probes for a test of its attribution step only (the kernel: test_sensor_bpf_kernel)."""

    def flip(self) -> WindowCounts:
        return WindowCounts()

    def close(self) -> None:
        pass


def test_held_windows_come_out_in_order_once_attributed(kube) -> None:  # type: ignore[no-untyped-def]
    pod, clock, rt, r, reg = kube
    src = BpfSource(BpfSourceConfig(window_seconds=1.0), probes=NoProbes(), resolver=r)  # type: ignore[arg-type]
    a = cgroup(pod, A)
    host = os.stat(pod.parent).st_ino
    for t in range(3):
        vectors = src.attribute(WindowCounts(syscalls={a: {0: 10 + t}, host: {1: 1}}), float(t), 1.0)
        assert [v.identity.container_id for v in vectors] == ["host"]  # A is held
        clock.t += 1
    assert len(src.held) == 3 and metric(reg, "baseliner_sensor_windows_held") == 3
    rt.known[A] = meta(A)
    vectors = src.attribute(WindowCounts(syscalls={a: {0: 13}}, lost_global=2), 3.0, 1.0)
    mine = [v for v in vectors if v.identity.container_id == A]
    assert [(v.window_start, v.syscalls["read"]) for v in mine] == [(0.0, 10), (1.0, 11), (2.0, 12), (3.0, 13)]
    assert [v.complete for v in mine] == [True, True, True, False]
    assert len(src.held) == 0 and metric(reg, "baseliner_sensor_windows_released_total") == 3


def test_held_windows_of_a_container_never_described_are_dropped(kube) -> None:  # type: ignore[no-untyped-def]
    pod, clock, rt, r, reg = kube
    src = BpfSource(BpfSourceConfig(window_seconds=1.0), probes=NoProbes(), resolver=r)  # type: ignore[arg-type]
    a = cgroup(pod, A)
    for t in range(12):
        assert src.attribute(WindowCounts(syscalls={a: {0: 1}}), float(t), 1.0) == []
        clock.t += 1
    assert len(src.held) == 0
    dropped = metric(reg, "baseliner_sensor_windows_unattributed_total", reason="unknown_container")
    assert dropped == 12  # the 11 held and the window that gave up


# ---------------------------------------------------------------- runtime sockets: missing, slow, garbage


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def serve_unix(tmp_path: Path) -> Iterator[object]:
    servers: list[_UnixServer] = []

    def start(handler: type[socketserver.BaseRequestHandler], name: str = "rt.sock") -> str:
        path = str(tmp_path / name)
        srv = _UnixServer(path, handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return path

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


class _Garbage(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.recv(65536)
        self.request.sendall(b"\x00\xffnot an answer at all\r\n\r\n" * 50)


class _Silent(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.recv(65536)
        time.sleep(3)


def _json_handler(routes: dict[str, object]) -> type[http.server.BaseHTTPRequestHandler]:
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            body = routes.get(self.path)
            status = 404 if body is None else 200
            data = body if isinstance(body, bytes) else json.dumps(body or {"message": "no such"}).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    return H


def test_missing_sockets(tmp_path: Path) -> None:
    for client in (DockerRuntime(str(tmp_path / "d.sock")), PodmanRuntime(str(tmp_path / "p.sock"))):
        with pytest.raises(RuntimeUnavailable):
            client.inspect(A)
    with pytest.raises(RuntimeUnavailable):
        CriRuntime(str(tmp_path / "c.sock"), timeout=0.5).connect()
    rs = RuntimeSet((RuntimeSocket("cri", str(tmp_path / "c.sock")),), timeout=0.5)
    assert rs.endpoints == [] and rs.for_hint("cri") == []
    # a socket named with --runtime that is missing shows as down in the metrics
    reg = CollectorRegistry()
    Resolver(AttributionConfig(cgroup_root=str(tmp_path), runtimes=rs.candidates), runtimes=rs, registry=reg)
    up = reg.get_sample_value("baseliner_sensor_runtime_up", {"runtime": "cri", "socket": str(tmp_path / "c.sock")})
    assert up == 0


def test_slow_sockets_time_out(serve_unix) -> None:  # type: ignore[no-untyped-def]
    path = serve_unix(_Silent)
    for client in (DockerRuntime(path, timeout=0.3), PodmanRuntime(path, timeout=0.3)):
        t0 = time.monotonic()
        with pytest.raises(RuntimeUnavailable, match="no answer within"):
            client.inspect(A)
        assert time.monotonic() - t0 < 2
    t0 = time.monotonic()
    with pytest.raises(RuntimeUnavailable):
        CriRuntime(path, timeout=0.3).connect()
    assert time.monotonic() - t0 < 2


def test_garbage_answers_are_named(serve_unix) -> None:  # type: ignore[no-untyped-def]
    path = serve_unix(_Garbage)
    for client in (DockerRuntime(path, timeout=1), PodmanRuntime(path, timeout=1)):
        with pytest.raises(RuntimeBadAnswer, match="not an HTTP answer"):
            client.inspect(A)
    with pytest.raises(RuntimeFault):
        CriRuntime(path, timeout=1).connect()
    bad = serve_unix(_json_handler({f"/containers/{A}/json": b"{not json", f"/containers/{B}/json": [1, 2],
                                    f"/containers/{C}/json": {"Id": C, "Config": {"Labels": "x"}}}), "bad.sock")
    docker = DockerRuntime(bad)
    with pytest.raises(RuntimeBadAnswer, match="not JSON"):
        docker.inspect(A)
    with pytest.raises(RuntimeBadAnswer, match="not an object"):
        docker.inspect(B)
    with pytest.raises(RuntimeBadAnswer, match="expected dict at Config.Labels"):
        docker.inspect(C)
    assert docker.inspect("f" * 64) is None  # 404: not known


def test_docker_and_podman_answers(serve_unix) -> None:  # type: ignore[no-untyped-def]
    image_id = "sha256:" + "1" * 64
    docker = serve_unix(_json_handler({
        f"/containers/{A}/json": {"Id": A, "Name": "/web", "Image": image_id, "State": {
            "StartedAt": "2024-05-01T10:00:00.5Z"}, "Config": {"Image": image_id, "Labels": {
                "io.kubernetes.pod.name": "web-0", "io.kubernetes.pod.namespace": "shop"}}},
        f"/images/{image_id}/json": {"RepoTags": ["shop/web:1.2"], "RepoDigests": ["shop/web@sha256:77"]},
    }), "docker.sock")
    m = DockerRuntime(docker).inspect(A)
    assert m is not None
    assert (m.name, m.image, m.image_digest, m.pod, m.namespace, m.started_at) == (
        "web", "shop/web:1.2", "sha256:77", "web-0", "shop", 1714557600.5)
    podman = serve_unix(_json_handler({
        f"/v4.0.0/libpod/containers/{B}/json": {"Id": B, "Name": "db", "ImageName": "localhost/shop/db:7",
                                                "ImageDigest": "sha256:88", "Pod": "p1", "IsInfra": False},
        "/v4.0.0/libpod/pods/p1/json": {"Name": "shop-pod"},
    }), "podman.sock")
    m = PodmanRuntime(podman).inspect(B)
    assert m is not None and (m.name, m.image, m.image_digest, m.pod) == ("db", "localhost/shop/db:7", "sha256:88",
                                                                         "shop-pod")


def test_detection_finds_the_sockets_that_exist(serve_unix, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    docker = serve_unix(_json_handler({}), "docker.sock")
    rs = RuntimeSet((RuntimeSocket("docker", docker), RuntimeSocket("podman", str(tmp_path / "none.sock"))))
    assert [e.name for e in rs.endpoints] == ["docker"]
    assert [e.name for e in rs.for_hint("docker")] == ["docker"] and rs.for_hint("podman") == []

