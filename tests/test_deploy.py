"""Checks of the manifests in deploy/ and of the rules they ship.

Layers, cheapest first:
  * structure: file names, labels, namespaces, and the cross-references
    between objects (Service -> pods, ServiceMonitor -> Service, SCC -> SA, ...);
  * schemas: core kinds with kubernetes-validate --strict, the three CRD kinds
    against their openAPIV3Schema (tests/data/schemas/) with jsonschema;
  * security: what the exporter pod may do, and a checkov scan whose only
    failures are the justified ones listed in CHECKOV_EXPECTED_FAILURES;
  * rules: promtool check rules and promtool test rules
    (tests/data/rules-tests.yaml) on the PrometheusRule's spec.

A test that needs a missing tool fails when CI=true and is skipped otherwise.
promtool comes from the Debian package `prometheus`; checkov is looked up as
$CHECKOV, then on PATH.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest
from ci import unavailable

try:
    import yaml
except ImportError:
    unavailable("PyYAML is not installed", allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DATA = Path(__file__).resolve().parent / "data"
SCHEMAS = DATA / "schemas"
RULES_TESTS = DATA / "rules-tests.yaml"
# The file name rules-tests.yaml refers to in its rule_files.
RULES_FILE_NAME = "ebs-metrics-exporter.rules.yaml"

NAMESPACE = "openshift-sre-ebs-metrics"
NAME = "ebs-metrics-exporter"
LABELS = {
    "app.kubernetes.io/name": NAME,
    "app.kubernetes.io/component": NAME,
}
METRICS_PORT = 8090
# OpenShift 4.17 is built on Kubernetes 1.30.
KUBERNETES_VERSION = "1.30.0"

Manifest = dict[str, Any]

EXPECTED_KINDS = {
    "Namespace",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "SecurityContextConstraints",
    "DaemonSet",
    "Service",
    "ServiceMonitor",
    "PrometheusRule",
    "ConfigMap",
}
# The console dashboard lives where the OpenShift console reads dashboards.
OTHER_NAMESPACES = {"ConfigMap": "openshift-config-managed"}
CLUSTER_SCOPED = {"Namespace", "SecurityContextConstraints"}
CRD_FILES = {
    "ServiceMonitor": "monitoring.coreos.com_servicemonitors.yaml",
    "PrometheusRule": "monitoring.coreos.com_prometheusrules.yaml",
    "SecurityContextConstraints": "security.openshift.io_securitycontextconstraints.yaml",
}

# checkov findings that are accepted, each with the reason. The scan must fail
# exactly these checks: a new failure or a skip that no longer applies both
# fail test_checkov_reports_only_justified_findings.
_PLACEHOLDER = (
    "the image is the REPLACE_IMAGE placeholder; the deployer substitutes a "
    "fixed tag or a digest (see test_image_placeholder_substitutes_cleanly)"
)
_ROOT_UID = (
    "runs as uid 0: the NVMe device nodes are root-owned (mode 0600), and a "
    "non-root process holds no effective capabilities even in a privileged "
    "container (Kubernetes grants no ambient capabilities)"
)
_PRIVILEGED = (
    "privileged: the runtime's device cgroup allow-list (cgroup v1 devices "
    "controller / cgroup v2 eBPF program) lets a non-privileged container open "
    "only the default devices, whatever its capabilities; Kubernetes has no "
    "field to extend it other than privileged, so open(/dev/nvmeN) fails with "
    "EPERM without it"
)
_ESCALATION = (
    "allowPrivilegeEscalation is true because the API server rejects false "
    "next to privileged: true; a privileged process holds every capability, "
    "so no_new_privs would protect nothing here"
)
_NO_CAPABILITY_LIST = (
    "no capabilities listed: CRI-O and containerd ignore capabilities.add/drop "
    "for privileged containers (they get every capability), so a drop list "
    "would state a restriction that is not applied"
)
CHECKOV_EXPECTED_FAILURES = {
    "CKV_K8S_14": _PLACEHOLDER,  # image tag fixed, not latest or blank
    "CKV_K8S_43": _PLACEHOLDER,  # image pinned by digest
    # imagePullPolicy Always: the image is deployed by fixed tag or digest, and
    # Always would keep the exporter from restarting on a node while the
    # registry is unreachable.
    "CKV_K8S_15": "IfNotPresent is deliberate for a node agent with a pinned image",
    "CKV_K8S_23": _ROOT_UID,  # runAsNonRoot
    "CKV_K8S_40": _ROOT_UID,  # high uid
    "CKV_K8S_16": _PRIVILEGED,  # privileged container
    "CKV_K8S_20": _ESCALATION,  # allowPrivilegeEscalation
    "CKV_K8S_28": _NO_CAPABILITY_LIST,  # NET_RAW not dropped
    "CKV_K8S_37": _NO_CAPABILITY_LIST,  # capabilities not minimised
    # NetworkPolicy: the pod listens on :8090 only, for Prometheus, whose
    # namespace differs between OpenShift and other distributions; a policy
    # that admits only it is cluster-specific and left to the cluster owner.
    "CKV2_K8S_6": "no NetworkPolicy shipped; the scraping namespace is cluster-specific",
}
# Checks that must pass on the DaemonSet whatever else changes.
CHECKOV_REQUIRED_PASSES = {
    "CKV_K8S_17",  # no hostPID
    "CKV_K8S_18",  # no hostIPC
    "CKV_K8S_19",  # no hostNetwork
    "CKV_K8S_26",  # no hostPort
    "CKV_K8S_27",  # no container runtime socket mounted
    "CKV_K8S_22",  # read-only root filesystem
    "CKV_K8S_25",  # no capabilities added
    "CKV_K8S_31",  # seccomp RuntimeDefault (see the DaemonSet on what it means there)
    "CKV_K8S_38",  # no service account token
    "CKV_K8S_8",  # liveness probe
    "CKV_K8S_9",  # readiness probe
    "CKV_K8S_10",  # cpu request
    "CKV_K8S_11",  # cpu limit
    "CKV_K8S_12",  # memory request
    "CKV_K8S_13",  # memory limit
}


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _tool(name: str, env: str | None = None) -> str:
    configured = os.environ.get(env) if env else None
    path = shutil.which(configured) if configured else shutil.which(name)
    if not path:
        unavailable(f"{name} is missing" + (f": set ${env} or put it on PATH" if env else ""))
    assert path is not None
    return path


def _load_docs(path: Path) -> list[Manifest]:
    with path.open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def _manifest_files() -> list[Path]:
    return sorted(DEPLOY.glob("*.yaml"))


def _rules_spec(manifests: dict[str, Manifest]) -> dict[str, Any]:
    spec: dict[str, Any] = manifests["PrometheusRule"]["spec"]
    return spec


def _all_rules(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in spec["groups"] for rule in group["rules"]]


def _pod_spec(manifests: dict[str, Manifest]) -> dict[str, Any]:
    spec: dict[str, Any] = manifests["DaemonSet"]["spec"]["template"]["spec"]
    return spec


def _container(manifests: dict[str, Manifest]) -> dict[str, Any]:
    containers = _pod_spec(manifests)["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _flags(container: dict[str, Any]) -> dict[str, str]:
    """--name=value arguments of the exporter as a dict."""
    flags = {}
    for arg in container.get("args", []):
        match = re.fullmatch(r"--([a-z.-]+)=(.*)", arg)
        assert match, f"argument {arg!r} is not --flag=value"
        flags[match.group(1)] = match.group(2)
    return flags


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> dict[str, Manifest]:
    """The objects of deploy/, by kind (each kind occurs once)."""
    by_kind: dict[str, Manifest] = {}
    for path in _manifest_files():
        docs = _load_docs(path)
        assert len(docs) == 1, f"{path.name}: expected one object, got {len(docs)}"
        kind = docs[0]["kind"]
        assert kind not in by_kind, f"{kind} defined twice"
        by_kind[kind] = docs[0]
    return by_kind


@pytest.fixture(scope="module")
def kubernetes_validate() -> Any:
    try:
        import kubernetes_validate as module  # type: ignore[import-untyped]
    except ImportError:
        unavailable("the kubernetes-validate Python package is missing")
    return module


@pytest.fixture(scope="module")
def crd_validators() -> dict[str, Callable[[Manifest], None]]:
    try:
        import jsonschema
    except ImportError:
        unavailable("the jsonschema Python package is missing")

    validators: dict[str, Callable[[Manifest], None]] = {}
    for kind, file_name in CRD_FILES.items():
        crd = _load_docs(SCHEMAS / file_name)[0]
        assert crd["spec"]["names"]["kind"] == kind
        group = crd["spec"]["group"]
        (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
        schema = _crd_to_json_schema(version["schema"]["openAPIV3Schema"])
        jsonschema.Draft4Validator.check_schema(schema)
        validator = jsonschema.Draft4Validator(schema)

        def validate(
            obj: Manifest,
            validator: Any = validator,
            api_version: str = f"{group}/{version['name']}",
            kind: str = kind,
        ) -> None:
            if obj.get("apiVersion") != api_version or obj.get("kind") != kind:
                raise ValueError(f"expected {api_version} {kind}")
            _check_object_meta(obj.get("metadata"))
            validator.validate(obj)

        validators[kind] = validate
    return validators


def _crd_to_json_schema(node: Any) -> Any:
    """Turn a CRD openAPIV3Schema into plain JSON Schema, read the way the
    API server reads it: `nullable: true` admits null;
    `x-kubernetes-int-or-string` admits integers and strings; objects that
    list their properties reject unknown fields (kubectl's default field
    validation is Strict) unless marked x-kubernetes-preserve-unknown-fields;
    RE2 inline flags move to the front of patterns for Python's re. The other
    x-kubernetes-* extensions (list types and keys, map types) are not
    checked."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: _crd_to_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = _crd_to_json_schema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [_crd_to_json_schema(sub) for sub in value]
        elif key == "nullable" or key.startswith("x-kubernetes-"):
            continue
        elif key == "pattern":
            # Go (RE2) accepts inline flags anywhere, Python only in front:
            # "^(?i)(abort|warn)?$" -> "(?i)^(abort|warn)?$".
            flags = "".join(re.findall(r"\(\?[a-z]+\)", value))
            out[key] = flags + re.sub(r"\(\?[a-z]+\)", "", value)
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def _check_object_meta(meta: Any) -> None:
    """The CRD schemas leave metadata to the API server: check the basics."""
    if not isinstance(meta, dict):
        raise ValueError("metadata must be a mapping")
    allowed = {"name", "namespace", "labels", "annotations"}
    if set(meta) - allowed:
        raise ValueError(f"unexpected metadata fields {sorted(set(meta) - allowed)}")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", meta.get("name", "")):
        raise ValueError(f"invalid name {meta.get('name')!r}")
    for field in ("labels", "annotations"):
        for key, value in meta.get(field, {}).items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ValueError(f"{field} must map strings to strings: {key!r}")


# --------------------------------------------------------------------------
# Structure and cross-references
# --------------------------------------------------------------------------


def test_one_file_per_object_named_after_it() -> None:
    pattern = re.compile(
        r"(?P<order>\d\d)_(?P<name>[a-z0-9-]+)(_(?P<namespace>[a-z0-9-]+))?"
        r"\.(?P<kind>[A-Za-z]+)\.yaml"
    )
    kinds = set()
    for path in _manifest_files():
        match = pattern.fullmatch(path.name)
        assert match, f"{path.name} does not follow NN_name[_namespace].Kind.yaml"
        (obj,) = _load_docs(path)
        assert obj["kind"] == match["kind"], path.name
        assert obj["metadata"]["name"] == match["name"], path.name
        if match["namespace"]:
            assert obj["metadata"]["namespace"] == match["namespace"], path.name
        kinds.add(obj["kind"])
    assert kinds == EXPECTED_KINDS


def test_apply_order_creates_dependencies_first() -> None:
    """kubectl apply -f deploy/ applies files in name order."""
    order = [_load_docs(path)[0]["kind"] for path in _manifest_files()]
    assert order[0] == "Namespace"
    for before, after in [
        ("ServiceAccount", "DaemonSet"),
        ("SecurityContextConstraints", "DaemonSet"),
        ("Role", "RoleBinding"),
        ("Service", "ServiceMonitor"),
    ]:
        assert order.index(before) < order.index(after), (before, after)


def test_kubectl_reads_only_manifests_from_deploy() -> None:
    """kubectl apply -f deploy/ takes every .yaml/.yml/.json file there,
    hidden ones included, so nothing but manifests may live there."""
    for path in DEPLOY.iterdir():
        if path.suffix in (".yaml", ".yml", ".json"):
            assert path.suffix == ".yaml" and not path.name.startswith("."), path.name


def test_every_object_carries_the_labels(manifests: dict[str, Manifest]) -> None:
    for kind, obj in manifests.items():
        labels = obj["metadata"].get("labels", {})
        assert LABELS.items() <= labels.items(), kind
    pod_labels = manifests["DaemonSet"]["spec"]["template"]["metadata"]["labels"]
    assert LABELS.items() <= pod_labels.items()


def test_namespace_is_the_same_everywhere(manifests: dict[str, Manifest]) -> None:
    assert manifests["Namespace"]["metadata"]["name"] == NAMESPACE
    for kind, obj in manifests.items():
        if kind in CLUSTER_SCOPED:
            assert "namespace" not in obj["metadata"], kind
        else:
            assert obj["metadata"]["namespace"] == OTHER_NAMESPACES.get(kind, NAMESPACE), kind


def test_namespace_is_monitored_by_the_platform_prometheus(
    manifests: dict[str, Manifest],
) -> None:
    meta = manifests["Namespace"]["metadata"]
    assert meta["labels"]["openshift.io/cluster-monitoring"] == "true"
    assert meta["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    # An empty project node selector lets the DaemonSet reach every node.
    assert meta["annotations"]["openshift.io/node-selector"] == ""


def test_service_selects_the_exporter_pods(manifests: dict[str, Manifest]) -> None:
    service = manifests["Service"]["spec"]
    daemonset = manifests["DaemonSet"]["spec"]
    pod_labels = daemonset["template"]["metadata"]["labels"]
    assert service["clusterIP"] == "None"
    assert service["selector"].items() <= pod_labels.items()
    assert daemonset["selector"]["matchLabels"].items() <= pod_labels.items()
    (port,) = service["ports"]
    assert port["name"] == "metrics"
    assert port["port"] == METRICS_PORT
    container_ports = {p["name"]: p["containerPort"] for p in _container(manifests)["ports"]}
    target = port["targetPort"]
    assert container_ports.get(target, target) == METRICS_PORT


def test_servicemonitor_scrapes_the_service(manifests: dict[str, Manifest]) -> None:
    monitor = manifests["ServiceMonitor"]["spec"]
    service = manifests["Service"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    assert endpoint["interval"] == "30s"
    assert endpoint["path"] == _flags(_container(manifests))["web.telemetry-path"]
    assert endpoint["path"] == "/metrics"
    assert {
        "action": "replace",
        "sourceLabels": ["__meta_kubernetes_pod_node_name"],
        "targetLabel": "node",
    } in endpoint["relabelings"]
    # Without jobLabel, prometheus-operator sets job to the Service name.
    assert "jobLabel" not in monitor


def test_exporter_listens_where_everything_points(manifests: dict[str, Manifest]) -> None:
    container = _container(manifests)
    assert container["command"] == ["ebs-exporter"]
    (port,) = container["ports"]
    assert port == {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}
    assert "hostPort" not in port
    assert _flags(container)["web.listen-address"] == f":{METRICS_PORT}"
    # liveness: the process serves; readiness: sysfs readable and discovery working
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


def test_exporter_reads_the_host_through_its_mounts(manifests: dict[str, Manifest]) -> None:
    container = _container(manifests)
    flags = _flags(container)
    assert flags["path.sysfs"] == "/host/sys"
    assert flags["path.dev"] == "/host/dev"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in _pod_spec(manifests)["volumes"]}
    assert mounts.keys() == volumes.keys()
    host_paths = {volumes[name]["hostPath"]["path"]: mount["mountPath"] for name, mount in mounts.items()}
    assert host_paths == {"/dev": "/host/dev", "/sys": "/host/sys"}
    for mount in mounts.values():
        assert mount["readOnly"] is True, mount["name"]
    for volume in volumes.values():
        assert set(volume) == {"name", "hostPath"}, volume["name"]


def test_device_filter_is_an_optional_override(manifests: dict[str, Manifest]) -> None:
    """Default: every EBS volume of the node. EBS_DEVICE is documented in a
    comment, not set."""
    env = {e["name"] for e in _container(manifests).get("env", [])}
    assert "EBS_DEVICE" not in env
    text = next(DEPLOY.glob("*.DaemonSet.yaml")).read_text(encoding="utf-8")
    assert re.search(r"^\s*#.*name: EBS_DEVICE", text, re.MULTILINE)


def test_resources_are_exactly_as_sized(manifests: dict[str, Manifest]) -> None:
    assert _container(manifests)["resources"] == {
        "requests": {"cpu": "10m", "memory": "32Mi"},
        "limits": {"cpu": "100m", "memory": "128Mi"},
    }


def test_daemonset_runs_on_every_node(manifests: dict[str, Manifest]) -> None:
    spec = manifests["DaemonSet"]["spec"]
    assert {"operator": "Exists"} in spec["template"]["spec"]["tolerations"]
    assert spec["updateStrategy"]["type"] == "RollingUpdate"
    assert spec["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == "10%"


def test_rbac_lets_prometheus_discover_targets_read_only(
    manifests: dict[str, Manifest],
) -> None:
    role, binding = manifests["Role"], manifests["RoleBinding"]
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    for resource in ("services", "endpoints", "pods"):
        for verb in ("get", "list", "watch"):
            assert ("", resource, verb) in granted
    assert {verb for _, _, verb in granted} == {"get", "list", "watch"}
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "prometheus-k8s", "namespace": "openshift-monitoring"}
    ]


# --------------------------------------------------------------------------
# Security
# --------------------------------------------------------------------------


def test_pod_shares_no_host_namespace(manifests: dict[str, Manifest]) -> None:
    pod = _pod_spec(manifests)
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        assert pod.get(field, False) is False, field
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == manifests["ServiceAccount"]["metadata"]["name"]
    assert manifests["ServiceAccount"]["automountServiceAccountToken"] is False
    assert "initContainers" not in pod and "ephemeralContainers" not in pod


def test_container_is_privileged_for_device_access_only(manifests: dict[str, Manifest]) -> None:
    """privileged: true lifts the device cgroup allow-list; every other
    setting stays as tight as a privileged container allows."""
    context = _container(manifests)["securityContext"]
    assert context == {
        "privileged": True,
        "allowPrivilegeEscalation": True,
        "readOnlyRootFilesystem": True,
        "runAsUser": 0,
        "runAsNonRoot": False,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    # No capability lists: the runtime ignores them for privileged containers.
    assert "capabilities" not in context
    assert _pod_spec(manifests)["securityContext"] == {
        "runAsUser": 0,
        "runAsNonRoot": False,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_no_escalation_setting_the_api_server_would_refuse(
    manifests: dict[str, Manifest],
) -> None:
    """The API server (ValidateSecurityContext) rejects
    allowPrivilegeEscalation=false together with privileged=true or with the
    literal capability "CAP_SYS_ADMIN"; kubernetes-validate's JSON schemas do
    not know this cross-field rule."""
    context = _container(manifests)["securityContext"]
    if context.get("allowPrivilegeEscalation") is False:
        assert context.get("privileged") is not True
        assert "CAP_SYS_ADMIN" not in context.get("capabilities", {}).get("add", [])
    # The SCC's default must not produce that combination either.
    scc = manifests["SecurityContextConstraints"]
    if context.get("privileged"):
        assert scc["defaultAllowPrivilegeEscalation"] is not False


def test_scc_admits_the_pod_and_nothing_more(manifests: dict[str, Manifest]) -> None:
    scc = manifests["SecurityContextConstraints"]
    account = manifests["ServiceAccount"]["metadata"]
    assert scc["users"] == [f"system:serviceaccount:{account['namespace']}:{account['name']}"]
    assert scc["groups"] == []
    for field in ("allowHostNetwork", "allowHostPID", "allowHostIPC", "allowHostPorts"):
        assert scc[field] is False, field
    # privileged: true needs the first, and the API server then needs the
    # second (see test_no_escalation_setting_the_api_server_would_refuse).
    assert scc["allowPrivilegedContainer"] is True
    assert scc["allowPrivilegeEscalation"] is True
    assert scc["allowHostDirVolumePlugin"] is True
    assert scc["readOnlyRootFilesystem"] is True
    # Capability lists mean nothing to a privileged container: none, rather
    # than ones that would look like restrictions.
    assert not scc["allowedCapabilities"]
    assert not scc["defaultAddCapabilities"]
    assert not scc["requiredDropCapabilities"]
    assert scc["volumes"] == ["hostPath"]
    assert scc["runAsUser"] == {"type": "MustRunAs", "uid": 0}
    assert scc["seLinuxContext"] == {
        "type": "MustRunAs",
        "seLinuxOptions": {"user": "system_u", "role": "system_r", "type": "spc_t", "level": "s0"},
    }
    assert scc["seccompProfiles"] == ["runtime/default"]

    # What the DaemonSet asks for is within the SCC.
    pod = _pod_spec(manifests)
    context = _container(manifests)["securityContext"]
    assert context["privileged"] is scc["allowPrivilegedContainer"] is True
    assert context["allowPrivilegeEscalation"] is scc["allowPrivilegeEscalation"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert {key for v in pod["volumes"] for key in v if key != "name"} <= set(scc["volumes"])
    assert context["runAsUser"] == pod["securityContext"]["runAsUser"] == scc["runAsUser"]["uid"]
    profiles = {"RuntimeDefault": "runtime/default"}
    for seccomp in (context["seccompProfile"], pod["securityContext"]["seccompProfile"]):
        assert profiles[seccomp["type"]] in scc["seccompProfiles"]
    annotations = manifests["DaemonSet"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["openshift.io/required-scc"] == scc["metadata"]["name"]


def test_checkov_reports_only_justified_findings(tmp_path: Path) -> None:
    checkov = _tool("checkov", env="CHECKOV")
    result = subprocess.run(
        [
            checkov,
            "--framework",
            "kubernetes",
            "--directory",
            str(DEPLOY),
            "--output",
            "json",
            "--compact",
            "--skip-download",  # offline: no Prisma Cloud guidelines
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    if isinstance(report, list):
        (report,) = [r for r in report if r["check_type"] == "kubernetes"]
    assert report["summary"]["parsing_errors"] == 0
    failed = report["results"]["failed_checks"]
    passed = report["results"]["passed_checks"]

    failures = {c["check_id"]: c["check_name"] for c in failed}
    unexpected = {k: v for k, v in failures.items() if k not in CHECKOV_EXPECTED_FAILURES}
    assert not unexpected, f"new checkov findings: {unexpected}"
    stale = set(CHECKOV_EXPECTED_FAILURES) - set(failures)
    assert not stale, f"accepted findings that no longer occur, drop them: {sorted(stale)}"
    for check in failed:
        assert check["resource"].startswith(("DaemonSet.", "Pod.")), check["resource"]

    passed_on_daemonset = {c["check_id"] for c in passed if c["resource"].startswith("DaemonSet.")}
    missing = CHECKOV_REQUIRED_PASSES - passed_on_daemonset
    assert not missing, f"checks that must pass on the DaemonSet did not: {sorted(missing)}"


# --------------------------------------------------------------------------
# Schemas
# --------------------------------------------------------------------------

CORE_FILES = [path.name for path in _manifest_files() if _load_docs(path)[0]["kind"] not in CRD_FILES]


@pytest.mark.parametrize("file_name", CORE_FILES)
def test_core_kind_is_valid_for_kubernetes(kubernetes_validate: Any, file_name: str) -> None:
    (obj,) = _load_docs(DEPLOY / file_name)
    # Raises ValidationError, or SchemaNotFoundError for an unknown kind
    # (which the kubernetes-validate CLI would only warn about).
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_kubernetes_validate_rejects_a_misspelt_field(kubernetes_validate: Any, manifests: dict[str, Manifest]) -> None:
    broken = copy.deepcopy(manifests["DaemonSet"])
    mount = broken["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]
    mount["readOnlee"] = mount.pop("readOnly")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("kind", sorted(CRD_FILES))
def test_custom_resource_matches_its_crd(
    crd_validators: dict[str, Callable[[Manifest], None]],
    manifests: dict[str, Manifest],
    kind: str,
) -> None:
    crd_validators[kind](manifests[kind])


def _rename_interval(obj: Manifest) -> None:
    endpoint = obj["spec"]["endpoints"][0]
    endpoint["intervall"] = endpoint.pop("interval")


def _bad_interval(obj: Manifest) -> None:
    obj["spec"]["endpoints"][0]["interval"] = "30 seconds"


def _rename_expr(obj: Manifest) -> None:
    rule = obj["spec"]["groups"][0]["rules"][0]
    rule["exp"] = rule.pop("expr")


def _rename_scc_field(obj: Manifest) -> None:
    obj["allowHostNetwrok"] = obj.pop("allowHostNetwork")


def _drop_scc_volumes(obj: Manifest) -> None:
    del obj["volumes"]


def _string_for_bool(obj: Manifest) -> None:
    obj["allowPrivilegedContainer"] = "false"


def _misspelt_label_key(obj: Manifest) -> None:
    obj["metadata"]["lables"] = obj["metadata"].pop("labels")


@pytest.mark.parametrize(
    ("kind", "breakage"),
    [
        ("ServiceMonitor", _rename_interval),
        ("ServiceMonitor", _bad_interval),
        ("ServiceMonitor", _misspelt_label_key),
        ("PrometheusRule", _rename_expr),
        ("SecurityContextConstraints", _rename_scc_field),
        ("SecurityContextConstraints", _drop_scc_volumes),
        ("SecurityContextConstraints", _string_for_bool),
    ],
)
def test_crd_validation_rejects_a_broken_copy(
    crd_validators: dict[str, Callable[[Manifest], None]],
    manifests: dict[str, Manifest],
    kind: str,
    breakage: Callable[[Manifest], None],
) -> None:
    import jsonschema

    broken = copy.deepcopy(manifests[kind])
    breakage(broken)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        crd_validators[kind](broken)


def test_crd_copies_are_unmodified() -> None:
    readme = (SCHEMAS / "README.md").read_text(encoding="utf-8")
    recorded = dict(
        (name, digest) for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+\.yaml)$", readme, re.MULTILINE)
    )
    assert set(recorded) == set(CRD_FILES.values())
    for name, digest in recorded.items():
        assert hashlib.sha256((SCHEMAS / name).read_bytes()).hexdigest() == digest, name


def test_image_placeholder_substitutes_cleanly(
    kubernetes_validate: Any, manifests: dict[str, Manifest], tmp_path: Path
) -> None:
    """The documented flow `sed 's#REPLACE_IMAGE#...#' deploy/*.yaml | oc apply
    -f -` concatenates the files into one stream: each must open its own YAML
    document, or the objects merge into one mapping whose last keys win and
    only the last object would be applied."""
    assert _container(manifests)["image"] == "REPLACE_IMAGE"
    occurrences = sum(p.read_text(encoding="utf-8").count("REPLACE_IMAGE") for p in _manifest_files())
    assert occurrences == 1
    for path in _manifest_files():
        assert path.read_text(encoding="utf-8").startswith("---\n"), path.name
    sed = _tool("sed")
    files = [str(path) for path in _manifest_files()]  # the shell's glob order
    result = subprocess.run(
        [sed, "s#REPLACE_IMAGE#quay.io/x/y:1#", *files],
        capture_output=True,
        text=True,
        check=True,
    )
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert [obj["kind"] for obj in objects] == [_load_docs(Path(f))[0]["kind"] for f in files]
    (daemonset,) = [obj for obj in objects if obj["kind"] == "DaemonSet"]
    assert daemonset["spec"]["template"]["spec"]["containers"][0]["image"] == "quay.io/x/y:1"
    kubernetes_validate.validate(daemonset, KUBERNETES_VERSION, strict=True)


# --------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------

# recorded percentage -> the exporter's counter it is computed from
EXCEEDED_COUNTERS = {
    f"ebs_{scope}_performance_exceeded_{limit}_percent": f"ebs_{scope}_performance_exceeded_{limit}_seconds_total"
    for scope in ("volume", "instance")
    for limit in ("iops", "throughput")
}


def test_percentages_are_five_minute_rates(manifests: dict[str, Manifest]) -> None:
    records = {r["record"]: r["expr"] for r in _all_rules(_rules_spec(manifests)) if "record" in r}
    for record, counter in EXCEEDED_COUNTERS.items():
        assert records[record].strip() == f"100 * rate({counter}[5m])"
        check = record.replace("_percent", "_check")
        assert records[check].strip() == f"{record} > bool 0"
    for record in (
        "ebs_volume_performance_exceeded_iops_percent:by_pvc",
        "ebs_volume_performance_exceeded_throughput_percent:by_pvc",
        "ebs_volume_pvc_info",
    ):
        assert record in records


def test_every_alert_explains_itself(manifests: dict[str, Manifest]) -> None:
    alerts = [r for r in _all_rules(_rules_spec(manifests)) if "alert" in r]
    assert {a["alert"] for a in alerts} == {
        "EbsVolumeIopsLimitExceeded",
        "EbsVolumeThroughputLimitExceeded",
        "EbsInstanceIopsLimitExceeded",
        "EbsInstanceThroughputLimitExceeded",
        "EbsMetricsExporterDown",
        "EbsDeviceStatsErrors",
        "EbsDeviceStatsDown",
    }
    for alert in alerts:
        assert alert["labels"]["severity"] in ("warning", "critical"), alert["alert"]
        text = alert["annotations"]["summary"] + alert["annotations"]["description"]
        assert "$labels.node" in text, alert["alert"]
        if "Limit" in alert["alert"]:
            assert "$labels.volume_id" in text and "$labels.device" in text, alert["alert"]
        if "Device" in alert["alert"]:
            assert "$labels.device" in text and "volume_id" in text, alert["alert"]


def test_exporter_down_alert_matches_the_scrape_job(manifests: dict[str, Manifest]) -> None:
    (alert,) = [r for r in _all_rules(_rules_spec(manifests)) if r.get("alert") == "EbsMetricsExporterDown"]
    job = manifests["Service"]["metadata"]["name"]
    assert f'job="{job}"' in alert["expr"]
    assert f'namespace="{NAMESPACE}"' in alert["expr"]


def test_rule_tests_cover_every_rule(manifests: dict[str, Manifest]) -> None:
    rules = _all_rules(_rules_spec(manifests))
    tests = _load_docs(RULES_TESTS)[0]
    assert tests["rule_files"] == [RULES_FILE_NAME]
    tested_exprs = {
        re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", case["expr"]).group(0)  # type: ignore[union-attr]
        for test in tests["tests"]
        for case in test.get("promql_expr_test", [])
    }
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in tests["tests"]:
        for case in test.get("alert_rule_test", []):
            (firing if case["exp_alerts"] else quiet).add(case["alertname"])
    for rule in rules:
        if "record" in rule:
            assert rule["record"] in tested_exprs, rule["record"]
        else:
            assert rule["alert"] in firing, f"{rule['alert']} never tested firing"
            assert rule["alert"] in quiet, f"{rule['alert']} never tested not firing"


def _write_rules(spec: dict[str, Any], directory: Path) -> Path:
    path = directory / RULES_FILE_NAME
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def _promtool_test(spec: dict[str, Any], directory: Path) -> subprocess.CompletedProcess[str]:
    promtool = _tool("promtool", env="PROMTOOL")
    _write_rules(spec, directory)
    shutil.copy(RULES_TESTS, directory / RULES_TESTS.name)
    return subprocess.run(
        [promtool, "test", "rules", RULES_TESTS.name],
        capture_output=True,
        text=True,
        cwd=directory,
        check=False,
    )


def test_promtool_check_rules(manifests: dict[str, Manifest], tmp_path: Path) -> None:
    promtool = _tool("promtool", env="PROMTOOL")
    spec = _rules_spec(manifests)
    path = _write_rules(spec, tmp_path)
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_all_rules(spec))} rules found" in result.stdout + result.stderr


def test_promtool_test_rules(manifests: dict[str, Manifest], tmp_path: Path) -> None:
    result = _promtool_test(_rules_spec(manifests), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_test_rules_catches_a_wrong_rule(manifests: dict[str, Manifest], tmp_path: Path) -> None:
    """The rule tests are not vacuous: raising one threshold breaks them."""
    spec = copy.deepcopy(_rules_spec(manifests))
    (alert,) = [r for r in _all_rules(spec) if r.get("alert") == "EbsVolumeIopsLimitExceeded"]
    assert alert["expr"].endswith("> 10")
    alert["expr"] = alert["expr"][: -len("10")] + "60"
    result = _promtool_test(spec, tmp_path)
    assert result.returncode != 0
    assert "EbsVolumeIopsLimitExceeded" in result.stdout + result.stderr
