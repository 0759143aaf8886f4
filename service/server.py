"""``baseliner serve``: the grpc.aio server, its metrics endpoint, checkpoints and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import logging
import signal
import time
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
from baseliner.protos.v1 import admin_pb2, admin_pb2_grpc, ingest_pb2, shards_pb2, shards_pb2_grpc
from baseliner.service import auth, serde
from baseliner.service.config import ServeConfig, insecure_listeners, split_address
from baseliner.service.pipeline import Pipeline
from baseliner.service.servicer import AdminServicer, IngestServicer, add_ingest_servicer
from baseliner.service.sinks.events import EventSink, JsonLinesSink
from baseliner.service.sinks.metrics import ServiceMetrics
from baseliner.service.spill import SpillingBaselines
from baseliner.service.store import StateStore
from baseliner.service.wal import WriteAheadLog, replay_into
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, Gauge, start_http_server

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    ingest_pb2.DESCRIPTOR.services_by_name["Ingest"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name,
    shards_pb2.DESCRIPTOR.services_by_name["Shards"].full_name,
)


class BaselinerServer:
    """Owns the pipeline, the gRPC server, the metrics endpoint and the checkpoint loop."""

    def __init__(
        self,
        config: ServeConfig,
        registry: CollectorRegistry | None = None,
        sinks: Sequence[EventSink] = (),
    ) -> None:
        self.config = config
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = ServiceMetrics(
            self.registry,
            max_images=config.metrics.max_images,
            max_namespaces=config.metrics.max_namespaces,
            max_nodes=config.metrics.max_nodes,
            reject_reasons=(*serde.REJECT_REASONS, "BASELINE_LIMIT"),
        )
        self.sinks: list[EventSink] = list(sinks)
        out = config.events.output
        if out and out.lower() != "none":
            self.sinks.insert(0, JsonLinesSink(out))
        self.pipeline = Pipeline(config.pipeline, config.baseline_config(), self.metrics, self.sinks)
        keys = config.state_keys()
        if config.state.dir and keys is None:  # (the configuration's checks say so first)
            raise ValueError("state.dir needs state.key_file")
        self.store: StateStore | None = StateStore(config.state.dir, keys) if config.state.dir and keys else None
        self.sizes: dict[str, int] = self.store.sizes if self.store else {}
        self.spill: SpillingBaselines | None = None
        if self.store is not None and config.pipeline.max_resident_baselines:
            self.spill = SpillingBaselines(self.store, config.pipeline.max_resident_baselines, self.pipeline.dirty,
                                           self.pipeline.memory_sizes, sensors=lambda: self.pipeline.sensors)
            self.pipeline.baselines = self.spill  # type: ignore[assignment]
        self.decoder = serde.Decoder(config.grpc.max_batch_vectors)
        self.server: grpc.aio.Server | None = None
        self.ingest: IngestServicer | None = None
        self.health = HealthServicer()
        self.port = 0
        self.metrics_port = 0
        self._metrics_http: Any = None
        self._checkpoint_task: asyncio.Task[None] | None = None
        self._housekeeping_task: asyncio.Task[None] | None = None
        self._checkpoint_lock = asyncio.Lock()
        self._stopped = asyncio.Event()
        self.falco: Any = None  # baseliner.service.falco_http.FalcoEndpoint when falco.listen is set
        self.falco_correlator: Any = None
        self.wal: WriteAheadLog | None = None
        self.model_source: Any = None  # baseliner.service.model_source.ModelSource when model.uri is set
        self.console: Any = None  # baseliner.service.console.app.ConsoleServer when console.listen is set
        self.authorizer = auth.Authorizer.from_config(config)
        self.cluster: Any = None  # baseliner.service.shards.cluster.Cluster: this shard's part in the shard map

    # -- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the model, restore state, open the listeners; on an error, close what was opened (no state is
        written) and raise."""
        try:
            await self._start()
        except BaseException:
            await self._close_listeners()
            raise

    async def _close_listeners(self) -> None:
        if self.server is not None:
            await self.server.stop(0)
            self.server = None
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
            self._metrics_http = None
        if self.falco is not None:
            await self.falco.stop()
            self.falco = None
        if self.console is not None:
            await self.console.stop()
            self.console = None
        if self.wal is not None:
            await self.wal.close()
            self.wal = None

    async def _start(self) -> None:
        cfg = self.config
        from baseliner.service import model_source  # model.uri: a registered MLflow model as the template (issue 5)

        self.model_source = await model_source.attach(self)  # raises ModelError: refuse to start;
        # before restore and WAL replay, so that images first seen in the replay start from the model
        if self.store is not None:
            await self._restore()
        from baseliner.service.shards import cluster  # the shard map (one shard of its own without shards.list)

        self.cluster = await cluster.attach(self)  # after the restore: keys handed away before are dropped again
        await self._start_grpc()
        if cfg.metrics.listen:
            mhost, mport = split_address(cfg.metrics.listen)
            with _listening("metrics.listen", cfg.metrics.listen):
                server, _thread = start_http_server(mport, addr=mhost, registry=self.registry)
            self._metrics_http = server
            self.metrics_port = server.server_address[1]
        from baseliner.service import falco_http  # Falco alerts in, correlation, Falcosidekick out (when configured)

        fc = cfg.falco
        gate = auth.FalcoGate(fc) if (fc.secret_file or fc.tls_cert_file) else None
        with _listening("falco.listen", fc.listen):
            self.falco = await falco_http.attach(self, gate)
        if self.falco is not None:
            self.falco.forward = self.cluster.forward_alert  # an alert goes to the shard that holds its image
        from baseliner.service.console import app as console  # the operator console (when console.listen is set)

        with _listening("console.listen", cfg.console.listen):
            self.console = await console.attach(self)  # after Falco: its history sees the correlated events
        self._warn_insecure()
        self._checkpoint_task = asyncio.create_task(self._checkpoint_loop())
        self._housekeeping_task = asyncio.create_task(self._housekeeping_loop())
        gc.collect()
        gc.freeze()  # start-up objects (modules, restored baselines) are never garbage: keep GC passes short
        log.info("baseliner serving gRPC on %s:%d, metrics on %s", split_address(cfg.grpc.listen)[0], self.port,
                 f"{cfg.metrics.listen.rpartition(':')[0]}:{self.metrics_port}" if cfg.metrics.listen else "off")

    def _warn_insecure(self) -> None:
        """Listeners off loopback without credentials (only with ``insecure=true``, a lab): said at start as errors
        and kept in ``baseliner_insecure_listeners`` (alert on it)."""
        exposed = insecure_listeners(self.config)
        Gauge("baseliner_insecure_listeners", "Listeners off loopback without authentication (insecure=true)",
              registry=self.registry).set(len(exposed))
        for setting, missing in exposed:
            address = getattr(self.config, setting.split(".")[0]).listen
            log.error("INSECURE (insecure=true): %s %s is not a loopback address and %s; anyone who reaches it may use "
                      "it. Never run this in production.", setting, address, missing)

    async def _restore(self) -> None:
        """Load the state directory (StateError on a bad file: refuse to start), then replay the write-ahead log."""
        assert self.store is not None
        self.pipeline.restored_applied.clear()
        if self.spill is not None:
            self.spill.restoring = True  # files evicted while restoring are on disk as they are
        n = self.store.restore(self.pipeline)
        if self.spill is not None:
            self.spill.restoring = False
        self.pipeline.dirty.update(self.pipeline.baselines)  # recompute memory sizes at first checkpoint
        log.info("state directory %s: %d baselines restored", self.config.state.dir, n)
        if self.config.state.wal:
            await self._open_wal()

    async def _start_grpc(self) -> None:
        """The gRPC server with its services (ingest, admin, health, reflection), on ``grpc.listen``."""
        g = self.config.grpc
        options = [
            ("grpc.max_receive_message_length", g.max_message_bytes),
            ("grpc.max_send_message_length", g.max_message_bytes),
            ("grpc.max_concurrent_streams", g.max_concurrent_streams),
            ("grpc.keepalive_time_ms", int(g.keepalive_time_seconds * 1000)),
            ("grpc.keepalive_timeout_ms", int(g.keepalive_timeout_seconds * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.so_reuseport", 0),
        ]
        interceptors = [auth.AuthInterceptor(self.authorizer)] if self.authorizer.enabled else []
        self.server = grpc.aio.server(options=options, maximum_concurrent_rpcs=None, interceptors=interceptors)
        from baseliner.service.shards.admin import ShardedAdmin
        from baseliner.service.shards.servicer import ShardsServicer

        authorizer = self.authorizer if self.authorizer.enabled or self.authorizer.sensors_authenticated else None
        self.ingest = IngestServicer(self.pipeline, self.decoder, self.metrics, wal=self.wal, authorizer=authorizer,
                                     idle_seconds=g.max_stream_idle_seconds, max_sequence_gap=g.max_sequence_gap,
                                     router=self.cluster.router)
        add_ingest_servicer(self.ingest, self.server)
        local_admin = AdminServicer(self.pipeline, self.sizes,
                                    on_change=self.checkpoint if self.store is not None else None)
        admin_pb2_grpc.add_AdminServicer_to_server(ShardedAdmin(local_admin, self.cluster), self.server)
        shards_pb2_grpc.add_ShardsServicer_to_server(ShardsServicer(self.cluster, self.ingest, lambda: self.falco),
                                                     self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.server,
        )
        host, port = split_address(g.listen)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        creds = auth.server_credentials(self.config)
        with _listening("grpc.listen", g.listen):
            self.port = (self.server.add_secure_port(address, creds) if creds is not None
                         else self.server.add_insecure_port(address))
        if creds is None and not auth.is_loopback(host):
            log.warning("gRPC listens on %s WITHOUT TLS (grpc.allow_plaintext): sensor tokens and vectors travel "
                        "in clear text; keep it on a trusted network", g.listen)
        await self.server.start()
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self) -> None:
        """Graceful: stop taking streams, let running batches finish, write events and state."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self.cluster is not None:  # a shard leaving the map hands its images over while it still answers
            await self.cluster.drain(self.config.shards.handover_timeout_seconds)
        await self.health.enter_graceful_shutdown()
        if self.server is not None:
            await self.server.stop(self.config.grpc.shutdown_grace_seconds)
        if self.falco is not None:
            await self.falco.stop()
        if self.console is not None:
            await self.console.stop()
        if self.cluster is not None:
            await self.cluster.stop()
        for task in (self._checkpoint_task, self._housekeeping_task):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self.pipeline.flush_events()
        await self.checkpoint(everything=True)
        if self.wal is not None:
            await self.wal.close()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
        for sink in self.sinks:
            sink.close()
        log.info("baseliner stopped")

    async def wait(self) -> None:
        await self._stopped.wait()

    # -- checkpoints --------------------------------------------------------------------------------
    async def checkpoint(self, everything: bool = False) -> None:
        """Snapshot on the loop (consistent), write files in a worker thread (the loop keeps serving).

        A checkpoint runs to its end even when its caller is cancelled (``stop`` cancels the checkpoint loop,
        an admin RPC's client may go away): its worker thread cannot be stopped, so the next checkpoint waits
        for it, else an older snapshot's file could be renamed over a newer one after the log that held the
        difference is gone.
        """
        await asyncio.shield(self._checkpoint(everything))

    async def _checkpoint(self, everything: bool) -> None:
        async with self._checkpoint_lock:
            if self.ingest is not None:  # batches logged but still waiting to be applied go in first
                self.ingest.applier.drain()
            snap = StateStore.snapshot(self.pipeline, everything=everything)
            if self.store is None or not (snap.baselines or snap.write_service):
                return
            # The snapshot holds every batch logged so far (same step of the event loop): start a new log
            # segment now and delete the older ones once the snapshot is on disk.
            wal_boundary = self.wal.rotate() if self.wal is not None else 0
            t0 = time.perf_counter()
            try:
                nbytes = await asyncio.to_thread(self.store.write, snap)
            except Exception:
                log.exception("writing state to %s failed; will retry", self.store.dir)
                self.metrics.state_save_failures.inc()
                self.pipeline.dirty.update(snap.baselines)
                self.pipeline.sensors_dirty = True
                return
            if self.spill is not None:
                await asyncio.to_thread(self.spill.sync_pending)
            if self.wal is not None:
                await asyncio.to_thread(self.wal.finish_rotation)
                await asyncio.to_thread(self.wal.drop_through, wal_boundary)
            self.metrics.state_saves.inc()
            self.metrics.state_save_seconds.set(time.time())
            log.debug("checkpoint: %d baselines, %d bytes in %.3fs", len(snap.baselines), nbytes,
                      time.perf_counter() - t0)

    async def _open_wal(self) -> None:
        """Replay what the write-ahead log holds on top of the restored state, checkpoint, log anew."""
        cfg = self.config
        assert self.store is not None
        wal = WriteAheadLog(self.store.dir / "wal", self.store.keys, cfg.state.wal_fsync, cfg.state.wal_group_ms)
        sinks = list(self.pipeline.sinks)
        self.pipeline.sinks[:] = []  # events of replayed batches were written before their acks
        try:
            applied, skipped = replay_into(wal, self.pipeline, self.decoder)  # StateError: refuse to start
        finally:
            self.pipeline.sinks[:] = sinks
        wal.open()
        self.wal = wal
        from baseliner.service.wal import WalCollector

        self.registry.register(WalCollector(wal, self.spill))  # type: ignore[arg-type]
        if applied or skipped:
            log.info("write-ahead log: %d batches replayed, %d already in the checkpoint", applied, skipped)
            await self.checkpoint()
        log.info("write-ahead log in %s (fsync policy %s); acknowledgements are durable", wal.dir, wal.fsync)

    async def _checkpoint_loop(self) -> None:
        interval = self.config.state.save_interval_seconds
        while True:
            await asyncio.sleep(interval)
            await self.checkpoint()


    async def _housekeeping_loop(self) -> None:
        interval = max(1.0, min(10.0, self.config.pipeline.dedup_window_seconds / 4))
        while True:
            await asyncio.sleep(interval)
            try:
                self.pipeline.close_idle()
            except Exception:
                log.exception("closing idle anomaly aggregates failed")


@contextlib.contextmanager
def _listening(setting: str, address: str) -> Iterator[None]:
    """A listening socket that cannot be opened is the setting's problem, said in one line."""
    try:
        yield
    except (OSError, RuntimeError) as e:  # grpc raises RuntimeError("Failed to bind ...")
        reason = getattr(e, "strerror", None) or "address in use, or not an address of this machine"
        raise OSError(f"{setting} {address}: cannot listen there ({reason})") from e


#: glibc ``mallopt`` parameters: bytes of slack kept at the top of the heap when it grows or is trimmed,
#: and the size from which an allocation gets its own ``mmap`` (fresh pages, faulted in one by one).
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
#: The slack ``serve`` keeps (see :func:`keep_heap_slack`).
HEAP_TOP_PAD_BYTES = 16 << 20
#: Allocations up to this size come from the heap (glibc's largest allowed threshold on 64-bit).
HEAP_MMAP_THRESHOLD_BYTES = 32 << 20


def keep_heap_slack(pad: int = HEAP_TOP_PAD_BYTES) -> bool:
    """Keep ``pad`` bytes of freed heap instead of returning it to the kernel after every batch (glibc only).

    Every batch allocates and frees a few megabytes (the message, its parse, the block's arrays); with
    glibc's defaults the heap is trimmed and grown again each time, and every page touched anew is a page
    fault (measured in ``docs/service.md``, "Heap slack").

    Setting the pad turns off glibc's sliding ``mmap`` threshold, so every array of 128 KiB or more (a
    batch's n-gram entries: 100,000 of them are 800 KB per column) would be mapped afresh and faulted in
    page by page; the threshold is raised to :data:`HEAP_MMAP_THRESHOLD_BYTES` so they come from the kept
    heap too.  Returns whether the settings took (False off glibc, e.g. musl).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_TOP_PAD, pad)) and bool(libc.mallopt(_M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


async def serve(config: ServeConfig, ready: Any = None) -> None:
    """Run until SIGINT/SIGTERM, then shut down gracefully."""
    if not keep_heap_slack():
        log.debug("mallopt unavailable: the heap is trimmed after every batch (more page faults)")
    server = BaselinerServer(config)
    await server.start()
    if ready is not None:
        ready(server)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("signal received, shutting down")
    await server.stop()
