"""Baseline lifecycle through the real service: learning -> detecting, anomaly events (folded repeats,
explanations), freeze, reset, feedback, admin errors."""

from __future__ import annotations

import asyncio
import os
import sys

import grpc
import pytest
from baseliner.models.block import VectorBlock
from baseliner.protos.v1 import admin_pb2

sys.path.insert(0, os.path.dirname(__file__))
from service_fixtures import admin, batch_request, config, exchange, hello, learn_batches, vector  # noqa: E402

KEY = "nginx:1.27"


async def _learn(port: int) -> None:
    resps = await exchange(port, [hello("s1"), *learn_batches(6)])  # 120 windows, 2 containers
    assert all(r.ack.applied == 20 for r in resps[1:])


def test_learning_then_detecting_then_an_explained_event_with_folded_repeats() -> None:
    async def main() -> None:
        async with running_default() as (srv, events):
            ch, stub = admin(srv.port)
            async with ch:
                # first batches: learning
                await exchange(srv.port, [hello("s1"), *learn_batches(1)])
                b = await stub.GetBaseline(admin_pb2.GetBaselineRequest(key=KEY))
                assert b.state == admin_pb2.STATE_LEARNING and b.mode == admin_pb2.MODE_AUTO
                assert b.threshold == 0
                await exchange(srv.port, [hello("s1"), *learn_batches(5, start_seq=2, start_window=10)])
                b = await stub.GetBaseline(admin_pb2.GetBaselineRequest(key=KEY))
                assert b.state == admin_pb2.STATE_DETECTING
                assert b.windows_learned == 120 and b.threshold > 0
                assert "/" not in "".join(b.executables)  # nothing exec'd while learning
                assert "read" in b.syscalls and "tcp/5432" in b.remote_ports
                assert any(f.name == "syscall.read" and f.typical > 10 for f in b.features)
                assert not events

                # a reverse shell in container 0, repeated in three consecutive windows -> one event, count 3
                attack = [vector(60 + k, 0, attack="shell") for k in range(3)]
                normal = [vector(60 + k, 1) for k in range(3)]
                resps = await exchange(srv.port, [hello("s1"), batch_request(attack + normal, 7),
                                                  *learn_batches(4, start_seq=8, start_window=63)])
                assert resps[1].ack.applied == 6
                first = [e for e in events if not e["update"]]
                assert len(first) == 1, events
                ev = first[0]
                assert ev["container"] == {"id": "c0", "name": "web-0"}
                assert ev["image"]["repository"] == "nginx" and ev["image"]["tag"] == "1.27"
                assert {"novel_executable", "novel_port"} <= set(ev["kinds"])
                assert {"kind": "executable", "value": "/bin/sh"} in ev["novel"]
                assert ev["explanation"] and all("baseline" in x["text"] for x in ev["explanation"])
                assert ev["score"] > ev["threshold"] > 0
                assert ev["severity"] in ("high", "critical")
                # the repeats were folded; once the container moved past the dedup window... it has not:
                # the window is 300 s and 4 more batches are 400 s of event time, so the update was written
                updates = [e for e in events if e["update"]]
                assert len(updates) == 1 and updates[0]["event_id"] == ev["event_id"]
                assert updates[0]["count"] == 3 and updates[0]["last_seen"] > ev["first_seen"]
                b = await stub.GetBaseline(admin_pb2.GetBaselineRequest(key=KEY))
                assert b.anomalies == 3
                assert "/bin/sh" not in b.executables  # flagged windows are not learnt

                # feedback: accept the behaviour; the same behaviour is then normal
                fb = await stub.Feedback(admin_pb2.FeedbackRequest(event_id=ev["event_id"], comment="admin test"))
                assert "executable:/bin/sh" in fb.accepted_items
                b = await stub.GetBaseline(admin_pb2.GetBaselineRequest(key=KEY))
                assert "/bin/sh" in b.executables and "tcp/4444" in b.remote_ports
                n_events = len(events)
                await exchange(srv.port, [hello("s1"), batch_request([vector(200, 0, attack="shell")], 20)])
                assert not any("novel_executable" in e["kinds"] for e in events[n_events:])

    asyncio.run(main())


def running_default():  # type: ignore[no-untyped-def]
    from service_fixtures import running

    return running(config())


def test_freeze_learns_nothing_reset_forgets_learn_mode_raises_nothing() -> None:
    async def main() -> None:
        async with running_default() as (srv, events):
            await _learn(srv.port)
            ch, stub = admin(srv.port)
            async with ch:
                b = await stub.SetMode(admin_pb2.SetModeRequest(key=KEY, mode=admin_pb2.MODE_FREEZE))
                assert b.state == admin_pb2.STATE_FROZEN and b.mode == admin_pb2.MODE_FREEZE
                learned = b.windows_learned
                await exchange(srv.port, [hello("s1"), *learn_batches(2, start_seq=7, start_window=60)])
                b = await stub.GetBaseline(admin_pb2.GetBaselineRequest(key=KEY))
                assert b.windows_learned == learned and b.windows_scored == learned + 40
                # frozen baselines still detect
                await exchange(srv.port, [hello("s1"), batch_request([vector(100, 0, attack="etc")], 9)])
                assert events and "novel_sensitive_path" in events[-1]["kinds"]

                b = await stub.SetMode(admin_pb2.SetModeRequest(key=KEY, mode=admin_pb2.MODE_LEARN))
                assert b.state == admin_pb2.STATE_LEARNING
                n = len(events)
                await exchange(srv.port, [hello("s1"), batch_request([vector(101, 1, attack="shell")], 10)])
                assert len(events) == n  # learn mode raises nothing

                b = await stub.ResetBaseline(admin_pb2.ResetBaselineRequest(key=KEY))
                assert b.windows_learned == 0 and b.state == admin_pb2.STATE_LEARNING and b.threshold == 0
                lst = await stub.ListBaselines(admin_pb2.ListBaselinesRequest())
                assert [x.key for x in lst.baselines] == [KEY]

    asyncio.run(main())


def test_startup_windows_are_marked_not_alarmed_on_every_deploy() -> None:
    async def main() -> None:
        async with running_default() as (srv, events):
            await _learn(srv.port)
            # a new replica starts: the sensor does not know its age (-1); the service's tracker fills it
            # (a start-up burst: three times the usual syscall rate)
            vs = [vector(70 + k, 9, age=-1.0) for k in range(3)]
            for v in vs:
                v.syscalls = {k: c * 3 for k, c in v.syscalls.items()}
            resps = await exchange(srv.port, [hello("s1"), batch_request(vs, 7)])
            assert resps[1].ack.applied == 3
            assert not events
            # what the service did with them, seen at the pipeline (the domain core) directly
            block = VectorBlock.from_vectors([vector(80 + k, 10, age=-1.0) for k in range(3)])
            result = srv.pipeline.apply_block("s-direct", 1, block)
            assert result.applied == 3
            assert block.age.tolist() == [0.0, 10.0, 20.0]

    asyncio.run(main())


def test_admin_errors_map_to_status_codes() -> None:
    async def main() -> None:
        async with running_default() as (srv, _):
            ch, stub = admin(srv.port)
            async with ch:
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await stub.GetBaseline(admin_pb2.GetBaselineRequest(key="nope:1"))
                assert e.value.code() == grpc.StatusCode.NOT_FOUND and "nope:1" in (e.value.details() or "")
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await stub.Feedback(admin_pb2.FeedbackRequest(event_id="0123"))
                assert e.value.code() == grpc.StatusCode.NOT_FOUND
                await _learn(srv.port)
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await stub.SetMode(admin_pb2.SetModeRequest(key=KEY, mode=admin_pb2.MODE_UNSPECIFIED))
                assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    asyncio.run(main())


def test_baseline_limit_rejects_new_images_with_a_clear_reason() -> None:
    async def main() -> None:
        from service_fixtures import running, sample, scrape

        async with running(config(None, ("pipeline.max_baselines", 1))) as (srv, _):
            two_images = [vector(0, 0), vector(0, 1, repo="redis")]
            resps = await exchange(srv.port, [hello("s1"), batch_request(two_images, 1)])
            ack = resps[1].ack
            assert ack.applied == 1 and len(ack.rejected) == 1 and ack.rejected[0].index == 1
            assert "baseline limit" in ack.rejected[0].message
            text = scrape(srv.metrics_port)
            assert sample(text, "baseliner_vectors_rejected_total", reason="BASELINE_LIMIT") == 1
            assert sample(text, "baseliner_baselines_limit") == 1

    asyncio.run(main())


def test_admin_cli_commands_against_the_running_service(capsys) -> None:  # type: ignore[no-untyped-def]
    import argparse

    from baseliner.service import admin as admin_cli

    def cli(*argv: str) -> int:
        parser = argparse.ArgumentParser()
        admin_cli.add_parser(parser.add_subparsers())
        return admin_cli.run(parser.parse_args(["admin", "--target", target, *argv]))

    async def main() -> None:
        nonlocal target
        async with running_default() as (srv, events):
            target = f"127.0.0.1:{srv.port}"
            await _learn(srv.port)
            await exchange(srv.port, [hello("s1"), batch_request([vector(70, 0, attack="shell")], 7)])
            assert await asyncio.to_thread(cli, "list") == 0
            assert await asyncio.to_thread(cli, "get", KEY) == 0
            assert await asyncio.to_thread(cli, "mode", KEY, "freeze") == 0
            assert await asyncio.to_thread(cli, "--json", "get", KEY) == 0
            assert await asyncio.to_thread(cli, "feedback", events[0]["event_id"]) == 0
            assert await asyncio.to_thread(cli, "reset", KEY) == 0
            assert await asyncio.to_thread(cli, "get", "nope:1") == 1

    target = ""
    asyncio.run(main())
    out, err = capsys.readouterr()
    assert "detecting" in out and "frozen" in out and '"state": "STATE_FROZEN"' in out
    assert "executable:/bin/sh" in out and "learned=0 " in out
    assert "NOT_FOUND" in err
