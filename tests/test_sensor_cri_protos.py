"""The committed generated code of the trimmed CRI definition (protos/cri/) is exactly what
scripts/gen_cri_protos.sh produces, and the definition keeps its license and source beside it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CRI = REPO / "protos" / "cri"
GENERATED = ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py")


def test_regenerating_the_cri_protos_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "gen_cri_protos.sh", tmp_path / "scripts" / "gen_cri_protos.sh")
    dst = tmp_path / "protos" / "cri"
    dst.mkdir(parents=True)
    shutil.copy(CRI / "api.proto", dst / "api.proto")
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable}  # what the script runs instead of .venv's
    subprocess.run(["bash", str(tmp_path / "scripts" / "gen_cri_protos.sh")], cwd=tmp_path, env=env, check=True,
                   timeout=120)
    for name in GENERATED:
        assert (dst / name).read_bytes() == (CRI / name).read_bytes(), f"{name} differs from a fresh generation"


def test_the_definition_keeps_its_license_and_version() -> None:
    assert "Apache License" in (CRI / "LICENSE").read_text()
    head = (CRI / "api.proto").read_text()[:2000]
    assert "Licensed under the Apache License, Version 2.0" in head
    assert "tag v0.36.3" in head and "package runtime.v1;" in (CRI / "api.proto").read_text()
    assert "v0.36.3" in (CRI / "README.md").read_text()


def test_the_grpc_method_paths_are_the_cri_ones() -> None:
    from baseliner.protos.cri import api_pb2

    svc = api_pb2.DESCRIPTOR.services_by_name["RuntimeService"]
    assert svc.full_name == "runtime.v1.RuntimeService"
    assert {"ListContainers", "ContainerStatus", "PodSandboxStatus", "Version"} <= set(svc.methods_by_name)
    assert api_pb2.DESCRIPTOR.services_by_name["ImageService"].methods_by_name["ImageStatus"]
