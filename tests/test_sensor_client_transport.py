"""sensor/transport.py against a real gRPC server: order, acks, reconnects, resends, bounded buffer."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from typing import Any

import grpc
import pytest
from baseliner.models.block import COUNTER_INDEX
from baseliner.models.vector import FeatureVector, Identity
from baseliner.protos.v1 import vectors_pb2
from baseliner.sensor import transport as transport_module
from baseliner.sensor.buffer import MemoryBuffer
from baseliner.sensor.transport import Backoff, ServiceIncompatible, Transport
from baseliner.service.serde import Decoder, batch_size
from prometheus_client import CollectorRegistry

sys.path.insert(0, os.path.dirname(__file__))
from sensor_ingest_server import Behaviour, IngestServer, IngestState, wait_for  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _vectors(n: int, start: int = 0) -> list[FeatureVector]:
    ident = Identity("node-a", "c1", "nginx", "1.25", pod="web-1", namespace="shop")
    return [
        FeatureVector(ident, 1_700_000_000.0 + 10 * (start + i), 10.0, syscalls={"read": start + i, "write": 2},
                      bytes_sent=start + i)
        for i in range(n)
    ]


def _containers_vectors(n: int, start: int = 0) -> list[FeatureVector]:
    """Windows of four containers of one image in turn, with n-grams (a count past the entry form's in some,
    every seventh window without)."""
    vectors = _vectors(n, start)
    for i, v in enumerate(vectors, start):
        v.identity = Identity("node-a", f"c{i % 4}", "nginx", "1.25", pod=f"web-{i % 4}", namespace="shop")
        v.ngrams = {} if i % 7 == 3 else {i: 1 + i, 5000 + i: 40_000 + i, 77_823: 3}
    return vectors


def _received(batches: list[vectors_pb2.VectorBatch]) -> list[FeatureVector]:
    """Every window the server applied, as the service decodes it."""
    out = []
    for batch in batches:
        block, errors = Decoder().decode_block(batch)
        assert errors == []
        out.extend(block.vectors())
    return out


def _fast_backoff() -> Backoff:
    return Backoff(initial=0.02, maximum=0.1, jitter=0.5)


def _bytes_sent(batch: vectors_pb2.VectorBatch) -> list[int]:
    """``bytes_sent`` of every window of ``batch``, as the service decodes it (either window form)."""
    block, errors = Decoder().decode_block(batch)
    assert errors == []
    return [int(x) for x in block.counters[:, COUNTER_INDEX["bytes_sent"]]]


def _delivered(state: IngestState) -> list[int]:
    """``bytes_sent`` of every applied vector, in the order applied (identifies vectors uniquely)."""
    return [x for b in state.applied for x in _bytes_sent(b)]


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_batches_in_order_and_acknowledged() -> None:
    async def body() -> None:
        server = IngestServer()
        await server.start()
        registry = CollectorRegistry()
        async with Transport(server.target, sensor_id="s1", node="node-a", batch_size=100,
                             buffer=MemoryBuffer(first_sequence=1), registry=registry) as t:
            await t.submit(_vectors(1050))
            assert await t.flush(10)
        await server.stop()
        seqs = [b.sequence for b in server.state.applied]
        assert seqs == list(range(1, 12))
        assert [batch_size(b) for b in server.state.applied] == [100] * 10 + [50]
        assert _delivered(server.state) == list(range(1050))
        assert server.state.hellos[0].sensor_id == "s1" and server.state.hellos[0].node == "node-a"
        assert t.stats.batches_acked == 11 and t.stats.vectors_applied == 1050
        assert registry.get_sample_value("baseliner_sensor_batches_acked_total", {"shard": ""}) == 11
        assert registry.get_sample_value("baseliner_sensor_buffer_batches", {"shard": ""}) == 0
        # the per-batch syscall dictionary is shared by the vectors
        assert list(server.state.applied[0].syscall_names) == ["read", "write"]

    run(body())


def test_a_batch_goes_image_by_image_each_container_in_order() -> None:
    """A window's vectors are sent grouped by image (the service then scores them in place), and the
    grouping never reorders one container's windows."""
    async def body() -> None:
        server = IngestServer()
        await server.start()
        vectors = []
        for i in range(12):  # two windows of each of six containers of three images, interleaved
            image = ("nginx", "redis", "app")[i % 3]
            ident = Identity("node-a", f"{image}-{i % 2}", image, "1")
            vectors.append(FeatureVector(ident, 1_700_000_000.0 + 10 * (i // 6), 10.0, syscalls={"read": 1},
                                         bytes_sent=i))
        async with Transport(server.target, sensor_id="s1", node="node-a", batch_size=100,
                             buffer=MemoryBuffer(first_sequence=1)) as t:
            await t.submit(vectors)
            assert await t.flush(10)
        await server.stop()
        (batch,) = server.state.applied
        sent = [vectors[i] for i in _bytes_sent(batch)]
        images = [v.identity.image_repository for v in sent]
        assert images == sorted(images)  # one run per image
        for c in {v.identity.container_id for v in vectors}:
            mine = [v.window_start for v in sent if v.identity.container_id == c]
            assert mine == sorted(mine) and len(mine) == 2

    run(body())


def test_reconnect_resends_unacknowledged_in_order_without_duplicates() -> None:
    async def body() -> None:
        server = IngestServer(behaviour=Behaviour(break_after_applying=3))
        await server.start()
        async with Transport(server.target, sensor_id="s1", node="node-a", batch_size=10,
                             buffer=MemoryBuffer(first_sequence=1), backoff=_fast_backoff()) as t:
            await t.submit(_vectors(200))
            assert await t.flush(20)
        await server.stop()
        # the stream broke after batch 3 was applied but before its ack: Welcome.last_sequence covered it
        assert t.stats.connect_failures >= 1 and t.stats.connects >= 2
        assert [b.sequence for b in server.state.applied] == list(range(1, 21))
        assert _delivered(server.state) == list(range(200))
        # batch 3 was applied but not acknowledged: Welcome.last_sequence covered it, so it was not resent
        assert t.stats.batches_already_applied == 1
        received = server.state.received_sequences
        assert received == sorted(set(received)) and server.state.duplicates == 0

    run(body())


def test_duplicate_acks_after_a_stale_welcome() -> None:
    async def body() -> None:
        # batches 5 and 6 are applied but their acks lost; the next Welcome still says 4 (they were in
        # progress when it was written): the sensor resends them and the service answers "duplicate"
        server = IngestServer(behaviour=Behaviour(break_after_applying=6, welcome_lag=2))
        await server.start()
        async with Transport(server.target, sensor_id="s1", node="node-a", batch_size=10, max_in_flight=1,
                             buffer=MemoryBuffer(first_sequence=1), backoff=_fast_backoff()) as t:
            await t.submit(_vectors(100))
            assert await t.flush(20)
        await server.stop()
        assert server.state.duplicates >= 1 and t.stats.batches_duplicate == server.state.duplicates
        assert [b.sequence for b in server.state.applied] == list(range(1, 11))
        assert _delivered(server.state) == list(range(100))

    run(body())


def test_service_restart_mid_stream_and_start_while_down() -> None:
    async def body() -> None:
        port = _free_port()
        state = IngestState()
        server = IngestServer(port, state=state)
        registry = CollectorRegistry()
        t = Transport(server.target, sensor_id="s1", node="node-a", batch_size=10,
                      buffer=MemoryBuffer(first_sequence=1), backoff=_fast_backoff(), registry=registry)
        t.start()
        await t.submit(_vectors(50))  # service not there yet: buffered
        await asyncio.sleep(0.2)
        assert t.buffer.batches == 5 and not state.applied
        await server.start()
        await wait_for(lambda: len(state.applied) == 5)
        await server.stop()  # service goes away
        await t.submit(_vectors(50, start=50))
        await asyncio.sleep(0.2)
        server = IngestServer(port, state=state)  # comes back with its state
        await server.start()
        assert await t.flush(20)
        await t.close()
        await server.stop()
        assert [b.sequence for b in state.applied] == list(range(1, 11))
        assert _delivered(state) == list(range(100))
        assert registry.get_sample_value("baseliner_sensor_connect_failures_total", {"shard": ""}) >= 2

    run(body())


def test_bounded_buffer_drops_oldest_and_counts() -> None:
    async def body() -> None:
        port = _free_port()
        registry = CollectorRegistry()
        t = Transport(f"127.0.0.1:{port}", sensor_id="s1", node="node-a", batch_size=10,
                      buffer=MemoryBuffer(max_batches=4, first_sequence=1), on_full="drop",
                      backoff=_fast_backoff(), registry=registry)
        t.start()
        await t.submit(_vectors(100))  # 10 batches, room for 4
        assert t.stats.batches_dropped == 6 and t.stats.vectors_dropped == 60
        assert registry.get_sample_value("baseliner_sensor_batches_dropped_total", {"shard": ""}) == 6
        assert registry.get_sample_value("baseliner_sensor_vectors_dropped_total", {"shard": ""}) == 60
        server = IngestServer(port)
        await server.start()
        assert await t.flush(20)
        await t.close()
        await server.stop()
        # the newest survive, in order, with their original (gapped) sequence numbers
        assert [b.sequence for b in server.state.applied] == [7, 8, 9, 10]
        assert _delivered(server.state) == list(range(60, 100))

    run(body())


def test_block_policy_waits_instead_of_dropping() -> None:
    async def body() -> None:
        server = IngestServer()
        await server.start()
        async with Transport(server.target, sensor_id="s1", node="node-a", batch_size=10, max_in_flight=2,
                             buffer=MemoryBuffer(max_batches=3, first_sequence=1), on_full="block") as t:
            for i in range(30):
                await t.submit(_vectors(10, start=10 * i))
                assert t.buffer.batches <= 3
            assert await t.flush(20)
        await server.stop()
        assert t.stats.batches_dropped == 0
        assert _delivered(server.state) == list(range(300))

    run(body())


def test_restarted_sensor_continues_above_service_sequence() -> None:
    async def body() -> None:
        server = IngestServer()
        await server.start()
        server.state.last_sequence["s1"] = 500  # a previous incarnation got this far
        # a fresh process whose counter is below (clock stepped back): its unsent batches are renumbered
        async with Transport(server.target, sensor_id="s1", node="node-a", batch_size=10,
                             buffer=MemoryBuffer(first_sequence=1)) as t:
            await t.submit(_vectors(30))
            assert await t.flush(10)
            await t.submit(_vectors(10, start=30))
            assert await t.flush(10)
        await server.stop()
        assert [b.sequence for b in server.state.applied] == [501, 502, 503, 504]
        assert server.state.duplicates == 0
        assert _delivered(server.state) == list(range(40))

    run(body())


def test_rejections_counted_and_batch_refusal_not_resent() -> None:
    async def body() -> None:
        server = IngestServer(behaviour=Behaviour(reject_vector_index=0, reject_batches_over=15))
        await server.start()
        registry = CollectorRegistry()
        async with Transport(server.target, sensor_id="s1", node="node-a", batch_size=10,
                             buffer=MemoryBuffer(first_sequence=1), registry=registry) as t:
            await t.submit(_vectors(30))
            t.batch_size = 20
            await t.submit(_vectors(20, start=30))  # refused whole
            await t.submit(_vectors(5, start=50))
            assert await t.flush(10)
        await server.stop()
        assert t.stats.vectors_rejected == 3 + 20 + 1
        assert t.stats.batches_rejected == 1
        assert registry.get_sample_value("baseliner_sensor_vectors_rejected_total", {"shard": ""}) == 24
        assert [b.sequence for b in server.state.applied] == [1, 2, 3, 5]
        assert server.state.received_sequences == [1, 2, 3, 4, 5]

    run(body())


def test_welcome_max_batch_vectors_limits_batch_size() -> None:
    async def body() -> None:
        server = IngestServer(behaviour=Behaviour(max_batch_vectors=7))
        await server.start()
        async with Transport(server.target, sensor_id="s1", node="node-a", batch_size=100,
                             buffer=MemoryBuffer(first_sequence=1)) as t:
            await t.submit(_vectors(1))  # connects and learns the limit
            assert await t.flush(10)
            await t.submit(_vectors(20, start=1))
            assert await t.flush(10)
        await server.stop()
        assert [batch_size(b) for b in server.state.applied] == [1, 7, 7, 6]

    run(body())


def test_missing_acks_time_out_and_resend() -> None:
    async def body() -> None:
        server = IngestServer(behaviour=Behaviour(hold_acks=True))
        await server.start()
        t = Transport(server.target, sensor_id="s1", node="node-a", batch_size=10, ack_timeout=0.3,
                      buffer=MemoryBuffer(first_sequence=1), backoff=_fast_backoff())
        t.start()
        await t.submit(_vectors(20))
        await wait_for(lambda: t.stats.connect_failures >= 1)
        server.behaviour.hold_acks = False
        assert await t.flush(10)
        await t.close()
        await server.stop()
        assert t.stats.batches_resent >= 2
        assert [b.sequence for b in server.state.applied] == [1, 2]

    run(body())


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        Transport("x:1", sensor_id="", node="n")
    with pytest.raises(ValueError):
        Transport("x:1", sensor_id="s", node="n", on_full="maybe")
    with pytest.raises(ValueError):
        MemoryBuffer(max_batches=0)


def test_a_broken_stream_loses_nothing_and_applies_nothing_twice() -> None:
    """The stream breaks after the service applied two batches (the second one's ack is lost: the next
    Welcome covers it): every batch is applied once, in order, over two connections, each window as sent."""
    sent = _containers_vectors(60)

    async def body() -> Transport:
        server = IngestServer(behaviour=Behaviour(break_after_applying=2))
        await server.start()
        registry = CollectorRegistry()
        async with Transport(server.target, sensor_id="s1", node="node-a", batch_size=10,
                             buffer=MemoryBuffer(first_sequence=1), backoff=_fast_backoff(),
                             registry=registry) as t:
            await t.submit(sent)
            assert await t.flush(10)
        await server.stop()
        assert [b.sequence for b in server.state.applied] == [1, 2, 3, 4, 5, 6]
        assert _received(server.state.applied) == sent  # (one image: the order submitted)
        return t

    t = run(body())
    assert t.stats.batches_rejected == 0 and t.stats.vectors_rejected == 0
    assert t.stats.vectors_applied + 10 == len(sent)  # batch 2 was applied but its ack lost
    assert t.stats.vectors_applied_before == 10 and t.stats.connects == 2


class _LateWrites:
    """A channel whose stream calls return from ``write`` only after the service's answer to it was read: the
    order of events a busy event loop gives when the ack comes before the writer resumes."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel

    def stream_stream(self, *a: Any, **k: Any) -> Any:
        make = self._channel.stream_stream(*a, **k)

        def call(*ca: Any, **ck: Any) -> Any:
            inner = make(*ca, **ck)
            real_write = inner.write

            async def write(request: bytes) -> None:
                await real_write(request)
                if request[:1] == b"\x12":  # a batch: resume the writer only after its ack was read
                    await asyncio.sleep(0.05)

            inner.write = write
            return inner

        return call

    async def close(self) -> None:
        await self._channel.close()


def test_an_ack_read_before_its_write_returns_matches_its_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 16: an ack that arrived before the batch was recorded as in flight was a protocol error
    ("ack for seq N, expected None"): a reconnect, and the batches resent.  Now nothing is resent."""
    real_channel = transport_module.grpc.aio.insecure_channel
    monkeypatch.setattr(transport_module.grpc.aio, "insecure_channel",
                        lambda *a, **k: _LateWrites(real_channel(*a, **k)))

    async def body() -> Transport:
        server = IngestServer()
        await server.start()
        async with Transport(server.target, sensor_id="s1", node="node-a", batch_size=10, max_in_flight=4,
                             buffer=MemoryBuffer(first_sequence=1), backoff=_fast_backoff()) as t:
            await t.submit(_vectors(80))
            assert await t.flush(10)
        await server.stop()
        assert [b.sequence for b in server.state.applied] == list(range(1, 9))
        return t

    t = run(body())
    assert t.stats.connect_failures == 0 and t.stats.batches_resent == 0 and t.stats.connects == 1
    assert t.stats.batches_acked == 8 and t.stats.vectors_applied == 80 and t.stats.vectors_applied_before == 0


def test_a_service_of_another_schema_version_stops_the_transport_without_retrying(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real service refuses a Hello of another schema version (UNIMPLEMENTED, naming both): the
    transport says so once, stops, and submit raises; the buffered batches are reported, not resent."""
    from service_fixtures import config, running

    hello = transport_module.wire.hello_request_bytes
    monkeypatch.setattr(transport_module.wire, "hello_request_bytes",
                        lambda *a, **kw: hello(*a, **kw, schema_version=4))

    async def body() -> Transport:
        async with running(config()) as (srv, _):
            t = Transport(f"127.0.0.1:{srv.port}", sensor_id="s1", node="node-1", batch_size=10,
                          buffer=MemoryBuffer(first_sequence=1), backoff=_fast_backoff())
            t.start()
            await t.submit(_vectors(30))
            assert not await t.flush(5)  # at once: no acknowledgement will come
            with pytest.raises(ServiceIncompatible, match="schema version 4 is not supported: this service "
                                                          "reads schema version 3"):
                await t.submit(_vectors(1, start=40))
            await t.close()
            assert srv.pipeline.last_sequence("s1") == 0
        return t

    with caplog.at_level(logging.ERROR, logger="baseliner.sensor.transport"):
        t = run(body())
    assert t.stats.connect_failures == 0 and t.stats.connects == 0 and t.stats.batches_sent == 0
    assert t.undelivered() == (3, 30)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "UNIMPLEMENTED" in errors[0] and "3 batches (30 vectors) not delivered" in errors[0]


def test_flush_gives_up_after_a_bounded_time_without_an_acknowledgement() -> None:
    """Issue 16: with the service gone, waiting for acknowledgements ends after ``give_up_after`` seconds
    without one, also when the buffer is full and a staged batch waits for room; what is held is reported."""

    async def body() -> None:
        t = Transport(f"127.0.0.1:{_free_port()}", sensor_id="s1", node="node-a", batch_size=10,
                      buffer=MemoryBuffer(max_batches=2, first_sequence=1), backoff=Backoff(0.05, 0.2))
        t.start()
        await t.submit(_vectors(20))  # two batches: the buffer is full
        await t.submit(_vectors(5, start=20), flush=False)  # staged, waiting for room
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert not await t.flush(give_up_after=1.0)
        assert 0.9 < loop.time() - t0 < 3.0
        assert t.undelivered() == (3, 25)
        t0 = loop.time()
        assert not await t.flush(0.5)  # a total bound too
        assert loop.time() - t0 < 2.0
        await t.close(timeout=5.0)
        assert loop.time() - t0 < 3.0  # the reconnect's backoff does not hold the close
        # the staged windows became a batch, for which the full buffer evicted its oldest (counted, logged)
        assert t.undelivered() == (2, 15) and t.stats.vectors_dropped == 10

    run(body())


def test_a_stream_closed_for_a_new_address_hands_its_buffer_on_open() -> None:
    """A shard at a new address (sensor/routing.py): the old stream closes with ``keep_buffer`` and the new one
    sends what it holds; any other close closes the buffer."""

    class Buffer(MemoryBuffer):
        closed = 0

        def close(self) -> None:
            self.closed += 1

    async def body() -> tuple[int, int]:
        kept, closed = Buffer(first_sequence=1), Buffer(first_sequence=1)
        for buffer, keep in ((kept, True), (closed, False)):
            t = Transport(f"127.0.0.1:{_free_port()}", sensor_id="s1", node="node-1", buffer=buffer,
                          backoff=_fast_backoff())
            t.start()
            await t.submit(_vectors(3))
            await t.close(0.5, keep_buffer=keep)
        return kept.closed, closed.closed

    kept, closed = run(body())
    assert (kept, closed) == (0, 1)
