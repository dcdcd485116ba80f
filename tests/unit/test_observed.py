"""Readiness and quota use are read from the operator's state when Prometheus scrapes."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest

from tenantry.kube.inventory import Inventory
from tenantry.observe import metrics
from tenantry.reconcile.observed import current_state, quota_ratios
from tenantry.render import labels as lbl


def namespace(org: str, env: str, orphaned: bool = False) -> dict[str, Any]:
    labels = lbl.ownership_labels(org, env) | ({lbl.ORPHANED: "true"} if orphaned else {})
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"{org}-{env}", "labels": labels}}


def quota(org: str, env: str, used_pods: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {
            "name": "tenantry-quota",
            "namespace": f"{org}-{env}",
            "labels": lbl.ownership_labels(org, env),
        },
        "spec": {"hard": {"pods": "10"}},
        "status": {"hard": {"pods": "10", "requests.cpu": "0"}, "used": {"pods": used_pods}},
    }


def test_ratios_are_used_over_hard_and_zero_without_a_limit() -> None:
    assert dict(
        quota_ratios({"pods": "10", "cpu": "0", "memory": "1Gi"}, {"pods": "4", "memory": "512Mi"})
    ) == {
        "cpu": 0.0,
        "memory": 0.5,
        "pods": 0.4,
    }


def test_state_reports_known_organizations_and_their_current_environments_only() -> None:
    inventory = Inventory()
    for obj in (
        namespace("acme", "prod"),
        quota("acme", "prod", "5"),
        namespace("acme", "old", orphaned=True),  # environment removed, namespace retained
        quota("acme", "old", "9"),
        namespace("gone", "prod"),  # Organization deleted
        quota("gone", "prod", "1"),
    ):
        inventory.upsert(obj)
    state = current_state(inventory, {"acme": {}, "beta": {}}, {"acme": "True"})
    assert sorted(state.quota_use) == [("acme", "prod", "pods", 0.5), ("acme", "prod", "requests.cpu", 0.0)]
    assert state.ready == {"acme": "True", "beta": "Unknown"}


def test_a_scrape_reads_the_state_and_a_released_reader_reports_nothing() -> None:
    def read() -> metrics.State:
        return metrics.State(
            ready={"acme": "True", "beta": "False"}, quota_use=[("acme", "prod", "pods", 0.5)]
        )

    metrics.STATE.read_from(read)
    try:
        text = generate_latest(metrics.REGISTRY).decode()
        assert 'tenantry_organization_ready{organization="acme"} 1.0' in text
        assert 'tenantry_organization_ready{organization="beta"} 0.0' in text
        assert 'tenantry_organizations{ready="False"} 1.0' in text
        assert 'tenantry_quota_use_ratio{environment="prod",organization="acme",resource="pods"} 0.5' in text
    finally:
        metrics.STATE.release(read)
    assert 'organization="acme"' not in generate_latest(metrics.REGISTRY).decode()
