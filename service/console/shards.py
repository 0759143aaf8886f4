"""The console at one shard among several: the other shards' baselines, and calls that reach an image's holder.

The console's pages read the baselines of this shard's pipeline directly; an image held by another shard is
read, and acted on, through that shard's Admin API, as :class:`~baseliner.service.shards.admin.ShardedAdmin`
passes a call on: to the shard that holds the image's routing key, with the visitor's own token (the holder
checks it and its role) and a hop count, so the holder answers for itself alone.  A session keeps the token it
logged in with, in memory only, for these calls.

The console's history (anomalies, charts, containers and nodes) is fed by this shard's pipeline only: each page
says which of its parts are this shard's.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import grpc
from baseliner.models.errors import BaselinerError, UnknownBaselineError
from baseliner.models.shards import routing_key_of_image_key
from baseliner.protos.v1 import admin_pb2
from baseliner.service.errors import PermissionDeniedError, ShardUnavailableError, UnknownEventError
from baseliner.service.shards.holdings import Route
from baseliner.service.shards.peers import HOPS

log = logging.getLogger(__name__)

CALL_SECONDS = 10.0
#: Times the console waits for an image that is moving between shards before it says so.
SETTLE_TRIES = 3


@dataclass(frozen=True)
class Holder:
    """The shard that holds an image: its name and its gRPC address."""

    name: str
    address: str


def _metadata(token: str) -> tuple[tuple[str, str], ...]:
    auth = (("authorization", f"Bearer {token}"),) if token else ()
    return (*auth, (HOPS, "1"))


def _error(e: grpc.aio.AioRpcError, what: str) -> BaselinerError:
    """A holder's gRPC refusal as the error the console shows."""
    code, details = e.code(), e.details() or ""
    if code == grpc.StatusCode.NOT_FOUND:
        return UnknownBaselineError(details or f"no baseline for {what}")
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        return PermissionDeniedError(details)
    return ShardUnavailableError(f"the shard holding {what} did not answer: {details or code.name}")


class ShardView:
    """This shard's view of the others for the console (``cluster``: the server's
    :class:`~baseliner.service.shards.cluster.Cluster`; None for a service that is not one of several)."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster

    @property
    def single(self) -> bool:
        return self.cluster is None or self.cluster.membership.single

    @property
    def name(self) -> str:
        return "" if self.single else str(self.cluster.name)

    def others(self) -> list[Holder]:
        """The other shards of the map (and of the map before, while images move)."""
        if self.single:
            return []
        m = self.cluster.membership
        shards = dict.fromkeys([*m.map.shards, *(m.previous.shards if m.previous else ())])
        return [Holder(s.name, s.address) for s in shards if s.name != self.cluster.name]

    def _name_of(self, address: str) -> str:
        return next((h.name for h in self.others() if h.address == address), address)

    async def holder(self, key: str) -> Holder | None:
        """The other shard that holds image ``key``; None when this shard answers for it."""
        if self.single:
            return None
        routing_key = routing_key_of_image_key(key)
        timeout = self.cluster.config.shards.handover_timeout_seconds
        for _ in range(SETTLE_TRIES):
            route, address, fence = self.cluster.holder_of(routing_key)
            if route is Route.LOCAL:
                return None
            if route is Route.FORWARD:
                return Holder(self._name_of(address), address) if address else None
            if fence is None or not await fence.wait(timeout):
                break
        raise ShardUnavailableError(f"image {key!r} is moving between shards; try again")

    async def holder_name(self, key: str) -> str:
        """The name of the other shard that holds image ``key``; "" when this shard answers for it, or when it is
        moving between shards."""
        try:
            holder = await self.holder(key)
        except BaselinerError:
            return ""
        return holder.name if holder is not None else ""

    async def _call(self, holder: Holder, method: str, request: Any, token: str, what: str) -> Any:
        stub = self.cluster.peers.admin(holder.address)
        try:
            return await getattr(stub, method)(request, metadata=_metadata(token), timeout=CALL_SECONDS)
        except grpc.aio.AioRpcError as e:
            raise _error(e, what) from None

    async def list_others(self, token: str) -> tuple[list[tuple[str, Any]], list[str]]:
        """Every other shard's own baselines as ``(shard, admin_pb2.Baseline)``, and the shards that did not
        answer."""
        holders = self.others()
        answers = await asyncio.gather(*(self._call(h, "ListBaselines", admin_pb2.ListBaselinesRequest(), token,
                                                    "its baselines") for h in holders), return_exceptions=True)
        rows: list[tuple[str, Any]] = []
        unavailable: list[str] = []
        for h, got in zip(holders, answers, strict=True):
            if isinstance(got, BaseException):
                log.info("console: shard %s did not list its baselines (%s)", h.name, got)
                unavailable.append(h.name)
                continue
            rows.extend((h.name, b) for b in got.baselines)
        return rows, unavailable

    async def get(self, holder: Holder, key: str, token: str) -> Any:
        return await self._call(holder, "GetBaseline", admin_pb2.GetBaselineRequest(key=key), token, repr(key))

    async def set_mode(self, holder: Holder, key: str, mode: str, token: str) -> Any:
        request = admin_pb2.SetModeRequest(key=key, mode=f"MODE_{mode.upper()}")
        return await self._call(holder, "SetMode", request, token, repr(key))

    async def reset(self, holder: Holder, key: str, token: str) -> Any:
        return await self._call(holder, "ResetBaseline", admin_pb2.ResetBaselineRequest(key=key), token, repr(key))

    async def feedback(self, event_id: str, token: str) -> tuple[str, Any]:
        """Accept event ``event_id`` at the other shard that holds its windows: ``(shard, FeedbackResponse)``."""
        request = admin_pb2.FeedbackRequest(event_id=event_id)
        for h in self.others():
            try:
                return h.name, await self._call(h, "Feedback", request, token, f"event {event_id}")
            except UnknownBaselineError:
                continue
            except ShardUnavailableError as e:
                log.info("console: feedback %s: %s", event_id, e)
                continue
        raise UnknownEventError(f"no shard holds the windows of event {event_id!r} any more: it cannot be "
                                "accepted into the baseline")
