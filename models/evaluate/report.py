"""The report of a run: a Markdown table, a JSON summary and PNG plots, written to one folder."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from baseliner.models.evaluate.metrics import roc_curve
from baseliner.models.evaluate.run import AdfaProtocol, AdfaRun, FamilySummary, LiddsRun, RecordingRun

log = logging.getLogger(__name__)


def _f(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


TIE_RULE = ("Detection rates: the ROC curve read at the false-positive rate, ties at the threshold broken at random "
            "(the expected share of attacks flagged when exactly that share of normal traces is flagged).")


def _split_text(run: AdfaRun) -> str:
    n_att = int(run.labels.sum())
    n_norm = len(run.labels) - n_att
    split = run.split
    what = {
        "standard": f"Learn on {run.n_train} `Training_Data_Master` traces; test on {n_norm} `Validation_Data_Master` "
                    f"(normal) and {n_att} `Attack_Data_Master` (attack) traces.",
        "user": f"A split of your own: learn on {run.n_train} traces (in the order listed); test on {n_norm} normal "
                f"and {n_att} attack traces.",
    }.get(split.family if split else "standard",
          f"Re-split `{split.name if split else ''}`: learn on {run.n_train} traces; test on {n_norm} normal and "
          f"{n_att} attack traces.")
    return (f"{what}  Baseliner models see windows of {run.calls_per_window} calls ({run.train_windows} learning, "
            f"{run.test_windows} test windows) and score a trace by the call-weighted mean of its window scores; "
            "learning stops at the end of the learning traces.  The tiers are the default model's own, read "
            "from its learnt state.  Baselines score whole traces.")


def _main_table(run: AdfaRun) -> list[str]:
    rank = run.ranks("auc")
    lines = ["| model | ROC AUC | DR @ 1% FPR | DR @ 5% FPR | rank (AUC) | cost per item (learn+score) | state |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for m in run.models:
        unit = "trace" if m.kind == "baseline" else "window"
        state = f"{m.state_bytes / 1024:.0f} KiB" if m.state_bytes is not None else ""
        lines.append(f"| {m.name} | {_f(m.summary.auc)} | {_f(m.summary.dr_1)} | {_f(m.summary.dr_5)} | "
                     f"{rank[m.name]:g} | {m.us_per_item:.1f} µs/{unit} | {state} |")
    return lines


def _family_table(rows: list[FamilySummary]) -> list[str]:
    def cell(v: tuple[float, float, float, float]) -> str:
        return f"{v[0]:.3f} ± {v[1]:.3f} ({v[2]:.3f}-{v[3]:.3f})"

    lines = ["| model | ROC AUC mean ± sd (range) | mean rank (AUC) | DR @ 1% FPR | DR @ 5% FPR | "
             "mean rank (DR @ 5%) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r.model} | {cell(r.auc)} | {r.rank_auc:.1f} | {r.dr_1[0]:.3f} ± {r.dr_1[1]:.3f} | "
                     f"{cell(r.dr_5)} | {r.rank_dr_5:.1f} |")
    return lines


def _protocol(result: AdfaProtocol | AdfaRun) -> AdfaProtocol:
    return result if isinstance(result, AdfaProtocol) else AdfaProtocol(result, [], result.seconds, result.command)


def adfa_markdown(result: AdfaProtocol | AdfaRun) -> str:
    proto = _protocol(result)
    run = proto.main
    title = "user split" if run.split and run.split.family == "user" else "standard split"
    lines = ["# ADFA-LD evaluation", "", f"## The {title}", "", _split_text(run), "", TIE_RULE, "", *_main_table(run)]
    types = sorted({t for m in run.models for t in m.by_type})
    lines += ["", "### Per attack type (ROC AUC / DR @ 5% FPR, each type against all normal traces)", "",
              "| model | " + " | ".join(types) + " |", "| --- |" + " ---: |" * len(types)]
    for m in run.models:
        cells = [f"{_f(m.by_type[t].auc)} / {_f(m.by_type[t].dr_5)}" if t in m.by_type else "" for t in types]
        lines.append(f"| {m.name} | " + " | ".join(cells) + " |")
    if run.versus:
        ours = next(m.name for m in run.models if m.kind == "baseliner")
        lines += ["", f"### {ours} minus each other model (paired stratified bootstrap, 95% interval)",
                  "", "| model | ROC AUC difference | DR @ 5% FPR difference |", "| --- | ---: | ---: |"]
        for name, auc, dr in run.versus:
            lines.append(f"| {name} | {auc.value:+.3f} [{auc.low:+.3f}, {auc.high:+.3f}] | "
                         f"{dr.value:+.3f} [{dr.low:+.3f}, {dr.high:+.3f}] |")
    for family, rows in proto.families().items():
        sample = next(r for r in proto.resplits if r.split and r.split.family == family)
        seeds = [r.split.seed for r in proto.resplits if r.split and r.split.family == family]
        lines += ["", f"## Re-splits: {family} (seeds {', '.join(str(x) for x in seeds)})", "",
                  _FAMILY_TEXT.get(family, "") + f"  Each split: {sample.n_train} learning traces, "
                  f"{int((sample.labels == 0).sum())} normal and {int(sample.labels.sum())} attack test traces.", "",
                  *_family_table(rows)]
    lines += ["", f"Run time {proto.seconds or run.seconds:.1f} s."]
    if proto.command:
        lines += ["", "Command:", "", "```", proto.command, "```"]
    return "\n".join(lines) + "\n"


_FAMILY_TEXT = {
    "validation-half": "Learn a random half of `Validation_Data_Master`; test on the other half and all of "
                       "`Training_Data_Master` (normal) and every attack.",
    "training+validation-half": "Learn `Training_Data_Master` and a random half of `Validation_Data_Master`; "
                                "test on the other half (normal) and every attack.",
}


def lidds_markdown(run: LiddsRun) -> str:
    lines = [
        "# LID-DS evaluation",
        "",
        f"Source `{run.source}`; {run.protocol}.  Windows of {run.window_seconds:g} s; {run.counts}.",
        "LID-DS rule: threshold = highest score on normal validation windows; an exploit recording is detected by "
        "an alarm at or after the exploit; consecutive false alarms count once.",
        "",
        "| model | threshold | detection rate | detected / exploits | false alarms | mean delay (s) | "
        "window AUC | µs/window |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in run.models:
        r = m.result
        auc = _f(m.window_summary.auc) if m.window_summary else "n/a"
        lines.append(f"| {m.name} | {r.threshold:.3f} | {_f(r.detection_rate)} | {r.detected} / {r.exploits} | "
                     f"{r.false_alarms} | {_f(r.mean_delay)} | {auc} | {1e6 * m.seconds / max(1, m.windows):.1f} |")
    lines += ["", "Window AUC labels the windows that end after the exploit as attack (a rough indicator: not every "
              "such window contains attack activity)."]
    if run.command:
        lines += ["", "Command:", "", "```", run.command, "```"]
    return "\n".join(lines) + "\n"


def _plots(run: AdfaRun, out: Path) -> list[Path]:  # the main split
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(6.5, 6))
    for m in run.models:
        fpr, tpr = roc_curve(run.labels, m.scores)
        ax.plot(fpr, tpr, label=f"{m.name} (AUC {m.summary.auc:.3f})", lw=1.5 if m.kind == "baseliner" else 1.0,
                ls="-" if m.kind == "baseliner" else "--")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.5)
    ax.axvline(0.05, color="grey", lw=0.5, ls=":")
    ax.set_xlabel("false-positive rate (normal validation traces)")
    ax.set_ylabel("detection rate (attack traces)")
    ax.set_title("ADFA-LD ROC")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    written.append(out / "roc.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)

    n = len(run.models)
    fig, axes = plt.subplots(n, 1, figsize=(7, 1.9 * n))
    for ax, m in zip(np.atleast_1d(axes), run.models, strict=True):
        s = m.scores
        bins = np.linspace(np.min(s), np.max(s) + 1e-12, 60)
        ax.hist(s[run.labels == 0], bins=bins, alpha=0.6, density=True, label="normal")
        ax.hist(s[run.labels == 1], bins=bins, alpha=0.6, density=True, label="attack")
        ax.set_title(m.name, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(out / "score_distributions.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    types = sorted({t for m in run.models for t in m.by_type})
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / max(1, n)
    x = np.arange(len(types))
    for i, m in enumerate(run.models):
        ax.bar(x + i * width, [m.by_type[t].dr_5 if t in m.by_type else 0 for t in types], width, label=m.name)
    ax.set_xticks(x + 0.4 - width / 2, types, fontsize=8)
    ax.set_ylabel("detection rate at 5% FPR")
    ax.set_title("ADFA-LD detection rate by attack type")
    ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(out / "per_attack_type.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    return written


def _run_json(run: AdfaRun) -> dict[str, Any]:
    split = run.split
    return {
        "split": {"name": split.name, "family": split.family, "seed": split.seed} if split else None,
        "n_train": run.n_train, "n_normal": int((run.labels == 0).sum()), "n_attack": int(run.labels.sum()),
        "train_windows": run.train_windows, "test_windows": run.test_windows, "seconds": run.seconds,
        "models": [{"name": m.name, "kind": m.kind, "auc": m.summary.auc, "dr_at_1pct_fpr": m.summary.dr_1,
                    "dr_at_5pct_fpr": m.summary.dr_5, "rank_auc": run.ranks("auc")[m.name],
                    "rank_dr_at_5pct_fpr": run.ranks("dr_5")[m.name], "us_per_item": m.us_per_item,
                    "state_bytes": m.state_bytes,
                    "by_type": {t: {"auc": s.auc, "dr_at_5pct_fpr": s.dr_5, "n": s.n_attack}
                                for t, s in m.by_type.items()}} for m in run.models],
        "default_minus_model": [{"model": name, "auc": [auc.value, auc.low, auc.high],
                                 "dr_at_5pct_fpr": [dr.value, dr.low, dr.high]} for name, auc, dr in run.versus],
    }


def _write(out: Path, markdown: str, results: dict[str, Any], default: Any = None) -> list[Path]:
    """``report.md`` and ``results.json`` in folder ``out`` (made when missing)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(markdown)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=default) + "\n")
    return [out / "report.md", out / "results.json"]


def write_adfa(result: AdfaProtocol | AdfaRun, out: Path, plots: bool = True) -> list[Path]:
    proto = _protocol(result)
    written = _write(out, adfa_markdown(proto), {
        "dataset": "ADFA-LD", "calls_per_window": proto.main.calls_per_window, "command": proto.command,
        "tie_rule": TIE_RULE, "seconds": proto.seconds, "main": _run_json(proto.main),
        "resplits": [_run_json(r) for r in proto.resplits],
        "families": {f: [asdict(r) for r in rows] for f, rows in proto.families().items()},
    })
    if plots:
        written += _plots(proto.main, out)
    log.info("report written to %s", out)
    return written


def write_lidds(run: LiddsRun, out: Path) -> list[Path]:
    return _write(out, lidds_markdown(run), {
        "dataset": "LID-DS", "source": run.source, "protocol": run.protocol, "counts": run.counts,
        "command": run.command,
        "models": [{"name": m.name, "threshold": m.result.threshold, "detection_rate": m.result.detection_rate,
                    "detected": m.result.detected, "exploits": m.result.exploits,
                    "false_alarms": m.result.false_alarms, "delays": list(m.result.delays),
                    "window_auc": m.window_summary.auc if m.window_summary else None} for m in run.models],
    }, default=lambda x: None if isinstance(x, float) and math.isnan(x) else x)


def recording_markdown(run: RecordingRun) -> str:
    lines = [
        "# Recording evaluation",
        "",
        f"Source `{run.source}`: {run.vectors} windows of {run.images} images, replayed through one `ImageBaseline` "
        "per image as the service runs it (learn until ready, then detect and learn only unflagged windows).  "
        f"{run.scored} windows were scored while detecting, over {run.hours:.2f} h of event time.",
        "",
        "| attack | container | start | detected | delay (s) | attack windows scored |",
        "| --- | --- | ---: | :---: | ---: | ---: |",
    ]
    for a in run.attacks:
        delay = f"{a.delay:.0f}" if a.delay is not None else ""
        lines.append(f"| {a.kind} | {a.container_id} | {a.start:.0f} | {'yes' if a.detected else 'no'} | {delay} | "
                     f"{a.windows} |")
    detected = sum(a.detected for a in run.attacks)
    lines += ["", f"Detected {detected} of {len(run.attacks)} attacks.  False alarms (runs of consecutive alarming "
              f"normal windows per container): {run.false_alarms} ({_f(run.false_alarms_per_hour)} per hour); "
              f"{run.alarmed_windows} of {run.normal_windows} normal windows alarmed; {run.rejected} vectors rejected "
              "by validation."]
    if run.window_summary:
        w = run.window_summary
        lines += ["", f"Window level: ROC AUC {_f(w.auc)}, DR @ 1% FPR {_f(w.dr_1)}, DR @ 5% FPR {_f(w.dr_5)} "
                  f"({w.n_attack} attack, {w.n_normal} normal windows)."]
    lines += ["", f"Run time {run.seconds:.1f} s ({1e6 * run.seconds / max(1, run.vectors):.0f} µs per window)."]
    if run.command:
        lines += ["", "Command:", "", "```", run.command, "```"]
    return "\n".join(lines) + "\n"


def write_recording(run: RecordingRun, out: Path) -> list[Path]:
    return _write(out, recording_markdown(run), {
        "dataset": "recording", "source": run.source, "vectors": run.vectors, "scored": run.scored,
        "hours": run.hours, "false_alarms": run.false_alarms, "command": run.command,
        "attacks": [{"kind": a.kind, "container_id": a.container_id, "start": a.start, "end": a.end,
                     "detected": a.detected, "delay": a.delay, "windows": a.windows} for a in run.attacks],
        "window_auc": run.window_summary.auc if run.window_summary else None,
    })
