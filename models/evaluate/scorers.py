"""The Baseliner models under evaluation, behind one small window-scoring interface.

Both wrap the very objects the service runs: :class:`NgramScorer` the sequence tier
(:class:`baseliner.models.detectors.sequence.SequenceTier`) on its own, :class:`PipelineScorer` the whole default
per-image model (:class:`baseliner.models.baseline.ImageBaseline`, scored by ``Verdict.score``, the score alerts
are decided on).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from baseliner.models.detectors.ngram_likelihood import dicts_to_matrix
from baseliner.models.detectors.sequence import SequenceTier
from baseliner.models.vector import FeatureVector


class WindowScorer(Protocol):
    name: str

    def learn(self, vectors: Sequence[FeatureVector]) -> None: ...

    def freeze(self) -> None: ...

    def score(self, vectors: Sequence[FeatureVector]) -> np.ndarray: ...

    def weights(self, vectors: Sequence[FeatureVector]) -> np.ndarray:
        """How much each window weighs in its trace's length-weighted mean score."""
        ...

    def state_bytes(self) -> int: ...


class NgramScorer:
    """The sequence tier alone, with the default model's settings (``BaselineConfig``) unless given one."""

    def __init__(self, detector: SequenceTier | None = None) -> None:
        if detector is None:
            from baseliner.models.baseline import BaselineConfig

            cfg = BaselineConfig()
            detector = SequenceTier(alpha=cfg.ngram_alpha, unseen_nats=cfg.sequence_unseen_nats,
                                    unseen_scale=cfg.sequence_unseen_scale)
        self.detector = detector
        self.name = "Baseliner sequence tier alone (order-4 likelihood + order-6 novelty)"

    def learn(self, vectors: Sequence[FeatureVector]) -> None:
        self.detector.learn_many(dicts_to_matrix(v.ngrams for v in vectors))

    def freeze(self) -> None:
        """The detector only learns when asked to."""

    def score(self, vectors: Sequence[FeatureVector]) -> np.ndarray:
        return self.detector.score_many(dicts_to_matrix(v.ngrams for v in vectors))

    def weights(self, vectors: Sequence[FeatureVector]) -> np.ndarray:
        return self.detector.grams(dicts_to_matrix(v.ngrams for v in vectors))

    def state_bytes(self) -> int:
        return sum(a.nbytes for a in self.detector.to_arrays().values())


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
        # headline figure is of a model that learnt the training data only.
        self.baseline.set_mode(self._mode.DETECT)
        self.baseline.set_mode(self._mode.FREEZE)

    def score(self, vectors: Sequence[FeatureVector]) -> np.ndarray:
        out: list[float] = []
        for i in range(0, len(vectors), self.batch):
            out.extend(v.score for v in self.baseline.process(vectors[i : i + self.batch]))
        return np.asarray(out, dtype=np.float64)

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
