"""What the benches need to know about processes and ports: a free port, resident memory, CPU time, and the
state key a ``baseliner serve`` with a state directory needs."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def free_port() -> int:
    """A TCP port on localhost that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss(pid: int) -> int:
    """Resident memory of a process in bytes (0 when /proc does not say)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def state_key_args(state: Path) -> list[str]:
    """``--state-key-file FILE`` for a service whose state goes to ``state`` (a fresh key beside it)."""
    from baseliner.models.integrity import new_key

    key = state.parent / f"{state.name}.keys"
    if not key.exists():
        key.write_text(new_key() + "\n")
    return ["--state-key-file", str(key)]
