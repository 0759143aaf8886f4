"""A small but real gRPC Ingest server for the sensor client's tests.

It speaks the protocol of ``ingest.proto`` exactly (Hello -> Welcome, one BatchAck per batch, in order,
duplicates recognised by sequence number) and can be told to misbehave the way a real service or
network does: break a stream after applying a batch but before acknowledging it, stop acknowledging,
reject vectors or whole batches.  The service's own tests cover the real service; tests that need both
sides together use the real service (tests/test_sensor_client_service.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import grpc.aio
from baseliner.protos.v1 import ingest_pb2, ingest_pb2_grpc, vectors_pb2
from baseliner.service.serde import batch_size


@dataclass
class Behaviour:
    break_after_applying: int | None = None  # abort the stream after applying this many batches (no ack)
    hold_acks: bool = False  # apply nothing, acknowledge nothing
    reject_vector_index: int | None = None  # reject this vector of every batch
    reject_batches_over: int | None = None  # refuse batches with more vectors (TOO_LARGE)
    max_batch_vectors: int = 0
    welcome_lag: int = 0  # Welcome reports this many batches fewer than applied (a batch still in progress)
    require_token: str | None = None  # streams must carry "authorization: Bearer <token>"


@dataclass
class IngestState:
    last_sequence: dict[str, int] = field(default_factory=dict)
    applied: list[vectors_pb2.VectorBatch] = field(default_factory=list)
    received_sequences: list[int] = field(default_factory=list)
    hellos: list[ingest_pb2.Hello] = field(default_factory=list)
    duplicates: int = 0


class RecordingIngest(ingest_pb2_grpc.IngestServicer):
    def __init__(self, state: IngestState, behaviour: Behaviour) -> None:
        self.state = state
        self.behaviour = behaviour

    async def Stream(  # noqa: N802 (gRPC method name)
        self, request_iterator: AsyncIterator[ingest_pb2.IngestRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ingest_pb2.IngestResponse]:
        if self.behaviour.require_token is not None:
            meta = dict(context.invocation_metadata() or ())
            if meta.get("authorization") != f"Bearer {self.behaviour.require_token}":
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "test: sensor token required")
        it = request_iterator.__aiter__()
        first = await it.__anext__()
        if not first.HasField("hello"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "first message must be Hello")
        sid = first.hello.sensor_id
        self.state.hellos.append(first.hello)
        yield ingest_pb2.IngestResponse(welcome=ingest_pb2.Welcome(
            last_sequence=max(0, self.state.last_sequence.get(sid, 0) - self.behaviour.welcome_lag),
            service_version="test",
            max_batch_vectors=self.behaviour.max_batch_vectors, durable_acks=False))
        applied_here = 0
        async for req in it:
            batch = req.batch
            self.state.received_sequences.append(batch.sequence)
            b = self.behaviour
            if b.hold_acks:
                continue
            last = self.state.last_sequence.get(sid, 0)
            if batch.sequence <= last:
                self.state.duplicates += 1
                yield ingest_pb2.IngestResponse(ack=ingest_pb2.BatchAck(sequence=batch.sequence, duplicate=True))
                continue
            if b.reject_batches_over is not None and batch_size(batch) > b.reject_batches_over:
                self.state.last_sequence[sid] = batch.sequence
                yield ingest_pb2.IngestResponse(ack=ingest_pb2.BatchAck(
                    sequence=batch.sequence, batch_rejected=ingest_pb2.REJECT_REASON_TOO_LARGE,
                    batch_message="too many vectors"))
                continue
            self.state.applied.append(batch)
            self.state.last_sequence[sid] = batch.sequence
            applied_here += 1
            if b.break_after_applying is not None and applied_here >= b.break_after_applying:
                b.break_after_applying = None  # once
                await context.abort(grpc.StatusCode.UNAVAILABLE, "test: stream broken after apply")
            rejected = []
            n = batch_size(batch)
            if b.reject_vector_index is not None and b.reject_vector_index < n:
                rejected.append(ingest_pb2.Rejection(index=b.reject_vector_index,
                                                     reason=ingest_pb2.REJECT_REASON_NOT_FINITE,
                                                     message="test rejection"))
            yield ingest_pb2.IngestResponse(ack=ingest_pb2.BatchAck(
                sequence=batch.sequence, applied=n - len(rejected), rejected=rejected))


class IngestServer:
    """Start/stop a server on a fixed port (so a client can reconnect to the same address)."""

    def __init__(self, port: int = 0, behaviour: Behaviour | None = None, state: IngestState | None = None,
                 credentials: grpc.ServerCredentials | None = None):
        self.port = port
        self.credentials = credentials
        self.behaviour = behaviour or Behaviour()
        self.state = state or IngestState()
        self._server: grpc.aio.Server | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        server = grpc.aio.server()
        ingest_pb2_grpc.add_IngestServicer_to_server(RecordingIngest(self.state, self.behaviour), server)
        addr = f"127.0.0.1:{self.port}"
        if self.credentials is not None:
            self.port = server.add_secure_port(addr, self.credentials)
        else:
            self.port = server.add_insecure_port(addr)
        await server.start()
        self._server = server

    async def stop(self, grace: float | None = None) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None


async def wait_for(pred, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
