"""sensor/synthetic.py: deterministic, valid, realistic in shape, attacks where the labels say."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from baseliner.models.ngrams import NUM_BUCKETS, ORDERS, order_of
from baseliner.models.rate_features import FEATURE_INDEX, transform_vectors
from baseliner.models.validate import validate
from baseliner.sensor.synthetic import (
    ATTACK_KINDS,
    HOUR,
    AttackSpec,
    ScenarioConfig,
    SyntheticSource,
    default_attacks,
)

# A short scenario with every attack early, so tests stay fast.
ATTACKS = (
    AttackSpec("reverse_shell", "web", 1, 1.0, 4),
    AttackSpec("etc_write", "worker", 1, 1.2, 0.5),
    AttackSpec("port_scan", "worker", 0, 1.4, 3),
    AttackSpec("data_exfiltration", "db", 0, 1.6, 4),
    AttackSpec("crypto_miner", "worker", 2, 1.8, 10),
)


def _config(**kw: object) -> ScenarioConfig:
    base: dict[str, object] = {"hours": 2.2, "attacks": ATTACKS, "rollout_at_hours": 0.5, "restarts_per_day": 0.0}
    base.update(kw)
    return ScenarioConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def run() -> tuple[SyntheticSource, list[tuple[float, list]]]:
    src = SyntheticSource(_config())
    return src, list(src.windows())


def test_deterministic_for_a_seed_and_different_for_another() -> None:
    a = [v for _, w in zip(range(200), SyntheticSource(_config()).windows(), strict=False) for v in w[1]]
    b = [v for _, w in zip(range(200), SyntheticSource(_config()).windows(), strict=False) for v in w[1]]
    c = [v for _, w in zip(range(200), SyntheticSource(_config(seed=8)).windows(), strict=False) for v in w[1]]
    assert a == b
    assert a != c
    # iterating the same source twice gives the same vectors (no state leaks between runs)
    src = SyntheticSource(_config())
    first = [v for w in zip(range(50), src, strict=False) for v in w[1]]
    again = [v for w in zip(range(50), src, strict=False) for v in w[1]]
    assert first == again


def test_every_vector_is_valid_and_in_event_time_order(run) -> None:  # type: ignore[no-untyped-def]
    src, windows = run
    prev = -math.inf
    for t, vectors in windows:
        assert t > prev
        prev = t
        for v in vectors:
            validate(v)
            assert v.window_start == t and v.window_seconds == src.config.window_seconds
            assert v.seconds_since_start >= 0


def test_images_replicas_nodes(run) -> None:  # type: ignore[no-untyped-def]
    src, windows = run
    images = {v.identity.image for _, w in windows for v in w}
    assert images == {"nginx:1.27.3", "postgres:16.6", "acme/report-worker:2.4.1"}
    pods = {(v.identity.image, v.identity.pod) for _, w in windows[:5] for v in w}
    assert len(pods) == 8
    assert {v.identity.node for _, w in windows for v in w} == {"node-1", "node-2", "node-3"}


def test_daily_cycle_and_startup_behaviour() -> None:
    src = SyntheticSource(ScenarioConfig(hours=24, attacks=(), rollout_at_hours=None, restarts_per_day=0.0))
    rate = {2: [], 14: []}
    for t, vectors in src.windows():
        hour = int((t % 86400) // 3600)
        if hour in rate:
            rate[hour].extend(v.accepts for v in vectors if v.identity.image_repository == "nginx")
    assert np.mean(rate[14]) > 3 * np.mean(rate[2])
    first = next(iter(src))
    web = [v for v in first if v.identity.image_repository == "nginx"]
    assert all("/usr/sbin/nginx" in v.executables and v.listens == 2 for v in web)
    assert all(v.sensitive_paths == ["/etc/nginx/conf.d/default.conf"] for v in web)


def test_rollout_restarts_with_new_containers_and_startup(run) -> None:  # type: ignore[no-untyped-def]
    src, windows = run
    ids_before = {v.identity.container_id for v in windows[0][1] if v.identity.image_repository == "nginx"}
    t_after = src.config.start + 0.6 * HOUR
    after = [w for t, w in windows if t >= t_after][0]
    ids_after = {v.identity.container_id for v in after if v.identity.image_repository == "nginx"}
    assert len(ids_after) == 3 and not ids_before & ids_after
    new_starts = [v for _, w in windows for v in w
                  if v.identity.container_id in ids_after and v.seconds_since_start == 0]
    assert len(new_starts) == 3 and all(v.execs >= 5 for v in new_starts)
    exited = [v for _, w in windows for v in w if v.container_exited]
    assert {v.identity.container_id for v in exited} == ids_before


def test_ngrams_agree_with_syscall_counts() -> None:
    windows = list(zip(range(101), SyntheticSource(_config(ngram_orders=ORDERS)), strict=False))
    for v in windows[100][1]:
        bigrams = sum(c for b, c in v.ngrams.items() if order_of(b) == 2)
        calls = sum(v.syscalls.values())
        # each motif run of length L contributes L-1 bigrams: fewer bigrams than calls, same magnitude
        assert 0.5 * calls < bigrams < calls
        assert all(0 <= b < NUM_BUCKETS for b in v.ngrams)
    assert all(not v.ngrams for v in next(iter(SyntheticSource(_config(ngrams=False)))))


def test_ngrams_only_the_configured_orders(run) -> None:  # type: ignore[no-untyped-def]
    """By default the source emits orders 4 and 6 only, as the eBPF sensor does; the counts are the
    all-orders source's counts of those orders, and everything else about the windows is the same."""
    src, windows = run
    assert src.config.ngram_orders == (4, 6)
    allo = list(zip(range(300), SyntheticSource(_config(ngram_orders=ORDERS)), strict=False))
    only = list(zip(range(300), SyntheticSource(_config(ngram_orders=(6, 2))), strict=False))
    seen: set[int] = set()
    for (_, mine), (_, full), (_, two_six) in zip(windows[:300], allo, only, strict=True):
        for v, w, x in zip(mine, full, two_six, strict=True):
            seen |= {order_of(b) for b in v.ngrams}
            assert v.ngrams == {b: c for b, c in w.ngrams.items() if order_of(b) in (4, 6)}
            assert x.ngrams == {b: c for b, c in w.ngrams.items() if order_of(b) in (2, 6)}
            assert v.syscalls == w.syscalls and v.identity == w.identity and v.bytes_sent == w.bytes_sent
    assert seen == {4, 6}


def test_labels_cover_exactly_the_attack_windows(run) -> None:  # type: ignore[no-untyped-def]
    src, windows = run
    assert [a.kind for a in src.attacks] == list(ATTACK_KINDS[:1]) + ["etc_write", "port_scan",
                                                                      "data_exfiltration", "crypto_miner"]
    labelled: dict[str, list] = {k: [] for k in ATTACK_KINDS}
    for _, w in windows:
        for v in w:
            a = src.label_of(v)
            if a is not None:
                assert v.identity.container_id == a.container_id and v.identity.pod == a.pod
                assert v.window_start < a.end and v.window_end > a.start
                labelled[a.kind].append(v)
    for a in src.attacks:
        n = math.ceil((a.end - a.start) / src.config.window_seconds)
        assert n <= len(labelled[a.kind]) <= n + 1, a.kind


def _rows(vectors: list) -> np.ndarray:
    return transform_vectors(vectors)


def test_attack_windows_carry_their_signature(run) -> None:  # type: ignore[no-untyped-def]
    src, windows = run
    by_kind = {a.kind: a for a in src.attacks}
    vs = {k: [v for _, w in windows for v in w if src.label_of(v) is by_kind[k]] for k in ATTACK_KINDS}

    def normal(kind: str) -> list:
        a = by_kind[kind]
        return [v for _, w in windows for v in w
                if v.identity.pod == a.pod and v.window_end <= a.start - 600 and v.seconds_since_start > 60]

    shell = vs["reverse_shell"]
    assert "/bin/sh" in shell[0].executables
    assert any(e.port == 4444 and e.outbound for e in shell[0].endpoints)
    assert not any("/bin/sh" in v.executables for v in normal("reverse_shell"))

    miner = vs["crypto_miner"]
    assert "/tmp/kdevtmpfsi" in miner[0].executables
    assert any(e.port == 3333 for e in miner[0].endpoints)
    assert all(v.syscalls.get("sched_yield", 0) > 0 for v in miner)  # the miner keeps running

    scan = vs["port_scan"]
    base = normal("port_scan")
    assert min(v.connects_failed for v in scan) > 50 * max(1, max(v.connects_failed for v in base))

    exfil = vs["data_exfiltration"]
    j = FEATURE_INDEX["net.bytes_sent"]
    assert np.median(_rows(exfil)[:, j]) > np.max(_rows(normal("data_exfiltration"))[:, j]) + 2  # > e^2 x

    etc = vs["etc_write"]
    assert etc[0].sensitive_paths == ["/etc/ld.so.preload", "/etc/passwd"]
    assert not any(v.sensitive_writes for v in normal("etc_write"))


def test_cli_ngram_orders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``baseliner sensor record --source synthetic [--ngram-orders ...]``: default 4,6; bad values refused
    with what is allowed."""
    from baseliner.models.recording import RecordingReader
    from baseliner.service.cli import main

    got = {}
    for name, extra in (("default", []), ("all", ["--ngram-orders", "2,3,4,6"]), ("six", ["--ngram-orders", "6"])):
        out = tmp_path / f"{name}.jsonl"
        assert main(["sensor", "record", "--out", str(out), "--hours", "0.1", "--no-attacks", *extra]) == 0
        rec = RecordingReader(out)
        got[name] = {order_of(b) for v in rec.vectors() for b in v.ngrams}
        assert rec.header["scenario"]["ngram_orders"] == sorted(got[name])
    assert got == {"default": {4, 6}, "all": {2, 3, 4, 6}, "six": {6}}
    for bad, message in (("4,5", "order 5 is not one of 2, 3, 4, 6"), ("four", "comma-separated integers"),
                         ("", "comma-separated integers"), ("6,6", "repeat")):
        assert main(["sensor", "record", "--out", str(tmp_path / "x.jsonl"), "--ngram-orders", bad]) == 2
        err = capsys.readouterr().err
        assert "argument --ngram-orders: " in err and message in err, err


def test_invalid_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown attack kind"):
        AttackSpec("rootkit", "web", 0, 1, 1)
    with pytest.raises(ValueError, match="replica 5"):
        ScenarioConfig(attacks=(AttackSpec("port_scan", "web", 5, 1, 1),))
    with pytest.raises(ValueError, match="ends after"):
        ScenarioConfig(hours=2, attacks=default_attacks(24))
    with pytest.raises(ValueError, match="ngram_orders: n-gram order 5 is not one of 2, 3, 4, 6"):
        ScenarioConfig(ngram_orders=(4, 5))
    with pytest.raises(ValueError, match="ngram_orders: at least one"):
        ScenarioConfig(ngram_orders=())
