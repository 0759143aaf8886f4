"""Resource limits under hostile load: oversized messages, floods of image names, stalled clients."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from baseliner.protos.v1 import admin_pb2, admin_pb2_grpc, ingest_pb2, ingest_pb2_grpc
from baseliner.service.sinks.metrics import OVERFLOW

from tests.service_fixtures import batch_request, config, hello, running, sample, scrape, vector


def test_oversized_message_refused_by_grpc_limit_stream_goes_on_elsewhere() -> None:
    cfg = config(None, ("grpc.max_message_bytes", 65536))

    async def main() -> None:
        async with running(cfg) as (srv, _):
            target = f"127.0.0.1:{srv.port}"
            big = [vector(1, container=c) for c in range(400)]
            for v in big:
                v.executables = ["/usr/bin/" + "x" * 200]
            req = batch_request(big, 1)
            assert req.ByteSize() > 65536
            async with grpc.aio.insecure_channel(target, options=[("grpc.max_send_message_length", 1 << 24)]) as ch:
                call = ingest_pb2_grpc.IngestStub(ch).Stream()
                await call.write(hello("big"))
                await call.read()
                await call.write(req)
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await call.read()
                assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # nothing of it was applied, and another stream is served normally
            async with grpc.aio.insecure_channel(target) as ch:
                call = ingest_pb2_grpc.IngestStub(ch).Stream()
                await call.write(hello("small"))
                await call.read()
                await call.write(batch_request([vector(1)], 1))
                ack = (await call.read()).ack
                assert ack.applied == 1
                await call.done_writing()
            assert srv.pipeline.last_sequence("big") == 0

    asyncio.run(main())


def test_stalled_streams_do_not_block_others_and_idle_ones_are_closed() -> None:
    cfg = config(None, ("grpc.max_stream_idle_seconds", 2))

    async def main() -> None:
        async with running(cfg) as (srv, _):
            target = f"127.0.0.1:{srv.port}"
            async with grpc.aio.insecure_channel(target) as stalled_ch, grpc.aio.insecure_channel(target) as ch:
                # 1: a client that says Hello and then nothing at all
                silent = ingest_pb2_grpc.IngestStub(stalled_ch).Stream()
                await silent.write(hello("silent", "node-1"))
                await silent.read()
                # 2: a client that writes batches but never reads its acks (its flow-control window fills)
                deaf = ingest_pb2_grpc.IngestStub(stalled_ch).Stream()
                await deaf.write(hello("deaf", "node-2"))
                await deaf.read()

                async def flood() -> None:
                    for s in range(1, 200):
                        await deaf.write(batch_request([vector(s, container=c, node="node-2", repo="deaf")
                                                        for c in range(50)], s))

                flooder = asyncio.create_task(flood())
                # meanwhile a healthy sensor streams with a deadline
                t0 = time.monotonic()
                call = ingest_pb2_grpc.IngestStub(ch).Stream(timeout=20)
                await call.write(hello("healthy", "node-3"))
                await call.read()
                for s in range(1, 41):
                    await call.write(batch_request([vector(s, container=c, node="node-3") for c in range(5)], s))
                    ack = (await call.read()).ack
                    assert ack.sequence == s and ack.applied == 5
                await call.done_writing()
                assert time.monotonic() - t0 < 15
                # the silent stream is closed by the idle timeout
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await asyncio.wait_for(silent.read(), 10)
                assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert "no message for" in (e.value.details() or "")
                flooder.cancel()
                deaf.cancel()

    asyncio.run(main())


@pytest.mark.slow
def test_flood_of_image_names_keeps_memory_and_labels_bounded(tmp_path: Path) -> None:
    images, capacity = 1500, 40
    cfg = config(tmp_path, ("pipeline.max_resident_baselines", capacity), ("pipeline.max_baselines", 1_000_000),
                 ("metrics.max_images", 100))

    async def main() -> None:
        async with running(cfg) as (srv, _):
            target = f"127.0.0.1:{srv.port}"
            async with grpc.aio.insecure_channel(target) as ch:
                call = ingest_pb2_grpc.IngestStub(ch).Stream()
                await call.write(hello("flood"))
                await call.read()
                per = 250
                for s in range(images // per):
                    await call.write(batch_request(
                        [vector(0, container=s * per + i, repo=f"flood-{s * per + i}") for i in range(per)], s + 1))
                    assert (await call.read()).ack.applied == per
                    assert len(srv.spill.resident) <= capacity
                # image 0 was spilled long ago: its next window reloads it and continues its baseline
                await call.write(batch_request([vector(1, container=0, repo="flood-0")], 100))
                assert (await call.read()).ack.applied == 1
                await call.done_writing()
            assert srv.spill.spills >= images - capacity and srv.spill.loads >= 1
            assert len(srv.pipeline.baselines) == images
            stub = admin_pb2_grpc.AdminStub(ch2 := grpc.aio.insecure_channel(target))
            async with ch2:
                b = await stub.GetBaseline(admin_pb2.GetBaselineRequest(key="flood-0:1.27"))
                assert b.windows_scored == 2
                listed = await stub.ListBaselines(admin_pb2.ListBaselinesRequest())
                assert len(listed.baselines) == images  # spilled ones listed from summaries, none loaded
                assert sum(x.windows_scored for x in listed.baselines) == images + 1
            assert len(srv.spill.resident) <= capacity
            text = await asyncio.to_thread(scrape, srv.metrics_port)
            series = {line.split("image=\"", 1)[1].split("\"", 1)[0] for line in text.splitlines()
                      if line.startswith("baseliner_anomaly_score_count{")}
            assert len(series) <= 101 and OVERFLOW in series
            assert sample(text, "baseliner_baselines", state="learning") == images
            assert sample(text, "baseliner_baselines_spilled") == images - len(srv.spill.resident)
            assert sample(text, "baseliner_baseline_loads_total") == srv.spill.loads >= 1
            assert sample(text, "baseliner_wal_records_total") == images // 250 + 1
            assert (sample(text, "baseliner_wal_fsyncs_total") or 0) >= 1
        # restart: the spilled files are the state; nothing lost, still bounded
        async with running(cfg) as (srv, _):
            assert len(srv.pipeline.baselines) == images and len(srv.spill.resident) <= capacity
            assert srv.pipeline.get("flood-0:1.27").windows_scored == 2

    asyncio.run(main())


def test_ingest_request_flow_is_not_blocked_by_admin_calls() -> None:
    """Admin listing of many baselines and a stream interleave on the one event loop."""
    cfg = config(None)

    async def main() -> None:
        async with running(cfg) as (srv, _):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
                call = ingest_pb2_grpc.IngestStub(ch).Stream()
                await call.write(hello())
                await call.read()
                stub = admin_pb2_grpc.AdminStub(ch)
                for s in range(1, 11):
                    await call.write(batch_request([vector(s, container=c, repo=f"r{c}") for c in range(20)], s))
                    lst, resp = await asyncio.gather(stub.ListBaselines(admin_pb2.ListBaselinesRequest()), call.read())
                    assert isinstance(resp, ingest_pb2.IngestResponse) and resp.ack.applied == 20
                    assert len(lst.baselines) == 20
                await call.done_writing()

    asyncio.run(main())
