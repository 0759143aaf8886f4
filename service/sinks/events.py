"""Anomaly events as JSON lines: one documented schema (``docs/service.md``, "Event schema").

Each line is one JSON object that Fluent Bit's ``json`` parser and Elasticsearch take as they are:
``@timestamp`` in ISO 8601 UTC, nested objects for ``container`` and ``image``, no NaN or infinity
(non-finite numbers become ``null``).  ``event_id`` is deterministic (same input, same id) and is the
document id to index by: when repeats of an anomaly are folded into one event, the event is written
again with the same ``event_id``, a higher ``count`` and a later ``last_seen`` (``"update": true``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import IO, Any, Protocol

log = logging.getLogger(__name__)

SCHEMA = "baseliner.anomaly/v1"
VERSION_SCHEMA = "baseliner.version/v1"  # an image's new version: its diff, or its fallback to learning


class EventSink(Protocol):
    def emit(self, event: dict[str, Any]) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


def iso8601(ts: float) -> str:
    """Event time (epoch seconds) -> ``2026-01-02T03:04:05.678Z``.

    >>> iso8601(0.0)
    '1970-01-01T00:00:00.000Z'
    """
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def epoch(iso: Any) -> float:
    """An event's time back to seconds since the epoch (the inverse of :func:`iso8601`); nan when it is not one.

    >>> epoch("1970-01-01T00:01:00.000Z"), math.isnan(epoch(None))
    (60.0, True)
    """
    try:
        return datetime.fromisoformat(str(iso)).timestamp()
    except ValueError:
        return math.nan


def finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def event_id(node: str, container: str, window_start: float, kinds: Sequence[str]) -> str:
    """Deterministic id of an anomaly event (its first window), 20 hex characters."""
    h = hashlib.blake2b(digest_size=10)
    h.update(f"{node}\x00{container}\x00{window_start!r}\x00{','.join(kinds)}".encode())
    return h.hexdigest()


def _image(image_key: str, identity: Any, parent: str) -> dict[str, str]:
    """An event's ``image``: its key, its parts, and the image key its baseline was inherited from
    (``models/lineage.py``; "" for none)."""
    return {"key": image_key, "repository": identity.image_repository, "tag": identity.image_tag,
            "digest": identity.image_digest, "parent": parent}


def build_event(
    *,
    event_id: str,
    image_key: str,
    identity: Any,
    verdict: Any,
    window_start: float,
    window_seconds: float,
    count: int,
    first_seen: float,
    last_seen: float,
    update: bool,
    parent: str = "",
) -> dict[str, Any]:
    """The event dictionary for an anomalous window (``identity``/``verdict`` are the domain objects)."""
    explanation = [
        {
            "feature": d.feature,
            "observed": finite(d.observed),
            "baseline_mean": finite(d.mean),
            "baseline_std": finite(d.std),
            "unit": d.unit,
            "z": finite(d.z),
            "text": d.text(),
        }
        for d in verdict.explanation
    ]
    state = verdict.state
    return {
        "@timestamp": iso8601(last_seen),
        "schema": SCHEMA,
        "event_id": event_id,
        "update": update,
        "node": identity.node,
        "container": {"id": identity.container_id, "name": identity.container_name},
        "image": _image(image_key, identity, parent),
        "pod": identity.pod,
        "namespace": identity.namespace,
        "workload": identity.workload,
        "score": finite(verdict.score),
        "threshold": finite(verdict.threshold),
        "severity": verdict.severity,
        "kinds": list(verdict.kinds),
        "novel": [{"kind": n.kind, "value": n.value} for n in verdict.novel],
        "explanation": explanation,
        "startup": bool(verdict.startup),
        "baseline_state": str(getattr(state, "value", state)),
        "window": {"start": iso8601(window_start), "seconds": window_seconds},
        "count": count,
        "first_seen": iso8601(first_seen),
        "last_seen": iso8601(last_seen),
    }


def build_version_event(
    *, kind: str, severity: str, image_key: str, identity: Any, lineage: Any, detail: dict[str, Any], at: float
) -> dict[str, Any]:
    """An image's version event (``version_diff`` or ``lineage_fallback``, ``models/lineage.py``): what the
    version shows that its parent never did (``added``) and what it no longer shows (``vanished``), by kind;
    a fallback also says why.  One per version and kind: ``event_id`` is the image key's and the kind's."""
    h = hashlib.blake2b(digest_size=10)
    h.update(f"{kind}\x00{image_key}\x00{lineage.parent}".encode())
    return {
        "@timestamp": iso8601(at),
        "schema": VERSION_SCHEMA,
        "event_id": h.hexdigest(),
        "kind": kind,
        "severity": severity,
        "node": identity.node,
        "image": _image(image_key, identity, lineage.parent),
        "namespace": identity.namespace,
        "workload": identity.workload,
        "lineage": {"groups": list(lineage.groups), "status": lineage.status, "reason": lineage.reason,
                    "reason_code": str(detail.get("reason_code", ""))},
        "added": detail.get("added", {}),
        "vanished": detail.get("vanished", {}),
        "windows": int(detail.get("windows", 0)),
    }


def dumps(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class JsonLinesSink:
    """Writes events as JSON lines to stdout (``"-"``/``"stdout"``) or appends them to a file."""

    def __init__(self, target: str = "-", stream: IO[str] | None = None) -> None:
        self.target = target
        self._own = False
        if stream is not None:
            self._out: IO[str] = stream
        elif target in ("-", "stdout"):
            self._out = sys.stdout
        else:
            self._out = open(target, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
            self._own = True

    def emit(self, event: dict[str, Any]) -> None:
        self._out.write(dumps(event) + "\n")

    def flush(self) -> None:
        try:
            self._out.flush()
        except ValueError:  # closed stream at interpreter exit
            pass

    def close(self) -> None:
        self.flush()
        if self._own:
            self._out.close()


class CallbackSink:
    """Hands each event to a function (the demo prints them; Falco correlation can subscribe)."""

    def __init__(self, fn: Callable[[dict[str, Any]], None]) -> None:
        self.fn = fn

    def emit(self, event: dict[str, Any]) -> None:
        try:
            self.fn(event)
        except Exception:
            log.exception("event callback failed")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
