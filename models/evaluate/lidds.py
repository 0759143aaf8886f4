"""LID-DS 2021 recordings (``.sc`` syscalls + ``.json`` labels), read in place, cut into timed windows.

A ``.sc`` line is ``<timestamp_ns> <user_id> <pid> <process_name> <tid> <syscall> <'>'|'<'> <args...>``.
Each call is counted once, at its enter event (``>``).  Windows are ``window_seconds`` long from the
recording's first event; n-gram history belongs to the thread (``tid``) and is carried across windows,
as on the sensor.  The ``.json`` gives ``exploit`` (bool) and ``time.exploit[0].absolute`` (seconds).

A LID-DS 2021 scenario folder holds ``training/``, ``validation/`` and ``test/normal/`` +
``test/normal_and_attack/``, one recording per ``.zip`` (or unpacked ``.sc`` + ``.json`` pairs).
"""

from __future__ import annotations

import io
import json
import logging
import math
import zipfile
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from baseliner.models.evaluate.adfa import DATASETS, DatasetError
from baseliner.models.evaluate.windows import window_counts
from baseliner.models.syscalls import canonical_name
from baseliner.models.vector import FeatureVector, Identity
from tqdm import tqdm

log = logging.getLogger(__name__)

DEFAULT_SAMPLE = DATASETS / "lid-ds-2021-sample" / "aggressive_nightingale_1018.zip"


@dataclass
class Recording:
    name: str
    image: str
    exploit_time: float | None  # absolute seconds; None when the recording has no exploit
    vectors: list[FeatureVector]
    calls: int
    malformed_lines: int


@dataclass
class Split:
    protocol: str
    train: list[FeatureVector]
    validation: list[FeatureVector]
    test: list[Recording]


def parse_labels(meta: dict[str, Any]) -> tuple[str, float | None]:
    """``(image, exploit time)`` from a LID-DS ``.json``."""
    image = str(meta.get("image", "lid-ds"))
    if not meta.get("exploit", False):
        return image, None
    try:
        return image, float(meta["time"]["exploit"][0]["absolute"])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise DatasetError(f"exploit recording without time.exploit[0].absolute ({exc})") from None


def parse_sc(lines: Iterable[str]) -> tuple[list[tuple[int, int, str]], int]:
    """Enter events as ``(timestamp_ns, tid, canonical name)`` and the number of malformed lines."""
    events: list[tuple[int, int, str]] = []
    bad = 0
    for line in lines:
        parts = line.split(" ", 7)
        if len(parts) < 7:
            if line.strip():
                bad += 1
            continue
        if parts[6] != ">":
            if parts[6] != "<":
                bad += 1
            continue
        try:
            events.append((int(parts[0]), int(parts[4]), canonical_name(parts[5])))
        except ValueError:
            bad += 1
    return events, bad


def recording_vectors(events: list[tuple[int, int, str]], identity: Identity, window_seconds: float = 1.0
                      ) -> list[FeatureVector]:
    """Timed windows of one recording (threads merged per window, n-gram history per thread)."""
    if not events:
        return []
    events.sort(key=lambda e: e[0])
    t0 = events[0][0]
    ns = int(window_seconds * 1e9)
    n_windows = (events[-1][0] - t0) // ns + 1
    by_thread: dict[int, tuple[list[str], list[int]]] = defaultdict(lambda: ([], []))
    for ts, tid, name in events:
        calls, wins = by_thread[tid]
        calls.append(name)
        wins.append((ts - t0) // ns)
    syscalls: list[dict[str, int]] = [{} for _ in range(n_windows)]
    ngrams: list[dict[int, int]] = [{} for _ in range(n_windows)]
    for calls, wins in by_thread.values():
        for w, (sc, ng) in enumerate(window_counts(calls, np.asarray(wins, dtype=np.int64), n_windows)):
            for k, v in sc.items():
                syscalls[w][k] = syscalls[w].get(k, 0) + v
            for b, c in ng.items():
                ngrams[w][b] = ngrams[w].get(b, 0) + c
    start = t0 / 1e9
    return [FeatureVector(identity=identity, window_start=start + w * window_seconds, window_seconds=window_seconds,
                          syscalls=syscalls[w], ngrams=ngrams[w], seconds_since_start=w * window_seconds)
            for w in range(n_windows)]


def _read(sc: IO[bytes], meta: IO[bytes], name: str, window_seconds: float) -> Recording:
    try:
        labels = json.load(meta)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{name}: bad .json ({exc})") from None
    image, exploit = parse_labels(labels)
    events, bad = parse_sc(io.TextIOWrapper(sc, encoding="utf-8", errors="replace"))
    if bad:
        log.warning("%s: %d malformed .sc lines skipped", name, bad)
    ident = Identity(node="lid-ds", container_id=name, image_repository=image)
    return Recording(name, image, exploit, recording_vectors(events, ident, window_seconds), len(events), bad)


def load_recording(path: Path, window_seconds: float = 1.0) -> Recording:
    """One recording: a LID-DS ``.zip`` (holding ``.sc`` + ``.json``) or a ``.sc`` next to its ``.json``."""
    if path.suffix == ".zip":
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                sc = [n for n in names if n.endswith(".sc")]
                js = [n for n in names if n.endswith(".json")]
                if len(sc) != 1 or len(js) != 1:
                    raise DatasetError(f"{path}: expected one .sc and one .json, found {sc + js}")
                with zf.open(sc[0]) as f_sc, zf.open(js[0]) as f_js:
                    return _read(f_sc, f_js, path.stem, window_seconds)
        except zipfile.BadZipFile as exc:
            raise DatasetError(f"{path}: not a zip archive ({exc})") from None
    if path.suffix == ".sc":
        meta = path.with_suffix(".json")
        if not meta.is_file():
            raise DatasetError(f"{path}: no {meta.name} next to it")
        with path.open("rb") as f_sc, meta.open("rb") as f_js:
            return _read(f_sc, f_js, path.stem, window_seconds)
    raise DatasetError(f"{path}: not a LID-DS recording (.zip or .sc)")


def load_split(path: Path, window_seconds: float = 1.0, progress: bool = False) -> Split:
    """Training windows, validation windows and test recordings from a scenario folder or one recording."""
    if not path.exists():
        raise DatasetError(f"{path} does not exist")
    if path.is_file():
        rec = load_recording(path, window_seconds)
        cutoff = rec.exploit_time if rec.exploit_time is not None else math.inf
        before = [v for v in rec.vectors if v.window_end <= cutoff]
        if len(before) < 3:
            raise DatasetError(f"{path}: too few windows before the exploit to learn from")
        k = max(1, int(len(before) * 0.6))
        return Split("single recording: first 60% of pre-exploit windows learn, rest validate; "
                     "whole recording is the test", before[:k], before[k:], [rec])
    parts = {name: path / name for name in ("training", "validation", "test")}
    missing = [n for n, p in parts.items() if not p.is_dir()]
    if missing:
        raise DatasetError(f"{path}: not a LID-DS 2021 scenario folder (missing {', '.join(missing)})")

    def load_all(folder: Path, desc: str) -> list[Recording]:
        files = sorted(p for p in folder.rglob("*") if p.suffix in (".zip", ".sc"))
        if not files:
            raise DatasetError(f"{folder}: no recordings")
        return [load_recording(p, window_seconds) for p in tqdm(files, desc=desc, disable=not progress)]

    train = [v for r in load_all(parts["training"], "training") for v in r.vectors]
    validation = [v for r in load_all(parts["validation"], "validation") for v in r.vectors]
    test = load_all(parts["test"], "test")
    return Split("LID-DS 2021: training learns, validation sets the threshold, test", train, validation, test)
