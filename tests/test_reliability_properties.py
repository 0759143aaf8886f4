"""Property-based tests (Hypothesis) on everything that reads hostile input.

* protobuf decoding (``service/serde.py``): any bytes that parse as a ``VectorBatch`` are refused as a
  whole with a ``ValidationError`` or decoded into a block of windows and a ``ValidationError`` for each
  window left out, never anything else;
* vector validation (``models/validate.py``): a vector that passes validation transforms into finite
  features and is processed by a baseline without error; one that fails says why with a known reason;
* the pipeline: a batch mixing hostile vectors applies the good ones and rejects each bad one alone;
* the Falco endpoint: any body gets a 2xx or 4xx answer with a known reason, never a 5xx, and arbitrary
  bytes on the socket never stop it from answering the next client.
"""

from __future__ import annotations

import asyncio
import math
import socket
import struct
from typing import Any

import numpy as np
import pytest
from baseliner.models.baseline import BaselineConfig, ImageBaseline
from baseliner.models.block import VectorBlock
from baseliner.models.errors import ValidationError
from baseliner.models.rate_features import transform_vectors
from baseliner.models.validate import validate
from baseliner.models.vector import Endpoint, FeatureVector, Identity
from baseliner.protos.v1 import ingest_pb2, vectors_pb2
from baseliner.service import serde
from baseliner.service.config import FalcoConfig
from baseliner.service.falco import REJECT_REASONS as FALCO_REASONS
from baseliner.service.falco import FalcoCorrelator
from baseliner.service.falco_http import FalcoEndpoint
from baseliner.service.pipeline import Pipeline
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REASONS = set(serde.REJECT_REASONS) | {"UNSPECIFIED"}
PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10**6).map(float),
                   st.sampled_from([0.0, -0.0, 1e308, -1.0, 5e-324]))
names = st.one_of(st.text(max_size=40), st.sampled_from(["nginx", "", "a" * 300, "UPPER", "reg:5000/app", "../x"]))


@st.composite
def pb_batches(draw: Any) -> vectors_pb2.VectorBatch:
    """A batch of columns with hostile values, in a layout that fits together but for one fault in a few
    (a list length, an index or bytes that do not fit)."""
    n = draw(st.integers(0, 6))
    table = [vectors_pb2.Identity(node=draw(names), container_id=draw(names), image_repository=draw(names),
                                  image_tag=draw(names)) for _ in range(draw(st.integers(1, 3)))]
    syscall_names = draw(st.lists(st.sampled_from(["read", "write", "execve", "", "x" * 100]), min_size=1,
                                  max_size=10))
    endpoints = [vectors_pb2.Endpoint(address=draw(st.text(max_size=20)), port=draw(st.integers(0, 70000)),
                                      protocol=draw(st.integers(0, 3)), direction=draw(st.integers(0, 3)))
                 for _ in range(draw(st.integers(1, 2)))]
    f64 = [[draw(st.one_of(floats, st.just(1.75e9))), draw(st.one_of(floats, st.just(10.0)))]
           + [draw(floats) for _ in range(18)] for _ in range(n)]
    lengths = [[draw(st.integers(0, 3)) for _ in range(5)] for _ in range(n)]
    u32 = [[draw(st.integers(0, len(table) - 1))] + row for row in lengths]
    sc, ng, ex, ep, sp = (sum(row[j] for row in lengths) for j in range(5))
    entry = st.builds(lambda b, c: b | c << 17, st.integers(0, 2**17 - 1), st.integers(1, 2**15 - 1))
    c = vectors_pb2.VectorColumns(
        count=n,
        identity_table=vectors_pb2.IdentityTable(identities=table).SerializeToString(),
        window_f64_le=struct.pack(f"<{20 * n}d", *(x for row in f64 for x in row)),
        window_u32_le=struct.pack(f"<{6 * n}I", *(x for row in u32 for x in row)),
        complete=draw(st.one_of(st.just([]), st.lists(st.booleans(), min_size=n, max_size=n))),
        syscall_name_index_le16=struct.pack(f"<{sc}H", *draw(st.lists(st.integers(0, len(syscall_names) - 1),
                                                                        min_size=sc, max_size=sc))),
        syscall_count_f64_le=struct.pack(f"<{sc}d", *draw(st.lists(floats, min_size=sc, max_size=sc))),
        ngram_entry_le32=struct.pack(f"<{ng}I", *draw(st.lists(entry, min_size=ng, max_size=ng))),
        executables=draw(st.lists(st.text(max_size=50), min_size=ex, max_size=ex)),
        endpoints=endpoints,
        endpoint_index=draw(st.lists(st.integers(0, len(endpoints) - 1), min_size=ep, max_size=ep)),
        sensitive_paths=draw(st.lists(st.text(max_size=30), min_size=sp, max_size=sp)),
    )
    fault = draw(st.sampled_from([None] * 12 + ["length", "identity", "syscall", "endpoint", "ngram", "cut"]))
    if fault == "length" and n:
        u32[draw(st.integers(0, n - 1))][draw(st.integers(1, 5))] += 1
        c.window_u32_le = struct.pack(f"<{6 * n}I", *(x for row in u32 for x in row))
    elif fault == "identity" and n:
        c.window_u32_le = struct.pack("<I", len(table)) + c.window_u32_le[4:]
    elif fault == "syscall" and sc:
        c.syscall_name_index_le16 = struct.pack("<H", len(syscall_names)) + c.syscall_name_index_le16[2:]
    elif fault == "endpoint" and ep:
        c.endpoint_index[0] = len(endpoints)
    elif fault == "ngram" and ng:  # an entry with count 0
        c.ngram_entry_le32 = struct.pack("<I", draw(st.integers(0, 2**17 - 1))) + c.ngram_entry_le32[4:]
    elif fault == "cut":
        field = draw(st.sampled_from(["identity_table", "window_f64_le", "window_u32_le", "syscall_count_f64_le",
                                      "ngram_entry_le32"]))
        setattr(c, field, getattr(c, field)[:-1])
    return vectors_pb2.VectorBatch(sequence=draw(st.integers(0, 2**64 - 1)),
                                   schema_version=draw(st.sampled_from([3] * 6 + [2, 0, 4])),
                                   syscall_names=syscall_names, columns=c)


def _check_decoded(batch: vectors_pb2.VectorBatch, decoder: serde.Decoder) -> list[FeatureVector]:
    """The windows of ``batch`` that decoded, after checking that every refusal names a known reason."""
    try:
        decoder.check_batch(batch)
        block, errors = decoder.decode_block(batch)
    except ValidationError as e:
        assert e.reason in REASONS and e.message
        return []
    for e in errors:
        assert e.reason in REASONS and 0 <= e.index < batch.columns.count and e.message
    assert sorted([*block.index.tolist(), *(e.index for e in errors)]) == list(range(batch.columns.count))
    return block.vectors()


@PROPS
@given(st.binary(max_size=2048))
def test_any_bytes_decode_or_fail_cleanly(data: bytes) -> None:
    try:
        batch = vectors_pb2.VectorBatch.FromString(data)
    except Exception as e:  # the gRPC layer answers INTERNAL/INVALID for unparseable messages
        assert type(e).__name__ == "DecodeError"
        return
    _check_decoded(batch, serde.Decoder(100))


@PROPS
@given(pb_batches())
def test_structured_batches_decode_validate_and_score(batch: vectors_pb2.VectorBatch) -> None:
    good = _check_decoded(batch, serde.Decoder(100))
    valid = []
    for v in good:
        try:
            validate(v)
        except ValidationError as e:
            assert e.reason in REASONS
            continue
        valid.append(v)
    if valid:
        x = transform_vectors(valid)
        assert np.isfinite(x).all()
        for v in valid:  # each on its own baseline: one image key per identity, in event-time order
            cfg = BaselineConfig(min_learn_windows=2, min_learn_seconds=0, stable_confidence=0)
            verdicts = ImageBaseline(v.identity.image, cfg) \
                .process([v])
            assert len(verdicts) == 1 and (math.isfinite(verdicts[0].score) or verdicts[0].score == math.inf)


counts = st.one_of(st.integers(0, 10**9), st.floats(allow_nan=True, allow_infinity=True), st.just(-1))


@st.composite
def domain_vectors(draw: Any) -> FeatureVector:
    ident = Identity(draw(st.sampled_from(["node-1", "", "n" * 300])), "c1",
                     draw(st.sampled_from(["nginx", "", "Bad Repo", "registry:5000/team/app", "a" * 300])),
                     draw(st.sampled_from(["1.27", "", "latest", "-bad", "t" * 200])))
    return FeatureVector(
        ident, draw(st.one_of(st.just(1.75e9), floats)), draw(st.one_of(st.just(10.0), floats)),
        draw(st.dictionaries(st.sampled_from(["read", "write", "execve", "", "\x00", "x" * 600]), counts, max_size=4)),
        ngrams=draw(st.dictionaries(st.integers(-5, 20000), st.integers(-2, 10**6), max_size=3)),
        execs=draw(counts), connects=draw(counts), bytes_sent=draw(counts), events_lost=draw(counts),
        executables=draw(st.lists(st.text(max_size=20), max_size=70)),
        endpoints=[Endpoint("10.0.0.1", p) for p in draw(st.lists(st.integers(-1, 70000), max_size=3))],
    )


@PROPS
@given(domain_vectors())
def test_validation_accepts_only_what_scores_cleanly(v: FeatureVector) -> None:
    try:
        validate(v)
    except ValidationError as e:
        assert e.reason in REASONS and e.message
        return
    assert np.isfinite(transform_vectors([v])).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(domain_vectors(), st.just(None)), min_size=1, max_size=12))
def test_pipeline_rejects_bad_vectors_alone(items: list[FeatureVector | None]) -> None:
    p = Pipeline()
    known_good = [FeatureVector(Identity("node-1", f"good{i}", "nginx", "1.27"), 1.75e9 + i, 10.0, {"read": 10})
                  for i in range(len(items))]  # for None: a known-good vector (its own container, increasing windows)
    vectors = [known_good[i] if v is None else v for i, v in enumerate(items)]
    result = p.apply_block("s", 1, VectorBlock.from_vectors(vectors))
    assert result.applied + len(result.rejected) == len(items)
    assert sorted(e.index for e in result.rejected) == [e.index for e in result.rejected]
    good = sum(1 for v in items if v is None)
    assert result.applied >= good
    assert p.last_sequence("s") == 1


# -- Falco endpoint ------------------------------------------------------------------------------------


def _endpoint() -> FalcoEndpoint:
    cfg = FalcoConfig(listen="127.0.0.1:0")
    return FalcoEndpoint(cfg, FalcoCorrelator(cfg, [], lambda alert, key: None))


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30)),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=4),
    max_leaves=20,
)


@st.composite
def falco_like(draw: Any) -> dict[str, Any]:
    d: dict[str, Any] = draw(st.dictionaries(st.sampled_from(["output", "priority", "rule", "time", "output_fields",
                                                              "hostname", "tags", "source"]), json_values))
    if draw(st.booleans()):
        d["output_fields"] = draw(st.dictionaries(
            st.sampled_from(["container.id", "container.image.repository", "k8s.ns.name", "proc.name",
                             "fd.rport", "container.image.tag"]),
            json_values | st.sampled_from(["abcdef012345", "host", "nginx", "4444"]), max_size=6))
    return d


@PROPS
@given(st.one_of(st.binary(max_size=512), falco_like().map(lambda d: __import__("json").dumps(d).encode())))
def test_falco_handler_answers_every_body_with_a_known_reason(body: bytes) -> None:
    status, payload = asyncio.run(_endpoint().route(body))
    assert status == 200 or 400 <= status < 500, (status, payload)
    if status != 200:
        assert payload["error"] in FALCO_REASONS


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=3))
def test_falco_socket_survives_garbage(chunks: list[bytes]) -> None:
    async def main() -> None:
        ep = _endpoint()
        await ep.start()
        try:
            def garbage_then_health() -> bytes:
                with socket.create_connection(("127.0.0.1", ep.port), timeout=5) as s:
                    try:  # the server may answer 400 and close before the last chunk is sent
                        for c in chunks:
                            s.sendall(c)
                        s.shutdown(socket.SHUT_WR)
                        while s.recv(4096):
                            pass
                    except OSError:  # reset, or no longer connected
                        pass
                with socket.create_connection(("127.0.0.1", ep.port), timeout=5) as s:
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    return s.recv(100)

            assert (await asyncio.to_thread(garbage_then_health)).startswith(b"HTTP/1.1 200")
        finally:
            await ep.stop()

    asyncio.run(main())


def test_ack_reason_names_round_trip() -> None:
    for r in serde.REJECT_REASONS:
        assert ingest_pb2.RejectReason.Name(serde.reject_reason_value(r)) == f"REJECT_REASON_{r}"


def test_fuzzer_finding_huge_finite_counts_stay_finite() -> None:
    """Found by tests/fuzz_decoders.py: a 2.6e214 write count passed validation and became a NaN feature.

    Such counts are now refused as IMPLAUSIBLE; the transform stays finite on them all the same (defence
    in depth for callers that skip validation, such as notebooks)."""
    v = FeatureVector(Identity("node-1", "c0", "nginx", "1.27"), 1.75e9, 10.0,
                      {"read": 534.0, "write": 2.558530102513129e214, "execve": 2.0})
    with pytest.raises(ValidationError) as err:
        validate(v)
    assert err.value.reason == "IMPLAUSIBLE" and "syscall write" in err.value.message
    assert np.isfinite(transform_vectors([v])).all()
    tiny = FeatureVector(Identity("node-1", "c0", "nginx", "1.27"), 1.75e9, 1e-300, {"read": 1e300})
    with pytest.raises(ValidationError):
        validate(tiny)
    assert np.isfinite(transform_vectors([tiny])).all()
