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
    volumes = {v["hostPath"]["path"] for v in ds["spec"]["template"]["spec"]["volumes"]}
    if overlay != "docker":
        assert not any("docker" in v for v in volumes), volumes
    # the sensor CLI takes these arguments
    from baseliner.sensor.cli import add_parser

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(ds["spec"]["template"]["spec"]["containers"][0]["args"])
    assert [f"{r.kind}={r.path}" for r in args.runtime] == [runtime]
