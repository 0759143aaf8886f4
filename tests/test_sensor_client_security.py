"""The transport over TLS and mutual TLS (a throwaway CA made here) with a sensor bearer token."""

from __future__ import annotations

import asyncio
import datetime
import os
import sys
from pathlib import Path

import grpc
import pytest
from baseliner.models.vector import FeatureVector, Identity
from baseliner.sensor.buffer import MemoryBuffer
from baseliner.sensor.transport import Backoff, Transport, channel_credentials
from baseliner.service.serde import batch_size
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, os.path.dirname(__file__))
from sensor_ingest_server import Behaviour, IngestServer, wait_for  # noqa: E402


def _cert(name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None, ca: bool = False,
          san: str | None = None) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(subject)
         .issuer_name(issuer[0].subject if issuer else subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    return b.sign(issuer[1] if issuer else key, hashes.SHA256()), key


def _pem(obj: x509.Certificate | ec.EllipticCurvePrivateKey) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    ca = _cert("baseliner test CA", None, ca=True)
    server = _cert("baseliner.test", ca, san="baseliner.test")
    client = _cert("node-a", ca)
    other_ca = _cert("someone else", None, ca=True)
    files = {"ca": ca[0], "server.crt": server[0], "server.key": server[1], "client.crt": client[0],
             "client.key": client[1], "other_ca": other_ca[0]}
    out = {}
    for name, obj in files.items():
        p = d / name
        p.write_bytes(_pem(obj))
        out[name] = p
    return out


def _vectors(n: int) -> list[FeatureVector]:
    ident = Identity("node-a", "c1", "nginx", "1.25")
    return [FeatureVector(ident, 1_767_225_600.0 + 10 * i, 10.0, syscalls={"read": i}) for i in range(n)]


def _server_creds(pki: dict[str, Path], mutual: bool) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials(
        [(pki["server.key"].read_bytes(), pki["server.crt"].read_bytes())],
        root_certificates=pki["ca"].read_bytes() if mutual else None, require_client_auth=mutual)


NAME = (("grpc.ssl_target_name_override", "baseliner.test"),)


def test_mutual_tls_with_token(pki: dict[str, Path]) -> None:
    async def body() -> None:
        server = IngestServer(behaviour=Behaviour(require_token="s3cret"), credentials=_server_creds(pki, True))
        await server.start()
        creds = channel_credentials(str(pki["ca"]), str(pki["client.crt"]), str(pki["client.key"]))
        async with Transport(server.target, sensor_id="s", node="node-a", buffer=MemoryBuffer(first_sequence=1),
                             credentials=creds, token="s3cret", channel_options=NAME) as t:
            await t.submit(_vectors(30))
            assert await t.flush(10)
        await server.stop()
        assert sum(batch_size(b) for b in server.state.applied) == 30

    asyncio.run(asyncio.wait_for(body(), 30))


@pytest.mark.parametrize("case", ["wrong token", "no client cert", "untrusted server"])
def test_refused_connections_are_retried_not_lost(pki: dict[str, Path], case: str) -> None:
    async def body() -> None:
        server = IngestServer(behaviour=Behaviour(require_token="s3cret"), credentials=_server_creds(pki, True))
        await server.start()
        ca, cert, key, token = str(pki["ca"]), str(pki["client.crt"]), str(pki["client.key"]), "s3cret"
        if case == "wrong token":
            token = "guess"
        elif case == "no client cert":
            cert = key = None  # type: ignore[assignment]
        else:
            ca = str(pki["other_ca"])
        t = Transport(server.target, sensor_id="s", node="node-a", buffer=MemoryBuffer(first_sequence=1),
                      credentials=channel_credentials(ca, cert, key), token=token, channel_options=NAME,
                      backoff=Backoff(initial=0.02, maximum=0.05), ack_timeout=2)
        t.start()
        await t.submit(_vectors(10))
        await wait_for(lambda: t.stats.connect_failures >= 2)
        assert not server.state.applied and t.buffer.batches == 1  # nothing lost, nothing delivered
        await t.close(timeout=0.5)
        await server.stop()

    asyncio.run(asyncio.wait_for(body(), 30))


def test_half_a_client_certificate_is_an_error() -> None:
    with pytest.raises(ValueError, match="both"):
        channel_credentials(None, "client.crt", None)


TOKEN = "node-a-token-0123456789abcdef"


def test_real_service_mutual_tls_token_and_durable_acks(pki: dict[str, Path], tmp_path: Path) -> None:
    """The sensor CLI's transport settings against ``baseliner serve``'s own TLS, tokens and WAL."""
    from baseliner.service.server import BaselinerServer
    from prometheus_client import CollectorRegistry
    from service_fixtures import config

    tokens = tmp_path / "sensor-tokens"
    tokens.write_text(f"node-a test {TOKEN}\n")  # the sensor node-a/test
    cfg = config(tmp_path / "state",
                 ("grpc.tls_cert_file", str(pki["server.crt"])), ("grpc.tls_key_file", str(pki["server.key"])),
                 ("grpc.tls_client_ca_file", str(pki["ca"])), ("grpc.sensor_tokens_file", str(tokens)))

    async def body() -> None:
        srv = BaselinerServer(cfg, CollectorRegistry())
        await srv.start()
        creds = channel_credentials(str(pki["ca"]), str(pki["client.crt"]), str(pki["client.key"]))
        try:
            async with Transport(f"127.0.0.1:{srv.port}", sensor_id="node-a/test", node="node-a",
                                 buffer=MemoryBuffer(first_sequence=1), credentials=creds, token=TOKEN,
                                 channel_options=NAME, batch_size=10) as t:
                await t.submit(_vectors(30))
                assert await t.flush(20)
            assert t.welcome is not None
            assert t.stats.vectors_applied == 30 and t.buffer.batches == 0
            durable = t.welcome.durable_acks
            # a token for another node may not report for node-a: refused, retried, nothing lost
            bad = Transport(f"127.0.0.1:{srv.port}", sensor_id="node-a/test", node="node-a",
                            buffer=MemoryBuffer(), credentials=creds, token="w" * 20, channel_options=NAME,
                            backoff=Backoff(initial=0.02, maximum=0.05))
            bad.start()
            await bad.submit(_vectors(5))
            await wait_for(lambda: bad.stats.connect_failures >= 2)
            assert bad.buffer.batches == 1 and bad.stats.vectors_applied == 0
            await bad.close(timeout=0.5)
        finally:
            await srv.stop()
        assert durable  # the WAL is on: batches left the buffer only on durable acks

    asyncio.run(asyncio.wait_for(body(), 60))
