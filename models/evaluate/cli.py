"""``baseliner evaluate``: ``adfa-ld``, ``lid-ds PATH``, ``recording PATH``; a report folder per run."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from baseliner.models.evaluate.adfa import DatasetError
from baseliner.models.evaluate.splits import FAMILIES
from baseliner.models.evaluate.windows import DEFAULT_CALLS_PER_WINDOW
from baseliner.sensor.cli_checks import examples

log = logging.getLogger(__name__)

def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "evaluate", help="measure detection on labelled data (ADFA-LD, LID-DS, recordings)",
        description="Run the models the service uses over labelled data, in one pass, and write a report "
                    "(Markdown table, results.json, PNG plots) into an output folder.")
    sub = p.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    raw = argparse.RawDescriptionHelpFormatter

    a = sub.add_parser("adfa-ld", help="ADFA-LD one-class benchmark: the standard split and random re-splits of "
                                        "its normal traces, or a split of your own",
                       description="Learn on the standard split's training traces and test on validation + attack "
                                   "traces, then repeat on random re-splits of the normal traces (families: "
                                   "validation-half, training+validation-half); or evaluate one split given as "
                                   "three files (--learn, --normal, --attack).",
                       formatter_class=raw,
                       epilog=examples("baseliner evaluate adfa-ld                 # the whole benchmark",
                                       "baseliner evaluate adfa-ld --limit 200 --no-plots --out /tmp/adfa"))
    a.add_argument("--adfa", default=None, help="path to ADFA-LD.zip (default $BASELINER_DATASETS/adfa-ld/ADFA-LD.zip, "
                        "$BASELINER_DATASETS defaulting to ../shared/datasets)")
    a.add_argument("--calls-per-window", type=int, default=DEFAULT_CALLS_PER_WINDOW,
                   help=f"calls per window (ADFA-LD has no timestamps; default {DEFAULT_CALLS_PER_WINDOW})")
    a.add_argument("--resplits", type=int, default=5,
                   help="random re-splits per family, seeds 1..N (default 5; 0: the standard split only)")
    a.add_argument("--families", default=",".join(FAMILIES),
                   help=f"re-split families, comma separated (default {','.join(FAMILIES)})")
    a.add_argument("--learn", metavar="FILE", help="a split of your own: traces to learn, one a line (archive path "
                        "or file name, in learning order); needs --normal and --attack too")
    a.add_argument("--normal", metavar="FILE", help="a split of your own: normal test traces")
    a.add_argument("--attack", metavar="FILE", help="a split of your own: attack test traces")
    a.add_argument("--bootstrap", type=int, default=1000,
                   help="bootstrap resamples for the intervals of the main split's differences (default 1000; 0: none)")
    a.add_argument("--no-baselines", action="store_true", help="skip STIDE, bag 1-NN, IsolationForest, HST")
    a.add_argument("--limit", type=int, default=None, help="first N traces of each folder (a quick subset)")
    a.add_argument("--no-plots", action="store_true", help="write the tables only")
    a.add_argument("--out", default="evaluation/adfa-ld", help="report folder (default evaluation/adfa-ld)")

    lid = sub.add_parser("lid-ds", help="LID-DS 2021 scenario folder or one recording (.zip / .sc+.json)",
                         formatter_class=raw,
                         epilog=examples("baseliner evaluate lid-ds ../shared/datasets/lid-ds-2021-sample/"
                                         "aggressive_nightingale_1018.zip"))
    lid.add_argument("path", help="scenario folder (training/ validation/ test/) or one recording")
    lid.add_argument("--window-seconds", type=float, default=1.0, help="window length (default 1 s)")
    lid.add_argument("--out", default="evaluation/lid-ds", help="report folder (default evaluation/lid-ds)")

    r = sub.add_parser("recording", help="a recording made by `baseliner sensor record` (with ground truth)",
                       formatter_class=raw,
                       epilog=examples("baseliner evaluate recording syn.jsonl.gz --learn-hours 20"))
    r.add_argument("path", help="recording file (.jsonl or .jsonl.gz)")
    r.add_argument("--learn-hours", type=float, default=0.0,
                   help="each baseline learns at least this many hours of event time before detecting "
                        "(as `baseliner demo --learn-hours`; default 0: the service's defaults)")
    r.add_argument("--out", default="evaluation/recording", help="report folder (default evaluation/recording)")

    for q in (a, lid, r):
        q.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _adfa_options(args: argparse.Namespace) -> tuple[list[str], tuple[str, str, str] | None]:
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise DatasetError(f"unknown re-split family {unknown[0]!r}; known: {', '.join(FAMILIES)}")
    if args.calls_per_window < 1:
        raise DatasetError("--calls-per-window must be >= 1")
    if args.resplits < 0 or args.bootstrap < 0:
        raise DatasetError("--resplits and --bootstrap must be >= 0")
    given = [args.learn, args.normal, args.attack]
    if any(given) and not all(given):
        raise DatasetError("a split of your own needs all three of --learn, --normal and --attack")
    return families, (args.learn, args.normal, args.attack) if all(given) else None


def run(args: argparse.Namespace) -> int:
    from baseliner.models.evaluate import report
    from baseliner.models.evaluate.run import evaluate_lidds, evaluate_protocol, evaluate_recording

    command = "baseliner " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "baseliner evaluate"
    out = Path(args.out)
    progress = not args.quiet
    try:
        if args.dataset == "adfa-ld":
            families, user_split = _adfa_options(args)
            proto = evaluate_protocol(args.adfa, args.calls_per_window, range(1, args.resplits + 1), families,
                                      args.limit, not args.no_baselines, user_split, progress=progress,
                                      bootstrap=args.bootstrap)
            proto.command = command
            files = report.write_adfa(proto, out, plots=not args.no_plots)
            text = report.adfa_markdown(proto)
        elif args.dataset == "lid-ds":
            lrun = evaluate_lidds(args.path, args.window_seconds, progress=progress)
            lrun.command = command
            files = report.write_lidds(lrun, out)
            text = report.lidds_markdown(lrun)
        else:
            if args.learn_hours < 0:
                raise DatasetError("--learn-hours must be >= 0")
            rrun = evaluate_recording(args.path, progress=progress, learn_hours=args.learn_hours)
            rrun.command = command
            files = report.write_recording(rrun, out)
            text = report.recording_markdown(rrun)
    except DatasetError as exc:
        print(f"baseliner evaluate: {exc}", file=sys.stderr)
        return 2
    print(text)
    print("written: " + ", ".join(str(f) for f in files))
    return 0
