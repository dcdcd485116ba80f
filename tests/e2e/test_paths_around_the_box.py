"""End-to-end: the paths around the box (issue 21), attacked as a tenant on a real API server.

Installed as documented (docs/install.md): the CRDs, manifests/base's RBAC and the operator's
identity, the default TenancyPolicy (examples/policy-default.yaml), manifests/admission after a
server-side dry run of all of it, and the operator running as its ServiceAccount. Two
Organizations: `e2e-boxa`, whose admins are the group `acme-admins` (alice's client
certificate), and `e2e-boxb`, the victim. Every attack is sent as alice, with her certificate,
through RBAC and admission as a tenant meets them; each test expects the API server's refusal and
its words. Where the attack needs a kind tenant roles cannot create at all (Gateway API routes),
it is sent as a cluster-admin impersonating a tenant name, so that only admission can refuse it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import (
    ROOT,
    Operator,
    OperatorFactory,
    apply,
    delete,
    get,
    impersonating,
    install_crds_and_roles,
    install_operator_identity,
    install_stand_in_crd,
    kubectl,
    needs_cluster,
    org,
    ready,
    serviceaccount_kubeconfig,
    user_kubeconfig,
    wait_for,
)

pytestmark = needs_cluster

ADMISSION = ROOT / "manifests/admission"
POLICY = ROOT / "examples/policy-default.yaml"
A, B = "e2e-boxa", "e2e-boxb"
PROD = f"{A}-prod"
VICTIM = f"{B}-prod"
NAMESPACES = [f"{o}-{e}" for o in (A, B) for e in ("prod", "staging", "dev")]
ROUTES_CRD = "httproutes.gateway.networking.k8s.io"
ADMIN_TENANT = impersonating("e2e-box-tenant", "system:masters")


@pytest.fixture(scope="module")
def alice() -> Path:
    return user_kubeconfig("alice")


@pytest.fixture(scope="module")
def box(
    start_module_operator: OperatorFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    install_crds_and_roles()
    install_operator_identity()
    had_default = get("tenancypolicy", "default") is not None
    kubectl("apply", "--server-side", "-f", str(POLICY))
    # Completely or not at all: a server-side dry run compiles and validates every object first.
    kubectl("apply", "--server-side", "--dry-run=server", "-k", str(ADMISSION))
    kubectl("apply", "--server-side", "-k", str(ADMISSION))
    try:
        token = serviceaccount_kubeconfig(tmp_path_factory.mktemp("sa"), "tenantry-system", "tenantry")
        operator = start_module_operator(kubeconfig=token)
        apply(org(A, members={"admins": [{"kind": "Group", "name": "acme-admins"}]}))
        apply(org(B))
        try:
            ready(A)
            ready(B)
        except AssertionError:
            # The operator's own writes into the new namespaces meet the same server bug.
            if "no params found" in operator.output():
                frozen()
            raise
        skip_if_parameters_are_frozen()
        yield operator
    finally:
        # The operator releases the Organizations (finalizer), then goes; the admission policies
        # go before the namespaces (only the operator may delete an owned namespace).
        for name in (A, B):
            delete("organization", name, wait=True)
        start_module_operator.close()
        kubectl("delete", "-k", str(ADMISSION), "--ignore-not-found", check=False)
        for ns in NAMESPACES:
            delete("namespace", ns)
        delete("crd", ROUTES_CRD)
        if not had_default:
            delete("tenancypolicy", "default")


def skip_if_parameters_are_frozen() -> None:
    """On an API server where guardrails were removed earlier in the same process, new ConfigMap
    parameters are never seen (kubernetes/kubernetes#130887; tests/e2e/test_guardrails.py has the
    details): every new object in a new tenant namespace is refused with "no params found".
    Skip, saying why, rather than fail on the server's bug."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta("e2e-probe"),
        "spec": {"ports": [{"port": 80}]},
    }
    last: list[str] = [""]

    def answer() -> bool:
        proc = kubectl(
            *ADMIN_TENANT, "create", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(service), check=False
        )
        last[0] = proc.stderr
        return proc.returncode == 0

    try:
        wait_for(answer, timeout=20, what=f"the guardrails to read {PROD}'s parameter")
    except AssertionError:
        if "no params found" not in last[0]:
            raise
        frozen()


def frozen() -> None:
    pytest.skip(
        "this kube-apiserver no longer sees new ConfigMap parameters (kubernetes/kubernetes#130887: "
        "guardrails were removed earlier in this API server process): restart it to run these"
    )


def as_alice(alice: Path, obj: dict[str, Any], verb: str = "create") -> tuple[bool, str]:
    """Send `obj` as alice (a real dry run through RBAC and admission); (accepted, stderr)."""
    proc = kubectl(
        verb, "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(obj), kubeconfig=alice, check=False
    )
    return proc.returncode == 0, proc.stderr


def refused(alice: Path, obj: dict[str, Any], *words: str) -> str:
    ok, stderr = as_alice(alice, obj)
    assert not ok, f"accepted: {obj['kind']} {obj['metadata']['name']}"
    for word in words:
        assert word in stderr, stderr
    return stderr


def accepted(alice: Path, obj: dict[str, Any]) -> None:
    ok, stderr = as_alice(alice, obj)
    assert ok, stderr


def meta(name: str, namespace: str = PROD, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, **extra}


BACKEND = {"service": {"name": "web", "port": {"number": 80}}}


def ingress(*hosts: str, annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    rules = [
        {
            **({"host": h} if h else {}),
            "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": BACKEND}]},
        }
        for h in hosts
    ]
    body = {"rules": rules, **spec} if rules else dict(spec)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": meta("e2e-ing", annotations=annotations or {}),
        "spec": body,
    }


def restricted_pod(name: str, resources: dict[str, Any] | None = None) -> dict[str, Any]:
    """A pod Pod Security `restricted` and the image-pulls guardrail admit, so that only the quota
    can refuse it."""
    container: dict[str, Any] = {
        "name": "app",
        "image": "registry.k8s.io/pause:3.10",
        "imagePullPolicy": "Always",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if resources:
        container["resources"] = resources
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta(name), "spec": {"containers": [container]}}


# --- 1. Endpoints ----------------------------------------------------------------------------------


def test_a_tenant_cannot_point_endpoints_at_another_tenants_pod(box: Operator, alice: Path) -> None:
    selectorless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta("stolen"),
        "spec": {"ports": [{"port": 80}]},
    }
    accepted(alice, selectorless)
    endpoints = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": meta("stolen"),
        "subsets": [{"addresses": [{"ip": "10.244.2.17"}], "ports": [{"port": 80}]}],
    }
    refused(alice, endpoints, 'User "alice" cannot create resource "endpoints"', f'namespace "{PROD}"')
    reads = kubectl("get", "endpoints", "-n", PROD, kubeconfig=alice, check=False)
    assert reads.returncode == 0, reads.stderr  # read stays
    for verb in ("create", "update", "patch", "delete"):
        can = kubectl("auth", "can-i", verb, "endpoints", "-n", PROD, kubeconfig=alice, check=False)
        assert can.stdout.strip() == "no", (verb, can.stdout)


# --- 2. ExternalName ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target", [f"billing.{VICTIM}.svc", f"billing.{VICTIM}.svc.cluster.local", "169.254.169.254"]
)
def test_external_name_services_into_the_cluster_or_to_metadata_are_refused(
    box: Operator, alice: Path, target: str
) -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta("e2e-ext"),
        "spec": {"type": "ExternalName", "externalName": target},
    }
    refused(
        alice,
        service,
        "ValidatingAdmissionPolicy 'tenantry-guardrail-services'",
        f"Service {PROD}/e2e-ext: type ExternalName to {target} is not allowed in {PROD}",
        "it is an IP address or a cluster-internal name",
        "Allowed: none (spec.guardrails.externalNames)",
    )


def test_external_names_are_refused_by_default(box: Operator, alice: Path) -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta("e2e-ext"),
        "spec": {"type": "ExternalName", "externalName": "api.stripe.com"},
    }
    refused(alice, service, "it is not among the allowed targets. Allowed: none")


# --- 3. hosts --------------------------------------------------------------------------------------


def test_an_ingress_uses_only_its_organizations_hosts(box: Operator, alice: Path) -> None:
    accepted(alice, ingress(f"shop.{A}.apps.example.com"))
    allowed = f"Allowed hosts: *.{A}.apps.example.com"
    refused(
        alice,
        ingress(f"billing.{B}.apps.example.com"),
        "ValidatingAdmissionPolicy 'tenantry-guardrail-hosts'",
        f"Ingress {PROD}/e2e-ing: host billing.{B}.apps.example.com is not one of the hosts of {PROD}",
        allowed,
    )
    refused(alice, ingress("*.apps.example.com"), "host *.apps.example.com is not one of the hosts", allowed)
    refused(alice, ingress(""), "a rule without a host catches the traffic of every host nobody claimed")
    refused(
        alice,
        ingress(defaultBackend=BACKEND),
        f"Ingress {PROD}/e2e-ing: spec.defaultBackend catches the traffic of every host nobody claimed",
    )
    refused(
        alice,
        ingress(
            f"shop.{A}.apps.example.com",
            annotations={"nginx.ingress.kubernetes.io/server-snippet": "location / { proxy_pass http://x; }"},
        ),
        "annotation nginx.ingress.kubernetes.io/server-snippet is not allowed",
        "rule annotations",
    )


def test_gateway_api_routes_are_held_to_the_same_hosts(box: Operator) -> None:
    """The policy matches routes by group and resource, so it loaded without their CRD; with one
    installed (a stand-in HTTPRoute CRD), the API server applies it to them."""
    # Like Gateway API's own CRDs: *.k8s.io groups need the approval annotation.
    approval = {"api-approved.kubernetes.io": "https://github.com/kubernetes-sigs/gateway-api/pull/2466"}
    assert (
        install_stand_in_crd("gateway.networking.k8s.io", "HTTPRoute", "httproutes", approval) == ROUTES_CRD
    )

    def route(*hostnames: str) -> str:
        body: dict[str, Any] = {"parentRefs": [{"name": "shared", "namespace": "gateways"}]}
        if hostnames:
            body["hostnames"] = list(hostnames)
        obj = {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": meta("e2e-rt"),
            "spec": body,
        }
        proc = kubectl(
            *ADMIN_TENANT, "create", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(obj), check=False
        )
        return "" if proc.returncode == 0 else proc.stderr

    # The discovery of the new resource by the admission plugin takes a moment.
    stderr = wait_for(
        lambda: route(f"billing.{B}.apps.example.com"), timeout=30, what="the route to be refused"
    )
    assert f"HTTPRoute {PROD}/e2e-rt: host billing.{B}.apps.example.com is not one of the hosts" in stderr
    assert "a route without spec.hostnames takes every host" in route()
    assert route(f"shop.{A}.apps.example.com") == ""


# --- 4. template labels -------------------------------------------------------------------------


def test_template_labels_cannot_claim_another_organization(box: Operator, alice: Path) -> None:
    pod = restricted_pod("x")
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta("e2e-dep"),
        "spec": {
            "selector": {"matchLabels": {"app": "x"}},
            "template": {"metadata": {"labels": {"app": "x"}}, "spec": pod["spec"]},
        },
    }
    accepted(alice, deployment)
    spoofed = copy.deepcopy(deployment)
    spoofed["spec"]["template"]["metadata"]["labels"]["tenantry.dev/organization"] = B
    refused(
        alice,
        spoofed,
        "ValidatingAdmissionPolicy 'tenantry-guardrail-labels'",
        f"Deployment {PROD}/e2e-dep: key tenantry.dev/organization in a template",
    )
    owned = copy.deepcopy(deployment)
    owned["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "tenantry"
    refused(alice, owned, "label app.kubernetes.io/managed-by=tenantry in a template")


# --- 5. quota -----------------------------------------------------------------------------------


def test_gpus_ephemeral_storage_and_object_counts_are_capped(box: Operator, alice: Path) -> None:
    def hard() -> dict[str, str] | None:
        quota = get("resourcequota", "tenantry-quota", "-n", PROD)
        status = (quota or {}).get("status", {}).get("hard", {})
        return status if "requests.nvidia.com/gpu" in status else None

    # Quota admission enforces what the quota controller has put in status.hard.
    status = wait_for(hard, timeout=30, what="the quota controller to fill tenantry-quota's status")
    for key in (
        "secrets",
        "configmaps",
        "replicationcontrollers",
        "resourcequotas",
        "requests.ephemeral-storage",
    ):
        assert key in status, key
    gpu = restricted_pod("e2e-gpu", {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}})
    refused(alice, gpu, "exceeded quota: tenantry-quota", "requests.nvidia.com/gpu=0")
    disk = restricted_pod(
        "e2e-disk", {"requests": {"ephemeral-storage": "50Ti"}, "limits": {"ephemeral-storage": "50Ti"}}
    )
    refused(alice, disk, "exceeded quota: tenantry-quota", "requests.ephemeral-storage")
    pages = restricted_pod(
        "e2e-pages",
        {
            "requests": {"hugepages-1Gi": "64Gi", "memory": "1Gi"},
            "limits": {"hugepages-1Gi": "64Gi", "memory": "1Gi"},
        },
    )
    refused(alice, pages, "exceeded quota: tenantry-quota", "requests.hugepages-1Gi")


def test_the_crds_take_every_quota_key_kubernetes_accepts(box: Operator) -> None:
    keys = {
        "requests.nvidia.com/gpu": "0",
        "hugepages-2Mi": "0",
        "requests.hugepages-1Gi": "0",
        "count/deployments.apps": "10",
        "gold.storageclass.storage.k8s.io/requests.storage": "10Gi",
        "requests.ephemeral-storage": "10Gi",
    }

    def policy(quota: dict[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "tenantry.dev/v1alpha1",
            "kind": "TenancyPolicy",
            "metadata": {"name": "e2e-box-keys"},
            "spec": {"environments": [{"name": "prod", "quota": quota}]},
        }

    apply(policy(keys), dry_run=True)
    proc = apply(policy({"gpus": "1"}), dry_run=True, check=False)
    assert proc.returncode != 0 and "not a quota resource Kubernetes accepts" in proc.stderr, proc.stderr


# --- 6. volumes and 7. tokens -----------------------------------------------------------------------


def test_a_claim_cannot_bind_a_volume_by_name(box: Operator, alice: Path) -> None:
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta("e2e-pvc"),
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
            "storageClassName": "",
            "volumeName": f"{B}-data-pv",
        },
    }
    refused(
        alice,
        claim,
        "ValidatingAdmissionPolicy 'tenantry-guardrail-volumes'",
        f"spec.volumeName {B}-data-pv names a PersistentVolume not declared for the Organization of {PROD}",
        "Allowed: none",
    )


def test_a_legacy_token_secret_is_refused(box: Operator, alice: Path) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/service-account-token",
        "metadata": meta("e2e-token", annotations={"kubernetes.io/service-account.name": "default"}),
    }
    refused(
        alice,
        secret,
        "ValidatingAdmissionPolicy 'tenantry-guardrail-tokens'",
        f"Secret {PROD}/e2e-token: type kubernetes.io/service-account-token gets a ServiceAccount token",
        "that never expires",
    )


# --- 8. the words, and the install ---------------------------------------------------------------


def test_claiming_ownership_of_ones_own_configmap_gets_the_right_words(box: Operator, alice: Path) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta("e2e-cm", labels={"app.kubernetes.io/managed-by": "tenantry"}),
        "data": {"a": "b"},
    }
    stderr = refused(alice, config, "app.kubernetes.io/managed-by=tenantry")
    assert "Change the Organization" not in stderr and "is managed by Tenantry" not in stderr, stderr


def test_the_admission_kustomization_installed_completely(box: Operator) -> None:
    """Every policy and every binding of manifests/admission is there, and no binding names a
    policy that is not (the dry run in the fixture refuses the whole set if one object is bad)."""
    rendered = kubectl("kustomize", str(ADMISSION)).stdout
    shipped = [d for d in yaml.safe_load_all(rendered) if d]
    policies = json.loads(kubectl("get", "validatingadmissionpolicies", "-o", "json").stdout)["items"]
    bindings = json.loads(kubectl("get", "validatingadmissionpolicybindings", "-o", "json").stdout)["items"]
    names = {p["metadata"]["name"] for p in policies}
    for doc in shipped:
        kind = doc["kind"]
        if kind == "ValidatingAdmissionPolicy":
            assert doc["metadata"]["name"] in names
        elif kind == "ValidatingAdmissionPolicyBinding":
            (binding,) = [b for b in bindings if b["metadata"]["name"] == doc["metadata"]["name"]]
            assert binding["spec"]["policyName"] in names, binding["metadata"]["name"]
    for policy in policies:
        if policy["metadata"]["name"].startswith("tenantry-"):
            warnings = (policy.get("status", {}).get("typeChecking") or {}).get("expressionWarnings")
            assert not warnings, (policy["metadata"]["name"], warnings)
