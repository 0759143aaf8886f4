"""Choose the n-gram detector's settings by cross-validation inside ADFA-LD's training data only.

``Validation_Data_Master`` and ``Attack_Data_Master`` are never read here.  The 833 training traces are
split into 5 folds; for each fold the detector learns the other four and scores

* the fold's traces as they are (normal), and
* the same traces with a foreign segment spliced in at a random point (synthetic intrusions): 20% of
  the trace's length, taken half of the time from another held-out trace (code of another program
  running inside this one) and half of the time drawn call by call from the training call frequencies
  (familiar calls in an unfamiliar order).

Settings are ranked by the mean over folds of ROC AUC + DR at 5% FPR on that task.

``--likelihood`` instead picks the smoothing ``alpha`` of the default detector (order-4 grams, mean
surprise) the way a language model's smoothing is picked: the value that gives the held-out normal traces
the highest likelihood (lowest mean surprise per gram), averaged over the folds.  No anomalies needed.

    .venv/bin/python bench/evaluate_cv.py [--adfa PATH] [--likelihood] [--out cv.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baseliner.models.detectors.ngram_likelihood import NgramDetector, dicts_to_matrix  # noqa: E402
from baseliner.models.evaluate.adfa import load_adfa  # noqa: E402
from baseliner.models.evaluate.metrics import summarise  # noqa: E402
from baseliner.models.evaluate.scorers import trace_scores  # noqa: E402
from baseliner.models.evaluate.windows import count_windows  # noqa: E402

WINDOWS = (50, 100, 200)
TAILS = (1.0, 0.5, 0.25, 0.1)
ALPHAS = (0.01, 0.1, 1.0)
ORDER_WEIGHTS = ((0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 1.0))


def splice(calls: tuple[str, ...], donor: tuple[str, ...], unigram: tuple[list[str], list[float]],
           rng: random.Random) -> tuple[str, ...]:
    n = max(10, len(calls) // 5)
    if rng.random() < 0.5 and len(donor) > n:
        s = rng.randrange(0, len(donor) - n)
        seg = list(donor[s : s + n])
    else:
        seg = rng.choices(unigram[0], weights=unigram[1], k=n)
    at = rng.randrange(0, len(calls) + 1)
    return tuple(calls[:at]) + tuple(seg) + tuple(calls[at:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adfa", default=None)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=None)
    ap.add_argument("--likelihood", action="store_true", help="choose alpha by held-out likelihood")
    args = ap.parse_args()
    if args.likelihood:
        return likelihood(args)

    traces = load_adfa(args.adfa, splits=("train",))
    rng = random.Random(args.seed)
    order = list(range(len(traces)))
    rng.shuffle(order)
    folds = [order[i :: args.folds] for i in range(args.folds)]
    results: dict[tuple, list[tuple[float, float]]] = {}
    t0 = time.perf_counter()
    for f, held in enumerate(folds):
        held_set = set(held)
        learn = [traces[i].calls for i in order if i not in held_set]
        uni = Counter(c for t in learn for c in t)
        unigram = (list(uni), [float(v) for v in uni.values()])
        normal = [traces[i].calls for i in held]
        attacked = [splice(t, normal[(k + 1) % len(normal)], unigram, rng) for k, t in enumerate(normal)]
        tests = normal + attacked
        labels = np.r_[np.zeros(len(normal)), np.ones(len(attacked))].astype(int)
        for w in WINDOWS:
            learn_m = dicts_to_matrix(ng for t in learn for _, ng in count_windows(t, w))
            rows, index = [], []
            for k, t in enumerate(tests):
                for _, ng in count_windows(t, w):
                    rows.append(ng)
                    index.append(k)
            test_m = dicts_to_matrix(rows)
            idx = np.asarray(index)
            for tail, alpha, ow in itertools.product(TAILS, ALPHAS, ORDER_WEIGHTS):
                det = NgramDetector(alpha=alpha, order_weights=ow, tail=tail)
                det.learn_many(learn_m)
                s = trace_scores(det.score_many(test_m), det.grams(test_m), idx, len(tests))
                sm = summarise(labels, s)
                results.setdefault((w, tail, alpha, ow), []).append((sm.auc, sm.dr_5))
        print(f"fold {f + 1}/{args.folds} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    table = sorted(((float(np.mean([a for a, _ in v])), float(np.mean([d for _, d in v])), k)
                    for k, v in results.items()), key=lambda r: -(r[0] + r[1]))
    print("calls_per_window tail alpha order_weights | CV AUC | CV DR@5%")
    for auc, dr, (w, tail, alpha, ow) in table:
        print(f"{w:4d} {tail:5.2f} {alpha:5.2f} {ow} | {auc:.3f} | {dr:.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(
            [{"calls_per_window": k[0], "tail": k[1], "alpha": k[2], "order_weights": k[3], "cv_auc": a,
              "cv_dr_at_5pct_fpr": d} for a, d, k in table], indent=2) + "\n")


LIKELIHOOD_ALPHAS = (0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def likelihood(args: argparse.Namespace) -> None:
    traces = load_adfa(args.adfa, splits=("train",))
    rng = random.Random(args.seed)
    order = list(range(len(traces)))
    rng.shuffle(order)
    folds = [order[i :: args.folds] for i in range(args.folds)]
    nll: dict[float, list[float]] = {a: [] for a in LIKELIHOOD_ALPHAS}
    for held in folds:
        held_set = set(held)
        learn = dicts_to_matrix(ng for i in order if i not in held_set for _, ng in count_windows(traces[i].calls))
        test = dicts_to_matrix(ng for i in held for _, ng in count_windows(traces[i].calls))
        for a in LIKELIHOOD_ALPHAS:
            det = NgramDetector(alpha=a)
            det.learn_many(learn)
            s, w = det.score_many(test), det.grams(test)
            nll[a].append(float(s @ w / w.sum()))
    print("alpha | held-out surprise per 4-gram (nats), mean over folds")
    for a in LIKELIHOOD_ALPHAS:
        print(f"{a:6g} | {np.mean(nll[a]):.4f}")
    best = min(LIKELIHOOD_ALPHAS, key=lambda a: float(np.mean(nll[a])))
    print(f"best alpha: {best}")
    if args.out:
        Path(args.out).write_text(json.dumps({"held_out_nll": {str(a): float(np.mean(v)) for a, v in nll.items()},
                                              "best_alpha": best}, indent=2) + "\n")


if __name__ == "__main__":
    main()
