"""``baseliner baselines export|diff|register|import``: learned per-image baselines to and from MLflow.

What each command writes and reads is in ``docs/mlflow.md`` ("Baselines in MLflow").  Import into the state
directory of a *stopped* service: a running one writes its own baselines over them at its next checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from baseliner.models.baseline import ImageBaseline
from baseliner.models.errors import ConfigError, StateError
from baseliner.models.integrity import atomic_write
from baseliner.sensor.cli_checks import creatable_dir, examples, existing_dir, readable_file
from baseliner.service.store import baseline_filename, decode_file

log = logging.getLogger(__name__)

ARTIFACT_DIR = "baselines"
INDEX = "index.json"


RAW = argparse.RawDescriptionHelpFormatter
_SERVER = "--tracking-uri http://127.0.0.1:5000"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "baselines", help="export learned baselines to MLflow (one artifact per image), import them back",
        description=__doc__.split("\n\n")[0] if __doc__ else None, formatter_class=RAW,
        epilog=examples(f"baseliner baselines export --state-dir /var/lib/baseliner {_SERVER}",
                        f"baseliner baselines diff RUN_A RUN_B {_SERVER}"),
    )
    sub = p.add_subparsers(dest="baselines_command", required=True)
    d = sub.add_parser("diff", help="what changed in the baselines between two exports (runs)", formatter_class=RAW,
                       epilog=examples(f"baseliner baselines diff 0a1b2c... 3d4e5f... {_SERVER} --image nginx:1.27"))
    d.add_argument("run_a", help="MLflow run id of the older export")
    d.add_argument("run_b", help="MLflow run id of the newer export")
    d.add_argument("--top", type=int, default=5, help="features with the largest shift to show per image")
    d.add_argument("--json", action="store_true", help="print the diff as JSON")
    g = sub.add_parser("register", help="register one learned baseline as a Baseliner model (warm start)",
                       formatter_class=RAW, epilog=examples(
                           f"baseliner baselines register nginx:1.27 --state-dir /var/lib/baseliner {_SERVER} "
                           "--name baseliner-nginx --alias champion"))
    g.add_argument("image", help="image key of the baseline, e.g. nginx:1.27")
    g.add_argument("--name", required=True, help="registered model name")
    g.add_argument("--alias", default="", help="point this alias (e.g. champion) at the new version")
    g.add_argument("--registry-uri", default="", help="MLflow model registry (default: MLFLOW_REGISTRY_URI, else the "
                                                      "tracking server)")
    e = sub.add_parser("export", help="log the baselines of a state directory as an MLflow run", formatter_class=RAW,
                       epilog=examples(f"baseliner baselines export --state-dir /var/lib/baseliner {_SERVER} "
                                       "--hmac-key-file /etc/baseliner/state.key --run-name nightly"))
    e.add_argument("--run-name", default="", help="MLflow run name")
    i = sub.add_parser("import", help="write the baselines an MLflow run holds into a state directory",
                       formatter_class=RAW, epilog=examples(
                           f"baseliner baselines import 0a1b2c... --state-dir /var/lib/baseliner {_SERVER} "
                           "--image nginx:1.27 --force"))
    i.add_argument("run_id", help="MLflow run id of an export")
    i.add_argument("--force", action="store_true", help="overwrite baselines already in the state dir")
    for s in (g, e, i):
        s.add_argument("--state-dir", required=True, type=creatable_dir if s is i else existing_dir,
                       help="the service's state directory (state.dir)")
        s.add_argument("--hmac-key-file", type=readable_file,
                       help="state integrity key (state.hmac_key_file); also signs a registered model")
    for s in (g, e):
        s.add_argument("--experiment", default="baseliner-baselines", help="MLflow experiment name")
    for s in (d, e, i):
        s.add_argument("--image", action="append", default=[], help="only this image key (repeatable)")
    for s in (d, g, e, i):
        s.add_argument("--tracking-uri", default="", help="MLflow tracking server (default: MLFLOW_TRACKING_URI)")
    return p


def _key(path: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes().strip() or None
    except OSError as e:
        raise ConfigError(f"cannot read --hmac-key-file {path}: {e.strerror}") from None


def summary(b: ImageBaseline) -> dict[str, Any]:
    """A readable, diffable view of a baseline."""

    def num(x: float) -> float | None:
        return x if math.isfinite(x) else None

    return {
        "key": b.key,
        "state": b.state.value,
        "mode": b.mode.value,
        "windows_learned": b.windows_learned,
        "windows_scored": b.windows_scored,
        "anomalies": b.anomalies,
        "threshold": num(b.threshold),
        "first_window": num(b.first_window),
        "last_window": num(b.last_window),
        "config": b.config.to_dict(),
        "features": [
            {"name": n, "mean": num(m), "std": num(s), "unit": u, "typical": num(t)}
            for n, m, s, u, t in b.feature_stats()
        ],
        "novelty": b.novelty_sets(),
    }


def read_state_dir(state_dir: Path, key: bytes | None, images: list[str]) -> list[tuple[str, Path, ImageBaseline]]:
    """Verified baselines of a state directory: ``(image key, file, baseline)``."""
    bdir = state_dir / "baselines"
    if not bdir.is_dir():
        raise ConfigError(f"{state_dir} holds no baselines (no {bdir})")
    out = []
    for path in sorted(bdir.glob("*.state")):
        header, meta, arrays = decode_file(path.read_bytes(), key, str(path))
        if header.get("kind") != "baseline":
            continue
        image = str(header.get("key", ""))
        if images and image not in images:
            continue
        out.append((image, path, ImageBaseline.from_state(meta, arrays)))
    missing = sorted(set(images) - {i for i, _, _ in out})
    if missing:
        raise ConfigError(f"no baseline for image(s) {', '.join(missing)} in {state_dir}")
    return out


def export(state_dir: Path, key: bytes | None, images: list[str], experiment: str, run_name: str) -> str:
    import mlflow

    found = read_state_dir(state_dir, key, images)
    mlflow.set_experiment(experiment)
    with tempfile.TemporaryDirectory(prefix="baseliner-export-") as tmp, \
            mlflow.start_run(run_name=run_name or None) as run:
        out = Path(tmp) / ARTIFACT_DIR
        out.mkdir()
        index: dict[str, Any] = {}
        for image, path, b in found:
            (out / path.name).write_bytes(path.read_bytes())
            s = summary(b)
            (out / path.with_suffix(".json").name).write_text(json.dumps(s, indent=1, sort_keys=True))
            index[image] = {"file": path.name, "state": s["state"], "windows_learned": s["windows_learned"],
                            "threshold": s["threshold"]}
        (Path(tmp) / INDEX).write_text(json.dumps(index, indent=1, sort_keys=True))
        mlflow.log_artifacts(str(out), ARTIFACT_DIR)
        mlflow.log_artifact(str(Path(tmp) / INDEX))
        mlflow.log_params({"state_dir": str(state_dir), "integrity": "hmac-sha256" if key else "sha256"})
        mlflow.log_metric("baselines", len(found))
        mlflow.set_tags({"baseliner.kind": "baselines-export"})
        log.info("exported %d baselines to run %s", len(found), run.info.run_id)
        return str(run.info.run_id)


def _download_export(run_id: str, tmp: str) -> tuple[dict[str, Any], Path]:
    """The index of an export run and the local folder of its files."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        index = json.loads(Path(mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=INDEX, dst_path=tmp)).read_text())
        files = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=ARTIFACT_DIR, dst_path=tmp))
    except MlflowException as e:
        raise ConfigError(f"run {run_id} is not a baselines export: {e.message}") from None
    if not isinstance(index, dict):
        raise StateError(f"run {run_id}: {INDEX} is not an object")
    return index, files


def import_run(run_id: str, state_dir: Path, key: bytes | None, images: list[str], force: bool) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="baseliner-import-") as tmp:
        index, files = _download_export(run_id, tmp)
        wanted = images or sorted(index)
        missing = sorted(set(wanted) - set(index))
        if missing:
            raise ConfigError(f"run {run_id} holds no baseline for {', '.join(missing)}")
        verified: list[tuple[str, bytes]] = []
        for image in wanted:
            name = baseline_filename(image)
            path = files / name
            if index[image].get("file") != name or not path.is_file():
                raise StateError(f"run {run_id}: the file for {image!r} is missing or misnamed")
            data = path.read_bytes()
            header, meta, arrays = decode_file(data, key, f"run {run_id}: {name}")
            if header.get("kind") != "baseline" or header.get("key") != image:
                raise StateError(f"run {run_id}: {name} is not the baseline of {image!r}")
            ImageBaseline.from_state(meta, arrays)  # layout and version check before anything is written
            verified.append((image, data))
    bdir = state_dir / "baselines"
    if not force:
        present = [i for i, _ in verified if (bdir / baseline_filename(i)).exists()]
        if present:
            raise ConfigError(f"{state_dir} already has baselines for {', '.join(present)}; --force replaces them")
    for image, data in verified:
        atomic_write(bdir / baseline_filename(image), data)
    return [i for i, _ in verified]


def register(state_dir: Path, key: bytes | None, image: str, name: str, alias: str, experiment: str) -> int:
    """Log ``image``'s learned baseline as a Baseliner model (config + state), register it; returns the version."""
    import mlflow
    from baseliner.models.mlflow_model import BaselinerModel, log_model
    from mlflow import MlflowClient

    ((_, path, baseline),) = read_state_dir(state_dir, key, [image])
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=f"register {image}"):
        mlflow.log_params({"state_dir": str(state_dir), "image": image, "state_file": path.name})
        info = log_model(BaselinerModel.from_baseline(baseline, f"learned baseline of {image} from {state_dir}"),
                         "model", registered_model_name=name, hmac_key=key)
    version = int(info.registered_model_version)
    if alias:
        MlflowClient().set_registered_model_alias(name, alias, str(version))
    return version


def _summaries(run_id: str, tmp: str) -> dict[str, dict[str, Any]]:
    index, files = _download_export(run_id, f"{tmp}/{run_id}")
    out = {}
    for image, entry in index.items():
        path = files / Path(str(entry.get("file", ""))).with_suffix(".json").name
        try:
            out[image] = json.loads(path.read_text())
        except (OSError, ValueError):
            raise StateError(f"run {run_id}: the summary of {image!r} is missing or not JSON") from None
    return out


def diff_summaries(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]], images: list[str] | None = None,
                   top: int = 5) -> dict[str, Any]:
    """Per image: only in one export, or the changes of state, counters, threshold, feature means, novelty sets.

    Feature shifts are ``(mean_b - mean_a) / std_a`` in log-rate space (``std_a`` floored at 0.1).
    """
    keys = sorted(set(a) | set(b)) if not images else images
    out: dict[str, Any] = {}
    for image in keys:
        if image not in b or image not in a:
            out[image] = {"only_in": "a" if image in a else ("b" if image in b else "neither")}
            continue
        x, y = a[image], b[image]
        entry: dict[str, Any] = {
            k: [x.get(k), y.get(k)] for k in ("state", "mode", "windows_learned", "threshold") if x.get(k) != y.get(k)
        }
        fa = {f["name"]: f for f in x.get("features", [])}
        shifts = []
        for f in y.get("features", []):
            old = fa.get(f["name"])
            if old is None or old.get("mean") is None or f.get("mean") is None:
                continue
            z = (f["mean"] - old["mean"]) / max(old.get("std") or 0.0, 0.1)
            if z:
                shifts.append({"feature": f["name"], "typical_a": old.get("typical"), "typical_b": f.get("typical"),
                               "unit": f.get("unit"), "shift_std": round(z, 3)})
        shifts.sort(key=lambda s: -abs(s["shift_std"]))
        if shifts[:top]:
            entry["features"] = shifts[:top]
        novelty = {}
        na, nb = x.get("novelty", {}), y.get("novelty", {})
        for kind in sorted(set(na) | set(nb)):
            added = sorted(set(nb.get(kind, [])) - set(na.get(kind, [])))
            removed = sorted(set(na.get(kind, [])) - set(nb.get(kind, [])))
            if added or removed:
                novelty[kind] = {"added": added, "removed": removed}
        if novelty:
            entry["novelty"] = novelty
        out[image] = entry
    return out


def _g(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def _print_diff(d: dict[str, Any]) -> None:
    for image, entry in d.items():
        if "only_in" in entry:
            print(f"{image}: only in export {entry['only_in']}")
            continue
        if not entry:
            print(f"{image}: unchanged")
            continue
        print(f"{image}:")
        for k in ("state", "mode", "windows_learned", "threshold"):
            if k in entry:
                print(f"  {k}: {entry[k][0]} -> {entry[k][1]}")
        for f in entry.get("features", []):
            print(f"  {f['feature']}: typical {_g(f['typical_a'])} -> {_g(f['typical_b'])} {f['unit']} "
                  f"({f['shift_std']:+.2f} std)")
        for kind, ch in entry.get("novelty", {}).items():
            if ch["added"]:
                print(f"  new {kind}: {', '.join(ch['added'])}")
            if ch["removed"]:
                print(f"  no longer {kind}: {', '.join(ch['removed'])}")


def use_servers(tracking_uri: str, registry_uri: str = "") -> None:
    """Point this process's MLflow at the given servers (else MLflow's environment variables); refuse MLflow's
    default, a database in the working directory."""
    import mlflow

    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if not tracking_uri:
        raise ConfigError("no MLflow tracking server: give --tracking-uri or set MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri or os.environ.get("MLFLOW_REGISTRY_URI", "") or tracking_uri)


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    use_servers(args.tracking_uri, getattr(args, "registry_uri", ""))
    if args.baselines_command == "diff":
        with tempfile.TemporaryDirectory(prefix="baseliner-diff-") as tmp:
            d = diff_summaries(_summaries(args.run_a, tmp), _summaries(args.run_b, tmp), args.image, args.top)
        if args.json:
            print(json.dumps(d, indent=1, sort_keys=True))
        else:
            _print_diff(d)
        return 0
    key = _key(args.hmac_key_file or "")
    state_dir = Path(args.state_dir)
    if args.baselines_command == "register":
        version = register(state_dir, key, args.image, args.name, args.alias, args.experiment)
        print(f"models:/{args.name}/{version}")
        return 0
    if args.baselines_command == "export":
        run_id = export(state_dir, key, args.image, args.experiment, args.run_name)
        print(run_id)
        return 0
    done = import_run(args.run_id, state_dir, key, args.image, args.force)
    print(f"imported {len(done)} baselines into {state_dir}: {', '.join(done)}", file=sys.stderr)
    return 0
