"""serde: domain <-> wire agree, and no input (hostile or broken) makes decoding or the pipeline raise
anything but a per-vector rejection."""

from __future__ import annotations

import math
import os
import struct
import sys

import numpy as np
from baseliner.models.errors import ValidationError
from baseliner.models.ngrams import NUM_BUCKETS
from baseliner.models.vector import FeatureVector
from baseliner.protos.v1 import vectors_pb2
from baseliner.sensor import wire
from baseliner.service import serde
from baseliner.service.pipeline import Pipeline
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))
from service_fixtures import config, vector  # noqa: E402


def test_decode_inverts_the_sensor_encoding() -> None:
    vs = [vector(i, c, attack="shell" if i == 3 else "") for i in range(5) for c in range(3)]
    vs[0].ngrams = {5: 2, 4097: 1}
    vs[1].seconds_since_start = -1.0
    vs[2].complete = False
    msg = vectors_pb2.VectorBatch.FromString(wire.to_batch(vs, 9).SerializeToString())
    d = serde.Decoder()
    assert d.check_batch(msg).sequence == 9
    out = d.decode(msg)
    assert [i for i, _ in out] == list(range(len(vs)))
    for (_, got), want in zip(out, vs, strict=True):
        assert isinstance(got, FeatureVector)
        assert got == want
    # identities are interned: one object per container
    assert out[0][1].identity is d.decode(msg)[0][1].identity  # type: ignore[union-attr]


def test_ngram_spec_versions() -> None:
    """Spec v2 vectors carry order-6 buckets; a v1 vector (orders 2-4) is taken as it is, but not with a
    bucket outside v1's range; an unknown version is refused."""
    from baseliner.models.ngrams import NUM_BUCKETS, SHORT_BUCKETS

    vs = [vector(i, 0) for i in range(4)]
    vs[0].ngrams = {5: 2, SHORT_BUCKETS + 7: 3, NUM_BUCKETS - 1: 1}
    vs[1].ngrams = {5: 2, 4097: 1}
    vs[2].ngrams = {5: 1, SHORT_BUCKETS: 1}
    vs[3].ngrams = {5: 1}
    msg = vectors_pb2.VectorBatch.FromString(wire.to_batch(vs, 1).SerializeToString())
    assert msg.vectors[0].ngram_spec == 2
    msg.vectors[1].ngram_spec = 1
    msg.vectors[2].ngram_spec = 1
    msg.vectors[3].ngram_spec = 3
    out = serde.Decoder().decode(msg)
    assert out[0][1] == vs[0] and out[1][1] == vs[1]
    assert isinstance(out[2][1], ValidationError) and out[2][1].reason == "BAD_REFERENCE"
    assert isinstance(out[3][1], ValidationError) and out[3][1].reason == "UNSUPPORTED_VERSION"


numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 10**6).map(float))
text = st.text(max_size=40)


@st.composite
def batches(draw: st.DrawFn) -> vectors_pb2.VectorBatch:
    names = draw(st.lists(st.sampled_from(["read", "write", "execve", "", "x" * 70, "connect"]), max_size=6))
    b = vectors_pb2.VectorBatch(sequence=draw(st.integers(0, 5)), schema_version=draw(st.integers(0, 2)),
                                syscall_names=names)
    for _ in range(draw(st.integers(0, 6))):
        v = b.vectors.add()
        if draw(st.booleans()):
            v.identity.node = draw(text)
            v.identity.container_id = draw(text)
            v.identity.image_repository = draw(st.one_of(text, st.just("nginx")))
            v.identity.image_tag = draw(st.one_of(text, st.just("1.27")))
        v.window_start = draw(st.one_of(numbers, st.just(1.75e9)))
        v.window_seconds = draw(st.one_of(numbers, st.just(10.0)))
        n = draw(st.integers(0, 4))
        v.syscall_name_index.extend(draw(st.lists(st.integers(0, 8), min_size=n, max_size=n)))
        v.syscall_count.extend(draw(st.lists(numbers, min_size=draw(st.sampled_from([n, n + 1])),
                                             max_size=n + 1)))
        v.process.execs = draw(numbers)
        v.process.executables.extend(draw(st.lists(text, max_size=3)))
        v.network.bytes_sent = draw(numbers)
        for _ in range(draw(st.integers(0, 2))):
            v.network.endpoints.add(address=draw(text), port=draw(st.integers(0, 70000)),
                                    protocol=draw(st.integers(0, 3)), direction=draw(st.integers(0, 3)))
        v.ngram_spec = draw(st.integers(0, 3))
        v.ngram_bucket.extend(draw(st.lists(st.integers(0, 20000), max_size=3)))
        v.ngram_count.extend(draw(st.lists(st.integers(0, 5), max_size=3)))
        if draw(st.booleans()):
            v.health.container_age_seconds = draw(numbers)
    return b


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_no_input_makes_decode_or_the_pipeline_raise(batch: vectors_pb2.VectorBatch) -> None:
    d = serde.Decoder(max_batch_vectors=5)
    p = Pipeline(baseline_config=config().baseline_config())
    data = batch.SerializeToString()
    msg = vectors_pb2.VectorBatch.FromString(data)
    try:
        d.check_batch(msg)
    except ValidationError as e:
        assert e.reason in serde.REJECT_REASONS
        return
    decoded = d.decode(msg)
    assert [i for i, _ in decoded] == list(range(len(msg.vectors)))
    result = p.apply_batch("s", 1, decoded)
    assert result.applied + len(result.rejected) == len(msg.vectors)
    for e in result.rejected:
        assert e.reason in serde.REJECT_REASONS and e.message, (e.reason, e.message)
    for b in p.baselines.values():
        assert all(math.isfinite(x[1]) for x in b.feature_stats())


_u32 = st.one_of(st.integers(0, 2**32 - 1), st.integers(0, 20_000), st.sampled_from([0, 12_287, 12_288, 2**32 - 1]))
_u17 = st.one_of(st.integers(0, 2**17 - 1), st.sampled_from([0, NUM_BUCKETS - 1, NUM_BUCKETS, 2**17 - 1]))
_u15 = st.one_of(st.integers(0, 2**15 - 1), st.sampled_from([0, 1, 2**15 - 1]))


@st.composite
def ngram_columns(draw: st.DrawFn) -> tuple[vectors_pb2.VectorBatch, list[int], list[int], str]:
    """A columns batch of 4 windows whose n-gram fields are drawn: any of the three forms, two at once, or
    bytes that are cut, padded or of unequal length; entries with count 0; lengths that may not add up;
    any spec."""
    form = draw(st.sampled_from(["bytes", "bytes", "packed", "both", "entries", "entries", "entries+bytes",
                                 "entries+packed"]))
    pair = st.tuples(_u17, _u15) if form.startswith("entries") else st.tuples(_u32, _u32)
    entries = draw(st.lists(pair, max_size=12))
    buckets = [b for b, _ in entries]
    counts = [x for _, x in entries]
    b = wire.to_columns([vector(i, c) for i in range(2) for c in range(2)], 1)
    c = b.columns
    c.ngram_spec = draw(st.sampled_from([0, 1, 2, 2, 2, 3]))
    cuts = sorted(draw(st.lists(st.integers(0, len(entries)), min_size=3, max_size=3)))
    lengths = [hi - lo for lo, hi in zip([0, *cuts], [*cuts, len(entries)], strict=True)]
    if draw(st.integers(0, 9)) == 0:
        lengths[draw(st.integers(0, 3))] += draw(st.sampled_from([-1, 1]))
    if entries:
        c.ngram_lengths.extend([max(x, 0) for x in lengths])
    if form in ("entries", "entries+bytes", "entries+packed"):
        raw_e = struct.pack(f"<{len(entries)}I", *(b | x << 17 for b, x in entries))
        if draw(st.integers(0, 4)) == 0:
            raw_e = raw_e[: draw(st.integers(0, len(raw_e)))] + draw(st.binary(max_size=5))
        c.ngram_entry_le32 = raw_e
    if form in ("entries+packed", "packed", "both"):
        c.ngram_bucket.extend(buckets)
        c.ngram_count.extend(counts)
    if form in ("bytes", "both", "entries+bytes"):
        raw_b = struct.pack(f"<{len(buckets)}I", *buckets)
        raw_c = struct.pack(f"<{len(counts)}I", *counts)
        if draw(st.integers(0, 4)) == 0:
            raw_b = raw_b[: draw(st.integers(0, len(raw_b)))] + draw(st.binary(max_size=5))
        if draw(st.integers(0, 4)) == 0:
            raw_c = raw_c[: draw(st.integers(0, len(raw_c)))] + draw(st.binary(max_size=5))
        c.ngram_bucket_le32 = raw_b
        c.ngram_count_le32 = raw_c
    return b, buckets, counts, form


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ngram_columns())
def test_ngram_columns_in_either_form_decode_alike_or_refuse_the_batch(
    drawn: tuple[vectors_pb2.VectorBatch, list[int], list[int], str],
) -> None:
    batch, buckets, counts, form = drawn
    msg = vectors_pb2.VectorBatch.FromString(batch.SerializeToString())
    c = msg.columns
    d = serde.Decoder()
    d.check_batch(msg)
    raw_b, raw_c, raw_e = c.ngram_bucket_le32, c.ngram_count_le32, c.ngram_entry_le32
    try:
        block, errors = d.decode_block(msg)
    except ValidationError as e:
        assert e.reason in ("BAD_REFERENCE", "UNSUPPORTED_VERSION") and e.message
        return
    present = [bool(raw_e), bool(raw_b or raw_c), bool(len(c.ngram_bucket) or len(c.ngram_count))]
    assert sum(present) <= 1  # two forms present: always refused
    if raw_e:  # accepted entry bytes are whole entries, none with count 0
        assert len(raw_e) % 4 == 0
        words = struct.unpack(f"<{len(raw_e) // 4}I", raw_e)
        assert all(w >> 17 for w in words)
        buckets = [w & (2**17 - 1) for w in words]
        counts = [w >> 17 for w in words]
    elif raw_b or raw_c:  # accepted bytes are whole entries, as many in both fields
        assert len(raw_b) % 4 == 0 and len(raw_b) == len(raw_c)
        buckets = list(struct.unpack(f"<{len(raw_b) // 4}I", raw_b))
        counts = list(struct.unpack(f"<{len(raw_c) // 4}I", raw_c))
    elif not any(present):  # every entry cut away (and lengths that add up to none)
        buckets, counts = [], []
    assert block.ng_bucket.dtype == np.int64 and block.ng_count.dtype == np.float64
    assert block.ng_bucket.tolist() == buckets and block.ng_count.tolist() == counts
    if not present[2] and buckets:  # decoded from a bytes form: the same entries packed decode alike
        again = vectors_pb2.VectorBatch()
        again.CopyFrom(msg)
        again.columns.ClearField("ngram_bucket_le32")
        again.columns.ClearField("ngram_count_le32")
        again.columns.ClearField("ngram_entry_le32")
        again.columns.ngram_bucket.extend(buckets)
        again.columns.ngram_count.extend(counts)
        other, _ = serde.Decoder().decode_block(again)
        assert np.array_equal(other.ng_bucket, block.ng_bucket) and np.array_equal(other.ng_count, block.ng_count)
        assert np.array_equal(other.ng_ptr, block.ng_ptr)
    # whatever decoded goes through validation and the pipeline without raising
    p = Pipeline(baseline_config=config().baseline_config())
    result = p.apply_block("s", 1, block, errors)
    assert result.applied + len(result.rejected) == 4
    out_of_range = {i for i in range(4) if any(x >= NUM_BUCKETS for x in block.row_ngrams(i))}
    assert out_of_range <= {e.index for e in result.rejected if e.reason == "BAD_REFERENCE"}


_ident = st.builds(
    vectors_pb2.Identity,
    node=st.sampled_from(["node-1", "", "n" * 300]), container_id=st.text(max_size=6),
    image_repository=st.sampled_from(["nginx", "", "Bad Name", "db"]), image_tag=st.sampled_from(["", "1.27"]),
)


@st.composite
def identity_columns(draw: st.DrawFn) -> tuple[vectors_pb2.VectorBatch, list[vectors_pb2.Identity], str]:
    """A columns batch of 4 windows whose identity table is drawn: either form, both, none, or table bytes
    cut, padded or garbled; indices that may point past the table."""
    table = draw(st.lists(_ident, max_size=4))
    form = draw(st.sampled_from(["bytes", "bytes", "repeated", "both", "none"]))
    b = wire.to_columns([vector(i, c) for i in range(2) for c in range(2)], 1)
    c = b.columns
    c.ClearField("identity_table")
    c.ClearField("identity")
    c.identity.extend(draw(st.lists(st.integers(0, 4), min_size=4, max_size=4)))
    if form in ("repeated", "both"):
        c.identities.extend(table)
    if form in ("bytes", "both"):
        raw = vectors_pb2.IdentityTable(identities=table).SerializeToString()
        if draw(st.integers(0, 3)) == 0:
            raw = raw[: draw(st.integers(0, len(raw)))] + draw(st.binary(max_size=6))
        c.identity_table = raw
    return b, table, form


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(identity_columns())
def test_identity_tables_in_either_form_decode_alike_or_refuse_the_batch(
    drawn: tuple[vectors_pb2.VectorBatch, list[vectors_pb2.Identity], str],
) -> None:
    batch, table, form = drawn
    msg = vectors_pb2.VectorBatch.FromString(batch.SerializeToString())
    c = msg.columns
    d = serde.Decoder()
    d.check_batch(msg)
    try:
        block, errors = d.decode_block(msg)
    except ValidationError as e:
        assert e.reason in ("BAD_REFERENCE", "UNSUPPORTED_VERSION") and e.message
        return
    assert not (c.identity_table and len(c.identities))  # both forms: always refused
    sent = list(vectors_pb2.IdentityTable.FromString(c.identity_table).identities) if c.identity_table \
        else list(c.identities)
    assert max(c.identity) < len(sent)  # an index past the table: always refused
    assert block.identities == [d.identity(i) for i in sent]
    # the same batch again: the same list object; the table in the other form: the same list too
    assert d.decode_block(msg)[0].identities is block.identities
    other = vectors_pb2.VectorBatch()
    other.CopyFrom(msg)
    other.columns.ClearField("identity_table")
    other.columns.ClearField("identities")
    if c.identity_table:
        other.columns.identities.extend(sent)
    else:
        other.columns.identity_table = vectors_pb2.IdentityTable(identities=sent).SerializeToString()
    assert d.decode_block(other)[0].identities is block.identities
    # whatever decoded goes through validation and the pipeline without raising
    p = Pipeline(baseline_config=config().baseline_config())
    result = p.apply_block("s", 1, block, errors)
    assert result.applied + len(result.rejected) == 4
