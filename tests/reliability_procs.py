"""Real ``baseliner serve`` / ``baseliner sensor`` processes for the reliability tests and the soak bench."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from baseliner.protos.v1 import admin_pb2, admin_pb2_grpc

from tests.service_fixtures import state_key_file

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServeProcess:
    """``python -m baseliner.service.cli serve`` on a fixed port (so that a restart listens where sensors expect it)."""

    def __init__(self, state_dir: Path, port: int | None = None, extra: Sequence[str] = (),
                 log_path: Path | None = None) -> None:
        self.state_dir = state_dir
        self.port = port or free_port()
        self.extra = list(extra)
        self.log_path = log_path or state_dir.parent / f"serve-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_from = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> ServeProcess:
        keys = [] if "--state-key-file" in self.extra else ["--state-key-file", str(state_key_file(self.state_dir))]
        cmd = [sys.executable, "-m", "baseliner.service.cli", "serve", "--listen", self.target, "--metrics-listen", "",
               "--state-dir", str(self.state_dir), *keys, "--events", "none", *self.extra]
        self._log_from = self.log_path.stat().st_size if self.log_path.exists() else 0
        logf = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=logf, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        logf.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode}:\n{self.log()}")
            if "baseliner serving gRPC" in self.log()[self._log_from:]:
                return self
            time.sleep(0.1)
        raise TimeoutError(f"serve did not start:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def rss_bytes(self) -> int:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0


def baselines(target: str, metadata: Sequence[tuple[str, str]] = (), credentials: Any = None) -> list[Any]:
    ch = grpc.secure_channel(target, credentials) if credentials is not None else grpc.insecure_channel(target)
    with ch:
        stub = admin_pb2_grpc.AdminStub(ch)
        return list(stub.ListBaselines(admin_pb2.ListBaselinesRequest(), timeout=30, metadata=metadata).baselines)


def windows_scored(target: str, **kw: Any) -> int:
    return sum(b.windows_scored for b in baselines(target, **kw))
