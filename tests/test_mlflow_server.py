"""Issue 5 against a real MLflow tracking server: log, register, alias, serve with it, reload, export/import."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from baseliner.models import mlflow_model as mm
from baseliner.models.baseline import BaselineConfig, ImageBaseline, Mode
from baseliner.models.integrity import Keyring
from baseliner.models.signatures import Signer, TrustedKeys, write_key_pair
from baseliner.service.baselines_cli import export, import_run
from baseliner.service.config import PipelineConfig
from baseliner.service.pipeline import Pipeline
from baseliner.service.server import BaselinerServer
from baseliner.service.store import StateStore
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from mlflow import MlflowClient

from tests.mlflow_server import mlflow_server
from tests.service_fixtures import batch_request, config, exchange, hello, running, scrape, state_key_file, vector

pytestmark = pytest.mark.slow
#: The model publisher's signing key (the notebook's, `baselines register`'s) and the public key the service trusts;
#: a rogue publisher's key the service does not trust.
KEYS = Path(tempfile.mkdtemp(prefix="baseliner-model-keys-"))
for _who in ("publisher", "rogue"):
    write_key_pair(Ed25519PrivateKey.generate(), KEYS / f"{_who}.key", KEYS / f"{_who}.pub")
PUBLISHER, ROGUE = Signer.load(KEYS / "publisher.key"), Signer.load(KEYS / "rogue.key")
PUB = KEYS / "publisher.pub"
TRUSTED = TrustedKeys.load(PUB)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as url:
        mlflow.set_tracking_uri(url)
        mlflow.set_experiment("baseliner-tests")  # not an experiment id another module's store left active
        yield url
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]


def trained(repo: str = "nginx", windows: int = 60) -> ImageBaseline:
    b = ImageBaseline(f"{repo}:1.27", BaselineConfig(min_learn_windows=20, min_learn_seconds=0, stable_confidence=0))
    b.process([vector(i, c, repo=repo) for i in range(windows) for c in range(2)])
    assert b.state.value == "detecting"
    return b


def register(name: str, model: mm.BaselinerModel, alias: str = "champion", signer: Signer = PUBLISHER) -> int:
    with mlflow.start_run():
        info = mm.log_model(model, "model", registered_model_name=name, signer=signer)
    version = int(info.registered_model_version)
    MlflowClient().set_registered_model_alias(name, alias, str(version))
    return version


def serve_config(url: str, uri: str, *extra: tuple[str, Any]) -> Any:
    return config(None, ("model.uri", uri), ("model.tracking_uri", url), ("model.trusted_keys_file", str(PUB)),
                  ("model.timeout_seconds", 5), *extra)


def test_service_scores_with_the_champion(server: str) -> None:
    b = trained()
    version = register("bl-champion", mm.BaselinerModel.from_baseline(b, "nginx trained"))
    # what the model says about a reverse shell in a container it never saw, outside the service
    windows = [vector(1000, 7), vector(1001, 7), vector(1002, 7, attack="shell")]
    os.environ[mm.ENV_TRUSTED_KEYS] = str(PUB)
    try:
        offline = mlflow.pyfunc.load_model("models:/bl-champion@champion").predict(mm.vectors_to_frame(windows))
    finally:
        del os.environ[mm.ENV_TRUSTED_KEYS]
    assert offline["anomalous"].tolist() == [False, False, True]

    async def main() -> None:
        async with running(serve_config(server, "models:/bl-champion@champion")) as (srv, events):
            assert srv.model_source.current.version == version
            await exchange(srv.port, [hello(), batch_request(windows, 1)])
            baseline = srv.pipeline.baselines["nginx:1.27"]
            # warm start: detecting from its first window, with the model's threshold and novelty sets
            assert baseline.state.value == "detecting"
            assert baseline.threshold == pytest.approx(b.threshold)
            assert baseline.windows_scored == 3
            assert len(events) == 1 and "/bin/sh" in str(events[0])
            assert events[0]["score"] == pytest.approx(float(offline["score"].iloc[2]))
            text = scrape(srv.metrics_port)
            assert f"baseliner_model_version {float(version)}" in text
            assert "baseliner_model_warm_start 1.0" in text

    asyncio.run(main())


def test_reload_switches_version_and_keeps_learned_baselines(server: str) -> None:
    name = "bl-reload"
    cold = BaselineConfig(min_learn_windows=25, min_learn_seconds=0, stable_confidence=0, false_alarms_per_day=0.5)
    register(name, mm.BaselinerModel(cold))

    async def main() -> None:
        async with running(serve_config(server, f"models:/{name}@champion")) as (srv, _events):
            await exchange(srv.port, [hello(), batch_request([vector(i, c) for i in range(10) for c in range(2)], 1)])
            nginx = srv.pipeline.baselines["nginx:1.27"]
            assert nginx.config.min_learn_windows == 25 and nginx.state.value == "learning"
            learned = nginx.windows_learned

            # v2: a trained redis model; the alias moves, SIGHUP reloads
            v2 = register(name, mm.BaselinerModel.from_baseline(trained("redis")))
            os.kill(os.getpid(), signal.SIGHUP)
            for _ in range(300):
                await asyncio.sleep(0.1)
                if srv.model_source.current.version == v2:
                    break
            assert srv.model_source.current.version == v2
            assert srv.pipeline.baselines["nginx:1.27"] is nginx and nginx.windows_learned == learned
            await exchange(srv.port, [hello("s2"), batch_request([vector(500, 3, repo="redis")], 1)])
            redis = srv.pipeline.baselines["redis:1.27"]
            assert redis.state.value == "detecting" and redis.config.min_learn_windows == 20

            # v3 is not a Baseliner model: the reload fails and v2 stays
            from sklearn.preprocessing import StandardScaler

            with mlflow.start_run():
                info = mlflow.sklearn.log_model(StandardScaler().fit(np.zeros((4, 2))), name="m",
                                                registered_model_name=name, pip_requirements=["scikit-learn"])
            MlflowClient().set_registered_model_alias(name, "champion", str(info.registered_model_version))
            assert not await srv.model_source.reload(srv.pipeline)
            assert srv.model_source.current.version == v2
            # an alias that points nowhere, and an unreachable tracking server: same
            MlflowClient().delete_registered_model_alias(name, "champion")
            assert not await srv.model_source.reload(srv.pipeline)
            srv.model_source.tracking_uri = "http://127.0.0.1:9"
            assert not await srv.model_source.reload(srv.pipeline)
            assert srv.model_source.current.version == v2
            assert "baseliner_model_load_failures_total 3.0" in scrape(srv.metrics_port)

    asyncio.run(main())


def test_relearn_on_reload_restarts_every_image_from_the_new_model(server: str) -> None:
    name = "bl-relearn"
    register(name, mm.BaselinerModel(BaselineConfig(min_learn_windows=25, min_learn_seconds=0, stable_confidence=0)))

    async def main() -> None:
        cfg = serve_config(server, f"models:/{name}@champion", ("model.relearn_on_reload", "true"))
        async with running(cfg) as (srv, _events):
            await exchange(srv.port, [hello(), batch_request([vector(i, 0) for i in range(5)], 1)])
            assert srv.pipeline.baselines["nginx:1.27"].state.value == "learning"
            register(name, mm.BaselinerModel.from_baseline(trained()))
            assert await srv.model_source.reload(srv.pipeline)
            assert srv.pipeline.baselines["nginx:1.27"].state.value == "detecting"

    asyncio.run(main())


def test_every_uri_form_resolves_against_the_servers_given(server: str) -> None:
    """models:/NAME@ALIAS, models:/NAME/VERSION, models:/NAME (latest), a logged model's models:/m-ID and
    runs:/RUN/PATH all load through ModelSource with the servers named (MLflow's own resolution of the last
    two fell back to its default store)."""
    from baseliner.service.model_source import ModelSource

    with mlflow.start_run() as run:
        info = mm.log_model(mm.BaselinerModel(BaselineConfig(min_learn_windows=31)), "model",
                            registered_model_name="bl-forms", signer=PUBLISHER)
    version = int(info.registered_model_version)
    MlflowClient().set_registered_model_alias("bl-forms", "champion", str(version))
    for uri, resolved, v in (("models:/bl-forms@champion", f"models:/bl-forms/{version}", version),
                             (f"models:/bl-forms/{version}", f"models:/bl-forms/{version}", version),
                             ("models:/bl-forms", f"models:/bl-forms/{version}", version),
                             (f"models:/{info.model_id}", f"models:/{info.model_id}", 0),
                             (f"runs:/{run.info.run_id}/model", f"runs:/{run.info.run_id}/model", 0)):
        loaded = ModelSource(uri, tracking_uri=server, registry_uri=server, trusted=TRUSTED).load()
        assert (loaded.resolved, loaded.version, loaded.model.config.min_learn_windows) == (resolved, v, 31), uri


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("models:/no-such-model@champion", "cannot resolve model models:/no-such-model@champion"),
        ("models:/bl-wrong-flavour@champion", "not a Baseliner model"),
        ("models:/bl-rogue@champion", f"signed with key {ROGUE.id}, which is not a trusted model signing key"),
    ],
)
def test_bad_model_refuses_to_start(server: str, uri: str, message: str) -> None:
    client = MlflowClient()
    if "wrong-flavour" in uri and not client.search_registered_models("name='bl-wrong-flavour'"):
        from sklearn.preprocessing import StandardScaler

        with mlflow.start_run():
            info = mlflow.sklearn.log_model(StandardScaler().fit(np.zeros((4, 2))), name="m",
                                            registered_model_name="bl-wrong-flavour",
                                            pip_requirements=["scikit-learn"])
        client.set_registered_model_alias("bl-wrong-flavour", "champion", str(info.registered_model_version))
    if "rogue" in uri:
        register("bl-rogue", mm.BaselinerModel(BaselineConfig()), signer=ROGUE)

    async def main() -> None:
        srv = BaselinerServer(serve_config(server, uri))
        with pytest.raises(mm.ModelError, match=message):
            await srv.start()
        assert srv.server is None  # nothing half-started

    asyncio.run(main())


def test_cli_refuses_unreachable_tracking_server_and_bad_uri(server: str, tmp_path: Path) -> None:
    exe = [sys.executable, "-m", "baseliner.service.cli", "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "",
           "--set", f"model.trusted_keys_file={PUB}"]
    env = mlflow_free_env()

    def serve(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*exe, *args], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)

    r = serve("--model", "models:/x@champion", "--tracking-uri", "http://127.0.0.1:9")
    assert r.returncode == 1
    assert "tracking server http://127.0.0.1:9 is unreachable" in r.stderr
    r = serve("--model", "models:/", "--tracking-uri", server)
    assert r.returncode == 1 and "is not models:/NAME@ALIAS" in r.stderr
    r = serve("--model", str(tmp_path / "missing"))
    assert r.returncode == 1 and "does not exist" in r.stderr
    r = serve("--model", "models:/bl-cli@champion")  # no server named anywhere: said so, no ./mlflow.db made
    assert r.returncode == 1 and "model models:/bl-cli@champion needs an MLflow tracking server" in r.stderr
    r = serve("--model", "models:/no-such-model@champion", "--tracking-uri", server, "--registry-uri", server)
    assert r.returncode == 1 and f"cannot resolve model models:/no-such-model@champion on {server}" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "written to the working directory"
    assert "Traceback" not in r.stderr


def test_baselines_export_and_import_round_trip(server: str, tmp_path: Path) -> None:
    state = tmp_path / "state"

    async def main() -> None:
        cfg = config(state)
        async with running(cfg) as (srv, _):
            reqs = [hello()]
            for k in range(4):
                vs = [vector(10 * k + i, c + 2 * r, repo=repo)
                      for i in range(10) for c in range(2) for r, repo in enumerate(("a", "b"))]
                reqs.append(batch_request(vs, k + 1))
            await exchange(srv.port, reqs)

    asyncio.run(main())
    keyfile = state_key_file(state)
    key = Keyring.load(keyfile)
    r = subprocess.run([sys.executable, "-m", "baseliner.service.cli", "baselines", "export", "--state-dir", str(state),
                        "--state-key-file", str(keyfile), "--tracking-uri", server, "--run-name", "nightly"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.strip().splitlines()[-1]
    assert MlflowClient().get_run(run_id).data.tags["baseliner.kind"] == "baselines-export"
    arts = {a.path for a in MlflowClient().list_artifacts(run_id, "baselines")}
    assert len([a for a in arts if a.endswith(".state")]) == 2 and len([a for a in arts if a.endswith(".json")]) == 2

    fresh = tmp_path / "restored"
    assert sorted(import_run(run_id, fresh, key, [], force=False)) == ["a:1.27", "b:1.27"]

    orig, back = Pipeline(PipelineConfig()), Pipeline(PipelineConfig())
    StateStore(state, key).restore(orig)
    StateStore(fresh, key).restore(back)
    for k, b in orig.baselines.items():
        m1, a1 = b.to_state()
        m2, a2 = back.baselines[k].to_state()
        assert m1 == m2 and all(np.array_equal(a1[n], a2[n]) for n in a1)
    # only one image, the --force rule, and a wrong key
    with pytest.raises(Exception, match="already has baselines for a:1.27"):
        import_run(run_id, fresh, key, ["a:1.27"], force=False)
    r = subprocess.run([sys.executable, "-m", "baseliner.service.cli", "baselines", "import", run_id,
                        "--state-dir", str(fresh),
                        "--state-key-file", str(keyfile), "--tracking-uri", server, "--image", "a:1.27", "--force"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "imported 1 baselines" in r.stderr, r.stderr
    # export of a subset, in-process
    assert len(MlflowClient().list_artifacts(export(state, key, ["b:1.27"], "baselines-test", ""), "baselines")) == 2

    # a day later: image a learnt more (and saw a new executable while learning), image c is new
    async def later() -> None:
        async with running(config(state)) as (srv, _):
            vs = [vector(100 + i, c, repo="a") for i in range(20) for c in range(2)]
            vs += [vector(100 + i, 9, repo="c") for i in range(5)]
            srv.pipeline.baselines["a:1.27"].set_mode(Mode.LEARN)
            for v in vs[:6]:  # seen in both containers, over several windows
                v.executables = ["/usr/bin/logrotate"]
            await exchange(srv.port, [hello(), batch_request(vs, 10)])

    asyncio.run(later())
    run_b = export(state, key, [], "baselines-test", "a day later")
    r = subprocess.run([sys.executable, "-m", "baseliner.service.cli", "baselines", "diff", run_id, run_b,
                        "--tracking-uri", server], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "c:1.27: only in export b" in r.stdout and "b:1.27: unchanged" in r.stdout
    assert "windows_learned: 80 -> 120" in r.stdout and "new executable: /usr/bin/logrotate" in r.stdout

    # promote what the service learnt for image b as a warm-start model
    r = subprocess.run([sys.executable, "-m", "baseliner.service.cli", "baselines", "register", "b:1.27", "--state-dir",
                        str(state), "--state-key-file", str(keyfile), "--tracking-uri", server, "--name", "bl-promoted",
                        "--signing-key-file", str(KEYS / "publisher.key"), "--alias", "champion"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == "models:/bl-promoted/1", r.stderr
    model = mm.load_model("models:/bl-promoted@champion", TRUSTED)
    assert model.warm and model.new_baseline("b:1.28").windows_learned == 80
    with pytest.raises(Exception, match="which is not in the configured keyring"):
        import_run(run_id, tmp_path / "other", Keyring.of("wrong-key-0123456789abcdef0123456789"), [], force=False)
    assert not (tmp_path / "other" / "baselines").exists()


def mlflow_free_env(**extra: str) -> dict[str, str]:
    """The environment of a user who names the MLflow server on the command line only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return {**env, **extra}


def test_cli_serves_the_model_and_reloads_on_sighup(server: str, tmp_path: Path) -> None:
    """As documented: the server named by --tracking-uri alone (no MLFLOW_TRACKING_URI), and nothing written to the
    working directory (MLflow's own resolution of models:/ fell back to a new ./mlflow.db there)."""
    v1 = register("bl-cli", mm.BaselinerModel(BaselineConfig(min_learn_windows=30)))
    env = mlflow_free_env(BASELINER_MODEL_TRUSTED_KEYS_FILE=str(PUB))
    log_path = tmp_path / "serve.log"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "baseliner.service.cli", "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "",
             "--events", "none", "--model", "models:/bl-cli@champion", "--tracking-uri", server],
            env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd,
        )
        try:
            def wait_for(text: str) -> None:
                for _ in range(600):
                    if text in log_path.read_text():
                        return
                    assert proc.poll() is None, log_path.read_text()
                    time.sleep(0.1)
                raise AssertionError(f"{text!r} not logged:\n{log_path.read_text()}")

            wait_for("baseliner serving gRPC")
            assert f"(models:/bl-cli/{v1}): template for new baselines (config only)" in log_path.read_text()
            v2 = register("bl-cli", mm.BaselinerModel.from_baseline(trained()))
            proc.send_signal(signal.SIGHUP)
            wait_for(f"model reloaded: models:/bl-cli/{v1} -> models:/bl-cli/{v2}")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
            assert list(cwd.iterdir()) == []
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
