"""A shard among shards: the map's changes, handovers, drain, and the calls that reach the shard holding an image.

:func:`attach` gives a starting :class:`~baseliner.service.server.BaselinerServer` its :class:`Cluster` (after its
state is restored and before it listens).  A service without ``shards.list`` gets one too, as the one shard of
its own map: the same code paths, nothing to forward.

Background work (``docs/sharding.md`` has the protocol and why nothing is lost or applied twice):

* **coordination** (:meth:`Cluster._coordinate`), on the first shard of the map only: read the list, bring
  every shard onto the map (``Propose``), and when the list changed and every shard has settled, propose the next
  epoch to the shards of the old and the new list;
* **settling** (:meth:`Cluster._settle`), on every shard whose map changed: ask each shard of the map before
  which routing keys it holds that this shard now owns (``ListHeld``), pull each (``Pull``: the holder fences
  and sends it), write it down, ``Commit`` (the holder forgets it durably), install it and checkpoint; then
  forget the map before.  A shard that left the map settles when every image it held has been pulled;
* **drain** (:meth:`Cluster.drain`), when a shard that is not in the map stops: it waits until its images are
  pulled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import grpc
from baseliner.models.errors import StateError
from baseliner.models.shards import Shard, ShardListError, ShardMap, read_shard_list
from baseliner.protos.v1 import shards_pb2
from baseliner.service.auth import read_secret
from baseliner.service.errors import WrongShardError
from baseliner.service.shards.handover import Arrivals, export_key, import_key, release_key, transfer_keys
from baseliner.service.shards.holdings import Holdings, Route
from baseliner.service.shards.ingest import IngestRouter
from baseliner.service.shards.membership import Membership
from baseliner.service.shards.metrics import ShardMetrics
from baseliner.service.shards.peers import Peers

log = logging.getLogger(__name__)

#: Seconds a call to another shard may take (status, list, commit; a pull gets the handover timeout).
CALL_SECONDS = 10.0


def map_to_proto(m: ShardMap) -> shards_pb2.ShardMap:
    return shards_pb2.ShardMap(epoch=m.epoch, shards=[shards_pb2.ShardEntry(name=s.name, address=s.address)
                                                      for s in m.shards])


def map_from_proto(msg: shards_pb2.ShardMap) -> ShardMap:
    return ShardMap(msg.epoch, [Shard(e.name, e.address) for e in msg.shards])


class Cluster:
    """This shard's part in the shard map (see the module docstring)."""

    def __init__(self, server: Any) -> None:
        cfg = server.config
        self.server = server
        self.config = cfg
        self.pipeline = server.pipeline
        self.membership = Membership.from_config(cfg.shards, cfg.state.dir, cfg.state_keys())
        self.holdings = Holdings(self.membership, lambda: self.pipeline.baselines)
        self.peers = Peers(cfg)
        self.metrics = ShardMetrics(server.registry, cfg.shards.max_label_shards)
        self.router = IngestRouter(self)
        self.arrivals = Arrivals(cfg.state.dir, cfg.state_keys())
        peer_token = read_secret(cfg.shards.peer_token_file) if cfg.shards.peer_token_file else ""
        self.transfer_keys = transfer_keys(peer_token)
        self.name = self.membership.name
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._statuses: dict[str, shards_pb2.ShardStatus] = {}
        if not self.membership.single:
            self.pipeline.shard_name = self.name  # events carry the shard

    # -- start and stop -------------------------------------------------------------------------------
    async def start(self) -> None:
        """After the state is restored: forget what was given away, fence what was on its way here, start the
        background work."""
        self._forget_released()
        for key, holder, token, parts in self.arrivals.pending():
            if self.holdings.held(key):
                self.arrivals.delete(key)  # installed and checkpointed before the stop
                continue
            fence = self.holdings.fence(key, "in", holder, token)
            self._tasks.append(asyncio.create_task(self._finish_arrival(key, holder, token, parts, fence)))
        self.show()
        if not self.membership.single:
            self._tasks.append(asyncio.create_task(self._loop(self._settle, "settling")))
            self._tasks.append(asyncio.create_task(self._loop(self._coordinate, "coordinating")))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        await self.peers.close()

    async def drain(self, timeout: float) -> bool:
        """A shard that left the map: wait (at most ``timeout`` s) until every image it held has been pulled and
        the sensors have closed their streams here (a sensor closes a leaving shard's stream once it has
        delivered everything it buffered for it: what arrives meanwhile is forwarded to the images' holders)."""
        m = self.membership
        if m.single or m.member:
            return True
        deadline = time.monotonic() + timeout
        if self.holdings.held_keys() or self._streams():
            log.info("shard %s left the map: waiting up to %gs for its %d routing keys to be pulled and its %d "
                     "sensor streams to end", self.name, timeout, len(self.holdings.held_keys()), self._streams())
        while (self.holdings.held_keys() or self._streams()) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        left, streams = self.holdings.held_keys(), self._streams()
        if left:
            log.warning("shard %s stops with %d routing keys not pulled (kept in its state directory: they move "
                        "when it starts again)", self.name, len(left))
        if streams:
            log.warning("shard %s stops with %d sensor streams still open: their sensors keep what they buffered "
                        "for it until it is back", self.name, streams)
        return not left and not streams

    def _streams(self) -> int:
        ingest = self.server.ingest
        return int(ingest.streams) if ingest is not None else 0

    def _forget_released(self) -> None:
        """Keys given away before a restart came back from the checkpoint or the log replay: drop them again."""
        for key in list(self.membership.released):
            images = self.holdings.images_of(key)
            if images:
                release_key(self.pipeline, key, images, self.server.store, self.server.metrics)
                self.holdings.forget_index()
                log.info("routing key %s was handed over before the restart: its replayed state is dropped", key)

    def show(self) -> None:
        self.metrics.show(self.name, self.membership, self.holdings)

    async def _loop(self, step: Any, what: str) -> None:
        interval = self.config.shards.refresh_seconds
        while True:
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the next round tries again
                log.exception("shard %s: %s failed; trying again", self.name, what)
            self.holdings.expire()
            self._tasks = [t for t in self._tasks if not t.done()]
            self.show()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval if self.membership.previous is None else 0.2)

    # -- answers to the Shards service ----------------------------------------------------------------
    def map_message(self) -> shards_pb2.ShardMap:
        return map_to_proto(self.membership.map)

    def status(self) -> shards_pb2.ShardStatus:
        m, h = self.membership, self.holdings
        return shards_pb2.ShardStatus(shard=self.name, epoch=m.epoch, member=m.member,
                                      settled=m.previous is None and not h.to_pull, images=len(h.held_keys()),
                                      to_pull=len(h.to_pull))

    def propose(self, request: shards_pb2.ProposeRequest) -> shards_pb2.ShardStatus:
        new = map_from_proto(request.map)
        before = map_from_proto(request.before) if request.before.shards else None
        self._adopt(new, before)
        return self.status()

    def _adopt(self, new: ShardMap, before: ShardMap | None = None) -> None:
        if self.membership.single:
            raise WrongShardError("this service is not sharded (no shards.list): it follows no proposed map")
        if self.membership.adopt(new, before):
            self.holdings.new_epoch()
            self._wake.set()
            self.show()

    def list_held(self, request: shards_pb2.ListHeldRequest) -> shards_pb2.ListHeldResponse:
        """The keys held here that ``request.shard`` owns under the map followed (after adopting a newer one)."""
        self._adopt(map_from_proto(request.map))
        m = self.membership
        keys = sorted(k for k in self.holdings.held_keys() if m.owner(k) == request.shard != self.name)
        return shards_pb2.ListHeldResponse(epoch=m.epoch, keys=keys)

    async def pull(self, request: shards_pb2.PullRequest) -> Any:
        """Fence ``request.key`` and send its state (an async generator of ``HandoverPart``)."""
        m, key = self.membership, request.key
        if not self.holdings.held(key):
            yield shards_pb2.HandoverPart(key=key, not_held=True, last=True)
            return
        if request.epoch != m.epoch or m.owner(key) != request.shard:
            raise WrongShardError(f"{request.shard} does not own {key!r} under the map this shard follows "
                                  f"(epoch {m.epoch}, asked under {request.epoch})")
        fence = self.holdings.fences.get(key)
        if fence is not None and fence.why == "in":
            raise WrongShardError(f"{key!r} is still arriving here")
        timeout = self.config.shards.handover_timeout_seconds
        self.holdings.fence(key, "out", request.shard, seconds=timeout)
        if self.server.ingest is not None:
            self.server.ingest.applier.drain()  # windows logged before the fence are in the state sent
        try:
            exported = export_key(self.pipeline, key, self.holdings.images_of(key), self.transfer_keys)
        except Exception:
            self.holdings.lift(key)
            self.metrics.handovers.labels("out", "failed").inc()
            raise
        self.holdings.fences[key].token = exported.token
        log.info("routing key %s fenced for %s: %d baselines sent", key, request.shard, len(exported.images))
        for i, part in enumerate(exported.parts):
            last = i == len(exported.parts) - 1
            yield shards_pb2.HandoverPart(key=key, state=part, last=last, token=exported.token if last else "")

    async def commit(self, request: shards_pb2.CommitRequest) -> shards_pb2.CommitResponse:
        """The puller holds ``request.key`` durably: forget it here (durably first), let its windows go there."""
        key = request.key
        done = self.membership.released.get(key)
        if done is not None and done[:2] == (request.shard, request.token):
            return shards_pb2.CommitResponse(committed=True, message="committed before")
        fence = self.holdings.fences.get(key)
        if fence is None or fence.why != "out" or fence.peer != request.shard or fence.token != request.token:
            self.metrics.handovers.labels("out", "refused").inc()
            return shards_pb2.CommitResponse(committed=False, message=f"{key!r} is not fenced for {request.shard} "
                                                                      "with that state (the fence ended): pull again")
        images = self.holdings.images_of(key)
        self.membership.release(key, request.shard, request.token)  # durable before anything is forgotten
        release_key(self.pipeline, key, images, self.server.store, self.server.metrics)
        self.holdings.forget_index()
        self.holdings.lift(key)
        self.metrics.handovers.labels("out", "done").inc()
        self.show()
        self._tasks.append(asyncio.create_task(self.server.checkpoint()))  # the log forgets the key's windows
        log.info("routing key %s handed over to %s (%d baselines)", key, request.shard, len(images))
        return shards_pb2.CommitResponse(committed=True)

    # -- coordination (first shard only) --------------------------------------------------------------
    async def _coordinate(self) -> None:
        m = self.membership
        try:
            desired = ShardMap(m.epoch + 1, read_shard_list(self.config.shards.list))
        except ShardListError as e:
            log.warning("shard %s: shards.list: %s (the map stays epoch %d)", self.name, e, m.epoch)
            return
        first = m.coordinator or (desired.names[0] if len(desired) else "")
        if first != self.name:
            return
        if not len(m.map):
            self._adopt(ShardMap(1, desired.shards))
        statuses = await self._statuses_of(m.map.names)
        behind = [n for n, st in statuses.items() if st is not None and st.epoch < m.epoch]
        ahead = [st for st in statuses.values() if st is not None and st.epoch > m.epoch]
        if ahead:
            log.warning("shard %s: another shard follows epoch %d, newer than %d here; following it", self.name,
                        ahead[0].epoch, m.epoch)
            return await self._follow(ahead[0].shard)
        for name in behind:
            await self._propose_to(name, m.map, m.before)
        settled = all(st is not None and st.epoch == m.epoch and st.settled for st in statuses.values())
        if settled and not m.map.same_list(desired):
            old = m.map
            self._adopt(desired, old)
            log.info("shard %s proposes map epoch %d: %s (was %s)", self.name, desired.epoch,
                     ", ".join(desired.names), ", ".join(old.names))
            for name in dict.fromkeys([*old.names, *desired.names]):
                if name != self.name:
                    await self._propose_to(name, desired, old)

    async def _statuses_of(self, names: Any) -> dict[str, shards_pb2.ShardStatus | None]:
        async def one(name: str) -> shards_pb2.ShardStatus | None:
            if name == self.name:
                return self.status()
            shard = self._shard(name)
            if shard is None:
                return None
            try:
                st = await self.peers.shards(shard.address).Status(
                    shards_pb2.StatusRequest(), metadata=self.peers.metadata(), timeout=CALL_SECONDS)
            except Exception:  # noqa: BLE001 - down: not settled
                self.metrics.up(name, False)
                return None
            self.metrics.up(name, True)
            return st

        names = list(names)
        got = await asyncio.gather(*(one(n) for n in names))
        self._statuses = {n: s for n, s in zip(names, got, strict=True) if s is not None}
        return dict(zip(names, got, strict=True))

    async def _propose_to(self, name: str, new: ShardMap, before: ShardMap | None) -> None:
        shard = new.get(name) or (before.get(name) if before is not None else None)
        if shard is None:
            return
        request = shards_pb2.ProposeRequest(map=map_to_proto(new))
        if before is not None:
            request.before.CopyFrom(map_to_proto(before))
        try:
            await self.peers.shards(shard.address).Propose(request, metadata=self.peers.metadata(),
                                                           timeout=CALL_SECONDS)
        except Exception as e:  # noqa: BLE001 - it is proposed again next round
            log.info("shard %s: proposing epoch %d to %s failed (%s); again next round", self.name, new.epoch, name,
                     _why(e))

    async def _follow(self, name: str) -> None:
        shard = self._shard(name)
        if shard is None:
            return
        got = await self.peers.shards(shard.address).GetMap(shards_pb2.GetMapRequest(),
                                                            metadata=self.peers.metadata(), timeout=CALL_SECONDS)
        self._adopt(map_from_proto(got))

    def _shard(self, name: str) -> Shard | None:
        m = self.membership
        for candidate in (m.map, m.previous, m.before):
            if candidate is not None and candidate.get(name) is not None:
                return candidate.get(name)
        return None

    # -- settling (every shard) -----------------------------------------------------------------------
    async def _settle(self) -> None:
        m, h = self.membership, self.holdings
        if m.previous is None:
            return
        request = shards_pb2.ListHeldRequest(map=map_to_proto(m.map), shard=self.name)
        for name in m.previous.names:
            if name == self.name or name in h.confirmed:
                continue
            shard = self._shard(name)
            try:
                got = await self.peers.shards(shard.address).ListHeld(  # type: ignore[union-attr]
                    request, metadata=self.peers.metadata(), timeout=CALL_SECONDS)
            except Exception as e:  # noqa: BLE001 - down: asked again next round (its images wait for it)
                self.metrics.up(name, False)
                log.debug("ListHeld at %s: %s", name, e)
                continue
            self.metrics.up(name, True)
            if got.epoch != m.epoch:
                continue  # it follows another map: the coordinator brings it along, then it is asked again
            h.confirmed.add(name)
            for key in got.keys:
                if not h.held(key) and key not in h.fences:
                    h.to_pull[key] = name
        for key, holder in list(h.to_pull.items()):
            await self._pull(key, holder)
        self._maybe_settled()

    def _maybe_settled(self) -> None:
        m, h = self.membership, self.holdings
        if m.previous is None:
            return
        asked = all(n == self.name or n in h.confirmed for n in m.previous.names)
        arriving = any(f.why == "in" for f in h.fences.values())
        mine_only = all(m.owner(k) == self.name for k in h.held_keys()) if m.member else not h.held_keys()
        if asked and not h.to_pull and not arriving and mine_only:
            m.settle()
            self.show()

    async def _pull(self, key: str, holder: str) -> None:
        """Pull ``key`` from ``holder``: write it down, commit, install, checkpoint (see the module docstring)."""
        h = self.holdings
        shard = self._shard(holder)
        if shard is None:
            return
        t0 = time.perf_counter()
        fence = h.fence(key, "in", holder)
        try:
            parts: list[bytes] = []
            token = ""
            call = self.peers.shards(shard.address).Pull(
                shards_pb2.PullRequest(shard=self.name, epoch=self.membership.epoch, key=key),
                metadata=self.peers.metadata(), timeout=self.config.shards.handover_timeout_seconds)
            async for part in call:
                if part.not_held:
                    h.to_pull.pop(key, None)
                    h.absent.add(key)
                    return
                parts.append(part.state)
                if part.last:
                    token = part.token
            if not token:
                raise StateError(f"the handover of {key!r} from {holder} ended before its last part")
            await self._install(key, holder, token, parts, fence)
            self.metrics.handover_seconds.observe(time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001 - pulled again next round (the holder's fence ends by itself)
            self.metrics.handovers.labels("in", "failed").inc()
            log.warning("pulling %s from %s failed: %s; again next round", key, holder, _why(e))
        finally:
            if h.fences.get(key) is fence:
                h.lift(key)

    async def _install(self, key: str, holder: str, token: str, parts: list[bytes], fence: Any) -> None:
        """Written down, committed at the holder, installed, checkpointed; or, when the holder refuses the
        commit, dropped (pulled again)."""
        self.arrivals.write(key, holder, token, parts)
        shard = self._shard(holder)
        assert shard is not None
        reply = await self.peers.shards(shard.address).Commit(
            shards_pb2.CommitRequest(shard=self.name, key=key, token=token), metadata=self.peers.metadata(),
            timeout=CALL_SECONDS)
        if not reply.committed:
            self.arrivals.delete(key)
            self.metrics.handovers.labels("in", "refused").inc()
            log.info("handover of %s from %s not committed (%s); pulling again", key, holder, reply.message)
            return
        await self._take(key, holder, parts)

    async def _take(self, key: str, holder: str, parts: list[bytes]) -> None:
        images = import_key(self.pipeline, key, parts, self.server.decoder, self.transfer_keys)
        if self.server.store is not None:
            self.server.store.released.difference_update(images)  # held here again: checkpoints write them
        self.holdings.forget_index()
        self.holdings.to_pull.pop(key, None)
        if self.membership.released.pop(key, None) is not None:
            self.membership.save()  # it came back: a restart must not drop it again
        await self.server.checkpoint()  # in the state directory before any window of it is applied here
        self.arrivals.delete(key)
        self.metrics.handovers.labels("in", "done").inc()
        log.info("routing key %s taken over from %s (%d baselines)", key, holder, len(images))

    async def _finish_arrival(self, key: str, holder: str, token: str, parts: list[bytes], fence: Any) -> None:
        """A pull written down before a restart: install it if the holder committed it, else drop it."""
        try:
            while True:
                shard = self._shard(holder)
                try:
                    reply = await self.peers.shards(shard.address).Commit(  # type: ignore[union-attr]
                        shards_pb2.CommitRequest(shard=self.name, key=key, token=token),
                        metadata=self.peers.metadata(), timeout=CALL_SECONDS)
                    break
                except Exception as e:  # noqa: BLE001 - the holder is down: its answer decides, so wait for it
                    log.info("handover of %s: waiting for %s to answer its commit (%s)", key, holder, e)
                    await asyncio.sleep(self.config.shards.refresh_seconds)
            if reply.committed:
                await self._take(key, holder, parts)
            else:
                self.arrivals.delete(key)
        finally:
            if self.holdings.fences.get(key) is fence:
                self.holdings.lift(key)
            self._wake.set()

    # -- Falco alerts and admin calls for another shard ------------------------------------------------
    def holder_of(self, key: str) -> tuple[Route, str, Any]:
        """Where routing key ``key`` is answered: ``(route, shard address, fence)``."""
        d = self.holdings.where(key)
        if d.route is not Route.FORWARD:
            return d.route, "", d.fence
        shard = self._shard(d.target)
        return Route.FORWARD, shard.address if shard is not None else "", None


    async def forward_alert(self, alert: Any, body: bytes) -> tuple[int, dict[str, Any]] | None:
        """A Falco alert about an image held by another shard: that shard's answer (None: answer it here)."""
        from baseliner.service.falco import normalize_repository

        if self.membership.single:
            return None
        key = normalize_repository(alert.image_repository)
        deadline = time.monotonic() + self.config.shards.forward_timeout_seconds
        while time.monotonic() < deadline:
            route, address, fence = self.holder_of(key)
            if route is Route.LOCAL:
                return None
            if route is Route.WAIT:
                await (fence.wait(max(0.01, deadline - time.monotonic())) if fence is not None
                       else asyncio.sleep(0.05))
                continue
            try:
                reply = await self.peers.shards(address).FalcoAlert(
                    shards_pb2.FalcoAlertRequest(body=body, from_shard=self.name), metadata=self.peers.metadata(),
                    timeout=CALL_SECONDS)
            except Exception as e:  # noqa: BLE001 - the holder is down: Falco is told to retry
                self.metrics.up(self._name_at(address), False)
                return 503, {"error": "shard_unavailable",
                             "message": f"the shard that holds image {key!r} did not answer ({_why(e)})"}
            self.metrics.forwarded_calls.labels("falco").inc()
            return int(reply.status), json.loads(reply.body or b"{}")
        return 503, {"error": "shard_unavailable", "message": f"image {key!r} is moving between shards; try again"}

    def _name_at(self, address: str) -> str:
        m = self.membership
        for candidate in (m.map, m.previous):
            for s in candidate.shards if candidate is not None else ():
                if s.address == address:
                    return s.name
        return address


def _why(e: BaseException) -> str:
    """A failed call, said briefly (a gRPC status's details, or the exception)."""
    if isinstance(e, grpc.aio.AioRpcError):
        return f"{e.code().name}: {e.details()}"
    return f"{type(e).__name__}: {e}"


async def attach(server: Any) -> Cluster:
    """The :class:`Cluster` of a server whose state is restored (started; call :meth:`Cluster.stop` at the end)."""
    cluster = Cluster(server)
    await cluster.start()
    return cluster
