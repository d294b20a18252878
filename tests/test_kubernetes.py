"""deploy/kubernetes/: the kustomization for EKS and plain Kubernetes, built with the real
`kubectl kustomize` and validated like deploy/ (kubernetes-validate --strict, the CRD schemas)."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from test_deploy import (  # the fixtures and helpers deploy/ is checked with
    CRD_FILES,
    KUBERNETES_VERSION,
    _load_docs,
    _tool,
    crd_validators,
    kubernetes_validate,
)

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUSTOMIZATION = DEPLOY / "kubernetes"
EXPECTED_KINDS = [
    "Namespace",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "Service",
    "DaemonSet",
    "PrometheusRule",
    "ServiceMonitor",
]
__all__ = ["crd_validators", "kubernetes_validate"]


def _build(directory: Path) -> list[dict[str, Any]]:
    kubectl = _tool("kubectl", env="KUBECTL")
    result = subprocess.run(
        [kubectl, "kustomize", "--load-restrictor=LoadRestrictionsNone", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def built() -> dict[str, dict[str, Any]]:
    objects = _build(KUSTOMIZATION)
    assert sorted(obj["kind"] for obj in objects) == sorted(EXPECTED_KINDS)
    return {obj["kind"]: obj for obj in objects}


def _deployed(kind: str) -> dict[str, Any]:
    (obj,) = [doc for path in sorted(DEPLOY.glob("*.yaml")) for doc in _load_docs(path) if doc["kind"] == kind]
    return obj


def test_no_kustomization_in_deploy_itself() -> None:
    """kubectl apply -f deploy/ would read it as a manifest."""
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        assert not (DEPLOY / name).exists(), name


def test_nothing_of_openshift_is_left(built: dict[str, dict[str, Any]]) -> None:
    for kind, obj in built.items():
        assert "openshift.io" not in obj["apiVersion"], kind
        text = yaml.safe_dump({k: v for k, v in obj.items() if k != "spec"})
        assert "openshift.io/" not in text, f"{kind} keeps an OpenShift label or annotation"
    assert "annotations" not in built["DaemonSet"]["spec"]["template"]["metadata"]


def test_namespace_is_privileged_for_pod_security_admission(built: dict[str, dict[str, Any]]) -> None:
    labels = built["Namespace"]["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "privileged"


def test_daemonset_is_deploys_less_the_scc_annotation(built: dict[str, dict[str, Any]]) -> None:
    expected = copy.deepcopy(_deployed("DaemonSet"))
    del expected["spec"]["template"]["metadata"]["annotations"]
    assert built["DaemonSet"] == expected
    for kind in ("ServiceAccount", "Role", "Service"):
        assert built[kind] == _deployed(kind), kind


def test_kube_prometheus_stack_finds_and_may_scrape_the_exporter(built: dict[str, dict[str, Any]]) -> None:
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert built[kind]["metadata"]["labels"]["release"] == "kube-prometheus-stack", kind
        assert built[kind]["spec"] == _deployed(kind)["spec"], kind
    assert built["RoleBinding"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "kube-prometheus-stack-prometheus", "namespace": "monitoring"}
    ]
    assert "release" not in built["DaemonSet"]["metadata"]["labels"]


def test_release_label_is_set_in_one_place(tmp_path: Path) -> None:
    copy_of_deploy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy_of_deploy)
    transformer = copy_of_deploy / "kubernetes" / "release-label.yaml"
    text = transformer.read_text(encoding="utf-8")
    assert text.count("release: kube-prometheus-stack") == 1
    transformer.write_text(text.replace("release: kube-prometheus-stack", "release: monitoring"), encoding="utf-8")
    objects = {obj["kind"]: obj for obj in _build(copy_of_deploy / "kubernetes")}
    assert objects["ServiceMonitor"]["metadata"]["labels"]["release"] == "monitoring"
    assert objects["PrometheusRule"]["metadata"]["labels"]["release"] == "monitoring"


@pytest.mark.parametrize("kind", [k for k in EXPECTED_KINDS if k not in CRD_FILES])
def test_core_kind_is_valid_for_kubernetes(
    kubernetes_validate: Any, built: dict[str, dict[str, Any]], kind: str
) -> None:
    kubernetes_validate.validate(built[kind], KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("kind", ["ServiceMonitor", "PrometheusRule"])
def test_custom_resource_matches_its_crd(
    crd_validators: dict[str, Callable[[dict[str, Any]], None]], built: dict[str, dict[str, Any]], kind: str
) -> None:
    crd_validators[kind](built[kind])


def test_readmes_relabeling_patch_builds_a_valid_servicemonitor(
    crd_validators: dict[str, Callable[[dict[str, Any]], None]], tmp_path: Path
) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (patch,) = [block for block in re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL) if "metricRelabelings" in block]
    copy_of_deploy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy_of_deploy)
    kustomization = copy_of_deploy / "kubernetes" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text(encoding="utf-8") + patch, encoding="utf-8")
    monitor = {obj["kind"]: obj for obj in _build(copy_of_deploy / "kubernetes")}["ServiceMonitor"]
    crd_validators["ServiceMonitor"](monitor)
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["metricRelabelings"][0]["action"] == "drop"
