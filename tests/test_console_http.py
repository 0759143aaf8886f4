"""The operator console over real HTTP, without a browser: who may see and do what, CSRF, origins, the audit
log, sessions, headers, filtering and paging, the live stream, and pages that carry the service's own figures.

The browser tests (``tests/test_console_browser.py``) drive the same pages in Chromium.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest
from baseliner.service.auth import Authorizer, _digest
from baseliner.service.console.sessions import COOKIE, Sessions
from baseliner.service.server import BaselinerServer

from tests.service_fixtures import batch_request, config, exchange, hello, learn_batches, running, vector

OPERATOR = "operator-token-0123456789abcdef"
VIEWER = "viewer-token-0123456789abcdef"


def console_config(tmp: Path, *extra: tuple[str, Any]) -> Any:
    ops, views = tmp / "ops.tokens", tmp / "views.tokens"
    ops.write_text(f"olga {OPERATOR}\n")
    views.write_text(f"vic {VIEWER}\n")
    return config(None, ("console.listen", "127.0.0.1:0"), ("grpc.admin_tokens_file", str(ops)),
                  ("grpc.viewer_tokens_file", str(views)), ("pipeline.dedup_window_seconds", 0), *extra)


class Browserless:
    """An HTTP client of the console that keeps its session cookie by hand (a Secure cookie over http: a browser
    keeps it on loopback, aiohttp's cookie jar does not)."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.http = session
        self.base = base
        self.cookie = ""

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = {"Cookie": f"{COOKIE}={self.cookie}"} if self.cookie else {}
        return {**h, **(extra or {})}

    async def get(self, path: str, **params: str) -> tuple[int, str, Any]:
        async with self.http.get(self.base + path, params=params, headers=self._headers(),
                                 allow_redirects=False) as r:
            return r.status, await r.text(), r.headers

    async def post(self, path: str, data: dict[str, str], origin: str | None = "") -> tuple[int, str, Any]:
        headers = self._headers({"Origin": self.base if origin == "" else origin} if origin is not None else {})
        async with self.http.post(self.base + path, data=data, headers=headers, allow_redirects=False) as r:
            return r.status, await r.text(), r.headers

    async def login(self, token: str) -> Any:
        status, _, headers = await self.post("/login", {"token": token, "next": "/"})
        assert status == 303, status
        self.cookie = re.search(rf"{COOKIE}=([^;]+)", headers["Set-Cookie"]).group(1)  # type: ignore[union-attr]
        return headers

    async def csrf(self) -> str:
        _, html, _ = await self.get("/")
        return re.search(r'name="csrf" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]


@asynccontextmanager
async def console(tmp: Path, *extra: tuple[str, Any]) -> AsyncIterator[tuple[BaselinerServer, list[dict[str, Any]],
                                                                           aiohttp.ClientSession]]:
    async with running(console_config(tmp, *extra)) as (srv, events):
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            yield srv, events, http


async def feed(srv: BaselinerServer) -> None:
    """Two containers learn nginx:1.27 until it detects, then container 0 runs a reverse shell."""
    await exchange(srv.port, [hello(), *learn_batches(4), batch_request([vector(200, 0, attack="shell")], 5)])


def text(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def test_who_may_see_and_act(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="baseliner.audit")

    async def main() -> None:
        async with console(tmp_path) as (srv, events, http):
            await feed(srv)
            base = srv.console.url.rstrip("/")
            anon, viewer, operator = Browserless(http, base), Browserless(http, base), Browserless(http, base)
            # not logged in: pages send to the login form, actions are 401, health and assets are open
            status, _, headers = await anon.get("/image", key="nginx:1.27")
            assert status == 303 and unquote(headers["Location"]) == "/login?next=/image?key=nginx:1.27"
            assert (await anon.post("/act", {"action": "mode", "target": "nginx:1.27", "value": "freeze"}))[0] == 401
            assert (await anon.get("/live/events"))[0] == 401
            assert (await anon.get("/healthz"))[0] == 200
            assert (await anon.get("/static/console.css"))[0] == 200
            assert (await anon.get("/static/history.py"))[0] == 404  # only the console's assets
            assert (await anon.get("/static/%2e%2e%2fhistory.py"))[0] == 404
            status, html, _ = await anon.post("/login", {"token": "not-a-token-of-this-service", "next": "/"})
            assert status == 401 and "not an operator or viewer token" in html
            # the session cookie
            cookie = (await operator.login(OPERATOR))["Set-Cookie"]
            for attribute in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/"):
                assert attribute in cookie
            await viewer.login(VIEWER)
            # a viewer sees everything, may act on nothing
            eid = events[0]["event_id"]
            for path in ("/", "/image?key=nginx:1.27", "/anomalies", f"/anomaly/{eid}", "/live"):
                p, _, q = path.partition("?")
                status, html, _ = await viewer.get(p, **dict([q.split("=")] if q else []))
                assert status == 200, path
            html = (await viewer.get(f"/anomaly/{eid}"))[1]
            assert "Accept into the baseline" not in html and "You are a viewer" in html
            assert (await viewer.get("/confirm", action="feedback", target=eid))[0] == 403
            freeze = {"action": "mode", "target": "nginx:1.27", "value": "freeze", "csrf": await viewer.csrf()}
            assert (await viewer.post("/act", freeze))[0] == 403
            assert (await viewer.post("/act", {"action": "feedback", "target": eid, "csrf": freeze["csrf"]}))[0] == 403
            assert srv.pipeline.get("nginx:1.27").mode.value == "auto" and not srv.pipeline.recent[eid].accepted
            # an operator's post needs the session's CSRF token and this console's origin
            op_csrf = await operator.csrf()
            assert (await operator.post("/act", {**freeze, "csrf": ""}))[0] == 403
            assert (await operator.post("/act", {**freeze, "csrf": freeze["csrf"]}))[0] == 403  # the viewer's token
            assert (await operator.post("/act", {**freeze, "csrf": op_csrf}, origin="http://evil.example"))[0] == 403
            assert srv.pipeline.get("nginx:1.27").mode.value == "auto"
            status, _, headers = await operator.post("/act", {**freeze, "csrf": op_csrf})
            assert status == 303 and unquote(headers["Location"]) == "/image?key=nginx:1.27"
            assert srv.pipeline.get("nginx:1.27").mode.value == "freeze"
            assert "nginx:1.27: mode freeze, now frozen." in text((await operator.get("/image", key="nginx:1.27"))[1])
            status, _, _ = await operator.post("/act", {"action": "feedback", "target": eid, "csrf": op_csrf})
            assert status == 303 and srv.pipeline.recent[eid].accepted
            assert "/bin/sh" in srv.pipeline.get("nginx:1.27").novelty_sets()["executable"]
            assert (await operator.post("/act", {"action": "feedback", "target": "gone", "csrf": op_csrf}))[0] == 409
            # logging out ends the session
            assert (await operator.post("/logout", {"csrf": op_csrf}))[0] == 303
            assert (await operator.get("/"))[0] == 303

    asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records if r.name == "baseliner.audit"]
    assert any(line.startswith("console audit: who=- role=none action=login target=console result=denied")
               for line in lines)
    assert any("who=vic role=viewer action=mode target=image:nginx:1.27 result=denied" in line for line in lines)
    assert any("who=vic role=viewer action=feedback target=event:" in line and "result=denied" in line
               for line in lines)
    assert any(line.startswith("console audit: who=olga role=operator action=mode target=image:nginx:1.27 result=ok "
                               "from=127.0.0.1 mode=freeze") for line in lines)
    assert any("who=olga role=operator action=feedback" in line and "result=ok" in line
               and "accepted=executable:/bin/sh" in line for line in lines)
    assert any("who=olga role=operator action=feedback target=event:gone result=failed" in line for line in lines)
    assert any("who=olga role=operator action=logout" in line for line in lines)


def test_pages_carry_the_services_figures_and_headers(tmp_path: Path) -> None:
    async def main() -> None:
        async with console(tmp_path) as (srv, events, http):
            await feed(srv)
            c = Browserless(http, srv.console.url.rstrip("/"))
            await c.login(OPERATOR)
            status, html, headers = await c.get("/")
            assert status == 200 and headers["Content-Type"].startswith("text/html")
            assert "script-src 'self'" in headers["Content-Security-Policy"]
            assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
            assert headers["X-Frame-Options"] == "DENY" and headers["Cache-Control"] == "no-store"
            assert "<script" not in html  # readable without JavaScript (only the live page has a script)
            b = srv.pipeline.get("nginx:1.27")
            page = text((await c.get("/image", key="nginx:1.27"))[1])
            for item in b.novelty_sets()["syscall"]:
                assert item in page
            shown = sorted((f for f in b.feature_stats() if f[1] > 0), key=lambda f: -f[4])[:20]
            assert len(shown) >= 5
            for name, mean, std, unit, _ in shown:
                assert f"{name} " in page and f"{unit} {mean:.3f} {std:.3f}" in page
            ev = events[0]
            page = text((await c.get(f"/anomaly/{ev['event_id']}"))[1])
            assert "new executable /bin/sh" in page
            for d in ev["explanation"]:
                assert d["feature"] in page
                observed, baseline = d["text"].split(": ", 1)[1].split(", baseline ")
                assert observed in page and baseline in page
            status, html, _ = await c.get("/anomaly/not-an-event")
            assert status == 404 and "No anomaly" in html
            assert (await c.get("/image", key="nope:1"))[0] == 404
            status, html, _ = await c.get("/confirm", action="feedback", target=ev["event_id"])
            assert status == 200 and 'name="csrf"' in html and "/bin/sh" in text(html)
            assert (await c.get("/confirm", action="launch", target="x"))[0] == 400
            status, html, _ = await c.get("/confirm", action="mode", target="nginx:1.27", value="freeze")
            assert status == 200 and "Set the mode of nginx:1.27 to freeze" in text(html)
            assert "It is detecting in mode auto now." in text(html)
            status, html, _ = await c.get("/confirm", action="reset", target="nginx:1.27")
            assert status == 200 and "Everything it has learnt is forgotten" in text(html)
            assert (await c.get("/confirm", action="mode", target="nginx:1.27", value="sleep"))[0] == 400
            assert (await c.get("/confirm", action="reset", target="nope:1"))[0] == 404

    asyncio.run(main())


def test_fleet_and_anomalies_filter_sort_and_page(tmp_path: Path) -> None:
    async def main() -> None:
        async with console(tmp_path, ("console.page_size", 10)) as (srv, _, http):
            vs = [vector(i, c, repo=f"app{c:02d}", node=f"node-{c % 3}") for i in range(3) for c in range(25)]
            await exchange(srv.port, [hello(), batch_request(vs, 1)])
            c = Browserless(http, srv.console.url.rstrip("/"))
            await c.login(VIEWER)

            def keys(html: str) -> list[str]:
                return re.findall(r'<th scope="row"><a href="/image\?key=([^"]+)">', html)

            first = keys((await c.get("/"))[1])
            assert first == [f"app{i:02d}%3A1.27" for i in range(10)]
            assert keys((await c.get("/", page="3"))[1]) == [f"app{i:02d}%3A1.27" for i in range(20, 25)]
            assert keys((await c.get("/", sort="image", desc="1"))[1])[0] == "app24%3A1.27"
            on_node_1 = keys((await c.get("/", node="node-1"))[1])
            assert on_node_1 == [f"app{i:02d}%3A1.27" for i in range(1, 25, 3)]
            assert keys((await c.get("/", q="app1"))[1]) == [f"app{i:02d}%3A1.27" for i in range(10, 20)]
            assert keys((await c.get("/", page="x", sort="'; drop", state="bogus"))[1]) == first  # bad input ignored

    asyncio.run(main())


def test_live_stream_sends_new_anomalies(tmp_path: Path) -> None:
    async def main() -> None:
        async with console(tmp_path) as (srv, events, http):
            await exchange(srv.port, [hello(), *learn_batches(4)])
            c = Browserless(http, srv.console.url.rstrip("/"))
            await c.login(VIEWER)
            async with http.get(c.base + "/live/events", headers=c._headers()) as r:
                assert r.headers["Content-Type"] == "text/event-stream"
                assert await r.content.readline() == b"retry: 3000\n"
                await r.content.readline()
                await exchange(srv.port, [hello(), batch_request([vector(300, 1, attack="etc")], 5)])
                assert await asyncio.wait_for(r.content.readline(), 10) == b"event: anomalies\n"
                data = json.loads((await r.content.readline()).removeprefix(b"data: "))
            assert data[0]["event_id"] == events[-1]["event_id"] and data[0]["update"] is False
            assert data[0]["novel"] == ["sensitive_path /etc/passwd"]

    asyncio.run(main())


def test_sessions_end_when_idle_or_old_and_are_bounded() -> None:
    now = [0.0]
    auth = Authorizer(admins={_digest(OPERATOR): "olga"}, viewers={_digest(VIEWER): "vic"})
    s = Sessions(auth, idle_seconds=60, lifetime_seconds=300, max_sessions=2, clock=lambda: now[0])
    a, _ = s.login(OPERATOR)  # type: ignore[misc]
    now[0] = 59
    assert s.get(a) is not None
    now[0] = 120
    assert s.get(a) is None  # idle for 61 s
    b, _ = s.login(VIEWER)  # type: ignore[misc]
    for t in range(170, 420, 50):
        now[0] = t
        assert (s.get(b) is not None) == (t - 120 <= 300)  # used every 50 s, still ends 300 s after its login
    c, _ = s.login(VIEWER)  # type: ignore[misc]
    d, _ = s.login(OPERATOR)  # type: ignore[misc]
    e, _ = s.login(OPERATOR)  # type: ignore[misc]
    assert len(s) == 2 and s.get(c) is None and s.get(d) is not None
    assert s.login("") is None and s.login(OPERATOR[:-1]) is None
