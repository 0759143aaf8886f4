"""A rollout of real containers: ``baseliner sensor --source bpf`` streams Docker containers to ``baseliner serve``.

Version 1 of an image (``localhost/baseliner-test/rollout:1``) starts with ``id`` and then serves a loop of
requests; once its baseline detects, version 2 (``:2``) starts in its place with a changed start (``uname``
instead of ``id``) and one new helper (``md5sum``).  Checked with the default lineage rule: version 2 detects
from its first window with version 1's model, one ``version_diff`` names exactly the executables that changed
(new ``uname`` and ``md5sum``, vanished ``id``), its normal windows raise no alarm, and a reverse shell run in
it (``docker exec``) in its first minute is flagged with its parent key.

Needs root, BPF and Docker (scripts/runtimes.sh); fails instead of skipping when ``CI`` is set.  About two
minutes.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.bpf_required import require_bpf
from tests.runtime_containers import Docker, require_runtimes
from tests.test_sensor_bpf_e2e import BASELINER, REPO, Listener, baseline_states, free_port, read_events
from tests.test_sensor_runtimes import REVERSE_SHELL, _stop

pytestmark = [pytest.mark.root, pytest.mark.slow]

V1, V2 = "localhost/baseliner-test/rollout:1", "localhost/baseliner-test/rollout:2"
LOOP = ('while :; do exec 3<>/dev/tcp/127.0.0.1/{port}; printf "GET / HTTP/1.0\\r\\n\\r\\n" >&3; cat <&3 >/dev/null; '
        'exec 3>&-; head -c 64 /dev/urandom > /dev/null; sleep 0.1; done')
START = {V1: "id > /dev/null; ", V2: "uname > /dev/null; md5sum /etc/hostname > /dev/null; "}


def wait_for(what: str, check: Any, procs: list[subprocess.Popen[str]], timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        for p in procs:
            assert p.poll() is None, f"{p.args!r} exited with {p.returncode}"
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)


@pytest.fixture(scope="module")
def rollout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    require_bpf()
    require_runtimes()
    tmp = tmp_path_factory.mktemp("rollout")
    docker, app, c2 = Docker(), Listener(), Listener(range(4444, 4544))
    port, events = free_port(), tmp / "events.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs: list[subprocess.Popen[str]] = []
    try:
        for image in (V1, V2):
            docker.build(image, image.rsplit(":", 1)[1])
        procs.append(subprocess.Popen([
            *BASELINER, "serve", "--listen", f"127.0.0.1:{port}", "--metrics-listen", "", "--events", str(events),
            "--set", "baseline.min_learn_windows=15", "--set", "baseline.min_learn_seconds=0",
            "--set", "baseline.stable_confidence=0",
            "--set", "baseline.startup_seconds=5", "--set", "baseline.novelty_min_containers=1",
            "--set", "pipeline.lineage_observe_seconds=15", "--set", "pipeline.lineage_adapt_seconds=120",
        ], env=env, cwd=REPO, text=True))
        procs.append(subprocess.Popen([
            *BASELINER, "sensor", "--source", "bpf", "--target", f"127.0.0.1:{port}", "--node", "rollout-node",
            "--window", "1", "--host", "ignore", "--metrics-listen", "",
        ], env=env, cwd=REPO, text=True))
        # a first container of version 1 shows that the sensor is attached and attributing; the one that
        # follows is then seen from its very start (runc's set-up, its entrypoint), as every later one
        warm = docker.run("baseliner-rollout-warm", V1, LOOP.format(port=app.port))
        wait_for("the sensor", lambda: V1 in baseline_states(port, env), procs)
        v1 = docker.run("baseliner-rollout-v1", V1, START[V1] + LOOP.format(port=app.port))
        docker.remove_named(warm.name)
        wait_for("version 1 to detect", lambda: baseline_states(port, env).get(V1) == "detecting", procs)
        time.sleep(5)  # version 1 runs on while version 2 starts, as in a rolling update
        v2 = docker.run("baseliner-rollout-v2", V2, START[V2] + LOOP.format(port=app.port))
        docker.remove_named(v1.name)
        diff = wait_for("the version diff", lambda: [e for e in read_events(events)
                                                     if e.get("schema") == "baseliner.version/v1"], procs)
        time.sleep(10)  # normal windows of version 2 after its diff
        quiet = len(read_events(events))
        shell = docker.exec(v2, REVERSE_SHELL.format(port=c2.port))
        yield {"events": events, "diff": diff, "quiet": quiet, "v2": v2, "shell": shell, "procs": procs,
               "port": port, "env": env, "c2": c2}
    finally:
        docker.cleanup()
        _stop(procs)
        app.close()
        c2.close()


def names(items: list[str]) -> set[str]:
    return {Path(i).name for i in items}


def test_one_version_diff_names_exactly_the_changed_executables(rollout: dict[str, Any]) -> None:
    (diff,) = rollout["diff"]
    assert diff["kind"] == "version_diff" and diff["image"]["key"] == V2 and diff["image"]["parent"] == V1
    assert names(diff["added"]["executable"]) == {"uname", "md5sum"}, diff
    assert names(diff["vanished"].get("executable", [])) == {"id"}, diff


def test_no_alarm_on_normal_windows_and_a_reverse_shell_is_flagged(rollout: dict[str, Any]) -> None:
    events, v2 = rollout["events"], rollout["v2"]
    before = [e for e in read_events(events)[: rollout["quiet"]]
              if e.get("schema") == "baseliner.anomaly/v1" and e["image"]["key"] == V2]
    assert before == [], [(e["kinds"], e["novel"]) for e in before]
    assert rollout["shell"].returncode in (0, 127, 141), rollout["shell"].stderr

    def hits() -> list[dict[str, Any]]:
        return [e for e in read_events(events)[rollout["quiet"]:] if e.get("schema") == "baseliner.anomaly/v1"
                and e["container"]["id"] == v2.id and any(str(rollout["c2"].port) in n["value"] for n in e["novel"])]

    (first, *_) = wait_for("the reverse shell's anomaly", hits, rollout["procs"], timeout=30)
    assert first["image"]["parent"] == V1 and first["baseline_state"] == "detecting"
    states = baseline_states(rollout["port"], rollout["env"])
    assert states.get(V2) == "detecting", states
