"""Batches as columns (``VectorColumns``, what the sensor sends): round trip, same verdicts as the
one-message-per-window form, every per-window fault rejected alone with its reason, every structural
fault refusing the batch, all against a real grpc.aio server where a server is involved."""

from __future__ import annotations

import asyncio
import math
import os
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
    sample,
    scrape,
    vector,
)

R = ingest_pb2.RejectReason


def _roundtrip(vectors: list[FeatureVector]) -> tuple[VectorBlock, list[ValidationError]]:
    msg = vectors_pb2.VectorBatch.FromString(wire.to_columns(vectors, 1).SerializeToString())
    d = serde.Decoder()
    d.check_batch(msg)
    return d.decode_block(msg)


def test_columns_round_trip_every_field() -> None:
    a = Identity("node-1", "c1", "nginx", "1.27", "sha256:ab", "web", "web-pod", "prod")
    b = Identity("node-2", "c2", "registry.local/team/db", "16")
    vs = [
        FeatureVector(a, 1.7e9, 10.0, {"read": 5, "write": 2}, {3: 4, 9000: 1}, execs=1, forks=2, exits=3,
                      executables=["/bin/sh"], connects=4, connects_failed=1, accepts=7, listens=1, bytes_sent=100,
                      bytes_received=200, packets_sent=3, packets_received=4, remote_addresses=2, remote_ports=2,
                      dns_queries=1, endpoints=[Endpoint("10.0.0.1", 4444), Endpoint("10.0.0.2", 53, "udp", True)],
                      write_opens=2, sensitive_writes=1, sensitive_paths=["/etc/passwd"], events_lost=3,
                      complete=False, container_exited=True, seconds_since_start=12.5),
        FeatureVector(b, 1.7e9 + 10, 5.0, {"futex": 9}, endpoints=[Endpoint("10.0.0.1", 4444),
                                                                   Endpoint("10.9.9.9", 8080, "tcp", False)]),
        FeatureVector(a, 1.7e9 + 10, 10.0),
    ]
    block, errors = _roundtrip(vs)
    assert errors == [] and len(block) == 3 and len(block.identities) == 2 and len(block.endpoints) == 3
    got = block.vectors()
    for v, g in zip(vs, got, strict=True):
        assert g == v, (g, v)


def test_columns_and_rows_give_the_same_verdicts() -> None:
    learn = [vector(i, c) for i in range(120) for c in range(2)]
    attack = [vector(130, 0, attack="shell"), vector(131, 1), vector(132, 0, attack="etc"), vector(133, 1)]
    results = []
    for to_wire in (wire.to_batch, wire.to_columns):
        p = Pipeline(baseline_config=BaselineConfig(min_learn_windows=20, min_learn_seconds=0))
        d = serde.Decoder()
        for seq, start in enumerate(range(0, len(learn), 40), 1):
            msg = vectors_pb2.VectorBatch.FromString(to_wire(learn[start:start + 40], seq).SerializeToString())
            assert p.apply_block("s", seq, *d.decode_block(msg)).applied == 40
        msg = vectors_pb2.VectorBatch.FromString(to_wire(attack, 99).SerializeToString())
        r = p.apply_block("s", 99, *d.decode_block(msg))
        b = p.baselines["nginx:1.27"]
        results.append((r.applied, b.windows_scored, b.threshold, p.events_written,
                        [rec.event["kinds"] for rec in p.recent.values()]))
    assert results[0] == results[1]
    assert results[0][3] >= 2  # the shell and the /etc write were flagged


def _with_ngrams(vectors: list[FeatureVector]) -> list[FeatureVector]:
    """``vectors`` with n-grams: a different number per window (none in every third), spec v2's whole range."""
    for k, v in enumerate(vectors):
        v.ngrams = {(k * 7919 + j * 104_729) % NUM_BUCKETS: 1 + (k + j) % 5 for j in range(k % 3 * 2)}
    vectors[0].ngrams = {0: 2**32 - 1, NUM_BUCKETS - 1: 1}
    return vectors


def _with_entry_ngrams(vectors: list[FeatureVector]) -> list[FeatureVector]:
    """``vectors`` with n-grams that fit the entry form (counts 1..32767), spec v2's whole range."""
    for k, v in enumerate(vectors):
        v.ngrams = {(k * 7919 + j * 104_729) % NUM_BUCKETS: 1 + (k + j) * 977 % 32767 for j in range(k % 3 * 2)}
    vectors[0].ngrams = {0: 32767, NUM_BUCKETS - 1: 1, 12_288: 2}
    return vectors


def _decoded_block(batch: vectors_pb2.VectorBatch) -> VectorBlock:
    msg = vectors_pb2.VectorBatch.FromString(batch.SerializeToString())
    d = serde.Decoder()
    d.check_batch(msg)
    block, errors = d.decode_block(msg)
    assert errors == []
    return block


def _assert_same_block(a: VectorBlock, b: VectorBlock) -> None:
    assert a.ng_bucket.dtype == b.ng_bucket.dtype == np.int64
    assert a.ng_count.dtype == b.ng_count.dtype == np.float64
    for name in VectorBlock.__slots__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and np.array_equal(x, y), name
        else:
            assert x == y, name


def test_the_three_ngram_forms_decode_to_the_same_block() -> None:
    """The entry form (what the sensor sends when the batch fits it), the le32 pair and packed varints."""
    vs = _with_entry_ngrams([vector(i, c) for i in range(4) for c in range(3)])
    entries = wire.to_columns(vs, 1).columns
    pairs = wire.to_columns(vs, 1, ngram_entries=False).columns
    packed = wire.to_columns(vs, 1, ngram_bytes=False).columns
    assert entries.ngram_entry_le32 and not (entries.ngram_bucket_le32 or entries.ngram_count_le32
                                             or entries.ngram_bucket or entries.ngram_count)
    assert pairs.ngram_bucket_le32 and not pairs.ngram_entry_le32 and not pairs.ngram_bucket
    assert packed.ngram_bucket and not packed.ngram_entry_le32 and not packed.ngram_bucket_le32
    n = sum(len(v.ngrams) for v in vs)
    assert len(entries.ngram_entry_le32) == 4 * n and len(pairs.ngram_bucket_le32 + pairs.ngram_count_le32) == 8 * n
    blocks = [_decoded_block(wire.to_columns(vs, 1, **kw))
              for kw in ({}, {"ngram_entries": False}, {"ngram_bytes": False})]
    assert len(blocks[0].ng_bucket) == n and blocks[0].ng_count.max() == 32767
    _assert_same_block(blocks[0], blocks[1])
    _assert_same_block(blocks[0], blocks[2])
    assert blocks[0].vectors() == vs


def test_a_batch_with_a_count_past_the_entry_form_goes_as_pairs_and_decodes_exactly() -> None:
    vs = _with_entry_ngrams([vector(i, c) for i in range(4) for c in range(3)])
    vs[5].ngrams[4242] = 40_000
    c = wire.to_columns(vs, 1).columns
    assert c.ngram_bucket_le32 and c.ngram_count_le32 and not c.ngram_entry_le32
    block = _decoded_block(wire.to_columns(vs, 1))
    assert block.vectors() == vs and 40_000.0 in block.ng_count.tolist()
    vs[5].ngrams[4242] = 32_767  # one count less: the whole batch fits the entry form
    assert wire.to_columns(vs, 1).columns.ngram_entry_le32


def test_an_entry_bucket_past_spec_v2_rejects_its_window_alone() -> None:
    """Bucket ranges are validation's (baseliner.models.validate), as in the other forms: an entry form bucket in
    [77824, 2**17) rejects its window with BAD_REFERENCE, the rest of the batch is applied."""
    vs = _with_entry_ngrams([vector(100 + i, c) for i in range(2) for c in range(3)])
    vs[4].ngrams[2**17 - 1] = 3
    batch = wire.to_columns(vs, 1)
    assert batch.columns.ngram_entry_le32
    d = serde.Decoder()
    block, errors = d.decode_block(vectors_pb2.VectorBatch.FromString(batch.SerializeToString()))
    assert errors == [] and 2**17 - 1 in block.ng_bucket.tolist()
    r = Pipeline().apply_block("s", 1, block, errors)
    assert r.applied == 5 and [(e.index, e.reason) for e in r.rejected] == [(4, "BAD_REFERENCE")]


def test_both_ngram_forms_decode_to_the_same_block() -> None:
    vs = _with_ngrams([vector(i, c) for i in range(4) for c in range(3)])
    as_bytes = wire.to_columns(vs, 1)
    packed = wire.to_columns(vs, 1, ngram_bytes=False)
    assert as_bytes.columns.ngram_bucket_le32 and not as_bytes.columns.ngram_bucket  # a count of 2**32 - 1
    assert not as_bytes.columns.ngram_entry_le32
    assert packed.columns.ngram_bucket and not packed.columns.ngram_bucket_le32
    blocks = []
    for batch in (as_bytes, packed):
        msg = vectors_pb2.VectorBatch.FromString(batch.SerializeToString())
        d = serde.Decoder()
        d.check_batch(msg)
        block, errors = d.decode_block(msg)
        assert errors == []
        blocks.append(block)
    a, b = blocks
    assert a.ng_bucket.dtype == b.ng_bucket.dtype == np.int64
    assert a.ng_count.dtype == b.ng_count.dtype == np.float64
    assert len(a.ng_bucket) == sum(len(v.ngrams) for v in vs)
    for name in VectorBlock.__slots__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and np.array_equal(x, y), name
        else:
            assert x == y, name
    assert a.vectors() == vs


def _rich_windows() -> list[FeatureVector]:
    """Windows with every field set in some and defaults in others: counters that are 0 in every window,
    windows without syscalls or lists, incomplete and exited ones, unknown ages, n-grams in some."""
    vs = _with_entry_ngrams([vector(i, c) for i in range(4) for c in range(3)])
    vs[1].execs, vs[1].executables, vs[1].sensitive_paths, vs[1].sensitive_writes = 2, ["/bin/sh"], ["/etc/x"], 1
    vs[2].syscalls, vs[2].endpoints, vs[2].complete, vs[2].seconds_since_start = {}, [], False, -1.0
    vs[4].container_exited, vs[4].events_lost, vs[4].dns_queries = True, 7, 3
    vs[5].syscalls = {"futex": 2**53, "read": 0.5}
    return vs


def test_the_window_bytes_form_decodes_to_the_block_of_the_repeated_form() -> None:
    vs = _rich_windows()
    as_bytes = wire.to_columns(vs, 1)
    repeated = wire.to_columns(vs, 1, window_bytes=False)
    c, r = as_bytes.columns, repeated.columns
    assert len(c.window_f64_le) == 160 * len(vs) and len(c.window_u32_le) == 24 * len(vs)
    n_sc = sum(len(v.syscalls) for v in vs)
    assert len(c.syscall_name_index_le16) == 2 * n_sc and len(c.syscall_count_f64_le) == 8 * n_sc
    assert not (c.window_start or c.identity or c.syscall_lengths or c.syscall_name_index or c.syscall_count
                or c.execs or c.ngram_lengths or c.container_age_seconds)
    assert list(c.complete) == list(r.complete) and list(c.container_exited) == list(r.container_exited)
    assert len(c.complete) == len(vs)  # (the one form of complete and container_exited)
    assert not (r.window_f64_le or r.window_u32_le or r.syscall_name_index_le16 or r.syscall_count_f64_le)
    assert len(r.window_start) == len(r.syscall_lengths) == len(vs) and not r.forks  # 0 in every window
    a, b = _decoded_block(as_bytes), _decoded_block(repeated)
    _assert_same_block(a, b)
    assert a.vectors() == vs
    # what the pipeline gets from the matrices: contiguous, writable, native arrays, like the repeated form's
    for arr in (a.window_start, a.window_seconds, a.age, a.counters, a.ident):
        assert arr.flags.c_contiguous and arr.flags.writeable and arr.dtype.isnative
    assert a.counters.shape == (len(vs), len(COUNTERS))


def test_window_columns_are_named_after_the_repeated_fields_they_replace_the_counters_in_block_order() -> None:
    fields = vectors_pb2.VectorColumns.DESCRIPTOR.fields_by_name
    assert window_columns.F64_COLUMNS == ("window_start", "window_seconds", "container_age_seconds", *COUNTERS)
    assert window_columns.F64_COLUMNS[window_columns.FIRST_COUNTER:] == COUNTERS
    for name in (*window_columns.F64_COLUMNS, *window_columns.U32_COLUMNS, *window_columns.SYSCALL_FIELDS):
        assert fields[name].is_repeated, name
    assert {fields[n].type for n in window_columns.F64_COLUMNS} == {fields["window_start"].TYPE_DOUBLE}
    assert {fields[n].type for n in window_columns.U32_COLUMNS} == {fields["identity"].TYPE_UINT32}
    for name, number in (("window_f64_le", 48), ("window_u32_le", 49), ("syscall_name_index_le16", 50),
                         ("syscall_count_f64_le", 51)):
        assert fields[name].number == number and fields[name].type == fields[name].TYPE_BYTES
    assert ingest_pb2.Welcome.DESCRIPTOR.fields_by_name["window_bytes"].number == 8
    assert serde.welcome(0, "v", 10).welcome.window_bytes


def test_a_batch_past_65536_syscall_names_sends_its_syscalls_repeated_and_decodes_alike() -> None:
    """uint16 indices reach 65,535: a batch with 65,536 names goes in the window bytes form, one with a name
    more sends its syscall entries repeated (its windows still as bytes).  (The service refuses such a
    batch, TOO_LARGE, before decoding it: the decoder is called directly here.)"""
    ident = Identity("n", "c", "nginx")
    vs = [FeatureVector(ident, 1.7e9 + 10 * k, 10.0, {f"sys_{k}_{j}": 1 + j for j in range(512)})
          for k in range(128)]
    assert len({name for v in vs for name in v.syscalls}) == 65_536

    def decoded(batch: vectors_pb2.VectorBatch) -> VectorBlock:
        block, errors = serde.Decoder().decode_block(vectors_pb2.VectorBatch.FromString(batch.SerializeToString()))
        assert errors == []
        return block

    fits = wire.to_columns(vs, 1)
    assert len(fits.columns.syscall_name_index_le16) == 2 * 65_536 and not fits.columns.syscall_name_index
    assert np.frombuffer(fits.columns.syscall_name_index_le16, "<u2").max() == 65_535
    vs.append(FeatureVector(ident, 1.7e9 + 10 * 128, 10.0, {"one_more": 3}))
    past = wire.to_columns(vs, 1)
    c = past.columns
    assert not c.syscall_name_index_le16 and not c.syscall_count_f64_le and len(c.syscall_name_index) == 65_537
    assert c.window_f64_le and c.window_u32_le and not c.syscall_lengths
    block = decoded(past)
    _assert_same_block(block, decoded(wire.to_columns(vs, 1, window_bytes=False)))
    assert block.vector(128).syscalls == {"one_more": 3.0} and len(block.syscall_names) == 65_537


def _tables(k: int, containers: int = 3, windows: int = 2) -> list[FeatureVector]:
    """Windows of ``containers`` containers, table ``k`` (a different table for each ``k``)."""
    return [vector(100 + i, c, repo=f"app{k}") for i in range(windows) for c in range(containers)]


def _decoded(d: serde.Decoder, batch: vectors_pb2.VectorBatch) -> VectorBlock:
    msg = vectors_pb2.VectorBatch.FromString(batch.SerializeToString())
    d.check_batch(msg)
    block, errors = d.decode_block(msg)
    assert errors == []
    return block


def test_identity_table_as_bytes_decodes_to_the_block_of_the_repeated_form() -> None:
    vs = _with_entry_ngrams([vector(i, c) for i in range(4) for c in range(3)])
    as_bytes = wire.to_columns(vs, 1)
    repeated = wire.to_columns(vs, 1, identity_table=False)
    assert as_bytes.columns.identity_table and not as_bytes.columns.identities
    assert len(repeated.columns.identities) == 3 and not repeated.columns.identity_table
    a, b = _decoded_block(as_bytes), _decoded_block(repeated)
    _assert_same_block(a, b)
    assert a.vectors() == vs


def test_the_same_identity_table_gives_the_same_list_object() -> None:
    """A block's ``identities`` is the decoder's shared list for the table: the same table (bytes or
    repeated form, the same or other windows) gives the same object; another table another object."""
    d = serde.Decoder()
    t0 = _decoded(d, wire.to_columns(_tables(0), 1)).identities
    again = _decoded(d, wire.to_columns(_tables(0, windows=3), 2))  # other windows, the same containers
    assert again.identities is t0
    assert again.take(np.array([1, 4])).identities is t0  # a block's rows share it
    t1 = _decoded(d, wire.to_columns(_tables(1), 3)).identities
    assert t1 is not t0 and t1 != t0
    assert _decoded(d, wire.to_columns(_tables(0), 4)).identities is t0
    assert _decoded(d, wire.to_columns(_tables(0, containers=2), 5)).identities is not t0  # a shorter table
    # the repeated form (older sensors) gets stable lists too, and the same table in both forms one list
    r0 = _decoded(d, wire.to_columns(_tables(0), 6, identity_table=False)).identities
    assert r0 is t0
    r2 = _decoded(d, wire.to_columns(_tables(2), 7, identity_table=False)).identities
    assert _decoded(d, wire.to_columns(_tables(2, windows=1), 8, identity_table=False)).identities is r2
    assert _decoded(d, wire.to_columns(_tables(2), 9)).identities is r2
    assert r2 is not t0 and r2 is not t1
    # another decoder has its own lists (equal ones)
    other = _decoded(serde.Decoder(), wire.to_columns(_tables(0), 1)).identities
    assert other is not t0 and other == t0


def test_a_table_sent_again_as_bytes_is_not_parsed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[int] = []
    real = serde._PARSE_IDENTITY_TABLE

    def counting(raw: bytes) -> vectors_pb2.IdentityTable:
        parsed.append(len(raw))
        return real(raw)

    monkeypatch.setattr(serde, "_PARSE_IDENTITY_TABLE", counting)
    d = serde.Decoder()
    first = _decoded(d, wire.to_columns(_tables(0), 1)).identities
    for seq in range(2, 6):
        assert _decoded(d, wire.to_columns(_tables(0, windows=seq), seq)).identities is first
    assert len(parsed) == 1
    _decoded(d, wire.to_columns(_tables(1), 6))
    assert len(parsed) == 2


def test_identity_table_caches_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serde, "IDENTITY_TABLES_MAX", 3)
    monkeypatch.setattr(serde, "RECENT_IDENTITY_LISTS_MAX", 4)
    d = serde.Decoder()
    raws = [wire.to_columns(_tables(k), 1).columns.identity_table for k in range(6)]
    lists = [_decoded(d, wire.to_columns(_tables(k), 1)).identities for k in range(6)]
    assert len(set(map(id, lists))) == 6
    assert list(d._tables) == raws[3:]  # the least recently used went first
    assert d._table_bytes == sum(map(len, raws[3:]))
    assert len(d._recent) == 4
    assert _decoded(d, wire.to_columns(_tables(5), 2)).identities is lists[5]  # kept
    evicted = _decoded(d, wire.to_columns(_tables(0), 2)).identities  # in neither cache any more
    assert evicted is not lists[0] and evicted == lists[0]
    assert list(d._tables) == [raws[4], raws[5], raws[0]]
    # bounded by bytes: at most two of these tables fit; a table larger than the bound decodes, not kept
    monkeypatch.setattr(serde, "IDENTITY_TABLES_MAX_BYTES", 2 * len(raws[0]) + 1)
    d = serde.Decoder()
    for k in range(4):
        _decoded(d, wire.to_columns(_tables(k), 1))
    assert len(d._tables) == 2 and d._table_bytes == sum(map(len, d._tables)) <= 2 * len(raws[0]) + 1
    big = wire.to_columns(_tables(9, containers=8), 1)
    assert len(big.columns.identity_table) > 2 * len(raws[0]) + 1
    assert len(_decoded(d, big).identities) == 8 and big.columns.identity_table not in d._tables
    assert len(d._tables) == 2


def _bad_columns(seq: int, window_bytes: bool = True) -> tuple[vectors_pb2.VectorBatch, dict[int, int]]:
    good = [vector(100 + i, 0) for i in range(3)]
    bad: list[tuple[FeatureVector, int]] = []
    v = vector(200, 1)
    v.syscalls["read"] = math.nan
    bad.append((v, R.REJECT_REASON_NOT_FINITE))
    v = vector(200, 2)
    v.bytes_sent = math.inf
    bad.append((v, R.REJECT_REASON_NOT_FINITE))
    v = vector(200, 3)
    v.connects = -4
    bad.append((v, R.REJECT_REASON_NEGATIVE))
    bad.append((vector(200, 4, repo=""), R.REJECT_REASON_BAD_IDENTITY))
    v = vector(200, 5)
    v.window_seconds = 0.0
    bad.append((v, R.REJECT_REASON_BAD_WINDOW))
    v = vector(200, 6)
    v.executables = [f"/bin/x{i}" for i in range(65)]
    bad.append((v, R.REJECT_REASON_TOO_LARGE))
    v = vector(200, 7)
    v.syscalls["write"] = 1e300
    bad.append((v, R.REJECT_REASON_IMPLAUSIBLE))
    v = vector(200, 8)
    v.endpoints = [Endpoint("10.1.1.1", 9999)]  # its protocol is made invalid on the wire below
    bad.append((v, R.REJECT_REASON_BAD_REFERENCE))
    v = vector(200, 9)
    v.ngrams = {99_999_999: 3}
    bad.append((v, R.REJECT_REASON_BAD_REFERENCE))
    bad.append((vector(50, 0), R.REJECT_REASON_OUT_OF_ORDER))  # back in time for container 0
    vectors = good + [v for v, _ in bad]
    batch = wire.to_columns(vectors, seq, window_bytes=window_bytes)
    assert bool(batch.columns.window_f64_le) == window_bytes
    for ep in batch.columns.endpoints:
        if ep.address == "10.1.1.1":
            ep.protocol = 9  # type: ignore[assignment]
    return batch, {len(good) + k: reason for k, (_, reason) in enumerate(bad)}


@pytest.mark.parametrize("window_bytes", [True, False], ids=["window-bytes", "repeated"])
def test_every_bad_window_in_columns_is_rejected_alone_and_counted(window_bytes: bool) -> None:
    """In either window form: a NaN, infinite or negative count (doubles in both), a bad identity, window ...
    rejects its window alone, with its reason."""

    async def main() -> None:
        async with running(config()) as (srv, _):
            batch, expected = _bad_columns(2, window_bytes)
            resps = await exchange(srv.port, [hello("s1"), *learn_batches(1), raw_batch_request(batch),
                                              *learn_batches(1, start_seq=3, start_window=300)])
            first, mixed, after = (r.ack for r in resps[1:])
            got = {r.index: r.reason for r in mixed.rejected}
            assert got == expected, {i: (R.Name(got.get(i, 0)), R.Name(e)) for i, e in expected.items()}
            assert all(r.message for r in mixed.rejected)
            assert mixed.applied == 3 and not mixed.batch_rejected
            assert after.applied == 20 and not after.rejected
            text = scrape(srv.metrics_port)
            assert sample(text, "baseliner_vectors_rejected_total", reason="IMPLAUSIBLE") == 1
            assert sample(text, "baseliner_vectors_rejected_total", reason="BAD_REFERENCE") == 2

    asyncio.run(main())


def _structural_faults() -> list[tuple[str, vectors_pb2.VectorBatch, int]]:
    def vs_copy() -> list[FeatureVector]:
        return [vector(i, c) for i in range(3) for c in range(2)]

    vs = vs_copy()
    grams = _with_ngrams(vs_copy())
    out = []

    def case(name: str, reason: int, edit, vectors: list[FeatureVector] = vs,  # type: ignore[no-untyped-def]
             window_bytes: bool = True) -> None:
        b = wire.to_columns(vectors, len(out) + 1, window_bytes=window_bytes)
        edit(b)
        out.append((name, b, reason))

    def repeated(name: str, reason: int, edit) -> None:  # type: ignore[no-untyped-def]
        case(name, reason, edit, window_bytes=False)  # (older sensors', hand-written clients' form)

    repeated("short column", R.REJECT_REASON_BAD_REFERENCE, lambda b: b.columns.window_seconds.pop())
    repeated("no window_start", R.REJECT_REASON_MISSING_FIELD, lambda b: b.columns.ClearField("window_start"))
    repeated("lengths do not add up", R.REJECT_REASON_BAD_REFERENCE,
             lambda b: b.columns.syscall_lengths.__setitem__(0, 99))
    repeated("identity out of range", R.REJECT_REASON_BAD_REFERENCE, lambda b: b.columns.identity.__setitem__(0, 50))
    repeated("syscall name out of range", R.REJECT_REASON_BAD_REFERENCE,
             lambda b: b.columns.syscall_name_index.__setitem__(0, 9999))
    repeated("unequal syscall arrays", R.REJECT_REASON_BAD_REFERENCE, lambda b: b.columns.syscall_count.pop())
    repeated("n-grams with spec 0", R.REJECT_REASON_BAD_REFERENCE,
             lambda b: (b.columns.ngram_lengths.extend([1] + [0] * 5), b.columns.ngram_bucket.append(1),
                        b.columns.ngram_count.append(1)))
    repeated("spec v1 n-grams with an order-6 bucket", R.REJECT_REASON_BAD_REFERENCE,
             lambda b: (b.columns.ngram_lengths.extend([1] + [0] * 5), b.columns.ngram_bucket.append(12288),
                        b.columns.ngram_count.append(1), setattr(b.columns, "ngram_spec", 1)))
    case("no window_f64_le", R.REJECT_REASON_MISSING_FIELD, lambda b: b.columns.ClearField("window_f64_le"))
    for name, edit in _window_byte_faults():
        case(name, R.REJECT_REASON_BAD_REFERENCE, edit)
    case("unknown n-gram spec", R.REJECT_REASON_UNSUPPORTED_VERSION, lambda b: setattr(b.columns, "ngram_spec", 7))
    for name, edit in _ngram_byte_faults():
        case(name, R.REJECT_REASON_BAD_REFERENCE, edit, grams)
    for name, edit in _ngram_entry_faults():
        case(name, R.REJECT_REASON_BAD_REFERENCE, edit, _with_entry_ngrams(vs_copy()))
    case("unknown field in columns", R.REJECT_REASON_UNSUPPORTED_VERSION,
         lambda b: b.columns.MergeFromString(b"\xa8\x06\x01"))
    case("vectors and columns", R.REJECT_REASON_BAD_REFERENCE,
         lambda b: b.vectors.add().CopyFrom(wire.to_batch(vs[:1]).vectors[0]))
    case("endpoint index out of range", R.REJECT_REASON_BAD_REFERENCE,
         lambda b: b.columns.endpoint_index.__setitem__(0, 77))
    for name, reason, edit in _identity_table_faults():
        case(name, reason, edit)
    return out


def _identity_table_faults() -> list[tuple[str, int, Callable[[vectors_pb2.VectorBatch], object]]]:
    """Edits of a batch with its identity table as bytes (``identity_table``) that must refuse the batch."""

    def both(b: vectors_pb2.VectorBatch) -> None:
        b.columns.identities.extend(vectors_pb2.IdentityTable.FromString(b.columns.identity_table).identities)

    def table(f: Callable[[bytes], bytes]) -> Callable[[vectors_pb2.VectorBatch], None]:
        return lambda b: setattr(b.columns, "identity_table", f(b.columns.identity_table))

    return [
        ("identities in both forms", R.REJECT_REASON_BAD_REFERENCE, both),
        ("identity table cut", R.REJECT_REASON_BAD_REFERENCE, table(lambda x: x[:-3])),
        ("identity table not a message", R.REJECT_REASON_BAD_REFERENCE, table(lambda x: b"\xff\xff\xff")),
        ("identity table with a string that is not UTF-8", R.REJECT_REASON_BAD_REFERENCE,
         table(lambda x: b"\x0a\x04\x0a\x02\xc3\x28" + x)),
        ("identity index past the table", R.REJECT_REASON_BAD_REFERENCE, _set_u32(3, "identity", 2)),
        ("identity table with an unknown field", R.REJECT_REASON_UNSUPPORTED_VERSION, table(lambda x: x + b"\x10\x01")),
    ]


def test_identity_tables_that_do_not_fit_refuse_the_batch_with_a_message_that_says_why() -> None:
    said = {
        "identities in both forms": "identities sent both as identity_table and as repeated identities "
                                    "(a batch uses one form)",
        "identity table cut": "is not a serialized IdentityTable",
        "identity table not a message": "columns.identity_table (3 bytes) is not a serialized IdentityTable",
        "identity table with a string that is not UTF-8": "is not a serialized IdentityTable",
        "identity index past the table": "columns.identity refers past the 2 identities",
        "identity table with an unknown field": "columns.identity_table carries field 2, unknown to schema version 1",
    }
    faults = _identity_table_faults()
    assert sorted(said) == sorted(name for name, _, _ in faults)
    d = serde.Decoder()  # one decoder: a refused table is not cached, the next good batch decodes
    for name, reason, edit in faults:
        b = wire.to_columns([vector(i, c) for i in range(3) for c in range(2)], 1)
        assert b.columns.identity_table and not b.columns.identities
        good = vectors_pb2.VectorBatch.FromString(b.SerializeToString())
        edit(b)
        msg = vectors_pb2.VectorBatch.FromString(b.SerializeToString())
        d.check_batch(msg)
        with pytest.raises(ValidationError) as e:
            d.decode_block(msg)
        assert e.value.reason == R.Name(reason).removeprefix("REJECT_REASON_"), name
        assert said[name] in e.value.message, (name, e.value.message)
        assert len(d.decode_block(good)[0]) == 6


def _ngram_byte_faults() -> list[tuple[str, Callable[[vectors_pb2.VectorBatch], object]]]:
    """Edits of a batch with n-grams in the bytes form (``ngram_*_le32``) that must refuse the batch."""

    def both_forms(b: vectors_pb2.VectorBatch) -> None:
        c = b.columns
        c.ngram_bucket.extend(np.frombuffer(c.ngram_bucket_le32, "<u4").tolist())
        c.ngram_count.extend(np.frombuffer(c.ngram_count_le32, "<u4").tolist())

    def setbytes(field: str, f: Callable[[bytes], bytes]) -> Callable[[vectors_pb2.VectorBatch], None]:
        return lambda b: setattr(b.columns, field, f(getattr(b.columns, field)))

    def setboth(f: Callable[[bytes], bytes]) -> Callable[[vectors_pb2.VectorBatch], None]:
        def edit(b: vectors_pb2.VectorBatch) -> None:
            setbytes("ngram_bucket_le32", f)(b)
            setbytes("ngram_count_le32", f)(b)

        return edit

    return [
        ("n-grams in both forms", both_forms),
        ("n-gram buckets, packed, next to counts as bytes", lambda b: (
            b.columns.ngram_bucket.extend(np.frombuffer(b.columns.ngram_bucket_le32, "<u4").tolist()),
            b.columns.ClearField("ngram_bucket_le32"))),
        ("n-gram bucket bytes not whole entries", setbytes("ngram_bucket_le32", lambda x: x[:-1])),
        ("n-gram count bytes not whole entries", setbytes("ngram_count_le32", lambda x: x + b"\x00\x00")),
        ("n-gram bytes of both fields not whole entries", setboth(lambda x: x[:-3])),
        ("fewer n-gram counts than buckets", setbytes("ngram_count_le32", lambda x: x[:-4])),
        ("n-gram buckets without counts", lambda b: b.columns.ClearField("ngram_count_le32")),
        ("n-gram bytes that do not add up to ngram_lengths", setboth(lambda x: x + x[:4])),
        ("n-gram bytes with spec 0", lambda b: setattr(b.columns, "ngram_spec", 0)),
        ("n-gram bytes, spec v1, an order-6 bucket", lambda b: setattr(b.columns, "ngram_spec", 1)),
    ]


def _ngram_entry_faults() -> list[tuple[str, Callable[[vectors_pb2.VectorBatch], object]]]:
    """Edits of a batch with n-grams in the entry form (``ngram_entry_le32``) that must refuse the batch."""

    def split(raw: bytes) -> tuple[list[int], list[int]]:
        e = np.frombuffer(raw, "<u4")
        return (e & 0x1FFFF).tolist(), (e >> 17).tolist()

    def with_pairs(b: vectors_pb2.VectorBatch) -> None:
        buckets, counts = split(b.columns.ngram_entry_le32)
        b.columns.ngram_bucket_le32 = np.array(buckets, "<u4").tobytes()
        b.columns.ngram_count_le32 = np.array(counts, "<u4").tobytes()

    def with_packed(b: vectors_pb2.VectorBatch) -> None:
        buckets, counts = split(b.columns.ngram_entry_le32)
        b.columns.ngram_bucket.extend(buckets)
        b.columns.ngram_count.extend(counts)

    def zero_count(b: vectors_pb2.VectorBatch) -> None:  # the third entry: its bucket, count 0
        e = np.frombuffer(b.columns.ngram_entry_le32, "<u4").copy()
        e[2] &= 0x1FFFF
        b.columns.ngram_entry_le32 = e.tobytes()

    def setbytes(f: Callable[[bytes], bytes]) -> Callable[[vectors_pb2.VectorBatch], None]:
        return lambda b: setattr(b.columns, "ngram_entry_le32", f(b.columns.ngram_entry_le32))

    return [
        ("n-gram entries and le32 pairs", with_pairs),
        ("n-gram entries and packed", with_packed),
        ("n-gram entries and one le32 field", lambda b: setattr(b.columns, "ngram_count_le32", b"\x01\0\0\0")),
        ("n-gram entry bytes cut", setbytes(lambda x: x[:-1])),
        ("n-gram entry bytes padded", setbytes(lambda x: x + b"\x00\x00")),
        ("n-gram entry with count 0", zero_count),
        ("n-gram entries that do not add up to ngram_lengths", setbytes(lambda x: x + x[:4])),
        ("n-gram entries with spec 0", lambda b: setattr(b.columns, "ngram_spec", 0)),
        ("n-gram entries, spec v1, an order-6 bucket", lambda b: setattr(b.columns, "ngram_spec", 1)),
    ]


def test_ngram_entries_that_do_not_fit_refuse_the_batch_with_a_message_that_says_why() -> None:
    said = {
        "n-gram entries and le32 pairs": "both as ngram_entry_le32 and as ngram_bucket_le32/ngram_count_le32 "
                                         "(a batch uses one form)",
        "n-gram entries and packed": "both as ngram_entry_le32 and as ngram_bucket/ngram_count (a batch uses one form)",
        "n-gram entries and one le32 field": "a batch uses one form",
        "n-gram entry bytes cut": "ngram_entry_le32 has 59 bytes: not whole 4-byte entries",
        "n-gram entry bytes padded": "ngram_entry_le32 has 62 bytes: not whole 4-byte entries",
        "n-gram entry with count 0": "ngram_entry_le32 entry 2 has count 0",
        "n-gram entries that do not add up to ngram_lengths": "ngram_lengths adds up to 15 but the list has 16",
        "n-gram entries with spec 0": "ngram_spec 0",
        "n-gram entries, spec v1, an order-6 bucket": "outside spec v1",
    }
    faults = _ngram_entry_faults()
    assert sorted(said) == sorted(name for name, _ in faults)
    for name, edit in faults:
        b = wire.to_columns(_with_entry_ngrams([vector(i, c) for i in range(3) for c in range(2)]), 1)
        assert len(b.columns.ngram_entry_le32) == 4 * 15
        edit(b)
        _assert_refused(b, name, said[name])


def _set_u32(row: int, column: str, value: int) -> Callable[[vectors_pb2.VectorBatch], None]:
    """An edit of a batch's ``window_u32_le``: ``column`` of window ``row`` set to ``value``."""

    def edit(b: vectors_pb2.VectorBatch) -> None:
        m = window_columns.unpack_u32(b.columns.window_u32_le, b.columns.count).copy()
        m[row, window_columns.U32_COLUMNS.index(column)] = value
        b.columns.window_u32_le = window_columns.pack_u32(m)

    return edit


def _window_byte_faults() -> list[tuple[str, Callable[[vectors_pb2.VectorBatch], object]]]:
    """Edits of a batch in the window bytes form (``window_f64_le``, ``window_u32_le``,
    ``syscall_name_index_le16`` / ``syscall_count_f64_le``; 6 windows, 5 syscall entries each) that must
    refuse the batch."""

    def setbytes(field: str, f: Callable[[bytes], bytes]) -> Callable[[vectors_pb2.VectorBatch], None]:
        return lambda b: setattr(b.columns, field, f(getattr(b.columns, field)))

    def also(field: str, values: list[float]) -> Callable[[vectors_pb2.VectorBatch], None]:
        return lambda b: getattr(b.columns, field).extend(values)

    def set_index(b: vectors_pb2.VectorBatch) -> None:
        index = np.frombuffer(b.columns.syscall_name_index_le16, "<u2").copy()
        index[4] = 9999
        b.columns.syscall_name_index_le16 = index.tobytes()

    return [
        ("window_f64_le next to repeated window_start", also("window_start", [1.7e9] * 6)),
        ("window_f64_le next to a repeated counter", also("events_lost", [1.0] * 6)),
        ("window_f64_le next to repeated container_age_seconds", also("container_age_seconds", [-1.0] * 6)),
        ("window_u32_le next to repeated identity", also("identity", [0] * 6)),
        ("window_u32_le next to repeated sensitive_path_lengths", also("sensitive_path_lengths", [0] * 6)),
        ("window_f64_le cut", setbytes("window_f64_le", lambda x: x[:-1])),
        ("window_f64_le a row short", setbytes("window_f64_le", lambda x: x[:-160])),
        ("window_f64_le a row more", setbytes("window_f64_le", lambda x: x + x[:160])),
        ("window_u32_le padded", setbytes("window_u32_le", lambda x: x + b"\x00\x00")),
        ("window_u32_le a row short", setbytes("window_u32_le", lambda x: x[:-24])),
        ("window matrices of another count", lambda b: setattr(b.columns, "count", 5)),
        ("syscall entries next to repeated syscall_name_index", also("syscall_name_index", [0])),
        ("syscall entries next to repeated syscall_count", also("syscall_count", [1.0])),
        ("syscall index bytes cut", setbytes("syscall_name_index_le16", lambda x: x[:-1])),
        ("syscall count bytes padded", setbytes("syscall_count_f64_le", lambda x: x + b"\x00")),
        ("fewer syscall counts than indices", setbytes("syscall_count_f64_le", lambda x: x[:-8])),
        ("syscall indices without counts", lambda b: b.columns.ClearField("syscall_count_f64_le")),
        ("syscall counts without indices", lambda b: b.columns.ClearField("syscall_name_index_le16")),
        ("syscall index past the names", set_index),
        ("syscall lengths in window_u32_le that do not add up", _set_u32(0, "syscall_lengths", 99)),
        ("identity in window_u32_le past the table", _set_u32(5, "identity", 50)),
    ]


def test_window_bytes_that_do_not_fit_refuse_the_batch_with_a_message_that_says_why() -> None:
    said = {
        "window_f64_le next to repeated window_start":
            "window columns sent both as window_f64_le and as repeated window_start (a batch uses one form)",
        "window_f64_le next to a repeated counter": "both as window_f64_le and as repeated events_lost",
        "window_f64_le next to repeated container_age_seconds":
            "both as window_f64_le and as repeated container_age_seconds",
        "window_u32_le next to repeated identity": "both as window_u32_le and as repeated identity (a batch",
        "window_u32_le next to repeated sensitive_path_lengths":
            "both as window_u32_le and as repeated sensitive_path_lengths",
        "window_f64_le cut": "window_f64_le has 959 bytes: not whole 160-byte rows (20 float64 columns)",
        "window_f64_le a row short": "window_f64_le has 5 rows for 6 windows (count)",
        "window_f64_le a row more": "window_f64_le has 7 rows for 6 windows (count)",
        "window_u32_le padded": "window_u32_le has 146 bytes: not whole 24-byte rows (6 uint32 columns)",
        "window_u32_le a row short": "window_u32_le has 5 rows for 6 windows (count)",
        "window matrices of another count": "window_f64_le has 6 rows for 5 windows (count)",
        "syscall entries next to repeated syscall_name_index":
            "syscall entries sent both as syscall_name_index_le16/syscall_count_f64_le and as repeated "
            "syscall_name_index (a batch uses one form)",
        "syscall entries next to repeated syscall_count": "and as repeated syscall_count (a batch uses one form)",
        "syscall index bytes cut": "syscall_name_index_le16 has 59 bytes and syscall_count_f64_le 240: "
                                   "not whole 2-byte and 8-byte entries",
        "syscall count bytes padded": "syscall_name_index_le16 has 60 bytes and syscall_count_f64_le 241",
        "fewer syscall counts than indices": "syscall_name_index_le16 has 30 entries but syscall_count_f64_le 29",
        "syscall indices without counts": "syscall_name_index_le16 has 30 entries but syscall_count_f64_le 0",
        "syscall counts without indices": "syscall_name_index_le16 has 0 entries but syscall_count_f64_le 30",
        "syscall index past the names": "syscall_name_index 9999 is outside the batch's 5 names",
        "syscall lengths in window_u32_le that do not add up":
            "columns.window_u32_le's syscall_lengths adds up to 124 but the list has 30",
        "identity in window_u32_le past the table": "columns.identity refers past the 2 identities",
    }
    faults = _window_byte_faults()
    assert sorted(said) == sorted(name for name, _ in faults)
    for name, edit in faults:
        b = wire.to_columns([vector(i, c) for i in range(3) for c in range(2)], 1)
        c = b.columns
        assert c.count == 6 and len(c.window_f64_le) == 6 * 160 and len(c.window_u32_le) == 6 * 24
        assert len(c.syscall_name_index_le16) == 2 * 30 and len(c.syscall_count_f64_le) == 8 * 30
        edit(b)
        _assert_refused(b, name, said[name])


def test_ngram_bytes_that_do_not_fit_refuse_the_batch_with_a_message_that_says_why() -> None:
    grams = _with_ngrams([vector(i, c) for i in range(3) for c in range(2)])
    said = {
        "n-grams in both forms": "a batch uses one form",
        "n-gram buckets, packed, next to counts as bytes": "a batch uses one form",
        "n-gram bucket bytes not whole entries": "not whole 4-byte entries",
        "n-gram count bytes not whole entries": "not whole 4-byte entries",
        "n-gram bytes of both fields not whole entries": "not whole 4-byte entries",
        "fewer n-gram counts than buckets": "ngram_bucket_le32 has 14 entries but ngram_count_le32 13",
        "n-gram buckets without counts": "ngram_bucket_le32 has 14 entries but ngram_count_le32 0",
        "n-gram bytes that do not add up to ngram_lengths": "ngram_lengths adds up to 14 but the list has 15",
        "n-gram bytes with spec 0": "ngram_spec 0",
        "n-gram bytes, spec v1, an order-6 bucket": "outside spec v1",
    }
    faults = _ngram_byte_faults()
    assert sorted(said) == sorted(name for name, _ in faults)
    for name, edit in faults:
        b = wire.to_columns(grams, 1)
        edit(b)
        _assert_refused(b, name, said[name])


def _assert_refused(b: vectors_pb2.VectorBatch, name: str, says: str) -> None:
    """The decoder refuses batch ``b`` (after its wire round trip) as a whole, with a message saying ``says``."""
    msg = vectors_pb2.VectorBatch.FromString(b.SerializeToString())
    d = serde.Decoder()
    d.check_batch(msg)
    try:
        d.decode_block(msg)
    except ValidationError as e:
        assert e.reason == "BAD_REFERENCE" and says in e.message, (name, e.message)
    else:
        raise AssertionError(f"{name}: decoded")


def test_columns_that_do_not_fit_together_refuse_the_batch_and_the_stream_goes_on() -> None:
    faults = _structural_faults()

    async def main() -> None:
        async with running(config()) as (srv, _):
            reqs = [raw_batch_request(b) for _, b, _ in faults]
            resps = await exchange(srv.port, [hello("s1"), *reqs,
                                              *learn_batches(1, start_seq=len(faults) + 1)])
            acks = [r.ack for r in resps[1:]]
            for (name, _, reason), ack in zip(faults, acks, strict=False):
                assert ack.batch_rejected == reason, (name, R.Name(ack.batch_rejected), ack.batch_message)
                assert ack.batch_message and ack.applied == 0, name
            assert acks[-1].applied == 20

    asyncio.run(main())
