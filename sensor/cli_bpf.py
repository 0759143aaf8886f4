"""Command-line pieces of the eBPF source.

* :func:`add_bpf_arguments` adds the ``--source bpf`` options to the ``baseliner sensor`` parser and
  :func:`source_from_args` builds the :class:`~baseliner.sensor.bpf_source.BpfSource` from them;
* ``python -m baseliner.sensor.cli_bpf`` is a stand-alone helper for operators: ``--check`` (prerequisites, with
  what to do), ``--print-program`` (the generated C), and watching windows on the terminal.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from typing import Any

from baseliner.models.ngrams import ORDERS, SENSOR_ORDERS, parse_orders
from baseliner.sensor.attribution import DEFAULT_SOCKETS, AttributionConfig, ImageRule, RuntimeSocket
from baseliner.sensor.cli_checks import DEBUG_HELP, examples, report
from baseliner.sensor.probes import DEFAULT_SENSITIVE_PREFIXES, ProbeConfig, build_program, check_prerequisites
from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)


def ngram_orders_arg(text: str) -> tuple[int, ...]:
    """``--ngram-orders`` value: comma-separated orders (:func:`baseliner.models.ngrams.parse_orders`)."""
    try:
        return parse_orders(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def runtime_socket_arg(text: str) -> RuntimeSocket:
    """``--runtime`` value: KIND=SOCKET."""
    try:
        return RuntimeSocket.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_bpf_arguments(p: argparse.ArgumentParser | Any) -> None:
    n = p.add_argument_group("syscall n-grams (--source bpf and synthetic)")
    n.add_argument("--ngram-orders", type=ngram_orders_arg, default=SENSOR_ORDERS, metavar="N,N",
                   help=f"n-gram orders counted, any of {','.join(map(str, ORDERS))} (default "
                        f"{','.join(map(str, SENSOR_ORDERS))}: the orders the default model uses, which gives orders 2 "
                        "and 3 no weight; each order counted costs kernel, wire and service time)")
    g = p.add_argument_group("eBPF source (--source bpf; needs root)")
    g.add_argument("--window", type=float, default=5.0, help="window length in seconds (default 5)")
    g.add_argument("--no-ngrams", action="store_true", help="do not count syscall n-grams in the kernel")
    g.add_argument("--no-syscall-args", action="store_true",
                   help="do not attach the open*/creat/connect/sendto tracepoints: file-write and DNS counts "
                        "stay 0, every syscall gets cheaper (docs/sensor.md, overhead)")
    g.add_argument("--sensitive-prefix", action="append", default=None, metavar="DIR",
                   help="directory whose write opens count as sensitive (repeatable; replaces the defaults "
                        f"{', '.join(DEFAULT_SENSITIVE_PREFIXES)})")
    g.add_argument("--cgroup-image", action="append", default=[], metavar="REGEX=IMAGE",
                   help="map cgroup paths matching REGEX to IMAGE (repeatable, first match wins; IMAGE may "
                        "use {group} fields of the regex), e.g. '^/app/(?P<n>[^/]+)$=demo/{n}:1'")
    g.add_argument("--host", choices=("group", "ignore"), default="group",
                   help="processes outside containers: one 'host' container (default) or ignored")
    a = p.add_argument_group("attribution (--source bpf): container -> image, name, pod, namespace")
    a.add_argument("--runtime", action="append", default=None, metavar="KIND=SOCKET", type=runtime_socket_arg,
                   help="ask this runtime socket, KIND one of cri (containerd, CRI-O), docker, podman (repeatable; "
                        "replaces detection, which asks whichever of "
                        f"{', '.join(s.path for s in DEFAULT_SOCKETS)} exist)")
    a.add_argument("--no-runtimes", action="store_true",
                   help="ask no runtime: attribute containers by --cgroup-image rules only")
    a.add_argument("--hold-seconds", type=float, default=30.0, metavar="S",
                   help="hold windows of a container whose runtime has not described it yet this long, then drop "
                        "them (default 30)")


def probe_config_from_args(args: argparse.Namespace) -> ProbeConfig:
    prefixes = tuple(args.sensitive_prefix) if args.sensitive_prefix else DEFAULT_SENSITIVE_PREFIXES
    return ProbeConfig(ngrams=not args.no_ngrams, ngram_orders=args.ngram_orders,
                       syscall_args=not args.no_syscall_args, sensitive_prefixes=prefixes)


def attribution_from_args(args: argparse.Namespace, node: str | None = None) -> AttributionConfig:
    rules = tuple(ImageRule.parse(r) for r in args.cgroup_image)
    runtimes = () if args.no_runtimes else (tuple(args.runtime) if args.runtime else None)
    kw: dict[str, Any] = {"rules": rules, "host": args.host, "runtimes": runtimes, "hold_seconds": args.hold_seconds}
    if node:
        kw["node"] = node
    return AttributionConfig(**kw)


def source_from_args(args: argparse.Namespace, registry: CollectorRegistry | None = None,
                     node: str | None = None) -> Any:
    """The :class:`~baseliner.sensor.bpf_source.BpfSource` the arguments describe (loads the program)."""
    from baseliner.sensor.bpf_source import BpfSource, BpfSourceConfig

    cfg = BpfSourceConfig(window_seconds=args.window, probes=probe_config_from_args(args),
                          attribution=attribution_from_args(args, node))
    return BpfSource(cfg, registry=registry)


PROG = "python -m baseliner.sensor.cli_bpf"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=examples(f"{PROG} --check", f"{PROG} --windows 3 --json  # root",
                                                f"{PROG} --print-program --no-ngrams"))
    p.add_argument("--check", action="store_true", help="check prerequisites and exit")
    p.add_argument("--print-program", action="store_true", help="print the generated BPF C and exit")
    p.add_argument("--windows", type=int, default=0, help="stop after this many windows (0: run until ^C)")
    p.add_argument("--json", action="store_true", help="print vectors as JSON lines instead of a summary")
    p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    add_bpf_arguments(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _watch(args)
    except KeyboardInterrupt:  # the way to stop watching
        return 0
    except Exception as e:
        if args.debug:
            raise
        return report(PROG, e)


def _watch(args: argparse.Namespace) -> int:
    """Check, print the program, or print the windows the eBPF source gives."""
    if args.print_program:
        print(build_program(probe_config_from_args(args)))
        return 0
    problems = check_prerequisites()
    if args.check or problems:
        for msg in problems:
            print(f"problem: {msg}", file=sys.stderr)
        if not problems:
            print("ok: the eBPF sensor can run here")
        return 1 if problems else 0
    src = source_from_args(args)
    try:
        for n, vectors in enumerate(src, 1):
            for v in vectors:
                if args.json:
                    print(json.dumps(asdict(v), default=str), flush=True)
                else:
                    top = sorted(v.syscalls.items(), key=lambda kv: -kv[1])[:3]
                    print(f"{v.identity.image:<30} {v.identity.container_name[:20]:<20} "
                          f"sys={sum(v.syscalls.values()):>8} execs={v.execs} conn={v.connects} "
                          f"fail={v.connects_failed} sens={v.sensitive_writes} unres={v.unresolved_writes} "
                          f"lost={v.events_lost} top={top}",
                          flush=True)
            if args.windows and n >= args.windows:
                break
    finally:
        src.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
