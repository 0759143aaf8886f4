"""Docker Engine API (``/var/run/docker.sock``): container id -> name, image, Kubernetes labels (cri-dockerd).

``GET /containers/{id}/json`` per container; an image given by id is named through ``GET /images/{id}/json``
(its first tag), which also gives its registry digest; images are cached (bounded)."""

from __future__ import annotations

from baseliner.sensor.attribution.runtime import ContainerMeta, digest_of, is_image_id, parse_time
from baseliner.sensor.attribution.unixhttp import field, get_json
from baseliner.sensor.attribution.workload import workload_of
from cachetools import LRUCache


class DockerRuntime:
    name = "docker"

    def __init__(self, endpoint: str = "/var/run/docker.sock", timeout: float = 1.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._images: LRUCache[str, tuple[str, str]] = LRUCache(1024)  # id -> (first tag, digest)

    def serves(self, hint: str) -> bool:
        return hint == "docker"

    def inspect(self, container_id: str) -> ContainerMeta | None:
        doc = get_json(self.endpoint, f"/containers/{container_id}/json", self.timeout)
        if doc is None:
            return None
        labels = field(doc, "Config", "Labels", kind=dict)
        image = field(doc, "Config", "Image")
        image_id = field(doc, "Image")
        tag, digest = self._image(image_id) if image_id else ("", "")
        if not image or is_image_id(image):
            image = tag
        pod = str(labels.get("io.kubernetes.pod.name", ""))
        namespace = str(labels.get("io.kubernetes.pod.namespace", ""))
        return ContainerMeta(
            container_id=field(doc, "Id") or container_id, name=field(doc, "Name").lstrip("/"), image=image,
            image_digest=digest, pod=pod, namespace=namespace,
            pod_uid=str(labels.get("io.kubernetes.pod.uid", "")), runtime=self.name,
            started_at=parse_time(field(doc, "State", "StartedAt")),
            sandbox=labels.get("io.kubernetes.docker.type") == "podsandbox", workload=workload_of(pod, namespace))

    def _image(self, image_id: str) -> tuple[str, str]:
        known = self._images.get(image_id)
        if known is not None:
            return known
        doc = get_json(self.endpoint, f"/images/{image_id}/json", self.timeout)
        tags = field(doc, "RepoTags", kind=list) if doc is not None else []
        tag = str(tags[0]) if tags else ""
        out = (tag, digest_of([str(d) for d in field(doc, "RepoDigests", kind=list)], tag) if doc else "")
        self._images[image_id] = out
        return out

    def close(self) -> None:
        pass
