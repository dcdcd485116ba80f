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
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import minimal_org

KUBECONFIG = os.environ.get("TENANTRY_E2E_KUBECONFIG")
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not KUBECONFIG, reason="TENANTRY_E2E_KUBECONFIG is not set: no real cluster to run the e2e suite against"
)


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert KUBECONFIG is not None
    proc = subprocess.run(
        ["kubectl", "--kubeconfig", KUBECONFIG, *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and proc.returncode:
        raise AssertionError(f"kubectl {' '.join(args)}: {proc.stderr}")
    return proc


def get(*args: str) -> dict[str, Any] | None:
    proc = kubectl("get", *args, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def apply(obj: dict[str, Any]) -> None:
    kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(obj))


def wait_for(check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout}s")


def org(name: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("members", {"admins": [{"kind": "Group", "name": f"{name}-admins"}]})
    return minimal_org(name, **spec)


def ready(name: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = get("organization", name)
        conds = {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions", [])}
        ok = conds.get("Ready", {}).get("status") == "True"
        return (
            obj
            if ok and obj and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]
            else None
        )

    result: dict[str, Any] = wait_for(check)
    return result


@pytest.fixture(scope="module")
def operator() -> Iterator[subprocess.Popen[bytes]]:
    kubectl("apply", "--server-side", "-k", str(ROOT / "crds"))
    kubectl("apply", "--server-side", "-f", str(ROOT / "manifests/base/tenant-roles.yaml"))
    kubectl("wait", "--for=condition=Established", "crd/organizations.tenantry.dev", "--timeout=60s")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tenantry",
            "run",
            "--kubeconfig",
            str(KUBECONFIG),
            "--standalone",
            "--metrics-port",
            "0",
            "--liveness",
            "http://127.0.0.1:18080/healthz",
            "--resync-seconds",
            "20",
        ],
    )
    yield proc
    for name in ("e2e-a", "e2e-b", "e2e-c"):
        kubectl(
            "delete", "organization", name, "--ignore-not-found", "--wait=true", "--timeout=120s", check=False
        )
    proc.terminate()
    proc.wait(timeout=30)
    for ns in ("e2e-a-prod", "e2e-a-dev", "e2e-b-prod", "e2e-b-dev", "e2e-c-prod", "e2e-c-dev"):
        kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=false", check=False)


def test_the_api_server_rejects_what_one_object_reveals() -> None:
    kubectl("apply", "--server-side", "-k", str(ROOT / "crds"))
    proc = kubectl(
        "apply", "-f", "-", stdin=yaml.safe_dump(org("kube", environments=["system"])), check=False
    )
    assert proc.returncode != 0 and "reserved prefix" in proc.stderr
    bad = org("e2e-x", members={"admins": [{"kind": "Group", "name": "system:masters"}]})
    proc = kubectl("apply", "-f", "-", stdin=yaml.safe_dump(bad), check=False)
    assert proc.returncode != 0 and "system:" in proc.stderr


ADMISSION_POLICIES = (
    "tenantry-protect-managed-objects",
    "tenantry-protect-namespace-labels",
    "tenantry-quota-approval",
)


def test_the_admission_policies_are_accepted() -> None:
    """The API server compiles every expression of a ValidatingAdmissionPolicy when it is stored
    and refuses the whole policy if one does not compile (1.36.2 refused all three: `variables`
    in matchConditions). A server-side dry run compiles them without storing anything."""
    proc = kubectl(
        "apply", "--server-side", "--dry-run=server", "-k", str(ROOT / "manifests/admission"), check=False
    )
    assert proc.returncode == 0, proc.stderr
    for name in ADMISSION_POLICIES:
        assert f"validatingadmissionpolicy.admissionregistration.k8s.io/{name}" in proc.stdout
        assert f"validatingadmissionpolicybinding.admissionregistration.k8s.io/{name}" in proc.stdout


def test_the_admission_policies_deny_with_their_message() -> None:
    """Applied for real (and removed again before the operator starts: they would deny its
    writes, it does not run as tenantry-system/tenantry here): a namespace carrying our ownership
    label is refused even for system:masters, with the policy's messageExpression."""
    kubectl("apply", "--server-side", "-k", str(ROOT / "crds"))
    kubectl("wait", "--for=condition=Established", "crd/tenancypolicies.tenantry.dev", "--timeout=60s")
    created_default = get("tenancypolicy", "default") is None
    if created_default:
        kubectl("apply", "--server-side", "-f", str(ROOT / "examples/policy-default.yaml"))
    kubectl("apply", "--server-side", "-k", str(ROOT / "manifests/admission"))
    claim = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "e2e-claimed", "labels": {"app.kubernetes.io/managed-by": "tenantry"}},
    }
    try:

        def denied() -> str | None:
            proc = kubectl(
                "--as", "e2e-intruder", "--as-group", "system:masters",
                "create", "-f", "-", stdin=yaml.safe_dump(claim), check=False,
            )  # fmt: skip
            if proc.returncode == 0:
                kubectl("delete", "namespace", "e2e-claimed", "--wait=false")
                return None  # the policy is not loaded yet
            return proc.stderr

        stderr = wait_for(denied, timeout=30)
        assert "ValidatingAdmissionPolicy 'tenantry-protect-namespace-labels'" in stderr
        assert "carries Tenantry ownership labels" in stderr and "e2e-intruder may not" in stderr
        for name in ADMISSION_POLICIES:
            policy = get("validatingadmissionpolicy", name)
            assert policy is not None, name
    finally:
        kubectl("delete", "-k", str(ROOT / "manifests/admission"), "--ignore-not-found", check=False)
        kubectl("delete", "namespace", "e2e-claimed", "--ignore-not-found", "--wait=false", check=False)
        if created_default:
            kubectl("delete", "tenancypolicy", "default", "--ignore-not-found", check=False)


def test_onboarding_drift_and_an_idle_resync_that_writes_nothing(operator: object) -> None:
    apply(org("e2e-a", deletionPolicy="Delete"))
    ready("e2e-a")
    netpol = ("networkpolicy", "tenantry-default-deny", "-n", "e2e-a-prod")
    before = get(*netpol)
    assert before is not None
    time.sleep(45)  # two resyncs
    after = get(*netpol)
    assert after is not None and after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    kubectl("delete", *netpol)
    wait_for(lambda: get(*netpol), timeout=10)
    kubectl("patch", *netpol, "--type=merge", "-p", json.dumps({"spec": {"ingress": [{}]}}))
    wait_for(lambda: not (get(*netpol) or {}).get("spec", {}).get("ingress"), timeout=10)
    events = kubectl(
        "get", "events", "-n", "default", "--field-selector", "reason=DriftCorrected", "-o", "json"
    )
    assert any("e2e-a" in e["involvedObject"]["name"] for e in json.loads(events.stdout)["items"])


def test_a_dropped_quota_key_really_goes_with_server_side_apply(operator: object) -> None:
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
        )
    )


def test_retain_orphans_and_recreation_readopts(operator: object) -> None:
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


def test_a_pre_existing_namespace_is_refused(operator: object) -> None:
    kubectl("create", "namespace", "e2e-d-prod")
    try:
        apply(org("e2e-d"))

        def refused() -> bool:
            obj = get("organization", "e2e-d") or {}
            conds = {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}
            return conds.get("Ready", {}).get("reason") == "NamespaceConflict"

        wait_for(refused)
        assert get("resourcequota", "tenantry-quota", "-n", "e2e-d-prod") is None
    finally:
        kubectl("delete", "organization", "e2e-d", "--ignore-not-found", "--wait=true", check=False)
        kubectl(
            "delete",
            "namespace",
            "e2e-d-prod",
            "e2e-d-dev",
            "--ignore-not-found",
            "--wait=false",
            check=False,
        )


def test_delete_policy_removes_namespaces_through_real_finalization(operator: object) -> None:
    kubectl("delete", "organization", "e2e-a", "--wait=true", "--timeout=180s")
    wait_for(lambda: get("namespace", "e2e-a-prod") is None, timeout=180)
