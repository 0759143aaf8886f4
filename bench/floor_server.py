"""The floor: a bare ``grpc.aio`` server of the ``Ingest`` API that only receives each batch and acknowledges it.

    .venv/bin/python bench/floor_server.py --listen 127.0.0.1:PORT

It speaks the service's protocol with the project's generated stubs (``baseliner.protos.v1``): a ``Welcome``
to every ``Hello``, and to every batch a ``BatchAck`` with its sequence and every window counted as applied.
Nothing is decoded, validated, scored, learnt or logged: what it costs is what receiving the bytes over
gRPC and answering costs, the least any service of this API can spend.  ``bench/service_vs_floor.py`` runs
it beside ``baseliner serve`` and reports the service's throughput as a share of this one's.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baseliner.protos.v1 import ingest_pb2, ingest_pb2_grpc  # noqa: E402


class FloorIngest(ingest_pb2_grpc.IngestServicer):
    """Acknowledges every batch as applied, in order; answers a Hello with a Welcome."""

    async def Stream(  # noqa: N802 - gRPC method name
        self, request_iterator: AsyncIterator[ingest_pb2.IngestRequest], context: Any
    ) -> AsyncIterator[ingest_pb2.IngestResponse]:
        async for req in request_iterator:
            if req.HasField("batch"):
                yield ingest_pb2.IngestResponse(ack=ingest_pb2.BatchAck(
                    sequence=req.batch.sequence, applied=req.batch.columns.count))
            else:
                yield ingest_pb2.IngestResponse(welcome=ingest_pb2.Welcome(max_batch_vectors=1 << 20))


async def serve(listen: str) -> None:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
    ingest_pb2_grpc.add_IngestServicer_to_server(FloorIngest(), server)
    server.add_insecure_port(listen)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", required=True, help="host:port")
    asyncio.run(serve(ap.parse_args().listen))


if __name__ == "__main__":
    main()
