"""Every Kubernetes manifest under deploy/kubernetes passes kubernetes-validate (strict: no unknown field), as
written and as each runtime overlay (deploy/kubernetes/runtime/*) renders the sensor's DaemonSet; the sensor
mounts its runtime's socket read-only and asks it, never a docker.sock it was not told to use."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

K8S = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes"
#: the oldest Kubernetes the manifests target and the newest schema the validator ships
VERSIONS = ("1.27.0", kubernetes_validate.utils.latest_version())
#: prometheus-operator's kinds: CRDs, for which kubernetes-validate has no schema (checked in test_stack_configs)
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
OVERLAYS = {"crio": "cri=/run/crio/crio.sock", "k3s": "cri=/run/k3s/containerd/containerd.sock",
            "docker": "docker=/var/run/docker.sock"}


def manifests() -> list[tuple[str, dict[str, Any]]]:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    out = []
    for name in kust["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            if doc:
                out.append((f"{name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return out


def daemonset() -> dict[str, Any]:
    (ds,) = [d for _, d in manifests() if d["kind"] == "DaemonSet"]
    return ds


def render_overlay(name: str) -> dict[str, Any]:
    """The sensor DaemonSet as ``kubectl apply -k deploy/kubernetes/runtime/<name>`` renders it."""
    kust = yaml.safe_load((K8S / "runtime" / name / "kustomization.yaml").read_text())
    assert kust["resources"] == ["../.."]
    (patch,) = kust["patches"]
    assert patch["target"] == {"kind": "DaemonSet", "name": "baseliner-sensor"}
    return jsonpatch.apply_patch(daemonset(), yaml.safe_load(patch["patch"]))  # raises if a 'test' op fails


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates(version: str) -> None:
    checked = 0
    for where, doc in manifests():
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            with pytest.raises(SchemaNotFoundError):
                kubernetes_validate.validate(doc, version, strict=True)
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{where} (Kubernetes {version}): {e}")
        checked += 1
    assert checked >= 7


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_runtime_overlays_render_valid_daemonsets(overlay: str, version: str) -> None:
    kubernetes_validate.validate(render_overlay(overlay), version, strict=True)


def socket_of(ds: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    pod = ds["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    args = c["args"]
    runtime = args[args.index("--runtime") + 1]
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "runtime-socket"]
    (vol,) = [v for v in pod["volumes"] if v["name"] == "runtime-socket"]
    return runtime, mount, vol


@pytest.mark.parametrize("overlay", [None, *sorted(OVERLAYS)])
def test_the_sensor_mounts_its_runtime_socket_read_only(overlay: str | None) -> None:
    ds = daemonset() if overlay is None else render_overlay(overlay)
    runtime, mount, vol = socket_of(ds)
    assert runtime == ("cri=/run/containerd/containerd.sock" if overlay is None else OVERLAYS[overlay])
    path = runtime.split("=", 1)[1]
    assert mount["mountPath"] == vol["hostPath"]["path"] == path
    assert mount["readOnly"] is True and vol["hostPath"]["type"] == "Socket"
    volumes = {v["hostPath"]["path"] for v in ds["spec"]["template"]["spec"]["volumes"] if "hostPath" in v}
    if overlay != "docker":
        assert not any("docker" in v for v in volumes), volumes
    # the sensor CLI takes these arguments
    from baseliner.sensor.cli import add_parser

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    given = ds["spec"]["template"]["spec"]["containers"][0]["args"]
    # (files from the pod's Secret and spool volume: tests/test_stack_configs.py parses them with real files)
    pod_files = {"--tls-ca", "--tls-cert", "--tls-key", "--token-file", "--spool-dir", "--spool-key-file"}
    args = parser.parse_args([a for i, a in enumerate(given) if a not in pod_files and given[i - 1] not in pod_files])
    assert [f"{r.kind}={r.path}" for r in args.runtime] == [runtime]


def test_the_shard_list_names_every_statefulset_pod_and_the_config_loads(tmp_path: Path) -> None:
    """The ConfigMap's shard list names exactly the StatefulSet's pods at their headless-Service DNS names; the
    service reads the list from the mounted file; a PodDisruptionBudget keeps all but one shard up."""
    from baseliner.models.shards import parse_shard_list
    from baseliner.service.config import load

    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in manifests()}
    sts = docs[("StatefulSet", "baseliner-service")]
    cm = docs[("ConfigMap", "baseliner-config")]
    headless = docs[("Service", sts["spec"]["serviceName"])]
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    shards = parse_shard_list(cm["data"]["shards"])
    n = sts["spec"]["replicas"]
    assert n >= 2
    assert [s.name for s in shards] == [f"baseliner-service-{i}" for i in range(n)]
    assert all(s.address.startswith(f"{s.name}.{headless['metadata']['name']}.baseliner.svc") for s in shards)
    assert docs[("PodDisruptionBudget", "baseliner-service")]["spec"]["maxUnavailable"] == 1
    from baseliner.service import init_secrets

    (tmp_path / "shards").write_text(cm["data"]["shards"])
    init_secrets.create(tmp_path / "secrets", ["node-1"])  # the Secret the StatefulSet mounts
    text = cm["data"]["baseliner.yaml"].replace("/etc/baseliner/shards", str(tmp_path / "shards"))
    text = text.replace(init_secrets.SERVICE_MOUNT, str(tmp_path / "secrets"))
    text = text.replace("/var/lib/baseliner/state", str(tmp_path / "state"))
    (tmp_path / "baseliner.yaml").write_text(text)
    cfg = load(str(tmp_path / "baseliner.yaml"), environ={})  # (raises ConfigError naming any problem)
    assert cfg.shards.list == f"@{tmp_path / 'shards'}" and not cfg.shards.name
