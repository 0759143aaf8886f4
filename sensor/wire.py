"""Domain -> protobuf for the sensor: the only sensor module that builds wire messages.

``service/serde.py`` does the reverse on the service side; ``tests/test_sensor_client_wire.py`` checks
that the two agree (encode here, decode there, compare with the original).

Mapping (``baseliner.models.vector.FeatureVector`` -> ``baseliner.v1.FeatureVector``):

* the sensor sends batches as ``VectorColumns`` (:func:`to_columns`, one array per field across the
  batch's windows); :func:`to_batch` writes the one-message-per-window form (tools, tests);
* syscall counts become two packed arrays, indices into the batch's ``syscall_names`` dictionary
  (built per batch in order of first appearance) and counts;
* ``seconds_since_start`` -> ``health.container_age_seconds`` (negative when unknown);
* ``Endpoint.protocol`` ``"tcp"``/``"udp"`` -> ``PROTOCOL_TCP``/``PROTOCOL_UDP``;
  ``Endpoint.outbound`` -> ``DIRECTION_OUTBOUND`` / ``DIRECTION_INBOUND``;
* n-grams: ``ngram_spec`` 2 (``docs/ngram-spec.md`` v2) with parallel bucket/count arrays when the vector has
  any, else 0.  In columns they go as bytes the service reads without parsing a varint per value: when
  every count of the batch is in 1..32767 and every bucket below 2**17, as one little-endian uint32 per
  entry, ``bucket | count << 17`` (``ngram_entry_le32``, 4 bytes per entry: :func:`ngram_entries_le32`);
  otherwise (a count of 0 or above 32767, a bucket out of range: the batch loses nothing) as two
  little-endian uint32 arrays (``ngram_bucket_le32`` / ``ngram_count_le32``, 8 bytes per entry); there a
  count above 2**32 - 1 is sent as 2**32 - 1 (the kernel's counters are 64-bit: saturating keeps the
  batch, where the packed form's ``uint32`` fails to encode it), and a negative count or a bucket outside
  uint32 raises ``OverflowError`` (:func:`ngram_le32`).
  ``to_columns(..., ngram_entries=False)`` writes the pair form, ``ngram_bytes=False`` the packed varint
  form (compatibility tests).  For services that do not read the form a body was encoded in, at send
  time: :func:`pair_ngrams` turns the entry form into the pair form (a service whose ``Welcome`` sets
  ``ngram_bytes`` but not ``ngram_entries``), :func:`packed_ngrams` either bytes form into the packed form
  (a service without ``ngram_bytes``; built before the bytes forms, it would refuse them).
* the batch's distinct identities (its identity table) go as the bytes of an ``IdentityTable`` message
  (``VectorColumns.identity_table``: :func:`identity_table_bytes`, which keeps the bytes of the last tables
  it serialised, so a sensor whose containers stay the same does not serialise the same table every
  round; the service looks the bytes up in its own cache instead of reading every identity);
  ``to_columns(..., identity_table=False)`` writes them as repeated ``Identity`` messages
  (``VectorColumns.identities``), and :func:`repeated_identities` converts a body to that form at send time
  for a service whose ``Welcome`` does not set ``identity_table`` (built before it, it would refuse field
  47).
* the per-window numbers go in the window bytes form (``protos/v1/window_columns.py``): window,
  age and the 17 counters as one little-endian float64 matrix, a row per window (``window_f64_le``, 160
  bytes a window, every column), the identity index and the five list lengths as one uint32 matrix
  (``window_u32_le``, 24 bytes a window), and the syscall entries as uint16 name indices and float64 counts
  (``syscall_name_index_le16`` / ``syscall_count_f64_le``; a batch of more than 65,536 syscall names sends
  its syscall entries in the repeated form): the service reads each with one array copy, where upb spends
  ~5 µs on each repeated field.  ``to_columns(..., window_bytes=False)`` writes the repeated fields, and
  :func:`repeated_windows` converts a body to them at send time for a service whose ``Welcome`` does not set
  ``window_bytes`` (built before fields 48-51, it would refuse them).

The conversions compose: a service built before every bytes form gets
``packed_ngrams(repeated_windows(repeated_identities(body)))``.

Batches are stored and resent as bytes.  :func:`encode_batch_body` serialises everything but the
sequence number; :func:`batch_request_bytes` prepends the sequence number and wraps the batch in an
``IngestRequest`` using plain protobuf wire-format concatenation (a message's fields may come in any
order), so a resend never re-serialises vectors and an on-disk spool can hold the body bytes as they are.
"""

from __future__ import annotations

import sys
import threading
from array import array
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from itertools import chain
from operator import attrgetter

import numpy as np
from baseliner.models.block import COUNTERS, dictionary
from baseliner.models.ngrams import SPEC_VERSION
from baseliner.models.vector import Endpoint, FeatureVector, Identity
from baseliner.protos.v1 import ingest_pb2, ngram_entries, vectors_pb2, window_columns

SCHEMA_VERSION = 1
NGRAM_SPEC = SPEC_VERSION  # docs/ngram-spec.md version (baseliner.models.ngrams.SPEC_VERSION)

_COUNTERS = COUNTERS
# One window's row of window_f64_le (window_columns.F64_COLUMNS, by FeatureVector attribute)
_F64_ROW = attrgetter(*({"container_age_seconds": "seconds_since_start"}.get(name, name)
                        for name in window_columns.F64_COLUMNS))
_PROTOCOL = {"tcp": vectors_pb2.PROTOCOL_TCP, "udp": vectors_pb2.PROTOCOL_UDP}

# Field numbers used for the byte-level framing below (see ingest.proto / vectors.proto).
_VECTOR_BATCH_SEQUENCE_TAG = b"\x08"  # field 1, varint
_INGEST_REQUEST_BATCH_TAG = b"\x12"  # field 2, length-delimited

_U32_MAX = 0xFFFFFFFF
_U32 = next(code for code in "IL" if array(code).itemsize == 4)  # array type of a native uint32


def _le32(a: array) -> bytes:  # type: ignore[type-arg]
    if sys.byteorder != "little":
        a.byteswap()
    return a.tobytes()


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
        _identity(ident, add())
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


def repeated_identities(body: bytes) -> bytes:
    """``body`` (from :func:`encode_batch_body`) with the columns' identity table moved from the bytes form
    (``identity_table``) to repeated ``Identity`` messages (``identities``): what a service that does not set
    ``Welcome.identity_table`` reads.  Composes with :func:`pair_ngrams` and :func:`packed_ngrams` (either
    order).

    A body without the bytes form (one-message batches, a spool written before it) is returned as it is,
    not serialised again.  Table bytes that do not parse, or a table in both forms, raise ``ValueError`` or
    ``google.protobuf.message.DecodeError`` (a malformed body: the service would refuse it too).

    >>> from baseliner.models.vector import FeatureVector, Identity
    >>> body = encode_batch_body([FeatureVector(Identity("n1", "c1", "nginx"), 100.0, 10.0)])
    >>> c = vectors_pb2.VectorBatch.FromString(body).columns
    >>> len(c.identities), c.identity_table.hex()
    (0, '0a0f0a026e311202633122056e67696e78')
    >>> c = vectors_pb2.VectorBatch.FromString(repeated_identities(body)).columns
    >>> [i.container_id for i in c.identities], c.identity_table
    (['c1'], b'')
    >>> repeated_identities(repeated_identities(body)) == repeated_identities(body)
    True
    """
    batch = vectors_pb2.VectorBatch.FromString(body)
    c = batch.columns
    raw = c.identity_table
    if not raw:
        return body
    if len(c.identities):
        raise ValueError("an identity table in both forms")
    table = vectors_pb2.IdentityTable.FromString(raw)
    c.ClearField("identity_table")
    c.identities.extend(table.identities)
    return batch.SerializeToString()


def repeated_windows(body: bytes) -> bytes:
    """``body`` (from :func:`encode_batch_body`) with the columns' per-window numbers and syscall entries
    moved from the window bytes form (``window_f64_le``, ``window_u32_le``, ``syscall_name_index_le16`` /
    ``syscall_count_f64_le``) to the repeated fields, as ``to_columns(..., window_bytes=False)`` writes them
    (a counter or list length that is 0 in every window left out): what a service that does not set
    ``Welcome.window_bytes`` reads.  Composes with the other conversions (any order).

    A body without the bytes form (one-message batches, a spool written before it) is returned as it is,
    not serialised again.  Bytes that are not whole rows or entries, a number of rows other than the
    batch's count, syscall bytes not as many entries in both fields, or a group in both forms raise
    ``ValueError`` (a malformed body: the service would refuse it too).

    >>> from baseliner.models.vector import FeatureVector, Identity
    >>> v = FeatureVector(Identity("n1", "c1", "nginx"), 100.0, 10.0, syscalls={"read": 3}, execs=2)
    >>> body = encode_batch_body([v])
    >>> c = vectors_pb2.VectorBatch.FromString(body).columns
    >>> len(c.window_f64_le), len(c.window_u32_le), list(c.window_start), list(c.syscall_count)
    (160, 24, [], [])
    >>> c = vectors_pb2.VectorBatch.FromString(repeated_windows(body)).columns
    >>> list(c.window_start), list(c.execs), list(c.forks), list(c.syscall_count), c.window_f64_le
    ([100.0], [2.0], [], [3.0], b'')
    >>> repeated_windows(repeated_windows(body)) == repeated_windows(body)
    True
    """
    batch = vectors_pb2.VectorBatch.FromString(body)
    c = batch.columns
    raw_f64, raw_u32 = c.window_f64_le, c.window_u32_le
    raw_index, raw_count = c.syscall_name_index_le16, c.syscall_count_f64_le
    if not (raw_f64 or raw_u32 or raw_index or raw_count):
        return body
    n = c.count
    for raw, field, names, unpack, always in (
        (raw_f64, "window_f64_le", window_columns.F64_COLUMNS, window_columns.unpack_f64,
         window_columns.FIRST_COUNTER),
        (raw_u32, "window_u32_le", window_columns.U32_COLUMNS, window_columns.unpack_u32, 1),
    ):
        if not raw:
            continue
        if any(len(getattr(c, name)) for name in names):
            raise ValueError(f"window columns in {field} and in their repeated fields")
        m = unpack(raw, n)
        c.ClearField(field)
        for j, name in enumerate(names):
            values = m[:, j].tolist()
            if j < always or any(values):  # what to_columns leaves out: 0 in every window
                getattr(c, name).extend(values)
    if raw_index or raw_count:
        if len(c.syscall_name_index) or len(c.syscall_count):
            raise ValueError("syscall entries in syscall_name_index_le16/syscall_count_f64_le and repeated")
        index, counts = window_columns.unpack_syscalls(raw_index, raw_count)
        c.ClearField("syscall_name_index_le16")
        c.ClearField("syscall_count_f64_le")
        c.syscall_name_index.extend(index.tolist())
        c.syscall_count.extend(counts.tolist())
    return batch.SerializeToString()


def ngram_le32(grams: Sequence[Mapping[int, int]]) -> tuple[bytes, bytes]:
    """The n-gram entries of ``grams`` (one mapping per window), window after window, as the columns'
    ``ngram_bucket_le32`` and ``ngram_count_le32``: little-endian uint32 arrays.

    A count above 2**32 - 1 is sent as 2**32 - 1; a negative count, or a bucket outside uint32, raises
    ``OverflowError``.

    >>> [b.hex() for b in ngram_le32([{1: 3}, {}, {258: 2**40}])]
    ['0100000002010000', '03000000ffffffff']
    """
    buckets = array(_U32, chain.from_iterable(grams))
    try:
        counts = array(_U32, chain.from_iterable(g.values() for g in grams))
    except OverflowError:  # rare: a count above 2**32 - 1 (a negative one raises again here)
        counts = array(_U32, [min(x, _U32_MAX) for g in grams for x in g.values()])
    return _le32(buckets), _le32(counts)


def ngram_entries_le32(raw_bucket: bytes, raw_count: bytes) -> bytes | None:
    """The columns' ``ngram_entry_le32`` for entries given in the pair form (from :func:`ngram_le32`): one
    little-endian uint32 per entry, ``bucket | count << 17``; ``None`` when an entry does not fit (a count
    outside 1..32767 or a bucket at or above 2**17: the batch then goes in the pair form).

    >>> ngram_entries_le32(*ngram_le32([{1: 3}, {}, {258: 32767}])).hex()
    '010006000201feff'
    >>> ngram_entries_le32(*ngram_le32([{1: 3}, {258: 32768}])) is None
    True
    """
    buckets = np.frombuffer(raw_bucket, "<u4")
    counts = np.frombuffer(raw_count, "<u4")
    if len(buckets) != len(counts):
        raise ValueError(f"{len(buckets)} buckets but {len(counts)} counts")
    return ngram_entries.pack(buckets, counts)


def _from_le32(raw: bytes) -> array:  # type: ignore[type-arg]
    a = array(_U32)
    a.frombytes(raw)  # ValueError when not whole 4-byte entries
    if sys.byteorder != "little":
        a.byteswap()
    return a


def pair_ngrams(body: bytes) -> bytes:
    """``body`` (from :func:`encode_batch_body`) with the columns' n-gram entries moved from the entry
    form (``ngram_entry_le32``) to the le32 pair form (``ngram_bucket_le32`` / ``ngram_count_le32``): what a
    service that sets ``Welcome.ngram_bytes`` but not ``Welcome.ngram_entries`` reads.

    A body without the entry form (no n-grams, the pair or packed form, one-message batches) is returned
    as it is, not serialised again.  Entry bytes that are not whole entries, an entry with count 0, or
    n-grams in two forms raise ``ValueError`` (a malformed body: the service would refuse it too).

    >>> from baseliner.models.vector import FeatureVector, Identity
    >>> v = FeatureVector(Identity("n1", "c1", "nginx"), 100.0, 10.0, ngrams={7: 2, 300: 32767})
    >>> body = encode_batch_body([v])
    >>> vectors_pb2.VectorBatch.FromString(body).columns.ngram_entry_le32.hex()
    '070004002c01feff'
    >>> c = vectors_pb2.VectorBatch.FromString(pair_ngrams(body)).columns
    >>> c.ngram_bucket_le32.hex(), c.ngram_count_le32.hex(), c.ngram_entry_le32
    ('070000002c010000', '02000000ff7f0000', b'')
    """
    batch = vectors_pb2.VectorBatch.FromString(body)
    c = batch.columns
    raw_entry = c.ngram_entry_le32
    if not raw_entry:
        return body
    if c.ngram_bucket_le32 or c.ngram_count_le32 or len(c.ngram_bucket) or len(c.ngram_count):
        raise ValueError("n-grams in the entry form and another")
    buckets, counts = ngram_entries.unpack(raw_entry)
    c.ClearField("ngram_entry_le32")
    c.ngram_bucket_le32 = buckets.astype("<u4", copy=False).tobytes()
    c.ngram_count_le32 = counts.astype("<u4", copy=False).tobytes()
    return batch.SerializeToString()


def packed_ngrams(body: bytes) -> bytes:
    """``body`` (from :func:`encode_batch_body`) with the columns' n-gram entries moved from either bytes
    form (``ngram_entry_le32``, or ``ngram_bucket_le32`` / ``ngram_count_le32``) to the packed varint form
    (``ngram_bucket`` / ``ngram_count``): what a service that does not set ``Welcome.ngram_bytes`` reads.

    A body without a bytes form (no n-grams, one-message batches, a spool written before them) is returned
    as it is, not serialised again.  Bytes that are not whole entries, pair bytes not as many in both
    fields, an entry with count 0, or n-grams in two forms raise ``ValueError`` (a malformed body: the
    service would refuse it too).

    >>> from baseliner.models.vector import FeatureVector, Identity
    >>> v = FeatureVector(Identity("n1", "c1", "nginx"), 100.0, 10.0, ngrams={7: 2, 300: 2**32 - 1})
    >>> c = vectors_pb2.VectorBatch.FromString(packed_ngrams(encode_batch_body([v]))).columns
    >>> list(c.ngram_bucket), list(c.ngram_count), c.ngram_bucket_le32
    ([7, 300], [2, 4294967295], b'')
    >>> v.ngrams = {7: 2, 300: 3}  # the entry form
    >>> c = vectors_pb2.VectorBatch.FromString(packed_ngrams(encode_batch_body([v]))).columns
    >>> list(c.ngram_bucket), list(c.ngram_count), c.ngram_entry_le32
    ([7, 300], [2, 3], b'')
    >>> plain = encode_batch_body([FeatureVector(Identity("n1", "c1", "nginx"), 100.0, 10.0)])
    >>> packed_ngrams(plain) is plain
    True
    """
    batch = vectors_pb2.VectorBatch.FromString(body)
    c = batch.columns
    raw_entry, raw_bucket, raw_count = c.ngram_entry_le32, c.ngram_bucket_le32, c.ngram_count_le32
    if not raw_entry and not raw_bucket and not raw_count:
        return body
    if len(c.ngram_bucket) or len(c.ngram_count) or (raw_entry and (raw_bucket or raw_count)):
        raise ValueError("n-grams in two forms")
    if raw_entry:
        e_buckets, e_counts = ngram_entries.unpack(raw_entry)
        bucket_list, count_list = e_buckets.tolist(), e_counts.tolist()
        c.ClearField("ngram_entry_le32")
    else:
        buckets, counts = _from_le32(raw_bucket), _from_le32(raw_count)
        if len(buckets) != len(counts):
            raise ValueError(f"ngram_bucket_le32 has {len(buckets)} entries but ngram_count_le32 {len(counts)}")
        bucket_list, count_list = buckets.tolist(), counts.tolist()
        c.ClearField("ngram_bucket_le32")
        c.ClearField("ngram_count_le32")
    c.ngram_bucket.extend(bucket_list)
    c.ngram_count.extend(count_list)
    return batch.SerializeToString()


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


def _endpoint(ep: Endpoint, msg: vectors_pb2.Endpoint) -> None:
    msg.address = ep.address
    msg.port = ep.port
    msg.protocol = _PROTOCOL.get(ep.protocol, vectors_pb2.PROTOCOL_UNSPECIFIED)
    msg.direction = vectors_pb2.DIRECTION_OUTBOUND if ep.outbound else vectors_pb2.DIRECTION_INBOUND


def _identity(ident: Identity, i: vectors_pb2.Identity) -> None:
    i.node = ident.node
    i.container_id = ident.container_id
    i.container_name = ident.container_name
    i.image_repository = ident.image_repository
    i.image_tag = ident.image_tag
    i.image_digest = ident.image_digest
    i.pod = ident.pod
    i.namespace = ident.namespace


def fill_vector(v: FeatureVector, msg: vectors_pb2.FeatureVector, names: dict[str, int]) -> None:
    """Write one domain vector into ``msg``; ``names`` is the batch's syscall dictionary (extended)."""
    _identity(v.identity, msg.identity)
    msg.window_start = v.window_start
    msg.window_seconds = v.window_seconds
    if v.syscalls:
        idx = []
        for name in v.syscalls:
            j = names.get(name)
            if j is None:
                j = names[name] = len(names)
            idx.append(j)
        msg.syscall_name_index.extend(idx)
        msg.syscall_count.extend(list(v.syscalls.values()))
    p = msg.process
    p.execs = v.execs
    p.forks = v.forks
    p.exits = v.exits
    p.executables.extend(v.executables)
    n = msg.network
    n.connects = v.connects
    n.connects_failed = v.connects_failed
    n.accepts = v.accepts
    n.listens = v.listens
    n.bytes_sent = v.bytes_sent
    n.bytes_received = v.bytes_received
    n.packets_sent = v.packets_sent
    n.packets_received = v.packets_received
    n.remote_addresses = v.remote_addresses
    n.remote_ports = v.remote_ports
    n.dns_queries = v.dns_queries
    for ep in v.endpoints:
        _endpoint(ep, n.endpoints.add())
    f = msg.file
    f.write_opens = v.write_opens
    f.sensitive_writes = v.sensitive_writes
    f.sensitive_paths.extend(v.sensitive_paths)
    h = msg.health
    h.events_lost = v.events_lost
    h.complete = v.complete
    h.container_exited = v.container_exited
    h.container_age_seconds = v.seconds_since_start
    ng = v.ngrams
    if ng:
        msg.ngram_spec = NGRAM_SPEC
        msg.ngram_bucket.extend(list(ng.keys()))
        msg.ngram_count.extend(list(ng.values()))


def to_batch(vectors: Sequence[FeatureVector], sequence: int = 0) -> vectors_pb2.VectorBatch:
    """A ``VectorBatch`` message holding ``vectors`` (``sequence`` 0 leaves the field unset)."""
    batch = vectors_pb2.VectorBatch(sequence=sequence, schema_version=SCHEMA_VERSION)
    names: dict[str, int] = {}
    for v in vectors:
        fill_vector(v, batch.vectors.add(), names)
    batch.syscall_names.extend(names)  # dicts keep insertion order: index == position
    return batch


def to_columns(
    vectors: Sequence[FeatureVector], sequence: int = 0, ngram_bytes: bool = True, ngram_entries: bool = True,
    identity_table: bool = True, window_bytes: bool = True,
) -> vectors_pb2.VectorBatch:
    """A ``VectorBatch`` holding ``vectors`` as ``VectorColumns`` (what the sensor sends).

    The per-window numbers and the syscall entries go in the window bytes form (``window_f64_le``,
    ``window_u32_le``, ``syscall_name_index_le16`` / ``syscall_count_f64_le``: ``window_columns``), the
    syscall entries in the repeated form when the batch has more than 65,536 syscall names; with
    ``window_bytes=False`` as repeated fields (the form older sensors send).  Repeated per-window arrays
    that hold only their default (no executables this batch, every window complete ...) are left empty, as
    the format allows.  The identity table goes as the bytes of an
    ``IdentityTable`` (:func:`identity_table_bytes`); with ``identity_table=False`` as repeated ``Identity``
    messages (the form older sensors send).  N-gram entries go in the entry form when the whole batch
    fits it (every count in 1..32767, every bucket below 2**17), else as the le32 pair; with
    ``ngram_entries=False`` always as the pair, with ``ngram_bytes=False`` as packed varints (the form older
    sensors send).
    """
    batch = vectors_pb2.VectorBatch(sequence=sequence, schema_version=SCHEMA_VERSION)
    c = batch.columns
    c.count = len(vectors)
    identities, ident_index = dictionary(v.identity for v in vectors)
    if identity_table:
        c.identity_table = identity_table_bytes(identities)
    else:
        for ident in identities:
            _identity(ident, c.identities.add())
    if window_bytes:
        c.window_f64_le = window_columns.pack_f64(list(map(_F64_ROW, vectors)))
        c.window_u32_le = window_columns.pack_u32([
            (i, len(v.syscalls), len(v.ngrams), len(v.executables), len(v.endpoints), len(v.sensitive_paths))
            for i, v in zip(ident_index, vectors, strict=True)
        ])
    else:
        c.identity.extend(ident_index)
        c.window_start.extend([v.window_start for v in vectors])
        c.window_seconds.extend([v.window_seconds for v in vectors])
        for name in _COUNTERS:
            values = [getattr(v, name) for v in vectors]
            if any(values):
                getattr(c, name).extend(values)
        c.container_age_seconds.extend([v.seconds_since_start for v in vectors])
    if not all(v.complete for v in vectors):
        c.complete.extend([v.complete for v in vectors])
    if any(v.container_exited for v in vectors):
        c.container_exited.extend([v.container_exited for v in vectors])
    names, idx = dictionary(name for v in vectors for name in v.syscalls)
    if idx:
        counts = [x for v in vectors for x in v.syscalls.values()]
        syscall_entries = window_columns.pack_syscalls(idx, counts) if window_bytes else None
        if syscall_entries is not None:
            c.syscall_name_index_le16, c.syscall_count_f64_le = syscall_entries
        else:
            if not window_bytes:
                c.syscall_lengths.extend([len(v.syscalls) for v in vectors])
            c.syscall_name_index.extend(idx)
            c.syscall_count.extend(counts)
    batch.syscall_names.extend(names)
    if any(v.ngrams for v in vectors):
        c.ngram_spec = NGRAM_SPEC
        if not window_bytes:
            c.ngram_lengths.extend([len(v.ngrams) for v in vectors])
        grams = [v.ngrams for v in vectors]
        if ngram_bytes:
            raw_bucket, raw_count = ngram_le32(grams)
            entries = ngram_entries_le32(raw_bucket, raw_count) if ngram_entries else None
            if entries is not None:
                c.ngram_entry_le32 = entries
            else:
                c.ngram_bucket_le32, c.ngram_count_le32 = raw_bucket, raw_count
        else:
            c.ngram_bucket.extend(chain.from_iterable(grams))
            c.ngram_count.extend(chain.from_iterable(g.values() for g in grams))
    if any(v.executables for v in vectors):
        if not window_bytes:
            c.executable_lengths.extend([len(v.executables) for v in vectors])
        c.executables.extend([e for v in vectors for e in v.executables])
    if any(v.endpoints for v in vectors):
        endpoints, ep_index = dictionary(ep for v in vectors for ep in v.endpoints)
        for ep in endpoints:
            _endpoint(ep, c.endpoints.add())
        if not window_bytes:
            c.endpoint_lengths.extend([len(v.endpoints) for v in vectors])
        c.endpoint_index.extend(ep_index)
    if any(v.sensitive_paths for v in vectors):
        if not window_bytes:
            c.sensitive_path_lengths.extend([len(v.sensitive_paths) for v in vectors])
        c.sensitive_paths.extend([p for v in vectors for p in v.sensitive_paths])
    return batch


def encode_batch_body(vectors: Sequence[FeatureVector]) -> bytes:
    """Serialised ``VectorBatch`` (as columns) without its sequence number (see :func:`batch_request_bytes`)."""
    return to_columns(vectors).SerializeToString()


def batch_request_bytes(sequence: int, body: bytes) -> bytes:
    """A serialised ``IngestRequest{batch}`` for a body from :func:`encode_batch_body`.

    >>> from baseliner.models.vector import FeatureVector, Identity
    >>> v = FeatureVector(Identity("n1", "c1", "nginx", "1.25"), 100.0, 10.0, syscalls={"read": 3})
    >>> req = ingest_pb2.IngestRequest.FromString(batch_request_bytes(7, encode_batch_body([v])))
    >>> req.batch.sequence, list(req.batch.syscall_names), len(req.batch.columns.syscall_count_f64_le)
    (7, ['read'], 8)
    """
    if sequence <= 0:
        raise ValueError("batch sequence numbers start at 1")
    batch = _VECTOR_BATCH_SEQUENCE_TAG + _varint(sequence) + body
    return _INGEST_REQUEST_BATCH_TAG + _varint(len(batch)) + batch


def hello_request_bytes(sensor_id: str, node: str, sensor_version: str) -> bytes:
    """A serialised ``IngestRequest{hello}``."""
    hello = ingest_pb2.Hello(
        sensor_id=sensor_id, node=node, sensor_version=sensor_version, schema_version=SCHEMA_VERSION
    )
    return ingest_pb2.IngestRequest(hello=hello).SerializeToString()
