"""Write-ahead log of applied batches: what makes a ``BatchAck`` with ``durable = true`` true.

Every batch the pipeline applies is appended here (sensor id, node, sequence number and the batch's
protobuf bytes) before its acknowledgement is sent; the acknowledgement waits until the record is as
durable as the configured policy promises (``state.wal_fsync``):

``batch``
    ``fsync`` before every acknowledgement.  Concurrent streams share one ``fsync`` (whoever waits while
    one runs is covered by the next), so many sensors cost far fewer than one ``fsync`` per batch.
``group``
    one ``fsync`` every ``state.wal_group_ms`` milliseconds covers every record appended before it;
    acknowledgements wait for it.  Higher throughput per stream, acks delayed by up to that interval.
``off``
    acknowledge once the record is written to the kernel (``write(2)``): survives a crash of the service
    process (``kill -9``), not a crash of the machine.

Checkpoints (``service/store.py``) truncate the log: :meth:`WriteAheadLog.rotate` starts a new segment at
the moment the snapshot is taken (on the event loop, so a batch is either in the snapshot or in a later
segment), and :meth:`WriteAheadLog.drop_through` deletes the older segments once the checkpoint files
are written.  On start the service restores the checkpoint, then replays every segment left, skipping
records whose sequence number the restored state already covers (per sensor), so a batch is applied
exactly once whatever the moment of the crash.

File format (non-executable, integrity-checked, like the state files)::

    segment  := b"BASELINER-WAL 2 hmac-sha256 " <key id> b"\\n" record*
    record   := length:u32be tag:32 bytes body:length bytes
    body     := kind:u8 (1 = batch) sequence:u64be len:u16be sensor_id len:u16be node batch-bytes
    tag_i    := HMAC-SHA256(key, tag_(i-1) || body); tag_0 := HMAC-SHA256(key, segment header)

``sensor_id`` is the sensor's authenticated identity (the key deduplication uses, ``service/auth.py``) and
``node`` the node its credential allows (empty without sensor credentials).  The key is the one of
``state.key_file`` the segment header names: segments under an older key of the keyring are replayed, and
gone after the first checkpoint (key rotation, ``baseliner.models.integrity``).

The chained tag catches a changed, removed, reordered or inserted record.  A record cut short at the
very end of the newest segment (the process died inside ``write``; never acknowledged) is dropped with a
warning; any other mismatch refuses the whole log with :class:`baseliner.models.errors.StateError`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import numpy as np
from baseliner.models.errors import StateError, ValidationError
from baseliner.models.integrity import ALGORITHM, Keyring, fsync_dir
from baseliner.service.config import FsyncPolicy

log = logging.getLogger(__name__)

FSYNC_POLICIES: tuple[str, ...] = get_args(FsyncPolicy)
_VERSION = 2
_PREFIX = b"BASELINER-WAL %d " % _VERSION
_REC = struct.Struct(">I")
_BODY = struct.Struct(">BQ")
_U16 = struct.Struct(">H")
_TAG = 32
KIND_BATCH = 1
#: Bound on one record (a batch is bounded by grpc.max_message_bytes, far below this).
MAX_RECORD_BYTES = 1 << 30


@dataclass(slots=True, frozen=True)
class Record:
    kind: int
    sensor_id: str
    node: str
    sequence: int
    batch: bytes | memoryview  # the batch's protobuf bytes (a view of the received message: not copied)


def _mac(keys: Keyring, kid: str, prev: bytes, *parts: bytes | memoryview) -> bytes:
    """The chained tag over ``prev`` and the body given in ``parts`` (hashed in place, never joined)."""
    m = keys.mac(kid, prev)
    for part in parts:
        m.update(part)
    return m.digest()


def _header(keys: Keyring) -> bytes:
    return _PREFIX + f"{ALGORITHM} {keys.signing.id}\n".encode()


def body_head(rec: Record) -> bytes:
    """The body of a record up to its batch bytes."""
    sid = rec.sensor_id.encode()
    node = rec.node.encode()
    if len(sid) > 0xFFFF or len(node) > 0xFFFF:
        raise ValueError("sensor id or node name too long for the log")
    return b"".join((_BODY.pack(rec.kind, rec.sequence), _U16.pack(len(sid)), sid, _U16.pack(len(node)), node))


def decode_body(body: bytes, where: str) -> Record:
    try:
        kind, seq = _BODY.unpack_from(body, 0)
        off = _BODY.size
        (n,) = _U16.unpack_from(body, off)
        off += 2
        sid = body[off:off + n].decode()
        off += n
        (m,) = _U16.unpack_from(body, off)
        off += 2
        node = body[off:off + m].decode()
        off += m
    except (struct.error, UnicodeDecodeError) as e:
        raise StateError(f"{where}: malformed log record ({e}); refusing to replay the log") from None
    if kind != KIND_BATCH:
        raise StateError(f"{where}: unknown log record kind {kind}; refusing to replay the log")
    return Record(kind, sid, node, seq, body[off:])


def read_segment(path: Path, keys: Keyring, last: bool) -> Iterator[Record]:
    """Verify and yield the records of one segment (see the module docstring for what is refused)."""
    data = path.read_bytes()
    where = str(path)
    nl = data.find(b"\n", 0, 128)
    if nl < 0 or not data.startswith(_PREFIX):
        if last and len(data) < len(_header(keys)):  # created, header never completely written
            log.warning("%s: empty log segment (the service stopped while creating it)", where)
            return
        if data.startswith(b"BASELINER-WAL "):
            found = data[:nl].decode(errors="replace")
            raise StateError(f"{where}: write-ahead log of another format version ({found!r}, this build reads "
                             f"{_VERSION}); refusing to replay it")
        raise StateError(f"{where}: not a Baseliner write-ahead log segment; refusing to replay it")
    algo, _, kid = data[len(_PREFIX):nl].decode("ascii", "replace").partition(" ")
    if algo != ALGORITHM:
        raise StateError(f"{where}: unknown integrity algorithm {algo!r}; refusing to replay the log")
    keys.require(kid, where, "write-ahead log segment")
    key = kid
    prev = _mac(keys, key, b"", data[:nl + 1])
    off = nl + 1
    n = 0
    while off < len(data):
        head = off + _REC.size + _TAG
        if head > len(data):
            if last:
                log.warning("%s: dropping a record cut short at the end (never acknowledged)", where)
                return
            raise StateError(f"{where}: truncated record {n} inside the log; refusing to replay it")
        (length,) = _REC.unpack_from(data, off)
        tag = data[off + _REC.size:head]
        end = head + length
        if length > MAX_RECORD_BYTES or end > len(data):
            if last and end > len(data) and length <= MAX_RECORD_BYTES:
                log.warning("%s: dropping a record cut short at the end (never acknowledged)", where)
                return
            raise StateError(f"{where}: record {n} has an impossible length; refusing to replay the log")
        body = data[head:end]
        expected = _mac(keys, key, prev, body)
        if not hmac.compare_digest(expected, tag):
            if last and end == len(data):
                log.warning("%s: dropping a damaged last record (never acknowledged)", where)
                return
            raise StateError(f"{where}: record {n} is tampered with or corrupt (HMAC mismatch under key {key}); "
                             "refusing to replay the log")
        prev = expected
        yield decode_body(body, f"{where} record {n}")
        off = end
        n += 1


class WriteAheadLog:
    """Segmented append-only log under ``directory`` (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike[str], keys: Keyring, fsync: str = "batch",
                 group_ms: float = 5.0) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync policy must be one of {', '.join(FSYNC_POLICIES)}, got {fsync!r}")
        self.dir = Path(directory)
        self.keys = keys
        self.fsync = fsync
        self.group_seconds = max(group_ms, 0.1) / 1000.0
        self._fd = -1
        self._segment = 0
        self._prev = b""
        self.lsn = 0  # records appended by this process
        self.synced_lsn = 0
        self._sync_lock = asyncio.Lock()
        # Segments closed by rotate() whose fsync and close happen off the event loop (finish_rotation);
        # a sync before that covers them too.  Guarded by _fd_lock (used from worker threads).
        self._retired: list[int] = []
        self._dir_dirty = False
        self._fd_lock = threading.Lock()
        self._synced = asyncio.Condition()
        self._flusher: asyncio.Task[None] | None = None
        self.fsyncs = 0
        self.fsync_seconds = 0.0
        self.bytes_written = 0

    # -- segments -------------------------------------------------------------------------------------
    def segments(self) -> list[Path]:
        if not self.dir.exists():
            return []
        return sorted(p for p in self.dir.glob("*.wal") if p.stem.isdigit())

    def replay(self) -> Iterator[Record]:
        """Every record left from before this start, oldest first (verified as it goes)."""
        segs = self.segments()
        for i, path in enumerate(segs):
            yield from read_segment(path, self.keys, last=i == len(segs) - 1)

    def open(self) -> None:
        """Start a new segment after the existing ones (call after :meth:`replay`)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        segs = self.segments()
        self._open_segment((int(segs[-1].stem) if segs else 0) + 1)

    def _open_segment(self, number: int) -> None:
        path = self.dir / f"{number:012d}.wal"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        header = _header(self.keys)
        os.write(fd, header)
        os.fsync(fd)
        fsync_dir(self.dir)
        if self._fd >= 0:
            self._close_fd()
        self._fd = fd
        self._segment = number
        self._prev = _mac(self.keys, self.keys.signing.id, b"", header)

    def _close_fd(self) -> None:
        if self.fsync != "off":
            os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1

    def rotate(self) -> int:
        """Start a new segment; returns the number of the last one closed (for :meth:`drop_through`).

        Cheap enough for the event loop (no fsync): the closed segment is fsynced and closed by
        :meth:`finish_rotation` (run it in a worker thread), and any sync before that covers it too.
        """
        closed = self._segment
        path = self.dir / f"{closed + 1:012d}.wal"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        header = _header(self.keys)
        os.write(fd, header)
        # No lock here (the event loop must not wait for a worker's fsync): list append and attribute
        # stores are atomic, and only the worker side closes retired descriptors, under _fd_lock.
        self._dir_dirty = True
        self._retired.append(self._fd)
        self._fd = fd
        self._segment = closed + 1
        self._prev = _mac(self.keys, self.keys.signing.id, b"", header)
        return closed

    def finish_rotation(self) -> None:
        """fsync and close the segments retired by :meth:`rotate` (blocking: call from a worker thread)."""
        self._fsync_all(close_retired=True)

    def _fsync_all(self, close_retired: bool = False) -> None:
        with self._fd_lock:
            current = self._fd
            retired = list(self._retired)
            for fd in retired:
                if self.fsync != "off":
                    os.fsync(fd)
                if close_retired:
                    os.close(fd)
                    self._retired.remove(fd)
            if self.fsync != "off" and current >= 0 and current not in retired:
                os.fsync(current)
            if self._dir_dirty:
                self._dir_dirty = False
                fsync_dir(self.dir)

    def drop_through(self, number: int) -> int:
        """Delete segments numbered ``<= number`` (their content is in a written checkpoint)."""
        n = 0
        for p in self.segments():
            if int(p.stem) <= number and int(p.stem) != self._segment:
                p.unlink(missing_ok=True)
                n += 1
        if n:
            fsync_dir(self.dir)
        return n

    # -- appends --------------------------------------------------------------------------------------
    def append(self, rec: Record) -> int:
        """Write one record to the kernel (synchronous, no fsync); returns its log sequence number."""
        if self._fd < 0:
            raise StateError("write-ahead log is not open")
        head = body_head(rec)
        batch = rec.batch
        length = len(head) + len(batch)
        tag = _mac(self.keys, self.keys.signing.id, self._prev, head, batch)
        # the batch is handed to the kernel as it is: hashed in place and written with writev, not copied
        _write_all(self._fd, [_REC.pack(length) + tag + head, batch])
        self._prev = tag
        self.bytes_written += _REC.size + _TAG + length
        self.lsn += 1
        return self.lsn

    async def wait_durable(self, lsn: int) -> None:
        """Return once record ``lsn`` is as durable as the policy promises."""
        if self.fsync == "off" or self.synced_lsn >= lsn:
            return
        if self.fsync == "batch":
            async with self._sync_lock:  # a waiter behind a running fsync is usually covered by it
                if self.synced_lsn >= lsn:
                    return
                await self._sync()
            return
        self._ensure_flusher()
        async with self._synced:
            await self._synced.wait_for(lambda: self.synced_lsn >= lsn)

    async def _sync(self) -> None:
        target = self.lsn
        t0 = time.perf_counter()
        await asyncio.to_thread(self._fsync_all)
        self.fsyncs += 1
        self.fsync_seconds += time.perf_counter() - t0
        self.synced_lsn = max(self.synced_lsn, target)

    def _ensure_flusher(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop(), name="baseliner-wal-group-commit")

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.group_seconds)
            if self.synced_lsn < self.lsn:
                async with self._sync_lock:
                    await self._sync()
                async with self._synced:
                    self._synced.notify_all()

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            try:
                await self._flusher
            except asyncio.CancelledError:
                pass
            self._flusher = None
        self.finish_rotation()
        if self._fd >= 0:
            self._close_fd()
        self.synced_lsn = self.lsn
        async with self._synced:
            self._synced.notify_all()


def _write_all(fd: int, parts: list[bytes | memoryview]) -> None:
    views = [memoryview(p).cast("B") for p in parts]
    while views:
        n = os.writev(fd, views)
        while views and n >= len(views[0]):  # regular files do not short-write in practice; be correct anyway
            n -= len(views[0])
            views.pop(0)
        if views and n:
            views[0] = views[0][n:]


def replay_into(log_: WriteAheadLog, pipeline: Any, decoder: Any) -> tuple[int, int]:
    """Apply every logged batch the restored ``pipeline`` does not cover yet; returns (applied, skipped).

    The pipeline's per-sensor last sequence (restored from the checkpoint) decides: a record at or below
    it is already in the checkpoint.  Anomaly events of replayed batches are not emitted again (they were
    written before the batch was acknowledged); the caller mutes the sinks.
    """
    from baseliner.protos.v1 import vectors_pb2
    from baseliner.service.auth import restrict_node
    from baseliner.service.pipeline import image_key

    # A checkpoint writes the baseline files, then service.state; a crash in between leaves files newer than
    # service.state.  Each file records the per-sensor sequences it holds: their vectors are not re-applied.
    held: dict[str, dict[str, int]] = pipeline.restored_applied
    key_mode = pipeline.config.image_key
    applied = skipped = 0
    for rec in log_.replay():
        if rec.sequence <= pipeline.last_sequence(rec.sensor_id):
            skipped += 1
            continue
        try:
            batch = vectors_pb2.VectorBatch.FromString(bytes(rec.batch))
        except Exception as e:  # verified by its tag, so this is a bug or a format change: say so
            raise StateError(f"write-ahead log: batch {rec.sequence} of {rec.sensor_id} cannot be parsed ({e})") \
                from None
        try:  # the checks the batch passed when it was logged: a changed limit or build may refuse it now
            decoder.check_batch(batch)
            decoded = decoder.decode_block(batch)
        except ValidationError as e:
            raise StateError(
                f"write-ahead log: batch {rec.sequence} of {rec.sensor_id} is refused by this service "
                f"({e.reason}: {e.message}); it was acknowledged, so it is not dropped: start with the settings "
                f"it was logged under (e.g. grpc.max_batch_vectors), or remove the log to give it up"
            ) from None
        block, rejected = restrict_node(decoded, rec.node or None)
        if held:
            done = {k for k, through in held.items() if int(through.get(rec.sensor_id, 0)) >= rec.sequence}
            if done:
                skip = np.array([image_key(ident, key_mode) in done for ident in block.identities], dtype=bool)
                if skip.any():
                    block = block.take(np.flatnonzero(~skip[block.ident]))
        pipeline.apply_block(rec.sensor_id, rec.sequence, block, rejected)
        evict = getattr(pipeline.baselines, "evict_excess", None)
        if evict is not None:
            evict()
        applied += 1
    return applied, skipped


class WalCollector:
    """Prometheus metrics of a :class:`WriteAheadLog` (and of baseline spilling when given), read at scrape."""

    def __init__(self, wal: WriteAheadLog, spill: Any = None) -> None:
        self.wal = wal
        self.spill = spill

    def collect(self) -> Iterator[Any]:
        from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

        w = self.wal
        yield CounterMetricFamily("baseliner_wal_records", "Batches appended to the write-ahead log",
                                  value=w.lsn)
        yield CounterMetricFamily("baseliner_wal_fsyncs", "fsync calls of the write-ahead log", value=w.fsyncs)
        yield CounterMetricFamily("baseliner_wal_fsync_seconds", "Seconds spent in write-ahead log fsyncs",
                                  value=w.fsync_seconds)
        yield CounterMetricFamily("baseliner_wal_written_bytes", "Bytes appended to the write-ahead log",
                                  value=w.bytes_written)
        yield GaugeMetricFamily("baseliner_wal_segments", "Write-ahead log segments on disk",
                                value=len(w.segments()))
        if self.spill is not None:
            yield GaugeMetricFamily("baseliner_baselines_spilled", "Baselines held on disk, not in memory",
                                    value=len(self.spill.spilled))
            yield CounterMetricFamily("baseliner_baseline_spills", "Baselines written out to bound memory",
                                      value=self.spill.spills)
            yield CounterMetricFamily("baseliner_baseline_loads", "Spilled baselines loaded back on demand",
                                      value=self.spill.loads)
