"""Evaluation runs: ADFA-LD (one-class protocol, re-splits) and LID-DS (the LID-DS rule), one pass,
arrival order."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import compress
from pathlib import Path

import numpy as np
from baseliner.models.evaluate import adfa, lidds, splits
from baseliner.models.evaluate.baselines import TraceModel, default_baselines
from baseliner.models.evaluate.metrics import (
    Difference,
    LiddsResult,
    RecordingScores,
    Summary,
    lidds_rule,
    paired_differences,
    per_type,
    summarise,
)
from baseliner.models.evaluate.scorers import PipelineScorer, WindowScorer, trace_scores
from baseliner.models.evaluate.splits import Split
from baseliner.models.evaluate.windows import DEFAULT_CALLS_PER_WINDOW, count_windows
from baseliner.models.vector import FeatureVector, Identity
from scipy.stats import rankdata
from tqdm import tqdm

log = logging.getLogger(__name__)


@dataclass
class ModelResult:
    name: str
    kind: str  # "baseliner" (the default model) | "tier" (one of its tiers alone) | "baseline"
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
    """One split: every model's scores and figures on its test traces."""

    calls_per_window: int
    labels: np.ndarray
    types: list[str]
    models: list[ModelResult] = field(default_factory=list)
    n_train: int = 0
    train_windows: int = 0
    test_windows: int = 0
    seconds: float = 0.0
    command: str = ""
    split: Split | None = None
    # the default model minus every other model: (model, AUC, DR @ 5% FPR), with bootstrap intervals
    versus: list[tuple[str, Difference, Difference]] = field(default_factory=list)

    def ranks(self, figure: str) -> dict[str, float]:
        """Each model's rank by ``figure`` (``"auc"``, ``"dr_1"``, ``"dr_5"``): 1 is best, ties share
        the mean of their ranks."""
        values = np.array([getattr(m.summary, figure) for m in self.models])
        return dict(zip([m.name for m in self.models], rankdata(-values).tolist(), strict=True))


class AdfaData:
    """ADFA-LD's traces and, computed once per trace and kept, their window counts."""

    def __init__(self, traces: Sequence[adfa.Trace], calls_per_window: int = DEFAULT_CALLS_PER_WINDOW) -> None:
        if calls_per_window < 1:
            raise adfa.DatasetError("calls per window must be >= 1")
        self.traces = list(traces)
        self.calls_per_window = calls_per_window
        self._windows: dict[int, list[tuple[dict[str, int], dict[int, int]]]] = {}

    @classmethod
    def load(cls, path: str | Path | None = None, calls_per_window: int = DEFAULT_CALLS_PER_WINDOW,
             limit_per_split: int | None = None) -> AdfaData:
        return cls(adfa.load_adfa(path, limit_per_split=limit_per_split), calls_per_window)

    def vectors(self, positions: Sequence[int], progress: bool = False) -> tuple[list[FeatureVector], np.ndarray]:
        """The windows of the traces at ``positions`` as the sensor's vectors, one nominal second each, in
        that order, and the index (into ``positions``) of each window's trace."""
        vectors: list[FeatureVector] = []
        index: list[int] = []
        clock = 1.7e9
        for i, pos in enumerate(tqdm(positions, desc="windows", unit="trace", disable=not progress)):
            t = self.traces[pos]
            counts = self._windows.get(pos)
            if counts is None:
                counts = self._windows[pos] = count_windows(t.calls, self.calls_per_window)
            ident = Identity(node="adfa-ld", container_id=t.name, image_repository="adfa-ld")
            for k, (sc, ng) in enumerate(counts):
                vectors.append(FeatureVector(identity=ident, window_start=clock + k, window_seconds=1.0,
                                             syscalls=dict(sc), ngrams=dict(ng)))
            clock += len(counts) + 10.0
            index.extend([i] * len(counts))
        return vectors, np.asarray(index, dtype=np.int64)


def default_scorers() -> list[WindowScorer]:
    return [PipelineScorer()]


def _result(name: str, kind: str, labels: np.ndarray, types: list[str], scores: np.ndarray,
            timing: tuple[float, float, int, int], state: int | None = None) -> ModelResult:
    return ModelResult(name, kind, scores, summarise(labels, scores), per_type(labels, scores, types), *timing,
                       state)


def evaluate_split(data: AdfaData, split: Split, baselines: Sequence[TraceModel] | None = None, progress: bool = True,
                   bootstrap: int = 1000) -> AdfaRun:
    """Learn the split's learning traces in order, then score its test traces with every model: the
    Baseliner models (windows, trace = length-weighted mean of its window scores) and their tiers, and
    the baselines (whole traces).  ``bootstrap`` resamples give the intervals of the default model minus
    each other model (0: none)."""
    started = time.perf_counter()
    learn = [data.traces[i] for i in split.learn]
    test = [data.traces[i] for i in split.test]
    labels = np.r_[np.zeros(len(split.normal)), np.ones(len(split.attack))].astype(np.int64)
    types = ["" if k < len(split.normal) else t.attack_type or "attack" for k, t in enumerate(test)]
    run = AdfaRun(data.calls_per_window, labels, types, n_train=len(learn), split=split)

    train_vecs, _ = data.vectors(split.learn, progress)
    test_vecs, test_index = data.vectors(split.test, progress)
    run.train_windows, run.test_windows = len(train_vecs), len(test_vecs)
    chunk = 2048
    for scorer in default_scorers():
        t0 = time.perf_counter()
        for i in tqdm(range(0, len(train_vecs), chunk), desc=f"learn {scorer.name[:30]}", disable=not progress):
            scorer.learn(train_vecs[i : i + chunk])
        scorer.freeze()
        t1 = time.perf_counter()
        parts = [scorer.score(test_vecs[i : i + chunk])
                 for i in tqdm(range(0, len(test_vecs), chunk), desc=f"score {scorer.name[:30]}",
                               disable=not progress)]
        t2 = time.perf_counter()
        weights = scorer.weights(test_vecs)
        window_scores = np.concatenate(parts) if parts else np.zeros(0)
        s = trace_scores(window_scores, weights, test_index, len(test))
        run.models.append(_result(scorer.name, "baseliner", labels, types, s,
                                  (t1 - t0, t2 - t1, len(train_vecs), len(test_vecs)), scorer.state_bytes()))
        log.info("%s: %s", scorer.name, run.models[-1].summary)
        tiers = scorer.tiers(test_vecs)
        each = (time.perf_counter() - t2) / max(1, len(tiers))  # the tiers are scored together
        for name, tier_scores in tiers.items():
            s = trace_scores(tier_scores, weights, test_index, len(test))
            run.models.append(_result(name, "tier", labels, types, s, (t1 - t0, each, len(train_vecs), len(test_vecs))))
            log.info("%s: %s", name, run.models[-1].summary)

    train_calls = [t.calls for t in learn]
    test_calls = [t.calls for t in test]
    for model in tqdm(baselines if baselines is not None else default_baselines(split.seed or 0),
                      desc="baselines", disable=not progress):
        t0 = time.perf_counter()
        model.fit(train_calls)
        t1 = time.perf_counter()
        s = model.score(test_calls)
        t2 = time.perf_counter()
        run.models.append(_result(model.name, "baseline", labels, types, s, (t1 - t0, t2 - t1, len(learn), len(test))))
        log.info("%s: %s", model.name, run.models[-1].summary)
    ours = next((m for m in run.models if m.kind == "baseliner"), None)
    others = [m for m in run.models if m is not ours]
    if bootstrap and ours is not None and others and 0 < labels.sum() < len(labels):
        diffs = paired_differences(labels, ours.scores, [m.scores for m in others], resamples=bootstrap)
        run.versus = [(m.name, auc, dr) for m, (auc, dr) in zip(others, diffs, strict=True)]
    run.seconds = time.perf_counter() - started
    return run


def evaluate_adfa(path: str | Path | None = None, calls_per_window: int = DEFAULT_CALLS_PER_WINDOW,
                  baselines: Sequence[TraceModel] | None = None,
                  limit_per_split: int | None = None, progress: bool = True, bootstrap: int = 1000) -> AdfaRun:
    """The standard split: learn on ``Training_Data_Master``; score ``Validation_Data_Master`` (normal)
    and ``Attack_Data_Master`` (attack)."""
    data = AdfaData.load(path, calls_per_window, limit_per_split)
    return evaluate_split(data, splits.standard(data.traces), baselines, progress, bootstrap)


@dataclass
class FamilySummary:
    """One model over the re-splits of one family: mean, standard deviation, range and mean rank."""

    family: str
    model: str
    kind: str
    runs: int
    auc: tuple[float, float, float, float]  # mean, sd, min, max
    dr_1: tuple[float, float, float, float]
    dr_5: tuple[float, float, float, float]
    rank_auc: float  # mean rank by ROC AUC (1 = best)
    rank_dr_5: float


def _spread(values: Sequence[float]) -> tuple[float, float, float, float]:
    v = np.asarray(values, dtype=np.float64)
    return (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, float(v.min()), float(v.max()))


def summarise_family(runs: Sequence[AdfaRun]) -> list[FamilySummary]:
    """Per model, in the order of the first run: its figures over ``runs`` (the re-splits of one family)."""
    if not runs:
        return []
    family = runs[0].split.family if runs[0].split else ""
    ranks_auc = [r.ranks("auc") for r in runs]
    ranks_dr = [r.ranks("dr_5") for r in runs]
    out = []
    for m in runs[0].models:
        rows = [next(x for x in r.models if x.name == m.name) for r in runs]
        out.append(FamilySummary(family, m.name, m.kind, len(runs), _spread([x.summary.auc for x in rows]),
                                 _spread([x.summary.dr_1 for x in rows]), _spread([x.summary.dr_5 for x in rows]),
                                 float(np.mean([r[m.name] for r in ranks_auc])),
                                 float(np.mean([r[m.name] for r in ranks_dr]))))
    return out


@dataclass
class AdfaProtocol:
    """The standard (or a user-given) split and the re-splits of each family."""

    main: AdfaRun
    resplits: list[AdfaRun] = field(default_factory=list)
    seconds: float = 0.0
    command: str = ""

    def families(self) -> dict[str, list[FamilySummary]]:
        out: dict[str, list[AdfaRun]] = {}
        for r in self.resplits:
            out.setdefault(r.split.family if r.split else "", []).append(r)
        return {f: summarise_family(rs) for f, rs in out.items()}


def evaluate_protocol(path: str | Path | None = None, calls_per_window: int = DEFAULT_CALLS_PER_WINDOW,
                      seeds: Sequence[int] = (1, 2, 3, 4, 5), families: Sequence[str] = splits.FAMILIES,
                      limit_per_split: int | None = None, with_baselines: bool = True,
                      user_split: tuple[str | Path, str | Path, str | Path] | None = None,
                      progress: bool = True, bootstrap: int = 1000) -> AdfaProtocol:
    """``baseliner evaluate adfa-ld``: the standard split (with bootstrap intervals) and, for every
    family and seed, a random re-split of the normal traces; or, given ``user_split`` (learn, normal and
    attack files, see :func:`baseliner.models.evaluate.splits.from_files`), that split alone.

    Every split gets fresh models; the randomised baselines are seeded with the split's seed."""
    started = time.perf_counter()
    data = AdfaData.load(path, calls_per_window, limit_per_split)
    main_split = splits.from_files(data.traces, *user_split) if user_split else splits.standard(data.traces)

    def one(split: Split, boot: int) -> AdfaRun:
        baselines = default_baselines(split.seed or 0) if with_baselines else []
        log.info("split %s: %d learn, %d normal, %d attack", split.name, len(split.learn), len(split.normal),
                 len(split.attack))
        return evaluate_split(data, split, baselines, progress, boot)

    proto = AdfaProtocol(one(main_split, bootstrap))
    if not user_split:
        for family in families:
            for seed in seeds:
                proto.resplits.append(one(splits.resplit(data.traces, family, seed), 0))
    proto.seconds = time.perf_counter() - started
    return proto


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


def _window_summary(recs: Sequence[RecordingScores]) -> Summary | None:
    """Window-level figures, the windows that end after the exploit labelled attack (when both kinds exist)."""
    y: list[int] = []
    s: list[float] = []
    for rec in recs:
        ends = rec.window_starts + rec.window_seconds
        after = (ends > rec.exploit_time) if rec.exploit_time is not None else np.zeros(len(ends), bool)
        y.extend(after.astype(int).tolist())
        s.extend(np.asarray(rec.scores).tolist())
    return summarise(y, s) if 0 < sum(y) < len(y) else None


def evaluate_lidds(path: str | Path, window_seconds: float = 1.0,
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
    n = len(split.train) + len(split.validation) + sum(len(r.vectors) for r in split.test)
    for scorer in default_scorers():
        t0 = time.perf_counter()
        scorer.learn(split.train)
        scorer.freeze()
        # the model, then each of its tiers alone: name -> (validation scores, each test recording's)
        val = {scorer.name: scorer.score(split.validation), **scorer.tiers(split.validation)}
        tests = [{scorer.name: scorer.score(r.vectors), **scorer.tiers(r.vectors)} for r in split.test]
        seconds = time.perf_counter() - t0
        for name, val_scores in val.items():
            recs = [RecordingScores(r.name, np.asarray([v.window_start for v in r.vectors]), window_seconds,
                                    scored[name], r.exploit_time) for r, scored in zip(split.test, tests, strict=True)]
            run.models.append(LiddsModelResult(name, lidds_rule(val_scores, recs), _window_summary(recs),
                                               seconds, n))
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

    ``learn_hours`` > 0 makes every baseline learn that long (``min_learn_seconds``, then its later half
    quiet: ``stable_confidence`` 0) before it detects, as ``baseliner demo`` does; 0 keeps the service's
    defaults (learning ends from the data: about 17 h of quiet for a budget of one alarm a day)."""
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
                    cfg = (BaselineConfig(min_learn_seconds=learn_hours * 3600.0, stable_confidence=0.0)
                           if learn_hours > 0 else None)
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
