"""Per-container window order and ages (service/container_tracker.py and the pipeline's use of it).

The array tracker is checked against a reference: the window-by-window tracker the service had before
(an ordered dict, one window at a time in arrival order), on random batches with repeated containers,
windows back in time and equal starts.
"""

from __future__ import annotations

import math
import os
import sys
from collections import OrderedDict
from dataclasses import replace

import numpy as np
from baseliner.models.block import VectorBlock
from baseliner.service.config import PipelineConfig
from baseliner.service.container_tracker import ContainerTracker
from baseliner.service.pipeline import Pipeline
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))
from service_fixtures import T0, WINDOW, config, vector  # noqa: E402


class _Reference:
    """The window-by-window tracker (unbounded): ``observe`` returns ``(first, previous last)``."""

    def __init__(self) -> None:
        self.seen: OrderedDict[str, list[float]] = OrderedDict()

    def observe(self, key: str, t: float) -> tuple[float, float]:
        entry = self.seen.get(key)
        if entry is None:
            self.seen[key] = [t, t]
            return t, -math.inf
        prev = entry[1]
        if t > prev:
            entry[1] = t
        return entry[0], prev


batches_st = st.lists(  # batches of (container, start): few containers, so repeats within a batch are common
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 12).map(float)), min_size=0, max_size=12),
    min_size=1, max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(batches_st)
def test_tracker_decides_like_the_window_by_window_reference(batches: list[list[tuple[int, float]]]) -> None:
    t = ContainerTracker(capacity=100)
    ref = _Reference()
    for batch in batches:
        keys = [f"n/c{c}" for c, _ in batch]
        starts = np.array([s for _, s in batch], dtype=np.float64)
        accepted, prev, first = t.observe(t.slots(keys), starts)
        want = [ref.observe(k, s) for k, s in zip(keys, starts.tolist(), strict=True)]
        assert prev.tolist() == [p for _, p in want]
        assert accepted.tolist() == [s > p for s, (_, p) in zip(starts.tolist(), want, strict=True)]
        # the first start after the batch (what a filled-in age counts from)
        assert first.tolist() == [ref.seen[k][0] for k in keys]
        for k, (_f, last) in ref.seen.items():
            assert t.last(k) == last
    assert sorted(map(tuple, t.to_list())) == sorted((k, f, la) for k, (f, la) in ref.seen.items())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 6), st.lists(st.lists(st.integers(0, 15), min_size=1, max_size=8), min_size=1, max_size=30))
def test_tracker_is_bounded_and_drops_the_least_recently_seen(capacity: int, batches: list[list[int]]) -> None:
    t = ContainerTracker(capacity)
    last_batch: dict[str, int] = {}
    for b, containers in enumerate(batches):
        keys = [f"n/c{c}" for c in containers]
        t.observe(t.slots(keys), np.full(len(keys), float(b)))
        for k in keys:
            last_batch[k] = b
        assert len(t) <= capacity
        kept = {k for k, _, _ in t.to_list()}
        assert len(kept) == min(capacity, len(last_batch))
        dropped = set(last_batch) - kept
        if dropped and kept:  # nothing kept was seen before something dropped
            assert max(last_batch[k] for k in dropped) <= min(last_batch[k] for k in kept)
        if len(set(keys)) <= capacity:
            assert set(keys) <= kept
        for k in kept:
            assert t.last(k) == float(last_batch[k])


def test_saved_tracker_loads_with_its_order_and_bound() -> None:
    t = ContainerTracker(capacity=3)
    for b, keys in enumerate([["n/a", "n/b"], ["n/c"], ["n/a"]]):
        t.observe(t.slots(keys), np.full(len(keys), 10.0 * b))
    rows = t.to_list()
    assert [r[0] for r in rows] == ["n/b", "n/c", "n/a"]  # least recently seen first
    u = ContainerTracker(capacity=2)
    u.load(rows)
    assert [r[0] for r in u.to_list()] == ["n/c", "n/a"]  # loading beyond the bound drops the oldest
    ok, prev, _ = u.observe(u.slots(["n/a", "n/c", "n/b"]), np.array([20.0, 30.0, 0.0]))
    assert ok.tolist() == [False, True, True] and prev.tolist() == [20.0, 10.0, -math.inf]


def _pipeline(**kw: object) -> Pipeline:
    return Pipeline(PipelineConfig(**kw), config().baseline_config())  # type: ignore[arg-type]


def test_several_windows_of_a_container_in_one_batch() -> None:
    p = _pipeline()
    # container 0: windows 3, 1 (back in time), 4, 4 (the same start again), 5; container 1: windows 2, 3
    vs = [vector(3, 0), vector(2, 1), vector(1, 0), vector(4, 0), vector(3, 1), vector(4, 0), vector(5, 0)]
    r = p.apply_block("s", 1, VectorBlock.from_vectors(vs))
    assert r.applied == 5
    assert [(e.index, e.reason) for e in r.rejected] == [(2, "OUT_OF_ORDER"), (5, "OUT_OF_ORDER")]
    t3, t4 = T0 + 3 * WINDOW, T0 + 4 * WINDOW
    assert r.rejected[0].message == f"window at {T0 + WINDOW} is not after this container's last window at {t3}"
    assert r.rejected[1].message == f"window at {t4} is not after this container's last window at {t4}"
    # across batches: back in time, and the container's last window again, are refused; later ones pass
    r = p.apply_block("s", 2, VectorBlock.from_vectors([vector(5, 0), vector(4, 1), vector(6, 0), vector(1, 1)]))
    assert [(e.index, e.reason) for e in r.rejected] == [(0, "OUT_OF_ORDER"), (3, "OUT_OF_ORDER")]
    assert r.applied == 2 and p.containers.last("node-1/c0") == T0 + 6 * WINDOW


def test_unknown_ages_are_filled_from_the_first_window_and_inputs_are_not_changed() -> None:
    p = _pipeline()
    vs = [vector(10 + k, c, age=-1.0) for k in range(3) for c in (0, 1)]
    vs.append(vector(12, 2, age=77.0))  # a known age is kept
    originals = [replace(v) for v in vs]
    p.apply_block("s", 1, VectorBlock.from_vectors(vs))
    assert vs == originals  # apply_block leaves the caller's vectors alone
    more = [vector(13, 0, age=-1.0), vector(13, 1, age=5.0), vector(14, 3, age=-1.0), vector(15, 3, age=-1.0)]
    block = VectorBlock.from_vectors(more)
    assert p.apply_block("s", 2, block).applied == 4
    # a block handed to the pipeline gets the ages the service knows (from the container's first window)
    assert block.age.tolist() == [30.0, 5.0, 0.0, 10.0]


def test_tracker_bound_through_the_pipeline_and_its_saved_state() -> None:
    p = _pipeline(max_containers=2)
    r = p.apply_block("s", 1, VectorBlock.from_vectors([vector(5, 0, age=-1.0), vector(5, 1, age=-1.0)]))
    assert r.applied == 2
    r = p.apply_block("s", 2, VectorBlock.from_vectors([vector(6, 1), vector(6, 2)]))  # container 0 is dropped
    assert r.applied == 2 and len(p.containers) == 2 and p.containers.last("node-1/c0") == -math.inf
    # container 0 is new again: its old windows are not refused, its age counts from now
    block = VectorBlock.from_vectors([vector(1, 0, age=-1.0), vector(7, 1, age=-1.0)])
    r = p.apply_block("s", 3, block)
    assert r.applied == 2 and block.age.tolist() == [0.0, 2 * WINDOW]
    # the tracker is saved with the service state and restored
    state = p.service_state()
    q = _pipeline(max_containers=2)
    q.load_service_state(state)
    r = q.apply_block("s", 4, VectorBlock.from_vectors([vector(7, 1), vector(1, 0), vector(2, 0)]))
    assert [(e.index, e.reason) for e in r.rejected] == [(0, "OUT_OF_ORDER"), (1, "OUT_OF_ORDER")]
    assert r.applied == 1


def test_identity_table_is_bounded_and_follows_dropped_containers() -> None:
    p = _pipeline(max_containers=3)
    seq = 0
    for rnd in range(4):  # 4 rounds of 5 containers: identities and containers turn over every batch
        for c in range(5):
            seq += 1
            r = p.apply_block("s", seq, VectorBlock.from_vectors([vector(rnd, c, age=-1.0)]))
            assert r.applied == 1 and not r.rejected
    assert len(p.containers) == 3 and len(p._ident_row) <= 3 + 1
    # a container still tracked keeps its order through the cached slots
    seq += 1
    r = p.apply_block("s", seq, VectorBlock.from_vectors([vector(3, 4), vector(0, 2)]))
    assert [e.index for e in r.rejected] == [0, 1]


def test_tracker_drops_in_order_when_containers_come_back_between_drops() -> None:
    t = ContainerTracker(capacity=128)  # finds 2 candidates for dropping at a time
    for b in range(128):
        t.observe(t.slots([f"n/c{b}"]), np.array([float(b)]))
    t.observe(t.slots(["n/new0"]), np.array([200.0]))  # c0 goes; c1 is the next candidate
    assert t.last("n/c0") == -math.inf and t.last("n/c1") == 1.0
    t.observe(t.slots(["n/c1"]), np.array([201.0]))  # c1 seen again: no longer among the oldest
    t.observe(t.slots(["n/new1"]), np.array([202.0]))
    assert t.last("n/c1") == 201.0 and t.last("n/c2") == -math.inf and len(t) == 128


def test_an_identity_table_seen_again_follows_forgotten_identities() -> None:
    """The pipeline remembers each identity table's rows (the decoder hands it the same list for the same
    table); when the bounded identity tables are forgotten, a table seen again is looked up afresh, and
    its windows still go to their own containers."""
    p = _pipeline(max_containers=3)
    first = VectorBlock.from_vectors([vector(0, 0), vector(0, 1)])
    table = first.identities

    def on_table(i: int) -> VectorBlock:  # windows i of containers 0 and 1, on the very same table list
        return replace(VectorBlock.from_vectors([vector(i, 0), vector(i, 1)]), identities=table)

    assert p.apply_block("s", 1, first).applied == 2
    assert p.apply_block("s", 2, on_table(1)).applied == 2  # the remembered rows
    assert p.containers.last("node-1/c1") == T0 + WINDOW
    seq = 2
    for c in (2, 3, 4, 5):  # other containers: the identity tables overflow and are forgotten
        seq += 1
        assert p.apply_block("s", seq, VectorBlock.from_vectors([vector(2, c)])).applied == 1
    assert table[0] not in p._ident_row
    assert p.apply_block("s", seq + 1, on_table(3)).applied == 2
    assert p.containers.last("node-1/c0") == T0 + 3 * WINDOW and p.containers.last("node-1/c1") == T0 + 3 * WINDOW
    assert p.containers.last("node-1/c5") == T0 + 2 * WINDOW  # not taken for c0 or c1
