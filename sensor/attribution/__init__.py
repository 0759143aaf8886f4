"""Attribution: cgroup id -> cgroup path -> container id -> image, container name, pod and namespace.

Found through the runtime a node has, with no configuration for the common cases:

* ``cgroups.py``: cgroup id <-> path in the cgroup v2 hierarchy;
* ``layouts.py``: path -> container id, pod UID and runtime, for every layout runtimes use (kubepods with
  the systemd and cgroupfs drivers, Docker, podman, CRI-O, containerd namespaces);
* ``runtime.py``: what a runtime client gives (:class:`ContainerMeta`) and its faults; one module per
  runtime: ``cri.py`` (containerd and CRI-O, gRPC), ``docker.py`` (Docker Engine API), ``podman.py``
  (libpod API);
* ``detect.py``: which runtime sockets exist, and each one's health (back-off, logs);
* ``rules.py``: the operator's cgroup-path rules, for what no runtime describes;
* ``resolver.py``: the order of all this per cgroup, the bounded caches, pending containers;
* ``holdback.py``: windows of pending containers held back until their metadata is known;
* ``metrics.py``: lookups, runtime health, cache sizes, held and dropped windows.
"""

from baseliner.sensor.attribution.cgroups import CgroupIndex, find_cgroup2_mount
from baseliner.sensor.attribution.detect import DEFAULT_SOCKETS, RuntimeSet, RuntimeSocket
from baseliner.sensor.attribution.holdback import HoldBack
from baseliner.sensor.attribution.layouts import CgroupMatch, parse_cgroup_path
from baseliner.sensor.attribution.resolver import AttributionConfig, ContainerInfo, Resolution, Resolver
from baseliner.sensor.attribution.rules import ImageRule, split_image
from baseliner.sensor.attribution.runtime import ContainerMeta, RuntimeBadAnswer, RuntimeFault, RuntimeUnavailable

__all__ = [
    "DEFAULT_SOCKETS", "AttributionConfig", "CgroupIndex", "CgroupMatch", "ContainerInfo", "ContainerMeta",
    "HoldBack", "ImageRule", "Resolution", "Resolver", "RuntimeBadAnswer", "RuntimeFault", "RuntimeSet",
    "RuntimeSocket", "RuntimeUnavailable", "find_cgroup2_mount", "parse_cgroup_path", "split_image",
]
