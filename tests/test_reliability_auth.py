"""Transport security and authentication of the service: TLS, mutual TLS, sensor/admin tokens, node binding,
the Falco endpoint's secret and client certificate, loopback-only defaults."""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from baseliner.models.errors import ConfigError
from baseliner.protos.v1 import admin_pb2, admin_pb2_grpc, ingest_pb2, ingest_pb2_grpc
from baseliner.service import admin as admin_cli
from baseliner.service.config import ServeConfig, load

from tests.reliability_certs import CA
from tests.service_fixtures import batch_request, config, exchange, hello, running, vector

SENSOR_TOKEN = "sensor-token-node-1-0123456789"
OTHER_TOKEN = "sensor-token-node-2-0123456789"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
N1 = "node-1/bpf"  # the identity SENSOR_TOKEN names


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("pki")
    ca = CA(d / "ca")
    rogue = CA(d / "rogue", "rogue-ca")
    return {"ca": ca, "server": ca.issue("server", server=True), "client": ca.issue("sensor-1", server=False),
            "rogue": rogue.issue("intruder", server=False)}


def tokens(tmp: Path) -> list[tuple[str, Any]]:
    s = tmp / "sensors.tokens"
    s.write_text(f"# node sensor token\nnode-1 bpf {SENSOR_TOKEN}\nnode-2 bpf {OTHER_TOKEN}\n")
    a = tmp / "admin.tokens"
    a.write_text(f"ops {ADMIN_TOKEN}\n")
    return [("grpc.sensor_tokens_file", str(s)), ("grpc.admin_tokens_file", str(a))]


async def _stream(channel: grpc.aio.Channel, reqs: list[ingest_pb2.IngestRequest],
                  token: str = "") -> list[ingest_pb2.IngestResponse]:
    md = (("authorization", f"Bearer {token}"),) if token else ()

    async def gen() -> AsyncIterator[ingest_pb2.IngestRequest]:
        for r in reqs:
            yield r

    return [r async for r in ingest_pb2_grpc.IngestStub(channel).Stream(gen(), metadata=md, timeout=10)]


def test_tokens_bind_streams_to_nodes_and_admin_is_separate(tmp_path: Path) -> None:
    cfg = config(None, *tokens(tmp_path))

    async def main() -> None:
        async with running(cfg) as (srv, _):
            target = f"127.0.0.1:{srv.port}"
            async with grpc.aio.insecure_channel(target) as ch:
                async def code(reqs: list[ingest_pb2.IngestRequest], token: str) -> grpc.StatusCode:
                    try:
                        await _stream(ch, reqs, token)
                    except grpc.aio.AioRpcError as e:
                        return e.code()
                    return grpc.StatusCode.OK

                assert await code([hello(N1)], "") == grpc.StatusCode.UNAUTHENTICATED
                assert await code([hello(N1)], "not-a-token-0123456789") == grpc.StatusCode.UNAUTHENTICATED
                assert await code([hello(N1)], ADMIN_TOKEN) == grpc.StatusCode.UNAUTHENTICATED
                # node-2's token cannot open a stream for node-1
                assert await code([hello(N1, node="node-1")], OTHER_TOKEN) == grpc.StatusCode.PERMISSION_DENIED
                # a vector for another node inside node-1's stream is rejected alone, as UNAUTHORIZED
                mixed = [vector(1, container=1, node="node-1"), vector(1, container=2, node="node-2"),
                         vector(2, container=1, node="node-1")]
                out = await _stream(ch, [hello(N1, node="node-1"), batch_request(mixed, 1)], SENSOR_TOKEN)
                ack = out[1].ack
                assert ack.applied == 2 and len(ack.rejected) == 1
                assert ack.rejected[0].index == 1
                assert ack.rejected[0].reason == ingest_pb2.REJECT_REASON_UNAUTHORIZED

                stub = admin_pb2_grpc.AdminStub(ch)
                req = admin_pb2.ListBaselinesRequest()
                sensor_md = (("authorization", f"Bearer {SENSOR_TOKEN}"),)
                for md, expected in (((), grpc.StatusCode.UNAUTHENTICATED),
                                     (sensor_md, grpc.StatusCode.PERMISSION_DENIED)):
                    with pytest.raises(grpc.aio.AioRpcError) as e:
                        await stub.ListBaselines(req, metadata=md, timeout=5)
                    assert e.value.code() == expected
                resp = await stub.ListBaselines(req, metadata=(("authorization", f"Bearer {ADMIN_TOKEN}"),), timeout=5)
                assert [b.key for b in resp.baselines] == ["nginx:1.27"]
                assert resp.baselines[0].windows_scored == 2

            # the admin CLI with --token-file (runs its own blocking channel)
            tf = tmp_path / "admin.token"
            tf.write_text(ADMIN_TOKEN + "\n")
            ns = argparse.Namespace(target=target, timeout=5.0, json=True, token_file=str(tf), tls_ca=None,
                                    tls_cert=None, tls_key=None, admin_command="list")
            assert await asyncio.to_thread(admin_cli.run, ns) == 0
            ns.token_file = None
            assert await asyncio.to_thread(admin_cli.run, ns) == 1

    asyncio.run(main())


VIEWER_TOKEN = "viewer-token-0123456789abcdef"


def test_admin_roles_viewers_read_and_operators_act(tmp_path: Path) -> None:
    """A viewer's token (grpc.viewer_tokens_file) opens List and Get only; SetMode, ResetBaseline and Feedback need an
    operator's (grpc.admin_tokens_file); with only viewers configured nobody may act, and no call is open."""
    v = tmp_path / "viewer.tokens"
    v.write_text(f"vic {VIEWER_TOKEN}\n")
    viewer = ("grpc.viewer_tokens_file", str(v))

    async def codes(cfg: Any) -> dict[tuple[str, str], grpc.StatusCode]:
        out: dict[tuple[str, str], grpc.StatusCode] = {}
        async with running(cfg) as (srv, _):
            await exchange(srv.port, [hello(), batch_request([vector(i) for i in range(3)], 1)])
            async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
                stub = admin_pb2_grpc.AdminStub(ch)
                calls = {
                    "ListBaselines": admin_pb2.ListBaselinesRequest(),
                    "GetBaseline": admin_pb2.GetBaselineRequest(key="nginx:1.27"),
                    "SetMode": admin_pb2.SetModeRequest(key="nginx:1.27", mode=admin_pb2.MODE_FREEZE),
                    "ResetBaseline": admin_pb2.ResetBaselineRequest(key="nginx:1.27"),
                    "Feedback": admin_pb2.FeedbackRequest(event_id="no-such-event"),
                }
                for who, token in (("none", ""), ("viewer", VIEWER_TOKEN), ("operator", ADMIN_TOKEN)):
                    md = (("authorization", f"Bearer {token}"),) if token else ()
                    for rpc, req in calls.items():
                        try:
                            await getattr(stub, rpc)(req, metadata=md, timeout=5)
                            out[(who, rpc)] = grpc.StatusCode.OK
                        except grpc.aio.AioRpcError as e:
                            out[(who, rpc)] = e.code()
        return out

    operator = tokens(tmp_path)[1]  # (the admin file; no sensor tokens, so that the test's stream needs none)
    both = asyncio.run(codes(config(None, operator, viewer)))
    denied, unauthenticated = grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED
    for rpc in ("ListBaselines", "GetBaseline", "SetMode", "ResetBaseline", "Feedback"):
        assert both[("none", rpc)] == unauthenticated
    assert both[("viewer", "ListBaselines")] == both[("viewer", "GetBaseline")] == grpc.StatusCode.OK
    assert both[("viewer", "SetMode")] == both[("viewer", "ResetBaseline")] == both[("viewer", "Feedback")] == denied
    assert both[("operator", "SetMode")] == both[("operator", "ResetBaseline")] == grpc.StatusCode.OK
    assert both[("operator", "Feedback")] == grpc.StatusCode.NOT_FOUND  # allowed; the event does not exist
    only_viewers = asyncio.run(codes(config(None, viewer)))
    assert only_viewers[("viewer", "GetBaseline")] == grpc.StatusCode.OK
    assert only_viewers[("viewer", "SetMode")] == denied and only_viewers[("none", "ListBaselines")] == unauthenticated
    assert only_viewers[("operator", "ListBaselines")] == denied  # not a token of this service


def test_admin_token_files_and_console_settings_are_checked(tmp_path: Path, pki: dict[str, Any]) -> None:
    ops, views = tmp_path / "ops.tokens", tmp_path / "views.tokens"
    ops.write_text(f"olga {ADMIN_TOKEN}\n")
    views.write_text(f"vic {VIEWER_TOKEN}\nolga-too {ADMIN_TOKEN}\n")
    files = [("grpc.admin_tokens_file", str(ops)), ("grpc.viewer_tokens_file", str(views))]
    with pytest.raises(ConfigError, match="1 token.s. appear in both"):
        load(None, environ={}, overrides=files)
    views.write_text(f"vic {VIEWER_TOKEN}\n")
    load(None, environ={}, overrides=files)
    with pytest.raises(ConfigError, match="console.listen needs credentials"):
        load(None, environ={}, overrides=[("console.listen", "127.0.0.1:8080")])
    load(None, environ={}, overrides=[("console.listen", "127.0.0.1:8080"), files[1]])
    with pytest.raises(ConfigError, match="console.listen '0.0.0.0:8080' is not a loopback address and TLS is off"):
        load(None, environ={}, overrides=[("console.listen", "0.0.0.0:8080"), files[0]])
    load(None, environ={}, overrides=[("console.listen", "0.0.0.0:8080"), files[0], ("console.allow_plaintext", "1")])
    load(None, environ={}, overrides=[("console.listen", "0.0.0.0:8080"), files[0],
                                      ("console.tls_cert_file", str(pki["server"].cert)),
                                      ("console.tls_key_file", str(pki["server"].key))])
    with pytest.raises(ConfigError, match="console.tls_cert_file and console.tls_key_file go together"):
        load(None, environ={}, overrides=[("console.tls_cert_file", str(pki["server"].cert))])
    assert ServeConfig().console.listen == ""  # off unless configured


def test_tls_and_mutual_tls(tmp_path: Path, pki: dict[str, Any]) -> None:
    ca, server, client, rogue = pki["ca"], pki["server"], pki["client"], pki["rogue"]
    cfg = config(None, ("grpc.tls_cert_file", str(server.cert)), ("grpc.tls_key_file", str(server.key)),
                 ("grpc.tls_client_ca_file", str(ca.path)), *tokens(tmp_path))

    def creds(cert: Any = None) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            ca.path.read_bytes(), cert.key.read_bytes() if cert else None, cert.cert.read_bytes() if cert else None)

    async def attempt(target: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
        ch = grpc.aio.secure_channel(target, credentials) if credentials else grpc.aio.insecure_channel(target)
        async with ch:
            try:
                out = await _stream(ch, [hello(N1), batch_request([vector(1)], 1)], SENSOR_TOKEN)
            except grpc.aio.AioRpcError as e:
                return e.code()
            assert out[0].welcome and out[1].ack.applied == 1
            return grpc.StatusCode.OK

    async def main() -> None:
        async with running(cfg) as (srv, _):
            t = f"127.0.0.1:{srv.port}"
            assert await attempt(t, None) == grpc.StatusCode.UNAVAILABLE  # plaintext to a TLS port
            assert await attempt(t, creds()) == grpc.StatusCode.UNAVAILABLE  # no client certificate
            assert await attempt(t, creds(rogue)) == grpc.StatusCode.UNAVAILABLE  # certificate of another CA
            assert await attempt(t, creds(client)) == grpc.StatusCode.OK

    asyncio.run(main())

    # TLS without client authentication: any client that trusts the CA (and holds a token) gets in
    cfg2 = config(None, ("grpc.tls_cert_file", str(server.cert)), ("grpc.tls_key_file", str(server.key)),
                  *tokens(tmp_path))

    async def main2() -> None:
        async with running(cfg2) as (srv, _):
            assert await attempt(f"127.0.0.1:{srv.port}", creds()) == grpc.StatusCode.OK

    asyncio.run(main2())


def test_plaintext_only_on_loopback_and_endpoints_default_to_localhost(tmp_path: Path, pki: dict[str, Any]) -> None:
    d = ServeConfig()
    assert d.grpc.listen.startswith("127.0.0.1:") and d.metrics.listen.startswith("127.0.0.1:")
    assert d.falco.listen == ""
    with pytest.raises(ConfigError, match="not a loopback address and TLS is off"):
        load(None, environ={}, overrides=[("grpc.listen", "0.0.0.0:50051")])
    load(None, environ={}, overrides=[("grpc.listen", "0.0.0.0:50051"), ("grpc.allow_plaintext", "true"),
                                      *tokens(tmp_path)])
    load(None, environ={}, overrides=[("grpc.listen", "0.0.0.0:50051"), *tokens(tmp_path),
                                      ("grpc.tls_cert_file", str(pki["server"].cert)),
                                      ("grpc.tls_key_file", str(pki["server"].key))])
    bad = tmp_path / "bad.tokens"
    bad.write_text("node-1 bpf short\n")
    with pytest.raises(ConfigError, match="shorter than 16"):
        load(None, environ={}, overrides=[("grpc.sensor_tokens_file", str(bad))])
    with pytest.raises(ConfigError, match="go together"):
        load(None, environ={}, overrides=[("grpc.tls_cert_file", str(pki["server"].cert))])


def _post(port: int, path: str, body: dict[str, Any], context: ssl.SSLContext | None = None) -> tuple[int, Any]:
    conn = (http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10) if context
            else http.client.HTTPConnection("127.0.0.1", port, timeout=10))
    try:
        data = json.dumps(body).encode()
        conn.request("POST", path, data, {"Content-Type": "application/json", "Content-Length": str(len(data))})
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"{}")
    finally:
        conn.close()


ALERT = {"output": "shell in container", "priority": "Warning", "rule": "Terminal shell in container",
         "time": "2026-01-01T00:00:00.000000000Z", "output_fields": {"container.id": "c1", "k8s.ns.name": "default"}}


def test_falco_endpoint_secret_and_client_certificate(tmp_path: Path, pki: dict[str, Any]) -> None:
    secret = tmp_path / "falco.secret"
    secret.write_text("falco-secret-0123456789abcdef\n")
    server, ca = pki["server"], pki["ca"]
    cfg = config(None, ("falco.listen", "127.0.0.1:0"), ("falco.secret_file", str(secret)),
                 ("falco.tls_cert_file", str(server.cert)), ("falco.tls_key_file", str(server.key)),
                 ("falco.tls_client_ca_file", str(ca.path)), *tokens(tmp_path))

    def ctx(cert: Any = None) -> ssl.SSLContext:
        c = ssl.create_default_context(cafile=str(ca.path))
        if cert is not None:
            c.load_cert_chain(str(cert.cert), str(cert.key))
        return c

    async def main() -> None:
        async with running(cfg) as (srv, _):
            port = srv.falco.port
            ok = await asyncio.to_thread(_post, port, "/falco/falco-secret-0123456789abcdef", ALERT, ctx(pki["client"]))
            assert ok[0] != 401 and ok[0] < 500, ok
            for path in ("/", "/falco", "/falco/wrong-secret-0123456789", "/?secret=nope"):
                status, body = await asyncio.to_thread(_post, port, path, ALERT, ctx(pki["client"]))
                assert status == 401 and body["error"] == "unauthorized", (path, status, body)
            q = await asyncio.to_thread(_post, port, "/?secret=falco-secret-0123456789abcdef", ALERT,
                                        ctx(pki["client"]))
            assert q[0] != 401
            for bad in (None, pki["rogue"]):  # no client certificate, or one from another CA: no handshake
                with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
                    await asyncio.to_thread(_post, port, "/falco/falco-secret-0123456789abcdef", ALERT, ctx(bad))
            # the Falco secret opens nothing on the gRPC side
            async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await admin_pb2_grpc.AdminStub(ch).ListBaselines(
                        admin_pb2.ListBaselinesRequest(),
                        metadata=(("authorization", "Bearer falco-secret-0123456789abcdef"),), timeout=5)
                assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED

    asyncio.run(main())


def test_the_shard_map_needs_a_token_only_where_sensors_need_one() -> None:
    """A sensor asks for the shard map with the credential it streams with: none where sensors stream without a
    token (an admin token file alone does not close the map to them), its token where they need one."""
    from baseliner.service.auth import Authorizer, SensorIdentity, _digest
    from baseliner.service.errors import AuthenticationError

    admins_only = Authorizer(admins={_digest("o" * 16): "olga"})
    admins_only.shard_call((), "GetMap")
    admins_only.shard_call((), "Status")
    with pytest.raises(AuthenticationError):  # the shards' own calls still need the peer token
        Authorizer(admins={_digest("o" * 16): "olga"}, peer=_digest("p" * 16)).shard_call((), "Pull")
    sensors = Authorizer(sensors={_digest("s" * 16): SensorIdentity("node-1", "bpf")},
                         admins={_digest("o" * 16): "olga"})
    with pytest.raises(AuthenticationError):
        sensors.shard_call((), "GetMap")
    sensors.shard_call((("authorization", "Bearer " + "s" * 16),), "GetMap")


def test_refused_calls_end_with_their_status_whatever_their_kind(tmp_path: Path) -> None:
    """The interceptor answers a refused call with a handler of the call's kind (Ingest streams both ways,
    Shards.Pull streams replies, the others are unary), so the client sees the refusal's status, not a
    broken call."""
    from baseliner.protos.v1 import shards_pb2, shards_pb2_grpc

    peer = tmp_path / "peer.token"
    peer.write_text("peer-token-0123456789abcdef\n")
    cfg = config(None, *tokens(tmp_path), ("shards.peer_token_file", str(peer)))

    async def main() -> None:
        async with running(cfg) as (srv, _), grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            shards = shards_pb2_grpc.ShardsStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await _stream(ch, [hello(N1)])
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as e:
                [part async for part in shards.Pull(shards_pb2.PullRequest(), timeout=5)]
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await shards.Commit(shards_pb2.CommitRequest(), metadata=(("authorization",
                                                                           f"Bearer {ADMIN_TOKEN}"),), timeout=5)
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await admin_pb2_grpc.AdminStub(ch).ListBaselines(admin_pb2.ListBaselinesRequest(), timeout=5)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED

    asyncio.run(main())


def test_console_speaks_https_with_its_certificate(tmp_path: Path, pki: dict[str, Any]) -> None:
    """console.tls_*: the console's pages over HTTPS (a client that trusts the CA gets them; plain HTTP does not)."""
    ops = tmp_path / "ops.tokens"
    ops.write_text(f"olga {ADMIN_TOKEN}\n")
    cfg = config(None, ("console.listen", "127.0.0.1:0"), ("grpc.admin_tokens_file", str(ops)),
                 ("console.tls_cert_file", str(pki["server"].cert)), ("console.tls_key_file", str(pki["server"].key)))

    def get(port: int, context: ssl.SSLContext | None) -> int:
        conn = (http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10) if context
                else http.client.HTTPConnection("127.0.0.1", port, timeout=10))
        try:
            conn.request("GET", "/login")
            return conn.getresponse().status
        finally:
            conn.close()

    async def main() -> None:
        async with running(cfg) as (srv, _):
            assert srv.console.url.startswith("https://")
            trusting = ssl.create_default_context(cafile=str(pki["ca"].path))
            trusting.check_hostname = False
            assert await asyncio.to_thread(get, srv.console.port, trusting) == 200
            with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
                await asyncio.to_thread(get, srv.console.port, None)

    asyncio.run(main())
