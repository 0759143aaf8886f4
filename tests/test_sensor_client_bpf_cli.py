"""``baseliner sensor --source bpf``: the kernel source through the sensor CLI and transport into a
running ``baseliner serve``.  Needs root and BPF (fails instead of skipping when ``CI`` is set)."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from baseliner.protos.v1 import admin_pb2, admin_pb2_grpc

from tests.bpf_required import require_bpf

pytestmark = [pytest.mark.root, pytest.mark.slow]
BIN = Path(sys.executable).parent / "baseliner"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_bpf_source_streams_through_the_cli() -> None:
    require_bpf()
    port = _free_port()
    serve = subprocess.Popen([str(BIN), "serve", "--listen", f"127.0.0.1:{port}", "--metrics-listen", "",
                              "--events", "none"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        sensor = subprocess.run(
            [str(BIN), "sensor", "--source", "bpf", "--target", f"127.0.0.1:{port}", "--node", "test-node",
             "--windows", "3", "--window", "1"],
            capture_output=True, text=True, timeout=300,
        )
        assert sensor.returncode == 0, sensor.stderr[-3000:]
        m = re.search(r"(\d+) vectors applied, 0 rejected, 0 dropped", sensor.stderr)
        assert m, sensor.stderr[-3000:]
        applied = int(m.group(1))
        assert applied >= 3  # at least the host group, every window

        async def scored() -> int:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                resp = await admin_pb2_grpc.AdminStub(ch).ListBaselines(admin_pb2.ListBaselinesRequest())
                return sum(b.windows_scored for b in resp.baselines)

        assert asyncio.run(scored()) == applied
    finally:
        serve.terminate()
        serve.wait(timeout=30)


def test_bpf_record_with_ngram_orders(tmp_path: Path) -> None:
    """``--ngram-orders`` reaches the kernel program: a recording made with 2,6 holds buckets of exactly
    those orders (the host group makes syscalls every window), and its header says so."""
    require_bpf()
    from baseliner.models.ngrams import order_of
    from baseliner.models.recording import RecordingReader

    out = tmp_path / "bpf.jsonl"
    sensor = subprocess.run(
        [str(BIN), "sensor", "record", "--source", "bpf", "--out", str(out), "--windows", "2", "--window", "1",
         "--ngram-orders", "2,6"],
        capture_output=True, text=True, timeout=300,
    )
    assert sensor.returncode == 0, sensor.stderr[-3000:]
    rec = RecordingReader(out)
    assert rec.header["source"] == "bpf" and rec.header["ngram_orders"] == [2, 6]
    assert {order_of(b) for v in rec.vectors() for b in v.ngrams} == {2, 6}
