"""Falco, complemented: parse Falco alerts, count them, and correlate them with anomalies.

:func:`parse_alert` turns one ``http_output`` JSON body into a :class:`FalcoAlert` or raises
:class:`FalcoPayloadError` with a reason code.  :class:`FalcoCorrelator` is an event sink in front of the
service's sinks: by container and event time it escalates anomalies that coincide with a rule hit, tells
whether an alert's behaviour is already in the image's baseline, and writes every alert as a
``baseliner.falco/v1`` event.  The rules are in ``docs/stack.md`` ("Falco integration").  Everything runs on
the service's event loop thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from baseliner.service.config import FalcoConfig
from baseliner.service.sinks.events import SCHEMA as ANOMALY_SCHEMA
from baseliner.service.sinks.events import EventSink, epoch, iso8601
from cachetools import LRUCache
from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger(__name__)

FALCO_SCHEMA = "baseliner.falco/v1"

#: Falco's priorities, most severe first (label values are these, lower case).
PRIORITIES: tuple[str, ...] = (
    "emergency", "alert", "critical", "error", "warning", "notice", "informational", "debug",
)
_PRIORITY_ALIASES = {"info": "informational", "warn": "warning", "err": "error", "crit": "critical",
                     "emerg": "emergency"}
#: Anomaly severities in increasing order (``baseliner.models.baseline.SEVERITIES`` without the empty one).
SEVERITY_ORDER: tuple[str, ...] = ("low", "medium", "high", "critical")
#: Correlation outcomes (label values of ``baseliner_falco_correlations_total``).
OUTCOMES: tuple[str, ...] = ("escalated", "in_baseline", "novel", "not_comparable", "learning", "no_baseline")
#: Reason codes of rejected payloads (label values of ``baseliner_falco_alerts_rejected_total``).
REJECT_REASONS: tuple[str, ...] = (
    "too_large", "not_json", "not_object", "missing_field", "bad_field", "bad_time", "bad_priority",
    "no_container", "not_container", "timeout", "unauthorized",
)
_HEX_ID = re.compile(r"^[0-9a-fA-F]{12,64}$")
_CONTAINER_ID = re.compile(r"^[\w.:@/-]{1,128}$")
_MAX_FIELD_CHARS = 4096
_MAX_OUTPUT_FIELDS = 256


class FalcoPayloadError(ValueError):
    """A Falco payload that cannot be taken; ``reason`` is one of :data:`REJECT_REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class FalcoAlert:
    rule: str
    priority: str  # one of PRIORITIES
    time: float  # event time, epoch seconds
    output: str
    container_id: str  # as matched: see container_ref
    image_repository: str
    image_tag: str = ""
    container_name: str = ""
    pod: str = ""
    namespace: str = ""
    node: str = ""
    source: str = ""
    tags: tuple[str, ...] = ()
    fields: Mapping[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# Parsing


def parse_time(value: Any) -> float:
    """Falco's ``time`` (RFC 3339, nanoseconds) or an epoch number (s, or ns when huge) -> epoch seconds.

    >>> parse_time("2026-01-02T03:04:05.123456789Z")
    1767323045.123456
    >>> parse_time(1767323045123456789)
    1767323045.1234567
    """
    if isinstance(value, bool):
        raise ValueError("a boolean is not a time")
    if isinstance(value, int | float):
        t = float(value)
        if t > 1e14:  # nanoseconds (Falco's evt.time)
            t /= 1e9
        if not math.isfinite(t) or t < 0:
            raise ValueError(f"{value!r} is not a time")
        return t
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a time")
    try:
        dt = datetime.fromisoformat(value.strip())  # ("Z" and nanoseconds, truncated to microseconds)
    except ValueError:
        raise ValueError(f"{value[:64]!r} is not an RFC 3339 time") from None
    return (dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)).timestamp()  # no offset: UTC


def parse_priority(value: Any) -> str:
    if not isinstance(value, str):
        raise FalcoPayloadError("bad_priority", "priority must be a string")
    p = value.strip().lower()
    p = _PRIORITY_ALIASES.get(p, p)
    if p not in PRIORITIES:
        raise FalcoPayloadError("bad_priority", f"unknown priority {value[:32]!r} (Falco's: {', '.join(PRIORITIES)})")
    return p


def _str_field(fields: Mapping[str, Any], name: str) -> str:
    v = fields.get(name)
    if v is None:
        return ""
    if isinstance(v, dict | list):
        raise FalcoPayloadError("bad_field", f"output_fields[{name!r}] must be a scalar")
    s = str(v)
    if len(s) > _MAX_FIELD_CHARS:
        raise FalcoPayloadError("bad_field", f"output_fields[{name!r}] is longer than {_MAX_FIELD_CHARS} characters")
    return "" if s in ("<NA>", "N/A") else s


def parse_alert(body: bytes, max_bytes: int = 64 * 1024) -> FalcoAlert:
    """One Falco ``http_output`` body -> :class:`FalcoAlert` (or :class:`FalcoPayloadError`).

    >>> a = parse_alert(b'{"rule": "Terminal shell in container", "priority": "Notice", '
    ...                 b'"time": "2026-01-02T03:04:05.5Z", "output": "shell", "output_fields": '
    ...                 b'{"container.id": "3ad7b26ded6d", "container.image.repository": "nginx"}}')
    >>> a.rule, a.priority, a.container_id, a.image_repository
    ('Terminal shell in container', 'notice', '3ad7b26ded6d', 'nginx')
    >>> try:
    ...     parse_alert(b'{"rule": "x", "priority": "Notice", "time": 0, "output_fields": {}}')
    ... except FalcoPayloadError as e:
    ...     print(e)
    output_fields has no container.id: Baseliner correlates container alerts only
    """
    data = _alert_object(body, max_bytes)
    rule = data["rule"]
    if not isinstance(rule, str) or not rule.strip() or len(rule) > 512:
        raise FalcoPayloadError("bad_field", "rule must be a non-empty string of at most 512 characters")
    priority = parse_priority(data["priority"])
    try:
        t = parse_time(data["time"])
    except ValueError as e:
        raise FalcoPayloadError("bad_time", f"time: {e}") from None
    fields = _output_fields(data["output_fields"])
    cid, repo = _container(fields)
    output = data.get("output", "")
    tags = data.get("tags") or ()
    if not isinstance(output, str) or not isinstance(tags, list | tuple):
        raise FalcoPayloadError("bad_field", "output must be a string and tags a list")
    return FalcoAlert(
        rule=rule.strip(),
        priority=priority,
        time=t,
        output=output[:_MAX_FIELD_CHARS],
        container_id=container_ref(cid),
        image_repository=repo,
        image_tag=_str_field(fields, "container.image.tag"),
        container_name=_str_field(fields, "container.name"),
        pod=_str_field(fields, "k8s.pod.name"),
        namespace=_str_field(fields, "k8s.ns.name"),
        node=str(data.get("hostname") or "")[:256],
        source=str(data.get("source") or "")[:64],
        tags=tuple(str(x)[:128] for x in list(tags)[:64]),
        fields=fields,
    )


def _alert_object(body: bytes, max_bytes: int) -> dict[str, Any]:
    """The JSON object of a body, with the fields every Falco alert has."""
    if len(body) > max_bytes:
        raise FalcoPayloadError("too_large", f"payload of {len(body)} bytes exceeds {max_bytes}")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise FalcoPayloadError("not_json", f"payload is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise FalcoPayloadError("not_object", "payload must be a JSON object (one Falco alert)")
    for name in ("rule", "priority", "time", "output_fields"):
        if name not in data:
            raise FalcoPayloadError("missing_field", f"field {name!r} is missing (not a Falco http_output alert?)")
    return data


def _output_fields(fields: Any) -> dict[str, Any]:
    """``output_fields``: an object of at most 256 scalars or lists, strings of at most 4096 characters."""
    if not isinstance(fields, dict):
        raise FalcoPayloadError("bad_field", "output_fields must be an object")
    if len(fields) > _MAX_OUTPUT_FIELDS:
        raise FalcoPayloadError("bad_field", f"output_fields has more than {_MAX_OUTPUT_FIELDS} entries")
    for name, value in fields.items():
        if isinstance(value, str) and len(value) > _MAX_FIELD_CHARS:
            raise FalcoPayloadError("bad_field", f"output_fields[{str(name)[:64]!r}] is longer than "
                                    f"{_MAX_FIELD_CHARS} characters")
        if isinstance(value, dict):
            raise FalcoPayloadError("bad_field", f"output_fields[{str(name)[:64]!r}] must not be an object")
    return fields


def _container(fields: dict[str, Any]) -> tuple[str, str]:
    """The container id and image repository an alert is about (host events and others refused)."""
    cid = _str_field(fields, "container.id")
    if not cid:
        raise FalcoPayloadError("no_container", "output_fields has no container.id: Baseliner correlates container "
                                "alerts only")
    if cid == "host":
        raise FalcoPayloadError("not_container", "alert is about the host (container.id is 'host'), not a container")
    if not _CONTAINER_ID.match(cid):
        raise FalcoPayloadError("bad_field", f"container.id {cid[:80]!r} is not a container id")
    repo = _str_field(fields, "container.image.repository")
    if not repo:
        raise FalcoPayloadError("no_container", "output_fields has no container.image.repository")
    return cid, repo


def container_ref(cid: str) -> str:
    """How containers are matched: a hex id by its first 12 characters (Falco's short form), others as they are.

    >>> container_ref("3AD7B26DED6D4C0C9F1E2D3C4B5A69788796A5B4C3D2E1F00112233445566778"), container_ref("web-0")
    ('3ad7b26ded6d', 'web-0')
    """
    return cid[:12].lower() if _HEX_ID.match(cid) else cid


def normalize_repository(repo: str) -> str:
    """Falco prints the registry-qualified repository; sensors usually the short one.

    >>> normalize_repository("docker.io/library/nginx"), normalize_repository("ghcr.io/acme/api")
    ('nginx', 'ghcr.io/acme/api')
    """
    for prefix in ("docker.io/library/", "index.docker.io/library/", "registry-1.docker.io/library/", "docker.io/",
                   "index.docker.io/"):
        if repo.startswith(prefix):
            return repo[len(prefix):]
    return repo


def image_keys(alert: FalcoAlert) -> list[str]:
    """Candidate baseline keys for an alert's image (as ``baseliner.service.pipeline.image_key`` builds them)."""
    out: list[str] = []
    for repo in dict.fromkeys((normalize_repository(alert.image_repository), alert.image_repository)):
        if alert.image_tag:
            out.append(f"{repo}:{alert.image_tag}")
        digest = alert.fields.get("container.image.digest")
        if isinstance(digest, str) and digest and digest != "<NA>":
            out.append(f"{repo}@{digest}")
        out.append(repo)
    return out


def behaviour_items(alert: FalcoAlert, ephemeral_start: int = 32768) -> list[tuple[str, str]]:
    """The behaviour an alert is about, as ``(novelty kind, value)`` pairs the baseline can be asked about.

    >>> a = FalcoAlert("r", "notice", 0.0, "", "3ad7b26ded6d", "nginx", fields={
    ...     "proc.exepath": "/bin/sh", "evt.type": "connect", "fd.rport": 4444, "fd.l4proto": "tcp"})
    >>> behaviour_items(a)
    [('executable', '/bin/sh'), ('syscall', 'connect'), ('port', 'tcp/4444')]
    """
    f = alert.fields
    out: list[tuple[str, str]] = []
    exe = f.get("proc.exepath") or f.get("proc.exe")
    if isinstance(exe, str) and exe.startswith("/"):
        out.append(("executable", exe))
    evt = f.get("evt.type")
    if isinstance(evt, str) and evt and evt != "<NA>":
        out.append(("syscall", evt))
    rport = f.get("fd.rport")
    if rport not in (None, "", "<NA>"):
        try:
            port = int(str(rport))
        except ValueError:
            port = 0
        proto = str(f.get("fd.l4proto") or "tcp").lower()
        if 0 < port < ephemeral_start and proto in ("tcp", "udp"):
            out.append(("port", f"{proto}/{port}"))
    name = f.get("fd.name")
    if isinstance(name, str) and name.startswith("/") and isinstance(evt, str) and evt.startswith("open") \
            and "w" in str(f.get("evt.arg.flags") or f.get("evt.rawarg.flags") or "").lower():
        out.append(("sensitive_path", name))
    return out


# --------------------------------------------------------------------------------------------------
# Metrics


class FalcoMetrics:
    """``baseliner_falco_*`` metrics.  Labels: image, namespace, node (capped by the service's cappers),
    the closed sets priority / outcome / reason, and ``rule`` on one metric only (capped at ``max_rules``)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        image_label: Callable[[str], str] = str,
        namespace_label: Callable[[str], str] = str,
        node_label: Callable[[str], str] = str,
        max_rules: int = 200,
    ) -> None:
        from baseliner.service.sinks.metrics import NAMESPACE, CappedLabel

        self.image_label = image_label
        self.namespace_label = namespace_label
        self.node_label = node_label
        self.rule = CappedLabel(max_rules)
        self.alerts = Counter(
            "falco_alerts", "Falco alerts received, by the container's image, namespace, node and priority",
            ["image", "namespace", "node", "priority"], namespace=NAMESPACE, registry=registry,
        )
        self.rule_alerts = Counter(
            "falco_rule_alerts", "Falco alerts received by rule (rule names capped; overflow '__other__')",
            ["rule", "priority"], namespace=NAMESPACE, registry=registry,
        )
        self.rejected = Counter(
            "falco_alerts_rejected", "Falco payloads refused (4xx), by reason", ["reason"],
            namespace=NAMESPACE, registry=registry,
        )
        for r in REJECT_REASONS:
            self.rejected.labels(r)
        self.correlations = Counter(
            "falco_correlations",
            "Outcome of correlating Falco alerts with anomalies and baselines "
            "(escalated: anomaly severity raised; in_baseline: rule hit on learned behaviour)",
            ["image", "namespace", "outcome"], namespace=NAMESPACE, registry=registry,
        )


# --------------------------------------------------------------------------------------------------
# Correlation


def raise_severity(severity: str, priority: str) -> str:
    """One step up; straight to ``critical`` for Falco priorities Critical, Alert and Emergency.

    >>> raise_severity("medium", "warning"), raise_severity("low", "critical"), raise_severity("critical", "debug")
    ('high', 'critical', 'critical')
    """
    if PRIORITIES.index(priority) <= PRIORITIES.index("critical"):
        return "critical"
    i = SEVERITY_ORDER.index(severity) if severity in SEVERITY_ORDER else 0
    return SEVERITY_ORDER[min(i + 1, len(SEVERITY_ORDER) - 1)]


@dataclass(slots=True)
class _Anomaly:
    event_id: str
    start: float
    end: float
    event: dict[str, Any]  # the last version written
    falco: dict[str, Any] | None = None  # correlation block once escalated


@dataclass(slots=True)
class _Recent:
    alerts: deque[FalcoAlert]
    anomalies: deque[_Anomaly]


BaselineLookup = Callable[[FalcoAlert, str], Any]  # (alert, image key) -> ImageBaseline | None


class FalcoCorrelator:
    """An event sink in front of the real ones: enriches anomaly events, takes Falco alerts.

    ``downstream`` are the sinks that write events (JSON lines, Falcosidekick ...); ``lookup`` finds the
    baseline of an alert's container (``None`` when there is none).
    """

    def __init__(
        self,
        config: FalcoConfig,
        downstream: Sequence[EventSink],
        lookup: BaselineLookup,
        metrics: FalcoMetrics | None = None,
        image_key: Callable[[FalcoAlert], str] | None = None,
    ) -> None:
        self.config = config
        self.downstream = list(downstream)
        self.lookup = lookup
        self.metrics = metrics or FalcoMetrics(CollectorRegistry())  # (counted where nobody reads, without one)
        self.image_key = image_key or (lambda a: image_keys(a)[0])
        self._recent: LRUCache[str, _Recent] = LRUCache(config.max_containers)  # least recently seen go

    # -- EventSink ----------------------------------------------------------------------------------
    def emit(self, event: dict[str, Any]) -> None:
        if event.get("schema") == ANOMALY_SCHEMA:
            self._on_anomaly(event)
        self._forward(event)

    def flush(self) -> None:
        for s in self.downstream:
            s.flush()

    def close(self) -> None:
        for s in self.downstream:
            s.close()

    def _forward(self, event: dict[str, Any]) -> None:
        for s in self.downstream:
            try:
                s.emit(event)
            except Exception:
                log.exception("event sink %r failed", s)

    def _flush(self) -> None:
        for s in self.downstream:
            try:
                s.flush()
            except Exception:
                log.exception("event sink %r failed", s)

    # -- state --------------------------------------------------------------------------------------
    def _container(self, cid: str) -> _Recent:
        r = self._recent.get(cid)
        if r is None:
            n = self.config.per_container
            r = self._recent[cid] = _Recent(deque(maxlen=n), deque(maxlen=n))
        return r

    def _coincide(self, alert: FalcoAlert, a: _Anomaly) -> bool:
        w = self.config.correlation_window_seconds
        return a.start - w <= alert.time <= a.end + w

    # -- anomalies ----------------------------------------------------------------------------------
    def _on_anomaly(self, event: dict[str, Any]) -> None:
        cid = container_ref(str((event.get("container") or {}).get("id") or ""))
        if not cid:
            return
        eid = str(event.get("event_id", ""))
        start = epoch(event.get("first_seen"))
        end = epoch(event.get("last_seen"))
        if math.isnan(start) or math.isnan(end):
            return
        recent = self._container(cid)
        known = next((a for a in recent.anomalies if a.event_id == eid), None)
        if known is None:
            known = _Anomaly(eid, start, end, event)
            recent.anomalies.append(known)
        else:
            known.start, known.end = min(known.start, start), max(known.end, end)
        if known.falco is not None:  # already escalated: a count update keeps the raised severity
            self._escalate(known, event, ())
        else:
            hits = [al for al in recent.alerts if self._coincide(al, known)]
            if hits:
                self._escalate(known, event, hits)
        known.event = event

    def _escalate(self, a: _Anomaly, event: dict[str, Any], hits: Iterable[FalcoAlert]) -> bool:
        """Apply (or extend) the Falco block and raised severity to ``event``; True if anything changed."""
        hits = list(hits)
        block = a.falco
        first = block is None
        if block is None:
            block = a.falco = {"rules": [], "priority": "debug", "alerts": 0, "severity_model": event.get("severity")}
        changed = first
        for al in hits:
            block["alerts"] += 1
            if al.rule not in block["rules"]:
                block["rules"].append(al.rule)
                changed = True
            if PRIORITIES.index(al.priority) < PRIORITIES.index(block["priority"]):
                block["priority"] = al.priority
                changed = True
        model = block["severity_model"] or ""
        event["severity_model"] = model
        event["severity"] = raise_severity(model, block["priority"])
        event["falco"] = {"rules": list(block["rules"]), "priority": block["priority"], "alerts": block["alerts"]}
        if first:
            m = self.metrics
            image = str((event.get("image") or {}).get("key") or "")
            m.correlations.labels(m.image_label(image), m.namespace_label(str(event.get("namespace") or "")),
                                  "escalated").inc()
        return changed

    # -- alerts -------------------------------------------------------------------------------------
    def on_alert(self, alert: FalcoAlert) -> dict[str, Any]:
        """Count, correlate and record one alert; returns what was found (also the HTTP response)."""
        key = self.image_key(alert)
        m = self.metrics
        m.alerts.labels(m.image_label(key), m.namespace_label(alert.namespace), m.node_label(alert.node),
                        alert.priority).inc()
        m.rule_alerts.labels(m.rule(alert.rule), alert.priority).inc()
        recent = self._container(alert.container_id)
        recent.alerts.append(alert)
        escalated: list[str] = []
        for a in recent.anomalies:
            if self._coincide(alert, a):
                event = dict(a.event)
                event["update"] = True
                if self._escalate(a, event, [alert]):
                    a.event = event
                    escalated.append(a.event_id)
                    self._forward(event)
        baseline = self._baseline_verdict(alert, key)
        m.correlations.labels(m.image_label(key), m.namespace_label(alert.namespace), baseline["outcome"]).inc()
        result = {"image_key": key, "anomalies": escalated, "baseline": baseline}
        self._forward(self._alert_event(alert, key, result))
        self._flush()  # an alert comes on its own, not with a batch whose end would flush the sinks
        return result

    def _baseline_verdict(self, alert: FalcoAlert, key: str) -> dict[str, Any]:
        b = None
        try:
            b = self.lookup(alert, key)
        except Exception:
            log.exception("baseline lookup for a Falco alert failed")
        if b is None:
            return {"outcome": "no_baseline", "state": "", "items": []}
        state = b.state.value
        sets = b.novelty.sets
        items = [{"kind": k, "value": v, "learned": v in sets.get(k, ())} for k, v in behaviour_items(alert)]
        if state == "learning":
            outcome = "learning"
        elif not items:
            outcome = "not_comparable"
        elif all(i["learned"] for i in items):
            outcome = "in_baseline"
        else:
            outcome = "novel"
        return {"outcome": outcome, "state": state, "items": items}

    def _alert_event(self, alert: FalcoAlert, key: str, result: dict[str, Any]) -> dict[str, Any]:
        h = hashlib.blake2b(digest_size=10)
        h.update(f"{alert.node}\x00{alert.container_id}\x00{alert.rule}\x00{alert.time!r}\x00{alert.output}".encode())
        return {
            "@timestamp": iso8601(alert.time),
            "schema": FALCO_SCHEMA,
            "event_id": h.hexdigest(),  # deterministic: a resent alert overwrites its document
            "rule": alert.rule,
            "priority": alert.priority,
            "output": alert.output,
            "source": alert.source,
            "tags": list(alert.tags),
            "node": alert.node,
            "container": {"id": alert.container_id, "name": alert.container_name},
            "image": {"key": key, "repository": alert.image_repository, "tag": alert.image_tag},
            "pod": alert.pod,
            "namespace": alert.namespace,
            "in_baseline": result["baseline"]["outcome"] == "in_baseline",
            "baseline": result["baseline"],
            "anomalies": result["anomalies"],
        }


def pipeline_lookup(pipeline: Any, mode: str = "tag") -> tuple[BaselineLookup, Callable[[FalcoAlert], str]]:
    """Baseline lookup and image-key function for a :class:`baseliner.service.pipeline.Pipeline`.

    The key is built from Falco's image fields the way the pipeline builds it from the sensor's
    (``repository:tag`` by default), trying the registry-qualified and the short repository.
    """

    def candidates(alert: FalcoAlert) -> list[str]:
        keys = image_keys(alert)
        if mode == "repository":
            return [k for k in keys if ":" not in k.rpartition("/")[2] and "@" not in k]
        if mode == "digest":
            return [k for k in keys if "@" in k] or keys
        return [k for k in keys if "@" not in k]

    def key(alert: FalcoAlert) -> str:
        c = candidates(alert)
        baselines = pipeline.baselines
        return next((k for k in c if k in baselines), c[0])

    def lookup(alert: FalcoAlert, image_key: str) -> Any:
        return pipeline.baselines.get(image_key)

    return lookup, key
