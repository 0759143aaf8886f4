"""The ``baseliner`` command line: dispatch, examples in every --help, path options checked as they are parsed,
errors as one named line (the traceback only with --debug)."""

from __future__ import annotations

import argparse
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from baseliner.sensor import cli_bpf
from baseliner.service import cli

REPO = Path(__file__).resolve().parents[1]


def baseliner(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "baseliner.service.cli", *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def parsers(parser: argparse.ArgumentParser, name: str) -> list[tuple[str, argparse.ArgumentParser]]:
    """``parser`` and every parser below it, with their command lines."""
    out = [(name, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                out += parsers(sub, f"{name} {sub_name}")
    return out


def test_every_help_shows_an_example() -> None:
    seen = []
    for command in ("serve", *cli.COMMANDS):
        top = cli.build_parser([command])
        chosen = top._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
        for name, p in parsers(chosen, f"baseliner {command}"):
            assert "example" in p.format_help(), name
            seen.append(name)
    assert "example" in cli.build_parser([]).format_help()
    with pytest.raises(SystemExit):
        cli_bpf.main(["--help"])
    assert len(seen) >= 15  # baseliner serve ... admin list/get/mode/reset/feedback, baselines diff/register/...


def test_help_examples_parse() -> None:
    """The examples of every --help parse (a renamed option breaks this test, not a reader)."""
    lines = set()
    for command in ("serve", *cli.COMMANDS):
        chosen = cli.build_parser([command])._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
        for _, p in parsers(chosen, command):
            lines |= {line.strip().split("  #")[0] for line in p.format_help().splitlines()
                      if line.strip().startswith(("baseliner ", "example: baseliner "))}
    examples = sorted(shlex.split(line.removeprefix("example: "))[1:] for line in lines if "..." not in line)
    assert len(examples) >= 20
    for argv in examples:
        for i in range(1, len(argv)):  # files the examples name need not exist here
            option = argv[i - 1]
            if option in ("--tls-ca", "--token-file", "--state-key-file", "--signing-key-file", "--state-dir", "--out",
                          "--spool-key-file"):
                argv[i] = {"--state-dir": "/", "--out": "/tmp/x.jsonl"}.get(option, __file__)
        cli.build_parser(argv).parse_args(argv)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sensor", "--token-file", "{missing}"], "argument --token-file: '{missing}' is not a readable file"),
        (["sensor", "--tls-ca", "{missing}"], "argument --tls-ca: '{missing}' is not a readable file"),
        (["sensor", "--tls-cert", "{missing}", "--tls-key", "{missing}"], "argument --tls-cert:"),
        (["sensor", "--spool-key-file", "{tmp}"], "argument --spool-key-file: '{tmp}' is not a readable file"),
        (["sensor", "--spool-dir", "{file}/spool"], "argument --spool-dir: '{file}/spool' cannot be made"),
        (["sensor", "record", "--out", "{missing}/rec.jsonl"], "directory '{missing}' does not exist"),
        (["sensor", "--labels", "{tmp}"], "argument --labels: '{tmp}' is a directory, not a file"),
        (["sensor", "--source", "replay", "{missing}"], "--source replay '{missing}' is not a readable file"),
        (["admin", "--token-file", "{missing}", "list"], "argument --token-file: '{missing}' is not a readable file"),
        (["admin", "--tls-key", "{missing}", "list"], "argument --tls-key:"),
        (["baselines", "export", "--state-dir", "{missing}"], "argument --state-dir: '{missing}' is not a directory"),
        (["baselines", "register", "x:1", "--name", "m", "--state-dir", "{tmp}", "--state-key-file", "{missing}",
          "--signing-key-file", "{file}"], "argument --state-key-file: '{missing}' is not a readable file"),
        (["baselines", "register", "x:1", "--name", "m", "--state-dir", "{tmp}", "--state-key-file", "{file}",
          "--signing-key-file", "{missing}"], "argument --signing-key-file: '{missing}' is not a readable file"),
        (["baselines", "import", "r", "--state-dir", "{file}/state"], "argument --state-dir: '{file}/state' cannot"),
        (["serve", "--events", "{missing}/events.jsonl"], "events.output '{missing}/events.jsonl': directory"),
        (["serve", "--state-dir", "{file}/state"], "state.dir '{file}/state': '{file}' is not a directory"),
        (["serve", "--state-key-file", "{missing}"], "state.key_file '{missing}' is not a readable file"),
        (["serve", "--state-dir", "{tmp}/state"], "state.dir needs state.key_file"),
        (["serve", "--config", "{missing}"], "cannot read configuration file {missing}"),
        (["serve", "--model", "{missing}"], "model.uri needs model.trusted_keys_file"),
        (["sensor", "--spool-dir", "{tmp}/spool"], "--spool-dir needs --spool-key-file"),
    ],
)
def test_file_and_directory_options_are_checked_at_start(tmp_path: Path, argv: list[str], message: str) -> None:
    names = {"missing": str(tmp_path / "missing"), "tmp": str(tmp_path), "file": str(tmp_path / "file")}
    (tmp_path / "file").write_text("")
    r = baseliner(*(a.format(**names) for a in argv), "--listen", "127.0.0.1:0", "--metrics-listen", "") \
        if argv[0] == "serve" else baseliner(*(a.format(**names) for a in argv))
    assert r.returncode in (1, 2) and message.format(**names) in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_errors_are_one_line_and_the_traceback_needs_debug() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = ("serve", "--listen", f"127.0.0.1:{port}", "--metrics-listen", "", "--events", "none")
        r = baseliner(*argv)
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert f"baseliner serve: grpc.listen 127.0.0.1:{port}: cannot listen there" in r.stderr
        for debug in (["--debug", *argv], [*argv, "--debug"]):
            r = baseliner(*debug)
            assert r.returncode == 1 and "Traceback" in r.stderr and "RuntimeError: Failed to bind" in r.stderr


def test_a_broken_command_says_what_is_missing_and_the_others_work(capsys: pytest.CaptureFixture[str]) -> None:
    r = baseliner("--help")
    for name in ("serve", "sensor", "demo", "evaluate", "admin", "baselines"):
        assert f"    {name} " in r.stdout or f"    {name}\n" in r.stdout, name
    cli.COMMANDS["broken"] = ("nope.cli", "test", "baseliner broken")
    try:
        assert cli.main(["broken", "x"]) == 1
        assert "baseliner broken: unexpected ModuleNotFoundError: No module named 'nope'" in capsys.readouterr().err
        assert cli.main(["serve", "--print-config"]) == 0
    finally:
        del cli.COMMANDS["broken"]
    r = baseliner("serve", "--print-config", "--set", "baseline.min_learn_windows=99")
    assert r.returncode == 0 and "min_learn_windows: 99" in r.stdout
    r = baseliner("serve", "--listen", "bad")
    assert r.returncode == 2 and "grpc.listen: 'bad' is not host:port" in r.stderr


def test_baselines_commands_need_a_named_mlflow_server_and_write_nothing_here(tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    r = subprocess.run([sys.executable, "-m", "baseliner.service.cli", "baselines", "diff", "run-a", "run-b"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == (
        "baseliner baselines: no MLflow tracking server: give --tracking-uri or set MLFLOW_TRACKING_URI")
    assert list(tmp_path.iterdir()) == []
