"""The gate of every test that needs the real eBPF sensor: skip where it cannot run, fail in CI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CG_ROOT = Path("/sys/fs/cgroup/unified")


def require_bpf() -> None:
    """Skip unless root, BCC, kernel headers, tracefs and cgroup v2 are there; with ``CI`` set, fail instead."""
    from baseliner.sensor.probes import check_prerequisites

    problems = check_prerequisites()
    if not CG_ROOT.is_dir():
        problems.append(f"no cgroup v2 at {CG_ROOT}")
    if problems:
        msg = "eBPF prerequisites missing: " + "; ".join(problems)
        if os.environ.get("CI"):
            pytest.fail(msg + " (CI is set: these tests must run)")
        pytest.skip(msg)
