"""What each page shows, as plain data: read from the pipeline's baselines and the console's history.

No HTTP and no HTML here (``app.py`` serves, the templates draw).  The figures are the Admin API's
(``service/serde.py``: ``baseline_to_proto``) and the anomaly events' (``service/sinks/events.py``), read
from the same objects, so the console and ``baseliner admin`` never disagree.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from operator import attrgetter
from typing import Any

from baseliner.models.baseline import ImageBaseline
from baseliner.models.ngrams import LONG_BUCKETS
from baseliner.models.novelty import KINDS
from baseliner.protos.v1 import admin_pb2
from baseliner.service.console import charts
from baseliner.service.console.history import DAY, HOUR, Anomaly, History, ImageActivity
from baseliner.service.sinks.events import finite

STATES = ("learning", "detecting", "frozen")
MODES = ("auto", "learn", "detect", "freeze")
MODE_HELP = {
    "auto": "learn until ready, then detect (and keep learning from windows not flagged)",
    "learn": "learn everything, raise nothing",
    "detect": "detect now; learn from windows not flagged",
    "freeze": "detect; learn nothing",
}
FEATURES_SHOWN = 20
_PARTIAL_SORT = 1000  # rows up to the end of the page asked for: beyond this many, a full sort


def _value(x: Any) -> str:
    return str(getattr(x, "value", x))


# --------------------------------------------------------------------------------------------------
# Paging


@dataclass
class Page:
    """One page of a filtered, sorted table."""

    rows: list[Any]
    total: int
    number: int  # 1-based
    size: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.size))

    @property
    def first_row(self) -> int:
        return (self.number - 1) * self.size + 1 if self.total else 0

    @property
    def last_row(self) -> int:
        return min(self.total, self.number * self.size)


def page_of(rows: Sequence[Any], number: int, size: int) -> Page:
    """Page ``number`` (clamped to the pages there are) of ``rows``.

    >>> p = page_of(list(range(95)), 9, 50); (p.number, p.pages, p.rows[0], p.first_row, p.last_row)
    (2, 2, 50, 51, 95)
    """
    pages = max(1, math.ceil(len(rows) / size))
    number = min(max(1, number), pages)
    return Page(list(rows[(number - 1) * size: number * size]), len(rows), number, size)


# --------------------------------------------------------------------------------------------------
# Learning status


@dataclass(frozen=True)
class Status:
    state: str  # learning, detecting, frozen
    mode: str
    progress: float | None  # 0..1 while learning
    reason: str  # why it is not detecting yet ("" when it is)


def status(b: Any) -> Status:
    """A baseline's state, and while it learns, how far it got and what it still waits for.

    Works on a loaded baseline, on a spilled one's summary (which lacks the threshold's score count) and on a
    baseline held by another shard (:class:`HeldElsewhere`: its holder's words, without the progress).
    """
    if isinstance(b, HeldElsewhere):
        return b.status
    state, mode = _value(b.state), _value(b.mode)
    if state != "learning":
        return Status(state, mode, None, "")
    if mode == "learn":
        return Status(state, mode, None, "mode is learn: it learns and never detects until the mode changes")
    cfg = b.config
    waits: list[tuple[float, str]] = []
    if cfg.min_learn_windows > 0:
        frac = min(1.0, b.windows_learned / cfg.min_learn_windows)
        if frac < 1:
            waits.append((frac, f"{b.windows_learned:,} of {cfg.min_learn_windows:,} windows learnt"))
    learned = float(getattr(b, "learned_seconds", 0.0))
    if cfg.min_learn_seconds > 0:
        frac = min(1.0, learned / cfg.min_learn_seconds)
        if frac < 1:
            waits.append((frac, f"{duration(learned)} of {duration(cfg.min_learn_seconds)} of behaviour learnt"))
    thr = b.steady.threshold if isinstance(b, ImageBaseline) else None  # (a spilled one: its summary only)
    if thr is not None and thr.n_scores < thr.min_scores:
        waits.append((thr.n_scores / thr.min_scores,
                      f"threshold calibrating: {thr.n_scores} of {thr.min_scores} scores of steady-state windows"))
    if not waits and isinstance(b, ImageBaseline) and b.learning_reason == "unstable":
        waits.append((b.quiet_progress, b.learning_detail))
    if not waits:
        return Status(state, mode, 1.0, "ready: detects from its next batch")
    return Status(state, mode, min(f for f, _ in waits), "; ".join(text for _, text in waits))


def duration(seconds: float) -> str:
    """``5400`` -> ``'1 h 30 min'``.

    >>> duration(5400), duration(42), duration(3 * 86400 + 7200)
    ('1 h 30 min', '42 s', '3 d 2 h')
    """
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(s // 3600, 24)
    return f"{d} d {h} h" if h else f"{d} d"


# --------------------------------------------------------------------------------------------------
# Baselines held by other shards (their Admin API's answers: service/console/shards.py)


def proto_mode(value: int) -> str:
    """``admin_pb2.Mode`` as the console's mode name.

    >>> from baseliner.protos.v1 import admin_pb2
    >>> proto_mode(admin_pb2.MODE_FREEZE), proto_state(admin_pb2.STATE_LEARNING)
    ('freeze', 'learning')
    """
    return admin_pb2.Mode.Name(value).removeprefix("MODE_").lower()


def proto_state(value: int) -> str:
    return admin_pb2.State.Name(value).removeprefix("STATE_").lower()


def proto_status(b: Any) -> Status:
    """The status of an ``admin_pb2.Baseline`` (why it still learns in its holder's words; no progress)."""
    state = proto_state(b.state)
    reason = (b.learning_detail or b.learning_reason) if state == "learning" else ""
    return Status(state, proto_mode(b.mode), None, reason)


@dataclass(frozen=True)
class _Lineage:
    parent: str


@dataclass(frozen=True)
class HeldElsewhere:
    """An image whose baseline another shard holds, as its ``ListBaselines`` or ``GetBaseline`` gave it."""

    shard: str
    key: str
    status: Status
    state: str
    mode: str
    windows_learned: int
    windows_scored: int
    threshold: float
    lineage: _Lineage | None

    @classmethod
    def of(cls, shard: str, b: Any) -> HeldElsewhere:
        """From an ``admin_pb2.Baseline``."""
        return cls(shard, str(b.key), proto_status(b), proto_state(b.state), proto_mode(b.mode),
                   int(b.windows_learned), int(b.windows_scored), float(b.threshold) if b.threshold else math.nan,
                   _Lineage(b.lineage.parent) if b.HasField("lineage") else None)


@dataclass
class ElsewhereView:
    """An image's page when another shard holds it: what its Admin API gives."""

    key: str
    shard: str
    status: Status
    facts: admin_pb2.Baseline
    features: list[FeatureRow]
    features_total: int
    novelty: list[tuple[str, list[str]]]  # (kind, items learnt)
    lineage: LineageView | None


def image_elsewhere(shard: str, b: Any, all_features: bool = False) -> ElsewhereView:
    """The page of an image held by ``shard`` from its ``GetBaseline`` answer ``b``."""
    feats = _feature_rows((f.name, f.unit, f.mean, f.std, f.typical) for f in b.features)
    novelty = [("executable", list(b.executables)), ("syscall", list(b.syscalls)),
               ("port", list(b.remote_ports)), ("sensitive_path", list(b.sensitive_paths))]
    lin = None
    if b.HasField("lineage") and b.lineage.parent:
        added: dict[str, list[str]] = {}
        vanished: dict[str, list[str]] = {}
        for items, into in ((b.lineage.added, added), (b.lineage.vanished, vanished)):
            for item in items:
                kind, _, value = item.partition(" ")
                into.setdefault(kind, []).append(value)
        lin = LineageView(b.lineage.parent, b.lineage.status, b.lineage.reason, list(b.lineage.groups),
                          list(added.items()), list(vanished.items()))
    return ElsewhereView(b.key, shard, proto_status(b), b, feats if all_features else feats[:FEATURES_SHOWN],
                         len(feats), novelty, lin)


# --------------------------------------------------------------------------------------------------
# Fleet


@dataclass
class FleetRow:
    key: str
    status: Status
    windows_learned: int
    windows_scored: int
    threshold: float | None
    containers: int
    nodes: list[str]
    namespaces: list[str]
    hour: list[int]  # anomalies by severity (SEVERITIES order) in the last hour of event time
    day: list[int]
    last: Anomaly | None
    parent: str = ""  # the image key its baseline was inherited from (models/lineage.py)
    shard: str = ""  # the other shard that holds it ("" for this shard: its activity columns are this shard's)


@dataclass
class FleetFilter:
    namespace: str = ""
    node: str = ""
    state: str = ""
    q: str = ""  # part of the image key
    sort: str = "image"
    desc: bool = False
    page: int = 1


_EMPTY = ImageActivity(1, 1)
_NO_COUNTS = [0, 0, 0, 0]


def _counts(act: ImageActivity, since: float) -> list[int]:
    return act.counts_since(since) if act.buckets else _NO_COUNTS


def _by_severity(counts: list[int]) -> tuple[int, ...]:
    return (*counts, sum(counts))  # the most critical first, then the most


#: Fleet sort keys over (baseline, its activity, the hour and day boundaries): computed for every image shown
#: by the filter, so each is cheap; the rows are built for the page only.
FLEET_SORTS: dict[str, Callable[[Any, ImageActivity, float, float], Any]] = {
    "image": lambda b, a, h, d: b.key,
    "state": lambda b, a, h, d: (STATES.index(_value(b.state)) if _value(b.state) in STATES else 9,
                                 status(b).progress or 0.0),
    "learnt": lambda b, a, h, d: b.windows_learned,
    "containers": lambda b, a, h, d: len(a.containers),
    "nodes": lambda b, a, h, d: len(a.nodes),
    "hour": lambda b, a, h, d: _by_severity(_counts(a, h)),
    "day": lambda b, a, h, d: _by_severity(_counts(a, d)),
    "last": lambda b, a, h, d: -math.inf if a.last is None else a.last.first_seen,
}


def fleet(baselines: Iterable[Any], history: History, f: FleetFilter, size: int) -> tuple[Page, dict[str, Any]]:
    """The Fleet table: every image (``baselines`` in key order), filtered, sorted and paged; and the choices of
    the filters."""
    now = history.now if math.isfinite(history.now) else 0.0
    hour, day = now - HOUR, now - DAY
    images = history.images
    q = f.q.lower()
    shown: list[tuple[Any, ImageActivity]] = []
    for b in baselines:
        act = images.get(b.key) or _EMPTY
        if (q and q not in b.key.lower()) or (f.namespace and f.namespace not in act.namespaces) \
                or (f.node and f.node not in act.nodes) or (f.state and _value(b.state) != f.state):
            continue
        shown.append((b, act))
    if f.sort != "image" or f.desc:  # (the baselines come sorted by key)
        key = FLEET_SORTS.get(f.sort, FLEET_SORTS["image"])
        shown.sort(key=lambda ba: key(ba[0], ba[1], hour, day), reverse=f.desc)
    page = page_of(shown, f.page, size)
    page.rows = [FleetRow(b.key, status(b), int(b.windows_learned), int(b.windows_scored), finite(b.threshold),
                          len(act.containers), list(act.nodes), list(act.namespaces), _counts(act, hour),
                          _counts(act, day), act.last, _parent(b),
                          b.shard if isinstance(b, HeldElsewhere) else "") for b, act in page.rows]
    choices = {"namespaces": sorted(history.namespaces), "nodes": sorted(history.nodes), "states": STATES}
    return page, choices


# --------------------------------------------------------------------------------------------------
# Image


@dataclass
class NoveltyKind:
    kind: str
    items: list[str]
    saturated: bool
    candidates: list[tuple[str, int, int]]  # (item, windows seen, containers seen): support so far


@dataclass
class FeatureRow:
    name: str
    unit: str
    typical: float  # expm1(mean): the Admin API's "typical"
    low: float  # expm1(mean - std)
    high: float  # expm1(mean + std)
    mean: float  # log-rate space, as the Admin API gives it
    std: float


def _feature_rows(stats: Iterable[tuple[str, str, float, float, float]]) -> list[FeatureRow]:
    """The active features (mean above 0) of ``(name, unit, mean, std, typical)``, the most typical first."""
    rows = [FeatureRow(name, unit, typical, math.expm1(mean - std) if mean - std > 0 else 0.0,
                       math.expm1(mean + std), mean, std)
            for name, unit, mean, std, typical in stats if mean > 0 and math.isfinite(typical)]
    return sorted(rows, key=lambda r: -r.typical)


@dataclass
class ImageView:
    key: str
    status: Status
    windows_learned: int
    windows_scored: int
    anomalies: int
    first_window: float | None
    last_window: float | None
    learned_seconds: float
    detector: str
    thresholds: list[tuple[str, float | None, str]]  # (what, value, note)
    budget: float  # false alarms per day for the image (split between the rate and the sequence tier)
    support: str  # what makes an item part of the baseline
    novelty: list[NoveltyKind]
    features: list[FeatureRow]
    features_total: int
    sequence: list[tuple[str, str]]  # (what, value)
    chart: charts.ScoreChart
    containers: list[tuple[str, Any]]
    containers_seen: int
    nodes: list[str]
    namespaces: list[str]
    latest: list[Anomaly]
    hour: list[int] = field(default_factory=list)
    day: list[int] = field(default_factory=list)
    lineage: LineageView | None = None


@dataclass
class LineageView:
    """Where the image's baseline came from and, for a new version, what it does differently."""

    parent: str
    status: str
    reason: str
    groups: list[str]
    added: list[tuple[str, list[str]]]  # (kind, items)
    vanished: list[tuple[str, list[str]]]


def _parent(b: Any) -> str:
    lin = getattr(b, "lineage", None)
    return lin.parent if lin is not None else ""


def _lineage(b: Any) -> LineageView | None:
    lin = b.lineage
    if lin is None:
        return None
    diff = lin.diff()
    return LineageView(lin.parent, lin.status, lin.reason, list(lin.groups), list(diff["added"].items()),
                       list(diff["vanished"].items()))


def image(b: Any, history: History, all_features: bool = False) -> ImageView:
    """What an image's page shows (``b`` a loaded ImageBaseline)."""
    cfg = b.config
    act = history.images.get(b.key) or ImageActivity(1, 1)
    now = history.now if math.isfinite(history.now) else 0.0
    feats = _feature_rows((name, unit, mean, std, typical) for name, mean, std, unit, typical in b.feature_stats())
    first, last = float(b.first_window), float(b.last_window)
    latest = [a for a in (history.anomalies.get(e) for e in reversed(act.latest)) if a is not None]
    return ImageView(
        key=b.key, status=status(b), windows_learned=int(b.windows_learned), windows_scored=int(b.windows_scored),
        anomalies=int(b.anomalies), first_window=finite(first), last_window=finite(last),
        learned_seconds=float(b.learned_seconds), detector=str(cfg.detector),
        thresholds=_thresholds(b), budget=float(cfg.false_alarms_per_day), support=_support_rule(b),
        novelty=_novelty(b), features=feats if all_features else feats[:FEATURES_SHOWN], features_total=len(feats),
        sequence=_sequence(b), chart=charts.score_chart(*act.chart()),
        containers=list(act.containers.items()), containers_seen=act.containers_seen, nodes=list(act.nodes),
        namespaces=list(act.namespaces), latest=latest, hour=act.counts_since(now - HOUR),
        day=act.counts_since(now - DAY), lineage=_lineage(b),
    )


def _thresholds(b: Any) -> list[tuple[str, float | None, str]]:
    out = [("decision, steady state", finite(b.threshold),
            "the alarm budget per window in decades of improbability (-log10 p); each tier's score is turned "
            "into its tail probability under its own threshold's calibration, and the tiers are combined")]
    for name, profile in (("steady state", b.steady), ("start-up", b.startup)):
        thr, seq = profile.threshold, profile.seq_threshold
        out.append((f"rate tier, {name}", finite(thr.value),
                    f"calibrated on {thr.n_scores:,} scores" if thr.calibrated else
                    f"not calibrated ({thr.n_scores} of {thr.min_scores} scores)"))
        out.append((f"sequence tier, {name}", finite(seq.value),
                    f"calibrated on {seq.n_scores:,} scores" if seq.calibrated else
                    f"not calibrated ({seq.n_scores} of {seq.min_scores} scores)"))
    return out


def _support_rule(b: Any) -> str:
    n = b.novelty
    return (f"an item joins the baseline once seen in {n.min_windows} learnt windows and, where the image runs "
            f"several replicas, in {n.min_containers} of its containers (one window in start-up; any "
            f"{n.long_windows} windows whatever the containers); until then it is a candidate and still flagged")


def _novelty(b: Any) -> list[NoveltyKind]:
    n = b.novelty
    cands: dict[str, list[tuple[str, int, int]]] = {k: [] for k in KINDS}
    for (kind, item), (windows, containers) in n.candidates.items():
        if kind in cands:
            cands[kind].append((item, int(windows), len(containers)))
    for rows in cands.values():
        rows.sort(key=lambda r: (-r[1], r[0]))
    sets = b.novelty_sets()
    return [NoveltyKind(k, list(sets.get(k, [])), bool(n.saturated.get(k, False)), cands[k]) for k in KINDS]


def _sequence(b: Any) -> list[tuple[str, str]]:
    p = b.steady
    seq, thr = p.sequence, p.seq_threshold
    median = thr.quantile(0.5)
    return [
        ("windows learnt", f"{seq.windows_learned:,}"),
        ("length-6 syscall contexts seen", f"{seq.novelty.buckets_seen:,} of {LONG_BUCKETS:,} hashed buckets"),
        ("typical surprise while learning (median)", "-" if math.isnan(median) else f"{median:.2f} nats/gram"),
        ("threshold", "-" if not thr.calibrated else f"{thr.value:.2f} nats/gram"),
        ("penalty for unseen contexts", f"up to {seq.unseen_nats:g} nats/gram (half at a share of "
                                        f"{seq.unseen_scale:g})"),
    ]


# --------------------------------------------------------------------------------------------------
# Anomalies


@dataclass
class AnomalyFilter:
    image: str = ""
    namespace: str = ""
    node: str = ""
    severity: str = ""
    kind: str = ""
    sort: str = "time"
    desc: bool = True
    page: int = 1


ANOMALY_SORTS: dict[str, Callable[[Anomaly], Any]] = {  # (attrgetter: C-level keys, fast over 100,000 of them)
    "time": attrgetter("seq"),
    "severity": attrgetter("rank", "seq"),
    "score": attrgetter("ratio", "seq"),
    "image": attrgetter("image", "seq"),
    "count": attrgetter("count", "seq"),
}


def anomalies(history: History, f: AnomalyFilter, size: int) -> Page:
    """The anomalies held, filtered, sorted (newest first by default) and paged."""
    newest_first = f.sort == "time" and f.desc
    if f.sort == "time" and not (f.image or f.namespace or f.node or f.severity or f.kind):  # one page of them
        total = len(history.anomalies)
        number = min(max(1, f.page), max(1, math.ceil(total / size)))
        source = history.newest() if f.desc else iter(history.anomalies.values())
        return Page(list(islice(source, (number - 1) * size, number * size)), total, number, size)
    held: Iterable[Anomaly] = history.newest() if newest_first else history.anomalies.values()
    for name in ("image", "namespace", "node", "severity"):  # one simple pass per filter set
        value = getattr(f, name)
        if value:
            get = attrgetter(name)
            held = [a for a in held if get(a) == value]
    if f.kind:
        held = [a for a in held if f.kind in a.kinds]
    rows = list(held)
    if f.sort == "time":  # they are held in order
        return page_of(rows, f.page, size)
    key = ANOMALY_SORTS.get(f.sort, ANOMALY_SORTS["time"])
    number = min(max(1, f.page), max(1, math.ceil(len(rows) / size)))
    if number * size <= _PARTIAL_SORT:  # an early page: the top of them only, in one pass
        top = (heapq.nlargest if f.desc else heapq.nsmallest)(number * size, rows, key=key)
        return Page(top[(number - 1) * size:], len(rows), number, size)
    rows.sort(key=key, reverse=f.desc)
    return page_of(rows, number, size)


@dataclass
class AnomalyView:
    a: Anomaly
    bands: list[charts.Band]
    novel: list[tuple[str, str, bool]]  # (kind, value, now in the baseline)
    alerts: list[dict[str, Any]]
    held: bool  # the pipeline still holds its windows (feedback possible)
    accepted: bool
    windows: list[float]  # window starts of the windows held (the first ones folded into the event)
    baseline_state: str  # the image's state now
    mode: str


def anomaly(a: Anomaly, history: History, pipeline: Any) -> AnomalyView:
    rec = pipeline.recent.get(a.event_id)
    b = pipeline.baselines.get(a.image)  # (a spilled baseline is loaded; one whose file was refused stays a summary)
    sets = b.novelty.sets if isinstance(b, ImageBaseline) else {}
    return AnomalyView(
        a=a, bands=charts.bands(a.explanation),
        novel=[(kind, value, value in sets.get(kind, ())) for kind, value in a.novel],
        alerts=history.alerts_for(a), held=rec is not None, accepted=bool(rec is not None and rec.accepted),
        windows=[float(v.window_start) for v in rec.vectors] if rec is not None else [],
        baseline_state=_value(b.state) if b is not None else "", mode=_value(b.mode) if b is not None else "",
    )
