"""End-to-end: Organization Admin self-service and imagePullPolicy Always on a real API server,
as the tenant admin (the Multi-Tenancy Benchmarks' OPS-3, OPS-4 and DI-1, with the CPI/TI checks
that must still pass). See docs/benchmarks.md.

The Organization `e2e-mtb` (admins: Group acme-admins) is rendered and applied as the operator's
ServiceAccount, with no operator running: what is refused here is refused by the API server
itself (RBAC and the admission policies). Requests come from `alice` (group acme-admins) through
her own kubeconfig beside TENANTRY_E2E_KUBECONFIG (the realk8s control plane writes one), or by
impersonation where a test needs another identity: a tenant holding cluster-admin shows that the
admission policies, not RBAC, refuse.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tenantry.api.organization import Organization
from tenantry.api.policy import TenancyPolicy
from tenantry.render import render_organization, render_shared_cluster_roles
from tests.e2e.conftest import KUBECONFIG, ROOT, get, kubectl, wait_for

pytestmark = pytest.mark.skipif(not KUBECONFIG, reason="TENANTRY_E2E_KUBECONFIG is not set")

OPERATOR = ("--as", "system:serviceaccount:tenantry-system:tenantry", "--as-group", "system:masters")
# A tenant who holds every permission: only the admission policies can refuse it.
ALMIGHTY_TENANT = ("--as", "e2e-tenant", "--as-group", "system:masters")
ADMISSION = ROOT / "manifests" / "admission"
ORG = "e2e-mtb"
PROD, DEV, SECURE = f"{ORG}-prod", f"{ORG}-dev", f"{ORG}-secure"
OTHER = "e2e-mtb-other-dev"

POLICY = TenancyPolicy.model_validate(
    {
        "apiVersion": "tenantry.dev/v1alpha1",
        "kind": "TenancyPolicy",
        "metadata": {"name": "default"},
        "spec": {
            "environments": [
                {"name": "prod", "quota": {"pods": "10"}},
                {"name": "dev", "quota": {"pods": "10"}, "developerExec": True},
                {"name": "secure", "quota": {"pods": "10"}, "mfa": {"required": True, "groupSuffix": ":mfa"}},
            ],
        },
    }
)


def _objects(name: str, environments: list[str]) -> list[dict[str, Any]]:
    org = Organization.model_validate(
        {
            "apiVersion": "tenantry.dev/v1alpha1",
            "kind": "Organization",
            "metadata": {"name": name},
            "spec": {
                "environments": environments,
                "members": {
                    "admins": [{"kind": "Group", "name": f"{name}-admins" if name != ORG else "acme-admins"}]
                },
            },
        }
    )
    return render_organization(org, POLICY, dt.date.today()).objects


def _alice() -> Path:
    assert KUBECONFIG is not None
    path = Path(KUBECONFIG).parent / "alice.kubeconfig"
    if not path.is_file():
        pytest.skip("no alice.kubeconfig (user alice, group acme-admins) beside TENANTRY_E2E_KUBECONFIG")
    return path


def as_alice(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(_alice()), "--request-timeout=30s", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _apply_as_operator(obj: dict[str, Any]) -> None:
    kubectl(
        *OPERATOR,
        "apply",
        "--server-side",
        "--field-manager",
        "tenantry",
        "-f",
        "-",
        stdin=yaml.safe_dump(obj),
    )


@pytest.fixture(scope="module")
def box() -> Iterator[bool]:
    """Two Organizations rendered onto the cluster with the admission policies of
    manifests/admission (protection, guardrails); yields whether the mutations are served."""
    for namespace in (PROD, DEV, SECURE, OTHER):  # a previous run's, still terminating
        kubectl(
            *OPERATOR,
            "delete",
            "namespace",
            namespace,
            "--ignore-not-found",
            "--wait=true",
            "--timeout=120s",
            check=False,
        )
    kubectl("apply", "--server-side", "-k", str(ROOT / "crds"))
    kubectl("wait", "--for=condition=Established", "crd/tenancypolicies.tenantry.dev", "--timeout=60s")
    kubectl(
        "apply",
        "--server-side",
        "-f",
        "-",
        stdin=yaml.safe_dump(json.loads(POLICY.model_dump_json(by_alias=True, exclude_none=True))),
    )
    for role in render_shared_cluster_roles():
        kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(role))
    kubectl("apply", "--server-side", "-f", str(ADMISSION / "protect-managed-objects.yaml"))
    kubectl("apply", "--server-side", "-k", str(ADMISSION / "guardrails"))
    served = (
        "mutatingadmissionpolicies.admissionregistration.k8s.io"
        in kubectl("api-resources", "--api-group=admissionregistration.k8s.io", "-o", "name").stdout
    )
    mutating = (
        served
        and kubectl("apply", "--server-side", "-k", str(ADMISSION / "image-pulls"), check=False).returncode
        == 0
    )
    for obj in _objects(ORG, ["prod", "dev", "secure"]) + _objects("e2e-mtb-other", ["dev"]):
        _apply_as_operator(obj)
    yield mutating
    for namespace in (PROD, DEV, SECURE, OTHER):
        kubectl(
            *OPERATOR, "delete", "namespace", namespace, "--ignore-not-found", "--wait=false", check=False
        )
    for name in (f"tenantry:member:{ORG}", "tenantry:member:e2e-mtb-other"):
        for kind in ("clusterrolebinding", "clusterrole"):
            kubectl(*OPERATOR, "delete", kind, name, "--ignore-not-found", check=False)
    kubectl("delete", "-k", str(ADMISSION / "image-pulls"), "--ignore-not-found", check=False)
    kubectl("delete", "-k", str(ADMISSION / "guardrails"), "--ignore-not-found", check=False)
    kubectl(
        "delete", "-f", str(ADMISSION / "protect-managed-objects.yaml"), "--ignore-not-found", check=False
    )


def created(body: dict[str, Any], *, dry_run: bool = True) -> dict[str, Any]:
    """Alice creates `body`; the object as the API server stored (or would store) it."""

    def attempt() -> dict[str, Any] | None:
        args = ["create", "-o", "json", "-f", "-"] + (["--dry-run=server"] if dry_run else [])
        proc = as_alice(*args, stdin=yaml.safe_dump(body))
        return json.loads(proc.stdout) if proc.returncode == 0 else None

    result: dict[str, Any] = wait_for(
        attempt, timeout=30, what="the admission policies to answer"
    )  # they load within seconds
    return result


def refused(body: dict[str, Any], *needles: str, who: tuple[str, ...] = ()) -> str:
    """The API server's refusal of `body` from alice (or `who`), containing every needle."""

    def attempt() -> str | None:
        args = ["create", "--dry-run=server", "-f", "-"]
        if who:
            proc = kubectl(*who, *args, stdin=yaml.safe_dump(body), check=False)
        else:
            proc = as_alice(*args, stdin=yaml.safe_dump(body))
        return None if proc.returncode == 0 else proc.stderr

    stderr: str = wait_for(attempt, timeout=30, what="the API server to refuse")
    for needle in needles:
        assert needle in stderr, stderr
    return stderr


def can_i(verb: str, resource: str, namespace: str) -> bool:
    return as_alice("auth", "can-i", verb, resource, "-n", namespace).stdout.strip() == "yes"


# --- objects ------------------------------------------------------------------------------------


def role(namespace: str = DEV, name: str = "e2e-reader", **rule: Any) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace},
        "rules": [rule or {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
    }


def binding(
    ref: str, *subjects: dict[str, str], namespace: str = DEV, kind: str = "ClusterRole", name: str = "e2e-b"
) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": ref},
        "subjects": list(subjects)
        or [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "acme-devs"}],
    }


def subject(kind: str, name: str, namespace: str | None = None) -> dict[str, str]:
    if kind == "ServiceAccount":
        return {"kind": kind, "name": name, "namespace": namespace or DEV}
    return {"kind": kind, "apiGroup": "rbac.authorization.k8s.io", "name": name}


def netpol(spec: dict[str, Any], namespace: str = DEV, name: str = "e2e-np") -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"podSelector": {}, **spec},
    }


RESTRICTED_POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def pod_spec(pull: str) -> dict[str, Any]:
    """A pod the `restricted` Pod Security level admits: only the pull policy can be refused."""
    container = {
        "image": "registry.k8s.io/pause:3.10",
        "imagePullPolicy": pull,
        "securityContext": RESTRICTED_CONTAINER,
    }
    return {
        "securityContext": RESTRICTED_POD_SECURITY,
        "initContainers": [{"name": "init", **container}],
        "containers": [{"name": "app", **container}],
    }


def pod(pull: str, namespace: str = DEV) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "e2e-di1", "namespace": namespace},
        "spec": pod_spec(pull),
    }


# === OPS-3, OPS-4: the admin may ===============================================================


def test_the_admin_may_create_roles_bindings_and_network_policies_in_its_own_namespaces(box: bool) -> None:
    for resource in ("roles", "rolebindings", "networkpolicies"):
        assert can_i("create", resource, DEV), resource
        assert can_i("create", resource, PROD), resource
        assert not can_i("create", resource, OTHER), resource  # TI-2: another tenant's namespace
    stored = created(role(), dry_run=False)
    assert stored["metadata"]["namespace"] == DEV
    created(binding("e2e-reader", kind="Role", name="e2e-role-binding"), dry_run=False)
    created(
        binding("tenantry:developer", subject("ServiceAccount", "default", PROD), name="e2e-developers"),
        dry_run=False,
    )
    created(
        netpol(
            {
                "ingress": [
                    {"from": [{"namespaceSelector": {"matchLabels": {"tenantry.dev/organization": ORG}}}]}
                ]
            }
        ),
        dry_run=False,
    )


def test_rbac_keeps_a_role_within_what_the_admin_holds(box: bool) -> None:
    refused(
        role(name="e2e-quota-writer", apiGroups=[""], resources=["resourcequotas"], verbs=["update"]),
        "attempting to grant RBAC permissions not currently held",
    )
    refused(role(name="e2e-everything", apiGroups=["*"], resources=["*"], verbs=["*"]), "not currently held")


def test_no_role_hands_out_exec_where_developers_may_not_exec(box: bool) -> None:
    """The admin holds exec in prod; RBAC's escalation check would let a Role of theirs pass it
    on to developers, whom the policy keeps from exec there (found attacking on 1.36.2)."""
    exec_rule = {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}
    refused(
        role(PROD, "e2e-exec", **exec_rule),
        "ValidatingAdmissionPolicy 'tenantry-guardrail-rbac'",
        f"grants pods/exec in {PROD}",
        "rule exec",
    )
    assert created(role(DEV, "e2e-exec", **exec_rule))["metadata"]["name"] == "e2e-exec"


# === the guardrails: every way out of the box is refused =========================================


@pytest.mark.parametrize("cluster_role", ["cluster-admin", "admin", "edit", "tenantry:platform-admin"])
def test_no_binding_to_another_cluster_role_even_for_a_tenant_holding_it(
    box: bool, cluster_role: str
) -> None:
    refused(
        binding(cluster_role, name="e2e-escalate"),
        "ValidatingAdmissionPolicy 'tenantry-guardrail-rbac'",
        f"ClusterRole {cluster_role} may not be bound in {DEV}",
        who=ALMIGHTY_TENANT,
    )


def test_the_admin_binds_nobody_outside_the_organization(box: bool) -> None:
    refused(
        binding("tenantry:viewer", subject("Group", "system:authenticated")),
        "Group system:authenticated is one of Kubernetes' own identities",
    )
    refused(
        binding("tenantry:viewer", subject("ServiceAccount", "default", OTHER)),
        f"ServiceAccount {OTHER}/default is not in a namespace of Organization {ORG}",
    )
    refused(
        binding("tenantry:developer-exec", namespace=PROD),
        f"ClusterRole tenantry:developer-exec may not be bound in {PROD}",
    )
    created(binding("tenantry:developer-exec"))  # dev: developers may exec there
    refused(binding("tenantry:viewer", name="tenantry:viewers-2"), "rule reserved-name")


def test_in_an_mfa_environment_only_the_mfa_form_of_groups(box: bool) -> None:
    # alice has no MFA group: with a suffix, the admins are bound as acme-admins:mfa only.
    assert not can_i("create", "rolebindings", SECURE)
    mfa_alice = ("--as", "alice", "--as-group", "acme-admins:mfa")
    refused(
        binding("tenantry:viewer", namespace=SECURE),
        "Group acme-devs cannot be bound",
        "a Group ending in :mfa",
        who=mfa_alice,
    )
    proc = kubectl(
        *mfa_alice,
        "create",
        "--dry-run=server",
        "-f",
        "-",
        stdin=yaml.safe_dump(binding("tenantry:viewer", subject("Group", "acme-devs:mfa"), namespace=SECURE)),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"ingress": [{"from": [{"namespaceSelector": {}}]}]}, "rule namespace-selector"),
        (
            {
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {
                                    "matchLabels": {"tenantry.dev/organization": "e2e-mtb-other"}
                                }
                            }
                        ]
                    }
                ]
            },
            "rule namespace-selector",
        ),
        ({"ingress": [{}]}, "an ingress rule without from"),
        ({"egress": [{"ports": [{"port": 443}]}], "policyTypes": ["Egress"]}, "an egress rule without to"),
        (
            {"egress": [{"to": [{"ipBlock": {"cidr": "10.244.0.0/16"}}]}], "policyTypes": ["Egress"]},
            "ipBlock 10.244.0.0/16 covers",
        ),
        (
            {"egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}], "policyTypes": ["Egress"]},
            "ipBlock 0.0.0.0/0 covers",
        ),
    ],
)
def test_network_policies_that_leave_the_organization_are_refused(
    box: bool, spec: dict[str, Any], needle: str
) -> None:
    refused(
        netpol(spec, name="e2e-open"),
        "ValidatingAdmissionPolicy 'tenantry-guardrail-network-policies'",
        needle,
    )


def test_network_policies_inside_the_organization_or_to_the_internet_are_accepted(box: bool) -> None:
    internet = {
        "cidr": "0.0.0.0/0",
        "except": [
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
            "169.254.169.254/32",
            "100.100.100.200/32",
        ],
    }
    created(
        netpol({"egress": [{"to": [{"ipBlock": internet}]}], "policyTypes": ["Egress"]}, name="e2e-internet")
    )
    created(
        netpol(
            {
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {
                                    "matchExpressions": [
                                        {
                                            "key": "kubernetes.io/metadata.name",
                                            "operator": "In",
                                            "values": [PROD],
                                        }
                                    ]
                                }
                            }
                        ]
                    }
                ]
            },
            name="e2e-from-prod",
        )
    )


# === CPI / TI: what the platform made stays the platform's =======================================


def test_the_platforms_objects_stay_out_of_the_admins_reach(box: bool) -> None:
    for kind, name in [
        ("networkpolicy", "tenantry-default-deny"),
        ("rolebinding", "tenantry:organization-admins"),
        ("rolebinding", "tenantry:organization-admins-self-service"),
        ("resourcequota", "tenantry-quota"),
        ("limitrange", "tenantry-limits"),
    ]:
        proc = as_alice("delete", kind, name, "-n", DEV, "--dry-run=server")
        assert proc.returncode != 0, (kind, name)
        assert "forbidden" in proc.stderr.lower(), proc.stderr
    # Tenants cannot dress their own objects as ours (the operator finds its objects by label).
    for labels in ({"app.kubernetes.io/managed-by": "tenantry"}, {"tenantry.dev/organization": ORG}):
        body = netpol({"ingress": [{"from": [{"podSelector": {}}]}]}, name="e2e-dressed")
        body["metadata"]["labels"] = labels
        refused(body, "denied request")
    assert get("networkpolicy", "tenantry-default-deny", "-n", DEV) is not None


# === DI-1: images are pulled, every time =========================================================


@pytest.mark.parametrize("pull", ["IfNotPresent", "Never"])
def test_a_restricted_pod_pulls_always(box: bool, pull: str) -> None:
    if box:
        stored = created(pod(pull))
        policies = [
            c["imagePullPolicy"] for c in stored["spec"]["containers"] + stored["spec"]["initContainers"]
        ]
        assert policies == ["Always", "Always"]
    else:
        refused(pod(pull), "tenantry-guardrail-image-pulls", "must set imagePullPolicy: Always")


def test_workload_templates_pull_always(box: bool) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "e2e-d", "namespace": DEV},
        "spec": {
            "selector": {"matchLabels": {"app": "d"}},
            "template": {"metadata": {"labels": {"app": "d"}}, "spec": pod_spec("IfNotPresent")},
        },
    }
    if not box:
        pytest.skip(
            "MutatingAdmissionPolicy v1 not served: refused instead (test_a_restricted_pod_pulls_always)"
        )
    stored = created(deployment)
    assert stored["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "Always"


def test_without_the_mutation_the_api_server_says_what_to_set(box: bool) -> None:
    if not box:
        pytest.skip("the mutation is not installed: test_a_restricted_pod_pulls_always covers the refusal")
    kubectl("delete", "-k", str(ADMISSION / "image-pulls"))
    try:
        refused(
            pod("IfNotPresent"),
            "ValidatingAdmissionPolicy 'tenantry-guardrail-image-pulls'",
            "container app (IfNotPresent), init (IfNotPresent) must set imagePullPolicy: Always",
        )
    finally:
        kubectl("apply", "--server-side", "-k", str(ADMISSION / "image-pulls"))
    wait_for(
        lambda: (
            as_alice("create", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(pod("Never"))).returncode
            == 0
        ),
        timeout=30,
        what="a pod with imagePullPolicy Never to be admitted again (the mutation back)",
    )
