"""End-to-end against a real cluster: set TENANTRY_E2E_KUBECONFIG to a kubeconfig of a
disposable cluster (kind, k3s...). The test applies crds/, runs the operator in-process with
that kubeconfig, and checks what kmock cannot: real SSA field ownership, namespace
finalization, RBAC escalation checks and CEL admission."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

KUBECONFIG = os.environ.get("TENANTRY_E2E_KUBECONFIG")
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not KUBECONFIG, reason="TENANTRY_E2E_KUBECONFIG is not set: no real cluster to run the e2e suite against"
)


def kubectl(*args: str, stdin: str | None = None) -> str:
    assert KUBECONFIG is not None
    proc = subprocess.run(
        ["kubectl", "--kubeconfig", KUBECONFIG, *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode:
        raise AssertionError(f"kubectl {' '.join(args)}: {proc.stderr}")
    return proc.stdout


@pytest.fixture(scope="module")
def operator_process() -> object:
    kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    roles = subprocess.run(
        [sys.executable, "-m", "tenantry", "roles"], capture_output=True, text=True, check=True
    )
    kubectl("apply", "--server-side", "-f", "-", stdin=roles.stdout)
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
        ],
    )
    yield proc
    proc.terminate()
    proc.wait(timeout=30)


def wait_for(check: object, timeout: float = 60) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()  # type: ignore[operator]
            if result:
                return result
        except AssertionError:
            pass
        time.sleep(1)
    raise AssertionError("timed out")


def test_the_api_server_rejects_a_reserved_namespace() -> None:
    kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    bad = {
        "apiVersion": "tenantry.dev/v1alpha1",
        "kind": "Organization",
        "metadata": {"name": "kube"},
        "spec": {"environments": ["system"]},
    }
    with pytest.raises(AssertionError, match="reserved prefix"):
        kubectl("apply", "-f", "-", stdin=yaml.safe_dump(bad))


def test_onboarding_drift_and_retain(operator_process: object) -> None:
    kubectl("apply", "-f", str(ROOT / "examples" / "organization-beta.yaml"))
    wait_for(
        lambda: (
            "True"
            in kubectl("get", "org", "beta", "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}")
        )
    )
    kubectl("-n", "beta-prod", "delete", "networkpolicy", "tenantry-default-deny")
    wait_for(lambda: kubectl("-n", "beta-prod", "get", "networkpolicy", "tenantry-default-deny"), timeout=10)
    kubectl("delete", "org", "beta", "--wait=true")
    # deletionPolicy: Delete in the example: the namespace goes through real finalization.
    wait_for(
        lambda: (
            "NotFound"
            in subprocess.run(
                ["kubectl", "--kubeconfig", str(KUBECONFIG), "get", "ns", "beta-prod"],
                capture_output=True,
                text=True,
            ).stderr
        ),
        timeout=180,
    )
