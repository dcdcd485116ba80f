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
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import (
    KUBECONFIG,
    ROOT,
    Operator,
    OperatorFactory,
    apply,
    get,
    install_crds_and_roles,
    kubectl,
    manifest,
    ready,
    wait_for,
)

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


@pytest.fixture(scope="module")
def operator(start_module_operator: OperatorFactory) -> Iterator[Operator]:
    """The CRDs, the tenant roles, the test policy, and `tenantry run` writing to a log file."""
    install_crds_and_roles()
    apply(policy())
    operator = start_module_operator("--log-format", "json", resync=RESYNC_SECONDS)
    try:
        yield operator
    finally:
        # Deleted while the operator runs, so its finalizer is released (Delete: namespaces go).
        for name in (ORG, "e2e-drift2"):
            kubectl(
                "delete", "organization", name, "--ignore-not-found", "--wait=true", "--timeout=90s",
                check=False, timeout=120,
            )  # fmt: skip
        operator.stop()
        kubectl("delete", "tenancypolicy", POLICY, "--ignore-not-found", check=False)
        for ns in NAMESPACES:
            kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=false", check=False)


@pytest.fixture
def onboarded(operator: Operator) -> Iterator[Operator]:
    apply(policy())
    apply(organization())
    ready(ORG)
    yield operator


def _versions() -> dict[str, str]:
    listing = get(KINDS, "-A", "-l", f"tenantry.dev/organization={ORG}") or {"items": []}
    return {
        f"{o['kind']}/{o['metadata'].get('namespace', '')}/{o['metadata']['name']}": o["metadata"][
            "resourceVersion"
        ]
        for o in listing["items"]
    }


def test_what_the_api_server_defaults_is_not_drift(onboarded: Operator) -> None:
    # Every default and canonical form the real API server applies (kube/drift.py lists them)
    # must compare equal, or every resync would write: two resyncs change nothing.
    before = _versions()
    assert len(before) >= 16, before
    time.sleep(2 * RESYNC_SECONDS + 2)
    assert _versions() == before


def test_a_narrowed_default_deny_is_healed_within_2s_and_reported(onboarded: Operator) -> None:
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

    wait_for(healed, timeout=15, interval=0.05, what="the intruder's edit to be healed")
    took = time.monotonic() - patched
    print(f"narrowed podSelector healed {took:.2f} s after the patch returned")
    expected = f"NetworkPolicy {namespace}/tenantry-default-deny was modified: spec.podSelector.matchLabels"
    wait_for(lambda: [m for m in drift_events() if expected in m], timeout=15, what=expected)
    assert took < HEAL_SECONDS, f"healed after {took:.2f} s"


def test_a_key_another_manager_added_to_the_quota_is_removed(onboarded: Operator) -> None:
    namespace = f"{ORG}-prod"
    patched = intrude(
        "resourcequota", "tenantry-quota", namespace, {"spec": {"hard": {"count/secrets": "1000"}}}
    )

    def healed() -> bool:
        live = get("resourcequota", "tenantry-quota", "-n", namespace)
        return live is not None and "count/secrets" not in live["spec"]["hard"]

    wait_for(healed, timeout=15, interval=0.05, what="the intruder's edit to be healed")
    took = time.monotonic() - patched
    print(f"foreign quota key removed {took:.2f} s after the patch returned")
    wait_for(
        lambda: [m for m in drift_events() if 'spec.hard["count/secrets"]' in m],
        timeout=15,
        what="a DriftCorrected Event naming the key",
    )
    assert took < HEAL_SECONDS, f"healed after {took:.2f} s"


def test_a_namespace_label_removed_from_the_policy_goes(onboarded: Operator) -> None:
    apply(policy(namespace_labels={"cost-center": "42"}))
    namespace = f"{ORG}-prod"
    kubectl("label", "namespace", namespace, "team.example.com/owner=x", "--overwrite")
    wait_for(
        lambda: (
            ((get("namespace", namespace) or {}).get("metadata", {}).get("labels") or {}).get("cost-center")
            == "42"
        ),
        timeout=30,
        what="the policy's new namespace label",
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

    wait_for(gone, timeout=30, what="the label the policy dropped to go")
    labels = get("namespace", namespace)["metadata"]["labels"]  # type: ignore[index]
    assert labels["team.example.com/owner"] == "x", "someone else's label stays"


def test_a_quota_key_removed_alone_from_the_policy_goes(onboarded: Operator) -> None:
    namespace = f"{ORG}-prod"
    assert (
        get("resourcequota", "tenantry-quota", "-n", namespace)["spec"]["hard"]["services.nodeports"] == "0"
    )  # type: ignore[index]
    apply(policy(prod_quota={"pods": "7"}))

    def dropped() -> bool:
        live = get("resourcequota", "tenantry-quota", "-n", namespace)
        return live is not None and live["spec"]["hard"] == {"pods": "7"}

    wait_for(dropped, timeout=30, what="the quota key the policy dropped to go")


def test_a_lookalike_namespace_is_not_deleted_with_its_organization(operator: Operator) -> None:
    apply(policy())
    lookalike = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": "e2e-drift2-legacy",
            "labels": {"app.kubernetes.io/managed-by": "tenantry", "tenantry.dev/organization": "e2e-drift2"},
        },
    }
    kubectl("apply", "-f", "-", stdin=manifest(lookalike))
    try:
        apply(organization("e2e-drift2"))
        org = ready("e2e-drift2")
        assert [n["name"] for n in org["status"]["ownedNamespaces"]] == ["e2e-drift2-dev", "e2e-drift2-prod"]
        kubectl("delete", "organization", "e2e-drift2", "--wait=true", "--timeout=90s", timeout=120)
        wait_for(
            lambda: get("namespace", "e2e-drift2-prod") is None, timeout=90, what="e2e-drift2-prod to go"
        )
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
    proc = kubectl("apply", "--dry-run=server", "-f", "-", stdin=manifest(bad), check=False)
    assert proc.returncode != 0 and "spec.network.egress[0].cidr" in proc.stderr and message in proc.stderr, (
        proc.stderr
    )
    good = organization(
        "e2e-drift-cidr",
        network={"egress": [{"cidr": "10.0.0.0/16", "except": ["10.0.1.0/24"], "reason": "r"}]},
    )
    assert kubectl("apply", "--dry-run=server", "-f", "-", stdin=manifest(good), check=False).returncode == 0
