"""The ``baseliner`` command: ``serve`` here; ``sensor``, ``demo``, ``evaluate``, ``admin``, ``baselines`` in
their own modules, each with ``add_parser(subparsers)`` and ``run(args) -> int``.

Only the module of the command being run is imported.  Errors are one line naming the problem (exit 2 for
bad input, 1 otherwise); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

from baseliner.sensor.cli_checks import DEBUG_HELP, examples, report

#: command -> (module, one-line help, an example)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "sensor": ("baseliner.sensor.cli", "run a sensor (synthetic, replay or eBPF source) streaming to a service",
               "baseliner sensor --source synthetic --target 127.0.0.1:50051"),
    "demo": ("baseliner.service.demo", "service + synthetic sensor in one command, with a summary",
             "baseliner demo"),
    "evaluate": ("baseliner.models.evaluate.cli", "evaluate detectors offline on datasets and recordings",
                 "baseliner evaluate adfa-ld --limit 200"),
    "admin": ("baseliner.service.admin", "inspect and operate baselines of a running service",
              "baseliner admin list"),
    "baselines": ("baseliner.service.baselines_cli", "export learned baselines to MLflow, import, diff, register",
                  "baseliner baselines export --state-dir /var/lib/baseliner --tracking-uri http://127.0.0.1:5000"),
}
SERVE_EXAMPLES = (
    "baseliner serve                    # gRPC on 127.0.0.1:50051, metrics on :9464, events to stdout",
    "baseliner serve --config baseliner.yaml --state-dir /var/lib/baseliner --events /var/log/baseliner/events.jsonl",
    "baseliner serve --model models:/baseliner@champion --tracking-uri http://127.0.0.1:5000",
    "baseliner serve --set baseline.min_learn_seconds=86400 --print-config",
)
#: serve flag -> setting
SERVE_FLAGS = {
    "listen": "grpc.listen", "metrics_listen": "metrics.listen", "state_dir": "state.dir",
    "hmac_key_file": "state.hmac_key_file", "events": "events.output", "image_key": "pipeline.image_key",
    "log_level": "log_level", "model": "model.uri", "tracking_uri": "model.tracking_uri",
    "registry_uri": "model.registry_uri",
}


# --------------------------------------------------------------------------------------------------
# serve


def add_serve_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve", help="run the service (gRPC ingest, baselines, events, metrics)",
        description="Run the Baseliner service. Settings: YAML (--config), BASELINER_* environment, flags.",
        epilog=examples(*SERVE_EXAMPLES), formatter_class=argparse.RawDescriptionHelpFormatter,
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


def run_serve(args: argparse.Namespace) -> int:
    import yaml
    from baseliner.service import config as config_mod
    from baseliner.service.server import serve

    flags = [(key, getattr(args, flag)) for flag, key in SERVE_FLAGS.items() if getattr(args, flag) is not None]
    cfg = config_mod.load(args.config, overrides=[*flags, *config_mod.parse_set(args.set)])
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    logging.getLogger().setLevel(cfg.log_level)
    asyncio.run(serve(cfg))
    return 0


# --------------------------------------------------------------------------------------------------
# dispatch


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser; only the module of the command in ``argv`` is imported (the others stay light)."""
    parser = argparse.ArgumentParser(
        prog="baseliner", description="Behavioural anomaly detection for containers.",
        epilog=examples(SERVE_EXAMPLES[0], *(example for _, _, example in COMMANDS.values())),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_serve_parser(sub).set_defaults(_run=run_serve)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text, example) in COMMANDS.items():
        if name != chosen:
            sub.add_parser(name, help=help_text, add_help=False).add_argument("rest", nargs=argparse.REMAINDER)
            continue
        module = importlib.import_module(module_name)
        p = module.add_parser(sub)
        p.set_defaults(_run=module.run)
        if p.epilog is None:  # a command without its own examples gets the one above
            p.epilog = f"example: {example}"
    if chosen in sub.choices and "--debug" not in sub.choices[chosen]._option_string_actions:
        sub.choices[chosen].add_argument("--debug", action="store_true", help=DEBUG_HELP)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), "")
    try:
        parser = build_parser(argv)
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # --help, or a usage error argparse has printed
            return int(e.code or 0)
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if "--debug" in argv:
            raise
        return report(f"baseliner {command}".rstrip(), e)


if __name__ == "__main__":
    sys.exit(main())
