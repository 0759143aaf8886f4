"""The Container Runtime Interface (containerd, CRI-O) over the runtime's socket, read-only.

For a container id: ``ListContainers`` filtered by id (name, sandbox, image as created, image reference,
labels), ``ContainerStatus`` when that image is an id (the runtime's name for it, as the kubelet creates
containers from image ids), ``ImageStatus`` (the image's tags and registry digests) and ``PodSandboxStatus``
(pod name, namespace, UID and, from the pod's labels, its workload: ``workload.py``); sandboxes and images
are cached (bounded).  An id that is no container but a
pod sandbox (the pause container's cgroup) is described as a sandbox.  The messages are the trimmed
``runtime.v1`` definition under ``protos/cri/``.
"""

from __future__ import annotations

import grpc
from baseliner.protos.cri import api_pb2 as cri
from baseliner.protos.cri import api_pb2_grpc as cri_grpc
from baseliner.sensor.attribution.runtime import (
    ContainerMeta,
    RuntimeBadAnswer,
    RuntimeFault,
    RuntimeUnavailable,
    digest_of,
    is_image_id,
)
from baseliner.sensor.attribution.workload import workload_of
from cachetools import LRUCache

#: CRI runtime names (VersionResponse.runtime_name) -> the layouts' runtime hints they serve besides "cri"
_HINTS = {"containerd": "containerd", "cri-o": "crio"}
_UNAVAILABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)


def _fault(endpoint: str, err: grpc.RpcError) -> RuntimeFault:
    code = err.code() if hasattr(err, "code") else None
    detail = err.details() if hasattr(err, "details") else str(err)
    if code in _UNAVAILABLE:
        return RuntimeUnavailable(f"{endpoint}: {code.name if code else 'UNAVAILABLE'}: {detail}")
    return RuntimeBadAnswer(f"{endpoint}: {code.name if code else 'error'}: {detail}")


class CriRuntime:
    """A CRI runtime; :meth:`connect` asks its name with ``Version``."""

    def __init__(self, endpoint: str, timeout: float = 1.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.name = "cri"
        self._channel = grpc.insecure_channel(f"unix://{endpoint}", options=[
            ("grpc.max_receive_message_length", 16 << 20), ("grpc.enable_retries", 0)])
        self._rt = cri_grpc.RuntimeServiceStub(self._channel)
        self._img = cri_grpc.ImageServiceStub(self._channel)
        # sandbox id -> (its metadata, its pod's workload)
        self._sandboxes: LRUCache[str, tuple[cri.PodSandboxMetadata, str]] = LRUCache(1024)
        # image ref -> (first tag, registry digests)
        self._images: LRUCache[str, tuple[str, tuple[str, ...]]] = LRUCache(1024)

    def connect(self) -> CriRuntime:
        """Ask the runtime its name (containerd, cri-o); raises RuntimeFault when it does not answer CRI."""
        try:
            v = self._rt.Version(cri.VersionRequest(version="v1"), timeout=self.timeout)
        except grpc.RpcError as e:
            raise _fault(self.endpoint, e) from None
        self.name = v.runtime_name or "cri"
        return self

    def serves(self, hint: str) -> bool:
        return hint == "cri" or _HINTS.get(self.name) == hint

    def inspect(self, container_id: str) -> ContainerMeta | None:
        try:
            found = self._rt.ListContainers(
                cri.ListContainersRequest(filter=cri.ContainerFilter(id=container_id)), timeout=self.timeout)
            if not found.containers:
                return self._sandbox(container_id)
            c = found.containers[0]
            image = c.image.user_specified_image or c.image.image
            if not image or is_image_id(image):
                status = self._rt.ContainerStatus(cri.ContainerStatusRequest(container_id=c.id),
                                                  timeout=self.timeout).status
                image = status.image.user_specified_image or status.image.image
            tag, digests = self._image(c.image_ref or image)
            if not image or is_image_id(image):
                image = tag
            pod = self._pod(c.pod_sandbox_id) if c.pod_sandbox_id else None
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:  # removed between two calls
                return None
            raise _fault(self.endpoint, e) from None
        md, workload = pod if pod else (None, "")
        pod_name = md.name if md else c.labels.get("io.kubernetes.pod.name", "")
        namespace = md.namespace if md else c.labels.get("io.kubernetes.pod.namespace", "")
        return ContainerMeta(
            container_id=c.id, name=c.metadata.name, image=image, image_digest=digest_of(digests, image),
            pod=pod_name, namespace=namespace, pod_uid=md.uid if md else c.labels.get("io.kubernetes.pod.uid", ""),
            runtime=self.name, started_at=c.created_at / 1e9 if c.created_at > 0 else None,
            workload=workload or workload_of(pod_name, namespace))

    def _sandbox(self, container_id: str) -> ContainerMeta | None:
        try:
            status = self._rt.PodSandboxStatus(cri.PodSandboxStatusRequest(pod_sandbox_id=container_id),
                                               timeout=self.timeout).status
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        md = status.metadata
        return ContainerMeta(container_id=container_id, name="POD", image="", pod=md.name, namespace=md.namespace,
                             pod_uid=md.uid, runtime=self.name, sandbox=True)

    def _pod(self, sandbox_id: str) -> tuple[cri.PodSandboxMetadata, str]:
        """The sandbox's metadata and its pod's workload (from the pod's labels, which the sandbox carries)."""
        known = self._sandboxes.get(sandbox_id)
        if known is None:
            status = self._rt.PodSandboxStatus(cri.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id),
                                               timeout=self.timeout).status
            if not status.id:
                raise RuntimeBadAnswer(f"{self.endpoint}: PodSandboxStatus({sandbox_id}) has no status")
            md = status.metadata
            known = (md, workload_of(md.name, md.namespace, dict(status.labels)))
            self._sandboxes[sandbox_id] = known
        return known

    def _image(self, ref: str) -> tuple[str, tuple[str, ...]]:
        if not ref:
            return "", ()
        known = self._images.get(ref)
        if known is not None:
            return known
        img = self._img.ImageStatus(cri.ImageStatusRequest(image=cri.ImageSpec(image=ref)), timeout=self.timeout).image
        tag = img.repo_tags[0] if img.repo_tags else ""
        out = (tag, tuple(img.repo_digests))
        if img.id:  # an image that is gone is not remembered
            self._images[ref] = out
        return out

    def close(self) -> None:
        self._channel.close()
