"""What every runtime client gives: :class:`ContainerMeta` for a container id, or a named fault.

One small module per runtime implements :class:`Runtime`: ``cri.py`` (containerd and CRI-O, over gRPC),
``docker.py`` (Docker Engine API) and ``podman.py`` (libpod API).  A client answers :meth:`Runtime.inspect`
with the container's metadata, ``None`` when the runtime does not know the id (not created yet, or already
removed), or raises :class:`RuntimeFault`: :class:`RuntimeUnavailable` (socket missing, refused, timed out)
or :class:`RuntimeBadAnswer` (an answer that is not what the API defines).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

_HEX_ID = re.compile(r"^(?:sha256:)?[0-9a-f]{12,64}$")


class RuntimeFault(Exception):
    """A runtime did not give a usable answer; ``kind`` is a bounded label for metrics."""

    kind = "fault"


class RuntimeUnavailable(RuntimeFault):
    """The socket is missing, refuses connections, or does not answer in time."""

    kind = "unavailable"


class RuntimeBadAnswer(RuntimeFault):
    """The runtime answered something that is not what its API defines."""

    kind = "bad_answer"


@dataclass(frozen=True, slots=True)
class ContainerMeta:
    """A container as its runtime describes it."""

    container_id: str
    name: str
    image: str  # repository[:tag], as the container was created from ("" when the runtime cannot say)
    image_digest: str = ""  # sha256:... of the image's registry manifest, when the runtime knows one
    pod: str = ""
    namespace: str = ""
    pod_uid: str = ""
    runtime: str = ""  # containerd | cri-o | docker | podman
    started_at: float | None = None  # seconds since the epoch, when the runtime says
    sandbox: bool = False  # a pod's sandbox (pause) container: infrastructure, not a workload
    workload: str = ""  # the pod's Kubernetes workload, "deployment/web" (workload.py)


class Runtime(Protocol):
    """A container runtime's API, read-only."""

    #: containerd | cri-o | docker | podman
    name: str
    #: the socket path
    endpoint: str

    def serves(self, hint: str) -> bool:
        """Whether containers of a cgroup layout's runtime hint (``layouts.CgroupMatch.runtime``) are this
        runtime's to describe."""
        ...

    def inspect(self, container_id: str) -> ContainerMeta | None:
        """The container's metadata; None when this runtime does not know it.  Raises :class:`RuntimeFault`."""
        ...

    def close(self) -> None: ...


def is_image_id(ref: str) -> bool:
    """An image id rather than a name (``sha256:<hex>`` or bare hex).

    >>> is_image_id("sha256:" + "a" * 64), is_image_id("nginx:1.25"), is_image_id("b" * 64)
    (True, False, True)
    """
    return bool(_HEX_ID.match(ref))


def digest_of(repo_digests: list[str] | tuple[str, ...], image: str = "") -> str:
    """The ``sha256:...`` digest of ``image``'s repository among ``repo@digest`` references (else the first).

    >>> digest_of(["a/b@sha256:11", "c/d@sha256:22"], "c/d:1")
    'sha256:22'
    """
    repo = image.rsplit(":", 1)[0] if image.rfind(":") > image.rfind("/") else image
    for ref in repo_digests:
        r, _, d = ref.partition("@")
        if r == repo and d:
            return d
    return next((ref.partition("@")[2] for ref in repo_digests if "@" in ref), "")


def parse_time(text: str | None) -> float | None:
    """RFC 3339 with up to nanoseconds (what Docker and podman write) -> seconds since the epoch; None for
    empty and the zero time.

    >>> parse_time("2024-05-01T10:00:00.123456789Z")
    1714557600.123456
    >>> parse_time("0001-01-01T00:00:00Z") is None
    True
    """
    if not text or text.startswith("0001-01-01"):
        return None
    try:
        t = datetime.fromisoformat(text)  # (Python 3.11 reads "Z" and nanoseconds, truncated to microseconds)
    except ValueError:
        return None
    return t.timestamp() if t.tzinfo is not None else None
