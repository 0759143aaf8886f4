"""``baseliner serve --model URI``: a registered MLflow model as the template for new baselines.

New images get the model's :class:`~baseliner.models.baseline.BaselineConfig` and, when it has one, its
trained state as a warm start; images that already have a baseline keep theirs.  A reload (``SIGHUP``)
resolves the URI again and switches the template; a model that cannot be used is a
:class:`~baseliner.models.mlflow_model.ModelError` (at start the service refuses to start; at reload the
running model stays).  See ``docs/mlflow.md`` ("The service").
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from baseliner.models.baseline import ImageBaseline
from baseliner.models.mlflow_model import BaselinerModel, ModelError, load_model
from baseliner.models.signatures import TrustedKeys
from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger(__name__)

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))?/?$")


@dataclass
class Loaded:
    model: BaselinerModel
    uri: str  # what was asked for
    resolved: str  # what was loaded (models:/NAME/VERSION for an alias)
    version: int  # registered model version, 0 when not from the registry
    loaded_at: float


class ModelMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.loads = Counter(
            "baseliner_model_loads_total", "Model loads (start and reloads) that succeeded", registry=registry
        )
        self.failures = Counter(
            "baseliner_model_load_failures_total", "Model loads that failed (the running model stayed)",
            registry=registry,
        )
        self.version = Gauge(
            "baseliner_model_version", "Registered version of the model in use (0: not from the registry)",
            registry=registry,
        )
        self.warm = Gauge(
            "baseliner_model_warm_start", "1 when the model in use carries trained state for new images",
            registry=registry,
        )
        self.loaded = Gauge(
            "baseliner_model_loaded_timestamp_seconds", "When the model in use was loaded", registry=registry
        )


def check_reachable(tracking_uri: str, timeout: float) -> None:
    """Fail fast with a clear message when an HTTP tracking server does not answer."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    url = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (configured URL)
            resp.read(64)
    except urllib.error.HTTPError as e:
        raise ModelError(f"MLflow tracking server {tracking_uri} answered {e.code} on /health") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ModelError(f"MLflow tracking server {tracking_uri} is unreachable: {reason}") from None


def locate(uri: str, tracking: str, registry: str) -> tuple[str, str, int]:
    """Where the files of model ``uri`` are, what it resolved to, and its registered version (0: not registered).

    Resolved here with clients bound to the given servers: MLflow's own resolution of ``models:/`` and
    ``runs:/`` inside ``download_artifacts`` falls back to its default store (a new ``mlflow.db`` in the
    working directory) whatever URIs it is given (mlflow 3.17; mlflow/mlflow#16412).
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    m = _MODELS_URI.match(uri)
    if uri.startswith("models:/") and m is None:
        raise ModelError(f"model URI {uri!r} is not models:/NAME@ALIAS or models:/NAME/VERSION")
    client = MlflowClient(tracking_uri=tracking, registry_uri=registry)
    try:
        if uri.startswith("runs:/"):
            return _run_model_location(client, uri), uri, 0
        if m is None:
            return uri, uri, 0  # an artifact store URI (mlflow-artifacts:/, s3://, file://)
        name, alias, version = m.group("name"), m.group("alias"), m.group("version")
        if name.startswith("m-") and not (alias or version):  # a logged model's id (MLflow 3)
            return client.get_logged_model(name).artifact_location, uri, 0
        mv = _model_version(client, name, alias, version)
        return client.get_model_version_download_uri(name, mv.version), f"models:/{name}/{mv.version}", int(mv.version)
    except MlflowException as e:
        raise ModelError(f"cannot resolve model {uri} on {registry}: {e.message}") from None


def _model_version(client: Any, name: str, alias: str | None, version: str | None) -> Any:
    if alias:
        return client.get_model_version_by_alias(name, alias)
    if version:
        return client.get_model_version(name, version)
    versions = client.search_model_versions(f"name='{name}'", max_results=1, order_by=["version_number DESC"])
    if not versions:
        raise ModelError(f"registered model {name!r} has no versions")
    return versions[0]


def _run_model_location(client: Any, uri: str) -> str:
    """``runs:/RUN/PATH``: the model logged under that name in the run (MLflow 3), else the run's artifacts at PATH."""
    run_id, _, path = uri.removeprefix("runs:/").strip("/").partition("/")
    run = client.get_run(run_id)
    logged = client.search_logged_models(experiment_ids=[run.info.experiment_id], max_results=1,
                                         filter_string=f"source_run_id = '{run_id}' AND name = '{path}'")
    return logged[0].artifact_location if logged else f"{run.info.artifact_uri.rstrip('/')}/{path}"


class ModelSource:
    """Resolves, loads and installs a Baseliner model (see the module docstring)."""

    def __init__(
        self,
        uri: str,
        tracking_uri: str = "",
        trusted: TrustedKeys | None = None,
        registry: CollectorRegistry | None = None,
        relearn_on_reload: bool = False,
        timeout_seconds: float = 10.0,
        registry_uri: str = "",
    ) -> None:
        self.uri = uri
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri
        self.trusted = trusted  # the public keys a model must be signed by
        self.relearn_on_reload = relearn_on_reload
        self.timeout = timeout_seconds
        self.metrics = ModelMetrics(registry or CollectorRegistry())  # (counted where nobody reads, without one)
        self.current: Loaded | None = None
        self._lock = asyncio.Lock()

    # -- resolve and load (blocking; run in a thread from the event loop) ----------------------------
    def servers(self) -> tuple[str, str]:
        """The tracking and registry URIs: as configured, else MLflow's environment variables (never MLflow's
        default, a database in the working directory); the registry defaults to the tracking server."""
        tracking = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
        if not tracking:
            raise ModelError(f"model {self.uri} needs an MLflow tracking server: set model.tracking_uri "
                             "(--tracking-uri) or MLFLOW_TRACKING_URI")
        return tracking, self.registry_uri or os.environ.get("MLFLOW_REGISTRY_URI", "") or tracking

    def load(self) -> Loaded:
        """Resolve the URI and load the model; :class:`ModelError` with what is wrong otherwise."""
        uri = self.uri
        if "://" not in uri and ":/" not in uri:  # a local model directory
            return Loaded(load_model(uri, self.trusted), uri, uri, 0, time.time())
        tracking, registry = self.servers()
        for server in dict.fromkeys((tracking, registry)):
            check_reachable(server, self.timeout)
        location, resolved, version = locate(uri, tracking, registry)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in the log
        model = load_model(location, self.trusted, tracking_uri=tracking)
        return Loaded(model, uri, resolved, version, time.time())

    # -- install ------------------------------------------------------------------------------------
    def install(self, pipeline: Any, loaded: Loaded, relearn: bool = False) -> None:
        """Make ``loaded`` the template for new images of ``pipeline`` (and, with ``relearn``, for all)."""
        model = loaded.model
        pipeline.baseline_config = model.config
        pipeline.baseline_factory = model.new_baseline
        self.current = loaded
        if relearn:
            for key, old in list(pipeline.baselines.items()):
                b: ImageBaseline = model.new_baseline(key)
                b.set_mode(old.mode)
                pipeline.baselines[key] = b
                pipeline.dirty.add(key)
            log.info("model %s: %d existing baselines start again from it", loaded.resolved, len(pipeline.baselines))
        self.metrics.loads.inc()
        self.metrics.version.set(loaded.version)
        self.metrics.warm.set(1 if model.warm else 0)
        self.metrics.loaded.set(loaded.loaded_at)
        log.info(
            "model %s (%s): template for new baselines (%s)", loaded.uri, loaded.resolved,
            "config + trained state as warm start" if model.warm else "config only",
        )

    async def reload(self, pipeline: Any) -> bool:
        """Resolve and load again off the event loop, then switch; keeps the running model on any error."""
        async with self._lock:
            try:
                loaded = await asyncio.to_thread(self.load)
            except Exception as e:  # ModelError, or an MLflow client bug: neither takes the service down
                log.error("model reload failed, keeping %s: %s",
                          self.current.resolved if self.current else "the configured baselines", e,
                          exc_info=not isinstance(e, ModelError))
                self.metrics.failures.inc()
                return False
            previous = self.current.resolved if self.current else "none"
            self.install(pipeline, loaded, relearn=self.relearn_on_reload)
            log.info("model reloaded: %s -> %s", previous, loaded.resolved)
            return True


def from_config(config: Any, registry: CollectorRegistry | None) -> ModelSource | None:
    """The model source a ``ServeConfig`` asks for (``model.uri``), or None."""
    m = config.model
    if not m.uri:
        return None
    return ModelSource(m.uri, m.tracking_uri, config.trusted_model_keys(), registry, m.relearn_on_reload,
                       m.timeout_seconds, m.registry_uri)


async def attach(server: Any) -> ModelSource | None:
    """Called by ``BaselinerServer.start``: load the configured model (or raise) and reload on SIGHUP."""
    source = from_config(server.config, server.registry)
    if source is None:
        return None
    try:
        loaded = await asyncio.to_thread(source.load)
    except ModelError:
        source.metrics.failures.inc()
        raise
    source.install(server.pipeline, loaded)
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(source.reload(server.pipeline)))
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests), or no signals
        log.debug("SIGHUP reload not available in this thread; use ModelSource.reload")
    return source
