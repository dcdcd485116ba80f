"""End-to-end: every guardrail of manifests/admission/guardrails (and the placement mutation
where the server serves admissionregistration.k8s.io/v1 MutatingAdmissionPolicy) on a real API
server, with no operator running: the guardrails hold while the operator is scaled to zero.

The namespaces and their ConfigMap tenantry-guardrails are what `tenantry render` prints for an
Organization under tests/unit/test_admission_guardrails.py's policy, applied as the operator's
ServiceAccount (impersonated: only it may create the parameter). Requests are sent impersonating
a tenant with cluster-admin rights, so only the admission policies can refuse them. Server-side
dry runs: nothing is stored but the namespaces, the parameters and the policies.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tenantry.api.organization import Organization
from tenantry.render import render_organization
from tests.e2e.test_real_cluster import KUBECONFIG, ROOT, get, kubectl, wait_for
from tests.unit.test_admission_guardrails import POLICY, organization

pytestmark = pytest.mark.skipif(not KUBECONFIG, reason="TENANTRY_E2E_KUBECONFIG is not set")

OPERATOR = "system:serviceaccount:tenantry-system:tenantry"
TENANT = ("--as", "e2e-tenant", "--as-group", "system:masters")
GUARDRAILS = ROOT / "manifests/admission/guardrails"
PLACEMENT = ROOT / "manifests/admission/placement"
IMAGE_PULLS = ROOT / "manifests/admission/image-pulls"


def _rendered() -> list[dict[str, Any]]:
    org = Organization.model_validate(
        {**organization().model_dump(by_alias=True, exclude_none=True), "metadata": {"name": "e2e-g"}}
    )
    objects = render_organization(org, POLICY, dt.date(2026, 11, 26)).objects
    return [o for o in objects if o["kind"] in ("Namespace", "ConfigMap")]


@pytest.fixture(scope="module")
def guarded() -> Iterator[bool]:
    """The guardrails installed, two tenant namespaces with their parameter; yields whether the
    placement mutation is served (Kubernetes >= 1.36)."""
    kubectl("apply", "--server-side", "-k", str(GUARDRAILS))
    mutating = kubectl("api-resources", "--api-group=admissionregistration.k8s.io", "-o", "name").stdout
    has_map = "mutatingadmissionpolicies.admissionregistration.k8s.io" in mutating and (
        kubectl("apply", "--server-side", "-k", str(PLACEMENT), check=False).returncode == 0
    )
    # The pods below do not say imagePullPolicy: Always; the mutation sets it (>= 1.36).
    has_map = (
        has_map and kubectl("apply", "--server-side", "-k", str(IMAGE_PULLS), check=False).returncode == 0
    )
    for obj in _rendered():
        kubectl("--as", OPERATOR, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(obj))
    yield has_map
    for ns in ("e2e-g-prod", "e2e-g-dev"):
        kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=false", check=False)
    kubectl("delete", "-k", str(PLACEMENT), "--ignore-not-found", check=False)
    kubectl("delete", "-k", str(IMAGE_PULLS), "--ignore-not-found", check=False)
    kubectl("delete", "-k", str(GUARDRAILS), "--ignore-not-found", check=False)


def dry_run(obj: dict[str, Any]) -> tuple[bool, str, dict[str, Any] | None]:
    proc = kubectl(
        *TENANT, "create", "--dry-run=server", "-o", "json", "-f", "-", stdin=yaml.safe_dump(obj), check=False
    )
    return proc.returncode == 0, proc.stderr, json.loads(proc.stdout) if proc.returncode == 0 else None


def refused(obj: dict[str, Any], *needles: str) -> None:
    def check() -> str | None:
        ok, stderr, _ = dry_run(obj)
        return None if ok else stderr  # not loaded yet: retry

    stderr = wait_for(check, timeout=30)
    for needle in needles:
        assert needle in stderr, stderr


def pod(namespace: str = "e2e-g-prod", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "containers": [{"name": "a", "image": "ghcr.io/acme/app:1", "imagePullPolicy": "Always"}],
        "nodeSelector": {"pool": "tenants"},
    }
    body.update(spec)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "e2e-p", "namespace": namespace},
        "spec": body,
    }


def test_every_guardrail_is_accepted_by_the_api_server(guarded: bool) -> None:
    for name in (
        "classes",
        "workloads",
        "services",
        "labels",
        "parameter",
        "placement",
        "image-pulls",
        "rbac",
        "network-policies",
    ):
        assert get("validatingadmissionpolicy", f"tenantry-guardrail-{name}") is not None


def test_classes(guarded: bool) -> None:
    ingress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "e2e-i", "namespace": "e2e-g-prod"},
        "spec": {
            "ingressClassName": "public",
            "defaultBackend": {"service": {"name": "s", "port": {"number": 80}}},
        },
    }
    refused(
        ingress,
        "tenantry-guardrail-classes",
        "IngressClass public is not allowed",
        "Allowed: nginx, internal",
    )
    ingress["spec"]["ingressClassName"] = "nginx"
    assert dry_run(ingress)[0]
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "e2e-c", "namespace": "e2e-g-prod"},
        "spec": {
            "storageClassName": "premium",
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    refused(claim, "rule storage-class", "StorageClass premium")


def test_images_and_classes_of_pods_and_templates(guarded: bool) -> None:
    refused(
        pod(containers=[{"name": "a", "image": "docker.io/evil/x:1"}]),
        "tenantry-guardrail-workloads",
        "rule registries",
    )
    refused(pod(priorityClassName="system-cluster-critical"), "rule priority-class")
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "e2e-d", "namespace": "e2e-g-prod"},
        "spec": {
            "selector": {"matchLabels": {"app": "x"}},
            "template": {
                "metadata": {"labels": {"app": "x"}},
                "spec": {"containers": [{"name": "a", "image": "quay.io/x:1"}]},
            },
        },
    }
    refused(deployment, "Deployment e2e-g-prod/e2e-d: image quay.io/x:1")
    assert dry_run(pod())[0]


def test_services_and_labels(guarded: bool) -> None:
    service: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "e2e-s", "namespace": "e2e-g-prod"},
        "spec": {"type": "NodePort", "ports": [{"port": 80}]},
    }
    refused(service, "tenantry-guardrail-services", "type NodePort is not allowed")
    service["metadata"]["namespace"] = "e2e-g-dev"
    assert dry_run(service)[0]
    service["spec"] = {"ports": [{"port": 80}], "externalIPs": ["192.0.2.1"]}
    refused(service, "CVE-2020-8554")
    labelled = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "e2e-l",
            "namespace": "e2e-g-prod",
            "labels": {"tenantry.dev/organization": "x"},
        },
    }
    refused(labelled, "tenantry-guardrail-labels", "rule denied-keys")


def test_placement(guarded: bool) -> None:
    refused(pod(nodeName="somewhere"), "tenantry-guardrail-placement", "rule node-name")
    refused(pod(nodeSelector={"pool": "system"}), "rule node-selector")
    if not guarded:
        pytest.skip("MutatingAdmissionPolicy v1 not served: placement is validated, not set")
    bare = pod()
    del bare["spec"]["nodeSelector"]
    _, _, created = wait_for(lambda: (r := dry_run(bare))[0] and r, timeout=30)
    assert created is not None and created["spec"]["nodeSelector"] == {"pool": "tenants"}
    assert {"key": "dedicated", "operator": "Equal", "value": "tenants", "effect": "NoSchedule"} in created[
        "spec"
    ]["tolerations"]


def test_kube_system_is_never_affected(guarded: bool) -> None:
    assert dry_run(pod("kube-system", nodeName="n", containers=[{"name": "a", "image": "quay.io/x:1"}]))[0]


def test_only_the_operator_writes_the_parameter(guarded: bool) -> None:
    fake = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "tenantry-guardrails", "namespace": "e2e-g-prod"},
    }
    kubectl("--as", OPERATOR, "delete", "configmap", "tenantry-guardrails", "-n", "e2e-g-prod")
    try:
        refused(fake, "tenantry-guardrail-parameter")
        refused(pod(), "no params found")  # new pods without the parameter: fail closed
    finally:
        for obj in _rendered():
            kubectl("--as", OPERATOR, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(obj))
