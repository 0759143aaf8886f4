"""Who may talk to the service, over what: TLS, mutual TLS, sensor and admin bearer tokens, Falco secrets.

Server side (``baseliner serve``):

* **TLS** on the gRPC port with ``grpc.tls_cert_file`` + ``grpc.tls_key_file``; **mutual TLS** when
  ``grpc.tls_client_ca_file`` is set too (a client without a certificate signed by that CA cannot even
  open a connection).  Without TLS the port may listen on loopback only, unless ``grpc.allow_plaintext``
  says otherwise (then a warning is logged at start).
* **Sensor tokens** (``grpc.sensor_tokens_file``, lines ``NODE TOKEN``): every ``Ingest.Stream`` must carry
  ``authorization: Bearer TOKEN``; the token decides the one node the stream may report for.  A Hello
  for another node is refused (``PERMISSION_DENIED``); a vector whose identity names another node is
  rejected with reason ``UNAUTHORIZED`` (the rest of the batch goes on).
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


def read_token_file(path: str, with_node: bool, default_name: str = "admin") -> dict[str, str]:
    """``sha256(token) -> node`` (``with_node``) or ``-> name`` (``DEFAULT_NAME-LINE`` for a bare token);
    comments (#) and blank lines ignored."""
    out: dict[str, str] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ConfigError(f"cannot read token file {path}: {e.strerror}") from None
    for n, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if with_node and len(parts) != 2:
            raise ConfigError(f"{path}:{n}: expected 'NODE TOKEN'")
        if not with_node and len(parts) not in (1, 2):
            raise ConfigError(f"{path}:{n}: expected 'TOKEN' or 'NAME TOKEN'")
        token = parts[-1]
        if len(token) < 16:
            raise ConfigError(f"{path}:{n}: token shorter than 16 characters")
        name = parts[0] if len(parts) == 2 else f"{default_name}-{n}"
        out[_digest(token)] = name
    if not out:
        raise ConfigError(f"token file {path} holds no token")
    return out


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
    """Token tables; ``None`` for a table means that kind of call needs no token."""

    sensors: Mapping[str, str] | None = None  # sha256(token) -> node
    admins: Mapping[str, str] | None = None  # sha256(token) -> name: operators
    viewers: Mapping[str, str] | None = None  # sha256(token) -> name: read-only

    @classmethod
    def from_config(cls, cfg: Any) -> Authorizer:
        g = cfg.grpc
        return cls(
            read_token_file(g.sensor_tokens_file, True) if g.sensor_tokens_file else None,
            read_token_file(g.admin_tokens_file, False) if g.admin_tokens_file else None,
            read_token_file(g.viewer_tokens_file, False, "viewer") if g.viewer_tokens_file else None,
        )

    @property
    def enabled(self) -> bool:
        return self.sensors is not None or self.admin_tokens

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

    def sensor_node(self, metadata: Sequence[tuple[str, Any]] | None) -> str | None:
        """The node a stream may report for; None when sensor tokens are off.  Raises when refused."""
        if self.sensors is None:
            return None
        token = _bearer(metadata)
        if not token:
            raise AuthenticationError("this service requires a sensor token (authorization: Bearer ...)")
        node = self.sensors.get(_digest(token))
        if node is None:
            raise AuthenticationError("unknown sensor token")
        return node

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
                self.authorizer.sensor_node(md)
            elif method.startswith(ADMIN_PREFIX):
                self.authorizer.admin(md, method.removeprefix(ADMIN_PREFIX))
        except BaselinerError as e:
            log.warning("refused %s: %s", method, e)
            return _denied(e, streaming=method.startswith(INGEST_PREFIX))
        return await continuation(handler_call_details)


def _denied(exc: BaselinerError, streaming: bool) -> grpc.RpcMethodHandler:
    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await abort(context, exc)

    async def stream(request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        await abort(context, exc)
        yield None  # pragma: no cover - abort raises

    if streaming:
        return grpc.stream_stream_rpc_method_handler(stream)
    return grpc.unary_unary_rpc_method_handler(unary)


def check_hello_node(allowed: str | None, hello_node: str) -> None:
    if allowed is not None and hello_node != allowed:
        raise PermissionDeniedError(
            f"this sensor's token allows reports for node {allowed!r} only, not {hello_node!r}"
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


def channel_credentials(ca_file: str = "", cert_file: str = "", key_file: str = "") -> grpc.ChannelCredentials:
    """TLS client credentials: trust ``ca_file`` (system roots when empty), present a certificate if given."""
    return grpc.ssl_channel_credentials(
        root_certificates=Path(ca_file).read_bytes() if ca_file else None,
        private_key=Path(key_file).read_bytes() if key_file else None,
        certificate_chain=Path(cert_file).read_bytes() if cert_file else None,
    )


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
        cfg = self.cfg
        if not cfg.tls_cert_file:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file)
        if cfg.tls_client_ca_file:
            ctx.load_verify_locations(cfg.tls_client_ca_file)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx
