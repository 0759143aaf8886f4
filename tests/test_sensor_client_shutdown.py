"""``baseliner sensor`` ends cleanly, as a real process: when its source has ended and the service stays
unreachable, on SIGTERM or SIGINT at any point (a bounded drain, then what is not acknowledged is spooled or
reported dropped; a second signal ends the drain), and against a service of another wire schema version."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from baseliner.models.integrity import new_key
from baseliner.protos.v1 import admin_pb2, admin_pb2_grpc

BIN = Path(sys.executable).parent / "baseliner"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_process_left() -> Iterator[None]:
    """Whatever a test leaves running (it failed half-way) is killed."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class _Process:
    """A process whose stderr is read as it comes (to wait for a line before acting)."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _STARTED.append(self.proc)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def err(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, text: str, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        while text not in self.err:
            assert self.proc.poll() is None, f"exited {self.proc.returncode} before {text!r}:\n{self.err[-3000:]}"
            assert time.monotonic() < end, f"no {text!r} within {timeout}s:\n{self.err[-3000:]}"
            time.sleep(0.05)

    def ends_within(self, seconds: float) -> int:
        """The exit code, once the process has ended within ``seconds`` (killed and failed otherwise)."""
        try:
            code = self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"still running after {seconds}s:\n{self.err[-3000:]}") from None
        self._reader.join(timeout=5)
        return code


def _sensor(target: str, *extra: str, python: list[str] | None = None) -> _Process:
    cmd = python or [str(BIN)]
    return _Process([*cmd, "sensor", "--source", "synthetic", "--no-attacks", "--target", target, "--node", "n1",
                     "--backoff-max", "0.5", *extra])


def test_a_sensor_whose_source_ended_gives_up_on_an_unreachable_service() -> None:
    sensor = _sensor(f"127.0.0.1:{_free_port()}", "--hours", "0.05", "--give-up-after", "2")
    sensor.wait_for_line("source finished")
    t0 = time.monotonic()
    assert sensor.ends_within(30) == 1
    assert time.monotonic() - t0 < 15
    assert "giving up after 2s without one" in sensor.err
    assert "not acknowledged: dropped (--spool-dir keeps them across restarts)" in sensor.err


def test_sigterm_while_waiting_for_an_unreachable_service_drains_for_a_bounded_time() -> None:
    sensor = _sensor(f"127.0.0.1:{_free_port()}", "--hours", "0.05", "--drain-timeout", "1")
    sensor.wait_for_line("source finished")
    time.sleep(0.5)
    t0 = time.monotonic()
    sensor.proc.send_signal(signal.SIGTERM)
    assert sensor.ends_within(30) == 1
    assert time.monotonic() - t0 < 10
    assert "signal received: sending what is buffered (up to 1s" in sensor.err
    assert "not acknowledged: dropped" in sensor.err


def test_sigint_while_the_source_waits_for_room_in_a_full_buffer() -> None:
    """The replay waits for room (``--on-full block``) that only acknowledgements make: a signal ends it."""
    sensor = _sensor(f"127.0.0.1:{_free_port()}", "--hours", "2", "--batch-size", "10", "--buffer-batches", "2",
                     "--drain-timeout", "1")
    sensor.wait_for_line("retrying")
    time.sleep(0.5)
    t0 = time.monotonic()
    sensor.proc.send_signal(signal.SIGINT)
    assert sensor.ends_within(30) == 1
    assert time.monotonic() - t0 < 10
    assert "signal received" in sensor.err and "not acknowledged: dropped" in sensor.err
    assert "Traceback" not in sensor.err


def test_a_second_signal_ends_the_drain_at_once() -> None:
    sensor = _sensor(f"127.0.0.1:{_free_port()}", "--hours", "0.05", "--drain-timeout", "600")
    sensor.wait_for_line("source finished")
    sensor.proc.send_signal(signal.SIGTERM)
    sensor.wait_for_line("signal received")
    t0 = time.monotonic()
    sensor.proc.send_signal(signal.SIGTERM)
    assert sensor.ends_within(30) == 1
    assert time.monotonic() - t0 < 10
    assert "second signal: not waiting for the remaining acknowledgements" in sensor.err


def _scored(port: int) -> int:
    import asyncio

    async def ask() -> int:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            resp = await admin_pb2_grpc.AdminStub(ch).ListBaselines(admin_pb2.ListBaselinesRequest())
            return sum(b.windows_scored for b in resp.baselines)

    return asyncio.run(ask())


def _serve(port: int) -> _Process:
    serve = _Process([str(BIN), "serve", "--listen", f"127.0.0.1:{port}", "--metrics-listen", "", "--events", "none"])
    serve.wait_for_line("serving gRPC on")
    return serve


def test_what_a_sensor_gave_up_on_stays_in_its_spool_and_goes_out_with_the_next_start(tmp_path: Path) -> None:
    port = _free_port()
    spool = tmp_path / "spool"
    keys = tmp_path / "spool.keys"
    keys.write_text(new_key() + "\n")
    spooled = ("--spool-dir", str(spool), "--spool-key-file", str(keys))
    first = _sensor(f"127.0.0.1:{port}", "--hours", "0.05", "--give-up-after", "1", *spooled)
    assert first.ends_within(60) == 1
    assert f"not acknowledged: kept in the spool {spool}, sent when the sensor starts again" in first.err
    held = len(list(spool.rglob("*.batch")))  # (no shard map came: in the spool's _unrouted directory)
    assert held > 0
    serve = _serve(port)
    try:
        later = str(1_767_225_600 + 180)  # the second run's windows follow the first's
        second = _sensor(f"127.0.0.1:{port}", "--hours", "0.05", "--start", later, *spooled)
        assert second.ends_within(60) == 0, second.err[-3000:]
        assert not list(spool.rglob("*.batch"))
        assert "288 vectors applied, 0 rejected, 0 dropped" in second.err
        assert _scored(port) == 2 * 18 * 8  # both runs' windows (18 rounds of 8 containers each), once
    finally:
        serve.proc.terminate()
        serve.ends_within(30)


def test_a_sensor_of_another_schema_version_stops_at_once_and_says_why() -> None:
    """A sensor built for schema version 4 against this service (version 3): refused at its Hello with both
    versions named; the sensor does not retry, and ends."""
    port = _free_port()
    serve = _serve(port)
    try:
        newer = [sys.executable, "-c", "import sys; import baseliner.protos.v1.schema as s; s.SCHEMA_VERSION = 4; "
                 "from baseliner.service.cli import main; sys.exit(main(sys.argv[1:]))"]
        sensor = _sensor(f"127.0.0.1:{port}", "--hours", "0.05", python=newer)
        assert sensor.ends_within(30) == 1
        assert "schema version 4 is not supported: this service reads schema version 3" in sensor.err
        assert "not retrying" in sensor.err and "retrying in" not in sensor.err
        assert "Traceback" not in sensor.err
        assert "schema version 4 is not supported" in serve.err  # the service says so too
        assert _scored(port) == 0
    finally:
        serve.proc.terminate()
        serve.ends_within(30)
