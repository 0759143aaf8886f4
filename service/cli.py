"""The ``baseliner`` command: ``serve``, ``sensor``, ``demo``, ``evaluate``, ``admin``.

Each subcommand lives in its own module with ``add_parser(subparsers)`` and ``run(args) -> int``;
this file only dispatches.  A subcommand whose module cannot be imported is still listed, and running
it says exactly what is missing instead of disappearing from the help.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

from models.errors import BaselinerError, ConfigError

log = logging.getLogger(__name__)

#: subcommand -> modules that may provide it (first importable wins)
PLUGINS: dict[str, tuple[str, ...]] = {
    "sensor": ("sensor.cli",),
    "demo": ("service.demo", "sensor.demo"),
    "evaluate": ("models.evaluate.cli",),
    "admin": ("service.admin",),
}


# --------------------------------------------------------------------------------------------------
# serve


def add_serve_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve", help="run the service (gRPC ingest, baselines, events, metrics)",
        description="Run the Baseliner service. Settings: YAML (--config), BASELINER_* environment, flags.",
    )
    p.add_argument("--config", help="YAML configuration file (also BASELINER_CONFIG)")
    p.add_argument("--listen", help="gRPC host:port (grpc.listen, default 127.0.0.1:50051)")
    p.add_argument("--metrics-listen", help='metrics host:port (metrics.listen, default 127.0.0.1:9464; "" = off)')
    p.add_argument("--state-dir", help="state directory (state.dir); none = in memory only")
    p.add_argument("--hmac-key-file", help="file holding the state integrity key (state.hmac_key_file)")
    p.add_argument("--events", help='anomaly events: "-" (stdout), a file path, or "none" (events.output)')
    p.add_argument("--image-key", choices=("tag", "digest", "repository"), help="pipeline.image_key")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="any setting, e.g. --set baseline.min_learn_windows=120 (repeatable)")
    p.add_argument("--print-config", action="store_true", help="print the effective configuration and exit")
    return p


def serve_overrides(args: argparse.Namespace) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for flag, key in (
        ("listen", "grpc.listen"), ("metrics_listen", "metrics.listen"), ("state_dir", "state.dir"),
        ("hmac_key_file", "state.hmac_key_file"), ("events", "events.output"),
        ("image_key", "pipeline.image_key"), ("log_level", "log_level"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            out.append((key, value))
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE")
        out.append((key.strip(), value))
    return out


def run_serve(args: argparse.Namespace) -> int:
    import yaml

    from service import config as config_mod
    from service.server import serve

    cfg = config_mod.load(args.config, overrides=serve_overrides(args))
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    logging.getLogger().setLevel(cfg.log_level.upper())
    asyncio.run(serve(cfg))
    return 0


# --------------------------------------------------------------------------------------------------
# dispatch


def _missing(name: str, modules: Sequence[str], error: BaseException) -> Any:
    def run(_args: argparse.Namespace) -> int:
        print(
            f"baseliner {name}: not available in this installation: cannot import "
            f"{' or '.join(modules)} ({error})",
            file=sys.stderr,
        )
        return 2

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="baseliner", description="Behavioural anomaly detection for containers."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_p = add_serve_parser(sub)
    serve_p.set_defaults(_run=run_serve)
    for name, modules in PLUGINS.items():
        mod = None
        error: BaseException | None = None
        for modname in modules:
            try:
                mod = importlib.import_module(modname)
                break
            except ModuleNotFoundError as e:
                # only "this module does not exist" falls through; a broken module's own import error
                # is reported as it is
                if e.name is not None and modname.startswith(e.name):
                    error = e
                    continue
                raise
        if mod is None:
            p = sub.add_parser(name, help=f"(not available: {' or '.join(modules)} missing)")
            p.add_argument("rest", nargs=argparse.REMAINDER)
            p.set_defaults(_run=_missing(name, modules, error or ImportError(modules[0])))
            continue
        mod.add_parser(sub)
        sub.choices[name].set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except ConfigError as e:
        print(f"baseliner {args.command}: {e}", file=sys.stderr)
        return 2
    except BaselinerError as e:  # state refused, etc.: a clear message, no traceback
        print(f"baseliner {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
