"""``baseliner admin``: list / get / mode / reset / feedback against a running service (gRPC client)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

import grpc
from baseliner.protos.v1 import admin_pb2, admin_pb2_grpc
from google.protobuf.json_format import MessageToDict

DEFAULT_TARGET = "127.0.0.1:50051"
MODES = ("auto", "learn", "detect", "freeze")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "admin", help="inspect and operate baselines of a running service",
        description="Admin calls against a running `baseliner serve`.",
    )
    p.add_argument("--target", default=DEFAULT_TARGET, help=f"service address (default {DEFAULT_TARGET})")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
    p.add_argument("--json", action="store_true", help="print the raw response as JSON")
    p.add_argument("--token-file", help="file holding an admin token (grpc.admin_tokens_file on the service); "
                                        "also BASELINER_ADMIN_TOKEN")
    p.add_argument("--tls-ca", help="verify the service's certificate against this CA (enables TLS)")
    p.add_argument("--tls-cert", help="client certificate for mutual TLS (with --tls-key)")
    p.add_argument("--tls-key", help="client private key for mutual TLS")
    sub = p.add_subparsers(dest="admin_command", required=True)
    sub.add_parser("list", help="all baselines and their state")
    g = sub.add_parser("get", help="one baseline with its learned statistics")
    g.add_argument("key", help="image key, e.g. nginx:1.27")
    m = sub.add_parser("mode", help="set a baseline's mode")
    m.add_argument("key")
    m.add_argument("mode", choices=MODES)
    r = sub.add_parser("reset", help="forget what a baseline learnt")
    r.add_argument("key")
    f = sub.add_parser("feedback", help="accept an anomaly event's behaviour into its baseline")
    f.add_argument("event_id")
    f.add_argument("--comment", default="")
    return p


def _fmt_baseline(b: admin_pb2.Baseline) -> str:
    state = admin_pb2.State.Name(b.state).removeprefix("STATE_").lower()
    mode = admin_pb2.Mode.Name(b.mode).removeprefix("MODE_").lower()
    thr = f"{b.threshold:.3g}" if b.threshold else "-"
    return (f"{b.key:40s} {state:10s} {mode:7s} learned={b.windows_learned:<8d} scored={b.windows_scored:<8d} "
            f"anomalies={b.anomalies:<6d} threshold={thr}")


def run(args: argparse.Namespace) -> int:
    import os

    from baseliner.service.auth import bearer_metadata, channel_credentials

    if args.tls_ca or args.tls_cert or args.tls_key:
        channel = grpc.secure_channel(args.target, channel_credentials(args.tls_ca or "", args.tls_cert or "",
                                                                       args.tls_key or ""))
    else:
        channel = grpc.insecure_channel(args.target)
    md = bearer_metadata(args.token_file or "", os.environ.get("BASELINER_ADMIN_TOKEN", ""))
    stub = _WithMetadata(admin_pb2_grpc.AdminStub(channel), md)
    t = args.timeout
    try:
        cmd = args.admin_command
        resp: Any
        if cmd == "list":
            resp = stub.ListBaselines(admin_pb2.ListBaselinesRequest(), timeout=t)
            if not args.json:
                if not resp.baselines:
                    print("no baselines yet")
                for b in resp.baselines:
                    print(_fmt_baseline(b))
        elif cmd == "get":
            resp = stub.GetBaseline(admin_pb2.GetBaselineRequest(key=args.key), timeout=t)
            if not args.json:
                print(_fmt_baseline(resp))
                print(f"  serialized {resp.serialized_bytes} bytes, detector {resp.detector}, "
                      f"learned over {resp.learned_seconds:.0f}s of event time")
                for name, items in (("executables", resp.executables), ("syscalls", resp.syscalls),
                                    ("remote ports", resp.remote_ports), ("sensitive paths", resp.sensitive_paths)):
                    shown = ", ".join(list(items)[:20]) + (" ..." if len(items) > 20 else "")
                    print(f"  {name} ({len(items)}): {shown}")
                for f in resp.features:
                    if f.mean > 0 and math.isfinite(f.typical):
                        print(f"  {f.name:32s} typical {f.typical:10.3g} {f.unit}"
                              f"  (log-rate {f.mean:.3f} ± {f.std:.3f})")
        elif cmd == "mode":
            resp = stub.SetMode(
                admin_pb2.SetModeRequest(key=args.key, mode=f"MODE_{args.mode.upper()}"),
                timeout=t,
            )
            if not args.json:
                print(_fmt_baseline(resp))
        elif cmd == "reset":
            resp = stub.ResetBaseline(admin_pb2.ResetBaselineRequest(key=args.key), timeout=t)
            if not args.json:
                print(_fmt_baseline(resp))
        elif cmd == "feedback":
            resp = stub.Feedback(admin_pb2.FeedbackRequest(event_id=args.event_id, comment=args.comment), timeout=t)
            if not args.json:
                print(_fmt_baseline(resp.baseline))
                print("accepted:", ", ".join(resp.accepted_items) or "(no novel items; rates learnt)")
        else:  # argparse enforces the choices
            raise AssertionError(cmd)
        if args.json:
            print(json.dumps(MessageToDict(resp, preserving_proto_field_name=True), indent=2))
        return 0
    except grpc.RpcError as e:
        code = e.code() if hasattr(e, "code") else None
        print(f"baseliner admin: {getattr(code, 'name', 'error')}: {e.details() if hasattr(e, 'details') else e}",
              file=sys.stderr)
        return 1
    finally:
        channel.close()


class _WithMetadata:
    """Adds the admin token to every call of a stub."""

    def __init__(self, stub: Any, metadata: tuple[tuple[str, str], ...]) -> None:
        self._stub = stub
        self._metadata = metadata

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)
        return lambda request, **kw: method(request, metadata=self._metadata, **kw)
