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

from baseliner.models.errors import BaselinerError, ConfigError

log = logging.getLogger(__name__)

#: subcommand -> (modules that may provide it, first importable wins; one-line help)
PLUGINS: dict[str, tuple[tuple[str, ...], str]] = {
    "sensor": (("baseliner.sensor.cli",), "run a sensor (synthetic, replay or eBPF source) streaming to a service"),
    "demo": (("baseliner.service.demo",), "service + synthetic sensor in one command, with a summary"),
    "evaluate": (("baseliner.models.evaluate.cli",), "evaluate detectors offline on datasets and recordings"),
    "admin": (("baseliner.service.admin",), "inspect and operate baselines of a running service"),
    "baselines": (("baseliner.service.baselines_cli",),
                  "export learned baselines to MLflow (one artifact per image), import"),
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
    p.add_argument("--model", help="MLflow model as the template for new baselines: models:/NAME@ALIAS, "
                   "models:/NAME/VERSION or a path (model.uri); SIGHUP reloads it")
    p.add_argument("--tracking-uri", help="MLflow tracking server for --model (model.tracking_uri)")
    p.add_argument("--registry-uri", help="MLflow model registry for --model (model.registry_uri; default: the "
                   "tracking server)")
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
        ("model", "model.uri"), ("tracking_uri", "model.tracking_uri"), ("registry_uri", "model.registry_uri"),
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
    from baseliner.service import config as config_mod
    from baseliner.service.server import serve

    cfg = config_mod.load(args.config, overrides=serve_overrides(args))
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    logging.getLogger().setLevel(cfg.log_level.upper())
    asyncio.run(serve(cfg))
    return 0


# --------------------------------------------------------------------------------------------------
# dispatch


def _unavailable(name: str, modules: Sequence[str], error: BaseException) -> Any:
    def run(_args: argparse.Namespace) -> int:
        print(
            f"baseliner {name}: not available: cannot load {' or '.join(modules)} "
            f"({type(error).__name__}: {error})",
            file=sys.stderr,
        )
        return 2

    return run


def _load(modules: Sequence[str]) -> tuple[Any, BaseException | None]:
    """The first importable module of ``modules`` (or None and the error that says why)."""
    error: BaseException | None = None
    for modname in modules:
        try:
            return importlib.import_module(modname), None
        except ModuleNotFoundError as e:
            error = e
            if e.name is not None and modname.startswith(e.name):
                continue  # this candidate does not exist: try the next
            return None, e  # it exists but needs something missing: report that
        except Exception as e:  # a broken plugin must not break the other subcommands
            return None, e
    return None, error or ImportError(modules[0])


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser. Only the subcommand being run has its module imported (others stay light)."""
    parser = argparse.ArgumentParser(
        prog="baseliner", description="Behavioural anomaly detection for containers."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_p = add_serve_parser(sub)
    serve_p.set_defaults(_run=run_serve)
    args = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in args if not a.startswith("-")), None)
    for name, (modules, help_text) in PLUGINS.items():
        if name != chosen:
            p = sub.add_parser(name, help=help_text, add_help=False)
            p.add_argument("rest", nargs=argparse.REMAINDER)
            continue
        mod, error = _load(modules)
        if mod is None:
            p = sub.add_parser(name, help=f"{help_text} (not available)")
            p.add_argument("rest", nargs=argparse.REMAINDER)
            p.set_defaults(_run=_unavailable(name, modules, error or ImportError(modules[0])))
            continue
        mod.add_parser(sub)
        sub.choices[name].set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    parser = build_parser(argv)
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
