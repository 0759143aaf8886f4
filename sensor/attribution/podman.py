"""Podman's libpod API (``/run/podman/podman.sock``, ``podman system service``): container id -> name,
image, pod.

``GET /v4.0.0/libpod/containers/{id}/json`` per container (``ImageName`` is the name it was created from,
``ImageDigest`` its digest, ``IsInfra`` marks a pod's infra container); a pod's name comes from
``GET /v4.0.0/libpod/pods/{id}/json``, cached (bounded)."""

from __future__ import annotations

from baseliner.sensor.attribution.runtime import ContainerMeta, parse_time
from baseliner.sensor.attribution.unixhttp import field, get_json
from baseliner.sensor.attribution.workload import workload_of
from cachetools import LRUCache

API = "/v4.0.0/libpod"


class PodmanRuntime:
    name = "podman"

    def __init__(self, endpoint: str = "/run/podman/podman.sock", timeout: float = 1.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._pods: LRUCache[str, str] = LRUCache(1024)  # pod id -> name

    def serves(self, hint: str) -> bool:
        return hint == "podman"

    def inspect(self, container_id: str) -> ContainerMeta | None:
        doc = get_json(self.endpoint, f"{API}/containers/{container_id}/json", self.timeout)
        if doc is None:
            return None
        labels = field(doc, "Config", "Labels", kind=dict)
        pod_id = field(doc, "Pod")
        pod = self._pod_name(pod_id) if pod_id else ""
        namespace = str(labels.get("io.kubernetes.pod.namespace", ""))
        return ContainerMeta(
            container_id=field(doc, "Id") or container_id, name=field(doc, "Name"), image=field(doc, "ImageName"),
            image_digest=field(doc, "ImageDigest"), pod=pod, namespace=namespace, runtime=self.name,
            started_at=parse_time(field(doc, "State", "StartedAt")), sandbox=bool(doc.get("IsInfra")),
            workload=workload_of(pod, namespace))

    def _pod_name(self, pod_id: str) -> str:
        name = self._pods.get(pod_id)
        if name is None:
            doc = get_json(self.endpoint, f"{API}/pods/{pod_id}/json", self.timeout)
            name = field(doc, "Name") if doc is not None else ""
            self._pods[pod_id] = name
        return name

    def close(self) -> None:
        pass
