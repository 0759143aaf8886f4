"""The operator console in a real browser: Debian's headless Chromium driven through chromedriver (Selenium).

A real ``baseliner serve`` (its own process) is fed by two real synthetic sensors (``baseliner sensor --source
synthetic``, one per node); then every page is opened and what it shows is checked against the Admin API (gRPC)
and the service's event file: the same images, the same learnt items, the same explanation figures.  An
operator accepts an anomaly into the baseline by clicking, and the Admin API shows the item learnt and the next
identical window not flagged; freeze, return to learning and reset are clicked too.  Visitors without a session
and viewers cannot act.  Screenshots of each page go to ``test-artifacts/console/`` (``BASELINER_TEST_ARTIFACTS``
to change the parent) and, with ``BASELINER_DOCS_SCREENSHOTS=1``, to ``docs/console/``.

Needs ``chromium`` and ``chromium-driver`` (``scripts/bootstrap.sh`` installs them): skipped without them, failed
when ``CI`` is set.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from baseliner.models.vector import FeatureVector
from baseliner.protos.v1 import admin_pb2, admin_pb2_grpc
from baseliner.sensor.synthetic import ScenarioConfig, SyntheticSource
from baseliner.sensor.transport import Backoff, Transport
from baseliner.service.console.charts import fmt

REPO = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("BASELINER_TEST_ARTIFACTS", REPO / "test-artifacts")) / "console"
DOCS = REPO / "docs" / "console"
OPERATOR = "operator-token-for-the-browser-test"
VIEWER = "viewer-token-for-the-browser-test"
HOURS, ATTACKS_AFTER, WINDOW = 6, 2, 60
SENSORS = (("node-1", 7), ("node-2", 8))  # (node, seed) of each synthetic sensor

pytestmark = pytest.mark.slow


def _need_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        msg = f"{', '.join(missing)} missing: scripts/bootstrap.sh installs Debian's chromium and chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _baseliner(*args: str) -> list[str]:
    return [sys.executable, "-m", "baseliner.service.cli", *args]


@dataclass
class Stack:
    """The running service, what it was fed, and ways to reach it."""

    console: str  # base URL
    grpc_target: str
    falco: str
    events_file: Path
    normal: dict[str, list[FeatureVector]]  # container id -> its normal windows (node-1's sensor, before attacks)
    attacked: set[str]
    end: float  # event time when the synthetic sensors stopped
    crafted: list[int] = field(default_factory=lambda: [0])

    # -- Admin API --------------------------------------------------------------------------------------
    def admin(self, rpc: str, request: Any, token: str = OPERATOR) -> Any:
        with grpc.insecure_channel(self.grpc_target) as ch:
            return getattr(admin_pb2_grpc.AdminStub(ch), rpc)(request, metadata=(("authorization", f"Bearer {token}"),),
                                                              timeout=10)

    def baseline(self, key: str) -> Any:
        return self.admin("GetBaseline", admin_pb2.GetBaselineRequest(key=key))

    # -- events ---------------------------------------------------------------------------------------
    def events(self) -> list[dict[str, Any]]:
        lines = self.events_file.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def anomaly_events(self) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("schema") == "baseliner.anomaly/v1"]

    # -- crafted windows --------------------------------------------------------------------------------
    def window_like(self, image: str, change: Callable[[FeatureVector], None], replica: int = 0) -> FeatureVector:
        """A normal window of one of ``image``'s containers that no attack touched, moved after everything sent
        so far, changed by ``change``."""
        containers = sorted(c for c, vs in self.normal.items()
                            if vs[0].identity.image == image and c not in self.attacked)
        v = self.normal[containers[replica]][-1]
        w = self.again(v)
        w.syscalls, w.executables, w.endpoints = dict(v.syscalls), list(v.executables), list(v.endpoints)
        w.sensitive_paths, w.ngrams = list(v.sensitive_paths), dict(v.ngrams)
        change(w)
        return w

    def again(self, v: FeatureVector) -> FeatureVector:
        """The same window one window length after the last one sent (the container that much older)."""
        self.crafted[0] += 1
        start = self.end + WINDOW * self.crafted[0]
        age = v.seconds_since_start + (start - v.window_start) if v.seconds_since_start >= 0 else -1.0
        return replace(v, window_start=start, seconds_since_start=age)

    def send(self, *vectors: FeatureVector) -> None:
        """Stream windows as a sensor of their node does, and wait for their acknowledgement."""
        async def go() -> None:
            t = Transport(self.grpc_target, sensor_id=f"crafted-{self.crafted[0]}", node=vectors[0].identity.node,
                          batch_size=100, max_in_flight=1, on_full="block", backoff=Backoff(0.05, 1.0))
            t.start()
            try:
                await t.submit(list(vectors))
                assert await t.flush(30), "the service did not acknowledge the crafted windows"
            finally:
                await t.close()

        asyncio.run(go())

    def event_for(self, v: FeatureVector, timeout: float = 15.0) -> dict[str, Any]:
        """The anomaly event whose first window is ``v``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.anomaly_events():
                if e["container"]["id"] == v.identity.container_id and _epoch(e["first_seen"]) == v.window_start:
                    return e
            time.sleep(0.2)
        raise AssertionError(f"no anomaly event for the window at {v.window_start} of {v.identity.container_id}")


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def _normal_windows() -> tuple[dict[str, list[FeatureVector]], set[str], float]:
    """node-1's sensor's windows (the same scenario as its process), per container, before the first attack."""
    source = SyntheticSource(ScenarioConfig(seed=SENSORS[0][1], hours=HOURS, nodes=(SENSORS[0][0],),
                                            attack_after_hours=ATTACKS_AFTER, window_seconds=WINDOW))
    first_attack = min(a.start for a in source.attacks)
    out: dict[str, list[FeatureVector]] = {}
    for start, window in source.windows():
        if start + WINDOW < first_attack:
            for v in window:
                out.setdefault(v.identity.container_id, []).append(v)
    end = source.config.start + source.config.windows * WINDOW
    return out, {a.container_id for a in source.attacks}, end


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    _need_browser()
    tmp = tmp_path_factory.mktemp("console")
    (tmp / "ops.tokens").write_text(f"olga {OPERATOR}\n")
    (tmp / "views.tokens").write_text(f"vic {VIEWER}\n")
    g, c, f = _free_port(), _free_port(), _free_port()
    events = tmp / "events.jsonl"
    sets = {"console.listen": f"127.0.0.1:{c}", "falco.listen": f"127.0.0.1:{f}",
            "grpc.admin_tokens_file": str(tmp / "ops.tokens"), "grpc.viewer_tokens_file": str(tmp / "views.tokens"),
            "baseline.min_learn_seconds": "3600", "baseline.min_learn_windows": "100",
            "baseline.stable_confidence": "0"}
    cmd = _baseliner("serve", "--listen", f"127.0.0.1:{g}", "--metrics-listen", "", "--events", str(events),
                     *(a for k, v in sets.items() for a in ("--set", f"{k}={v}")))
    log = (tmp / "serve.log").open("w")
    serve = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_http(f"http://127.0.0.1:{c}/healthz", 60)
        sensors = [subprocess.Popen(_baseliner("sensor", "--source", "synthetic", "--target", f"127.0.0.1:{g}",
                                               "--node", node, "--sensor-id", f"synthetic-{node}", "--seed", str(seed),
                                               "--hours", str(HOURS), "--attacks-after", str(ATTACKS_AFTER),
                                               "--window", str(WINDOW)),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                   for node, seed in SENSORS]
        for p in sensors:
            _, err = p.communicate(timeout=600)
            assert p.returncode == 0, err[-2000:]
        normal, attacked, end = _normal_windows()
        yield Stack(f"http://127.0.0.1:{c}", f"127.0.0.1:{g}", f"http://127.0.0.1:{f}", events, normal, attacked, end)
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(30)
        finally:
            log.close()
            if serve.returncode is None:
                serve.kill()
    assert serve.returncode == 0, (tmp / "serve.log").read_text()[-3000:]


@pytest.fixture(scope="module")
def browser(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}", "--window-size=1440,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


# --------------------------------------------------------------------------------------------------
# helpers


DOC_SHOTS = ("fleet", "image", "anomaly", "anomaly-frozen", "confirm", "live")  # the ones docs/console.md shows


def shot(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    if os.environ.get("BASELINER_DOCS_SCREENSHOTS") and name in DOC_SHOTS:
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOCS / f"{name}.png")


def login(driver: Any, stack: Stack, token: str) -> None:
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(stack.console + "/login")
    driver.find_element(By.ID, "token").send_keys(token)
    click(driver, "section.login button[type=submit]")
    assert urllib.parse.urlsplit(driver.current_url).path == "/", driver.page_source[:500]


def go(driver: Any, stack: Stack, path: str, **params: str) -> None:
    driver.get(stack.console + path + ("?" + urllib.parse.urlencode(params) if params else ""))


def texts(driver: Any, css: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, css)]


def wait_for(driver: Any, css: str, timeout: float = 15.0) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css)))


def click(driver: Any, css: str) -> None:
    """Click what leads to another page (a link, a form's button), and wait until that page has loaded."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.CSS_SELECTOR, css).click()

    def left(_: Any) -> bool:  # the old page is gone: its element is stale (chromedriver may instead say that
        try:                   # the node no longer belongs to the document, when asked as the page changes)
            page.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as e:
            if "does not belong to the document" in str(e):
                return True
            raise
        return False

    wait = WebDriverWait(driver, 15)
    wait.until(left)
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")


def post_without_session(stack: Stack, data: dict[str, str]) -> int:
    req = urllib.request.Request(stack.console + "/act", data=urllib.parse.urlencode(data).encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def novel_executable(path: str) -> Callable[[FeatureVector], None]:
    def change(v: FeatureVector) -> None:
        v.executables.append(path)
    return change


# --------------------------------------------------------------------------------------------------
# tests


def test_visitors_without_a_session_or_the_operator_role_cannot_act(stack: Stack, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    event = next(e for e in stack.anomaly_events() if not e["update"])
    eid = event["event_id"]
    # without a session: every page leads to the login form, and an action is refused (401)
    go(browser, stack, f"/anomaly/{eid}")
    assert urllib.parse.urlsplit(browser.current_url).path == "/login"
    shot(browser, "login")
    go(browser, stack, "/confirm", action="feedback", target=eid)
    assert urllib.parse.urlsplit(browser.current_url).path == "/login"
    assert post_without_session(stack, {"action": "feedback", "target": eid}) == 401
    # a viewer sees the pages but no action, is refused the confirmation (403), and a post made in its own page
    # with its own CSRF token is refused too (403)
    key = event["image"]["key"]
    before = stack.baseline(key)
    login(browser, stack, VIEWER)
    go(browser, stack, f"/anomaly/{eid}")
    assert browser.find_elements(By.ID, "accept") == []
    assert "You are a viewer" in browser.find_element(By.CSS_SELECTOR, "section.actions").text
    go(browser, stack, "/confirm", action="feedback", target=eid)
    assert browser.find_element(By.TAG_NAME, "h1").text == "Refused"
    shot(browser, "viewer-refused")
    go(browser, stack, f"/anomaly/{eid}")
    status = browser.execute_script("""
        const csrf = document.querySelector('input[name=csrf]').value;
        return fetch('/act', {method: 'POST', body: new URLSearchParams(
            {action: 'feedback', target: arguments[0], csrf: csrf})}).then(r => r.status);""", eid)
    assert status == 403
    assert stack.baseline(key) == before  # nothing learnt, no mode changed
    with pytest.raises(grpc.RpcError) as refused:  # the same role on the Admin API
        stack.admin("SetMode", admin_pb2.SetModeRequest(key=key, mode=admin_pb2.MODE_FREEZE), token=VIEWER)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_pages_show_what_the_admin_api_holds(stack: Stack, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    login(browser, stack, OPERATOR)
    listed = stack.admin("ListBaselines", admin_pb2.ListBaselinesRequest()).baselines
    keys = sorted(b.key for b in listed)
    assert len(keys) == 3
    go(browser, stack, "/")
    assert texts(browser, "table.fleet tbody th") == keys
    shot(browser, "fleet")
    for b in listed:
        row = browser.find_element(By.XPATH, f"//table[@class='fleet']//tr[th='{b.key}']")
        assert f"{b.windows_learned:,}" in row.text
    for key in keys:
        admin = stack.baseline(key)
        go(browser, stack, "/image", key=key, features="all")
        for kind, learnt in (("executable", admin.executables), ("syscall", admin.syscalls),
                             ("port", admin.remote_ports), ("sensitive_path", admin.sensitive_paths)):
            shown = texts(browser, f'ul.items[data-kind="{kind}"] li')
            assert shown == sorted(learnt), (key, kind)
        rows = {r.get_attribute("data-feature"): r.text
                for r in browser.find_elements(By.CSS_SELECTOR, "#features tbody tr")}
        active = [f for f in admin.features if f.mean > 0]
        assert sorted(rows) == sorted(f.name for f in active)
        for f in active:
            assert f"{fmt(f.typical)} " in rows[f.name] and f"{f.mean:.3f} {f.std:.3f}" in rows[f.name], f.name
        thresholds = browser.find_element(By.ID, "thresholds").text
        assert f"decision, steady state {fmt(admin.threshold)}" in thresholds
        assert browser.find_element(By.ID, "windows-learnt").text == f"{admin.windows_learned:,}"
        if key.startswith("nginx"):
            browser.execute_script("window.scrollTo(0, 0)")
            shot(browser, "image")
    # every anomaly shown with the figures of its event
    events = {e["event_id"]: e for e in stack.anomaly_events()}  # the last version of each
    go(browser, stack, "/anomalies")
    shot(browser, "anomalies")
    shell = next(e for e in events.values() if any(n["value"] == "/bin/sh" for n in e["novel"]))
    for e in (shell, *list(events.values())[:5]):
        go(browser, stack, f"/anomaly/{e['event_id']}")
        assert browser.find_element(By.ID, "event-id").text == e["event_id"]
        assert browser.find_element(By.ID, "count").text == str(e["count"])
        novel = texts(browser, "#novel li code")
        assert novel == [n["value"] for n in e["novel"]]
        for d in e["explanation"]:
            row = browser.find_element(By.CSS_SELECTOR, f'#explanation tr[data-feature="{d["feature"]}"]')
            observed = row.find_element(By.CSS_SELECTOR, "td.observed").text
            baseline = row.find_element(By.CSS_SELECTOR, "td.baseline").text
            assert d["text"] == f"{d['feature']}: {observed}, baseline {baseline}"
    go(browser, stack, f"/anomaly/{shell['event_id']}")
    shot(browser, "anomaly")


def test_explanation_figures_are_the_admin_apis_on_a_frozen_image(stack: Stack, browser: Any) -> None:
    """Frozen, a baseline learns nothing: an anomaly's baseline figures are then exactly what GetBaseline says."""
    from selenium.webdriver.common.by import By

    login(browser, stack, OPERATOR)
    key = "postgres:16.6"
    go(browser, stack, "/image", key=key)
    click(browser, f'a.button[href="/confirm?action=mode&target={urllib.parse.quote(key)}&value=freeze"]')
    assert "Set the mode of postgres:16.6 to freeze" in browser.find_element(By.CSS_SELECTOR, "form.confirm").text
    click(browser, "#confirm")
    assert "postgres:16.6: mode freeze, now frozen." in wait_for(browser, ".flash").text
    admin = stack.baseline(key)
    assert admin.mode == admin_pb2.MODE_FREEZE and admin.state == admin_pb2.STATE_FROZEN

    # A burst of the calls it makes, and of bytes sent: flagged by the rate tier alone (how strongly depends on
    # the order in which the sensors' streams were learnt); what this test checks is the explanation's figures.
    def busier(v: FeatureVector) -> None:
        for name in ("read", "write", "lseek", "sendto"):
            if name in v.syscalls:
                v.syscalls[name] *= 100
        v.bytes_sent *= 100

    w = stack.window_like(key, busier)
    stack.send(w)
    event = stack.event_for(w)
    assert event["kinds"] == ["rate"]
    go(browser, stack, f"/anomaly/{event['event_id']}")
    features = {f.name: f for f in admin.features}
    checked = 0
    for row in browser.find_elements(By.CSS_SELECTOR, "#explanation tbody tr"):
        name = row.get_attribute("data-feature")
        if name not in features:  # sequence.* figures are the sequence tier's, not a rate feature's
            continue
        f = features[name]
        mean, spread = math.expm1(f.mean), math.expm1(f.mean + f.std) - math.expm1(f.mean)
        baseline = row.find_element(By.CSS_SELECTOR, "td.baseline").text
        assert baseline == f"{fmt(mean)} ± {fmt(spread)} {f.unit}", name
        if name.startswith("syscall."):
            observed = row.find_element(By.CSS_SELECTOR, "td.observed").text
            assert observed == f"{fmt(w.syscalls.get(name.removeprefix('syscall.'), 0) / WINDOW)} {f.unit}"
        checked += 1
    assert checked >= 3
    # a Falco rule that fires in the container of an anomaly shows on the anomaly's page and raises its severity:
    # a new executable (high; six minutes on, past the burst's repeats) with a Falco rule hit becomes critical
    stack.crafted[0] += math.ceil(360 / WINDOW)
    w = stack.window_like(key, lambda v: v.executables.append("/usr/bin/cat"))
    stack.send(w)
    event = stack.event_for(w)
    assert event["kinds"] == ["novel_executable"] and event["severity"] == "high"
    go(browser, stack, f"/anomaly/{event['event_id']}")
    alert = {"rule": "Read sensitive file untrusted", "priority": "Warning", "output": "cat read /etc/shadow",
             "time": event["first_seen"], "hostname": w.identity.node,
             "output_fields": {"container.id": w.identity.container_id[:12], "container.image.repository": "postgres",
                               "container.image.tag": "16.6", "k8s.ns.name": w.identity.namespace,
                               "k8s.pod.name": w.identity.pod, "proc.exepath": "/usr/bin/cat"}}
    req = urllib.request.Request(stack.falco + "/", data=json.dumps(alert).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert json.loads(r.read()) == {"accepted": True}  # (what it found goes to the events and the pages only)
    browser.refresh()
    falco = browser.find_element(By.ID, "falco").text
    assert "Read sensitive file untrusted" in falco and "cat read /etc/shadow" in falco
    assert "raised from high by Falco" in browser.find_element(By.CSS_SELECTOR, "p.status").text
    shot(browser, "anomaly-frozen")
    # back to learning, from the anomaly's page
    click(browser, f'a.button[href="/confirm?action=mode&target={urllib.parse.quote(key)}&value=auto"]')
    click(browser, "#confirm")
    assert stack.baseline(key).mode == admin_pb2.MODE_AUTO


def test_accept_into_the_baseline_by_clicking(stack: Stack, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    key = "nginx:1.27.3"
    w = stack.window_like(key, novel_executable("/usr/bin/curl"))
    stack.send(w)
    event = stack.event_for(w)
    assert event["kinds"] == ["novel_executable"] and event["novel"] == [{"kind": "executable",
                                                                          "value": "/usr/bin/curl"}]
    before = stack.baseline(key)
    assert "/usr/bin/curl" not in before.executables
    login(browser, stack, OPERATOR)
    go(browser, stack, "/anomalies", image=key)
    click(browser, f'tr[data-event="{event["event_id"]}"] td.time a')
    assert browser.find_element(By.ID, "event-id").text == event["event_id"]
    click(browser, "#accept")
    form = browser.find_element(By.CSS_SELECTOR, "form.confirm").text
    assert "executable /usr/bin/curl becomes part of the baseline" in form
    shot(browser, "confirm")
    click(browser, "#confirm")
    assert urllib.parse.urlsplit(browser.current_url).path == f"/anomaly/{event['event_id']}"
    flash = wait_for(browser, ".flash").text
    assert flash == f"Accepted into the baseline of {key}: executable:/usr/bin/curl."
    assert "now part of the baseline" in browser.find_element(By.ID, "novel").text
    shot(browser, "accepted")
    after = stack.baseline(key)
    assert "/usr/bin/curl" in after.executables
    # the next identical window is not flagged
    stack.send(stack.again(w))
    later = stack.baseline(key)
    assert later.windows_scored == after.windows_scored + 1
    assert later.anomalies == after.anomalies


def test_live_page_shows_new_anomalies_without_a_reload(stack: Stack, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    login(browser, stack, VIEWER)
    go(browser, stack, "/live")
    browser.execute_script("window.notReloaded = true")
    wait_for(browser, "#live tbody tr")
    time.sleep(0.5)  # the event stream is open
    w = stack.window_like("nginx:1.27.3", novel_executable("/usr/bin/wget"), replica=1)
    stack.send(w)
    eid = stack.event_for(w)["event_id"]
    row = wait_for(browser, f'#live tr[data-event="{eid}"]')
    assert browser.execute_script("return window.notReloaded") is True
    assert "new executable /usr/bin/wget" in row.text
    assert "new since this page opened" in browser.find_element(By.ID, "live-status").text
    shot(browser, "live")


def test_reset_by_clicking(stack: Stack, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    key = "acme/report-worker:2.4.1"
    assert stack.baseline(key).windows_learned > 0
    login(browser, stack, OPERATOR)
    go(browser, stack, "/image", key=key)
    click(browser, "a.button.danger")
    assert "Everything it has learnt is forgotten" in browser.find_element(By.CSS_SELECTOR, "form.confirm").text
    click(browser, "#confirm")
    assert "reset; it learns again" in wait_for(browser, ".flash").text
    admin = stack.baseline(key)
    assert admin.windows_learned == 0 and admin.state == admin_pb2.STATE_LEARNING and not admin.executables


def test_keyboard_alone_reaches_an_image(stack: Stack, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    login(browser, stack, VIEWER)
    go(browser, stack, "/")
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.text == "Skip to content"
    for _ in range(40):
        active = browser.switch_to.active_element
        if "/image?key=" in (active.get_attribute("href") or ""):
            break
        active.send_keys(Keys.TAB)
    else:
        raise AssertionError("no image link reached with the Tab key")
    key = active.text
    page = browser.find_element(By.TAG_NAME, "html")
    active.send_keys(Keys.ENTER)
    WebDriverWait(browser, 15).until(expected_conditions.staleness_of(page))
    assert re.search(r"/image\?key=", browser.current_url)
    assert browser.find_element(By.TAG_NAME, "h1").text == f"Image {key}"
