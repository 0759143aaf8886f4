"""Dataset loaders (ADFA-LD subset, the LID-DS sample, LID-DS folders) and the evaluation runs/CLI."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from baseliner.models.block import VectorBlock
from baseliner.models.evaluate import adfa, lidds, splits
from baseliner.models.evaluate.adfa import DatasetError, load_adfa
from baseliner.models.evaluate.run import AdfaData, evaluate_adfa, evaluate_lidds, evaluate_protocol
from baseliner.models.evaluate.scorers import RATE_TIER, SEQUENCE_TIER
from baseliner.models.ngrams import NgramCounter
from scipy.stats import rankdata

needs_adfa = pytest.mark.skipif(not adfa.DEFAULT_PATH.is_file(), reason="ADFA-LD not at ../shared/datasets")
needs_lidds = pytest.mark.skipif(not lidds.DEFAULT_SAMPLE.is_file(), reason="LID-DS sample not at ../shared/datasets")


@needs_adfa
def test_adfa_subset_labels_and_i386_names():
    traces = load_adfa(limit_per_split=12)
    assert [sum(t.split == s for t in traces) for s in ("train", "validation", "attack")] == [12, 12, 12]
    attacks = [t for t in traces if t.split == "attack"]
    # round robin over the six attack types
    assert {t.attack_type for t in attacks} == {"Adduser", "Hydra_FTP", "Hydra_SSH", "Java_Meterpreter",
                                                "Meterpreter", "Web_Shell"}
    assert all(t.label == 1 for t in attacks) and all(t.label == 0 for t in traces if t.split != "attack")
    # the raw numbers map through the i386 table: read the first training file ourselves
    first = traces[0]
    with zipfile.ZipFile(adfa.DEFAULT_PATH) as zf:
        raw = [int(x) for x in zf.read(first.name).split()]
    assert len(raw) == len(first.calls)
    table = {3: "read", 4: "write", 5: "open", 6: "close", 195: "stat", 192: "mmap", 252: "exit_group", 120: "clone"}
    for nr, name in zip(raw, first.calls, strict=True):
        if nr in table:
            assert name == table[nr]
    assert not any(c.startswith("sys_") for t in traces for c in t.calls)


def test_adfa_missing_or_bad_archive(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_adfa(tmp_path / "nope.zip")
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="not a zip"):
        load_adfa(bad)
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("ADFA-LD/Training_Data_Master/UTD-0001.txt", "3 4 5 6 ")
    with pytest.raises(DatasetError, match="no traces for split 'validation'"):
        load_adfa(empty)
    garbled = tmp_path / "garbled.zip"
    with zipfile.ZipFile(garbled, "w") as zf:
        zf.writestr("ADFA-LD/Training_Data_Master/UTD-0001.txt", "3 4 x 6")
    with pytest.raises(DatasetError, match="UTD-0001.txt"):
        load_adfa(garbled)


@needs_adfa
def test_adfa_run_on_a_subset_ranks_attacks_above_chance():
    run = evaluate_adfa(limit_per_split=40, progress=False, bootstrap=200)
    kinds = {m.name: m.kind for m in run.models}
    assert list(kinds.values()) == ["baseliner", "tier", "tier", "baseline", "baseline", "baseline", "baseline"]
    assert any("STIDE" in n for n in kinds) and any("HalfSpaceTrees" in n for n in kinds)
    assert len(run.labels) == 80 and run.labels.sum() == 40
    assert run.split is not None and run.split.family == "standard"
    seq = next(m for m in run.models if m.name == SEQUENCE_TIER)
    stide = next(m for m in run.models if "STIDE" in m.name)
    assert seq.summary.auc > 0.7 and stide.summary.auc > 0.7
    default = run.models[0]
    assert default.state_bytes is not None and default.state_bytes < 512 * 1024
    assert set(seq.by_type) == {"Adduser", "Hydra_FTP", "Hydra_SSH", "Java_Meterpreter", "Meterpreter", "Web_Shell"}
    # the default model against every other model, its tiers included, with bootstrap intervals
    assert [name for name, _, _ in run.versus] == [m.name for m in run.models[1:]]
    for name, auc, dr in run.versus:
        other = next(m for m in run.models if m.name == name)
        assert auc.value == pytest.approx(default.summary.auc - other.summary.auc)
        assert dr.value == pytest.approx(default.summary.dr_5 - other.summary.dr_5)
        assert auc.low <= auc.value <= auc.high and dr.low <= dr.value <= dr.high
    ranks = run.ranks("auc")
    assert sorted(ranks.values()) == pytest.approx(sorted(rankdata([-m.summary.auc for m in run.models])))


@needs_adfa
def test_tiers_are_the_default_models_own():
    """The tier scores read from the learnt model are the parts its continuous score combines: each tier's
    tail surprise under its own calibration, added as Fisher's method adds them."""
    from baseliner.models.evaluate.scorers import PipelineScorer

    data = AdfaData.load(limit_per_split=25)
    split = splits.standard(data.traces)
    learn, _ = data.vectors(split.learn)
    test, _ = data.vectors(split.test)
    scorer = PipelineScorer()
    scorer.learn(learn)
    scorer.freeze()
    verdicts = scorer.baseline.process_block(VectorBlock.from_vectors(test))
    tiers = scorer.tiers(test)
    steady = scorer.baseline.steady
    assert np.isfinite(steady.threshold.value) and np.isfinite(steady.seq_threshold.value)
    x = np.log(10.0) * (steady.threshold.surprise(tiers[RATE_TIER])
                        + steady.seq_threshold.surprise(tiers[SEQUENCE_TIER]))
    combined = (x - np.log1p(np.maximum(x, 0.0))) / np.log(10.0)
    assert np.allclose(verdicts.continuous, combined, rtol=1e-5, atol=1e-6)


@needs_adfa
def test_default_model_is_at_least_as_good_as_each_of_its_tiers_on_held_out_traces():
    """The standard split (learn Training_Data_Master; test on Validation_Data_Master and the attacks, never
    learnt): the default model's ROC AUC and DR @ 5% FPR are at least each tier's alone (the tier
    combination was chosen by cross-validation inside the training traces: bench/choose_settings.py)."""
    from baseliner.models.evaluate.run import evaluate_split

    data = AdfaData.load()
    run = evaluate_split(data, splits.standard(data.traces), baselines=[], progress=False, bootstrap=0)
    default, *tiers = run.models
    assert [m.kind for m in run.models] == ["baseliner", "tier", "tier"]
    for tier in tiers:
        assert default.summary.auc >= tier.summary.auc, tier.name
        assert default.summary.dr_5 >= tier.summary.dr_5, tier.name


@needs_adfa
def test_protocol_reports_resplits_with_spread_and_rank():
    proto = evaluate_protocol(limit_per_split=30, seeds=(1, 2), progress=False, bootstrap=0)
    assert proto.main.split.family == "standard" and not proto.main.versus
    assert [r.split.name for r in proto.resplits] == [f"{f} seed {k}" for f in splits.FAMILIES for k in (1, 2)]
    families = proto.families()
    assert list(families) == list(splits.FAMILIES)
    for rows in families.values():
        assert [r.model for r in rows] == [m.name for m in proto.main.models]
        for r in rows:
            assert r.runs == 2 and r.auc[2] <= r.auc[0] <= r.auc[3] and r.auc[1] >= 0
            assert 1 <= r.rank_auc <= len(rows)
    runs = [x for x in proto.resplits if x.split.family == "validation-half"]
    first = families["validation-half"][0]
    assert first.auc[0] == pytest.approx(np.mean([x.models[0].summary.auc for x in runs]))
    assert first.rank_auc == pytest.approx(np.mean([x.ranks("auc")[first.model] for x in runs]))


# -- LID-DS ---------------------------------------------------------------------------------------------


@needs_lidds
def test_lidds_sample_recording():
    rec = lidds.load_recording(lidds.DEFAULT_SAMPLE)
    assert rec.image == "victim_bruteforce"
    assert rec.exploit_time == pytest.approx(1631078877.513988)
    assert rec.calls == 11734 and rec.malformed_lines == 0  # enter events = half of 23,468 lines
    assert len(rec.vectors) == 18  # 1-second windows over the ~17.6 s recording
    assert sum(sum(v.syscalls.values()) for v in rec.vectors) == rec.calls
    starts = [v.window_start for v in rec.vectors]
    assert np.allclose(np.diff(starts), 1.0)
    assert all(v.window_seconds == 1.0 for v in rec.vectors)
    assert sum(1 for v in rec.vectors if v.window_end > rec.exploit_time) == 8


def _write_sc(path: Path, events, meta):
    lines = [f"{ts} 0 {tid} proc {tid} {name} > fd=3" + "\n" + f"{ts + 5} 0 {tid} proc {tid} {name} < res=0"
             for ts, tid, name in events]
    path.write_text("\n".join(lines) + "\n")
    path.with_suffix(".json").write_text(json.dumps(meta))


def test_sc_parsing_threads_and_timed_windows(tmp_path):
    t0 = 1_600_000_000_000_000_000
    ev = [(t0 + i * 100_000_000, 1 + i % 2, ["read", "write", "futex", "close"][i % 4]) for i in range(40)]
    sc = tmp_path / "r.sc"
    _write_sc(sc, ev, {"exploit": False, "image": "img"})
    with sc.open("a") as f:
        f.write("garbage line\n")
    rec = lidds.load_recording(sc)
    assert rec.exploit_time is None and rec.malformed_lines == 1 and rec.calls == 40
    assert len(rec.vectors) == 4  # 40 events 0.1 s apart
    # n-grams per thread with history across the 1-second windows: compare with the reference counter
    ref = NgramCounter()
    for w, v in enumerate(rec.vectors):
        for ts, tid, name in ev:
            if (ts - t0) // 1_000_000_000 == w:
                ref.feed([name], thread=tid)
        assert v.ngrams == ref.drain()
        assert v.seconds_since_start == w


def test_lidds_bad_inputs(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        lidds.load_split(tmp_path / "missing")
    with pytest.raises(DatasetError, match="scenario folder"):
        lidds.load_split(tmp_path)
    sc = tmp_path / "x.sc"
    sc.write_text("1 0 1 p 1 read > \n")
    with pytest.raises(DatasetError, match="no x.json"):
        lidds.load_recording(sc)
    sc.with_suffix(".json").write_text(json.dumps({"exploit": True, "time": {}}))
    with pytest.raises(DatasetError, match="time.exploit"):
        lidds.load_recording(sc)


@needs_lidds
def test_lidds_single_recording_smoke_run():
    run = evaluate_lidds(lidds.DEFAULT_SAMPLE, progress=False)
    assert run.counts["test_recordings"] == 1
    for m in run.models:
        assert m.result.exploits == 1 and m.result.recordings == 1
        assert m.result.detected in (0, 1) and m.result.false_alarms >= 0
    # the recording is 18 s long: every window is a start-up window, learnt into and scored by the
    # start-up profile, and so are the tiers read from the model (the steady profile learnt nothing)
    seq = next(m for m in run.models if m.name == SEQUENCE_TIER)
    assert seq.result.detected == 1 and seq.window_summary is not None and seq.window_summary.auc > 0.9


@needs_lidds
def test_lidds_scenario_folder(tmp_path):
    t0 = 1_631_000_000_000_000_000
    loop = ["epoll_wait", "read", "write", "close"]
    for part, n in (("training", 3), ("validation", 2), ("test/normal", 1)):
        folder = tmp_path / part
        folder.mkdir(parents=True)
        for k in range(n):
            ev = [(t0 + i * 50_000_000, 7, loop[i % 4]) for i in range(200)]
            _write_sc(folder / f"rec{k}.sc", ev, {"exploit": False, "image": "victim_bruteforce"})
    attack = tmp_path / "test" / "normal_and_attack"
    attack.mkdir(parents=True)
    (attack / "sample.zip").symlink_to(lidds.DEFAULT_SAMPLE)
    split = lidds.load_split(tmp_path)
    assert len(split.test) == 2 and len(split.train) == 3 * 10 and len(split.validation) == 2 * 10
    run = evaluate_lidds(tmp_path, progress=False)
    for m in run.models:
        assert m.result.exploits == 1 and m.result.recordings == 2


# -- CLI ------------------------------------------------------------------------------------------------


@needs_adfa
def test_cli_adfa_writes_the_report(tmp_path, capsys):
    from baseliner.service.cli import main

    out = tmp_path / "report"
    assert main(["evaluate", "adfa-ld", "--limit", "15", "--resplits", "1", "--bootstrap", "50", "--quiet",
                 "--out", str(out)]) == 0
    for name in ("report.md", "results.json", "roc.png", "score_distributions.png", "per_attack_type.png"):
        assert (out / name).stat().st_size > 0
    results = json.loads((out / "results.json").read_text())
    assert {m["kind"] for m in results["main"]["models"]} == {"baseliner", "tier", "baseline"}
    assert [r["split"]["name"] for r in results["resplits"]] == [f"{f} seed 1" for f in splits.FAMILIES]
    assert set(results["families"]) == set(splits.FAMILIES) and "ties" in results["tie_rule"]
    text = (out / "report.md").read_text()
    assert "| STIDE (n=6) |" in text and "## Re-splits: validation-half (seeds 1)" in text
    assert "ROC AUC" in capsys.readouterr().out


@needs_adfa
def test_cli_adfa_takes_a_split_of_your_own(tmp_path, capsys):
    from baseliner.service.cli import main

    traces = load_adfa(limit_per_split=20)
    names = {k: [t.name.rsplit("/", 1)[-1] for t in traces if t.split == k] for k in ("train", "validation", "attack")}
    files = {}
    for role, listed in (("learn", names["validation"][:10]), ("normal", names["train"] + names["validation"][10:]),
                         ("attack", names["attack"])):
        files[role] = tmp_path / f"{role}.txt"
        files[role].write_text("\n".join(listed) + "\n")
    out = tmp_path / "report"
    assert main(["evaluate", "adfa-ld", "--limit", "20", "--learn", str(files["learn"]), "--normal",
                 str(files["normal"]), "--attack", str(files["attack"]), "--bootstrap", "0", "--no-plots",
                 "--quiet", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    main_run = results["main"]
    assert main_run["split"]["family"] == "user" and results["resplits"] == []
    assert (main_run["n_train"], main_run["n_normal"], main_run["n_attack"]) == (10, 30, 20)
    assert "A split of your own: learn on 10 traces" in (out / "report.md").read_text()
    capsys.readouterr()
    # half a split is a user mistake: a clear message, no traceback
    assert main(["evaluate", "adfa-ld", "--learn", str(files["learn"]), "--quiet", "--out", str(out)]) == 2
    assert "needs all three of --learn, --normal and --attack" in capsys.readouterr().err
    files["learn"].write_text("UTD-9999.txt\n")
    assert main(["evaluate", "adfa-ld", "--limit", "20", "--learn", str(files["learn"]), "--normal",
                 str(files["normal"]), "--attack", str(files["attack"]), "--quiet", "--out", str(out)]) == 2
    assert "unknown trace(s) UTD-9999.txt" in capsys.readouterr().err


def test_cli_reports_a_missing_dataset(tmp_path, capsys):
    from baseliner.service.cli import main

    assert main(["evaluate", "adfa-ld", "--adfa", str(tmp_path / "no.zip"), "--quiet",
                 "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
