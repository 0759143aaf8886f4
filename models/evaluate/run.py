"""Evaluation runs: ADFA-LD (one-class protocol) and LID-DS (the LID-DS rule), one pass, arrival order."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import compress
from pathlib import Path

import numpy as np
from baseliner.models.evaluate import adfa, lidds
from baseliner.models.evaluate.baselines import TraceModel, default_baselines
from baseliner.models.evaluate.metrics import (
    Difference,
    LiddsResult,
    RecordingScores,
    Summary,
    lidds_rule,
    paired_difference,
    per_type,
    summarise,
)
from baseliner.models.evaluate.scorers import NgramScorer, PipelineScorer, WindowScorer, trace_scores
from baseliner.models.evaluate.windows import DEFAULT_CALLS_PER_WINDOW, count_vectors
from baseliner.models.vector import FeatureVector, Identity
from tqdm import tqdm

log = logging.getLogger(__name__)


@dataclass
class ModelResult:
    name: str
    kind: str  # "baseliner" | "baseline"
    scores: np.ndarray  # one per test item (trace)
    summary: Summary
    by_type: dict[str, Summary]
    learn_seconds: float
    score_seconds: float
    learn_items: int
    score_items: int
    state_bytes: int | None = None

    @property
    def us_per_item(self) -> float:
        """Learn + score wall time per item (window for Baseliner models, trace for baselines)."""
        return 1e6 * (self.learn_seconds + self.score_seconds) / max(1, self.learn_items + self.score_items)


@dataclass
class AdfaRun:
    calls_per_window: int
    labels: np.ndarray
    types: list[str]
    models: list[ModelResult] = field(default_factory=list)
    n_train: int = 0
    train_windows: int = 0
    test_windows: int = 0
    seconds: float = 0.0
    command: str = ""
    # the first Baseliner model (the default model) minus each baseline: (baseline, AUC, DR @ 5% FPR)
    versus: list[tuple[str, Difference, Difference]] = field(default_factory=list)


def default_scorers() -> list[WindowScorer]:
    return [PipelineScorer(), NgramScorer()]


def _adfa_vectors(traces: Sequence[adfa.Trace], calls_per_window: int, progress: bool
                  ) -> tuple[list[FeatureVector], np.ndarray]:
    vectors: list[FeatureVector] = []
    index: list[int] = []
    clock = 1.7e9
    for i, t in enumerate(tqdm(traces, desc="windows", unit="trace", disable=not progress)):
        ident = Identity(node="adfa-ld", container_id=t.name, image_repository="adfa-ld")
        vs = count_vectors(t.calls, ident, clock, calls_per_window)
        clock += len(vs) + 10.0
        vectors.extend(vs)
        index.extend([i] * len(vs))
    return vectors, np.asarray(index, dtype=np.int64)


def evaluate_adfa(path: str | Path | None = None, calls_per_window: int = DEFAULT_CALLS_PER_WINDOW,
                  scorers: Sequence[WindowScorer] | None = None,
                  baselines: Sequence[TraceModel] | None = None,
                  limit_per_split: int | None = None, progress: bool = True) -> AdfaRun:
    """Learn on ``Training_Data_Master``; score ``Validation_Data_Master`` (normal) and
    ``Attack_Data_Master`` (attack).  Baseliner models see windows of ``calls_per_window`` calls and
    score a trace by the length-weighted mean of its window scores; baselines score whole traces."""
    started = time.perf_counter()
    traces = adfa.load_adfa(path, limit_per_split=limit_per_split)
    train = [t for t in traces if t.split == "train"]
    test = [t for t in traces if t.split != "train"]
    labels = np.asarray([t.label for t in test], dtype=np.int64)
    types = [t.attack_type for t in test]
    run = AdfaRun(calls_per_window, labels, types, n_train=len(train))

    train_vecs, _ = _adfa_vectors(train, calls_per_window, progress)
    test_vecs, test_index = _adfa_vectors(test, calls_per_window, progress)
    run.train_windows, run.test_windows = len(train_vecs), len(test_vecs)

    for scorer in scorers if scorers is not None else default_scorers():
        t0 = time.perf_counter()
        chunk = 2048
        for i in tqdm(range(0, len(train_vecs), chunk), desc=f"learn {scorer.name[:30]}", disable=not progress):
            scorer.learn(train_vecs[i : i + chunk])
        scorer.freeze()
        t1 = time.perf_counter()
        parts = [scorer.score(test_vecs[i : i + chunk])
                 for i in tqdm(range(0, len(test_vecs), chunk), desc=f"score {scorer.name[:30]}",
                               disable=not progress)]
        t2 = time.perf_counter()
        window_scores = np.concatenate(parts) if parts else np.zeros(0)
        s = trace_scores(window_scores, scorer.weights(test_vecs), test_index, len(test))
        run.models.append(ModelResult(scorer.name, "baseliner", s, summarise(labels, s), per_type(labels, s, types),
                                      t1 - t0, t2 - t1, len(train_vecs), len(test_vecs), scorer.state_bytes()))
        log.info("%s: %s", scorer.name, run.models[-1].summary)

    train_calls = [t.calls for t in train]
    test_calls = [t.calls for t in test]
    for model in tqdm(baselines if baselines is not None else default_baselines(), desc="baselines",
                      disable=not progress):
        t0 = time.perf_counter()
        model.fit(train_calls)
        t1 = time.perf_counter()
        s = model.score(test_calls)
        t2 = time.perf_counter()
        run.models.append(ModelResult(model.name, "baseline", s, summarise(labels, s), per_type(labels, s, types),
                                      t1 - t0, t2 - t1, len(train), len(test)))
        log.info("%s: %s", model.name, run.models[-1].summary)
    ours = next((m for m in run.models if m.kind == "baseliner"), None)
    if ours is not None and 0 < labels.sum() < len(labels):
        for m in run.models:
            if m.kind == "baseline":
                run.versus.append((m.name, paired_difference(labels, ours.scores, m.scores, "auc"),
                                   paired_difference(labels, ours.scores, m.scores, "dr_5")))
    run.seconds = time.perf_counter() - started
    return run


# -- LID-DS -----------------------------------------------------------------------------------------


@dataclass
class LiddsModelResult:
    name: str
    result: LiddsResult
    window_summary: Summary | None  # window-level AUC etc. when test windows of both kinds exist
    seconds: float
    windows: int


@dataclass
class LiddsRun:
    source: str
    protocol: str
    window_seconds: float
    counts: dict[str, int]
    models: list[LiddsModelResult] = field(default_factory=list)
    seconds: float = 0.0
    command: str = ""


def evaluate_lidds(path: str | Path, window_seconds: float = 1.0,
                   scorers_factory: Callable[[], Sequence[WindowScorer]] | None = None,
                   progress: bool = True) -> LiddsRun:
    """Learn on the training recordings, set the threshold on validation, apply the LID-DS rule on test.

    ``path`` is a LID-DS 2021 scenario folder (``training/``, ``validation/``, ``test/``), or a single
    recording (``.zip`` or ``.sc``): then its windows before the exploit are split in time, the first
    60% to learn and the rest to validate, and the whole recording is the test (a smoke test of the
    format and the rule, not a benchmark).
    """
    started = time.perf_counter()
    split = lidds.load_split(Path(path), window_seconds, progress=progress)
    run = LiddsRun(str(path), split.protocol, window_seconds,
                   {"train_windows": len(split.train), "validation_windows": len(split.validation),
                    "test_recordings": len(split.test)})
    for scorer in (scorers_factory or default_scorers)():
        t0 = time.perf_counter()
        scorer.learn(split.train)
        scorer.freeze()
        val = scorer.score(split.validation)
        recs = []
        for r in split.test:
            recs.append(RecordingScores(r.name, np.asarray([v.window_start for v in r.vectors]), window_seconds,
                                        scorer.score(r.vectors), r.exploit_time))
        res = lidds_rule(val, recs)
        y, s = [], []
        for rec in recs:
            ends = rec.window_starts + window_seconds
            after = (ends > rec.exploit_time) if rec.exploit_time is not None else np.zeros(len(ends), bool)
            y.extend(after.astype(int).tolist())
            s.extend(rec.scores.tolist())
        summary = summarise(y, s) if 0 < sum(y) < len(y) else None
        n = len(split.train) + len(split.validation) + sum(len(r.vectors) for r in split.test)
        run.models.append(LiddsModelResult(scorer.name, res, summary, time.perf_counter() - t0, n))
    run.seconds = time.perf_counter() - started
    return run


# -- recordings (``baseliner sensor record``) -------------------------------------------------------


@dataclass
class AttackOutcome:
    kind: str
    container_id: str
    image: str
    start: float
    end: float
    windows: int  # windows of the attack that were scored
    detected: bool
    delay: float | None  # seconds from attack start to the end of the first alarming window


@dataclass
class RecordingRun:
    source: str
    images: int
    vectors: int
    scored: int  # windows scored while the baseline was detecting (the rest were learning)
    attacks: list[AttackOutcome]
    false_alarms: int  # runs of alarming non-attack windows per container
    rejected: int  # vectors that failed validation (skipped, as the service rejects them)
    alarmed_windows: int
    normal_windows: int
    hours: float  # event time spanned by the windows scored while detecting
    window_summary: Summary | None
    seconds: float
    command: str = ""

    @property
    def false_alarms_per_hour(self) -> float:
        return self.false_alarms / self.hours if self.hours > 0 else float("nan")


def evaluate_recording(path: str | Path, progress: bool = True, learn_hours: float = 0.0) -> RecordingRun:
    """Replay a recording through one :class:`~baseliner.models.baseline.ImageBaseline` per image, as the service
    does (``Mode.AUTO``: learn until ready, then detect and learn only unflagged windows), and score it
    against the ground-truth attacks in its header (``header["attacks"]``: kind, container_id, start, end).

    ``learn_hours`` > 0 makes every baseline learn at least that long (``min_learn_seconds``) before it
    detects, as ``baseliner demo`` does; 0 keeps the service's defaults."""
    from baseliner.models.baseline import BaselineConfig, ImageBaseline, State
    from baseliner.models.block import VectorBlock
    from baseliner.models.recording import RecordingReader
    from baseliner.models.validate import validate_block

    started = time.perf_counter()
    baselines: dict[str, ImageBaseline] = {}
    attacks = []
    rows: list[tuple[FeatureVector, float, bool, int]] = []  # vector, score, alarm, attack index (-1: none)
    with RecordingReader(path) as reader:
        for a in reader.header.get("attacks", []):
            attacks.append(AttackOutcome(str(a["kind"]), str(a["container_id"]), str(a.get("image", "")),
                                         float(a["start"]), float(a["end"]), 0, False, None))
        scored_mask: list[bool] = []
        rejected = 0
        first_seen: dict[str, float] = {}
        for group in tqdm(reader.windows(), desc="windows", unit="window", disable=not progress):
            by_image: dict[str, list[FeatureVector]] = {}
            ok, errors = validate_block(VectorBlock.from_vectors(group))
            for exc in errors:
                rejected += 1
                log.warning("%s: vector rejected (%s)", path, exc)
            for v in compress(group, ok.tolist()):
                # as the service's pipeline does: a container's age from its first window when unknown
                ckey = f"{v.identity.node}/{v.identity.container_id}"
                first = first_seen.setdefault(ckey, v.window_start)
                if v.seconds_since_start < 0:
                    v.seconds_since_start = v.window_start - first
                by_image.setdefault(v.identity.image, []).append(v)
            for image, vs in by_image.items():
                b = baselines.get(image)
                if b is None:
                    cfg = BaselineConfig(min_learn_seconds=learn_hours * 3600.0) if learn_hours > 0 else None
                    b = baselines[image] = ImageBaseline(image, cfg)
                for v, verdict in zip(vs, b.process(vs), strict=True):
                    hit = -1
                    for k, a in enumerate(attacks):
                        if (v.identity.container_id == a.container_id and v.window_start < a.end
                                and v.window_end > a.start):
                            hit = k
                            break
                    rows.append((v, verdict.score, verdict.anomalous, hit))
                    scored_mask.append(verdict.state is not State.LEARNING)
    if not rows:
        raise adfa.DatasetError(f"{path}: no vectors")
    false_runs = 0
    last_alarm: dict[str, bool] = {}
    alarmed = normal = 0
    for (v, _, alarm, hit), scored in zip(rows, scored_mask, strict=True):
        cid = v.identity.container_id
        if hit >= 0:
            a = attacks[hit]
            if scored:
                a.windows += 1
            if alarm and not a.detected:
                a.detected = True
                a.delay = max(0.0, v.window_end - a.start)
            last_alarm[cid] = False
            continue
        if scored:
            normal += 1
            alarmed += int(alarm)
        if alarm and not last_alarm.get(cid, False):
            false_runs += 1
        last_alarm[cid] = alarm
    y = [int(hit >= 0) for (_, _, _, hit), sc in zip(rows, scored_mask, strict=True) if sc]
    s = [score for (_, score, _, _), sc in zip(rows, scored_mask, strict=True) if sc]
    finite = [x for x in s if np.isfinite(x)]
    cap = (max(finite) + 1.0) if finite else 0.0
    s = [x if np.isfinite(x) else cap for x in s]
    summary = summarise(y, s) if 0 < sum(y) < len(y) else None
    detecting = [v for (v, *_), sc in zip(rows, scored_mask, strict=True) if sc]
    t_min = min((v.window_start for v in detecting), default=0.0)
    t_max = max((v.window_end for v in detecting), default=0.0)
    return RecordingRun(str(path), len(baselines), len(rows), int(sum(scored_mask)), attacks, false_runs, rejected,
                        alarmed, normal, (t_max - t_min) / 3600.0, summary, time.perf_counter() - started)
