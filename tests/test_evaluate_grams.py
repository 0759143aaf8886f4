"""Hashing parity: the evaluator's vectorised n-grams are the sensor specification's (models/ngrams.py)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from baseliner.models.evaluate.grams import canonical_ids, gram_buckets, trace_grams
from baseliner.models.evaluate.windows import count_vectors, count_windows, window_counts
from baseliner.models.ngrams import (
    BUCKETS,
    LONG_BUCKETS,
    ORDERS,
    SHORT_BUCKETS,
    NgramCounter,
    bucket_of,
    gram_hash,
    ngram_counts,
    order_of,
)
from baseliner.models.syscalls import canonical_id, name_of
from baseliner.models.vector import Identity
from hypothesis import given, settings
from hypothesis import strategies as st

NAMES = ["read", "write", "openat", "close", "mmap", "stat64", "execve", "clone", "futex", "socketcall"]


def test_golden_hash_and_bucket():
    ids = canonical_ids(["read", "write"])
    assert gram_hash([int(i) for i in ids]) == 0x15A481FE  # the spec's golden value
    assert gram_buckets(ids, 2).tolist() == [0x15A481FE & (BUCKETS - 1)]
    assert gram_buckets(ids, 2)[0] == bucket_of([canonical_id("read"), canonical_id("write")])


def test_golden_six_gram():
    # spec v2, section 3: order 6 lives at [12288, 77824), 65,536 buckets
    names = ["read", "write", "openat", "close", "mmap", "execve"]
    ids = [canonical_id(n) for n in names]
    assert gram_hash(ids) == 0x5CDB3A6A
    assert bucket_of(ids) == SHORT_BUCKETS + (0x5CDB3A6A & (LONG_BUCKETS - 1)) == 27242
    assert gram_buckets(canonical_ids(names), 6).tolist() == [27242]
    assert order_of(27242) == 6
    with pytest.raises(ValueError):
        bucket_of(ids[:5])  # order 5 is not counted


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(NAMES), min_size=0, max_size=60))
def test_trace_grams_match_reference_counter(calls):
    buckets, _ = trace_grams(canonical_ids(calls))
    got: dict[int, int] = {}
    for b in buckets.tolist():
        got[b] = got.get(b, 0) + 1
    assert got == ngram_counts(calls)


def test_high_bit_ids_wrap_like_32_bit_arithmetic():
    ids = [0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, 0xDEADBEEF, 1, 0xFFFFFFFE, 0x12345678]
    for n in ORDERS:
        expected = [bucket_of(ids[i : i + n]) for i in range(len(ids) - n + 1)]
        assert gram_buckets(np.array(ids, dtype=np.uint64), n).tolist() == expected


@pytest.mark.parametrize("per_window", [1, 3, 7, 50])
def test_windows_carry_history_like_the_sensor(per_window):
    rng = random.Random(per_window)
    calls = [rng.choice(NAMES) for _ in range(203)]
    windows = count_windows(calls, per_window)
    ref = NgramCounter()
    assert len(windows) == -(-len(calls) // per_window)
    for i, (syscalls, ngrams) in enumerate(windows):
        chunk = calls[i * per_window : (i + 1) * per_window]
        ref.feed(chunk)
        assert ngrams == ref.drain(), f"window {i}"
        assert syscalls == {n: chunk.count(n) for n in set(chunk)}


def test_window_counts_with_uneven_windows_and_empty_ones():
    calls = ["read", "write", "read", "close", "open", "read"]
    wins = np.array([0, 0, 2, 2, 2, 3])  # window 1 is empty (a quiet second)
    out = window_counts(calls, wins, 5)
    ref = NgramCounter()
    for w, chunk in enumerate([calls[:2], [], calls[2:5], calls[5:], []]):
        ref.feed(chunk)
        assert out[w][1] == ref.drain()
        assert sum(out[w][0].values()) == len(chunk)


def test_count_vectors_are_feature_vectors_with_nominal_time():
    ident = Identity("n", "c", "img")
    vs = count_vectors([name_of(3, "i386")] * 250, ident, 100.0, calls_per_window=100)
    assert [v.window_start for v in vs] == [100.0, 101.0, 102.0]
    assert [sum(v.syscalls.values()) for v in vs] == [100, 100, 50]
    assert vs[0].syscalls == {"read": 100}
    # 99 bigrams + 98 trigrams + 97 four-grams + 95 six-grams in the first window; 100 of each order later
    assert sum(vs[0].ngrams.values()) == 99 + 98 + 97 + 95
    assert sum(vs[1].ngrams.values()) == 400
    assert sorted(order_of(b) for b in vs[1].ngrams) == [2, 3, 4, 6]
    with pytest.raises(ValueError):
        count_windows(["read"], 0)
