"""Sequence tier of a baseline: order-4 likelihood plus a bounded penalty for never-seen order-6 contexts."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from baseliner.models.block import csr_take, segment_sums
from baseliner.models.detectors.gram_novelty import GramNoveltyDetector
from baseliner.models.detectors.ngram_likelihood import NgramDetector
from baseliner.models.ngrams import SHORT_BUCKETS
from river import base

__all__ = ["SequenceTier", "StackedSequence"]


@dataclass
class StackedSequence:
    """Scores of a block's windows, each against its own tier (:meth:`SequenceTier.score_stacked`).

    ``score`` is each window's sequence score, ``unseen`` the share of its order-6 grams its tier never
    saw, ``has_grams`` whether it has any n-gram entry.  The rest is what
    :meth:`SequenceTier.learn_stacked` needs: the windows sorted by tier (``order``, ``None`` when they
    were) and their tiers (``which``, sorted), and the entries worth learning, sorted the
    same way: the short orders' (``short_*``; window ``k``'s are ``[short_ptr[k], short_ptr[k + 1])``,
    tier ``t``'s ``[short_bounds[t], short_bounds[t + 1])``) and the order-6 ones the tier never saw
    (``new_*``; ``new_rows`` are sorted window indices).
    """

    score: np.ndarray
    unseen: np.ndarray
    has_grams: np.ndarray
    order: np.ndarray | None
    which: np.ndarray
    short_ptr: np.ndarray
    short_cols: np.ndarray
    short_counts: np.ndarray
    short_bounds: np.ndarray
    new_rows: np.ndarray
    new_cols: np.ndarray
    new_counts: np.ndarray


class SequenceTier(base.AnomalyDetector):
    """Mean surprise of a window's order-4 grams plus a saturating penalty for its unseen order-6 grams.

    The tier holds two detectors over the sensor's hashed n-gram counts (``docs/ngram-spec.md``):
    :class:`~baseliner.models.detectors.ngram_likelihood.NgramDetector` (the image's order-4 language model;
    ``s``, the window's mean surprise in nats per gram) and
    :class:`~baseliner.models.detectors.gram_novelty.GramNoveltyDetector` (which order-6 buckets the image
    has shown; ``u``, the share of the window's order-6 grams never seen).  A window scores

        score = s + unseen_nats * u^2 / (u^2 + unseen_scale^2),

    in nats per gram: every gram of a window whose length-6 contexts are largely new pays up to
    ``unseen_nats`` more.  The penalty is an S-curve in ``u``: half of ``unseen_nats`` at ``u =
    unseen_scale``, almost nothing for a few new contexts in a busy window (1% of ``unseen_nats`` at a
    tenth of ``unseen_scale``: rare but normal paths do not alarm on their own), and it *saturates*: a
    window with a share of new contexts well above ``unseen_scale`` pays most of it (with the default
    scale of 0.2: 86% at a share of 0.5, 96% at 1).

    Why saturate: the baseline calibrates the tier's threshold (``baseliner.models.threshold.TailThreshold``) on
    the scores of its learning windows, each scored before it is learnt, by extrapolating from the
    spacing of their 99th and 99.9th percentiles.  An image whose learning keeps meeting new contexts
    (ADFA-LD's 833 training traces of many programs; any young model) has many such windows in that
    tail.  With a linear penalty (``unseen_nats * u``) they spread over the whole range up to
    ``unseen_nats``, the spacing is wide, and the threshold lands above anything a window can score: on
    ADFA-LD 173 nats/gram with 128 nats per unit share (at most about 139 reachable), so no window came
    near it.
    Saturated, they pile up just under ``unseen_nats`` plus their order-4 surprise, the spacing is that
    of the surprise, and the threshold sits at the top of that plateau: a window with a large share of
    new contexts comes within reach of it (about 0.9 of it) and alarms when its surprise is high or
    another tier adds to it.  An image whose learning windows almost never show new contexts (a steady
    server) keeps its threshold on the order-4 scale, and a window with new contexts alarms on this tier
    alone.  In between, when such windows are rarer than the lower anchor's tail but commoner than the
    upper one's (with 2,000 scores or more: roughly 0.1-1% of the learning windows), the lower anchor is
    on the order-4 scale and the upper one on the plateau, and the extrapolated threshold lands far
    above both: the tier then ranks windows but does not alarm on them.  (Synthetic loops with 0%,
    0.05%, 0.5% and 3% of 3,000 learning windows half new: threshold 5.8, 5.9, 393 and 125 nats/gram;
    ``tests/test_models_sequence_tier.py`` checks the 3% case against a linear penalty.)

    Settings (``BaselineConfig.ngram_alpha``, ``sequence_unseen_nats``, ``sequence_unseen_scale``) were
    chosen by cross-validation inside ADFA-LD's training data (``bench/choose_settings.py``;
    ``docs/evaluation.md``).  ``unseen_nats = 0`` is the order-4 likelihood alone.

    Windows are given as flat CSR entries of many tiers' windows at once (:meth:`score_stacked`,
    :meth:`learn_stacked`, the service's path), as dicts of bucket index -> count (``learn_one`` /
    ``score_one``, ``FeatureVector.ngrams``) or as a ``scipy.sparse`` / dense matrix of shape
    ``(n, NUM_BUCKETS)`` (``learn_many`` / ``score_many``); each of the two detectors scores and learns
    one way, whatever the form.  State: the order-4 model's counts (96 KiB
    as float64, stored as float32) and the 8 KiB order-6 bitset, through :meth:`to_arrays` /
    :meth:`load_arrays` (no pickle).

    Parameters
    ----------
    alpha
        Additive smoothing of the order-4 model (:class:`~baseliner.models.detectors.ngram_likelihood.NgramDetector`).
    unseen_nats
        The most a window's unseen order-6 grams add to its score (nats per gram); 0 turns them off.
    unseen_scale
        The share of unseen order-6 grams at which the penalty reaches half of ``unseen_nats``.

    Examples
    --------
    >>> from baseliner.models.ngrams import ngram_counts
    >>> tier = SequenceTier()
    >>> loop = ["epoll_wait", "read", "write", "close"] * 25
    >>> for _ in range(20):
    ...     tier.learn_one(ngram_counts(loop))
    >>> normal = tier.score_one(ngram_counts(loop))
    >>> shell = ngram_counts(loop[:60] + ["read", "clone", "execve", "dup2", "dup2", "connect"] * 5)
    >>> round(tier.novelty.score_one(shell), 2)  # a third of its length-6 contexts are new
    0.35
    >>> normal < 4.0 < 90.0 < tier.score_one(shell) < tier.unseen_nats
    True
    >>> restored = SequenceTier.from_arrays(tier.to_arrays())
    >>> restored.score_one(ngram_counts(loop)) == normal
    True
    """

    def __init__(self, alpha: float = 3.0, unseen_nats: float = 128.0, unseen_scale: float = 0.2) -> None:
        self.alpha = alpha
        self.unseen_nats = unseen_nats
        self.unseen_scale = unseen_scale
        if not (unseen_nats >= 0 and math.isfinite(unseen_nats)):
            raise ValueError(f"unseen_nats must be a finite number >= 0, got {unseen_nats}")
        if not (unseen_scale > 0 and math.isfinite(unseen_scale)):
            raise ValueError(f"unseen_scale must be a finite number > 0, got {unseen_scale}")
        self.likelihood = NgramDetector(alpha=alpha)
        self.novelty = GramNoveltyDetector()

    # -- model ----------------------------------------------------------------------------------

    @property
    def windows_learned(self) -> int:
        return self.likelihood.windows_learned

    def penalty(self, unseen: np.ndarray) -> np.ndarray:
        """What a share of unseen order-6 grams adds to a window's score (nats per gram)."""
        return _penalty(np.asarray(unseen, dtype=np.float64), self.unseen_nats, self.unseen_scale)

    # -- many tiers at once: the implementation (the service's path) -------------------------------

    @staticmethod
    def score_stacked(
        tiers: Sequence[SequenceTier], ptr: np.ndarray, cols: np.ndarray, counts: np.ndarray, which: np.ndarray
    ) -> StackedSequence:
        """Score windows, each against its own tier: window ``k``'s entries are ``[ptr[k], ptr[k + 1])`` of
        ``cols`` / ``counts`` (valid global buckets, finite counts >= 0: ``baseliner.models.validate``
        guarantees it) and its tier is ``tiers[which[k]]``.

        One set of NumPy operations for all tiers (:meth:`NgramDetector.score_stacked` on the short orders'
        entries, :meth:`GramNoveltyDetector.score_stacked` on all of them).  Windows already sorted by tier
        (the service sends each image's together) are not copied.

        >>> from baseliner.models.ngrams import ngram_counts
        >>> a, b = SequenceTier(), SequenceTier()
        >>> loop = ngram_counts(["epoll_wait", "read", "write", "close"] * 25)
        >>> a.learn_one(loop)
        >>> cols = np.array(list(loop)); counts = np.array(list(loop.values()), dtype=float)
        >>> both = SequenceTier.score_stacked([a, b], np.array([0, len(cols), 2 * len(cols)]), np.tile(cols, 2),
        ...                                   np.tile(counts, 2), np.array([0, 1]))
        >>> # b has seen nothing: log(4096) = 8.32 nats/gram, plus 128 / (1 + 0.2²) for contexts all new
        >>> both.score.round(2).tolist(), both.unseen.tolist()
        ([6.12, 131.39], [0.0, 1.0])
        """
        n = len(ptr) - 1
        has_grams = ptr[1:] > ptr[:-1]
        order = None
        if n > 1 and bool((which[1:] < which[:-1]).any()):  # each tier's windows must be one run
            order = np.argsort(which, kind="stable")
            ptr, taken = csr_take(ptr, order)
            cols, counts, which = cols[taken], counts[taken], which[order]
        wb = np.searchsorted(which, np.arange(len(tiers) + 1))  # tier t: sorted windows [wb[t], wb[t + 1])
        short = (cols < SHORT_BUCKETS).nonzero()[0]
        sptr = np.searchsorted(short, ptr)  # window k: short entries [sptr[k], sptr[k + 1])
        s_cols, s_counts = cols.take(short), counts.take(short)
        score = NgramDetector.score_stacked([t.likelihood for t in tiers], which, wb, sptr, s_cols, s_counts)
        unseen, new, new_rows = GramNoveltyDetector.score_stacked(
            [t.novelty for t in tiers], wb, ptr, cols, counts, lambda: segment_sums(s_counts, sptr))
        if len(new):
            nats = np.array([tier.unseen_nats for tier in tiers])[which]
            score += _penalty(unseen, nats, np.array([tier.unseen_scale for tier in tiers])[which])
        if order is not None:  # back to the caller's window order
            score[order], unseen[order] = score.copy(), unseen.copy()
        return StackedSequence(score, unseen, has_grams, order, which, sptr, s_cols, s_counts, sptr[wb], new_rows,
                               cols.take(new), counts.take(new))

    @staticmethod
    def learn_stacked(tiers: Sequence[SequenceTier], scored: StackedSequence, learn: np.ndarray) -> None:
        """Learn the windows where ``learn`` is true of a :meth:`score_stacked` call, each into its tier
        (none of the tiers may have learnt since)."""
        if scored.order is not None:
            learn, has_grams = learn[scored.order], scored.has_grams[scored.order]
        else:
            has_grams = scored.has_grams
        which = scored.which
        learnt = np.bincount(which[learn & has_grams], minlength=len(tiers))
        if learn.all():  # (the usual block: every window learnt)
            cols, counts, kb = scored.short_cols, scored.short_counts, scored.short_bounds
        else:
            keep = learn.repeat(scored.short_ptr[1:] - scored.short_ptr[:-1]).nonzero()[0]
            cols, counts = scored.short_cols.take(keep), scored.short_counts.take(keep)
            kb = np.searchsorted(keep, scored.short_bounds)
        new_keep = learn[scored.new_rows] & (scored.new_counts > 0)
        new_rows, new_cols = scored.new_rows[new_keep], scored.new_cols[new_keep]
        new_tier = which[new_rows]
        for t in learnt.nonzero()[0].tolist():
            a, b = kb[t], kb[t + 1]
            tiers[t].likelihood.learn_entries(cols[a:b], counts[a:b], int(learnt[t]))
            tiers[t].novelty.learn_new(new_cols[new_tier == t] if len(new_cols) else new_cols, int(learnt[t]))

    # -- River contract, and batches: each part's own -------------------------------------------------

    def learn_one(self, x: dict) -> None:
        self.likelihood.learn_one(x)
        self.novelty.learn_one(x)

    def score_one(self, x: dict) -> float:
        score = self.likelihood.score_one(x)
        if self.unseen_nats > 0:
            score += float(self.penalty(np.array([self.novelty.score_one(x)]))[0])
        return score

    def learn_many(self, X: Any) -> None:
        self.likelihood.learn_many(X)
        self.novelty.learn_many(X)

    def score_many(self, X: Any) -> np.ndarray:
        out: np.ndarray = self.likelihood.score_many(X)
        if self.unseen_nats > 0:
            out = out + self.penalty(self.novelty.score_many(X))
        return out

    def grams(self, X: Any) -> np.ndarray:
        """Order-4 gram count of each row (the weight of a window in a trace's mean)."""
        return self.likelihood.grams(X)

    # -- persistence (no pickle) ---------------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        lik, nov = self.likelihood.to_arrays(), self.novelty.to_arrays()
        return {"counts": lik["counts"].astype(np.float32), "windows": lik["windows"], "seen": nov["seen"]}

    def load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore state written by :meth:`to_arrays` (``ValueError`` if it does not fit)."""
        windows = np.asarray(arrays["windows"])
        self.likelihood.load_arrays({"counts": arrays["counts"], "windows": windows})
        self.novelty.load_arrays({"seen": arrays["seen"], "windows": windows})

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], **params: Any) -> SequenceTier:
        tier = cls(**params)
        tier.load_arrays(arrays)
        return tier

    @classmethod
    def _unit_test_params(cls) -> Any:
        yield {}
        yield {"alpha": 1.0, "unseen_nats": 0.0}


def _penalty(unseen: np.ndarray, nats: Any, scale: Any) -> np.ndarray:
    """``nats x u² / (u² + scale²)`` of each share ``u`` of unseen order-6 grams."""
    u2 = np.square(unseen)
    return nats * u2 / (u2 + np.square(scale))
