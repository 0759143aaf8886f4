"""A bounded on-disk spool of unacknowledged batches: the :class:`~baseliner.sensor.buffer.BatchBuffer` that
survives a restart.

One file per batch under the spool directory, plus the sequence counter::

    <dir>/00000000000000000042.batch    one encoded batch (``baseliner.sensor.wire.encode_batch_body``)
    <dir>/next                          the next sequence number (so numbering never goes back)

Every file is written to a temporary name, ``fsync``-ed (``fsync=True``, the default) and renamed, so a
file is either complete or absent whatever the moment the sensor dies.  Both kinds are signed with the
spool keyring (``--spool-key-file``, :class:`baseliner.models.integrity.Keyring`; required)::

    BASELINER-SPOOL 2 hmac-sha256 <key id> <hex tag>\\n
    {"sequence": N, "vectors": M, "keys": [...]}\\n    keys: the batch's routing keys (image repositories)
    <batch body bytes>                               protobuf, parsed by the service; never executed here

    BASELINER-SPOOL-NEXT 2 hmac-sha256 <key id> <hex tag>\\n
    N

and the tag covers everything after the first line.  On open, a file whose tag does not verify, or that
names a key the keyring does not hold, is refused with :class:`SpoolError` naming the file: the sensor does
not start on a spool someone else may have written.  Files under an older key of the keyring are written
again under the signing key (key rotation).  Batches are resent in ascending sequence order; the service
recognises resends of batches it had applied (per-sensor last sequence, itself durable).

Bounds: ``max_batches`` and ``max_bytes``; when full the oldest batches are evicted (and returned from
:meth:`DiskSpool.add` for the transport to count), or the producer waits (transport ``on_full="block"``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from baseliner.models import integrity
from baseliner.models.errors import StateError
from baseliner.models.integrity import Keyring, atomic_write
from baseliner.sensor.buffer import MemoryBuffer, Pending

log = logging.getLogger(__name__)

_MAGIC = b"BASELINER-SPOOL 2 "
_COUNTER_MAGIC = b"BASELINER-SPOOL-NEXT 2 "
_SUFFIX = ".batch"
_MAX_HEADER = 1 << 20  # a batch's routing keys: up to one per window


class SpoolError(StateError):
    """A spool file is corrupt, tampered with, or written with another key."""


def _verified(data: bytes, magic: bytes, keys: Keyring, where: str) -> tuple[bytes, str]:
    """``(content, key id)`` of a signed spool file; :class:`SpoolError` naming ``where`` otherwise."""
    try:
        return integrity.unseal(data, magic, keys, where, "spool file")
    except integrity.IntegrityError as e:
        raise SpoolError(str(e)) from None


def encode_entry(p: Pending, keys: Keyring) -> bytes:
    header = json.dumps({"sequence": p.sequence, "vectors": p.vectors, "keys": list(p.keys)},
                        separators=(",", ":")).encode()
    return integrity.seal(_MAGIC, header + b"\n" + p.body, keys)


def decode_entry(data: bytes, keys: Keyring, where: str) -> tuple[Pending, str]:
    """Verify and parse one spool file: ``(batch, key id)``; :class:`SpoolError` with the reason otherwise."""
    content, kid = _verified(data, _MAGIC, keys, where)
    nl = content.find(b"\n", 0, _MAX_HEADER)
    if nl < 0:
        raise SpoolError(f"{where}: spool header is not valid; refusing to load it")
    try:
        meta = json.loads(content[:nl])
        seq, vectors = int(meta["sequence"]), int(meta["vectors"])
        routing = tuple(str(k) for k in meta["keys"])
    except (ValueError, KeyError, TypeError):
        raise SpoolError(f"{where}: spool header is not valid; refusing to load it") from None
    return Pending(seq, content[nl + 1:], vectors, routing), kid


class DiskSpool(MemoryBuffer):
    """Bounded on-disk :class:`~baseliner.sensor.buffer.BatchBuffer` (see the module docstring).

    >>> import tempfile
    >>> d, keys = tempfile.mkdtemp(), Keyring.of("spool-key-" * 4)
    >>> s = DiskSpool(d, keys, max_batches=2, fsync=False)
    >>> [s.add(b"a", 1, ["nginx"])[0].sequence, s.add(b"b", 1, ["redis"])[0].sequence]
    [1, 2]
    >>> [p.sequence for p in s.add(b"c", 1)[1]]
    [1]
    >>> s.holds("nginx"), s.holds("redis")
    (False, True)
    >>> s.close(); [(p.sequence, p.body, p.keys) for p in DiskSpool(d, keys).entries()]
    [(2, b'b', ('redis',)), (3, b'c', ())]
    """

    persistent_sequences = True

    def __init__(self, directory: str | os.PathLike[str], keys: Keyring, max_batches: int = 4096,
                 max_bytes: int = 1024 * 1024 * 1024, fsync: bool = True) -> None:
        super().__init__(max_batches, max_bytes, first_sequence=1)
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keys = keys
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
        resign = False
        if counter.exists():
            content, kid = _verified(counter.read_bytes(), _COUNTER_MAGIC, self.keys, str(counter))
            resign = kid != self.keys.signing.id
            try:
                self._next = max(1, int(content.decode("ascii").strip()))
            except (UnicodeDecodeError, ValueError):
                raise SpoolError(f"{counter}: not a sequence number; refusing to use this spool") from None
        for path in sorted(self.dir.glob("*" + _SUFFIX)):
            p, kid = decode_entry(path.read_bytes(), self.keys, str(path))
            if path.name != self._path(p.sequence).name:
                raise SpoolError(f"{path}: file name does not match its sequence {p.sequence}; refusing it")
            if kid != self.keys.signing.id:  # an older key of the keyring: sign it again under the current one
                self._write(path, encode_entry(p, self.keys))
                resign = True
            MemoryBuffer._store(self, p)  # (in memory only: the file is there)
            self._next = max(self._next, p.sequence + 1)
        if resign or not counter.exists():
            self._save_counter()
        if self._items:
            log.info("spool %s: %d unacknowledged batches (%d bytes) from before, seq %d..%d", self.dir,
                     len(self._items), self._bytes, min(self._items), max(self._items))

    def _save_counter(self) -> None:
        self._write(self.dir / "next", integrity.seal(_COUNTER_MAGIC, str(self._next).encode(), self.keys))

    # -- MemoryBuffer hooks: every change reaches the disk ----------------------------------------------
    def _numbered(self) -> None:
        self._save_counter()

    def _store(self, entry: Pending) -> None:
        self._write(self._path(entry.sequence), encode_entry(entry, self.keys))
        super()._store(entry)

    def _pop(self, sequence: int) -> Pending:
        entry = super()._pop(sequence)
        self._path(sequence).unlink(missing_ok=True)
        return entry

    def close(self) -> None:
        """Every file is already complete on disk; nothing to flush."""
