"""A sensor's identity is its credential's (issue 19, hole 1): a second authenticated sensor can neither silence
nor impersonate another.

The hijack that worked before: with any valid sensor token, a Hello under the victim's sensor id and one empty
batch numbered 2^64-1 made every later batch of the victim a "duplicate", acknowledged and never applied.  Here
the same attack runs against a real ``baseliner serve`` with a second sensor's valid token, then the victim, a
real ``baseliner sensor`` process, streams: every one of its windows must be applied.  Client certificates
(mutual TLS, identity from the URI SAN), the sequence bound, and what the state files and the log record are
checked too.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from baseliner.models.integrity import Keyring
from baseliner.protos.v1 import ingest_pb2, ingest_pb2_grpc
from baseliner.sensor.buffer import MemoryBuffer
from baseliner.sensor.spool import DiskSpool
from baseliner.sensor.transport import Transport
from baseliner.service import init_secrets
from baseliner.service.store import StateStore, decode_file
from baseliner.service.wal import WriteAheadLog, read_segment

from tests.reliability_procs import REPO, ServeProcess, baselines
from tests.service_fixtures import STATE_KEY, batch_request, config, hello, running, state_key_file, vector

VICTIM_TOKEN = "victim-token-node-1-0123456789abcdef"
ATTACKER_TOKEN = "attacker-token-node-2-0123456789abcdef"
ADMIN_TOKEN = "admin-token-0123456789abcdef0123"
ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)


def token_files(tmp: Path) -> list[str]:
    """The documented token file forms: NODE SENSOR TOKEN for sensors, NAME TOKEN for operators."""
    (tmp / "sensor.tokens").write_text(f"# NODE SENSOR TOKEN\nnode-1 bpf {VICTIM_TOKEN}\nnode-2 bpf {ATTACKER_TOKEN}\n")
    (tmp / "admin.tokens").write_text(f"operator {ADMIN_TOKEN}\n")
    (tmp / "victim.token").write_text(VICTIM_TOKEN + "\n")
    return ["--set", f"grpc.sensor_tokens_file={tmp / 'sensor.tokens'}",
            "--set", f"grpc.admin_tokens_file={tmp / 'admin.tokens'}"]


async def stream(target: str, requests: Sequence[ingest_pb2.IngestRequest], token: str = "",
                 credentials: grpc.ChannelCredentials | None = None, options: Sequence[Any] = ()
                 ) -> list[ingest_pb2.IngestResponse]:
    md = (("authorization", f"Bearer {token}"),) if token else ()
    ch = (grpc.aio.secure_channel(target, credentials, options=options) if credentials is not None
          else grpc.aio.insecure_channel(target))
    async with ch:
        async def gen() -> AsyncIterator[ingest_pb2.IngestRequest]:
            for r in requests:
                yield r

        return [r async for r in ingest_pb2_grpc.IngestStub(ch).Stream(gen(), metadata=md, timeout=20)]


async def refused(target: str, requests: Sequence[ingest_pb2.IngestRequest], token: str = "",
                  **kw: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stream(target, requests, token, **kw)
    return e.value.code(), e.value.details() or ""


def test_a_second_authenticated_sensor_can_neither_silence_nor_impersonate_another(tmp_path: Path) -> None:
    serve = ServeProcess(tmp_path / "state", extra=token_files(tmp_path)).start()
    try:
        target = serve.target

        async def attack() -> None:
            # 1. the attacker's token under the victim's identity: the stream ends at its Hello (a batch written after
            # it would not be read; gRPC's client may fail that write with INTERNAL, so none is written here)
            code, details = await refused(target, [hello("node-1/bpf", "node-1")], ATTACKER_TOKEN)
            assert code == grpc.StatusCode.PERMISSION_DENIED
            assert "credential is for sensor 'node-2/bpf'" in details and "'node-1/bpf'" in details
            # ... under its own identity and the victim's node name, the same
            code, _ = await refused(target, [hello("node-2/bpf", "node-1")], ATTACKER_TOKEN)
            assert code == grpc.StatusCode.PERMISSION_DENIED
            # 2. under its own identity: the jump is refused, and vectors naming the victim's node are rejected
            out = await stream(target, [hello("node-2/bpf", "node-2"), batch_request([], 2**64 - 1),
                                        batch_request([vector(1, node="node-1"), vector(1, 1, node="node-2")], 1)],
                               ATTACKER_TOKEN)
            assert out[0].welcome.max_sequence_gap == 1_000_000
            assert out[1].ack.batch_rejected == ingest_pb2.REJECT_REASON_SEQUENCE_JUMP
            assert "more than grpc.max_sequence_gap (1000000) above the last applied, 0" in out[1].ack.batch_message
            assert out[2].ack.applied == 1 and [r.reason for r in out[2].ack.rejected] == [
                ingest_pb2.REJECT_REASON_UNAUTHORIZED]

        asyncio.run(attack())
        # 3. the victim, a real sensor process, streams: every window it sends is applied
        log = tmp_path / "victim.log"
        with open(log, "wb") as f:
            victim = subprocess.run(
                [sys.executable, "-m", "baseliner.service.cli", "sensor", "--source", "synthetic", "--target", target,
                 "--node", "node-1", "--sensor-id", "node-1/bpf", "--token-file", str(tmp_path / "victim.token"),
                 "--hours", "0.5",
                 "--no-attacks", "--give-up-after", "30"], cwd=REPO, stdout=f, stderr=subprocess.STDOUT, timeout=300)
        text = log.read_text()
        assert victim.returncode == 0, text
        m = re.search(r"(\d+) vectors applied, (\d+) rejected, (\d+) dropped; (\d+) batches sent", text)
        assert m, text
        applied, rejected, dropped = int(m[1]), int(m[2]), int(m[3])
        assert applied > 100 and rejected == dropped == 0, text
        assert "vectors in batches applied before their ack was lost" in text and "; 0 vectors in batches" in text
        scored = {b.key: b.windows_scored for b in baselines(target, ADMIN)}
        assert sum(scored.values()) == applied + 1  # the victim's windows, and the attacker's own one
    finally:
        assert serve.stop() == 0
    # deduplication, the checkpoint and the log are keyed by the credentials' identities
    keys = Keyring.of(STATE_KEY)
    _, meta, _ = decode_file((tmp_path / "state" / "service.state").read_bytes(), keys, "service.state")
    assert set(meta["sensors"]) == {"node-1/bpf", "node-2/bpf"} and meta["sensors"]["node-2/bpf"] == 1


def test_a_sensor_started_with_another_sensors_credential_says_so_and_exits(tmp_path: Path) -> None:
    """A Hello the credential does not allow is a configuration mistake no retry cures: the sensor names the
    fix and exits 1 instead of retrying for ever."""
    serve = ServeProcess(tmp_path / "state", extra=token_files(tmp_path)).start()
    try:
        r = subprocess.run(
            [sys.executable, "-m", "baseliner.service.cli", "sensor", "--source", "synthetic", "--target",
             serve.target, "--node", "node-2", "--sensor-id", "node-2/bpf", "--token-file",
             str(tmp_path / "victim.token"), "--hours", "0.5", "--no-attacks"],
            cwd=REPO, capture_output=True, text=True, timeout=120)
    finally:
        assert serve.stop() == 0
    assert r.returncode == 1, r.stderr
    assert "PERMISSION_DENIED" in r.stderr and "credential is for sensor 'node-1/bpf'" in r.stderr, r.stderr
    assert "give the sensor the --node and --sensor-id its credential names" in r.stderr
    assert "retrying in" not in r.stderr and "Traceback" not in r.stderr


def test_identity_from_client_certificates(tmp_path: Path) -> None:
    """Mutual TLS: the URI SAN spiffe://TRUST-DOMAIN/sensor/NODE/SENSOR is the identity; with tokens as well, both
    must name the same sensor; a certificate that names no sensor (an operator's) opens no stream."""
    ca = init_secrets.Authority()
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    server = ca.issue("baseliner", init_secrets._server_sans(["localhost", "127.0.0.1"]), True, 1)
    (tmp_path / "server.pem").write_bytes(server.cert)
    (tmp_path / "server.key").write_bytes(server.key)

    def client(node: str | None) -> grpc.ChannelCredentials:
        from cryptography import x509

        uri = init_secrets.sensor_uri(node, "bpf") if node else "spiffe://baseliner/admin/operator"
        c = ca.issue(node or "operator", [x509.UniformResourceIdentifier(uri)], False, 1)
        return grpc.ssl_channel_credentials(ca.pem, c.key, c.cert)

    tls = (("grpc.tls_cert_file", str(tmp_path / "server.pem")), ("grpc.tls_key_file", str(tmp_path / "server.key")),
           ("grpc.tls_client_ca_file", str(tmp_path / "ca.pem")))

    async def main() -> None:
        async with running(config(tmp_path / "state", *tls)) as (srv, _):
            t = f"localhost:{srv.port}"
            out = await stream(t, [hello("node-1/bpf", "node-1"), batch_request([vector(1)], 1)],
                               credentials=client("node-1"))
            assert out[1].ack.applied == 1
            code, details = await refused(t, [hello("node-1/bpf", "node-1")], credentials=client("node-2"))
            assert code == grpc.StatusCode.PERMISSION_DENIED and "'node-2/bpf'" in details
            code, details = await refused(t, [hello("node-1/bpf", "node-1")], credentials=client(None))
            assert code == grpc.StatusCode.PERMISSION_DENIED and "names no sensor" in details
            assert srv.pipeline.sensors == {"node-1/bpf": 1}
        (tmp_path / "sensor.tokens").write_text(f"node-1 bpf {VICTIM_TOKEN}\nnode-2 bpf {ATTACKER_TOKEN}\n")
        cfg = config(tmp_path / "state2", *tls, ("grpc.sensor_tokens_file", str(tmp_path / "sensor.tokens")))
        async with running(cfg) as (srv, _):
            t = f"localhost:{srv.port}"
            code, details = await refused(t, [hello("node-1/bpf", "node-1")], ATTACKER_TOKEN,
                                          credentials=client("node-1"))
            assert code == grpc.StatusCode.PERMISSION_DENIED
            assert "token names node-2/bpf but the client certificate names node-1/bpf" in details
            # an operator's certificate carries the transport; the token names the sensor
            out = await stream(t, [hello("node-2/bpf", "node-2"), batch_request([vector(1, node="node-2")], 1)],
                               ATTACKER_TOKEN, credentials=client(None))
            assert out[1].ack.applied == 1

    asyncio.run(main())


def test_sequence_bound_and_a_spool_that_outlived_the_service_state(tmp_path: Path) -> None:
    """A spool numbered far beyond what a (fresh) service has applied is renumbered by the sensor from the
    Welcome, so nothing is refused or lost; a raw jump is refused."""
    keys = Keyring.of("spool-key-0123456789abcdef0123456789")
    spool = DiskSpool(tmp_path / "spool", keys, fsync=False)
    spool.advance(5_000)  # what months of batches leave in the counter
    cfg = config(tmp_path / "state", ("grpc.max_sequence_gap", 100))

    async def main() -> None:
        async with running(cfg) as (srv, _):
            target = f"127.0.0.1:{srv.port}"
            out = await stream(target, [hello("node-1/bpf"), batch_request([vector(1)], 102)])
            assert out[1].ack.batch_rejected == ingest_pb2.REJECT_REASON_SEQUENCE_JUMP
            async with Transport(target, sensor_id="node-1/bpf", node="node-1", buffer=spool) as t:
                await t.submit([vector(i, c) for i in range(1, 4) for c in range(2)])
                assert await t.flush(timeout=20)
                assert t.stats.vectors_applied == 6 and t.stats.vectors_rejected == 0
            assert srv.pipeline.last_sequence("node-1/bpf") < 100
            # the memory buffer numbers from 1 and moves on from the Welcome
            async with Transport(target, sensor_id="node-1/bpf", node="node-1", buffer=MemoryBuffer()) as t:
                await t.submit([vector(10, 0)])
                assert await t.flush(timeout=20) and t.stats.vectors_applied == 1

    asyncio.run(main())


def test_the_log_records_the_identity_of_the_credential(tmp_path: Path) -> None:
    (tmp_path / "sensor.tokens").write_text(f"node-1 bpf {VICTIM_TOKEN}\n")
    cfg = config(tmp_path / "state", ("grpc.sensor_tokens_file", str(tmp_path / "sensor.tokens")),
                 ("state.save_interval_seconds", 3600))

    async def main() -> None:
        async with running(cfg) as (srv, _):
            await stream(f"127.0.0.1:{srv.port}", [hello("node-1/bpf"), batch_request([vector(1)], 1)], VICTIM_TOKEN)
            keys = Keyring.load(state_key_file(tmp_path / "state"))
            (rec,) = [r for seg in WriteAheadLog(tmp_path / "state" / "wal", keys).segments()
                      for r in read_segment(seg, keys, last=True)]
            assert (rec.sensor_id, rec.node, rec.sequence) == ("node-1/bpf", "node-1", 1)
            assert isinstance(srv.store, StateStore)

    asyncio.run(main())
