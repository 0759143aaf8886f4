"""Attribution: cgroup id -> cgroup path -> container id -> image, pod and namespace.

* **cgroup id -> path.**  The id the kernel reports (``bpf_get_current_cgroup_id``) is the inode number
  of the cgroup's directory in the cgroup v2 hierarchy, found in ``/proc/mounts`` (``cgroup2``; on hybrid
  systems typically ``/sys/fs/cgroup/unified``).  :class:`CgroupIndex` walks the hierarchy and rescans
  when it meets an unknown id (at most once per :attr:`CgroupIndex.min_rescan_seconds`).
* **path -> container.**  First the configured :class:`ImageRule` list (regular expressions over the
  cgroup path, first match wins; this is what bare cgroups and the tests use), then the runtimes' path
  patterns (:data:`CONTAINER_PATTERNS`: docker, containerd/CRI, CRI-O, podman) for the container id.
* **container -> image.**  From the Docker Engine API (``/var/run/docker.sock``, also podman's
  docker-compatible socket) when a socket is present: image, name, and the Kubernetes pod/namespace
  labels; otherwise the image is ``unknown`` (configure rules).  A containerd-only node without a
  docker-compatible socket needs rules: the CRI client is not implemented.
* **everything else** is the host: grouped as one ``host`` container or ignored (``host="group"|"ignore"``).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from baseliner.models.vector import Identity

log = logging.getLogger(__name__)

#: (runtime, regex with group ``id``) matched against cgroup paths.
CONTAINER_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("docker", re.compile(r"(?:^|/)docker-(?P<id>[0-9a-f]{64})\.scope(?:/|$)")),
    ("docker", re.compile(r"(?:^|/)docker/(?P<id>[0-9a-f]{64})(?:/|$)")),
    ("containerd", re.compile(r"(?:^|/)cri-containerd-(?P<id>[0-9a-f]{64})\.scope(?:/|$)")),
    ("crio", re.compile(r"(?:^|/)crio-(?:conmon-)?(?P<id>[0-9a-f]{64})\.scope(?:/|$)")),
    ("podman", re.compile(r"(?:^|/)libpod-(?:conmon-)?(?P<id>[0-9a-f]{64})\.scope(?:/|$)")),
    # cgroupfs driver under kubepods: /kubepods/<qos>/pod<uid>/<id>
    ("containerd", re.compile(r"(?:^|/)kubepods[^/]*/(?:[^/]+/)?pod[0-9a-f_-]+/(?P<id>[0-9a-f]{64})(?:/|$)")),
)


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """Who a cgroup belongs to."""

    identity: Identity
    cgroup_path: str
    runtime: str = ""  # docker | containerd | crio | podman | rule | host
    exited: bool = False  # the cgroup no longer exists (its last window)
    started_at: float | None = None  # when the sensor first saw the cgroup appear, if it saw that


@dataclass(frozen=True)
class ImageRule:
    """Cgroup path regex -> image.  ``image``/``namespace``/``pod``/``name`` may use ``{group}`` fields
    of the regex, e.g. ``ImageRule(r"^/baseliner-test/(?P<app>[^/]+)$", "test/{app}:1")``."""

    pattern: str
    image: str
    namespace: str = ""
    pod: str = ""
    name: str = ""

    def __post_init__(self) -> None:
        try:
            re.compile(self.pattern)
        except re.error as e:
            raise ValueError(f"bad cgroup path pattern {self.pattern!r}: {e}") from None
        if not self.image:
            raise ValueError(f"rule {self.pattern!r} has an empty image")

    @classmethod
    def parse(cls, text: str) -> ImageRule:
        """``PATTERN=IMAGE`` (the CLI form)."""
        pattern, sep, image = text.rpartition("=")
        if not sep or not pattern:
            raise ValueError(f"expected PATTERN=IMAGE, got {text!r}")
        return cls(pattern=pattern, image=image)


def split_image(image: str) -> tuple[str, str, str]:
    """``repo[:tag][@digest]`` -> (repository, tag, digest)."""
    digest = ""
    if "@" in image:
        image, digest = image.split("@", 1)
    repo, tag = image, ""
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        repo, tag = image[:colon], image[colon + 1:]
    return repo, tag, digest


def find_cgroup2_mount(mounts_file: str = "/proc/mounts") -> str:
    """Mount point of the cgroup v2 hierarchy."""
    with open(mounts_file) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "cgroup2":
                return parts[1].replace("\\040", " ")
    raise FileNotFoundError(f"no cgroup2 file system in {mounts_file}: the eBPF sensor needs cgroup v2 "
                            "(mount -t cgroup2 none /sys/fs/cgroup/unified)")


class CgroupIndex:
    """cgroup id (directory inode) <-> path relative to the cgroup2 mount ("/" is the root)."""

    def __init__(self, root: str | None = None, min_rescan_seconds: float = 1.0) -> None:
        self.root = root or find_cgroup2_mount()
        self.min_rescan_seconds = min_rescan_seconds
        self._by_id: dict[int, str] = {}
        self._last_scan = float("-inf")
        self.scans = 0

    def scan(self) -> dict[int, str]:
        by_id: dict[int, str] = {}
        for dirpath, _dirs, _files in os.walk(self.root):
            try:
                ino = os.stat(dirpath).st_ino
            except FileNotFoundError:
                continue
            rel = "/" + os.path.relpath(dirpath, self.root)
            by_id[ino] = "/" if rel == "/." else rel
        self._by_id = by_id
        self._last_scan = time.monotonic()
        self.scans += 1
        return by_id

    def known(self, cgid: int) -> bool:
        return cgid in self._by_id

    def path_of(self, cgid: int) -> str | None:
        path = self._by_id.get(cgid)
        if path is None and time.monotonic() - self._last_scan >= self.min_rescan_seconds:
            path = self.scan().get(cgid)
        return path

    def exists(self, cgid: int, path: str) -> bool:
        try:
            return os.stat(os.path.join(self.root, path.lstrip("/"))).st_ino == cgid
        except FileNotFoundError:
            return False


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


class DockerAPI:
    """Best-effort Docker Engine API client over a unix socket (docker, or podman's compatible API)."""

    def __init__(self, socket_path: str = "/var/run/docker.sock", timeout: float = 2.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def available(self) -> bool:
        return os.path.exists(self.socket_path)

    def inspect(self, container_id: str) -> dict[str, str] | None:
        """{"image", "name", "pod", "namespace", "digest"} of a container, None when unknown/unreachable."""
        conn = _UnixHTTPConnection(self.socket_path, self.timeout)
        try:
            conn.request("GET", f"/containers/{container_id}/json")
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                return None
            data = json.loads(body)
        except (OSError, ValueError, http.client.HTTPException) as e:
            log.warning("docker API at %s: %s", self.socket_path, e)
            return None
        finally:
            conn.close()
        cfg = data.get("Config") or {}
        labels = cfg.get("Labels") or {}
        image = cfg.get("Image") or data.get("Image") or "unknown"
        return {
            "image": image,
            "digest": data.get("Image", "") if str(data.get("Image", "")).startswith("sha256:") else "",
            "name": str(data.get("Name", "")).lstrip("/"),
            "pod": labels.get("io.kubernetes.pod.name", ""),
            "namespace": labels.get("io.kubernetes.pod.namespace", ""),
        }


@dataclass
class AttributionConfig:
    node: str = field(default_factory=socket.gethostname)
    rules: tuple[ImageRule, ...] = ()
    host: str = "group"  # "group": one "host" container; "ignore": drop
    host_image: str = "host"
    docker_socket: str = "/var/run/docker.sock"
    cgroup_root: str | None = None

    def __post_init__(self) -> None:
        if self.host not in ("group", "ignore"):
            raise ValueError(f"host must be 'group' or 'ignore', not {self.host!r}")


class Resolver:
    """Resolves cgroup ids to :class:`ContainerInfo` (cached; rescans on unknown ids)."""

    def __init__(self, config: AttributionConfig | None = None, index: CgroupIndex | None = None,
                 docker: DockerAPI | None = None) -> None:
        self.config = config or AttributionConfig()
        self.index = index or CgroupIndex(self.config.cgroup_root)
        self.docker = docker or DockerAPI(self.config.docker_socket)
        self._rules = [(re.compile(r.pattern), r) for r in self.config.rules]
        self._cache: dict[int, ContainerInfo | None] = {}
        self._first_seen: dict[int, float] = {}
        self._known_at_start = set(self.index.scan())
        self.unresolved = 0

    def resolve_path(self, path: str) -> tuple[Identity, str] | None:
        """Identity and runtime of a cgroup path; None for the host (before host grouping)."""
        node = self.config.node
        for rx, rule in self._rules:
            m = rx.search(path)
            if m:
                groups = {k: v or "" for k, v in m.groupdict().items()}
                repo, tag, digest = split_image(rule.image.format(**groups))
                name = rule.name.format(**groups) if rule.name else path.rstrip("/").rsplit("/", 1)[-1]
                return Identity(node=node, container_id=path, image_repository=repo, image_tag=tag,
                                image_digest=digest, container_name=name,
                                pod=rule.pod.format(**groups), namespace=rule.namespace.format(**groups)), "rule"
        for runtime, rx in CONTAINER_PATTERNS:
            m = rx.search(path)
            if m:
                cid = m.group("id")
                meta = self.docker.inspect(cid) if self.docker.available() else None
                if meta is None:
                    return Identity(node=node, container_id=cid, image_repository="unknown"), runtime
                repo, tag, digest = split_image(meta["image"])
                return Identity(node=node, container_id=cid, image_repository=repo, image_tag=tag,
                                image_digest=digest or meta["digest"], container_name=meta["name"],
                                pod=meta["pod"], namespace=meta["namespace"]), runtime
        return None

    def _host(self, path: str, exited: bool) -> ContainerInfo | None:
        if self.config.host == "ignore":
            return None
        repo, tag, _ = split_image(self.config.host_image)
        ident = Identity(node=self.config.node, container_id="host", image_repository=repo, image_tag=tag,
                         container_name="host")
        return ContainerInfo(identity=ident, cgroup_path=path, runtime="host", exited=False)

    def resolve(self, cgid: int, now: float | None = None) -> ContainerInfo | None:
        if cgid in self._cache:
            cached = self._cache[cgid]
            if cached is not None and cached.runtime != "host" and not self.index.exists(cgid, cached.cgroup_path):
                cached = ContainerInfo(identity=cached.identity, cgroup_path=cached.cgroup_path,
                                       runtime=cached.runtime, exited=True, started_at=cached.started_at)
                del self._cache[cgid]  # the last window of this cgroup
            return cached
        path = self.index.path_of(cgid)
        if path is None:
            # gone before we could see it (a short-lived cgroup), or not a cgroup v2 id
            self.unresolved += 1
            return self._host("?", exited=True)
        started = None if cgid in self._known_at_start else self._first_seen.setdefault(cgid, now or time.time())
        found = self.resolve_path(path)
        info: ContainerInfo | None
        if found is None:
            info = self._host(path, exited=False)
        else:
            ident, runtime = found
            info = ContainerInfo(identity=ident, cgroup_path=path, runtime=runtime, started_at=started)
        self._cache[cgid] = info
        return info

    def resolve_all(self, cgids: Iterable[int], now: float | None = None) -> Mapping[int, ContainerInfo | None]:
        """Resolve one window's cgroups; the hierarchy is rescanned at most once, if any id is new."""
        ids = list(cgids)
        if any(cg not in self._cache and not self.index.known(cg) for cg in ids):
            self.index.scan()
        return {cg: self.resolve(cg, now) for cg in ids}
