"""The ``Shards`` gRPC service: thin, as the other servicers (``service/servicer.py``); the work is the cluster's."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
from baseliner.models.errors import BaselinerError
from baseliner.protos.v1 import shards_pb2, shards_pb2_grpc
from baseliner.service.errors import ShardUnavailableError, abort


class ShardsServicer(shards_pb2_grpc.ShardsServicer):
    def __init__(self, cluster: Any, ingest: Any, falco: Any = None) -> None:
        self.cluster = cluster
        self.ingest = ingest  # the IngestServicer: forwarded parts are logged and applied as its batches are
        self.falco = falco  # () -> the FalcoEndpoint (None when falco.listen is off)

    async def GetMap(self, request: Any, context: grpc.aio.ServicerContext) -> shards_pb2.ShardMap:  # noqa: N802
        return self.cluster.map_message()

    async def Status(self, request: Any, context: grpc.aio.ServicerContext) -> shards_pb2.ShardStatus:  # noqa: N802
        return self.cluster.status()

    async def Propose(self, request: Any, context: grpc.aio.ServicerContext) -> shards_pb2.ShardStatus:  # noqa: N802
        try:
            return self.cluster.propose(request)
        except BaselinerError as e:
            await abort(context, e)

    async def ListHeld(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        try:
            return self.cluster.list_held(request)
        except BaselinerError as e:
            await abort(context, e)

    async def Pull(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:  # noqa: N802
        try:
            async for part in self.cluster.pull(request):
                yield part
        except BaselinerError as e:
            await abort(context, e)

    async def Commit(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        try:
            return await self.cluster.commit(request)
        except BaselinerError as e:
            await abort(context, e)

    async def Forward(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        try:
            results = [await self.cluster.router.receive(self.ingest, part) for part in request.parts]
        except BaselinerError as e:
            await abort(context, e)
        return shards_pb2.ForwardResponse(results=results, epoch=self.cluster.membership.epoch)

    async def FalcoAlert(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        endpoint = self.falco() if self.falco is not None else None
        if endpoint is None:
            await abort(context, ShardUnavailableError("this shard takes no Falco alerts (falco.listen is off)"))
        status, payload = await endpoint.route(request.body, forwarded=True)
        return shards_pb2.FalcoAlertResponse(status=status, body=json.dumps(payload, separators=(",", ":")).encode())
