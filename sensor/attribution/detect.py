"""Which runtime sockets a node has, found without configuration, and each one's health.

:data:`DEFAULT_SOCKETS` are the places containerd (also k3s's), CRI-O, Docker and podman put their API
sockets.  :class:`RuntimeSet` opens a client for each socket that exists (CRI sockets must answer
``Version``), looks again for missing ones every :attr:`RuntimeSet.redetect_seconds`, and keeps each
runtime's health: a runtime that fails (socket gone, no answer in time, garbage) is not asked again until a
back-off (0.5 s doubling to 30 s) has passed; the change is logged once each way and shown in the metrics.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from baseliner.sensor.attribution.cri import CriRuntime
from baseliner.sensor.attribution.docker import DockerRuntime
from baseliner.sensor.attribution.podman import PodmanRuntime
from baseliner.sensor.attribution.runtime import Runtime, RuntimeFault

log = logging.getLogger(__name__)

KINDS = ("cri", "docker", "podman")


@dataclass(frozen=True)
class RuntimeSocket:
    """``kind`` (cri | docker | podman) and the socket's path."""

    kind: str
    path: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"runtime kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if not self.path.startswith("/"):
            raise ValueError(f"runtime socket must be an absolute path, not {self.path!r}")

    @classmethod
    def parse(cls, text: str) -> RuntimeSocket:
        """``KIND=PATH`` (the CLI form), e.g. ``cri=/run/containerd/containerd.sock``."""
        kind, sep, path = text.partition("=")
        if not sep:
            raise ValueError(f"expected KIND=PATH with KIND one of {', '.join(KINDS)}, got {text!r}")
        return cls(kind.strip(), path.strip())


DEFAULT_SOCKETS: tuple[RuntimeSocket, ...] = (
    RuntimeSocket("cri", "/run/containerd/containerd.sock"),
    RuntimeSocket("cri", "/run/k3s/containerd/containerd.sock"),
    RuntimeSocket("cri", "/run/crio/crio.sock"),
    RuntimeSocket("docker", "/var/run/docker.sock"),
    RuntimeSocket("podman", "/run/podman/podman.sock"),
)

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0


class Endpoint:
    """One runtime client and its health."""

    def __init__(self, socket: RuntimeSocket, client: Runtime, clock: Callable[[], float]) -> None:
        self.socket = socket
        self.client = client
        self.clock = clock
        self.up = True
        self.failures = 0
        self.retry_at = 0.0

    @property
    def name(self) -> str:
        return self.client.name

    def allowed(self) -> bool:
        return self.up or self.clock() >= self.retry_at

    def succeeded(self) -> None:
        if not self.up:
            log.warning("runtime %s at %s answers again: attributing its containers", self.name, self.socket.path)
        self.up, self.failures = True, 0

    def failed(self, err: RuntimeFault) -> None:
        self.failures += 1
        self.retry_at = self.clock() + min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self.failures - 1))
        if self.up:
            log.warning("runtime %s at %s does not answer (%s: %s): windows of its new containers are held back, "
                        "then dropped unless a --cgroup-image rule describes them; retrying with back-off",
                        self.name, self.socket.path, err.kind, err)
        self.up = False


def open_client(socket: RuntimeSocket, timeout: float) -> Runtime:
    """A client for the socket; CRI ones are asked their name (raises RuntimeFault if they do not answer)."""
    if socket.kind == "docker":
        return DockerRuntime(socket.path, timeout)
    if socket.kind == "podman":
        return PodmanRuntime(socket.path, timeout)
    client = CriRuntime(socket.path, timeout)
    try:
        return client.connect()
    except RuntimeFault:
        client.close()
        raise


class RuntimeSet:
    """The runtimes attribution asks, configured (``sockets``) or detected (``sockets=None``)."""

    def __init__(self, sockets: tuple[RuntimeSocket, ...] | None = None, timeout: float = 1.0,
                 redetect_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.detect = sockets is None
        self.candidates = DEFAULT_SOCKETS if sockets is None else sockets
        self.timeout = timeout
        self.redetect_seconds = redetect_seconds
        self.clock = clock
        self.endpoints: list[Endpoint] = []
        self._pending: dict[RuntimeSocket, str] = {}  # sockets without a client yet -> why (logged once)
        self._next_look = float("-inf")
        self.look()

    def look(self) -> None:
        """Open clients for candidate sockets that have none yet (at most once per ``redetect_seconds``)."""
        now = self.clock()
        if now < self._next_look:
            return
        self._next_look = now + self.redetect_seconds
        have = {os.path.realpath(e.socket.path) for e in self.endpoints}
        for sock in self.candidates:
            real = os.path.realpath(sock.path)
            if real in have:
                continue
            if not os.path.exists(sock.path):
                self._note(sock, "no socket")
                continue
            try:
                client = open_client(sock, self.timeout)
            except RuntimeFault as e:
                self._note(sock, f"does not answer: {e}")
                continue
            self.endpoints.append(Endpoint(sock, client, self.clock))
            self._pending.pop(sock, None)
            have.add(real)
            log.info("attribution through %s at %s", client.name, sock.path)

    def _note(self, sock: RuntimeSocket, why: str) -> None:
        if self._pending.get(sock) != why:
            self._pending[sock] = why
            level = logging.DEBUG if self.detect and why == "no socket" else logging.WARNING
            log.log(level, "runtime socket %s (%s): %s", sock.path, sock.kind, why)

    def missing(self) -> list[RuntimeSocket]:
        """Configured or detected sockets without a client (absent, or not answering CRI)."""
        return list(self._pending)

    def for_hint(self, hint: str) -> list[Endpoint]:
        """The runtimes that describe containers of a layout's runtime hint."""
        found = [e for e in self.endpoints if e.client.serves(hint)]
        if not found:
            self.look()
            found = [e for e in self.endpoints if e.client.serves(hint)]
        return found

    def close(self) -> None:
        for e in self.endpoints:
            e.client.close()
