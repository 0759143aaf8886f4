"""Browser sessions of the console: log in with an admin token, a cookie, a CSRF token per session.

A visitor logs in by posting an operator or viewer token (``service/auth.py``: ``grpc.admin_tokens_file``,
``grpc.viewer_tokens_file``) to the login form.  The session that follows is named by a random cookie value
(``Secure; HttpOnly; SameSite=Strict``), held here only as its SHA-256 digest, and carries the token's name
and role and a random CSRF token that every form of the session posts back; it keeps the token itself in memory
only, to pass it on to the shard that holds an image held elsewhere (``shards.py``), as the Admin API passes on a
caller's token.  A session ends when it is
unused for ``console.session_idle_minutes``, ``console.session_hours`` after its login, at logout, or when
``console.max_sessions`` newer ones push it out.  A client address that fails ``LoginThrottle.FAILURES``
logins within ``LoginThrottle.WINDOW_SECONDS`` is refused further attempts until that window has passed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from baseliner.service.auth import Authorizer, Principal
from cachetools import LRUCache

COOKIE = "baseliner_console"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(slots=True)
class Session:
    who: Principal
    csrf: str
    created: float
    used: float
    flash: list[str] = field(default_factory=list)  # messages for the next page (e.g. what an action did)
    token: str = field(default="", repr=False)  # passed on to the shard that holds an image (console/shards.py)


class LoginThrottle:
    """Failed logins per client address, to refuse guessing: at most ``FAILURES`` per ``WINDOW_SECONDS``.

    Bounded: the ``max_clients`` most recent failing addresses are remembered.

    >>> t = LoginThrottle(clock=lambda: 0.0)
    >>> for _ in range(LoginThrottle.FAILURES): t.failed("10.0.0.1")
    >>> t.refused("10.0.0.1"), t.refused("10.0.0.2")
    (True, False)
    """

    FAILURES = 10
    WINDOW_SECONDS = 60.0

    def __init__(self, max_clients: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._failures: LRUCache[str, list[float]] = LRUCache(max_clients)  # address -> failure times, oldest first

    def _recent(self, client: str) -> list[float]:
        since = self.clock() - self.WINDOW_SECONDS
        times = [t for t in self._failures.get(client, ()) if t > since]
        if times:
            self._failures[client] = times
        else:
            self._failures.pop(client, None)
        return times

    def refused(self, client: str) -> bool:
        """True while ``client`` has used up its failures of the current window."""
        return len(self._recent(client)) >= self.FAILURES

    def failed(self, client: str) -> None:
        self._failures[client] = self._recent(client) + [self.clock()]


class Sessions:
    """The console's sessions (see the module docstring).

    >>> from baseliner.service.auth import Authorizer, _digest as d
    >>> s = Sessions(Authorizer(admins={d("o" * 16): "olga"}, viewers={d("v" * 16): "vic"}), 60, 3600, 10)
    >>> s.login("wrong token") is None
    True
    >>> cookie, session = s.login("o" * 16)
    >>> s.get(cookie).who, s.csrf_ok(session, session.csrf), s.csrf_ok(session, "guess")
    (Principal(name='olga', role='operator'), True, False)
    >>> s.logout(cookie); s.get(cookie) is None
    True
    """

    def __init__(self, authorizer: Authorizer, idle_seconds: float, lifetime_seconds: float, max_sessions: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.authorizer = authorizer
        self.idle_seconds = idle_seconds
        self.lifetime_seconds = lifetime_seconds
        self.clock = clock
        self._sessions: LRUCache[str, Session] = LRUCache(max_sessions)  # sha256(cookie) -> session

    def login(self, token: str) -> tuple[str, Session] | None:
        """A new session for the holder of ``token`` (its cookie value and the session); None for a bad token."""
        who = self.authorizer.principal(token.strip()) if token.strip() else None
        if who is None:
            return None
        cookie = secrets.token_urlsafe(32)
        now = self.clock()
        session = Session(who, secrets.token_urlsafe(32), now, now, token=token.strip())
        self._sessions[_digest(cookie)] = session  # (the least recently used one ends when there are too many)
        return cookie, session

    def get(self, cookie: str | None) -> Session | None:
        """The live session a cookie names (its use noted), or None."""
        if not cookie:
            return None
        key = _digest(cookie)
        session = self._sessions.get(key)
        if session is None:
            return None
        now = self.clock()
        if now - session.used > self.idle_seconds or now - session.created > self.lifetime_seconds:
            del self._sessions[key]
            return None
        session.used = now  # (and the lookup made it the most recently used)
        return session

    def logout(self, cookie: str | None) -> None:
        if cookie:
            self._sessions.pop(_digest(cookie), None)

    @staticmethod
    def csrf_ok(session: Session, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(session.csrf.encode(), str(given).encode())

    def __len__(self) -> int:
        return len(self._sessions)
