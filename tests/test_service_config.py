"""Configuration: YAML <- environment <- flags, validated at start with clear errors; CLI dispatch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from baseliner.models.errors import ConfigError
from baseliner.service import cli
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
        ("pipeline:\n  image_key: sha\n", {}, "pipeline.image_key must be one of"),
        ("", {"BASELINER_GRPC_MAX_BATCH_VECTORS": "lots"}, "is not an integer"),
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


def test_all_problems_are_reported_together() -> None:
    with pytest.raises(ConfigError) as e:
        load(None, environ={}, overrides=[("grpc.max_concurrent_streams", "0"), ("pipeline.recent_events", "0")])
    assert "grpc.max_concurrent_streams" in str(e.value) and "pipeline.recent_events" in str(e.value)


def test_cli_serve_reports_bad_config_and_missing_modules_clearly(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "baseliner.service.cli", "serve", "--listen", "bad"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "grpc.listen: 'bad' is not host:port" in r.stderr
    r = subprocess.run([sys.executable, "-m", "baseliner.service.cli", "serve", "--print-config", "--set",
                        "baseline.min_learn_windows=99"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "min_learn_windows: 99" in r.stdout
    # every subcommand is listed
    r = subprocess.run([sys.executable, "-m", "baseliner.service.cli", "--help"], cwd=REPO, capture_output=True,
                       text=True,
                       timeout=60)
    for name in ("serve", "sensor", "demo", "evaluate", "admin"):
        assert f"    {name} " in r.stdout, name
    # a subcommand whose module is missing or broken says so when run, and the others still work
    mod, err = cli._load(("nope.cli",))
    assert mod is None and isinstance(err, ModuleNotFoundError)
    cli.PLUGINS["broken"] = (("nope.cli", "service.nope"), "test")
    try:
        assert cli.main(["broken", "x"]) == 2
        assert cli.main(["serve", "--print-config"]) == 0
    finally:
        del cli.PLUGINS["broken"]
