"""sensor/transport.py against a real gRPC server: order, acks, reconnects, resends, bounded buffer."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys

import pytest
from baseliner.models.block import COUNTER_INDEX
from baseliner.models.vector import FeatureVector, Identity
from baseliner.protos.v1 import ingest_pb2, vectors_pb2
from baseliner.sensor import wire
from baseliner.sensor.buffer import MemoryBuffer
from baseliner.sensor.transport import Backoff, Transport
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


def _gram_vectors(n: int, start: int = 0) -> list[FeatureVector]:
    """Vectors with n-gram counts (every seventh window without), distinct per window."""
    vectors = _vectors(n, start)
    for i, v in enumerate(vectors, start):
        v.ngrams = {} if i % 7 == 3 else {i: 1 + i, 5000 + i: 2**31 + i, 12_287: 3}
    return vectors


def _entry_gram_vectors(n: int, start: int = 0) -> list[FeatureVector]:
    """Vectors whose n-grams fit the entry form (counts 1..32767; every seventh window without)."""
    vectors = _vectors(n, start)
    for i, v in enumerate(vectors, start):
        v.ngrams = {} if i % 7 == 3 else {i: 1 + i, 5000 + i: 32767 - i, 77_823: 3}
    return vectors


def _form(batch: vectors_pb2.VectorBatch) -> str:
    """Which form a batch's n-grams came in ("entries", "pairs", "packed"; "none" without n-grams)."""
    c = batch.columns
    forms = [name for name, present in (("entries", c.ngram_entry_le32),
                                        ("pairs", c.ngram_bucket_le32 or c.ngram_count_le32),
                                        ("packed", len(c.ngram_bucket) or len(c.ngram_count))) if present]
    assert len(forms) <= 1, forms
    return forms[0] if forms else "none"


def _id_form(batch: vectors_pb2.VectorBatch) -> str:
    """Which form a batch's identity table came in ("table": the bytes of an IdentityTable, "repeated")."""
    c = batch.columns
    assert not (c.identity_table and len(c.identities))
    return "table" if c.identity_table else "repeated"


def _window_form(batch: vectors_pb2.VectorBatch) -> str:
    """Which form a batch's per-window numbers and syscall entries came in ("bytes": window_f64_le,
    window_u32_le and the syscall entries' bytes; "repeated"); refuses a mix."""
    c = batch.columns
    as_bytes = (bool(c.window_f64_le), bool(c.window_u32_le), bool(c.syscall_name_index_le16),
                bool(c.syscall_count_f64_le))
    as_repeated = (len(c.window_start) > 0, len(c.identity) > 0, len(c.syscall_name_index) > 0,
                   len(c.syscall_count) > 0)
    assert as_bytes in ((True,) * 4, (False,) * 4) and as_repeated == tuple(not x for x in as_bytes), c
    return "bytes" if as_bytes[0] else "repeated"


def _containers_vectors(n: int, start: int = 0) -> list[FeatureVector]:
    """Windows of four containers of one image in turn, n-grams in the entry form (every seventh without)."""
    vectors = _entry_gram_vectors(n, start)
    for i, v in enumerate(vectors, start):
        v.identity = Identity("node-a", f"c{i % 4}", "nginx", "1.25", pod=f"web-{i % 4}", namespace="shop")
    return vectors


def _received_identities(batches: list[vectors_pb2.VectorBatch]) -> list[Identity]:
    """The identity of every window the server applied, as the service decodes it."""
    out = []
    for batch in batches:
        for _, item in Decoder().decode(batch):
            assert isinstance(item, FeatureVector), item
            out.append(item.identity)
    return out


def _received_ngrams(batches: list[vectors_pb2.VectorBatch]) -> list[dict[int, int]]:
    """The n-gram counts of every window the server applied, as the service decodes them."""
    out = []
    for batch in batches:
        for _, item in Decoder().decode(batch):
            assert isinstance(item, FeatureVector), item
            out.append({b: int(x) for b, x in item.ngrams.items()})
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
        assert registry.get_sample_value("baseliner_sensor_batches_acked_total") == 11
        assert registry.get_sample_value("baseliner_sensor_buffer_batches") == 0
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
        assert registry.get_sample_value("baseliner_sensor_connect_failures_total") >= 2

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
        assert registry.get_sample_value("baseliner_sensor_batches_dropped_total") == 6
        assert registry.get_sample_value("baseliner_sensor_vectors_dropped_total") == 60
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
        assert registry.get_sample_value("baseliner_sensor_vectors_rejected_total") == 24
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


def _through_a_broken_stream(sent: list[FeatureVector], **behaviour: bool) -> tuple[IngestServer, Transport,
                                                                                     CollectorRegistry]:
    """Send ``sent`` (60 windows) in batches of 10 to a test service with ``behaviour`` whose stream breaks
    after it has applied two batches (the second one's ack is lost: the next Welcome covers it); check that
    every batch was applied once, in order, over two connections, with nothing refused."""
    out: list[tuple[IngestServer, Transport, CollectorRegistry]] = []

    async def body() -> None:
        server = IngestServer(behaviour=Behaviour(break_after_applying=2, **behaviour))
        await server.start()
        registry = CollectorRegistry()
        async with Transport(server.target, sensor_id="s1", node="node-a", batch_size=10,
                             buffer=MemoryBuffer(first_sequence=1), backoff=_fast_backoff(),
                             registry=registry) as t:
            await t.submit(sent)
            assert await t.flush(10)
        await server.stop()
        out.append((server, t, registry))

    run(body())
    server, t, registry = out[0]
    assert t.stats.batches_rejected == 0 and t.stats.vectors_rejected == 0
    assert t.stats.vectors_applied + 10 == len(sent) == 60  # batch 2 was applied but its ack lost
    assert [b.sequence for b in server.state.applied] == [1, 2, 3, 4, 5, 6]
    assert t.stats.connects == 2
    return server, t, registry


def test_older_service_gets_ngrams_packed_and_applies_every_batch(caplog: pytest.LogCaptureFixture) -> None:
    """A service built before the n-gram bytes form (no Welcome.ngram_bytes; refuses fields 44/45): the
    sensor sends the packed form, resends after a broken stream too, and nothing is refused."""
    caplog.set_level(logging.INFO, logger="baseliner.sensor.transport")
    sent = _gram_vectors(60)
    server, t, registry = _through_a_broken_stream(sent, before_ngram_bytes=True)
    assert t.welcome is not None and not t.welcome.ngram_bytes
    assert all(not b.columns.ngram_bucket_le32 and not b.columns.ngram_count_le32 and b.columns.ngram_bucket
               for b in server.state.applied)
    assert _received_ngrams(server.state.applied) == [v.ngrams for v in sent]
    assert t.stats.batches_ngrams_packed == t.stats.batches_sent >= 6
    assert registry.get_sample_value("baseliner_sensor_batches_ngrams_packed_total") == t.stats.batches_sent
    assert t.stats.batches_ngrams_paired == 0
    older = [r for r in caplog.records if "n-grams are sent in the packed form" in r.getMessage()]
    assert len(older) == 2 and all(r.levelno == logging.INFO for r in older)  # once per connection
    # nor does it read the identity table as bytes (field 47): repeated identities, counted and logged
    assert [_id_form(b) for b in server.state.applied] == ["repeated"] * 6
    assert t.stats.batches_identities_repeated == t.stats.batches_sent
    assert registry.get_sample_value("baseliner_sensor_batches_identities_repeated_total") == t.stats.batches_sent
    ids = [r for r in caplog.records if "identity tables are sent as repeated Identity" in r.getMessage()]
    assert len(ids) == 2 and all(r.levelno == logging.INFO for r in ids)
    # nor the window bytes form (48-51): repeated windows, counted
    assert [_window_form(b) for b in server.state.applied] == ["repeated"] * 6
    assert t.stats.batches_windows_repeated == t.stats.batches_sent
    assert registry.get_sample_value("baseliner_sensor_batches_windows_repeated_total") == t.stats.batches_sent


def test_service_without_either_flag_gets_entry_form_batches_packed() -> None:
    """A service that sets none of Welcome.ngram_bytes, ngram_entries and identity_table (it refuses fields
    44/45/46/47): batches encoded in the entry form (and one in the pair form) go packed, with their
    identity tables repeated (both conversions), none refused."""

    async def body() -> None:
        server = IngestServer(behaviour=Behaviour(before_ngram_bytes=True))
        await server.start()
        registry = CollectorRegistry()
        sent = _entry_gram_vectors(40) + _gram_vectors(10, 40)
        encoded = [_form(vectors_pb2.VectorBatch.FromString(wire.encode_batch_body(sent[k:k + 10])))
                   for k in range(0, 50, 10)]
        assert encoded == ["entries"] * 4 + ["pairs"]
        async with Transport(server.target, sensor_id="s1", node="node-a", batch_size=10,
                             buffer=MemoryBuffer(first_sequence=1), backoff=_fast_backoff(),
                             registry=registry) as t:
            await t.submit(sent)
            assert await t.flush(10)
        await server.stop()
        assert t.welcome is not None and not t.welcome.ngram_bytes and not t.welcome.ngram_entries
        assert t.stats.batches_rejected == 0 and t.stats.vectors_applied == 50
        assert [_form(b) for b in server.state.applied] == ["packed"] * 5
        assert _received_ngrams(server.state.applied) == [v.ngrams for v in sent]
        assert t.stats.batches_ngrams_packed == 5 and t.stats.batches_ngrams_paired == 0
        assert registry.get_sample_value("baseliner_sensor_batches_ngrams_packed_total") == 5
        assert registry.get_sample_value("baseliner_sensor_batches_ngrams_paired_total") == 0
        assert not t.welcome.identity_table and [_id_form(b) for b in server.state.applied] == ["repeated"] * 5
        assert t.stats.batches_identities_repeated == t.stats.batches_windows_repeated == 5
        assert registry.get_sample_value("baseliner_sensor_batches_identities_repeated_total") == 5
        assert registry.get_sample_value("baseliner_sensor_batches_windows_repeated_total") == 5
        for k, b in enumerate(server.state.applied):  # what an older sensor would have sent, byte for byte
            expected = wire.to_columns(sent[10 * k:10 * k + 10], k + 1, ngram_bytes=False, identity_table=False,
                                       window_bytes=False)
            assert b.SerializeToString() == expected.SerializeToString()

    run(body())


def test_service_before_the_entry_form_gets_ngrams_as_pairs_and_applies_every_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A service with Welcome.ngram_bytes but not Welcome.ngram_entries (it refuses field 46): batches
    encoded in the entry form go as le32 pairs, resends after a broken stream too; a batch already in the
    pair form goes as it is; nothing is refused."""
    caplog.set_level(logging.INFO, logger="baseliner.sensor.transport")
    sent = _gram_vectors(10) + _entry_gram_vectors(50, 10)  # the first batch is in the pair form (sent once)
    server, t, registry = _through_a_broken_stream(sent, before_ngram_entries=True)
    assert t.welcome is not None and t.welcome.ngram_bytes and not t.welcome.ngram_entries
    assert [_form(b) for b in server.state.applied] == ["pairs"] * 6
    assert _received_ngrams(server.state.applied) == [v.ngrams for v in sent]
    assert server.state.applied[0].SerializeToString() == wire.to_columns(  # nor the identity table as bytes
        sent[:10], 1, identity_table=False, window_bytes=False).SerializeToString()  # (47), nor windows (48-51)
    assert [_id_form(b) for b in server.state.applied] == ["repeated"] * 6
    assert [_window_form(b) for b in server.state.applied] == ["repeated"] * 6
    assert t.stats.batches_identities_repeated == t.stats.batches_windows_repeated == t.stats.batches_sent
    assert t.stats.batches_ngrams_paired == t.stats.batches_sent - 1 >= 6  # all but the pair-form batch
    assert t.stats.batches_ngrams_packed == 0
    assert registry.get_sample_value("baseliner_sensor_batches_ngrams_paired_total") == t.stats.batches_sent - 1
    assert registry.get_sample_value("baseliner_sensor_batches_ngrams_packed_total") == 0
    older = [r for r in caplog.records if "n-grams are sent in the le32 pair form" in r.getMessage()]
    assert len(older) == 2 and all(r.levelno == logging.INFO for r in older)  # once per connection
    assert not any("packed form" in r.getMessage() for r in caplog.records)


def test_ngram_form_follows_each_connections_welcome() -> None:
    """A new service gets the bytes form as encoded; after the service is rolled back to an older one,
    the batches buffered meanwhile (encoded as bytes) go packed, and back to bytes after the upgrade."""

    async def body() -> None:
        port = _free_port()
        state = IngestState()
        server = IngestServer(port, state=state)
        await server.start()
        t = Transport(server.target, sensor_id="s1", node="node-a", batch_size=10,
                      buffer=MemoryBuffer(first_sequence=1), backoff=_fast_backoff())
        t.start()
        sent = _gram_vectors(90)
        await t.submit(sent[:30])
        assert await t.flush(10)
        assert t.welcome is not None and t.welcome.ngram_bytes
        await server.stop()
        await t.submit(sent[30:60])  # buffered while no service is there, as bytes
        server = IngestServer(port, state=state, behaviour=Behaviour(before_ngram_bytes=True))
        await server.start()
        assert await t.flush(20)
        assert t.welcome is not None and not t.welcome.ngram_bytes
        await server.stop()
        server = IngestServer(port, state=state)
        await server.start()
        await t.submit(sent[60:])
        assert await t.flush(20)
        await t.close()
        await server.stop()
        assert t.stats.batches_rejected == 0 and t.stats.vectors_applied == 90
        assert t.stats.batches_ngrams_packed == 3
        assert [b.sequence for b in state.applied] == list(range(1, 10))
        forms = ["bytes" if b.columns.ngram_bucket_le32 else "packed" if b.columns.ngram_bucket else "?"
                 for b in state.applied]
        assert forms == ["bytes"] * 3 + ["packed"] * 3 + ["bytes"] * 3
        assert _received_ngrams(state.applied) == [v.ngrams for v in sent]
        for i in (0, 1, 2, 6, 7, 8):  # the bytes form arrives as the sensor encoded it
            expected = vectors_pb2.VectorBatch.FromString(
                wire.encode_batch_body(sent[10 * i:10 * i + 10])).columns
            got = state.applied[i].columns
            assert got.ngram_bucket_le32 == expected.ngram_bucket_le32 and got.ngram_bucket_le32
            assert got.ngram_count_le32 == expected.ngram_count_le32 and not got.ngram_bucket

    run(body())


def _through_service_versions(sent: list[FeatureVector], behaviours: list[Behaviour]) -> tuple[
        IngestState, Transport, list[ingest_pb2.Welcome]]:
    """Send ``sent`` in batches of 10, an equal share to each service version in turn (each share buffered
    as encoded before its service is up); check that every window was applied once, in order, with nothing
    refused.  Returns the services' state, the transport and each connection's Welcome."""
    out: list[tuple[IngestState, Transport, list[ingest_pb2.Welcome]]] = []

    async def body() -> None:
        port = _free_port()
        state = IngestState()
        share = len(sent) // len(behaviours)
        t = Transport(f"127.0.0.1:{port}", sensor_id="s1", node="node-a", batch_size=10,
                      buffer=MemoryBuffer(first_sequence=1), backoff=_fast_backoff())
        t.start()
        welcomes = []
        for k, behaviour in enumerate(behaviours):
            await t.submit(sent[share * k:share * k + share])
            server = IngestServer(port, state=state, behaviour=behaviour)
            await server.start()
            assert await t.flush(20)
            assert t.welcome is not None
            welcomes.append(t.welcome)
            await server.stop()
        await t.close()
        out.append((state, t, welcomes))

    run(body())
    state, t, welcomes = out[0]
    assert t.stats.batches_rejected == 0 and t.stats.vectors_applied == len(sent)
    assert [b.sequence for b in state.applied] == list(range(1, len(sent) // 10 + 1))
    return state, t, welcomes


def test_entry_form_follows_each_connections_welcome() -> None:
    """Batches encoded in the entry form go as encoded to a service that reads it, as le32 pairs after a
    rollback to one with only Welcome.ngram_bytes, packed after one to a service with neither flag, and as
    encoded again after the upgrade; every window arrives with its n-grams."""
    sent = _entry_gram_vectors(120)
    state, t, welcomes = _through_service_versions(sent, [Behaviour(), Behaviour(before_ngram_entries=True),
                                                          Behaviour(before_ngram_bytes=True), Behaviour()])
    flags = [(w.ngram_bytes, w.ngram_entries) for w in welcomes]
    assert flags == [(True, True), (True, False), (False, False), (True, True)]
    assert [_form(b) for b in state.applied] == ["entries"] * 3 + ["pairs"] * 3 + ["packed"] * 3 + ["entries"] * 3
    assert t.stats.batches_ngrams_paired == 3 and t.stats.batches_ngrams_packed == 3
    assert _received_ngrams(state.applied) == [v.ngrams for v in sent]
    for i in (0, 1, 2, 9, 10, 11):  # the entry form arrives as the sensor encoded it
        expected = wire.to_columns(sent[10 * i:10 * i + 10], i + 1)
        assert state.applied[i].SerializeToString() == expected.SerializeToString()


def test_service_before_the_identity_table_gets_repeated_identities_and_applies_every_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A service with Welcome.ngram_bytes and ngram_entries but not Welcome.identity_table (it refuses
    field 47): every batch goes with its identity table as repeated Identity messages, resends after a
    broken stream too, its n-grams as encoded (the entry form); counted, logged once per connection;
    nothing is refused and every window arrives with its identity."""
    caplog.set_level(logging.INFO, logger="baseliner.sensor.transport")
    sent = _containers_vectors(60)
    server, t, registry = _through_a_broken_stream(sent, before_identity_table=True)
    w = t.welcome
    assert w is not None and w.ngram_bytes and w.ngram_entries and not w.identity_table
    assert t.stats.batches_resent >= 1
    assert [_id_form(b) for b in server.state.applied] == ["repeated"] * 6
    assert [_form(b) for b in server.state.applied] == ["entries"] * 6
    for k, b in enumerate(server.state.applied):  # byte for byte what to_columns writes in that form
        expected = wire.to_columns(sent[10 * k:10 * k + 10], k + 1, identity_table=False, window_bytes=False)
        assert b.SerializeToString() == expected.SerializeToString()
        assert len(b.columns.identities) == 4
    assert _received_identities(server.state.applied) == [v.identity for v in sent]
    assert _received_ngrams(server.state.applied) == [v.ngrams for v in sent]
    assert t.stats.batches_identities_repeated == t.stats.batches_windows_repeated == t.stats.batches_sent >= 7
    assert t.stats.batches_ngrams_paired == t.stats.batches_ngrams_packed == 0
    assert registry.get_sample_value("baseliner_sensor_batches_identities_repeated_total") == t.stats.batches_sent
    assert registry.get_sample_value("baseliner_sensor_batches_ngrams_paired_total") == 0
    older = [r for r in caplog.records if "identity tables are sent as repeated Identity" in r.getMessage()]
    assert len(older) == 2 and all(r.levelno == logging.INFO for r in older)  # once per connection
    assert not any("n-grams are sent" in r.getMessage() for r in caplog.records)


def test_identity_table_form_follows_each_connections_welcome() -> None:
    """Batches encoded with their identity table as bytes go as encoded to a service that reads it, with
    repeated identities after a rollback to one without Welcome.identity_table (n-grams as encoded), and
    to older ones (with their n-grams converted too), and as encoded again after the upgrade."""
    sent = _containers_vectors(150)
    state, t, welcomes = _through_service_versions(sent, [
        Behaviour(), Behaviour(before_identity_table=True), Behaviour(before_ngram_entries=True),
        Behaviour(before_ngram_bytes=True), Behaviour()])
    flags = [(w.ngram_bytes, w.ngram_entries, w.identity_table) for w in welcomes]
    assert flags == [(True, True, True), (True, True, False), (True, False, False), (False, False, False),
                     (True, True, True)]
    assert [_id_form(b) for b in state.applied] == ["table"] * 3 + ["repeated"] * 9 + ["table"] * 3
    assert [_form(b) for b in state.applied] == (["entries"] * 6 + ["pairs"] * 3 + ["packed"] * 3
                                                 + ["entries"] * 3)
    assert t.stats.batches_identities_repeated == 9
    assert t.stats.batches_ngrams_paired == 3 and t.stats.batches_ngrams_packed == 3
    assert _received_identities(state.applied) == [v.identity for v in sent]
    assert _received_ngrams(state.applied) == [v.ngrams for v in sent]
    for i in (0, 1, 2, 12, 13, 14):  # the bytes form arrives as the sensor encoded it
        expected = wire.to_columns(sent[10 * i:10 * i + 10], i + 1)
        assert state.applied[i].SerializeToString() == expected.SerializeToString()


def test_service_before_the_window_bytes_form_gets_repeated_windows_and_applies_every_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A service with every Welcome flag but window_bytes (it refuses fields 48-51): every batch goes with
    its per-window numbers and syscall entries as the repeated fields, resends after a broken stream too,
    its identity table and n-grams as encoded; counted, logged once per connection; nothing is refused and
    every window arrives as it was sent."""
    caplog.set_level(logging.INFO, logger="baseliner.sensor.transport")
    sent = _containers_vectors(60)
    for i, v in enumerate(sent):  # something in every group: counters, ages, lists
        v.execs, v.seconds_since_start, v.executables = i % 3, 10.0 * i, ["/bin/sh"] * (i % 2)
    server, t, registry = _through_a_broken_stream(sent, before_window_bytes=True)
    w = t.welcome
    assert w is not None and w.ngram_bytes and w.ngram_entries and w.identity_table and not w.window_bytes
    assert t.stats.batches_resent >= 1
    assert [_window_form(b) for b in server.state.applied] == ["repeated"] * 6
    assert [_id_form(b) for b in server.state.applied] == ["table"] * 6
    assert [_form(b) for b in server.state.applied] == ["entries"] * 6
    for k, b in enumerate(server.state.applied):  # byte for byte what to_columns writes in that form
        expected = wire.to_columns(sent[10 * k:10 * k + 10], k + 1, window_bytes=False)
        assert b.SerializeToString() == expected.SerializeToString()
    received = [item for b in server.state.applied for _, item in Decoder().decode(b)]
    assert received == sent
    assert t.stats.batches_windows_repeated == t.stats.batches_sent >= 7
    assert t.stats.batches_identities_repeated == t.stats.batches_ngrams_paired == t.stats.batches_ngrams_packed == 0
    assert registry.get_sample_value("baseliner_sensor_batches_windows_repeated_total") == t.stats.batches_sent
    assert registry.get_sample_value("baseliner_sensor_batches_identities_repeated_total") == 0
    older = [r for r in caplog.records if "sent as repeated fields on this connection" in r.getMessage()]
    assert len(older) == 2 and all(r.levelno == logging.INFO for r in older)  # once per connection
    assert not any("identity tables are sent" in r.getMessage() or "n-grams are sent" in r.getMessage()
                   for r in caplog.records)


def test_window_form_follows_each_connections_welcome() -> None:
    """Batches encoded in the window bytes form go as encoded to a service that reads it, with repeated
    windows after a rollback to one without Welcome.window_bytes (the rest as encoded), and to older ones
    (with their other conversions), and as encoded again after the upgrade."""
    sent = _containers_vectors(150)
    state, t, welcomes = _through_service_versions(sent, [
        Behaviour(), Behaviour(before_window_bytes=True), Behaviour(before_identity_table=True),
        Behaviour(before_ngram_bytes=True), Behaviour()])
    assert [w.window_bytes for w in welcomes] == [True, False, False, False, True]
    assert [_window_form(b) for b in state.applied] == ["bytes"] * 3 + ["repeated"] * 9 + ["bytes"] * 3
    assert [_id_form(b) for b in state.applied] == ["table"] * 6 + ["repeated"] * 6 + ["table"] * 3
    assert [_form(b) for b in state.applied] == ["entries"] * 9 + ["packed"] * 3 + ["entries"] * 3
    assert t.stats.batches_windows_repeated == 9 and t.stats.batches_identities_repeated == 6
    assert t.stats.batches_ngrams_packed == 3 and t.stats.batches_ngrams_paired == 0
    received = [item for b in state.applied for _, item in Decoder().decode(b)]
    assert received == sent
    for i in (0, 1, 2, 12, 13, 14):  # the bytes form arrives as the sensor encoded it
        expected = wire.to_columns(sent[10 * i:10 * i + 10], i + 1)
        assert state.applied[i].SerializeToString() == expected.SerializeToString()
