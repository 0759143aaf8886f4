"""Validation (``baseliner.models.validate``): every window of a block checked at once, each bad one refused
alone with the reason a hand-written rule gives; what passed is remembered by content, so a table changed
after it was checked cannot smuggle a bad identity in."""

from __future__ import annotations

import math

import numpy as np
import pytest
from baseliner.models.block import COUNTERS, VectorBlock
from baseliner.models.errors import ValidationError
from baseliner.models.ngrams import NUM_BUCKETS
from baseliner.models.validate import MAX_RATE_PER_SECOND, validate, validate_block
from baseliner.models.vector import Endpoint, FeatureVector, Identity
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

_finite = st.floats(min_value=0, max_value=1e6, allow_nan=False)
_value = st.one_of(_finite, st.sampled_from([math.nan, math.inf, -1.0, 1e300, 0.0]))


def _expected_reason(read: float, execs: float, sent: float, repo: str, seconds: float, age: float,
                     exes: list[str], port_or_bucket: int, gram: float) -> str | None:
    """The rule, written out: the first thing wrong with the window, in validation's order (identity,
    window, syscall counts, n-gram counts, counters, rate, lists)."""
    if repo in ("", "Bad Name"):
        return "BAD_IDENTITY"
    if math.isnan(seconds):
        return "NOT_FINITE"
    if seconds <= 0:
        return "BAD_WINDOW"
    if math.isinf(age):
        return "NOT_FINITE"
    for count in (read, gram, execs, sent):  # syscalls, n-grams, then the counters (execs before bytes_sent)
        if not math.isfinite(count):
            return "NOT_FINITE"
        if count < 0:
            return "NEGATIVE"
    if max(read, gram, 2.0, execs, sent) > MAX_RATE_PER_SECOND * seconds:  # (bucket 5 counts 2 in every window)
        return "IMPLAUSIBLE"
    if any(not e or len(e) > 4096 for e in exes) or port_or_bucket > 65535:
        return "BAD_REFERENCE"
    return None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_value, _value, _value, st.sampled_from(["nginx", "", "Bad Name", "db"]),
                          st.sampled_from([10.0, 0.0, 1e-300, math.nan]),
                          st.sampled_from([-1.0, 5.0, math.inf]),
                          st.lists(st.sampled_from(["/bin/sh", "", "x" * 5000]), max_size=3),
                          st.sampled_from([0, 1, 70000, 12287, 12288]), _value),
                min_size=1, max_size=12))
def test_every_window_of_a_block_is_judged_by_the_rule_and_alone(rows: list) -> None:  # type: ignore[type-arg]
    """Each window is refused exactly when the rule says so, with the rule's reason, and with the message it
    gets in a block of its own (its neighbours' values, which the block's whole-batch shortcuts look at,
    change nothing)."""
    vectors = []
    for k, (read, execs, sent, repo, seconds, age, exes, port_or_bucket, gram) in enumerate(rows):
        vectors.append(FeatureVector(
            Identity("node-1", f"c{k}", repo, "1"), 1.7e9 + k, seconds, {"read": read}, {port_or_bucket: gram, 5: 2},
            execs=execs, bytes_sent=sent, executables=exes, seconds_since_start=age,
            endpoints=[Endpoint("10.0.0.1", port_or_bucket)],
        ))
    ok, errors = validate_block(VectorBlock.from_vectors(vectors))
    by_index = {e.index: e for e in errors}
    assert np.count_nonzero(~ok) == len(errors)
    for i, (v, row) in enumerate(zip(vectors, rows, strict=True)):
        expected = _expected_reason(*row)
        assert bool(ok[i]) == (expected is None), (i, v, expected)
        if expected is not None:
            assert by_index[i].reason == expected, (i, v, by_index[i].message)
            with pytest.raises(ValidationError) as alone:
                validate(v)
            assert (alone.value.reason, alone.value.message) == (by_index[i].reason, by_index[i].message)


def _errors(vectors: list[FeatureVector]) -> list[tuple[int, str, str]]:
    ok, errors = validate_block(VectorBlock.from_vectors(vectors))
    assert np.flatnonzero(~ok).tolist() == [e.index for e in errors]
    return [(e.index, e.reason, e.message) for e in errors]


def test_one_bad_n_gram_count_among_clean_windows_is_found_and_named() -> None:
    """The shortcut for clean entries (every bucket in range, no negative or NaN count: only each window's
    largest count is compared with its limit) still finds an infinite or absurd count."""
    vectors = [FeatureVector(Identity("node-1", f"c{k}", "nginx", "1"), 1.7e9 + k, 10.0, {"read": 5},
                             {12288 + k: 3, 9000: 7}) for k in range(8)]
    vectors[2].ngrams[70000] = math.inf
    vectors[5].ngrams[9001] = 1e300
    vectors[6].ngrams = {}
    assert _errors(vectors) == [
        (2, "NOT_FINITE", "n-gram bucket 70000 is inf"),
        (5, "IMPLAUSIBLE", "n-gram bucket 9001 is 1e+300 in a 10 s window (more than 1e+12 per second)"),
    ]


def test_a_syscall_count_over_its_own_windows_limit_is_found() -> None:
    """The shortcut for counts within the shortest window's limit is not taken when one count is past it,
    and the window whose own limit it exceeds is the one refused."""
    vectors = [FeatureVector(Identity("node-1", f"c{k}", "nginx", "1"), 1.7e9 + k, 10.0, {"read": 5, "write": 2})
               for k in range(6)]
    vectors[1].syscalls["read"] = 5 * MAX_RATE_PER_SECOND  # fine in a 10 s window
    vectors[3].window_seconds = 1.0
    vectors[3].syscalls["write"] = 5 * MAX_RATE_PER_SECOND  # past a 1 s window's limit
    past = (3, "IMPLAUSIBLE", "syscall write is 5e+12 in a 1 s window (more than 1e+12 per second)")
    assert _errors(vectors) == [past]
    vectors[4].syscalls["read"] = math.inf
    assert _errors(vectors) == [past, (4, "NOT_FINITE", "syscall read is inf")]


def test_validate_is_a_block_of_one() -> None:
    v = FeatureVector(Identity("node-1", "c1", "nginx"), 1.7e9, 5.0, {"read": 10}, execs=1)
    validate(v)
    v.execs = -3
    with pytest.raises(ValidationError, match="execs is negative: -3") as e:
        validate(v)
    assert (e.value.reason, e.value.index) == ("NEGATIVE", -1)
    v.execs = "many"  # type: ignore[assignment]
    with pytest.raises(ValidationError, match="execs is not a number: 'many'") as e:
        validate(v)  # no block can hold it: named all the same
    assert e.value.reason == "MISSING_FIELD"
    assert set(COUNTERS) >= {"execs", "bytes_sent"} and NUM_BUCKETS > 70000  # (the rule above assumes both)


def _good(n: int) -> list[FeatureVector]:
    return [FeatureVector(Identity("n", f"c{i}", "nginx", "1"), 1.7e9, 10.0, {"read": 1}) for i in range(n)]


def test_a_table_changed_after_validation_cannot_smuggle_a_bad_identity_in() -> None:
    """What passed is remembered by content (each frozen identity), never by the table object: an entry
    replaced in a table that was checked is checked again."""
    block = VectorBlock.from_vectors(_good(3))
    table = block.identities
    assert isinstance(table, list)
    ok, errors = validate_block(block)
    assert ok.all() and not errors
    table[1] = Identity("n", "c1", "Not An Image!", "1")  # the same list object, a bad identity in it
    ok, errors = validate_block(block)
    assert ok.tolist() == [True, False, True]
    assert [(e.index, e.reason) for e in errors] == [(1, "BAD_IDENTITY")]
    for _ in range(2):  # and every time it comes
        assert validate_block(block)[0].tolist() == [True, False, True]
    table[1] = Identity("n", "c1", "nginx", "1")
    assert validate_block(block)[0].all()


def test_tuple_tables_and_entries_that_are_no_identity() -> None:
    """An immutable table (what the decoder hands out) is checked alike; an entry that is no ``Identity`` at
    all refuses its windows and is replaced in the block, never in the caller's table."""
    block = VectorBlock.from_vectors(_good(3))
    table = (block.identities[0], "not an identity", block.identities[2])
    block.identities = table  # type: ignore[assignment]
    ok, errors = validate_block(block)
    assert ok.tolist() == [True, False, True]
    assert [(e.index, e.reason) for e in errors] == [(1, "UNSPECIFIED")]
    assert table[1] == "not an identity"  # the caller's table is as it was
    assert block.identities[1] == Identity("", "", "") and block.identities[0] is table[0]
    assert block.containers()[0] == "n/c0"
