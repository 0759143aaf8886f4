"""Choose the default model's settings by cross-validation inside the learning traces only.

The learning traces are ADFA-LD's ``Training_Data_Master`` (the standard split's), or those listed in
``--learn FILE`` (one a line, as ``baseliner evaluate adfa-ld --learn`` takes them), or those of one of
``baseliner evaluate``'s re-splits (``--resplit training+validation-half:1``).  Test and attack
traces are never read.  Candidates are the default model (``ImageBaseline`` exactly as ``baseliner
evaluate`` runs it) with every combination of the ``--grid`` values (a joint grid, for settings that
interact); each is measured on synthetic intrusions spliced into held-out learning traces
(``baseliner.models.evaluate.crossval``, ``baseliner.models.evaluate.intrusions``).

    .venv/bin/python bench/choose_settings.py --grid sequence_unseen_nats=0,64,128 \\
        --grid sequence_unseen_scale=0.1,0.2 [--folds 5] [--nested 5] [--out cv.json]

``--nested K`` adds a nested cross-validation (K outer folds, ``--folds`` inner ones): the estimate of
the whole choice on traces it never saw, and which candidate each outer fold chose (a stable choice is
the same in every fold).  Rules (``--max-normal-flagged``, ``--reference LABEL``): see
``crossval.choose``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baseliner.models.baseline import BaselineConfig  # noqa: E402
from baseliner.models.evaluate import crossval, splits  # noqa: E402
from baseliner.models.evaluate.adfa import load_adfa  # noqa: E402
from baseliner.models.evaluate.intrusions import KINDS  # noqa: E402
from baseliner.models.evaluate.windows import DEFAULT_CALLS_PER_WINDOW  # noqa: E402


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``name=v1,v2`` per item, values typed like the ``BaselineConfig`` field."""
    defaults = BaselineConfig().to_dict()
    axes: dict[str, list[Any]] = {}
    for item in items:
        name, _, values = item.partition("=")
        if name not in defaults or not values:
            raise SystemExit(f"--grid {item!r}: expected NAME=V1,V2,... with NAME a BaselineConfig setting")
        kind = type(defaults[name])
        axes[name] = [kind(v) for v in values.split(",")]
    return axes


def learning_traces(adfa: str | None, learn: str | None, resplit: str | None = None) -> list[tuple[str, ...]]:
    if learn is None and resplit is None:
        return [t.calls for t in load_adfa(adfa, splits=("train",))]
    traces = load_adfa(adfa)
    if resplit is not None:
        family, _, seed = resplit.partition(":")
        if family not in splits.FAMILIES or not seed.isdigit():
            raise SystemExit(f"--resplit {resplit!r}: expected FAMILY:SEED, FAMILY one of {', '.join(splits.FAMILIES)}")
        return [traces[i].calls for i in splits.resplit(traces, family, int(seed)).learn]
    assert learn is not None
    return [traces[i].calls for i in splits.listed(traces, learn, "learn")]


def row_json(row: crossval.Row) -> dict[str, Any]:
    return {"label": row.candidate.label, "settings": row.candidate.settings, "mean": row.mean,
            "separation": crossval.separation(row), "folds": row.folds}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--adfa", default=None, help="ADFA-LD.zip (default: the shared datasets folder)")
    ap.add_argument("--learn", default=None, help="learning traces, one a line (default Training_Data_Master)")
    ap.add_argument("--resplit", default=None, metavar="FAMILY:SEED",
                    help="the learning traces of a re-split of baseliner evaluate (for example "
                         "training+validation-half:1); its test traces are never read")
    ap.add_argument("--grid", action="append", default=[], help="NAME=V1,V2,... (repeat; joint grid)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--nested", type=int, default=0, help="outer folds of a nested cross-validation (0: none)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--share", type=float, default=0.2, help="foreign segment length, share of the trace")
    ap.add_argument("--calls-per-window", type=int, default=DEFAULT_CALLS_PER_WINDOW)
    ap.add_argument("--max-normal-flagged", type=float, default=None)
    ap.add_argument("--reference", default=None, help="label of the candidate whose alarm separation to match")
    ap.add_argument("--above-tiers", action="store_true",
                    help="choose only a candidate at least as good as each of its tiers alone (CV AUC and DR@5%%)")
    ap.add_argument("--out", default=None, help="write the table (and the nested result) as JSON here")
    args = ap.parse_args()

    traces = learning_traces(args.adfa, args.learn, args.resplit)
    candidates = crossval.config_candidates(crossval.grid(**parse_grid(args.grid)))
    print(f"{len(traces)} learning traces, {len(candidates)} candidates, {args.folds} folds", flush=True)
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        print(msg, flush=True)

    rows = crossval.cross_validate(traces, candidates, args.folds, args.seed, args.share, args.calls_per_window, say)
    kinds = "/".join(KINDS) + " AUC"
    print(f"\n| candidate | CV AUC | CV DR@5% | best tier alone AUC / DR@5% | {kinds} | normal windows flagged "
          "| foreign windows flagged |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        m = r.mean
        per_kind = "/".join(f"{m.get(f'{k}_auc', np.nan):.3f}" for k in KINDS)
        tier_auc, tier_dr = crossval.best_tier(r)
        print(f"| {r.candidate.label} | {m['auc']:.4f} | {m['dr_5']:.4f} | {tier_auc:.4f} / {tier_dr:.4f} | "
              f"{per_kind} | {m['normal_windows_flagged']:.4f} | {m['foreign_windows_flagged']:.4f} |")
    tiers = sorted({k.rsplit(" ", 1)[0] for k in rows[0].mean if k.endswith(" auc")})
    for t in tiers:
        per_kind = "/".join(f"{rows[0].mean.get(f'{t} {k}_auc', np.nan):.3f}" for k in KINDS)
        print(f"| {t} | {rows[0].mean[f'{t} auc']:.4f} | {rows[0].mean[f'{t} dr_5']:.4f} | | {per_kind} | | |")
    chosen = crossval.choose(rows, args.max_normal_flagged, args.reference, args.above_tiers)
    print(f"\nchosen: {chosen.candidate.label} ({time.perf_counter() - t0:.0f} s)")
    result: dict[str, Any] = {"traces": len(traces), "folds": args.folds, "seed": args.seed, "share": args.share,
                              "rules": {"max_normal_flagged": args.max_normal_flagged, "reference": args.reference,
                                        "above_tiers": args.above_tiers},
                              "chosen": chosen.candidate.label, "table": [row_json(r) for r in rows]}
    if args.nested:
        outer = crossval.nested(traces, candidates, args.nested, args.folds, args.seed, args.share,
                                args.calls_per_window, args.max_normal_flagged, args.reference, args.above_tiers,
                                say)
        for name in ("", *(f"{t} " for t in tiers)):
            aucs = [o.figures[f"{name}auc"] for o in outer]
            drs = [o.figures[f"{name}dr_5"] for o in outer]
            print(f"nested estimate, {name or 'the chosen model '}: AUC {np.mean(aucs):.4f} ± "
                  f"{np.std(aucs, ddof=1):.4f}, DR@5% {np.mean(drs):.4f} ± {np.std(drs, ddof=1):.4f}")
        print("choices: " + ", ".join(o.chosen.candidate.label for o in outer))
        result["nested"] = [{"chosen": o.chosen.candidate.label, "figures": o.figures} for o in outer]
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
