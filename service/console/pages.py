"""The console's routes: the pages (server-rendered HTML), the login, the actions and the live stream.

Pages: ``/`` (Fleet), ``/image?key=KEY``, ``/anomalies`` (filtered list), ``/anomaly/EVENT_ID``, ``/live``
(the newest anomalies, then new ones as they come through ``/live/events``, server-sent events).  Actions:
``/confirm?action=...`` shows what an action will do and posts it to ``/act`` (operators only; every attempt is
an audit line, ``actions.py``).  ``/login`` takes an operator or viewer token; ``/logout`` ends the session.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from baseliner.models.errors import BaselinerError, UnknownBaselineError
from baseliner.models.explain import fmt
from baseliner.service.config import ConsoleConfig
from baseliner.service.console import views
from baseliner.service.console.actions import ACTIONS, Actions, Refused, audit
from baseliner.service.console.history import SEVERITIES, History
from baseliner.service.console.sessions import COOKIE, LoginThrottle, Session, Sessions
from baseliner.service.console.shards import ShardView
from baseliner.service.errors import PermissionDeniedError, ShardUnavailableError, UnknownEventError
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from multidict import MultiDictProxy

HERE = Path(__file__).parent
SESSION = web.RequestKey("session", Session)  # the visitor's session (set by the app's gate)
FORM = web.RequestKey("form", MultiDictProxy)  # a POST's form, read (and its CSRF token checked) by the gate
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # (with no-referrer, browsers post forms with "Origin: null")
    "Cache-Control": "no-store",
}
MAX_STREAMS = 32  # live pages open at once
KEEPALIVE_SECONDS = 15.0
KINDS = ("novel_executable", "novel_syscall", "novel_port", "novel_sensitive_path", "rate", "sequence")
_STATUS_TITLES = {400: "Bad request", 401: "Not logged in", 403: "Refused", 404: "Not found", 409: "Not possible"}


def when(t: float | None) -> str:
    """Event time as ``2026-01-01 00:00:00 UTC`` (``-`` when unknown)."""
    if t is None or not math.isfinite(t):
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def url(path: str, **params: Any) -> str:
    """``path`` with the non-empty ``params`` as its query string.

    >>> url("/anomalies", image="nginx:1.27", page=2, node="")
    '/anomalies?image=nginx%3A1.27&page=2'
    """
    kept = {k: v for k, v in params.items() if v not in ("", None, False)}
    return f"{path}?{urlencode(kept)}" if kept else path


def safe_next(value: str) -> str:
    """A path of this console to go on to after logging in (anything else: the Fleet page).

    >>> safe_next("/image?key=a"), safe_next("//evil.example/"), safe_next("https://evil.example/")
    ('/image?key=a', '/', '/')
    """
    if value.startswith("/") and not value.startswith(("//", "/\\")):
        return value
    return "/"


def _params(f: Any) -> dict[str, Any]:
    """A filter as the query parameters of its links (``desc`` as ``"1"`` or ``"0"``)."""
    return {k: ("1" if v else "0") if isinstance(v, bool) else v for k, v in dataclasses.asdict(f).items()}


def _int(value: str | None, default: int = 1) -> int:
    try:
        return int(value or default)
    except ValueError:
        return default


def _choice(value: str | None, allowed: Any, default: str = "") -> str:
    return value if value is not None and value in allowed else default


class Pages:
    """The console's request handlers over a pipeline, its history, the sessions and the actions."""

    def __init__(self, config: ConsoleConfig, pipeline: Any, history: History, sessions: Sessions,
                 actions: Actions, shards: ShardView | None = None) -> None:
        self.config = config
        self.pipeline = pipeline
        self.shards = shards or ShardView(None)
        self.history = history
        self.sessions = sessions
        self.login_throttle = LoginThrottle()
        self.actions = actions
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                               undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.env.filters.update(when=when, num=fmt, dur=views.duration)
        self.env.globals.update(url=url, SEVERITIES=SEVERITIES, MODES=views.MODES, MODE_HELP=views.MODE_HELP,
                                KINDS=KINDS, sort_url=self._sort_url, aria_sort=self._aria_sort)
        self.streams: set[asyncio.Queue[Any]] = set()
        self._closing = False

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/", self.fleet)
        router.add_get("/image", self.image)
        router.add_get("/anomalies", self.anomalies)
        router.add_get("/anomaly/{event_id}", self.anomaly)
        router.add_get("/live", self.live)
        router.add_get("/live/events", self.live_events)
        router.add_get("/confirm", self.confirm)
        router.add_post("/act", self.act)
        router.add_get("/login", self.login_form)
        router.add_post("/login", self.login)
        router.add_post("/logout", self.logout)
        router.add_get("/healthz", self.healthz)
        router.add_static("/static", HERE / "static")

    # -- rendering ----------------------------------------------------------------------------------
    def render(self, request: web.Request, template: str, status: int = 200, **ctx: Any) -> web.Response:
        session: Session | None = request.get(SESSION)
        flash: list[str] = []
        if session is not None:
            flash, session.flash = session.flash, []
        html = self.env.get_template(template).render(
            who=session.who if session else None, csrf=session.csrf if session else "", flash=flash,
            path=request.path, now=self.history.now, page_size=self.config.page_size,
            shard=self.shards.name, other_shards=[h.name for h in self.shards.others()], **ctx)
        return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")

    def error(self, request: web.Request, status: int, title: str, message: str) -> web.Response:
        return self.render(request, "error.html", status=status, title=title or _STATUS_TITLES.get(status, "Error"),
                           message=message)

    @staticmethod
    def _sort_url(path: str, params: Mapping[str, Any], column: str, default_desc: bool = False) -> str:
        p = {k: v for k, v in params.items() if k not in ("page", "sort", "desc")}
        desc = params.get("desc") != "1" if params.get("sort") == column else default_desc
        return url(path, **p, sort=column, desc="1" if desc else "0")

    @staticmethod
    def _aria_sort(params: Mapping[str, Any], column: str) -> str:
        if params.get("sort") != column:
            return "none"
        return "descending" if params.get("desc") == "1" else "ascending"

    # -- pages ----------------------------------------------------------------------------------------
    async def fleet(self, request: web.Request) -> web.Response:
        q = request.query
        f = views.FleetFilter(namespace=q.get("namespace", ""), node=q.get("node", ""),
                              state=_choice(q.get("state"), views.STATES), q=q.get("q", "")[:200],
                              sort=_choice(q.get("sort"), views.FLEET_SORTS, "image"), desc=q.get("desc") == "1",
                              page=_int(q.get("page")))
        baselines: list[Any] = self.pipeline.all()
        unavailable: list[str] = []
        if not self.shards.single:  # every shard's images, this shard's first where a key is moving
            elsewhere, unavailable = await self.shards.list_others(request[SESSION].token)
            here = {b.key for b in baselines}
            baselines += [views.HeldElsewhere.of(s, b) for s, b in elsewhere if b.key not in here]
            baselines.sort(key=lambda b: b.key)
        page, choices = views.fleet(baselines, self.history, f, self.config.page_size)
        return self.render(request, "fleet.html", page=page, f=_params(f), choices=choices, images=len(baselines),
                           here=len(self.pipeline.baselines), unavailable=unavailable)

    async def image(self, request: web.Request) -> web.Response:
        key = request.query.get("key", "")
        try:
            holder = await self.shards.holder(key)
            if holder is not None:
                b = await self.shards.get(holder, key, request[SESSION].token)
                return self.render(request, "image_elsewhere.html", v=views.image_elsewhere(
                    holder.name, b, all_features=request.query.get("features") == "all"))
            b = self.pipeline.get(key)
            view = views.image(b, self.history, all_features=request.query.get("features") == "all")
        except UnknownBaselineError:
            return self.error(request, 404, "Not found", f"No baseline for image {key!r}.")
        except PermissionDeniedError as e:
            return self.error(request, 403, "Refused", str(e))
        except BaselinerError as e:  # a spilled baseline whose file was refused; a shard that did not answer
            return self.error(request, 409, "Not available", str(e))
        return self.render(request, "image.html", v=view)

    async def anomalies(self, request: web.Request) -> web.Response:
        q = request.query
        f = views.AnomalyFilter(image=q.get("image", ""), namespace=q.get("namespace", ""), node=q.get("node", ""),
                                severity=_choice(q.get("severity"), SEVERITIES), kind=_choice(q.get("kind"), KINDS),
                                sort=_choice(q.get("sort"), views.ANOMALY_SORTS, "time"),
                                desc=q.get("desc", "1") == "1", page=_int(q.get("page")))
        page = views.anomalies(self.history, f, self.config.page_size)
        elsewhere = await self.shards.holder_name(f.image) if f.image else ""
        return self.render(request, "anomalies.html", page=page, f=_params(f), elsewhere=elsewhere,
                           held=len(self.history.anomalies), seen=self.history.events_seen)

    async def anomaly(self, request: web.Request) -> web.Response:
        eid = request.match_info["event_id"]
        a = self.history.anomalies.get(eid)
        if a is None:
            return self.error(request, 404, "Not found", f"No anomaly {eid!r} is held (unknown, or older than the "
                                                         f"last {self.config.max_anomalies:,} anomalies).")
        v = views.anomaly(a, self.history, self.pipeline)
        # its image (and its windows) may have moved to another shard
        held_by = "" if v.held else await self.shards.holder_name(a.image)
        return self.render(request, "anomaly.html", v=v, held_by=held_by)

    async def live(self, request: web.Request) -> web.Response:
        newest = [a for _, a in zip(range(self.config.page_size), self.history.newest(), strict=False)]
        return self.render(request, "live.html", rows=newest, seen=self.history.events_seen)

    # -- live stream ----------------------------------------------------------------------------------
    async def live_events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: one ``anomalies`` message (a JSON list) per batch that had any."""
        if len(self.streams) >= MAX_STREAMS:
            return self.error(request, 503, "Busy", f"{MAX_STREAMS} live pages are open already.")
        resp = web.StreamResponse(headers={**SECURITY_HEADERS, "Content-Type": "text/event-stream",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=64)

        def push(items: list[dict[str, Any]]) -> None:
            if queue.full():  # a slow reader misses batches; its page says so
                queue.get_nowait()
                items = [{"lost": True}, *items]
            queue.put_nowait(items)

        self.streams.add(queue)
        unsubscribe = self.history.subscribe(push)
        cookie = request.cookies.get(COOKIE)
        try:
            await resp.write(b"retry: 3000\n\n")
            while not self._closing and self.sessions.get(cookie) is not None:
                try:
                    items = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    await resp.write(b": keepalive\n\n")
                    continue
                if items is None:
                    break
                data = json.dumps(items[-100:], separators=(",", ":"), allow_nan=False)
                await resp.write(f"event: anomalies\ndata: {data}\n\n".encode())
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            unsubscribe()
            self.streams.discard(queue)
        return resp

    def closing(self) -> None:
        """The service stops: end the live streams now."""
        self._closing = True
        for queue in list(self.streams):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(None)

    # -- actions --------------------------------------------------------------------------------------
    async def confirm(self, request: web.Request) -> web.Response:
        session: Session = request[SESSION]
        q = request.query
        action, target, value = q.get("action", ""), q.get("target", ""), q.get("value", "")
        if action not in ACTIONS or (action == "mode" and value not in views.MODES):
            return self.error(request, 400, "Bad request", "Unknown action.")
        if not session.who.may_act:
            return self.error(request, 403, "Refused", f"{session.who.name} is a viewer: only operators may change "
                                                        "baselines.")
        ctx: dict[str, Any] = {"action": action, "target": target, "value": value, "holder": ""}
        if action == "feedback":
            a = self.history.anomalies.get(target)
            if a is None or (target not in self.pipeline.recent and self.shards.single):
                return self.error(request, 409, "Not possible", "The service no longer holds this anomaly's windows: "
                                                                "it cannot be accepted into the baseline.")
            ctx["v"] = views.anomaly(a, self.history, self.pipeline)
        else:
            try:
                holder = await self.shards.holder(target)
                if holder is not None:
                    ctx["current"] = views.proto_status(await self.shards.get(holder, target, session.token))
                    ctx["holder"] = holder.name
                else:
                    ctx["current"] = views.status(self.pipeline.get(target))
            except BaselinerError as e:
                return self.error(request, 404, "Not found", str(e))
        return self.render(request, "confirm.html", **ctx)

    async def act(self, request: web.Request) -> web.Response:
        session: Session = request[SESSION]
        form = request[FORM]
        action, target, value = str(form.get("action", "")), str(form.get("target", "")), str(form.get("value", ""))
        if action not in ACTIONS or (action == "mode" and value not in views.MODES):
            return self.error(request, 400, "Bad request", "Unknown action.")
        try:
            outcome = await self.actions.run(session.who, action, target, value, request.remote or "", session.token)
        except (Refused, PermissionDeniedError) as e:
            return self.error(request, 403, "Refused", str(e))
        except (UnknownEventError, ShardUnavailableError) as e:
            return self.error(request, 409, "Not possible", str(e))
        except BaselinerError as e:
            return self.error(request, 404, "Not found", str(e))
        session.flash.append(outcome.message)
        where = f"/anomaly/{target}" if action == "feedback" else url("/image", key=outcome.image)
        raise web.HTTPSeeOther(where)

    # -- login ----------------------------------------------------------------------------------------
    async def login_form(self, request: web.Request) -> web.Response:
        nxt = safe_next(request.query.get("next", "/"))
        if self.sessions.get(request.cookies.get(COOKIE)) is not None:
            raise web.HTTPSeeOther(nxt)
        return self.render(request, "login.html", next=nxt, failed="")

    async def login(self, request: web.Request) -> web.Response:
        form = await request.post()
        nxt = safe_next(str(form.get("next", "/")))
        client = request.remote or ""
        if self.login_throttle.refused(client):
            audit(None, "login", "console", "denied", client, "reason=too-many-failures")
            return self.render(request, "login.html", status=429, next=nxt,
                               failed="Too many failed logins from this address: try again in a minute.")
        found = self.sessions.login(str(form.get("token", "")))
        if found is None:
            self.login_throttle.failed(client)
            audit(None, "login", "console", "denied", client, "reason=unknown-token")
            return self.render(request, "login.html", status=401, next=nxt,
                               failed="That token is not an operator or viewer token of this service.")
        cookie, session = found
        audit(session.who, "login", "console", "ok", client)
        resp = web.HTTPSeeOther(nxt)
        resp.set_cookie(COOKIE, cookie, httponly=True, secure=True, samesite="Strict", path="/",
                        max_age=int(self.config.session_hours * 3600))
        raise resp

    async def logout(self, request: web.Request) -> web.Response:
        session: Session = request[SESSION]
        self.sessions.logout(request.cookies.get(COOKIE))
        audit(session.who, "logout", "console", "ok", request.remote or "")
        resp = web.HTTPSeeOther("/login")
        resp.del_cookie(COOKIE, path="/")
        raise resp

    # -- plain ----------------------------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

