"""Durable service state: integrity-checked, versioned, atomically written checkpoint files.

Layout of the state directory::

    <dir>/service.state                 per-sensor last applied sequence, container tracker
    <dir>/baselines/<hash>.state        one file per image baseline (ImageBaseline.to_state)

Every file is::

    BASELINER-STATE\\n
    <algorithm> <hex tag>\\n              hmac-sha256 (key from configuration) or sha256 (no key)
    <header JSON>\\n                      {"format": 1, "kind": ..., "key": ..., "payload_bytes": ...}
    <payload>                            numpy .npz, read with allow_pickle=False; JSON meta inside as
                                         the uint8 array "__meta__"

The tag covers the header line and the payload and is checked before anything is parsed.  With a key,
tampering is detected; without one the SHA-256 still catches corruption (but not a forger).  A file
written with a key is refused when no key is configured and vice versa.  Nothing is ever unpickled.

Writes are atomic: temporary file in the same directory, ``fsync``, ``rename``, ``fsync`` of the directory.
"""

from __future__ import annotations

import hashlib
import hmac
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
from baseliner.models.integrity import atomic_write

log = logging.getLogger(__name__)

MAGIC = b"BASELINER-STATE\n"
FORMAT_VERSION = 1
_MAX_HEADER = 64 * 1024
_META = "__meta__"


# --------------------------------------------------------------------------------------------------
# One file


def encode_file(kind: str, name: str, meta: dict[str, Any], arrays: dict[str, np.ndarray], key: bytes | None) -> bytes:
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
    algo, tag = integrity.tag(key, header, payload)
    return MAGIC + f"{algo} {tag}\n".encode() + header + b"\n" + payload


def decode_file(
    data: bytes, key: bytes | None, where: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray]]:
    """Verify and parse a state file; raise :class:`StateError` with a clear message otherwise."""
    algo, tag, header_bytes, payload = _split_file(data, where)
    _verify(algo, tag, key, header_bytes, payload, where)
    try:
        header = json.loads(header_bytes)
    except ValueError:
        raise StateError(f"{where}: header is not JSON") from None
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


def _split_file(data: bytes, where: str) -> tuple[str, str, bytes, bytes]:
    """``(integrity algorithm, tag, header line, payload)`` of a state file."""
    if not data.startswith(MAGIC):
        raise StateError(f"{where}: not a Baseliner state file (bad magic); refusing to load it")
    rest = data[len(MAGIC):]
    nl1 = rest.find(b"\n", 0, 200)
    nl2 = rest.find(b"\n", nl1 + 1, nl1 + 1 + _MAX_HEADER) if nl1 >= 0 else -1
    if nl1 < 0 or nl2 < 0:
        raise StateError(f"{where}: truncated or corrupt header; refusing to load it")
    try:
        algo, tag = rest[:nl1].decode("ascii").split(" ", 1)
    except (UnicodeDecodeError, ValueError):
        raise StateError(f"{where}: corrupt integrity line; refusing to load it") from None
    return algo, tag, rest[nl1 + 1:nl2], rest[nl2 + 1:]


def _verify(algo: str, tag: str, key: bytes | None, header_bytes: bytes, payload: bytes, where: str) -> None:
    """The tag checks out with the configured key (and the file was written with a key exactly when one is set)."""
    if algo == "hmac-sha256" and not key:
        raise StateError(
            f"{where}: file is protected by an HMAC but no state key is configured "
            "(set state.hmac_key_file or BASELINER_STATE_HMAC_KEY); refusing to load it"
        )
    if algo == "sha256" and key:
        raise StateError(
            f"{where}: file carries no HMAC but a state key is configured (written without the key, or "
            "replaced by someone without it); refusing to load it. Move it away to start fresh."
        )
    if algo not in ("hmac-sha256", "sha256"):
        raise StateError(f"{where}: unknown integrity algorithm {algo!r}; refusing to load it")
    _, expected = integrity.tag(key, header_bytes, payload)
    if not hmac.compare_digest(expected, tag):
        what = "tampered with or corrupt (HMAC mismatch)" if key else "corrupt (checksum mismatch)"
        raise StateError(f"{where}: state file is {what}; refusing to load it")


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

    def __init__(self, directory: str | os.PathLike[str], key: bytes | None = None) -> None:
        self.dir = Path(directory)
        self.key = key
        self.sizes: dict[str, int] = {}  # image key -> bytes of its last written file

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
            data = encode_file("baseline", k, meta, arrays, self.key)
            atomic_write(self.baselines_dir / baseline_filename(k), data)
            self.sizes[k] = len(data)
            total += len(data)
        if snap.write_service:
            data = encode_file("service", "service", snap.service, {}, self.key)
            atomic_write(self.service_file, data)
            total += len(data)
        return total

    # -- restore ------------------------------------------------------------------------------------
    def restore(self, pipeline: Any) -> int:
        """Load every baseline and the service state into ``pipeline``; returns baselines loaded.

        Raises :class:`StateError` (with the file and what is wrong) on the first bad file: the service
        refuses to start rather than silently forgetting or trusting a baseline.
        """
        if not self.dir.exists():
            return 0
        for tmp in self.dir.glob("**/.tmp-*"):
            log.warning("removing unfinished state write %s", tmp)
            tmp.unlink(missing_ok=True)
        loaded = 0
        if self.baselines_dir.exists():
            for path in sorted(self.baselines_dir.glob("*.state")):
                header, meta, arrays = decode_file(path.read_bytes(), self.key, str(path))
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
                pipeline.baselines[key] = b
                self.sizes[key] = path.stat().st_size
                if isinstance(meta.get("applied_through"), dict) and hasattr(pipeline, "restored_applied"):
                    pipeline.restored_applied[key] = meta["applied_through"]
                loaded += 1
        if self.service_file.exists():
            header, meta, _ = decode_file(self.service_file.read_bytes(), self.key, str(self.service_file))
            if header.get("kind") != "service":
                raise StateError(f"{self.service_file}: not a service state file")
            pipeline.load_service_state(meta)
        log.info("restored %d baselines from %s", loaded, self.dir)
        return loaded
