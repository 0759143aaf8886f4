"""A Kubernetes pod's workload (``deployment/web``, ``statefulset/db``, ``daemonset/agent``, ``cronjob/report``).

The container runtime does not know a pod's owner references (the kubelet does not pass them through CRI),
but it knows the pod's labels (``PodSandboxStatus.labels`` are the pod's own) and its name, and the
controllers that make pods leave their mark on both.  The rule, in order:

1. ``pod-template-hash=H`` (set by a ReplicaSet of a Deployment) and a name ``W-H-xxxxx``: ``deployment/W``;
2. ``statefulset.kubernetes.io/pod-name`` and a name ``W-N`` (N a number): ``statefulset/W``;
3. ``controller-revision-hash`` without the StatefulSet label (a DaemonSet's pods) and a name ``W-xxxxx``:
   ``daemonset/W``;
4. ``batch.kubernetes.io/job-name`` (or ``job-name``) ``J-T`` with T a number (the scheduled time a CronJob
   appends): ``cronjob/J``; a Job of its own has no lineage (its name is new every run);
5. no such label (Docker's and podman's Kubernetes containers carry only the pod's name): the name alone,
   with Kubernetes' generated suffixes, which use the alphabet ``bcdfghjklmnpqrstvwxz2456789`` (no vowels,
   no 0, 1, 3): ``W-HASH-xxxxx`` (HASH 6 to 10 of them) is ``deployment/W``, ``W-N`` is ``statefulset/W``,
   ``W-xxxxx`` is ``daemonset/W``.

Anything else, and any pod outside Kubernetes (no namespace), has no workload: ``""``.

>>> workload_of("web-7c9f8d6b5-x2x4k", "shop", {"pod-template-hash": "7c9f8d6b5"})
'deployment/web'
>>> workload_of("db-0", "shop", {"statefulset.kubernetes.io/pod-name": "db-0", "controller-revision-hash": "db-5d"})
'statefulset/db'
>>> workload_of("node-exporter-x7k2p", "monitoring", {"controller-revision-hash": "6b7c"})
'daemonset/node-exporter'
>>> workload_of("report-28912345-wq7zx", "batch", {"batch.kubernetes.io/job-name": "report-28912345"})
'cronjob/report'
>>> workload_of("api-server-5d8f9c7b6d-q2w9z", "shop"), workload_of("redis-2", "shop")
('deployment/api-server', 'statefulset/redis')
>>> workload_of("web", ""), workload_of("migrate-once", "shop")
('', '')
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_SAFE = "[bcdfghjklmnpqrstvwxz2456789]"  # k8s.io/apimachinery's rand.SafeEncodeString alphabet
_DEPLOYMENT = re.compile(rf"^(?P<w>.+)-{_SAFE}{{6,10}}-{_SAFE}{{5}}$")
_ORDINAL = re.compile(r"^(?P<w>.+)-\d+$")
_SUFFIX = re.compile(rf"^(?P<w>.+)-{_SAFE}{{5}}$")
_ANY_SUFFIX = re.compile(r"^(?P<w>.+)-[a-z0-9]{5}$")
_JOB_LABELS = ("batch.kubernetes.io/job-name", "job-name")


def workload_of(pod: str, namespace: str, labels: Mapping[str, str] | None = None) -> str:
    """``kind/name`` of the workload that made pod ``pod`` (see the module docstring), or ``""``."""
    if not pod or not namespace:
        return ""
    labels = labels or {}
    by_label = _from_labels(pod, labels)
    if by_label is not None:
        return by_label
    for rx, kind in ((_DEPLOYMENT, "deployment"), (_ORDINAL, "statefulset"), (_SUFFIX, "daemonset")):
        m = rx.match(pod)
        if m:
            return f"{kind}/{m['w']}"
    return ""


def _from_labels(pod: str, labels: Mapping[str, str]) -> str | None:
    """The workload the controller labels name; ``None`` when the pod carries none of them."""
    template = labels.get("pod-template-hash")
    if template:
        suffix = f"-{template}-"
        cut = pod.rfind(suffix)
        return f"deployment/{pod[:cut]}" if cut > 0 and len(pod) - cut - len(suffix) == 5 else ""
    if "statefulset.kubernetes.io/pod-name" in labels:
        m = _ORDINAL.match(pod)
        return f"statefulset/{m['w']}" if m else ""
    if labels.get("controller-revision-hash"):
        m = _ANY_SUFFIX.match(pod)
        return f"daemonset/{m['w']}" if m else ""
    job = next((labels[k] for k in _JOB_LABELS if labels.get(k)), "")
    if job:
        m = _ORDINAL.match(job)
        return f"cronjob/{m['w']}" if m else ""
    return None
