"""A sensor's way to a sharded service: each window's vectors split by owner, one stream per shard.

The service's shards agree on a numbered shard map (``docs/sharding.md``); any shard gives it out
(``Shards.GetMap``).  :class:`ShardRouter` asks the seeds it is given (``--target``: one address, a list, or a
name that resolves to every shard) for it, then keeps one :class:`~baseliner.sensor.transport.Transport` per
shard: its own stream, its own sequence numbers and its own buffer or spool.  Each vector goes to the owner of
its routing key (its image repository, ``baseliner.models.shards``).  A shard that is down delays only the
windows it owns: they wait in its buffer and are resent, in order, when it is back.  A service that is not
sharded answers with a map of one shard: the same code path with one stream.

When the map changes (a Welcome or an acknowledgement names a newer epoch, or the periodic refresh finds
one), windows go to their new owners, except that the windows of an image whose older windows still wait in
another shard's buffer are held back until that buffer has delivered them: an image's windows reach the
service in their order, whichever shard scores them.  A shard that leaves the map keeps its stream until its
buffer is empty.  The last map is kept beside the spools (``map_file``) so that a restarted sensor resends
what they hold before it reaches any shard.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from baseliner.models.integrity import atomic_write
from baseliner.models.recording import vector_from_dict, vector_to_dict
from baseliner.models.shards import Shard, ShardListError, ShardMap
from baseliner.models.vector import FeatureVector
from baseliner.protos.v1 import shards_pb2, shards_pb2_grpc
from baseliner.sensor.buffer import BatchBuffer
from baseliner.sensor.transport import Backoff, ServiceIncompatible, Transport, TransportStats, open_channel
from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

#: Windows held back at most, over all images (beyond: the oldest are dropped, or submit waits).
MAX_HELD = 100_000
#: Seconds between map refreshes when nothing says it changed.
REFRESH_SECONDS = 60.0


def map_from_proto(msg: shards_pb2.ShardMap, reached_at: str) -> ShardMap:
    """The domain map of a ``ShardMap`` message; an entry without an address is the shard reached at ``reached_at``
    (a service that is not sharded does not know the address it is reached at)."""
    return ShardMap(msg.epoch, [Shard(e.name, e.address or reached_at) for e in msg.shards])


class ShardRouter:
    """Streams vectors to the shards of a service (see the module docstring); ``async with ShardRouter(...)``.

    ``make_buffer(shard name)`` gives each shard's buffer (a memory buffer, or a spool directory per shard);
    the other arguments are :class:`~baseliner.sensor.transport.Transport`'s, applied to every shard's stream
    (``backoff`` is a factory: one per stream).
    """

    def __init__(
        self,
        seeds: Sequence[str],
        *,
        sensor_id: str,
        node: str,
        make_buffer: Callable[[str], BatchBuffer],
        batch_size: int = 500,
        max_in_flight: int = 16,
        on_full: str = "block",
        ack_timeout: float = 30.0,
        backoff: Callable[[], Backoff] = Backoff,
        registry: CollectorRegistry | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        map_file: str | Path | None = None,
        keep: BatchBuffer | None = None,
        max_held: int = MAX_HELD,
        refresh_seconds: float = REFRESH_SECONDS,
    ) -> None:
        if not seeds:
            raise ValueError("a sensor needs at least one address to ask for the shard map")
        if on_full not in ("block", "drop"):
            raise ValueError(f"on_full must be 'block' or 'drop', got {on_full!r}")
        self.seeds = list(seeds)
        self.sensor_id = sensor_id
        self.node = node
        self.make_buffer = make_buffer
        self.on_full = on_full
        self.max_held = max_held
        self.refresh_seconds = refresh_seconds
        self._transport_args: dict[str, Any] = dict(
            sensor_id=sensor_id, node=node, batch_size=batch_size, max_in_flight=max_in_flight, on_full=on_full,
            ack_timeout=ack_timeout, registry=registry, channel_options=channel_options, credentials=credentials,
            token=token,
        )
        self._backoff = backoff
        self._channel_options = list(channel_options)
        self._credentials = credentials
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.map_file = Path(map_file) if map_file else None
        self.keep = keep  # where windows that have no shard yet wait across a restart (the spool's "_unrouted")
        self._kept: list[int] = []  # its entries loaded into _unrouted (released once routed)
        self.map: ShardMap | None = None
        self.transports: dict[str, Transport] = {}  # by shard name: the map's, and leaving ones still sending
        self._held: dict[str, list[FeatureVector]] = {}  # routing key -> windows waiting for another buffer
        self._held_count = 0
        self._settled: set[str] = set()  # routing keys no other shard's buffer holds since the last map change
        self._unrouted: list[FeatureVector] = []  # before the first map
        self._closed_stats = TransportStats()  # of streams closed after their shard left the map
        self._want_epoch = 0  # the highest epoch a shard named
        self._want_from = ""  # and the shard that named it
        self._changed = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._moved: dict[str, Shard] = {}  # shards of the map at another address than their stream
        self.dropped_held = 0  # held windows dropped (on_full="drop", more than max_held)
        self.failed: ServiceIncompatible | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    async def __aenter__(self) -> ShardRouter:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        if self._task is not None:
            return
        saved = self._load_saved()
        if saved is not None:
            self._apply_map(saved, persist=False)
        self._load_kept()
        self._task = asyncio.create_task(self._maintain(), name="baseliner-shard-router")

    async def close(self, timeout: float = 5.0) -> None:
        """Stop every stream (what is staged becomes a batch; unacknowledged batches stay buffered)."""
        self._closing = True
        self._changed.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._keep_waiting()
        await asyncio.gather(*(t.close(timeout) for t in self.transports.values()))
        for ch in self._channels.values():
            await ch.close()
        self._channels.clear()

    async def wait_for_map(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for the first shard map; True when there is one."""
        deadline = time.monotonic() + timeout
        while self.map is None and self.failed is None and time.monotonic() < deadline:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), max(0.0, deadline - time.monotonic()))
        return self.map is not None

    # -- producer side -----------------------------------------------------------------------------
    async def submit(self, vectors: Sequence[FeatureVector], *, flush: bool = True) -> None:
        """Queue ``vectors`` to their owners (see :meth:`Transport.submit` for ``flush``).  Before the first map
        arrives they wait here (bounded like held windows)."""
        if self.failed is not None:
            raise self.failed
        if self.map is None or self._unrouted:
            self._unrouted.extend(vectors)
            await self._bound_waiting()
            if self.map is None:
                return
            vectors, self._unrouted = self._unrouted, []
        by_shard: dict[str, list[FeatureVector]] = {}
        groups: dict[str, list[FeatureVector]] = {}
        for v in vectors:
            key = v.identity.image_repository
            g = groups.get(key)
            if g is None:
                g = groups[key] = []
            g.append(v)
        for key, vs in groups.items():
            owner = self.map.owner(key).name
            if key in self._held or (key not in self._settled and self._elsewhere(key, owner)):
                self._held.setdefault(key, []).extend(vs)
                self._held_count += len(vs)
            else:
                self._settled.add(key)
                by_shard.setdefault(owner, []).extend(vs)
        for name, vs in by_shard.items():  # staged everywhere first: a map that changes while one shard's
            self.transports[name].stage(vs)  # submit waits for room finds every window where it went
        for name in by_shard:
            await self.transports[name].submit((), flush=flush or bool(self._kept))
        self._release_kept()
        if self._held_count > self.max_held:
            await self._bound_waiting()
        self._check_failed()

    def _elsewhere(self, key: str, owner: str) -> bool:
        """Whether a window of ``key`` still waits in the buffer of another shard than its owner."""
        return any(t.holds(key) for name, t in self.transports.items() if name != owner)

    async def _bound_waiting(self) -> None:
        """Keep held and unrouted windows within ``max_held``: wait (``on_full="block"``) or drop the oldest."""
        while self._held_count + len(self._unrouted) > self.max_held and not self._closing and self.failed is None:
            if self.on_full == "drop":
                self._drop_oldest(self._held_count + len(self._unrouted) - self.max_held)
                return
            self._changed.clear()
            await self._changed.wait()

    def _drop_oldest(self, n: int) -> None:
        take = min(n, len(self._unrouted))
        del self._unrouted[:take]
        n -= take
        self.dropped_held += take
        for key in list(self._held):
            if n <= 0:
                break
            vs = self._held[key]
            k = min(n, len(vs))
            del vs[:k]
            n -= k
            self._held_count -= k
            self.dropped_held += k
            if not vs:
                del self._held[key]
        log.warning("%d windows dropped while waiting for a shard map or another shard's buffer "
                    "(more than %d waiting)", self.dropped_held, self.max_held)

    async def _release_held(self) -> None:
        """Send the held windows whose image no other shard's buffer holds any more, in their order."""
        if self.map is None:
            return
        current = self.map
        for key in list(self._held):
            owner = current.owner(key).name
            vs = self._held.get(key)
            if vs is None or self._elsewhere(key, owner):
                continue
            # Window by window, as they came (not as one backlog batch).  The list stays in ``_held`` until it
            # is empty: windows the producer adds meanwhile queue behind, so the image's order holds.
            while vs:
                n = 1
                while n < len(vs) and vs[n].window_start == vs[0].window_start:
                    n += 1
                group = vs[:n]
                del vs[:n]
                self._held_count -= n
                await self.transports[owner].submit(group, flush=True)
            if self._held.get(key) is vs:
                del self._held[key]
                if self.map is current:  # (a newer map: the next round checks the other buffers again)
                    self._settled.add(key)
        self._changed.set()

    # -- waiting for acknowledgements ----------------------------------------------------------------
    async def flush(self, timeout: float | None = None, *, give_up_after: float | None = None) -> bool:
        """Send everything and wait for every acknowledgement, as :meth:`Transport.flush` (held windows go as
        soon as the buffers they wait for have delivered)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.map is None:
                if not await self._wait_changed(deadline, give_up_after):
                    return False
                continue
            if self._unrouted:
                await self.submit([], flush=True)
            await self._release_held()
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            done = await asyncio.gather(*(t.flush(remaining, give_up_after=give_up_after)
                                          for t in list(self.transports.values())))
            self._check_failed()
            if self.failed is not None:
                return False
            if all(done) and not self._held and not self._unrouted:
                return True
            if not all(done):
                return False
            if deadline is not None and time.monotonic() >= deadline:
                return False

    async def _wait_changed(self, deadline: float | None, give_up_after: float | None) -> bool:
        bounds = [b for b in (None if deadline is None else deadline - time.monotonic(), give_up_after)
                  if b is not None]
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), min(bounds) if bounds else None)
        except TimeoutError:
            return False
        return True

    def undelivered(self) -> tuple[int, int]:
        """Batches and vectors not acknowledged yet (held and unrouted windows count as vectors)."""
        batches = vectors = 0
        for t in self.transports.values():
            b, v = t.undelivered()
            batches += b
            vectors += v
        return batches, vectors + self._held_count + len(self._unrouted)

    @property
    def stats(self) -> TransportStats:
        """Every stream's counts added up."""
        out = TransportStats()
        for s in [self._closed_stats, *(t.stats for t in self.transports.values())]:
            out.add(s)
        out.vectors_dropped += self.dropped_held
        return out

    def _check_failed(self) -> None:
        if self.failed is None:
            self.failed = next((t.failed for t in self.transports.values() if t.failed is not None), None)
            if self.failed is not None:
                self._changed.set()

    # -- the map ------------------------------------------------------------------------------------
    def _on_epoch(self, shard: str, epoch: int) -> None:
        """A stream's Welcome or acknowledgement (progress: held windows may go; a newer map may exist)."""
        if epoch > self._want_epoch:
            self._want_epoch, self._want_from = epoch, shard
        self._changed.set()

    async def _maintain(self) -> None:
        """Fetch the map (first, when a shard names a newer one, and every ``refresh_seconds``), send held
        windows when they may go, close the streams of shards that left once their buffers are empty."""
        backoff = self._backoff()
        refreshed = -float("inf")
        while not self._closing:
            stale = self.map is None or self._want_epoch > self.map.epoch
            if stale or time.monotonic() - refreshed > self.refresh_seconds:
                try:
                    fetched = await self._fetch_map()
                except ServiceIncompatible as e:
                    self.failed = e
                    log.error("%s; not retrying", e)
                    self._changed.set()
                    return
                if fetched is not None:
                    refreshed = time.monotonic()
                    backoff.reset()
                    if self.map is None or fetched.epoch > self.map.epoch:
                        self._apply_map(fetched)
                        if self._unrouted:
                            await self.submit([], flush=True)
                elif stale:
                    await asyncio.sleep(backoff.next())
                    continue
            try:
                await self._follow_moves()
                await self._release_held()
                await self._retire_drained()
            except ServiceIncompatible:
                self._check_failed()
                return
            self._check_failed()
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), 1.0)

    async def _fetch_map(self) -> ShardMap | None:
        """The newest map any shard gives: the one that named a newer epoch first, then the seeds, then the
        map's shards."""
        order = []
        if self.map is not None and self._want_from in self.transports:
            order.append(self.transports[self._want_from].target)
        order += self.seeds
        if self.map is not None:
            order += [s.address for s in self.map.shards]
        best: ShardMap | None = None
        for address in dict.fromkeys(order):
            try:
                reply = await shards_pb2_grpc.ShardsStub(self._channel(address)).GetMap(
                    shards_pb2.GetMapRequest(), metadata=self._metadata or None, timeout=10.0)
                got = map_from_proto(reply, address)
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                    raise ServiceIncompatible(f"the service at {address} has no shard map ({e.details()})") \
                        from None
                log.debug("shard map from %s: %s", address, e.details())
                continue
            except ShardListError as e:
                log.warning("shard map from %s is not usable: %s", address, e)
                continue
            if best is None or got.epoch > best.epoch:
                best = got
            if best.epoch >= self._want_epoch:
                break
        if best is None:
            log.warning("no shard map from %s; retrying", ", ".join(dict.fromkeys(order)))
        return best

    def _channel(self, address: str) -> grpc.aio.Channel:
        ch = self._channels.get(address)
        if ch is None:
            ch = self._channels[address] = open_channel(address, self._credentials, self._channel_options)
        return ch

    def _apply_map(self, new: ShardMap, persist: bool = True) -> None:
        old = self.map
        self.map = new
        self._settled.clear()  # every image's older windows may be elsewhere now
        for shard in new.shards:
            t = self.transports.get(shard.name)
            if t is None:
                self.transports[shard.name] = self._transport(shard)
            elif t.target != shard.address:
                log.info("shard %s is at %s now (was %s)", shard.name, shard.address, t.target)
                self._moved[shard.name] = shard
        leaving = [n for n in self.transports if n not in new]
        if old is None:
            log.info("shard map epoch %d: %s", new.epoch, ", ".join(f"{s.name}={s.address}" for s in new.shards))
        else:
            log.info("shard map epoch %d -> %d: %s%s", old.epoch, new.epoch, ", ".join(new.names),
                     f" (leaving: {', '.join(leaving)})" if leaving else "")
        if persist:
            self._save()
        self._changed.set()

    def _transport(self, shard: Shard, buffer: BatchBuffer | None = None) -> Transport:
        t = Transport(shard.address, buffer=buffer if buffer is not None else self.make_buffer(shard.name),
                      backoff=self._backoff(), shard=shard.name, on_epoch=self._on_epoch, **self._transport_args)
        t.start()
        return t

    async def _follow_moves(self) -> None:
        """A shard at a new address: a new stream with the same buffer (and what the old one knew it sent)."""
        while self._moved:
            name, shard = self._moved.popitem()
            old = self.transports[name]
            await old.close(keep_buffer=True)  # (the buffer it hands on stays open)
            t = self._transport(shard, old.buffer)
            t.take_over(old)
            self.transports[name] = t

    async def _retire_drained(self) -> None:
        """Close the streams of shards no longer in the map once nothing waits in them."""
        if self.map is None:
            return
        for name in [n for n in self.transports if n not in self.map]:
            t = self.transports[name]
            if t.undelivered()[0] == 0:
                await t.close()
                del self.transports[name]
                self._closed_stats.add(t.stats)
                log.info("shard %s left the map and its buffer is empty: stream closed", name)
                self._save()

    # -- windows without a shard, across a restart -----------------------------------------------------
    def _load_kept(self) -> None:
        """Windows a previous run kept because no shard map had come (or their image waited for another
        shard's buffer): they are routed first, in their order."""
        if self.keep is None:
            return
        entries = list(self.keep.entries())
        for p in entries:
            self._unrouted.extend(vector_from_dict(json.loads(line)) for line in p.body.splitlines() if line)
        self._kept = [p.sequence for p in entries]
        if entries:
            log.info("%d windows kept by the last run without a shard to send them to: routed first",
                     len(self._unrouted))

    def _release_kept(self) -> None:
        """The kept windows are in their shards' buffers now."""
        if self.keep is not None and self._kept and not self._unrouted:
            self.keep.release_through(self._kept[-1])
            self._kept = []

    def _keep_waiting(self) -> None:
        """At close: windows still without a shard (no map came, or held back) go to ``keep``."""
        waiting = [*self._unrouted, *(v for vs in self._held.values() for v in vs)]
        if self.keep is None:
            return
        if waiting:
            body = "\n".join(json.dumps(vector_to_dict(v), separators=(",", ":")) for v in waiting).encode()
            self.keep.add(body, len(waiting), sorted({v.identity.image_repository for v in waiting}))
            log.warning("%d windows have no shard to go to yet: kept in the spool, routed when the sensor starts "
                        "again", len(waiting))
        if self._kept:  # (now in the entry just written)
            self.keep.release_through(self._kept[-1])
            self._kept = []
        self.keep.close()

    # -- the map beside the spools ------------------------------------------------------------------
    def _save(self) -> None:
        if self.map_file is None or self.map is None:
            return
        leaving = {n: t.target for n, t in self.transports.items() if n not in self.map}
        data = {"map": self.map.to_dict(), "leaving": leaving}
        atomic_write(self.map_file, json.dumps(data, indent=1).encode(), True)

    def _load_saved(self) -> ShardMap | None:
        """The map saved beside the spools; streams for shards that were leaving start at once too."""
        if self.map_file is None or not self.map_file.exists():
            return None
        try:
            data = json.loads(self.map_file.read_text())
            saved = ShardMap.from_dict(data["map"])
            leaving = {str(k): str(v) for k, v in data.get("leaving", {}).items()}
        except (OSError, ValueError, KeyError, TypeError, ShardListError) as e:
            log.warning("%s: not a saved shard map (%s); asking the service", self.map_file, e)
            return None
        for name, address in leaving.items():
            if name not in saved and name not in self.transports:
                self.transports[name] = self._transport(Shard(name, address))
        return saved
