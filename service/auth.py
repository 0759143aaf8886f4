"""Who may talk to the service, over what: TLS, mutual TLS, sensor and admin bearer tokens, Falco secrets.

Server side (``baseliner serve``):

* **TLS** on the gRPC port with ``grpc.tls_cert_file`` + ``grpc.tls_key_file``; **mutual TLS** when
  ``grpc.tls_client_ca_file`` is set too (a client without a certificate signed by that CA cannot even
  open a connection).  Without TLS the port may listen on loopback only, unless ``grpc.allow_plaintext``
  says otherwise (then a warning is logged at start).
* **Sensor identity** comes from the sensor's credential, never from what it says: a token
  (``grpc.sensor_tokens_file``, lines ``NODE SENSOR TOKEN``, sent as ``authorization: Bearer TOKEN``) or a
  client certificate (mutual TLS, ``grpc.tls_client_ca_file``) whose URI SAN is
  ``spiffe://TRUST-DOMAIN/sensor/NODE/SENSOR``.  The identity is ``NODE/SENSOR``: the Hello must name it
  (``sensor_id`` and ``node``, else ``PERMISSION_DENIED``), deduplication, the state files and the
  write-ahead log are keyed by it, and a vector whose identity names another node is rejected with reason
  ``UNAUTHORIZED`` (the rest of the batch goes on).  With tokens and certificates both configured, a
  stream needs a token, and a certificate naming a sensor must name the same one.  A line may repeat an
  identity with another token (rotation: both work until the old line is removed).
* **Admin tokens**, two roles (lines ``TOKEN`` or ``NAME TOKEN``; the name is who the logs say acted):
  *operators* (``grpc.admin_tokens_file``) may call every ``Admin`` RPC; *viewers*
  (``grpc.viewer_tokens_file``) only the read-only ones (:data:`READ_ONLY_ADMIN_METHODS`: ``ListBaselines``,
  ``GetBaseline``); a viewer's ``SetMode``, ``ResetBaseline`` or ``Feedback`` is ``PERMISSION_DENIED``.  With
  either file set every ``Admin`` RPC needs a token (with only viewers, nobody may act); with neither the
  Admin API is open.  The operator console (``service/console/``) logs in with the same tokens and roles.
  Sensor tokens do not open the Admin API and admin tokens do not open the stream.  Health checking and
  reflection stay open (they reveal nothing about baselines).
* Tokens are compared as SHA-256 digests held in a dict (no early-exit string comparison on secrets).

Falco's ``http_output`` can authenticate with a client certificate (``http_output.mtls``) or with a
secret in the URL; ``falco.secret_file`` requires ``/falco/SECRET`` (or ``?secret=SECRET``), and
``falco.tls_*`` put the endpoint on HTTPS with an optional client CA.  The endpoint only takes alerts: it
has no route to anything else.

Failures map to gRPC status codes in ``service/errors.py`` (the one place).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
import numpy as np
from baseliner.models.block import VectorBlock
from baseliner.models.errors import BaselinerError, ConfigError, ValidationError
from baseliner.service.errors import AuthenticationError, PermissionDeniedError, abort

log = logging.getLogger(__name__)

INGEST_PREFIX = "/baseliner.v1.Ingest/"
ADMIN_PREFIX = "/baseliner.v1.Admin/"
SHARDS_PREFIX = "/baseliner.v1.Shards/"
#: Shards RPCs any holder of a token may call (sensors ask for the map; operators look at the shards' state).
OPEN_SHARDS_METHODS = ("GetMap", "Status")
LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """``127.0.0.1``, ``::1``, ``localhost``: True; anything else (``0.0.0.0`` too): False.

    >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("0.0.0.0"), is_loopback("node.example")
    (True, True, False, False)
    """
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


#: Node and sensor names: what a Kubernetes node name or a host name holds (no "/", no spaces).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}\Z")
#: The URI SAN of a sensor's client certificate (a SPIFFE id; ``baseliner init-secrets`` issues them).
_SENSOR_URI = re.compile(r"spiffe://[^/]+/sensor/([^/]+)/([^/]+)\Z")
MIN_TOKEN_CHARS = 16


@dataclass(frozen=True, slots=True)
class SensorIdentity:
    """Who a sensor is, as its credential says: the node it reports for and its name there."""

    node: str
    name: str

    @property
    def key(self) -> str:
        """``NODE/NAME``: the sensor id deduplication, state files and the write-ahead log are keyed by."""
        return f"{self.node}/{self.name}"


def _lines(path: str) -> list[tuple[int, list[str]]]:
    """Numbered, split lines of a token file (comments and blank lines dropped)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read token file {path}: {getattr(e, 'strerror', None) or e}") from None
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if line:
            out.append((n, line.split()))
    if not out:
        raise ConfigError(f"token file {path} holds no token")
    return out


def _token(path: str, n: int, token: str, seen: set[str]) -> str:
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"{path}:{n}: token shorter than {MIN_TOKEN_CHARS} characters")
    digest = _digest(token)
    if digest in seen:
        raise ConfigError(f"{path}:{n}: this token is on an earlier line too (a token names one holder)")
    seen.add(digest)
    return digest


def read_sensor_tokens(path: str) -> dict[str, SensorIdentity]:
    """``sha256(token) -> SensorIdentity`` from lines ``NODE SENSOR TOKEN``; comments (#) and blank lines ignored.

    An identity may appear on several lines (a token being rotated); a token on only one.
    """
    out: dict[str, SensorIdentity] = {}
    for n, parts in _lines(path):
        if len(parts) != 3:
            raise ConfigError(f"{path}:{n}: expected 'NODE SENSOR TOKEN' (e.g. 'node-1 bpf TOKEN' for the "
                              "sensor node-1/bpf)")
        node, name, token = parts
        for what, value in (("node", node), ("sensor", name)):
            if not NAME_PATTERN.match(value):
                raise ConfigError(f"{path}:{n}: {what} name {value!r} must be letters, digits, '.', '_' or '-'")
        out[_token(path, n, token, set(out))] = SensorIdentity(node, name)
    return out


def read_token_file(path: str, default_name: str = "admin") -> dict[str, str]:
    """``sha256(token) -> name`` from lines ``NAME TOKEN`` or ``TOKEN`` (named ``DEFAULT_NAME-LINE``)."""
    out: dict[str, str] = {}
    for n, parts in _lines(path):
        if len(parts) not in (1, 2):
            raise ConfigError(f"{path}:{n}: expected 'TOKEN' or 'NAME TOKEN'")
        out[_token(path, n, parts[-1], set(out))] = parts[0] if len(parts) == 2 else f"{default_name}-{n}"
    return out


def sensor_identity_of_certificate(pem: bytes) -> SensorIdentity | None:
    """The sensor a client certificate names in a URI SAN ``spiffe://TRUST-DOMAIN/sensor/NODE/SENSOR``;
    None when it names none (an admin tool's certificate, say).  Two different sensor URIs: refused."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    found = {m.groups() for uri in sans.get_values_for_type(x509.UniformResourceIdentifier)
             if (m := _SENSOR_URI.match(uri))}
    if len(found) > 1:
        raise PermissionDeniedError("the client certificate names more than one sensor")
    if not found:
        return None
    node, name = found.pop()
    if not (NAME_PATTERN.match(node) and NAME_PATTERN.match(name)):
        raise PermissionDeniedError(f"the client certificate's sensor {node}/{name} is not a valid name")
    return SensorIdentity(node, name)


def read_secret(path: str) -> str:
    """The secret a file holds (surrounding whitespace removed)."""
    return Path(path).read_text(encoding="utf-8").strip()


# --------------------------------------------------------------------------------------------------
# gRPC server


def server_credentials(cfg: Any) -> grpc.ServerCredentials | None:
    """TLS (or mutual TLS) credentials from ``grpc.tls_*``; None when TLS is off."""
    g = cfg.grpc
    if not g.tls_cert_file:
        return None
    cert = Path(g.tls_cert_file).read_bytes()
    key = Path(g.tls_key_file).read_bytes()
    ca = Path(g.tls_client_ca_file).read_bytes() if g.tls_client_ca_file else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)


def _bearer(metadata: Sequence[tuple[str, Any]] | None) -> str:
    for k, v in metadata or ():
        if k == "authorization":
            value = v.decode() if isinstance(v, bytes) else str(v)
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    return ""


OPERATOR = "operator"  # may read and act (grpc.admin_tokens_file)
VIEWER = "viewer"  # may read only (grpc.viewer_tokens_file)
#: The Admin RPCs a viewer may call; every other Admin RPC changes a baseline and needs an operator.
READ_ONLY_ADMIN_METHODS = frozenset({"ListBaselines", "GetBaseline"})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who holds an admin token: the name its file gives and the role of that file."""

    name: str
    role: str  # OPERATOR or VIEWER

    @property
    def may_act(self) -> bool:
        return self.role == OPERATOR


@dataclass
class Authorizer:
    """Token tables; ``None`` for a table means that kind of call needs no token.  ``mtls_sensors``: client
    certificates (``grpc.tls_client_ca_file``) identify sensors."""

    sensors: Mapping[str, SensorIdentity] | None = None  # sha256(token) -> identity
    admins: Mapping[str, str] | None = None  # sha256(token) -> name: operators
    viewers: Mapping[str, str] | None = None  # sha256(token) -> name: read-only
    peer: str | None = None  # sha256 of the shards' shared token (shards.peer_token_file)
    mtls_sensors: bool = False

    @classmethod
    def from_config(cls, cfg: Any) -> Authorizer:
        g = cfg.grpc
        return cls(
            sensors=read_sensor_tokens(g.sensor_tokens_file) if g.sensor_tokens_file else None,
            admins=read_token_file(g.admin_tokens_file) if g.admin_tokens_file else None,
            viewers=read_token_file(g.viewer_tokens_file, "viewer") if g.viewer_tokens_file else None,
            peer=_digest(read_secret(cfg.shards.peer_token_file)) if cfg.shards.peer_token_file else None,
            mtls_sensors=bool(g.tls_client_ca_file),
        )

    @property
    def enabled(self) -> bool:
        return self.sensors is not None or self.admin_tokens or self.peer is not None

    def shard_call(self, metadata: Sequence[tuple[str, Any]] | None, method: str) -> None:
        """A ``Shards`` RPC: the peer token for the shards' own calls; any known token for the map and the
        status (no token when sensors need none: ``grpc.sensor_tokens_file`` unset).  Raises when refused."""
        if not self.enabled:
            return
        token = _bearer(metadata)
        digest = _digest(token) if token else ""
        if self.peer is not None and hmac.compare_digest(digest, self.peer):
            return
        if method in OPEN_SHARDS_METHODS:
            if not token:
                if self.sensors is None:  # sensors stream without a token here: they ask for the map without one
                    return
                raise AuthenticationError(f"Shards.{method} needs a sensor, admin or peer token")
            if (self.sensors or {}).get(digest) is not None or self.principal(token) is not None:
                return
            raise PermissionDeniedError("unknown token")
        if self.peer is None:
            return  # no peer token configured (plaintext on loopback): the shards' calls are open
        raise (AuthenticationError if not token else PermissionDeniedError)(
            f"Shards.{method} is for the shards themselves (shards.peer_token_file)")

    @property
    def admin_tokens(self) -> bool:
        """Whether the Admin API (and the console) need a token."""
        return self.admins is not None or self.viewers is not None

    def principal(self, token: str) -> Principal | None:
        """The operator or viewer a token names; None for any other string."""
        digest = _digest(token)
        name = (self.admins or {}).get(digest)
        if name is not None:
            return Principal(name, OPERATOR)
        name = (self.viewers or {}).get(digest)
        return Principal(name, VIEWER) if name is not None else None

    @property
    def sensors_authenticated(self) -> bool:
        """Whether a sensor's identity comes from a credential (else from its Hello: loopback or a lab)."""
        return self.sensors is not None or self.mtls_sensors

    def token_identity(self, metadata: Sequence[tuple[str, Any]] | None) -> SensorIdentity | None:
        """The sensor a stream's token names; None when sensor tokens are off.  Raises when refused."""
        if self.sensors is None:
            return None
        token = _bearer(metadata)
        if not token:
            raise AuthenticationError("this service requires a sensor token (authorization: Bearer ...)")
        who = self.sensors.get(_digest(token))
        if who is None:
            raise AuthenticationError("unknown sensor token")
        return who

    def sensor_identity(self, metadata: Sequence[tuple[str, Any]] | None,
                        auth_context: Mapping[str, Sequence[bytes]] | None) -> SensorIdentity | None:
        """The identity a stream's credentials give it (None: sensors are not authenticated).  Raises when the
        credentials are missing, unknown or disagree."""
        by_token = self.token_identity(metadata)
        by_cert = None
        if self.mtls_sensors:
            pems = (auth_context or {}).get("x509_pem_cert") or []
            by_cert = sensor_identity_of_certificate(pems[0]) if pems else None
            if by_cert is None and by_token is None:
                raise PermissionDeniedError("the client certificate names no sensor (a URI SAN "
                                            "spiffe://TRUST-DOMAIN/sensor/NODE/SENSOR) and no sensor token was sent")
        if by_token is not None and by_cert is not None and by_token != by_cert:
            raise PermissionDeniedError(f"the sensor token names {by_token.key} but the client certificate names "
                                        f"{by_cert.key}")
        return by_token or by_cert

    def admin(self, metadata: Sequence[tuple[str, Any]] | None, method: str = "") -> Principal | None:
        """Who calls Admin RPC ``method`` (None when the Admin API is open).  Raises when refused: no token,
        an unknown one, or a viewer's token for an RPC that changes a baseline."""
        if not self.admin_tokens:
            return None
        token = _bearer(metadata)
        if not token:
            raise AuthenticationError("the Admin API requires an admin token (authorization: Bearer ...)")
        who = self.principal(token)
        if who is None:
            raise PermissionDeniedError("this token does not grant the Admin API")
        if not who.may_act and method not in READ_ONLY_ADMIN_METHODS:
            raise PermissionDeniedError(f"{method or 'this call'} changes a baseline: it needs an operator token "
                                        f"(grpc.admin_tokens_file); {who.name!r} is a viewer")
        return who


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses Ingest and Admin calls without the right token before any handler runs."""

    def __init__(self, authorizer: Authorizer) -> None:
        self.authorizer = authorizer

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        md = handler_call_details.invocation_metadata
        try:
            if method.startswith(INGEST_PREFIX):
                self.authorizer.token_identity(md)
            elif method.startswith(ADMIN_PREFIX):
                self.authorizer.admin(md, method.removeprefix(ADMIN_PREFIX))
            elif method.startswith(SHARDS_PREFIX):
                self.authorizer.shard_call(md, method.removeprefix(SHARDS_PREFIX))
        except BaselinerError as e:
            log.warning("refused %s: %s", method, e)
            return _denied(e, method)
        return await continuation(handler_call_details)


def _denied(exc: BaselinerError, method: str) -> grpc.RpcMethodHandler:
    """A handler of ``method``'s kind (Ingest streams both ways, Shards.Pull streams replies, the rest are
    unary) that aborts with ``exc``."""
    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await abort(context, exc)

    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await abort(context, exc)
        yield None  # pragma: no cover - abort raises

    if method.startswith(INGEST_PREFIX):
        return grpc.stream_stream_rpc_method_handler(streaming)
    if method == SHARDS_PREFIX + "Pull":
        return grpc.unary_stream_rpc_method_handler(streaming)
    return grpc.unary_unary_rpc_method_handler(unary)


def check_hello(identity: SensorIdentity, sensor_id: str, node: str) -> None:
    """A Hello must name the identity the stream's credential gives (a sensor cannot speak for another)."""
    if sensor_id != identity.key or node != identity.node:
        raise PermissionDeniedError(
            f"this sensor's credential is for sensor {identity.key!r} on node {identity.node!r}; its Hello named "
            f"sensor {sensor_id!r} on node {node!r} (start it with --node {identity.node} --sensor-id {identity.key})"
        )


def restrict_node(
    decoded: tuple[VectorBlock, list[ValidationError]], allowed: str | None
) -> tuple[VectorBlock, list[ValidationError]]:
    """Reject windows that name another node than ``allowed`` (``UNAUTHORIZED``); the others go on."""
    block, rejected = decoded
    if allowed is None:
        return decoded
    other = np.array([ident.node != allowed for ident in block.identities], dtype=bool)
    if not other.any():
        return decoded
    hit = other[block.ident]
    rejected = list(rejected)
    for i in np.flatnonzero(hit).tolist():
        node = block.identity(i).node
        rejected.append(ValidationError(
            "UNAUTHORIZED", f"vector for node {node!r} on a stream allowed for {allowed!r}", int(block.index[i])
        ))
    return block.take(np.flatnonzero(~hit)), rejected


# --------------------------------------------------------------------------------------------------
# Clients (sensor, admin CLI, tests)


def bearer_metadata(token_file: str = "", token: str = "") -> tuple[tuple[str, str], ...]:
    """``(("authorization", "Bearer ..."),)`` from a token or a file holding it; empty when neither."""
    if token_file:
        token = Path(token_file).read_text(encoding="utf-8").strip()
    return (("authorization", f"Bearer {token}"),) if token else ()


# --------------------------------------------------------------------------------------------------
# Falco endpoint


class FalcoGate:
    """Checks the secret in an alert request's URL; builds the endpoint's TLS context."""

    def __init__(self, cfg: Any) -> None:
        self.secret = read_secret(cfg.secret_file) if cfg.secret_file else ""
        self._digest = _digest(self.secret) if self.secret else ""
        self.cfg = cfg

    def allowed(self, target: str) -> tuple[bool, str]:
        """``(ok, path without the secret)`` for a request target such as ``/falco/SECRET?x=1``."""
        parts = urlsplit(target)
        path = parts.path
        if not self.secret:
            return True, path
        given = ""
        segs = path.rstrip("/").split("/")
        if len(segs) >= 3 and segs[-2] == "falco":
            given = segs[-1]
            path = "/".join(segs[:-1])
        else:
            given = (parse_qs(parts.query).get("secret") or [""])[0]
        ok = bool(given) and hmac.compare_digest(_digest(given), self._digest)
        return ok, path

    def ssl_context(self) -> ssl.SSLContext | None:
        return server_ssl_context(self.cfg)


def server_ssl_context(cfg: Any) -> ssl.SSLContext | None:
    """The TLS context of an HTTP listener from its section's ``tls_cert_file`` and ``tls_key_file`` (None when TLS
    is off), requiring client certificates signed by ``tls_client_ca_file`` where the section has one set."""
    if not cfg.tls_cert_file:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file)
    if getattr(cfg, "tls_client_ca_file", ""):
        ctx.load_verify_locations(cfg.tls_client_ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
