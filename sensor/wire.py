"""Domain -> protobuf for the sensor: the only sensor module that builds wire messages.

``service/serde.py`` does the reverse on the service side.  A batch of
:class:`~baseliner.models.vector.FeatureVector` goes as one ``VectorBatch`` of ``VectorColumns``
(:func:`to_columns`; the layout is documented in ``protos/v1/vectors.proto``):

* the batch's distinct identities as the bytes of an ``IdentityTable`` (:func:`identity_table_bytes`, which
  keeps the bytes of the last tables it serialised: a sensor's containers stay the same round after round);
* window, container age and the 18 counters as one float64 row per window, the identity index and the
  five list lengths as one uint32 row per window (``protos/v1/window_columns.py``);
* syscall counts as uint16 indices into the batch's ``syscall_names`` (in order of first appearance) and
  float64 counts;
* n-grams as one uint32 per entry, ``bucket | count << 17`` (``protos/v1/ngram_entries.py``): a count above
  32767 as several entries of its bucket, a count of 0 not at all;
* ``Endpoint.protocol`` ``"tcp"``/``"udp"`` -> ``PROTOCOL_TCP``/``PROTOCOL_UDP``, ``Endpoint.outbound`` ->
  ``DIRECTION_OUTBOUND``/``DIRECTION_INBOUND``, each distinct endpoint once per batch.

Batches are stored and resent as bytes.  :func:`encode_batch_body` serialises everything but the
sequence number; :func:`batch_request_bytes` prepends the sequence number and wraps the batch in an
``IngestRequest`` using plain protobuf wire-format concatenation (a message's fields may come in any
order), so a resend never re-serialises vectors and an on-disk spool holds the body bytes as they are.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import fields
from itertools import chain
from operator import attrgetter

import numpy as np
from baseliner.models.block import dictionary
from baseliner.models.vector import Endpoint, FeatureVector, Identity
from baseliner.protos.v1 import ingest_pb2, ngram_entries, vectors_pb2, window_columns
from baseliner.protos.v1.schema import SCHEMA_VERSION

# One window's row of window_f64_le (window_columns.F64_COLUMNS, by FeatureVector attribute)
_F64_ROW = attrgetter(*({"container_age_seconds": "seconds_since_start"}.get(name, name)
                        for name in window_columns.F64_COLUMNS))
_PROTOCOL = {"tcp": vectors_pb2.PROTOCOL_TCP, "udp": vectors_pb2.PROTOCOL_UDP}
#: Identity's fields, each carried by the message field of the same name
_IDENTITY_FIELDS = tuple(f.name for f in fields(Identity) if f.init)

# Field numbers used for the byte-level framing below (see ingest.proto / vectors.proto).
_VECTOR_BATCH_SEQUENCE_TAG = b"\x08"  # field 1, varint
_INGEST_REQUEST_BATCH_TAG = b"\x12"  # field 2, length-delimited

#: Bounds on :func:`identity_table_bytes`' cache: at most this many tables, of at most this many bytes in all
#: (least recently used first out; a table larger than the byte bound is serialised every time).
IDENTITY_TABLES_MAX = 64
IDENTITY_TABLES_MAX_BYTES = 16 << 20
_TABLES: OrderedDict[tuple[Identity, ...], bytes] = OrderedDict()
_TABLES_LOCK = threading.Lock()
_tables_bytes = 0


def identity_table_bytes(identities: Sequence[Identity]) -> bytes:
    """The serialized ``IdentityTable`` of ``identities`` (a batch's distinct identities, in order): the
    columns' ``identity_table``.  The bytes of the last tables are kept (bounded: :data:`IDENTITY_TABLES_MAX`
    tables, :data:`IDENTITY_TABLES_MAX_BYTES` bytes), keyed by the tuple of identities, so the same table
    is serialised once, not every round.

    >>> identity_table_bytes([Identity("n1", "c1", "nginx")]).hex()
    '0a0f0a026e311202633122056e67696e78'
    >>> identity_table_bytes([]) == b""
    True
    """
    global _tables_bytes
    key = tuple(identities)
    with _TABLES_LOCK:
        raw = _TABLES.get(key)
        if raw is not None:
            _TABLES.move_to_end(key)
            return raw
    table = vectors_pb2.IdentityTable()
    add = table.identities.add
    for ident in key:
        add(**{name: getattr(ident, name) for name in _IDENTITY_FIELDS})
    raw = table.SerializeToString()
    if len(raw) <= IDENTITY_TABLES_MAX_BYTES:
        with _TABLES_LOCK:
            if key not in _TABLES:
                _TABLES[key] = raw
                _tables_bytes += len(raw)
                while len(_TABLES) > IDENTITY_TABLES_MAX or _tables_bytes > IDENTITY_TABLES_MAX_BYTES:
                    _, old = _TABLES.popitem(last=False)
                    _tables_bytes -= len(old)
    return raw


def _endpoint(ep: Endpoint, msg: vectors_pb2.Endpoint) -> None:
    msg.address = ep.address
    msg.port = ep.port
    msg.protocol = _PROTOCOL.get(ep.protocol, vectors_pb2.PROTOCOL_UNSPECIFIED)
    msg.direction = vectors_pb2.DIRECTION_OUTBOUND if ep.outbound else vectors_pb2.DIRECTION_INBOUND


def _ngram_entries(vectors: Sequence[FeatureVector]) -> tuple[bytes, list[int]]:
    """``ngram_entry_le32`` of the windows, and how many entries each window has in it.  ``ValueError`` for a
    negative count or a bucket past 17 bits, ``OverflowError`` for a count past int64."""
    grams = [v.ngrams for v in vectors]
    lengths = [len(g) for g in grams]
    total = sum(lengths)
    if not total:
        return b"", lengths
    buckets = np.fromiter(chain.from_iterable(grams), np.int64, total)
    counts = np.fromiter(chain.from_iterable(g.values() for g in grams), np.int64, total)
    raw, entries = ngram_entries.pack(buckets, counts, lengths)
    return raw, entries.tolist()


def to_columns(vectors: Sequence[FeatureVector], sequence: int = 0) -> vectors_pb2.VectorBatch:
    """A ``VectorBatch`` holding ``vectors`` (``sequence`` 0 leaves the field unset).

    ``complete`` and ``container_exited`` are left empty when every window has the default (complete, not
    exited), as the format allows.  ``ValueError`` for what the format cannot carry: more than 65,536
    syscall names in the batch, a negative n-gram count or a bucket past 17 bits.

    >>> v = FeatureVector(Identity("n1", "c1", "nginx"), 100.0, 10.0, {"read": 3}, {7: 2}, execs=1)
    >>> c = to_columns([v], 5).columns
    >>> c.count, len(c.window_f64_le), len(c.window_u32_le), c.ngram_entry_le32.hex(), list(c.complete)
    (1, 168, 24, '07000400', [])
    """
    batch = vectors_pb2.VectorBatch(sequence=sequence, schema_version=SCHEMA_VERSION)
    c = batch.columns
    c.count = len(vectors)
    identities, ident_index = dictionary(v.identity for v in vectors)
    c.identity_table = identity_table_bytes(identities)
    names, name_index = dictionary(name for v in vectors for name in v.syscalls)
    batch.syscall_names.extend(names)
    if name_index:
        counts = [x for v in vectors for x in v.syscalls.values()]
        c.syscall_name_index_le16, c.syscall_count_f64_le = window_columns.pack_syscalls(name_index, counts)
    c.ngram_entry_le32, ngram_lengths = _ngram_entries(vectors)
    c.window_f64_le = window_columns.pack_f64(list(map(_F64_ROW, vectors)))
    c.window_u32_le = window_columns.pack_u32([
        (i, len(v.syscalls), g, len(v.executables), len(v.endpoints), len(v.sensitive_paths))
        for i, g, v in zip(ident_index, ngram_lengths, vectors, strict=True)
    ])
    if not all(v.complete for v in vectors):
        c.complete.extend([v.complete for v in vectors])
    if any(v.container_exited for v in vectors):
        c.container_exited.extend([v.container_exited for v in vectors])
    if any(v.executables for v in vectors):
        c.executables.extend([e for v in vectors for e in v.executables])
    if any(v.endpoints for v in vectors):
        endpoints, ep_index = dictionary(ep for v in vectors for ep in v.endpoints)
        for ep in endpoints:
            _endpoint(ep, c.endpoints.add())
        c.endpoint_index.extend(ep_index)
    if any(v.sensitive_paths for v in vectors):
        c.sensitive_paths.extend([p for v in vectors for p in v.sensitive_paths])
    return batch


def encode_batch_body(vectors: Sequence[FeatureVector]) -> bytes:
    """Serialised ``VectorBatch`` without its sequence number (see :func:`batch_request_bytes`)."""
    return to_columns(vectors).SerializeToString()


def _varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varint must be non-negative")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def batch_request_bytes(sequence: int, body: bytes) -> bytes:
    """A serialised ``IngestRequest{batch}`` for a body from :func:`encode_batch_body`.

    >>> v = FeatureVector(Identity("n1", "c1", "nginx", "1.25"), 100.0, 10.0, syscalls={"read": 3})
    >>> req = ingest_pb2.IngestRequest.FromString(batch_request_bytes(7, encode_batch_body([v])))
    >>> req.batch.sequence, list(req.batch.syscall_names), len(req.batch.columns.syscall_count_f64_le)
    (7, ['read'], 8)
    """
    if sequence <= 0:
        raise ValueError("batch sequence numbers start at 1")
    batch = _VECTOR_BATCH_SEQUENCE_TAG + _varint(sequence) + body
    return _INGEST_REQUEST_BATCH_TAG + _varint(len(batch)) + batch


def hello_request_bytes(sensor_id: str, node: str, sensor_version: str, schema_version: int = SCHEMA_VERSION,
                        shard: str = "") -> bytes:
    """A serialised ``IngestRequest{hello}`` (``shard``: the shard the stream is for, by its name in the map)."""
    hello = ingest_pb2.Hello(
        sensor_id=sensor_id, node=node, sensor_version=sensor_version, schema_version=schema_version, shard=shard
    )
    return ingest_pb2.IngestRequest(hello=hello).SerializeToString()
