"""Splits of ADFA-LD: the standard one, the random re-splits of its normal traces, and splits from files."""

from __future__ import annotations

import pytest
from baseliner.models.evaluate import splits
from baseliner.models.evaluate.adfa import DatasetError, Trace


def _traces(n_train: int = 6, n_val: int = 10, n_att: int = 3) -> list[Trace]:
    out = [Trace(f"ADFA-LD/Training_Data_Master/UTD-{i:04d}.txt", "train", "", ("read",)) for i in range(n_train)]
    out += [Trace(f"ADFA-LD/Validation_Data_Master/UVD-{i:04d}.txt", "validation", "", ("read",)) for i in range(n_val)]
    out += [Trace(f"ADFA-LD/Attack_Data_Master/Web_Shell_1/UAD-W-{i}.txt", "attack", "Web_Shell", ("open",))
            for i in range(n_att)]
    return out


def test_standard_split_learns_training_and_tests_the_rest():
    s = splits.standard(_traces())
    assert s.learn == tuple(range(6)) and s.normal == tuple(range(6, 16)) and s.attack == (16, 17, 18)
    assert s.test == s.normal + s.attack and s.family == "standard"


@pytest.mark.parametrize("family", splits.FAMILIES)
def test_resplits_partition_the_normal_traces(family):
    ts = _traces()
    s = splits.resplit(ts, family, seed=3)
    validation = set(range(6, 16))
    learnt_val = set(s.learn) & validation
    assert len(learnt_val) == 5  # half of the validation traces
    assert set(s.learn).isdisjoint(s.normal) and set(s.attack) == {16, 17, 18}
    assert set(s.learn) | set(s.normal) == set(range(16))  # every normal trace is learnt or tested
    if family == "validation-half":
        assert set(range(6)) <= set(s.normal)
    else:
        assert s.learn[:6] == tuple(range(6))  # training first, in archive order
    assert list(s.learn) == sorted(s.learn)
    # seeded: the same seed draws the same half, another seed (almost surely) another
    assert splits.resplit(ts, family, seed=3) == s
    assert {splits.resplit(ts, family, seed=k).learn for k in range(1, 6)} != {s.learn}
    assert s.name == f"{family} seed 3" and s.seed == 3


def test_unknown_family_is_refused():
    with pytest.raises(ValueError, match="unknown re-split family"):
        splits.resplit(_traces(), "everything", 1)


def test_split_from_files_by_path_or_file_name_in_the_order_given(tmp_path):
    ts = _traces()
    (tmp_path / "learn").write_text("# learnt first: a validation trace\nUVD-0003.txt\n\n"
                                    "ADFA-LD/Training_Data_Master/UTD-0001.txt\n")
    (tmp_path / "normal").write_text("UTD-0000.txt\nUVD-0004.txt\n")
    (tmp_path / "attack").write_text("UAD-W-2.txt\n  UVD-0009.txt  \n")  # the files give the labels
    s = splits.from_files(ts, tmp_path / "learn", tmp_path / "normal", tmp_path / "attack")
    assert s.learn == (9, 1) and s.normal == (0, 10) and s.attack == (18, 15)
    assert s.family == "user"


@pytest.mark.parametrize(("learn", "normal", "attack", "message"), [
    ("UTD-0000.txt\nUTD-0077.txt\n", "UVD-0001.txt", "UAD-W-0.txt", "unknown trace.*UTD-0077.txt"),
    ("UTD-0000.txt", "UVD-0001.txt\nUTD-0000.txt", "UAD-W-0.txt", "UTD-0000.txt is already listed \\(learn\\)"),
    ("UTD-0000.txt", "# nothing\n\n", "UAD-W-0.txt", "lists no traces"),
])
def test_bad_split_files_are_refused_with_the_reason(tmp_path, learn, normal, attack, message):
    for name, text in (("l", learn), ("n", normal), ("a", attack)):
        (tmp_path / name).write_text(text)
    with pytest.raises(DatasetError, match=message):
        splits.from_files(_traces(), tmp_path / "l", tmp_path / "n", tmp_path / "a")


def test_missing_split_file_is_a_dataset_error(tmp_path):
    (tmp_path / "l").write_text("UTD-0000.txt")
    with pytest.raises(DatasetError, match="cannot read split file"):
        splits.from_files(_traces(), tmp_path / "l", tmp_path / "nope", tmp_path / "l")


def test_a_name_listed_twice_in_one_file_is_refused(tmp_path):
    (tmp_path / "l").write_text("UTD-0000.txt\nADFA-LD/Training_Data_Master/UTD-0000.txt\n")
    with pytest.raises(DatasetError, match="UTD-0000.txt is listed twice"):
        splits.listed(_traces(), tmp_path / "l")
