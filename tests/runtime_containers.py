"""Real containers for the tests: Docker, containerd through CRI (a pod sandbox and containers created through
the CRI API itself, from image ids as the kubelet does) and podman, on the host network.

:func:`require_runtimes` runs ``scripts/runtimes.sh`` (idempotent: installs and starts the runtimes and
imports the locally built base image) and skips where that cannot be done, failing instead when ``CI`` is
set.  Each runtime helper builds images derived from the base (a label makes each a distinct image), runs a
container with a shell command, runs a command inside it and removes what it made.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from baseliner.protos.cri import api_pb2 as cri
from baseliner.protos.cri import api_pb2_grpc as cri_grpc

REPO = Path(__file__).resolve().parents[1]
BASE_IMAGE = "localhost/baseliner/debian:bookworm"
CONTAINERD = "/run/containerd/containerd.sock"
POD_NAMESPACE = "baseliner-test"


def require_runtimes() -> None:
    """Skip unless root and the runtimes are up (started here if needed); with ``CI`` set, fail instead."""
    problem = ""
    if os.geteuid() != 0:
        problem = "not root"
    else:
        r = subprocess.run([str(REPO / "scripts" / "runtimes.sh")], capture_output=True, text=True, timeout=1200)
        if r.returncode != 0:
            problem = "scripts/runtimes.sh failed: " + r.stderr[-2000:]
    if problem:
        msg = f"container runtimes unavailable: {problem}"
        if os.environ.get("CI"):
            pytest.fail(msg + " (CI is set: these tests must run)")
        pytest.skip(msg)


def _run(*cmd: str, stdin: str | None = None, timeout: float = 120) -> str:
    r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr[-2000:]}")
    return r.stdout.strip()


def containerfile(label: str) -> str:
    return f"FROM {BASE_IMAGE}\nLABEL org.baseliner.test={label}\n"


@dataclass
class Container:
    runtime: str
    id: str
    name: str
    image: str  # repository:tag
    pod: str = ""
    namespace: str = ""
    sandbox: str = ""  # CRI: the pod sandbox id


class Docker:
    name = "docker"
    cli = "docker"

    def __init__(self) -> None:
        self.made: list[Container] = []

    def build(self, image: str, label: str) -> str:
        _run(self.cli, "build", "-q", "-t", image, "-", stdin=containerfile(label))
        return image

    def run(self, name: str, image: str, script: str) -> Container:
        self.remove_named(name)
        cid = _run(self.cli, "run", "-d", "--name", name, "--network", "host", image, "bash", "-c", script)
        c = Container(self.name, cid, name, image)
        self.made.append(c)
        return c

    def exec(self, c: Container, script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.cli, "exec", c.id, "bash", "-c", script], capture_output=True, text=True,
                              timeout=timeout)

    def remove_named(self, name: str) -> None:
        subprocess.run([self.cli, "rm", "-f", name], capture_output=True, timeout=60)

    def cleanup(self) -> None:
        for c in self.made:
            subprocess.run([self.cli, "rm", "-f", c.id], capture_output=True, timeout=60)
        self.made.clear()


class Podman(Docker):
    name = "podman"
    cli = "podman"

    def build(self, image: str, label: str) -> str:
        _run(self.cli, "build", "-q", "-t", image, "-f", "-", str(REPO / "tests"), stdin=containerfile(label))
        return image

    def remove_named(self, name: str) -> None:
        subprocess.run([self.cli, "rm", "-f", "-t", "0", name], capture_output=True, timeout=60)

    def cleanup(self) -> None:
        for c in self.made:
            subprocess.run([self.cli, "rm", "-f", "-t", "0", c.id], capture_output=True, timeout=60)
        self.made.clear()


@dataclass
class Cri:
    """containerd through CRI: pod sandboxes on the host network under kubelet's cgroupfs layout
    (/kubepods/besteffort/pod<uid>), containers created from the image id."""

    name: str = "cri"
    endpoint: str = CONTAINERD
    made: list[Container] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.channel = grpc.insecure_channel(f"unix://{self.endpoint}")
        self.rt = cri_grpc.RuntimeServiceStub(self.channel)
        self.img = cri_grpc.ImageServiceStub(self.channel)

    def build(self, image: str, label: str) -> str:
        """Built with docker (from the same base), imported into containerd's k8s.io namespace."""
        Docker().build(image, label)
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        subprocess.run(["ctr", "--address", self.endpoint, "-n", "k8s.io", "images", "import", "-"],
                       stdin=save.stdout, capture_output=True, check=True, timeout=300)
        assert save.wait(60) == 0
        return image

    def image_id(self, image: str) -> str:
        status = self.img.ImageStatus(cri.ImageStatusRequest(image=cri.ImageSpec(image=image)), timeout=10)
        if not status.image.id:
            raise RuntimeError(f"containerd has no image {image}")
        return status.image.id

    def run(self, name: str, image: str, script: str) -> Container:
        uid = str(uuid.uuid4())
        pod = f"{name}-{uid[:5]}"
        ns = cri.NamespaceOption(network=cri.NODE, pid=cri.CONTAINER, ipc=cri.POD)
        logs = Path("/tmp/baseliner-test-pods") / uid
        logs.mkdir(parents=True, exist_ok=True)
        sandbox = cri.PodSandboxConfig(
            metadata=cri.PodSandboxMetadata(name=pod, uid=uid, namespace=POD_NAMESPACE), log_directory=str(logs),
            linux=cri.LinuxPodSandboxConfig(cgroup_parent=f"/kubepods/besteffort/pod{uid}",
                                            security_context=cri.LinuxSandboxSecurityContext(namespace_options=ns)))
        sid = self.rt.RunPodSandbox(cri.RunPodSandboxRequest(config=sandbox), timeout=60).pod_sandbox_id
        config = cri.ContainerConfig(
            metadata=cri.ContainerMetadata(name=name), image=cri.ImageSpec(image=self.image_id(image)),
            command=["bash", "-c", script], log_path=f"{name}.log",
            linux=cri.LinuxContainerConfig(security_context=cri.LinuxContainerSecurityContext(namespace_options=ns)))
        cid = self.rt.CreateContainer(cri.CreateContainerRequest(pod_sandbox_id=sid, config=config,
                                                                 sandbox_config=sandbox), timeout=60).container_id
        self.rt.StartContainer(cri.StartContainerRequest(container_id=cid), timeout=60)
        c = Container(self.name, cid, name, image, pod=pod, namespace=POD_NAMESPACE, sandbox=sid)
        self.made.append(c)
        return c

    def exec(self, c: Container, script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``kubectl exec``'s way in: ExecSync."""
        r = self.rt.ExecSync(cri.ExecSyncRequest(container_id=c.id, cmd=["bash", "-c", script], timeout=int(timeout)),
                             timeout=timeout + 10)
        return subprocess.CompletedProcess(["ExecSync"], r.exit_code, r.stdout.decode(), r.stderr.decode())

    def cleanup(self) -> None:
        for c in self.made:
            steps = ((self.rt.StopContainer, cri.StopContainerRequest(container_id=c.id)),
                     (self.rt.RemoveContainer, cri.RemoveContainerRequest(container_id=c.id)),
                     (self.rt.StopPodSandbox, cri.StopPodSandboxRequest(pod_sandbox_id=c.sandbox)),
                     (self.rt.RemovePodSandbox, cri.RemovePodSandboxRequest(pod_sandbox_id=c.sandbox)))
            for call, request in steps:
                try:
                    call(request, timeout=30)
                except grpc.RpcError:
                    pass
        self.made.clear()
