"""A routing key's state leaving one shard and arriving at another: export, release, import, and what the puller
writes down between its pull and its commit.

What moves with a routing key (an image repository) is everything the service knows about its images:

* each image key's baseline (``ImageBaseline.to_state``: models, novelty sets, thresholds, lifecycle, mode);
* the forwarded streams' last sequence numbers of its windows (``SHARD\\x1fSENSOR\\x1fKEY`` entries of the
  pipeline's per-sensor sequences, :func:`forwarded_stream`): a part forwarded again after the move is still
  recognised as applied (nothing applied twice);
* its containers' first and last window (window order, age of a container whose sensor does not know it);
* its recent anomaly events with their windows (``Admin.Feedback`` answers for them at the new owner).

Each part travels as a state file (``service/store.py``: a verified header and an ``.npz`` payload read without
pickle); the peer channel authenticates the sender.  A routing key is exported only while fenced
(``holdings.py``): nothing changes it between the export and the commit, so the puller's token names exactly
the state it holds.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from baseliner.models.baseline import ImageBaseline
from baseliner.models.errors import StateError
from baseliner.models.integrity import Keyring, atomic_write, fsync_dir
from baseliner.models.shards import routing_key_of_image_key
from baseliner.protos.v1 import vectors_pb2
from baseliner.sensor import wire
from baseliner.service.pipeline import RecentEvent, container_key
from baseliner.service.store import baseline_filename, decode_file, encode_file

log = logging.getLogger(__name__)

#: Separates the parts of a forwarded stream's name (never in a sensor id: the Hello check refuses it).
SEP = "\x1f"


def forwarded_stream(origin: str, sensor_id: str, key: str) -> str:
    """The stream a forwarded part counts in: windows of routing key ``key`` that sensor ``sensor_id`` sent on
    its stream to shard ``origin`` (whose sequence numbers they carry).

    >>> forwarded_stream("baseliner-0", "node-1/bpf", "nginx").split(SEP)
    ['baseliner-0', 'node-1/bpf', 'nginx']
    """
    return f"{origin}{SEP}{sensor_id}{SEP}{key}"


def stream_key(stream: str) -> str | None:
    """The routing key of a forwarded stream's name (None for a sensor's own stream)."""
    parts = stream.split(SEP)
    return parts[2] if len(parts) == 3 else None


@dataclass
class Export:
    key: str
    images: list[str]
    parts: list[bytes]  # one state file per image, then the key's rest
    token: str


#: Handover parts travel between shards over their authenticated channel; without a peer token (a lab on
#: loopback) their tag is only a checksum.
_CHECKSUM_KEYS = Keyring.of(b"baseliner handover parts: a checksum without shards.peer_token_file")


def transfer_keys(peer_token: str) -> Keyring:
    """The keys handover parts are signed and verified with: the shards' shared peer token."""
    return Keyring.of(peer_token.encode()) if peer_token else _CHECKSUM_KEYS


def _array(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype=np.uint8)


def export_key(pipeline: Any, key: str, images: list[str], keys: Keyring) -> Export:
    """The state of routing key ``key`` (its image keys held here: ``images``), as handover parts signed with
    the shards' transfer keys (``keys``: :func:`transfer_keys`)."""
    parts = []
    for k in images:
        meta, state = pipeline.baselines[k].to_state()
        parts.append(encode_file("baseline", k, meta, state, keys))
    streams = {s: q for s, q in pipeline.sensors.items() if stream_key(s) == key}
    containers = pipeline.containers.rows(
        {container_key(i) for i in list(pipeline._ident_row) if i.image_repository == key})
    recent: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    for rec in list(pipeline.recent.values()):
        if routing_key_of_image_key(rec.image_key) == key:
            arrays[f"recent{len(recent)}"] = _array(wire.encode_batch_body(rec.vectors))
            recent.append({"event_id": rec.event_id, "image_key": rec.image_key, "event": rec.event,
                           "accepted": rec.accepted})
    rest = {"images": images, "streams": streams, "containers": containers, "recent": recent}
    parts.append(encode_file("handover", key, rest, arrays, keys))
    token = hashlib.sha256(b"".join(parts)).hexdigest()[:32]
    return Export(key, images, parts, token)


def release_key(pipeline: Any, key: str, images: list[str], store: Any, metrics: Any) -> None:
    """Forget routing key ``key`` here (its images ``images``, streams, recent events) and delete its files."""
    for k in images:
        if k in pipeline.baselines:
            del pipeline.baselines[k]
        pipeline.dirty.discard(k)
        pipeline.memory_sizes.pop(k, None)
        if metrics is not None:
            metrics.forget_image(k)
        if store is not None:
            store.released.add(k)  # (before the unlink: a checkpoint being written skips or removes it)
            store.sizes.pop(k, None)
            (store.baselines_dir / baseline_filename(k)).unlink(missing_ok=True)
    if store is not None and store.baselines_dir.exists():
        fsync_dir(store.baselines_dir)
    for s in [s for s in pipeline.sensors if stream_key(s) == key]:
        del pipeline.sensors[s]
        pipeline.sensors_dirty = True
    for eid in [e for e, rec in pipeline.recent.items() if routing_key_of_image_key(rec.image_key) == key]:
        del pipeline.recent[eid]


def import_key(pipeline: Any, key: str, parts: list[bytes], decoder: Any, keys: Keyring) -> list[str]:
    """Install the handover ``parts`` of routing key ``key`` in ``pipeline``; returns its image keys.
    ``StateError`` for parts that do not verify or do not fit together (nothing is installed then)."""
    if not parts:
        raise StateError(f"handover of {key!r}: no parts")
    baselines: dict[str, ImageBaseline] = {}
    for i, data in enumerate(parts[:-1]):
        header, meta, arrays = decode_file(data, keys, f"handover of {key!r} part {i}")
        k = str(header.get("key", ""))
        if header.get("kind") != "baseline" or routing_key_of_image_key(k) != key:
            raise StateError(f"handover of {key!r}: part {i} is not one of its baselines ({k!r})")
        baselines[k] = ImageBaseline.from_state(meta, arrays)
    header, rest, arrays = decode_file(parts[-1], keys, f"handover of {key!r}")
    if header.get("kind") != "handover" or header.get("key") != key or sorted(rest["images"]) != sorted(baselines):
        raise StateError(f"handover of {key!r}: its last part does not describe the baselines sent")
    recent = [_recent(r, arrays[f"recent{i}"], decoder, key) for i, r in enumerate(rest["recent"])]
    for k, b in baselines.items():
        pipeline.baselines[k] = b
        pipeline.dirty.add(k)
    for s, q in rest["streams"].items():
        if stream_key(s) == key and int(q) > pipeline.sensors.get(s, 0):
            pipeline.sensors[s] = int(q)
            pipeline.sensors_dirty = True
    pipeline.containers.put(rest["containers"])
    for rec in recent:
        pipeline._remember(rec)
    return sorted(baselines)


def _recent(r: dict[str, Any], raw: np.ndarray, decoder: Any, key: str) -> RecentEvent:
    batch = vectors_pb2.VectorBatch.FromString(raw.tobytes())
    decoder.check_batch(batch)
    block, rejected = decoder.decode_block(batch)
    if rejected or routing_key_of_image_key(str(r["image_key"])) != key:
        raise StateError(f"handover of {key!r}: a recent event's windows do not decode")
    return RecentEvent(str(r["event_id"]), str(r["image_key"]), [block.vector(i) for i in range(len(block))],
                       dict(r["event"]), bool(r["accepted"]))


# --------------------------------------------------------------------------------------------------
# What the puller keeps between its pull and the holder's answer to its commit


class Arrivals:
    """``<state>/handover/<hash>.pull``: the parts pulled, written (and synced) before the Commit is sent, deleted
    once the baselines are in a checkpoint.  After a crash they say which keys were on their way here."""

    def __init__(self, state_dir: str, keys: Keyring | None) -> None:
        self.dir = Path(state_dir) / "handover" if state_dir else None
        self.key = keys  # state.key_file (required with a state directory)

    def _path(self, key: str) -> Path:
        assert self.dir is not None
        return self.dir / (baseline_filename(key).removesuffix(".state") + ".pull")

    def write(self, key: str, holder: str, token: str, parts: list[bytes]) -> None:
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = {"from": holder, "token": token, "parts": len(parts)}
        arrays = {f"p{i}": _array(p) for i, p in enumerate(parts)}
        assert self.key is not None, "state.dir needs state.key_file"
        atomic_write(self._path(key), encode_file("pull", key, meta, arrays, self.key))

    def delete(self, key: str) -> None:
        if self.dir is not None:
            self._path(key).unlink(missing_ok=True)

    def pending(self) -> list[tuple[str, str, str, list[bytes]]]:
        """``(key, holder, token, parts)`` of every pull written down and not finished."""
        if self.dir is None or not self.dir.exists():
            return []
        out = []
        for path in sorted(self.dir.glob("*.pull")):
            assert self.key is not None, "state.dir needs state.key_file"
            header, meta, arrays = decode_file(path.read_bytes(), self.key, str(path))
            key = str(header.get("key", ""))
            if header.get("kind") != "pull" or path.name != self._path(key).name:
                raise StateError(f"{path}: not a pending handover of this shard")
            parts = [arrays[f"p{i}"].tobytes() for i in range(int(meta["parts"]))]
            out.append((key, str(meta["from"]), str(meta["token"]), parts))
        return out
