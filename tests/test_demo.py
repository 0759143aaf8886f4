"""``baseliner demo`` end to end: real service, real gRPC, synthetic cluster; every attack type found."""

from __future__ import annotations

import argparse
import asyncio
import io
import subprocess
import sys

import pytest
from baseliner.sensor.synthetic import ATTACK_KINDS, Attack
from baseliner.service.demo import add_parser, format_event, print_summary, run_demo, score_events


@pytest.fixture(scope="module")
def demo() -> tuple[object, str]:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["demo"])
    out = io.StringIO()
    summary = asyncio.run(asyncio.wait_for(run_demo(args, out), 600))
    print_summary(summary, out)
    return summary, out.getvalue()


@pytest.mark.parametrize("kind", ATTACK_KINDS)
def test_every_attack_type_is_detected_promptly(demo, kind: str) -> None:  # type: ignore[no-untyped-def]
    summary, _ = demo
    (result,) = [r for r in summary.attacks if r.attack.kind == kind]
    assert result.detected, f"{kind} not detected"
    assert result.delay <= 2 * 30.0  # within two windows of event time


def test_false_alarms_within_budget_and_output(demo) -> None:  # type: ignore[no-untyped-def]
    summary, text = demo
    assert summary.all_detected
    assert summary.vectors == 28 * 120 * 8
    assert summary.detect_hours == pytest.approx(8.0)
    assert summary.false_per_hour < 0.5
    assert "metrics: http://127.0.0.1:" in text
    assert "novel: executable=/bin/sh" in text  # the reverse shell, explained as it is found
    assert "attack types detected: 5/5" in text


def test_last_line_counts_the_events_printed(demo) -> None:  # type: ignore[no-untyped-def]
    summary, text = demo
    printed = [line for line in text.splitlines() if line.startswith("[20")]  # one header line per event
    assert printed and summary.events == len(printed)
    assert all(line.split("kinds: ", 1)[1].strip() for line in printed)  # every event says what carried it
    assert text.splitlines()[-1].startswith(f"events: {len(printed)} (")


def test_a_run_is_reproducible() -> None:
    # The nodes' streams advance in step, so the database's replicas (on two nodes) are learnt in the same
    # order every run: free-running streams made every run's events differ (scores, figures, even counts).
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["demo", "--hours", "10", "--learn-hours", "5", "--attacks-after", "6"])
    texts = []
    for _ in range(2):
        out = io.StringIO()
        summary = asyncio.run(asyncio.wait_for(run_demo(args, out), 600))
        texts.append([line for line in out.getvalue().splitlines()  # (less the service's ports and directory)
                      if not line.startswith(("Baseliner demo:", "metrics: "))])
    assert summary.events >= 5
    assert texts[0] == texts[1]


def test_demo_command_logs_nothing_below_warning() -> None:
    # The service's INFO lines (connections, new baselines, ...) would interleave with the printed events.
    cmd = [sys.executable, "-m", "baseliner.service.cli", "demo", "--quiet", "--hours", "6", "--learn-hours", "1",
           "--attacks-after", "2", "--window", "60"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert "== Summary ==" in proc.stdout, proc.stderr
    assert " INFO " not in proc.stderr, proc.stderr


def test_scoring_matches_events_to_attacks() -> None:
    a = Attack("port_scan", "n", "ns", "p", "cid", "img:1", 1000.0, 1180.0, "")

    def ev(cid: str, first: float, last: float, update: bool = False, count: int = 1) -> dict:
        iso = lambda t: f"1970-01-01T00:{int(t) // 60:02d}:{int(t) % 60:02d}Z"  # noqa: E731
        return {"event_id": f"{cid}{first}", "update": update, "container": {"id": cid}, "first_seen": iso(first),
                "last_seen": iso(last), "window": {"seconds": 10.0, "start": iso(first)}, "kinds": ["rate"],
                "explanation": [{"text": "net.connects_failed: 20/s"}], "novel": [], "count": count,
                "image": {"key": "img:1"}, "severity": "low", "namespace": "ns", "pod": "p", "score": 3.0,
                "threshold": 2.0}

    events = [ev("cid", 1010, 1020), ev("cid", 1010, 1180, update=True, count=9), ev("other", 1010, 1020),
              ev("cid", 2000, 2010)]
    s = score_events(events, [a], detect_from=0.0, end=3600.0, window=10.0)
    assert s.attacks[0].detected and s.attacks[0].delay == 20.0  # end of the first flagged window
    assert s.attacks[0].first_text == "net.connects_failed: 20/s"
    assert len(s.false_alarms) == 2 and s.false_per_hour == 2.0
    assert s.flagged_windows == 9 + 1 + 1
    assert s.events == 3  # the update record is not an event of its own
    missed = score_events([ev("cid", 3000, 3010)], [a], 0.0, 3600.0, 10.0)
    assert not missed.attacks[0].detected and not missed.all_detected
    assert "score 3.0 > 2.0" in format_event(events[0])
