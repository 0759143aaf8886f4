"""``baseliner demo --console``: the demo's service opens its console, prints the URL and a login token, and stays
up after the summary until interrupted."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

pytestmark = pytest.mark.slow


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _request(url: str, data: dict[str, str] | None = None, cookie: str = "") -> tuple[int, str, dict[str, str]]:
    req = urllib.request.Request(url, data=urllib.parse.urlencode(data).encode() if data else None,
                                 headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.build_opener(_NoRedirect).open(req, timeout=10) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def test_demo_console_prints_its_url_and_token_and_stays_open() -> None:
    cmd = [sys.executable, "-m", "baseliner.service.cli", "demo", "--console", "--quiet", "--hours", "6",
           "--learn-hours", "1", "--attacks-after", "2", "--window", "60", "--set", "baseline.min_learn_windows=100"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 300
        assert proc.stdout is not None
        while not any("stay open until Ctrl-C" in line for line in lines):
            line = proc.stdout.readline()
            assert line and time.monotonic() < deadline, "".join(lines) + (proc.stderr.read() if proc.stderr else "")
            lines.append(line)
        out = "".join(lines)
        m = re.search(r"^console: (http://127\.0\.0\.1:\d+/) \(log in with the token (\S+);", out, re.M)
        assert m, out
        url, token = m.groups()
        assert "attack types detected: 5/5" in out  # the summary comes before the hold
        assert _request(url + "login")[0] == 200
        status, _, headers = _request(url + "login", {"token": token, "next": "/"})
        assert status == 303, headers
        cookie = headers["Set-Cookie"].split(";")[0]
        status, html, _ = _request(url, cookie=cookie)
        assert status == 200
        assert re.findall(r'<th scope="row"><a href="/image\?key=[^"]+">([^<]+)</a>', html) == [
            "acme/report-worker:2.4.1", "nginx:1.27.3", "postgres:16.6"]
        assert "demo" in html and "operator" in html
        # the same token opens the Admin API
        target = re.search(r"service on (127\.0\.0\.1:\d+)", out).group(1)  # type: ignore[union-attr]
        admin = subprocess.run([sys.executable, "-m", "baseliner.service.cli", "admin", "--target", target, "list"],
                               capture_output=True, text=True, timeout=60, env={"BASELINER_ADMIN_TOKEN": token})
        assert admin.returncode == 0 and "nginx:1.27.3" in admin.stdout, admin.stderr
        assert proc.poll() is None  # still up
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0  # every attack type detected
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
