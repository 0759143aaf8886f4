"""The project installs as the baseliner.* namespace and squats on no common top-level name."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("models", "protos", "sensor", "service")


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_every_package_folder_is_listed_under_the_namespace() -> None:
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = {
        "baseliner." + ".".join(init.parent.relative_to(REPO).parts)
        for folder in FOLDERS
        for init in (REPO / folder).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found == listed


def test_folders_map_to_the_namespace() -> None:
    mapping = _pyproject()["tool"]["setuptools"]["package-dir"]
    assert mapping == {f"baseliner.{f}": f for f in FOLDERS}


def test_packages_import_from_the_namespace_only() -> None:
    for folder in FOLDERS:
        mod = importlib.import_module(f"baseliner.{folder}")
        assert Path(mod.__file__).resolve().parent == REPO / folder
    for source in (REPO / f for f in FOLDERS):
        for py in source.rglob("*.py"):
            text = py.read_text()
            for folder in FOLDERS:
                assert f"\nfrom {folder}." not in text and f"\nimport {folder}\n" not in text, py
