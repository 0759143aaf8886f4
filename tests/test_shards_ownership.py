"""Ownership by rendezvous hashing (baseliner.models.shards): every party computes the same owner, and a change
of the shard list moves only the keys that must move."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest
from baseliner.models.shards import (
    MAX_SHARDS,
    Shard,
    ShardListError,
    ShardMap,
    owner,
    parse_shard_list,
    routing_key_of_image_key,
    weight,
)

KEYS = [f"registry.example:5000/team-{i % 97}/app-{i}" for i in range(20_000)]


def owners(names: list[str]) -> dict[str, str]:
    return {k: owner(names, k) for k in KEYS}


def test_weights_are_pinned() -> None:
    """The hash is part of the protocol: sensors and services of one release must agree on it."""
    assert weight("baseliner-0", "nginx") == 0xFB9E9C4E579704FA
    assert weight("baseliner-1", "nginx") == 0x6677B2002C638DD6
    names = [f"baseliner-{i}" for i in range(3)]
    got = [owner(names, k) for k in ("nginx", "redis", "postgres", "busybox", "quay.io/org/app")]
    assert got == ["baseliner-0", "baseliner-2", "baseliner-2", "baseliner-1", "baseliner-1"]


def test_another_process_with_another_hash_seed_computes_the_same_owners() -> None:
    names = [f"baseliner-{i}" for i in range(5)]
    here = {k: owner(names, k) for k in KEYS[:2000]}
    code = ("import json,sys; from baseliner.models.shards import owner; ks=json.load(sys.stdin); "
            f"print(json.dumps({{k: owner({names!r}, k) for k in ks}}))")
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(KEYS[:2000]), capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert json.loads(out.stdout) == here


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_keys_spread_evenly(n: int) -> None:
    counts = Counter(owners([f"baseliner-{i}" for i in range(n)]).values())
    expected = len(KEYS) / n
    assert len(counts) == n
    assert all(abs(c - expected) < 0.06 * expected for c in counts.values()), counts


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_adding_a_shard_moves_only_the_keys_it_takes(n: int) -> None:
    before = [f"baseliner-{i}" for i in range(n)]
    after = [*before, f"baseliner-{n}"]
    a, b = owners(before), owners(after)
    moved = [k for k in KEYS if a[k] != b[k]]
    assert all(b[k] == f"baseliner-{n}" for k in moved)  # only to the new shard
    assert abs(len(moved) - len(KEYS) / (n + 1)) < 0.06 * len(KEYS) / (n + 1)  # about 1/(n+1) of them


@pytest.mark.parametrize("gone", [0, 1, 2])
def test_removing_a_shard_moves_only_its_keys(gone: int) -> None:
    names = [f"baseliner-{i}" for i in range(3)]
    rest = [n for i, n in enumerate(names) if i != gone]
    a, b = owners(names), owners(rest)
    for k in KEYS:
        if a[k] != names[gone]:
            assert b[k] == a[k]
    moved = Counter(b[k] for k in KEYS if a[k] == names[gone])
    assert set(moved) == set(rest) and min(moved.values()) > 0.3 * sum(moved.values())  # spread, not piled


def test_order_of_the_list_does_not_matter() -> None:
    names = [f"baseliner-{i}" for i in range(4)]
    m1 = ShardMap(3, [Shard(n, f"{n}.svc:50051") for n in names])
    m2 = ShardMap(3, [Shard(n, f"{n}.svc:50051") for n in reversed(names)])
    assert m1 == m2 and all(m1.owner(k) == m2.owner(k) for k in KEYS[:500])
    assert all(m1.owner(k).name == owner(names, k) for k in KEYS[:500])


def test_image_keys_of_every_mode_route_with_their_repository() -> None:
    for repo in ("nginx", "reg:5000/app", "quay.io/org/app"):
        keys = [f"{repo}:1.27", f"{repo}@sha256:{'ab' * 32}", repo]
        assert {routing_key_of_image_key(k) for k in keys} == {repo}


def test_shard_lists() -> None:
    got = parse_shard_list("baseliner-{0..2}.baseliner-shards.baseliner.svc.cluster.local:50051")
    assert [s.name for s in got] == ["baseliner-0", "baseliner-1", "baseliner-2"]
    assert got[1].address == "baseliner-1.baseliner-shards.baseliner.svc.cluster.local:50051"
    got = parse_shard_list("a=127.0.0.1:1, b=127.0.0.1:2\n127.0.0.1:3  # third\n")
    assert [(s.name, s.address) for s in got] == [("a", "127.0.0.1:1"), ("b", "127.0.0.1:2"),
                                                  ("127.0.0.1:3", "127.0.0.1:3")]
    m = ShardMap(0, got)
    assert ShardMap.from_dict(json.loads(json.dumps(m.to_dict()))) == m


@pytest.mark.parametrize("text, says", [
    ("a=1.2.3.4:1,a=1.2.3.5:1", "distinct"),
    ("nohost", "NAME=HOST:PORT"),
    ("x:99999", "NAME=HOST:PORT"),
    ("s-{3..1}:1", "backwards"),
    (f"s-{{0..{MAX_SHARDS}}}:1", "more than"),
    ("b@d=1.2.3.4:5", "is not a name"),
])
def test_bad_lists_are_named(text: str, says: str) -> None:
    with pytest.raises(ShardListError, match=says):
        parse_shard_list(text)
