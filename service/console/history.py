"""What the console shows that the pipeline does not keep: bounded, in memory, fed as the service runs.

:class:`History` is an event sink placed after the Falco correlator (anomaly events, their updates and
escalations, Falco alerts) and a score observer of the pipeline (``Pipeline.score_observers``: every image's
scored windows).  What it keeps and its bounds are in ``docs/console.md``.  "Now" is event time (the end of the
latest window scored), so a replay or the demo has a "last hour" too.  Everything runs on the event loop.
"""

from __future__ import annotations

import logging
import math
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from baseliner.service.falco import FALCO_SCHEMA, container_ref
from baseliner.service.sinks.events import SCHEMA as ANOMALY_SCHEMA
from baseliner.service.sinks.events import epoch, finite
from cachetools import LRUCache

log = logging.getLogger(__name__)

SEVERITIES = ("critical", "high", "medium", "low")  # most severe first
BUCKET_SECONDS = 300.0  # anomaly counts per image are kept in buckets of this much event time
DAY = 86_400.0
HOUR = 3_600.0
_BUCKETS_KEPT = int(DAY // BUCKET_SECONDS) + 1
_ANOMALIES_PER_IMAGE = 50  # latest anomaly ids listed on an image's page
_ALERT_CONTAINERS = 10_000  # containers whose latest Falco alerts are kept
_ALERTS_PER_CONTAINER = 16
_MAX_CHOICES = 1000  # namespaces and nodes offered as filters


def _severity(value: Any) -> str:
    s = str(value or "").lower()
    return s if s in SEVERITIES else "low"


class Deviation(NamedTuple):
    """One feature of an anomaly's explanation, as the event gives it (units of the feature)."""

    feature: str
    observed: float
    mean: float
    std: float
    unit: str
    z: float
    text: str


@dataclass(slots=True)
class Anomaly:
    """An anomaly event as the console holds it: what its pages show and filter on."""

    seq: int  # arrival order (the newest has the highest)
    event_id: str
    image: str
    namespace: str
    pod: str
    node: str
    container_id: str
    container_name: str
    severity: str
    severity_model: str
    kinds: tuple[str, ...]
    score: float
    threshold: float
    window_start: float
    window_seconds: float
    first_seen: float
    last_seen: float
    count: int
    startup: bool
    baseline_state: str
    novel: tuple[tuple[str, str], ...]
    explanation: tuple[Deviation, ...]
    falco: dict[str, Any] | None = None  # {"rules": [...], "priority": ..., "alerts": n} once correlated
    ratio: float = math.nan  # score / threshold (what the pages sort "score" by)
    rank: int = 0  # the severity's place, most severe highest (what they sort "severity" by)

    def __post_init__(self) -> None:
        self.ratio = self.score / self.threshold if self.threshold > 0 else self.score
        self.rank = len(SEVERITIES) - SEVERITIES.index(self.severity)

    @classmethod
    def of(cls, seq: int, ev: dict[str, Any]) -> Anomaly:
        container = ev.get("container") or {}
        falco = ev.get("falco")
        return cls(
            seq=seq,
            event_id=str(ev["event_id"]),
            image=str((ev.get("image") or {}).get("key", "")),
            namespace=str(ev.get("namespace") or ""),
            pod=str(ev.get("pod") or ""),
            node=str(ev.get("node") or ""),
            container_id=str(container.get("id") or ""),
            container_name=str(container.get("name") or ""),
            severity=_severity(ev.get("severity")),
            severity_model=_severity(ev.get("severity_model", ev.get("severity"))),
            kinds=tuple(str(k) for k in ev.get("kinds") or ()),
            score=_num(ev.get("score")),
            threshold=_num(ev.get("threshold")),
            window_start=epoch((ev.get("window") or {}).get("start")),
            window_seconds=_num((ev.get("window") or {}).get("seconds")),
            first_seen=epoch(ev.get("first_seen")),
            last_seen=epoch(ev.get("last_seen")),
            count=int(ev.get("count") or 1),
            startup=bool(ev.get("startup")),
            baseline_state=str(ev.get("baseline_state") or ""),
            novel=tuple((str(n["kind"]), str(n["value"])) for n in ev.get("novel") or ()),
            explanation=tuple(
                Deviation(str(d["feature"]), _num(d.get("observed")), _num(d.get("baseline_mean")),
                          _num(d.get("baseline_std")), str(d.get("unit") or ""), _num(d.get("z")), str(d.get("text")))
                for d in ev.get("explanation") or ()
            ),
            falco=dict(falco) if isinstance(falco, dict) else None,
        )

    def update(self, ev: dict[str, Any]) -> None:
        """A later version of the same event: more folded repeats, or a Falco escalation."""
        self.count = max(self.count, int(ev.get("count") or 1))
        self.last_seen = max(self.last_seen, epoch(ev.get("last_seen")))
        self.severity = _severity(ev.get("severity"))
        self.rank = len(SEVERITIES) - SEVERITIES.index(self.severity)
        falco = ev.get("falco")
        if isinstance(falco, dict):
            self.falco = dict(falco)

    def summary(self) -> dict[str, Any]:
        """What the live page shows of it (JSON)."""
        return {"event_id": self.event_id, "image": self.image, "namespace": self.namespace, "pod": self.pod,
                "node": self.node, "severity": self.severity, "kinds": list(self.kinds),
                "score": finite(self.score), "threshold": finite(self.threshold),
                "first_seen": self.first_seen, "count": self.count,
                "novel": [f"{k} {v}" for k, v in self.novel[:3]],
                "why": self.explanation[0].text if self.explanation else "",
                "falco": list((self.falco or {}).get("rules", []))}


def _num(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


@dataclass(slots=True)
class ContainerSeen:
    node: str
    pod: str
    namespace: str
    name: str


@dataclass(slots=True)
class ImageActivity:
    """One image's recent scores, containers, nodes and anomaly counts (see the module docstring)."""

    points: int  # chart capacity
    max_containers: int
    # the chart's points, a ring of window times (arrays of machine numbers: compact, and cheap to index from Python)
    times: array[float] = field(init=False)  # window start of each point
    scores: array[float] = field(init=False)  # the highest score at that time (float32)
    thresholds: array[float] = field(init=False)  # the lowest threshold in force at that time (float32)
    flagged: array[int] = field(init=False)  # windows flagged at that time
    filled: int = 0
    head: int = 0  # next slot of the ring
    newest: float = -math.inf  # the latest time in it
    containers: OrderedDict[str, ContainerSeen] = field(default_factory=OrderedDict)
    containers_seen: int = 0  # containers ever added (more than those listed once the list is full)
    nodes: dict[str, None] = field(default_factory=dict)  # insertion-ordered set
    namespaces: dict[str, None] = field(default_factory=dict)
    known: dict[str, None] = field(default_factory=dict)  # ids of the containers already noted
    buckets: dict[int, list[int]] = field(default_factory=dict)  # 5-minute bucket -> counts by SEVERITIES
    sums: dict[int, list[int]] = field(default_factory=dict)  # first bucket -> counts since (until they change)
    latest: deque[str] = field(default_factory=lambda: deque(maxlen=_ANOMALIES_PER_IMAGE))
    last: Anomaly | None = None  # the latest anomaly (kept when the list of all has let it go)
    anomalies: int = 0  # anomaly events seen (not folded repeats)

    def __post_init__(self) -> None:
        n = self.points
        self.times, self.scores = array("d", bytes(8 * n)), array("f", bytes(4 * n))
        self.thresholds, self.flagged = array("f", bytes(4 * n)), array("H", bytes(2 * n))

    # -- scores -----------------------------------------------------------------------------------
    def add_points(self, times: np.ndarray, scores: np.ndarray, thresholds: np.ndarray, flagged: np.ndarray) -> None:
        """Distinct window times in increasing order, each with its highest score, lowest threshold and flags."""
        for t, s, thr, f in zip(times.tolist(), scores.tolist(), thresholds.tolist(), flagged.tolist(), strict=True):
            self.add_point(t, s, thr, f)

    def add_point(self, t: float, score: float, threshold: float, flagged: int) -> None:
        """One window time: its highest score (nan: none), lowest threshold (inf: none) and windows flagged."""
        slot = self._slot_of(t) if t <= self.newest else -1
        if slot >= 0:  # another sensor's windows of the same time: merge
            old = self.scores[slot]
            self.scores[slot] = score if old != old or score > old else old  # (nan: none yet)
            self.thresholds[slot] = min(self.thresholds[slot], threshold)
            self.flagged[slot] = min(65535, self.flagged[slot] + flagged)
            return
        h = self.head
        self.times[h], self.scores[h], self.thresholds[h], self.flagged[h] = t, score, threshold, min(65535, flagged)
        self.head = (h + 1) % self.points
        self.filled = min(self.points, self.filled + 1)
        self.newest = max(self.newest, t)

    def _slot_of(self, t: float) -> int:
        """The slot of a point at time ``t`` among the last few added (-1: none)."""
        n = self.points
        for back in range(1, min(8, self.filled) + 1):
            slot = (self.head - back) % n
            if self.times[slot] == t:
                return slot
        return -1

    def chart(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(times, scores, thresholds, flagged)`` of the chart points, oldest first."""
        n, k = self.points, self.filled
        idx = (np.arange(self.head - k, self.head) % n) if k else np.zeros(0, dtype=np.int64)
        times = np.frombuffer(self.times, dtype=np.float64)
        idx = idx[np.argsort(times[idx], kind="stable")]
        return (times[idx], np.frombuffer(self.scores, dtype=np.float32)[idx].astype(np.float64),
                np.frombuffer(self.thresholds, dtype=np.float32)[idx].astype(np.float64),
                np.frombuffer(self.flagged, dtype=np.uint16)[idx].astype(np.int64))

    # -- containers -------------------------------------------------------------------------------
    def note(self, ident: Any) -> bool:
        """A container whose windows were scored (True when it was not known by its id)."""
        cid = ident.container_id
        if cid in self.known:  # (by its id, a string: cheaper than comparing whole identities)
            return False
        if len(self.known) >= 4 * self.max_containers:
            self.known.clear()
        self.known[cid] = None
        key = f"{ident.node}/{ident.container_id or ident.container_name or ident.pod}"
        if key not in self.containers:
            self.containers_seen += 1
            if len(self.containers) >= self.max_containers:
                self.containers.popitem(last=False)
            self.containers[key] = ContainerSeen(ident.node, ident.pod, ident.namespace, ident.container_name)
        for table, value in ((self.nodes, ident.node), (self.namespaces, ident.namespace)):
            if value and value not in table:
                if len(table) >= self.max_containers:
                    table.pop(next(iter(table)))
                table[value] = None
        return True

    # -- anomaly counts ---------------------------------------------------------------------------
    def count(self, t: float, severity: str, delta: int = 1) -> None:
        if not math.isfinite(t):
            return
        b = int(t // BUCKET_SECONDS)
        counts = self.buckets.get(b)
        if counts is None:
            if self.buckets and b < max(self.buckets) - _BUCKETS_KEPT:
                return  # older than a day before the newest: not counted
            counts = self.buckets[b] = [0, 0, 0, 0]
            newest = max(self.buckets)
            for old in [k for k in self.buckets if k < newest - _BUCKETS_KEPT]:
                del self.buckets[old]
        i = SEVERITIES.index(severity)
        counts[i] = max(0, counts[i] + delta)
        self.sums.clear()

    def counts_since(self, since: float) -> list[int]:
        """Anomalies by severity (SEVERITIES order) whose first window started at or after ``since``, to the
        nearest bucket."""
        first = int(since // BUCKET_SECONDS) if math.isfinite(since) else -(2**62)
        cached = self.sums.get(first)
        if cached is not None:
            return cached
        c0 = c1 = c2 = c3 = 0
        for b, counts in self.buckets.items():
            if b >= first:
                c0, c1, c2, c3 = c0 + counts[0], c1 + counts[1], c2 + counts[2], c3 + counts[3]
        if len(self.sums) >= 4:
            self.sums.clear()
        out = self.sums[first] = [c0, c1, c2, c3]
        return out


class History:
    """The console's memory of the service (see the module docstring).  An event sink and a score observer."""

    def __init__(self, max_anomalies: int = 20_000, chart_points: int = 240, max_containers_per_image: int = 256,
                 max_images: int = 10_000, correlation_window: float = 120.0,
                 images_held: Callable[[], Any] | None = None) -> None:
        self.max_anomalies = max_anomalies
        self.chart_points = chart_points
        self.max_containers = max_containers_per_image
        self.max_images = max_images
        self.correlation_window = correlation_window
        self.images_held = images_held  # the pipeline's baselines (images beyond max_images that it no longer has go)
        self.images: dict[str, ImageActivity] = {}
        self.anomalies: OrderedDict[str, Anomaly] = OrderedDict()
        self.alerts: LRUCache[str, deque[dict[str, Any]]] = LRUCache(_ALERT_CONTAINERS)
        self.now = math.nan  # event time: end of the latest window scored
        self.seq = 0
        self.events_seen = 0  # anomaly events (not updates) ever seen
        self.namespaces: dict[str, None] = {}  # every namespace and node seen (the Fleet page's filter choices)
        self.nodes: dict[str, None] = {}
        self.subscribers: list[Callable[[list[dict[str, Any]]], None]] = []
        self._pending: list[dict[str, Any]] = []

    # -- score observer (Pipeline.score_observers) -------------------------------------------------
    def observe(self, key: str, block: Any, rows: np.ndarray, verdicts: Any) -> None:
        """An image's windows ``rows`` of ``block`` were scored (``verdicts``: their BlockVerdicts)."""
        try:
            self._observe(key, block, rows, verdicts)
        except Exception:  # the console must never cost the pipeline a batch
            log.exception("console: recording the scores of %s failed", key)

    def _observe(self, key: str, block: Any, rows: np.ndarray, verdicts: Any) -> None:
        """(``rows`` come in event-time order, as the pipeline scores them.)"""
        if len(rows) == 0:
            return
        act = self.image(key)
        starts = block.window_start
        first, last = float(starts[rows[0]]), float(starts[rows[-1]])
        end = last + float(block.window_seconds[rows[-1]])
        if not end <= self.now:  # (also when now is nan)
            self.now = end
        score, thr, flagged = verdicts.score, verdicts.threshold, verdicts.anomalous
        if first == last:  # one window time (a sensor's round): one point
            act.add_point(first, float(np.fmax.reduce(score)), float(thr.min()), int(np.count_nonzero(flagged)))
        else:
            times = starts[rows]
            distinct, at = np.unique(times, return_index=True)
            act.add_points(distinct, np.fmax.reduceat(score, at), np.minimum.reduceat(thr, at),
                           np.add.reduceat(flagged.astype(np.int64), at))
        identities, known = block.identities, act.known
        for i in block.ident[rows].tolist():
            ident = identities[i]
            if ident.container_id not in known and act.note(ident):
                for table, value in ((self.namespaces, ident.namespace), (self.nodes, ident.node)):
                    if value not in table and len(table) < _MAX_CHOICES:
                        table[value] = None

    def image(self, key: str) -> ImageActivity:
        act = self.images.get(key)
        if act is None:
            if len(self.images) >= self.max_images:
                self._forget_images()
            act = self.images[key] = ImageActivity(self.chart_points, self.max_containers)
        return act

    def _forget_images(self) -> None:
        held = self.images_held() if self.images_held is not None else {}
        for key in [k for k in self.images if k not in held]:
            del self.images[key]
        while len(self.images) >= self.max_images:
            del self.images[next(iter(self.images))]

    # -- event sink ---------------------------------------------------------------------------------
    def emit(self, event: dict[str, Any]) -> None:
        try:
            schema = event.get("schema")
            if schema == ANOMALY_SCHEMA:
                self._on_anomaly(event)
            elif schema == FALCO_SCHEMA:
                self._on_alert(event)
        except Exception:
            log.exception("console: recording event %s failed", event.get("event_id"))

    def flush(self) -> None:
        """Hand the anomalies of the last batch to the live pages' subscribers."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        for fn in list(self.subscribers):
            fn(pending)

    def close(self) -> None:
        pass

    def _on_anomaly(self, ev: dict[str, Any]) -> None:
        eid = str(ev.get("event_id"))
        known = self.anomalies.get(eid)
        if known is not None:
            before = known.severity
            known.update(ev)
            if known.severity != before:
                act = self.images.get(known.image)
                if act is not None:
                    act.count(known.first_seen, before, -1)
                    act.count(known.first_seen, known.severity, +1)
            self._pending.append({"update": True, **known.summary()})
            return
        self.seq += 1
        self.events_seen += 1
        a = Anomaly.of(self.seq, ev)
        self.anomalies[eid] = a
        while len(self.anomalies) > self.max_anomalies:
            self.anomalies.popitem(last=False)
        act = self.image(a.image)
        act.anomalies += 1
        act.latest.append(eid)
        act.last = a
        act.count(a.first_seen, a.severity)
        self._pending.append({"update": False, **a.summary()})

    def _on_alert(self, ev: dict[str, Any]) -> None:
        cid = container_ref(str((ev.get("container") or {}).get("id") or ""))
        if not cid:
            return
        alerts = self.alerts.get(cid)
        if alerts is None:
            alerts = self.alerts[cid] = deque(maxlen=_ALERTS_PER_CONTAINER)
        alerts.append({"time": epoch(ev.get("@timestamp")), "rule": str(ev.get("rule") or ""),
                       "priority": str(ev.get("priority") or ""), "output": str(ev.get("output") or "")[:500]})

    # -- reading ------------------------------------------------------------------------------------
    def alerts_for(self, a: Anomaly) -> list[dict[str, Any]]:
        """The Falco alerts of the anomaly's container that coincide with its windows (the correlator's rule)."""
        alerts = self.alerts.get(container_ref(a.container_id)) or ()
        w = self.correlation_window
        return [al for al in alerts if a.first_seen - w <= al["time"] <= a.last_seen + w]

    def newest(self) -> Iterator[Anomaly]:
        return reversed(self.anomalies.values())

    def subscribe(self, fn: Callable[[list[dict[str, Any]]], None]) -> Callable[[], None]:
        """Call ``fn`` with the anomalies of every batch (new ones and updates); returns the unsubscribe."""
        self.subscribers.append(fn)

        def unsubscribe() -> None:
            if fn in self.subscribers:
                self.subscribers.remove(fn)

        return unsubscribe
