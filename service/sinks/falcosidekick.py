"""Anomaly events out in Falco's own alert format, for Falcosidekick (or any webhook that takes Falco alerts).

Each new anomaly (and one whose severity a Falco hit raised later) becomes one POST shaped like a Falco
``http_output`` alert, with Falco's field names plus ``baseliner.*`` fields (:func:`to_falco`); count updates
are not sent.  Posting runs on a worker thread with a bounded queue, so a slow webhook never holds up scoring;
what does not fit is dropped and counted.  See ``docs/stack.md`` ("Anomalies out to Falcosidekick").
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from baseliner.service.falco import parse_time
from baseliner.service.sinks.events import SCHEMA
from baseliner.service.sinks.metrics import NAMESPACE
from cachetools import LRUCache
from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger(__name__)

#: Anomaly severity -> Falco priority.
PRIORITY = {"critical": "Critical", "high": "Error", "medium": "Warning", "low": "Notice", "": "Informational"}
_SEVERITY_RANK = {"": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
_RETRIES = (0.5, 1.0, 2.0)
SENT_REMEMBERED = 10_000  # event ids whose sent severity is remembered (least recently sent forgotten first)
_STOP = object()


def to_falco(event: dict[str, Any]) -> dict[str, Any]:
    """A Baseliner anomaly event -> a Falco-format alert.

    >>> e = {"@timestamp": "2026-01-02T03:04:05.000Z", "node": "n1", "severity": "high", "kinds": ["novel_executable"],
    ...      "container": {"id": "3ad7b26ded6d", "name": "web"}, "image": {"key": "nginx:1", "repository": "nginx",
    ...      "tag": "1", "digest": ""}, "pod": "web-0", "namespace": "shop", "score": 9.5, "threshold": 2.0,
    ...      "novel": [{"kind": "executable", "value": "/bin/sh"}], "explanation": [], "event_id": "ab", "count": 1}
    >>> a = to_falco(e)
    >>> a["rule"], a["priority"], a["output_fields"]["container.image.repository"], a["output_fields"]["evt.time"]
    ('Baseliner anomaly (novel_executable)', 'Error', 'nginx', 1767323045000000000)
    """
    kinds = [str(k) for k in event.get("kinds") or []]
    novel = [f"new {n.get('kind', '').replace('_', ' ')} {n.get('value', '')}" for n in event.get("novel") or []]
    explanation = [str(d.get("text", "")) for d in event.get("explanation") or []]
    ts = str(event.get("@timestamp") or event.get("last_seen") or "")
    try:
        t = parse_time(ts)
    except ValueError:
        t = time.time()
    return {
        "output": _output_line(event, kinds, "; ".join([*novel, *explanation[:3]])),
        "priority": PRIORITY.get(str(event.get("severity") or ""), "Warning"),
        "rule": f"Baseliner anomaly ({', '.join(kinds) or 'unknown'})",
        "time": ts,
        "source": "baseliner",
        "hostname": event.get("node", ""),
        "tags": ["baseliner", "anomaly", *kinds],
        "output_fields": _output_fields(event, t, kinds, novel, explanation),
    }


def _output_line(event: dict[str, Any], kinds: list[str], what: str) -> str:
    container = event.get("container") or {}
    image = event.get("image") or {}
    return (
        f"Baseliner anomaly ({', '.join(kinds) or 'unknown'}) in container "
        f"{container.get('name') or container.get('id')}"
        f" (image={image.get('key', '')} pod={event.get('pod', '')} ns={event.get('namespace', '')}"
        f" node={event.get('node', '')}) score={_num(event.get('score'))} threshold={_num(event.get('threshold'))}"
        + (f": {what}" if what else "")
    )


def _output_fields(event: dict[str, Any], t: float, kinds: list[str], novel: list[str],
                   explanation: list[str]) -> dict[str, Any]:
    """Falco's field names for the container, pod and time, ``baseliner.*`` for the finding."""
    container = event.get("container") or {}
    image = event.get("image") or {}
    fields: dict[str, Any] = {
        "container.id": container.get("id", ""),
        "container.name": container.get("name", ""),
        "container.image.repository": image.get("repository", ""),
        "container.image.tag": image.get("tag", ""),
        "container.image.digest": image.get("digest", ""),
        "k8s.pod.name": event.get("pod", ""),
        "k8s.ns.name": event.get("namespace", ""),
        "evt.time": int(round(t * 1e9)),
        "baseliner.event_id": event.get("event_id", ""),
        "baseliner.image_key": image.get("key", ""),
        "baseliner.score": event.get("score"),
        "baseliner.threshold": event.get("threshold"),
        "baseliner.severity": str(event.get("severity") or ""),
        "baseliner.kinds": ",".join(kinds),
        "baseliner.novel": novel,
        "baseliner.explanation": explanation,
        "baseliner.count": event.get("count", 1),
    }
    falco = event.get("falco")
    if isinstance(falco, dict):
        fields["baseliner.falco_rules"] = list(falco.get("rules") or [])
        fields["baseliner.severity_model"] = event.get("severity_model", "")
    return fields


def _num(x: Any) -> str:
    return f"{x:.3g}" if isinstance(x, int | float) else "n/a"


class FalcosidekickSink:
    """Posts anomaly events to ``url`` (Falcosidekick's root endpoint takes Falco alerts) from a worker thread."""

    def __init__(
        self,
        url: str,
        registry: CollectorRegistry | None = None,
        timeout: float = 5.0,
        queue_size: int = 1000,
        retries: tuple[float, ...] = _RETRIES,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.retries = retries
        self._q: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._sent_severity: LRUCache[str, int] = LRUCache(SENT_REMEMBERED)  # event id -> severity rank sent
        self.sent = Counter("falcosidekick_events_sent", "Anomaly events posted to Falcosidekick",
                            namespace=NAMESPACE, registry=registry)
        self.failed = Counter("falcosidekick_events_failed", "Anomaly events not taken (after retries)",
                              namespace=NAMESPACE, registry=registry)
        self.dropped = Counter("falcosidekick_events_dropped", "Anomaly events dropped: send queue full",
                               namespace=NAMESPACE, registry=registry)
        self._thread = threading.Thread(target=self._run, name="falcosidekick", daemon=True)
        self._thread.start()

    def emit(self, event: dict[str, Any]) -> None:
        if event.get("schema") != SCHEMA:
            return  # Falco's own alerts (baseliner.falco/v1) must not go back to Falcosidekick
        eid = str(event.get("event_id", ""))
        rank = _SEVERITY_RANK.get(str(event.get("severity") or ""), 0)
        before = self._sent_severity.get(eid)
        if before is not None and rank <= before:
            return  # a count update: nothing new for downstream
        self._sent_severity[eid] = rank
        try:
            self._q.put_nowait(to_falco(event))
        except queue.Full:
            self.dropped.inc()

    def flush(self) -> None:
        pass  # the worker sends as soon as it can; close() waits for it

    def close(self, wait: float = 10.0) -> None:
        try:
            self._q.put(_STOP, timeout=wait)
        except queue.Full:
            pass
        self._thread.join(wait)

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is _STOP:
                return
            self._post(item)

    def _post(self, alert: dict[str, Any]) -> None:
        body = json.dumps(alert, separators=(",", ":"), allow_nan=False, default=str).encode()
        for attempt, pause in enumerate((0.0, *self.retries)):
            if pause:
                time.sleep(pause)
            req = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "baseliner"})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    resp.read()
                self.sent.inc()
                return
            except urllib.error.HTTPError as e:
                if 400 <= e.code < 500:  # the receiver refuses this alert: retrying will not help
                    log.warning("Falcosidekick refused an event: HTTP %d", e.code)
                    break
                log.debug("Falcosidekick post failed (attempt %d): %s", attempt + 1, e)
            except (OSError, ValueError) as e:
                log.debug("Falcosidekick post failed (attempt %d): %s", attempt + 1, e)
        log.warning("could not post an anomaly event to %s", self.url)
        self.failed.inc()
