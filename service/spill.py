"""Bounded memory for many images: least-recently-used baselines spill to the state directory.

:class:`SpillingBaselines` replaces the pipeline's ``dict`` of baselines when
``pipeline.max_resident_baselines`` is set (and a state directory is configured).  At most that many
baselines live in memory; touching another one loads it from its state file (the same integrity-checked,
non-executable file a checkpoint writes, ``service/store.py``), and the least recently used resident one
is written there (if it changed) and dropped.  A flood of distinct image names therefore costs a file
per image on disk and a small summary per image in memory (what ``Admin.ListBaselines`` and the
per-image gauges show), not a model per image.  ``pipeline.max_baselines`` still bounds the number of
images known at all.

A spilled baseline's file *is* its checkpoint and its dirty mark is cleared.  It is written atomically
(temporary file, rename) but not fsynced one by one (two fsyncs cost ~8 ms here, ten times the rest of a
spill); instead the next checkpoint syncs the file system (:meth:`SpillingBaselines.sync_pending`)
before the write-ahead log is truncated past the batches those files hold.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

from baseliner.models.baseline import ImageBaseline
from baseliner.models.errors import StateError
from baseliner.models.integrity import atomic_write
from baseliner.service.store import StateStore, baseline_filename, decode_file, encode_file

log = logging.getLogger(__name__)


@dataclass(slots=True)
class SpilledSummary:
    """What is known in memory about a baseline that lives on disk (enough for listings and gauges)."""

    key: str
    state: str
    mode: str
    windows_learned: int
    windows_scored: int
    anomalies: int
    first_window: float
    last_window: float
    threshold: float
    learned_seconds: float
    config: Any
    lineage: Any  # its LineageInfo (models/lineage.py), or None
    learning_reason: str
    learning_detail: str

    @classmethod
    def of(cls, b: ImageBaseline) -> SpilledSummary:
        return cls(b.key, str(getattr(b.state, "value", b.state)), str(getattr(b.mode, "value", b.mode)),
                   int(b.windows_learned), int(b.windows_scored), int(b.anomalies), float(b.first_window),
                   float(b.last_window), float(b.threshold), float(getattr(b, "learned_seconds", 0.0)), b.config,
                   None if b.lineage is None else b.lineage.info(), b.learning_reason, b.learning_detail)


class RefusedBaseline:
    """Stands in for a spilled baseline whose file was refused: listings show its summary, anything that
    needs the model raises :class:`StateError` (ingest rejects that image's vectors, admin gets DATA_LOSS)."""

    def __init__(self, summary: SpilledSummary, reason: str) -> None:
        self._summary = summary
        self.reason = reason

    def __getattr__(self, name: str) -> Any:
        if name in SpilledSummary.__slots__:
            return getattr(self._summary, name)
        raise StateError(f"baseline {self._summary.key!r} is unavailable: {self.reason}")


class SpillingBaselines(MutableMapping[str, Any]):
    """``image key -> ImageBaseline`` with at most ``capacity`` resident (see the module docstring)."""

    def __init__(self, store: StateStore, capacity: int, dirty: set[str],
                 memory_sizes: dict[str, int] | None = None,
                 sensors: Callable[[], dict[str, int]] | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.store = store
        self.capacity = capacity
        self.dirty = dirty  # the pipeline's dirty set: an evicted baseline's write clears its mark
        self.memory_sizes = memory_sizes if memory_sizes is not None else {}
        self.sensors = sensors  # the pipeline's per-sensor last applied sequence (recorded in spill files)
        self.resident: OrderedDict[str, ImageBaseline] = OrderedDict()
        self.spilled: dict[str, SpilledSummary] = {}
        self.restoring = False  # while restoring, evicted baselines are already on disk as they are
        self.loads = 0
        self.pending = 0  # spill files written since the last sync_pending
        self.refused: set[str] = set()  # spilled baselines whose file was refused when reloaded
        self.spills = 0

    # -- mapping --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.resident) + len(self.spilled)

    def __contains__(self, key: object) -> bool:
        return key in self.resident or key in self.spilled

    def __iter__(self) -> Iterator[str]:
        return iter([*self.resident, *self.spilled])

    def __getitem__(self, key: str) -> ImageBaseline:
        b = self.resident.get(key)
        if b is not None:
            self.resident.move_to_end(key)
            return b
        summary = self.spilled.get(key)
        if summary is None:
            raise KeyError(key)
        try:
            b = self._load(key)
        except StateError as e:
            # Refused (tampered, corrupt, unreadable): the image's vectors are rejected, the stream goes on,
            # and the file stays as it is for an operator to look at.
            if key not in self.refused:
                log.error("%s", e)
            self.refused.add(key)
            return RefusedBaseline(summary, str(e))  # type: ignore[return-value]
        self.refused.discard(key)
        del self.spilled[key]
        self._insert(key, b)
        return b

    def __setitem__(self, key: str, value: ImageBaseline) -> None:
        self.spilled.pop(key, None)
        self._insert(key, value)

    def __delitem__(self, key: str) -> None:
        if key in self.resident:
            del self.resident[key]
        else:
            del self.spilled[key]

    def values(self) -> list[Any]:  # type: ignore[override]
        """Resident baselines and summaries of spilled ones (nothing is loaded)."""
        return [*list(self.resident.values()), *list(self.spilled.values())]

    def items(self) -> list[tuple[str, Any]]:  # type: ignore[override]
        return [*list(self.resident.items()), *list(self.spilled.items())]

    # -- spilling -------------------------------------------------------------------------------------
    def _insert(self, key: str, b: ImageBaseline) -> None:
        self.resident[key] = b
        self.resident.move_to_end(key)
        if self.restoring:
            self.evict_excess()

    def evict_excess(self) -> None:
        """Spill least recently used baselines down to ``capacity``.

        Called between batches (``service/servicer.py``, replay), never inside one: a spilled file then
        holds whole batches, exactly those up to the per-sensor sequences it records.
        """
        while len(self.resident) > self.capacity:
            old_key, old = self.resident.popitem(last=False)
            self._spill(old_key, old)

    def _spill(self, key: str, b: ImageBaseline) -> None:
        path = self.store.baselines_dir / baseline_filename(key)
        if not self.restoring and (key in self.dirty or not path.exists()):
            meta, arrays = b.to_state()
            if self.sensors is not None:
                meta = {**meta, "applied_through": dict(self.sensors())}
            data = encode_file("baseline", key, meta, arrays, self.store.keys)
            atomic_write(path, data, fsync=False)
            self.pending += 1
            self.store.sizes[key] = len(data)
            self.dirty.discard(key)
        self.spilled[key] = SpilledSummary.of(b)
        self.memory_sizes.pop(key, None)
        self.spills += 1

    def sync_pending(self) -> None:
        """Make every spill file written so far durable (called by checkpoints before the log is truncated)."""
        if self.pending:
            self.pending = 0
            os.sync()

    def _load(self, key: str) -> ImageBaseline:
        path = self.store.baselines_dir / baseline_filename(key)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise StateError(f"{path}: spilled baseline {key!r} cannot be read ({e.strerror})") from None
        header, meta, arrays = decode_file(data, self.store.keys, str(path))
        if header.get("kind") != "baseline" or header.get("key") != key:
            raise StateError(f"{path}: not the spilled baseline {key!r}; refusing to load it")
        b = ImageBaseline.from_state(meta, arrays)
        self.loads += 1
        return b
