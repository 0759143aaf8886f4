"""The Admin API at any shard: a list of every shard's baselines, each other call answered where its image is.

``ListBaselines`` asks every shard of the map (and any that still hands images over) and merges their answers;
a shard that does not answer is named in ``unavailable_shards``.  ``GetBaseline``, ``SetMode`` and
``ResetBaseline`` go to the shard that holds the image key's routing key (waiting while it is fenced: a change
made then would be lost with the state already sent); ``Feedback`` is answered by the shard that holds the event
(its recent events move with its images), asked in turn.  A passed-on call carries the caller's own token (the
shard it reaches checks it) and a hop count (``x-baseliner-shard-hops``), so it is passed on at most
:data:`~baseliner.service.shards.peers.MAX_HOPS` times.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
from baseliner.models.shards import routing_key_of_image_key
from baseliner.protos.v1 import admin_pb2, admin_pb2_grpc
from baseliner.service.errors import ShardUnavailableError, abort
from baseliner.service.shards.holdings import Route
from baseliner.service.shards.peers import HOPS, MAX_HOPS

log = logging.getLogger(__name__)

CALL_SECONDS = 10.0


def _hops(context: grpc.aio.ServicerContext) -> int:
    for k, v in context.invocation_metadata() or ():
        if k == HOPS:
            try:
                return int(v)
            except ValueError:
                return MAX_HOPS
    return 0


def _passed_on(context: grpc.aio.ServicerContext, hops: int) -> tuple[tuple[str, str], ...]:
    """The caller's token (the next shard checks it) and the hop count."""
    auth = tuple((k, v) for k, v in context.invocation_metadata() or () if k == "authorization")
    return (*auth, (HOPS, str(hops + 1)))


class ShardedAdmin(admin_pb2_grpc.AdminServicer):
    """Wraps this shard's :class:`~baseliner.service.servicer.AdminServicer` (see the module docstring)."""

    def __init__(self, local: Any, cluster: Any) -> None:
        self.local = local
        self.cluster = cluster

    async def ListBaselines(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        mine = await self.local.ListBaselines(request, context)
        for b in mine.baselines:
            b.shard = self.cluster.name
        m = self.cluster.membership
        hops = _hops(context)
        if m.single or hops:
            return mine
        others = [s for s in dict.fromkeys([*m.map.shards, *(m.previous.shards if m.previous else ())])
                  if s.name != self.cluster.name]

        async def ask(address: str) -> Any:
            return await self.cluster.peers.admin(address).ListBaselines(
                request, metadata=_passed_on(context, hops), timeout=CALL_SECONDS)

        answers = await asyncio.gather(*(ask(s.address) for s in others), return_exceptions=True)
        merged = {b.key: b for b in mine.baselines}
        out = admin_pb2.ListBaselinesResponse()
        for shard, got in zip(others, answers, strict=True):
            if isinstance(got, BaseException):
                out.unavailable_shards.append(shard.name)
                log.info("ListBaselines: shard %s did not answer (%s)", shard.name, got)
                continue
            for b in got.baselines:
                merged.setdefault(b.key, b)  # (a key moving between two shards shows once)
        out.baselines.extend(merged[k] for k in sorted(merged))
        return out

    async def GetBaseline(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        return await self._routed("GetBaseline", request, context)

    async def SetMode(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        return await self._routed("SetMode", request, context)

    async def ResetBaseline(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        return await self._routed("ResetBaseline", request, context)

    async def _routed(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> Any:
        key = routing_key_of_image_key(request.key)
        hops = _hops(context)
        timeout = self.cluster.config.shards.handover_timeout_seconds
        for _ in range(1000):
            route, address, fence = self.cluster.holder_of(key)
            if route is Route.LOCAL or (route is Route.FORWARD and (hops >= MAX_HOPS or not address)):
                answer = await getattr(self.local, method)(request, context)
                if hasattr(answer, "shard"):
                    answer.shard = self.cluster.name
                return answer
            if route is Route.FORWARD:
                self.cluster.metrics.forwarded_calls.labels("admin").inc()
                return await self._call(address, method, request, context, hops)
            if fence is None or not await fence.wait(timeout):
                await abort(context, ShardUnavailableError(f"image {request.key!r} is moving between shards; "
                                                           "try again"))
        await abort(context, ShardUnavailableError(f"image {request.key!r} did not settle on a shard"))

    async def _call(self, address: str, method: str, request: Any, context: grpc.aio.ServicerContext,
                    hops: int) -> Any:
        try:
            return await getattr(self.cluster.peers.admin(address), method)(
                request, metadata=_passed_on(context, hops), timeout=CALL_SECONDS)
        except grpc.aio.AioRpcError as e:
            await context.abort(e.code(), e.details() or "")

    async def Feedback(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        rec = self.cluster.pipeline.recent.get(request.event_id)
        hops = _hops(context)
        if rec is not None:
            key = routing_key_of_image_key(rec.image_key)
            route, _, fence = self.cluster.holder_of(key)
            if route is Route.WAIT and fence is not None:
                await fence.wait(self.cluster.config.shards.handover_timeout_seconds)
            if self.cluster.pipeline.recent.get(request.event_id) is not None:
                answer = await self.local.Feedback(request, context)
                answer.baseline.shard = self.cluster.name
                return answer
        m = self.cluster.membership
        if m.single or hops:
            return await self.local.Feedback(request, context)  # NOT_FOUND, said by the local servicer
        for shard in dict.fromkeys([*m.map.shards, *(m.previous.shards if m.previous else ())]):
            if shard.name == self.cluster.name:
                continue
            try:
                answer = await self.cluster.peers.admin(shard.address).Feedback(
                    request, metadata=_passed_on(context, hops), timeout=CALL_SECONDS)
            except grpc.aio.AioRpcError as e:
                if e.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE,
                                grpc.StatusCode.DEADLINE_EXCEEDED):
                    continue
                await context.abort(e.code(), e.details() or "")
            self.cluster.metrics.forwarded_calls.labels("admin").inc()
            return answer
        return await self.local.Feedback(request, context)
