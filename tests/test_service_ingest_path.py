"""The servicer's path for a batch: the write-ahead log holds the batch's bytes as received (not serialised
again), records are framed as before, and replaying the log applies the batch-level checks again."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from baseliner.models.errors import StateError
from baseliner.models.vector import FeatureVector
from baseliner.protos.v1 import ingest_pb2, ingest_pb2_grpc, vectors_pb2
from baseliner.sensor import wire
from baseliner.service import serde
from baseliner.service.wal import KIND_BATCH, Record, WriteAheadLog, body_head, read_segment

sys.path.insert(0, os.path.dirname(__file__))
from service_fixtures import config, hello, running, vector  # noqa: E402


def test_parse_request_gives_the_batch_bytes_only_when_the_request_is_the_batch_alone() -> None:
    body = wire.to_columns([vector(i, c) for i in range(3) for c in range(80)]).SerializeToString()
    assert len(body) > 16384  # a length of three varint bytes
    raw = wire.batch_request_bytes(9, body)
    got = serde.parse_request(raw)
    assert got.message.batch.sequence == 9 and got.batch_bytes is not None
    assert vectors_pb2.VectorBatch.FromString(bytes(got.batch_bytes)) == got.message.batch
    assert bytes(got.batch_bytes) == raw[-len(got.batch_bytes):]
    # a request of several fields (the oneof's last one wins) or a Hello: no view, the servicer re-serialises
    twice = hello("s").SerializeToString() + raw
    assert serde.parse_request(twice).batch_bytes is None
    assert serde.parse_request(twice).message.WhichOneof("body") == "batch"
    assert serde.parse_request(raw + hello("s").SerializeToString()).batch_bytes is None
    assert serde.parse_request(hello("s").SerializeToString()).batch_bytes is None
    assert serde.parse_request(b"").message.WhichOneof("body") is None


def test_log_records_from_views_are_the_records_of_bytes(tmp_path: Path) -> None:
    batch = wire.to_columns([vector(1, 0)], 1).SerializeToString()

    async def write(where: Path, data: bytes | memoryview) -> None:
        wal = WriteAheadLog(where, b"k" * 32, "batch")
        wal.open()
        await wal.wait_durable(wal.append(Record(KIND_BATCH, "s", "node-1", 1, data)))
        await wal.close()

    asyncio.run(write(tmp_path / "a", batch))
    asyncio.run(write(tmp_path / "b", memoryview(b"xx" + batch)[2:]))
    a, b = (WriteAheadLog(tmp_path / d).segments()[0].read_bytes() for d in "ab")
    assert a == b
    (rec,) = read_segment(WriteAheadLog(tmp_path / "a").segments()[0], b"k" * 32, last=True)
    assert rec.batch == batch and body_head(rec) + batch in a  # the record body: its head, then the batch as sent


async def _send_raw(port: int, requests: list[bytes]) -> list[ingest_pb2.IngestResponse]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.stream_stream("/baseliner.v1.Ingest/Stream", request_serializer=lambda b: b,
                                response_deserializer=ingest_pb2.IngestResponse.FromString)

        async def gen():  # type: ignore[no-untyped-def]
            for r in requests:
                yield r

        return [r async for r in call(gen())]


def test_log_holds_the_batch_as_sent_and_replay_checks_it_again(tmp_path: Path) -> None:
    state, crashed = tmp_path / "state", tmp_path / "crashed"
    # a batch whose fields are not in field-number order: serialising it again would give other bytes
    batches = [wire.to_columns([vector(s, c) for c in range(5)]).SerializeToString() + b"\x08" + bytes([s])
               for s in (1, 2)]
    assert vectors_pb2.VectorBatch.FromString(batches[0]).SerializeToString() != batches[0]

    async def main() -> None:
        async with running(config(state, ("state.save_interval_seconds", 3600))) as (srv, _):
            requests = [hello("s1").SerializeToString(),
                        *(b"\x12" + wire._varint(len(b)) + b for b in batches)]
            resps = await _send_raw(srv.port, requests)
            assert [r.ack.applied for r in resps[1:]] == [5, 5] and all(r.ack.durable for r in resps[1:])
            shutil.copytree(state, crashed)  # what a kill -9 now leaves: the batches only in the log
        logged = [r.batch for seg in WriteAheadLog(crashed / "wal").segments()
                  for r in read_segment(seg, None, last=True)]
        assert logged == batches
        # the batch-level checks run on replay too: a limit the logged batches exceed refuses to start
        refused = tmp_path / "refused"
        shutil.copytree(crashed, refused)
        with pytest.raises(StateError, match=r"batch 1 of s1 is refused by this service \(TOO_LARGE"):
            async with running(config(refused, ("grpc.max_batch_vectors", 4))):
                pass
        async with running(config(crashed, ("state.save_interval_seconds", 3600))) as (srv, _):
            assert srv.pipeline.last_sequence("s1") == 2
            assert sum(b.windows_scored for b in srv.pipeline.all()) == 10

    asyncio.run(main())


def _replayed(tmp_path: Path, name: str, rounds: list[list[FeatureVector]],
              encode: Callable[[list[FeatureVector]], bytes]) -> dict[str, tuple[dict, dict]]:  # type: ignore[type-arg]
    """The baselines' state after replaying a log of ``rounds`` (each batch encoded by ``encode``) into a new
    pipeline; the replayed blocks of the same containers all share one identity table."""
    from baseliner.service.pipeline import Pipeline
    from baseliner.service.wal import replay_into

    async def write() -> None:
        wal = WriteAheadLog(tmp_path / name, b"k" * 32, "batch")
        wal.open()
        for s, vs in enumerate(rounds, 1):
            await wal.wait_durable(wal.append(Record(KIND_BATCH, "s1", "node-1", s, encode(vs))))
        await wal.close()

    asyncio.run(write())
    p = Pipeline(baseline_config=config().baseline_config())
    decoder = serde.Decoder()
    tables = []
    real = decoder.decode_block

    def decode_block(batch: vectors_pb2.VectorBatch):  # type: ignore[no-untyped-def]
        block, errors = real(batch)
        tables.append(block.identities)
        return block, errors

    decoder.decode_block = decode_block  # type: ignore[method-assign]
    assert replay_into(WriteAheadLog(tmp_path / name, b"k" * 32), p, decoder) == (len(rounds), 0)
    assert p.last_sequence("s1") == len(rounds)
    assert len(tables) == len(rounds) and all(t is tables[0] for t in tables)
    return {b.key: b.to_state() for b in p.all()}


def test_replay_of_a_log_learns_what_applying_its_batches_did(tmp_path: Path) -> None:
    """The log holds batches as sent, n-grams and all: replaying it gives the state of a pipeline that
    applied the same batches, and not the state of the same batches without their n-grams."""
    from baseliner.service.pipeline import Pipeline

    rounds = []
    for s in range(1, 7):
        vs = [vector(10 * s + k, c, repo=f"img{c % 2}") for k in range(10) for c in range(4)]
        for v in vs:
            v.ngrams = {(v.identity.container_id == "c1") * 9000 + j * 37 + int(v.window_start) % 3: 1 + j % 4
                        for j in range(20)}
        rounds.append(vs)

    def without_ngrams(vs: list[FeatureVector]) -> bytes:
        return wire.to_columns([dataclasses.replace(v, ngrams={}) for v in vs]).SerializeToString()

    got = _replayed(tmp_path, "log", rounds, lambda vs: wire.to_columns(vs).SerializeToString())
    none = _replayed(tmp_path, "none", rounds, without_ngrams)
    live = Pipeline(baseline_config=config().baseline_config())
    for s, vs in enumerate(rounds, 1):
        batch = wire.to_columns(vs, s)
        live.apply_block("s1", s, *serde.Decoder().decode_block(batch))
    applied = {b.key: b.to_state() for b in live.all()}
    assert got.keys() == applied.keys() == none.keys() == {"img0:1.27", "img1:1.27"}
    for key, (meta, arrays) in got.items():
        meta_a, arrays_a = applied[key]
        assert meta["windows_learned"] == 120 and meta == meta_a
        assert arrays.keys() == arrays_a.keys() and all(np.array_equal(arrays[k], arrays_a[k]) for k in arrays)
        _, arrays_n = none[key]
        assert any(k not in arrays_n or not np.array_equal(arrays[k], arrays_n[k]) for k in arrays)


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_heap_slack_is_kept_on_glibc() -> None:
    from baseliner.service.server import keep_heap_slack

    assert keep_heap_slack(16 << 20)


def test_batches_run_ahead_of_durable_acks_and_an_error_comes_after_the_acks_before_it(tmp_path: Path) -> None:
    """A stream's batches are applied while earlier ones wait for the log's fsync; every ack still comes,
    durable and in order, before the status of a protocol error that followed them."""
    from service_fixtures import learn_batches

    async def main() -> None:
        async with running(config(tmp_path / "state")) as (srv, _):
            got: list[ingest_pb2.IngestResponse] = []
            async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
                call = ch.stream_stream("/baseliner.v1.Ingest/Stream",
                                        request_serializer=ingest_pb2.IngestRequest.SerializeToString,
                                        response_deserializer=ingest_pb2.IngestResponse.FromString)

                async def gen():  # type: ignore[no-untyped-def]
                    for r in [hello("s1"), *learn_batches(12), hello("s1")]:  # a second Hello: protocol error
                        yield r

                with pytest.raises(grpc.aio.AioRpcError) as e:
                    async for r in call(gen()):
                        got.append(r)
            assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "Hello sent twice" in str(e.value.details())
            assert got[0].WhichOneof("body") == "welcome" and got[0].welcome.durable_acks
            acks = [(r.ack.sequence, r.ack.applied, r.ack.durable) for r in got[1:]]
            assert acks == [(s, 20, True) for s in range(1, 13)]
            assert srv.wal is not None and srv.wal.synced_lsn == srv.wal.lsn == 12

    asyncio.run(main())


def test_batches_of_many_streams_are_applied_together_and_each_acknowledged_as_its_own(tmp_path: Path) -> None:
    """Eight sensors stream at once: the servicer's applier gives the batches that wait together one
    pipeline call (fewer calls than batches), and every stream gets its own acks, in order, durable, with
    its own applied counts and rejections."""
    from service_fixtures import batch_request

    async def main() -> None:
        async with running(config(tmp_path)) as (srv, _):
            port = srv.port

            async def stream(k: int) -> list[ingest_pb2.IngestResponse]:
                reqs = [hello(f"sensor-{k}", f"node-{k}")]
                for seq in range(1, 13):
                    vs = [vector(seq, c, node=f"node-{k}") for c in range(4)]
                    if seq == 7:
                        vs[k % 4].syscalls["read"] = -1.0  # one refused window, a different one per stream
                    reqs.append(batch_request(vs, seq))
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                    stub = ingest_pb2_grpc.IngestStub(ch)

                    async def gen():  # type: ignore[no-untyped-def]
                        for r in reqs:
                            yield r

                    return [r async for r in stub.Stream(gen())]

            answers = await asyncio.gather(*(stream(k) for k in range(8)))
            for k, resps in enumerate(answers):
                acks = [r.ack for r in resps[1:]]
                assert [a.sequence for a in acks] == list(range(1, 13))
                assert all(a.durable and not a.duplicate for a in acks)
                assert [a.applied for a in acks] == [4] * 6 + [3] + [4] * 5
                assert [(r.index, r.reason) for r in acks[6].rejected] == [(k % 4, ingest_pb2.REJECT_REASON_NEGATIVE)]
            applier = srv.ingest.applier
            assert applier.batches == 8 * 12 and applier.calls < applier.batches
            assert sum(b.windows_scored for b in srv.pipeline.baselines.values()) == 8 * 12 * 4 - 8

    asyncio.run(main())


def test_a_checkpoint_applies_the_batches_still_waiting_first(tmp_path: Path) -> None:
    """A checkpoint's snapshot must hold every batch in the write-ahead log (the log before it is dropped):
    batches handed to the applier but not applied yet are applied before the snapshot is taken."""
    from service_fixtures import batch_request

    async def main() -> None:
        async with running(config(tmp_path)) as (srv, _):
            decoder = serde.Decoder()
            futures = []
            for seq in (1, 2):
                batch = batch_request([vector(seq, c) for c in range(3)], seq).batch
                futures.append(srv.ingest.applier.submit("sensor-9", seq, decoder.decode_block(batch), 0.0))
            assert not any(f.done() for f in futures)
            srv.ingest.applier.task.cancel()  # as if it had not had its turn yet when the checkpoint comes
            await asyncio.sleep(0)
            assert len(srv.ingest.applier.pending) == 2
            await srv.checkpoint(everything=True)
            assert all(f.done() and f.result().applied == 3 for f in futures)
            assert srv.pipeline.last_sequence("sensor-9") == 2
            assert sum(b.windows_scored for b in srv.pipeline.baselines.values()) == 6

    asyncio.run(main())
