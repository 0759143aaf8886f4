"""Many images' windows of one block at once: the images do not affect one another.

``baseliner.models.baseline.process_blocks`` is the one scoring path (every image of a batch in one set of
NumPy operations, per-image state stacked); ``ImageBaseline.process_block`` is it with one image.  An image
scored among others must get the verdicts and keep the state it gets on its own, whatever the layout of the
block (images interleaved or one after the other, frozen, learning and detecting images together).
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from baseliner.models.baseline import BaselineConfig, ImageBaseline, Mode, process_blocks
from baseliner.models.block import VectorBlock
from baseliner.models.detectors.zscore import ZScoreDetector
from baseliner.models.ngrams import NUM_BUCKETS, SHORT_BUCKETS
from baseliner.models.vector import Endpoint, FeatureVector, Identity

_POOL_RNG = random.Random(7)
_POOLS = {image: _POOL_RNG.sample(range(2 * 4096), 4) + _POOL_RNG.sample(range(2 * 4096, SHORT_BUCKETS), 10)
          + _POOL_RNG.sample(range(SHORT_BUCKETS, NUM_BUCKETS), 16) for image in ("db", "worker")}
CFG = BaselineConfig(min_learn_windows=20, min_learn_seconds=0, stable_confidence=0, startup_seconds=30.0)
IMAGES = ("web", "db", "worker")


def _window(rng: random.Random, image: str, container: int, t: float, age: float) -> FeatureVector:
    scale = {"web": 1.0, "db": 4.0, "worker": 0.3}[image]
    calls = {"read": int(400 * scale * rng.uniform(0.8, 1.2)), "write": int(200 * scale * rng.uniform(0.8, 1.2)),
             "futex": rng.randint(0, 50)}
    v = FeatureVector(
        Identity("node-1", f"{image}-{container}", image, "1"), t, 5.0, calls,
        connects=rng.randint(0, 4), bytes_sent=int(1e4 * scale * rng.uniform(0.5, 1.5)),
        endpoints=[Endpoint("10.0.0.5", 5432)] if image == "web" else [],
        seconds_since_start=age,
    )
    if image != "web":  # the sequence tier for two of the three images: orders 2-4 and 6
        v.ngrams = {b: rng.randint(1, 20) for b in rng.sample(_POOLS[image], 12)}
        if rng.random() < 0.05:  # now and then a context the image has not shown
            v.ngrams[rng.randrange(SHORT_BUCKETS, NUM_BUCKETS)] = rng.randint(1, 5)
    return v


def _rounds(seed: int, n_rounds: int, start: int = 0, shuffle: bool = True) -> list[list[FeatureVector]]:
    """Rounds of every container's window; shuffled, or image by image (as the sensor sends them: the
    stacked path then uses the block's columns in place)."""
    rng = random.Random(seed)
    out = []
    for r in range(start, start + n_rounds):
        batch = []
        for image in IMAGES:
            for c in range(3):
                # container 2 of each image restarts now and then: start-up windows in the same block
                age = 5.0 * (r % 12) if c == 2 else 10_000.0 + 5.0 * r
                batch.append(_window(rng, image, c, 1.7e9 + 5.0 * r, age))
        if shuffle:
            rng.shuffle(batch)
        out.append(batch)
    return out


def _clone(b: ImageBaseline) -> ImageBaseline:
    return ImageBaseline.from_state(*b.to_state())


def _run_both(together: dict[str, ImageBaseline], alone: dict[str, ImageBaseline], batch: list[FeatureVector]):
    block = VectorBlock.from_vectors(batch)
    keys = [v.identity.image_repository for v in batch]
    groups = []
    for image in IMAGES:
        rows = np.array([i for i, k in enumerate(keys) if k == image], dtype=np.int64)
        rows = rows[np.argsort(block.window_start[rows], kind="stable")]
        groups.append((image, rows))
    stacked = process_blocks([(together[image], rows) for image, rows in groups], block)
    single = [alone[image].process_block(block.take(rows)) for image, rows in groups]
    return groups, stacked, single


def _assert_same(a, b) -> None:
    for field in ("score", "threshold", "continuous"):
        np.testing.assert_allclose(getattr(a, field), getattr(b, field), rtol=1e-9, atol=1e-9, err_msg=field)
    for field in ("anomalous", "learned", "startup"):
        assert getattr(a, field).tolist() == getattr(b, field).tolist(), field
    assert a.state == b.state
    assert sorted(a.flagged) == sorted(b.flagged)
    for i, vd in a.flagged.items():
        other = b.flagged[i]
        assert vd.kinds == other.kinds and vd.severity == other.severity and vd.novel == other.novel
        assert [d.feature for d in vd.explanation] == [d.feature for d in other.explanation]
    assert a.novel == b.novel


def _assert_same_state(x: ImageBaseline, y: ImageBaseline) -> None:
    (mx, ax), (my, ay) = x.to_state(), y.to_state()
    assert mx == my
    assert ax.keys() == ay.keys()
    for k in ax:
        np.testing.assert_allclose(ax[k], ay[k], rtol=1e-9, atol=1e-9, err_msg=k)


@pytest.mark.parametrize("shuffle", [True, False], ids=["interleaved", "image by image"])
def test_every_image_at_once_equals_each_image_alone(shuffle: bool) -> None:
    together = {image: ImageBaseline(image, CFG) for image in IMAGES}
    alone = {image: ImageBaseline(image, CFG) for image in IMAGES}
    together["worker"].set_mode(Mode.LEARN)  # one image kept learning while the others detect
    alone["worker"].set_mode(Mode.LEARN)
    batches = _rounds(seed=3, n_rounds=60, shuffle=shuffle)
    # an attack in the last round: a shell in one web container, flagged with an explanation
    attack = next(v for v in batches[-1] if v.identity.image_repository == "web" and v.seconds_since_start > 1000)
    attack.executables = ["/bin/sh"]
    attack.execs = 3
    attack.syscalls["execve"] = 3
    flagged = 0
    for batch in batches:
        groups, stacked, single = _run_both(together, alone, batch)
        for a, b in zip(stacked, single, strict=True):
            _assert_same(a, b)
            flagged += len(a.flagged)
    assert together["web"].state.value == "detecting" and together["worker"].state.value == "learning"
    assert flagged >= 1
    db = together["db"]  # the sequence tier took part: learnt (orders 4 and 6) and calibrated
    assert db.steady.sequence.windows_learned > 50 and db.steady.sequence.novelty.buckets_seen > 16
    assert db.startup.sequence.windows_learned > 0 and math.isfinite(db.steady.seq_threshold.value)
    for image in IMAGES:
        _assert_same_state(together[image], alone[image])


def test_frozen_and_restored_images_in_one_block() -> None:
    base = {image: ImageBaseline(image, CFG) for image in IMAGES}
    for batch in _rounds(seed=5, n_rounds=40):
        _run_both(base, {image: _clone(b) for image, b in base.items()}, batch)
    base["db"].set_mode(Mode.FREEZE)
    alone = {image: _clone(b) for image, b in base.items()}
    for batch in _rounds(seed=6, n_rounds=10, start=40):
        groups, stacked, single = _run_both(base, alone, batch)
        for a, b in zip(stacked, single, strict=True):
            _assert_same(a, b)
        assert not stacked[1].learned.any()  # frozen
    for image in IMAGES:
        _assert_same_state(base[image], alone[image])


def test_a_baseline_may_appear_once() -> None:
    b = ImageBaseline("x", CFG)
    block = VectorBlock.from_vectors(_rounds(seed=1, n_rounds=1)[0])
    with pytest.raises(ValueError, match="more than one group"):
        process_blocks([(b, np.array([0])), (b, np.array([1]))], block)


@pytest.mark.parametrize("layout", ["mixed", "one run each", "one detector"])
def test_stacked_detectors_learn_each_ones_mean_and_spread(layout: str) -> None:
    """Rows of several detectors learnt together, in any layout: each detector ends with the mean and the
    sample standard deviation of its own rows (a memory longer than the stream, nothing to clip), and scores
    a row by the root mean square of its ``top_k`` largest standard scores ``(x - mean) / (std + std_floor)``."""
    rng = np.random.default_rng(0)
    dets = [ZScoreDetector(window=10_000, std_floor=0.1, top_k=2, upper_only=j % 2 == 0, features=tuple("abcd"))
            for j in range(3)]
    seen: list[list[np.ndarray]] = [[] for _ in dets]
    for step in range(12):
        X = rng.normal(size=(30, 4)) * (1 + step % 3) + np.arange(4)
        which = rng.integers(0, 3, size=30) if layout != "one detector" else np.full(30, step % 3)
        if layout == "one run each":  # each detector's rows together (some detectors absent now and then)
            which = np.sort(which if step % 4 else which % 2)
        ZScoreDetector.learn_stacked(dets, X, which, [True, True, False])
        for j in range(3):
            seen[j].append(X[which == j])
    probe = rng.normal(size=(9, 4)) * 3
    which = np.arange(9) % 3
    scores = ZScoreDetector.score_stacked(dets, probe, which)
    for j, d in enumerate(dets):
        rows = np.vstack(seen[j])
        mean, std = rows.mean(axis=0), rows.std(axis=0, ddof=1)
        np.testing.assert_allclose(d.means(), mean, rtol=1e-9)
        np.testing.assert_allclose(d.stds(), std, rtol=1e-9)
        assert d.n_seen == len(rows)
        z = (probe[which == j] - mean) / (std + 0.1)
        z = np.maximum(z, 0.0) if j % 2 == 0 else np.abs(z)
        top = np.sort(z, axis=1)[:, -2:]
        np.testing.assert_allclose(scores[which == j], np.sqrt((top**2).mean(axis=1)), rtol=1e-9)


@pytest.mark.parametrize("layout", ["mixed", "one run each"])
def test_stacked_learning_forgets_and_clips_alike_in_every_layout(layout: str) -> None:
    """With a short memory and clipping, learning several detectors' rows in one call leaves each in the
    state that learning its rows on their own leaves (the per-detector sums of every layout are the same)."""
    rng = np.random.default_rng(0)
    together = [ZScoreDetector(window=50, clip=3.0, upper_only=j % 2 == 0, features=tuple("abcd")) for j in range(3)]
    alone = [ZScoreDetector(window=50, clip=3.0, upper_only=j % 2 == 0, features=tuple("abcd")) for j in range(3)]
    for step in range(12):
        X = rng.normal(size=(30, 4)) * (1 + step % 3)
        which = rng.integers(0, 3, size=30)
        if layout == "one run each":
            which = np.sort(which if step % 4 else which % 2)
        bound = [step % 2 == 0, True, False]
        ZScoreDetector.learn_stacked(together, X, which, bound)
        for j, d in enumerate(alone):
            d.learn_many(X[which == j], bound=bound[j])
        for a, b in zip(together, alone, strict=True):
            np.testing.assert_allclose(a.means(), b.means(), rtol=1e-12)
            np.testing.assert_allclose(a.stds(), b.stds(), rtol=1e-9)
            assert a.n_seen == b.n_seen


def test_novelty_lookups_remembered_per_table_are_forgotten_when_a_set_changes() -> None:
    from baseliner.models.novelty import NoveltySets, novel_rows

    sets = NoveltySets()
    sets.add("syscall", ["read"])
    v = FeatureVector(Identity("n", "c", "x"), 0.0, 5.0, {"read": 1, "write": 1}, endpoints=[Endpoint("10.0.0.1", 22)])
    block = VectorBlock.from_vectors([v])
    zeros = np.zeros(1, dtype=np.int64)

    def texts() -> list[str]:
        return [i.text() for i in novel_rows([sets], block, None, zeros).get(0, [])]

    assert texts() == ["new syscall write", "new port tcp/22"]
    assert texts() == ["new syscall write", "new port tcp/22"]  # the remembered lookup
    sets.add("syscall", ["write"])
    assert texts() == ["new port tcp/22"]
    sets.load_dict({"sets": {"syscall": ["read"]}, "saturated": {}})
    assert texts() == ["new syscall write", "new port tcp/22"]
    sets.clear()
    assert texts() == ["new syscall read", "new syscall write", "new port tcp/22"]


def test_novel_rows_find_each_windows_unknown_items_in_every_layout() -> None:
    """``novel_rows`` finds each window's unknown items in every layout: rows in order with each set's rows one
    run (the service's usual block), rows in order but sets interleaved, and a subset of rows in another order."""
    from baseliner.models.novelty import NoveltySets, novel_rows

    sets = [NoveltySets() for _ in range(3)]
    for g, s in enumerate(sets):
        s.add("syscall", ["read", "write", ["futex", "epoll_wait", "openat"][g]])
        s.add("port", [f"tcp/{5432 + g}"])
        s.add("executable", ["/usr/bin/app"])
    calls = [{"read": 1}, {"read": 2, "futex": 1}, {"write": 1, "epoll_wait": 3}, {"openat": 1, "clone": 2},
             {"read": 1, "write": 1}, {"futex": 4, "openat": 1}]
    vs = [FeatureVector(Identity("n", f"c{i}", "x"), 1.7e9 + i, 5.0, calls[i % len(calls)],
                        endpoints=[Endpoint("10.0.0.9", 5432 + i % 4)],
                        executables=["/usr/bin/app", "/bin/sh"][: 1 + i % 2] if i % 3 == 0 else [])
          for i in range(12)]
    block = VectorBlock.from_vectors(vs)

    def texts(found: dict) -> dict[int, list[str]]:  # type: ignore[type-arg]
        return {k: sorted(i.text() for i in v) for k, v in found.items()}

    def expected(rows: list[int], group: list[int]) -> dict[int, list[str]]:
        """By hand: each item of window ``rows[k]`` its set ``sets[group[k]]`` does not hold."""
        out = {}
        for k, (r, g) in enumerate(zip(rows, group, strict=True)):
            v, known = vs[r], sets[g].sets
            items = [f"new executable {e}" for e in v.executables if e not in known["executable"]]
            items += [f"new syscall {c}" for c in v.syscalls if c not in known["syscall"]]
            items += [f"new port tcp/{ep.port}" for ep in v.endpoints if f"tcp/{ep.port}" not in known["port"]]
            if items:
                out[k] = sorted(items)
        return out

    runs = [0] * 4 + [1] * 5 + [2] * 3
    interleaved = [i % 3 for i in range(12)]
    for group in (runs, interleaved):
        found = texts(novel_rows(sets, block, None, np.array(group)))
        assert found == expected(list(range(12)), group) and found
    rows, group = [11, 3, 7, 0, 5], [2, 0, 1, 1, 0]
    found = texts(novel_rows(sets, block, np.array(rows), np.array(group)))
    assert found == expected(rows, group) and found


def test_each_image_counts_the_windows_it_learnt_and_their_times() -> None:
    """Per image of a block: how many windows it learnt, the earliest and latest start among them and the
    length of the last one; windows it may not learn (incomplete, lost events) count for nothing."""
    a, b, c = (ImageBaseline(k, CFG) for k in ("a", "b", "c"))
    ws = []
    for i in range(12):
        image = "abc"[i % 3]
        v = FeatureVector(Identity("n", f"{image}{i}", image, "1"), 1.7e9 + 10 * i, 5.0 + i, {"read": 100})
        v.complete = not (image == "b" and i > 4)  # b: only its first two windows count
        if image == "c":
            v.events_lost = 1  # c: none
        ws.append(v)
    block = VectorBlock.from_vectors(ws)
    groups = [(a, np.arange(0, 12, 3)), (b, np.arange(1, 12, 3)), (c, np.arange(2, 12, 3))]
    process_blocks(groups, block)
    assert (a.windows_learned, a.first_window, a.last_window, a._window_seconds) == (4, 1.7e9, 1.7e9 + 90, 14.0)
    assert (b.windows_learned, b.first_window, b.last_window, b._window_seconds) == (2, 1.7e9 + 10, 1.7e9 + 40, 9.0)
    assert c.windows_learned == 0 and math.isnan(c.first_window) and math.isnan(c.last_window)
