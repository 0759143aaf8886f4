"""The ``baseliner`` MLflow model flavour: a Baseliner model as an MLflow model, with no pickle anywhere.

A *Baseliner model* is what a new image baseline starts from: its
:class:`~baseliner.models.baseline.BaselineConfig` and optionally a trained state (a warm start).  Its directory
layout, signature record and load checks are in ``docs/mlflow.md`` ("The ``baseliner`` flavour"): it is signed
by its publisher's Ed25519 key and loaded only when a trusted public key verifies it.  MLflow
imports this module and calls :func:`_load_pyfunc`; ``predict(frame)`` scores windows with
``ImageBaseline.process``, the service's one scoring path (the frame: :data:`INPUT_COLUMNS`).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from baseliner.models import signatures
from baseliner.models.baseline import BaselineConfig, ImageBaseline, Mode, Verdict
from baseliner.models.errors import BaselinerError, StateError
from baseliner.models.rate_features import FEATURE_NAMES, SCALAR_ATTRIBUTES, SYSCALL_VOCABULARY
from baseliner.models.signatures import Signer, TrustedKeys
from baseliner.models.vector import Endpoint, FeatureVector, Identity

log = logging.getLogger(__name__)

FLAVOR_NAME = "baseliner"
FORMAT_VERSION = 2
DATA_DIR = "baseliner"
MODEL_FILE = "model.json"
STATE_FILE = "state.npz"
INTEGRITY_FILE = "integrity.json"
#: Environment variable naming the file of trusted model signing keys for a pyfunc load (MLflow's
#: ``load_model(model_config=...)`` drops keys the logged model does not declare); the service passes its keys.
ENV_TRUSTED_KEYS = "BASELINER_MODEL_TRUSTED_KEYS_FILE"

# -- the frame the pyfunc model scores -------------------------------------------------------------

#: Identity and window columns: (name, type, required).
ID_COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("image_repository", "string", True),
    ("image_tag", "string", False),
    ("node", "string", False),
    ("container_id", "string", False),
    ("namespace", "string", False),
    ("window_start", "double", True),
    ("window_seconds", "double", True),
    ("seconds_since_start", "double", False),
)
#: Features derived from the syscall columns, not given as columns themselves.
DERIVED_FEATURES = ("sys.total", "sys.other")
#: Raw counts per window, one column per feature of ``baseliner.models.rate_features`` except the derived ones.
COUNT_COLUMNS: tuple[str, ...] = tuple(f for f in FEATURE_NAMES if f not in DERIVED_FEATURES)
#: Items for the novelty tier and calls outside the syscall vocabulary, each a JSON string (optional).
JSON_COLUMNS: tuple[str, ...] = ("other_syscalls", "executables", "ports", "sensitive_paths")
INPUT_COLUMNS: tuple[str, ...] = tuple(c for c, _, _ in ID_COLUMNS) + COUNT_COLUMNS + JSON_COLUMNS
OUTPUT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("image_key", "string"), ("score", "double"), ("threshold", "double"), ("anomalous", "boolean"),
    ("severity", "string"), ("kinds", "string"), ("novel", "string"), ("explanation", "string"),
    ("continuous", "double"), ("state", "string"), ("learned", "boolean"), ("startup", "boolean"),
)
_VOCAB = frozenset(SYSCALL_VOCABULARY)
#: Config fields that make up the thresholds policy (a subset of BaselineConfig).
_POLICY_KEYS = ("false_alarms_per_day", "min_learn_windows", "min_learn_seconds", "stable_share",
                "stable_confidence", "max_learn_seconds", "tier_combination")


class ModelError(BaselinerError):
    """A model that cannot be used: wrong flavour, other feature schema, failed integrity check, bad URI."""


def features_digest(names: Sequence[str] = FEATURE_NAMES) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


# -- the model --------------------------------------------------------------------------------------


@dataclass
class BaselinerModel:
    """What a new baseline starts from: a config and, optionally, a trained state (warm start)."""

    config: BaselineConfig
    state_meta: dict[str, Any] | None = None
    state_arrays: dict[str, np.ndarray] | None = None
    description: str = ""

    @classmethod
    def from_baseline(cls, baseline: ImageBaseline, description: str = "") -> BaselinerModel:
        """A model carrying ``baseline``'s config and learned state."""
        meta, arrays = baseline.to_state()
        return cls(baseline.config, meta, arrays, description)

    @property
    def warm(self) -> bool:
        return self.state_meta is not None

    def thresholds_policy(self) -> dict[str, Any]:
        """How thresholds are set (documented in ``models/threshold.py``) and, when trained, where they are."""
        cfg = self.config.to_dict()
        policy: dict[str, Any] = {"method": "tail-exponential, 90% upper bound of the scale (models/threshold.py)"}
        policy.update({k: v for k, v in cfg.items() if k in _POLICY_KEYS})
        if self.warm:
            b = self.new_baseline("__template__")
            policy["trained_threshold"] = b.threshold if math.isfinite(b.threshold) else None
            policy["trained_state"] = b.state.value
        return policy

    def new_baseline(self, key: str) -> ImageBaseline:
        """A fresh baseline for image ``key``: the trained state when there is one, else empty with the config."""
        if self.state_meta is None or self.state_arrays is None:
            return ImageBaseline(key, self.config)
        meta = dict(self.state_meta)
        meta["key"] = key
        meta["config"] = self.config.to_dict()
        meta["windows_scored"] = 0  # the new image's own counters start at zero
        meta["anomalies"] = 0
        meta["lineage"] = None  # the service gives the new image its own (service/lineage.py)
        return ImageBaseline.from_state(meta, self.state_arrays)


# -- integrity ----------------------------------------------------------------------------------------


def _file_digests(data_dir: Path, names: Sequence[str]) -> dict[str, str]:
    return {n: hashlib.sha256((data_dir / n).read_bytes()).hexdigest() for n in names}


def _signed_bytes(digests: dict[str, str]) -> bytes:
    """What a model's signature covers: the format version and every file's digest."""
    body = json.dumps({"format_version": FORMAT_VERSION, "files": digests}, sort_keys=True, separators=(",", ":"))
    return b"baseliner model\n" + body.encode()


def _verify(data_dir: Path, trusted: TrustedKeys | None) -> str:
    """Check the signature record of a model's data directory; returns the signing key's id."""
    path = data_dir / INTEGRITY_FILE
    where = str(data_dir)
    if trusted is None:
        raise ModelError(f"{where}: no trusted model signing keys are configured (service: model.trusted_keys_file; "
                         f"pyfunc: {ENV_TRUSTED_KEYS}); refusing the model")
    try:
        record = json.loads(path.read_text())
        algo, kid, sig, digests = record["algorithm"], record["key_id"], record["signature"], record["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ModelError(f"{where}: no readable signature record ({INTEGRITY_FILE}); refusing the model") from None
    if algo != signatures.ALGORITHM:
        raise ModelError(f"{where}: signature algorithm {algo!r} is not {signatures.ALGORITHM}; refusing the model")
    if not isinstance(digests, dict) or MODEL_FILE not in digests:
        raise ModelError(f"{where}: the signature record does not cover {MODEL_FILE}; refusing the model")
    try:
        trusted.verify(str(kid), str(sig), _signed_bytes(digests), where)
    except signatures.SignatureError as e:
        raise ModelError(str(e)) from None
    present = {p.name for p in data_dir.iterdir()} - {INTEGRITY_FILE}
    if present != set(digests):
        raise ModelError(f"{where}: files {sorted(present ^ set(digests))} do not match the signature record")
    for name, digest in digests.items():
        actual = hashlib.sha256((data_dir / name).read_bytes()).hexdigest()
        if not hmac.compare_digest(actual, str(digest)):
            raise ModelError(f"{where}: {name} does not match its signed digest (modified?); refusing the model")
    return str(kid)


def _trusted_from_env(model_config: dict[str, Any] | None = None) -> TrustedKeys | None:
    path = (model_config or {}).get("trusted_keys_file") or os.environ.get(ENV_TRUSTED_KEYS)
    if not path:
        return None
    try:
        return TrustedKeys.load(path)
    except BaselinerError as e:
        raise ModelError(str(e)) from None


# -- save / log ---------------------------------------------------------------------------------------


def signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    inputs = [ColSpec(t, name, required=req) for name, t, req in ID_COLUMNS]  # type: ignore[arg-type]
    inputs += [ColSpec("double", name) for name in COUNT_COLUMNS]  # type: ignore[arg-type]
    inputs += [ColSpec("string", name, required=False) for name in JSON_COLUMNS]  # type: ignore[arg-type]
    outputs = [ColSpec(t, name) for name, t in OUTPUT_COLUMNS]  # type: ignore[arg-type]
    params = ParamSchema([ParamSpec("mode", "string", "")])
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs), params=params)  # type: ignore[arg-type]


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("baseliner")
    except PackageNotFoundError:
        return "unknown"


def save_model(
    model: BaselinerModel,
    path: str | os.PathLike[str],
    mlflow_model: Any = None,
    signer: Signer | None = None,
    input_example: pd.DataFrame | None = None,
    **_: Any,
) -> None:
    """Write ``model`` as an MLflow model directory at ``path`` (the flavour's ``save_model``), signed by ``signer``
    (the publisher's Ed25519 key: :meth:`baseliner.models.signatures.Signer.load`)."""
    from mlflow.models import Model
    from mlflow.models.utils import _save_example
    from mlflow.pyfunc import add_to_model

    root = Path(path)
    if signer is None:
        raise ModelError("a Baseliner model is signed by its publisher: pass signer=Signer.load(KEY_FILE) "
                         "(baseliner init-secrets writes model-signing.key)")
    if root.exists() and any(root.iterdir()):
        raise ModelError(f"{root} exists and is not empty")
    data_dir = root / DATA_DIR
    data_dir.mkdir(parents=True)
    doc: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "kind": "baseliner-model",
        "features": list(FEATURE_NAMES),
        "config": model.config.to_dict(),
        "thresholds": model.thresholds_policy(),
        "state": model.state_meta,
        "description": model.description,
        "baseliner_version": _package_version(),
    }
    (data_dir / MODEL_FILE).write_text(json.dumps(doc, indent=1, allow_nan=False))
    names = [MODEL_FILE]
    if model.state_arrays is not None:
        buf = io.BytesIO()
        np.savez_compressed(buf, **model.state_arrays)  # type: ignore[arg-type]
        (data_dir / STATE_FILE).write_bytes(buf.getvalue())
        names.append(STATE_FILE)
    digests = _file_digests(data_dir, names)
    kid, sig = signer.sign(_signed_bytes(digests))
    (data_dir / INTEGRITY_FILE).write_text(json.dumps(
        {"algorithm": signatures.ALGORITHM, "key_id": kid, "signature": sig, "files": digests}, indent=1))

    mlmodel = mlflow_model if mlflow_model is not None else Model()
    mlmodel.signature = signature()
    if input_example is not None:
        _save_example(mlmodel, input_example, str(root))
    (root / "requirements.txt").write_text(f"baseliner=={doc['baseliner_version']}\n")
    add_to_model(mlmodel, loader_module=__name__, data=DATA_DIR)
    mlmodel.add_flavor(
        FLAVOR_NAME,
        data=DATA_DIR,
        format_version=FORMAT_VERSION,
        features_sha256=features_digest(),
        warm_start=model.warm,
        baseliner_version=doc["baseliner_version"],
        signed_by=kid,
    )
    mlmodel.save(str(root / "MLmodel"))


def log_model(
    model: BaselinerModel,
    name: str = "model",
    registered_model_name: str | None = None,
    signer: Signer | None = None,
    input_example: pd.DataFrame | None = None,
    **kwargs: Any,
) -> Any:
    """Log ``model``, signed by ``signer``, to the active run (MLflow ``Model.log``); returns MLflow's ``ModelInfo``."""
    from mlflow.models import Model

    return Model.log(
        None,
        name=name,
        flavor=sys.modules[__name__],
        registered_model_name=registered_model_name,
        model=model,
        signer=signer,
        input_example=input_example,
        **kwargs,
    )


# -- load ---------------------------------------------------------------------------------------------


def _check_flavor(root: Path) -> dict[str, Any]:
    import yaml

    mlmodel = root / "MLmodel"
    try:
        doc = yaml.safe_load(mlmodel.read_text())
    except OSError:
        raise ModelError(f"{root}: not an MLflow model directory (no MLmodel file)") from None
    except yaml.YAMLError as e:
        raise ModelError(f"{root}/MLmodel is not valid YAML: {e}") from None
    flavors = (doc or {}).get("flavors") or {}
    conf = flavors.get(FLAVOR_NAME)
    if not isinstance(conf, dict):
        raise ModelError(
            f"{root}: the model has flavours {sorted(flavors)}, not {FLAVOR_NAME!r}: "
            "it is not a Baseliner model (log one with baseliner.models.mlflow_model.log_model)"
        )
    if conf.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"{root}: Baseliner model format {conf.get('format_version')!r} is not supported "
            f"(this build reads {FORMAT_VERSION})"
        )
    return conf


def load_local(path: str | os.PathLike[str], trusted: TrustedKeys | None, data: str | None = None) -> BaselinerModel:
    """Load a Baseliner model from a local MLflow model directory (or its ``baseliner`` data directory).

    Checks, in order: the flavour, the signature (by one of the ``trusted`` keys) over every file's digest, the
    format version and the feature schema; any failure raises :class:`ModelError` with what is wrong.
    """
    root = Path(path)
    if data is not None:
        data_dir = root if root.name == data and (root / MODEL_FILE).exists() else root / data
    else:
        conf = _check_flavor(root)
        data_dir = root / str(conf.get("data", DATA_DIR))
    _verify(data_dir, trusted)
    try:
        doc = json.loads((data_dir / MODEL_FILE).read_text())
    except ValueError as e:
        raise ModelError(f"{data_dir / MODEL_FILE} is not JSON: {e}") from None
    if doc.get("kind") != "baseliner-model" or doc.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{data_dir}: not a Baseliner model of format {FORMAT_VERSION}")
    if doc.get("features") != list(FEATURE_NAMES):
        theirs = doc.get("features") or []
        diff = sorted(set(map(str, theirs)) ^ set(FEATURE_NAMES))[:5]
        raise ModelError(
            f"{data_dir}: the model was made for another feature schema ({len(theirs)} features, this build "
            f"has {len(FEATURE_NAMES)}; differing: {', '.join(diff) or 'order'}); retrain it with this build"
        )
    try:
        config = BaselineConfig.from_dict(doc["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"{data_dir}: invalid baseline config in the model: {e}") from None
    state_meta = doc.get("state")
    arrays: dict[str, np.ndarray] | None = None
    if state_meta is not None:
        try:
            with np.load(data_dir / STATE_FILE, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as e:
            raise ModelError(f"{data_dir}: trained state cannot be read: {e}") from None
    model = BaselinerModel(config, state_meta, arrays, str(doc.get("description", "")))
    if model.warm:
        try:
            model.new_baseline("__check__")
        except StateError as e:
            raise ModelError(f"{data_dir}: trained state cannot be used: {e}") from None
    return model


def load_model(model_uri: str, trusted: TrustedKeys | None, tracking_uri: str | None = None) -> BaselinerModel:
    """Download (``models:/NAME@ALIAS``, ``runs:/...``, a path ...) and load a Baseliner model."""
    local = Path(model_uri)
    if "://" not in model_uri and ":/" not in model_uri:
        if not local.exists():
            raise ModelError(f"model path {model_uri} does not exist")
        return load_local(local, trusted)
    import mlflow
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="baseliner-model-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp, tracking_uri=tracking_uri)
        except MlflowException as e:
            raise ModelError(f"cannot resolve model {model_uri}: {e.message}") from None
        except OSError as e:
            raise ModelError(f"cannot download model {model_uri}: {e}") from None
        return load_local(path, trusted)


# -- frames <-> vectors -------------------------------------------------------------------------------


def vectors_to_frame(vectors: Sequence[FeatureVector]) -> pd.DataFrame:
    """The pyfunc input frame of ``vectors`` (one row per window; :data:`INPUT_COLUMNS`)."""
    rows: list[dict[str, Any]] = []
    for v in vectors:
        ident = v.identity
        row: dict[str, Any] = {
            "image_repository": ident.image_repository, "image_tag": ident.image_tag, "node": ident.node,
            "container_id": ident.container_id, "namespace": ident.namespace,
            "window_start": float(v.window_start), "window_seconds": float(v.window_seconds),
            "seconds_since_start": float(v.seconds_since_start),
        }
        for name in COUNT_COLUMNS:
            attr = SCALAR_ATTRIBUTES.get(name)
            if attr is not None:
                row[name] = float(getattr(v, attr))
            else:
                row[name] = float(v.syscalls.get(name.removeprefix("syscall."), 0))
        row["other_syscalls"] = json.dumps({k: c for k, c in sorted(v.syscalls.items()) if k not in _VOCAB})
        row["executables"] = json.dumps(list(v.executables))
        row["ports"] = json.dumps([f"{e.protocol}/{e.port}" for e in v.endpoints if e.outbound])
        row["sensitive_paths"] = json.dumps(list(v.sensitive_paths))
        rows.append(row)
    return pd.DataFrame(rows, columns=list(INPUT_COLUMNS))


def _json_cell(value: Any, kind: type, where: str) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return kind()
    if isinstance(value, kind):
        return value
    try:
        out = json.loads(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: not JSON: {str(value)[:80]!r}") from None
    if not isinstance(out, kind):
        raise ValueError(f"{where}: expected a JSON {kind.__name__}")
    return out


def _count(value: Any, where: str) -> int:
    f = float(value)
    if not math.isfinite(f) or f < 0:
        raise ValueError(f"{where}: count must be finite and >= 0, got {value!r}")
    return int(round(f))


def frame_to_vectors(frame: pd.DataFrame) -> list[FeatureVector]:
    """Rows of the input frame back to :class:`FeatureVector` objects (bad rows raise ``ValueError``)."""
    missing = [c for c, _, req in ID_COLUMNS if req and c not in frame.columns]
    missing += [c for c in COUNT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"input frame lacks columns: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    out: list[FeatureVector] = []
    cols = list(frame.columns)
    for i, values in enumerate(frame.itertuples(index=False, name=None)):
        r = dict(zip(cols, values, strict=True))
        where = f"row {i}"

        def text(name: str, r: dict[str, Any] = r) -> str:
            value = r.get(name)
            return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)

        syscalls: dict[str, int] = {}
        for name in SYSCALL_VOCABULARY:
            c = _count(r[f"syscall.{name}"], f"{where} syscall.{name}")
            if c:
                syscalls[name] = c
        for name, c in _json_cell(r.get("other_syscalls"), dict, f"{where} other_syscalls").items():
            if name in _VOCAB:
                raise ValueError(f"{where} other_syscalls: {name!r} has its own column syscall.{name}")
            syscalls[str(name)] = _count(c, f"{where} other_syscalls[{name!r}]")
        ports = []
        for item in _json_cell(r.get("ports"), list, f"{where} ports"):
            proto, sep, port = str(item).partition("/")
            if not sep or not port.isdigit():
                raise ValueError(f"{where} ports: {item!r} is not PROTOCOL/PORT (e.g. tcp/443)")
            ports.append(Endpoint("", int(port), proto, True))
        since = r.get("seconds_since_start")
        kwargs: dict[str, Any] = {attr: _count(r[name], f"{where} {name}") for name, attr in SCALAR_ATTRIBUTES.items()}
        out.append(
            FeatureVector(
                Identity(text("node"), text("container_id"), text("image_repository"), text("image_tag"),
                         namespace=text("namespace")),
                float(r["window_start"]),
                float(r["window_seconds"]),
                syscalls,
                executables=[str(e) for e in _json_cell(r.get("executables"), list, f"{where} executables")],
                endpoints=ports,
                sensitive_paths=[
                    str(p) for p in _json_cell(r.get("sensitive_paths"), list, f"{where} sensitive_paths")
                ],
                seconds_since_start=-1.0 if since is None or math.isnan(float(since)) else float(since),
                **kwargs,
            )
        )
    return out


def verdict_row(key: str, v: Verdict) -> dict[str, Any]:
    return {
        "image_key": key, "score": v.score, "threshold": v.threshold, "anomalous": v.anomalous,
        "severity": v.severity, "kinds": ",".join(v.kinds), "novel": "; ".join(i.text() for i in v.novel),
        "explanation": "; ".join(d.text() for d in v.explanation), "continuous": v.continuous,
        "state": v.state.value, "learned": v.learned, "startup": v.startup,
    }


def score_frame(model: BaselinerModel, frame: pd.DataFrame, mode: str = "") -> pd.DataFrame:
    """Score every row (window) with ``ImageBaseline.process``; rows keep their order in the output.

    Each image (``repository:tag``) gets a baseline from the model (its trained state when it has one),
    then its windows are processed in event-time order, one window time per ``process`` call (as the service
    applies a sensor's batches): scored, decided, and learnt when unflagged, exactly as in the service.  A row
    without ``seconds_since_start`` (or < 0) gets the time since its container's first row, as the service
    fills it.  Nothing carries over between calls.  ``mode`` ("learn", "detect", "freeze", "auto")
    sets the baselines' mode first; "" keeps the model's.
    """
    vectors = frame_to_vectors(frame)
    # As the service's pipeline does: an unknown container age is the time since its first window seen.
    first: dict[tuple[str, str], float] = {}
    for v in vectors:
        ckey = (v.identity.node, v.identity.container_id)
        first[ckey] = min(first.get(ckey, v.window_start), v.window_start)
    for v in vectors:
        if v.seconds_since_start < 0:
            v.seconds_since_start = v.window_start - first[(v.identity.node, v.identity.container_id)]
    groups: dict[str, list[int]] = {}
    for i, v in enumerate(vectors):
        groups.setdefault(v.identity.image, []).append(i)
    rows: list[dict[str, Any] | None] = [None] * len(vectors)
    for key, idx in groups.items():
        idx.sort(key=lambda i: vectors[i].window_start)
        b = model.new_baseline(key)
        if mode:
            b.set_mode(Mode(mode))
        # One call per window time, as the service applies a sensor's batches: within a call every window is
        # scored against the state before it, so one call over hours of windows would not be online.
        start = 0
        while start < len(idx):
            end = start + 1
            t = vectors[idx[start]].window_start
            while end < len(idx) and vectors[idx[end]].window_start == t:
                end += 1
            part = idx[start:end]
            for i, verdict in zip(part, b.process([vectors[i] for i in part]), strict=True):
                rows[i] = verdict_row(key, verdict)
            start = end
    return pd.DataFrame(rows, columns=[c for c, _ in OUTPUT_COLUMNS])


class _PyFuncModel:
    """What ``mlflow.pyfunc.load_model`` wraps: the model plus :func:`score_frame`."""

    def __init__(self, model: BaselinerModel) -> None:
        self.model = model
        self.python_model = model  # what mlflow's PyFuncModel.unwrap_python_model() returns

    def predict(self, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        mode = str((params or {}).get("mode") or "")
        if mode and mode not in {m.value for m in Mode}:
            raise ValueError(f"params.mode must be one of {', '.join(m.value for m in Mode)} (got {mode!r})")
        return score_frame(self.model, model_input, mode)


def _load_pyfunc(path: str, model_config: dict[str, Any] | None = None) -> _PyFuncModel:
    """MLflow's entry point (``loader_module``): ``path`` is the model's ``baseliner`` data directory."""
    return _PyFuncModel(load_local(path, _trusted_from_env(model_config), data=DATA_DIR))
