"""A bounded on-disk spool of unacknowledged batches: the :class:`~baseliner.sensor.buffer.BatchBuffer` that
survives a restart.

One file per batch under the spool directory, plus the sequence counter::

    <dir>/00000000000000000042.batch    one encoded batch (``baseliner.sensor.wire.encode_batch_body``)
    <dir>/next                          the next sequence number (so numbering never goes back; a new spool
                                        starts from the clock in microseconds, as a memory buffer does)

Every file is written to a temporary name, ``fsync``-ed (``fsync=True``, the default) and renamed, so a
file is either complete or absent whatever the moment the sensor dies.  A batch file is::

    BASELINER-SPOOL 1 <algorithm> <hex tag>\\n       hmac-sha256 with the spool key, or sha256 without one
    {"sequence": N, "vectors": M, "keys": [...]}\\n    keys: the batch's routing keys (image repositories)
    <batch body bytes>                               protobuf, parsed by the service; never executed here

and the tag covers the header line and the body.  On open, a file whose tag does not verify, or that
another key (or no key) wrote, is refused with :class:`SpoolError` naming the file: the sensor does not
start on a spool someone else may have written.  Batches are resent in ascending sequence order; the
service recognises resends of batches it had applied (per-sensor last sequence, itself durable).

Bounds: ``max_batches`` and ``max_bytes``; when full the oldest batches are evicted (and returned from
:meth:`DiskSpool.add` for the transport to count), or the producer waits (transport ``on_full="block"``).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from pathlib import Path

from baseliner.models import integrity
from baseliner.models.errors import StateError
from baseliner.models.integrity import atomic_write
from baseliner.sensor.buffer import MemoryBuffer, Pending

log = logging.getLogger(__name__)

_MAGIC = b"BASELINER-SPOOL 1 "
_SUFFIX = ".batch"
_MAX_HEADER = 1 << 20  # a batch's routing keys: up to one per window


class SpoolError(StateError):
    """A spool file is corrupt, tampered with, or written with another key."""


def encode_entry(p: Pending, key: bytes | None) -> bytes:
    header = json.dumps({"sequence": p.sequence, "vectors": p.vectors, "keys": list(p.keys)},
                        separators=(",", ":")).encode()
    algo, tag = integrity.tag(key, header, p.body)
    return _MAGIC + f"{algo} {tag}\n".encode() + header + b"\n" + p.body


def decode_entry(data: bytes, key: bytes | None, where: str) -> Pending:
    """Verify and parse one spool file; :class:`SpoolError` with the reason otherwise."""
    if not data.startswith(_MAGIC):
        raise SpoolError(f"{where}: not a Baseliner spool file; refusing to load it")
    nl1 = data.find(b"\n", len(_MAGIC), len(_MAGIC) + 200)
    nl2 = data.find(b"\n", nl1 + 1, nl1 + 1 + _MAX_HEADER) if nl1 >= 0 else -1
    if nl1 < 0 or nl2 < 0:
        raise SpoolError(f"{where}: truncated or corrupt spool file; refusing to load it")
    try:
        algo, tag = data[len(_MAGIC):nl1].decode("ascii").split(" ", 1)
    except (UnicodeDecodeError, ValueError):
        raise SpoolError(f"{where}: corrupt integrity line; refusing to load it") from None
    if algo == "hmac-sha256" and not key:
        raise SpoolError(f"{where}: spool file carries an HMAC but no spool key is configured; refusing to load it")
    if algo == "sha256" and key:
        raise SpoolError(f"{where}: spool file carries no HMAC but a spool key is configured; refusing to load it")
    if algo not in ("hmac-sha256", "sha256"):
        raise SpoolError(f"{where}: unknown integrity algorithm {algo!r}; refusing to load it")
    header = data[nl1 + 1:nl2]
    body = data[nl2 + 1:]
    _, expected = integrity.tag(key, header, body)
    if not hmac.compare_digest(expected, tag):
        what = "tampered with or corrupt (HMAC mismatch)" if key else "corrupt (checksum mismatch)"
        raise SpoolError(f"{where}: spool file is {what}; refusing to load it")
    try:
        meta = json.loads(header)
        seq, vectors, keys = int(meta["sequence"]), int(meta["vectors"]), tuple(str(k) for k in meta["keys"])
    except (ValueError, KeyError, TypeError):
        raise SpoolError(f"{where}: spool header is not valid; refusing to load it") from None
    return Pending(seq, body, vectors, keys)


class DiskSpool(MemoryBuffer):
    """Bounded on-disk :class:`~baseliner.sensor.buffer.BatchBuffer` (see the module docstring).

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> s = DiskSpool(d, max_batches=2, fsync=False)
    >>> first = s.add(b"a", 1, ["nginx"])[0].sequence  # a new spool numbers from the clock
    >>> s.add(b"b", 1, ["redis"])[0].sequence - first, [p.sequence - first for p in s.add(b"c", 1)[1]]
    (1, [0])
    >>> s.holds("nginx"), s.holds("redis")
    (False, True)
    >>> s.close(); [(p.sequence - first, p.body, p.keys) for p in DiskSpool(d).entries()]
    [(1, b'b', ('redis',)), (2, b'c', ())]
    """

    persistent_sequences = True

    def __init__(self, directory: str | os.PathLike[str], max_batches: int = 4096,
                 max_bytes: int = 1024 * 1024 * 1024, key: bytes | None = None, fsync: bool = True) -> None:
        # A new spool numbers from the clock, as a memory buffer does: a shard that remembers this sensor's
        # stream from before (a spool deleted, a shard name reused) never takes new batches for resends.
        fresh = not (Path(directory) / "next").exists()
        super().__init__(max_batches, max_bytes, first_sequence=None if fresh else 1)
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = key
        self.fsync = fsync
        self._load()

    # -- files ----------------------------------------------------------------------------------------
    def _path(self, seq: int) -> Path:
        return self.dir / f"{seq:020d}{_SUFFIX}"

    def _write(self, path: Path, data: bytes) -> None:
        atomic_write(path, data, self.fsync)

    def _load(self) -> None:
        for tmp in self.dir.glob(".tmp-*"):
            tmp.unlink(missing_ok=True)  # a write the sensor did not finish: never acknowledged, never counted
        counter = self.dir / "next"
        if counter.exists():
            try:
                self._next = max(1, int(counter.read_text().strip()))
            except ValueError:
                raise SpoolError(f"{counter}: not a sequence number; refusing to use this spool") from None
        for path in sorted(self.dir.glob("*" + _SUFFIX)):
            p = decode_entry(path.read_bytes(), self.key, str(path))
            if path.name != self._path(p.sequence).name:
                raise SpoolError(f"{path}: file name does not match its sequence {p.sequence}; refusing it")
            MemoryBuffer._store(self, p)  # (in memory only: the file is there)
            self._next = max(self._next, p.sequence + 1)
        if self._items:
            log.info("spool %s: %d unacknowledged batches (%d bytes) from before, seq %d..%d", self.dir,
                     len(self._items), self._bytes, min(self._items), max(self._items))

    def _save_counter(self) -> None:
        self._write(self.dir / "next", str(self._next).encode())

    # -- MemoryBuffer hooks: every change reaches the disk ----------------------------------------------
    def _numbered(self) -> None:
        self._save_counter()

    def _store(self, entry: Pending) -> None:
        self._write(self._path(entry.sequence), encode_entry(entry, self.key))
        super()._store(entry)

    def _pop(self, sequence: int) -> Pending:
        entry = super()._pop(sequence)
        self._path(sequence).unlink(missing_ok=True)
        return entry

    def close(self) -> None:
        """Every file is already complete on disk; nothing to flush."""
