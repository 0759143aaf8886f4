"""The one place where protobuf meets the domain: wire messages <-> ``models`` objects.

Only this module (and the generated code) knows the wire format on the service side.  It does the
*wire-level* checks (schema version, batch size, fields unknown to the schema version at batch and
vector level, references into the batch's syscall-name dictionary, parallel arrays of equal length,
enum values) and raises :class:`baseliner.models.errors.ValidationError` with the protocol's ``RejectReason``
names; *domain* checks (finite, non-negative, plausible window, sane image names) are
``baseliner.models.validate``'s job.

Decoding is written for throughput: one pass over the batch, attribute reads hoisted into locals,
interned :class:`~baseliner.models.vector.Identity` objects (a container sends the same identity every window),
no per-vector allocation beyond the :class:`~baseliner.models.vector.FeatureVector` itself.

The opposite direction (domain -> wire) is the sensor's: ``sensor/wire.py``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from baseliner.models.block import COUNTERS, VectorBlock, lengths_to_ptr, row_ids
from baseliner.models.errors import ValidationError
from baseliner.models.ngrams import SPEC_NUM_BUCKETS
from baseliner.models.vector import MAX_SYSCALL_NAMES, Endpoint, FeatureVector, Identity
from baseliner.protos.v1 import admin_pb2, ingest_pb2, ngram_entries, vectors_pb2, window_columns
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

#: The wire schema versions this build decodes.
SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = frozenset({SCHEMA_VERSION})
#: n-gram spec versions this build understands (0 = the vector carries no n-grams).  Version 1 (orders 2-4)
#: is version 2 (orders 2-4 and 6) without the order-6 buckets, so a v1 vector is taken as it is.
SUPPORTED_NGRAM_SPECS = frozenset({0, *SPEC_NUM_BUCKETS})
_V1_BUCKETS = SPEC_NUM_BUCKETS[1]
#: Default bound on vectors per batch (also announced in Welcome.max_batch_vectors).
DEFAULT_MAX_BATCH_VECTORS = 10_000
#: Bound on the batch's syscall-name dictionary.
MAX_BATCH_SYSCALL_NAMES = 4 * MAX_SYSCALL_NAMES

_PROTOCOLS = {vectors_pb2.PROTOCOL_TCP: "tcp", vectors_pb2.PROTOCOL_UDP: "udp"}
_SERIALIZE_IDENTITY = vectors_pb2.Identity.SerializeToString
_IDENTITY_CACHE_MAX = 100_000
#: Bounds on the cache of identity tables sent as bytes (``VectorColumns.identity_table``): at most this many
#: tables, and at most this many bytes of them (the keys; the lists hold references to cached identities).
#: The least recently used table goes first; a table larger than the byte bound is decoded but not kept.
IDENTITY_TABLES_MAX = 256
IDENTITY_TABLES_MAX_BYTES = 64 << 20
#: How many recently returned identity lists (either form) a new list is compared with, to hand out the
#: earlier list object when the table is the same.
RECENT_IDENTITY_LISTS_MAX = 256
_PARSE_IDENTITY_TABLE = vectors_pb2.IdentityTable.FromString
#: window_u32_le's column of each per-window array it replaces
_U32_COLUMN = {name: j for j, name in enumerate(window_columns.U32_COLUMNS)}

Decoded = list[tuple[int, FeatureVector | ValidationError]]
#: A decoded batch: the windows that decoded, as a block, and a rejection for each window that did not.
DecodedBlock = tuple[VectorBlock, list[ValidationError]]


def reject_reason_value(reason: str) -> Any:
    """``"NOT_FINITE"`` -> ``RejectReason.REJECT_REASON_NOT_FINITE`` (UNSPECIFIED when unknown)."""
    try:
        return ingest_pb2.RejectReason.Value(f"REJECT_REASON_{reason}")
    except ValueError:
        return ingest_pb2.REJECT_REASON_UNSPECIFIED


#: Every reject reason the protocol names, without the prefix (metrics pre-create these series).
REJECT_REASONS: tuple[str, ...] = tuple(
    name.removeprefix("REJECT_REASON_")
    for name in ingest_pb2.RejectReason.keys()
    if name != "REJECT_REASON_UNSPECIFIED"
)


@dataclass(slots=True)
class Incoming:
    """A received ``IngestRequest``, and the bytes of its batch as they came (for the write-ahead log)."""

    message: ingest_pb2.IngestRequest
    batch_bytes: memoryview | None = None  # None: not a batch, or not framed as one field (re-serialise)


_BATCH_FIELD_TAG = 0x12  # IngestRequest.batch: field 2, length-delimited


def parse_request(raw: bytes) -> Incoming:
    """gRPC's request deserializer for ``Ingest.Stream``: the parsed message plus a view of the batch's own
    bytes, so that logging a batch does not serialise it again (a copy of the whole batch per message).

    >>> from sensor import wire
    >>> raw = wire.batch_request_bytes(7, b"")
    >>> got = parse_request(raw)
    >>> got.message.batch.sequence, bytes(got.batch_bytes) == got.message.batch.SerializeToString()
    (7, True)
    >>> parse_request(wire.hello_request_bytes("s", "n", "v")).batch_bytes is None
    True
    """
    msg = ingest_pb2.IngestRequest.FromString(raw)
    view = None
    if len(raw) > 1 and raw[0] == _BATCH_FIELD_TAG:  # one field, the batch: its bytes follow the length
        length = shift = 0
        pos = 1
        while pos < len(raw) and pos <= 10:
            b = raw[pos]
            length |= (b & 0x7F) << shift
            pos += 1
            if not b & 0x80:
                if pos + length == len(raw):
                    view = memoryview(raw)[pos:]
                break
            shift += 7
    return Incoming(msg, view)


@dataclass(slots=True)
class BatchHeader:
    sequence: int
    schema_version: int
    size: int


class Decoder:
    """Decodes :class:`VectorBatch` messages into domain vectors, batch by batch.

    Holds a bounded cache of :class:`Identity` objects so that the identity of a container is built
    once, not once per window, and one of identity tables (a batch's distinct identities, the block's
    ``identities``): a sensor sends the same table round after round.

    **Identity tables are shared, stable objects.**  The same table returns the *same* ``list`` object
    (``is``) batch after batch, so that callers may memoise per table on the list's identity (validation,
    the pipeline's identity lookups): the bytes form (``VectorColumns.identity_table``) through a cache
    keyed by the table's bytes (at most :data:`IDENTITY_TABLES_MAX` tables and
    :data:`IDENTITY_TABLES_MAX_BYTES` bytes, least recently used first out), and either form by comparing a
    new list with the :data:`RECENT_IDENTITY_LISTS_MAX` lists returned last (element by element, ``is``
    first: one C-level comparison; an equal list of the same length hands out the earlier list).  A
    different table gives a different list.  **Callers must not mutate these lists** (nor a block's
    ``identities``, which is one of them): a later batch, or another sensor's, gets the same object.  A
    list evicted from both caches is no longer handed out; its ``id()`` may then be reused by a new
    object, so a memo keyed on ``id()`` must keep a reference to the list it was computed for.
    """

    def __init__(self, max_batch_vectors: int = DEFAULT_MAX_BATCH_VECTORS) -> None:
        if max_batch_vectors < 1:
            raise ValueError("max_batch_vectors must be >= 1")
        self.max_batch_vectors = max_batch_vectors
        self._identities: dict[bytes, Identity] = {}
        self._endpoints: dict[bytes, Endpoint] = {}
        self._tables: OrderedDict[bytes, list[Identity]] = OrderedDict()  # identity_table bytes -> table
        self._table_bytes = 0  # total length of self._tables' keys
        # (length, id of the first and of the last identity) -> a list returned lately; the list keeps its
        # identities alive, so their ids are not reused while it is here
        self._recent: OrderedDict[tuple[int, int, int], list[Identity]] = OrderedDict()

    def check_batch(self, batch: vectors_pb2.VectorBatch) -> BatchHeader:
        """Batch-level checks; raise :class:`ValidationError` when the whole batch must be refused."""
        header = BatchHeader(batch.sequence, batch.schema_version, batch_size(batch))
        if batch.vectors and batch.HasField("columns"):
            raise ValidationError("BAD_REFERENCE", "a batch carries its windows as vectors or as columns, not both")
        if header.schema_version not in SUPPORTED_SCHEMA_VERSIONS:
            raise ValidationError(
                "UNSUPPORTED_VERSION",
                f"schema_version {header.schema_version} is not supported "
                f"(this service reads {sorted(SUPPORTED_SCHEMA_VERSIONS)})",
            )
        if header.size > self.max_batch_vectors:
            raise ValidationError(
                "TOO_LARGE", f"batch of {header.size} vectors exceeds the limit of {self.max_batch_vectors}"
            )
        for msg, what in ((batch, "batch"), (batch.columns, "columns")):
            unknown = UnknownFieldSet(msg)
            if len(unknown):
                raise ValidationError(
                    "UNSUPPORTED_VERSION",
                    f"{what} carries field {unknown[0].field_number}, unknown to schema version "
                    f"{header.schema_version}; new fields come with a new schema version",
                )
        if len(batch.syscall_names) > MAX_BATCH_SYSCALL_NAMES:
            raise ValidationError(
                "TOO_LARGE",
                f"syscall_names has {len(batch.syscall_names)} entries (max {MAX_BATCH_SYSCALL_NAMES})",
            )
        return header

    def identity(self, msg: vectors_pb2.Identity) -> Identity:
        # Keyed by the identity's wire bytes: one C call instead of eight field reads.  A sender that
        # orders fields differently only costs a cache miss.
        raw = msg.SerializeToString()
        ident = self._identities.get(raw)
        if ident is None:
            if len(self._identities) >= _IDENTITY_CACHE_MAX:
                self._identities.clear()
            ident = Identity(
                msg.node, msg.container_id, msg.image_repository, msg.image_tag, msg.image_digest,
                msg.container_name, msg.pod, msg.namespace,
            )
            self._identities[raw] = ident
        return ident

    def identities(self, msgs: Sequence[vectors_pb2.Identity]) -> list[Identity]:
        """:meth:`identity` of each message (a batch's identity table: a C-level pass for the known ones), as a
        new list; :meth:`identity_table` hands out shared, stable lists."""
        # map() over the unbound method: a bound-method lookup on each upb message costs more than the
        # serialisation itself
        found: list[Identity | None] = list(map(self._identities.get, map(_SERIALIZE_IDENTITY, msgs)))
        for j, ident in enumerate(found):
            if ident is None:
                found[j] = self.identity(msgs[j])
        return found  # type: ignore[return-value]  # no None left

    def identity_table(self, c: vectors_pb2.VectorColumns) -> list[Identity]:
        """The columns' identity table, from whichever form the batch uses: a shared list (see the class
        docstring: the same table gives the same list object; do not mutate it).

        The bytes form (``identity_table``) costs a dictionary lookup of its bytes when the table was seen
        lately, else a parse (``IdentityTable``) and :meth:`identities`; the repeated form costs
        :meth:`identities` every time.  Raises :class:`ValidationError` for a batch with both forms, bytes
        that do not parse as an ``IdentityTable``, or a table with a field unknown to schema version 1.
        """
        return self._identity_table(c.identity_table, c.identities)

    def _identity_table(self, raw: bytes, identities: Sequence[vectors_pb2.Identity]) -> list[Identity]:
        """:meth:`identity_table` of the columns' ``identity_table`` bytes and ``identities``."""
        if not raw:
            return self._stable(self.identities(identities))
        if len(identities):
            raise ValidationError(
                "BAD_REFERENCE",
                "identities sent both as identity_table and as repeated identities (a batch uses one form)",
            )
        tables = self._tables
        found = tables.get(raw)
        if found is not None:
            tables.move_to_end(raw)
            return found
        try:
            table = _PARSE_IDENTITY_TABLE(raw)
        except DecodeError as e:
            raise ValidationError(
                "BAD_REFERENCE", f"columns.identity_table ({len(raw)} bytes) is not a serialized IdentityTable: {e}"
            ) from None
        unknown = UnknownFieldSet(table)
        if len(unknown):
            raise ValidationError(
                "UNSUPPORTED_VERSION",
                f"columns.identity_table carries field {unknown[0].field_number}, unknown to schema version "
                f"{SCHEMA_VERSION}",
            )
        found = self._stable(self.identities(table.identities))
        if len(raw) <= IDENTITY_TABLES_MAX_BYTES:
            tables[raw] = found
            self._table_bytes += len(raw)
            while len(tables) > IDENTITY_TABLES_MAX or self._table_bytes > IDENTITY_TABLES_MAX_BYTES:
                old, _ = tables.popitem(last=False)
                self._table_bytes -= len(old)
        return found

    def _stable(self, found: list[Identity]) -> list[Identity]:
        """``found``, or an equal list returned lately (the same table as the same object)."""
        key = (len(found), id(found[0]), id(found[-1])) if found else (0, 0, 0)
        recent = self._recent
        earlier = recent.get(key)
        if earlier is not None and earlier == found:  # element by element, `is` first (C level)
            recent.move_to_end(key)
            return earlier
        recent[key] = found
        recent.move_to_end(key)
        if len(recent) > RECENT_IDENTITY_LISTS_MAX:
            recent.popitem(last=False)
        return found

    def endpoint(self, msg: vectors_pb2.Endpoint) -> Endpoint:
        raw = msg.SerializeToString()
        ep = self._endpoints.get(raw)
        if ep is None:
            ep = _endpoint(msg)  # raises for bad enums: never cached
            if len(self._endpoints) >= _IDENTITY_CACHE_MAX:
                self._endpoints.clear()
            self._endpoints[raw] = ep
        return ep

    def decode_block(self, batch: vectors_pb2.VectorBatch) -> DecodedBlock:
        """The batch as a :class:`VectorBlock` of the windows that decoded, and rejections of the others.

        Columns decode straight into the block; one-message-per-window batches go through
        :meth:`decode`.  Raises :class:`ValidationError` when columns do not fit together (the batch
        is then refused as a whole).  Call :meth:`check_batch` first.
        """
        if batch.HasField("columns"):
            return self._decode_columns(batch)
        good: list[FeatureVector] = []
        index: list[int] = []
        errors: list[ValidationError] = []
        for i, item in self.decode(batch):
            if isinstance(item, ValidationError):
                errors.append(item)
            else:
                good.append(item)
                index.append(i)
        return VectorBlock.from_vectors(good, index), errors

    def _decode_columns(self, batch: vectors_pb2.VectorBatch) -> DecodedBlock:
        c = batch.columns
        n = c.count  # bounded by check_batch
        # The fields the columns carry, in one C call: reading a field costs upb ~0.4 µs even when it is
        # absent, and VectorColumns has ~50 (ListFields leaves out empty ones).
        fields: dict[str, Any] = {f.name: v for f, v in c.ListFields()}
        get = fields.get
        # the window bytes form (window_columns), group by group; None: the repeated fields
        f64 = _window_matrix(fields, n, "window_f64_le", window_columns.F64_COLUMNS, window_columns.unpack_f64)
        u32 = _window_matrix(fields, n, "window_u32_le", window_columns.U32_COLUMNS, window_columns.unpack_u32)

        def column(name: str, dtype: Any, default: Any, required: bool = False) -> np.ndarray:
            values = get(name, ())
            m = len(values)
            if m == n:
                return np.array(values, dtype)
            if m == 0 and not required:
                return np.full(n, default, dtype)
            raise ValidationError("BAD_REFERENCE" if m else "MISSING_FIELD",
                                  f"columns.{name} has {m} values for {n} windows")

        if u32 is not None:  # every list's pointer array at once: one cumulative sum, not five
            lengths = np.zeros((len(window_columns.U32_COLUMNS), n + 1), dtype=np.int64)
            lengths[:, 1:] = u32.T
            u32_ptrs = np.add.accumulate(lengths, axis=1)  # row j: column j's pointer array (CSR)
            u32_totals = u32_ptrs[:, -1].tolist()

        def lists(lengths_name: str, flat_len: int) -> np.ndarray:
            if u32 is not None:
                j = _U32_COLUMN[lengths_name]
                if u32_totals[j] != flat_len:
                    raise ValidationError(
                        "BAD_REFERENCE",
                        f"columns.window_u32_le's {lengths_name} adds up to {u32_totals[j]} "
                        f"but the list has {flat_len}",
                    )
                return u32_ptrs[j]
            if flat_len == 0 and lengths_name not in fields:  # (an empty list in every window)
                return np.zeros(n + 1, dtype=np.int64)
            ptr = lengths_to_ptr(column(lengths_name, np.int64, 0), n)
            if ptr[-1] != flat_len:
                raise ValidationError(
                    "BAD_REFERENCE", f"columns.{lengths_name} adds up to {int(ptr[-1])} but the list has {flat_len}"
                )
            return ptr

        identities = self._identity_table(get("identity_table", b""), get("identities", ()))
        if u32 is not None:
            ident = u32[:, 0].astype(np.int64)
        else:
            ident = column("identity", np.int64, 0, required=True)
        if n and (not identities or int(ident.max()) >= len(identities)):
            raise ValidationError("BAD_REFERENCE", f"columns.identity refers past the {len(identities)} identities")
        if f64 is not None:  # copies: contiguous, writable, native arrays, as the repeated form gives
            window_start = f64[:, 0].astype(np.float64)
            window_seconds = f64[:, 1].astype(np.float64)
            age = f64[:, 2].astype(np.float64)
            counters = f64[:, window_columns.FIRST_COUNTER:].astype(np.float64)
        else:
            window_start = column("window_start", np.float64, 0.0, required=True)
            window_seconds = column("window_seconds", np.float64, 0.0, required=True)
            age = column("container_age_seconds", np.float64, -1.0)
            counters = np.zeros((n, len(COUNTERS)), dtype=np.float64)
            for j, name in enumerate(COUNTERS):
                if name in fields:  # (a counter that is 0 in every window is left out)
                    counters[:, j] = column(name, np.float64, 0.0)
        names = list(batch.syscall_names)
        sc_name, sc_count = _syscall_entries(fields)
        if len(sc_name) and int(sc_name.max()) >= len(names):
            raise ValidationError(
                "BAD_REFERENCE", f"syscall_name_index {int(sc_name.max())} is outside the batch's {len(names)} names"
            )
        sc_ptr = lists("syscall_lengths", len(sc_name))
        ng_bucket, ng_count = _ngram_entries(fields)
        if len(ng_bucket) != len(ng_count):
            raise ValidationError(
                "BAD_REFERENCE", f"ngram_bucket has {len(ng_bucket)} entries but ngram_count {len(ng_count)}"
            )
        ngram_spec = get("ngram_spec", 0)
        if ngram_spec not in SUPPORTED_NGRAM_SPECS:
            raise ValidationError("UNSUPPORTED_VERSION", f"ngram_spec {ngram_spec} is not supported")
        if ngram_spec == 0 and len(ng_bucket):
            raise ValidationError("BAD_REFERENCE", "n-gram counts sent with ngram_spec 0")
        if ngram_spec == 1 and len(ng_bucket) and int(ng_bucket.max()) >= _V1_BUCKETS:
            raise ValidationError("BAD_REFERENCE", f"n-gram bucket outside spec v1's [0, {_V1_BUCKETS})")
        ng_ptr = lists("ngram_lengths", len(ng_bucket))
        executables = list(get("executables", ()))
        exe_ptr = lists("executable_lengths", len(executables))
        paths = list(get("sensitive_paths", ()))
        path_ptr = lists("sensitive_path_lengths", len(paths))
        ep_index = np.array(get("endpoint_index", ()), np.int64)
        ep_ptr = lists("endpoint_lengths", len(ep_index))
        endpoints: list[Endpoint] = []
        bad_endpoints: dict[int, ValidationError] = {}
        for j, e in enumerate(get("endpoints", ())):
            try:
                endpoints.append(self.endpoint(e))
            except ValidationError as err:
                bad_endpoints[j] = err
                endpoints.append(Endpoint("", 0))
        if len(ep_index) and int(ep_index.max()) >= len(endpoints):
            raise ValidationError("BAD_REFERENCE", f"endpoint_index refers past the {len(endpoints)} endpoints")
        block = VectorBlock(
            identities=identities,
            ident=ident,
            index=np.arange(n, dtype=np.int64),
            window_start=window_start,
            window_seconds=window_seconds,
            counters=counters,
            complete=column("complete", bool, True),
            container_exited=column("container_exited", bool, False),
            age=age,
            syscall_names=names,
            sc_ptr=sc_ptr,
            sc_name=sc_name,
            sc_count=sc_count,
            ng_ptr=ng_ptr,
            ng_bucket=ng_bucket,
            ng_count=ng_count,
            exe_ptr=exe_ptr,
            executables=executables,
            ep_ptr=ep_ptr,
            ep_index=ep_index,
            endpoints=endpoints,
            path_ptr=path_ptr,
            sensitive_paths=paths,
        )
        if not bad_endpoints:
            return block, []
        # Windows that name an endpoint the decoder refused are rejected with its reason; the rest go on.
        flag = np.zeros(len(endpoints), dtype=bool)
        flag[list(bad_endpoints)] = True
        hit = flag[ep_index]
        errors: dict[int, ValidationError] = {}
        for r, j in zip(row_ids(ep_ptr)[hit].tolist(), ep_index[hit].tolist(), strict=True):
            if r not in errors:
                why = bad_endpoints[j]
                errors[r] = ValidationError(why.reason, why.message, r)
        keep = np.ones(n, dtype=bool)
        keep[list(errors)] = False
        return block.take(np.flatnonzero(keep)), [errors[r] for r in sorted(errors)]

    def decode(self, batch: vectors_pb2.VectorBatch) -> Decoded:
        """``(index, FeatureVector)`` for good vectors, ``(index, ValidationError)`` for bad ones.

        Call :meth:`check_batch` first (it raises for a batch that is refused as a whole).  A batch of
        columns is decoded as a block and handed out window by window (it raises when its columns do
        not fit together).
        """
        if batch.HasField("columns"):
            block, errors = self._decode_columns(batch)
            items: Decoded = [(int(block.index[i]), block.vector(i)) for i in range(len(block))]
            items.extend((e.index, e) for e in errors)
            return sorted(items, key=lambda item: item[0])
        names = list(batch.syscall_names)
        n_names = len(names)
        out: Decoded = []
        append = out.append
        identity = self.identity
        endpoint = self.endpoint
        for i, v in enumerate(batch.vectors):
            try:
                idx = v.syscall_name_index[:]
                counts = v.syscall_count[:]
                if len(idx) != len(counts):
                    raise ValidationError(
                        "BAD_REFERENCE",
                        f"syscall_name_index has {len(idx)} entries but syscall_count {len(counts)}",
                    )
                try:
                    syscalls: dict[str, Any] = {names[j]: c for j, c in zip(idx, counts, strict=False)}
                except IndexError:
                    raise ValidationError(
                        "BAD_REFERENCE",
                        f"syscall_name_index {max(idx)} is outside the batch's {n_names} syscall names",
                    ) from None
                if len(syscalls) != len(idx):
                    raise ValidationError("BAD_REFERENCE", "a syscall name is referenced more than once")
                spec = v.ngram_spec
                if spec == 0:
                    if v.ngram_bucket or v.ngram_count:
                        raise ValidationError("BAD_REFERENCE", "n-gram counts sent with ngram_spec 0")
                    ngrams: dict[int, int] = {}
                elif spec in SUPPORTED_NGRAM_SPECS:
                    buckets = v.ngram_bucket[:]  # one C call to a list; iterating the container is slower
                    ncounts = v.ngram_count[:]
                    n_buckets = len(buckets)
                    if n_buckets != len(ncounts):
                        raise ValidationError(
                            "BAD_REFERENCE",
                            f"ngram_bucket has {n_buckets} entries but ngram_count {len(ncounts)}",
                        )
                    # The bucket range [0, NUM_BUCKETS) is baseliner.models.validate's check (same reason code), not
                    # repeated here: every pass over 200 buckets costs microseconds.
                    ngrams = dict(zip(buckets, ncounts, strict=False))  # lengths checked above
                    if len(ngrams) != n_buckets:
                        raise ValidationError("BAD_REFERENCE", "an n-gram bucket is listed more than once")
                    if spec == 1 and n_buckets and max(buckets) >= _V1_BUCKETS:
                        raise ValidationError("BAD_REFERENCE", f"n-gram bucket outside spec v1's [0, {_V1_BUCKETS})")
                else:
                    raise ValidationError("UNSUPPORTED_VERSION", f"ngram_spec {spec} is not supported")
                unknown = UnknownFieldSet(v)
                if len(unknown):
                    raise ValidationError(
                        "UNSUPPORTED_VERSION",
                        f"vector carries field {unknown[0].field_number}, unknown to schema version "
                        f"{SCHEMA_VERSION}",
                    )
                if not v.HasField("identity"):
                    raise ValidationError("MISSING_FIELD", "identity is missing")
                # Any: counts travel as doubles (so NaN/inf/negatives reach validation) into int-typed
                # domain fields; baseliner.models.validate checks them.
                p: Any = v.process
                n: Any = v.network
                f: Any = v.file
                eps = n.endpoints
                endpoints = [endpoint(e) for e in eps] if eps else []
                exes = p.executables
                paths = f.sensitive_paths
                if v.HasField("health"):
                    h = v.health
                    events_lost: Any = h.events_lost
                    complete = h.complete
                    exited = h.container_exited
                    age = h.container_age_seconds
                else:
                    events_lost, complete, exited, age = 0, True, False, -1.0
                # Positional (the field order of FeatureVector; tests pin it): keyword arguments cost
                # ~1.4 µs per vector here.
                vec = FeatureVector(
                    identity(v.identity), v.window_start, v.window_seconds, syscalls, ngrams,
                    p.execs, p.forks, p.exits, list(exes) if exes else [],
                    n.connects, n.connects_failed, n.accepts, n.listens, n.bytes_sent, n.bytes_received,
                    n.packets_sent, n.packets_received, n.remote_addresses, n.remote_ports, n.dns_queries,
                    endpoints,
                    f.write_opens, f.sensitive_writes, list(paths) if paths else [],
                    events_lost, complete, exited, age,
                )
                append((i, vec))
            except ValidationError as e:
                e.index = i
                append((i, e))
        return out


def batch_size(batch: vectors_pb2.VectorBatch) -> int:
    """How many windows a batch carries (as vectors or as columns)."""
    return batch.columns.count if batch.HasField("columns") else len(batch.vectors)


def _window_matrix(
    fields: dict[str, Any], n: int, field: str, replaces: tuple[str, ...], unpack: Callable[[bytes, int], np.ndarray]
) -> np.ndarray | None:
    """The columns' ``field`` (``window_f64_le`` or ``window_u32_le``: a window bytes form matrix) as a
    read-only ``(n, len(replaces))`` view, or ``None`` when the batch sends those columns as the repeated
    fields ``replaces``.  ``fields``: the columns' fields that are set (``ListFields``).  A batch with both
    forms, bytes that are not whole rows, or not ``n`` rows, is refused."""
    raw = fields.get(field)
    if raw is None:
        return None
    both = [name for name in replaces if name in fields]
    if both:
        raise ValidationError(
            "BAD_REFERENCE",
            f"window columns sent both as {field} and as repeated {', '.join(both)} (a batch uses one form)",
        )
    try:
        return unpack(raw, n)
    except ValueError as e:
        raise ValidationError("BAD_REFERENCE", str(e)) from None


def _syscall_entries(fields: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The columns' syscall name indices (int64) and counts (float64), from whichever form the batch uses.

    The window bytes form (``syscall_name_index_le16`` / ``syscall_count_f64_le``) is two array copies (the
    counts a read-only view of the bytes where the machine is little-endian); the repeated form costs upb
    ~5 µs per field.  A batch with both forms, bytes that are not whole entries, or not as many entries in
    both fields (either form) is refused.  ``fields``: the columns' fields that are set (``ListFields``).
    """
    raw_index = fields.get("syscall_name_index_le16")
    raw_count = fields.get("syscall_count_f64_le")
    if raw_index is None and raw_count is None:
        sc_name = np.array(fields.get("syscall_name_index", ()), np.int64)
        sc_count = np.array(fields.get("syscall_count", ()), np.float64)
    else:
        both = [name for name in window_columns.SYSCALL_FIELDS if name in fields]
        if both:
            raise ValidationError(
                "BAD_REFERENCE",
                f"syscall entries sent both as syscall_name_index_le16/syscall_count_f64_le and as repeated "
                f"{', '.join(both)} (a batch uses one form)",
            )
        try:
            index, counts = window_columns.unpack_syscalls(raw_index or b"", raw_count or b"")
        except ValueError as e:
            raise ValidationError("BAD_REFERENCE", str(e)) from None
        sc_name = index.astype(np.int64)
        sc_count = counts if counts.dtype.isnative else counts.astype(np.float64)
    if len(sc_name) != len(sc_count):
        raise ValidationError(
            "BAD_REFERENCE", f"syscall_name_index has {len(sc_name)} entries but syscall_count {len(sc_count)}"
        )
    return sc_name, sc_count


def _ngram_entries(fields: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The columns' n-gram buckets (int64) and counts (float64), from whichever form the batch uses
    (``fields``: the columns' fields that are set, ``ListFields``).

    The entry form (``ngram_entry_le32``: one little-endian uint32 per entry, ``bucket | count << 17``,
    what the sensor sends when the batch fits it) and the pair form (``ngram_*_le32``) are one array copy
    and a few array operations; the packed varint form (``ngram_bucket``/``ngram_count``) costs upb ~10 ns
    per value to parse.  A batch using two forms, bytes that are not whole uint32 entries, pair bytes not
    as many in both fields, or an entry with count 0 (the entry form's counts are 1..32767) is refused
    (packed arrays of unequal length: the caller's check).  Bucket ranges are ``baseliner.models.validate``'s.
    """
    raw_entry = fields.get("ngram_entry_le32", b"")
    raw_bucket = fields.get("ngram_bucket_le32", b"")
    raw_count = fields.get("ngram_count_le32", b"")
    packed_bucket = fields.get("ngram_bucket", ())
    packed_count = fields.get("ngram_count", ())
    if raw_entry:
        if raw_bucket or raw_count or len(packed_bucket) or len(packed_count):
            other = "ngram_bucket_le32/ngram_count_le32" if raw_bucket or raw_count else "ngram_bucket/ngram_count"
            raise ValidationError(
                "BAD_REFERENCE", f"n-grams sent both as ngram_entry_le32 and as {other} (a batch uses one form)"
            )
        try:
            buckets, counts = ngram_entries.unpack(raw_entry)
        except ValueError as e:
            raise ValidationError("BAD_REFERENCE", str(e)) from None
        return buckets.astype(np.int64), counts.astype(np.float64)
    if not raw_bucket and not raw_count:
        return np.array(packed_bucket, np.int64), np.array(packed_count, np.float64)
    if len(packed_bucket) or len(packed_count):
        raise ValidationError(
            "BAD_REFERENCE",
            "n-grams sent both as ngram_bucket/ngram_count and as ngram_bucket_le32/ngram_count_le32 "
            "(a batch uses one form)",
        )
    if len(raw_bucket) % 4 or len(raw_count) % 4:
        raise ValidationError(
            "BAD_REFERENCE",
            f"ngram_bucket_le32 has {len(raw_bucket)} bytes and ngram_count_le32 {len(raw_count)}: "
            "not whole 4-byte entries",
        )
    if len(raw_bucket) != len(raw_count):
        raise ValidationError(
            "BAD_REFERENCE",
            f"ngram_bucket_le32 has {len(raw_bucket) // 4} entries but ngram_count_le32 {len(raw_count) // 4}",
        )
    return np.frombuffer(raw_bucket, "<u4").astype(np.int64), np.frombuffer(raw_count, "<u4").astype(np.float64)


def _endpoint(e: vectors_pb2.Endpoint) -> Endpoint:
    proto = _PROTOCOLS.get(e.protocol)
    if proto is None:
        raise ValidationError("BAD_REFERENCE", f"endpoint protocol {e.protocol} is not TCP or UDP")
    d = e.direction
    if d == vectors_pb2.DIRECTION_OUTBOUND:
        outbound = True
    elif d == vectors_pb2.DIRECTION_INBOUND:
        outbound = False
    else:
        raise ValidationError("MISSING_FIELD", "endpoint direction is unspecified")
    return Endpoint(e.address, e.port, proto, outbound)


# --------------------------------------------------------------------------------------------------
# Acknowledgements and admin messages.


def batch_ack(
    sequence: int,
    applied: int,
    rejected: Sequence[ValidationError],
    duplicate: bool = False,
    durable: bool = False,
) -> ingest_pb2.IngestResponse:
    ack = ingest_pb2.BatchAck(sequence=sequence, applied=applied, duplicate=duplicate, durable=durable)
    for e in rejected:
        ack.rejected.add(index=max(e.index, 0), reason=reject_reason_value(e.reason), message=e.message[:512])
    return ingest_pb2.IngestResponse(ack=ack)


def batch_refused(sequence: int, error: ValidationError) -> ingest_pb2.IngestResponse:
    ack = ingest_pb2.BatchAck(
        sequence=sequence, batch_rejected=reject_reason_value(error.reason), batch_message=error.message[:512]
    )
    return ingest_pb2.IngestResponse(ack=ack)


def welcome(
    last_sequence: int, service_version: str, max_batch_vectors: int, durable_acks: bool = False
) -> ingest_pb2.IngestResponse:
    """The answer to a Hello.  ``ngram_bytes``, ``ngram_entries``, ``identity_table`` and ``window_bytes`` are
    always set: this decoder reads the columns' n-grams in all three forms (:func:`_ngram_entries`), so
    sensors may send either bytes form, the identity table in both (:meth:`Decoder.identity_table`), and the
    per-window numbers and syscall entries in both (the window bytes form: :func:`_window_matrix`,
    :func:`_syscall_entries`)."""
    return ingest_pb2.IngestResponse(
        welcome=ingest_pb2.Welcome(
            last_sequence=last_sequence,
            service_version=service_version,
            max_batch_vectors=max_batch_vectors,
            durable_acks=durable_acks,
            ngram_bytes=True,
            ngram_entries=True,
            identity_table=True,
            window_bytes=True,
        )
    )


def mode_from_proto(value: int) -> str:
    """Admin ``Mode`` enum -> the domain mode's value (``"auto"``, ``"learn"`` ...)."""
    if value == admin_pb2.MODE_UNSPECIFIED or value not in admin_pb2.Mode.values():
        raise ValidationError("MISSING_FIELD", "mode must be one of AUTO, LEARN, DETECT, FREEZE")
    return admin_pb2.Mode.Name(value).removeprefix("MODE_").lower()


def mode_to_proto(value: str) -> Any:
    return admin_pb2.Mode.Value(f"MODE_{value.upper()}")


def state_to_proto(value: str) -> Any:
    return admin_pb2.State.Value(f"STATE_{value.upper()}")


def baseline_to_proto(baseline: Any, detail: bool = False, serialized_bytes: int = 0) -> admin_pb2.Baseline:
    """An :class:`baseliner.models.baseline.ImageBaseline` as the admin ``Baseline`` message."""
    threshold = float(baseline.threshold)
    first = float(baseline.first_window)
    last = float(baseline.last_window)
    learned = last - first if math.isfinite(first) and math.isfinite(last) else 0.0
    msg = admin_pb2.Baseline(
        key=baseline.key,
        mode=mode_to_proto(_enum_value(baseline.mode)),
        state=state_to_proto(_enum_value(baseline.state)),
        windows_learned=int(baseline.windows_learned),
        windows_scored=int(baseline.windows_scored),
        anomalies=int(baseline.anomalies),
        first_window=first if math.isfinite(first) else 0.0,
        last_window=last if math.isfinite(last) else 0.0,
        threshold=threshold if math.isfinite(threshold) else 0.0,
        learned_seconds=learned,
        detector=str(baseline.config.detector),
        serialized_bytes=serialized_bytes,
    )
    if detail:
        for name, mean, std, unit, typical in baseline.feature_stats():
            msg.features.add(name=name, mean=mean, std=std, unit=unit, typical=typical)
        sets = baseline.novelty_sets()
        msg.executables.extend(sets.get("executable", []))
        msg.syscalls.extend(sets.get("syscall", []))
        msg.remote_ports.extend(str(p) for p in sets.get("port", []))
        msg.sensitive_paths.extend(sets.get("sensitive_path", []))
    return msg


def _enum_value(x: Any) -> str:
    return str(getattr(x, "value", x))
