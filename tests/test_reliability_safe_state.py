"""Safe state at rest: nothing loads a file in a way that can run code, and every kind of file is checked.

Kinds of state at rest and where their refusal is tested:

* state directory (checkpoints): ``tests/test_service_store.py`` (HMAC, corruption, versions);
* spilled baselines (the same files, loaded on demand): here;
* write-ahead log: ``tests/test_reliability_durability.py::test_tampered_log_refuses_to_start`` and here;
* sensor spool: ``tests/test_reliability_spool.py::test_tampered_spool_is_refused``;
* MLflow model artifacts: ``tests/test_mlflow_model.py`` (HMAC, tampering, flavour, schema).
"""

from __future__ import annotations

import ast
import asyncio
import struct
from pathlib import Path

import grpc
import pytest
from baseliner.models.errors import StateError
from baseliner.models.integrity import Keyring
from baseliner.protos.v1 import admin_pb2, admin_pb2_grpc
from baseliner.service.wal import KIND_BATCH, Record, WriteAheadLog, read_segment

from tests.service_fixtures import batch_request, config, exchange, hello, running, vector

REPO = Path(__file__).resolve().parent.parent
KEY = "state-key-0123456789abcdef0123456789"
KEYS = Keyring.of(KEY)


def _unsafe_loads(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
        kw = {k.arg: k.value for k in node.keywords}
        if owner in ("pickle", "cPickle", "dill", "cloudpickle", "joblib", "marshal", "shelve", "torch") and \
                name in ("load", "loads", "open", "Unpickler"):
            found.append(f"{owner}.{name}")
        elif owner in ("np", "numpy") and name == "load":
            v = kw.get("allow_pickle")
            if not (isinstance(v, ast.Constant) and v.value is False):
                found.append("np.load without allow_pickle=False")
        elif owner == "yaml" and name in ("load", "unsafe_load", "full_load"):
            found.append(f"yaml.{name}")
        elif name in ("eval", "exec") and not owner:
            found.append(name)
    return found


def test_no_code_executing_loader_in_the_product() -> None:
    problems = []
    for pkg in ("models", "service", "sensor", "protos"):
        for path in (REPO / pkg).rglob("*.py"):
            if path.name.endswith("_pb2.py") or path.name.endswith("_pb2_grpc.py"):
                continue
            for what in _unsafe_loads(ast.parse(path.read_text(), str(path))):
                problems.append(f"{path.relative_to(REPO)}: {what}")
    assert not problems, problems


def test_guard_detects_unsafe_loaders() -> None:
    code = "import pickle, numpy as np, yaml\npickle.loads(b)\nnp.load(f)\nyaml.load(s)\neval('1')\n"
    assert _unsafe_loads(ast.parse(code)) == ["pickle.loads", "np.load without allow_pickle=False", "yaml.load",
                                              "eval"]


def test_tampered_spilled_baseline_is_refused_when_reloaded(tmp_path: Path) -> None:
    keyf = tmp_path / "key"
    keyf.write_text(KEY)
    cfg = config(tmp_path / "state", ("pipeline.max_resident_baselines", 1), ("state.key_file", str(keyf)))

    async def main() -> None:
        async with running(cfg) as (srv, _):
            two = [vector(1, repo="a"), vector(1, container=1, repo="b")]
            out = await exchange(srv.port, [hello(), batch_request(two, 1)])
            assert out[1].ack.applied == 2
            assert srv.spill is not None and "a:1.27" in srv.spill.spilled
            f = next(p for p in (tmp_path / "state" / "baselines").glob("*.state")
                     if b'"key":"a:1.27"' in p.read_bytes())
            data = bytearray(f.read_bytes())
            data[-10] ^= 0x01
            f.write_bytes(bytes(data))
            async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await admin_pb2_grpc.AdminStub(ch).GetBaseline(admin_pb2.GetBaselineRequest(key="a:1.27"))
                assert e.value.code() == grpc.StatusCode.DATA_LOSS
                assert "refusing to load it" in (e.value.details() or "")
                # ingest goes on: the refused image's vectors are rejected, the others applied, once
                out2 = await exchange(srv.port, [hello(), batch_request([vector(2, repo="a"),
                                                                         vector(2, container=2, repo="c")], 2)])
                ack = out2[1].ack
                assert ack.applied == 1 and [r.index for r in ack.rejected] == [0]
                assert srv.pipeline.last_sequence("sensor-1") == 2
                listed = await admin_pb2_grpc.AdminStub(ch).ListBaselines(admin_pb2.ListBaselinesRequest())
                assert sorted(b.key for b in listed.baselines) == ["a:1.27", "b:1.27", "c:1.27"]
            assert "a:1.27" in srv.spill.refused
            srv.spill.spilled.pop("a:1.27")  # let the graceful stop leave the tampered file alone

    asyncio.run(main())


def test_wal_records_are_chained_and_keyed(tmp_path: Path) -> None:
    async def write() -> None:
        wal = WriteAheadLog(tmp_path, KEYS, "batch")
        wal.open()
        for s in (1, 2, 3):
            lsn = wal.append(Record(KIND_BATCH, "s", "node-1", s, b"\x08" + bytes([s])))
            await wal.wait_durable(lsn)
        await wal.close()

    asyncio.run(write())
    seg = WriteAheadLog(tmp_path, KEYS).segments()[0]
    assert [r.sequence for r in read_segment(seg, KEYS, last=False)] == [1, 2, 3]
    other = Keyring.of("another-key-0123456789abcdef0123456789")
    with pytest.raises(StateError, match=f"signed with key {KEYS.signing.id}, which is not in the configured keyring"):
        list(read_segment(seg, other, last=False))
    # the key id in the header changed to one the keyring holds: the chain does not verify under that key
    forged = seg.read_bytes().replace(KEYS.signing.id.encode(), other.signing.id.encode(), 1)
    seg.write_bytes(forged)
    with pytest.raises(StateError, match="HMAC mismatch"):
        list(read_segment(seg, other, last=False))
    seg.write_bytes(forged.replace(other.signing.id.encode(), KEYS.signing.id.encode(), 1))
    # an older key of the keyring still reads it (rotation)
    assert [r.sequence for r in read_segment(seg, Keyring.of(other.signing.secret, KEY), last=False)] == [1, 2, 3]
    # removing the middle record breaks the chain
    data = seg.read_bytes()
    header_end = data.index(b"\n") + 1
    def records(buf: bytes, off: int) -> list[tuple[int, int]]:
        out = []
        while off < len(buf):
            (n,) = struct.unpack_from(">I", buf, off)
            out.append((off, off + 4 + 32 + n))
            off += 4 + 32 + n
        return out

    recs = records(data, header_end)
    cut = data[:recs[1][0]] + data[recs[1][1]:]
    seg.write_bytes(cut)
    with pytest.raises(StateError, match="HMAC mismatch"):
        list(read_segment(seg, KEYS, last=False))
    # a record cut short at the very end of the newest segment is a crash inside write(): dropped
    seg.write_bytes(data[:-3])
    assert [r.sequence for r in read_segment(seg, KEYS, last=True)] == [1, 2]
    with pytest.raises(StateError, match="truncated|impossible"):
        list(read_segment(seg, KEYS, last=False))
