"""validate -> route by image key -> score and learn per image (batched) -> events and metrics.

The pipeline is the service's domain core: no gRPC here.  It owns

* one :class:`baseliner.models.baseline.ImageBaseline` per image key (``repository:tag`` by default), a new
  key starting from its predecessor's where its lineage has one (``service/lineage.py``), and the version
  events that come of it;
* per-sensor last applied batch sequence (resends are recognised and not applied twice);
* a container tracker (first and last window seen) that fills ``seconds_since_start`` when the sensor
  did not know the container's age, and rejects windows that go back in time (``OUT_OF_ORDER``);
* anomaly folding: repeats of the same container and kinds within ``dedup_window_seconds`` of event time
  become one event with a count;
* a bounded memory of recent anomaly events with their vectors, for ``Admin.Feedback``.

Everything here runs on the service's event loop thread; nothing blocks on I/O except the event sinks'
buffered writes.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from baseliner.models.baseline import BaselineConfig, ImageBaseline, Mode, NovelItem, process_blocks
from baseliner.models.block import NameTable, TableMemo, VectorBlock
from baseliner.models.errors import UnknownBaselineError, ValidationError
from baseliner.models.lineage import LineagePolicy, detach
from baseliner.models.rate_features import transform_block
from baseliner.models.validate import validate_block
from baseliner.models.vector import FeatureVector, Identity
from baseliner.service.config import PipelineConfig
from baseliner.service.container_tracker import ContainerTracker
from baseliner.service.errors import UnknownEventError
from baseliner.service.lineage import LineageKeeper
from baseliner.service.sinks.events import EventSink, build_event, event_id
from baseliner.service.sinks.metrics import ServiceMetrics

log = logging.getLogger(__name__)

#: Reason recorded (in metrics) for vectors of a new image refused because ``max_baselines`` is reached;
#: the acknowledgement carries ``TOO_LARGE`` with a message that says so.
BASELINE_LIMIT = "BASELINE_LIMIT"
_MAX_VECTORS_PER_EVENT = 8


def image_key(identity: Identity, mode: str) -> str:
    """The baseline an identity belongs to.

    >>> i = Identity("n", "c", "nginx", "1.27", "sha256:ab")
    >>> image_key(i, "tag"), image_key(i, "digest"), image_key(i, "repository")
    ('nginx:1.27', 'nginx@sha256:ab', 'nginx')
    """
    if mode == "digest" and identity.image_digest:
        return f"{identity.image_repository}@{identity.image_digest}"
    if mode == "repository":
        return identity.image_repository
    return identity.image


def container_key(identity: Identity) -> str:
    return f"{identity.node}/{identity.container_id or identity.container_name or identity.pod}"


@dataclass(slots=True)
class BatchResult:
    sequence: int
    applied: int = 0
    rejected: list[ValidationError] = field(default_factory=list)
    duplicate: bool = False


@dataclass(slots=True)
class _Aggregate:
    event_id: str
    image_key: str
    identity: Identity
    first_start: float  # event time of the first window
    last_end: float
    count: int
    verdict: Any  # the first window's verdict (its explanation is the event's)
    window_start: float
    window_seconds: float
    repeats: int = 0  # repeats since the last time the event was written
    parent: str = ""  # the image's lineage parent (its baseline was inherited from that image key's)
    touched: float = 0.0  # monotonic wall time of the last repeat (closes aggregates of silent containers)


@dataclass(slots=True)
class RecentEvent:
    event_id: str
    image_key: str
    vectors: list[FeatureVector]
    event: dict[str, Any]
    accepted: bool = False


class Pipeline:
    """The service's domain core (see the module docstring)."""

    def __init__(
        self,
        config: PipelineConfig | None = None,
        baseline_config: BaselineConfig | None = None,
        metrics: ServiceMetrics | None = None,
        sinks: Sequence[EventSink] = (),
        stage_clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.config = config or PipelineConfig()
        self._clock = stage_clock  # for stage_seconds (benchmarks pass a CPU-time clock)
        self.baseline_config = baseline_config or BaselineConfig()
        self.metrics = metrics
        self.sinks = list(sinks)
        # called as (image key, block, its rows, their BlockVerdicts) for every image scored (the console's history)
        self.score_observers: list[Callable[[str, VectorBlock, np.ndarray, Any], None]] = []
        self.baselines: dict[str, ImageBaseline] = {}
        # Makes the baseline of a new image; service/model_source.py sets it from a registered model
        # (its config and trained state as a warm start). None: an empty baseline with baseline_config.
        self.baseline_factory: Callable[[str], ImageBaseline] | None = None
        c = self.config
        self.lineage = LineageKeeper(c.lineage, LineagePolicy(
            c.lineage_observe_seconds, c.lineage_adapt_seconds, c.lineage_max_changed_executables,
            c.lineage_max_flagged_share))
        self.sensors: dict[str, int] = {}
        self.containers = ContainerTracker(self.config.max_containers)
        # Per distinct identity (a row of these tables, found with one dict lookup per identity and batch):
        # its image key (an index into _image_keys), its container key, and its container's tracker slot
        # with that slot's assignment number (a slot reused for another container no longer matches).
        self._ident_row: dict[Identity, int] = {}
        self._ident_image = np.empty(0, dtype=np.int64)
        self._ident_container: list[str] = []
        self._ident_slot = np.empty(0, dtype=np.int64)
        self._ident_gen = np.empty(0, dtype=np.int64)
        self._image_keys: list[str] = []
        self._image_index: dict[str, int] = {}
        self._table_rows: TableMemo[np.ndarray] = TableMemo()  # recent identity tables' rows (until forgotten)
        self._names = NameTable()  # the syscall names of joined batches (VectorBlock.concat)
        self.recent: OrderedDict[str, RecentEvent] = OrderedDict()
        self._open: dict[tuple[str, tuple[str, ...]], _Aggregate] = {}
        self.dirty: set[str] = set()
        self.sensors_dirty = False
        self.removed: set[str] = set()
        # image key -> the per-sensor sequences its restored state file holds (service/store.py; the
        # write-ahead log's replay does not apply them again)
        self.restored_applied: dict[str, dict[str, int]] = {}
        self.events_written = 0
        self.shard_name = ""  # events carry it when the service is sharded (service/shards/cluster.py)
        self.memory_sizes: dict[str, int] = {}  # image key -> state bytes at its last snapshot
        # per-stage timing (seconds, cumulative) for benchmarks and debugging
        self.stage_seconds: dict[str, float] = {"validate": 0.0, "score": 0.0, "events": 0.0}
        if metrics is not None:
            metrics.baseline_limit.set(self.config.max_baselines)
            metrics.bind(self.state_counts, self.model_memory_bytes, lambda: list(self.baselines.items()))

    # -- sequencing ---------------------------------------------------------------------------------
    def last_sequence(self, sensor_id: str) -> int:
        return self.sensors.get(sensor_id, 0)

    # -- ingest -------------------------------------------------------------------------------------
    def apply_block(
        self, sensor_id: str, sequence: int, block: VectorBlock, rejected: Sequence[ValidationError] = ()
    ) -> BatchResult:
        """Apply one decoded batch (exactly once per ``(sensor_id, sequence)``); see :meth:`apply_blocks`."""
        return self.apply_blocks([(sensor_id, sequence, block, rejected)])[0]

    def apply_blocks(
        self, batches: Sequence[tuple[str, int, VectorBlock, Sequence[ValidationError]]]
    ) -> list[BatchResult]:
        """Apply decoded batches, in order, each exactly once per ``(sensor_id, sequence)``.

        Each batch is ``(sensor_id, sequence, block, rejected)``: ``rejected`` are its windows the decoder
        already refused; its result lists them with the ones refused here.  A block is the pipeline's to
        use: unknown container ages (``block.age < 0``) of accepted windows are filled in in place.

        Every batch is validated and checked for container order on its own; then the windows of all of
        them are transformed, scored and learnt together: the service gives the batches of many sensors
        that arrived together one call, so a batch's fixed cost (a few hundred NumPy calls) is paid once
        for all of them.  Acknowledgements (applied, rejected, duplicate) are what each batch gets on its
        own; the models see one batch of all their windows (each scored against the state before the
        call, as the windows of one batch are), so give a call at most one batch of each sensor: a
        container's windows then come from one batch, and a quarantine set by one of them holds for the
        sensor's next batch.
        """
        results = [BatchResult(sequence) for _, sequence, _, _ in batches]
        t0 = self._clock()
        fresh: list[tuple[int, VectorBlock]] = []  # (batch, its block): the batches not seen before
        for k, (sensor_id, sequence, block, rejected) in enumerate(batches):
            if sequence <= self.sensors.get(sensor_id, 0):
                results[k].duplicate = True
                if self.metrics:
                    self.metrics.batches_duplicate.inc()
                continue
            results[k].rejected.extend(rejected)
            if len(block):
                fresh.append((k, block))
            self.sensors[sensor_id] = sequence
            self.sensors_dirty = True
        accepted = self._accept(fresh, results) if fresh else None
        t1 = self._clock()
        self.stage_seconds["validate"] += t1 - t0
        if accepted is not None:
            block, ident_rows, batch_of_row = accepted
            groups = self._groups(block, ident_rows)
            features = transform_block(block)  # all the batches at once, then split by image
            self.stage_seconds["score"] += self._clock() - t1
            refused: list[tuple[np.ndarray, str, str]] = []
            applied = self._apply_groups(groups, block, features, refused)
            if len(applied):
                for k, n in enumerate(np.bincount(batch_of_row[applied], minlength=len(batches)).tolist()):
                    results[k].applied = n
            for rows, reason, message in refused:
                for k, i in zip(batch_of_row[rows].tolist(), block.index[rows].tolist(), strict=True):
                    results[k].rejected.append(ValidationError(reason, message, i))
        self._close_expired()
        t2 = self._clock()
        for sink in self.sinks:
            sink.flush()
        self.stage_seconds["events"] += self._clock() - t2
        if self.metrics:
            self._count(results, self.metrics)
        for result in results:
            result.rejected.sort(key=lambda err: err.index)
        return results

    @staticmethod
    def _count(results: list[BatchResult], metrics: ServiceMetrics) -> None:
        """Windows applied and rejected (by reason) in metrics."""
        metrics.vectors_applied.inc(sum(r.applied for r in results))
        counts: dict[str, int] = {}
        for result in results:
            for err in result.rejected:
                r = BASELINE_LIMIT if err.reason == "TOO_LARGE" and err.message.startswith("baseline limit") \
                    else err.reason
                counts[r] = counts.get(r, 0) + 1
        for r, n in counts.items():
            metrics.rejected(r, n)

    def _accept(
        self, fresh: list[tuple[int, VectorBlock]], results: list[BatchResult]
    ) -> tuple[VectorBlock, np.ndarray, np.ndarray] | None:
        """The windows of ``fresh`` batches that may be scored, as one block (their identity rows, and the
        batch of each row); each batch's rejections go to its result.

        The batches are joined first and checked together (validation, container order): one pass of array
        operations for all of them, not one per batch.
        """
        block = VectorBlock.concat([b for _, b in fresh], self._names)
        batch_of_row = np.repeat(np.array([k for k, _ in fresh]), [len(b) for _, b in fresh])
        try:
            ok, bad = validate_block(block)
        except Exception:  # a value validation did not foresee: reject that batch's windows, never the stream's
            log.exception("validating %d batches (%d windows) failed unexpectedly", len(fresh), len(block))
            block, ok, bad = self._validate_apart(fresh)
        for row, err in zip(np.flatnonzero(~ok).tolist(), bad, strict=True):
            results[batch_of_row[row]].rejected.append(err)
        ident_rows = np.zeros(len(block.identities), dtype=np.int64)
        if ok.any():
            ident_rows = self._identity_rows(block.identities)
        out_of_order: list[ValidationError] = []
        keep = self._in_order(block, ok, ident_rows, out_of_order)
        for row, err in zip(np.flatnonzero(ok & ~keep).tolist(), out_of_order, strict=True):
            results[batch_of_row[row]].rejected.append(err)
        ok &= keep
        if not ok.all():
            rows = np.flatnonzero(ok)
            block, batch_of_row = block.take(rows), batch_of_row[rows]
        return (block, ident_rows, batch_of_row) if len(block) else None

    def _validate_apart(
        self, fresh: list[tuple[int, VectorBlock]]
    ) -> tuple[VectorBlock, np.ndarray, list[ValidationError]]:
        """:func:`validate_block` batch by batch (after it failed on the joined batches): only the windows of
        the batch it fails on are rejected (``UNSPECIFIED``).  Returns the batches joined again (their
        tables as validation left them), the mask of good windows and the errors."""
        oks: list[np.ndarray] = []
        errors: list[ValidationError] = []
        for _, b in fresh:
            try:
                ok, bad = validate_block(b)
            except Exception:
                log.exception("validating a batch of %d windows failed unexpectedly", len(b))
                ok = np.zeros(len(b), dtype=bool)
                bad = [ValidationError("UNSPECIFIED", "vector could not be validated", int(i)) for i in b.index]
            oks.append(ok)
            errors.extend(bad)
        return VectorBlock.concat([b for _, b in fresh], self._names), np.concatenate(oks), errors

    def _in_order(self, block: VectorBlock, ok: np.ndarray, ident_rows: np.ndarray,
                  rejected: list[ValidationError]) -> np.ndarray:
        """Track containers; mask out windows not after their container's last one (``OUT_OF_ORDER``).

        Fills in ``block.age`` (container age at window start) where the sensor did not know it, from the
        first window the service saw of the container.  Array work: a dict lookup only for an identity
        whose container has no tracker slot cached (new, or dropped since), and a message per rejection.
        """
        n = len(block)
        rows = np.flatnonzero(ok)
        if not len(rows):
            return np.ones(n, dtype=bool)
        ident = block.ident[rows]
        used = np.zeros(len(block.identities), dtype=bool)
        used[ident] = True
        slot_of = np.zeros(len(block.identities), dtype=np.int64)
        slot_of[used] = self._container_slots(ident_rows[used])
        ws = block.window_start[rows]
        accepted, prev, first = self.containers.observe(slot_of[ident], ws)
        keep = np.ones(n, dtype=bool)
        if not accepted.all():
            out = ~accepted
            keep[rows[out]] = False
            for i, t, p in zip(block.index[rows[out]].tolist(), ws[out].tolist(), prev[out].tolist(), strict=True):
                rejected.append(ValidationError(
                    "OUT_OF_ORDER", f"window at {t} is not after this container's last window at {p}", i
                ))
        age = block.age[rows]
        fill = accepted & (age < 0)
        if fill.any():
            block.age[rows[fill]] = ws[fill] - first[fill]
        return keep

    def _identity_rows(self, identities: Sequence[Identity]) -> np.ndarray:
        """Each identity's row in the per-identity tables (added when new; bounded by ``max_containers``).

        The rows of a table seen before are remembered by its content (:class:`TableMemo`): a sensor's table
        comes back round after round."""
        rows = self._table_rows.get(identities)
        if rows is None:
            rows = self._lookup_rows(identities)
            self._table_rows.put(identities, rows)
        return rows

    def _lookup_rows(self, identities: Sequence[Identity]) -> np.ndarray:
        table = self._ident_row
        found = list(map(table.get, identities))
        try:
            return np.array(found, dtype=np.int64)
        except TypeError:  # some identities are new
            pass
        if len(table) + found.count(None) > self.config.max_containers:
            self._forget_identities()
            found = [None] * len(identities)
        for j, r in enumerate(found):
            if r is None:
                ident = identities[j]
                r = table.get(ident)
                found[j] = r if r is not None else self._add_identity(ident)
        return np.array(found, dtype=np.int64)

    def _add_identity(self, ident: Identity) -> int:
        r = len(self._ident_container)
        if r >= len(self._ident_image):
            size = max(64, 2 * r)
            self._ident_image = np.resize(self._ident_image, size)
            self._ident_slot = np.resize(self._ident_slot, size)
            self._ident_gen = np.resize(self._ident_gen, size)
        key = image_key(ident, self.config.image_key)
        if key in self.baselines and self.lineage.note(self.baselines[key], ident):
            self.dirty.add(key)  # a new container of a known image, in another lineage group
        k = self._image_index.get(key)
        if k is None:
            k = self._image_index[key] = len(self._image_keys)
            self._image_keys.append(key)
        self._ident_image[r] = k
        self._ident_slot[r] = 0
        self._ident_gen[r] = 0  # assignment numbers start at 1: no slot matches until looked up
        self._ident_container.append(container_key(ident))
        self._ident_row[ident] = r
        return r

    def _forget_identities(self) -> None:
        self._table_rows.clear()
        self._ident_row.clear()
        self._ident_container.clear()
        self._image_keys.clear()
        self._image_index.clear()

    def _container_slots(self, ident_rows: np.ndarray) -> np.ndarray:
        """The tracker slot of each identity row's container (looked up again where it changed)."""
        tracker = self.containers
        slots = self._ident_slot[ident_rows]
        gen = tracker.gen
        if len(gen):  # assignment numbers are never reused: a slot cached before a restore cannot match
            stale = gen[np.minimum(slots, len(gen) - 1)] != self._ident_gen[ident_rows]
        else:
            stale = np.ones(len(slots), dtype=bool)
        if stale.any():
            keys = self._ident_container
            for r in ident_rows[stale].tolist():
                s = tracker.slot(keys[r])
                self._ident_slot[r] = s
                self._ident_gen[r] = tracker.gen[s]
            slots = self._ident_slot[ident_rows]
        return slots

    def _groups(self, block: VectorBlock, ident_rows: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """Rows of each image key, each group in event-time order, the groups in the order of their first
        row (a block whose windows come image by image, as the sensor sends them, is then in order)."""
        n = len(block)
        if n == 0:
            return []
        row_key = self._ident_image[ident_rows][block.ident]
        names = self._image_keys
        first = int(row_key[0])
        if (row_key == first).all():
            return [(names[first], np.argsort(block.window_start, kind="stable"))]
        _, first_row, dense = np.unique(row_key, return_index=True, return_inverse=True)
        place = np.argsort(np.argsort(first_row))[dense]  # each row's image, numbered by first appearance
        order = np.lexsort((block.window_start, place))
        sorted_place = place[order]
        bounds = (np.flatnonzero(sorted_place[1:] != sorted_place[:-1]) + 1).tolist()
        return [(names[int(row_key[order[a]])], order[a:b]) for a, b in zip([0, *bounds], [*bounds, n], strict=True)]

    def _apply_groups(
        self, groups: list[tuple[str, np.ndarray]], block: VectorBlock, features: np.ndarray,
        refused: list[tuple[np.ndarray, str, str]],
    ) -> np.ndarray:
        """Score and learn every image's rows of the block at once (``baseliner.models.baseline.process_blocks``).

        Returns the rows applied; rows refused go to ``refused`` as ``(rows, reason, message)``.
        """
        todo: list[tuple[str, ImageBaseline, np.ndarray]] = []
        for key, rows in groups:
            baseline = self.baselines.get(key)
            if baseline is None:
                if len(self.baselines) >= self.config.max_baselines:
                    msg = f"baseline limit of {self.config.max_baselines} images reached; image {key!r} not learned"
                    refused.append((rows, "TOO_LARGE", "baseline limit: " + msg))
                    continue
                baseline = self.baselines[key] = self.lineage.start(key, block.identity(int(rows[0])),
                                                                    self.baselines, self.new_baseline)
                self.removed.discard(key)
                log.info("new baseline %s", key)
            elif not isinstance(baseline, ImageBaseline):  # a spilled baseline whose saved state was refused
                why = f"baseline {key!r} is unavailable: {getattr(baseline, 'reason', 'its state cannot be loaded')}"
                refused.append((rows, "UNSPECIFIED", why))
                continue
            todo.append((key, baseline, rows))
        if not todo:
            return np.zeros(0, dtype=np.int64)
        w0 = time.perf_counter()
        t0 = self._clock()
        try:
            results = process_blocks([(b, rows) for _, b, rows in todo], block, features)
        except Exception:  # a model bug must not take the stream down: reject the windows, say why
            log.exception("scoring %d vectors of %d images failed", sum(len(r) for _, _, r in todo), len(todo))
            refused.extend((rows, "UNSPECIFIED", "internal error while scoring (see the service log)")
                           for _, _, rows in todo)
            return np.zeros(0, dtype=np.int64)
        elapsed = time.perf_counter() - w0
        t1 = self._clock()
        self.stage_seconds["score"] += t1 - t0
        m = self.metrics
        if m is not None:
            m.scoring_latency.observe(elapsed)
            m.observe_batch_scores([key for key, _, _ in todo], [v.score for v in results])
        for (key, baseline, rows), verdicts in zip(todo, results, strict=True):
            self.dirty.add(key)
            for observe in self.score_observers:
                observe(key, block, rows, verdicts)
            lin = baseline.lineage
            parent = lin.parent if lin is not None else ""
            for i in sorted(verdicts.flagged):
                self._anomaly(key, block.vector(int(rows[i])), verdicts.flagged[i], parent)
            if lin is not None and lin.outbox:
                self._version_events(key, baseline, block.identity(int(rows[0])))
        self.stage_seconds["events"] += self._clock() - t1
        return np.concatenate([rows for _, _, rows in todo])

    # -- anomalies ----------------------------------------------------------------------------------
    def _version_events(self, key: str, baseline: ImageBaseline, identity: Identity) -> None:
        """The version diff or fallback ``baseline``'s lineage has waiting (``models/lineage.py``)."""
        for event in self.lineage.events(key, baseline, identity):
            if self.metrics is not None:
                self.metrics.lineage_event(event["kind"], event["lineage"]["reason_code"])
            self._emit(event)

    def _anomaly(self, key: str, v: FeatureVector, vd: Any, parent: str = "") -> None:
        ident = v.identity
        if self.metrics is not None:
            self.metrics.anomaly(key, ident.namespace, vd.kinds, vd.severity)
        ckey = container_key(ident)
        akey = (ckey, tuple(vd.kinds))
        agg = self._open.get(akey)
        window = self.config.dedup_window_seconds
        if agg is not None and v.window_start - agg.first_start < window:
            agg.count += 1
            agg.repeats += 1
            agg.touched = time.monotonic()
            agg.last_end = max(agg.last_end, v.window_end)
            rec = self.recent.get(agg.event_id)
            if rec is not None and len(rec.vectors) < _MAX_VECTORS_PER_EVENT:
                rec.vectors.append(v)
            return
        if agg is not None:
            self._close(akey, agg)
        eid = event_id(ident.node, ckey, v.window_start, vd.kinds)
        agg = _Aggregate(eid, key, ident, v.window_start, v.window_end, 1, vd, v.window_start, v.window_seconds,
                         touched=time.monotonic(), parent=parent)
        if window > 0:
            self._open[akey] = agg
        event = self._event(agg, update=False)
        self._remember(RecentEvent(eid, key, [v], event))
        self._emit(event)

    def _event(self, agg: _Aggregate, update: bool) -> dict[str, Any]:
        event = build_event(
            event_id=agg.event_id,
            image_key=agg.image_key,
            identity=agg.identity,
            verdict=agg.verdict,
            window_start=agg.window_start,
            window_seconds=agg.window_seconds,
            count=agg.count,
            first_seen=agg.first_start,
            last_seen=agg.last_end,
            update=update,
            parent=agg.parent,
        )
        if self.shard_name:
            event["shard"] = self.shard_name
        return event

    def _emit(self, event: dict[str, Any]) -> None:
        self.events_written += 1
        if self.metrics is not None:
            self.metrics.events_emitted.inc()
        for sink in self.sinks:
            try:
                sink.emit(event)
            except Exception:
                log.exception("event sink %r failed", sink)

    def _remember(self, rec: RecentEvent) -> None:
        self.recent[rec.event_id] = rec
        while len(self.recent) > self.config.recent_events:
            self.recent.popitem(last=False)

    def _close(self, akey: tuple[str, tuple[str, ...]], agg: _Aggregate) -> None:
        self._open.pop(akey, None)
        if agg.repeats:
            event = self._event(agg, update=True)
            rec = self.recent.get(agg.event_id)
            if rec is not None:
                rec.event = event
            self._emit(event)

    def _close_expired(self) -> None:
        if not self._open:
            return
        window = self.config.dedup_window_seconds
        last = self.containers.last
        for akey, agg in list(self._open.items()):
            if last(akey[0]) - agg.first_start >= window:
                self._close(akey, agg)

    def close_idle(self, now: float | None = None) -> int:
        """Close aggregates that saw no repeat for ``dedup_window_seconds`` of wall time (a container that
        went silent never moves its event time on).  Returns how many were closed."""
        now = time.monotonic() if now is None else now
        window = self.config.dedup_window_seconds
        closed = 0
        for akey, agg in list(self._open.items()):
            if now - agg.touched >= window:
                self._close(akey, agg)
                closed += 1
        if closed:
            for sink in self.sinks:
                sink.flush()
        return closed

    def flush_events(self) -> None:
        """Close every open aggregate (write pending counts), e.g. at shutdown."""
        for akey, agg in list(self._open.items()):
            self._close(akey, agg)
        for sink in self.sinks:
            sink.flush()

    def new_baseline(self, key: str) -> ImageBaseline:
        if self.baseline_factory is not None:
            return self.baseline_factory(key)
        return ImageBaseline(key, self.baseline_config)

    # -- admin --------------------------------------------------------------------------------------
    def get(self, key: str) -> ImageBaseline:
        b = self.baselines.get(key)
        if b is None:
            raise UnknownBaselineError(f"no baseline for image key {key!r}")
        return b

    def all(self) -> list[ImageBaseline]:
        return sorted(self.baselines.values(), key=lambda b: b.key)  # spilled ones as summaries, not loaded

    def set_mode(self, key: str, mode: str) -> ImageBaseline:
        b = self.get(key)
        b.set_mode(Mode(mode))
        self.dirty.add(key)
        log.info("baseline %s: mode %s", key, mode)
        return b

    def reset(self, key: str) -> ImageBaseline:
        b = self.get(key)
        b.reset()
        detach(b, "reset by an operator")
        self.dirty.add(key)
        if self.metrics is not None:
            self.metrics.forget_image(key)
        log.info("baseline %s: reset", key)
        return b

    def feedback(self, eid: str) -> tuple[ImageBaseline, list[NovelItem]]:
        rec = self.recent.get(eid)
        if rec is None:
            raise UnknownEventError(
                f"no anomaly event {eid!r} held (unknown, or older than the last "
                f"{self.config.recent_events} events)"
            )
        b = self.get(rec.image_key)
        accepted: dict[tuple[str, str], NovelItem] = {}
        for v in rec.vectors:
            for item in b.accept(v):
                accepted[(item.kind, item.value)] = item
        rec.accepted = True
        self.dirty.add(rec.image_key)
        log.info("feedback on %s: %d vectors of %s accepted", eid, len(rec.vectors), rec.image_key)
        return b, list(accepted.values())

    # -- introspection for metrics ------------------------------------------------------------------
    def state_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for b in list(self.baselines.values()):
            s = str(getattr(b.state, "value", b.state))
            counts[s] = counts.get(s, 0) + 1
        return counts

    def model_memory_bytes(self) -> float:
        """Sum over baselines of their state size (arrays + meta), as of each one's last checkpoint."""
        return float(sum(self.memory_sizes.values()))

    # -- persistence hooks (service/store.py) -------------------------------------------------------
    def service_state(self) -> dict[str, Any]:
        return {"sensors": dict(self.sensors), "containers": self.containers.to_list()}

    def load_service_state(self, meta: dict[str, Any]) -> None:
        self.sensors = {str(k): int(v) for k, v in meta.get("sensors", {}).items()}
        self.containers.load(meta.get("containers", []))
        self._forget_identities()
