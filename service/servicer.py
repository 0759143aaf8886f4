"""Thin gRPC servicers: protobuf in -> ``baseliner.service.serde`` -> ``baseliner.service.pipeline`` -> protobuf out.

No domain logic here.  Errors become gRPC statuses through ``baseliner.service.errors`` only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from baseliner.models.errors import BaselinerError, ValidationError
from baseliner.protos.v1 import admin_pb2, admin_pb2_grpc, ingest_pb2, ingest_pb2_grpc
from baseliner.protos.v1.schema import unsupported
from baseliner.service import auth, serde
from baseliner.service.errors import DurabilityError, ProtocolError, SchemaVersionError, abort
from baseliner.service.pipeline import Pipeline
from baseliner.service.sinks.metrics import ServiceMetrics

log = logging.getLogger(__name__)

SERVICE_VERSION = "0.1.0"


#: Answers a stream's reader may queue ahead of the acks being sent (see IngestServicer.Stream).
ACKS_AHEAD = 2
#: Turns of the event loop the applier yields, at most, for more batches before its next call.
_GATHER_TURNS = 8


@dataclass(slots=True)
class _Ack:
    """A batch's acknowledgement to come: its sequence number and the applier's result."""

    sequence: int
    done: asyncio.Future[Any]


@dataclass(slots=True)
class _Pending:
    sensor_id: str
    sequence: int
    decoded: Any  # serde.DecodedBlock
    done: asyncio.Future[Any]  # the pipeline's BatchResult
    started: float  # perf_counter when the batch was taken


class _Applier:
    """Applies the batches that streams hand in, many at a time (``Pipeline.apply_blocks``).

    Streams queue their checked, decoded and logged batches here; one task applies whatever is waiting
    in one pipeline call, at most one batch of each sensor per call (later ones wait for the next), and
    hands each stream its result.  With many sensors each sending small batches, the pipeline's fixed
    cost per call is paid once for all the batches that arrived while the previous call ran.  The task
    runs while batches wait and ends when none do.
    """

    def __init__(self, pipeline: Pipeline, metrics: ServiceMetrics | None) -> None:
        self.pipeline = pipeline
        self.metrics = metrics
        self.pending: list[_Pending] = []
        self.task: asyncio.Task[None] | None = None
        self.calls = 0  # pipeline calls made
        self.batches = 0  # batches applied

    def submit(self, sensor_id: str, sequence: int, decoded: Any, started: float) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        self.pending.append(_Pending(sensor_id, sequence, decoded, done, started))
        if self.task is None or self.task.done():
            self.task = loop.create_task(self._run())
        return done

    def drain(self) -> None:
        """Apply everything that waits, now (a checkpoint's snapshot must hold every batch logged)."""
        while self.pending:
            self._apply_round()

    async def _run(self) -> None:
        while self.pending:
            self._apply_round()
            # let the streams hand in what arrived meanwhile: a stream's message takes a few turns of the
            # event loop to reach its reader, so yield until no more come (a few turns at most)
            for _ in range(_GATHER_TURNS):
                waiting = len(self.pending)
                await asyncio.sleep(0)
                if len(self.pending) == waiting:
                    break

    def _apply_round(self) -> None:
        take: list[_Pending] = []
        rest: list[_Pending] = []
        sensors: set[str] = set()
        for item in self.pending:  # (applied even if its stream has gone: it is in the log)
            if item.sensor_id in sensors:
                rest.append(item)
            else:
                sensors.add(item.sensor_id)
                take.append(item)
        self.pending = rest
        try:
            results = self.pipeline.apply_blocks([(p.sensor_id, p.sequence, *p.decoded) for p in take])
        except Exception as e:  # ends the streams of these batches (the stream answers with the error)
            log.exception("applying %d batches failed", len(take))
            for p in take:
                if not p.done.done():
                    p.done.set_exception(e)
        else:
            self.calls += 1
            self.batches += len(take)
            now = time.perf_counter()
            for p, result in zip(take, results, strict=True):
                if not p.done.done():  # (its stream may have gone)
                    p.done.set_result(result)
                if self.metrics is not None:
                    self.metrics.ingest_latency.observe(now - p.started)
        evict = getattr(self.pipeline.baselines, "evict_excess", None)
        if evict is not None:  # spill least recently used baselines between calls (service/spill.py)
            evict()


@dataclass(slots=True)
class _StreamState:
    sensor_id: str = ""
    node: str = ""
    allowed: str | None = None  # the node this stream's token allows (None: no sensor tokens)


class IngestServicer(ingest_pb2_grpc.IngestServicer):
    def __init__(
        self,
        pipeline: Pipeline,
        decoder: serde.Decoder,
        metrics: ServiceMetrics | None = None,
        durable_acks: bool = False,
        wal: Any = None,
        authorizer: auth.Authorizer | None = None,
        idle_seconds: float | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.decoder = decoder
        self.metrics = metrics
        self.wal = wal  # baseliner.service.wal.WriteAheadLog: acks wait for it and say durable
        self.durable_acks = durable_acks or wal is not None
        self.authorizer = authorizer
        self.idle_seconds = idle_seconds
        self.streams = 0
        self.applier = _Applier(pipeline, metrics)

    async def Stream(  # noqa: N802 - gRPC method name
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ingest_pb2.IngestResponse]:
        """Answer a sensor's stream: Welcome to its Hello, then one ack per batch, in order.

        A reader task takes the messages and applies the batches; this coroutine sends their answers, an
        ack once its batch is durable.  So the next batch is applied while the write-ahead log's fsync of
        the previous one runs (up to ``ACKS_AHEAD + 1`` batches are applied ahead of their acks; each is
        in the log before it is applied).  A protocol error is answered after the acks before it.
        """
        self.streams += 1
        stream = _StreamState()
        answers: asyncio.Queue[Any] = asyncio.Queue(maxsize=ACKS_AHEAD)
        reader = asyncio.create_task(self._read(request_iterator, context, stream, answers))
        try:
            while True:
                item = await answers.get()
                if item is None:  # the sensor closed its side and everything is answered
                    break
                if isinstance(item, BaselinerError):
                    await abort(context, item)
                if isinstance(item, BaseException):
                    raise item
                resp, lsn = item
                if isinstance(resp, _Ack):  # applied with other streams' batches: wait for its result
                    result = await resp.done
                    resp = serde.batch_ack(resp.sequence, result.applied, result.rejected, duplicate=result.duplicate)
                if lsn is not None and self.wal is not None and not resp.ack.batch_rejected:
                    await self.wal.wait_durable(lsn)
                    resp.ack.durable = True
                yield resp
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            self.streams -= 1
            if stream.sensor_id:
                log.info("sensor %s disconnected", stream.sensor_id)

    async def _read(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext, stream: _StreamState,
        answers: asyncio.Queue[Any],
    ) -> None:
        """Take the stream's messages, apply them, and queue their answers (``(response, log record)``;
        ``None`` at the end; the error that ends the stream)."""
        try:
            requests = aiter(request_iterator)
            loop = asyncio.get_running_loop()
            idle = self.idle_seconds
            # One timeout for the stream, armed only while waiting for a message (processing and a full
            # answer queue are not idleness): cheaper than a wait_for, which makes a task per message.
            deadline = asyncio.timeout(None)
            try:
                async with deadline:
                    while True:
                        if idle is not None:
                            deadline.reschedule(loop.time() + idle)
                        try:
                            item = await anext(requests)
                        except StopAsyncIteration:
                            break
                        deadline.reschedule(None)
                        await self._take(item, context, stream, answers)
            except TimeoutError:
                if not deadline.expired():
                    raise
                raise ProtocolError(f"no message for {idle:g}s; closing the stream") from None
            await answers.put(None)
        except Exception as e:  # ends the stream once the answers before it are sent
            await answers.put(e)

    async def _take(
        self, item: Any, context: grpc.aio.ServicerContext, stream: _StreamState, answers: asyncio.Queue[Any]
    ) -> None:
        """One message of a stream: answer a Hello, hand in a batch."""
        # add_ingest_servicer registers serde.parse_request as the deserializer (the batch's bytes come too)
        req, raw = (item.message, item.batch_bytes) if isinstance(item, serde.Incoming) else (item, None)
        body = req.WhichOneof("body")
        if body == "hello":
            await answers.put((self._hello(req.hello, context, stream), None))
        elif body == "batch":
            if not stream.sensor_id:
                raise ProtocolError("the first message of a stream must be a Hello")
            await answers.put(self._batch(stream.sensor_id, stream.node, req.batch, stream.allowed, raw))
        else:
            raise ProtocolError("empty IngestRequest (neither hello nor batch)")

    def _hello(self, h: Any, context: grpc.aio.ServicerContext, stream: _StreamState) -> ingest_pb2.IngestResponse:
        if stream.sensor_id:
            raise ProtocolError("Hello sent twice on one stream")
        if not h.sensor_id:
            raise ValidationError("MISSING_FIELD", "Hello.sensor_id is empty")
        if h.schema_version != serde.SCHEMA_VERSION:
            log.warning("sensor %s refused: %s", h.sensor_id, unsupported(h.schema_version))
            raise SchemaVersionError(unsupported(h.schema_version))
        if self.authorizer is not None:
            try:
                stream.allowed = self.authorizer.sensor_node(context.invocation_metadata())
                auth.check_hello_node(stream.allowed, h.node)
            except BaselinerError as e:
                log.warning("sensor %s refused: %s", h.sensor_id, e)
                raise
        stream.sensor_id, stream.node = h.sensor_id, h.node
        last = self.pipeline.last_sequence(stream.sensor_id)
        log.info("sensor %s (node %s, %s) connected; last applied batch %d",
                 stream.sensor_id, stream.node, h.sensor_version or "unknown version", last)
        return serde.welcome(last, SERVICE_VERSION, self.decoder.max_batch_vectors, self.durable_acks)

    def _batch(
        self, sensor_id: str, node: str, batch: Any, allowed: str | None = None, raw: memoryview | None = None
    ) -> tuple[ingest_pb2.IngestResponse | _Ack, int]:
        """Check, log (write-ahead) and hand one batch to the applier; returns its ack (or the applier's
        promise of it) and the log record to wait for.

        ``raw`` is the batch's bytes as received, logged as they are (else the batch is serialised again).
        """
        t0 = time.perf_counter()
        m = self.metrics
        seq = batch.sequence
        n = serde.batch_size(batch)
        if m is not None:
            m.received(node, n)
        try:
            self.decoder.check_batch(batch)
            if seq < 1:
                raise ValidationError("MISSING_FIELD", "VectorBatch.sequence must be >= 1")
            duplicate = seq <= self.pipeline.last_sequence(sensor_id)
            decoded = None if duplicate else auth.restrict_node(self.decoder.decode_block(batch), allowed)
        except ValidationError as e:
            if m is not None:
                m.batches_refused.labels(e.reason).inc()
                if n:
                    m.rejected(e.reason, n)
            log.warning("sensor %s: batch %d refused: %s", sensor_id, seq, e.message)
            return serde.batch_refused(seq, e), 0
        lsn = self.wal.lsn if self.wal is not None else 0
        if decoded is None:
            if m is not None:
                m.batches_duplicate.inc()
            resp = serde.batch_ack(seq, 0, (), duplicate=True)
        else:
            if self.wal is not None:  # logged before it is applied, in the same step of the event loop
                from baseliner.service.wal import KIND_BATCH, Record

                try:
                    data = raw if raw is not None else batch.SerializeToString()
                    lsn = self.wal.append(Record(KIND_BATCH, sensor_id, allowed or "", seq, data))
                except (OSError, ValueError) as e:
                    log.error("write-ahead log: cannot record batch %d of %s: %s", seq, sensor_id, e)
                    raise DurabilityError(f"the service cannot record batches durably right now ({e})") from None
            return _Ack(seq, self.applier.submit(sensor_id, seq, decoded, t0)), lsn
        if m is not None:
            m.ingest_latency.observe(time.perf_counter() - t0)
        return resp, lsn


def add_ingest_servicer(servicer: IngestServicer, server: grpc.aio.Server) -> None:
    """Register ``Ingest`` like the generated ``add_IngestServicer_to_server``, with
    :func:`baseliner.service.serde.parse_request` as the request deserializer (the servicer gets each batch's bytes
    as received, for the write-ahead log)."""
    handlers = {
        "Stream": grpc.stream_stream_rpc_method_handler(
            servicer.Stream,
            request_deserializer=serde.parse_request,
            response_serializer=ingest_pb2.IngestResponse.SerializeToString,
        ),
    }
    name = ingest_pb2.DESCRIPTOR.services_by_name["Ingest"].full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
    server.add_registered_method_handlers(name, handlers)


class AdminServicer(admin_pb2_grpc.AdminServicer):
    def __init__(self, pipeline: Pipeline, sizes: dict[str, int] | None = None,
                 on_change: Callable[[], Awaitable[None]] | None = None) -> None:
        self.pipeline = pipeline
        self.sizes = sizes if sizes is not None else {}
        self.on_change = on_change  # makes a change durable (a checkpoint) before the RPC answers

    async def _changed(self) -> None:
        if self.on_change is not None:
            await self.on_change()

    def _proto(self, b: Any, detail: bool = False) -> admin_pb2.Baseline:
        return serde.baseline_to_proto(b, detail=detail, serialized_bytes=self.sizes.get(b.key, 0))

    async def ListBaselines(  # noqa: N802
        self, request: admin_pb2.ListBaselinesRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListBaselinesResponse:
        return admin_pb2.ListBaselinesResponse(baselines=[self._proto(b) for b in self.pipeline.all()])

    async def GetBaseline(  # noqa: N802
        self, request: admin_pb2.GetBaselineRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.Baseline:
        try:
            return self._proto(self.pipeline.get(request.key), detail=True)
        except BaselinerError as e:
            await abort(context, e)

    async def SetMode(  # noqa: N802
        self, request: admin_pb2.SetModeRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.Baseline:
        try:
            resp = self._proto(self.pipeline.set_mode(request.key, serde.mode_from_proto(request.mode)))
        except BaselinerError as e:
            await abort(context, e)
        await self._changed()
        return resp

    async def ResetBaseline(  # noqa: N802
        self, request: admin_pb2.ResetBaselineRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.Baseline:
        try:
            resp = self._proto(self.pipeline.reset(request.key))
        except BaselinerError as e:
            await abort(context, e)
        await self._changed()
        return resp

    async def Feedback(  # noqa: N802
        self, request: admin_pb2.FeedbackRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.FeedbackResponse:
        try:
            b, items = self.pipeline.feedback(request.event_id)
        except BaselinerError as e:
            await abort(context, e)
        if request.comment:
            log.info("feedback comment on %s: %s", request.event_id, request.comment[:500])
        await self._changed()
        return admin_pb2.FeedbackResponse(
            baseline=self._proto(b), accepted_items=[f"{i.kind}:{i.value}" for i in items]
        )
