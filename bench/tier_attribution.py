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
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baseliner.models.evaluate import splits  # noqa: E402
from baseliner.models.evaluate.metrics import summarise  # noqa: E402
from baseliner.models.evaluate.run import AdfaData  # noqa: E402
from baseliner.models.evaluate.scorers import RATE_TIER, SEQUENCE_TIER, PipelineScorer, trace_scores  # noqa: E402


def fisher4(decades: np.ndarray) -> np.ndarray:
    """``-log10 P(chi2_4 >= 2 ln(10) d)``, as ``_combined_surprise`` computes it."""
    x = math.log(10.0) * decades
    return (x - np.log1p(np.maximum(x, 0.0))) / math.log(10.0)


def gaps(mask: np.ndarray, parts: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    i, j = np.nonzero(mask)
    return ", ".join(f"{name} {np.mean(n[i] - a[j]):+.3f}" for name, (n, a) in parts.items())


def main() -> None:
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
