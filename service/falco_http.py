"""The HTTP edge for Falco's ``http_output``: an aiohttp server on the service's event loop.

``POST /`` (or ``POST /falco``) takes one Falco alert as JSON and answers ``200 {"accepted": true}``: what
the correlation found (escalated anomalies, whether the alert's behaviour is in the image's baseline) goes
into the events only, never into the answer, so a poster learns nothing about what a baseline holds.  A
payload that is too large (``413``), not JSON or not an alert (``400``), or not about a container
(``422``) gets a JSON body ``{"error": reason, "message": ...}`` and is counted in
``baseliner_falco_alerts_rejected_total{reason}``; nothing else is affected.  ``GET /healthz`` answers
``200`` (open, for probes).  With a gate (``falco.secret_file``, ``falco.tls_*``; ``service/auth.py``) alerts
need the secret in the URL (``/falco/SECRET``) or get ``401`` (counted as ``unauthorized``), decided from
the request line alone: a refused request's body is never read (nor is ``100 Continue`` sent for it), and
its connection is closed.  At most ``falco.max_connections`` connections are open at once; a further one
gets ``503`` and is closed (counted as ``connections``).  Connections are kept alive (Falco's libcurl
reuses them) and closed after ``IDLE_SECONDS`` without a request; a body must arrive within
``BODY_SECONDS`` and is at most ``falco.max_body_bytes``.  HTTP that aiohttp cannot parse gets its plain
``400``.

The endpoint listens on loopback unless configured otherwise (``falco.listen``); off loopback the service
refuses to start without a secret or a client CA (``service/config.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from typing import Any, Protocol

from aiohttp import web
from baseliner.service.auth import is_loopback
from baseliner.service.config import FalcoConfig, split_address
from baseliner.service.falco import FalcoCorrelator, FalcoMetrics, FalcoPayloadError, parse_alert

log = logging.getLogger(__name__)

ALERT_PATHS = ("/", "/falco")
IDLE_SECONDS = 10.0  # a connection with no (complete) request head for this long is closed
BODY_SECONDS = 10.0  # a request body not received within this gets 408
_STATUS = {"too_large": 413, "no_container": 422, "not_container": 422}
HANDSHAKE_SECONDS = 10.0  # a TLS handshake not completed within this is dropped
_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n" \
        b'Content-Length: 62\r\n\r\n{"error":"connections","message":"too many open connections"}\n'


class _Busy(asyncio.Protocol):
    """A connection past ``falco.max_connections``: answered 503 and closed without reading anything."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_BUSY)
        transport.close()


class Gate(Protocol):
    """Who may post alerts (``service/auth.py``'s ``FalcoGate``): the URL secret and the TLS context."""

    def allowed(self, target: str) -> tuple[bool, str]: ...  # (ok, request path without the secret)
    def ssl_context(self) -> ssl.SSLContext | None: ...


def _reply(status: int, payload: dict[str, Any], close: bool = False) -> web.Response:
    response = web.json_response(payload, status=status, dumps=lambda o: json.dumps(o, separators=(",", ":")))
    if close:
        response.force_close()
    return response


class FalcoEndpoint:
    """Serves Falco alerts to a :class:`FalcoCorrelator`."""

    def __init__(self, config: FalcoConfig, correlator: FalcoCorrelator, metrics: FalcoMetrics | None = None,
                 gate: Gate | None = None) -> None:
        self.config = config
        self.correlator = correlator
        self.metrics = metrics or correlator.metrics
        self.gate = gate
        self.runner: web.AppRunner | None = None
        self.listener: asyncio.Server | None = None
        self.port = 0
        self.host = ""
        #: A sharded service's hook (``service/shards/cluster.py``): ``await forward(alert, body)`` answers
        #: ``(status, payload)`` from the shard that holds the alert's image, or None when it is this one.
        self.forward: Any = None

    async def start(self) -> None:
        host, port = split_address(self.config.listen)
        app = web.Application(client_max_size=self.config.max_body_bytes)
        app.router.add_route("*", "/{path:.*}", self._request, expect_handler=self._expect)
        self.runner = web.AppRunner(app, access_log=None, keepalive_timeout=IDLE_SECONDS, lingering_time=0,
                                    shutdown_timeout=2.0)  # a refused body is not drained: the connection closes
        await self.runner.setup()
        ssl_ctx = self.gate.ssl_context() if self.gate is not None else None
        handlers = self.runner.server
        assert handlers is not None
        limit = self.config.max_connections

        def connection() -> asyncio.BaseProtocol:
            if len(handlers.connections) >= limit:
                self._count("connections")
                return _Busy()
            return handlers()

        self.listener = await asyncio.get_running_loop().create_server(
            connection, host, port, ssl=ssl_ctx, reuse_address=True,
            ssl_handshake_timeout=HANDSHAKE_SECONDS if ssl_ctx else None)
        self.host = host
        self.port = self.listener.sockets[0].getsockname()[1]
        if not is_loopback(host):
            log.warning("Falco alert endpoint listens on %s: keep it on a trusted network", self.config.listen)
        log.info("Falco alert endpoint on %s://%s:%d/", "https" if ssl_ctx else "http", host, self.port)

    async def stop(self) -> None:
        if self.listener is not None:
            self.listener.close()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self.listener is not None:
            await self.listener.wait_closed()
            self.listener = None

    async def _expect(self, request: web.Request) -> web.StreamResponse | None:
        """``Expect: 100-continue``: the client is told to send its body only once the request line passed the
        gate and the declared length the limit (aiohttp's default would say so before the handler decides)."""
        if self.gate is not None and not self.gate.allowed(request.raw_path)[0]:
            return None  # no 100 Continue: the handler answers 401 and closes without reading the body
        if (request.content_length or 0) > self.config.max_body_bytes:
            return None  # likewise 413
        if request.version == (1, 1) and request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # (the body's bytes are counted from here, as aiohttp's own handler does)
        return None

    async def _request(self, request: web.Request) -> web.Response:
        """Health for anyone; then the gate, the route, the method, the body, the alert."""
        authorized, path = (True, request.path) if self.gate is None else self.gate.allowed(request.raw_path)
        if path == "/healthz":
            if request.method not in ("GET", "HEAD"):
                return _reply(405, {"error": "method", "message": "use GET"})
            return _reply(200, {"status": "ok"})
        if not authorized:  # decided from the request line: the body is not read, the connection closes
            self._count("unauthorized")
            return _reply(401, {"error": "unauthorized", "message": "post alerts to /falco/SECRET"}, close=True)
        if path not in ALERT_PATHS:
            return _reply(404, {"error": "not_found", "message": f"POST alerts to {ALERT_PATHS[0]}"})
        if request.method != "POST":
            return _reply(405, {"error": "method", "message": "POST Falco alerts here"})
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return self._too_large(f"payload of {request.content_length} bytes exceeds {limit}")
        try:
            async with asyncio.timeout(BODY_SECONDS):
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:  # a chunked body past the limit
            return self._too_large(f"payload exceeds {limit} bytes")
        except TimeoutError:
            self._count("timeout")
            return _reply(408, {"error": "timeout", "message": f"body not received within {BODY_SECONDS:g} s"},
                          close=True)
        status, payload = await self.route(body)
        return _reply(status, payload)

    def _too_large(self, message: str) -> web.Response:
        self._count("too_large")
        return _reply(413, {"error": "too_large", "message": message}, close=True)  # the body is not read

    async def route(self, body: bytes, forwarded: bool = False) -> tuple[int, dict[str, Any]]:
        """One alert body -> (HTTP status, response object), answered by the shard that holds its image (this
        one unless ``forward`` says otherwise; an alert ``forwarded`` here from another shard is answered here)."""
        try:
            alert = parse_alert(body, self.config.max_body_bytes)
        except FalcoPayloadError as e:
            return self._refused(e)
        if self.forward is not None and not forwarded:
            answer = await self.forward(alert, body)
            if answer is not None:
                return answer
        return self._correlate(alert)

    def _refused(self, e: FalcoPayloadError) -> tuple[int, dict[str, Any]]:
        self._count(e.reason)
        log.debug("Falco payload refused: %s", e.message)
        return _STATUS.get(e.reason, 400), {"error": e.reason, "message": e.message}

    def _correlate(self, alert: Any) -> tuple[int, dict[str, Any]]:
        try:
            self.correlator.on_alert(alert)  # its findings go to the events, not to the poster
        except Exception:
            log.exception("correlating a Falco alert failed")
            return 500, {"error": "internal", "message": "see the service log"}
        return 200, {"accepted": True}

    def _count(self, reason: str) -> None:
        self.metrics.rejected.labels(reason).inc()


async def attach(server: Any, gate: Gate | None = None) -> FalcoEndpoint | None:
    """Wire Falco into a started-or-starting :class:`baseliner.service.server.BaselinerServer`.

    The correlator goes in front of the pipeline's event sinks (it passes every event on), a
    Falcosidekick sink joins them when ``falco.sidekick_url`` is set, and the alert endpoint starts when
    ``falco.listen`` is set, behind ``gate`` (URL secret, TLS) when one is given.  Returns the endpoint
    (``None`` when it is off).
    """
    from baseliner.service.falco import pipeline_lookup
    from baseliner.service.sinks.falcosidekick import FalcosidekickSink

    cfg: FalcoConfig = server.config.falco
    pipeline = server.pipeline
    if not cfg.listen and not cfg.sidekick_url:
        return None
    sm = server.metrics
    metrics = FalcoMetrics(server.registry, sm.image_label, sm.namespace_label, sm.node_label, cfg.max_rules)
    downstream = list(pipeline.sinks)
    if cfg.sidekick_url:
        downstream.append(FalcosidekickSink(cfg.sidekick_url, server.registry, cfg.sidekick_timeout_seconds,
                                            cfg.sidekick_queue))
    lookup, key = pipeline_lookup(pipeline, server.config.pipeline.image_key)
    correlator = FalcoCorrelator(cfg, downstream, lookup, metrics, key)
    pipeline.sinks[:] = [correlator]
    server.sinks[:] = [correlator]
    server.falco_correlator = correlator
    if not cfg.listen:
        return None
    endpoint = FalcoEndpoint(cfg, correlator, metrics, gate)
    await endpoint.start()
    return endpoint
