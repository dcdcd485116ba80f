"""End-to-end against a real cluster: the integration scenarios, where kmock cannot go.

Set TENANTRY_E2E_KUBECONFIG to the kubeconfig of a disposable cluster (kind, k3s, ...) where
you may create CRDs, namespaces and RBAC. The suite applies crds/ and the tenant roles, runs
`tenantry run` against it as a separate process, and checks what only a real API server
shows: server-side apply field ownership (dropped fields really go), namespace finalization,
RBAC escalation prevention, CRD CEL admission, the admission policies compiling and denying.
Objects are named `e2e-*` and cleaned up.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import (
    ROOT,
    Operator,
    OperatorFactory,
    admission_installed,
    apply,
    conditions,
    delete,
    get,
    impersonating,
    install_crds_and_roles,
    kubectl,
    manifest,
    needs_cluster,
    org,
    ready,
    wait_for,
)

pytestmark = needs_cluster

RESYNC = 10  # seconds between the operator's full re-checks in this module


@pytest.fixture(scope="module")
def operator(start_module_operator: OperatorFactory) -> Iterator[Operator]:
    install_crds_and_roles()
    yield start_module_operator(resync=RESYNC)
    for name in ("e2e-a", "e2e-b", "e2e-c"):
        delete("organization", name, wait=True)
    start_module_operator.close()
    for ns in ("e2e-a-prod", "e2e-a-dev", "e2e-b-prod", "e2e-b-dev", "e2e-c-prod", "e2e-c-dev"):
        delete("namespace", ns)
    delete("tenancypolicy", "e2e")


def test_the_api_server_rejects_what_one_object_reveals() -> None:
    install_crds_and_roles()
    proc = apply(org("kube", environments=["system"]), dry_run=True, check=False)
    assert proc.returncode != 0 and "reserved prefix" in proc.stderr, proc.stderr
    bad = org("e2e-x", members={"admins": [{"kind": "Group", "name": "system:masters"}]})
    proc = apply(bad, dry_run=True, check=False)
    assert proc.returncode != 0 and "system:" in proc.stderr, proc.stderr


ADMISSION = ROOT / "manifests/admission"
ADMISSION_POLICIES = (
    "tenantry-protect-managed-objects",
    "tenantry-protect-namespace-labels",
    "tenantry-quota-approval",
    "tenantry-mfa",
    "tenantry-grant-approval",
)


def test_the_admission_policies_are_accepted() -> None:
    """The API server validates every admission object and compiles every expression of a
    policy when it is stored, and refuses the whole object if one check fails (1.36.2 refused all
    three first policies: `variables` in matchConditions; then tenantry-mfa: `*` beside `*/*`).
    A server-side dry run does all of that without storing anything."""
    proc = kubectl("apply", "--server-side", "--dry-run=server", "-k", str(ADMISSION), check=False)
    assert proc.returncode == 0, proc.stderr
    for name in ADMISSION_POLICIES:
        assert f"validatingadmissionpolicy.admissionregistration.k8s.io/{name}" in proc.stdout
        assert f"validatingadmissionpolicybinding.admissionregistration.k8s.io/{name}" in proc.stdout


def test_the_admission_policies_deny_with_their_message() -> None:
    """Applied for real (and removed again before the operator starts: they would deny its
    writes, it does not run as tenantry-system/tenantry here): a namespace carrying our ownership
    label is refused even for system:masters, with the policy's messageExpression."""
    install_crds_and_roles()
    created_default = get("tenancypolicy", "default") is None
    if created_default:
        kubectl("apply", "--server-side", "-f", str(ROOT / "examples/policy-default.yaml"))
    claim = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "e2e-claimed", "labels": {"app.kubernetes.io/managed-by": "tenantry"}},
    }
    intruder = impersonating("e2e-intruder", "system:masters")
    try:
        with admission_installed(ADMISSION):

            def denied() -> str | None:
                # A server-side dry run: admission runs, nothing is stored (a namespace created
                # before the policy is loaded would still be terminating at the next try).
                proc = kubectl(
                    *intruder, "create", "--dry-run=server", "-f", "-", stdin=manifest(claim), check=False
                )
                return None if proc.returncode == 0 else proc.stderr  # admitted: not loaded yet

            stderr = wait_for(denied, timeout=30, what="tenantry-protect-namespace-labels to refuse a claim")
            assert "ValidatingAdmissionPolicy 'tenantry-protect-namespace-labels'" in stderr, stderr
            assert "carries Tenantry ownership labels" in stderr and "e2e-intruder may not" in stderr, stderr
            for name in ADMISSION_POLICIES:
                assert get("validatingadmissionpolicy", name) is not None, name
    finally:
        delete("namespace", "e2e-claimed")
        if created_default:
            delete("tenancypolicy", "default")


def test_onboarding_drift_and_an_idle_resync_that_writes_nothing(operator: Operator) -> None:
    apply(org("e2e-a", deletionPolicy="Delete"))
    ready("e2e-a")
    netpol = ("networkpolicy", "tenantry-default-deny", "-n", "e2e-a-prod")
    before = get(*netpol)
    assert before is not None
    time.sleep(2 * RESYNC + 3)  # two resyncs
    after = get(*netpol)
    assert after is not None and after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    kubectl("delete", *netpol)
    wait_for(lambda: get(*netpol), timeout=10, what="the deleted default-deny NetworkPolicy to be back")
    kubectl("patch", *netpol, "--type=merge", "-p", json.dumps({"spec": {"ingress": [{}]}}))
    wait_for(
        lambda: not (get(*netpol) or {}).get("spec", {}).get("ingress"),
        timeout=10,
        what="the ingress rule patched into default-deny to be removed",
    )
    events = kubectl(
        "get", "events", "-n", "default", "--field-selector", "reason=DriftCorrected", "-o", "json"
    )
    assert any("e2e-a" in e["involvedObject"]["name"] for e in json.loads(events.stdout)["items"])


def test_a_dropped_quota_key_really_goes_with_server_side_apply(operator: Operator) -> None:
    apply(org("e2e-b"))
    ready("e2e-b")
    policy = {
        "apiVersion": "tenantry.dev/v1alpha1",
        "kind": "TenancyPolicy",
        "metadata": {"name": "e2e"},
        "spec": {
            "environments": [
                {"name": "prod", "quota": {"pods": "7"}},
                {"name": "dev", "quota": {"pods": "3"}},
            ]
        },
    }
    apply(policy)
    kubectl("patch", "organization", "e2e-b", "--type=merge", "-p", json.dumps({"spec": {"policy": "e2e"}}))
    wait_for(
        lambda: (
            (get("resourcequota", "tenantry-quota", "-n", "e2e-b-prod") or {}).get("spec", {}).get("hard")
            == {"pods": "7"}
        ),
        timeout=30,
        what="e2e-b-prod's quota to be exactly {pods: 7}",
    )


def test_retain_orphans_and_recreation_readopts(operator: Operator) -> None:
    apply(org("e2e-c"))
    ready("e2e-c")
    kubectl("delete", "organization", "e2e-c", "--wait=true", "--timeout=120s")
    ns = get("namespace", "e2e-c-prod")
    assert ns is not None and ns["metadata"]["labels"]["tenantry.dev/orphaned"] == "true"
    assert get("rolebinding", "tenantry:organization-admins", "-n", "e2e-c-prod") is None
    apply(org("e2e-c"))
    ready("e2e-c")
    ns = get("namespace", "e2e-c-prod")
    assert ns is not None and "tenantry.dev/orphaned" not in ns["metadata"]["labels"]


def test_a_pre_existing_namespace_is_refused(operator: Operator) -> None:
    kubectl("create", "namespace", "e2e-d-prod")
    try:
        apply(org("e2e-d"))
        wait_for(
            lambda: (
                conditions(get("organization", "e2e-d")).get("Ready", {}).get("reason") == "NamespaceConflict"
            ),
            timeout=60,
            what="Organization e2e-d to report NamespaceConflict",
        )
        assert get("resourcequota", "tenantry-quota", "-n", "e2e-d-prod") is None
    finally:
        delete("organization", "e2e-d", wait=True)
        delete("namespace", "e2e-d-prod", "e2e-d-dev")


def test_delete_policy_removes_namespaces_through_real_finalization(operator: Operator) -> None:
    # e2e-a is the Organization onboarded above, with deletionPolicy Delete.
    kubectl("delete", "organization", "e2e-a", "--wait=true", "--timeout=120s")
    wait_for(
        lambda: get("namespace", "e2e-a-prod") is None,
        timeout=120,
        what="namespace e2e-a-prod to be finalized and gone",
    )
