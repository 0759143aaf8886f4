"""The one place where protobuf meets the domain on the service side: wire messages <-> ``models`` objects.

Only this module (and the generated code) knows the wire format on the service side.  It does the
*wire-level* checks (schema version, batch size, byte layouts, references into the batch's tables,
list lengths that add up, enum values) and raises :class:`baseliner.models.errors.ValidationError` with
the protocol's ``RejectReason`` names; *domain* checks (finite, non-negative, plausible window, sane
image names) are ``baseliner.models.validate``'s job.  Fields this build does not know are ignored, as
protobuf intends; a breaking change comes with a new schema version (``protos/v1/schema.py``).

A batch (``VectorBatch`` of ``VectorColumns``, ``protos/v1/vectors.proto``) decodes straight into a
:class:`~baseliner.models.block.VectorBlock`: a few array copies per batch, no object per window.

The opposite direction (domain -> wire) is the sensor's: ``sensor/wire.py``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from baseliner.models.block import VectorBlock, row_ids
from baseliner.models.errors import ValidationError
from baseliner.models.vector import MAX_SYSCALL_NAMES, Endpoint, Identity
from baseliner.protos.v1 import admin_pb2, ingest_pb2, ngram_entries, vectors_pb2, window_columns
from baseliner.protos.v1.schema import SCHEMA_VERSION, unsupported
from google.protobuf.message import DecodeError

#: Default bound on vectors per batch (also announced in Welcome.max_batch_vectors).
DEFAULT_MAX_BATCH_VECTORS = 10_000
#: Bound on the batch's syscall-name dictionary.
MAX_BATCH_SYSCALL_NAMES = 4 * MAX_SYSCALL_NAMES

_PROTOCOLS = {vectors_pb2.PROTOCOL_TCP: "tcp", vectors_pb2.PROTOCOL_UDP: "udp"}
_SERIALIZE_IDENTITY = vectors_pb2.Identity.SerializeToString
_IDENTITY_CACHE_MAX = 100_000
#: Bounds on the decoder's cache of identity tables: at most this many tables, and at most this many bytes
#: of them (the keys; the tables hold references to interned identities).  The least recently used table
#: goes first; a table larger than the byte bound is decoded but not kept.
IDENTITY_TABLES_MAX = 256
IDENTITY_TABLES_MAX_BYTES = 64 << 20
_PARSE_IDENTITY_TABLE = vectors_pb2.IdentityTable.FromString

#: A batch's identity table as decoded: immutable, of frozen identities.
IdentityTable = tuple[Identity, ...]
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

    >>> from baseliner.sensor import wire
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


def batch_size(batch: vectors_pb2.VectorBatch) -> int:
    """How many windows a batch carries."""
    return batch.columns.count


class Decoder:
    """Decodes :class:`VectorBatch` messages into :class:`VectorBlock` objects, batch by batch.

    Holds a bounded cache of :class:`Identity` objects, so that the identity of a container is one object
    whatever table it comes in, and one of identity tables keyed by their bytes
    (``VectorColumns.identity_table``): a sensor sends the same table round after round, and the decoder
    parses it once.  A table is an :data:`IdentityTable`, a tuple of frozen identities: nothing can change
    it, so the same bytes may give the same tuple to every caller (while the table is cached: at most
    :data:`IDENTITY_TABLES_MAX` tables and :data:`IDENTITY_TABLES_MAX_BYTES` bytes, least recently used
    first out), and a memo may key on its content (equal tables are equal tuples with equal hashes).
    """

    def __init__(self, max_batch_vectors: int = DEFAULT_MAX_BATCH_VECTORS) -> None:
        if max_batch_vectors < 1:
            raise ValueError("max_batch_vectors must be >= 1")
        self.max_batch_vectors = max_batch_vectors
        self._identities: dict[bytes, Identity] = {}
        self._endpoints: dict[bytes, Endpoint] = {}
        self._tables: OrderedDict[bytes, IdentityTable] = OrderedDict()  # identity_table bytes -> table
        self._table_bytes = 0  # total length of self._tables' keys

    def check_batch(self, batch: vectors_pb2.VectorBatch) -> BatchHeader:
        """Batch-level checks; raise :class:`ValidationError` when the whole batch must be refused."""
        header = BatchHeader(batch.sequence, batch.schema_version, batch_size(batch))
        if header.schema_version != SCHEMA_VERSION:
            raise ValidationError("UNSUPPORTED_VERSION", unsupported(header.schema_version))
        if header.size > self.max_batch_vectors:
            raise ValidationError(
                "TOO_LARGE", f"batch of {header.size} vectors exceeds the limit of {self.max_batch_vectors}"
            )
        if len(batch.syscall_names) > MAX_BATCH_SYSCALL_NAMES:
            raise ValidationError(
                "TOO_LARGE",
                f"syscall_names has {len(batch.syscall_names)} entries (max {MAX_BATCH_SYSCALL_NAMES})",
            )
        return header

    def decode_block(self, batch: vectors_pb2.VectorBatch) -> DecodedBlock:
        """The batch as a :class:`VectorBlock` of the windows that decoded, and rejections of the others
        (windows naming an endpoint the decoder refused).

        Raises :class:`ValidationError` when the columns do not fit together (the batch is then refused as
        a whole).  Call :meth:`check_batch` first.
        """
        c = batch.columns
        n = c.count  # bounded by check_batch
        f64 = _matrix(window_columns.unpack_f64, "window_f64_le", c.window_f64_le, n)
        u32 = _matrix(window_columns.unpack_u32, "window_u32_le", c.window_u32_le, n)
        ptrs = _list_pointers(u32)
        identities = self.identity_table(c.identity_table)
        names = list(batch.syscall_names)
        sc_name, sc_count = _syscall_entries(c.syscall_name_index_le16, c.syscall_count_f64_le, len(names))
        ng_bucket, ng_count = _ngram_entries(c.ngram_entry_le32)
        executables = list(c.executables)
        paths = list(c.sensitive_paths)
        ep_index = np.array(c.endpoint_index, np.int64)
        _check_list_lengths(ptrs, (len(sc_name), len(ng_bucket), len(executables), len(ep_index), len(paths)))
        endpoints, bad_endpoints = self._endpoint_table(c.endpoints, ep_index)
        block = VectorBlock(
            identities=identities,
            ident=_identity_index(u32, len(identities)),
            index=np.arange(n, dtype=np.int64),
            # copies: contiguous, writable, native arrays
            window_start=f64[:, 0].astype(np.float64),
            window_seconds=f64[:, 1].astype(np.float64),
            counters=f64[:, window_columns.FIRST_COUNTER:].astype(np.float64),
            complete=_flags(c.complete, n, True, "complete"),
            container_exited=_flags(c.container_exited, n, False, "container_exited"),
            age=f64[:, 2].astype(np.float64),
            syscall_names=names,
            sc_ptr=ptrs[_SYSCALLS], sc_name=sc_name, sc_count=sc_count,
            ng_ptr=ptrs[_NGRAMS], ng_bucket=ng_bucket, ng_count=ng_count,
            exe_ptr=ptrs[_EXECUTABLES], executables=executables,
            ep_ptr=ptrs[_ENDPOINTS], ep_index=ep_index, endpoints=endpoints,
            path_ptr=ptrs[_PATHS], sensitive_paths=paths,
        )
        return _reject_windows_naming(block, bad_endpoints)

    # -- identity tables ----------------------------------------------------------------------------

    def identity_table(self, raw: bytes) -> IdentityTable:
        """The identities of ``raw`` (``VectorColumns.identity_table``, the bytes of an ``IdentityTable``):
        the cached table when these bytes came lately, else parsed, built and cached.  Raises
        :class:`ValidationError` (``BAD_REFERENCE``) for bytes that do not parse as an ``IdentityTable``."""
        tables = self._tables
        found = tables.get(raw)
        if found is not None:
            tables.move_to_end(raw)
            return found
        try:
            msgs = _PARSE_IDENTITY_TABLE(raw).identities
        except DecodeError as e:
            raise ValidationError(
                "BAD_REFERENCE", f"columns.identity_table ({len(raw)} bytes) is not a serialized IdentityTable: {e}"
            ) from None
        found = self.identities(msgs)
        if len(raw) <= IDENTITY_TABLES_MAX_BYTES:
            tables[raw] = found
            self._table_bytes += len(raw)
            while len(tables) > IDENTITY_TABLES_MAX or self._table_bytes > IDENTITY_TABLES_MAX_BYTES:
                old, _ = tables.popitem(last=False)
                self._table_bytes -= len(old)
        return found

    def identities(self, msgs: Sequence[vectors_pb2.Identity]) -> IdentityTable:
        """:meth:`identity` of each message, as a table (a C-level pass for the identities known already)."""
        # map() over the unbound method: a bound-method lookup on each upb message costs more than the
        # serialisation itself
        found: list[Identity | None] = list(map(self._identities.get, map(_SERIALIZE_IDENTITY, msgs)))
        for j, ident in enumerate(found):
            if ident is None:
                found[j] = self.identity(msgs[j])
        return tuple(found)  # type: ignore[arg-type]  # no None left

    def identity(self, msg: vectors_pb2.Identity) -> Identity:
        """The interned :class:`Identity` of ``msg``."""
        # Keyed by the identity's wire bytes: one C call instead of eight field reads.  A sender that
        # orders fields differently only costs a cache miss.
        raw = msg.SerializeToString()
        ident = self._identities.get(raw)
        if ident is None:
            if len(self._identities) >= _IDENTITY_CACHE_MAX:
                self._identities.clear()
            ident = Identity(
                msg.node, msg.container_id, msg.image_repository, msg.image_tag, msg.image_digest,
                msg.container_name, msg.pod, msg.namespace, msg.workload,
            )
            self._identities[raw] = ident
        return ident

    # -- endpoints -----------------------------------------------------------------------------------

    def _endpoint_table(
        self, msgs: Sequence[vectors_pb2.Endpoint], ep_index: np.ndarray
    ) -> tuple[list[Endpoint], dict[int, ValidationError]]:
        """The batch's endpoints, and why each one the decoder refused was refused (by position; a
        placeholder stands in the table).  Raises for an index past the table (the batch is refused)."""
        endpoints: list[Endpoint] = []
        bad: dict[int, ValidationError] = {}
        for j, e in enumerate(msgs):
            try:
                endpoints.append(self.endpoint(e))
            except ValidationError as err:
                bad[j] = err
                endpoints.append(Endpoint("", 0))
        if len(ep_index) and int(ep_index.max()) >= len(endpoints):
            raise ValidationError("BAD_REFERENCE", f"endpoint_index refers past the {len(endpoints)} endpoints")
        return endpoints, bad

    def endpoint(self, msg: vectors_pb2.Endpoint) -> Endpoint:
        raw = msg.SerializeToString()
        ep = self._endpoints.get(raw)
        if ep is None:
            ep = _endpoint(msg)  # raises for bad enums: never cached
            if len(self._endpoints) >= _IDENTITY_CACHE_MAX:
                self._endpoints.clear()
            self._endpoints[raw] = ep
        return ep


# window_u32_le's list-length columns, in order (window_columns.U32_COLUMNS after "identity")
_SYSCALLS, _NGRAMS, _EXECUTABLES, _ENDPOINTS, _PATHS = range(5)
_LIST_COLUMNS = window_columns.U32_COLUMNS[1:]


def _matrix(unpack: Callable[[bytes, int], np.ndarray], field: str, raw: bytes, n: int) -> np.ndarray:
    """``raw`` (``window_f64_le`` or ``window_u32_le``) as a read-only ``(n, columns)`` view; the batch is
    refused when the field is missing or its bytes are not ``n`` whole rows."""
    if not raw and n:
        raise ValidationError("MISSING_FIELD", f"columns.{field} is missing ({n} windows)")
    try:
        return unpack(raw, n)
    except ValueError as e:
        raise ValidationError("BAD_REFERENCE", str(e)) from None


def _list_pointers(u32: np.ndarray) -> np.ndarray:
    """Each list's pointer array (CSR: window ``i``'s entries are ``[ptr[i], ptr[i + 1])``), one row per
    list in the order of :data:`_LIST_COLUMNS`: one cumulative sum for all five."""
    n = len(u32)
    lengths = np.zeros((len(_LIST_COLUMNS), n + 1), dtype=np.int64)
    lengths[:, 1:] = u32[:, 1:].T
    return np.add.accumulate(lengths, axis=1)


def _check_list_lengths(ptrs: np.ndarray, flat: Sequence[int]) -> None:
    """The batch is refused when a list's lengths in ``window_u32_le`` do not add up to the list."""
    for name, total, got in zip(_LIST_COLUMNS, ptrs[:, -1].tolist(), flat, strict=True):
        if total != got:
            raise ValidationError(
                "BAD_REFERENCE", f"columns.window_u32_le's {name} adds up to {total} but the list has {got}"
            )


def _identity_index(u32: np.ndarray, tables: int) -> np.ndarray:
    """Each window's index into the identity table (int64); the batch is refused when one points past it."""
    ident = u32[:, 0].astype(np.int64)
    if len(ident) and int(ident.max()) >= tables:
        raise ValidationError("BAD_REFERENCE", f"columns.identity refers past the {tables} identities")
    return ident


def _flags(values: Sequence[bool], n: int, default: bool, name: str) -> np.ndarray:
    """A per-window bool column: ``n`` values, or none (``default`` in every window)."""
    if len(values) == n:
        return np.array(values, bool)
    if not len(values):
        return np.full(n, default, bool)
    raise ValidationError("BAD_REFERENCE", f"columns.{name} has {len(values)} values for {n} windows")


def _syscall_entries(raw_index: bytes, raw_count: bytes, names: int) -> tuple[np.ndarray, np.ndarray]:
    """The syscall name indices (int64) and counts (float64, a read-only view of the bytes where the
    machine is little-endian); the batch is refused for bytes that are not whole entries, not as many
    entries in both, or an index past the batch's ``names`` syscall names."""
    try:
        index, counts = window_columns.unpack_syscalls(raw_index, raw_count)
    except ValueError as e:
        raise ValidationError("BAD_REFERENCE", str(e)) from None
    if len(index) and int(index.max()) >= names:
        raise ValidationError(
            "BAD_REFERENCE", f"syscall_name_index {int(index.max())} is outside the batch's {names} names"
        )
    return index.astype(np.int64), counts if counts.dtype.isnative else counts.astype(np.float64)


def _ngram_entries(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The n-gram buckets (int64) and counts (float64) of ``ngram_entry_le32``; the batch is refused for
    bytes that are not whole entries or an entry with count 0.  Bucket ranges are validation's
    (``baseliner.models.validate``: a bucket past spec v2 rejects its window)."""
    try:
        buckets, counts = ngram_entries.unpack(raw)
    except ValueError as e:
        raise ValidationError("BAD_REFERENCE", str(e)) from None
    return buckets.astype(np.int64), counts.astype(np.float64)


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


def _reject_windows_naming(block: VectorBlock, bad_endpoints: dict[int, ValidationError]) -> DecodedBlock:
    """``block`` without the windows that name an endpoint the decoder refused, and their rejections
    (each with its endpoint's reason)."""
    if not bad_endpoints:
        return block, []
    flag = np.zeros(len(block.endpoints), dtype=bool)
    flag[list(bad_endpoints)] = True
    hit = flag[block.ep_index]
    errors: dict[int, ValidationError] = {}
    for r, j in zip(row_ids(block.ep_ptr)[hit].tolist(), block.ep_index[hit].tolist(), strict=True):
        if r not in errors:
            why = bad_endpoints[j]
            errors[r] = ValidationError(why.reason, why.message, r)
    keep = np.ones(len(block), dtype=bool)
    keep[list(errors)] = False
    return block.take(np.flatnonzero(keep)), [errors[r] for r in sorted(errors)]


# --------------------------------------------------------------------------------------------------
# Acknowledgements and admin messages.


def batch_ack(
    sequence: int,
    applied: int,
    rejected: Sequence[ValidationError],
    duplicate: bool = False,
    durable: bool = False,
    shard_epoch: int = 0,
) -> ingest_pb2.IngestResponse:
    ack = ingest_pb2.BatchAck(sequence=sequence, applied=applied, duplicate=duplicate, durable=durable,
                              shard_epoch=shard_epoch)
    for e in rejected:
        ack.rejected.add(index=max(e.index, 0), reason=reject_reason_value(e.reason), message=e.message[:512])
    return ingest_pb2.IngestResponse(ack=ack)


def batch_refused(sequence: int, error: ValidationError) -> ingest_pb2.IngestResponse:
    ack = ingest_pb2.BatchAck(
        sequence=sequence, batch_rejected=reject_reason_value(error.reason), batch_message=error.message[:512]
    )
    return ingest_pb2.IngestResponse(ack=ack)


def welcome(
    last_sequence: int, service_version: str, max_batch_vectors: int, durable_acks: bool = False,
    max_sequence_gap: int = 0, shard_epoch: int = 0,
) -> ingest_pb2.IngestResponse:
    """The answer to a Hello."""
    return ingest_pb2.IngestResponse(
        welcome=ingest_pb2.Welcome(
            last_sequence=last_sequence,
            service_version=service_version,
            max_batch_vectors=max_batch_vectors,
            durable_acks=durable_acks,
            max_sequence_gap=max_sequence_gap,
            shard_epoch=shard_epoch,
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
        learning_reason=str(baseline.learning_reason),
        learning_detail=str(baseline.learning_detail),
    )
    if detail:
        for name, mean, std, unit, typical in baseline.feature_stats():
            msg.features.add(name=name, mean=mean, std=std, unit=unit, typical=typical)
        sets = baseline.novelty_sets()
        msg.executables.extend(sets.get("executable", []))
        msg.syscalls.extend(sets.get("syscall", []))
        msg.remote_ports.extend(str(p) for p in sets.get("port", []))
        msg.sensitive_paths.extend(sets.get("sensitive_path", []))
    lin = getattr(baseline, "lineage", None)  # a Lineage, or a spilled baseline's LineageInfo
    if lin is not None:
        msg.lineage.parent, msg.lineage.status, msg.lineage.reason = lin.parent, lin.status, lin.reason
        msg.lineage.groups.extend(lin.groups)
        if detail:
            diff = lin.diff()
            msg.lineage.added.extend(f"{k} {v}" for k, vs in diff["added"].items() for v in vs)
            msg.lineage.vanished.extend(f"{k} {v}" for k, vs in diff["vanished"].items() for v in vs)
    return msg


def _enum_value(x: Any) -> str:
    return str(getattr(x, "value", x))
