"""The install path on a real API server: what Kubernetes 1.36.2 refused in round one, one test
each (issue "Tenantry on a real cluster"), plus the operator's life around its CRDs.

Runs only with TENANTRY_E2E_KUBECONFIG (a disposable cluster); every object is named `e2e-*`.
The last test deletes and re-creates the Organization CRD while the operator runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import (
    KUBECONFIG,
    ROOT,
    Operator,
    OperatorFactory,
    apply,
    can,
    delete,
    get,
    install_crds_and_roles,
    kubectl,
    manifest,
    needs_cluster,
    org,
    ready,
    served,
    user_kubeconfig,
    wait_for,
)

pytestmark = needs_cluster


@pytest.fixture(scope="module")
def operator(start_module_operator: OperatorFactory) -> Iterator[Operator]:
    install_crds_and_roles()
    yield start_module_operator()
    delete("organization", "e2e-crd", wait=True)
    start_module_operator.close()
    for ns in ("e2e-crd-prod", "e2e-crd-dev"):
        delete("namespace", ns)


def test_both_crds_install_and_become_established() -> None:
    # Round one: "estimated rule cost exceeds budget" refused both CRDs.
    kubectl("apply", "--server-side", "-k", str(ROOT / "crds"))
    for crd in ("organizations.tenantry.dev", "tenancypolicies.tenantry.dev"):
        kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")


def test_a_tenancy_policy_without_optional_sections_is_accepted() -> None:
    # Round one: "no such key: managedBy" (a CEL rule read an absent optional field).
    for spec in ({}, {"environments": [{"name": "prod", "quota": {"pods": "10"}}]}):
        policy = {
            "apiVersion": "tenantry.dev/v1alpha1",
            "kind": "TenancyPolicy",
            "metadata": {"name": "e2e-optional"},
            "spec": spec,
        }
        kubectl("apply", "--dry-run=server", "-f", "-", stdin=manifest(policy))


def test_the_reserved_prefix_rule_is_enforced_by_the_api_server() -> None:
    # Round one: this rule had to be dropped by hand to make the CRD install.
    for name, env in (("kube", "system"), ("openshift", "x"), ("kube-x", "prod")):
        proc = kubectl(
            "apply",
            "--dry-run=server",
            "-f",
            "-",
            stdin=manifest(org(name, environments=[env])),
            check=False,
        )
        assert proc.returncode != 0 and "reserved prefix" in proc.stderr, (name, env, proc.stderr)
    kubectl("apply", "--dry-run=server", "-f", "-", stdin=manifest(org("kubeflow", environments=["prod"])))


def test_run_works_without_argocd(operator: Operator) -> None:
    # Round one: a text/plain 404 for argoproj.io/v1alpha1 crashed start-up every 60 s.
    if served("argoproj.io/v1alpha1"):
        pytest.skip("this cluster serves argoproj.io/v1alpha1 (Argo CD is installed)")
    apply(org("e2e-crd"))
    ready("e2e-crd")
    assert operator.alive(), operator.tail()


def test_replicas_elect_a_leader_without_kopf_peering_crds(start_operator: OperatorFactory) -> None:
    # Round one: without --standalone it idled forever on a cluster without Kopf's peering CRDs.
    kubectl("create", "namespace", "e2e-tenantry-system", check=False)
    try:
        leader = start_operator(
            "--operator-namespace", "e2e-tenantry-system", "--lease-name", "e2e", standalone=False
        )
        lease = wait_for(
            lambda: get("lease", "e2e", "-n", "e2e-tenantry-system"),
            timeout=60,
            what="the operator to create and hold the Lease e2e",
        )
        assert lease["spec"]["holderIdentity"]
        time.sleep(5)
        assert leader.alive(), "the leader keeps running"
    finally:
        start_operator.close()
        delete("namespace", "e2e-tenantry-system")


def test_run_without_its_namespace_exits_saying_what_to_do(start_operator: OperatorFactory) -> None:
    started = start_operator("--operator-namespace", "e2e-does-not-exist", standalone=False)
    assert started.wait(timeout=120) != 0
    output = started.output()
    assert "e2e-does-not-exist" in output and "--standalone" in output, output


def test_deleting_the_organization_crd_keeps_tenants_and_the_operator(operator: Operator) -> None:
    # Round one: the operator died on the watch's 404 and never resumed.
    apply(org("e2e-crd", deletionPolicy="Delete"))
    ready("e2e-crd")
    namespace = get("namespace", "e2e-crd-prod")
    assert namespace is not None
    kubectl("delete", "crd", "organizations.tenantry.dev", "--wait=true", "--timeout=120s")
    time.sleep(3)
    assert operator.alive(), "the operator survives its CRD being deleted"
    kept = get("namespace", "e2e-crd-prod")
    assert kept is not None and kept["metadata"]["uid"] == namespace["metadata"]["uid"]
    assert not kept["metadata"].get("deletionTimestamp"), (
        "deletionPolicy Delete is not carried out by a CRD deletion"
    )
    assert get("rolebinding", "tenantry:organization-admins", "-n", "e2e-crd-prod") is not None

    install_crds_and_roles()
    apply(org("e2e-crd", deletionPolicy="Delete"))
    ready("e2e-crd")  # resumed without a restart
    again = get("namespace", "e2e-crd-prod")
    assert again is not None and again["metadata"]["uid"] == namespace["metadata"]["uid"]
    assert operator.alive(), operator.tail()


def test_real_users_get_what_the_organization_gives_them(operator: Operator) -> None:
    """With their own client certificates (no impersonation): alice, whose certificate carries
    the group acme-admins, administers an Organization that names that group; bob gets nothing.
    Needs alice.kubeconfig and bob.kubeconfig beside the admin kubeconfig."""
    alice, bob = user_kubeconfig("alice"), user_kubeconfig("bob")
    name = "e2e-users"
    try:
        apply(org(name, members={"admins": [{"kind": "Group", "name": "acme-admins"}]}))
        ready(name)
        dev = f"{name}-dev"
        assert can("create", "deployments.apps", dev, kubeconfig=alice)
        assert can("delete", "pods", dev, kubeconfig=alice)
        # Organization Admin self-service (on by default): RBAC lets admins write NetworkPolicies;
        # the platform's own tenantry-* ones are held by admission (tests/e2e/test_self_service.py).
        assert can("create", "networkpolicies.networking.k8s.io", dev, kubeconfig=alice)
        assert not can("patch", "resourcequotas", dev, kubeconfig=alice)
        assert not can("patch", "limitranges", dev, kubeconfig=alice)
        assert not can("create", "endpoints", dev, kubeconfig=alice), "CVE-2021-25740"
        assert not can("create", "namespaces", "default", kubeconfig=alice)
        assert not can("get", "pods", "default", kubeconfig=alice), "nothing outside the Organization"
        assert not can("get", "pods", dev, kubeconfig=bob)
    finally:
        delete("organization", name, wait=True)
        for env in ("prod", "dev"):
            delete("namespace", f"{name}-{env}")


def test_the_readme_steps_work_verbatim(operator: Operator) -> None:
    # README "Running the operator against a cluster": every command, in order.
    text = (ROOT / "README.md").read_text()
    section = text.split("## Running the operator against a cluster", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    # Then "Your first Organization": the example applied and waited for.
    block += section.split("### Your first Organization", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [
        line.strip() for line in block.strip().splitlines() if line.strip() and not line.startswith("#")
    ]
    assert any(c.startswith("kubectl apply --server-side -k crds/") for c in commands)
    env = {**os.environ, "KUBECONFIG": str(KUBECONFIG)}
    try:
        for command in commands:
            if " run " in f" {command} ":
                continue  # the operator itself: the module fixture runs exactly this, with --standalone
            local = command.replace(".venv/bin/tenantry", f"{sys.executable} -m tenantry")
            proc = subprocess.run(
                local, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=180
            )
            assert proc.returncode == 0, f"{command}: {proc.stderr}"
        ready("acme")
    finally:
        delete("-f", str(ROOT / "examples/organization-acme.yaml"), wait=True)
        for name in ("prod", "staging", "dev"):  # Retain keeps them: an e2e run leaves nothing behind
            delete("namespace", f"acme-{name}")
