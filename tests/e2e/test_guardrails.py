"""End-to-end: every guardrail of manifests/admission/guardrails (and the placement mutation
where the server serves admissionregistration.k8s.io/v1 MutatingAdmissionPolicy) on a real API
server, with no operator running: the guardrails hold while the operator is scaled to zero.
Last, the operator as production runs it (its ServiceAccount, every admission policy installed).

The namespaces and their ConfigMap tenantry-guardrails are what `tenantry render` prints for an
Organization under tests/unit/test_admission_guardrails.py's policy, applied as the operator's
ServiceAccount (impersonated, with the operator's RBAC from manifests/base bound to it: only it may
create the parameter). Requests are sent impersonating
a tenant with cluster-admin rights, so only the admission policies can refuse them. Server-side
dry runs: nothing is stored but the namespaces, the parameters and the policies.

One module for both because Kubernetes 1.36 cannot install these guardrails twice in one
kube-apiserver process (see `skip_if_parameters_are_frozen`): they are installed once, here.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tenantry.api.organization import Organization
from tenantry.render import render_organization
from tests.e2e.conftest import (
    OPERATOR_SA,
    OPERATOR_SA_NAME,
    OPERATOR_SA_NAMESPACE,
    ROOT,
    OperatorFactory,
    admission_installed,
    apply,
    conditions,
    delete,
    get,
    impersonating,
    install_crds_and_roles,
    install_operator_identity,
    kubectl,
    manifest,
    needs_cluster,
    org,
    ready,
    serviceaccount_kubeconfig,
    wait_for,
)
from tests.unit.test_admission_guardrails import POLICY, organization

pytestmark = needs_cluster

OPERATOR = impersonating(OPERATOR_SA)
TENANT = impersonating("e2e-tenant", "system:masters")
GUARDRAILS = ROOT / "manifests/admission/guardrails"
PLACEMENT = ROOT / "manifests/admission/placement"
IMAGE_PULLS = ROOT / "manifests/admission/image-pulls"


def _rendered() -> list[dict[str, Any]]:
    org = Organization.model_validate(
        {**organization().model_dump(by_alias=True, exclude_none=True), "metadata": {"name": "e2e-g"}}
    )
    objects = render_organization(org, POLICY, dt.date(2026, 11, 26)).objects
    return [o for o in objects if o["kind"] in ("Namespace", "ConfigMap")]


def apply_parameters() -> None:
    for obj in _rendered():
        apply(obj, force=False, impersonate=OPERATOR)


@pytest.fixture(scope="module")
def guarded() -> Iterator[bool]:
    """The guardrails installed, two tenant namespaces with their parameter; yields whether the
    placement mutation is served (Kubernetes >= 1.36)."""
    install_operator_identity()
    mutating = served_resources("admissionregistration.k8s.io")
    has_map = "mutatingadmissionpolicies.admissionregistration.k8s.io" in mutating
    # The pods below do not say imagePullPolicy: Always; the mutation sets it (>= 1.36).
    installed = (GUARDRAILS, PLACEMENT, IMAGE_PULLS) if has_map else (GUARDRAILS,)
    try:
        with admission_installed(*installed):
            apply_parameters()
            skip_if_parameters_are_frozen()
            yield has_map
    finally:
        for ns in ("e2e-g-prod", "e2e-g-dev"):
            delete("namespace", ns, wait=True)


def skip_if_parameters_are_frozen() -> None:
    """Kubernetes 1.36 stops the API server's ConfigMap informer for admission parameters for
    good once no binding names a ConfigMap paramKind (kubernetes/kubernetes#130887, fix pending
    in #141015): guardrails installed again in the same kube-apiserver process never see a
    ConfigMap created or deleted after that ("no params found", or a deleted one still used).
    This module's own teardown does exactly that, so on a second run against one API server
    the guardrails cannot be tested: skip, saying why, rather than fail on the server's bug."""
    wrong_pool = pod(nodeSelector={"pool": "system"})
    last: list[str] = []

    def answer() -> str | None:
        ok, stderr, _ = dry_run(wrong_pool)
        last[:] = [stderr]
        return None if ok or "no params found" in stderr else stderr

    try:
        wait_for(answer, timeout=20, what="the guardrails to read e2e-g-prod's parameter")
    except AssertionError:
        if "no params found" not in last[0]:
            raise  # admitted: the guardrail itself does not hold
        pytest.skip(
            "this kube-apiserver no longer sees new ConfigMap parameters (kubernetes/kubernetes#130887: "
            "the guardrails were removed earlier in this API server process): restart it to run these"
        )


def served_resources(group: str) -> str:
    return kubectl("api-resources", f"--api-group={group}", "-o", "name").stdout


def dry_run(obj: dict[str, Any]) -> tuple[bool, str, dict[str, Any] | None]:
    proc = kubectl(
        *TENANT, "create", "--dry-run=server", "-o", "json", "-f", "-", stdin=manifest(obj), check=False
    )
    return proc.returncode == 0, proc.stderr, json.loads(proc.stdout) if proc.returncode == 0 else None


def admitted(obj: dict[str, Any]) -> dict[str, Any]:
    ok, stderr, created = dry_run(obj)
    assert ok and created is not None, stderr
    return created


def refused(obj: dict[str, Any], *needles: str) -> None:
    def check() -> str | None:
        ok, stderr, _ = dry_run(obj)
        return None if ok else stderr  # not loaded yet: retry

    stderr = wait_for(
        check, timeout=30, what=f"the guardrails to refuse {obj['kind']} {obj['metadata']['name']}"
    )
    for needle in needles:
        assert needle in stderr, stderr


def pod(namespace: str = "e2e-g-prod", **spec: Any) -> dict[str, Any]:
    """A pod that Pod Security Admission's `restricted` level admits (the tenant namespaces carry
    its enforce label, and that built-in plugin refuses before any admission policy runs), so
    only the guardrails can refuse it."""
    body: dict[str, Any] = {
        "containers": [{"name": "a", "image": "ghcr.io/acme/app:1", "imagePullPolicy": "Always"}],
        "nodeSelector": {"pool": "tenants"},
    }
    body.update(spec)
    body["securityContext"] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    for container in body["containers"]:
        container["securityContext"] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
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
            # A host of its own (tenantry-guardrail-hosts refuses others and a defaultBackend).
            "rules": [
                {
                    "host": "shop.e2e-g.apps.example.com",
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": "s", "port": {"number": 80}}},
                            }
                        ]
                    },
                }
            ],
        },
    }
    refused(
        ingress,
        "tenantry-guardrail-classes",
        "IngressClass public is not allowed",
        "Allowed: nginx, internal",
    )
    ingress["spec"]["ingressClassName"] = "nginx"
    admitted(ingress)
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
    admitted(pod())


def test_services_and_labels(guarded: bool) -> None:
    service: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "e2e-s", "namespace": "e2e-g-prod"},
        "spec": {"type": "NodePort", "ports": [{"port": 80}]},
    }
    refused(service, "tenantry-guardrail-services", "type NodePort is not allowed")
    service["metadata"]["namespace"] = "e2e-g-dev"
    admitted(service)
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
    _, _, created = wait_for(
        lambda: (r := dry_run(bare))[0] and r, timeout=30, what="a bare pod to be admitted and placed"
    )
    assert created is not None and created["spec"]["nodeSelector"] == {"pool": "tenants"}
    assert {"key": "dedicated", "operator": "Equal", "value": "tenants", "effect": "NoSchedule"} in created[
        "spec"
    ]["tolerations"]


def test_kube_system_is_never_affected(guarded: bool) -> None:
    admitted(pod("kube-system", nodeName="n", containers=[{"name": "a", "image": "quay.io/x:1"}]))


def test_only_the_operator_writes_the_parameter(guarded: bool) -> None:
    fake = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "tenantry-guardrails", "namespace": "e2e-g-prod"},
    }
    # The admin deletes it (protect-managed-objects is not installed here; the operator's role has
    # no delete on ConfigMaps).
    kubectl("delete", "configmap", "tenantry-guardrails", "-n", "e2e-g-prod")
    try:
        refused(fake, "tenantry-guardrail-parameter")
        refused(pod(), "no params found")  # new pods without the parameter: fail closed
    finally:
        apply_parameters()


# --- the operator as production runs it ----------------------------------------------------------

ADMISSION = ROOT / "manifests/admission"
# manifests/admission less the guardrails, which the module fixture keeps installed.
NOT_GUARDRAILS = (
    ADMISSION / "access",
    ADMISSION / "protect-managed-objects.yaml",
    ADMISSION / "protect-namespace-labels.yaml",
    ADMISSION / "quota-approval.yaml",
)
PRODUCTION = "e2e-prod-install"
PRODUCTION_NAMESPACES = (f"{PRODUCTION}-prod", f"{PRODUCTION}-dev")


@pytest.fixture
def default_policy() -> Iterator[None]:
    """The protect policies' parameter: the TenancyPolicy `default` (docs/admission.md)."""
    install_crds_and_roles()
    created = get("tenancypolicy", "default") is None
    if created:
        kubectl("apply", "--server-side", "-f", str(ROOT / "examples/policy-default.yaml"))
    yield
    if created:
        delete("tenancypolicy", "default")


def test_the_operator_as_its_serviceaccount_under_every_admission_policy(
    guarded: bool, default_policy: None, start_operator: OperatorFactory, tmp_path: Path
) -> None:
    """The other modules run the operator as the cluster admin without these policies (they
    refuse every writer of Tenantry's objects but this ServiceAccount). Here it logs in with a
    token from `kubectl create token`: the ClusterRole of manifests/base must suffice for an
    Organization's whole life, and no policy may refuse it."""
    token = serviceaccount_kubeconfig(tmp_path, OPERATOR_SA_NAMESPACE, OPERATOR_SA_NAME)
    try:
        kubectl("apply", "--server-side", "-k", str(ADMISSION))  # the guardrails: unchanged
        operator = start_operator(kubeconfig=token)
        apply(org(PRODUCTION, deletionPolicy="Delete"))
        obj = ready(PRODUCTION)
        assert conditions(obj)["RBACReady"]["status"] == "True"
        for namespace in PRODUCTION_NAMESPACES:
            assert get("resourcequota", "tenantry-quota", "-n", namespace) is not None
            assert get("networkpolicy", "tenantry-default-deny", "-n", namespace) is not None
            assert get("configmap", "tenantry-guardrails", "-n", namespace) is not None
        # The admin may not touch what the operator owns (the policies are live).
        refused = kubectl(
            "delete", "networkpolicy", "tenantry-default-deny", "-n", PRODUCTION_NAMESPACES[0], check=False
        )
        assert refused.returncode != 0 and "tenantry-protect-managed-objects" in refused.stderr, (
            refused.stderr
        )
        # deletionPolicy Delete: only the operator may delete the namespaces, and the namespace
        # controller empties them under the same policies.
        kubectl("delete", "organization", PRODUCTION, "--wait=true", "--timeout=120s")
        wait_for(
            lambda: all(get("namespace", ns) is None for ns in PRODUCTION_NAMESPACES),
            timeout=120,
            what=f"{', '.join(PRODUCTION_NAMESPACES)} to be deleted by the operator and finalized",
        )
        assert operator.alive(), operator.tail()
        assert "apply failed" not in operator.output(), operator.tail()
    finally:
        delete("organization", PRODUCTION, wait=True)
        start_operator.close()
        for path in NOT_GUARDRAILS:
            flag = "-k" if path.is_dir() else "-f"
            kubectl("delete", flag, str(path), "--ignore-not-found", check=False)
        for namespace in PRODUCTION_NAMESPACES:
            delete("namespace", namespace)
