"""The HTTP edge for Falco's ``http_output``: a small HTTP/1.1 server on the service's event loop.

``POST /`` (or ``POST /falco``) takes one Falco alert as JSON and answers ``200`` with what the
correlation found; a payload that is too large (``413``), not JSON or not an alert (``400``), or not
about a container (``422``) gets a JSON body ``{"error": reason, "message": ...}`` and is counted in
``baseliner_falco_alerts_rejected_total{reason}``; nothing else is affected.  ``GET /healthz`` answers
``200`` (open, for probes).  With a gate (``falco.secret_file``, ``falco.tls_*``; ``service/auth.py``) alerts
need the secret in the URL (``/falco/SECRET``) or get ``401`` (counted as ``unauthorized``).
Connections are kept alive (Falco's libcurl reuses them).  Only the standard library: the parsing
is deliberately strict and bounded (request line and headers at most 16 KiB, bodies at most
``falco.max_body_bytes``, ``Content-Length`` required, read timeouts).

The endpoint listens on loopback unless configured otherwise (``falco.listen``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from typing import Any, Protocol

from baseliner.service.config import FalcoConfig, split_address
from baseliner.service.falco import FalcoCorrelator, FalcoMetrics, FalcoPayloadError, parse_alert

log = logging.getLogger(__name__)

_MAX_HEAD = 16 * 1024
_READ_TIMEOUT = 10.0
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 411: "Length Required", 413: "Payload Too Large", 422: "Unprocessable Entity",
            431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented"}
_STATUS = {"too_large": 413, "no_container": 422, "not_container": 422}


class Gate(Protocol):
    """Who may post alerts (``service/auth.py``'s ``FalcoGate``): the URL secret and the TLS context."""

    def allowed(self, target: str) -> tuple[bool, str]: ...  # (ok, request path without the secret)
    def ssl_context(self) -> ssl.SSLContext | None: ...
ALERT_PATHS = ("/", "/falco")


class FalcoEndpoint:
    """Serves Falco alerts to a :class:`FalcoCorrelator`."""

    def __init__(self, config: FalcoConfig, correlator: FalcoCorrelator, metrics: FalcoMetrics | None = None,
                 gate: Gate | None = None) -> None:
        self.config = config
        self.correlator = correlator
        self.metrics = metrics
        self.gate = gate
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.host = ""
        self._conns: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        host, port = split_address(self.config.listen)
        ssl_ctx = self.gate.ssl_context() if self.gate is not None else None
        self.server = await asyncio.start_server(self._serve, host, port, limit=_MAX_HEAD, ssl=ssl_ctx)
        self.host = host
        self.port = self.server.sockets[0].getsockname()[1]
        if host not in ("127.0.0.1", "::1", "localhost"):
            log.warning("Falco alert endpoint listens on %s (plain HTTP): keep it on a trusted network",
                        self.config.listen)
        log.info("Falco alert endpoint on http://%s:%d/", host, self.port)

    async def stop(self) -> None:
        if self.server is None:
            return
        self.server.close()
        for t in list(self._conns):
            t.cancel()
        for t in list(self._conns):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        with contextlib.suppress(Exception):
            await self.server.wait_closed()
        self.server = None

    # -- connections --------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # peer went away, or stop() is closing the connection
        except Exception:
            log.exception("Falco endpoint: connection failed")
        finally:
            if task is not None:
                self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Handle one request; False when the connection is to be closed."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT)
        except asyncio.IncompleteReadError as e:
            if e.partial.strip():
                await self._reply(writer, 400, {"error": "bad_request", "message": "incomplete request"}, False)
            return False
        except asyncio.LimitOverrunError:
            self._count("bad_request")
            await self._reply(writer, 431, {"error": "bad_request", "message": "request head over 16 KiB"}, False)
            return False
        except TimeoutError:
            return False
        try:
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, path, version = request_line.split(" ")
            headers: dict[str, str] = {}
            for line in header_lines:
                if not line:
                    continue
                name, sep, value = line.partition(":")
                if not sep:
                    raise ValueError(line)
                headers[name.strip().lower()] = value.strip()
        except ValueError:
            self._count("bad_request")
            await self._reply(writer, 400, {"error": "bad_request", "message": "malformed HTTP request"}, False)
            return False
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        authorized = True
        if self.gate is not None:
            authorized, path = self.gate.allowed(path)  # strips the secret from /falco/SECRET
        path = path.split("?", 1)[0]
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._count("bad_request")
            await self._reply(writer, 411, {"error": "bad_request", "message": "send a Content-Length"}, False)
            return False
        try:
            length = int(headers.get("content-length", "0"))
            if length < 0:
                raise ValueError
        except ValueError:
            self._count("bad_request")
            await self._reply(writer, 400, {"error": "bad_request", "message": "bad Content-Length"}, False)
            return False
        if length > self.config.max_body_bytes:
            self._count("too_large")
            await self._reply(writer, 413, {"error": "too_large", "message": f"payload of {length} bytes exceeds "
                                            f"{self.config.max_body_bytes}"}, False)
            return False  # the body is not read: close rather than drain it
        if method == "POST" and path in ALERT_PATHS and "content-length" not in headers:
            self._count("bad_request")
            await self._reply(writer, 411, {"error": "bad_request", "message": "send a Content-Length"}, False)
            return False
        try:
            body = await asyncio.wait_for(reader.readexactly(length), _READ_TIMEOUT) if length else b""
        except TimeoutError:
            await self._reply(writer, 408, {"error": "bad_request", "message": "body not received in time"}, False)
            return False
        if path == "/healthz":
            if method not in ("GET", "HEAD"):
                await self._reply(writer, 405, {"error": "method", "message": "use GET"}, keep)
                return keep
            await self._reply(writer, 200, {"status": "ok"}, keep)
            return keep
        if not authorized:
            self._count("unauthorized")
            await self._reply(writer, 401, {"error": "unauthorized", "message": "post alerts to /falco/SECRET"}, keep)
            return keep
        if path not in ALERT_PATHS:
            await self._reply(writer, 404, {"error": "not_found", "message": f"POST alerts to {ALERT_PATHS[0]}"}, keep)
            return keep
        if method != "POST":
            await self._reply(writer, 405, {"error": "method", "message": "POST Falco alerts here"}, keep)
            return keep
        status, payload = self.handle(body)
        await self._reply(writer, status, payload, keep)
        return keep

    def handle(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """One alert body -> (HTTP status, response object).  Runs on the event loop thread."""
        try:
            alert = parse_alert(body, self.config.max_body_bytes)
        except FalcoPayloadError as e:
            self._count(e.reason)
            log.debug("Falco payload refused: %s", e.message)
            return _STATUS.get(e.reason, 400), {"error": e.reason, "message": e.message}
        try:
            result = self.correlator.on_alert(alert)
        except Exception:
            log.exception("correlating a Falco alert failed")
            return 500, {"error": "internal", "message": "see the service log"}
        return 200, {"accepted": True, **result}

    def _count(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.rejected.labels(reason).inc()

    async def _reply(self, writer: asyncio.StreamWriter, status: int, payload: dict[str, Any], keep: bool) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n"
        )
        writer.write(head.encode("latin-1") + body)
        await writer.drain()


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
