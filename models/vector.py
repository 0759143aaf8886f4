"""The domain form of one container's behaviour over one time window.

This is what the sensor produces and what the models consume.  It is free of protobuf: the gRPC
edge (``service/serde.py``, ``sensor/transport.py``) translates to and from the wire format.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Bounds on the lists a vector carries; the sensor truncates and the service rejects beyond them.
MAX_EXECUTABLES = 64
MAX_ENDPOINTS = 64
MAX_SYSCALL_NAMES = 512


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a window belongs to."""

    node: str
    container_id: str
    image_repository: str
    image_tag: str = ""
    image_digest: str = ""
    container_name: str = ""
    pod: str = ""
    namespace: str = ""
    workload: str = ""  # the pod's Kubernetes workload, "deployment/web" (sensor/attribution/workload.py)
    # The hash, computed once: an identity is a dict key several times per window on the service's path.
    _hash: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.node, self.container_id, self.image_repository,
                                                self.image_tag, self.image_digest, self.container_name, self.pod,
                                                self.namespace, self.workload)))

    def __hash__(self) -> int:
        return self._hash

    @property
    def image(self) -> str:
        """``repository:tag`` (or the bare repository when there is no tag)."""
        return f"{self.image_repository}:{self.image_tag}" if self.image_tag else self.image_repository


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A remote network endpoint seen in the window."""

    address: str
    port: int
    protocol: str = "tcp"  # "tcp" | "udp"
    outbound: bool = True


@dataclass(slots=True)
class FeatureVector:
    """Counts for one container over ``[window_start, window_start + window_seconds)``.

    ``window_start`` is event time in seconds since the epoch (the sensor's clock), never the
    service's wall clock.  ``ngrams`` maps global n-gram bucket indices (``baseliner.models.ngrams``) to counts.
    """

    identity: Identity
    window_start: float
    window_seconds: float
    syscalls: dict[str, int] = field(default_factory=dict)
    ngrams: dict[int, int] = field(default_factory=dict)
    # processes
    execs: int = 0
    forks: int = 0
    exits: int = 0
    executables: list[str] = field(default_factory=list)
    # network
    connects: int = 0
    connects_failed: int = 0
    accepts: int = 0
    listens: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    packets_sent: int = 0
    packets_received: int = 0
    remote_addresses: int = 0
    remote_ports: int = 0
    dns_queries: int = 0
    endpoints: list[Endpoint] = field(default_factory=list)
    # files
    write_opens: int = 0
    sensitive_writes: int = 0
    unresolved_writes: int = 0  # write opens whose directory the sensor cannot place (docs/security.md)
    sensitive_paths: list[str] = field(default_factory=list)
    # sensor health
    events_lost: int = 0
    complete: bool = True
    container_exited: bool = False
    seconds_since_start: float = -1.0  # container age at window start; < 0 when unknown

    @property
    def window_end(self) -> float:
        return self.window_start + self.window_seconds
