"""Image lineage: a new version of an image starts from its predecessor's baseline and detects at once.

A baseline's *lineage groups* say which images are versions of one another: its repository
(``repository nginx``) and, where the sensor knows it, the Kubernetes workload that runs it
(``workload shop/deployment/web``).  The service (``service/lineage.py``) gives a new image key the most
recent ready baseline of one of its groups as *parent*: the child starts as a copy of the parent's model,
detecting from its first window.  While the new version settles (a bounded period, ``adapt_seconds`` of
event time from its first window) a :class:`Lineage` changes how the baseline treats it:

* **version items**: what the version's containers show in their start-up windows (container age below
  the baseline's ``startup_seconds``) during the first ``observe_seconds`` and the parent never did
  (executables, syscalls, outbound ports, sensitive paths) is not an alarm but an item of the *version
  diff*, reported once, with the parent's items the version did not show (``vanished``), when
  ``observe_seconds`` are over.  Reported items are not alarmed on again while the version adapts; they
  join the baseline with the usual support (``NoveltySets.learn_items``) from windows that are learnt.
  Anything else new (a shell a minute later, say) is judged as ever: an alarm.
* **faster adaptation**: the rate tier's memory is shortened to ``ADAPT_MEMORY_WINDOWS`` windows and the
  sequence tier learns the version's windows ``ADAPT_SEQUENCE_WEIGHT`` times over, so the model moves to
  the new version within the period; only unflagged windows are learnt, as always.
* **threshold recalibration**: the scores of the version's learnt windows are sampled in thresholds of
  the version's own; once one holds enough scores, the baseline's threshold is the larger of the parent's
  and the version's (a noisier version raises it; a quieter one never lowers it below the parent's).
* **honest fallback**: a version that differs from its parent beyond the bound is not a version of it:
  more than ``max_changed_executables`` of the executables of the two differ (new in the version or not run
  by it in its observed windows, among all of theirs; judged when ``observe_seconds`` are over), or more
  than ``max_flagged_share`` of its windows are flagged by the rate and sequence tiers (after
  ``MIN_WINDOWS`` windows).  The baseline forgets the parent and learns from scratch; the reason is kept
  and reported.

Events (the diff, a fallback) wait in :attr:`Lineage.outbox` for the service to send them.  The lineage,
its diff and its own thresholds are part of the baseline's state (``ImageBaseline.to_state``).

>>> lin = Lineage(groups=["repository web"])
>>> lin.status, lin.active
('root', False)
>>> child = Lineage.child_of(["repository web"], "web:1.0", LineagePolicy())
>>> child.status, child.parent, child.active
('observing', 'web:1.0', True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from baseliner.models.block import VectorBlock, row_ids
from baseliner.models.novelty import KINDS, NovelItem, ep_port
from baseliner.models.threshold import TailThreshold
from baseliner.models.vector import Identity

RULES = ("auto", "repository", "workload", "off")
ROOT, OBSERVING, ADAPTING, ADAPTED, FALLBACK = "root", "observing", "adapting", "adapted", "fallback"
STATUSES = (ROOT, OBSERVING, ADAPTING, ADAPTED, FALLBACK)
ADAPT_MEMORY_WINDOWS = 240  # the rate tier's memory (windows) while a version adapts (else memory_windows)
ADAPT_SEQUENCE_WEIGHT = 4.0  # how many times over the sequence tier learns a window of an adapting version
MIN_WINDOWS = 6  # windows of a version before its flagged share can make it fall back
MAX_GROUPS = 8
_MAX_ITEMS = 512  # per kind, of the version's new and shown items
VERSION_DIFF, FALLBACK_EVENT = "version_diff", "lineage_fallback"
#: why a version falls back to learning (``reason_code`` of its event, the metric's ``reason``)
FLAGGED_WINDOWS, EXECUTABLES = "flagged_windows", "executables"
FALLBACK_REASONS = (FLAGGED_WINDOWS, EXECUTABLES)


def lineage_groups(identity: Identity, rule: str) -> list[str]:
    """The lineage groups of an image seen with ``identity`` under ``rule`` (see :data:`RULES`).

    ``auto``: the workload where the sensor knows it, else the repository.

    >>> web = Identity("n", "c", "shop/web", "1.1", namespace="shop", workload="deployment/web")
    >>> lineage_groups(web, "auto"), lineage_groups(web, "repository"), lineage_groups(web, "off")
    (['workload shop/deployment/web'], ['repository shop/web'], [])
    >>> redis = Identity("n", "c", "redis", "7")
    >>> lineage_groups(redis, "auto"), lineage_groups(redis, "workload")
    (['repository redis'], [])
    """
    if rule not in RULES:
        raise ValueError(f"lineage rule must be one of {', '.join(RULES)}, got {rule!r}")
    workload = f"workload {identity.namespace}/{identity.workload}" if identity.workload else ""
    repository = f"repository {identity.image_repository}" if identity.image_repository else ""
    if rule == "workload" or (rule == "auto" and workload):
        return [workload] if workload else []
    if rule in ("repository", "auto"):
        return [repository] if repository else []
    return []


@dataclass
class LineagePolicy:
    """How a version adapts and when it falls back (``service.pipeline.lineage_*`` settings)."""

    observe_seconds: float = 300.0
    adapt_seconds: float = 3600.0
    max_changed_executables: float = 0.5
    max_flagged_share: float = 0.5

    def __post_init__(self) -> None:
        if not (0 < self.observe_seconds <= self.adapt_seconds and math.isfinite(self.adapt_seconds)):
            raise ValueError("lineage observe_seconds must be > 0 and at most adapt_seconds (finite)")
        if not (0 < self.max_changed_executables <= 1 and 0 < self.max_flagged_share <= 1):
            raise ValueError("lineage max_changed_executables and max_flagged_share must be in (0, 1]")


@dataclass(frozen=True)
class LineageInfo:
    """What listings show of a lineage (also kept for spilled baselines)."""

    groups: tuple[str, ...]
    parent: str
    status: str
    reason: str


@dataclass
class Lineage:
    """One baseline's lineage: its groups, its parent and, while it adapts, the version's progress."""

    groups: list[str]
    parent: str = ""
    status: str = ROOT
    reason: str = ""
    policy: LineagePolicy = field(default_factory=LineagePolicy)
    since: float = math.nan  # event time of the version's first window
    latest: float = math.nan  # of its latest window
    windows: int = 0  # windows of the version while observing
    flagged: int = 0  # of them flagged by the rate or sequence tier
    parent_thresholds: tuple[float, float] = (math.inf, math.inf)  # steady rate, sequence at inheritance
    new: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})  # the version items
    shown: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})  # all it showed
    vanished: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})  # set at the diff
    containers: list[str] = field(default_factory=list)  # the version's containers (at most 64)
    outbox: list[dict[str, Any]] = field(default_factory=list, compare=False)  # events to send (not saved)
    rate_scores: TailThreshold | None = field(default=None, compare=False)
    seq_scores: TailThreshold | None = field(default=None, compare=False)

    @classmethod
    def child_of(cls, groups: list[str], parent: str, policy: LineagePolicy) -> Lineage:
        return cls(groups=list(groups)[:MAX_GROUPS], parent=parent, status=OBSERVING, policy=policy)

    @property
    def active(self) -> bool:
        """The version is observed or adapting: the baseline treats its windows as described above."""
        return self.status in (OBSERVING, ADAPTING)

    def info(self) -> LineageInfo:
        return LineageInfo(tuple(self.groups), self.parent, self.status, self.reason)

    def add_group(self, group: str) -> bool:
        if group in self.groups or len(self.groups) >= MAX_GROUPS:
            return False
        self.groups.append(group)
        return True

    def diff(self) -> dict[str, dict[str, list[str]]]:
        """``{"added": {kind: items}, "vanished": {kind: items}}`` (kinds with none left out)."""
        return {"added": {k: sorted(v) for k, v in self.new.items() if v},
                "vanished": {k: sorted(v) for k, v in self.vanished.items() if v}}

    # -- persistence ----------------------------------------------------------------------------
    def to_meta(self) -> dict[str, Any]:
        return {
            "groups": self.groups, "parent": self.parent, "status": self.status, "reason": self.reason,
            "policy": asdict(self.policy), "since": _num(self.since), "latest": _num(self.latest),
            "windows": self.windows, "flagged": self.flagged, "parent_thresholds": [_num(t) for t in
                                                                                    self.parent_thresholds],
            "new": self.new, "shown": self.shown, "vanished": self.vanished, "containers": self.containers,
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for name, t in (("rate", self.rate_scores), ("seq", self.seq_scores)):
            if t is not None:
                out.update({f"lineage.{name}.{k}": v for k, v in t.to_arrays().items()})
        return out

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray], config: Any) -> Lineage:
        if meta["status"] not in STATUSES:
            raise ValueError(f"unknown lineage status {meta['status']!r}")
        lin = cls(groups=[str(g) for g in meta["groups"]][:MAX_GROUPS], parent=str(meta["parent"]),
                  status=str(meta["status"]), reason=str(meta["reason"]), policy=LineagePolicy(**meta["policy"]),
                  since=_nan(meta["since"]), latest=_nan(meta["latest"]), windows=int(meta["windows"]),
                  flagged=int(meta["flagged"]),
                  parent_thresholds=tuple(_inf(t) for t in meta["parent_thresholds"]),  # type: ignore[arg-type]
                  new=_items(meta["new"]), shown=_items(meta["shown"]), vanished=_items(meta["vanished"]),
                  containers=[str(c) for c in meta["containers"]][:64])
        if "lineage.rate.scores" in arrays:
            lin.rate_scores, lin.seq_scores = _version_thresholds(config)
            lin.rate_scores.load_arrays({k: arrays[f"lineage.rate.{k}"] for k in ("scores", "top", "meta")})
            lin.seq_scores.load_arrays({k: arrays[f"lineage.seq.{k}"] for k in ("scores", "top", "meta")})
        return lin


def _num(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _nan(x: Any) -> float:
    return math.nan if x is None else float(x)


def _inf(x: Any) -> float:
    return math.inf if x is None else float(x)


def _items(d: Any) -> dict[str, list[str]]:
    if not isinstance(d, dict) or set(d) - set(KINDS):
        raise ValueError("lineage items are malformed")
    return {k: [str(i) for i in d.get(k, [])][:_MAX_ITEMS] for k in KINDS}


def _version_thresholds(config: Any) -> tuple[TailThreshold, TailThreshold]:
    """Thresholds of a version's own, calibrated as the baseline's steady ones are (``_Profile``)."""
    budget = config.false_alarms_per_day / 2.0
    return (TailThreshold(alarms_per_day=budget, capacity=4096, min_scores=20),
            TailThreshold(alarms_per_day=budget, capacity=4096, min_scores=20, floor=0.0,
                          min_excess=config.sequence_min_excess))


def inherit(child: Any, parent_key: str, groups: list[str], policy: LineagePolicy) -> None:
    """Make ``child`` (a copy of its parent's baseline, ``ImageBaseline.from_state``) a new version of it."""
    child.lineage = Lineage.child_of(groups, parent_key, policy)
    child.lineage.parent_thresholds = (child.steady.threshold.value, child.steady.seq_threshold.value)
    child.lineage.rate_scores, child.lineage.seq_scores = _version_thresholds(child.config)
    child.windows_scored = child.anomalies = 0
    child.quarantine.clear()


# -- the version's windows, within one scoring step (models/baseline.py's _process) ------------------


class VersionStep:
    """The windows of adapting versions in one scoring step (``s``: baseline.py's ``_Scored``).

    :meth:`defer_items` runs before the decision, :meth:`before_learn` once it is made, :meth:`after_learn`
    when the models have learnt.
    """

    def __init__(self, baselines: Sequence[Any], groups: list[int], block: VectorBlock, s: Any) -> None:
        self.baselines, self.groups, self.block, self.s = baselines, groups, block, s
        self.pending: dict[int, list[NovelItem]] = {}  # window -> version items it showed

    @classmethod
    def of(cls, baselines: Sequence[Any], block: VectorBlock, s: Any) -> VersionStep | None:
        groups = [g for g, b in enumerate(baselines)
                  if b.lineage is not None and b.lineage.active and str(b.state.value) == "detecting"]
        return cls(baselines, groups, block, s) if groups else None

    def _windows(self, g: int) -> range:
        return range(self.s.offsets[g], self.s.offsets[g + 1])

    def defer_items(self) -> None:
        """Take the version items out of the windows' novel items (they are reported once, not alarmed on)."""
        s = self.s
        for g in self.groups:
            lin: Lineage = self.baselines[g].lineage
            starts = self.block.window_start[s.R[s.offsets[g]: s.offsets[g + 1]]]
            if math.isnan(lin.since):
                lin.since = float(starts.min())
            observing = lin.status == OBSERVING
            known = {(k, v) for k, vs in lin.new.items() for v in vs}
            for k in self._windows(g):
                items = s.novel.get(k)
                if not items:
                    continue
                version = items if observing and bool(s.startup[k]) else [i for i in items if (i.kind, i.value)
                                                                             in known]
                if not version:
                    continue
                for item in version:
                    if (item.kind, item.value) not in known and len(lin.new[item.kind]) < _MAX_ITEMS:
                        lin.new[item.kind].append(item.value)
                        known.add((item.kind, item.value))
                rest = [i for i in items if i not in version]
                if rest:
                    s.novel[k] = rest
                else:
                    del s.novel[k]
                self.pending[k] = version

    def before_learn(self, learn_mask: np.ndarray) -> None:
        """Count the version's windows; version items of learnt windows gain support; the rate and
        sequence tiers are set to adapt faster; learnt scores go to the version's thresholds."""
        s, block = self.s, self.block
        containers = block.containers()
        for g in self.groups:
            b = self.baselines[g]
            lin: Lineage = b.lineage
            lo, hi = s.offsets[g], s.offsets[g + 1]
            rows = s.R[lo:hi]
            for c in {containers[i] for i in block.ident[rows].tolist()}:
                if c not in lin.containers and len(lin.containers) < 64:
                    lin.containers.append(c)
            if lin.status == OBSERVING:
                lin.windows += hi - lo
                lin.flagged += int((s.rate_hit[lo:hi] | s.seq_hit[lo:hi]).sum())
                _record_shown(lin, block, rows, b.config.ephemeral_port_start)
            for k in [k for k in self.pending if lo <= k < hi and learn_mask[k]]:
                container = containers[int(block.ident[s.R[k]])]
                b.novelty.learn_items(self.pending[k], container, bool(s.startup[k]), len(lin.containers))
            for det in (b.steady.detector, b.startup.detector):
                det.window = min(b.config.memory_windows, ADAPT_MEMORY_WINDOWS)
            self._recalibrate(b, lin, lo, hi, learn_mask)
            lin.latest = max(float(block.window_start[rows].max()), lin.latest if math.isfinite(lin.latest)
                             else -math.inf)
        self._weight_sequences()

    def _recalibrate(self, b: Any, lin: Lineage, lo: int, hi: int, learn_mask: np.ndarray) -> None:
        s = self.s
        if lin.rate_scores is None or lin.seq_scores is None:
            lin.rate_scores, lin.seq_scores = _version_thresholds(b.config)
        steady = learn_mask[lo:hi] & ~s.startup[lo:hi]
        if not steady.any():
            return
        seconds = float(self.block.window_seconds[s.R[lo]])
        for t, scores in ((lin.rate_scores, s.rate[lo:hi][steady]),
                          (lin.seq_scores, s.seq[lo:hi][steady & s.has_grams[lo:hi]])):
            if len(scores):
                t.update(scores, seconds)
        rate_parent, seq_parent = lin.parent_thresholds
        if lin.rate_scores.calibrated:
            b.steady.threshold.value = max(rate_parent, lin.rate_scores.value)
        if lin.seq_scores.calibrated:
            b.steady.seq_threshold.value = max(seq_parent, lin.seq_scores.value)

    def _weight_sequences(self) -> None:
        """The adapting versions' order-4 gram counts weigh ``ADAPT_SEQUENCE_WEIGHT`` times in what is learnt."""
        seq = self.s.sequences
        if seq is None:
            return
        for g in self.groups:
            for t in (2 * g, 2 * g + 1):
                a, b = int(seq.short_bounds[t]), int(seq.short_bounds[t + 1])
                seq.short_counts[a:b] *= ADAPT_SEQUENCE_WEIGHT

    def after_learn(self) -> None:
        """Move each version on: fall back, report its diff, or end its adaptation."""
        for g in self.groups:
            b = self.baselines[g]
            lin: Lineage = b.lineage
            if lin.status == OBSERVING:
                why = _flagged_beyond_bound(lin)
                if why:
                    fall_back(b, FLAGGED_WINDOWS, why)
                    continue
                if lin.latest >= lin.since + lin.policy.observe_seconds:
                    _settle_vanished(b, lin)
                    why = _executables_beyond_bound(lin, b.novelty.sets["executable"] - set(lin.new["executable"]))
                    lin.shown = {k: [] for k in KINDS}  # no longer needed
                    if why:
                        fall_back(b, EXECUTABLES, why)
                        continue
                    _report_diff(b, lin)
            if lin.status == ADAPTING and lin.latest >= lin.since + lin.policy.adapt_seconds:
                _end_adaptation(b, lin)


def _record_shown(lin: Lineage, block: VectorBlock, rows: np.ndarray, ephemeral_start: int) -> None:
    """Every item the version's windows ``rows`` show (for the parent's items it did not: ``vanished``)."""
    mask = np.zeros(len(block), dtype=bool)
    mask[rows] = True
    found: dict[str, set[str]] = {k: set() for k in KINDS}
    for kind, ptr, values in (("executable", block.exe_ptr, block.executables),
                              ("sensitive_path", block.path_ptr, block.sensitive_paths)):
        if values:
            on = mask[row_ids(ptr)]
            found[kind].update(v for v, keep in zip(values, on.tolist(), strict=True) if keep)
    if len(block.sc_name):
        names = block.syscall_names
        found["syscall"].update(names[j] for j in np.unique(block.sc_name[mask[row_ids(block.sc_ptr)]]).tolist())
    if len(block.ep_index):
        eps = block.endpoints
        for j in np.unique(block.ep_index[mask[row_ids(block.ep_ptr)]]).tolist():
            port = ep_port(eps[j], ephemeral_start)
            if port:
                found["port"].add(port)
    for kind, items in found.items():
        have = set(lin.shown[kind])
        for v in sorted(items - have):
            if len(lin.shown[kind]) >= _MAX_ITEMS:
                break
            lin.shown[kind].append(v)


def _flagged_beyond_bound(lin: Lineage) -> str:
    """Why the version is not a version of its parent by its rates and sequences (``""``: it is so far)."""
    if lin.windows >= MIN_WINDOWS and lin.flagged > lin.policy.max_flagged_share * lin.windows:
        return (f"{lin.flagged} of its first {lin.windows} windows were outside the parent's rates or sequences "
                f"(bound: {lin.policy.max_flagged_share:.0%})")
    return ""


def _executables_beyond_bound(lin: Lineage, parent_executables: set[str]) -> str:
    """Why the version is not a version of its parent by the executables it ran (``""``: it is).

    The share of executables that differ, new or vanished, among all of the version's and the parent's.  The
    version's are its version items and the parent's it ran: an executable first run outside start-up (an
    attacker's, say) was an alarm, and does not count."""
    shown = set(lin.new["executable"]) | (set(lin.shown["executable"]) & parent_executables)
    if not shown:
        return ""  # none ran in the version's observed windows: nothing to compare
    differ = (shown ^ parent_executables)
    union = shown | parent_executables
    if len(differ) > lin.policy.max_changed_executables * len(union):
        new = len(shown - parent_executables)
        return (f"{len(differ)} of the {len(union)} executables of the version and its parent differ ({new} new, "
                f"{len(differ) - new} vanished; bound: {lin.policy.max_changed_executables:.0%})")
    return ""


def fall_back(b: Any, code: str, reason: str) -> None:
    """The version is learnt from scratch: the parent's model is forgotten, the reason kept and reported."""
    lin: Lineage = b.lineage
    b.reset()  # keeps b.lineage
    lin.status, lin.reason = FALLBACK, reason
    lin.rate_scores = lin.seq_scores = None
    lin.outbox.append({"kind": FALLBACK_EVENT, "reason": reason, "reason_code": code, "windows": lin.windows,
                       **lin.diff()})


def detach(b: Any, reason: str) -> None:
    """End a version's adaptation because its baseline was reset (``reason`` says by whom): it learns anew."""
    lin: Lineage | None = b.lineage
    if lin is None or not lin.active:
        return
    lin.status, lin.reason = FALLBACK, reason
    lin.rate_scores = lin.seq_scores = None
    lin.shown = {k: [] for k in KINDS}


def _settle_vanished(b: Any, lin: Lineage) -> None:
    """The parent's items the version did not show while it was observed."""
    for kind in KINDS:
        parent_items = b.novelty.sets[kind] - set(lin.new[kind])
        lin.vanished[kind] = sorted(parent_items - set(lin.shown[kind]))[:_MAX_ITEMS]


def _report_diff(b: Any, lin: Lineage) -> None:
    lin.status = ADAPTING
    lin.outbox.append({"kind": VERSION_DIFF, "windows": lin.windows, **lin.diff()})


def _end_adaptation(b: Any, lin: Lineage) -> None:
    for det in (b.steady.detector, b.startup.detector):
        det.window = b.config.memory_windows
    lin.status = ADAPTED
    lin.rate_scores = lin.seq_scores = None
