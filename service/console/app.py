"""The console's HTTP listener: an aiohttp app on the service's event loop, beside gRPC (like the Falco endpoint).

Every page but the login form, ``/healthz`` and ``/static/`` needs a session (``sessions.py``): a visitor
without one is sent to the login form (a ``GET``) or answered ``401`` (a ``POST``).  Every ``POST`` of a
session must carry its CSRF token (else ``403``) and, when the browser sends an ``Origin``, come from this
console's own origin.  Responses forbid framing, sniffing, caching, referrers to other sites and any script
or style not served by the console itself (``Content-Security-Policy``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web
from baseliner.service.auth import is_loopback, server_ssl_context
from baseliner.service.config import ConsoleConfig, split_address
from baseliner.service.console.actions import Actions
from baseliner.service.console.history import History
from baseliner.service.console.pages import FORM, SECURITY_HEADERS, SESSION, Pages
from baseliner.service.console.sessions import COOKIE, Session, Sessions
from baseliner.service.console.shards import ShardView

log = logging.getLogger(__name__)

PUBLIC = ("/login", "/healthz")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _public(path: str) -> bool:
    return path in PUBLIC or path.startswith("/static/")


def same_origin(request: web.Request) -> bool:
    """False when the browser says the request comes from another origin than this console's."""
    origin = request.headers.get("Origin")
    if origin is None:  # not sent (older browsers on same-origin GET-like posts): the CSRF token decides
        return True
    return urlsplit(origin).netloc == request.host


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as e:
        e.headers.update(SECURITY_HEADERS)
        raise
    if not response.prepared:
        response.headers.update(SECURITY_HEADERS)
    return response


def session_gate(sessions: Sessions, pages: Pages) -> Any:
    """Middleware: a session for every page but the public ones; origin and CSRF checks on every POST."""

    @web.middleware
    async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "POST" and not same_origin(request):
            return pages.error(request, 403, "Refused", "This form was posted from another site.")
        if _public(request.path):
            return await handler(request)
        session = sessions.get(request.cookies.get(COOKIE))
        if session is None:
            if request.method in ("GET", "HEAD") and request.path != "/live/events":
                raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='')}")
            return pages.error(request, 401, "Not logged in", "Log in with an operator or viewer token first.")
        request[SESSION] = session
        if request.method == "POST":
            form = await request.post()
            if not Sessions.csrf_ok(session, str(form.get("csrf", ""))):
                return pages.error(request, 403, "Refused", "This form is stale or was not sent by this console: "
                                                            "reload the page and try again.")
            request[FORM] = form
        return await handler(request)

    return gate


class ConsoleServer:
    """The console's listener (``console.listen``), its sessions and pages."""

    def __init__(self, config: ConsoleConfig, pages: Pages, sessions: Sessions) -> None:
        self.config = config
        self.pages = pages
        self.sessions = sessions
        self.runner: web.AppRunner | None = None
        self.host = ""
        self.port = 0
        self.scheme = "http"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024, middlewares=[security_headers,
                                                                       session_gate(self.sessions, self.pages)])
        self.pages.routes(app.router)
        return app

    async def start(self) -> None:
        host, port = split_address(self.config.listen)
        self.runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await self.runner.setup()
        ctx = server_ssl_context(self.config)
        await web.TCPSite(self.runner, host, port, ssl_context=ctx).start()
        self.host, self.port = host, self.runner.addresses[0][1]
        self.scheme = "https" if ctx else "http"
        if ctx is None and not is_loopback(host):
            log.warning("console listens on %s WITHOUT TLS (console.allow_plaintext): keep a proxy that speaks "
                        "HTTPS in front of it", self.config.listen)
        log.info("console on %s", self.url)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/"

    async def stop(self) -> None:
        self.pages.closing()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


AVERAGE_EVENT_BYTES = 4096  # generous: an anomaly event is about 1.6 KB


def replay_events_file(history: History, output: str, max_anomalies: int) -> int:
    """Fill a starting console's history from the tail of the service's own events file (``events.output``),
    so its pages survive a restart: the last ``max_anomalies`` events' worth of bytes, oldest first.  Lines that
    are not JSON objects (a line cut by a crash) are skipped.  Returns the events replayed."""
    path = Path(output) if output not in ("-", "stdout", "none", "") else None
    if path is None or not path.is_file():
        return 0
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        start = max(0, size - max_anomalies * AVERAGE_EVENT_BYTES)
        f.seek(start)
        lines = f.read().splitlines()[1 if start else 0:]  # the first line of a cut tail is partial
    replayed = 0
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            history.emit(event)
            replayed += 1
    history.flush()
    log.info("console: %d events replayed from %s", replayed, path)
    return replayed


async def attach(server: Any) -> ConsoleServer | None:
    """Start the console of a starting :class:`baseliner.service.server.BaselinerServer` (None when
    ``console.listen`` is off).

    Its history listens after the Falco correlator (so it sees escalations) or among the pipeline's sinks, and
    observes the pipeline's scores.
    """
    cfg: ConsoleConfig = server.config.console
    if not cfg.listen:
        return None
    pipeline = server.pipeline
    history = History(cfg.max_anomalies, cfg.chart_points, cfg.max_containers_per_image,
                      server.config.pipeline.max_baselines, server.config.falco.correlation_window_seconds,
                      images_held=lambda: pipeline.baselines)
    replay_events_file(history, server.config.events.output, cfg.max_anomalies)
    correlator = server.falco_correlator
    (correlator.downstream if correlator is not None else pipeline.sinks).append(history)
    pipeline.score_observers.append(history.observe)
    sessions = Sessions(server.authorizer, cfg.session_idle_minutes * 60, cfg.session_hours * 3600,
                        cfg.max_sessions)
    shards = ShardView(server.cluster)  # (a service that is not one of several shards: its own map of one)
    durable = server.checkpoint if server.store is not None else None  # an action's change written to disk
    pages = Pages(cfg, pipeline, history, sessions, Actions(pipeline, durable, shards), shards)
    console = ConsoleServer(cfg, pages, sessions)
    await console.start()
    return console


__all__ = ["ConsoleServer", "Session", "attach"]
