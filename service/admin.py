"""``baseliner admin``: list / get / mode / reset / feedback against a running service (gRPC client)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from typing import Any

import grpc
from baseliner.protos.v1 import admin_pb2, admin_pb2_grpc
from baseliner.sensor.cli_checks import examples, readable_file
from google.protobuf.json_format import MessageToDict

DEFAULT_TARGET = "127.0.0.1:50051"
MODES = ("auto", "learn", "detect", "freeze")
RAW = argparse.RawDescriptionHelpFormatter


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "admin", help="inspect and operate baselines of a running service",
        description="Admin calls against a running `baseliner serve`.", formatter_class=RAW,
        epilog=examples("baseliner admin list", "baseliner admin get nginx:1.27",
                        "baseliner admin --target node-1:50051 --tls-ca ca.pem --token-file admin.token list"),
    )
    p.add_argument("--target", default=DEFAULT_TARGET, help=f"service address (default {DEFAULT_TARGET})")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
    p.add_argument("--json", action="store_true", help="print the raw response as JSON")
    p.add_argument("--token-file", type=readable_file, help="file holding an admin token (grpc.admin_tokens_file "
                                                            "on the service); also BASELINER_ADMIN_TOKEN")
    p.add_argument("--tls-ca", type=readable_file, help="verify the service's certificate against this CA "
                                                        "(enables TLS)")
    p.add_argument("--tls-cert", type=readable_file, help="client certificate for mutual TLS (with --tls-key)")
    p.add_argument("--tls-key", type=readable_file, help="client private key for mutual TLS")
    sub = p.add_subparsers(dest="admin_command", required=True)
    sub.add_parser("list", help="all baselines and their state", formatter_class=RAW,
                   epilog=examples("baseliner admin list", "baseliner admin --json list"))
    g = sub.add_parser("get", help="one baseline with its learned statistics", formatter_class=RAW,
                       epilog=examples("baseliner admin get nginx:1.27"))
    g.add_argument("key", help="image key, e.g. nginx:1.27")
    m = sub.add_parser("mode", help="set a baseline's mode", formatter_class=RAW,
                       epilog=examples("baseliner admin mode nginx:1.27 freeze"))
    m.add_argument("key")
    m.add_argument("mode", choices=MODES)
    r = sub.add_parser("reset", help="forget what a baseline learnt", formatter_class=RAW,
                       epilog=examples("baseliner admin reset nginx:1.27"))
    r.add_argument("key")
    f = sub.add_parser("feedback", help="accept an anomaly event's behaviour into its baseline", formatter_class=RAW,
                       epilog=examples("baseliner admin feedback 3f2a9c0d1e4b5a6f7081 --comment 'nightly backup'"))
    f.add_argument("event_id")
    f.add_argument("--comment", default="")
    return p


def _fmt_baseline(b: admin_pb2.Baseline) -> str:
    state = admin_pb2.State.Name(b.state).removeprefix("STATE_").lower()
    mode = admin_pb2.Mode.Name(b.mode).removeprefix("MODE_").lower()
    thr = f"{b.threshold:.3g}" if b.threshold else "-"
    line = (f"{b.key:40s} {state:10s} {mode:7s} learned={b.windows_learned:<8d} scored={b.windows_scored:<8d} "
            f"anomalies={b.anomalies:<6d} threshold={thr}")
    if b.HasField("lineage") and b.lineage.parent:
        line += f" lineage={b.lineage.status} parent={b.lineage.parent}"
    return line


def _print_list(resp: admin_pb2.ListBaselinesResponse) -> None:
    if not resp.baselines:
        print("no baselines yet")
    for b in resp.baselines:
        print(_fmt_baseline(b))


def _print_details(resp: admin_pb2.Baseline) -> None:
    print(_fmt_baseline(resp))
    print(f"  serialized {resp.serialized_bytes} bytes, detector {resp.detector}, "
          f"learned over {resp.learned_seconds:.0f}s of event time")
    if resp.learning_detail:
        print(f"  {resp.learning_detail}")
    for name, items in (("executables", resp.executables), ("syscalls", resp.syscalls),
                        ("remote ports", resp.remote_ports), ("sensitive paths", resp.sensitive_paths)):
        shown = ", ".join(list(items)[:20]) + (" ..." if len(items) > 20 else "")
        print(f"  {name} ({len(items)}): {shown}")
    lin = resp.lineage
    if resp.HasField("lineage"):
        print(f"  lineage: {lin.status}" + (f", from {lin.parent}" if lin.parent else "")
              + f" ({', '.join(lin.groups)})" + (f"; {lin.reason}" if lin.reason else ""))
        for label, items in (("new in this version", lin.added), ("vanished in this version", lin.vanished)):
            if items:
                print(f"  {label}: {', '.join(items)}")
    for f in resp.features:
        if f.mean > 0 and math.isfinite(f.typical):
            print(f"  {f.name:32s} typical {f.typical:10.3g} {f.unit}  (log-rate {f.mean:.3f} ± {f.std:.3f})")


def _print_feedback(resp: admin_pb2.FeedbackResponse) -> None:
    print(_fmt_baseline(resp.baseline))
    print("accepted:", ", ".join(resp.accepted_items) or "(no novel items; rates learnt)")


#: admin command -> (RPC, request from the arguments, how the answer is printed)
CALLS: dict[str, tuple[str, Callable[[argparse.Namespace], Any], Callable[[Any], None]]] = {
    "list": ("ListBaselines", lambda a: admin_pb2.ListBaselinesRequest(), _print_list),
    "get": ("GetBaseline", lambda a: admin_pb2.GetBaselineRequest(key=a.key), _print_details),
    "mode": ("SetMode", lambda a: admin_pb2.SetModeRequest(key=a.key, mode=f"MODE_{a.mode.upper()}"),
             lambda r: print(_fmt_baseline(r))),
    "reset": ("ResetBaseline", lambda a: admin_pb2.ResetBaselineRequest(key=a.key), lambda r: print(_fmt_baseline(r))),
    "feedback": ("Feedback", lambda a: admin_pb2.FeedbackRequest(event_id=a.event_id, comment=a.comment),
                 _print_feedback),
}


def _channel(args: argparse.Namespace) -> grpc.Channel:
    from baseliner.sensor.transport import channel_credentials

    if args.tls_ca or args.tls_cert or args.tls_key:
        return grpc.secure_channel(args.target, channel_credentials(args.tls_ca or None, args.tls_cert or None,
                                                                    args.tls_key or None))
    return grpc.insecure_channel(args.target)


def run(args: argparse.Namespace) -> int:
    from baseliner.service.auth import bearer_metadata

    rpc, request, show = CALLS[args.admin_command]
    metadata = bearer_metadata(args.token_file or "", os.environ.get("BASELINER_ADMIN_TOKEN", ""))
    with _channel(args) as channel:
        try:
            resp = getattr(admin_pb2_grpc.AdminStub(channel), rpc)(request(args), metadata=metadata,
                                                                   timeout=args.timeout)
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            details = e.details() if hasattr(e, "details") else e
            print(f"baseliner admin: {getattr(code, 'name', 'error')}: {details}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(MessageToDict(resp, preserving_proto_field_name=True), indent=2))
    else:
        show(resp)
    return 0
