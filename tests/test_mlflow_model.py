"""The ``baseliner`` MLflow flavour against a local MLflow store (sqlite + file artifacts)."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from baseliner.models import mlflow_model as mm
from baseliner.models.baseline import BaselineConfig, ImageBaseline
from baseliner.models.signatures import Signer, TrustedKeys, write_key_pair
from baseliner.models.vector import Endpoint, FeatureVector, Identity
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

IDENT = Identity("node-1", "c1", "nginx", "1.27", namespace="web")
IDENTS = (IDENT, Identity("node-2", "c2", "nginx", "1.27", namespace="web"))


def normal_windows(n: int = 60, start: float = 1.7e9) -> list[FeatureVector]:
    return [
        FeatureVector(
            IDENTS[i % 2], start + 5 * i, 5.0, {"read": 500 + i % 7, "write": 300 + i % 3, "getrandom": 2},
            executables=["/usr/sbin/nginx"] if i < 4 else [], accepts=10 + i % 4,
            endpoints=[Endpoint("10.0.0.9", 5432)], connects=1,
        )
        for i in range(n)
    ]


def shell_window(t: float) -> FeatureVector:
    return FeatureVector(
        IDENT, t, 5.0, {"read": 500, "write": 300, "execve": 2}, execs=2, executables=["/bin/sh"],
        endpoints=[Endpoint("203.0.113.7", 4444)], connects=1,
    )


def trained() -> ImageBaseline:
    b = ImageBaseline("nginx:1.27", BaselineConfig(min_learn_windows=20, min_learn_seconds=0, stable_confidence=0))
    b.process(normal_windows())
    assert b.state.value == "detecting"
    return b


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The publisher's signing key and its public key (trusted), and another publisher's (not trusted)."""
    d = tmp_path_factory.mktemp("keys")
    out: dict[str, Any] = {}
    for name in ("publisher", "rogue"):
        write_key_pair(Ed25519PrivateKey.generate(), d / f"{name}.key", d / f"{name}.pub")
        out[name] = Signer.load(d / f"{name}.key")
        out[f"{name}_pub"] = d / f"{name}.pub"
    out["trusted"] = TrustedKeys.load(out["publisher_pub"])
    return out


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]


@pytest.fixture()
def store(db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest,
          keys: dict[str, Any]) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(mm.ENV_TRUSTED_KEYS, str(keys["publisher_pub"]))  # what a pyfunc load trusts
    global SIGNER, TRUSTED
    SIGNER, TRUSTED = keys["publisher"], keys["trusted"]
    mlflow.set_tracking_uri(db)
    exp = mlflow.create_experiment(request.node.name, artifact_location=(tmp_path / "artifacts").as_uri())
    mlflow.set_experiment(experiment_id=exp)
    return tmp_path


SIGNER: Signer
TRUSTED: TrustedKeys


def log(model: mm.BaselinerModel, signer: Signer | None = None, name: str | None = None) -> str:
    with mlflow.start_run():
        info = mm.log_model(model, "model", registered_model_name=name, signer=signer or SIGNER)
    return str(info.model_uri)


def test_pyfunc_scores_with_the_one_scoring_path(store: Path) -> None:
    b = trained()
    uri = log(mm.BaselinerModel.from_baseline(b))
    windows = [*normal_windows(3, start=1.7e9 + 1000), shell_window(1.7e9 + 1020)]
    for v in windows:
        v.seconds_since_start = 3600.0  # steady state (an unknown age is filled as the service does)
    frame = mm.vectors_to_frame(windows)
    out = mlflow.pyfunc.load_model(uri).predict(frame.iloc[::-1].reset_index(drop=True))
    out = out.iloc[::-1].reset_index(drop=True)  # rows come back in input order
    assert list(out.columns) == [c for c, _ in mm.OUTPUT_COLUMNS]
    assert out["anomalous"].tolist() == [False, False, False, True]
    assert "new executable /bin/sh" in out["novel"].iloc[3]
    assert "new port tcp/4444" in out["novel"].iloc[3]
    assert out["kinds"].iloc[3].startswith("novel_executable")
    # the same numbers as ImageBaseline.process on a copy of the trained baseline, one window time per call
    meta, arrays = b.to_state()
    copy = ImageBaseline.from_state(meta, arrays)
    direct = [verdict for v in windows for verdict in copy.process([v])]
    assert np.allclose(out["score"].to_numpy(), [v.score for v in direct])
    assert out["threshold"].iloc[0] == pytest.approx(b.threshold)


def test_nothing_is_pickled(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = log(mm.BaselinerModel.from_baseline(trained()))
    local = Path(mlflow.artifacts.download_artifacts(uri))
    assert not [p for p in local.rglob("*") if p.suffix in (".pkl", ".pickle", ".cloudpickle")]
    conf = mlflow.models.Model.load(str(local / "MLmodel")).flavors
    assert conf["python_function"]["loader_module"] == "baseliner.models.mlflow_model"
    assert "cloudpickle_version" not in conf["python_function"]
    assert conf["baseliner"]["features_sha256"] == mm.features_digest()

    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("something was unpickled")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(np, "load", lambda *a, **k: _no_pickle_load(*a, **k))
    out = mlflow.pyfunc.load_model(uri).predict(mm.vectors_to_frame([shell_window(1.7e9 + 2000)]))
    assert bool(out["anomalous"].iloc[0])


_real_np_load = np.load


def _no_pickle_load(*args: Any, **kwargs: Any) -> Any:
    assert kwargs.get("allow_pickle") is False
    return _real_np_load(*args, **kwargs)


def test_cold_model_learns_within_a_call(store: Path) -> None:
    cfg = BaselineConfig(min_learn_windows=20, min_learn_seconds=0, stable_confidence=0)
    uri = log(mm.BaselinerModel(cfg))
    loaded = mlflow.pyfunc.load_model(uri)
    assert loaded.unwrap_python_model().config == cfg
    out = loaded.predict(mm.vectors_to_frame(normal_windows(10)))
    assert set(out["state"]) == {"learning"} and not out["anomalous"].any()
    # a mode given as a parameter
    out = mlflow.pyfunc.load_model(uri).predict(mm.vectors_to_frame(normal_windows(3)), params={"mode": "freeze"})
    assert set(out["state"]) == {"frozen"} and not out["learned"].any()


def test_signature_is_checked(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              keys: dict[str, Any]) -> None:
    uri = log(mm.BaselinerModel.from_baseline(trained()))
    assert mm.load_model(uri, TRUSTED).warm
    with pytest.raises(mm.ModelError, match="no trusted model signing keys are configured"):
        mm.load_model(uri, None)
    # signed by a key the service does not trust: refused by name
    rogue = log(mm.BaselinerModel.from_baseline(trained()), signer=keys["rogue"])
    with pytest.raises(mm.ModelError, match=f"signed with key {keys['rogue'].id}, which is not a trusted model "
                                            f"signing key \\(trusted: {SIGNER.id}\\); refusing the model"):
        mm.load_model(rogue, TRUSTED)
    # ... and naming the trusted key instead does not help: the signature does not verify
    local = Path(mlflow.artifacts.download_artifacts(rogue, dst_path=str(tmp_path / "forged")))
    record_path = local / mm.DATA_DIR / mm.INTEGRITY_FILE
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "key_id": SIGNER.id}))
    with pytest.raises(mm.ModelError, match=f"the signature of key {SIGNER.id} does not verify"):
        mm.load_local(local, TRUSTED)
    record_path.write_text(json.dumps({**record, "algorithm": "hmac-sha256"}))
    with pytest.raises(mm.ModelError, match="signature algorithm 'hmac-sha256' is not ed25519"):
        mm.load_local(local, TRUSTED)
    # pyfunc loads trust what the environment names
    assert mlflow.pyfunc.load_model(uri) is not None
    monkeypatch.setenv(mm.ENV_TRUSTED_KEYS, str(keys["rogue_pub"]))
    with pytest.raises(mm.ModelError, match="not a trusted model signing key"):
        mlflow.pyfunc.load_model(uri)
    monkeypatch.delenv(mm.ENV_TRUSTED_KEYS)
    with pytest.raises(mm.ModelError, match="no trusted model signing keys"):
        mlflow.pyfunc.load_model(uri)
    # nothing is saved unsigned
    with pytest.raises(mm.ModelError, match="signed by its publisher"):
        mm.save_model(mm.BaselinerModel(BaselineConfig()), tmp_path / "unsigned")


def test_tampered_state_is_refused(store: Path, tmp_path: Path) -> None:
    uri = log(mm.BaselinerModel.from_baseline(trained()))
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "dl")))
    mm.load_local(local, TRUSTED)
    state = local / mm.DATA_DIR / mm.STATE_FILE
    data = bytearray(state.read_bytes())
    data[-40] ^= 0xFF
    state.write_bytes(bytes(data))
    with pytest.raises(mm.ModelError, match="state.npz does not match its signed digest"):
        mm.load_local(local, TRUSTED)


def _reseal(data_dir: Path) -> None:
    """Sign the files again with the publisher's key (as a publisher who changed them would)."""
    names = sorted(p.name for p in data_dir.iterdir() if p.name != mm.INTEGRITY_FILE)
    digests = mm._file_digests(data_dir, names)
    kid, sig = SIGNER.sign(mm._signed_bytes(digests))
    (data_dir / mm.INTEGRITY_FILE).write_text(json.dumps(
        {"algorithm": "ed25519", "key_id": kid, "signature": sig, "files": digests}))


def test_other_feature_schema_is_refused(store: Path, tmp_path: Path) -> None:
    uri = log(mm.BaselinerModel(BaselineConfig()))
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "dl")))
    doc_path = local / mm.DATA_DIR / mm.MODEL_FILE
    doc = json.loads(doc_path.read_text())
    doc["features"] = doc["features"][:-1] + ["syscall.made_up"]
    doc_path.write_text(json.dumps(doc))
    with pytest.raises(mm.ModelError, match="model.json does not match its signed digest"):
        mm.load_local(local, TRUSTED)
    _reseal(local / mm.DATA_DIR)
    with pytest.raises(mm.ModelError, match="another feature schema.*syscall.made_up"):
        mm.load_local(local, TRUSTED)
    with pytest.raises(mm.ModelError, match="another feature schema"):
        mlflow.pyfunc.load_model(str(local))


def test_wrong_flavour_is_refused(store: Path) -> None:
    from sklearn.preprocessing import StandardScaler

    with mlflow.start_run():
        info = mlflow.sklearn.log_model(StandardScaler().fit(np.zeros((10, 2))), name="scaler",
                                        pip_requirements=["scikit-learn"])
    with pytest.raises(mm.ModelError, match="not 'baseliner'.*not a Baseliner model"):
        mm.load_model(str(info.model_uri), TRUSTED)


def test_unresolvable_uri(store: Path, tmp_path: Path) -> None:
    with pytest.raises(mm.ModelError, match="cannot resolve model models:/no-such-model@champion"):
        mm.load_model("models:/no-such-model@champion", TRUSTED)
    with pytest.raises(mm.ModelError, match="does not exist"):
        mm.load_model(str(tmp_path / "nothing-here"), TRUSTED)


def test_frame_round_trip_and_bad_rows() -> None:
    vs = [*normal_windows(2), shell_window(1.7e9 + 100)]
    vs[0].sensitive_paths.append("/etc/passwd")
    back = mm.frame_to_vectors(mm.vectors_to_frame(vs))
    for a, b in zip(vs, back, strict=True):
        assert a.syscalls == b.syscalls and a.executables == b.executables
        assert a.sensitive_paths == b.sensitive_paths and a.execs == b.execs and a.accepts == b.accepts
        assert [(e.protocol, e.port) for e in a.endpoints] == [(e.protocol, e.port) for e in b.endpoints]
        assert a.identity.image == b.identity.image and a.window_start == b.window_start
    frame = mm.vectors_to_frame(vs)
    with pytest.raises(ValueError, match="lacks columns: syscall.read"):
        mm.frame_to_vectors(frame.drop(columns=["syscall.read"]))
    bad = frame.copy()
    bad.loc[1, "net.connects"] = -1.0
    with pytest.raises(ValueError, match="row 1 net.connects: count must be finite and >= 0"):
        mm.frame_to_vectors(bad)
    bad = frame.copy()
    bad.loc[0, "ports"] = '["443"]'
    with pytest.raises(ValueError, match="is not PROTOCOL/PORT"):
        mm.frame_to_vectors(bad)
    # optional columns may be left out
    minimal = frame.drop(columns=list(mm.JSON_COLUMNS) + ["node", "seconds_since_start"])
    assert len(mm.frame_to_vectors(pd.DataFrame(minimal))) == 3


def test_unknown_container_age_is_filled_as_the_service_does() -> None:
    cfg = BaselineConfig(min_learn_windows=20, min_learn_seconds=0, stable_confidence=0, startup_seconds=12)
    out = mm.score_frame(mm.BaselinerModel(cfg), mm.vectors_to_frame(normal_windows(8)))
    # c1 and c2 alternate every 5 s: each container's windows at age 0 and 10 s are start-up windows
    assert out["startup"].tolist() == [True, True, True, True, False, False, False, False]


def test_rest_scoring_with_mlflow_models_serve(tmp_path: Path, keys: dict[str, Any]) -> None:
    """``mlflow models serve`` (local environment) scores the JSON form of the frame through the signature."""
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    from tests.mlflow_server import free_port

    mm.save_model(mm.BaselinerModel.from_baseline(trained()), tmp_path / "model", signer=keys["publisher"])
    frame = mm.vectors_to_frame([*normal_windows(2, start=1.7e9 + 1000), shell_window(1.7e9 + 1020)])
    body = json.dumps({"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}).encode()
    port = free_port()
    bindir = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""), MLFLOW_DISABLE_TELEMETRY="true",
               **{mm.ENV_TRUSTED_KEYS: str(keys["publisher_pub"])})
    proc = subprocess.Popen(
        [str(Path(bindir) / "mlflow"), "models", "serve", "-m", str(tmp_path / "model"), "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, "mlflow models serve exited"
                time.sleep(0.5)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            predictions = json.loads(r.read())["predictions"]
        assert [p["anomalous"] for p in predictions] == [False, False, True]
        assert "new executable /bin/sh" in predictions[2]["novel"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_the_flavour_keeps_a_baselines_lineage(store: Path) -> None:
    from baseliner.models.lineage import LineagePolicy, inherit

    parent = trained()
    meta, arrays = parent.to_state()
    child = ImageBaseline.from_state(meta, arrays)
    child.key = "nginx:1.28"
    inherit(child, "nginx:1.27", ["repository nginx"], LineagePolicy())
    child.process(normal_windows(20, start=1.7e9 + 1000))  # the version observed for a while
    assert child.lineage is not None and child.lineage.windows == 20
    model = mm.load_model(log(mm.BaselinerModel.from_baseline(child)), TRUSTED)
    assert model.state_meta is not None and model.state_arrays is not None
    loaded = ImageBaseline.from_state(model.state_meta, model.state_arrays)
    assert loaded.lineage is not None and loaded.lineage.to_meta() == child.lineage.to_meta()
    assert model.new_baseline("nginx:1.29").lineage is None  # a warm start is no version of the model's image
