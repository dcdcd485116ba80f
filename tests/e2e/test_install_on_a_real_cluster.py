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
from typing import Any

import pytest
import yaml

from tests.e2e.test_real_cluster import KUBECONFIG, ROOT, get, kubectl, org, ready, wait_for

pytestmark = pytest.mark.skipif(
    not KUBECONFIG, reason="TENANTRY_E2E_KUBECONFIG is not set: no real cluster to run the e2e suite against"
)


def tenantry_run(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tenantry",
            "run",
            "--kubeconfig",
            str(KUBECONFIG),
            "--metrics-port",
            "0",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def served(group_version: str) -> bool:
    return kubectl("get", "--raw", f"/apis/{group_version}", check=False).returncode == 0


@pytest.fixture(scope="module")
def operator() -> Iterator[subprocess.Popen[str]]:
    kubectl("apply", "--server-side", "-k", str(ROOT / "crds"))
    kubectl("apply", "--server-side", "-f", str(ROOT / "manifests/base/tenant-roles.yaml"))
    kubectl("wait", "--for=condition=Established", "crd/organizations.tenantry.dev", "--timeout=60s")
    proc = tenantry_run("--standalone", "--liveness", "http://127.0.0.1:18081/healthz")
    yield proc
    kubectl(
        "delete",
        "organization",
        "e2e-crd",
        "--ignore-not-found",
        "--wait=true",
        "--timeout=120s",
        check=False,
    )
    proc.terminate()
    proc.wait(timeout=30)
    for ns in ("e2e-crd-prod", "e2e-crd-dev"):
        kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=false", check=False)


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
        kubectl("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(policy))


def test_the_reserved_prefix_rule_is_enforced_by_the_api_server() -> None:
    # Round one: this rule had to be dropped by hand to make the CRD install.
    for name, env in (("kube", "system"), ("openshift", "x"), ("kube-x", "prod")):
        proc = kubectl(
            "apply",
            "--dry-run=server",
            "-f",
            "-",
            stdin=yaml.safe_dump(org(name, environments=[env])),
            check=False,
        )
        assert proc.returncode != 0 and "reserved prefix" in proc.stderr, (name, env, proc.stderr)
    kubectl(
        "apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(org("kubeflow", environments=["prod"]))
    )


def test_run_works_without_argocd(operator: subprocess.Popen[str]) -> None:
    # Round one: a text/plain 404 for argoproj.io/v1alpha1 crashed start-up every 60 s.
    if served("argoproj.io/v1alpha1"):
        pytest.skip("this cluster serves argoproj.io/v1alpha1 (Argo CD is installed)")
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump(org("e2e-crd")))
    ready("e2e-crd")
    assert operator.poll() is None


def test_replicas_elect_a_leader_without_kopf_peering_crds() -> None:
    # Round one: without --standalone it idled forever on a cluster without Kopf's peering CRDs.
    kubectl("create", "namespace", "e2e-tenantry-system", check=False)
    proc = tenantry_run(
        "--operator-namespace",
        "e2e-tenantry-system",
        "--lease-name",
        "e2e",
        "--liveness",
        "http://127.0.0.1:18082/healthz",
    )
    try:
        lease = wait_for(lambda: get("lease", "e2e", "-n", "e2e-tenantry-system"), timeout=60)
        assert lease["spec"]["holderIdentity"]
        time.sleep(5)
        assert proc.poll() is None, "the leader keeps running"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        kubectl(
            "delete", "namespace", "e2e-tenantry-system", "--ignore-not-found", "--wait=false", check=False
        )


def test_run_without_its_namespace_exits_saying_what_to_do() -> None:
    proc = tenantry_run(
        "--operator-namespace", "e2e-does-not-exist", "--liveness", "http://127.0.0.1:18083/healthz"
    )
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "e2e-does-not-exist" in output and "--standalone" in output


def test_deleting_the_organization_crd_keeps_tenants_and_the_operator(
    operator: subprocess.Popen[str],
) -> None:
    # Round one: the operator died on the watch's 404 and never resumed.
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump(org("e2e-crd", deletionPolicy="Delete")))
    ready("e2e-crd")
    namespace: dict[str, Any] | None = get("namespace", "e2e-crd-prod")
    assert namespace is not None
    kubectl("delete", "crd", "organizations.tenantry.dev", "--wait=true", "--timeout=120s")
    time.sleep(3)
    assert operator.poll() is None, "the operator survives its CRD being deleted"
    kept = get("namespace", "e2e-crd-prod")
    assert kept is not None and kept["metadata"]["uid"] == namespace["metadata"]["uid"]
    assert not kept["metadata"].get("deletionTimestamp"), (
        "deletionPolicy Delete is not carried out by a CRD deletion"
    )
    assert get("rolebinding", "tenantry:organization-admins", "-n", "e2e-crd-prod") is not None

    kubectl("apply", "--server-side", "-k", str(ROOT / "crds"))
    kubectl("wait", "--for=condition=Established", "crd/organizations.tenantry.dev", "--timeout=60s")
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump(org("e2e-crd", deletionPolicy="Delete")))
    ready("e2e-crd")  # resumed without a restart
    again = get("namespace", "e2e-crd-prod")
    assert again is not None and again["metadata"]["uid"] == namespace["metadata"]["uid"]
    assert operator.poll() is None


def test_the_readme_steps_work_verbatim(operator: subprocess.Popen[str]) -> None:
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
                local, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, check=False
            )
            assert proc.returncode == 0, f"{command}: {proc.stderr}"
        ready("acme")
    finally:
        kubectl(
            "delete", "-f", str(ROOT / "examples/organization-acme.yaml"), "--ignore-not-found", check=False
        )
        for env in ("prod", "staging", "dev"):  # Retain keeps them: an e2e run leaves nothing behind
            kubectl("delete", "namespace", f"acme-{env}", "--ignore-not-found", "--wait=false", check=False)
