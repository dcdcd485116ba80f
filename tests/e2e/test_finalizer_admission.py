"""The Organization finalizer set by the API server at create (manifests/admission/finalizer, a
MutatingAdmissionPolicy, Kubernetes >= 1.36), so the operator's first reconcile makes no write
for it (issue 17: one request fewer per Organization); without the policy the operator still
adds it itself. On a real API server: the test double has no admission chain.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.conftest import (
    KUBECONFIG,
    ROOT,
    OperatorFactory,
    admission_installed,
    apply,
    delete,
    get,
    install_crds_and_roles,
    kubectl,
    manifest,
    org,
    ready,
    wait_for,
)

pytestmark = pytest.mark.skipif(
    not KUBECONFIG, reason="TENANTRY_E2E_KUBECONFIG is not set: no real cluster to run the e2e suite against"
)

NAME = "e2e-finalizer"
FINALIZER = "tenantry.dev/finalizer"
POLICY = ROOT / "manifests/admission/finalizer"


def mutating_policies_served() -> bool:
    found = kubectl("api-resources", "--api-group=admissionregistration.k8s.io", "-o", "name", check=False)
    return "mutatingadmissionpolicies.admissionregistration.k8s.io" in found.stdout.split()


def finalizer_writes_by_the_operator(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """managedFields entries of the operator's own (non-status) writes: its finalizer patch."""
    return [
        entry
        for entry in obj["metadata"].get("managedFields") or []
        if entry.get("manager") == "tenantry" and not entry.get("subresource")
    ]


def dry_run_finalizers() -> list[str] | None:
    proc = kubectl(
        "create", "--dry-run=server", "-f", "-", "-o", "json", stdin=manifest(org(NAME)), check=False
    )
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout)["metadata"].get("finalizers") or []


@pytest.mark.parametrize("with_policy", [True, False], ids=["policy-installed", "no-policy"])
def test_the_finalizer_comes_from_the_api_server_and_the_operator_writes_none(
    start_operator: OperatorFactory, with_policy: bool
) -> None:
    if with_policy and not mutating_policies_served():
        pytest.skip("this API server does not serve MutatingAdmissionPolicy (Kubernetes < 1.36)")
    install_crds_and_roles()
    delete("organization", NAME, wait=True)
    kustomizations = (POLICY,) if with_policy else ()
    try:
        with admission_installed(*kustomizations):
            # A policy created (or deleted: the other case, run before) takes a moment to be in
            # force (or out of it) in the API server's admission.
            expected = [FINALIZER] if with_policy else []
            wait_for(
                lambda: dry_run_finalizers() == expected, timeout=30, what=f"finalizers {expected} at create"
            )
            apply(org(NAME, environments=["prod"]))
            created = get("organization", NAME)
            assert created is not None
            assert (created["metadata"].get("finalizers") or []) == ([FINALIZER] if with_policy else [])
            start_operator()
            ready(NAME)
            # Ready means the quota is in force (quota admission enforces status.hard only).
            quota = get("resourcequota", "tenantry-quota", "-n", f"{NAME}-prod")
            assert quota is not None and quota["status"]["hard"] == quota["spec"]["hard"]
            # kubectl hides managedFields unless asked (and the check below would pass on nothing).
            live = get("organization", NAME, "--show-managed-fields")
            assert live is not None and live["metadata"]["finalizers"] == [FINALIZER]
            assert live["metadata"].get("managedFields"), "managedFields not shown"
            writes = finalizer_writes_by_the_operator(live)
            if with_policy:
                assert writes == [], f"the operator patched the Organization anyway: {writes}"
            else:
                assert writes, "without the policy the operator adds the finalizer itself"
    finally:
        delete("organization", NAME, wait=True)
