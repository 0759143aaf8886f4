"""A sensor's batch at a shard that does not hold all of its images; a part forwarded to the shard that does.

A sensor sends each window to the owner of its image under the map it follows (``sensor/routing.py``), so a
batch is nearly always all this shard's: one look per routing key (:meth:`IngestRouter.batch`), then the usual
path (``IngestServicer._batch``: log, apply, acknowledge).  While the map changes, a batch may hold windows of
images held elsewhere (the sensor's map or this shard's is older) or fenced here (moving).  Then
(:meth:`IngestRouter._split_batch`):

1. the batch is decoded and split by routing key;
2. each part whose image is held elsewhere is forwarded there (``Shards.Forward``) and waits for its durable
   answer; a part whose image is fenced waits for the fence; a receiver that does not hold the image says where
   to try next;
3. then, in one step of the event loop, the rest is logged (as a batch of its own) and applied here, and the
   batch's acknowledgement adds up every part's.

A forwarded part counts in a stream of its own (:func:`~baseliner.service.shards.handover.forwarded_stream`:
origin shard, sensor, routing key) at the receiver, numbered with the sensor's batch sequence: a part sent again
(the origin crashed before acknowledging, or retried) is a duplicate there, and that stream's last sequence moves
with the image when it moves again.  The sensor's own sequence here moves once the batch is logged, so a resend
of the whole batch is a duplicate here.  ``docs/sharding.md`` has the argument that every window is applied once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np
from baseliner.models.block import TableMemo
from baseliner.models.errors import ValidationError
from baseliner.models.shards import routing_key
from baseliner.protos.v1 import ingest_pb2, shards_pb2, vectors_pb2
from baseliner.sensor import wire
from baseliner.service import auth
from baseliner.service.errors import ShardUnavailableError, WrongShardError
from baseliner.service.pipeline import BatchResult
from baseliner.service.servicer import _Ack
from baseliner.service.shards.handover import SEP, forwarded_stream, stream_key
from baseliner.service.shards.holdings import Route

log = logging.getLogger(__name__)

#: Seconds between tries of a part that found no holder yet (a map or a handover in progress).
RETRY_SECONDS = 0.05


def _reason(value: int) -> str:
    return ingest_pb2.RejectReason.Name(value).removeprefix("REJECT_REASON_")


class IngestRouter:
    """Ingest at a shard (see the module docstring); ``cluster`` is the shard's
    :class:`~baseliner.service.shards.cluster.Cluster`."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.holdings = cluster.holdings
        self.membership = cluster.membership
        self._tables: TableMemo[frozenset[str]] = TableMemo(256)  # identity table -> its routing keys

    @property
    def single(self) -> bool:
        return self.membership.single

    @property
    def epoch(self) -> int:
        return self.membership.epoch

    def check_hello(self, sensor_id: str, shard: str) -> None:
        """The stream is for this shard (``Hello.shard``), and its sensor id cannot pass for a forwarded stream."""
        if SEP in sensor_id or any(ord(c) < 32 for c in sensor_id):
            raise ValidationError("BAD_IDENTITY", "Hello.sensor_id holds a control character")
        m = self.membership
        if m.single:
            if shard not in ("", m.name):
                raise WrongShardError(f"this service is the one shard {m.name!r}, not {shard!r}: ask it for its map")
            return
        if not len(m.map):
            raise ShardUnavailableError(f"shard {m.name} has no shard map yet (the first shard proposes it)")
        if shard != m.name:
            raise WrongShardError(f"this is shard {m.name!r} (map epoch {m.epoch}), not {shard!r}: the sensor's "
                                  "shard map is not this service's; it asks any shard for the map again")

    # -- a sensor's batch -----------------------------------------------------------------------------
    async def batch(self, servicer: Any, sensor_id: str, node: str, batch: Any, allowed: str | None,
                    raw: memoryview | None) -> tuple[Any, int]:
        """The answer to one batch: this shard's usual path when every window is applied here."""
        keys = self._keys(servicer, batch)
        if keys is None or batch.sequence <= servicer.pipeline.last_sequence(sensor_id):
            return servicer._batch(sensor_id, node, batch, allowed, raw)  # (refusals and duplicates too)
        before = self._forwarded_before(servicer.pipeline, sensor_id, batch.sequence, keys)
        if not before and self.holdings.local(keys):
            return servicer._batch(sensor_id, node, batch, allowed, raw)
        return await self._split_batch(servicer, sensor_id, node, batch, allowed, raw, before)

    def _forwarded_before(self, pipeline: Any, sensor_id: str, seq: int, keys: frozenset[str]) -> frozenset[str]:
        """The keys whose windows of this batch this shard forwarded, and saw applied, before (this shard then
        died before logging the batch, and the key has moved here since with that forwarded stream's sequence):
        the sensor's resend must not apply them again."""
        name = self.membership.name
        return frozenset(k for k in keys if pipeline.sensors.get(forwarded_stream(name, sensor_id, k), 0) >= seq)

    def _keys(self, servicer: Any, batch: Any) -> frozenset[str] | None:
        """The routing keys of a batch's windows, from its identity table (None when it does not decode: the
        usual path refuses it)."""
        try:
            table = servicer.decoder.identity_table(batch.columns.identity_table)
        except ValidationError:
            return None
        keys = self._tables.get(table)
        if keys is None:
            keys = frozenset(routing_key(i.image_repository) for i in table)
            self._tables.put(table, keys)
        return keys

    async def _split_batch(self, servicer: Any, sensor_id: str, node: str, batch: Any,
                           allowed: str | None, raw: memoryview | None,
                           before: frozenset[str] = frozenset()) -> tuple[Any, int]:
        t0 = time.perf_counter()
        seq = batch.sequence
        try:
            servicer.decoder.check_batch(batch)
            block, rejected = auth.restrict_node(servicer.decoder.decode_block(batch), allowed)
        except ValidationError:
            return servicer._batch(sensor_id, node, batch, allowed, None)  # refused there, with its metrics
        if servicer.metrics is not None:
            servicer.metrics.received(node, len(block) + len(rejected))
        rows = _rows_by_key(block)
        applied_before = {k: _Remote(self.membership.name, shards_pb2.ForwardResult(applied=len(rows[k]),
                                                                                   duplicate=True), 0, rows[k])
                          for k in before if k in rows}
        rows = {k: r for k, r in rows.items() if k not in applied_before}
        remote = await self._place(sensor_id, seq, block, rows, allowed or "")
        remote.update(applied_before)
        # one step of the event loop from the last look (in _place) to the log
        if not remote:  # every part turned out to be this shard's (a fence lifted): the batch as it came
            data: bytes | memoryview = raw if raw is not None else batch.SerializeToString()
            done, lsn = servicer.log_and_apply(sensor_id, allowed or "", seq, (block, rejected), data, t0)
            return _Ack(seq, done), lsn
        local = [r for k, r in rows.items() if k not in remote]
        part = block.take(np.sort(np.concatenate(local))) if local else block.take(np.zeros(0, dtype=np.int64))
        data = wire.encode_batch_body([part.vector(i) for i in range(len(part))])
        done, lsn = servicer.log_and_apply(sensor_id, allowed or "", seq, (part, rejected), data, t0)
        return _Ack(seq, _combined(done, list(remote.values()))), lsn

    async def _place(self, sensor_id: str, seq: int, block: Any, rows: dict[str, np.ndarray],
                     node: str) -> dict[str, _Remote]:
        """Forward the parts held elsewhere until each is answered; return their answers by key.  Returns when
        every other key is applied here (checked last, with no wait after it)."""
        cfg = self.cluster.config.shards
        deadline = time.monotonic() + cfg.forward_timeout_seconds
        done: dict[str, _Remote] = {}
        hints: dict[str, str] = {}
        while True:
            todo = {k: self.holdings.where(k) for k in rows if k not in done}
            if all(d.route is Route.LOCAL for d in todo.values()):
                return done
            if time.monotonic() > deadline:
                waiting = sorted(k for k, d in todo.items() if d.route is not Route.LOCAL)
                raise ShardUnavailableError(f"no shard took the windows of {', '.join(waiting)} within "
                                            f"{cfg.forward_timeout_seconds:g}s (a shard that holds them is down, or "
                                            "a map change is in progress); the sensor sends them again")
            fences = [d.fence for d in todo.values() if d.route is Route.WAIT and d.fence is not None]
            targets: dict[str, list[str]] = {}
            for k, d in todo.items():
                if d.route is Route.FORWARD:
                    targets.setdefault(hints.get(k, d.target), []).append(k)
            progress = False
            if targets:
                answers = await asyncio.gather(*(
                    self._forward(t, sensor_id, seq, block, {k: rows[k] for k in ks}, node, deadline)
                    for t, ks in targets.items()))
                for got in answers:
                    for k, r in got.items():
                        if r.result is not None and not r.result.not_held:
                            done[k] = r
                            progress = True
                        elif r.result is not None:
                            self._not_held(k, r, hints)
            if fences:
                await asyncio.wait([asyncio.ensure_future(f.wait(RETRY_SECONDS * 20)) for f in fences],
                                   return_when=asyncio.FIRST_COMPLETED)
            elif not progress and any(d.route is not Route.LOCAL for d in todo.values()):
                await asyncio.sleep(RETRY_SECONDS)

    def _not_held(self, key: str, r: _Remote, hints: dict[str, str]) -> None:
        """A shard does not hold ``key``: try where it says, or create it here when it is its previous owner
        speaking under this map (it creates no baseline for ``key`` from then on)."""
        holder = r.result.holder if r.result is not None else ""
        if holder == self.membership.name and r.epoch >= self.membership.epoch:
            self.holdings.absent.add(key)
            hints.pop(key, None)
        elif holder and holder != r.target:
            hints[key] = holder
        else:
            hints.pop(key, None)

    async def _forward(self, target: str, sensor_id: str, seq: int, block: Any, parts: dict[str, np.ndarray],
                       node: str, deadline: float) -> dict[str, _Remote]:
        """One ``Forward`` call with the parts for ``target``; an unreachable shard answers nothing (retried)."""
        shard = self.membership.map.get(target) or (self.membership.previous.get(target)
                                                    if self.membership.previous is not None else None)
        if shard is None:
            return {}
        request = shards_pb2.ForwardRequest(from_shard=self.membership.name, epoch=self.membership.epoch)
        index: dict[str, np.ndarray] = {}
        for k, rows in parts.items():
            part = block.take(rows)
            index[k] = part.index
            request.parts.add(stream=forwarded_stream(self.membership.name, sensor_id, k), sequence=seq, node=node,
                              batch=wire.encode_batch_body([part.vector(i) for i in range(len(part))]))
        peers, metrics = self.cluster.peers, self.cluster.metrics
        try:
            reply = await peers.shards(shard.address).Forward(
                request, metadata=peers.metadata(), timeout=max(0.1, deadline - time.monotonic()))
        except Exception as e:  # noqa: BLE001 - any failure of the call: that shard is retried until the deadline
            metrics.forward_failures(target)
            log.debug("forwarding %d parts to %s failed: %s", len(parts), target, e)
            await asyncio.sleep(RETRY_SECONDS)
            return {}
        out = {}
        for k, result in zip(parts, reply.results, strict=False):
            out[k] = _Remote(target, result, reply.epoch, index[k])
            if not result.not_held:
                metrics.forwarded(target, len(index[k]))
        return out

    # -- a part forwarded here ------------------------------------------------------------------------
    async def receive(self, servicer: Any, part: Any) -> shards_pb2.ForwardResult:
        """Apply one forwarded part (exactly once per its stream and sequence), or say where it should go."""
        key = stream_key(part.stream)
        if key is None or part.sequence < 1:
            raise ValidationError("MISSING_FIELD", "a forwarded part names its stream SHARD\\x1fSENSOR\\x1fKEY and "
                                  "a sequence number")
        batch = vectors_pb2.VectorBatch.FromString(part.batch)
        servicer.decoder.check_batch(batch)
        block, rejected = servicer.decoder.decode_block(batch)
        if any(routing_key(i.image_repository) != key for i in block.identities):
            raise ValidationError("BAD_IDENTITY", f"a forwarded part of {key!r} holds windows of another image")
        t0 = time.perf_counter()
        deadline = time.monotonic() + self.cluster.config.shards.forward_timeout_seconds
        while True:
            d = self.holdings.where(key)
            if d.route is Route.LOCAL:
                break
            if d.route is Route.FORWARD:
                return shards_pb2.ForwardResult(not_held=True, holder=d.target)
            if time.monotonic() > deadline:
                raise ShardUnavailableError(f"routing key {key!r} stayed fenced here")
            if d.fence is not None:
                await d.fence.wait(max(0.01, deadline - time.monotonic()))
            else:
                await asyncio.sleep(RETRY_SECONDS)
        pipeline = servicer.pipeline
        if part.sequence <= pipeline.last_sequence(part.stream):
            return shards_pb2.ForwardResult(duplicate=True)
        self.cluster.metrics.received_forwarded(len(block))
        done, lsn = servicer.log_and_apply(part.stream, part.node, part.sequence, (block, rejected), part.batch, t0)
        result: BatchResult = await done
        if servicer.wal is not None:
            await servicer.wal.wait_durable(lsn)
        out = shards_pb2.ForwardResult(applied=result.applied, duplicate=result.duplicate)
        for e in result.rejected:
            out.rejected.add(index=max(e.index, 0), reason=_reason_value(e.reason), message=e.message[:512])
        return out


def _reason_value(reason: str) -> int:
    from baseliner.service.serde import reject_reason_value

    return int(reject_reason_value(reason))


def _rows_by_key(block: Any) -> dict[str, np.ndarray]:
    """The rows of each routing key, in their order."""
    keys = np.array([routing_key(i.image_repository) for i in block.identities], dtype=object)
    row_keys = keys[block.ident] if len(block) else np.zeros(0, dtype=object)
    out: dict[str, np.ndarray] = {}
    for k in dict.fromkeys(row_keys.tolist()):
        out[k] = np.flatnonzero(row_keys == k)
    return out


class _Remote:
    """A forwarded part's answer: from ``target`` (following map ``epoch``), for the batch rows ``index``."""

    __slots__ = ("target", "result", "epoch", "index")

    def __init__(self, target: str, result: Any, epoch: int, index: np.ndarray) -> None:
        self.target, self.result, self.epoch, self.index = target, result, epoch, index


def _combined(local: asyncio.Future[Any], remote: list[_Remote]) -> asyncio.Future[Any]:
    """The applier's promise for the local part, its result completed with the forwarded parts'."""
    out: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def finish(f: asyncio.Future[Any]) -> None:
        if out.done():
            return
        exc = f.exception()
        if exc is not None:
            out.set_exception(exc)
            return
        result: BatchResult = f.result()
        for r in remote:
            result.applied += r.result.applied
            for e in r.result.rejected:
                where = int(r.index[e.index]) if e.index < len(r.index) else 0
                result.rejected.append(ValidationError(_reason(e.reason), e.message, where))
        result.rejected.sort(key=lambda err: err.index)
        out.set_result(result)

    local.add_done_callback(finish)
    return out
