"""The docs, run as written: every ```sh block of the README and ``docs/*.md``, in order, per document.

Each document runs in one bash shell (so ``&``, ``cd`` and variables carry over from command to command, as in a
reader's terminal) from the root of a fresh copy of the repository (its ``.venv`` linked to this one), with a
home directory of its own, and with the real servers the document starts itself (MLflow, the service, the
sensor).  A command that exits with an error, a command sent to the background that ends with one, or a
document that does not finish in time fails the test, naming the document, the block (its line) and the
command.  The docs are written for CI (root on a fresh machine): elsewhere, without root, this test skips;
with ``CI`` set it fails instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.docs_blocks import Block, fenced_blocks, repeated, runnable_blocks, script

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = ["README.md", *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").glob("*.md"))]
#: the ports the docs' servers take (MLflow, console, Prometheus, metrics, gRPC): taken, the docs cannot run
PORTS = (5000, 8080, 9090, 9464, 9465, 50051)
TIMEOUT_SECONDS = 1500  # per document; the slowest (docs/mlflow.md: the MLflow server and the notebooks) takes minutes
SETTLE_SECONDS = 10.0
#: what a copy of the repository leaves out (the virtualenv is linked, outputs are made afresh)
NOT_COPIED = shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info", ".mypy_cache", ".ruff_cache",
                                    ".pytest_cache", ".hypothesis", "state", "out", "mlruns", "evaluation",
                                    "mlflow-data", "test-artifacts")


def test_every_block_is_tagged() -> None:
    """sh, console, text or a language: a reader (and this test) knows what each block is."""
    untagged = [f"{doc}:{b.line}" for doc in DOCUMENTS
                for b in fenced_blocks((REPO / doc).read_text(encoding="utf-8").splitlines()) if not b.lang]
    assert not untagged, f"untagged code blocks: {untagged}"


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the docs' sh blocks are written for root (as CI runs them)"
    for port in PORTS:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return f"127.0.0.1:{port}, which the docs' servers use, is taken by another process"
    stamps = list((REPO / ".venv").glob(".baseliner-installed*"))
    if not stamps or (REPO / "pyproject.toml").stat().st_mtime > min(p.stat().st_mtime for p in stamps):
        # the docs' scripts/bootstrap.sh would reinstall the linked .venv from the copy, pointing it there
        return ".venv is older than pyproject.toml: run scripts/bootstrap.sh first"
    return None


def _require_machine() -> None:
    problem = _unavailable()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem + " (CI is set: the docs must run)")
        pytest.skip(problem)


def _copy_repository(dest: Path) -> Path:
    root = dest / "repo"
    shutil.copytree(REPO, root, ignore=NOT_COPIED, symlinks=True)  # copy2: mtimes kept, bootstrap's stamp holds
    (root / ".venv").symlink_to(REPO / ".venv")
    return root


def _environment(home: Path, status: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BASELINER_", "MLFLOW_", "PYTEST_", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), BASELINER_DOCS_STATUS=str(status), MLFLOW_DISABLE_TELEMETRY="true",
               DO_NOT_TRACK="true")
    return env


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop what the document left running (its servers), as a reader's Ctrl-C would: SIGTERM to every process
    the document started, SIGKILL to what is left after 30 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (proc.poll() is None or _group_alive(proc.pid)):
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _describe(doc: str, blocks: list[Block], step: str) -> str:
    b, c = (int(x) for x in step.split()[:2])
    command = blocks[b].commands[c]
    return f"{doc}, block {b + 1} (```sh at line {blocks[b].line}), command {c + 1}: {command}"


def _verdict(doc: str, blocks: list[Block], status: Path, timed_out: bool, timeout: float, log: Path) -> str | None:
    notes = status.read_text().splitlines() if status.exists() else []
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-60:])
    failed = [n for n in notes if n.startswith("fail ")]
    if failed:
        _, b, c, rc = failed[0].split()
        return f"{_describe(doc, blocks, f'{b} {c}')}\n  exited with status {rc}; the output's end:\n{tail}"
    started = [n.removeprefix("start ") for n in notes if n.startswith("start ")]
    if timed_out:
        last = _describe(doc, blocks, started[-1]) if started else doc
        return f"{last}\n  still running after {timeout:g} s; the output's end:\n{tail}"
    if "done" not in notes:
        last = _describe(doc, blocks, started[-1]) if started else doc
        return f"{last}\n  the shell ended before the document did; the output's end:\n{tail}"
    return None


def run_document(doc: str, blocks: list[Block], root: Path, work: Path, timeout: float = TIMEOUT_SECONDS,
                 settle: float = SETTLE_SECONDS, skip: dict[int, str] | None = None) -> str | None:
    """Run ``blocks`` in one shell from ``root``; what went wrong, naming document, block and command, or None."""
    home = work / "home"
    home.mkdir()
    status, log = work / "status", work / "output.log"
    (work / "doc.sh").write_text(script(blocks, settle, skip))
    with log.open("wb") as out:
        proc = subprocess.Popen(["bash", str(work / "doc.sh")], cwd=root, env=_environment(home, status),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _stop_group(proc)
    return _verdict(doc, blocks, status, timed_out, timeout, log)


def _blocks(text: str) -> list[Block]:
    return [b for b in fenced_blocks(text.splitlines()) if b.lang == "sh"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("```sh\ntrue\n```\n```sh\necho a \\\n  b\nfalse  # fails\n```", "block 2 (```sh at line 4), command 2: false"),
        ("```sh\nsleep 0.2 && exit 3 &\nsleep 1\n```", "block 1 (```sh at line 1), command 1: sleep 0.2"),
        ("```sh\n(sleep 0.5; exit 4) &\n```", "command 1: (sleep 0.5; exit 4) &\n  exited with status 4"),
        ("```sh\n(sleep 0.5; exit 4) &\nuntil false; do sleep 0.1; done\n```", "command 1: (sleep 0.5; exit 4) &"),
        ("```sh\nbash -c 'trap \"exit 0\" TERM; sleep 5 & wait' &\nsleep 0.5\nkill %1 && wait %1\n```", None),
        ("```sh\nsleep 5 &\nsleep 0.5\nkill %1\nsleep 1\n```", "command 1: sleep 5 &\n  exited with status 143"),
        ("```sh\nsleep 30\n```", "command 1: sleep 30\n  still running after 4 s"),
        ("```sh\nexit 0\n```", "the shell ended before the document did"),
        ("```sh\nx=1\ntest $x = 1\nscripts/test.sh -k x\n```\n```console\nfalse\n```", None),
    ],
)
def test_a_failing_command_is_named(text: str, expected: str | None, tmp_path: Path) -> None:
    """The runner itself: failures in the foreground and the background, hangs and early exits are named."""
    problem = run_document("doc.md", _blocks(text), tmp_path, tmp_path, timeout=4, settle=1)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and expected in problem, problem


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.timeout(TIMEOUT_SECONDS + 120)
@pytest.mark.parametrize("doc", [d for d in DOCUMENTS if runnable_blocks(REPO / d)])
def test_documented_commands_run(doc: str, tmp_path: Path) -> None:
    blocks = runnable_blocks(REPO / doc)
    skip = {i: f"the same commands run in {earlier.relative_to(REPO)}"
            for (path, i), earlier in repeated([REPO / d for d in DOCUMENTS]).items() if path == REPO / doc}
    if len(skip) == len(blocks):
        return  # every block of this document runs with an earlier one
    _require_machine()
    problem = run_document(doc, blocks, _copy_repository(tmp_path), tmp_path, skip=skip)
    if problem:
        pytest.fail(problem, pytrace=False)
