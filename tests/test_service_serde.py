"""serde: the service decodes what the sensor encodes, and no n-gram or identity-table bytes (hostile or
broken) make decoding or the pipeline raise anything but a refusal of the batch or a per-window rejection."""

from __future__ import annotations

import os
import struct
import sys

import numpy as np
from baseliner.models.errors import ValidationError
from baseliner.models.ngrams import NUM_BUCKETS
from baseliner.protos.v1 import vectors_pb2
from baseliner.sensor import wire
from baseliner.service import serde
from baseliner.service.pipeline import Pipeline
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))
from service_fixtures import config, vector  # noqa: E402


def test_decode_inverts_the_sensor_encoding_and_interns_identities() -> None:
    vs = [vector(i, c, attack="shell" if i == 3 else "") for i in range(5) for c in range(3)]
    vs[0].ngrams = {5: 2, 4097: 1}
    vs[1].seconds_since_start = -1.0
    vs[2].complete = False
    msg = vectors_pb2.VectorBatch.FromString(wire.to_columns(vs, 9).SerializeToString())
    d = serde.Decoder()
    assert d.check_batch(msg).sequence == 9
    block, errors = d.decode_block(msg)
    assert errors == [] and block.vectors() == vs
    # identities are interned: one object per container, whatever table it comes in
    other = vectors_pb2.VectorBatch.FromString(wire.to_columns([vs[2], vs[0]], 10).SerializeToString())  # c2, c0
    again = d.decode_block(other)[0].identities
    assert again == (block.identities[2], block.identities[0]) and again[0] is block.identities[2]


_u17 = st.one_of(st.integers(0, 2**17 - 1), st.sampled_from([0, NUM_BUCKETS - 1, NUM_BUCKETS, 2**17 - 1]))
_u15 = st.one_of(st.integers(0, 2**15 - 1), st.sampled_from([0, 1, 2**15 - 1]))


@st.composite
def ngram_columns(draw: st.DrawFn) -> tuple[vectors_pb2.VectorBatch, list[int], list[int]]:
    """A columns batch of 4 windows whose n-gram entries are drawn: counts of 0 among them, bytes cut or
    padded, per-window lengths that may not add up."""
    entries = draw(st.lists(st.tuples(_u17, _u15), max_size=12))
    b = wire.to_columns([vector(i, c) for i in range(2) for c in range(2)], 1)
    c = b.columns
    cuts = sorted(draw(st.lists(st.integers(0, len(entries)), min_size=3, max_size=3)))
    lengths = [hi - lo for lo, hi in zip([0, *cuts], [*cuts, len(entries)], strict=True)]
    if draw(st.integers(0, 9)) == 0:
        lengths[draw(st.integers(0, 3))] += draw(st.sampled_from([-1, 1]))
    u32 = np.frombuffer(c.window_u32_le, "<u4").reshape(4, 6).copy()
    u32[:, 2] = [max(x, 0) for x in lengths]
    c.window_u32_le = u32.astype("<u4").tobytes()
    raw = struct.pack(f"<{len(entries)}I", *(b | x << 17 for b, x in entries))
    if draw(st.integers(0, 4)) == 0:
        raw = raw[: draw(st.integers(0, len(raw)))] + draw(st.binary(max_size=5))
    c.ngram_entry_le32 = raw
    return b, [b for b, _ in entries], [x for _, x in entries]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ngram_columns())
def test_ngram_entries_decode_as_written_or_refuse_the_batch(
    drawn: tuple[vectors_pb2.VectorBatch, list[int], list[int]],
) -> None:
    batch, buckets, counts = drawn
    msg = vectors_pb2.VectorBatch.FromString(batch.SerializeToString())
    raw = msg.columns.ngram_entry_le32
    d = serde.Decoder()
    d.check_batch(msg)
    try:
        block, errors = d.decode_block(msg)
    except ValidationError as e:
        assert e.reason == "BAD_REFERENCE" and e.message
        return
    # accepted entry bytes are whole entries, none with count 0, as many as the windows' lengths say
    assert len(raw) % 4 == 0
    words = struct.unpack(f"<{len(raw) // 4}I", raw)
    assert all(w >> 17 for w in words)
    assert block.ng_bucket.dtype == np.int64 and block.ng_count.dtype == np.float64
    assert block.ng_bucket.tolist() == [w & (2**17 - 1) for w in words]
    assert block.ng_count.tolist() == [w >> 17 for w in words]
    assert block.ng_ptr[-1] == len(words)
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
def identity_columns(draw: st.DrawFn) -> tuple[vectors_pb2.VectorBatch, list[vectors_pb2.Identity]]:
    """A columns batch of 4 windows whose identity table is drawn: empty or not, its bytes sometimes cut,
    padded or garbled; indices that may point past it."""
    table = draw(st.lists(_ident, max_size=4))
    b = wire.to_columns([vector(i, c) for i in range(2) for c in range(2)], 1)
    c = b.columns
    u32 = np.frombuffer(c.window_u32_le, "<u4").reshape(4, 6).copy()
    u32[:, 0] = draw(st.lists(st.integers(0, 4), min_size=4, max_size=4))
    c.window_u32_le = u32.astype("<u4").tobytes()
    raw = vectors_pb2.IdentityTable(identities=table).SerializeToString()
    if draw(st.integers(0, 3)) == 0:
        raw = raw[: draw(st.integers(0, len(raw)))] + draw(st.binary(max_size=6))
    c.identity_table = raw
    return b, table


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(identity_columns())
def test_identity_tables_decode_as_written_or_refuse_the_batch(
    drawn: tuple[vectors_pb2.VectorBatch, list[vectors_pb2.Identity]],
) -> None:
    batch, _ = drawn
    msg = vectors_pb2.VectorBatch.FromString(batch.SerializeToString())
    c = msg.columns
    d = serde.Decoder()
    d.check_batch(msg)
    try:
        block, errors = d.decode_block(msg)
    except ValidationError as e:
        assert e.reason == "BAD_REFERENCE" and e.message
        return
    sent = list(vectors_pb2.IdentityTable.FromString(c.identity_table).identities)
    assert int(np.frombuffer(c.window_u32_le, "<u4").reshape(4, 6)[:, 0].max()) < len(sent)  # else refused
    assert block.identities == tuple(d.identity(i) for i in sent)
    assert d.decode_block(msg)[0].identities is block.identities  # the same bytes: the same table
    # whatever decoded goes through validation and the pipeline without raising
    p = Pipeline(baseline_config=config().baseline_config())
    result = p.apply_block("s", 1, block, errors)
    assert result.applied + len(result.rejected) == 4
