"""Every notebook runs top to bottom, headless, on small data, against a local MLflow store.

Parameters are injected after each notebook's ``parameters`` cell, as papermill does.  The notebooks are
committed without outputs (checked here too).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import nbformat
import pytest
from baseliner.models.evaluate.adfa import DEFAULT_PATH as ADFA_ZIP
from mlflow import MlflowClient
from nbclient import NotebookClient

from tests.mlflow_server import free_port, mlflow_server

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
pytestmark = pytest.mark.slow

SMALL_SCENARIO = {"HOURS": 4.5, "ATTACK_AFTER_HOURS": 0.6}


def execute(name: str, params: dict[str, Any]) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    source = "\n".join(f"{k} = {json.dumps(v) if not isinstance(v, dict) else repr(v)}" for k, v in params.items())
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb


def jupyter_execute(name: str, params: dict[str, Any], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """The documented headless command: ``jupyter execute`` with ``BASELINER_NB_PARAMS``."""
    jupyter = str(Path(sys.executable).with_name("jupyter"))
    env = dict(os.environ, BASELINER_NB_PARAMS=json.dumps(params), MLFLOW_DISABLE_TELEMETRY="true")
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([jupyter, "execute", str(NOTEBOOKS / f"{name}.ipynb")], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def outputs_text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            parts.append(o.get("text", "") or json.dumps(o.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for c in nb.cells:
        if c.cell_type == "code":
            assert not c.outputs and c.execution_count is None, f"{path.name}: outputs are committed"


def test_explore_recording(tmp_path: Path) -> None:
    nb = execute("explore_recording", {**SMALL_SCENARIO, "WORK_DIR": str(tmp_path),
                                       "BASELINE": {"min_learn_seconds": 1800}})
    text = outputs_text(nb)
    assert "labelled attacks" in text and "windows flagged" in text
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for c in nb.cells for o in c.get("outputs", []))


def test_train_and_register(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    nb = execute("train_and_register", {**SMALL_SCENARIO, "WORK_DIR": str(tmp_path), "TRACKING_URI": uri,
                                        "MODEL_NAME": "nb-model", "IFOREST_TREES": 20,
                                        "CANDIDATES": {"default": {}, "learn-30min": {"min_learn_seconds": 1800}}})
    assert "baseliner serve --model models:/nb-model@champion" in outputs_text(nb)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mv = client.get_model_version_by_alias("nb-model", "champion")
    mlflow.set_tracking_uri(uri)
    try:
        from baseliner.models import mlflow_model as mm

        model = mm.load_model("models:/nb-model@champion")
        assert not model.warm
        runs = mlflow.search_runs(experiment_names=["baseliner-train"])
        assert len(runs) == 4  # parent + two Baseliner candidates + IsolationForest
        assert runs["metrics.roc_auc"].notna().sum() == 3
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    assert int(mv.version) == 1


@pytest.mark.skipif(not ADFA_ZIP.is_file(), reason=f"ADFA-LD not beside the clone ({ADFA_ZIP})")
def test_benchmark_adfa(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    nb = execute("benchmark_adfa", {"LIMIT_PER_SPLIT": 30, "WORK_DIR": str(tmp_path), "TRACKING_URI": uri})
    assert "logged run" in outputs_text(nb)
    mlflow.set_tracking_uri(uri)
    try:
        runs = mlflow.search_runs(experiment_names=["baseliner-adfa-ld"])
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    assert len(runs) == 1
    aucs = [c for c in runs.columns if c.startswith("metrics.") and c.endswith("/roc_auc")]
    assert len(aucs) >= 4  # Baseliner models and the classic baselines, in the same run
    assert (tmp_path / "adfa-report" / "report.md").is_file()


@pytest.mark.parametrize("name", ["train_and_register", "benchmark_adfa"])
def test_notebook_stops_at_once_without_its_tracking_server(tmp_path: Path, name: str) -> None:
    # MLflow itself retries an unreachable server for minutes, then ends in a long traceback.
    uri = f"http://127.0.0.1:{free_port()}"
    proc = jupyter_execute(name, {"TRACKING_URI": uri, "WORK_DIR": str(tmp_path)}, tmp_path, timeout=120)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"NotebookStop: MLflow tracking server {uri} is unreachable"), proc.stderr[-3000:]
    assert "docs/mlflow.md" in last
    assert not list(tmp_path.iterdir()), "the notebook went on before failing"


def test_train_and_register_headless_shows_what_it_registered(tmp_path: Path) -> None:
    server_dir, cwd = tmp_path / "server", tmp_path / "cwd"
    server_dir.mkdir()
    cwd.mkdir()
    with mlflow_server(server_dir) as url:
        params = {**SMALL_SCENARIO, "WORK_DIR": str(tmp_path / "work"), "TRACKING_URI": url, "IFOREST_TREES": 20,
                  "CANDIDATES": {"default": {}, "learn-30min": {"min_learn_seconds": 1800}}}
        proc = jupyter_execute("train_and_register", params, cwd, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        client = MlflowClient(tracking_uri=url, registry_uri=url)
        mv = client.get_model_version_by_alias("baseliner", "champion")
    out = proc.stdout
    assert f"MLflow tracking: {url}" in out
    assert f"registered model 'baseliner' version {mv.version} (candidate " in out
    assert f"run {mv.run_id}); alias 'champion' -> version {mv.version}" in out
    assert "<- registered" in out and "isolation-forest" in out
    assert f"serve it: .venv/bin/baseliner serve --model models:/baseliner@champion --tracking-uri {url}" in out
    assert not list(cwd.iterdir()), "written to the working directory"
