"""The committed generated protobuf/gRPC code is exactly what scripts/gen_protos.sh produces."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GENERATED = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def test_regenerating_protos_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "gen_protos.sh", tmp_path / "scripts" / "gen_protos.sh")
    src = REPO / "protos" / "v1"
    dst = tmp_path / "protos" / "v1"
    dst.mkdir(parents=True)
    protos = sorted(src.glob("*.proto"))
    assert protos
    for p in protos:
        shutil.copy(p, dst / p.name)
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable}  # what scripts/gen_protos.sh runs instead of .venv's
    subprocess.run(["bash", str(tmp_path / "scripts" / "gen_protos.sh")], cwd=tmp_path, env=env, check=True,
                   timeout=120)
    compared = 0
    for p in protos:
        for suffix in GENERATED:
            name = p.stem + suffix
            fresh, committed = dst / name, src / name
            assert fresh.exists(), f"{name} not generated"
            assert committed.exists(), f"{name} not committed"
            assert fresh.read_bytes() == committed.read_bytes(), f"{name} differs from a fresh generation"
            compared += 1
    assert compared == 3 * len(protos)
