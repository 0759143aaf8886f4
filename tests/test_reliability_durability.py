"""Durability with real processes: ``kill -9`` the service mid-stream, restart it, and count.

Every acknowledged batch must be reflected in the baselines exactly once: after the restart the
service reports at least every window it acknowledged as durable (``windows_scored``), and after the
sensor has resent everything it was not told about, exactly as many windows as were sent (resends of
applied batches are recognised, never applied twice).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from pathlib import Path

import grpc
import pytest
from baseliner.models.integrity import Keyring
from baseliner.protos.v1 import ingest_pb2, ingest_pb2_grpc
from baseliner.service.wal import WriteAheadLog, read_segment

from tests.reliability_procs import ServeProcess, windows_scored
from tests.service_fixtures import batch_request, hello, vector

pytestmark = pytest.mark.slow

CONTAINERS = 40


def batch(seq: int) -> ingest_pb2.IngestRequest:
    """Batch ``seq``: window ``seq`` of each of 40 containers of 4 images."""
    return batch_request([vector(seq, container=c, repo=f"img{c % 4}") for c in range(CONTAINERS)], seq)


async def stream(target: str, seqs: list[int], kill_after: int | None = None, serve: ServeProcess | None = None,
                 in_flight: int = 8) -> tuple[int, dict[int, ingest_pb2.BatchAck]]:
    """Send ``seqs`` pipelined; return Welcome.last_sequence and the acks received (by sequence).

    With ``kill_after``, ``serve`` is killed with SIGKILL as soon as that many acks arrived (batches are in
    flight at that moment), and the broken stream ends the call.
    """
    acks: dict[int, ingest_pb2.BatchAck] = {}
    window = asyncio.Semaphore(in_flight)
    async with grpc.aio.insecure_channel(target) as ch:
        call = ingest_pb2_grpc.IngestStub(ch).Stream()
        await call.write(hello("durable-sensor", "node-1"))
        first = await call.read()
        last = first.welcome.last_sequence
        assert first.welcome.durable_acks

        async def send() -> None:
            for s in seqs:
                await window.acquire()
                await call.write(batch(s))
            await call.done_writing()

        sender = asyncio.create_task(send())
        try:
            while len(acks) < len(seqs):
                resp = await call.read()
                if resp is grpc.aio.EOF:
                    break
                acks[resp.ack.sequence] = resp.ack
                window.release()
                if kill_after is not None and len(acks) == kill_after:
                    assert serve is not None
                    serve.kill9()
        except grpc.aio.AioRpcError:
            assert kill_after is not None, "stream broke without a kill"
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError, Exception):
                await sender
    return last, acks


@pytest.mark.parametrize("save_interval, fsync", [(3600.0, "batch"), (0.3, "group")])
def test_kill9_service_mid_stream_every_acked_window_counted_once(
    tmp_path: Path, save_interval: float, fsync: str
) -> None:
    key = tmp_path / "key"
    key.write_text("0123456789abcdef0123456789abcdef")
    state = tmp_path / "state"
    extra = ["--state-key-file", str(key), "--set", f"state.save_interval_seconds={save_interval}",
             "--set", f"state.wal_fsync={fsync}"]
    serve = ServeProcess(state, extra=extra).start()
    total = 120
    try:
        last, acks = asyncio.run(stream(serve.target, list(range(1, total + 1)), kill_after=45, serve=serve))
        assert last == 0
        durable = sorted(s for s, a in acks.items() if a.durable)
        assert len(durable) >= 45 and durable == list(range(1, len(durable) + 1))
        assert all(acks[s].applied == CONTAINERS for s in durable)
        assert serve.proc is not None and serve.proc.returncode == -9

        # The log holds what the checkpoint (if any) does not; it verifies with the key.
        wal = WriteAheadLog(state / "wal", Keyring.load(key))
        segs = wal.segments()
        assert segs, "no write-ahead log segment"
        logged = [r.sequence for i, p in enumerate(segs) for r in read_segment(p, wal.keys, i == len(segs) - 1)]
        if save_interval > 1000:  # no checkpoint ran: every acknowledged batch must be in the log
            assert set(durable) <= set(logged)

        serve.start()  # same port, same state directory: restore + replay
        assert "batches replayed" in serve.log() or save_interval < 1000
        after_restart = windows_scored(serve.target)
        assert after_restart >= len(durable) * CONTAINERS, "an acknowledged window was lost"
        assert after_restart <= (max(acks) + 8) * CONTAINERS

        # The sensor resends everything it holds no durable ack for (some of it was applied before the kill).
        pending = [s for s in range(1, total + 1) if s not in durable]
        last2, acks2 = asyncio.run(stream(serve.target, pending))
        assert last2 >= len(durable)
        assert sorted(acks2) == pending and all(a.durable for a in acks2.values())
        duplicates = sum(1 for a in acks2.values() if a.duplicate)
        assert duplicates == last2 - len(durable)  # exactly the batches applied but not acknowledged
        assert windows_scored(serve.target) == total * CONTAINERS  # each window exactly once
    finally:
        serve.stop()

    # A clean restart (after a graceful stop: checkpoint, empty log) still counts each window once.
    serve.start()
    try:
        assert windows_scored(serve.target) == total * CONTAINERS
        last3, _ = asyncio.run(stream(serve.target, []))
        assert last3 == total
    finally:
        assert serve.stop() == 0


def test_tampered_log_refuses_to_start(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("0123456789abcdef0123456789abcdef")
    state = tmp_path / "state"
    serve = ServeProcess(state, extra=["--state-key-file", str(key)]).start()
    try:
        _, acks = asyncio.run(stream(serve.target, list(range(1, 11)), kill_after=10, serve=serve))
        assert len(acks) == 10
    finally:
        serve.stop()
    seg = WriteAheadLog(state / "wal", Keyring.load(key)).segments()[0]
    data = bytearray(seg.read_bytes())
    data[len(data) // 3] ^= 0x01  # one bit inside an early record
    seg.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match=f"{seg}: record \\d+ is tampered with or corrupt \\(HMAC mismatch under key "
                                           f"{Keyring.load(key).signing.id}\\); refusing to replay the log"):
        ServeProcess(state, port=serve.port, extra=["--state-key-file", str(key)]).start()


def test_stream_acks_in_order_with_many_in_flight(tmp_path: Path) -> None:
    """Durable acks keep the protocol's order even when fsyncs of concurrent streams are shared."""
    serve = ServeProcess(tmp_path / "state").start()
    try:
        async def two() -> list[dict[int, ingest_pb2.BatchAck]]:
            async def one(sensor: str) -> dict[int, ingest_pb2.BatchAck]:
                seen: deque[int] = deque()
                async with grpc.aio.insecure_channel(serve.target) as ch:
                    call = ingest_pb2_grpc.IngestStub(ch).Stream()
                    await call.write(hello(sensor, "node-1"))
                    await call.read()
                    for s in range(1, 31):
                        await call.write(batch_request([vector(s, container=c + 10 * (sensor == "sensorb"), repo=sensor)
                                                          for c in range(3)], s))
                    await call.done_writing()
                    out = {}
                    while (r := await call.read()) is not grpc.aio.EOF:
                        seen.append(r.ack.sequence)
                        out[r.ack.sequence] = r.ack
                    assert list(seen) == list(range(1, 31))
                    return out

            return list(await asyncio.gather(one("sensora"), one("sensorb")))

        for acks in asyncio.run(two()):
            assert all(a.durable and a.applied == 3 for a in acks.values())
    finally:
        serve.stop()


def test_admin_changes_are_durable_when_answered(tmp_path: Path) -> None:
    """Mode changes and resets are checkpointed before the RPC answers: a kill -9 right after keeps them."""
    from baseliner.protos.v1 import admin_pb2, admin_pb2_grpc

    serve = ServeProcess(tmp_path / "state", extra=["--set", "state.save_interval_seconds=3600"]).start()
    try:
        _, acks = asyncio.run(stream(serve.target, list(range(1, 6))))
        assert len(acks) == 5
        with grpc.insecure_channel(serve.target) as ch:
            stub = admin_pb2_grpc.AdminStub(ch)
            b = stub.SetMode(admin_pb2.SetModeRequest(key="img1:1.27", mode=admin_pb2.MODE_FREEZE), timeout=10)
            assert b.state == admin_pb2.STATE_FROZEN
            r = stub.ResetBaseline(admin_pb2.ResetBaselineRequest(key="img2:1.27"), timeout=10)
            assert r.windows_scored == 0
        serve.kill9()
        serve.start()
        with grpc.insecure_channel(serve.target) as ch:
            stub = admin_pb2_grpc.AdminStub(ch)
            assert stub.GetBaseline(admin_pb2.GetBaselineRequest(key="img1:1.27"), timeout=10).mode == \
                admin_pb2.MODE_FREEZE
            assert stub.GetBaseline(admin_pb2.GetBaselineRequest(key="img2:1.27"), timeout=10).windows_scored == 0
            assert stub.GetBaseline(admin_pb2.GetBaselineRequest(key="img3:1.27"), timeout=10).windows_scored == 50
    finally:
        serve.stop()


def test_crash_between_checkpoint_files_and_service_state_counts_once(tmp_path: Path) -> None:
    """A checkpoint writes baseline files, then service.state: a crash in between leaves some files newer
    than the per-sensor sequences in service.state.  Replaying the log must not apply their batches twice."""
    import shutil

    from baseliner.service.store import StateStore, atomic_write, baseline_filename, encode_file

    from tests.service_fixtures import config, exchange, running

    state, copy = tmp_path / "state", tmp_path / "after-crash"
    cfg = config(state, ("state.save_interval_seconds", 3600))

    async def main() -> None:
        async with running(cfg) as (srv, _):
            await exchange(srv.port, [hello("s1"), *[batch(s) for s in range(1, 6)]])
            await srv.checkpoint()  # files and service.state through batch 5; the log starts anew
            await exchange(srv.port, [hello("s1"), *[batch(s) for s in range(6, 11)]])
            snap = StateStore.snapshot(srv.pipeline)  # the next checkpoint, interrupted after 2 of 4 files
            assert srv.store is not None and len(snap.baselines) == 4
            for k in sorted(snap.baselines)[:2]:
                meta, arrays = snap.baselines[k]
                assert meta["applied_through"] == {"s1": 10}
                atomic_write(srv.store.baselines_dir / baseline_filename(k),
                             encode_file("baseline", k, meta, arrays, srv.store.keys))
            shutil.copytree(state, copy)  # what a kill -9 at this moment leaves on disk
        cfg2 = config(copy, ("state.save_interval_seconds", 3600))
        async with running(cfg2) as (srv2, _):
            assert srv2.pipeline.last_sequence("s1") == 10
            assert sum(b.windows_scored for b in srv2.pipeline.all()) == 10 * CONTAINERS

    asyncio.run(main())


def test_stop_during_a_checkpoint_lets_it_finish_before_the_last_one(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``stop()`` cancels the checkpoint loop, maybe while a checkpoint's files are being written.  Its worker
    thread cannot be cancelled: the final checkpoint must wait for it, or the older snapshot's files can be
    renamed last (a baseline, or service.state, batches behind while the log that held them is gone)."""
    import threading

    from baseliner.service.store import Snapshot, StateStore

    from tests.service_fixtures import config, exchange, running

    entered, release, first_done = threading.Event(), threading.Event(), threading.Event()
    write = StateStore.write
    calls: list[int] = []

    def slow_first_write(self: StateStore, snap: Snapshot) -> int:
        calls.append(len(calls))
        if len(calls) > 1:  # the final checkpoint: a write still running may end after it (as on a slow disk)
            n = write(self, snap)
            release.set()
            return n
        entered.set()
        release.wait(3.0)  # a slow disk; the final checkpoint, if it runs meanwhile, releases it
        try:
            return write(self, snap)
        finally:
            first_done.set()

    monkeypatch.setattr(StateStore, "write", slow_first_write)
    state = tmp_path / "state"

    async def main() -> None:
        async with running(config(state, ("state.save_interval_seconds", 0.05))) as (srv, _):
            await exchange(srv.port, [hello("s1"), *[batch(s) for s in range(1, 6)]])
            assert await asyncio.to_thread(entered.wait, 10)  # a periodic checkpoint is writing batches <= 5
            await exchange(srv.port, [hello("s1"), batch(6)])
        assert first_done.wait(10)  # (a write left running by stop() would end after it returned)
        monkeypatch.setattr(StateStore, "write", write)
        async with running(config(state, ("state.save_interval_seconds", 3600))) as (srv2, _):
            assert srv2.pipeline.last_sequence("s1") == 6
            assert {b.key: b.windows_scored for b in srv2.pipeline.all()} == {f"img{i}:1.27": 60 for i in range(4)}

    asyncio.run(main())
