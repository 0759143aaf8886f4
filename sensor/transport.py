"""The sensor's gRPC client: batches, sequence numbers, acknowledgements, reconnects.

Protocol (``protos/v1/ingest.proto``), per connection:

1. send ``Hello`` (stable ``sensor_id``, ``node``), read ``Welcome``;
2. release every buffered batch with ``sequence <= Welcome.last_sequence`` (the service already applied
   it), then (re)send the rest in ascending order, at most ``max_in_flight`` unacknowledged at a time;
3. every ``BatchAck`` must match the oldest batch in flight (a batch is in flight from just before it is
   written, so an ack that arrives before the write returns finds it); the batch leaves the buffer when the
   ack is durable or the service does not offer durability (``Welcome.durable_acks`` false);
4. on any error or an ack that does not come within ``ack_timeout`` seconds, drop the connection and
   reconnect after an exponential backoff with jitter; unacknowledged batches are resent in order;
5. but a service that answers ``UNIMPLEMENTED`` (it does not read this sensor's wire schema version, or has
   no ``Ingest`` service) or ``PERMISSION_DENIED`` (the sensor's credential names another sensor than its
   ``Hello``) cannot take these batches however often the sensor tries: the transport stops, logs why, and
   :meth:`Transport.submit` raises :class:`ServiceIncompatible` from then on.

:meth:`Transport.flush` waits for the acknowledgements for a bounded time when asked: ``timeout`` seconds
in all, or ``give_up_after`` seconds without an acknowledgement (the service unreachable);
:meth:`Transport.undelivered` says what is still held then.

Submissions are split into batches of at most ``batch_size`` vectors (and the service's
``max_batch_vectors``), encoded once (:mod:`baseliner.sensor.wire`) and kept as bytes in a bounded
:class:`~baseliner.sensor.buffer.BatchBuffer`.  When the buffer is full, ``on_full="block"`` makes
:meth:`Transport.submit` wait (replays and simulations, which can wait) and ``on_full="drop"`` evicts
the oldest batches (a live sensor, which cannot); every eviction is logged and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import random
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import grpc
import grpc.aio
from baseliner.models.errors import BaselinerError
from baseliner.models.vector import FeatureVector
from baseliner.protos.v1 import ingest_pb2
from baseliner.sensor import wire
from baseliner.sensor.buffer import BatchBuffer, MemoryBuffer, Pending
from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger(__name__)

STREAM_METHOD = "/baseliner.v1.Ingest/Stream"
SENSOR_VERSION = "0.1.0"


class ProtocolError(Exception):
    """The service broke the ingest protocol (no Welcome, an ack out of order)."""


class AckTimeout(Exception):
    """An acknowledgement did not arrive in time."""


class ServiceIncompatible(BaselinerError):
    """The service cannot take this sensor's batches (another wire schema version, no Ingest service, a
    credential of another sensor)."""


@dataclass
class TransportStats:
    """What the transport did, for tests, summaries and logs (mirrored in Prometheus counters)."""

    batches_sent: int = 0
    batches_resent: int = 0
    batches_acked: int = 0
    batches_already_applied: int = 0  # released because Welcome.last_sequence covered them
    batches_duplicate: int = 0  # acks saying the batch had been applied before
    batches_rejected: int = 0  # whole batch refused by the service
    batches_dropped: int = 0  # evicted from a full buffer before they were acknowledged
    vectors_submitted: int = 0
    vectors_applied: int = 0
    # in batches the service had applied before their ack was lost (released by Welcome.last_sequence or
    # acknowledged as duplicates): it does not say again how many it applied (fewer if it rejected some)
    vectors_applied_before: int = 0
    vectors_rejected: int = 0
    vectors_dropped: int = 0
    connects: int = 0
    connect_failures: int = 0

    def add(self, other: TransportStats) -> None:
        """Add ``other``'s counts to these."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class Backoff:
    """Exponential backoff with jitter: ``min(maximum, initial * factor**n) * U(1 - jitter, 1)``.

    >>> b = Backoff(initial=1.0, maximum=5.0, jitter=0.0)
    >>> [b.next() for _ in range(5)]
    [1.0, 2.0, 4.0, 5.0, 5.0]
    >>> b.reset(); b.next()
    1.0
    """

    def __init__(self, initial: float = 0.2, maximum: float = 30.0, factor: float = 2.0, jitter: float = 0.5,
                 rng: random.Random | None = None) -> None:
        if not (0 < initial <= maximum) or factor < 1 or not (0 <= jitter < 1):
            raise ValueError("backoff needs 0 < initial <= maximum, factor >= 1, 0 <= jitter < 1")
        self.initial, self.maximum, self.factor, self.jitter = initial, maximum, factor, jitter
        self._rng = rng or random.Random()
        self._attempt = 0

    def next(self) -> float:
        base = min(self.maximum, self.initial * self.factor**self._attempt)
        self._attempt += 1
        return base * (1.0 - self.jitter * self._rng.random())

    def reset(self) -> None:
        self._attempt = 0


#: The transport's metrics (``baseliner_sensor_*``, labelled by shard): name -> (kind, help).
_METRICS: dict[str, tuple[type[Counter] | type[Gauge], str]] = {
    "batches_sent": (Counter, "Batches written to the stream (resends too)"),
    "batches_resent": (Counter, "Batches sent again after a reconnect"),
    "batches_acked": (Counter, "Batches acknowledged by the service"),
    "batches_dropped": (Counter, "Unacknowledged batches evicted from the full buffer"),
    "vectors_dropped": (Counter, "Vectors in batches evicted from the full buffer"),
    "batches_rejected": (Counter, "Whole batches refused by the service"),
    "vectors_rejected": (Counter, "Vectors the service rejected (reasons are logged)"),
    "vectors_applied": (Counter, "Vectors the service applied"),
    "connect_failures": (Counter, "Streams that failed or broke"),
    "buffer_batches": (Gauge, "Unacknowledged batches held"),
    "buffer_bytes": (Gauge, "Bytes of unacknowledged batches held"),
}
#: The families of :data:`_METRICS` in each registry, shared by a sensor's transports (one per shard).
_FAMILIES: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, Any]] = weakref.WeakKeyDictionary()


def _shard_metrics(registry: CollectorRegistry, shard: str) -> dict[str, Any]:
    """This shard's children of the transport's metric families in ``registry``."""
    families = _FAMILIES.get(registry)
    if families is None:
        families = _FAMILIES[registry] = {name: kind(f"baseliner_sensor_{name}", doc, ("shard",), registry=registry)
                                          for name, (kind, doc) in _METRICS.items()}
    return {name: family.labels(shard) for name, family in families.items()}


_EXPECTED = (asyncio.InvalidStateError, ProtocolError, AckTimeout, ConnectionError, OSError)


def _is_loopback(target: str) -> bool:
    host = target.rpartition(":")[0].strip("[]") or target
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_channel(target: str, credentials: grpc.ChannelCredentials | None,
                 options: Sequence[tuple[str, Any]]) -> grpc.aio.Channel:
    """A channel to ``target``: TLS with ``credentials``, plaintext without."""
    if credentials is not None:
        return grpc.aio.secure_channel(target, credentials, options=options)
    return grpc.aio.insecure_channel(target, options=options)


def channel_credentials(ca_file: str | None = None, cert_file: str | None = None,
                        key_file: str | None = None) -> grpc.ChannelCredentials:
    """TLS credentials: the service verified against ``ca_file`` (system roots when None); a client
    certificate for mutual TLS when ``cert_file`` and ``key_file`` are given."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("a client certificate needs both a certificate file and a key file")

    def read(path: str | None) -> bytes | None:
        if path is None:
            return None
        with open(path, "rb") as f:
            return f.read()

    return grpc.ssl_channel_credentials(read(ca_file), read(key_file), read(cert_file))


def _image_of(v: FeatureVector) -> tuple[str, str, str]:
    ident = v.identity
    return ident.image_repository, ident.image_tag, ident.image_digest


#: What a service answers that no retry changes, and what the operator must do about it.
_FOR_GOOD = {
    grpc.StatusCode.UNIMPLEMENTED: "deploy a sensor and a service of the same wire schema version",
    grpc.StatusCode.PERMISSION_DENIED: "give the sensor the --node and --sensor-id its credential names, or the "
                                       "credential of the sensor it is",
}


def _incompatible(exc: BaseException) -> str | None:
    """What to do when ``exc`` says the service cannot take this sensor's batches however often it tries;
    None for errors a retry may cure."""
    return _FOR_GOOD.get(exc.code()) if isinstance(exc, grpc.aio.AioRpcError) else None


def _passthrough(b: bytes) -> bytes:
    return b


class Transport:
    """Streams vectors to a Baseliner service; use as ``async with Transport(...) as t``."""

    def __init__(
        self,
        target: str,
        *,
        sensor_id: str,
        node: str,
        buffer: BatchBuffer | None = None,
        batch_size: int = 500,
        max_in_flight: int = 16,
        on_full: str = "block",
        ack_timeout: float = 30.0,
        backoff: Backoff | None = None,
        registry: CollectorRegistry | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        shard: str = "",
        on_epoch: Callable[[str, int], None] | None = None,
    ) -> None:
        if not sensor_id or not node:
            raise ValueError("sensor_id and node must be non-empty")
        if batch_size < 1 or max_in_flight < 1:
            raise ValueError("batch_size and max_in_flight must be >= 1")
        if on_full not in ("block", "drop"):
            raise ValueError(f"on_full must be 'block' or 'drop', got {on_full!r}")
        self.target = target
        self.sensor_id = sensor_id
        self.node = node
        self.buffer: BatchBuffer = buffer if buffer is not None else MemoryBuffer()
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self.on_full = on_full
        self.ack_timeout = ack_timeout
        self.backoff = backoff or Backoff()
        self.stats = TransportStats()
        self.shard = shard  # the shard this stream is for (Hello.shard); "" for a service that is not sharded
        self.on_epoch = on_epoch  # told (shard, epoch) of the shard map each Welcome and ack names
        # counted where nobody reads them without a registry
        self._metrics = _shard_metrics(registry or CollectorRegistry(), shard)
        self._channel_options = list(channel_options)
        self._credentials = credentials
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        if token and credentials is None and not _is_loopback(target):
            log.warning("sending the sensor token to %s without TLS: anyone on the path can read it", target)
        self._max_batch_vectors = 0  # from Welcome; 0 = no limit announced
        self._sent_high = 0  # highest sequence written to any stream by this process
        self._staged: list[FeatureVector] = []  # submitted with flush=False, not yet a batch
        self._changed = asyncio.Event()  # buffer or in-flight state changed
        self._closing = False
        self._closed = asyncio.Event()  # set by close(): ends a reconnect's backoff at once
        self._task: asyncio.Task[None] | None = None
        self._channel: grpc.aio.Channel | None = None
        self._last_drop_log = 0.0
        self._drops_since_log = 0
        self._progress = 0.0  # time.monotonic() of the last acknowledgement (or release by a Welcome)
        self.welcome: ingest_pb2.Welcome | None = None
        self.failed: ServiceIncompatible | None = None  # why the transport stopped for good

    # -- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> Transport:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="baseliner-transport")

    async def flush(self, timeout: float | None = None, *, give_up_after: float | None = None) -> bool:
        """Send what is staged and wait until every batch is acknowledged.  False when that did not happen
        within ``timeout`` seconds, or ``give_up_after`` seconds passed without an acknowledgement (the
        service unreachable), or the transport stopped (:class:`ServiceIncompatible`); what is still held
        then stays buffered (:meth:`undelivered`)."""
        now = time.monotonic()
        deadline = math.inf if timeout is None else now + timeout
        self._progress = now
        bounds = [b for b in (timeout, give_up_after) if b is not None]
        try:  # (waits for room in a full buffer, which only acknowledgements make)
            await asyncio.wait_for(self.submit((), flush=True), min(bounds) if bounds else None)
        except (TimeoutError, ServiceIncompatible):
            return False
        while self.buffer.batches:
            if self.failed is not None:
                return False
            limit = deadline if give_up_after is None else min(deadline, self._progress + give_up_after)
            remaining = limit - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            if not self.buffer.batches:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(remaining, 1.0))
        return True

    def take_over(self, old: Transport) -> None:
        """Continue ``old``'s stream (same shard, same buffer, another address): what it sent stays sent."""
        self._sent_high = max(self._sent_high, old._sent_high)

    def holds(self, key: str) -> bool:
        """Whether a window of routing key ``key`` waits here (staged, or in a batch not acknowledged yet)."""
        return self.buffer.holds(key) or any(v.identity.image_repository == key for v in self._staged)

    def undelivered(self) -> tuple[int, int]:
        """Batches and vectors not acknowledged yet: held in the buffer, or staged and not yet a batch."""
        held = list(self.buffer.entries())
        return len(held) + (1 if self._staged else 0), sum(p.vectors for p in held) + len(self._staged)

    async def close(self, timeout: float = 5.0, *, keep_buffer: bool = False) -> None:
        """Stop: what is staged becomes a batch (the buffer evicts its oldest batches when full), the stream
        is half-closed once nothing is in flight, and the connection loop ends within ``timeout`` seconds
        (unacknowledged batches stay buffered; ``keep_buffer`` leaves the buffer open for the next stream)."""
        self._closing = True
        self._closed.set()
        self._changed.set()
        if self._staged and self.failed is None:
            self._add(self._staged)
            self._staged = []
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
        if not keep_buffer:
            self.buffer.close()

    # -- producer side -----------------------------------------------------------------------------

    def stage(self, vectors: Sequence[FeatureVector]) -> None:
        """Queue ``vectors`` without waiting (the next :meth:`submit` or :meth:`flush` batches them)."""
        if vectors:
            # image by image (stable: each container's windows keep their order): the service then scores
            # a batch's windows in place, without regrouping them per image
            self._staged.extend(sorted(vectors, key=_image_of))

    async def submit(self, vectors: Sequence[FeatureVector], *, flush: bool = True) -> None:
        """Queue ``vectors`` for sending, in batches of at most ``batch_size``.

        With ``flush=False`` vectors are held back until a full batch has gathered (or the next call
        with ``flush=True``, or :meth:`flush`): replays and simulations, whose windows are small and come
        fast, then travel in full batches.  A live source submits each window with ``flush=True``.
        Raises :class:`ServiceIncompatible` once the transport has stopped for that reason.
        """
        if self.failed is not None:
            raise self.failed
        self.stage(vectors)
        size = self.batch_size
        if self._max_batch_vectors:
            size = min(size, self._max_batch_vectors)
        while len(self._staged) >= size or (flush and self._staged):
            await self._room()
            if self.failed is not None:
                raise self.failed
            chunk = self._staged[:size]
            del self._staged[:size]
            self._add(chunk)

    async def _room(self) -> None:
        """With ``on_full="block"``, wait while the buffer is full (the staged vectors stay staged)."""
        if self.on_full != "block":
            return
        while self.buffer.is_full() and not self._closing and self.failed is None:
            self._changed.clear()
            if not self.buffer.is_full():
                break
            await self._changed.wait()

    def _add(self, chunk: Sequence[FeatureVector]) -> None:
        body = wire.encode_batch_body(chunk)
        keys = sorted({v.identity.image_repository for v in chunk})  # (sorted by image already: few, in order)
        _, evicted = self.buffer.add(body, len(chunk), keys)
        self.stats.vectors_submitted += len(chunk)
        if evicted:
            self._account_drops(evicted)
        self._update_gauges()
        self._changed.set()

    def _account_drops(self, evicted: list[Pending]) -> None:
        vectors = sum(p.vectors for p in evicted)
        self._count(batches_dropped=len(evicted), vectors_dropped=vectors)
        self._drops_since_log += len(evicted)
        now = time.monotonic()
        if now - self._last_drop_log >= 5.0:
            log.warning(
                "buffer full (%d batches, %d bytes): dropped %d unacknowledged batches since last report, "
                "oldest now seq %d; total dropped %d batches / %d vectors",
                self.buffer.batches, self.buffer.nbytes, self._drops_since_log, evicted[-1].sequence + 1,
                self.stats.batches_dropped, self.stats.vectors_dropped,
            )
            self._last_drop_log = now
            self._drops_since_log = 0

    def _count(self, **counts: int) -> None:
        """Add to :attr:`stats`, and to the Prometheus counter of the same name where there is one."""
        for name, n in counts.items():
            setattr(self.stats, name, getattr(self.stats, name) + n)
            if name in self._metrics:
                self._metrics[name].inc(n)

    def _update_gauges(self) -> None:
        self._metrics["buffer_batches"].set(self.buffer.batches)
        self._metrics["buffer_bytes"].set(self.buffer.nbytes)

    # -- connection loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        self._channel = open_channel(self.target, self._credentials, self._channel_options)
        while True:
            if self._closing and not self.buffer.batches:
                return
            try:
                await self._connection()
                if self._closing:
                    return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the sensor must outlive any single stream
                remedy = _incompatible(exc)
                if remedy is not None:
                    self._stop_for_good(exc, remedy)
                    return
                self._count(connect_failures=1)
                delay = self.backoff.next()
                log.warning("stream to %s failed (%s); %d batches buffered; retrying in %.2fs",
                            self.target, self._describe(exc), self.buffer.batches, delay)
                if self._closing:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closed.wait(), delay)
                if self._closing:
                    return

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, grpc.aio.AioRpcError):
            return f"{exc.code().name}: {exc.details()}"
        if isinstance(exc, _EXPECTED):
            return f"{type(exc).__name__}: {exc}"
        log.error("unexpected error on the stream to %s", self.target, exc_info=exc)
        return repr(exc)

    def _stop_for_good(self, exc: BaseException, remedy: str) -> None:
        """The service cannot take this sensor's batches: stop retrying, say why, wake every waiter."""
        held, vectors = self.undelivered()
        self.failed = ServiceIncompatible(
            f"the service at {self.target} cannot take this sensor's batches ({self._describe(exc)}); "
            f"not retrying: {remedy}"
        )
        log.error("%s; %d batches (%d vectors) not delivered", self.failed, held, vectors)
        self._changed.set()

    async def _connection(self) -> None:
        assert self._channel is not None
        stream = self._channel.stream_stream(
            STREAM_METHOD, request_serializer=_passthrough,
            response_deserializer=ingest_pb2.IngestResponse.FromString,
        )
        call = stream(metadata=self._metadata or None)
        try:
            await call.write(wire.hello_request_bytes(self.sensor_id, self.node, SENSOR_VERSION, shard=self.shard))
            first = await asyncio.wait_for(call.read(), self.ack_timeout)
            if first is grpc.aio.EOF or not first.HasField("welcome"):
                raise ProtocolError("service did not answer Hello with Welcome")
            self._on_welcome(first.welcome)
            self.stats.connects += 1
            self.backoff.reset()
            in_flight: deque[tuple[int, float]] = deque()
            sender = asyncio.create_task(self._send_loop(call, in_flight))
            receiver = asyncio.create_task(self._receive_loop(call, in_flight))
            done, pending = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_EXCEPTION)
            for t in pending:
                if t is receiver and sender in done and sender.exception() is None:
                    # Half-closed: let the service acknowledge what is in flight, then end.
                    await receiver
                    continue
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            errors = [t.exception() for t in done]  # both may have failed: retrieve both (asyncio logs otherwise)
            for exc in errors:
                if exc is not None:
                    raise exc
        finally:
            call.cancel()

    def _on_welcome(self, welcome: ingest_pb2.Welcome) -> None:
        self.welcome = welcome
        last = welcome.last_sequence
        self._max_batch_vectors = welcome.max_batch_vectors
        if self.buffer.persistent_sequences:
            applied = self.buffer.release_through(last)
        else:
            # Only batches this process sent can have been applied; lower numbers never sent collide with
            # a previous incarnation of this sensor (its clock stepped back) and are renumbered instead.
            applied = self.buffer.release_through(min(last, self._sent_high))
            if any(p.sequence <= last for p in self.buffer.entries()):
                log.warning("service has applied up to seq %d, above unsent batches: renumbering them", last)
                self.buffer.renumber(last + 1)
        gap = welcome.max_sequence_gap
        first = next(self.buffer.entries(), None)
        if gap and first is not None and first.sequence > last + gap:
            # The service refuses these numbers (it lost its state, or this spool outlived it): none of them
            # can have been applied, so they are numbered again right after what it has.
            log.warning("service has applied up to seq %d and refuses batches more than %d above it: renumbering "
                        "the %d held batches from %d", last, gap, self.buffer.batches, last + 1)
            self.buffer.renumber(last + 1, lower=True)
        self.buffer.advance(last)
        if applied:
            self._progress = time.monotonic()
            self.stats.batches_already_applied += len(applied)
            self.stats.vectors_applied_before += sum(p.vectors for p in applied)
        log.info("connected to %s (service %s): last applied seq %d, %d batches to send, durable acks %s",
                 self.target, welcome.service_version or "?", last, self.buffer.batches, welcome.durable_acks)
        self._update_gauges()
        self._changed.set()
        if self.on_epoch is not None:
            self.on_epoch(self.shard, welcome.shard_epoch)

    async def _send_loop(self, call: Any, in_flight: deque[tuple[int, float]]) -> None:
        sent_high_here = 0
        while True:
            if in_flight and time.monotonic() - in_flight[0][1] > self.ack_timeout:
                raise AckTimeout(f"no ack for seq {in_flight[0][0]} within {self.ack_timeout}s")
            nxt = self._next_to_send(sent_high_here, len(in_flight))
            if nxt is None:
                if self._closing and not in_flight:
                    await call.done_writing()
                    return
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=min(1.0, self.ack_timeout))
                continue
            # In flight (and perhaps applied) from before the write: the ack may come, and be read, before
            # the write returns.
            in_flight.append((nxt.sequence, time.monotonic()))
            sent_high_here = nxt.sequence
            resent = nxt.sequence <= self._sent_high
            self._sent_high = max(self._sent_high, nxt.sequence)
            await call.write(wire.batch_request_bytes(nxt.sequence, nxt.body))
            self._count(batches_sent=1, batches_resent=int(resent))

    def _next_to_send(self, sent_high_here: int, in_flight: int) -> Pending | None:
        """The oldest buffered batch not yet written on this connection (None when there is none, or when
        ``max_in_flight`` batches wait for their acks)."""
        if in_flight >= self.max_in_flight:
            return None
        return next((p for p in self.buffer.entries() if p.sequence > sent_high_here), None)

    async def _receive_loop(self, call: Any, in_flight: deque[tuple[int, float]]) -> None:
        while True:
            resp = await call.read()
            if resp is grpc.aio.EOF:
                if in_flight:
                    raise ProtocolError(f"stream ended with {len(in_flight)} batches unacknowledged")
                if not self._closing:
                    raise ConnectionError("service ended the stream")
                return
            if not resp.HasField("ack"):
                raise ProtocolError("unexpected Welcome in the middle of a stream")
            self._on_ack(resp.ack, in_flight)

    def _on_ack(self, ack: ingest_pb2.BatchAck, in_flight: deque[tuple[int, float]]) -> None:
        if not in_flight or in_flight[0][0] != ack.sequence:
            expected = in_flight[0][0] if in_flight else None
            raise ProtocolError(f"ack for seq {ack.sequence}, expected {expected}")
        in_flight.popleft()
        self._progress = time.monotonic()
        self._count(batches_acked=1)
        if ack.duplicate:
            self.stats.batches_duplicate += 1
            held = next((p for p in self.buffer.entries() if p.sequence == ack.sequence), None)
            self.stats.vectors_applied_before += held.vectors if held is not None else 0
        if ack.batch_rejected != ingest_pb2.REJECT_REASON_UNSPECIFIED:
            entry = self.buffer.release(ack.sequence)
            n = entry.vectors if entry else 0
            self._count(batches_rejected=1, vectors_rejected=n)
            log.error("service refused batch %d (%d vectors): %s %s", ack.sequence, n,
                      ingest_pb2.RejectReason.Name(ack.batch_rejected), ack.batch_message)
        else:
            self._count(vectors_applied=ack.applied, vectors_rejected=len(ack.rejected))
            if ack.rejected:
                first = ack.rejected[0]
                log.warning("service rejected %d vectors of batch %d, e.g. #%d: %s %s", len(ack.rejected),
                            ack.sequence, first.index, ingest_pb2.RejectReason.Name(first.reason), first.message)
            durable_offered = self.welcome is not None and self.welcome.durable_acks
            if ack.durable or not durable_offered:
                self.buffer.release(ack.sequence)
        self._update_gauges()
        self._changed.set()
        if self.on_epoch is not None:
            self.on_epoch(self.shard, ack.shard_epoch)

