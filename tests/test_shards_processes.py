"""Three ``baseliner serve`` shards and three sensors, real processes on loopback (``docs/sharding.md``).

* every image's state after a run equals the state one unsharded service reaches on the same input (the saved
  state files, field by field; the Admin API's view of each; the anomalies' event ids);
* admin calls (get, mode, feedback) and Falco alerts sent to a shard that does not hold the image reach the one
  that does; a list at any shard names every shard's baselines;
* ``kill -9`` of one shard mid-stream: the other shards keep applying, the killed shard's images resume from
  its log and the sensors' spools, and every image ends with the state of a run without the kill (a window
  lost or applied twice changes its counts); the anomalies' event ids are the same set;
* resize 2 -> 3 -> 2 while the sensors stream: moved baselines keep their learnt state, nothing is lost or
  applied twice (the same comparison with an unsharded run).
"""

from __future__ import annotations

import json
import re
import signal
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from baseliner.models.shards import routing_key_of_image_key
from baseliner.protos.v1 import admin_pb2, admin_pb2_grpc

from tests.reliability_procs import ServeProcess
from tests.shard_procs import (
    LEARNING,
    NODES,
    Shard,
    anomaly_ids,
    close,
    detail,
    file_states,
    listed,
    make_inputs,
    same_state,
    sensor,
    shard_list,
    start_shards,
    statuses,
    wait_for,
)

pytestmark = pytest.mark.slow

HOURS = 12.0  # long enough for baselines to finish learning and to flag windows
#: One window per batch and one batch in flight per stream: each image (fed by one sensor) then meets the
#: service one window per block in every run, sharded or not, so its state is comparable bit for bit (a block's
#: windows are scored against the state at its start: docs/sharding.md).
#: A leaving shard waits this long for its images to be pulled and its sensors' streams to end (this machine is
#: shared and slow; one window per batch makes a leaving shard's backlog long).
HANDOVER = ("--set", "shards.handover_timeout_seconds=300")
PACED = ("--max-in-flight", "1", "--speed", "1000000000")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_inputs(tmp_path_factory.mktemp("inputs"), HOURS)


@pytest.fixture(scope="module")
def reference(inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One unsharded service fed the same recordings: its saved states, its Admin view, its anomalies."""
    root = tmp_path_factory.mktemp("single")
    events = root / "events.jsonl"
    serve = ServeProcess(root / "state", extra=["--events", str(events), *LEARNING]).start()
    try:
        run_sensors(root, [serve.target] * len(NODES), inputs)
        keys = sorted(b.key for b in listed(serve.target)[0])
        assert len(keys) >= 9
        details = {k: detail(serve.target, k) for k in keys}
    finally:
        assert serve.stop() == 0
    out = {"files": file_states([root / "state"]), "details": details, "anomalies": anomaly_ids([events])}
    assert sum(map(len, out["anomalies"].values())) > 0
    return out


def run_sensors(root: Path, targets: list[str], inputs: dict[str, Path], extra: tuple[str, ...] = PACED,
                timeout: float = 600) -> None:
    """One sensor per recording (each given its own seed address); every one must deliver everything."""
    procs = {n: sensor(targets[i], inputs[n], n, root / f"sensor-{n}.log", extra) for i, n in enumerate(NODES)}
    for n, p in procs.items():
        try:
            assert p.wait(timeout) == 0, (root / f"sensor-{n}.log").read_text()[-3000:]
        finally:
            if p.poll() is None:
                p.kill()


def events_of(shards: dict[str, Shard]) -> list[Path]:
    return [s.state_dir.parent / f"events-{n}.jsonl" for n, s in shards.items()]


def start(root: Path, names: list[str]) -> tuple[dict[str, Shard], Path]:
    return start_shards(root, names)


def compare_with_reference(reference: dict[str, Any], got_files: dict[str, Any], got_anomalies: dict[str, set[str]],
                           changed: str = "") -> None:
    """Same image keys, same saved state of each (but ``changed``, which an admin call changed on purpose), same
    anomalous windows."""
    ref = reference["files"]
    assert sorted(got_files) == sorted(ref)
    diffs = {k: d for k in ref if k != changed and (d := same_state(ref[k], got_files[k]))}
    assert not diffs, diffs
    want = {k: v for k, v in reference["anomalies"].items() if k != changed}
    assert {k: v for k, v in got_anomalies.items() if k != changed} == want


def falco_port(shard: Shard) -> int:
    m = re.findall(r"Falco alert endpoint on http://127\.0\.0\.1:(\d+)/", shard.log())
    assert m, shard.log()[-2000:]
    return int(m[-1])


def post_alert(port: int, alert: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/falco", data=json.dumps(alert).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_three_shards_reach_one_services_state_and_any_shard_answers(
        inputs: dict[str, Path], reference: dict[str, Any], tmp_path: Path) -> None:
    shards, _ = start(tmp_path, ["s0", "s1", "s2"])
    targets = [s.target for s in shards.values()]
    try:
        run_sensors(tmp_path, targets, inputs)  # each sensor asks a different shard for the map
        for t in targets:  # any shard lists every shard's baselines, each once, with its holder
            got, unavailable = listed(t)
            assert not unavailable
            assert sorted(b.key for b in got) == sorted(reference["details"])
        holders = {b.key: b.shard for b in listed(targets[0])[0]}
        assert len(set(holders.values())) == 3, holders  # every shard holds some images
        for key, want in reference["details"].items():
            asker = next(s for n, s in shards.items() if n != holders[key])  # a shard that does not hold it
            got = detail(asker.target, key)
            assert close(got, want), (key, {k: (got[k], want[k]) for k in got if not close(got[k], want[k])})
        changed = _admin_and_falco_reach_the_holder(shards, holders, reference)
    finally:
        for s in shards.values():
            assert s.stop() == 0
    files = file_states([s.state_dir for s in shards.values()])
    compare_with_reference(reference, files, anomaly_ids(events_of(shards)), changed)


def _admin_and_falco_reach_the_holder(shards: dict[str, Shard], holders: dict[str, str],
                                      reference: dict[str, Any]) -> str:
    """Mode and feedback through a shard that does not hold the image; an alert about it to that shard's Falco
    endpoint.  Returns the image key changed."""
    key = next(k for k, ids in sorted(reference["anomalies"].items()) if ids)  # an image with an anomaly
    holder = shards[holders[key]]
    other = next(s for n, s in shards.items() if n != holders[key])
    with grpc.insecure_channel(other.target) as ch:
        stub = admin_pb2_grpc.AdminStub(ch)
        got = stub.SetMode(admin_pb2.SetModeRequest(key=key, mode=admin_pb2.MODE_FREEZE), timeout=30)
        assert got.shard == holders[key] and got.mode == admin_pb2.MODE_FREEZE
        event_id = sorted(reference["anomalies"][key])[0]
        fb = stub.Feedback(admin_pb2.FeedbackRequest(event_id=event_id, comment="expected"), timeout=30)
        assert fb.baseline.shard == holders[key]
    with grpc.insecure_channel(holder.target) as ch:
        assert admin_pb2_grpc.AdminStub(ch).GetBaseline(
            admin_pb2.GetBaselineRequest(key=key), timeout=30).mode == admin_pb2.MODE_FREEZE
    events = [json.loads(line) for line in (holder.state_dir.parent / f"events-{holder.name}.jsonl").read_text()
              .splitlines()]
    ev = next(e for e in events if e["image"]["key"] == key)
    assert ev["shard"] == holder.name  # events carry the shard
    alert = {"rule": "Terminal shell in container", "priority": "Notice", "time": ev["@timestamp"],
             "output": "shell", "output_fields": {
                 "container.id": ev["container"]["id"][:12], "container.image.repository": ev["image"]["repository"],
                 "container.image.tag": ev["image"]["tag"], "proc.name": "sh"}}
    status, answer = post_alert(falco_port(other), alert)  # to a shard that does not hold the image
    assert status == 200 and answer == {"accepted": True}, answer  # (the answer carries no baseline content)
    events_file = holder.state_dir.parent / f"events-{holder.name}.jsonl"

    def correlated() -> list[dict[str, Any]]:  # the holder correlated it with the image's baseline
        return [e for e in map(json.loads, events_file.read_text().splitlines())
                if e.get("schema") == "baseliner.falco/v1" and e["image"]["key"] == key]

    wait_for(lambda: bool(correlated()), 30, "the holder's Falco event")
    assert correlated()[0]["baseline"]["outcome"] != "no_baseline"
    assert routing_key_of_image_key(key) == ev["image"]["repository"]
    return key


def test_kill9_of_one_shard_mid_stream_loses_and_doubles_nothing(
        inputs: dict[str, Path], reference: dict[str, Any], tmp_path: Path) -> None:
    shards, _ = start(tmp_path, ["s0", "s1", "s2"])
    targets = [s.target for s in shards.values()]
    spool_keys = tmp_path / "spool.keys"
    spool_keys.write_text("shards-test-spool-key-0123456789abcdef\n")
    procs = {n: sensor(targets[i], inputs[n], n, tmp_path / f"sensor-{n}.log",
                       ("--spool-dir", str(tmp_path / f"spool-{n}"), "--spool-key-file", str(spool_keys),
                        "--max-in-flight", "1", "--speed", "2000"))
             for i, n in enumerate(NODES)}
    victim = shards["s1"]
    try:
        wait_for(lambda: sum(b.windows_scored for b in listed(targets[0])[0]) > 2000, 120, "streaming started")
        victim.kill9()
        others = [s.target for n, s in shards.items() if n != "s1"]
        before = {t: sum(b.windows_scored for b in listed(t)[0] if b.shard == _name(shards, t)) for t in others}
        wait_for(lambda: all(sum(b.windows_scored for b in listed(t)[0] if b.shard == _name(shards, t)) > before[t]
                             for t in others), 60, "the other shards kept applying while one was down")
        victim.start()
        for n, p in procs.items():
            assert p.wait(600) == 0, (tmp_path / f"sensor-{n}.log").read_text()[-3000:]
        log = "".join((tmp_path / f"sensor-{n}.log").read_text() for n in NODES)
        assert "resent" in log
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        for s in shards.values():
            s.stop()
    files = file_states([s.state_dir for s in shards.values()])
    compare_with_reference(reference, files, anomaly_ids(events_of(shards)))


def _name(shards: dict[str, Shard], target: str) -> str:
    return next(n for n, s in shards.items() if s.target == target)


def test_resize_2_3_2_while_streaming_keeps_every_baseline(
        inputs: dict[str, Path], reference: dict[str, Any], tmp_path: Path) -> None:
    shards, list_file = start_shards(tmp_path, ["s0", "s1"], HANDOVER)
    third = Shard(tmp_path, "s2", _free(), list_file, HANDOVER)
    seeds = [shards["s0"].target, shards["s1"].target, shards["s0"].target]
    procs = {n: sensor(seeds[i], inputs[n], n, tmp_path / f"sensor-{n}.log", ("--max-in-flight", "1", "--speed", "700"))
             for i, n in enumerate(NODES)}
    try:
        wait_for(lambda: sum(b.windows_scored for b in listed(seeds[0])[0]) > 1000, 120, "streaming started")
        third.start()
        shards["s2"] = third
        list_file.write_text(shard_list({n: s.port for n, s in shards.items()}))  # 2 -> 3
        wait_for(lambda: _settled_on(shards, 2), 120, "three shards settled on map epoch 2")
        assert any(b.shard == "s2" for b in listed(seeds[0])[0]), "no image moved to the new shard"
        list_file.write_text(shard_list({n: s.port for n, s in shards.items() if n != "s1"}))  # 3 -> 2
        wait_for(lambda: _settled_on({n: s for n, s in shards.items() if n != "s1"}, 3), 120,
                 "two shards settled on map epoch 3")
        assert shards["s1"].stop(timeout=300) == 0  # drains: its images pulled, the sensors' streams to it closed
        assert "routing keys not pulled" not in shards["s1"].log() and "streams still open" not in shards["s1"].log()
        assert not any(b.shard == "s1" for b in listed(seeds[0])[0])
        for n, p in procs.items():
            assert p.wait(600) == 0, (tmp_path / f"sensor-{n}.log").read_text()[-3000:]
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
        for s in shards.values():
            s.stop()
    files = file_states([s.state_dir for s in shards.values()])
    compare_with_reference(reference, files, anomaly_ids(events_of(shards)))


def _settled_on(shards: dict[str, Shard], epoch: int) -> bool:
    """Every shard of ``shards`` is a member of map ``epoch`` (or a later one) and holds every image it owns."""
    try:
        st = statuses([s.target for s in shards.values()])
    except grpc.RpcError:
        return False
    return len({s.epoch for s in st}) == 1 and all(s.settled and s.member and s.epoch >= epoch for s in st)


def _free() -> int:
    from tests.reliability_procs import free_port

    return free_port()
