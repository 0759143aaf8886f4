"""The quick start's install: ``scripts/demo.sh`` installs the project alone, ``scripts/bootstrap.sh`` everything.

A real install into a fresh virtualenv of a copy of the repository (about a minute and a half here).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# What `pip install -e .` needs; none of it is written to.
PROJECT = ["pyproject.toml", "README.md", "scripts", "models", "service", "sensor", "protos"]
# Distributions of the extras (dev, mlflow) that the demo needs none of.
EXTRAS_ONLY = {"pytest", "mypy", "ruff", "hypothesis", "atheris", "nbmake", "ipykernel", "jupyter-client", "mlflow"}


def copy_project(dest: Path) -> Path:
    dest.mkdir()
    for name in PROJECT:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def distributions(venv_python: Path) -> set[str]:
    code = "import importlib.metadata as m, json; print(json.dumps([d.metadata['Name'] for d in m.distributions()]))"
    names = json.loads(subprocess.run([str(venv_python), "-c", code], capture_output=True, text=True,
                                      check=True).stdout)
    return {n.lower().replace("_", "-") for n in names}


def test_demo_installs_only_the_project_with_visible_progress(tmp_path: Path) -> None:
    repo = copy_project(tmp_path / "repo")
    first = subprocess.run(["scripts/demo.sh", "--help"], cwd=repo, capture_output=True, text=True, timeout=1200)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "usage:" in first.stdout and "demo" in first.stdout
    assert "[bootstrap] installing the project into .venv, without the test and MLflow extras" in first.stderr
    assert "Collecting grpcio" in first.stderr and "Successfully installed" in first.stderr  # pip's progress
    installed = distributions(repo / ".venv" / "bin" / "python")
    assert "baseliner" in installed and "grpcio" in installed
    assert not installed & EXTRAS_ONLY, f"the demo's install has extras: {sorted(installed & EXTRAS_ONLY)}"

    again = subprocess.run(["scripts/demo.sh", "--help"], cwd=repo, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "installing" not in again.stderr, again.stderr[-3000:]

    # The test command's bootstrap is not satisfied by the demo's install: it installs the extras. (Given
    # no package index here, pip fails at once; the attempt is what this checks.)
    empty = tmp_path / "no-packages"
    empty.mkdir()
    env = dict(os.environ, BASELINER_NO_APT="1", PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1",
               PIP_FIND_LINKS=str(empty))
    env.pop("BASELINER_EXTRAS", None)
    full = subprocess.run(["scripts/bootstrap.sh"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert "[bootstrap] installing the project with its extras [dev,mlflow] into .venv" in full.stderr
    assert full.returncode != 0 and "No matching distribution" in full.stderr, full.stderr[-3000:]
