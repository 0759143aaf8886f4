"""Which tier moves the default model's ranking away from its sequence tier's, on one ADFA-LD split?

The default model (``ImageBaseline`` as ``baseliner evaluate`` runs it) learns the split's learning traces and
scores its test traces; each window's continuous score is split into its parts: the rate tier's and the
sequence tier's tail surprise (``-log10 p`` under each tier's own calibration, as ``_combined_surprise``
computes them) and what the exact tier adds (novel syscalls).  A trace's part is the call-weighted mean of its
windows' (as its score is).  Over every (normal, attack) pair of test traces: the pairs the model orders
wrongly that the sequence tier's surprise alone orders rightly ("lost") and the reverse ("won"), and in each
the mean gap (normal minus attack) of every part.  Reads the test split: a diagnosis, never a way to choose.

    .venv/bin/python bench/tier_attribution.py validation-half 1
    .venv/bin/python bench/tier_attribution.py standard

``bursts`` instead learns the first 80% of ``Training_Data_Master`` (as a cross-validation fold does) and
compares the tiers' scores of the other 20%'s windows with those of a window of 100 calls of one syscall (the
six most frequent): can the rate tier see a flood of one call on this data?  Reads the training traces only.

    .venv/bin/python bench/tier_attribution.py bursts
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baseliner.models.evaluate import crossval, splits  # noqa: E402
from baseliner.models.evaluate.adfa import load_adfa  # noqa: E402
from baseliner.models.evaluate.metrics import summarise  # noqa: E402
from baseliner.models.evaluate.run import AdfaData  # noqa: E402
from baseliner.models.evaluate.scorers import RATE_TIER, SEQUENCE_TIER, PipelineScorer, trace_scores  # noqa: E402
from baseliner.models.evaluate.windows import DEFAULT_CALLS_PER_WINDOW  # noqa: E402


def fisher4(decades: np.ndarray) -> np.ndarray:
    """``-log10 P(chi2_4 >= 2 ln(10) d)``, as ``_combined_surprise`` computes it."""
    x = math.log(10.0) * decades
    return (x - np.log1p(np.maximum(x, 0.0))) / math.log(10.0)


def gaps(mask: np.ndarray, parts: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    i, j = np.nonzero(mask)
    return ", ".join(f"{name} {np.mean(n[i] - a[j]):+.3f}" for name, (n, a) in parts.items())


def _learnt(traces: list[tuple[str, ...]]) -> PipelineScorer:
    scorer = PipelineScorer()
    vs = crossval._vectors(traces, DEFAULT_CALLS_PER_WINDOW)[0]
    for i in range(0, len(vs), 2048):
        scorer.learn(vs[i : i + 2048])
    scorer.freeze()
    return scorer


def bursts() -> None:
    train = [t.calls for t in load_adfa(None, splits=("train",))]
    cut = len(train) * 4 // 5
    scorer = _learnt(train[:cut])
    held = crossval._vectors(train[cut:], DEFAULT_CALLS_PER_WINDOW)[0]
    tiers, score = scorer.tiers(held), scorer.score(held)
    q = (0.5, 0.9, 0.99)
    print(f"{cut} learning traces; {len(held)} held-out normal windows: rate tier quantiles {q} "
          f"{np.round(np.quantile(tiers[RATE_TIER], q), 2).tolist()}, sequence "
          f"{np.round(np.quantile(tiers[SEQUENCE_TIER], q), 2).tolist()}, "
          f"model {np.round(np.quantile(score, q), 1).tolist()}")
    profile = scorer.baseline.steady
    print(f"tail scales (score units per e-fold): rate {profile.threshold._scale:.2f}, sequence "
          f"{profile.seq_threshold._scale:.2f} nats/gram")
    for call, _ in Counter(c for t in train[:cut] for c in t).most_common(6):
        one = crossval._vectors([(call,) * DEFAULT_CALLS_PER_WINDOW], DEFAULT_CALLS_PER_WINDOW)[0]
        t = scorer.tiers(one)
        print(f"  {DEFAULT_CALLS_PER_WINDOW} x {call}: rate tier {t[RATE_TIER][0]:.2f}, sequence tier "
              f"{t[SEQUENCE_TIER][0]:.2f}, model {scorer.score(one)[0]:.1f}")


def main() -> None:
    if sys.argv[1:2] == ["bursts"]:
        return bursts()
    family = sys.argv[1] if len(sys.argv) > 1 else "standard"
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    data = AdfaData.load()
    split = splits.standard(data.traces) if family == "standard" else splits.resplit(data.traces, family, seed)
    learn, _ = data.vectors(split.learn)
    test, index = data.vectors(split.test)
    scorer = PipelineScorer()
    for i in range(0, len(learn), 2048):
        scorer.learn(learn[i : i + 2048])
    scorer.freeze()
    score, tiers, profile = scorer.score(test), scorer.tiers(test), scorer.baseline.steady
    rate_s = profile.threshold.surprise(tiers[RATE_TIER])
    seq_s = profile.seq_threshold.surprise(tiers[SEQUENCE_TIER])
    novel = score - fisher4(rate_s + seq_s)
    weights, n = scorer.weights(test), len(split.test)
    labels = np.r_[np.zeros(len(split.normal)), np.ones(len(split.attack))].astype(np.int64)
    model, rate, seq, exact = (trace_scores(a, weights, index, n) for a in (score, rate_s, seq_s, novel))
    normal, attack = labels == 0, labels == 1
    seq_scale, rate_scale = profile.seq_threshold._scale, profile.threshold._scale
    print(f"{split.name}: {len(split.learn)} learning traces; tail scales (score units per e-fold): sequence "
          f"{seq_scale:.2f} nats/gram, rate {rate_scale:.2f}")
    for name, a in (("default model", model), ("sequence surprise", seq), ("rate surprise", rate),
                    ("exact part (novel syscalls)", exact), ("sequence surprise + exact part", seq + exact)):
        print(f"  ROC AUC {name}: {summarise(labels, a).auc:.4f}")
    wrong_model = model[normal][:, None] > model[attack][None, :]
    wrong_seq = seq[normal][:, None] > seq[attack][None, :]
    parts = {"rate": (rate[normal], rate[attack]), "sequence": (seq[normal], seq[attack]),
             "exact": (exact[normal], exact[attack])}
    lost, won = wrong_model & ~wrong_seq, ~wrong_model & wrong_seq
    print(f"  (normal, attack) pairs ordered wrongly: model {wrong_model.mean():.4f}, sequence surprise "
          f"{wrong_seq.mean():.4f}; lost {lost.mean():.4f}, won {won.mean():.4f}")
    print(f"  lost pairs, mean gap normal - attack (decades): {gaps(lost, parts)}")
    print(f"  won pairs, mean gap normal - attack (decades): {gaps(won, parts)}")


if __name__ == "__main__":
    main()
