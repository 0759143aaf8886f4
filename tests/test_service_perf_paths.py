"""The throughput-tuned paths agree with the obvious ones: positional decoding fills every field of
``FeatureVector`` in its place, the columnar ``block_counts`` equals a per-vector loop, and validation's
caches never let a bad vector through."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from baseliner.models.block import VectorBlock
from baseliner.models.errors import ValidationError
from baseliner.models.rate_features import FEATURE_INDEX, N_FEATURES, SYSCALL_VOCABULARY, block_counts
from baseliner.models.validate import validate
from baseliner.models.vector import Endpoint, FeatureVector, Identity
from baseliner.protos.v1 import vectors_pb2
from baseliner.sensor import wire
from baseliner.service import serde


def _distinct_vector(k: int) -> FeatureVector:
    """Every numeric field a different value, so a field decoded into the wrong place shows."""
    ident = Identity(f"node-{k}", f"c{k}", "registry.local/app", "1.0", "sha256:ab", f"name{k}", f"pod{k}", "ns")
    values: dict[str, object] = {}
    for j, f in enumerate(dataclasses.fields(FeatureVector)):
        if f.type in ("int", int):
            values[f.name] = 100 * k + j + 1
    return FeatureVector(
        ident, 1.75e9 + k, 10.0 + k, {"read": 3 + k, "write": 5, "getrandom": 7}, {5: 2 + k, 4097: 1},
        executables=[f"/bin/x{k}"], endpoints=[Endpoint("10.0.0.1", 5432 + k), Endpoint("10.0.0.2", 53, "udp", False)],
        sensitive_paths=[f"/etc/p{k}"], complete=bool(k % 2), container_exited=not k % 2,
        seconds_since_start=12.5 + k, **values,  # type: ignore[arg-type]
    )


def test_decode_puts_every_field_in_its_place() -> None:
    vs = [_distinct_vector(k) for k in range(4)]
    msg = vectors_pb2.VectorBatch.FromString(wire.to_columns(vs, 1).SerializeToString())
    block, errors = serde.Decoder().decode_block(msg)
    assert errors == []
    for got, want in zip(block.vectors(), vs, strict=True):
        assert got == want


def _slow_raw_counts(vectors: list[FeatureVector]) -> np.ndarray:
    out = np.zeros((len(vectors), N_FEATURES))
    for i, v in enumerate(vectors):
        for name, count in v.syscalls.items():
            col = FEATURE_INDEX.get(f"syscall.{name}", FEATURE_INDEX["sys.other"])
            out[i, col] += count
        out[i, FEATURE_INDEX["sys.total"]] = sum(v.syscalls.values())
        for attr in ("execs", "forks", "connects", "bytes_sent", "remote_ports", "sensitive_writes"):
            out[i, FEATURE_INDEX[{"execs": "proc.execs", "forks": "proc.forks", "connects": "net.connects",
                                  "bytes_sent": "net.bytes_sent", "remote_ports": "net.remote_ports",
                                  "sensitive_writes": "file.sensitive_writes"}[attr]]] = getattr(v, attr)
    return out


def test_columnar_block_counts_equals_a_loop() -> None:
    rng = np.random.default_rng(3)
    names = [*SYSCALL_VOCABULARY[:20], "getrandom", "madvise", "uname"]
    vs = []
    for k in range(40):
        calls = {str(n): int(rng.integers(0, 1000)) for n in rng.choice(names, int(rng.integers(0, 12)), replace=False)}
        vs.append(FeatureVector(Identity("n", f"c{k}", "app"), 1.75e9, 5.0, calls, execs=k, forks=2 * k,
                                connects=3, bytes_sent=10 * k, remote_ports=1, sensitive_writes=k % 3))
    assert np.array_equal(block_counts(VectorBlock.from_vectors(vs)), _slow_raw_counts(vs))
    assert block_counts(VectorBlock.empty()).shape == (0, N_FEATURES)
    assert block_counts(VectorBlock.from_vectors([FeatureVector(Identity("n", "c", "app"), 1.75e9, 5.0)])).sum() == 0.0


def test_validation_caches_do_not_admit_bad_vectors() -> None:
    ident = Identity("n", "c", "app")
    validate(FeatureVector(ident, 1.75e9, 5.0, {"read": 1, "write": 2}))  # names now known good
    with pytest.raises(ValidationError, match="nan"):
        validate(FeatureVector(ident, 1.75e9, 5.0, {"read": float("nan"), "write": 2}))  # type: ignore[dict-item]
    with pytest.raises(ValidationError, match="negative"):
        validate(FeatureVector(ident, 1.75e9, 5.0, {"read": 1, "write": -2}))
    with pytest.raises(ValidationError, match="empty or too long"):
        validate(FeatureVector(ident, 1.75e9, 5.0, {"read": 1, "x" * 65: 2}))
    with pytest.raises(ValidationError, match="empty or too long"):
        validate(FeatureVector(ident, 1.75e9, 5.0, {"": 1}))
    validate(FeatureVector(ident, 1.75e9, 5.0, {"read": 1, "write": 2}))


def test_out_of_range_ngram_bucket_is_rejected_after_decoding() -> None:
    from baseliner.models.ngrams import NUM_BUCKETS

    v = _distinct_vector(1)
    v.ngrams = {NUM_BUCKETS + 3: 1}
    msg = vectors_pb2.VectorBatch.FromString(wire.to_columns([v], 1).SerializeToString())
    block, errors = serde.Decoder().decode_block(msg)
    assert errors == [] and len(block) == 1
    got = block.vector(0)
    with pytest.raises(ValidationError, match="outside") as e:
        validate(got)
    assert e.value.reason == "BAD_REFERENCE"
