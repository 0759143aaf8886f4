"""GET a JSON document from an HTTP API on a unix socket (the Docker Engine and libpod APIs), with a timeout,
turning every failure into a :class:`~baseliner.sensor.attribution.runtime.RuntimeFault`."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

from baseliner.sensor.attribution.runtime import RuntimeBadAnswer, RuntimeUnavailable

#: an answer larger than this is not metadata of one container
MAX_BODY = 4 << 20


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self._path)
        except OSError:
            s.close()
            raise
        self.sock = s


def get_json(socket_path: str, path: str, timeout: float) -> dict[str, Any] | None:
    """The decoded JSON object of ``GET path``; None on 404.  Raises RuntimeUnavailable (cannot connect, no
    answer within ``timeout``) or RuntimeBadAnswer (another status, not a JSON object, too large)."""
    conn = _UnixHTTPConnection(socket_path, timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read(MAX_BODY + 1)
    except TimeoutError as e:
        raise RuntimeUnavailable(f"{socket_path}: no answer within {timeout:g}s") from e
    except (http.client.HTTPException, UnicodeError) as e:
        raise RuntimeBadAnswer(f"{socket_path}: not an HTTP answer ({type(e).__name__}: {e})") from e
    except OSError as e:
        raise RuntimeUnavailable(f"{socket_path}: {e.strerror or e}") from e
    finally:
        conn.close()
    if resp.status == 404:
        return None
    if resp.status != 200:
        raise RuntimeBadAnswer(f"{socket_path}: GET {path} answered HTTP {resp.status}")
    if len(body) > MAX_BODY:
        raise RuntimeBadAnswer(f"{socket_path}: GET {path} answered more than {MAX_BODY} bytes")
    try:
        doc = json.loads(body)
    except ValueError as e:
        raise RuntimeBadAnswer(f"{socket_path}: GET {path} answered something that is not JSON") from e
    if not isinstance(doc, dict):
        raise RuntimeBadAnswer(f"{socket_path}: GET {path} answered JSON that is not an object")
    return doc


def field(doc: Any, *keys: str, kind: type = str) -> Any:
    """``doc[k1][k2]...`` checked to be of ``kind`` (missing or null -> ``kind()``); RuntimeBadAnswer otherwise.

    >>> field({"Config": {"Image": "a:1"}}, "Config", "Image"), field({}, "Config", "Labels", kind=dict)
    ('a:1', {})
    """
    for k in keys:
        if doc is None:
            return kind()
        if not isinstance(doc, dict):
            raise RuntimeBadAnswer(f"expected an object at {'.'.join(keys)}")
        doc = doc.get(k)
    if doc is None:
        return kind()
    if not isinstance(doc, kind):
        raise RuntimeBadAnswer(f"expected {kind.__name__} at {'.'.join(keys)}, got {type(doc).__name__}")
    return doc
