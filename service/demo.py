"""``baseliner demo``: the real service in-process, a synthetic cluster streamed to it over gRPC, a summary.

Options, what the summary measures, and the exit status (0 when every injected attack type was detected) are in
``docs/sensor-client.md`` ("``baseliner demo``").  With ``--console`` the service also opens its operator
console and stays up after the summary until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from baseliner.models.errors import ConfigError
from baseliner.models.integrity import new_key
from baseliner.sensor.buffer import MemoryBuffer
from baseliner.sensor.routing import ShardRouter
from baseliner.sensor.synthetic import HOUR, Attack, ScenarioConfig, SyntheticSource
from baseliner.sensor.transport import Backoff
from baseliner.service.sinks.events import epoch

log = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "demo", help="run the service and a synthetic cluster with attacks; print anomalies and a summary",
        description="One command, no root: the service in-process on free localhost ports, a synthetic "
                    "cluster streamed to it over gRPC, anomalies with explanations as they are found, "
                    "and a detection summary.",
    )
    p.add_argument("--hours", type=float, default=28.0, help="simulated hours (default 28)")
    p.add_argument("--learn-hours", type=float, default=20.0,
                   help="hours each baseline learns before it detects (default 20)")
    p.add_argument("--attacks-after", type=float, default=24.0,
                   help="hour of the first attack (default 24; one of each kind, 40 minutes apart)")
    p.add_argument("--window", type=float, default=30.0, help="window length in seconds (default 30)")
    p.add_argument("--seed", type=int, default=7, help="scenario seed (default 7)")
    p.add_argument("--speed", type=float, default=0.0,
                   help="event seconds per wall second: 0 = as fast as possible (default)")
    p.add_argument("--batch-size", type=int, default=120, help="vectors per batch (default 120)")
    p.add_argument("--metrics-listen", default="127.0.0.1:0",
                   help="metrics endpoint host:port (default a free localhost port)")
    p.add_argument("--quiet", action="store_true", help="do not print each event, only the summary")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="extra service setting, e.g. --set baseline.false_alarms_per_day=0.5 (repeatable)")
    p.add_argument("--console", nargs="?", const="127.0.0.1:0", metavar="HOST:PORT",
                   help="also open the operator console (default on a free localhost port), print its URL and a "
                        "login token, and keep the service running after the scenario until Ctrl-C")
    return p


# -- results ----------------------------------------------------------------------------------------------

@dataclass
class AttackResult:
    attack: Attack
    detected: bool = False
    delay: float = float("nan")  # seconds of event time
    kinds: tuple[str, ...] = ()
    first_text: str = ""


@dataclass
class Summary:
    attacks: list[AttackResult]
    false_alarms: list[dict[str, Any]]
    events: int  # anomaly events (first writes: what the demo prints); folded updates are not counted
    detect_hours: float
    vectors: int
    wall_seconds: float
    flagged_windows: int = 0
    per_image_false: dict[str, int] = field(default_factory=dict)

    @property
    def false_per_hour(self) -> float:
        return len(self.false_alarms) / self.detect_hours if self.detect_hours > 0 else float("nan")

    @property
    def all_detected(self) -> bool:
        return all(r.detected for r in self.attacks)


def score_events(events: Sequence[dict[str, Any]], attacks: Sequence[Attack], detect_from: float,
                 end: float, window: float) -> Summary:
    """Match anomaly events to ground truth: detections, delays, false alarms.

    An event matches an attack when it is about the attacked container and its windows
    (``first_seen``..``last_seen``) overlap the attack's span extended by one window.  A false alarm is a
    new event (``update`` false) that matches no attack.
    """
    results = [AttackResult(a) for a in attacks]
    false: list[dict[str, Any]] = []
    counts: dict[str, int] = {}  # event id -> windows folded into it (updates carry the final count)
    for ev in events:
        counts[ev["event_id"]] = max(counts.get(ev["event_id"], 0), int(ev.get("count", 1)))
    flagged = sum(counts.values())
    for ev in events:
        if ev.get("update"):
            continue
        first = epoch(ev["first_seen"])
        last = epoch(ev["last_seen"])
        matched = False
        for r in results:
            a = r.attack
            if ev["container"]["id"] == a.container_id and first < a.end + window and last > a.start:
                matched = True
                delay = max(0.0, first + float(ev["window"]["seconds"]) - a.start)
                if not r.detected or delay < r.delay:
                    r.detected, r.delay, r.kinds = True, delay, tuple(ev["kinds"])
                    expl = ev.get("explanation") or []
                    novel = ev.get("novel") or []
                    r.first_text = (", ".join(f"{n['kind']} {n['value']}" for n in novel[:3]) if novel
                                    else expl[0]["text"] if expl else "")
        if not matched:
            false.append(ev)
    per_image: dict[str, int] = {}
    for ev in false:
        per_image[ev["image"]["key"]] = per_image.get(ev["image"]["key"], 0) + 1
    first_writes = sum(1 for ev in events if not ev.get("update"))  # the events printed; updates only recount
    return Summary(results, false, first_writes, max(0.0, (end - detect_from) / HOUR), 0, 0.0, flagged, per_image)


def print_summary(s: Summary, out: TextIO) -> None:
    w = out.write
    w("\n== Summary ==\n")
    w(f"{'attack':<18} {'container':<28} {'at':>7} {'detected':>8} {'delay':>7}  first signal\n")
    for r in s.attacks:
        a = r.attack
        delay = f"{r.delay:.0f}s" if r.detected else "-"
        w(f"{a.kind:<18} {(a.namespace + '/' + a.pod)[:28]:<28} {_hhmm(a.start):>7} "
          f"{('yes' if r.detected else 'NO'):>8} {delay:>7}  {r.first_text[:70]}\n")
    kinds = {r.attack.kind for r in s.attacks}
    found = {r.attack.kind for r in s.attacks if r.detected}
    w(f"\nattack types detected: {len(found)}/{len(kinds)}"
      + ("" if found == kinds else f" (missed: {', '.join(sorted(kinds - found))})") + "\n")
    w(f"false alarms: {len(s.false_alarms)} events in {s.detect_hours:.1f} h of simulated detection time "
      f"= {s.false_per_hour:.2f} per hour")
    if s.per_image_false:
        w(" (" + ", ".join(f"{k}: {n}" for k, n in sorted(s.per_image_false.items())) + ")")
    w("\n")
    w(f"events: {s.events} ({s.flagged_windows} flagged windows, repeats folded); vectors: {s.vectors} in "
      f"{s.wall_seconds:.1f} s wall time ({s.vectors / max(s.wall_seconds, 1e-9):,.0f} vectors/s end to end)\n")


def _hhmm(t: float) -> str:
    return time.strftime("%d %H:%M", time.gmtime(t))[3:]


def format_event(ev: dict[str, Any]) -> str:
    novel = ", ".join(f"{n['kind']}={n['value']}" for n in ev.get("novel", [])[:6])
    lines = [f"[{ev['window']['start'][:19]}] {ev['severity'].upper() or 'ANOMALY'} {ev['namespace']}/{ev['pod']} "
             f"({ev['image']['key']}) score {ev['score']:.1f} > {ev['threshold']:.1f}  kinds: {', '.join(ev['kinds'])}"]
    if novel:
        lines.append(f"    novel: {novel}")
    for d in ev.get("explanation", [])[:3]:
        lines.append(f"    {d['text']}")
    return "\n".join(lines)


# -- run --------------------------------------------------------------------------------------------------

Hold = Callable[[Summary, TextIO], Awaitable[None]]


async def run_demo(args: argparse.Namespace, out: TextIO = sys.stdout, hold: Hold | None = None) -> Summary:
    """Run the scenario against an in-process service; ``hold``, when given, is awaited with the summary once
    everything is acknowledged, before the service stops (``--console`` keeps it open there)."""
    from baseliner.service import config as config_mod
    from baseliner.service.server import BaselinerServer
    from baseliner.service.sinks.events import CallbackSink
    from prometheus_client import CollectorRegistry

    try:
        scenario = ScenarioConfig(seed=args.seed, hours=args.hours, window_seconds=args.window,
                                  attack_after_hours=args.attacks_after,
                                  rollout_at_hours=min(args.attacks_after + 1.0, args.hours - 0.5))
    except ValueError as exc:
        raise ConfigError(f"demo scenario: {exc}") from None
    source = SyntheticSource(scenario)
    events: list[dict[str, Any]] = []

    def on_event(ev: dict[str, Any]) -> None:
        events.append(ev)
        if not args.quiet and not ev.get("update"):
            out.write(format_event(ev) + "\n")
            out.flush()

    with tempfile.TemporaryDirectory(prefix="baseliner-demo-") as tmp:
        key_file = os.path.join(tmp, "state.keys")
        with open(key_file, "w", encoding="utf-8") as f:
            f.write(new_key() + "\n")
        overrides: list[tuple[str, Any]] = [
            ("grpc.listen", "127.0.0.1:0"), ("metrics.listen", args.metrics_listen),
            ("state.dir", os.path.join(tmp, "state")), ("state.key_file", key_file),
            ("events.output", "none"),
            ("baseline.min_learn_seconds", str(args.learn_hours * HOUR)),
            ("baseline.min_learn_windows", "1000"),
            # the demo's learning period is --learn-hours (then the later half of it quiet), not the
            # evidence a one-alarm-a-day budget asks for (about 17 h of quiet)
            ("baseline.stable_confidence", "0"),
        ]
        token = ""
        if args.console:  # an operator token for the console (and the Admin API)
            token = secrets.token_urlsafe(24)
            tokens_file = os.path.join(tmp, "admin.tokens")
            with open(tokens_file, "w", encoding="utf-8") as f:
                f.write(f"demo {token}\n")
            overrides += [("console.listen", args.console), ("grpc.admin_tokens_file", tokens_file)]
        cfg = config_mod.load(None, environ={}, overrides=[*overrides, *config_mod.parse_set(args.set)])
        server = BaselinerServer(cfg, registry=CollectorRegistry(), sinks=[CallbackSink(on_event)])
        await server.start()
        target = f"127.0.0.1:{server.port}"
        out.write(f"Baseliner demo: service on {target}, state in {tmp}/state\n")
        if server.metrics_port:
            host = cfg.metrics.listen.rpartition(":")[0] or "127.0.0.1"
            out.write(f"metrics: http://{host}:{server.metrics_port}/metrics\n")
        if server.console is not None:
            out.write(f"console: {server.console.url} (log in with the token {token}; it also opens "
                      f"baseliner admin --target {target} with BASELINER_ADMIN_TOKEN)\n")
        out.write(f"simulating {scenario.hours:g} h of {len(source.containers)} containers on "
                  f"{len(scenario.nodes)} nodes in {scenario.window_seconds:g} s windows; baselines learn for "
                  f"{args.learn_hours:g} h; attacks injected (ground truth):\n")
        for a in source.attacks:
            out.write(f"  {_hhmm(a.start)}  {a.kind:<18} {a.namespace}/{a.pod}: {a.description}\n")
        out.write("\n")
        out.flush()
        transports = {
            node: ShardRouter([target], sensor_id=f"demo-{node}", node=node, make_buffer=lambda _: MemoryBuffer(),
                              batch_size=args.batch_size, max_in_flight=4, on_full="block",
                              backoff=lambda: Backoff(initial=0.05, maximum=1.0))
            for node in scenario.nodes
        }
        started = time.monotonic()
        vectors = 0
        wall = 0.0
        try:
            for t in transports.values():
                t.start()
            send = _paced if args.speed > 0 else _in_step
            next_progress = scenario.start + 6 * HOUR
            async for wstart, sent in send(source, transports, args, started):
                vectors += sent
                if wstart >= next_progress and not args.quiet:
                    out.write(f"... {(wstart - scenario.start) / HOUR:.0f} h simulated, {vectors:,} vectors sent, "
                              f"{sum(not ev.get('update') for ev in events)} events so far\n")
                    out.flush()
                    next_progress += 6 * HOUR
            for t in transports.values():
                await _delivered(t)
            wall = time.monotonic() - started
            if hold is not None:
                await hold(_summary(events, source, args, vectors, wall), out)
        finally:
            for t in transports.values():
                await t.close()
            wall = wall or time.monotonic() - started  # (the streaming's, without a hold)
            await server.stop()
    return _summary(events, source, args, vectors, wall)


def _by_node(window: Sequence[Any]) -> dict[str, list[Any]]:
    by_node: dict[str, list[Any]] = {}
    for v in window:
        by_node.setdefault(v.identity.node, []).append(v)
    return by_node


async def _delivered(transport: ShardRouter) -> None:
    if not await transport.flush(120):
        raise RuntimeError(f"the service did not acknowledge everything sent by {transport.sensor_id}")


async def _paced(source: SyntheticSource, transports: dict[str, ShardRouter], args: argparse.Namespace,
                 started: float) -> AsyncIterator[tuple[float, int]]:
    """``--speed N``: every window sent as it closes, at N event seconds per wall second, as live sensors do."""
    t0_event = source.config.start
    for wstart, window in source.windows():
        delay = (wstart - t0_event) / args.speed - (time.monotonic() - started)
        if delay > 0:
            await asyncio.sleep(delay)
        for node, vs in _by_node(window).items():
            await transports[node].submit(vs)
        yield wstart, len(window)


async def _in_step(source: SyntheticSource, transports: dict[str, ShardRouter], args: argparse.Namespace,
                   started: float) -> AsyncIterator[tuple[float, int]]:
    """As fast as possible, in step: the nodes' streams advance together in event time, as live sensors' do,
    one batch each per round (the same windows of every node, at most ``--batch-size`` vectors per node) in
    node order, each acknowledged before the next is sent, so a run is reproducible.  Free-running streams
    drift apart (by up to half an hour of event time in the default scenario) in an order set by task
    scheduling, their first batches are cut when the shard map arrives, and an image with replicas on several
    nodes learns their windows in whatever order that gives: its thresholds, and so every score, changed
    from run to run."""
    pending: dict[str, list[Any]] = {node: [] for node in transports}
    wstart = source.config.start
    for wstart, window in source.windows():
        by_node = _by_node(window)
        if any(len(pending[node]) + len(vs) > args.batch_size and pending[node] for node, vs in by_node.items()):
            yield wstart, await _send_round(transports, pending)
        for node, vs in by_node.items():
            pending[node].extend(vs)
    yield wstart, await _send_round(transports, pending)


async def _send_round(transports: dict[str, ShardRouter], pending: dict[str, list[Any]]) -> int:
    sent = 0
    for node, vs in pending.items():
        if vs:
            await transports[node].submit(vs)
            await _delivered(transports[node])
            sent += len(vs)
            vs.clear()
    return sent


def _summary(events: list[dict[str, Any]], source: SyntheticSource, args: argparse.Namespace, vectors: int,
             wall: float) -> Summary:
    scenario = source.config
    end = scenario.start + scenario.windows * scenario.window_seconds
    summary = score_events(events, source.attacks, scenario.start + args.learn_hours * HOUR, end,
                           scenario.window_seconds)
    summary.vectors = vectors
    summary.wall_seconds = wall
    return summary


async def hold_console(summary: Summary, out: TextIO) -> None:
    """``--console``: print the summary, then keep the service (and its console) running until SIGINT or SIGTERM."""
    print_summary(summary, out)
    out.write("\nThe scenario is done; the service and its console stay open until Ctrl-C.\n")
    out.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run(args: argparse.Namespace) -> int:
    if args.learn_hours >= args.attacks_after:
        raise ConfigError("--learn-hours must be below --attacks-after (attacks are detected, not learnt)")
    logging.getLogger("baseliner.sensor.transport").setLevel(logging.WARNING)
    logging.getLogger("baseliner.sensor.routing").setLevel(logging.WARNING)
    logging.getLogger("baseliner.service").setLevel(logging.WARNING)
    if args.console:
        summary = asyncio.run(run_demo(args, hold=hold_console))  # (the summary is printed before the hold)
    else:
        summary = asyncio.run(run_demo(args))
        print_summary(summary, sys.stdout)
    return 0 if summary.all_detected else 1
