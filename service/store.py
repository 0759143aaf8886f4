"""Durable service state: integrity-checked, versioned, atomically written checkpoint files.

Layout of the state directory::

    <dir>/service.state                 per-sensor last applied sequence, container tracker
    <dir>/baselines/<hash>.state        one file per image baseline (ImageBaseline.to_state)

Every file is::

    BASELINER-STATE\\n
    hmac-sha256 <key id> <hex tag>\\n     under the first key of state.key_file (baseliner.models.integrity)
    <header JSON>\\n                      {"format": 2, "kind": ..., "key": ..., "payload_bytes": ...}
    <payload>                            numpy .npz, read with allow_pickle=False; JSON meta inside as
                                         the uint8 array "__meta__"

The tag covers the header line and the payload and is checked before anything is parsed: a file whose
tag does not check out, or that names a key the keyring does not hold, is refused by name.  Files under an
older key of the keyring are read (key rotation) and written again under the signing key at the next
checkpoint.  Nothing is ever unpickled.

Writes are atomic: temporary file in the same directory, ``fsync``, ``rename``, ``fsync`` of the directory.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from baseliner.models import integrity
from baseliner.models.baseline import ImageBaseline
from baseliner.models.errors import StateError, StateVersionError
from baseliner.models.integrity import Keyring, atomic_write

log = logging.getLogger(__name__)

MAGIC = b"BASELINER-STATE\n"
FORMAT_VERSION = 2
_MAX_HEADER = 64 * 1024
_META = "__meta__"


# --------------------------------------------------------------------------------------------------
# One file


def encode_file(kind: str, name: str, meta: dict[str, Any], arrays: dict[str, np.ndarray], keys: Keyring) -> bytes:
    buf = io.BytesIO()
    if _META in arrays:
        raise StateError(f"array name {_META!r} is reserved")
    meta_bytes = np.frombuffer(json.dumps(meta, separators=(",", ":"), allow_nan=True).encode(), dtype=np.uint8)
    np.savez_compressed(buf, **{_META: meta_bytes}, **arrays)  # type: ignore[arg-type]
    payload = buf.getvalue()
    header = json.dumps(
        {"format": FORMAT_VERSION, "kind": kind, "key": name, "payload_bytes": len(payload),
         "written": time.time()},
        separators=(",", ":"),
    ).encode()
    return integrity.seal(MAGIC, header + b"\n" + payload, keys)


def decode_file(
    data: bytes, keys: Keyring, where: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray]]:
    """Verify and parse a state file; raise :class:`StateError` with a clear message otherwise.

    The header returned carries ``key_id``: the key the file was signed with (an older key of the keyring
    means the file is to be written again under the signing key)."""
    content, kid = integrity.unseal(data, MAGIC, keys, where, "state file")
    nl = content.find(b"\n", 0, _MAX_HEADER)
    if nl < 0:
        raise StateError(f"{where}: truncated or corrupt header; refusing to load it")
    header_bytes, payload = content[:nl], content[nl + 1:]
    try:
        header = json.loads(header_bytes)
    except ValueError:
        raise StateError(f"{where}: header is not JSON") from None
    if not isinstance(header, dict):
        raise StateError(f"{where}: header is not a JSON object")
    header["key_id"] = kid
    if not isinstance(header.get("format"), int):
        raise StateError(f"{where}: header has no format version")
    if header.get("payload_bytes") != len(payload):
        raise StateError(f"{where}: payload length does not match its header (truncated?)")
    if header["format"] != FORMAT_VERSION:  # the format changes only with a new version (nothing is migrated)
        newer = "a newer" if header["format"] > FORMAT_VERSION else "an older"
        raise StateVersionError(
            f"{where}: state format version {header['format']} was written by {newer} Baseliner (this build reads "
            f"version {FORMAT_VERSION}); move the state directory away to start fresh, or run the Baseliner that "
            "wrote it"
        )
    meta, arrays = _read_payload(payload, where)
    return header, meta, arrays


def _read_payload(payload: bytes, where: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The meta record and the arrays of a verified payload (never unpickled)."""
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except Exception as e:  # zipfile/np errors: the file verified but cannot be parsed
        raise StateError(f"{where}: payload cannot be read ({e})") from None
    meta_arr = arrays.pop(_META, None)
    if meta_arr is None:
        raise StateError(f"{where}: payload has no meta record")
    try:
        return json.loads(meta_arr.tobytes()), arrays
    except ValueError:
        raise StateError(f"{where}: meta record is not JSON") from None


# --------------------------------------------------------------------------------------------------
# Checkpoints of a pipeline


@dataclass
class Snapshot:
    """What one checkpoint writes; taken on the event loop, written from a worker thread."""

    baselines: dict[str, tuple[dict[str, Any], dict[str, np.ndarray]]] = field(default_factory=dict)
    service: dict[str, Any] = field(default_factory=dict)
    write_service: bool = False


def baseline_filename(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32] + ".state"


class StateStore:
    """Reads and writes a pipeline's state under ``directory`` (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike[str], keys: Keyring) -> None:
        self.dir = Path(directory)
        self.keys = keys  # state.key_file: the first key signs, the others are read during a rotation
        self.sizes: dict[str, int] = {}  # image key -> bytes of its last written file
        self.resigned = 0  # files found under an older key at restore, and written again under the signing key
        #: image keys handed to another shard: a checkpoint taken before the handover must not write them back
        self.released: set[str] = set()

    @property
    def baselines_dir(self) -> Path:
        return self.dir / "baselines"

    @property
    def service_file(self) -> Path:
        return self.dir / "service.state"

    # -- save ---------------------------------------------------------------------------------------
    @staticmethod
    def snapshot(pipeline: Any, everything: bool = False) -> Snapshot:
        """Take the state of dirty baselines (all with ``everything``); clears the dirty marks."""
        snap = Snapshot()
        held = getattr(pipeline.baselines, "resident", pipeline.baselines)  # spilled ones are on disk already
        keys = list(held) if everything else [k for k in pipeline.dirty if k in held]
        for k in keys:
            meta, arrays = pipeline.baselines[k].to_state()
            # which batches this file holds: the write-ahead log replays the rest, exactly once, even when
            # a crash leaves some files of a checkpoint newer than service.state (service/wal.py)
            meta = {**meta, "applied_through": dict(pipeline.sensors)}
            meta_json = json.dumps(meta)
            copies = {n: np.array(a, copy=True) for n, a in arrays.items()}
            snap.baselines[k] = (json.loads(meta_json), copies)
            pipeline.memory_sizes[k] = len(meta_json) + sum(a.nbytes for a in copies.values())
        pipeline.dirty.clear()
        if pipeline.sensors_dirty or everything or keys:
            snap.service = json.loads(json.dumps(pipeline.service_state()))
            snap.write_service = True
            pipeline.sensors_dirty = False
        return snap

    def write(self, snap: Snapshot) -> int:
        """Write a snapshot's files; returns bytes written."""
        total = 0
        for k, (meta, arrays) in snap.baselines.items():
            if k in self.released:
                continue
            data = encode_file("baseline", k, meta, arrays, self.keys)
            path = self.baselines_dir / baseline_filename(k)
            atomic_write(path, data)
            if k in self.released:  # released while this was written (the writer runs in a thread)
                path.unlink(missing_ok=True)
                continue
            self.sizes[k] = len(data)
            total += len(data)
        if snap.write_service:
            data = encode_file("service", "service", snap.service, {}, self.keys)
            atomic_write(self.service_file, data)
            total += len(data)
        return total

    # -- restore ------------------------------------------------------------------------------------
    def restore(self, pipeline: Any) -> int:
        """Load every baseline and the service state into ``pipeline``; returns baselines loaded.

        Raises :class:`StateError` (with the file and what is wrong) on the first bad file: the service
        refuses to start rather than silently forgetting or trusting a baseline.  A file under an older key
        of the keyring is written again, as it is, under the signing key (key rotation).
        """
        if not self.dir.exists():
            return 0
        for tmp in self.dir.glob("**/.tmp-*"):
            log.warning("removing unfinished state write %s", tmp)
            tmp.unlink(missing_ok=True)
        loaded = 0
        if self.baselines_dir.exists():
            for path in sorted(self.baselines_dir.glob("*.state")):
                header, meta, arrays = decode_file(path.read_bytes(), self.keys, str(path))
                if header.get("kind") != "baseline":
                    raise StateError(f"{path}: not a baseline file (kind {header.get('kind')!r})")
                key = str(header.get("key", ""))
                if baseline_filename(key) != path.name:
                    raise StateError(f"{path}: file name does not match its image key {key!r}")
                try:
                    b = ImageBaseline.from_state(meta, arrays)
                except StateVersionError as e:
                    raise StateVersionError(f"{path}: {e}") from None
                except StateError as e:
                    raise StateError(f"{path}: {e}") from None
                except (KeyError, ValueError, TypeError) as e:
                    raise StateError(f"{path}: baseline state is inconsistent ({e!r})") from None
                if b.key != key:
                    raise StateError(f"{path}: baseline key {b.key!r} does not match its header {key!r}")
                self._resign(path, header, meta, arrays)
                pipeline.baselines[key] = b
                self.sizes[key] = path.stat().st_size
                if isinstance(meta.get("applied_through"), dict):
                    pipeline.restored_applied[key] = meta["applied_through"]
                loaded += 1
        if self.service_file.exists():
            header, meta, arrays = decode_file(self.service_file.read_bytes(), self.keys, str(self.service_file))
            if header.get("kind") != "service":
                raise StateError(f"{self.service_file}: not a service state file")
            self._resign(self.service_file, header, meta, arrays)
            pipeline.load_service_state(meta)
        log.info("restored %d baselines from %s", loaded, self.dir)
        if self.resigned:
            log.warning("state key rotation: %d state files were signed with an older key of state.key_file and are "
                        "now signed with key %s", self.resigned, self.keys.signing.id)
        return loaded

    def _resign(self, path: Path, header: dict[str, Any], meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Write a verified file again under the signing key when an older key signed it (same content)."""
        if header["key_id"] == self.keys.signing.id:
            return
        atomic_write(path, encode_file(str(header["kind"]), str(header["key"]), meta, arrays, self.keys))
        self.resigned += 1
