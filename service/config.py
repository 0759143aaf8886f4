"""Service configuration: defaults <- YAML file <- environment (``BASELINER_*``) <- command-line flags.

Every setting lives in one section model below; ``docs/service.md`` lists them all.  The same name
works everywhere: ``grpc.listen`` in YAML is ``BASELINER_GRPC_LISTEN`` in the environment and
``--set grpc.listen=...`` (or the shortcut ``--listen``) on the command line.  Everything is checked at
start: types and ranges by pydantic, the rest by the named checks below; every problem is reported,
one line each with the source of the value, as :class:`baseliner.models.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from baseliner.models.errors import ConfigError
from baseliner.models.integrity import Keyring
from baseliner.models.signatures import TrustedKeys
from baseliner.service.auth import is_loopback, read_secret, read_sensor_tokens, read_token_file
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

ENV_PREFIX = "BASELINER_"


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


def _address(value: str) -> str:
    if value:
        split_address(value)
    return value


def _http_url(value: str) -> str:
    if value and not value.startswith(("http://", "https://")):
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    return value


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


Address = Annotated[str, AfterValidator(_address)]  # host:port ("" where it means off)
Count = Annotated[int, Field(ge=1)]
Seconds = Annotated[float, Field(gt=0)]
Wait = Annotated[float, Field(ge=0)]


#: When the write-ahead log syncs to disk (``service/wal.py``): before each ack, every group_ms, never.
FsyncPolicy = Literal["batch", "group", "off"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class GrpcConfig(_Section):
    listen: Address = "127.0.0.1:50051"  # host:port; loopback by default
    max_message_bytes: Annotated[int, Field(ge=64 * 1024)] = 16 * 1024 * 1024
    max_batch_vectors: Count = 10_000
    max_concurrent_streams: Count = 256
    keepalive_time_seconds: Seconds = 60.0
    keepalive_timeout_seconds: Seconds = 20.0
    shutdown_grace_seconds: Wait = 10.0
    # Transport security and authentication (service/auth.py; docs/reliability.md)
    tls_cert_file: str = ""  # PEM server certificate (chain); with tls_key_file turns TLS on
    tls_key_file: str = ""
    tls_client_ca_file: str = ""  # PEM CA bundle: clients must present a certificate it signed (mutual TLS)
    allow_plaintext: bool = False  # listen without TLS on a non-loopback address (logged as a warning)
    sensor_tokens_file: str = ""  # lines "NODE SENSOR TOKEN": a stream needs a token; its identity is NODE/SENSOR
    admin_tokens_file: str = ""  # lines "TOKEN" (or "NAME TOKEN"): operators, who may call every Admin RPC
    viewer_tokens_file: str = ""  # the same form: viewers, who may call the read-only Admin RPCs (List, Get)
    max_stream_idle_seconds: Seconds = 300.0  # a stream with no message for this long is closed
    max_sequence_gap: Count = 1_000_000  # a batch numbered further above its sensor's last one is refused


class MetricsConfig(_Section):
    listen: Address = "127.0.0.1:9464"  # host:port of the Prometheus endpoint; "" disables it
    max_images: Count = 500  # distinct image label values; further images share "__other__"
    max_namespaces: Count = 200
    max_nodes: Count = 1000


class StateConfig(_Section):
    dir: str = ""  # state directory; "" keeps state in memory only
    save_interval_seconds: Seconds = 60.0
    key_file: str = ""  # integrity keys (first signs, others verify; baseliner init-secrets); required with dir
    wal: bool = True  # write-ahead log of applied batches (service/wal.py); needs dir; acks become durable
    wal_fsync: FsyncPolicy = "batch"  # fsync before each ack, every wal_group_ms, never
    wal_group_ms: Seconds = 5.0


class PipelineConfig(_Section):
    image_key: Literal["tag", "digest", "repository"] = "tag"  # repository:tag, repository@digest, repository
    dedup_window_seconds: Wait = 300.0  # event time; repeats of an anomaly within it become one event
    recent_events: Count = 1000  # anomaly events kept (with their vectors) for Admin.Feedback
    max_baselines: Count = 100_000  # baselines held; vectors of further images are rejected (BASELINE_LIMIT)
    max_containers: Count = 100_000  # containers tracked for start-up time and window order
    # with state.dir: baselines kept in memory, the least recently used beyond it spill to disk (0 = all kept)
    max_resident_baselines: Annotated[int, Field(ge=0)] = 10_000
    # Image lineage (models/lineage.py, service/lineage.py): a new image key starts from the most recent ready
    # baseline of its workload (where known) or repository ("auto"), of its "repository", its "workload", or
    # never ("off"); how long the new version is observed (its diff) and adapts; when it falls back to learning.
    lineage: Literal["auto", "repository", "workload", "off"] = "auto"
    lineage_observe_seconds: Seconds = 300.0  # event time; start-up items new in it form the version diff
    lineage_adapt_seconds: Seconds = 3600.0  # event time; faster adaptation, thresholds recalibrated
    lineage_max_changed_executables: Annotated[float, Field(gt=0, le=1)] = 0.5  # share new or vanished: fall back
    lineage_max_flagged_share: Annotated[float, Field(gt=0, le=1)] = 0.5  # share of windows flagged: fall back

    @model_validator(mode="after")
    def _observe_within_adapt(self) -> PipelineConfig:
        if self.lineage_observe_seconds > self.lineage_adapt_seconds:
            raise ValueError("lineage_observe_seconds must be at most lineage_adapt_seconds")
        return self


class EventsConfig(_Section):
    output: str = "-"  # "-" or "stdout", a file path (appended), or "none"


class FalcoConfig(_Section):
    """Falco alerts in (``service/falco_http.py``), correlation (``service/falco.py``), Falcosidekick out."""

    listen: Address = ""  # host:port of the alert endpoint; "" = off (e.g. 127.0.0.1:2802 to enable)
    max_body_bytes: Count = 64 * 1024  # larger payloads get 413
    correlation_window_seconds: Wait = 120.0  # an alert within this of an anomaly's windows coincides
    max_containers: Count = 10_000  # containers whose recent alerts and anomalies are remembered
    per_container: Count = 32  # recent alerts and anomalies remembered per container
    max_rules: Count = 200  # distinct rule label values; further rules share "__other__"
    sidekick_url: Annotated[str, AfterValidator(_http_url)] = ""  # Falcosidekick (any Falco-format webhook); ""
    sidekick_timeout_seconds: Seconds = 5.0
    sidekick_queue: Count = 1000  # events waiting to be posted; further ones are dropped and counted
    # Authentication of Falco's http_output (service/auth.py): a secret in the URL and/or a client certificate
    secret_file: str = ""  # file holding a secret: alerts must be POSTed to /falco/SECRET (or ?secret=SECRET)
    tls_cert_file: str = ""  # PEM certificate and key: the endpoint speaks HTTPS
    tls_key_file: str = ""
    tls_client_ca_file: str = ""  # PEM CA: Falco must present a client certificate it signed (mutual TLS)
    allow_plaintext: bool = False  # plain HTTP on a non-loopback address (the secret then travels in clear text)
    max_connections: Count = 64  # open connections; further ones are closed at once (counted)


class ModelConfig(_Section):
    """A registered MLflow model as the template for new baselines (service/model_source.py, docs/mlflow.md)."""

    uri: str = ""  # models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN/PATH or a local path; "" = none
    tracking_uri: str = ""  # MLflow tracking server; "" = MLFLOW_TRACKING_URI (needed for models:/ and runs:/)
    registry_uri: str = ""  # MLflow model registry; "" = MLFLOW_REGISTRY_URI, else the tracking server
    trusted_keys_file: str = ""  # PEM Ed25519 public keys of model publishers (required with uri)
    relearn_on_reload: bool = False  # on reload every image restarts from the new model (default: new images)
    timeout_seconds: Seconds = 10.0  # how long to wait for the tracking server to answer


class ConsoleConfig(_Section):
    """The operator console (``service/console/``, ``docs/console.md``): its own HTTP listener, off unless set.

    Visitors log in with an admin token (``grpc.admin_tokens_file``: operators, who may act;
    ``grpc.viewer_tokens_file``: viewers, who may only look); one of the two is required."""

    listen: Address = ""  # host:port; "" = off (e.g. 127.0.0.1:8080)
    tls_cert_file: str = ""  # PEM certificate (chain) and key: the console speaks HTTPS
    tls_key_file: str = ""
    allow_plaintext: bool = False  # plain HTTP on a non-loopback address (TLS terminated by a proxy in front)
    session_idle_minutes: Seconds = 30.0  # a session unused for this long ends
    session_hours: Seconds = 12.0  # a session ends this long after its login, used or not
    max_sessions: Count = 1000  # sessions held; the least recently used one ends first
    max_anomalies: Count = 20_000  # anomaly events held for its pages (about 1.6 KB each); older ones are dropped
    chart_points: Count = 240  # recent window times per image in its score chart (16 bytes each)
    max_containers_per_image: Count = 256  # containers and nodes remembered per image (more are only counted)
    page_size: Annotated[int, Field(ge=10, le=500)] = 50  # rows per page of its tables


class ShardsConfig(_Section):
    """Image-sharded replicas (``service/shards/``, ``docs/sharding.md``).  Without a list the service is the one
    shard of its own map and owns every image."""

    name: str = ""  # this shard's name in the list; "" = the host name (a StatefulSet pod's name)
    list: str = ""  # NAME=HOST:PORT or HOST:PORT entries (brace ranges: baseliner-{0..2}.svc:50051), or @FILE
    refresh_seconds: Seconds = 5.0  # how often the first shard re-reads the list (a file) and checks the others
    peer_token_file: str = ""  # the shards' shared secret for their calls to each other (required with TLS or tokens)
    tls_ca_file: str = ""  # CA the shards verify each other's certificates with (grpc.tls_* on): default system roots
    handover_timeout_seconds: Seconds = 30.0  # a fenced image waits this long for its Commit, then stays here
    forward_timeout_seconds: Seconds = 30.0  # a batch part waits this long for the shard that holds its image
    max_label_shards: Count = 64  # distinct peer label values in metrics; more share "__other__"


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    grpc: GrpcConfig = Field(default_factory=GrpcConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    falco: FalcoConfig = Field(default_factory=FalcoConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    shards: ShardsConfig = Field(default_factory=ShardsConfig)
    baseline: dict[str, Any] = Field(default_factory=dict)  # baseliner.models.baseline.BaselineConfig fields
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)] = "INFO"
    # Lab only: listeners off loopback without sensor, admin or Falco credentials (logged as an error at start,
    # baseliner_insecure_listeners > 0). Never in production: anyone who reaches a port can feed or read it.
    insecure: bool = False

    def baseline_config(self) -> Any:
        """The :class:`baseliner.models.baseline.BaselineConfig` of the ``baseline:`` settings (their types and
        ranges are checked there)."""
        from baseliner.models.baseline import BaselineConfig

        known = [f.name for f in dataclasses.fields(BaselineConfig)]
        unknown = sorted(set(self.baseline) - set(known))
        if unknown:
            raise ConfigError(f"baseline: unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
        try:
            return TypeAdapter(BaselineConfig).validate_python(self.baseline)
        except ValidationError as e:
            raise ConfigError("; ".join(_explain(e, {}, "baseline"))) from None

    def state_keys(self) -> Keyring | None:
        """The state integrity keyring (``state.key_file``); None when no state is written."""
        return Keyring.load(self.state.key_file, "state.key_file") if self.state.key_file else None

    def trusted_model_keys(self) -> TrustedKeys | None:
        """The public keys a model must be signed by (``model.trusted_keys_file``)."""
        m = self.model
        return TrustedKeys.load(m.trusted_keys_file) if m.trusted_keys_file else None

    def to_dict(self) -> dict[str, Any]:
        """The effective settings (``baseline:`` as the baseline takes them; files are named, never read)."""
        d = self.model_dump()
        bc = self.baseline_config()
        d["baseline"] = {k: getattr(bc, k) for k in self.baseline}
        return d


TOP_LEVEL = ("log_level", "insecure")
SECTIONS = [name for name in ServeConfig.model_fields if name not in TOP_LEVEL]


# --------------------------------------------------------------------------------------------------
# Checks across settings (types and ranges are the models' own)


#: What each listener's ``allow_plaintext=true`` is for.
_PLAINTEXT_USE = {"grpc": "to accept plaintext on a trusted network", "falco": "to accept plain HTTP on a trusted "
                  "network", "console": "when a proxy in front speaks HTTPS"}


def _tls_problems(cfg: ServeConfig) -> list[str]:
    out = []
    for section, plaintext_use in _PLAINTEXT_USE.items():
        s = getattr(cfg, section)
        if bool(s.tls_cert_file) != bool(s.tls_key_file):
            out.append(f"{section}.tls_cert_file and {section}.tls_key_file go together")
        if getattr(s, "tls_client_ca_file", "") and not s.tls_cert_file:
            out.append(f"{section}.tls_client_ca_file (mutual TLS) needs {section}.tls_cert_file and tls_key_file")
        if s.listen and not s.tls_cert_file and not is_loopback(split_address(s.listen)[0]) and not s.allow_plaintext:
            out.append(f"{section}.listen {s.listen!r} is not a loopback address and TLS is off: set "
                       f"{section}.tls_cert_file and {section}.tls_key_file, or {section}.allow_plaintext=true "
                       f"{plaintext_use}")
    return out


#: Settings that name a file to read at start.
FILES = ("grpc.tls_cert_file", "grpc.tls_key_file", "grpc.tls_client_ca_file", "grpc.sensor_tokens_file",
         "grpc.admin_tokens_file", "grpc.viewer_tokens_file", "state.key_file", "falco.secret_file",
         "falco.tls_cert_file", "falco.tls_key_file", "falco.tls_client_ca_file", "console.tls_cert_file",
         "console.tls_key_file", "model.trusted_keys_file", "shards.peer_token_file", "shards.tls_ca_file")
#: The token files of the Admin API's two roles (operators, viewers).
ADMIN_TOKEN_FILES = ("grpc.admin_tokens_file", "grpc.viewer_tokens_file")
#: How each file that holds credentials or keys is read (ConfigError naming the line when it is not right).
_READERS: dict[str, Callable[[str], Any]] = {
    "grpc.sensor_tokens_file": read_sensor_tokens, "grpc.admin_tokens_file": read_token_file,
    "grpc.viewer_tokens_file": read_token_file, "state.key_file": lambda p: Keyring.load(p, "state.key_file"),
    "model.trusted_keys_file": TrustedKeys.load,
}


def _setting(cfg: ServeConfig, key: str) -> Any:
    section, _, name = key.partition(".")
    return getattr(getattr(cfg, section), name)


def _secret_problems(cfg: ServeConfig) -> list[str]:
    missing = {key for key in FILES if _setting(cfg, key) and not Path(_setting(cfg, key)).is_file()}
    out = [f"{key} {_setting(cfg, key)!r} is not a readable file" for key in FILES if key in missing]
    tables: dict[str, Any] = {}
    for key, read in _READERS.items():
        if _setting(cfg, key) and key not in missing:
            try:
                tables[key] = read(_setting(cfg, key))
            except ConfigError as e:
                out.append(f"{key}: {e}")
    both = set(tables.get(ADMIN_TOKEN_FILES[0], ())) & set(tables.get(ADMIN_TOKEN_FILES[1], ()))
    if both:
        out.append(f"{len(both)} token(s) appear in both grpc.admin_tokens_file and grpc.viewer_tokens_file: a token "
                   "has one role")
    if cfg.console.listen and not any(_setting(cfg, key) for key in ADMIN_TOKEN_FILES):
        out.append("console.listen needs credentials to log in with: set grpc.admin_tokens_file (operators, who may "
                   "act) and/or grpc.viewer_tokens_file (viewers)")
    secret = cfg.falco.secret_file
    if secret and "falco.secret_file" not in missing and len(read_secret(secret)) < 16:
        out.append("falco.secret_file: the secret must be at least 16 characters (URL-safe)")
    if cfg.state.dir and not cfg.state.key_file:
        out.append("state.dir needs state.key_file: every state file is signed (baseliner init-secrets writes "
                   "state.keys)")
    if cfg.model.uri and not cfg.model.trusted_keys_file:
        out.append("model.uri needs model.trusted_keys_file: the public key(s) the model must be signed by "
                   "(baseliner init-secrets writes model-signing.pub)")
    return out


def _exposure_problems(cfg: ServeConfig) -> list[str]:
    """Listeners off loopback without the credentials that make them safe to expose (``insecure`` allows it)."""
    if cfg.insecure:
        return []
    out = []
    for setting, missing in insecure_listeners(cfg):
        out.append(f"{setting} {_setting(cfg, setting)!r} is not a loopback address and {missing}; or set "
                   "insecure=true for a lab (never in production)")
    return out


def insecure_listeners(cfg: ServeConfig) -> list[tuple[str, str]]:
    """``(listen setting, what is missing)`` of every listener off loopback that lacks authentication."""
    out = []
    g, f = cfg.grpc, cfg.falco
    if not is_loopback(split_address(g.listen)[0]):
        missing = []
        if not g.sensor_tokens_file and not g.tls_client_ca_file:
            missing.append("sensors are not authenticated (set grpc.sensor_tokens_file, or grpc.tls_client_ca_file "
                           "for mutual TLS)")
        if not g.admin_tokens_file and not g.viewer_tokens_file:
            missing.append("the Admin API is open (set grpc.admin_tokens_file, and grpc.viewer_tokens_file for "
                           "read-only users)")
        if missing:
            out.append(("grpc.listen", " and ".join(missing)))
    if f.listen and not is_loopback(split_address(f.listen)[0]) and not f.secret_file and not f.tls_client_ca_file:
        out.append(("falco.listen", "anyone may post alerts (set falco.secret_file, or falco.tls_client_ca_file for "
                                    "mutual TLS)"))
    return out


def _path_problems(cfg: ServeConfig) -> list[str]:
    out = []
    if cfg.state.dir:
        out += _directory_problems("state.dir", cfg.state.dir, Path(cfg.state.dir), may_create=True)
    elif "max_resident_baselines" in cfg.pipeline.model_fields_set and cfg.pipeline.max_resident_baselines:
        out.append("pipeline.max_resident_baselines needs state.dir (baselines spill there)")
    events = cfg.events.output
    if events.lower() not in ("-", "stdout", "none"):
        if Path(events).is_dir():
            out.append(f"events.output {events!r} is a directory: name a file in it")
        else:
            out += _directory_problems("events.output", events, Path(events).parent, may_create=False)
    return out


def _directory_problems(key: str, value: str, directory: Path, may_create: bool) -> list[str]:
    """What keeps a setting from writing in ``directory`` (or in its nearest existing parent, when it may be made)."""
    d = directory
    while may_create and not d.exists() and d != d.parent:
        d = d.parent
    if not d.exists():
        why = f"directory {str(d)!r} does not exist"
    elif not d.is_dir():
        why = f"{str(d)!r} is not a directory"
    elif not os.access(d, os.W_OK | os.X_OK):
        why = f"directory {str(d)!r} is not writable"
    else:
        return []
    return [f"{key} {value!r}: {why}"]


def _baseline_problems(cfg: ServeConfig) -> list[str]:
    try:
        cfg.baseline_config()
    except ConfigError as e:
        return [str(e)]
    return []


def _shard_problems(cfg: ServeConfig) -> list[str]:
    """The shard list reads, names this shard, and the shards can authenticate each other."""
    from baseliner.models.shards import ShardListError, read_shard_list

    sh = cfg.shards
    if not sh.list:
        return []
    out = []
    try:
        shards = read_shard_list(sh.list)
    except ShardListError as e:
        return [f"shards.list: {e}"]
    if not shards:
        out.append("shards.list names no shard")
    g = cfg.grpc
    secured = g.tls_cert_file or g.sensor_tokens_file or any(_setting(cfg, k) for k in ADMIN_TOKEN_FILES)
    if secured and not sh.peer_token_file:
        out.append("shards.peer_token_file is needed when gRPC has TLS or tokens: the shards forward windows and "
                   "hand baselines over to each other with it")
    if sh.peer_token_file and Path(sh.peer_token_file).is_file() and len(read_secret(sh.peer_token_file)) < 16:
        out.append("shards.peer_token_file: the secret must be at least 16 characters")
    return out


def problems(cfg: ServeConfig) -> list[str]:
    """Everything wrong with a configuration whose values have their types, one line each."""
    return [*_tls_problems(cfg), *_secret_problems(cfg), *_exposure_problems(cfg), *_path_problems(cfg),
            *_baseline_problems(cfg), *_shard_problems(cfg)]


# --------------------------------------------------------------------------------------------------
# Loading


def _yaml(path: str) -> Mapping[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read configuration file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"configuration file {path} is not valid YAML: {e}") from None
    if not isinstance(data, Mapping | None):
        raise ConfigError(f"configuration file {path} must hold a mapping of sections")
    return data or {}


def _layers(path: str | None, environ: Mapping[str, str],
            overrides: Sequence[tuple[str, Any]]) -> list[tuple[str, str, Any]]:
    """``(key, where, value)`` in order of precedence (later wins)."""
    out: list[tuple[str, str, Any]] = []
    if path:
        for top, value in _yaml(path).items():
            if isinstance(value, Mapping) and top in SECTIONS:
                out += [(f"{top}.{k}", path, v) for k, v in value.items()]
            else:
                out.append((str(top), path, value))
    for var, value in environ.items():
        rest = var.removeprefix(ENV_PREFIX).lower()
        section = next((s for s in SECTIONS if rest.startswith(s + "_")), None)
        if var.startswith(ENV_PREFIX) and (section or rest in TOP_LEVEL):  # other BASELINER_* are other tools'
            key = f"{section}.{rest[len(section) + 1:]}" if section else rest
            out.append((key, f"environment {var}", value))
    out += [(key, f"flag {key}", value) for key, value in overrides]
    return out


def parse_set(items: Sequence[str]) -> list[tuple[str, str]]:
    """``--set SECTION.KEY=VALUE`` flags -> ``(key, value)`` overrides.

    >>> parse_set(["baseline.min_learn_windows=120"])
    [('baseline.min_learn_windows', '120')]
    """
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE")
        out.append((key.strip(), value))
    return out


def load(
    path: str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Sequence[tuple[str, Any]] = (),
    validate: bool = True,
) -> ServeConfig:
    """Build and check the configuration. ``overrides`` are ``(key, value)`` pairs from flags."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    where: dict[tuple[str, ...], str] = {}
    for key, source, value in _layers(path or environ.get(f"{ENV_PREFIX}CONFIG"), environ, overrides):
        section, _, name = key.partition(".")
        if name:
            if not isinstance(data.get(section), dict):
                data[section] = {}
            data[section][name] = value
            where[(section, name)] = source
        else:
            data[section] = value
            where[(section,)] = source
    cfg, found = _typed(data, where)
    if validate:
        found += problems(cfg)
    if found:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(found))
    return cfg


def _typed(data: dict[str, Any], where: Mapping[tuple[str, ...], str]) -> tuple[ServeConfig, list[str]]:
    """The configuration and what is wrong with the values' types; a wrong value is left at its default, so that
    the other checks still run and every problem is reported at once."""
    try:
        return ServeConfig.model_validate(data), []
    except ValidationError as e:
        for err in e.errors():
            section, *name = err["loc"]
            if name and isinstance(data.get(str(section)), dict):
                data[str(section)].pop(str(name[0]), None)
            else:
                data.pop(str(section), None)
        return ServeConfig.model_validate(data), _explain(e, where)


def _explain(e: ValidationError, where: Mapping[tuple[str, ...], str], section: str = "") -> list[str]:
    """pydantic's errors, one line each: where the value came from, the setting, what is wrong, the value."""
    out = []
    for err in e.errors():
        loc = tuple(str(x) for x in (section, *err["loc"]) if x)
        name = ".".join(loc)
        source = where.get(loc[:2], "") and where[loc[:2]] + ": "
        if err["type"] == "extra_forbidden" and len(loc) == 1:
            out.append(f"{source}unknown section {name!r} (sections: {', '.join(SECTIONS)})")
        elif err["type"] == "extra_forbidden":
            known = ", ".join(ServeConfig.model_fields[loc[0]].annotation.model_fields)  # type: ignore[union-attr]
            out.append(f"{source}unknown setting {name!r} (known in {loc[0]}: {known})")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            got = "" if isinstance(err["input"], dict) or repr(err["input"]) in msg else f" (got {err['input']!r})"
            out.append(f"{source}{name}: {msg}{got}")
    return out
