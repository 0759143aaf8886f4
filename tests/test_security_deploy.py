"""The shipped deployments authenticate everyone (issue 19, hole 2).

The service configurations of ``deploy/compose`` and ``deploy/kubernetes`` listen off loopback; with the
credentials ``baseliner init-secrets`` writes in place they pass the service's checks, and without any one of
them the service refuses to start, naming it.  Then a real ``baseliner serve --config`` process runs each shipped
file (its secret paths pointed at an init-secrets directory, its listeners moved to loopback ports): an Admin
call without a client certificate cannot even connect, one with the operator's certificate but no token is
refused, a sensor stream without a token is refused, a Falco post without the URL secret gets 401, and the
credentials init-secrets wrote for the operator, the sensor and Falco work.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import re
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from baseliner.protos.v1 import admin_pb2, admin_pb2_grpc
from baseliner.service import config as service_config
from baseliner.service import init_secrets

from tests.reliability_procs import REPO, free_port
from tests.service_fixtures import hello
from tests.test_security_identity import stream
from tests.test_service_falco import alert

DEPLOY = REPO / "deploy"
MOUNT = init_secrets.SERVICE_MOUNT
NODE = "node-1"


def shipped() -> dict[str, str]:
    """The service configuration text of each shipped deployment."""
    (cm,) = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "configmap.yaml").read_text()) if d]
    return {"compose": (DEPLOY / "compose" / "baseliner.yaml").read_text(), "kubernetes": cm["data"]["baseliner.yaml"]}


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deploy") / "secrets"
    init_secrets.create(out, [NODE])
    return out


def local(text: str, secrets: Path, tmp: Path, ports: dict[str, int] | None = None) -> Path:
    """The shipped file with its secrets, state and events where this test keeps them (and, given ``ports``, its
    listeners on loopback)."""
    text = text.replace(MOUNT, str(secrets)).replace("/var/lib/baseliner/state", str(tmp / "state"))
    text = text.replace("/var/log/baseliner/events.jsonl", str(tmp / "events.jsonl"))
    # one shard of the StatefulSet, alone (its credentials are what this is about; docs/sharding.md for the rest)
    text = text.replace('list: "@/etc/baseliner/shards"', 'list: ""')
    for name, port in (ports or {}).items():
        text = re.sub(rf"0\.0\.0\.0:{port_of(name)}\b", f"127.0.0.1:{port}", text)
    path = tmp / "baseliner.yaml"
    path.write_text(text)
    return path


def port_of(name: str) -> int:
    return {"grpc": 50051, "metrics": 9464, "falco": 2802}[name]


def problems(path: Path, *sets: str) -> list[str]:
    cfg = service_config.load(str(path), environ={}, overrides=service_config.parse_set(list(sets)), validate=False)
    return service_config.problems(cfg)


@pytest.mark.parametrize("deployment", ["compose", "kubernetes"])
def test_the_shipped_config_needs_every_credential(deployment: str, secrets: Path, tmp_path: Path) -> None:
    path = local(shipped()[deployment], secrets, tmp_path)
    cfg = service_config.load(str(path), environ={}, validate=False)
    assert cfg.grpc.listen == "0.0.0.0:50051" and cfg.falco.listen == "0.0.0.0:2802" and not cfg.insecure
    assert problems(path) == []
    # each credential taken away: refused, naming it
    no_sensors = problems(path, "grpc.sensor_tokens_file=", "grpc.tls_client_ca_file=")
    assert any("grpc.listen" in p and "sensors are not authenticated" in p for p in no_sensors), no_sensors
    no_admin = problems(path, "grpc.admin_tokens_file=")
    assert any("grpc.listen" in p and "the Admin API is open" in p for p in no_admin), no_admin
    no_falco = problems(path, "falco.secret_file=")
    assert any("falco.listen" in p and "anyone may post alerts" in p for p in no_falco), no_falco
    no_state_key = problems(path, "state.key_file=")
    assert any("state.dir needs state.key_file" in p for p in no_state_key), no_state_key
    # the lab switch accepts the open listeners (and serve says so loudly: test_the_insecure_lab_mode_says_so)
    assert problems(path, "grpc.sensor_tokens_file=", "grpc.tls_client_ca_file=", "grpc.admin_tokens_file=",
                    "falco.secret_file=", "insecure=true") == []


class Serve:
    """``baseliner serve --config FILE`` as a process."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        with open(log, "wb") as f:
            self.proc = subprocess.Popen([sys.executable, "-m", "baseliner.service.cli", "serve", "--config",
                                          str(config)], cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        try:
            while "baseliner serving gRPC" not in log.read_text(errors="replace"):
                assert self.proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        except BaseException:
            self.kill9()
            raise

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(30)

    def kill9(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def creds(secrets: Path, who: str | None) -> grpc.ChannelCredentials:
    """TLS trusting the deployment's CA, with ``who``'s client certificate (None: none)."""
    ca = (secrets / "ca.pem").read_bytes()
    if who is None:
        return grpc.ssl_channel_credentials(ca)
    key, cert = (secrets / f"{who}.key").read_bytes(), (secrets / f"{who}.pem").read_bytes()
    return grpc.ssl_channel_credentials(ca, key, cert)


def admin_list(target: str, credentials: grpc.ChannelCredentials, token: str = "") -> Any:
    md = (("authorization", f"Bearer {token}"),) if token else ()
    with grpc.secure_channel(target, credentials) as ch:
        return admin_pb2_grpc.AdminStub(ch).ListBaselines(admin_pb2.ListBaselinesRequest(), metadata=md, timeout=10)


def falco_post(port: int, secrets: Path, path: str) -> tuple[int, dict[str, Any]]:
    ctx = ssl.create_default_context(cafile=str(secrets / "ca.pem"))
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        c.request("POST", path, json.dumps(alert(time.time())).encode(), {"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, json.loads(r.read() or b"{}")
    finally:
        c.close()


@pytest.mark.parametrize("deployment", ["compose", "kubernetes"])
def test_unauthenticated_calls_against_the_shipped_config_are_refused(deployment: str, secrets: Path,
                                                                      tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("grpc", "metrics", "falco")}
    serve = Serve(local(shipped()[deployment], secrets, tmp_path, ports), tmp_path / "serve.log")
    target = f"127.0.0.1:{ports['grpc']}"
    token = (secrets / "admin.token").read_text().strip()
    sensor_token = (secrets / f"sensors/{NODE}.token").read_text().strip()
    try:
        # no client certificate: the TLS handshake fails (mutual TLS), nothing is served
        with pytest.raises(grpc.RpcError) as e:
            admin_list(target, creds(secrets, None), token)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        # the operator's certificate without the operator's token: refused
        with pytest.raises(grpc.RpcError) as e:
            admin_list(target, creds(secrets, "admin"))
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # a sensor's certificate is not an admin credential
        with pytest.raises(grpc.RpcError) as e:
            admin_list(target, creds(secrets, f"sensors/{NODE}"), sensor_token)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert admin_list(target, creds(secrets, "admin"), token).baselines is not None  # the operator
        # a sensor stream without its token (its certificate alone is not enough when tokens are configured)
        for _ in range(3):  # (the client's write of the Hello may race the refusal and fail as INTERNAL: again)
            with pytest.raises(grpc.aio.AioRpcError) as ae:
                asyncio.run(stream(target, [hello(f"{NODE}/bpf", NODE)],
                                   credentials=creds(secrets, f"sensors/{NODE}")))
            if ae.value.code() != grpc.StatusCode.INTERNAL:
                break
        assert ae.value.code() == grpc.StatusCode.UNAUTHENTICATED
        out = asyncio.run(stream(target, [hello(f"{NODE}/bpf", NODE)], sensor_token,
                                 credentials=creds(secrets, f"sensors/{NODE}")))
        assert out[0].HasField("welcome")
        # Falco: HTTPS, and the URL secret
        assert falco_post(ports["falco"], secrets, "/")[0] == 401
        assert falco_post(ports["falco"], secrets, "/falco/not-the-secret-0123456789")[0] == 401
        url = (secrets / "falco.env").read_text().strip().split("=", 1)[1]
        assert falco_post(ports["falco"], secrets, "/falco/" + url.rsplit("/", 1)[1]) == (200, {"accepted": True})
    finally:
        assert serve.stop() == 0, serve.log.read_text()


def daemonset_args(secrets: Path, target: str, spool: Path) -> list[str]:
    """The shipped DaemonSet's sensor arguments on this machine: its node's files from the Secret init-secrets
    writes, its spool in ``spool``, the service at ``target``; the synthetic source instead of the eBPF one (the
    transport, credentials and spool are what this is about), no runtime socket, no metrics port."""
    (ds,) = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "sensor-daemonset.yaml").read_text()) if d]
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    objs = yaml.safe_load_all((secrets / "kubernetes" / "secrets.yaml").read_text())
    (sensor_secret,) = [o for o in objs if o and o["metadata"]["name"] == "baseliner-sensors"]
    files = secrets.parent / "sensor-secret"
    files.mkdir(exist_ok=True)
    for name, data in sensor_secret["data"].items():
        (files / name).write_bytes(base64.b64decode(data))
    args = [a.replace("$(NODE_NAME)", NODE).replace(mounts["credentials"], str(files))
            .replace(mounts["spool"], str(spool)) for a in c["args"]]
    drop = {"--runtime", "--metrics-listen"}
    args = [a for i, a in enumerate(args) if a not in drop and args[i - 1] not in drop]
    assert args[:3] == ["sensor", "--source", "bpf"] and "--spool-dir" in args and "--token-file" in args
    args[2] = "synthetic"
    args[args.index("--target") + 1] = target
    return [*args, "--sensor-id", f"{NODE}/bpf"]  # the eBPF source's default id, which the credentials name


@pytest.mark.slow
def test_a_sensor_restarted_mid_stream_with_the_daemonset_arguments_loses_nothing(secrets: Path,
                                                                                   tmp_path: Path) -> None:
    """The DaemonSet's sensor spools: killed (SIGKILL) while the service is down, restarted, it sends what it
    held; every window reaches a baseline once."""
    ports = {name: free_port() for name in ("grpc", "metrics", "falco")}
    config = local(shipped()["kubernetes"], secrets, tmp_path, ports)
    target = f"127.0.0.1:{ports['grpc']}"
    spool = tmp_path / "spool"
    admin = (creds(secrets, "admin"), (secrets / "admin.token").read_text().strip())

    def scored() -> int:
        return sum(b.windows_scored for b in admin_list(target, *admin).baselines)

    def sensor(log: Path, *extra: str) -> subprocess.Popen[bytes]:
        with open(log, "ab") as f:
            return subprocess.Popen([sys.executable, "-m", "baseliner.service.cli",
                                     *daemonset_args(secrets, target, spool), "--no-attacks", "--hours", "0.5",
                                     "--backoff-max", "0.5", "--ack-timeout", "5", *extra],
                                    cwd=REPO, stdout=f, stderr=subprocess.STDOUT)

    def wait_for(pred: Any, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            assert time.monotonic() < deadline, what
            time.sleep(0.1)

    t0 = 1_767_225_600.0
    serve = Serve(config, tmp_path / "serve.log")
    log1 = tmp_path / "sensor1.log"
    s1 = sensor(log1, "--start", str(t0), "--speed", "900")
    try:
        wait_for(lambda: scored() > 0, "the service applied nothing")
        serve.kill9()  # the service goes away mid-stream; the sensor keeps its windows in the spool
        wait_for(lambda: "source finished" in log1.read_text(), "sensor 1 did not finish its source")
        s1.kill()  # and the sensor is killed with them unacknowledged
        s1.wait(10)
    finally:
        if s1.poll() is None:
            s1.kill()
        serve.kill9()  # (already, unless a step above failed)
    m = re.search(r"source finished: (\d+) vectors submitted", log1.read_text())
    assert m, log1.read_text()
    first = int(m.group(1))
    assert list(spool.glob("*/*.batch")), "nothing was left unacknowledged: the spool was not exercised"
    serve = Serve(config, tmp_path / "serve2.log")
    s2: subprocess.Popen[bytes] | None = None
    try:
        before = scored()
        assert 0 < before < first
        log2 = tmp_path / "sensor2.log"
        s2 = sensor(log2, "--start", str(t0 + 1800.0), "--speed", "0")
        assert s2.wait(180) == 0, log2.read_text()
        m2 = re.search(r"source finished: (\d+) vectors submitted", log2.read_text())
        assert m2, log2.read_text()
        assert scored() == first + int(m2.group(1))  # every window once: none lost, none twice
        assert not list(spool.glob("*/*.batch"))
    finally:
        if s2 is not None and s2.poll() is None:
            s2.kill()
        assert serve.stop() == 0, serve.log.read_text()


def test_serve_refuses_an_exposed_listener_without_credentials(tmp_path: Path) -> None:
    """`baseliner serve` off loopback with no credentials exits before it binds anything, naming each missing one."""
    r = subprocess.run([sys.executable, "-m", "baseliner.service.cli", "serve", "--listen", "0.0.0.0:0",
                        "--set", "grpc.allow_plaintext=true", "--set", "falco.listen=0.0.0.0:0",
                        "--set", "falco.allow_plaintext=true", "--metrics-listen", ""],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "grpc.listen '0.0.0.0:0' is not a loopback address and sensors are not authenticated" in r.stderr
    assert "the Admin API is open (set grpc.admin_tokens_file" in r.stderr
    assert "falco.listen '0.0.0.0:0' is not a loopback address and anyone may post alerts" in r.stderr
    assert "baseliner serving" not in r.stderr


def test_the_insecure_lab_mode_says_so(caplog: pytest.LogCaptureFixture) -> None:
    """insecure=true lets such a configuration start, logged as an error per listener and exported as a gauge
    (checked on the server object, which binds nothing until started)."""
    from baseliner.service.server import BaselinerServer
    from prometheus_client import CollectorRegistry

    cfg = service_config.load(None, environ={}, overrides=[
        ("grpc.listen", "0.0.0.0:0"), ("grpc.allow_plaintext", "true"), ("falco.listen", "0.0.0.0:0"),
        ("falco.allow_plaintext", "true"), ("metrics.listen", ""), ("insecure", "true")])
    registry = CollectorRegistry()
    server = BaselinerServer(cfg, registry=registry)
    with caplog.at_level("ERROR"):
        server._warn_insecure()
    lines = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(lines) == 2 and all(line.startswith("INSECURE (insecure=true)") for line in lines), lines
    assert registry.get_sample_value("baseliner_insecure_listeners") == 2
