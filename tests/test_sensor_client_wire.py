"""sensor/wire.py (domain -> protobuf): the bytes it writes, byte for byte, and what the service decodes
from them (service/serde.py) is what was encoded."""

from __future__ import annotations

import struct

import pytest
from baseliner.models.vector import Endpoint, FeatureVector, Identity
from baseliner.protos.v1 import ingest_pb2, ngram_entries, vectors_pb2, window_columns
from baseliner.sensor import wire
from baseliner.sensor.synthetic import ScenarioConfig, SyntheticSource
from baseliner.service.serde import Decoder


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
    assert req.batch.sequence == 9 and req.batch.schema_version == wire.SCHEMA_VERSION == 3
    decoder = Decoder()
    decoder.check_batch(req.batch)
    block, errors = decoder.decode_block(req.batch)
    assert errors == [] and block.index.tolist() == list(range(len(vectors)))
    return block.vectors()


def test_every_field_survives_encode_then_service_decode() -> None:
    vectors = [_full_vector(i) for i in range(3)]
    assert _roundtrip(vectors) == vectors


def test_unknown_age_and_empty_lists() -> None:
    v = FeatureVector(Identity("n", "c", "nginx"), 1_767_225_600.0, 5.0)
    (back,) = _roundtrip([v])
    assert back == v and back.seconds_since_start == -1.0 and back.ngrams == {}


def test_synthetic_windows_roundtrip() -> None:
    src = SyntheticSource(ScenarioConfig(hours=0.1, attacks=()))
    vectors = [v for window in src for v in window]
    assert len(vectors) > 100
    assert _roundtrip(vectors) == vectors


def test_the_batch_shares_one_syscall_dictionary_and_one_endpoint_table() -> None:
    vectors = [_full_vector(i) for i in range(4)]
    batch = wire.to_columns(vectors, 1)
    assert list(batch.syscall_names) == ["read", "openat", "execve", "sys_999"]
    assert window_columns.unpack_syscalls(batch.columns.syscall_name_index_le16,
                                          batch.columns.syscall_count_f64_le)[0].tolist() == [0, 1, 2, 3] * 4
    c = batch.columns
    assert [(e.address, e.protocol, e.direction) for e in c.endpoints] == [
        ("203.0.113.45", vectors_pb2.PROTOCOL_TCP, vectors_pb2.DIRECTION_OUTBOUND),
        ("10.96.0.10", vectors_pb2.PROTOCOL_UDP, vectors_pb2.DIRECTION_OUTBOUND),
        ("2001:db8::1", vectors_pb2.PROTOCOL_TCP, vectors_pb2.DIRECTION_INBOUND),
    ]
    assert list(c.endpoint_index) == [0, 1, 2] * 4
    assert list(c.complete) == [False] * 4 and list(c.container_exited) == [True] * 4


def test_sequence_varint_framing_for_large_numbers() -> None:
    body = wire.encode_batch_body([_full_vector(0)])
    for seq in (1, 127, 128, 300, 2**32 + 5, 1_767_225_600_000_000):
        req = ingest_pb2.IngestRequest.FromString(wire.batch_request_bytes(seq, body))
        assert req.batch.sequence == seq and req.batch.columns.count == 1


def _f64(x: float) -> str:
    return struct.pack("<d", x).hex()


def test_golden_bytes_of_a_small_batch() -> None:
    """The whole body, byte for byte (VectorBatch fields 2-4, VectorColumns fields 1-13 in order):
    window_f64_le a float64 row per window, 21 columns (window_start, window_seconds, container_age_seconds,
    the 18 counters; every one, 0 too); window_u32_le a uint32 row per window (identity, syscall, n-gram,
    executable, endpoint and sensitive-path entries); syscall entries as uint16 indices and float64 counts;
    n-gram entries as bucket | count << 17, the count of 40,000 as 32,767 + 7,233, the count of 0 not at all."""
    ident = Identity("n1", "c1", "nginx")
    vectors = [FeatureVector(ident, 100.0, 10.0, {"read": 3, "write": 1}, {7: 2, 300: 40_000}, execs=2,
                             events_lost=1),
               FeatureVector(ident, 110.0, 10.0, {"read": 0.5}, {5: 0}, seconds_since_start=7.0,
                             executables=["/bin/sh"])]
    zeros = _f64(0.0)
    row0 = _f64(100.0) + _f64(10.0) + _f64(-1.0) + _f64(2.0) + zeros * 16 + _f64(1.0)  # execs 2 ... events_lost 1
    row1 = _f64(110.0) + _f64(10.0) + _f64(7.0) + zeros * 18
    assert wire.encode_batch_body(vectors).hex() == (
        "1003"  # schema_version 3
        "1a04" "72656164" "1a05" "7772697465"  # syscall_names: read, write
        "22" "d303"  # columns, 467 bytes
        "0802"  # count 2
        "1211" "0a0f" "0a026e31" "12026331" "22056e67696e78"  # identity_table: Identity{n1, c1, nginx}
        "1a" "d002" + row0 + row1  # window_f64_le, 336 bytes
        + "2230"  # window_u32_le, 48 bytes
        "00000000" "02000000" "03000000" "00000000" "00000000" "00000000"
        "00000000" "01000000" "00000000" "01000000" "00000000" "00000000"
        "3a06" "0000" "0100" "0000"  # syscall_name_index_le16: read, write, read
        "4218" + _f64(3.0) + _f64(1.0) + _f64(0.5)  # syscall_count_f64_le
        + "4a0c" "07000400" "2c01feff" "2c018238"  # ngram_entry_le32: 7|2<<17, 300|32767<<17, 300|7233<<17
        "5207" "2f62696e2f7368"  # executables: /bin/sh
    )
    vectors[1].ngrams = {}  # (a count of 0 is no entry)
    assert _roundtrip(vectors) == vectors


def test_golden_bytes_of_an_identity_table_of_two_containers() -> None:
    """Field 1 (tag 0a) of the IdentityTable once per identity, each an Identity message, its unset fields
    left out; each window names its identity by index (window_u32_le's first column)."""
    a = Identity("n1", "c1", "nginx")
    b = Identity("n1", "c2", "db", "16", pod="db-0", namespace="shop")
    vectors = [FeatureVector(a, 100.0, 10.0), FeatureVector(b, 100.0, 10.0), FeatureVector(a, 110.0, 10.0)]
    c = wire.to_columns(vectors).columns
    assert c.identity_table.hex() == (
        "0a0f" "0a026e31" "12026331" "22056e67696e78"  # Identity{node n1, container_id c1, repository nginx}
        "0a1c" "0a026e31" "12026332" "220264622a023136" "3a0464622d30" "420473686f70"  # c2, db:16, db-0, shop
    )
    assert window_columns.unpack_u32(c.window_u32_le, 3)[:, 0].tolist() == [0, 1, 0]
    assert _roundtrip(vectors) == vectors


def test_the_workload_travels_with_the_identity() -> None:
    """Field 9 of Identity: the pod's Kubernetes workload (what image lineage follows across versions)."""
    web = Identity("n1", "c1", "shop/web", "1.2", pod="web-7c9f8d6b5-x2x4k", namespace="shop",
                   workload="deployment/web")
    (back,) = _roundtrip([FeatureVector(web, 100.0, 10.0)])
    assert back.identity == web and back.identity.workload == "deployment/web"
    assert wire.to_columns([FeatureVector(web, 100.0, 10.0)]).columns.identity_table.hex().endswith(
        "4a" "0e" + b"deployment/web".hex())


def test_ngram_counts_past_the_entry_form_split_saturate_or_raise() -> None:
    v = _full_vector(0)
    v.ngrams = {5: 32_767, 6: 32_768, 7: 2**32 - 1, 8: 2**40, 9: 0, 10: 1}
    raw = wire.to_columns([v]).columns.ngram_entry_le32
    buckets, counts = (a.tolist() for a in ngram_entries.unpack(raw))
    pieces = -(-(2**32 - 1) // 32_767)  # 131,076 entries for a count of 2**32 - 1
    assert buckets == [5, 6, 6] + [7] * pieces + [8] * pieces + [10]
    assert counts[:3] == [32_767, 32_767, 1] and counts[-1] == 1
    assert sum(counts[3:3 + pieces]) == sum(counts[3 + pieces:-1]) == 2**32 - 1
    (back,) = _roundtrip([v])
    assert back.ngrams == {5: 32_767, 6: 32_768, 7: 2**32 - 1, 8: 2**32 - 1, 10: 1}  # saturated; 0: no entry
    for bad in ({5: -1}, {5: 2**40, 6: -1}, {2**17: 1}, {-1: 1}):
        v.ngrams = bad
        with pytest.raises(ValueError):
            wire.to_columns([v])


def test_a_batch_of_more_syscall_names_than_uint16_indices_name_is_refused_by_the_encoder() -> None:
    """uint16 indices name 65,536 syscall names (the service reads at most 2,048 per batch)."""
    ident = Identity("n", "c", "nginx")
    vs = [FeatureVector(ident, 1.7e9 + 10 * k, 10.0, {f"sys_{k}_{j}": 1 for j in range(512)}) for k in range(128)]
    assert len(wire.to_columns(vs).syscall_names) == 65_536
    vs.append(FeatureVector(ident, 1.7e9 + 1280, 10.0, {"one_more": 3}))
    with pytest.raises(ValueError, match="at most 65536 syscall names"):
        wire.to_columns(vs)


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
    assert [(i.node, i.container_id, i.image_repository)
            for i in real.FromString(wire.identity_table_bytes(big)).identities] == [
        ("n1", f"c{j}", "nginx") for j in range(40)]
