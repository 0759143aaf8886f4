"""Service configuration: defaults <- YAML file <- environment (``BASELINER_*``) <- command-line flags.

Every setting lives in one dataclass section below; ``docs/service.md`` lists them all.  The same name
works everywhere: ``grpc.listen`` in YAML is ``BASELINER_GRPC_LISTEN`` in the environment and
``--set grpc.listen=...`` (or the shortcut ``--listen``) on the command line.  Everything is checked at
start (:meth:`ServeConfig.validate`); problems are reported together with what to fix, as
:class:`baseliner.models.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from baseliner.models.errors import ConfigError

ENV_PREFIX = "BASELINER_"
IMAGE_KEYS = ("tag", "digest", "repository")


@dataclass
class GrpcConfig:
    listen: str = "127.0.0.1:50051"  # host:port; loopback by default
    max_message_bytes: int = 16 * 1024 * 1024
    max_batch_vectors: int = 10_000
    max_concurrent_streams: int = 256
    keepalive_time_seconds: float = 60.0
    keepalive_timeout_seconds: float = 20.0
    shutdown_grace_seconds: float = 10.0
    # Transport security and authentication (service/auth.py; docs/reliability.md)
    tls_cert_file: str = ""  # PEM server certificate (chain); with tls_key_file turns TLS on
    tls_key_file: str = ""
    tls_client_ca_file: str = ""  # PEM CA bundle: clients must present a certificate it signed (mutual TLS)
    allow_plaintext: bool = False  # listen without TLS on a non-loopback address (logged as a warning)
    sensor_tokens_file: str = ""  # lines "NODE TOKEN": a stream needs a token; it reports for NODE only
    admin_tokens_file: str = ""  # lines "TOKEN" (or "NAME TOKEN"): required for the Admin RPCs
    max_stream_idle_seconds: float = 300.0  # a stream with no message for this long is closed


@dataclass
class MetricsConfig:
    listen: str = "127.0.0.1:9464"  # host:port of the Prometheus endpoint; "" disables it
    max_images: int = 500  # distinct image label values; further images share "__other__"
    max_namespaces: int = 200
    max_nodes: int = 1000


@dataclass
class StateConfig:
    dir: str = ""  # state directory; "" keeps state in memory only
    save_interval_seconds: float = 60.0
    hmac_key: str = ""  # integrity key for state files (prefer hmac_key_file)
    hmac_key_file: str = ""
    wal: bool = True  # write-ahead log of applied batches (service/wal.py); needs dir; acks become durable
    wal_fsync: str = "batch"  # "batch" (fsync before each ack), "group" (every wal_group_ms), "off"
    wal_group_ms: float = 5.0


@dataclass
class PipelineConfig:
    image_key: str = "tag"  # "tag" (repository:tag), "digest" (repository@digest) or "repository"
    dedup_window_seconds: float = 300.0  # event time; repeats of an anomaly within it become one event
    recent_events: int = 1000  # anomaly events kept (with their vectors) for Admin.Feedback
    max_baselines: int = 10_000  # baselines held; vectors of further images are rejected (BASELINE_LIMIT)
    max_containers: int = 100_000  # containers tracked for start-up time and window order
    max_resident_baselines: int = 0  # >0 (with state.dir): least recently used baselines beyond it spill to disk


@dataclass
class EventsConfig:
    output: str = "-"  # "-" or "stdout", a file path (appended), or "none"


@dataclass
class FalcoConfig:
    """Falco alerts in (``service/falco_http.py``), correlation (``service/falco.py``), Falcosidekick out."""

    listen: str = ""  # host:port of the alert endpoint; "" = off (e.g. 127.0.0.1:2802 to enable)
    max_body_bytes: int = 64 * 1024  # larger payloads get 413
    correlation_window_seconds: float = 120.0  # an alert within this of an anomaly's windows coincides
    max_containers: int = 10_000  # containers whose recent alerts and anomalies are remembered
    per_container: int = 32  # recent alerts and anomalies remembered per container
    max_rules: int = 200  # distinct rule label values; further rules share "__other__"
    sidekick_url: str = ""  # Falcosidekick (or any Falco-format webhook) receiving anomaly events; "" = off
    sidekick_timeout_seconds: float = 5.0
    sidekick_queue: int = 1000  # events waiting to be posted; further ones are dropped and counted
    # Authentication of Falco's http_output (service/auth.py): a secret in the URL and/or a client certificate
    secret_file: str = ""  # file holding a secret: alerts must be POSTed to /falco/SECRET (or ?secret=SECRET)
    tls_cert_file: str = ""  # PEM certificate and key: the endpoint speaks HTTPS
    tls_key_file: str = ""
    tls_client_ca_file: str = ""  # PEM CA: Falco must present a client certificate it signed (mutual TLS)

    def problems(self) -> list[str]:
        out: list[str] = []
        if self.listen:
            try:
                split_address(self.listen)
            except ValueError as e:
                out.append(f"falco.listen: {e}")
        for name in ("max_body_bytes", "max_containers", "per_container", "max_rules", "sidekick_queue"):
            if getattr(self, name) < 1:
                out.append(f"falco.{name} must be >= 1 (got {getattr(self, name)})")
        if not self.correlation_window_seconds >= 0:
            out.append("falco.correlation_window_seconds must be >= 0")
        if not self.sidekick_timeout_seconds > 0:
            out.append("falco.sidekick_timeout_seconds must be > 0")
        if self.sidekick_url and not self.sidekick_url.startswith(("http://", "https://")):
            out.append(f"falco.sidekick_url must be an http:// or https:// URL (got {self.sidekick_url!r})")
        return out


@dataclass
class ModelConfig:
    """A registered MLflow model as the template for new baselines (service/model_source.py, docs/mlflow.md)."""

    uri: str = ""  # models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN/PATH or a local path; "" = none
    tracking_uri: str = ""  # MLflow tracking server; "" = MLFLOW_TRACKING_URI (needed for models:/ and runs:/)
    registry_uri: str = ""  # MLflow model registry; "" = MLFLOW_REGISTRY_URI, else the tracking server
    relearn_on_reload: bool = False  # on reload every image restarts from the new model (default: new images)
    timeout_seconds: float = 10.0  # how long to wait for the tracking server to answer


SECTIONS: dict[str, type] = {
    "grpc": GrpcConfig,
    "metrics": MetricsConfig,
    "state": StateConfig,
    "pipeline": PipelineConfig,
    "events": EventsConfig,
    "falco": FalcoConfig,
    "model": ModelConfig,
}


@dataclass
class ServeConfig:
    grpc: GrpcConfig = field(default_factory=GrpcConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    state: StateConfig = field(default_factory=StateConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    falco: FalcoConfig = field(default_factory=FalcoConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    baseline: dict[str, Any] = field(default_factory=dict)  # baseliner.models.baseline.BaselineConfig fields
    log_level: str = "INFO"

    # -- checks -------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`ConfigError` listing every problem."""
        problems: list[str] = []
        for name, value in (("grpc.listen", self.grpc.listen), ("metrics.listen", self.metrics.listen)):
            if name == "metrics.listen" and value == "":
                continue
            try:
                split_address(value)
            except ValueError as e:
                problems.append(f"{name}: {e}")
        positive_ints = {
            "grpc.max_message_bytes": self.grpc.max_message_bytes,
            "grpc.max_batch_vectors": self.grpc.max_batch_vectors,
            "grpc.max_concurrent_streams": self.grpc.max_concurrent_streams,
            "metrics.max_images": self.metrics.max_images,
            "metrics.max_namespaces": self.metrics.max_namespaces,
            "metrics.max_nodes": self.metrics.max_nodes,
            "pipeline.recent_events": self.pipeline.recent_events,
            "pipeline.max_baselines": self.pipeline.max_baselines,
            "pipeline.max_containers": self.pipeline.max_containers,
        }
        for name, v in positive_ints.items():
            if v < 1:
                problems.append(f"{name} must be >= 1 (got {v})")
        if self.grpc.max_message_bytes < 64 * 1024:
            problems.append("grpc.max_message_bytes must be at least 65536")
        for name, f in (
            ("grpc.keepalive_time_seconds", self.grpc.keepalive_time_seconds),
            ("grpc.keepalive_timeout_seconds", self.grpc.keepalive_timeout_seconds),
            ("state.save_interval_seconds", self.state.save_interval_seconds),
        ):
            if not f > 0:
                problems.append(f"{name} must be > 0 (got {f})")
        if self.grpc.shutdown_grace_seconds < 0:
            problems.append("grpc.shutdown_grace_seconds must be >= 0")
        if self.pipeline.dedup_window_seconds < 0:
            problems.append("pipeline.dedup_window_seconds must be >= 0")
        problems.extend(self.falco.problems())
        if not self.model.timeout_seconds > 0:
            problems.append(f"model.timeout_seconds must be > 0 (got {self.model.timeout_seconds})")
        from baseliner.service.auth import config_problems  # TLS, tokens, WAL policy: checked where they are used

        problems.extend(config_problems(self))
        if self.pipeline.image_key not in IMAGE_KEYS:
            problems.append(
                f"pipeline.image_key must be one of {', '.join(IMAGE_KEYS)} (got {self.pipeline.image_key!r})"
            )
        if self.state.hmac_key and self.state.hmac_key_file:
            problems.append("state.hmac_key and state.hmac_key_file are both set: use one")
        if self.state.hmac_key_file and not Path(self.state.hmac_key_file).is_file():
            problems.append(f"state.hmac_key_file {self.state.hmac_key_file!r} is not a readable file")
        if self.state.dir:
            p = Path(self.state.dir)
            if p.exists() and not p.is_dir():
                problems.append(f"state.dir {self.state.dir!r} exists and is not a directory")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            problems.append(f"log_level must be DEBUG, INFO, WARNING, ERROR or CRITICAL (got {self.log_level!r})")
        try:
            self.baseline_config()
        except (ValueError, TypeError) as e:
            problems.append(f"baseline: {e}")
        except ImportError as e:  # baseliner.models.baseline not importable: say so, do not hide it
            problems.append(f"baseline: cannot load baseliner.models.baseline ({e})")
        if problems:
            raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))

    def baseline_config(self) -> Any:
        from baseliner.models.baseline import BaselineConfig

        known = {f.name for f in dataclasses.fields(BaselineConfig)}
        unknown = sorted(set(self.baseline) - known)
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return BaselineConfig.from_dict(dict(self.baseline))

    def hmac_key_bytes(self) -> bytes | None:
        if self.state.hmac_key_file:
            key = Path(self.state.hmac_key_file).read_bytes().strip()
        else:
            key = self.state.hmac_key.encode()
        return key or None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["state"]["hmac_key"]:
            d["state"]["hmac_key"] = "***"
        return d


def split_address(addr: str) -> tuple[str, int]:
    """``"127.0.0.1:50051"`` -> ``("127.0.0.1", 50051)``; ``"[::1]:9464"`` works too.

    >>> split_address("[::1]:9464")
    ('::1', 9464)
    """
    host, sep, port = addr.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{addr!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        p = int(port)
    except ValueError:
        raise ValueError(f"{addr!r}: port {port!r} is not a number") from None
    if not 0 <= p <= 65535:
        raise ValueError(f"{addr!r}: port {p} out of range")
    return host, p


# --------------------------------------------------------------------------------------------------
# Loading


def _coerce(value: Any, typ: Any, where: str) -> Any:
    """Convert a YAML/env/flag value to the field's type (strings are parsed)."""
    t = typ if isinstance(typ, type) else {"int": int, "float": float, "str": str, "bool": bool}.get(str(typ))
    if t is None:
        return value
    if t is bool:
        if isinstance(value, bool):
            return value
        s = str(value).strip().lower()
        if s in ("1", "true", "yes", "on"):
            return True
        if s in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: {value!r} is not a boolean")
    if t is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: {value!r} is not an integer")
        try:
            return int(str(value).replace("_", ""))
        except ValueError:
            raise ConfigError(f"{where}: {value!r} is not an integer") from None
    if t is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: {value!r} is not a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {value!r} is not a number") from None
    if t is str:
        if isinstance(value, dict | list):
            raise ConfigError(f"{where}: expected a string")
        return "" if value is None else str(value)
    return value


def _baseline_types() -> dict[str, Any]:
    try:
        from baseliner.models.baseline import BaselineConfig
    except ImportError:
        return {}
    return {f.name: f.type for f in dataclasses.fields(BaselineConfig)}


def apply(cfg: ServeConfig, key: str, value: Any, where: str) -> None:
    """Set ``section.field`` (or a top-level field) from ``value``."""
    section, _, name = key.partition(".")
    if not name:
        if section == "log_level":
            cfg.log_level = _coerce(value, str, where)
            return
        raise ConfigError(f"{where}: unknown setting {key!r}")
    if section == "baseline":
        types = _baseline_types()
        cfg.baseline[name] = _coerce(value, types[name], where) if name in types else value
        return
    cls = SECTIONS.get(section)
    if cls is None:
        raise ConfigError(f"{where}: unknown section {section!r} (sections: {', '.join([*SECTIONS, 'baseline'])})")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields:
        raise ConfigError(f"{where}: unknown setting {key!r} (known in {section}: {', '.join(fields)})")
    setattr(getattr(cfg, section), name, _coerce(value, fields[name].type, where))


def from_mapping(cfg: ServeConfig, data: Mapping[str, Any], where: str) -> None:
    for top, value in data.items():
        if isinstance(value, Mapping) and not (top in SECTIONS or top == "baseline"):
            raise ConfigError(
                f"{where}: unknown section {top!r} (sections: {', '.join([*SECTIONS, 'baseline'])})"
            )
        if isinstance(value, Mapping):
            for k, v in value.items():
                apply(cfg, f"{top}.{k}", v, f"{where}: {top}.{k}")
        else:
            apply(cfg, str(top), value, f"{where}: {top}")


def from_env(cfg: ServeConfig, environ: Mapping[str, str]) -> None:
    sections = [*SECTIONS, "baseline"]
    for var, value in environ.items():
        if not var.startswith(ENV_PREFIX) or var == f"{ENV_PREFIX}CONFIG":
            continue
        rest = var[len(ENV_PREFIX):].lower()
        if rest == "log_level":
            apply(cfg, "log_level", value, f"environment {var}")
            continue
        for s in sections:
            if rest.startswith(s + "_"):
                apply(cfg, f"{s}.{rest[len(s) + 1:]}", value, f"environment {var}")
                break
        # other BASELINER_* variables belong to other tools (bootstrap, sensor) and are ignored


def load(
    path: str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Sequence[tuple[str, Any]] = (),
    validate: bool = True,
) -> ServeConfig:
    """Build and check the configuration. ``overrides`` are ``(key, value)`` pairs from flags."""
    environ = os.environ if environ is None else environ
    cfg = ServeConfig()
    path = path or environ.get(f"{ENV_PREFIX}CONFIG") or None
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read configuration file {path}: {e.strerror}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"configuration file {path} is not valid YAML: {e}") from None
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"configuration file {path} must hold a mapping of sections")
        from_mapping(cfg, data, path)
    from_env(cfg, environ)
    for key, value in overrides:
        apply(cfg, key, value, f"flag {key}")
    if validate:
        cfg.validate()
    return cfg
