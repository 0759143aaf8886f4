"""Runs the atheris fuzzer (``tests/fuzz_decoders.py``) over the decoders for a bounded time.

Seeded with real batches (``baseliner.sensor.wire``), a Falco alert and a log record, so that libFuzzer starts from
inputs that reach deep into the decoders; any unexpected exception fails the run (and the test).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from baseliner.protos.v1 import vectors_pb2
from baseliner.sensor import wire
from baseliner.service.wal import KIND_BATCH, Record, body_head

from tests.service_fixtures import vector

pytest.importorskip("atheris", reason="atheris is in the dev extra (pip install -e .[dev])")

FUZZER = Path(__file__).with_name("fuzz_decoders.py")


Edit = Callable[[vectors_pb2.VectorColumns], object]


def _ngram_variants() -> dict[str, Edit]:
    return {
        "entries": lambda c: None,
        "entries-cut": lambda c: setattr(c, "ngram_entry_le32", c.ngram_entry_le32[:-1]),
        "entries-count0": lambda c: setattr(c, "ngram_entry_le32", b"\x05\x00\x00\x00" + c.ngram_entry_le32[4:]),
        "entries-extra": lambda c: setattr(c, "ngram_entry_le32", c.ngram_entry_le32 + b"\xff\xff\x03\x00"),
    }


def _identity_table_variants() -> dict[str, Edit]:
    return {
        "table": lambda c: None,
        "table-cut": lambda c: setattr(c, "identity_table", c.identity_table[:-2]),
        "table-unknown-field": lambda c: setattr(c, "identity_table", c.identity_table + b"\x10\x01"),
        "table-past": lambda c: setattr(c, "window_u32_le", (9).to_bytes(4, "little") + c.window_u32_le[4:]),
    }


def _window_variants() -> dict[str, Edit]:
    return {
        "windows": lambda c: None,
        "windows-cut": lambda c: setattr(c, "window_f64_le", c.window_f64_le[:-3]),
        "windows-row-short": lambda c: setattr(c, "window_u32_le", c.window_u32_le[:-24]),
        "windows-nan": lambda c: setattr(c, "window_f64_le", b"\x00" * 6 + b"\xf8\x7f" + c.window_f64_le[8:]),
        "windows-unknown-field": lambda c: c.MergeFromString(b"\xa8\x06\x01"),
        "syscalls-unequal": lambda c: setattr(c, "syscall_count_f64_le", c.syscall_count_f64_le[:-8]),
        "syscalls-past": lambda c: setattr(c, "syscall_name_index_le16", b"\xff\xff" + c.syscall_name_index_le16[2:]),
    }


@pytest.mark.slow
def test_atheris_fuzz_decoders_bounded(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, vs in enumerate(([vector(1)], [vector(2, attack="shell"), vector(3, container=2, attack="etc")])):
        (corpus / f"batch{i}").write_bytes(wire.to_columns(vs, i + 1).SerializeToString())
    # batches with n-grams, an identity table and windows whose bytes are cut, padded, of unequal length,
    # with a count of 0, an index past their table, a NaN or a field unknown here
    grams = [vector(4, container=c) for c in range(3)]
    for k, v in enumerate(grams):
        v.ngrams = {7 * k + j: j + 1 for j in range(k + 1)}
    grams[2].ngrams[77_000] = 40_000  # two entries
    for name, edit in (_ngram_variants() | _identity_table_variants() | _window_variants()).items():
        batch = wire.to_columns(grams, 9)
        edit(batch.columns)
        (corpus / f"columns-{name}").write_bytes(batch.SerializeToString())
    (corpus / "alert").write_bytes(json.dumps({
        "output": "x", "priority": "Warning", "rule": "Terminal shell in container",
        "time": "2026-01-01T00:00:00.5Z", "output_fields": {"container.id": "abcdef012345",
                                                             "container.image.repository": "nginx"}}).encode())
    (corpus / "wal").write_bytes(body_head(Record(KIND_BATCH, "s", "node-1", 1, b"")) + b"\x08\x01")
    r = subprocess.run([sys.executable, str(FUZZER), "-runs=30000", "-max_total_time=30", "-rss_limit_mb=2048",
                        f"-artifact_prefix={tmp_path}/", str(corpus)], capture_output=True, text=True, timeout=240)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "Done" in out and "crash-" not in out, out[-2000:]
