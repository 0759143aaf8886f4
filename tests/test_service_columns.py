"""Batches as columns (``VectorColumns``, the wire form): what the decoder makes of them (against arrays
computed by hand), the identity tables it keeps, fields it does not know ignored, every structural fault
refusing the batch with a message that says why while the stream goes on (against a real grpc.aio
server); and block validation."""

from __future__ import annotations

import asyncio
import os
import struct
import sys
from collections.abc import Callable

import numpy as np
import pytest
from baseliner.models.baseline import BaselineConfig
from baseliner.models.block import COUNTERS, VectorBlock
from baseliner.models.errors import ValidationError
from baseliner.models.ngrams import NUM_BUCKETS
from baseliner.models.vector import Endpoint, FeatureVector, Identity
from baseliner.protos.v1 import ingest_pb2, vectors_pb2, window_columns
from baseliner.sensor import wire
from baseliner.service import serde
from baseliner.service.pipeline import Pipeline

sys.path.insert(0, os.path.dirname(__file__))
from service_fixtures import (  # noqa: E402
    config,
    exchange,
    hello,
    learn_batches,
    raw_batch_request,
    running,
    vector,
)

R = ingest_pb2.RejectReason


def _decoded(batch: vectors_pb2.VectorBatch, d: serde.Decoder | None = None) -> tuple[VectorBlock, list]:
    """``batch`` after its wire round trip, checked and decoded (by ``d``, or a new decoder)."""
    msg = vectors_pb2.VectorBatch.FromString(batch.SerializeToString())
    d = d or serde.Decoder()
    d.check_batch(msg)
    return d.decode_block(msg)


def _block(batch: vectors_pb2.VectorBatch, d: serde.Decoder | None = None) -> VectorBlock:
    block, errors = _decoded(batch, d)
    assert errors == []
    return block


def test_columns_round_trip_every_field() -> None:
    a = Identity("node-1", "c1", "nginx", "1.27", "sha256:ab", "web", "web-pod", "prod")
    b = Identity("node-2", "c2", "registry.local/team/db", "16")
    vs = [
        FeatureVector(a, 1.7e9, 10.0, {"read": 5, "write": 2}, {3: 4, 9000: 1}, execs=1, forks=2, exits=3,
                      executables=["/bin/sh"], connects=4, connects_failed=1, accepts=7, listens=1, bytes_sent=100,
                      bytes_received=200, packets_sent=3, packets_received=4, remote_addresses=2, remote_ports=2,
                      dns_queries=1, endpoints=[Endpoint("10.0.0.1", 4444), Endpoint("10.0.0.2", 53, "udp", True)],
                      write_opens=2, sensitive_writes=1, unresolved_writes=4, sensitive_paths=["/etc/passwd"],
                      events_lost=3,
                      complete=False, container_exited=True, seconds_since_start=12.5),
        FeatureVector(b, 1.7e9 + 10, 5.0, {"futex": 9}, endpoints=[Endpoint("10.0.0.1", 4444),
                                                                   Endpoint("10.9.9.9", 8080, "tcp", False)]),
        FeatureVector(a, 1.7e9 + 10, 10.0),
    ]
    block = _block(wire.to_columns(vs, 1))
    assert len(block) == 3 and len(block.identities) == 2 and len(block.endpoints) == 3
    for v, g in zip(vs, block.vectors(), strict=True):
        assert g == v, (g, v)


def _hand_made_batch() -> vectors_pb2.VectorBatch:
    """Two windows of one container, written field by field (not by the sensor's encoder)."""
    table = vectors_pb2.IdentityTable(identities=[vectors_pb2.Identity(node="n1", container_id="c1",
                                                                       image_repository="nginx")])
    f64 = [[100.0, 10.0, -1.0, 2.0] + [0.0] * 16 + [1.0], [110.0, 10.0, 7.0] + [0.0] * 18]
    u32 = [[0, 2, 3, 0, 1, 0], [0, 1, 0, 1, 0, 1]]
    columns = vectors_pb2.VectorColumns(
        count=2,
        identity_table=table.SerializeToString(),
        window_f64_le=struct.pack("<42d", *f64[0], *f64[1]),
        window_u32_le=struct.pack("<12I", *u32[0], *u32[1]),
        container_exited=[False, True],
        syscall_name_index_le16=struct.pack("<3H", 0, 1, 0),
        syscall_count_f64_le=struct.pack("<3d", 3.0, 1.0, 0.5),
        ngram_entry_le32=struct.pack("<3I", 7 | 2 << 17, 300 | 32767 << 17, 300 | 7233 << 17),
        executables=["/bin/sh"],
        endpoints=[vectors_pb2.Endpoint(address="10.0.0.2", port=53, protocol=vectors_pb2.PROTOCOL_UDP,
                                        direction=vectors_pb2.DIRECTION_OUTBOUND)],
        endpoint_index=[0],
        sensitive_paths=["/etc/passwd"],
    )
    return vectors_pb2.VectorBatch(sequence=1, schema_version=3, syscall_names=["read", "write"], columns=columns)


def test_a_hand_made_batch_decodes_to_the_arrays_it_says() -> None:
    block = _block(_hand_made_batch())
    assert block.identities == (Identity("n1", "c1", "nginx"),) and block.ident.tolist() == [0, 0]
    assert block.window_start.tolist() == [100.0, 110.0] and block.window_seconds.tolist() == [10.0, 10.0]
    assert block.age.tolist() == [-1.0, 7.0]
    assert block.counters.shape == (2, len(COUNTERS))
    assert block.counters[0].tolist() == [2.0] + [0.0] * 16 + [1.0] and not block.counters[1].any()
    assert block.complete.tolist() == [True, True] and block.container_exited.tolist() == [False, True]
    assert block.syscall_names == ["read", "write"]
    assert (block.sc_ptr.tolist(), block.sc_name.tolist(), block.sc_count.tolist()) == (
        [0, 2, 3], [0, 1, 0], [3.0, 1.0, 0.5])
    assert (block.ng_ptr.tolist(), block.ng_bucket.tolist(), block.ng_count.tolist()) == (
        [0, 3, 3], [7, 300, 300], [2.0, 32767.0, 7233.0])
    assert block.row_ngrams(0) == {7: 2.0, 300: 40000.0}  # entries of one bucket add up
    assert (block.exe_ptr.tolist(), block.executables) == ([0, 0, 1], ["/bin/sh"])
    assert (block.ep_ptr.tolist(), block.ep_index.tolist()) == ([0, 1, 1], [0])
    assert block.endpoints == [Endpoint("10.0.0.2", 53, "udp", True)]
    assert (block.path_ptr.tolist(), block.sensitive_paths) == ([0, 0, 1], ["/etc/passwd"])
    # what the pipeline gets from the matrices: contiguous, writable, native arrays
    for arr in (block.window_start, block.window_seconds, block.age, block.counters, block.ident):
        assert arr.flags.c_contiguous and arr.flags.writeable and arr.dtype.isnative
    assert block.sc_name.dtype == block.ng_bucket.dtype == np.int64
    assert block.sc_count.dtype == block.ng_count.dtype == np.float64


def test_fields_this_service_does_not_know_are_ignored() -> None:
    """A newer sensor may add fields (protobuf's forward compatibility): batch, columns, identity table and
    identity with a field unknown here decode as without it."""
    batch = _hand_made_batch()
    expected = _block(batch).vectors()
    batch.MergeFromString(b"\xa8\x06\x01")  # field 101, varint 1
    batch.columns.MergeFromString(b"\xa8\x06\x01")
    table = vectors_pb2.IdentityTable.FromString(batch.columns.identity_table)
    table.identities[0].MergeFromString(b"\xa8\x06\x01")
    batch.columns.identity_table = table.SerializeToString() + b"\x10\x01"  # and a field 2 of the table
    batch.columns.endpoints[0].MergeFromString(b"\xa8\x06\x01")
    assert _block(batch).vectors() == expected


def test_learned_then_attacked_through_the_wire_flags_the_attacks() -> None:
    learn = [vector(i, c) for i in range(120) for c in range(2)]
    attack = [vector(130, 0, attack="shell"), vector(131, 1), vector(132, 0, attack="etc"), vector(133, 1)]
    p = Pipeline(baseline_config=BaselineConfig(min_learn_windows=20, min_learn_seconds=0, stable_confidence=0))
    d = serde.Decoder()
    for seq, start in enumerate(range(0, len(learn), 40), 1):
        assert p.apply_block("s", seq, *_decoded(wire.to_columns(learn[start:start + 40], seq), d)).applied == 40
    r = p.apply_block("s", 99, *_decoded(wire.to_columns(attack, 99), d))
    assert r.applied == 4 and not r.rejected
    flagged = sorted((rec.event["container"]["id"], rec.event["@timestamp"]) for rec in p.recent.values())
    assert flagged == [("c0", "2025-06-15T15:28:30.000Z"), ("c0", "2025-06-15T15:28:50.000Z")]  # windows 130, 132


def test_an_entry_bucket_past_spec_v2_rejects_its_window_alone() -> None:
    """Bucket ranges are validation's (baseliner.models.validate): an entry's bucket in [77824, 2**17)
    rejects its window with BAD_REFERENCE, the rest of the batch is applied."""
    vs = [vector(100 + i, c) for i in range(2) for c in range(3)]
    vs[4].ngrams = {5: 1, NUM_BUCKETS: 3, 2**17 - 1: 3}
    block, errors = _decoded(wire.to_columns(vs, 1))
    assert errors == [] and 2**17 - 1 in block.ng_bucket.tolist()
    r = Pipeline().apply_block("s", 1, block, errors)
    assert r.applied == 5 and [(e.index, e.reason) for e in r.rejected] == [(4, "BAD_REFERENCE")]


def test_window_columns_are_the_block_counters_in_order_and_the_fields_bytes() -> None:
    fields = vectors_pb2.VectorColumns.DESCRIPTOR.fields_by_name
    assert window_columns.F64_COLUMNS == ("window_start", "window_seconds", "container_age_seconds", *COUNTERS)
    assert window_columns.F64_COLUMNS[window_columns.FIRST_COUNTER:] == COUNTERS
    for name in ("identity_table", "window_f64_le", "window_u32_le", "syscall_name_index_le16",
                 "syscall_count_f64_le", "ngram_entry_le32"):
        assert fields[name].type == fields[name].TYPE_BYTES, name


def _tables(k: int, containers: int = 3, windows: int = 2) -> list[FeatureVector]:
    """Windows of ``containers`` containers, table ``k`` (a different table for each ``k``)."""
    return [vector(100 + i, c, repo=f"app{k}") for i in range(windows) for c in range(containers)]


def test_the_same_identity_table_gives_the_same_immutable_tuple() -> None:
    """A block's ``identities`` is the decoder's table for those bytes: a tuple of frozen identities (no
    caller can change what another batch gets); the same table (the same or other windows) gives the same
    tuple, another table another one, equal tables equal tuples."""
    d = serde.Decoder()
    t0 = _block(wire.to_columns(_tables(0), 1), d).identities
    assert isinstance(t0, tuple) and t0 == tuple(v.identity for v in _tables(0)[:3])
    with pytest.raises(AttributeError):
        t0[0].node = "elsewhere"  # type: ignore[misc]
    again = _block(wire.to_columns(_tables(0, windows=3), 2), d)  # other windows, the same containers
    assert again.identities is t0
    assert again.take(np.array([1, 4])).identities is t0  # a block's rows share it
    t1 = _block(wire.to_columns(_tables(1), 3), d).identities
    assert t1 is not t0 and t1 != t0
    assert _block(wire.to_columns(_tables(0, containers=2), 5), d).identities != t0  # a shorter table
    other = _block(wire.to_columns(_tables(0), 1)).identities  # another decoder: an equal tuple
    assert other == t0 and hash(other) == hash(t0)
    assert all(a is b for a, b in zip(_block(wire.to_columns(_tables(1), 1), d).identities, t1, strict=True))


def test_a_table_sent_again_is_not_parsed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[int] = []
    real = serde._PARSE_IDENTITY_TABLE

    def counting(raw: bytes) -> vectors_pb2.IdentityTable:
        parsed.append(len(raw))
        return real(raw)

    monkeypatch.setattr(serde, "_PARSE_IDENTITY_TABLE", counting)
    d = serde.Decoder()
    first = _block(wire.to_columns(_tables(0), 1), d).identities
    for seq in range(2, 6):
        assert _block(wire.to_columns(_tables(0, windows=seq), seq), d).identities is first
    assert len(parsed) == 1
    _block(wire.to_columns(_tables(1), 6), d)
    assert len(parsed) == 2


def test_the_identity_table_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serde, "IDENTITY_TABLES_MAX", 3)
    d = serde.Decoder()
    raws = [wire.to_columns(_tables(k), 1).columns.identity_table for k in range(6)]
    tables = [_block(wire.to_columns(_tables(k), 1), d).identities for k in range(6)]
    assert list(d._tables) == raws[3:]  # the least recently used went first
    assert d._table_bytes == sum(map(len, raws[3:]))
    assert _block(wire.to_columns(_tables(5), 2), d).identities is tables[5]  # kept
    evicted = _block(wire.to_columns(_tables(0), 2), d).identities  # no longer cached: built again
    assert evicted is not tables[0] and evicted == tables[0]
    assert list(d._tables) == [raws[4], raws[5], raws[0]]
    # bounded by bytes: at most two of these tables fit; a table larger than the bound decodes, not kept
    monkeypatch.setattr(serde, "IDENTITY_TABLES_MAX_BYTES", 2 * len(raws[0]) + 1)
    d = serde.Decoder()
    for k in range(4):
        _block(wire.to_columns(_tables(k), 1), d)
    assert len(d._tables) == 2 and d._table_bytes == sum(map(len, d._tables)) <= 2 * len(raws[0]) + 1
    big = wire.to_columns(_tables(9, containers=8), 1)
    assert len(big.columns.identity_table) > 2 * len(raws[0]) + 1
    assert len(_block(big, d).identities) == 8 and big.columns.identity_table not in d._tables
    assert len(d._tables) == 2


Edit = Callable[[vectors_pb2.VectorBatch], object]


def _set_u32(row: int, column: str, value: int) -> Edit:
    """An edit of a batch's ``window_u32_le``: ``column`` of window ``row`` set to ``value``."""

    def edit(b: vectors_pb2.VectorBatch) -> None:
        m = window_columns.unpack_u32(b.columns.window_u32_le, b.columns.count).copy()
        m[row, window_columns.U32_COLUMNS.index(column)] = value
        b.columns.window_u32_le = window_columns.pack_u32(m)

    return edit


def _set_bytes(field: str, f: Callable[[bytes], bytes]) -> Edit:
    return lambda b: setattr(b.columns, field, f(getattr(b.columns, field)))


def _window_faults() -> list[tuple[str, int, str, Edit]]:
    """Edits of a batch of 6 windows (5 syscall entries each) that must refuse it: name, reason, what the
    refusal says."""

    def set_index(b: vectors_pb2.VectorBatch) -> None:
        index = np.frombuffer(b.columns.syscall_name_index_le16, "<u2").copy()
        index[4] = 9999
        b.columns.syscall_name_index_le16 = index.tobytes()

    bad, missing = R.REJECT_REASON_BAD_REFERENCE, R.REJECT_REASON_MISSING_FIELD
    return [
        ("window_f64_le cut", bad, "window_f64_le has 1007 bytes: not whole 168-byte rows (21 float64 columns)",
         _set_bytes("window_f64_le", lambda x: x[:-1])),
        ("window_f64_le a row short", bad, "window_f64_le has 5 rows for 6 windows (count)",
         _set_bytes("window_f64_le", lambda x: x[:-168])),
        ("window_f64_le a row more", bad, "window_f64_le has 7 rows for 6 windows (count)",
         _set_bytes("window_f64_le", lambda x: x + x[:168])),
        ("no window_f64_le", missing, "columns.window_f64_le is missing (6 windows)",
         lambda b: b.columns.ClearField("window_f64_le")),
        ("window_u32_le padded", bad, "window_u32_le has 146 bytes: not whole 24-byte rows (6 uint32 columns)",
         _set_bytes("window_u32_le", lambda x: x + b"\x00\x00")),
        ("window_u32_le a row short", bad, "window_u32_le has 5 rows for 6 windows (count)",
         _set_bytes("window_u32_le", lambda x: x[:-24])),
        ("no window_u32_le", missing, "columns.window_u32_le is missing (6 windows)",
         lambda b: b.columns.ClearField("window_u32_le")),
        ("window matrices of another count", bad, "window_f64_le has 6 rows for 5 windows (count)",
         lambda b: setattr(b.columns, "count", 5)),
        ("complete of another length", bad, "columns.complete has 5 values for 6 windows",
         lambda b: b.columns.complete.extend([False] * 5)),
        ("container_exited of another length", bad, "columns.container_exited has 7 values for 6 windows",
         lambda b: b.columns.container_exited.extend([True] * 7)),
        ("syscall index bytes cut", bad, "syscall_name_index_le16 has 59 bytes and syscall_count_f64_le 240: "
         "not whole 2-byte and 8-byte entries", _set_bytes("syscall_name_index_le16", lambda x: x[:-1])),
        ("syscall count bytes padded", bad, "syscall_name_index_le16 has 60 bytes and syscall_count_f64_le 241",
         _set_bytes("syscall_count_f64_le", lambda x: x + b"\x00")),
        ("fewer syscall counts than indices", bad, "syscall_name_index_le16 has 30 entries but syscall_count_f64_le 29",
         _set_bytes("syscall_count_f64_le", lambda x: x[:-8])),
        ("syscall indices without counts", bad, "syscall_name_index_le16 has 30 entries but syscall_count_f64_le 0",
         lambda b: b.columns.ClearField("syscall_count_f64_le")),
        ("syscall counts without indices", bad, "syscall_name_index_le16 has 0 entries but syscall_count_f64_le 30",
         lambda b: b.columns.ClearField("syscall_name_index_le16")),
        ("syscall index past the names", bad, "syscall_name_index 9999 is outside the batch's 5 names", set_index),
        ("syscall lengths that do not add up", bad,
         "columns.window_u32_le's syscall_lengths adds up to 124 but the list has 30",
         _set_u32(0, "syscall_lengths", 99)),
        ("executable lengths that do not add up", bad,
         "columns.window_u32_le's executable_lengths adds up to 1 but the list has 0",
         _set_u32(2, "executable_lengths", 1)),
        ("endpoint index past the endpoints", bad, "endpoint_index refers past the 1 endpoints",
         lambda b: b.columns.endpoint_index.__setitem__(0, 77)),
    ]


def _ngram_faults() -> list[tuple[str, int, str, Edit]]:
    """Edits of a batch of 6 windows with 15 n-gram entries that must refuse it."""

    def zero_count(b: vectors_pb2.VectorBatch) -> None:  # the third entry: its bucket, count 0
        e = np.frombuffer(b.columns.ngram_entry_le32, "<u4").copy()
        e[2] &= 0x1FFFF
        b.columns.ngram_entry_le32 = e.tobytes()

    bad = R.REJECT_REASON_BAD_REFERENCE
    return [
        ("n-gram entry bytes cut", bad, "ngram_entry_le32 has 59 bytes: not whole 4-byte entries",
         _set_bytes("ngram_entry_le32", lambda x: x[:-1])),
        ("n-gram entry bytes padded", bad, "ngram_entry_le32 has 62 bytes: not whole 4-byte entries",
         _set_bytes("ngram_entry_le32", lambda x: x + b"\x00\x00")),
        ("n-gram entry with count 0", bad, "ngram_entry_le32 entry 2 has count 0 (counts are 1..32767)", zero_count),
        ("n-gram entries that do not add up to their lengths", bad,
         "columns.window_u32_le's ngram_lengths adds up to 15 but the list has 16",
         _set_bytes("ngram_entry_le32", lambda x: x + x[:4])),
    ]


def _identity_faults() -> list[tuple[str, int, str, Edit]]:
    """Edits of a batch's identity table (2 identities) that must refuse it."""
    bad = R.REJECT_REASON_BAD_REFERENCE
    return [
        ("identity table cut", bad, "is not a serialized IdentityTable",
         _set_bytes("identity_table", lambda x: x[:-3])),
        ("identity table not a message", bad, "columns.identity_table (3 bytes) is not a serialized IdentityTable",
         _set_bytes("identity_table", lambda x: b"\xff\xff\xff")),
        ("identity table with a string that is not UTF-8", bad, "is not a serialized IdentityTable",
         _set_bytes("identity_table", lambda x: b"\x0a\x04\x0a\x02\xc3\x28" + x)),
        ("identity index past the table", bad, "columns.identity refers past the 2 identities",
         _set_u32(3, "identity", 2)),
        ("no identity table", bad, "columns.identity refers past the 0 identities",
         lambda b: b.columns.ClearField("identity_table")),
    ]


def _faulty_batches() -> list[tuple[str, int, str, vectors_pb2.VectorBatch]]:
    out = []
    for name, reason, says, edit in _window_faults() + _ngram_faults() + _identity_faults():
        vs = [vector(i, c) for i in range(3) for c in range(2)]
        for k, v in enumerate(vs):
            v.ngrams = {9000 + j: 1 + k for j in range(k % 3 * 2)}  # 0, 2, 4, 0, 2, 4 entries
        vs[0].executables = []
        b = wire.to_columns(vs, len(out) + 1)
        c = b.columns
        assert c.count == 6 and len(c.window_f64_le) == 6 * 168 and len(c.window_u32_le) == 6 * 24
        assert len(c.syscall_name_index_le16) == 2 * 30 and len(c.syscall_count_f64_le) == 8 * 30
        assert len(c.ngram_entry_le32) == 4 * 12 and len(c.endpoints) == 1
        if name.startswith("n-gram"):  # 15 entries
            vs[1].ngrams[77] = 5
            vs[4].ngrams[77] = 5
            vs[5].ngrams[77] = 5
            b = wire.to_columns(vs, len(out) + 1)
            assert len(b.columns.ngram_entry_le32) == 4 * 15
        edit(b)
        out.append((name, reason, says, b))
    return out


def test_columns_that_do_not_fit_refuse_the_batch_with_a_message_that_says_why() -> None:
    d = serde.Decoder()  # one decoder: a refused table is not cached, the next good batch decodes
    good = wire.to_columns([vector(i, c) for i in range(3) for c in range(2)], 1)
    for name, reason, says, b in _faulty_batches():
        msg = vectors_pb2.VectorBatch.FromString(b.SerializeToString())
        d.check_batch(msg)
        with pytest.raises(ValidationError) as e:
            d.decode_block(msg)
        assert e.value.reason == R.Name(reason).removeprefix("REJECT_REASON_"), (name, e.value.reason)
        assert says in e.value.message, (name, e.value.message)
        assert len(_block(good, d)) == 6


def test_columns_that_do_not_fit_together_refuse_the_batch_and_the_stream_goes_on() -> None:
    faults = _faulty_batches()

    async def main() -> None:
        async with running(config()) as (srv, _):
            reqs = [raw_batch_request(b) for _, _, _, b in faults]
            resps = await exchange(srv.port, [hello("s1"), *reqs,
                                              *learn_batches(1, start_seq=len(faults) + 1)])
            acks = [r.ack for r in resps[1:]]
            for (name, reason, says, _), ack in zip(faults, acks, strict=False):
                assert ack.batch_rejected == reason, (name, R.Name(ack.batch_rejected), ack.batch_message)
                assert says in ack.batch_message and ack.applied == 0, name
            assert acks[-1].applied == 20

    asyncio.run(main())
