"""``baseliner init-secrets``: every credential and key a secured deployment needs, in one directory.

::

    baseliner init-secrets --out secrets --node node-1 --node node-2

writes (private keys and tokens mode 0600, the directory 0700)::

    ca.pem, ca.key            the certificate authority (keep ca.key offline: it issues certificates)
    server.pem, server.key    the service's certificate (gRPC, Falco endpoint); names from --server-name
    sensor.tokens             service: one line per sensor, NODE SENSOR TOKEN (grpc.sensor_tokens_file)
    sensors/NODE.token        that sensor's token (--token-file)
    sensors/NODE.pem, .key    that sensor's client certificate, URI SAN spiffe://baseliner/sensor/NODE/SENSOR
    admin.tokens, admin.token service: operator tokens (grpc.admin_tokens_file); the operator's own token
    admin.pem, admin.key      the operator's client certificate (for mutual TLS; it names no sensor)
    peer.token                the shards' shared secret for their calls to each other (shards.peer_token_file)
    falco.secret              the Falco endpoint's URL secret (falco.secret_file)
    falco.env                 BASELINER_FALCO_URL, the endpoint's URL with that secret (deploy/compose's Falco)
    state.keys                the state integrity keyring (state.key_file)
    spool.keys                the sensors' spool keyring (--spool-key-file)
    model-signing.key         the model publisher's Ed25519 key (keep it where models are published)
    model-signing.pub         its public key, which the service trusts (model.trusted_keys_file)
    serve.yaml                a service configuration using the files above where --mount-dir says
    kubernetes/secrets.yaml   the same as Kubernetes Secrets (service, sensors, Falco), for deploy/kubernetes

The service's identity model, what each credential grants and how to rotate them: ``docs/security.md``.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from baseliner.models.errors import ConfigError
from baseliner.models.integrity import new_key
from baseliner.models.signatures import write_key_pair
from baseliner.sensor.cli_checks import examples
from baseliner.service.auth import NAME_PATTERN
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

RAW = argparse.RawDescriptionHelpFormatter
TRUST_DOMAIN = "baseliner"
DEFAULT_SERVER_NAMES = ("localhost", "127.0.0.1", "::1", "baseliner", "baseliner-1",  # deploy/compose's two shards
                        "baseliner.baseliner.svc",
                        "baseliner.baseliner.svc.cluster.local",
                        # each shard of the StatefulSet by its own name (docs/sharding.md)
                        "*.baseliner-service-headless.baseliner.svc",
                        "*.baseliner-service-headless.baseliner.svc.cluster.local")
#: Where the shipped deployments mount the service's and the sensors' secrets.
SERVICE_MOUNT = "/etc/baseliner/secrets"
SENSOR_MOUNT = "/etc/baseliner/sensor"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "init-secrets", help="create the CA, certificates, tokens and keys of a secured deployment",
        description=(__doc__ or "").split("\n\n")[0], formatter_class=RAW,
        epilog=examples("baseliner init-secrets --out secrets --node node-1 --node node-2",
                        "baseliner init-secrets --out deploy/compose/secrets --node docker-host "
                        f"--mount-dir {SERVICE_MOUNT}"),
    )
    p.add_argument("--out", required=True, help="directory to create (must not exist, or be empty)")
    p.add_argument("--node", action="append", required=True, metavar="NODE",
                   help="a node a sensor runs on (repeatable; its name as the sensor's --node gives it)")
    p.add_argument("--sensor", default="bpf", help="the sensors' name on their node: the sensor id is NODE/SENSOR "
                                                   "(default bpf, the eBPF sensor's default id NODE/bpf)")
    p.add_argument("--server-name", action="append", metavar="NAME",
                   help="a DNS name or IP address of the service in its certificate (repeatable; default: "
                        f"{', '.join(DEFAULT_SERVER_NAMES)})")
    p.add_argument("--days", type=int, default=365, help="validity of the server and client certificates (365)")
    p.add_argument("--namespace", default="baseliner", help="Kubernetes namespace of the Secrets (baseliner)")
    p.add_argument("--falco-namespace", default="falco", help="Kubernetes namespace of Falco (falco)")
    p.add_argument("--mount-dir", default="",
                   help="where the service will read these files, for serve.yaml (default: the --out directory)")
    return p


# --------------------------------------------------------------------------------------------------
# certificates


@dataclass
class Issued:
    cert: bytes
    key: bytes


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Baseliner"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class Authority:
    """A certificate authority (ECDSA P-256) that issues the service's and the clients' certificates."""

    def __init__(self, days: int = 3650) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                              key_encipherment=False, data_encipherment=False, key_agreement=False,
                              encipher_only=False, decipher_only=False)
        self.cert = (
            x509.CertificateBuilder().subject_name(_name("Baseliner CA")).issuer_name(_name("Baseliner CA"))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, cn: str, sans: list[x509.GeneralName], server: bool, days: int) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        # a shard also calls the other shards with its server certificate (mutual TLS)
        usage = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if server else \
            [ExtendedKeyUsageOID.CLIENT_AUTH]
        cert = (
            x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def _server_sans(names: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


def sensor_uri(node: str, sensor: str) -> str:
    """The URI SAN naming a sensor (``service/auth.py`` reads it)."""
    return f"spiffe://{TRUST_DOMAIN}/sensor/{node}/{sensor}"


# --------------------------------------------------------------------------------------------------
# the directory


def _token() -> str:
    return secrets.token_urlsafe(32)


class SecretsDir:
    """Writes files into the output directory (private ones mode 0600) and remembers them for the manifests."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[str, bytes] = {}

    def write(self, name: str, data: bytes | str, private: bool = True) -> None:
        raw = data.encode() if isinstance(data, str) else data
        path = self.root / name
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        self.files[name] = raw


def create(out: Path, nodes: list[str], sensor: str = "bpf", server_names: list[str] | None = None,
           days: int = 365, namespace: str = "baseliner", falco_namespace: str = "falco",
           mount_dir: str = "") -> SecretsDir:
    """Create every secret of a deployment in ``out`` (see the module docstring); returns what was written."""
    _check(out, nodes, sensor)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    d = SecretsDir(out)
    ca = Authority()
    d.write("ca.pem", ca.pem, private=False)
    d.write("ca.key", _pem_key(ca.key))
    server = ca.issue("baseliner service", _server_sans(server_names or list(DEFAULT_SERVER_NAMES)), True, days)
    d.write("server.pem", server.cert, private=False)
    d.write("server.key", server.key)
    lines = ["# NODE SENSOR TOKEN: the sensor NODE/SENSOR (baseliner init-secrets; docs/security.md)"]
    for node in nodes:
        token = _token()
        lines.append(f"{node} {sensor} {token}")
        d.write(f"sensors/{node}.token", token + "\n")
        cert = ca.issue(f"sensor {node}/{sensor}", [x509.UniformResourceIdentifier(sensor_uri(node, sensor))],
                        False, days)
        d.write(f"sensors/{node}.pem", cert.cert, private=False)
        d.write(f"sensors/{node}.key", cert.key)
    d.write("sensor.tokens", "\n".join(lines) + "\n")
    admin = _token()
    d.write("admin.tokens", f"# NAME TOKEN: operators, who may call every Admin RPC\noperator {admin}\n")
    d.write("admin.token", admin + "\n")
    op = ca.issue("operator", [x509.UniformResourceIdentifier(f"spiffe://{TRUST_DOMAIN}/admin/operator")], False, days)
    d.write("admin.pem", op.cert, private=False)
    d.write("admin.key", op.key)
    d.write("peer.token", _token() + "\n")  # the shards' shared secret for their calls to each other
    falco_secret = _token()
    d.write("falco.secret", falco_secret + "\n")
    d.write("falco.env", f"BASELINER_FALCO_URL={falco_url('baseliner', falco_secret)}\n")
    d.write("state.keys", "# the first key signs the state; later keys only verify (rotation)\n" + new_key() + "\n")
    d.write("spool.keys", "# the first key signs the sensors' spools; later keys only verify (rotation)\n"
            + new_key() + "\n")
    write_key_pair(Ed25519PrivateKey.generate(), out / "model-signing.key", out / "model-signing.pub")
    d.files["model-signing.pub"] = (out / "model-signing.pub").read_bytes()
    d.write("serve.yaml", serve_config(mount_dir or str(out.resolve())), private=False)
    d.write("kubernetes/secrets.yaml", kubernetes_secrets(d.files, nodes, namespace, falco_namespace), private=False)
    return d


def _check(out: Path, nodes: list[str], sensor: str) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out}: exists and is not an empty directory (nothing is overwritten)")
    for value in (*nodes, sensor):
        if not NAME_PATTERN.match(value):
            raise ConfigError(f"{value!r}: node and sensor names are letters, digits, '.', '_' or '-'")
    if len(set(nodes)) != len(nodes):
        raise ConfigError("--node: a node is named twice")


SERVICE_FILES = ("server.pem", "server.key", "ca.pem", "sensor.tokens", "admin.tokens", "falco.secret", "state.keys",
                 "model-signing.pub", "peer.token")


def serve_config(mount: str) -> str:
    """The service settings that use the secrets, read from ``mount``."""
    m = mount.rstrip("/")
    doc = {
        "grpc": {"tls_cert_file": f"{m}/server.pem", "tls_key_file": f"{m}/server.key",
                 "tls_client_ca_file": f"{m}/ca.pem", "sensor_tokens_file": f"{m}/sensor.tokens",
                 "admin_tokens_file": f"{m}/admin.tokens"},
        "state": {"key_file": f"{m}/state.keys"},
        "falco": {"secret_file": f"{m}/falco.secret", "tls_cert_file": f"{m}/server.pem",
                  "tls_key_file": f"{m}/server.key"},
        "model": {"trusted_keys_file": f"{m}/model-signing.pub"},
    }
    head = ("# Settings of `baseliner serve` that use the secrets of baseliner init-secrets (merge them into your\n"
            "# configuration; docs/security.md). Sensors connect with TLS (their CA: ca.pem), their client\n"
            "# certificate and their token; operators with admin.token and admin.pem/admin.key.\n")
    return head + yaml.safe_dump(doc, sort_keys=False)


def falco_url(host: str, secret: str) -> str:
    """Where Falco's http_output posts: the service's HTTPS endpoint with the URL secret."""
    return f"https://{host}:2802/falco/{secret}"


def _secret(name: str, namespace: str, files: dict[str, bytes], comment: str) -> str:
    doc = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
           "metadata": {"name": name, "namespace": namespace,
                        "labels": {"app.kubernetes.io/name": "baseliner", "app.kubernetes.io/part-of": "baseliner"}},
           "data": {k: base64.b64encode(v).decode() for k, v in files.items()}}
    return f"# {comment}\n" + yaml.safe_dump(doc, sort_keys=False)


def kubernetes_secrets(files: dict[str, bytes], nodes: list[str], namespace: str, falco_namespace: str) -> str:
    """Secrets for ``deploy/kubernetes``: the service's, the sensors' (each sensor reads its node's files), Falco's."""
    sensor_files = {"ca.pem": files["ca.pem"], "spool.keys": files["spool.keys"]}
    for node in nodes:
        for ext in ("token", "pem", "key"):
            sensor_files[f"{node}.{ext}"] = files[f"sensors/{node}.{ext}"]
    url = falco_url(f"baseliner.{namespace}.svc", files["falco.secret"].decode().strip())
    falco = {"ca.pem": files["ca.pem"], "BASELINER_FALCO_URL": url.encode()}
    return "---\n".join([
        _secret("baseliner-service", namespace, {k: files[k] for k in SERVICE_FILES},
                f"kubectl apply -f this file, then kubectl apply -k deploy/kubernetes (mounted at {SERVICE_MOUNT})"),
        _secret("baseliner-sensors", namespace, sensor_files,
                f"every node's sensor credentials; each sensor pod uses its node's ({SENSOR_MOUNT}/$(NODE_NAME).*)"),
        _secret("baseliner-falco", falco_namespace, falco,
                "Falco's http_output: the service's CA and the endpoint's URL with its secret "
                "(deploy/kubernetes/falco-values.yaml)"),
    ])


def run(args: argparse.Namespace) -> int:
    if args.days < 1:
        raise ConfigError("--days must be >= 1")
    out = Path(args.out)
    create(out, list(args.node), args.sensor, args.server_name, args.days, args.namespace, args.falco_namespace,
           args.mount_dir)
    print(f"wrote the secrets of {len(args.node)} sensor(s) to {out} (private files mode 0600):\n"
          f"  service:   {', '.join(SERVICE_FILES)} (serve.yaml uses them)\n"
          f"  sensors:   ca.pem, spool.keys, sensors/NODE.token, sensors/NODE.pem, sensors/NODE.key\n"
          f"  operators: admin.token, admin.pem, admin.key\n"
          f"  offline:   ca.key (issues certificates), model-signing.key (signs models where they are published)\n"
          f"  Kubernetes: kubectl apply -f {out / 'kubernetes' / 'secrets.yaml'}\n"
          "What each grants and how to rotate them: docs/security.md")
    return 0
