"""The service's side of image lineage (``models/lineage.py``): which baseline a new image key inherits
from, and the version events.

``pipeline.lineage`` is the rule: ``auto`` (the default: the Kubernetes workload where the sensor knows it,
else the repository), ``repository``, ``workload`` or ``off``.  A new image key whose group already has a
ready baseline (detecting or frozen) starts as a copy of the most recent one (latest window seen); every
other new key starts empty, as without lineage.  A baseline remembers the groups it was seen in (a
``nginx:1.27`` run by two deployments belongs to both), so either deployment's next version finds it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, MutableMapping
from typing import Any

from baseliner.models.baseline import ImageBaseline, Mode, State
from baseliner.models.lineage import FALLBACK_EVENT, Lineage, LineagePolicy, inherit, lineage_groups
from baseliner.models.vector import Identity
from baseliner.service.sinks.events import build_version_event

log = logging.getLogger(__name__)

SEVERITY = {"version_diff": "info", FALLBACK_EVENT: "medium"}
_READY = (State.DETECTING.value, State.FROZEN.value)


class LineageKeeper:
    """Starts new baselines from their lineage and turns their lineage outboxes into events."""

    def __init__(self, rule: str, policy: LineagePolicy) -> None:
        lineage_groups(Identity("", "", ""), rule)  # checks the rule
        self.rule = rule
        self.policy = policy
        # lineage group -> image keys in it: a new key looks up its candidates, not every baseline (a flood of
        # image names stays linear). Rebuilt from the baselines when their number is not the one indexed
        # (restored from disk, or one removed).
        self._index: dict[str, set[str]] = {}
        self._indexed = -1

    def start(self, key: str, identity: Identity, baselines: MutableMapping[str, Any],
              make: Callable[[str], ImageBaseline]) -> ImageBaseline:
        """The baseline of new image key ``key`` first seen with ``identity``: its parent's copy, or new."""
        groups = lineage_groups(identity, self.rule)
        if not groups:
            return make(key)
        parent_key = self.parent_of(key, groups, baselines)
        self._add(key, groups, len(baselines) + 1)
        if parent_key is None:
            b = make(key)
            b.lineage = Lineage(groups=groups)
            return b
        meta, arrays = baselines[parent_key].to_state()
        child = ImageBaseline.from_state(meta, arrays)
        child.key, child.mode, child.state = key, Mode.AUTO, State.DETECTING
        inherit(child, parent_key, groups, self.policy)
        log.info("new baseline %s inherits from %s (%s)", key, parent_key, groups[0])
        return child

    def _add(self, key: str, groups: list[str], size: int) -> None:
        for g in groups:
            self._index.setdefault(g, set()).add(key)
        if self._indexed >= 0:
            self._indexed = size

    def _candidates(self, groups: list[str], baselines: MutableMapping[str, Any]) -> set[str]:
        if self._indexed != len(baselines):
            self._index.clear()
            for other, b in list(baselines.items()):  # spilled baselines as summaries: nothing is loaded
                lin = getattr(b, "lineage", None)
                for g in lin.groups if lin is not None else ():
                    self._index.setdefault(g, set()).add(other)
            self._indexed = len(baselines)
        return set().union(*(self._index.get(g, set()) for g in groups))

    def parent_of(self, key: str, groups: list[str], baselines: MutableMapping[str, Any]) -> str | None:
        """The most recently seen ready baseline (other than ``key``) sharing a group with ``groups``."""
        best, latest = None, -math.inf
        for other in sorted(self._candidates(groups, baselines)):
            b = _peek(baselines, other)
            lin = getattr(b, "lineage", None)
            if b is None or other == key or lin is None or str(getattr(b.state, "value", b.state)) not in _READY:
                continue
            if not set(groups) & set(lin.groups):
                continue
            seen = float(b.last_window)
            seen = seen if math.isfinite(seen) else -math.inf
            if best is None or seen > latest:
                best, latest = other, seen
        return best

    def note(self, b: Any, identity: Identity) -> bool:
        """Add the groups of ``identity`` (a new container of image ``b``) to ``b``'s; True if it changed."""
        lin = getattr(b, "lineage", None)
        if not isinstance(b, ImageBaseline) or lin is None:
            return False
        added = [g for g in lineage_groups(identity, self.rule) if lin.add_group(g)]
        for g in added:
            self._index.setdefault(g, set()).add(b.key)
        return bool(added)

    @staticmethod
    def events(key: str, b: ImageBaseline, identity: Identity) -> list[dict[str, Any]]:
        """The version events ``b``'s lineage has waiting (and its outbox emptied)."""
        lin = b.lineage
        if lin is None or not lin.outbox:
            return []
        out = []
        at = lin.latest if math.isfinite(lin.latest) else 0.0
        for detail in lin.outbox:
            kind = str(detail["kind"])
            out.append(build_version_event(kind=kind, severity=SEVERITY[kind], image_key=key, identity=identity,
                                           lineage=lin, detail=detail, at=at))
            log.info("baseline %s: %s from %s%s", key, kind, lin.parent, f": {lin.reason}" if lin.reason else "")
        lin.outbox.clear()
        return out


def _peek(baselines: MutableMapping[str, Any], key: str) -> Any:
    """A baseline, or a spilled one's summary (``service/spill.py``: nothing is loaded); ``None`` if unknown."""
    resident = getattr(baselines, "resident", None)
    if resident is None:
        return baselines.get(key)
    return resident.get(key) or baselines.spilled.get(key)  # type: ignore[attr-defined]
