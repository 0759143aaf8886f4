"""Cgroup path -> container id, pod UID and the runtime that made it, for every layout runtimes use.

Pure (no I/O): :func:`parse_cgroup_path` reads a path relative to the cgroup v2 mount.  Layouts, first match
wins:

* **Kubernetes, systemd driver**: ``/kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid>.slice/
  <prefix>-<id>.scope`` (no ``<qos>`` level for Guaranteed pods; the UID's dashes are underscores), the
  prefix naming the runtime: ``cri-containerd``, ``crio`` (``crio-conmon`` is CRI-O's monitor), ``docker``
  (cri-dockerd);
* **Kubernetes, cgroupfs driver**: ``/kubepods/<qos>/pod<uid>/<id>`` (``/kubepods/pod<uid>/<id>`` for
  Guaranteed pods; CRI-O writes ``crio-<id>``), any CRI runtime;
* **Docker**: ``/system.slice/docker-<id>.scope`` (systemd driver) and ``/docker/<id>`` (cgroupfs);
* **Podman**: ``/machine.slice/libpod-<id>.scope`` (systemd) and ``/libpod_parent/libpod-<id>`` (cgroupfs);
  ``libpod-conmon-<id>`` is podman's monitor;
* **CRI-O outside kubepods**: ``crio-<id>.scope``;
* **containerd namespaces** (``ctr``, ``nerdctl``): ``/<namespace>/<id>`` (cgroupfs) and
  ``nerdctl-<id>.scope`` (systemd).

The match may sit below other cgroups (nested slices, a kubelet in a container) and above sub-cgroups the
container makes for itself (``/docker/<id>/init.scope``).  A monitor process (conmon) is the runtime's, not
the container's: it is reported with ``monitor=True`` so that its syscalls stay out of the container's
baseline.

>>> m = parse_cgroup_path("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0e4f5c1a_1b2c_4d5e_"
...                       "8f90_0123456789ab.slice/cri-containerd-" + "a" * 64 + ".scope")
>>> m.layout, m.runtime, m.container_id == "a" * 64, m.pod_uid, m.qos
('kubepods-systemd', 'containerd', True, '0e4f5c1a-1b2c-4d5e-8f90-0123456789ab', 'burstable')
>>> parse_cgroup_path("/kubepods/besteffort/pod0e4f5c1a-1b2c-4d5e-8f90-0123456789ab/" + "b" * 64).runtime
'cri'
>>> parse_cgroup_path("/kubepods/pod0e4f5c1a-1b2c-4d5e-8f90-0123456789ab/" + "b" * 64).qos
'guaranteed'
>>> parse_cgroup_path("/docker/" + "c" * 64 + "/init.scope").layout
'docker'
>>> parse_cgroup_path("/libpod_parent/libpod-conmon-" + "d" * 64).monitor
True
>>> parse_cgroup_path("/system.slice/cron.service") is None
True
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ID = r"(?P<id>[0-9a-f]{64})"
_UID = r"(?P<uid>[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})"
_QOS_SYSTEMD = r"(?:kubepods-(?P<qos>burstable|besteffort)\.slice/)?kubepods(?:-(?:burstable|besteffort))?-pod"
_END = r"(?:/|$)"

#: Kubernetes runtime prefixes (systemd scopes and CRI-O's cgroupfs names) -> runtime
_KUBE_PREFIX = {"cri-containerd": "containerd", "crio": "crio", "crio-conmon": "crio", "docker": "docker"}

#: (layout, runtime hint, pattern) in the order they are tried.  A runtime hint of "cri" means any CRI runtime.
LAYOUTS: tuple[tuple[str, str, re.Pattern[str]], ...] = (
    ("kubepods-systemd", "", re.compile(
        rf"(?:^|/)kubepods\.slice/{_QOS_SYSTEMD}{_UID}\.slice/(?P<prefix>cri-containerd|crio-conmon|crio|docker)"
        rf"-{_ID}\.scope{_END}")),
    ("kubepods-cgroupfs", "cri", re.compile(
        rf"(?:^|/)kubepods/(?:(?P<qos>burstable|besteffort)/)?pod{_UID}/(?:(?P<prefix>crio-conmon|crio|docker)-)?"
        rf"{_ID}(?:\.scope)?{_END}")),
    ("docker", "docker", re.compile(rf"(?:^|/)docker-{_ID}\.scope{_END}")),
    ("docker", "docker", re.compile(rf"(?:^|/)docker/{_ID}{_END}")),
    ("podman", "podman", re.compile(rf"(?:^|/)libpod-(?P<prefix>conmon-)?{_ID}(?:\.scope)?{_END}")),
    ("crio", "crio", re.compile(rf"(?:^|/)(?P<prefix>crio-conmon|crio)-{_ID}(?:\.scope)?{_END}")),
    ("containerd", "containerd", re.compile(rf"(?:^|/)nerdctl-{_ID}\.scope{_END}")),
    ("containerd", "containerd", re.compile(rf"^/(?P<ns>[a-zA-Z0-9][a-zA-Z0-9._-]*)/{_ID}{_END}")),
)


@dataclass(frozen=True, slots=True)
class CgroupMatch:
    """What a cgroup path says about its container."""

    layout: str  # kubepods-systemd | kubepods-cgroupfs | docker | podman | crio | containerd
    runtime: str  # containerd | crio | docker | podman, or "cri" (any CRI runtime: the kubepods cgroupfs layout)
    container_id: str
    pod_uid: str = ""
    qos: str = ""  # guaranteed | burstable | besteffort (kubepods layouts)
    monitor: bool = False  # the runtime's monitor (conmon) for that container, not the container itself


def parse_cgroup_path(path: str) -> CgroupMatch | None:
    """The container a cgroup path belongs to, or None when it matches no layout (the host, or a rule's)."""
    for layout, runtime, rx in LAYOUTS:
        m = rx.search(path)
        if m is None:
            continue
        groups = m.groupdict()
        prefix = groups.get("prefix") or ""
        if layout.startswith("kubepods"):
            runtime = _KUBE_PREFIX.get(prefix, runtime)
        uid = (groups.get("uid") or "").replace("_", "-")
        qos = groups.get("qos") or ("guaranteed" if uid else "")
        return CgroupMatch(layout=layout, runtime=runtime, container_id=groups["id"], pod_uid=uid, qos=qos,
                           monitor="conmon" in prefix)
    return None
