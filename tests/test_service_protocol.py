"""The ingest protocol against a real grpc.aio server on a free port: Hello/Welcome, acks in order,
duplicates, health and reflection, and every kind of bad input (rejected with a reason, counted, the rest
of the batch and the stream go on)."""

from __future__ import annotations

import asyncio
import math
import os
import sys

import grpc
import pytest
from baseliner.models.vector import Endpoint
from baseliner.protos.v1 import ingest_pb2, vectors_pb2
from baseliner.sensor import wire
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

sys.path.insert(0, os.path.dirname(__file__))
from service_fixtures import (  # noqa: E402
    batch_request,
    config,
    exchange,
    hello,
    learn_batches,
    raw_batch_request,
    running,
    sample,
    scrape,
    vector,
)

R = ingest_pb2.RejectReason


def test_hello_welcome_acks_in_order_and_duplicates_not_applied_twice() -> None:
    async def main() -> None:
        async with running(config()) as (srv, _):
            resps = await exchange(srv.port, [hello("s1"), *learn_batches(5)])
            assert resps[0].WhichOneof("body") == "welcome"
            w = resps[0].welcome
            assert w.last_sequence == 0 and w.max_batch_vectors == 10_000 and not w.durable_acks
            acks = [r.ack for r in resps[1:]]
            assert [a.sequence for a in acks] == [1, 2, 3, 4, 5]
            assert all(a.applied == 20 and not a.rejected and not a.duplicate for a in acks)
            b = srv.pipeline.baselines["nginx:1.27"]
            scored = b.windows_scored
            assert scored == 100

            # Reconnect: the Welcome says what was applied; a resend is acknowledged as a duplicate.
            again = learn_batches(5)
            resps = await exchange(srv.port, [hello("s1"), again[2], again[4]])
            assert resps[0].welcome.last_sequence == 5
            assert [(r.ack.sequence, r.ack.duplicate, r.ack.applied) for r in resps[1:]] == [(3, True, 0), (5, True, 0)]
            assert b.windows_scored == scored
            # Another sensor has its own sequence space.
            resps = await exchange(srv.port, [hello("s2", "node-2"), batch_request([vector(0, 7, node="node-2")], 1)])
            assert resps[0].welcome.last_sequence == 0 and resps[1].ack.applied == 1
            text = scrape(srv.metrics_port)
            assert sample(text, "baseliner_batches_duplicate_total") == 2
            assert sample(text, "baseliner_vectors_received_total", node="node-1") == 100 + 40
            assert sample(text, "baseliner_vectors_applied_total") == 101

    asyncio.run(main())


def test_batch_before_hello_and_bad_hello_close_the_stream_with_a_status() -> None:
    async def main() -> None:
        async with running(config()) as (srv, _):
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await exchange(srv.port, learn_batches(1))
            assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "Hello" in (e.value.details() or "")
            for version in (2, 4, 0):  # another schema version, older or newer, or none at all
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await exchange(srv.port, [hello("s1", schema_version=version)])
                assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
                assert e.value.details() == (f"schema version {version} is not supported: this service reads "
                                             "schema version 3")
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await exchange(srv.port, [hello("")])
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            # the server is still fine
            resps = await exchange(srv.port, [hello("s1"), *learn_batches(1)])
            assert resps[1].ack.applied == 20

    asyncio.run(main())


def test_health_checking_and_reflection_are_on() -> None:
    async def main() -> None:
        async with running(config()) as (srv, _):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
                health = health_pb2_grpc.HealthStub(ch)
                for service in ("", "baseliner.v1.Ingest", "baseliner.v1.Admin"):
                    r = await health.Check(health_pb2.HealthCheckRequest(service=service))
                    assert r.status == health_pb2.HealthCheckResponse.SERVING
                refl = reflection_pb2_grpc.ServerReflectionStub(ch)

                async def ask():  # type: ignore[no-untyped-def]
                    yield reflection_pb2.ServerReflectionRequest(list_services="")

                names = set()
                async for resp in refl.ServerReflectionInfo(ask()):
                    names |= {s.name for s in resp.list_services_response.service}
                assert {"baseliner.v1.Ingest", "baseliner.v1.Admin", "grpc.health.v1.Health"} <= names

    asyncio.run(main())


def _bad_batch(seq: int) -> tuple[ingest_pb2.IngestRequest, dict[int, int]]:
    """One batch mixing good vectors with every kind of bad one; returns it and index -> expected reason."""
    good = [vector(100 + i, 0) for i in range(3)]
    bad = []
    v = vector(200, 1)
    v.syscalls["read"] = math.nan
    bad.append((v, R.REJECT_REASON_NOT_FINITE))
    v = vector(200, 2)
    v.bytes_sent = math.inf
    bad.append((v, R.REJECT_REASON_NOT_FINITE))
    v = vector(200, 3)
    v.connects = -4
    bad.append((v, R.REJECT_REASON_NEGATIVE))
    bad.append((vector(200, 4, repo=""), R.REJECT_REASON_BAD_IDENTITY))
    bad.append((vector(200, 5, repo="Not An Image!!//" + "x" * 300), R.REJECT_REASON_BAD_IDENTITY))
    v = vector(200, 6)
    v.window_seconds = 0.0
    bad.append((v, R.REJECT_REASON_BAD_WINDOW))
    v = vector(200, 7)
    v.executables = [f"/bin/x{i}" for i in range(65)]
    bad.append((v, R.REJECT_REASON_TOO_LARGE))
    v = vector(200, 8)
    v.syscalls["write"] = 1e300
    bad.append((v, R.REJECT_REASON_IMPLAUSIBLE))
    v = vector(200, 9)
    v.ngrams = {100_000: 3}  # past spec v2's buckets
    bad.append((v, R.REJECT_REASON_BAD_REFERENCE))
    v = vector(200, 10)
    v.endpoints = [Endpoint("10.1.1.1", 9999)]  # its protocol is made invalid on the wire below
    bad.append((v, R.REJECT_REASON_BAD_REFERENCE))
    v = vector(200, 11)
    v.endpoints = [Endpoint("10.1.1.2", 9999)]  # its direction is made unspecified on the wire below
    bad.append((v, R.REJECT_REASON_MISSING_FIELD))
    # a window that goes back in time for container 0 (after the good ones)
    bad.append((vector(50, 0), R.REJECT_REASON_OUT_OF_ORDER))
    batch = wire.to_columns(good + [v for v, _ in bad], seq)
    for ep in batch.columns.endpoints:
        if ep.address == "10.1.1.1":
            ep.protocol = 9  # type: ignore[assignment]
        elif ep.address == "10.1.1.2":
            ep.direction = vectors_pb2.DIRECTION_UNSPECIFIED
    return raw_batch_request(batch), {len(good) + k: reason for k, (_, reason) in enumerate(bad)}


def test_every_bad_input_is_rejected_with_its_reason_counted_and_the_rest_goes_on() -> None:
    async def main() -> None:
        async with running(config()) as (srv, _):
            req, expected = _bad_batch(2)
            resps = await exchange(srv.port, [hello("s1"), *learn_batches(1), req, *learn_batches(1, start_seq=3,
                                                                                                   start_window=300)])
            first, mixed, after = (r.ack for r in resps[1:])
            assert first.applied == 20
            got = {r.index: r.reason for r in mixed.rejected}
            assert got == expected, {i: (R.Name(got.get(i, 0)), R.Name(e)) for i, e in expected.items()}
            assert all(r.message for r in mixed.rejected)
            assert mixed.applied == 3 and mixed.batch_rejected == R.REJECT_REASON_UNSPECIFIED
            assert after.sequence == 3 and after.applied == 20 and not after.rejected
            text = scrape(srv.metrics_port)
            counts: dict[str, int] = {}
            for reason in expected.values():
                name = R.Name(reason).removeprefix("REJECT_REASON_")
                counts[name] = counts.get(name, 0) + 1
            for name, n in counts.items():
                assert sample(text, "baseliner_vectors_rejected_total", reason=name) == n, name

    asyncio.run(main())


def test_whole_batch_refusals_unsupported_version_oversized_bad_sequence() -> None:
    async def main() -> None:
        cfg = config(None, ("grpc.max_batch_vectors", 50))
        async with running(cfg) as (srv, _):
            old = wire.to_columns([vector(0)], 1)
            old.schema_version = 1
            big = wire.to_columns([vector(i, c) for i in range(26) for c in range(2)], 2)
            zero = wire.to_columns([vector(1)], 0)
            newer = wire.to_columns([vector(1)], 3)
            newer.schema_version = 4
            unknown = wire.to_columns([vector(5)], 4)  # a field this service does not know: ignored
            unknown.MergeFromString(b"\xa8\x06\x01")
            unknown.columns.MergeFromString(b"\xa8\x06\x01")
            resps = await exchange(srv.port, [hello("s1"), raw_batch_request(old), raw_batch_request(big),
                                              raw_batch_request(zero), raw_batch_request(newer),
                                              raw_batch_request(unknown)])
            acks = [r.ack for r in resps[1:]]
            assert [(a.sequence, a.batch_rejected) for a in acks[:4]] == [
                (1, R.REJECT_REASON_UNSUPPORTED_VERSION),
                (2, R.REJECT_REASON_TOO_LARGE),
                (0, R.REJECT_REASON_MISSING_FIELD),
                (3, R.REJECT_REASON_UNSUPPORTED_VERSION),
            ]
            assert acks[0].batch_message == "schema version 1 is not supported: this service reads schema version 3"
            assert acks[3].batch_message == "schema version 4 is not supported: this service reads schema version 3"
            assert "exceeds the limit of 50" in acks[1].batch_message
            assert all(a.applied == 0 and not a.rejected for a in acks[:4])
            assert acks[4].applied == 1
            text = scrape(srv.metrics_port)
            assert sample(text, "baseliner_vectors_rejected_total", reason="TOO_LARGE") == 52
            assert sample(text, "baseliner_batches_refused_total", reason="UNSUPPORTED_VERSION") == 2

    asyncio.run(main())


def test_oversized_message_is_refused_by_the_grpc_limit_and_the_server_lives_on() -> None:
    async def main() -> None:
        cfg = config(None, ("grpc.max_message_bytes", 65536))
        async with running(cfg) as (srv, _):
            big = wire.to_columns([vector(i, c) for i in range(100) for c in range(3)], 1)
            assert big.ByteSize() > 65536
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await exchange(srv.port, [hello("s1"), raw_batch_request(big)])
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            resps = await exchange(srv.port, [hello("s1"), batch_request([vector(0)], 1)])
            assert resps[1].ack.applied == 1

    asyncio.run(main())
