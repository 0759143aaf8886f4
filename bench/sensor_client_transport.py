"""Sensor-side costs: synthetic generation, wire encoding, and transport throughput to a null service.

    .venv/bin/python bench/sensor_client_transport.py [--hours 6] [--batch-size 500]

The "null service" is a real gRPC server (tests/sensor_ingest_server.py) that decodes each batch and
acknowledges it without scoring, so the figure is what the sensor side and gRPC can carry; the
service's own end-to-end figure is in its benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from baseliner.sensor import wire  # noqa: E402
from baseliner.sensor.buffer import MemoryBuffer  # noqa: E402
from baseliner.sensor.synthetic import ScenarioConfig, SyntheticSource  # noqa: E402
from baseliner.sensor.transport import Transport  # noqa: E402
from sensor_ingest_server import IngestServer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=float, default=6.0)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--no-ngrams", action="store_true")
    args = ap.parse_args()
    cfg = ScenarioConfig(hours=args.hours, attacks=(), ngrams=not args.no_ngrams)
    t0 = time.perf_counter()
    vectors = [v for w in SyntheticSource(cfg) for v in w]
    gen = time.perf_counter() - t0
    n = len(vectors)
    print(f"synthetic generation: {n} vectors in {gen:.2f}s = {gen / n * 1e6:.1f} us/vector")

    t0 = time.perf_counter()
    bodies = [wire.encode_batch_body(vectors[i:i + args.batch_size]) for i in range(0, n, args.batch_size)]
    enc = time.perf_counter() - t0
    size = sum(map(len, bodies))
    print(f"wire encoding: {enc / n * 1e6:.1f} us/vector, {size / n:.0f} bytes/vector on the wire "
          f"(batches of {args.batch_size})")

    async def stream() -> float:
        server = IngestServer()
        await server.start()
        t = Transport(server.target, sensor_id="bench", node="node-1", batch_size=args.batch_size,
                      buffer=MemoryBuffer(first_sequence=1))
        t0 = time.perf_counter()
        async with t:
            await t.submit(vectors, flush=True)
            assert await t.flush(600)
        dt = time.perf_counter() - t0
        await server.stop()
        assert sum(len(b.vectors) for b in server.state.applied) == n
        return dt

    dt = asyncio.run(stream())
    print(f"transport (encode + gRPC + ack, null service in the same process): {n / dt:,.0f} vectors/s")


if __name__ == "__main__":
    main()
