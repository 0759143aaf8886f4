"""Choose the default model's sequence-tier settings by cross-validation inside ADFA-LD's training data only.

``Validation_Data_Master`` and ``Attack_Data_Master`` are never read here.  The 833 training traces are
split into 5 folds (seeded).  For each fold and candidate setting, the default model exactly as
``baseliner evaluate adfa-ld`` runs it (``PipelineScorer``: ``ImageBaseline.process``, 100-call windows,
``Verdict.score``, a trace scoring the call-weighted mean of its windows) learns the other four folds in
arrival order, is frozen, and scores

* the fold's traces as they are (normal), and
* one copy of each with a foreign segment of 20% of its length spliced in at a random point (synthetic
  intrusions), of three kinds in turn:

  - ``donor``: a stretch of another held-out trace (another program's code running inside this one);
  - ``markov``: calls drawn from the order-1 Markov chain of the learning folds, starting from the call
    before the splice point (every adjacent pair is familiar; longer contexts mostly are not);
  - ``unigram``: calls drawn independently from the learning folds' call frequencies.

Candidates are ``BaselineConfig.sequence_unseen_nats`` x ``sequence_unseen_scale`` (``--nats``,
``--scales``); ``sequence_unseen_nats = 0`` is the order-4 likelihood alone (the model before n-gram spec
v2).  Settings are ranked by the mean over folds of ROC AUC + DR at 5% FPR on all intrusions together.
Printed beside them: the same per intrusion kind, and what the setting costs and catches at the
service's own threshold: the share of held-out normal windows flagged, and of *foreign* windows (windows
of an attacked trace that hold calls of the spliced segment) flagged.

The rule that picks the default (``chosen``): the best-ranked setting whose alarms at the service's own
threshold separate at least as well as those of the order-4 likelihood alone (``unseen_nats`` 0), measured
as the share of foreign windows flagged minus the share of held-out normal windows flagged: better
ranking, without a sequence tier whose alarms are worse than those of the tier it replaces.

    .venv/bin/python bench/evaluate_sequence_cv.py [--adfa PATH] [--folds 5] [--out cv-sequence.json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baseliner.models.block import VectorBlock  # noqa: E402
from baseliner.models.evaluate.adfa import load_adfa  # noqa: E402
from baseliner.models.evaluate.metrics import summarise  # noqa: E402
from baseliner.models.evaluate.scorers import PipelineScorer, trace_scores  # noqa: E402
from baseliner.models.evaluate.windows import count_vectors  # noqa: E402
from baseliner.models.vector import FeatureVector, Identity  # noqa: E402

NATS = (0.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)
SCALES = (0.05, 0.1, 0.2, 0.3, 0.4, 1.0)
KINDS = ("donor", "markov", "unigram")

Calls = tuple[str, ...]


class Intruder:
    """Makes the synthetic intrusions from the learning folds' statistics (seeded)."""

    def __init__(self, learn: Sequence[Calls], rng: random.Random) -> None:
        self.rng = rng
        uni = Counter(c for t in learn for c in t)
        self.unigram = (list(uni), [float(v) for v in uni.values()])
        pairs: dict[str, Counter[str]] = defaultdict(Counter)
        for t in learn:
            for a, b in zip(t, t[1:], strict=False):
                pairs[a][b] += 1
        self.next = {a: (list(c), [float(v) for v in c.values()]) for a, c in pairs.items()}

    def segment(self, kind: str, n: int, before: str | None, donor: Calls) -> list[str]:
        rng = self.rng
        if kind == "donor" and len(donor) > n:
            s = rng.randrange(0, len(donor) - n)
            return list(donor[s : s + n])
        if kind == "markov":
            out: list[str] = []
            prev = before
            for _ in range(n):
                options = self.next.get(prev) if prev is not None else None
                if not options:
                    prev = rng.choices(self.unigram[0], weights=self.unigram[1])[0]
                else:
                    prev = rng.choices(options[0], weights=options[1])[0]
                out.append(prev)
            return out
        return rng.choices(self.unigram[0], weights=self.unigram[1], k=n)

    def splice(self, calls: Calls, kind: str, donor: Calls, share: float = 0.2) -> tuple[Calls, int, int]:
        """``calls`` with a foreign segment inserted, and the segment's first and last-plus-one positions."""
        n = max(10, int(len(calls) * share))
        at = self.rng.randrange(0, len(calls) + 1)
        seg = self.segment(kind, n, calls[at - 1] if at > 0 else None, donor)
        return tuple(calls[:at]) + tuple(seg) + tuple(calls[at:]), at, at + len(seg)


def vectors_of(traces: Sequence[Calls], calls_per_window: int = 100) -> tuple[list[FeatureVector], np.ndarray]:
    """Windows of each trace as ``baseliner evaluate`` cuts them, and the trace index of each window."""
    out: list[FeatureVector] = []
    index: list[int] = []
    clock = 1.7e9
    for i, calls in enumerate(traces):
        ident = Identity(node="adfa-ld", container_id=f"t{i}", image_repository="adfa-ld")
        vs = count_vectors(calls, ident, clock, calls_per_window)
        clock += len(vs) + 10.0
        out.extend(vs)
        index.extend([i] * len(vs))
    return out, np.asarray(index, dtype=np.int64)


def run_setting(config: dict[str, Any], learn_vecs: list[FeatureVector], test_vecs: list[FeatureVector]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Window scores, alarms and trace weights of the default model with ``config``."""
    scorer = PipelineScorer(**config)
    for i in range(0, len(learn_vecs), 2048):
        scorer.learn(learn_vecs[i : i + 2048])
    scorer.freeze()
    scores, alarms = [], []
    for i in range(0, len(test_vecs), 256):
        v = scorer.baseline.process_block(VectorBlock.from_vectors(test_vecs[i : i + 256]))
        scores.append(v.score)
        alarms.append(v.anomalous)
    return np.concatenate(scores), np.concatenate(alarms), scorer.weights(test_vecs)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--adfa", default=None)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--nats", default=",".join(f"{v:g}" for v in NATS), help="sequence_unseen_nats candidates")
    ap.add_argument("--scales", default=",".join(f"{v:g}" for v in SCALES), help="sequence_unseen_scale candidates")
    ap.add_argument("--share", type=float, default=0.2, help="length of the foreign segment, share of the trace")
    ap.add_argument("--out", default=None, help="write the table as JSON here")
    args = ap.parse_args()
    nats = [float(v) for v in args.nats.split(",")]
    scales = [float(v) for v in args.scales.split(",")]
    settings = [(0.0, scales[0])] if 0.0 in nats else []
    settings += [(k, s) for k in nats if k > 0 for s in scales]

    traces = load_adfa(args.adfa, splits=("train",))
    rng = random.Random(args.seed)
    order = list(range(len(traces)))
    rng.shuffle(order)
    folds = [sorted(order[i :: args.folds]) for i in range(args.folds)]
    # per setting and fold: AUC, DR@5%, (AUC, DR@5%) per kind, normal and foreign windows flagged
    results: dict[tuple[float, float], list[list[float]]] = {s: [] for s in settings}
    t0 = time.perf_counter()
    for f, held in enumerate(folds):
        held_set = set(held)
        learn = [traces[i].calls for i in range(len(traces)) if i not in held_set]
        intruder = Intruder(learn, rng)
        normal = [traces[i].calls for i in held]
        kinds = [KINDS[k % len(KINDS)] for k in range(len(normal))]
        spliced = [intruder.splice(t, kinds[k], normal[(k + 1) % len(normal)], args.share)
                   for k, t in enumerate(normal)]
        attacked = [t for t, _, _ in spliced]
        tests = normal + attacked
        labels = np.r_[np.zeros(len(normal)), np.ones(len(attacked))].astype(int)
        trace_kind = np.array([""] * len(normal) + kinds, dtype=object)
        learn_vecs, _ = vectors_of(learn)
        test_vecs, index = vectors_of(tests)
        normal_windows = index < len(normal)
        # windows of an attacked trace that hold some of the foreign segment's calls
        position = np.arange(len(index)) - np.searchsorted(index, index)  # window number within its trace
        first = np.array([0] * len(normal) + [a for _, a, _ in spliced])[index]
        last = np.array([0] * len(normal) + [b for _, _, b in spliced])[index]
        foreign = ~normal_windows & (position * 100 < last) & ((position + 1) * 100 > first)
        for setting in settings:
            config = {"sequence_unseen_nats": setting[0], "sequence_unseen_scale": setting[1]}
            scores, alarms, weights = run_setting(config, learn_vecs, test_vecs)
            ts = trace_scores(scores, weights, index, len(tests))
            sm = summarise(labels, ts)
            row = [sm.auc, sm.dr_5]
            for kind in KINDS:
                keep = (labels == 0) | (trace_kind == kind)
                k_sm = summarise(labels[keep], ts[keep])
                row += [k_sm.auc, k_sm.dr_5]
            row += [float(alarms[normal_windows].mean()), float(alarms[foreign].mean())]
            results[setting].append(row)
        print(f"fold {f + 1}/{args.folds} done ({time.perf_counter() - t0:.0f} s)", flush=True)

    table = sorted(((np.mean(rows, axis=0), s) for s, rows in results.items()), key=lambda r: -(r[0][0] + r[0][1]))
    head = "unseen_nats unseen_scale | CV AUC | CV DR@5% | " + " | ".join(f"{k} AUC/DR@5%" for k in KINDS)
    print(head + " | normal windows flagged | foreign windows flagged")
    for m, (k, s) in table:
        kinds_txt = " | ".join(f"{m[2 + 2 * j]:.4f}/{m[3 + 2 * j]:.4f}" for j in range(len(KINDS)))
        print(f"{k:6g} {s:6g} | {m[0]:.4f} | {m[1]:.4f} | {kinds_txt} | {m[-2]:.4f} | {m[-1]:.4f}")
    best = table[0][1]
    print(f"best ranked: sequence_unseen_nats={best[0]:g} sequence_unseen_scale={best[1]:g}")
    reference = next((m for m, s in table if s[0] == 0.0), None)
    if reference is not None:
        margin = reference[-1] - reference[-2]
        fit = [s for m, s in table if m[-1] - m[-2] >= margin]
        print(f"chosen: sequence_unseen_nats={fit[0][0]:g} sequence_unseen_scale={fit[0][1]:g} (best ranked of the "
              f"settings flagging a share of foreign windows at least {margin:.4f} above that of normal windows)")
    if args.out:
        rows_out = []
        for m, (k, s) in table:
            row: dict[str, float] = {"sequence_unseen_nats": k, "sequence_unseen_scale": s, "cv_auc": float(m[0]),
                                     "cv_dr_at_5pct_fpr": float(m[1])}
            for j, kind in enumerate(KINDS):
                row[f"{kind}_auc"], row[f"{kind}_dr_at_5pct_fpr"] = float(m[2 + 2 * j]), float(m[3 + 2 * j])
            row["normal_windows_flagged"], row["foreign_windows_flagged"] = float(m[-2]), float(m[-1])
            rows_out.append(row)
        Path(args.out).write_text(json.dumps({"folds": args.folds, "seed": args.seed, "share": args.share,
                                              "table": rows_out}, indent=2)
                                  + "\n")


if __name__ == "__main__":
    main()
