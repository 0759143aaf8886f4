"""Configuration: YAML <- environment <- flags, validated at start with clear errors; CLI dispatch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from baseliner.models.errors import ConfigError
from baseliner.service.config import load

REPO = Path(__file__).resolve().parents[1]


def test_precedence_yaml_env_flags(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(
        "grpc:\n  listen: 127.0.0.1:6000\n  max_batch_vectors: 500\n"
        "pipeline:\n  image_key: digest\n  dedup_window_seconds: 60\n"
        "baseline:\n  min_learn_windows: 30\n  false_alarms_per_day: 0.5\n"
        "log_level: DEBUG\n"
    )
    env = {"BASELINER_GRPC_MAX_BATCH_VECTORS": "800", "BASELINER_BASELINE_MIN_LEARN_WINDOWS": "40",
           "BASELINER_NO_APT": "1"}
    cfg = load(str(f), environ=env, overrides=[("grpc.max_batch_vectors", "900")])
    assert cfg.grpc.listen == "127.0.0.1:6000"
    assert cfg.grpc.max_batch_vectors == 900
    assert cfg.pipeline.image_key == "digest" and cfg.pipeline.dedup_window_seconds == 60.0
    b = cfg.baseline_config()
    assert b.min_learn_windows == 40 and b.false_alarms_per_day == 0.5
    assert cfg.log_level == "DEBUG"
    defaults = load(None, environ={})
    assert defaults.grpc.listen.startswith("127.0.0.1:") and defaults.metrics.listen.startswith("127.0.0.1:")


@pytest.mark.parametrize(
    ("yaml_text", "env", "message"),
    [
        ("grpc:\n  listen: nowhere\n", {}, "grpc.listen: 'nowhere' is not host:port"),
        ("grpc:\n  lisen: 1.2.3.4:5\n", {}, "unknown setting 'grpc.lisen'"),
        ("grcp:\n  listen: 1.2.3.4:5\n", {}, "unknown section 'grcp'"),
        ("pipeline:\n  image_key: sha\n", {}, "pipeline.image_key: Input should be 'tag', 'digest' or 'repository'"),
        ("", {"BASELINER_GRPC_MAX_BATCH_VECTORS": "lots"},
         "environment BASELINER_GRPC_MAX_BATCH_VECTORS: grpc.max_batch_vectors: Input should be a valid integer"),
        ("baseline:\n  min_learn_windows: 2\n", {}, "min_learn_windows must be >= 10"),
        ("baseline:\n  windows: 2\n", {}, "baseline: unknown setting(s) windows"),
        ("state:\n  hmac_key_file: /nonexistent/key\n", {}, "is not a readable file"),
        ("- a\n- b\n", {}, "must hold a mapping"),
        ("grpc: [\n", {}, "not valid YAML"),
    ],
)
def test_invalid_configuration_is_refused_with_what_to_fix(
    tmp_path: Path, yaml_text: str, env: dict[str, str], message: str
) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(yaml_text)
    with pytest.raises(ConfigError) as e:
        load(str(f), environ=env)
    assert message in str(e.value)


def test_all_problems_are_reported_together_one_line_each_with_where_the_value_came_from(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("grpc:\n  max_concurrent_streams: 0\n  tls_cert_file: /nonexistent/cert.pem\n")
    with pytest.raises(ConfigError) as e:
        load(str(f), environ={"BASELINER_PIPELINE_RECENT_EVENTS": "none"},
             overrides=[("state.wal_fsync", "sometimes"), ("events.output", str(tmp_path / "no" / "events.jsonl"))])
    assert str(e.value).splitlines() == [
        "invalid configuration:",
        f"  - {f}: grpc.max_concurrent_streams: Input should be greater than or equal to 1 (got 0)",
        "  - flag state.wal_fsync: state.wal_fsync: Input should be 'batch', 'group' or 'off' (got 'sometimes')",
        "  - environment BASELINER_PIPELINE_RECENT_EVENTS: pipeline.recent_events: Input should be a valid integer, "
        "unable to parse string as an integer (got 'none')",
        "  - grpc.tls_cert_file and grpc.tls_key_file go together",
        "  - grpc.tls_cert_file '/nonexistent/cert.pem' is not a readable file",
        f"  - events.output '{tmp_path}/no/events.jsonl': directory '{tmp_path}/no' does not exist",
    ]


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("events.output", "{tmp}/missing/events.jsonl", "events.output '{tmp}/missing/events.jsonl': directory "
                                                         "'{tmp}/missing' does not exist"),
        ("events.output", "{tmp}", "events.output '{tmp}' is a directory: name a file in it"),
        ("state.dir", "{tmp}/file/state", "state.dir '{tmp}/file/state': '{tmp}/file' is not a directory"),
        ("state.hmac_key_file", "{tmp}/missing.key", "state.hmac_key_file '{tmp}/missing.key' is not a readable file"),
        ("falco.secret_file", "{tmp}", "falco.secret_file '{tmp}' is not a readable file"),
    ],
)
def test_file_and_directory_settings_are_checked_at_start(tmp_path: Path, setting: str, value: str,
                                                          message: str) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError) as e:
        load(None, environ={}, overrides=[(setting, value.format(tmp=tmp_path))])
    assert message.format(tmp=tmp_path) in str(e.value)
    assert load(None, environ={}, overrides=[("state.dir", str(tmp_path / "new" / "state"))])  # may be made


def test_cli_serve_with_events_in_a_missing_directory_says_so_without_a_traceback(tmp_path: Path) -> None:
    """Issue 16: ``--events /var/log/baseliner/events.jsonl`` crashed with FileNotFoundError when the directory
    did not exist."""
    events = tmp_path / "log" / "baseliner" / "events.jsonl"
    r = subprocess.run([sys.executable, "-m", "baseliner.service.cli", "serve", "--listen", "127.0.0.1:0",
                        "--metrics-listen", "", "--events", str(events)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.splitlines() == ["baseliner serve: invalid configuration:",
                                     f"  - events.output '{events}': directory '{events.parent}' does not exist"]
