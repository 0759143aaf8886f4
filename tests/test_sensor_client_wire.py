"""sensor/wire.py (domain -> protobuf) and service/serde.py (protobuf -> domain) agree."""

from __future__ import annotations

import struct

import pytest
from baseliner.models.vector import Endpoint, FeatureVector, Identity
from baseliner.protos.v1 import ingest_pb2, ngram_entries, vectors_pb2, window_columns
from baseliner.sensor import wire
from baseliner.sensor.synthetic import ScenarioConfig, SyntheticSource
from baseliner.service.serde import Decoder
from google.protobuf.message import DecodeError


def _full_vector(i: int) -> FeatureVector:
    ident = Identity("node-7", f"c{i}", "registry.example.com:5000/acme/api", "2.1.0", "sha256:" + "ab" * 32,
                     "api", f"api-5d9c-{i}", "prod")
    return FeatureVector(
        ident, 1_767_225_600.0 + 10 * i, 10.0,
        syscalls={"read": 10 + i, "openat": 3, "execve": 1, "sys_999": 2},
        ngrams={5: 3, 4096 + 17: 1, 8191 + i: 2},
        execs=1, forks=2, exits=1, executables=["/bin/sh", "/usr/bin/curl"],
        connects=3, connects_failed=1, accepts=4, listens=1, bytes_sent=123456789, bytes_received=42,
        packets_sent=7, packets_received=9, remote_addresses=2, remote_ports=3, dns_queries=1,
        endpoints=[Endpoint("203.0.113.45", 4444, "tcp", True), Endpoint("10.96.0.10", 53, "udp", True),
                   Endpoint("2001:db8::1", 8080, "tcp", False)],
        write_opens=5, sensitive_writes=1, sensitive_paths=["/etc/passwd"],
        events_lost=3, complete=False, container_exited=True, seconds_since_start=12.5,
    )


def _roundtrip(vectors: list[FeatureVector]) -> list[FeatureVector]:
    req = ingest_pb2.IngestRequest.FromString(wire.batch_request_bytes(9, wire.encode_batch_body(vectors)))
    assert req.batch.sequence == 9 and req.batch.schema_version == wire.SCHEMA_VERSION
    decoder = Decoder()
    decoder.check_batch(req.batch)
    out = []
    for i, item in decoder.decode(req.batch):
        assert not isinstance(item, Exception), item
        assert i == len(out)
        out.append(item)
    return out


def test_every_field_survives_encode_then_service_decode() -> None:
    vectors = [_full_vector(i) for i in range(3)]
    assert _roundtrip(vectors) == vectors


def test_unknown_age_and_empty_lists() -> None:
    v = FeatureVector(Identity("n", "c", "nginx"), 1_767_225_600.0, 5.0)
    (back,) = _roundtrip([v])
    assert back == v and back.seconds_since_start == -1.0 and back.ngrams == {}


def test_syscall_dictionary_is_shared_per_batch() -> None:
    vectors = [_full_vector(i) for i in range(4)]
    batch = wire.to_batch(vectors, 1)
    assert sorted(batch.syscall_names) == sorted({"read", "openat", "execve", "sys_999"})
    assert all(len(v.syscall_name_index) == 4 for v in batch.vectors)
    b0 = batch.vectors[0]
    assert b0.ngram_spec == 2 and dict(zip(b0.ngram_bucket, b0.ngram_count, strict=True)) == vectors[0].ngrams
    assert batch.vectors[0].network.endpoints[1].protocol == vectors_pb2.PROTOCOL_UDP
    assert batch.vectors[0].network.endpoints[2].direction == vectors_pb2.DIRECTION_INBOUND


def test_synthetic_windows_roundtrip() -> None:
    src = SyntheticSource(ScenarioConfig(hours=0.1, attacks=()))
    vectors = [v for window in src for v in window]
    assert len(vectors) > 100
    assert _roundtrip(vectors) == vectors


def test_sequence_varint_framing_for_large_numbers() -> None:
    body = wire.encode_batch_body([_full_vector(0)])
    for seq in (1, 127, 128, 300, 2**32 + 5, 1_767_225_600_000_000):
        req = ingest_pb2.IngestRequest.FromString(wire.batch_request_bytes(seq, body))
        assert req.batch.sequence == seq and req.batch.columns.count == 1


def _small_batch() -> list[FeatureVector]:
    ident = Identity("n1", "c1", "nginx")
    return [FeatureVector(ident, 100.0, 10.0, ngrams={7: 2, 300: 32767, 77823: 1}),
            FeatureVector(ident, 110.0, 10.0),
            FeatureVector(ident, 120.0, 10.0, ngrams={2**17 - 1: 5})]


def test_golden_bytes_of_a_small_batch_in_the_entry_form() -> None:
    """The whole body, byte for byte: field 46 (tag f2 02), one little-endian uint32 per entry,
    bucket | count << 17 (7|2<<17 = 0x00040007, 300|32767<<17 = 0xfffe012c, 77823|1<<17 = 0x00032fff,
    131071|5<<17 = 0x000bffff); the identity table after it, as field 47 (see the next test).  The
    windows in the repeated form, as a service without Welcome.window_bytes gets them (the window bytes
    form: test_golden_bytes_of_a_small_batch_in_the_window_bytes_form)."""
    body = wire.repeated_windows(wire.encode_batch_body(_small_batch()))
    assert body.hex() == (
        "10012a860108031a03000000221800000000000059400000000000805b400000000000005e402a1800000000000024400000"
        "0000000024400000000000002440ea0118000000000000f0bf000000000000f0bf000000000000f0bf880202920203030001"
        "f20210" "07000400" "2c01feff" "ff2f0300" "ffff0b00"
        "fa0211" "0a0f0a026e311202633122056e67696e78"
    )
    c = vectors_pb2.VectorBatch.FromString(body).columns
    assert not c.ngram_bucket_le32 and not c.ngram_count_le32 and not c.ngram_bucket and not c.ngram_count
    assert ngram_entries.BUCKET_BITS == 17 and ngram_entries.MAX_COUNT == 32767
    pairs = wire.to_columns(_small_batch(), ngram_entries=False).SerializeToString()
    assert len(pairs) - len(wire.encode_batch_body(_small_batch())) == 4 * 4 + 3  # 4 bytes less per entry and
    # one 3-byte field header less


def test_entry_form_round_trip_decodes_to_the_block_of_the_pair_form() -> None:
    vectors = [_full_vector(i) for i in range(5)]
    vectors[1].ngrams = {}
    vectors[3].ngrams = {0: 32767, 77_823: 1, 2**17 - 1: 9}
    entries = wire.encode_batch_body(vectors)
    assert vectors_pb2.VectorBatch.FromString(entries).columns.ngram_entry_le32
    pairs = wire.to_columns(vectors, ngram_entries=False).SerializeToString()
    assert _block_ngrams(entries) == _block_ngrams(pairs)
    assert _roundtrip(vectors) == vectors


def test_a_count_of_40000_sends_the_batch_in_the_pair_form_and_it_decodes_exactly() -> None:
    vectors = [_full_vector(i) for i in range(3)]
    vectors[2].ngrams[9] = 40_000
    c = vectors_pb2.VectorBatch.FromString(wire.encode_batch_body(vectors)).columns
    assert not c.ngram_entry_le32 and c.ngram_bucket_le32 and c.ngram_count_le32
    assert _roundtrip(vectors) == vectors
    # so do a count of 0 and a bucket past 17 bits (which the service then rejects, as in any form)
    for grams in ({5: 0, 6: 1}, {2**17: 1}):
        vectors[2].ngrams = grams
        c = vectors_pb2.VectorBatch.FromString(wire.encode_batch_body(vectors)).columns
        assert not c.ngram_entry_le32 and c.ngram_bucket_le32
        assert _block_ngrams(wire.encode_batch_body(vectors))[1][-len(grams):] == list(grams)


def test_columns_carry_ngrams_as_little_endian_uint32_bytes() -> None:
    vectors = [_full_vector(i) for i in range(3)]
    vectors[1].ngrams = {}
    vectors[2].ngrams[70_000] = 2**31 + 5  # 4-byte entries, whatever the value (a batch past the entry form)
    buckets = [b for v in vectors for b in v.ngrams]
    counts = [x for v in vectors for x in v.ngrams.values()]
    c = wire.to_columns(vectors, 1, window_bytes=False).columns
    assert c.ngram_spec == 2 and list(c.ngram_lengths) == [3, 0, 4]
    assert not c.ngram_bucket and not c.ngram_count  # one form per batch
    assert c.ngram_bucket_le32 == struct.pack(f"<{len(buckets)}I", *buckets)
    assert c.ngram_count_le32 == struct.pack(f"<{len(counts)}I", *counts)
    assert not c.ngram_entry_le32
    packed = wire.to_columns(vectors, 1, ngram_bytes=False, window_bytes=False).columns
    assert list(packed.ngram_bucket) == buckets and list(packed.ngram_count) == counts
    assert not packed.ngram_bucket_le32 and not packed.ngram_count_le32
    assert packed.ngram_lengths == c.ngram_lengths
    empty = wire.to_columns([FeatureVector(Identity("n", "c", "nginx"), 1.7e9, 5.0)]).columns
    assert empty.ngram_spec == 0 and not empty.ngram_bucket_le32 and not empty.ngram_count_le32
    assert not empty.ngram_entry_le32


def test_ngram_counts_past_uint32_saturate_and_other_out_of_range_values_raise() -> None:
    v = _full_vector(0)
    v.ngrams = {5: 2**32, 6: 2**40, 7: 2**32 - 1, 8: 1, 9: 0}
    (back,) = _roundtrip([v])
    assert back.ngrams == {5: 2**32 - 1, 6: 2**32 - 1, 7: 2**32 - 1, 8: 1, 9: 0}
    for bad in ({5: -1}, {5: 2**40, 6: -1}, {2**32: 1}, {-1: 1}):
        v.ngrams = bad
        with pytest.raises(OverflowError):
            wire.to_columns([v])


def _block_ngrams(body: bytes) -> tuple[list[int], list[int], list[float]]:
    """The n-gram arrays the service decodes from ``body`` (a batch body, any form)."""
    batch = vectors_pb2.VectorBatch.FromString(body)
    batch.sequence = 1
    decoder = Decoder()
    decoder.check_batch(batch)
    block, errors = decoder.decode_block(batch)
    assert not errors
    return block.ng_ptr.tolist(), block.ng_bucket.tolist(), block.ng_count.tolist()


def test_packed_ngrams_gives_what_to_columns_writes_in_the_packed_form() -> None:
    vectors = [_full_vector(i) for i in range(4)]
    vectors[1].ngrams = {}
    vectors[3].ngrams = {0: 2**32 - 1, 2**32 - 1: 1, 12_287: 0}  # the largest count and bucket (pair form)
    body = wire.encode_batch_body(vectors)
    packed = wire.packed_ngrams(body)
    c = vectors_pb2.VectorBatch.FromString(packed).columns
    assert not c.ngram_bucket_le32 and not c.ngram_count_le32 and len(c.ngram_bucket) == 3 + 0 + 3 + 3
    reference = wire.to_columns(vectors, ngram_bytes=False).SerializeToString()
    ptr, buckets, counts = _block_ngrams(packed)
    assert (ptr, buckets, counts) == _block_ngrams(reference) == _block_ngrams(body)
    assert ptr == [0, 3, 3, 6, 9]
    assert buckets[-3:] == [0, 2**32 - 1, 12_287] and counts[-3:] == [2**32 - 1, 1, 0]
    # only the n-gram entries moved: the rest of the batch is as encoded
    before, after = vectors_pb2.VectorBatch.FromString(body), vectors_pb2.VectorBatch.FromString(packed)
    before.columns.ClearField("ngram_bucket_le32")
    before.columns.ClearField("ngram_count_le32")
    after.columns.ClearField("ngram_bucket")
    after.columns.ClearField("ngram_count")
    assert after == before and after.columns.ngram_spec == 2
    # a count the bytes form saturated arrives saturated in the packed form too
    vectors[3].ngrams = {0: 2**40}
    c = vectors_pb2.VectorBatch.FromString(wire.packed_ngrams(wire.encode_batch_body(vectors))).columns
    assert c.ngram_count[-1] == 2**32 - 1


def test_pair_and_packed_ngrams_convert_the_entry_form() -> None:
    vectors = [_full_vector(i) for i in range(4)]
    vectors[1].ngrams = {}
    vectors[3].ngrams = {0: 32767, 2**17 - 1: 1, 12_287: 7}  # the largest count and bucket of the form
    body = wire.encode_batch_body(vectors)
    assert vectors_pb2.VectorBatch.FromString(body).columns.ngram_entry_le32
    paired, packed = wire.pair_ngrams(body), wire.packed_ngrams(body)
    assert paired == wire.to_columns(vectors, ngram_entries=False).SerializeToString()
    assert packed == wire.to_columns(vectors, ngram_bytes=False).SerializeToString()
    assert wire.packed_ngrams(paired) == packed
    assert _block_ngrams(body) == _block_ngrams(paired) == _block_ngrams(packed)


def test_pair_ngrams_leaves_bodies_without_the_entry_form_alone() -> None:
    no_grams = _full_vector(0)
    no_grams.ngrams = {}
    big = _full_vector(1)
    big.ngrams[3] = 40_000
    for body in (wire.encode_batch_body([no_grams]),
                 wire.encode_batch_body([big]),  # the pair form already
                 wire.to_columns([_full_vector(1)], ngram_bytes=False).SerializeToString(),
                 wire.to_batch([_full_vector(2)]).SerializeToString()):
        assert wire.pair_ngrams(body) is body


def test_pair_and_packed_ngrams_refuse_malformed_entries() -> None:
    def entries(raw: bytes, **other: object) -> bytes:
        batch = wire.to_columns([_full_vector(0)])
        assert batch.columns.ngram_entry_le32
        batch.columns.ngram_entry_le32 = raw
        for name, value in other.items():
            field = getattr(batch.columns, name)
            if isinstance(value, bytes):
                setattr(batch.columns, name, value)
            else:
                field.append(value)
        return batch.SerializeToString()

    one = (5 | 1 << 17).to_bytes(4, "little")
    for bad in (entries(one[:3]), entries(one + b"\x01"), entries(one + (9).to_bytes(4, "little")),  # count 0
                entries(one, ngram_bucket_le32=b"\x05\0\0\0", ngram_count_le32=b"\x01\0\0\0"),
                entries(one, ngram_bucket=5, ngram_count=1)):
        for convert in (wire.pair_ngrams, wire.packed_ngrams):
            with pytest.raises(ValueError):
                convert(bad)


def test_packed_ngrams_leaves_bodies_without_the_bytes_form_alone() -> None:
    no_grams = _full_vector(0)
    no_grams.ngrams = {}
    for body in (wire.encode_batch_body([no_grams]),
                 wire.to_columns([_full_vector(1)], ngram_bytes=False).SerializeToString(),  # an older spool
                 wire.to_batch([_full_vector(2)]).SerializeToString()):  # one message per window
        assert wire.packed_ngrams(body) is body


def test_packed_ngrams_refuses_malformed_bytes() -> None:
    for bucket, count in ((b"\x01\x00\x00", b"\x01\x00\x00\x00"), (b"\x01\x00\x00\x00" * 2, b"\x01\x00\x00\x00")):
        batch = wire.to_columns([_full_vector(0)])
        batch.columns.ngram_bucket_le32, batch.columns.ngram_count_le32 = bucket, count
        with pytest.raises(ValueError):
            wire.packed_ngrams(batch.SerializeToString())
    both = wire.to_columns([_full_vector(0)])
    both.columns.ngram_bucket.append(1)
    both.columns.ngram_count.append(1)
    with pytest.raises(ValueError):
        wire.packed_ngrams(both.SerializeToString())


def _two_containers() -> list[FeatureVector]:
    a = Identity("n1", "c1", "nginx")
    b = Identity("n1", "c2", "db", "16", pod="db-0", namespace="shop")
    return [FeatureVector(a, 100.0, 10.0), FeatureVector(b, 100.0, 10.0), FeatureVector(a, 110.0, 10.0)]


def test_golden_bytes_of_a_small_batch_with_its_identity_table_as_bytes() -> None:
    """The whole body, byte for byte: the identity table as field 47 (tag fa 02), the bytes of an
    IdentityTable (field 1 of each Identity message, tag 0a), and no repeated identities (field 2).  The
    windows in the repeated form, as a service without Welcome.window_bytes gets them."""
    body = wire.repeated_windows(wire.encode_batch_body(_two_containers()))
    table = (
        "0a0f" "0a026e31" "12026331" "22056e67696e78"  # Identity{node n1, container_id c1, repository nginx}
        "0a1c" "0a026e31" "12026332" "220264622a023136" "3a0464622d30" "420473686f70"  # c2, db:16, db-0, shop
    )
    assert body.hex() == (
        "1001" "2a8801"  # schema_version 1; columns, 136 bytes
        "0803"  # count 3
        "1a03000100"  # identity: per window, an index into the table
        "2218000000000000594000000000000059400000000000805b40"
        "2a18000000000000244000000000000024400000000000002440"
        "ea0118000000000000f0bf000000000000f0bf000000000000f0bf"
        "fa022f" + table  # identity_table, 47 bytes
    )
    c = vectors_pb2.VectorBatch.FromString(body).columns
    assert not c.identities and c.identity_table == bytes.fromhex(table)
    assert wire.identity_table_bytes([v.identity for v in _two_containers()[:2]]) == bytes.fromhex(table)
    repeated = wire.to_columns(_two_containers(), identity_table=False, window_bytes=False).SerializeToString()
    assert len(vectors_pb2.VectorBatch.FromString(repeated).columns.identities) == 2
    assert len(body) - len(repeated) == 3  # the same bytes per identity, plus one 3-byte field header


def _block(body: bytes):  # type: ignore[no-untyped-def]
    batch = vectors_pb2.VectorBatch.FromString(body)
    batch.sequence = 1
    decoder = Decoder()
    decoder.check_batch(batch)
    block, errors = decoder.decode_block(batch)
    assert not errors
    return block


def test_identity_table_as_bytes_round_trips_and_decodes_like_the_repeated_form() -> None:
    vectors = [_full_vector(i % 3) for i in range(7)]  # 3 containers, 7 windows
    vectors.append(FeatureVector(Identity("node-7", "bare", "alpine"), 1_767_225_700.0, 10.0))  # defaults only
    body = wire.encode_batch_body(vectors)
    c = vectors_pb2.VectorBatch.FromString(body).columns
    assert c.identity_table and not c.identities
    assert window_columns.unpack_u32(c.window_u32_le, 8)[:, 0].tolist() == [0, 1, 2, 0, 1, 2, 0, 3]
    assert _roundtrip(vectors) == vectors
    repeated = wire.to_columns(vectors, identity_table=False).SerializeToString()
    a, b = _block(body), _block(repeated)
    assert a.identities == b.identities == [v.identity for v in vectors[:3]] + [vectors[-1].identity]
    assert a.ident.tolist() == b.ident.tolist() and a.vectors() == b.vectors() == vectors


def test_repeated_identities_gives_what_to_columns_writes_and_composes_with_the_ngram_conversions() -> None:
    vectors = [_full_vector(i % 4) for i in range(9)]
    vectors[3].ngrams = {0: 32767, 2**17 - 1: 1}  # the entry form
    body = wire.encode_batch_body(vectors)
    c = vectors_pb2.VectorBatch.FromString(body).columns
    assert c.identity_table and c.ngram_entry_le32
    repeated = wire.repeated_identities(body)
    assert repeated == wire.to_columns(vectors, identity_table=False).SerializeToString()
    # a service before the entry form, and one before every bytes form: both conversions, in either order
    for kw, ngrams in (({"ngram_entries": False}, wire.pair_ngrams), ({"ngram_bytes": False}, wire.packed_ngrams)):
        expected = wire.to_columns(vectors, identity_table=False, **kw).SerializeToString()
        assert ngrams(wire.repeated_identities(body)) == expected
        assert wire.repeated_identities(ngrams(body)) == expected
    # only the identity table moved: the rest of the batch is as encoded
    before, after = vectors_pb2.VectorBatch.FromString(body), vectors_pb2.VectorBatch.FromString(repeated)
    assert [i.container_id for i in after.columns.identities] == ["c0", "c1", "c2", "c3"]
    before.columns.ClearField("identity_table")
    after.columns.ClearField("identities")
    assert after == before
    assert _block(repeated).vectors() == _block(body).vectors() == vectors


def test_repeated_identities_leaves_bodies_without_the_bytes_form_alone_and_refuses_malformed_ones() -> None:
    for body in (wire.to_columns([_full_vector(1)], identity_table=False).SerializeToString(),  # an older spool
                 wire.to_batch([_full_vector(2)]).SerializeToString(),  # one message per window
                 wire.encode_batch_body([])):  # no windows, no table
        assert wire.repeated_identities(body) is body
    batch = wire.to_columns([_full_vector(0)])
    batch.columns.identities.add(node="n", container_id="c", image_repository="nginx")  # both forms
    with pytest.raises(ValueError, match="both forms"):
        wire.repeated_identities(batch.SerializeToString())
    batch = wire.to_columns([_full_vector(0)])
    batch.columns.identity_table = b"\x0a\x05\x0a"  # an Identity message cut short
    with pytest.raises(DecodeError):
        wire.repeated_identities(batch.SerializeToString())


def test_identity_table_bytes_are_serialised_once_per_distinct_table_and_the_cache_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wire, "_TABLES", type(wire._TABLES)())
    monkeypatch.setattr(wire, "_tables_bytes", 0)
    serialised = []
    real = vectors_pb2.IdentityTable

    class Counting:
        def __new__(cls):  # type: ignore[no-untyped-def]
            serialised.append(1)
            return real()

    monkeypatch.setattr(wire.vectors_pb2, "IdentityTable", Counting)
    tables = [[Identity("n1", f"c{k}-{j}", "nginx") for j in range(3)] for k in range(6)]
    first = wire.identity_table_bytes(tables[0])
    # the same table again (equal identities, other objects, a list or a tuple): the same bytes object
    assert wire.identity_table_bytes(tuple(Identity(i.node, i.container_id, i.image_repository)
                                           for i in tables[0])) is first
    assert len(serialised) == 1
    assert wire.identity_table_bytes(tables[1]) != first and len(serialised) == 2
    assert wire.identity_table_bytes(tables[0][:2]) != first and len(serialised) == 3  # another table
    # bounded by entries ...
    monkeypatch.setattr(wire, "IDENTITY_TABLES_MAX", 3)
    for t in tables:
        wire.identity_table_bytes(t)
    assert len(wire._TABLES) == 3 and wire._tables_bytes == sum(map(len, wire._TABLES.values()))
    assert list(wire._TABLES) == [tuple(t) for t in tables[3:]]  # the least recently used went first
    # ... and by bytes; a table larger than the bound is serialised every time, not kept
    monkeypatch.setattr(wire, "IDENTITY_TABLES_MAX_BYTES", 2 * len(first) + 1)
    wire.identity_table_bytes(tables[0])
    assert len(wire._TABLES) == 2 and wire._tables_bytes <= 2 * len(first) + 1
    big = [Identity("n1", f"c{j}", "nginx") for j in range(40)]
    n = len(serialised)
    assert wire.identity_table_bytes(big) == wire.identity_table_bytes(big) and len(serialised) == n + 2
    assert tuple(big) not in wire._TABLES
    # what it serialises is an IdentityTable of the identities, in order
    assert list(real.FromString(wire.identity_table_bytes(big)).identities) == list(
        wire.to_columns([FeatureVector(i, 1.7e9, 5.0) for i in big], identity_table=False).columns.identities)


def test_golden_bytes_of_a_small_batch_in_the_window_bytes_form() -> None:
    """The whole body, byte for byte: window_f64_le (field 48, tag 82 03), a float64 row per window,
    20 columns (window_start, window_seconds, container_age_seconds, the 17 counters; every one, 0 too);
    window_u32_le (49, tag 8a 03), a uint32 row per window (identity, syscall_lengths, ngram_lengths,
    executable_lengths, endpoint_lengths, sensitive_path_lengths); the syscall entries as uint16 indices
    (50, tag 92 03) and float64 counts (51, tag 9a 03); no repeated per-window field."""
    ident = Identity("n1", "c1", "nginx")
    vectors = [FeatureVector(ident, 100.0, 10.0, {"read": 3, "write": 1}, execs=2, events_lost=1),
               FeatureVector(ident, 110.0, 10.0, {"read": 0.5}, seconds_since_start=7.0, executables=["/bin/sh"])]
    body = wire.encode_batch_body(vectors)
    zeros = "0000000000000000"

    def f64(x: float) -> str:
        return struct.pack("<d", x).hex()

    row0 = f64(100.0) + f64(10.0) + f64(-1.0) + f64(2.0) + zeros * 15 + f64(1.0)  # execs 2 ... events_lost 1
    row1 = f64(110.0) + f64(10.0) + f64(7.0) + zeros * 17
    assert body.hex() == (
        "1001" "1a04" "72656164" "1a05" "7772697465"  # schema_version 1; syscall_names read, write
        "2a" "bb03"  # columns, 443 bytes
        "0802"  # count 2
        "b202" "07" "2f62696e2f7368"  # executables
        "fa0211" "0a0f0a026e311202633122056e67696e78"  # identity_table
        "8203" "c002" + row0 + row1  # window_f64_le, 320 bytes
        + "8a03" "30" "00000000" "02000000" "00000000" "00000000" "00000000" "00000000"  # window_u32_le, 48 bytes
        "00000000" "01000000" "00000000" "01000000" "00000000" "00000000"
        "9203" "06" "0000" "0100" "0000"  # syscall_name_index_le16: read, write, read
        "9a03" "18" + f64(3.0) + f64(1.0) + f64(0.5)  # syscall_count_f64_le
    )
    assert len(row0) == len(row1) == 2 * window_columns.F64_ROW_BYTES == 320
    c = vectors_pb2.VectorBatch.FromString(body).columns
    assert not (c.window_start or c.identity or c.execs or c.syscall_lengths or c.syscall_name_index
                or c.syscall_count or c.container_age_seconds or c.executable_lengths)
    assert _roundtrip(vectors) == vectors


def _windows_vectors() -> list[FeatureVector]:
    """Every field in some windows, defaults in others (a counter 0 in every window, windows without lists)."""
    vectors = [_full_vector(i % 4) for i in range(9)]
    vectors[3].ngrams = {0: 32767, 2**17 - 1: 1}  # the entry form
    vectors[4].syscalls, vectors[4].executables, vectors[4].seconds_since_start = {}, [], -1.0
    for v in vectors:
        v.listens = 0
    vectors.append(FeatureVector(Identity("node-7", "bare", "alpine"), 1_767_225_700.0, 10.0))  # defaults only
    return vectors


def test_repeated_windows_gives_what_to_columns_writes_and_composes_with_every_other_conversion() -> None:
    vectors = _windows_vectors()
    body = wire.encode_batch_body(vectors)
    c = vectors_pb2.VectorBatch.FromString(body).columns
    assert c.window_f64_le and c.window_u32_le and c.syscall_name_index_le16 and c.syscall_count_f64_le
    assert c.identity_table and c.ngram_entry_le32
    repeated = wire.repeated_windows(body)
    assert repeated == wire.to_columns(vectors, window_bytes=False).SerializeToString()
    r = vectors_pb2.VectorBatch.FromString(repeated).columns
    assert not r.listens and len(r.execs) == len(r.window_start) == len(vectors)  # 0 everywhere: left out
    # every older service: the conversions in any order give what to_columns writes in those forms
    conversions = {"identity_table": wire.repeated_identities, "ngram_entries": wire.pair_ngrams,
                   "ngram_bytes": wire.packed_ngrams}
    for older in (["identity_table"], ["identity_table", "ngram_entries"],
                  ["identity_table", "ngram_entries", "ngram_bytes"], ["identity_table", "ngram_bytes"]):
        expected = wire.to_columns(vectors, window_bytes=False, **dict.fromkeys(older, False)).SerializeToString()
        convert = [conversions[k] for k in older if not (k == "ngram_entries" and "ngram_bytes" in older)]
        for first in range(len(convert) + 1):  # repeated_windows before, between and after the others
            out = body
            for f in convert[:first] + [wire.repeated_windows] + convert[first:]:
                out = f(out)
            assert out == expected, (older, first)
    # only the window groups moved: the rest of the batch is as encoded
    before, after = vectors_pb2.VectorBatch.FromString(body), vectors_pb2.VectorBatch.FromString(repeated)
    for name in ("window_f64_le", "window_u32_le", "syscall_name_index_le16", "syscall_count_f64_le"):
        before.columns.ClearField(name)
    for name in (*window_columns.F64_COLUMNS, *window_columns.U32_COLUMNS, *window_columns.SYSCALL_FIELDS):
        after.columns.ClearField(name)
    assert after == before
    assert _block(repeated).vectors() == _block(body).vectors() == vectors


def test_repeated_windows_leaves_bodies_without_the_bytes_form_alone_and_refuses_malformed_ones() -> None:
    for body in (wire.to_columns([_full_vector(1)], window_bytes=False).SerializeToString(),  # an older spool
                 wire.to_batch([_full_vector(2)]).SerializeToString(),  # one message per window
                 wire.encode_batch_body([])):  # no windows
        assert wire.repeated_windows(body) is body

    def edited(edit) -> bytes:  # type: ignore[no-untyped-def]
        batch = wire.to_columns([_full_vector(0), _full_vector(1)])
        edit(batch.columns)
        return batch.SerializeToString()

    for edit, says in (
        (lambda c: c.window_start.extend([1.0, 2.0]), "window columns in window_f64_le and in their repeated"),
        (lambda c: c.syscall_lengths.extend([4, 4]), "window columns in window_u32_le and in their repeated"),
        (lambda c: c.syscall_count.append(1.0), "syscall entries in syscall_name_index_le16/syscall_count_f64_le "
                                               "and repeated"),
        (lambda c: setattr(c, "window_f64_le", c.window_f64_le[:-1]), "window_f64_le has 319 bytes: not whole"),
        (lambda c: setattr(c, "window_u32_le", c.window_u32_le[:24]), "window_u32_le has 1 rows for 2 windows"),
        (lambda c: setattr(c, "count", 3), "window_f64_le has 2 rows for 3 windows"),
        (lambda c: setattr(c, "syscall_count_f64_le", c.syscall_count_f64_le[:-8]),
         "syscall_name_index_le16 has 8 entries but syscall_count_f64_le 7"),
        (lambda c: setattr(c, "syscall_name_index_le16", c.syscall_name_index_le16[:-1]), "not whole 2-byte"),
    ):
        with pytest.raises(ValueError) as e:
            wire.repeated_windows(edited(edit))
        assert says in str(e.value)
