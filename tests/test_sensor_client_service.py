"""The sensor transport against the real service: restarts on both sides, every window applied once."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from baseliner.models.vector import FeatureVector
from baseliner.sensor.buffer import MemoryBuffer
from baseliner.sensor.synthetic import ScenarioConfig, SyntheticSource
from baseliner.sensor.transport import Backoff, Transport
from baseliner.service.server import BaselinerServer
from prometheus_client import CollectorRegistry

sys.path.insert(0, os.path.dirname(__file__))
from service_fixtures import config  # noqa: E402


def _windows(hours: float) -> list[list[FeatureVector]]:
    src = SyntheticSource(ScenarioConfig(hours=hours, attacks=(), nodes=("node-1",), restarts_per_day=0.0,
                                         rollout_at_hours=None))
    return list(src)


def _scored(server: BaselinerServer) -> int:
    return sum(b.windows_scored for b in server.pipeline.baselines.values())


async def _start(cfg, port: int = 0) -> BaselinerServer:  # type: ignore[no-untyped-def]
    if port:
        cfg.grpc.listen = f"127.0.0.1:{port}"
    srv = BaselinerServer(cfg, CollectorRegistry())
    await srv.start()
    return srv


def test_service_restart_mid_stream_applies_every_window_exactly_once(tmp_path: Path) -> None:
    async def body() -> None:
        windows = _windows(1.0)  # 360 windows x 8 containers
        total = sum(len(w) for w in windows)
        cfg = config(tmp_path)
        srv = await _start(cfg)
        port = srv.port
        t = Transport(f"127.0.0.1:{port}", sensor_id="node-1/synthetic", node="node-1", batch_size=40,
                      max_in_flight=4, buffer=MemoryBuffer(first_sequence=1),
                      backoff=Backoff(initial=0.05, maximum=0.2))
        t.start()
        half = len(windows) // 2
        for w in windows[:half]:
            await t.submit(w)
        while _scored(srv) < 8 * half // 2:  # part of the first half is applied
            await asyncio.sleep(0.01)
        await srv.stop()  # graceful: saves state (the sensor's last sequence included)
        for w in windows[half:]:
            await t.submit(w)  # buffered while the service is down
        srv = await _start(config(tmp_path), port)
        assert await t.flush(60)
        await t.close()
        scored = _scored(srv)
        last = srv.pipeline.last_sequence("node-1/synthetic")
        await srv.stop()
        assert scored == total
        assert t.stats.connects >= 2 and t.stats.vectors_dropped == 0
        assert last == t.buffer.next_sequence - 1

    asyncio.run(asyncio.wait_for(body(), 120))


def test_restarted_sensor_is_not_mistaken_for_duplicates(tmp_path: Path) -> None:
    async def body() -> None:
        windows = _windows(0.2)
        srv = await _start(config(tmp_path))
        target = f"127.0.0.1:{srv.port}"
        # first incarnation
        async with Transport(target, sensor_id="s", node="node-1", batch_size=50,
                             buffer=MemoryBuffer(first_sequence=1)) as t1:
            for w in windows[:30]:
                await t1.submit(w, flush=False)
            assert await t1.flush(30)
        applied_first = _scored(srv)
        # second incarnation, same sensor id, its counter starts low again (clock stepped back)
        async with Transport(target, sensor_id="s", node="node-1", batch_size=50,
                             buffer=MemoryBuffer(first_sequence=1)) as t2:
            for w in windows[30:]:
                await t2.submit(w, flush=False)
            assert await t2.flush(30)
        scored = _scored(srv)
        await srv.stop()
        assert applied_first == sum(len(w) for w in windows[:30])
        assert scored == sum(len(w) for w in windows)
        assert t2.stats.batches_duplicate == 0 and t2.stats.vectors_applied == scored - applied_first

    asyncio.run(asyncio.wait_for(body(), 60))
