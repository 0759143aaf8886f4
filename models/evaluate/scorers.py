"""The Baseliner model under evaluation, behind one small window-scoring interface.

:class:`PipelineScorer` wraps the very object the service runs, the default per-image model
(:class:`baseliner.models.baseline.ImageBaseline`, scored by ``Verdict.score``, the score alerts are decided
on), and reads its tiers from the same learnt state: the rate tier alone (the z-score detector of log
rates) and the sequence tier alone (order-4 likelihood + order-6 novelty), each scoring as it does inside
the model before the tiers are combined.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from baseliner.models.block import VectorBlock, csr_take
from baseliner.models.detectors.sequence import SequenceTier
from baseliner.models.rate_features import transform_block
from baseliner.models.vector import FeatureVector

RATE_TIER = "Baseliner rate tier alone (z-scores of log rates)"
SEQUENCE_TIER = "Baseliner sequence tier alone (order-4 likelihood + order-6 novelty)"


class WindowScorer(Protocol):
    name: str

    def learn(self, vectors: Sequence[FeatureVector]) -> None: ...

    def freeze(self) -> None: ...

    def score(self, vectors: Sequence[FeatureVector]) -> np.ndarray: ...

    def score_with_alarms(self, vectors: Sequence[FeatureVector]) -> tuple[np.ndarray, np.ndarray]:
        """Window scores, and whether the model alarms on each at its own threshold."""
        ...

    def tiers(self, vectors: Sequence[FeatureVector]) -> dict[str, np.ndarray]:
        """Window scores of each part of the model on its own, by name (may be empty)."""
        ...

    def weights(self, vectors: Sequence[FeatureVector]) -> np.ndarray:
        """How much each window weighs in its trace's length-weighted mean score."""
        ...

    def state_bytes(self) -> int: ...


class PipelineScorer:
    """The default per-image model exactly as the service runs it (``ImageBaseline.process``)."""

    def __init__(self, key: str = "evaluation", batch: int = 256, **config: Any) -> None:
        from baseliner.models.baseline import BaselineConfig, ImageBaseline, Mode

        self._mode = Mode
        # Untimed data: one window is one nominal second, so the time-based learning minimum is waived.
        # ``config``: other ``BaselineConfig`` settings (the defaults otherwise), for cross-validation.
        self.baseline = ImageBaseline(key, BaselineConfig(**{"min_learn_seconds": 0.0, **config}))
        self.baseline.set_mode(Mode.LEARN)
        self.batch = batch
        self.name = "Baseliner default model (ImageBaseline, Verdict.score)"

    def learn(self, vectors: Sequence[FeatureVector]) -> None:
        for i in range(0, len(vectors), self.batch):
            self.baseline.process(vectors[i : i + self.batch])

    def freeze(self) -> None:
        # DETECT calibrates the thresholds from the learning period; FREEZE then stops learning, so the
        # headline figure is of a model that learnt the learning data only.
        self.baseline.set_mode(self._mode.DETECT)
        self.baseline.set_mode(self._mode.FREEZE)

    def score(self, vectors: Sequence[FeatureVector]) -> np.ndarray:
        return self.score_with_alarms(vectors)[0]

    def score_with_alarms(self, vectors: Sequence[FeatureVector]) -> tuple[np.ndarray, np.ndarray]:
        scores, alarms = [], []
        for i in range(0, len(vectors), self.batch):
            v = self.baseline.process_block(VectorBlock.from_vectors(vectors[i : i + self.batch]))
            scores.append(v.score)
            alarms.append(v.anomalous)
        if not scores:
            return np.zeros(0), np.zeros(0, dtype=bool)
        return np.concatenate(scores).astype(np.float64), np.concatenate(alarms).astype(bool)

    def tiers(self, vectors: Sequence[FeatureVector]) -> dict[str, np.ndarray]:
        """The rate and sequence tiers of the learnt model, each on its own scale, every window scored by
        the profile the model scores it with: the start-up profile for windows of containers younger than
        ``startup_seconds``, the steady-state profile otherwise (and for windows without an age, such as
        ADFA-LD's)."""
        b = self.baseline
        rate, seq = np.zeros(len(vectors)), np.zeros(len(vectors))
        for i in range(0, len(vectors), 4096):
            block = VectorBlock.from_vectors(vectors[i : i + 4096])
            X = transform_block(block)
            startup = (block.age >= 0.0) & (block.age < b.config.startup_seconds)
            for profile, rows in ((b.steady, ~startup), (b.startup, startup)):
                if not rows.any():
                    continue
                idx = np.flatnonzero(rows)
                rate[i + idx] = profile.detector.score_many(X[rows])
                ptr, taken = csr_take(block.ng_ptr, idx)
                if ptr[-1]:
                    seq[i + idx] = SequenceTier.score_stacked(
                        [profile.sequence], ptr, block.ng_bucket[taken], block.ng_count[taken],
                        np.zeros(len(idx), dtype=np.int64)).score
        return {RATE_TIER: rate, SEQUENCE_TIER: seq}

    def weights(self, vectors: Sequence[FeatureVector]) -> np.ndarray:
        return np.asarray([sum(v.syscalls.values()) for v in vectors], dtype=np.float64)

    def state_bytes(self) -> int:
        _, arrays = self.baseline.to_state()
        return sum(a.nbytes for a in arrays.values())


def trace_scores(window_scores: np.ndarray, weights: np.ndarray, trace_index: np.ndarray,
                 n_traces: int) -> np.ndarray:
    """Length-weighted mean of each trace's window scores (equal to scoring the whole trace for a
    model linear in counts).  A trace whose windows all weigh 0 gets the plain mean.

    Infinite window scores (a window over an uncalibrated threshold) are replaced by the largest finite
    score plus one, so the ranking is kept.

    >>> trace_scores(np.array([1.0, 3.0, 5.0]), np.array([1.0, 3.0, 2.0]), np.array([0, 0, 1]), 2).tolist()
    [2.5, 5.0]
    """
    s = np.asarray(window_scores, dtype=np.float64).copy()
    bad = ~np.isfinite(s)
    if bad.any():
        finite = s[~bad]
        s[bad] = (finite.max() + 1.0) if len(finite) else 0.0
    w = np.asarray(weights, dtype=np.float64)
    num = np.bincount(trace_index, s * w, n_traces)
    den = np.bincount(trace_index, w, n_traces)
    plain = np.bincount(trace_index, s, n_traces) / np.maximum(np.bincount(trace_index, None, n_traces), 1)
    out = plain.copy()
    np.divide(num, den, out=out, where=den > 0)
    return out
