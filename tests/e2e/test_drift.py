"""Drift on a real API server (issue 15 items 1 and 2): what another field manager adds inside
what Tenantry owns, and what the policy stops prescribing, are healed, each reported with its
field path; a namespace that only looks like ours is never deleted; the API server itself
refuses a CIDR that is not one.

Set TENANTRY_E2E_KUBECONFIG (see test_real_cluster.py). The operator started here writes its
log to a file (printed on failure), every wait has a timeout, and the operator is stopped and
everything `e2e-drift*` deleted whatever the outcome.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

KUBECONFIG = os.environ.get("TENANTRY_E2E_KUBECONFIG")
ROOT = Path(__file__).resolve().parents[2]
POLICY = "e2e-drift"
ORG = "e2e-drift"
NAMESPACES = (f"{ORG}-prod", f"{ORG}-dev", f"{ORG}-legacy", "e2e-drift2-prod", "e2e-drift2-dev")
HEAL_SECONDS = 2.0  # the promise: drift healed within 2 s, like a deletion
RESYNC_SECONDS = 5
KINDS = (
    "namespace,resourcequota,limitrange,configmap,networkpolicy,rolebinding,clusterrole,clusterrolebinding"
)

pytestmark = pytest.mark.skipif(
    not KUBECONFIG, reason="TENANTRY_E2E_KUBECONFIG is not set: no real cluster to run the e2e suite against"
)


def kubectl(
    *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    assert KUBECONFIG is not None
    proc = subprocess.run(
        ["kubectl", "--kubeconfig", KUBECONFIG, *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if check and proc.returncode:
        raise AssertionError(f"kubectl {' '.join(args)}: {proc.stderr}")
    return proc


def get(*args: str) -> dict[str, Any] | None:
    proc = kubectl("get", *args, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def apply(obj: dict[str, Any]) -> None:
    kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(obj))


def wait_for(check: Callable[[], Any], timeout: float = 60, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s")


def policy(
    namespace_labels: dict[str, str] | None = None, prod_quota: dict[str, str] | None = None
) -> dict[str, Any]:
    quota = prod_quota or {"pods": "7", "services.nodeports": "0"}
    spec: dict[str, Any] = {
        "environments": [{"name": "prod", "quota": quota}, {"name": "dev", "quota": {"pods": "3"}}],
    }
    if namespace_labels is not None:
        spec["namespaceLabels"] = namespace_labels
    return {
        "apiVersion": "tenantry.dev/v1alpha1",
        "kind": "TenancyPolicy",
        "metadata": {"name": POLICY},
        "spec": spec,
    }


def organization(name: str = ORG, **spec: Any) -> dict[str, Any]:
    body = {"policy": POLICY, "environments": ["prod", "dev"], "deletionPolicy": "Delete"}
    body.update(spec)
    return {
        "apiVersion": "tenantry.dev/v1alpha1",
        "kind": "Organization",
        "metadata": {"name": name},
        "spec": body,
    }


def ready(name: str = ORG) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = get("organization", name)
        conds = {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions", [])}
        ok = conds.get("Ready", {}).get("status") == "True"
        same = (
            obj is not None
            and (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]
        )
        return obj if ok and same else None

    result: dict[str, Any] = wait_for(check, timeout=60)
    return result


def drift_events() -> list[str]:
    """Messages of the DriftCorrected Events about our Organization (each test edits a
    different object, so its own message is told apart by what it names)."""
    listing = get("events", "-n", "default", "--field-selector", "reason=DriftCorrected") or {"items": []}
    return [e["message"] for e in listing["items"] if e.get("involvedObject", {}).get("name") == ORG]


def intrude(kind: str, name: str, namespace: str, patch: dict[str, Any]) -> float:
    """`kubectl patch --type=merge --field-manager=intruder`; the time it returned."""
    kubectl(
        "patch",
        kind,
        name,
        "-n",
        namespace,
        "--type=merge",
        "--field-manager=intruder",
        "-p",
        json.dumps(patch),
    )
    return time.monotonic()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def operator() -> Iterator[Path]:
    """The CRDs, the tenant roles, the test policy, and `tenantry run` writing to a log file."""
    kubectl("apply", "--server-side", "-k", str(ROOT / "crds"))
    kubectl("apply", "--server-side", "-f", str(ROOT / "manifests/base/tenant-roles.yaml"))
    kubectl("wait", "--for=condition=Established", "crd/organizations.tenantry.dev", "--timeout=60s")
    kubectl("wait", "--for=condition=Established", "crd/tenancypolicies.tenantry.dev", "--timeout=60s")
    apply(policy())
    log = Path(tempfile.mkdtemp(prefix="tenantry-e2e-drift-")) / "operator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "tenantry", "run", "--kubeconfig", str(KUBECONFIG), "--standalone",
                "--metrics-port", "0", "--liveness", f"http://127.0.0.1:{_free_port()}/healthz",
                "--log-format", "json", "--resync-seconds", str(RESYNC_SECONDS),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield log
    finally:
        for name in (ORG, "e2e-drift2"):
            kubectl(
                "delete",
                "organization",
                name,
                "--ignore-not-found",
                "--wait=true",
                "--timeout=90s",
                check=False,
                timeout=120,
            )
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        kubectl("delete", "tenancypolicy", POLICY, "--ignore-not-found", check=False)
        for ns in NAMESPACES:
            kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=false", check=False)
        print(f"operator log: {log}")


@pytest.fixture
def onboarded(operator: Path) -> Iterator[Path]:
    apply(policy())
    apply(organization())
    ready()
    yield operator


def _versions() -> dict[str, str]:
    listing = get(KINDS, "-A", "-l", f"tenantry.dev/organization={ORG}") or {"items": []}
    return {
        f"{o['kind']}/{o['metadata'].get('namespace', '')}/{o['metadata']['name']}": o["metadata"][
            "resourceVersion"
        ]
        for o in listing["items"]
    }


def test_what_the_api_server_defaults_is_not_drift(onboarded: Path) -> None:
    # Every default and canonical form the real API server applies (kube/drift.py lists them)
    # must compare equal, or every resync would write: two resyncs change nothing.
    before = _versions()
    assert len(before) >= 16, before
    time.sleep(2 * RESYNC_SECONDS + 2)
    assert _versions() == before


def test_a_narrowed_default_deny_is_healed_within_2s_and_reported(onboarded: Path) -> None:
    namespace = f"{ORG}-dev"
    patched = intrude(
        "networkpolicy",
        "tenantry-default-deny",
        namespace,
        {"spec": {"podSelector": {"matchLabels": {"x": "y"}}}},
    )

    def healed() -> bool:
        live = get("networkpolicy", "tenantry-default-deny", "-n", namespace)
        return live is not None and live["spec"]["podSelector"] == {}

    wait_for(healed, timeout=15, every=0.05)
    took = time.monotonic() - patched
    print(f"narrowed podSelector healed {took:.2f} s after the patch returned")
    expected = f"NetworkPolicy {namespace}/tenantry-default-deny was modified: spec.podSelector.matchLabels"
    wait_for(lambda: [m for m in drift_events() if expected in m], timeout=15)
    assert took < HEAL_SECONDS, f"healed after {took:.2f} s"


def test_a_key_another_manager_added_to_the_quota_is_removed(onboarded: Path) -> None:
    namespace = f"{ORG}-prod"
    patched = intrude(
        "resourcequota", "tenantry-quota", namespace, {"spec": {"hard": {"count/secrets": "1000"}}}
    )

    def healed() -> bool:
        live = get("resourcequota", "tenantry-quota", "-n", namespace)
        return live is not None and "count/secrets" not in live["spec"]["hard"]

    wait_for(healed, timeout=15, every=0.05)
    took = time.monotonic() - patched
    print(f"foreign quota key removed {took:.2f} s after the patch returned")
    wait_for(lambda: [m for m in drift_events() if 'spec.hard["count/secrets"]' in m], timeout=15)
    assert took < HEAL_SECONDS, f"healed after {took:.2f} s"


def test_a_namespace_label_removed_from_the_policy_goes(onboarded: Path) -> None:
    apply(policy(namespace_labels={"cost-center": "42"}))
    namespace = f"{ORG}-prod"
    kubectl("label", "namespace", namespace, "team.example.com/owner=x", "--overwrite")
    wait_for(
        lambda: (
            ((get("namespace", namespace) or {}).get("metadata", {}).get("labels") or {}).get("cost-center")
            == "42"
        ),
        timeout=30,
    )
    kubectl(
        "patch",
        "tenancypolicy",
        POLICY,
        "--type=json",
        "-p",
        '[{"op":"remove","path":"/spec/namespaceLabels"}]',
    )

    def gone() -> bool:
        labels = ((get("namespace", namespace) or {}).get("metadata") or {}).get("labels") or {}
        return "cost-center" not in labels

    wait_for(gone, timeout=30)
    labels = get("namespace", namespace)["metadata"]["labels"]  # type: ignore[index]
    assert labels["team.example.com/owner"] == "x", "someone else's label stays"


def test_a_quota_key_removed_alone_from_the_policy_goes(onboarded: Path) -> None:
    namespace = f"{ORG}-prod"
    assert (
        get("resourcequota", "tenantry-quota", "-n", namespace)["spec"]["hard"]["services.nodeports"] == "0"
    )  # type: ignore[index]
    apply(policy(prod_quota={"pods": "7"}))

    def dropped() -> bool:
        live = get("resourcequota", "tenantry-quota", "-n", namespace)
        return live is not None and live["spec"]["hard"] == {"pods": "7"}

    wait_for(dropped, timeout=30)


def test_a_lookalike_namespace_is_not_deleted_with_its_organization(operator: Path) -> None:
    apply(policy())
    lookalike = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": "e2e-drift2-legacy",
            "labels": {"app.kubernetes.io/managed-by": "tenantry", "tenantry.dev/organization": "e2e-drift2"},
        },
    }
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump(lookalike))
    try:
        apply(organization("e2e-drift2"))
        org = ready("e2e-drift2")
        assert [n["name"] for n in org["status"]["ownedNamespaces"]] == ["e2e-drift2-dev", "e2e-drift2-prod"]
        kubectl("delete", "organization", "e2e-drift2", "--wait=true", "--timeout=90s", timeout=120)
        wait_for(lambda: get("namespace", "e2e-drift2-prod") is None, timeout=90)
        legacy = get("namespace", "e2e-drift2-legacy")
        assert legacy is not None and not legacy["metadata"].get("deletionTimestamp")
        assert "tenantry.dev/orphaned" not in legacy["metadata"]["labels"]
    finally:
        kubectl("delete", "namespace", "e2e-drift2-legacy", "--ignore-not-found", "--wait=false", check=False)


@pytest.mark.parametrize(
    ("cidr", "message"),
    [
        ("10.0.0.0/33", "must be a CIDR such as 10.20.0.0/16"),
        ("10.0.0.1/16", "no bits set after it"),
        ("169.254.169.254/32", "cloud metadata endpoint"),
    ],
)
def test_the_api_server_refuses_a_cidr_that_is_not_one(cidr: str, message: str) -> None:
    kubectl("apply", "--server-side", "-k", str(ROOT / "crds"))
    kubectl("wait", "--for=condition=Established", "crd/organizations.tenantry.dev", "--timeout=60s")
    bad = organization("e2e-drift-cidr", network={"egress": [{"cidr": cidr, "reason": "r"}]})
    proc = kubectl("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(bad), check=False)
    assert proc.returncode != 0 and "spec.network.egress[0].cidr" in proc.stderr and message in proc.stderr, (
        proc.stderr
    )
    good = organization(
        "e2e-drift-cidr",
        network={"egress": [{"cidr": "10.0.0.0/16", "except": ["10.0.1.0/24"], "reason": "r"}]},
    )
    assert (
        kubectl("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(good), check=False).returncode
        == 0
    )
