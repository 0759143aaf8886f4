"""One image's learned behaviour: lifecycle, detectors, novelty sets, threshold, decisions.

:func:`process_blocks` is the one scoring path.  The service calls it once per batch for every image in
it (stacked per-image state: one set of NumPy operations for all of them), and ``baseliner evaluate``, the
notebooks and the MLflow model call it through ``ImageBaseline.process`` / ``process_block`` (one image),
so a number measured offline is the number the service gives online.

For a batch of windows of each image (in event-time order) it

1. transforms counts into log-rate features (``models/rate_features.py``);
2. scores every window: the *continuous* score from the rate detector (start-up windows against the
   image's start-up profile), and the *exact* tier, the items the image has never shown;
3. turns each continuous tier's score into its tail probability under that tier's own calibration
   (``models/threshold.py``: the scores the tier gave the image's normal windows) and combines them as
   probabilities, with the Bonferroni correction for two tiers: ``continuous = -log10 min(1, 2 min(p_rate,
   p_seq))``, in decades of improbability; the threshold is the alarm budget's probability per window in
   the same unit, ``-log10(false_alarms_per_day x window_seconds / 86400)``, so either tier alone alarms
   exactly at its own budget quantile and neither can drown the other;
4. adds the exact tier: ``score = continuous + threshold x (weighted number of novel kinds)``, so any novel
   executable, outbound port or sensitive path written puts a window over its threshold (weight 1), a novel
   syscall a fifth of the way (weight 0.2);
5. decides against that threshold, never while learning; while learning, the same decision against the
   thresholds the learning so far calibrates is a *rehearsal*: learning ends once the later part of it
   raised no rehearsal alarm (see ``ImageBaseline`` and ``BaselineConfig.stable_share``);
6. learns from the windows it did not flag (all of them while learning), never from flagged ones; their
   scores keep calibrating the thresholds while detecting.

Within one batch all windows are scored against the state before the batch, then the unflagged ones
are learnt together: batching costs at most one batch of lag in what the model knows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

import numpy as np
from baseliner.models.block import COUNTER_INDEX, VectorBlock, csr_take
from baseliner.models.detectors.sequence import SequenceTier, StackedSequence
from baseliner.models.detectors.zscore import ZScoreDetector
from baseliner.models.errors import StateError, StateVersionError
from baseliner.models.explain import Deviation, deviations
from baseliner.models.lineage import Lineage, VersionStep
from baseliner.models.novelty import KINDS, NovelItem, NoveltySets, novel_rows
from baseliner.models.rate_features import FEATURE_NAMES, FEATURES, N_FEATURES, transform_block
from baseliner.models.threshold import SECONDS_PER_DAY, TailThreshold
from baseliner.models.vector import FeatureVector

__all__ = [
    "LEARNING_REASONS", "BaselineConfig", "BlockVerdicts", "Deviation", "ImageBaseline", "Mode", "NovelItem",
    "State", "Verdict",
    "process_blocks",
]


class Mode(StrEnum):
    AUTO = "auto"  # learn until ready, then detect (learning from unflagged windows)
    LEARN = "learn"  # learn everything, raise nothing
    DETECT = "detect"  # detect now; learn from unflagged windows
    FREEZE = "freeze"  # detect; learn nothing


class State(StrEnum):
    LEARNING = "learning"
    DETECTING = "detecting"
    FROZEN = "frozen"


_LEARNING_CHUNK = 8
_REFIT = 32
_EVENTS_LOST = COUNTER_INDEX["events_lost"]
_MAX_REPLICAS = 64
_MAX_QUARANTINE = 4096
SEVERITIES = ("", "low", "medium", "high", "critical")
# Novel kinds that are at least "high" whatever the score ratio.
_SEVERE_KINDS = {"executable", "sensitive_path"}


@dataclass
class BaselineConfig:
    """How a baseline learns and decides. Every value is checked when the config is made.

    * ``min_learn_windows``, ``min_learn_seconds``: learning lasts at least this many windows and this
      much event time; beyond that it ends when the data says the baseline is ready: when the last
      ``stable_share`` of the learning period (its second half, by default) raised no rehearsal alarm
      (no window over the thresholds calibrated so far, no novel item of a kind that alerts alone), that
      is when the model's later behaviour was already covered by its earlier behaviour (for a periodic
      image, at least one full cycle observed); ``max_learn_seconds`` ends it in any case.
    * ``false_alarms_per_day``: the alarm budget per image that thresholds are calibrated to.
    * ``startup_seconds``: windows this young are scored against the image's start-up profile.
    * ``novelty_capacity``: the largest size of each first-seen set; ``ephemeral_port_start``: ports from
      here up are not remembered.
    * ``detector``: see :data:`DETECTORS`; ``explain_top``: features listed per explanation.
    * ``memory_windows``, ``std_floor``, ``top_k``: the rate tier (:class:`ZScoreDetector`'s ``window``,
      ``std_floor`` and ``top_k``); the sequence tier (:class:`SequenceTier`): ``ngram_alpha``, the
      smoothing of its order-4 model, ``sequence_unseen_nats`` and ``sequence_unseen_scale``, the most
      a window's never-seen order-6 grams add to its score and the share of them at which that penalty
      reaches half of it; ``sequence_min_excess``: the sequence threshold sits at least this many nats/gram
      above its calibration quantile.
    * Poisoning resistance: ``novelty_min_windows`` / ``novelty_min_containers`` (support before an item is
      normal), ``learn_clip_sigma`` (bound on how far one window moves the rate tier), ``learn_gate``
      (detection learns only windows scoring below this share of the threshold), ``quarantine_seconds``
      (a container is not learnt from for this long after an anomaly).
    * ``novelty_weight_*``: the share of the threshold one novel kind adds to the score (1 alerts alone).
    * ``tier_combination``: how the continuous tiers' tail probabilities combine (:data:`TIER_COMBINATIONS`;
      ``fisher`` chosen by cross-validation in ADFA-LD's training traces, ``bench/choose_settings.py``).
    * ``tier_weight_rate``, ``tier_weight_sequence``: each tier's tail probability ``p`` enters the
      combination as ``p ** w`` (its surprise times ``w``).  A weight in [0, 1] keeps the combination a
      valid, conservative tail probability (for a uniform ``p``, ``P(p ** w <= t) = t ** (1 / w) <= t``), so
      the alarm budget holds; weight 0 leaves a tier out.
    * ``stable_share``, ``stable_confidence``, ``max_learn_seconds``: when learning ends (above); the quiet
      stretch must also last ``-ln(1 - stable_confidence) / false_alarms_per_day`` days, which bounds the
      image's alarm rate by its budget at that confidence (0: the share alone).
    """

    min_learn_windows: int = 60
    min_learn_seconds: float = 600.0
    stable_share: float = 0.5
    stable_confidence: float = 0.5
    max_learn_seconds: float = 259_200.0  # three days of event time
    false_alarms_per_day: float = 1.0
    startup_seconds: float = 60.0
    novelty_capacity: int = 4096
    detector: str = "default"
    explain_top: int = 5
    memory_windows: int = 2000
    std_floor: float = 0.1
    top_k: int = 3
    ephemeral_port_start: int = 32768
    # Poisoning resistance (see docs): support an item needs before it is normal, how far one window may
    # move the rate model (in standard deviations), and how long a container's windows are not learnt
    # after it raised an anomaly (event time).
    novelty_min_windows: int = 2
    novelty_min_containers: int = 2
    learn_clip_sigma: float = 8.0
    learn_gate: float = 1.0
    # Exact tier: how much of a threshold one novel kind adds to the score (>= 1 alerts on its own).
    novelty_weight_executable: float = 1.0
    novelty_weight_port: float = 1.0
    novelty_weight_sensitive_path: float = 1.0
    novelty_weight_syscall: float = 0.2
    tier_combination: str = "fisher"  # chosen by cross-validation in ADFA-LD's training data
    tier_weight_rate: float = 1.0  # exponent of each tier's tail probability (in [0, 1]) before combining
    tier_weight_sequence: float = 1.0
    ngram_alpha: float = 3.0
    sequence_unseen_nats: float = 128.0  # chosen by cross-validation in ADFA-LD's training data
    sequence_unseen_scale: float = 0.2
    sequence_min_excess: float = 0.5  # nats/gram above the calibration quantile, at least
    quarantine_seconds: float = 300.0

    def __post_init__(self) -> None:
        problems = []
        if self.min_learn_windows < 10:
            problems.append(f"min_learn_windows must be >= 10, got {self.min_learn_windows}")
        if not (self.min_learn_seconds >= 0 and math.isfinite(self.min_learn_seconds)):
            problems.append(f"min_learn_seconds must be a finite number >= 0, got {self.min_learn_seconds}")
        if not 0 <= self.stable_confidence < 1:
            problems.append(f"stable_confidence must be in [0, 1), got {self.stable_confidence}")
        if not 0 < self.stable_share < 1:
            problems.append(f"stable_share must be in (0, 1), got {self.stable_share}")
        if not (self.max_learn_seconds >= self.min_learn_seconds and math.isfinite(self.max_learn_seconds)):
            problems.append(f"max_learn_seconds must be finite and >= min_learn_seconds, got {self.max_learn_seconds}")
        if not (self.false_alarms_per_day > 0 and math.isfinite(self.false_alarms_per_day)):
            problems.append(f"false_alarms_per_day must be > 0, got {self.false_alarms_per_day}")
        if not (self.startup_seconds >= 0 and math.isfinite(self.startup_seconds)):
            problems.append(f"startup_seconds must be >= 0, got {self.startup_seconds}")
        if self.novelty_capacity < 1:
            problems.append(f"novelty_capacity must be >= 1, got {self.novelty_capacity}")
        if self.detector not in DETECTORS:
            problems.append(f"detector must be one of {sorted(DETECTORS)}, got {self.detector!r}")
        if self.explain_top < 0:
            problems.append(f"explain_top must be >= 0, got {self.explain_top}")
        if self.memory_windows < 10:
            problems.append(f"memory_windows must be >= 10, got {self.memory_windows}")
        if not self.std_floor > 0:
            problems.append(f"std_floor must be > 0, got {self.std_floor}")
        if not 1 <= self.top_k <= N_FEATURES:
            problems.append(f"top_k must be in [1, {N_FEATURES}], got {self.top_k}")
        if not 1 <= self.ephemeral_port_start <= 65536:
            problems.append(f"ephemeral_port_start must be in [1, 65536], got {self.ephemeral_port_start}")
        if self.novelty_min_windows < 1 or self.novelty_min_containers < 1:
            problems.append("novelty_min_windows and novelty_min_containers must be >= 1")
        if not (self.learn_clip_sigma > 0 and math.isfinite(self.learn_clip_sigma)):
            problems.append(f"learn_clip_sigma must be > 0, got {self.learn_clip_sigma}")
        weights = (self.novelty_weight_executable, self.novelty_weight_port,
                   self.novelty_weight_sensitive_path, self.novelty_weight_syscall)
        if not all(w >= 0 and math.isfinite(w) for w in weights):
            problems.append("novelty weights must be finite numbers >= 0")
        if self.tier_combination not in TIER_COMBINATIONS:
            problems.append(f"tier_combination must be one of {', '.join(TIER_COMBINATIONS)}, "
                            f"got {self.tier_combination!r}")
        if not (0 <= self.tier_weight_rate <= 1 and 0 <= self.tier_weight_sequence <= 1):
            problems.append(f"tier weights must be in [0, 1], got rate {self.tier_weight_rate} and "
                            f"sequence {self.tier_weight_sequence}")
        if not (self.ngram_alpha > 0 and math.isfinite(self.ngram_alpha)):
            problems.append(f"ngram_alpha must be > 0, got {self.ngram_alpha}")
        if not (self.sequence_unseen_nats >= 0 and math.isfinite(self.sequence_unseen_nats)):
            problems.append(f"sequence_unseen_nats must be a finite number >= 0, got {self.sequence_unseen_nats}")
        if not (self.sequence_unseen_scale > 0 and math.isfinite(self.sequence_unseen_scale)):
            problems.append(f"sequence_unseen_scale must be a finite number > 0, got {self.sequence_unseen_scale}")
        if not 0 < self.learn_gate <= 1:
            problems.append(f"learn_gate must be in (0, 1], got {self.learn_gate}")
        if not (self.quarantine_seconds >= 0 and math.isfinite(self.quarantine_seconds)):
            problems.append(f"quarantine_seconds must be >= 0, got {self.quarantine_seconds}")
        if problems:
            raise ValueError("invalid baseline config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BaselineConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown baseline config keys: {', '.join(unknown)}")
        return cls(**d)


#: How the continuous tiers' tail probabilities combine (``BaselineConfig.tier_combination``): ``min_p``,
#: the smaller of the two with the Bonferroni correction; ``fisher``, Fisher's method (their product, against
#: the chi-squared law with 4 degrees of freedom); ``either``, the stronger of the two evidences with the
#: Bonferroni correction over them (never worse than its best tier by more than a factor of 4 in p: one tier's
#: strong evidence is not diluted by the other's silence, as Fisher's method alone does).
TIER_COMBINATIONS = ("min_p", "fisher", "either")

#: Why a baseline is learning (the first three: a minimum not reached yet; ``unstable``: a rehearsal alarm
#: in the last ``stable_share`` of learning) or why it stopped (``stable``, ``limit``: ``max_learn_seconds``,
#: ``operator``: a mode set through the admin API).
LEARNING_REASONS = ("windows", "time", "calibrating", "unstable", "stable", "limit", "operator")

#: Detectors a baseline can be configured with (``BaselineConfig.detector``).
DETECTORS = {"default": "exact novelty + z-scores of log rates + hashed n-gram surprise"}


@dataclass
class Verdict:
    """The outcome of scoring one window."""

    score: float
    threshold: float
    anomalous: bool
    severity: str
    kinds: tuple[str, ...]
    novel: tuple[NovelItem, ...]
    explanation: tuple[Deviation, ...]
    state: State
    learned: bool
    startup: bool
    continuous: float = 0.0


@dataclass
class BlockVerdicts:
    """The outcomes of scoring a block of windows, as arrays (row ``i`` is window ``i``).

    A full :class:`Verdict` (with its explanation) exists for every anomalous window in ``flagged``;
    :meth:`verdict` makes one for any other window on demand.
    """

    score: np.ndarray
    threshold: np.ndarray
    continuous: np.ndarray
    anomalous: np.ndarray
    learned: np.ndarray
    startup: np.ndarray
    state: State
    novel: dict[int, tuple[NovelItem, ...]]
    flagged: dict[int, Verdict]

    def __len__(self) -> int:
        return len(self.score)

    @classmethod
    def empty(cls, state: State) -> BlockVerdicts:
        z = np.zeros(0)
        return cls(z, z, z, z.astype(bool), z.astype(bool), z.astype(bool), state, {}, {})

    @classmethod
    def concat(cls, parts: Sequence[BlockVerdicts], state: State) -> BlockVerdicts:
        if not parts:
            return cls.empty(state)
        novel: dict[int, tuple[NovelItem, ...]] = {}
        flagged: dict[int, Verdict] = {}
        offset = 0
        for p in parts:
            novel.update({offset + i: v for i, v in p.novel.items()})
            flagged.update({offset + i: v for i, v in p.flagged.items()})
            offset += len(p)
        def cat(field: str) -> np.ndarray:
            return np.concatenate([getattr(p, field) for p in parts])

        return cls(cat("score"), cat("threshold"), cat("continuous"), cat("anomalous"), cat("learned"),
                   cat("startup"), parts[-1].state, novel, flagged)

    def verdict(self, i: int) -> Verdict:
        vd = self.flagged.get(i)
        if vd is not None:
            return vd
        return Verdict(float(self.score[i]), float(self.threshold[i]), False, "", (), self.novel.get(i, ()), (),
                       self.state, bool(self.learned[i]), bool(self.startup[i]), float(self.continuous[i]))

    def to_list(self) -> list[Verdict]:
        return [self.verdict(i) for i in range(len(self))]


def _severity(ratio: float, novel: Sequence[NovelItem]) -> str:
    if ratio < 1.0:
        return ""
    level = 1 + min(3, int(math.floor(math.log2(ratio))))  # 1-2 low, 2-4 medium, 4-8 high, 8+ critical
    if any(item.kind in _SEVERE_KINDS for item in novel):
        level = max(level, 3)
    return SEVERITIES[level]


class _Profile:
    """A detector and its threshold: the steady-state profile or the start-up profile."""

    def __init__(self, config: BaselineConfig) -> None:
        self.detector = ZScoreDetector(
            window=config.memory_windows,
            std_floor=config.std_floor,
            top_k=config.top_k,
            features=FEATURE_NAMES,
            upper_only=True,
            clip=config.learn_clip_sigma,
        )
        # The alarm budget is split evenly between the two continuous tiers.
        budget = config.false_alarms_per_day / 2.0
        self.threshold = TailThreshold(alarms_per_day=budget, capacity=4096, min_scores=20)
        self.sequence = SequenceTier(
            alpha=config.ngram_alpha, unseen_nats=config.sequence_unseen_nats, unseen_scale=config.sequence_unseen_scale
        )
        self.seq_threshold = TailThreshold(
            alarms_per_day=budget, capacity=4096, min_scores=20, floor=0.0, min_excess=config.sequence_min_excess
        )
        # The tiers' combined score is calibrated too, on the whole budget: the tiers are not independent
        # (a database's checkpoint raises its write rates and its unusual n-grams together), so the
        # combined probability alone would overstate how rare such a window is.
        self.combined_threshold = TailThreshold(alarms_per_day=config.false_alarms_per_day, capacity=4096,
                                                min_scores=20, floor=0.0)
        self.windows = 0

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        out = {f"{prefix}.det.{k}": v for k, v in self.detector.to_arrays().items()}
        out.update({f"{prefix}.thr.{k}": v for k, v in self.threshold.to_arrays().items()})
        out.update({f"{prefix}.seq.{k}": v for k, v in self.sequence.to_arrays().items()})
        out.update({f"{prefix}.seqthr.{k}": v for k, v in self.seq_threshold.to_arrays().items()})
        out.update({f"{prefix}.combthr.{k}": v for k, v in self.combined_threshold.to_arrays().items()})
        out[f"{prefix}.windows"] = np.array([self.windows], dtype=np.int64)
        return out

    def load_arrays(self, prefix: str, arrays: dict[str, np.ndarray]) -> None:
        self.detector.load_arrays({k: arrays[f"{prefix}.det.{k}"] for k in ("mean", "m2", "n", "var_floor")
                                   if f"{prefix}.det.{k}" in arrays})
        self.threshold.load_arrays({k: arrays[f"{prefix}.thr.{k}"] for k in ("scores", "top", "meta")})
        self.sequence.load_arrays({k: arrays[f"{prefix}.seq.{k}"] for k in ("counts", "windows", "seen")})
        self.seq_threshold.load_arrays({k: arrays[f"{prefix}.seqthr.{k}"] for k in ("scores", "top", "meta")})
        self.combined_threshold.load_arrays({k: arrays[f"{prefix}.combthr.{k}"] for k in ("scores", "top", "meta")})
        self.windows = int(arrays[f"{prefix}.windows"][0])


class ImageBaseline:
    """Learned behaviour of one image key, and the decisions made against it.

    >>> from baseliner.models.vector import FeatureVector, Identity
    >>> ident = Identity("node-1", "c1", "nginx", "1.27")
    >>> b = ImageBaseline("nginx:1.27", BaselineConfig(min_learn_windows=20, min_learn_seconds=0, stable_confidence=0))
    >>> normal = [FeatureVector(ident, 1.7e9 + 5 * i, 5.0, {"read": 500 + i % 7, "write": 300},
    ...                         executables=["/usr/sbin/nginx"] if i == 0 else []) for i in range(40)]
    >>> _ = b.process(normal)
    >>> b.state.value
    'detecting'
    >>> shell = FeatureVector(ident, 1.7e9 + 400, 5.0, {"read": 500, "write": 300, "execve": 2},
    ...                       execs=2, executables=["/bin/sh"])
    >>> v = b.process([shell])[0]
    >>> v.anomalous, v.kinds, v.novel[0].text()
    (True, ('novel_executable', 'novel_syscall', 'rate'), 'new executable /bin/sh')
    """

    STATE_VERSION = 7  # 2: n-gram spec v2, the order-6 bitset (``*.seq.seen``); 3: lineage; 4: learning's end;
    # 5: the rate feature file.unresolved_writes; 6: the combined score's threshold (``*.combthr``); 7: the
    # thresholds' largest scores (``*.top``)

    def __init__(self, key: str, config: BaselineConfig | None = None) -> None:
        self.key = key
        self.config = config or BaselineConfig()
        self.mode = Mode.AUTO
        self.lineage: Lineage | None = None  # its image's versions (models/lineage.py); kept by reset()
        self._init_state()

    def _init_state(self) -> None:
        self.steady = _Profile(self.config)
        self.startup = _Profile(self.config)
        cfg = self.config
        self.novelty = NoveltySets(
            cfg.novelty_capacity, cfg.ephemeral_port_start, cfg.novelty_min_windows, cfg.novelty_min_containers
        )
        self._novel_weight = {
            "executable": cfg.novelty_weight_executable,
            "port": cfg.novelty_weight_port,
            "sensitive_path": cfg.novelty_weight_sensitive_path,
            "syscall": cfg.novelty_weight_syscall,
        }
        self.containers: set[str] = set()  # containers seen while learning (at most _MAX_REPLICAS)
        self.quarantine: dict[str, float] = {}  # container -> event time until which it is not learnt
        self.state = State.FROZEN if self.mode is Mode.FREEZE else (
            State.DETECTING if self.mode is Mode.DETECT else State.LEARNING
        )
        self.windows_learned = 0
        self.windows_scored = 0
        self.anomalies = 0
        self.first_window = math.nan
        self.last_window = math.nan
        self._window_seconds = 0.0
        self.last_rehearsal = math.nan  # event time (window end) of the latest rehearsal alarm while learning
        self.rehearsal_kinds = ""  # what it was: "rate", "sequence", "novel_executable" ...
        self.rehearsals = 0
        self.ready_reason = ""  # why learning ended (a READY_REASONS code), "" while learning

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def threshold(self) -> float:
        """The decision threshold (decades of improbability; ``inf`` while learning: the rehearsal's
        thresholds decide nothing)."""
        return math.inf if self.state is State.LEARNING else _decision_threshold(self.steady)

    @property
    def learning_reason(self) -> str:
        """A closed-set code for why the baseline is (still) learning or why it stopped
        (:data:`LEARNING_REASONS`)."""
        if self.state is not State.LEARNING:
            return self.ready_reason or "operator"
        if self.mode is Mode.LEARN:
            return "operator"
        return self._waiting_for()[0]

    @property
    def learning_detail(self) -> str:
        """The reason in words, with the figures it was decided on."""
        cfg, learned = self.config, self.learned_seconds
        code = self.learning_reason
        last = (f"the last rehearsal alarm ({self.rehearsal_kinds}) {self._quiet_seconds():.0f} s before the "
                f"latest window" if not math.isnan(self.last_rehearsal) else "no rehearsal alarm yet")
        return {
            "windows": f"learning: {self.windows_learned} of at least {cfg.min_learn_windows} windows",
            "time": f"learning: {learned:.0f} s of at least {cfg.min_learn_seconds:.0f} s of event time",
            "calibrating": f"learning: {self.steady.threshold.n_scores} calibration scores of at least "
                           f"{self.steady.threshold.min_scores}",
            "unstable": f"learning: {last}; needs {self._quiet_needed():.0f} s quiet (the last "
                        f"{cfg.stable_share:.0%} of {learned:.0f} s, and {self.evidence_seconds:.0f} s to bound the "
                        f"alarm rate by the budget at {cfg.stable_confidence:.0%} confidence; "
                        f"{self.rehearsals} rehearsal alarms so far)",
            "stable": f"ready: {last}: at least the last {cfg.stable_share:.0%} of learning and "
                      f"{self.evidence_seconds:.0f} s quiet ({self.rehearsals} rehearsal alarms while learning)",
            "limit": f"ready: learning reached max_learn_seconds ({cfg.max_learn_seconds:.0f} s) without "
                     f"settling ({last})",
            "operator": f"mode {self.mode.value} set by an operator",
        }[code]

    @property
    def learned_seconds(self) -> float:
        if math.isnan(self.first_window):
            return 0.0
        return self.last_window - self.first_window + self._window_seconds

    def set_mode(self, mode: Mode) -> None:
        self.mode = mode
        if mode is Mode.FREEZE:
            self.state = State.FROZEN
        elif mode is Mode.LEARN:
            self.state = State.LEARNING
        elif mode is Mode.DETECT:
            self._start_detecting()
            self.ready_reason = "operator"
        else:
            self.state = State.LEARNING
            self._maybe_ready()

    def reset(self) -> None:
        """Forget everything learnt; the mode stays."""
        self._init_state()

    @property
    def evidence_seconds(self) -> float:
        """The quiet event time that bounds the image's alarm rate by its budget at ``stable_confidence``:
        no alarm in ``Q`` seconds puts a Poisson rate under ``-ln(1 - c) / Q`` with confidence ``c``."""
        c = self.config.stable_confidence
        return -math.log1p(-c) * SECONDS_PER_DAY / self.config.false_alarms_per_day

    def _quiet_seconds(self) -> float:
        """Event time from the latest rehearsal alarm (or the first window) to the end of the latest window."""
        since = self.first_window if math.isnan(self.last_rehearsal) else self.last_rehearsal
        return self.last_window + self._window_seconds - since

    @property
    def quiet_progress(self) -> float:
        """How far the quiet stretch is towards what ending learning needs (0 to 1)."""
        needed = self._quiet_needed()
        return 1.0 if needed <= 0 else min(1.0, max(0.0, self._quiet_seconds()) / needed)

    def _quiet_needed(self) -> float:
        return max(self.config.stable_share * self.learned_seconds, self.evidence_seconds)

    def _waiting_for(self) -> tuple[str, bool]:
        """``(reason, ready)``: what learning waits for, or why it may end."""
        cfg = self.config
        if self.windows_learned < cfg.min_learn_windows:
            return "windows", False
        if self.learned_seconds < cfg.min_learn_seconds:
            return "time", False
        if self.steady.threshold.n_scores < self.steady.threshold.min_scores:
            return "calibrating", False
        if self._quiet_seconds() >= self._quiet_needed():
            return "stable", True
        if self.learned_seconds >= cfg.max_learn_seconds:
            return "limit", True
        return "unstable", False

    def _maybe_ready(self) -> None:
        if self.mode is Mode.AUTO and self.state is State.LEARNING:
            reason, ready = self._waiting_for()
            if ready:
                self._start_detecting()
                self.ready_reason = reason

    def _start_detecting(self) -> None:
        for profile in (self.steady, self.startup):
            for threshold in (profile.threshold, profile.seq_threshold, profile.combined_threshold):
                threshold.recompute()
                threshold.hold()  # detection refines the thresholds but never loosens them
            profile.detector.hold_spread()  # the spread the thresholds were calibrated against
        self.state = State.DETECTING
        self.ready_reason = ""

    # -- scoring -----------------------------------------------------------------------------------

    def process(self, vectors: Sequence[FeatureVector]) -> list[Verdict]:
        """Score, decide and learn a batch of this image's windows (event-time order): :meth:`process_block`
        of ``VectorBlock.from_vectors(vectors)``, with a :class:`Verdict` per window."""
        return self.process_block(VectorBlock.from_vectors(vectors)).to_list()

    def process_block(self, block: VectorBlock, features: np.ndarray | None = None) -> BlockVerdicts:
        """Score, decide and learn a block of this image's windows (event-time order): :func:`process_blocks`
        with this baseline as the only group (``features``: ``transform_block(block)`` when the caller has it)."""
        return process_blocks([(self, np.arange(len(block), dtype=np.int64))], block, features)[0]

    def _quarantine(self, container: str, window_start: float, window_end: float) -> None:
        """Stop learning from a container for a while after it raised an anomaly."""
        if self.config.quarantine_seconds <= 0:
            return
        if len(self.quarantine) >= _MAX_QUARANTINE:
            self.quarantine = {k: t for k, t in self.quarantine.items() if t > window_start}
            while len(self.quarantine) >= _MAX_QUARANTINE:
                self.quarantine.pop(next(iter(self.quarantine)))
        self.quarantine[container] = window_end + self.config.quarantine_seconds

    def _explain(
        self, verdict: Verdict, x: np.ndarray, rate_hit: bool, seq_info: tuple[float, float, float] | None,
        profile: _Profile,
    ) -> None:
        """Fill in why a window is anomalous: its kinds, severity and the deviating features."""
        novel_kinds = sorted({item.kind for item in verdict.novel}, key=KINDS.index)
        verdict.anomalous = True
        verdict.kinds = (
            tuple(f"novel_{k}" for k in novel_kinds)
            + (("rate",) if rate_hit else ())
            + (("sequence",) if seq_info else ())
        )
        verdict.severity = _severity(verdict.score / verdict.threshold, verdict.novel)
        det = profile.detector
        z = det.standard_scores(x[None, :])[0]
        if det.upper_only:  # explain with what was scored: increases only
            z = np.maximum(z, 0.0)
        explanation = deviations(x, z, det.means(), det.stds(), self.config.explain_top)
        if seq_info is not None:
            observed, level, unseen = seq_info
            if unseen > 0:  # the share of the window's length-6 syscall contexts the image never showed
                explanation.insert(0, Deviation("sequence.unseen_6grams", unseen, 0.0, 0.0, "share",
                                                unseen / profile.sequence.unseen_scale))
            typical = profile.seq_threshold.quantile(0.5)
            explanation.insert(0, Deviation("sequence.surprise", observed, typical, level - typical, "nats/gram",
                                            observed / level if level > 0 else math.inf))
        verdict.explanation = tuple(explanation)

    def accept(self, vector: FeatureVector) -> list[NovelItem]:
        """Feedback: this window is normal for the image. Learn it, and make its novel items known."""
        block = VectorBlock.from_vectors([vector])
        s = _score([(self, np.zeros(1, dtype=np.int64))], block, transform_block(block))
        _learn_models([self.steady, self.startup], s, np.ones(1, dtype=bool), [True, True])
        (self.startup if s.startup[0] else self.steady).windows += 1
        novel = s.novel.get(0, [])
        for item in novel:
            self.novelty.add(item.kind, [item.value])
        self.quarantine.pop(f"{vector.identity.node}/{vector.identity.container_id}", None)
        self.windows_learned += 1
        return novel

    # -- inspection --------------------------------------------------------------------------------

    def feature_stats(self) -> list[tuple[str, float, float, str, float]]:
        """``(name, mean, std, unit, typical)`` per feature; mean/std in log-rate space."""
        det = self.steady.detector
        means, stds = det.means(), det.stds()
        return [
            (f.name, float(means[j]), float(stds[j]), f.unit, math.expm1(float(means[j])))
            for j, f in enumerate(FEATURES)
        ]

    def novelty_sets(self) -> dict[str, list[str]]:
        return {k: sorted(v) for k, v in self.novelty.sets.items()}

    # -- persistence (JSON + arrays; never pickle) -------------------------------------------------

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {
            "state_version": self.STATE_VERSION,
            "key": self.key,
            "config": self.config.to_dict(),
            "mode": self.mode.value,
            "state": self.state.value,
            "features": list(FEATURE_NAMES),
            "windows_learned": self.windows_learned,
            "windows_scored": self.windows_scored,
            "anomalies": self.anomalies,
            "first_window": None if math.isnan(self.first_window) else self.first_window,
            "last_window": None if math.isnan(self.last_window) else self.last_window,
            "window_seconds": self._window_seconds,
            "novelty": self.novelty.to_dict(),
            "containers": sorted(self.containers),
            "quarantine": sorted(self.quarantine.items()),
            "lineage": None if self.lineage is None else self.lineage.to_meta(),
            "last_rehearsal": None if math.isnan(self.last_rehearsal) else self.last_rehearsal,
            "rehearsal_kinds": self.rehearsal_kinds,
            "rehearsals": self.rehearsals,
            "ready_reason": self.ready_reason,
        }
        arrays = self.steady.to_arrays("steady")
        arrays.update(self.startup.to_arrays("startup"))
        if self.lineage is not None:
            arrays.update(self.lineage.to_arrays())
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> ImageBaseline:
        version = meta.get("state_version")
        if version != cls.STATE_VERSION:
            raise StateVersionError(
                f"baseline state version {version!r} is not supported (this build reads version "
                f"{cls.STATE_VERSION}); re-learn the baseline or export it with a matching build"
            )
        try:
            if meta["features"] != list(FEATURE_NAMES):
                raise StateError("baseline state was written with another feature layout")
            b = cls(str(meta["key"]), BaselineConfig.from_dict(meta["config"]))
            b.mode = Mode(meta["mode"])
            b.state = State(meta["state"])
            b.windows_learned = int(meta["windows_learned"])
            b.windows_scored = int(meta["windows_scored"])
            b.anomalies = int(meta["anomalies"])
            b.first_window = math.nan if meta["first_window"] is None else float(meta["first_window"])
            b.last_window = math.nan if meta["last_window"] is None else float(meta["last_window"])
            b._window_seconds = float(meta["window_seconds"])
            b.novelty.load_dict(meta["novelty"])
            b.steady.load_arrays("steady", arrays)
            b.startup.load_arrays("startup", arrays)
            b.containers = {str(c) for c in meta["containers"][:_MAX_REPLICAS]}
            b.quarantine = {str(k): float(t) for k, t in meta["quarantine"][:_MAX_QUARANTINE]}
            if meta["lineage"] is not None:
                b.lineage = Lineage.from_state(meta["lineage"], arrays, b.config)
            b.last_rehearsal = math.nan if meta["last_rehearsal"] is None else float(meta["last_rehearsal"])
            b.rehearsal_kinds = str(meta["rehearsal_kinds"])
            b.rehearsals = int(meta["rehearsals"])
            b.ready_reason = str(meta["ready_reason"])
            if b.ready_reason and b.ready_reason not in LEARNING_REASONS:
                raise StateError(f"baseline state has an unknown ready reason {b.ready_reason!r}")
        except StateError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"baseline state is inconsistent: {exc}") from exc
        return b


# -- the scoring path: many images' windows of one block at once -------------------------------------


def process_blocks(
    groups: Sequence[tuple[ImageBaseline, np.ndarray]], block: VectorBlock, features: np.ndarray | None = None
) -> list[BlockVerdicts]:
    """Score, decide and learn the windows of several images that arrived in one block.

    ``groups`` pairs each baseline (at most once) with the rows of ``block`` that are its windows, in
    event-time order; ``features`` is ``transform_block(block)`` when the caller has it.  Returns one
    :class:`BlockVerdicts` per group, row ``i`` of it being the group's ``rows[i]``.

    Every image is scored with one set of NumPy operations for the whole block (stacked per-image
    state: means, spreads and thresholds gathered per row) and learns from segment sums; per-image
    Python is left for the novelty sets, thresholds that are still calibrating and anomalous windows.

    >>> from baseliner.models.vector import FeatureVector, Identity
    >>> cfg = BaselineConfig(min_learn_windows=20, min_learn_seconds=0, stable_confidence=0)
    >>> web, db = (ImageBaseline(k, cfg) for k in ("web", "db"))
    >>> ws = [FeatureVector(Identity("n", f"c{i % 2}", "web" if i % 2 else "db"), 1.7e9 + 5 * (i // 2), 5.0,
    ...                     {"read": 100 + i % 5, "write": 50}) for i in range(80)]
    >>> blk = VectorBlock.from_vectors(ws)
    >>> odd, even = np.arange(1, 80, 2), np.arange(0, 80, 2)
    >>> [len(v) for v in process_blocks([(web, odd), (db, even)], blk)], web.state.value, db.state.value
    ([40, 40], 'detecting', 'detecting')
    """
    if len({id(b) for b, _ in groups}) != len(groups):
        raise ValueError("a baseline appears in more than one group")
    X = transform_block(block) if features is None else features
    parts: list[list[BlockVerdicts]] = [[] for _ in groups]
    # While a model is forming, it scores against its freshest state: small chunks keep the scores that
    # calibrate its threshold prequential.  Round r processes every such image's chunk r together, and
    # the first round also every other image's whole share.
    rounds: list[list[tuple[int, np.ndarray]]] = [[]]
    for g, (b, rows) in enumerate(groups):
        if not len(rows):
            parts[g].append(BlockVerdicts.empty(b.state))
        elif b.state is State.LEARNING and len(rows) > _LEARNING_CHUNK:
            for r, s in enumerate(range(0, len(rows), _LEARNING_CHUNK)):
                if r == len(rounds):
                    rounds.append([])
                rounds[r].append((g, rows[s : s + _LEARNING_CHUNK]))
        else:
            rounds[0].append((g, rows))
    for members in rounds:
        if members:
            verdicts = _process([(groups[g][0], rows) for g, rows in members], block, X)
            for (g, _), v in zip(members, verdicts, strict=True):
                parts[g].append(v)
    return [p[0] if len(p) == 1 else BlockVerdicts.concat(p, groups[g][0].state) for g, p in enumerate(parts)]


def _process(
    groups: Sequence[tuple[ImageBaseline, np.ndarray]], block: VectorBlock, X: np.ndarray
) -> list[BlockVerdicts]:
    """:func:`process_blocks` for groups scored against their state before the block."""
    baselines = [b for b, _ in groups]
    s = _score(groups, block, X)
    versions = VersionStep.of(baselines, block, s)  # images adapting to a new version (models/lineage.py)
    if versions is not None:
        versions.defer_items()
    _decide(baselines, s)
    if s.rehearsal.any():
        _rehearse(baselines, block, s)
    learn_mask = _learn_mask(baselines, block, s)
    verdicts = _verdicts(baselines, block, s, learn_mask)
    if versions is not None:
        versions.before_learn(learn_mask)
    if learn_mask.any():
        _learn(baselines, block, s, learn_mask)
    if versions is not None:
        versions.after_learn()
    return verdicts


@dataclass(slots=True)
class _Scored:
    """The windows of one :func:`_process` call, scored.

    Window ``k`` is ``block`` row ``R[k]`` of group ``grp[k]`` (groups one after the other: group ``g``'s
    windows are ``[offsets[g], offsets[g + 1])``); its profile is ``prof[k]``, ``2 grp[k]`` (steady) or
    ``2 grp[k] + 1`` (start-up), of ``profiles``.  ``in_order``: ``R`` is every row of the block in order
    (the block's columns are used as they are).  The decision (``threshold`` ... ``anomalous``) is filled in
    by :func:`_decide`.
    """

    R: np.ndarray
    grp: np.ndarray
    offsets: list[int]
    in_order: bool
    profiles: list[_Profile]
    X: np.ndarray  # features of the windows, in window order
    startup: np.ndarray
    prof: np.ndarray
    z: np.ndarray  # standard scores against each window's profile
    rate: np.ndarray
    seq: np.ndarray
    has_grams: np.ndarray
    sequences: StackedSequence | None
    novel: dict[int, list[NovelItem]]
    learning: np.ndarray  # the window's image is learning
    threshold: np.ndarray = field(init=False)  # the decision threshold (decades)
    seq_threshold: np.ndarray = field(init=False)
    no_profile: np.ndarray = field(init=False)
    rate_hit: np.ndarray = field(init=False)
    seq_hit: np.ndarray = field(init=False)
    continuous: np.ndarray = field(init=False)
    score: np.ndarray = field(init=False)
    anomalous: np.ndarray = field(init=False)
    rehearsal: np.ndarray = field(init=False)  # learning windows the decision would have flagged

    def per_group(self, values: list[Any]) -> Any:
        return _per_group(values, self.grp)

    def rows_of(self, a: np.ndarray) -> np.ndarray:
        """A block column's values of the windows, in window order."""
        return a if self.in_order else a[self.R]


def _score(groups: Sequence[tuple[ImageBaseline, np.ndarray]], block: VectorBlock, X: np.ndarray) -> _Scored:
    """Every window's rate and sequence scores against its profile, and its novel items."""
    baselines = [b for b, _ in groups]
    sizes = [len(rows) for _, rows in groups]
    if len(groups) == 1:
        R, grp = np.asarray(groups[0][1], dtype=np.int64), np.zeros(sizes[0], dtype=np.int64)
    else:
        R = np.concatenate([np.asarray(rows, dtype=np.int64) for _, rows in groups])
        grp = np.repeat(np.arange(len(groups), dtype=np.int64), sizes)
    n = len(R)
    # the groups' rows are the block's rows in order (one group, or images that arrived one after the
    # other): every column is used as it is, with no gathers
    in_order = n == len(block) and bool((R == np.arange(n)).all())
    Xr = X if in_order else X[R]
    ages = block.age if in_order else block.age[R]
    is_startup = (ages >= 0.0) & (ages < _per_group([b.config.startup_seconds for b in baselines], grp))
    prof = 2 * grp + is_startup
    profiles = [p for b in baselines for p in (b.steady, b.startup)]
    # standard scores of every window against its profile, for scoring now and learning later
    if is_startup.any():
        rate_dets, rate_rows = [p.detector for p in profiles], prof
    else:
        rate_dets, rate_rows = [b.steady.detector for b in baselines], grp
    z = ZScoreDetector.standard_scores_stacked(rate_dets, Xr, rate_rows)
    rate = ZScoreDetector.score_stacked(rate_dets, Xr, rate_rows, z)
    sequences = _score_sequences(profiles, block, R, in_order, prof)
    seq, has_grams = (np.zeros(n), np.zeros(n, dtype=bool)) if sequences is None else \
        (sequences.score, sequences.has_grams)
    novel = novel_rows([b.novelty for b in baselines], block, None if in_order else R, grp)
    return _Scored(R, grp, [0, *np.cumsum(sizes).tolist()], in_order, profiles, Xr, is_startup, prof, z, rate, seq,
                   has_grams, sequences, novel, _per_group([b.state is State.LEARNING for b in baselines], grp))


def _per_group(values: list[Any], grp: np.ndarray) -> Any:
    """One value per group, as a value per window (a 0-d array that broadcasts, for one group)."""
    return np.asarray(values[0]) if len(values) == 1 else np.asarray(values)[grp]


def _score_sequences(
    profiles: list[_Profile], block: VectorBlock, R: np.ndarray, in_order: bool, prof: np.ndarray
) -> StackedSequence | None:
    """The windows' sequence scores against their profiles' tiers (``None`` when none has an n-gram)."""
    if not len(block.ng_bucket):
        return None
    if in_order:
        ptr, cols, counts = block.ng_ptr, block.ng_bucket, block.ng_count
    else:  # the windows' entries in window order: each profile's are one slice (or few)
        ptr, taken = csr_take(block.ng_ptr, R)
        cols, counts = block.ng_bucket[taken], block.ng_count[taken]
    if not ptr[-1]:
        return None
    return SequenceTier.score_stacked([p.sequence for p in profiles], ptr, cols, counts, prof)


def _decision_threshold(profile: _Profile) -> float:
    """A profile's decision threshold: the alarm budget's probability per window in decades of
    improbability, ``-log10(false_alarms_per_day x window_seconds / 86400)`` (``inf`` until calibrated),
    or the combined score's own threshold where that is higher (its normal windows' combined scores
    reach further than independent tiers would).  Each continuous tier has half the budget, so its own
    threshold sits at exactly the budget's combined score."""
    t = profile.threshold
    if not math.isfinite(t.value):
        return math.inf
    budget = -math.log10(2.0 * t.p)
    combined = profile.combined_threshold.value
    return max(budget, combined) if math.isfinite(combined) else budget


def _decide(baselines: list[ImageBaseline], s: _Scored) -> None:
    """Each tier's tail probability, the combined score, and which windows are anomalous (while learning:
    which would have been, the rehearsal)."""
    rate_thr = np.array([p.threshold.value for p in s.profiles])[s.prof]
    seq_thr = np.array([p.seq_threshold.value for p in s.profiles])[s.prof]
    thresholds = np.array([_decision_threshold(p) for p in s.profiles])[s.prof]
    # Start-up windows with no start-up profile yet are judged on the exact tier only, against the
    # steady threshold.
    no_profile = s.startup & ~np.isfinite(rate_thr)
    if no_profile.any():
        thresholds = np.where(no_profile, s.per_group([_decision_threshold(b.steady) for b in baselines]),
                              thresholds)
    finite = np.isfinite(thresholds)
    s.rate_hit = (s.rate > rate_thr) & ~no_profile
    seq_ok = np.isfinite(seq_thr) & ~no_profile & s.has_grams
    s.seq_hit = seq_ok & (s.seq > seq_thr)
    s.continuous, rate_s, seq_s = _combined_surprise(
        baselines, s, ~no_profile & np.isfinite(rate_thr), seq_ok,
        s.per_group([TIER_COMBINATIONS.index(b.config.tier_combination) for b in baselines]))
    n_kinds = np.zeros(len(s.R))
    alone = np.zeros(len(s.R), dtype=bool)  # a novel item of a kind that alerts on its own
    grp = s.grp.tolist()
    for k, items in s.novel.items():
        weight = baselines[grp[k]]._novel_weight
        kinds = {item.kind for item in items}
        n_kinds[k] = sum(weight[kind] for kind in kinds)
        alone[k] = any(weight[kind] >= 1.0 for kind in kinds)
    # A novel item that alerts on its own counts from no less than "nothing unusual" (p = 1): the continuous
    # score sits below 0 for typical windows, and must not keep a novel executable from alerting.
    base = np.where(alone, np.maximum(s.continuous, 0.0), s.continuous)
    s.score = base + np.where(finite, thresholds, 0.0) * n_kinds
    over = finite & (s.score >= thresholds)
    # Evidence of both tiers together can cross where neither does alone: name the tier that led (a window
    # whose novel items would not cross on their own says which tier carried it).
    lead = over & ~s.rate_hit & ~s.seq_hit & (n_kinds < 1.0)
    if lead.any():
        by_seq = lead & seq_ok & (seq_s > rate_s)
        s.seq_hit |= by_seq
        s.rate_hit |= lead & ~by_seq & ~no_profile
    s.anomalous = over & ~s.learning
    s.rehearsal = over & s.learning
    s.threshold, s.seq_threshold, s.no_profile = thresholds, seq_thr, no_profile


def _weighted_surprises(
    baselines: list[ImageBaseline], s: _Scored, rate_ok: np.ndarray, seq_ok: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each continuous tier's tail surprise (``-log10 p`` under the tier's own calibration) times the
    image's weight of that tier (``tier_weight_*``: ``p ** w``, still a valid tail probability)."""
    rate = TailThreshold.surprise_stacked([p.threshold for p in s.profiles], s.rate, s.prof, rate_ok)
    seq = TailThreshold.surprise_stacked([p.seq_threshold for p in s.profiles], s.seq, s.prof, seq_ok)
    w_rate = s.per_group([b.config.tier_weight_rate for b in baselines])
    w_seq = s.per_group([b.config.tier_weight_sequence for b in baselines])
    return rate * w_rate, seq * w_seq


def _combined_surprise(
    baselines: list[ImageBaseline], s: _Scored, rate_ok: np.ndarray, seq_ok: np.ndarray, how: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The continuous tiers' combined tail probability per window, in decades (``-log10``): each tier's
    tail probability under its own calibration (a tier that is not calibrated, or a window without
    n-grams for the sequence tier, is left out; neither: 0), combined by
    ``min_p`` (``min(1, 2 min(p_rate, p_seq))``: either tier alone alarms at its own budget quantile) or
    ``fisher`` (``P(chi2_4 >= -2 ln(p_rate p_seq))``: evidence from both adds up) or ``either`` (the smaller
    of the two, doubled), each tier's probability weighted (:func:`_weighted_surprises`); and each tier's
    weighted surprise.  ``how``: per window, the index in
    :data:`TIER_COMBINATIONS`."""
    rate, seq = _weighted_surprises(baselines, s, rate_ok, seq_ok)
    min_p = np.where(rate_ok, rate, -np.inf)
    np.maximum(min_p, np.where(seq_ok, seq, -np.inf), out=min_p)
    min_p = np.where(rate_ok | seq_ok, min_p - math.log10(2.0), 0.0)
    if not how.any():
        return min_p, rate, seq
    half_chi2 = math.log(10.0) * (rate + seq)  # -ln(p_rate p_seq); P(chi2_4 >= 2x) = e^-x (1 + x)
    fisher = (half_chi2 - np.log1p(np.maximum(half_chi2, 0.0))) / math.log(10.0)
    either = np.where(rate_ok | seq_ok, np.maximum(fisher, min_p) - math.log10(2.0), 0.0)
    return np.choose(how, [min_p, fisher, either]), rate, seq


def _rehearse(baselines: list[ImageBaseline], block: VectorBlock, s: _Scored) -> None:
    """Note, per learning image, its latest rehearsal alarm (a learning window the decision would have
    flagged) and what it was."""
    for k in s.rehearsal.nonzero()[0].tolist():
        b = baselines[int(s.grp[k])]
        row = int(s.R[k])
        end = float(block.window_start[row] + block.window_seconds[row])
        b.rehearsals += 1
        if math.isnan(b.last_rehearsal) or end >= b.last_rehearsal:
            kinds = sorted({f"novel_{item.kind}" for item in s.novel.get(k, ())})
            kinds += ["rate"] * bool(s.rate_hit[k]) + ["sequence"] * bool(s.seq_hit[k])
            b.last_rehearsal, b.rehearsal_kinds = end, ",".join(kinds) or "combined"


def _learn_mask(baselines: list[ImageBaseline], block: VectorBlock, s: _Scored) -> np.ndarray:
    """The windows to learn: complete, of live containers, no events lost, not quarantined, the image not
    frozen; while learning all of them, else those comfortably inside the baseline."""
    learnable = s.rows_of(block.complete) & ~s.rows_of(block.container_exited)
    learnable &= s.rows_of(block.counters[:, _EVENTS_LOST]) == 0
    for g, b in enumerate(baselines):
        if b.quarantine:
            lo, hi = s.offsets[g], s.offsets[g + 1]
            _mask_quarantined(b, block, s.R[lo:hi], learnable[lo:hi])
    # Detection learns only windows comfortably inside the baseline: a window just under its threshold
    # is not flagged, but neither may it pull the baseline towards itself.
    inside = (s.continuous < s.per_group([b.config.learn_gate for b in baselines]) * s.threshold) | s.no_profile
    frozen = s.per_group([b.state is State.FROZEN for b in baselines])
    return learnable & ~frozen & (s.learning | (~s.anomalous & inside))


def _mask_quarantined(b: ImageBaseline, block: VectorBlock, rows: np.ndarray, learnable: np.ndarray) -> None:
    """Mask out (in ``learnable``, one flag per row of ``rows``) the windows of containers ``b`` still has
    in quarantine: looked up once per distinct container, not per window.

    A container's quarantine is forgotten when a window of its own after the quarantine comes (a container's
    windows come in order), or its last one (it exited).  Other containers' windows say nothing about it:
    replicas on other nodes come in other sensors' streams, which may be behind in event time (a backlog
    sent after an outage)."""
    present, inverse = np.unique(block.ident[rows], return_inverse=True)
    containers = block.containers()
    keys = [containers[j] for j in present.tolist()]
    until = np.array([b.quarantine.get(k, -math.inf) for k in keys])
    if not np.isfinite(until).any():
        return
    starts = block.window_start[rows]
    learnable &= starts >= until[inverse]
    earliest = np.full(len(keys), math.inf)
    np.minimum.at(earliest, inverse, starts)
    exited = np.zeros(len(keys), dtype=bool)
    np.logical_or.at(exited, inverse, block.container_exited[rows])
    for k, done in zip(keys, np.isfinite(until) & ((until <= earliest) | exited), strict=True):
        if done:
            del b.quarantine[k]


def _verdicts(
    baselines: list[ImageBaseline], block: VectorBlock, s: _Scored, learn_mask: np.ndarray
) -> list[BlockVerdicts]:
    """Each group's verdicts; every anomalous window explained, and its container quarantined."""
    bounds = list(zip(s.offsets[:-1], s.offsets[1:], strict=True))
    verdicts = [
        BlockVerdicts(s.score[lo:hi], s.threshold[lo:hi], s.continuous[lo:hi], s.anomalous[lo:hi],
                      learn_mask[lo:hi], s.startup[lo:hi], b.state, {}, {})
        for b, (lo, hi) in zip(baselines, bounds, strict=True)
    ]
    grp, offsets = s.grp.tolist(), s.offsets
    for k, items in s.novel.items():
        verdicts[grp[k]].novel[k - offsets[grp[k]]] = tuple(items)
    seq_hit, rate_hit, startup, rows = s.seq_hit, s.rate_hit, s.startup, s.R
    for k in s.anomalous.nonzero()[0].tolist():
        g = grp[k]
        local = k - offsets[g]
        b, vd = baselines[g], verdicts[g].verdict(local)
        seq_info = None
        if seq_hit[k]:  # the window's sequence score, its threshold and its share of never-seen 6-grams
            unseen = float(s.sequences.unseen[k]) if s.sequences is not None else 0.0
            seq_info = (float(s.seq[k]), float(s.seq_threshold[k]), unseen)
        b._explain(vd, s.X[k], bool(rate_hit[k]), seq_info, b.startup if startup[k] else b.steady)
        verdicts[g].flagged[local] = vd
        row = int(rows[k])
        ident, start = block.identity(row), float(block.window_start[row])
        b._quarantine(f"{ident.node}/{ident.container_id}", start, start + float(block.window_seconds[row]))
    for b, (lo, hi), v in zip(baselines, bounds, verdicts, strict=True):
        b.windows_scored += hi - lo
        b.anomalies += len(v.flagged)
    return verdicts


def _learn(baselines: list[ImageBaseline], block: VectorBlock, s: _Scored, learn_mask: np.ndarray) -> None:
    """Learn the windows of ``learn_mask``: thresholds still calibrating, the models, the images' counts."""
    _calibrate(baselines, block, s, learn_mask)
    # While learning, the spread is being discovered; once detecting, how fast the baseline may move is
    # bounded (poisoning resistance).
    _learn_models(s.profiles, s, learn_mask, [b.state is not State.LEARNING for b in baselines for _ in (0, 1)])
    _account(baselines, block, s, learn_mask)


def _calibrate(baselines: list[ImageBaseline], block: VectorBlock, s: _Scored, learn_mask: np.ndarray) -> None:
    """Add the learnt windows' scores to their profiles' thresholds and refit them; count the windows each
    profile learnt."""
    n_profiles = len(s.profiles)
    per_profile = np.bincount(s.prof[learn_mask], minlength=n_profiles)
    # the scores each threshold takes, every profile's in one slice: no mask per profile
    rates, rate_at = _by_profile(s.rate, learn_mask, s.prof, n_profiles)
    seqs, seq_at = _by_profile(s.seq, learn_mask & s.has_grams, s.prof, n_profiles)
    combined_scores, combined_at = _by_profile(s.continuous, learn_mask & np.isfinite(s.threshold), s.prof,
                                                 n_profiles)
    for p in per_profile.nonzero()[0].tolist():
        g = p // 2
        b, profile = baselines[g], s.profiles[p]
        # Thresholds come from the scores of windows the profile learnt, each computed before the window
        # was learnt (prequential), leaving out the first half of the minimum learning period while the
        # detector settles; refitted at every step while learning (for the rehearsal), once detecting every
        # _REFIT scores (or a 64th of the sample).
        if profile is b.steady:
            skip = max(0, b.config.min_learn_windows // 2 - profile.windows)
        else:
            skip = max(0, b.config.min_learn_windows // 4 - profile.windows)
        window_seconds = float(block.window_seconds[s.R[s.offsets[g]]])
        # the budget is per image: its replicas' windows share it, and its two continuous tiers halve it
        share = b.config.false_alarms_per_day / 2.0 / max(1, len(b.containers))
        learning = b.state is State.LEARNING
        for threshold, scores in ((profile.threshold, rates[rate_at[p] : rate_at[p + 1]][skip:]),
                                  (profile.seq_threshold, seqs[seq_at[p] : seq_at[p + 1]][skip:])):
            if len(scores):
                threshold.alarms_per_day = share
                threshold.add(scores, window_seconds)
                if learning or threshold.refit_due(_REFIT):
                    threshold.recompute()
        # The combined score of the windows the tiers could decide, as it was decided: the image's whole
        # budget (the combination is the decision).
        combined = profile.combined_threshold
        if combined_at[p + 1] > combined_at[p]:
            combined.alarms_per_day = 2.0 * share
            combined.add(combined_scores[combined_at[p] : combined_at[p + 1]][skip:], window_seconds)
            if combined.refit_due(_REFIT):  # (while learning too: the tiers' thresholds move it little)
                combined.recompute()
            if not learning and combined.calibrated and not math.isfinite(combined.ceiling):
                combined.hold()  # (calibrated only after learning ended: held from its first fit)
        profile.windows += int(per_profile[p])


def _by_profile(
    values: np.ndarray, mask: np.ndarray, prof: np.ndarray, n_profiles: int
) -> tuple[np.ndarray, list[int]]:
    """``values[mask]`` profile by profile (each profile's in window order) and where each profile's start:
    profile ``p``'s are ``[starts[p], starts[p + 1])``."""
    at = mask.nonzero()[0]
    of = prof[at]
    return values[at[of.argsort(kind="stable")]], [0, *np.cumsum(np.bincount(of, minlength=n_profiles)).tolist()]


def _learn_models(profiles: list[_Profile], s: _Scored, learn_mask: np.ndarray, bound: list[bool]) -> None:
    """Learn the windows of ``learn_mask`` into their profiles' rate detectors and sequence tiers
    (``bound[p]``: profile ``p`` learns bounded, see ``ZScoreDetector.learn_many``)."""
    if s.sequences is not None:
        SequenceTier.learn_stacked([p.sequence for p in profiles], s.sequences, learn_mask)
    everything = bool(learn_mask.all())
    ZScoreDetector.learn_stacked(
        [p.detector for p in profiles],
        s.X if everything else s.X[learn_mask],
        s.prof if everything else s.prof[learn_mask],
        bound,
        s.z if everything else s.z[learn_mask],
    )


def _account(baselines: list[ImageBaseline], block: VectorBlock, s: _Scored, learn_mask: np.ndarray) -> None:
    """Per image: the novel items of the windows it learnt while learning, the windows it learnt, their
    earliest and latest start and the last one's length (one pass each); then whether it is ready."""
    R, offsets = s.R, s.offsets
    starts = np.where(learn_mask, block.window_start[R], np.nan)
    bounds = offsets[:-1]
    n_learnt = np.add.reduceat(learn_mask, bounds).tolist()
    earliest = np.fmin.reduceat(starts, bounds).tolist()
    latest_start = np.fmax.reduceat(starts, bounds).tolist()
    last_row = R[np.maximum.reduceat(np.where(learn_mask, np.arange(len(R)), 0), bounds)]
    last_seconds = block.window_seconds[last_row].tolist()
    for g, b in enumerate(baselines):
        if not n_learnt[g]:
            continue
        if b.state is State.LEARNING:
            _learn_novelty(b, block, s, learn_mask[offsets[g] : offsets[g + 1]].nonzero()[0] + offsets[g])
        if math.isnan(b.first_window) or earliest[g] < b.first_window:  # (a replica's stream may be behind)
            b.first_window = earliest[g]
        if math.isnan(b.last_window) or latest_start[g] > b.last_window:
            b.last_window = latest_start[g]
        b._window_seconds = last_seconds[g]
        b.windows_learned += n_learnt[g]
        b._maybe_ready()


def _learn_novelty(b: ImageBaseline, block: VectorBlock, s: _Scored, learnt: np.ndarray) -> None:
    """Count windows ``learnt`` (of ``b``, while it learns) as support for their novel items and their
    containers as the image's.  Outside learning a window with novel items is flagged and never learnt, so
    only learning can grow the sets (and feedback, through accept())."""
    containers = block.containers()
    ident = block.ident[s.R[learnt]].tolist()
    startup = s.startup[learnt].tolist()
    for j, k in enumerate(learnt.tolist()):
        container = containers[ident[j]]
        if len(b.containers) < _MAX_REPLICAS:
            b.containers.add(container)
        items = s.novel.get(k)
        if items:
            b.novelty.learn_items(items, container, startup[j], len(b.containers))
