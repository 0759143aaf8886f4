"""``baseliner sensor``: stream a source's windows to a service, or record them to a file.

    baseliner sensor --source synthetic --target 127.0.0.1:50051 [--hours 30] [--speed 0]
    baseliner sensor --source bpf --target @/etc/baseliner/shards      (a sharded service: any shard's address)
    baseliner sensor --source replay FILE --target HOST:PORT
    baseliner sensor --source bpf --target HOST:PORT            (root; see docs/sensor-client.md)
    baseliner sensor record --out FILE [--source synthetic|bpf|replay FILE] [--windows N]

The eBPF source (``sensor/bpf_source.py``) is imported only when ``--source bpf`` is used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from baseliner.models.errors import ConfigError
from baseliner.models.shards import ShardListError, read_shard_list
from baseliner.models.vector import FeatureVector
from baseliner.sensor.buffer import BatchBuffer, MemoryBuffer
from baseliner.sensor.cli_bpf import add_bpf_arguments, source_from_args
from baseliner.sensor.cli_checks import creatable_dir, examples, readable_file, writable_file
from baseliner.sensor.routing import ShardRouter
from baseliner.sensor.transport import Backoff, channel_credentials
from prometheus_client import CollectorRegistry, start_http_server

log = logging.getLogger(__name__)

#: Seconds a synthetic or replayed source waits for the shard map before it starts anyway.
MAP_WAIT_SECONDS = 5.0

SOURCES = ("synthetic", "replay", "bpf")


EXAMPLES = (
    "baseliner sensor --source synthetic --target 127.0.0.1:50051 --hours 30",
    "baseliner sensor --source replay recording.jsonl.gz --target 127.0.0.1:50051",
    "baseliner sensor --source bpf --target baseliner.example:50051 --tls-ca ca.pem --token-file node.token  # root",
    "baseliner sensor record --out recording.jsonl.gz --source synthetic --windows 5000",
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "sensor", help="stream feature vectors to a service (synthetic, replay or eBPF source), or record them",
        description="Stream one window of feature vectors per container at a time to a Baseliner service "
                    "over gRPC (batches, acknowledgements, resend after reconnect), or record them to a file.",
        epilog=examples(*EXAMPLES), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", nargs="?", choices=("stream", "record"), default="stream",
                   help="stream to --target (default) or record to --out")
    p.add_argument("--source", nargs="+", default=["synthetic"], metavar="KIND [FILE]",
                   help="synthetic (default), 'replay FILE' (a recording), or bpf (the kernel sensor; root)")
    p.add_argument("--target", default="127.0.0.1:50051",
                   help="where to ask for the service's shard map: host:port (any shard, or a name that resolves "
                        "to them), a comma-separated list, or @FILE holding a shard list (default 127.0.0.1:50051)")
    p.add_argument("--node", default=socket.gethostname(), help="node name this sensor reports for (default: hostname)")
    p.add_argument("--sensor-id", help="stable sensor id keying deduplication (default NODE/SOURCE)")
    p.add_argument("--out", type=writable_file, help="record: output file (.jsonl, .jsonl.gz, or - for stdout)")
    p.add_argument("--windows", type=int, default=0, help="stop after this many windows (0: until the source ends)")
    p.add_argument("--metrics-listen", default="", help="serve the sensor's metrics on host:port (default off)")
    _add_transport_arguments(p.add_argument_group("transport"))
    _add_synthetic_arguments(p.add_argument_group("synthetic and replay sources"))
    add_bpf_arguments(p)
    p.set_defaults(window=None)  # resolved per source: synthetic 10 s, bpf its own default
    return p


def _add_transport_arguments(t: Any) -> None:
    t.add_argument("--batch-size", type=int, default=500, help="vectors per batch (default 500)")
    t.add_argument("--max-in-flight", type=int, default=16, help="unacknowledged batches on the wire (default 16)")
    t.add_argument("--buffer-batches", type=int, default=2048,
                   help="bound on unacknowledged batches held per shard (default 2048)")
    t.add_argument("--buffer-mb", type=float, default=256.0, help="bound on their size in MiB (default 256)")
    t.add_argument("--spool-dir", metavar="DIR", type=creatable_dir,
                   help="keep unacknowledged batches in this on-disk spool (survives a sensor restart; "
                        "sensor/spool.py) instead of memory, one directory per shard; bounded by "
                        "--buffer-batches/--buffer-mb per shard")
    t.add_argument("--spool-key-file", metavar="FILE", type=readable_file,
                   help="integrity keys of the spool files (required with --spool-dir; one key a line, the first "
                        "signs; written by init-secrets)")
    t.add_argument("--on-full", choices=("block", "drop"),
                   help="when the buffer is full: wait (default for synthetic/replay) or drop the oldest "
                        "(default for bpf)")
    t.add_argument("--ack-timeout", type=float, default=30.0, help="seconds to wait for an ack (default 30)")
    t.add_argument("--backoff-max", type=float, default=30.0, help="longest reconnect delay in s (default 30)")
    t.add_argument("--drain-timeout", type=float, default=10.0,
                   help="on SIGINT/SIGTERM, seconds to send what is buffered before exiting (default 10; a "
                        "second signal exits at once)")
    t.add_argument("--give-up-after", type=float, default=60.0,
                   help="when the source has ended, exit after this many seconds without an acknowledgement "
                        "(the service unreachable; default 60); what is not acknowledged stays in --spool-dir "
                        "or is reported dropped")
    t.add_argument("--tls-ca", metavar="FILE", type=readable_file,
                   help="verify the service's certificate against this CA (enables TLS)")
    t.add_argument("--tls", action="store_true", help="TLS with the system's root certificates")
    t.add_argument("--tls-cert", metavar="FILE", type=readable_file,
                   help="client certificate for mutual TLS (with --tls-key)")
    t.add_argument("--tls-key", metavar="FILE", type=readable_file, help="client private key for mutual TLS")
    t.add_argument("--tls-server-name", metavar="NAME",
                   help="name expected in the service's certificate when it differs from the --target host")
    t.add_argument("--token-file", metavar="FILE", type=readable_file,
                   help="file holding this node's sensor token (sent as 'authorization: Bearer'); "
                        "also BASELINER_SENSOR_TOKEN")


def _add_synthetic_arguments(s: Any) -> None:
    s.add_argument("--speed", type=float, default=0.0,
                   help="event seconds per wall second: 0 = as fast as possible (default), 1 = real time")
    s.add_argument("--hours", type=float, default=30.0, help="synthetic: simulated hours (default 30)")
    s.add_argument("--seed", type=int, default=7, help="synthetic: random seed (default 7)")
    s.add_argument("--start", type=float, default=1_767_225_600.0,
                   help="synthetic: event time of the first window, epoch seconds (default 2026-01-01T00:00Z)")
    s.add_argument("--attacks-after", type=float, default=24.0,
                   help="synthetic: hours of normal behaviour before the first attack (default 24)")
    s.add_argument("--no-attacks", action="store_true", help="synthetic: inject no attacks")
    s.add_argument("--no-synthetic-ngrams", action="store_true", help="synthetic: leave n-gram counts empty")
    s.add_argument("--labels", type=writable_file, help="synthetic: write the ground-truth attacks to this JSON file")


def _source_kind(args: argparse.Namespace) -> tuple[str, str | None]:
    src = list(args.source)
    kind = src[0]
    if kind not in SOURCES:
        raise ConfigError(f"--source must be one of {', '.join(SOURCES)}, got {kind!r}")
    if kind == "replay":
        if len(src) != 2:
            raise ConfigError("--source replay needs a FILE: --source replay recording.jsonl")
        if not os.path.isfile(src[1]):
            raise ConfigError(f"--source replay {src[1]!r} is not a readable file")
        return kind, src[1]
    if len(src) != 1:
        raise ConfigError(f"--source {kind} takes no argument, got {' '.join(src[1:])!r}")
    return kind, None


def synthetic_source(args: argparse.Namespace, nodes: tuple[str, ...]) -> Any:
    from baseliner.sensor.synthetic import ScenarioConfig, SyntheticSource

    kw: dict[str, Any] = {
        "seed": args.seed, "start": args.start, "hours": args.hours, "nodes": nodes,
        "attack_after_hours": args.attacks_after, "ngrams": not args.no_synthetic_ngrams,
        "window_seconds": args.window or 10.0, "ngram_orders": args.ngram_orders,
    }
    if args.no_attacks:
        kw["attacks"] = ()
    try:
        return SyntheticSource(ScenarioConfig(**kw))
    except ValueError as exc:
        raise ConfigError(f"synthetic scenario: {exc}") from None


def open_source(args: argparse.Namespace, registry: CollectorRegistry | None) -> tuple[str, Any]:
    kind, path = _source_kind(args)
    if kind == "synthetic":
        src = synthetic_source(args, (args.node,))
        for a in src.attacks:
            log.info("synthetic attack %-17s %s/%s at +%.2f h for %.1f min", a.kind, a.namespace, a.pod,
                     (a.start - src.config.start) / 3600, (a.end - a.start) / 60)
        if args.labels:
            with open(args.labels, "w", encoding="utf-8") as f:
                json.dump([a.to_dict() for a in src.attacks], f, indent=2)
        return kind, src
    if kind == "replay":
        from baseliner.sensor.replay import ReplaySource

        assert path is not None
        try:
            return kind, ReplaySource(path)
        except OSError as exc:
            raise ConfigError(f"--source replay {path}: {exc}") from None
    if args.window is None:
        args.window = 5.0
    return kind, source_from_args(args, registry=registry, node=args.node)


async def _paced(windows: Iterable[list[FeatureVector]], speed: float,
                 limit: int) -> AsyncIterator[list[FeatureVector]]:
    """Windows of a finite source, as fast as possible (speed 0) or ``speed`` x real time by event time."""
    t0_event: float | None = None
    t0_wall = time.monotonic()
    for n, vectors in enumerate(windows, 1):
        if speed > 0 and vectors:
            ev = vectors[0].window_start
            if t0_event is None:
                t0_event = ev
            delay = (ev - t0_event) / speed - (time.monotonic() - t0_wall)
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)
        else:
            await asyncio.sleep(0)  # let the transport's connection make progress
        yield vectors
        if limit and n >= limit:
            return


async def _live(src: Any, limit: int) -> AsyncIterator[list[FeatureVector]]:
    n = 0
    async for vectors in src.awindows():
        yield vectors
        n += 1
        if limit and n >= limit:
            return


async def stream(windows: AsyncIterator[list[FeatureVector]], transport: ShardRouter, coalesce: bool = False) -> int:
    """Submit every window; return the number of vectors submitted (the caller flushes).

    ``coalesce`` gathers consecutive windows into full batches (fast replays and simulations); otherwise
    every window is sent as soon as it is submitted (live and paced sources).
    """
    n = 0
    async for vectors in windows:
        await transport.submit(vectors, flush=not coalesce)
        n += len(vectors)
    return n


def security_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of every shard's ``Transport`` for TLS, mutual TLS and the sensor token."""
    out: dict[str, Any] = {}
    if args.tls or args.tls_ca or args.tls_cert or args.tls_key:
        try:
            out["credentials"] = channel_credentials(args.tls_ca, args.tls_cert, args.tls_key)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"TLS settings: {exc}") from None
        if args.tls_server_name:
            out["channel_options"] = [("grpc.ssl_target_name_override", args.tls_server_name)]
    token = os.environ.get("BASELINER_SENSOR_TOKEN", "")
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            raise ConfigError(f"--token-file {args.token_file}: {exc.strerror}") from None
        if not token:
            raise ConfigError(f"--token-file {args.token_file} is empty")
    if token:
        out["token"] = token
    return out


def seeds(target: str) -> list[str]:
    """The addresses ``--target`` names (``host:port``, a list, or ``@FILE`` with a shard list)."""
    try:
        out = [s.address for s in read_shard_list(target)]
    except ShardListError as exc:
        raise ConfigError(f"--target: {exc}") from None
    if not out:
        raise ConfigError(f"--target {target!r} names no address")
    return out


def _router(args: argparse.Namespace, kind: str, registry: CollectorRegistry,
            security: dict[str, Any]) -> ShardRouter:
    """The sensor's way to the service: one stream, sequence and buffer (or spool directory) per shard."""
    on_full = args.on_full or ("drop" if kind == "bpf" else "block")
    make_buffer: Any
    map_file = keep = None
    max_bytes = int(args.buffer_mb * 1024 * 1024)
    if args.spool_dir:
        from baseliner.models.integrity import Keyring
        from baseliner.sensor.spool import DiskSpool

        keys = Keyring.load(args.spool_key_file, "--spool-key-file")

        def make_buffer(shard: str) -> BatchBuffer:
            return DiskSpool(Path(args.spool_dir) / shard, keys, max_batches=args.buffer_batches,
                             max_bytes=max_bytes)

        map_file = Path(args.spool_dir) / "shard-map.json"
        keep = DiskSpool(Path(args.spool_dir) / "_unrouted", keys, max_batches=args.buffer_batches,
                         max_bytes=max_bytes)  # ("_" starts no shard's name)
    else:
        def make_buffer(shard: str) -> BatchBuffer:
            return MemoryBuffer(max_batches=args.buffer_batches, max_bytes=max_bytes)

    return ShardRouter(
        seeds(args.target), sensor_id=args.sensor_id or f"{args.node}/{kind}", node=args.node,
        make_buffer=make_buffer, batch_size=args.batch_size, max_in_flight=args.max_in_flight, on_full=on_full,
        ack_timeout=args.ack_timeout, backoff=lambda: Backoff(maximum=args.backoff_max), registry=registry,
        map_file=map_file, keep=keep, **security,
    )


class _Signals:
    """SIGINT and SIGTERM while streaming: the first asks for a bounded drain, a second for an end now."""

    def __init__(self) -> None:
        self.received = 0
        self.first = asyncio.Event()
        self.again = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal)

    def _on_signal(self) -> None:
        self.received += 1
        (self.first if self.received == 1 else self.again).set()


async def _first(task: asyncio.Task[Any], event: asyncio.Event) -> bool:
    """Wait for ``task`` or ``event``, whichever comes first; True when ``task`` did (``event`` interrupts it:
    the task is then cancelled)."""
    waiter = asyncio.create_task(event.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if task.done():
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False


async def _deliver(args: argparse.Namespace, transport: ShardRouter, windows: AsyncIterator[list[FeatureVector]],
                   coalesce: bool, signals: _Signals) -> bool:
    """Stream the source's windows, then wait for their acknowledgements; True when every one came.

    Bounded at every point: when the source ends, the wait gives up after ``--give-up-after`` seconds
    without an acknowledgement; a signal ends the source and drains for at most ``--drain-timeout``
    seconds; a second signal ends the drain."""
    feed = asyncio.create_task(stream(windows, transport, coalesce=coalesce))
    if await _first(feed, signals.first):
        if transport.failed is not None:  # (logged by the transport; the source stopped on it)
            feed.exception()
            return False
        log.info("source finished: %d vectors submitted; waiting for acknowledgements (giving up after %gs "
                 "without one)", feed.result(), args.give_up_after)
        waiting = asyncio.create_task(transport.flush(give_up_after=args.give_up_after))
        if await _first(waiting, signals.first):
            return waiting.result()
    log.info("signal received: sending what is buffered (up to %gs; a second signal ends it now)",
             args.drain_timeout)
    draining = asyncio.create_task(transport.flush(args.drain_timeout))
    if await _first(draining, signals.again):
        return draining.result()
    log.info("second signal: not waiting for the remaining acknowledgements")
    return False


def _report(args: argparse.Namespace, transport: ShardRouter, seconds: float) -> None:
    st = transport.stats
    log.info("done in %.1fs: %d vectors applied, %d rejected, %d dropped; %d batches sent (%d resent), "
             "%d connects; %d vectors in batches applied before their ack was lost", seconds,
             st.vectors_applied, st.vectors_rejected, st.vectors_dropped, st.batches_sent, st.batches_resent,
             st.connects, st.vectors_applied_before)
    batches, vectors = transport.undelivered()  # (windows that never had a shard map count as vectors only)
    if not batches and not vectors:
        return
    if args.spool_dir:
        log.warning("%d batches (%d vectors) not acknowledged: kept in the spool %s, sent when the sensor starts "
                    "again", batches, vectors, args.spool_dir)
    else:
        log.warning("%d batches (%d vectors) not acknowledged: dropped (--spool-dir keeps them across restarts)",
                    batches, vectors)


async def _run_stream(args: argparse.Namespace, kind: str, src: Any, registry: CollectorRegistry,
                      security: dict[str, Any]) -> int:
    transport = _router(args, kind, registry, security)
    windows = _live(src, args.windows) if kind == "bpf" else _paced(src, args.speed, args.windows)
    started = time.monotonic()
    signals = _Signals()
    async with transport:
        if kind != "bpf":  # a recorded source waits (a little) for the shard map: its windows then go in their
            await transport.wait_for_map(MAP_WAIT_SECONDS)  # batches from the start, not as one backlog
        delivered = await _deliver(args, transport, windows, kind != "bpf" and args.speed == 0, signals)
    _report(args, transport, time.monotonic() - started)
    return 0 if delivered else 1


def run(args: argparse.Namespace) -> int:
    for name in ("batch_size", "max_in_flight", "buffer_batches"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1")
    for name in ("drain_timeout", "give_up_after"):
        if not getattr(args, name) >= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0 seconds")
    if args.speed < 0:
        raise ConfigError("--speed must be >= 0")
    if args.spool_dir and not args.spool_key_file:
        raise ConfigError("--spool-dir needs --spool-key-file: every spool file is signed (baseliner init-secrets "
                          "writes spool.keys)")
    registry = CollectorRegistry()
    if args.metrics_listen:
        host, _, port = args.metrics_listen.rpartition(":")
        start_http_server(int(port), addr=host or "127.0.0.1", registry=registry)
        log.info("sensor metrics on http://%s/metrics", args.metrics_listen)
    if args.action == "record":
        if not args.out:
            raise ConfigError("sensor record needs --out FILE")
        from baseliner.sensor.record import record, synthetic_header

        kind, src = open_source(args, registry)
        header: dict[str, Any] = {"source": kind}
        if kind == "bpf":
            header["ngram_orders"] = list(args.ngram_orders) if not args.no_ngrams else []
        if kind == "synthetic":
            header = synthetic_header(src)
        elif kind == "replay":
            header = dict(src.header, source="replay")
        try:
            windows = src if kind != "bpf" else iter(src)
            record(windows, args.out, header, args.windows)
        finally:
            if hasattr(src, "close"):
                src.close()
        return 0
    security = security_from_args(args)  # before a source that takes long to open (bpf compiles)
    kind, src = open_source(args, registry)
    try:
        return asyncio.run(_run_stream(args, kind, src, registry, security))
    finally:
        if hasattr(src, "close"):
            src.close()
