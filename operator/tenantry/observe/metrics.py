"""Prometheus metrics. Names are the contract with the dashboards and alerts in manifests/."""

from __future__ import annotations

import contextlib
from collections.abc import Collection

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILES = Counter(
    "tenantry_reconcile_total", "Organization reconciles by result.", ["result"], registry=REGISTRY
)
RECONCILE_SECONDS = Histogram(
    "tenantry_reconcile_duration_seconds",
    "Time to reconcile one Organization.",
    ["result"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
DRIFT = Counter(
    "tenantry_drift_corrections_total",
    "Managed objects changed or deleted by someone else and restored.",
    ["kind", "change"],
    registry=REGISTRY,
)
API_REQUESTS = Counter(
    "tenantry_api_requests_total",
    "Requests to the Kubernetes API by verb and outcome.",
    ["verb", "code"],
    registry=REGISTRY,
)
API_ERRORS = Counter(
    "tenantry_api_errors_total",
    "Failed Kubernetes API requests (after retries) by verb and code.",
    ["verb", "code"],
    registry=REGISTRY,
)
ORGANIZATIONS = Gauge(
    "tenantry_organizations",
    "Organizations by the status of their Ready condition.",
    ["ready"],
    registry=REGISTRY,
)
QUOTA_USE = Gauge(
    "tenantry_quota_use_ratio",
    "used / hard of each ResourceQuota resource, per organization and environment.",
    ["organization", "environment", "resource"],
    registry=REGISTRY,
)
ORGANIZATION_READY = Gauge(
    "tenantry_organization_ready",
    "1 when the Organization's Ready condition is True, else 0 (per-organization dashboards).",
    ["organization"],
    registry=REGISTRY,
)
RESOURCE_SERVED = Gauge(
    "tenantry_resource_served",
    "1 while the API server serves a resource the operator watches, 0 while it does not "
    "(its CRD is not installed or was deleted).",
    ["resource"],
    registry=REGISTRY,
)
LEADER = Gauge(
    "tenantry_leader",
    "1 while this replica holds the leader Lease and may write, else 0.",
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge("tenantry_queue_depth", "Organizations waiting to be reconciled.", registry=REGISTRY)


RESULTS = ("ok", "requeue", "error")
CHANGES = ("modified", "deleted")


def initialise(kinds: list[str]) -> None:
    """Create every label combination at zero, so the first drift or failure is an increase
    Prometheus can see (a series that appears at 1 has no increase)."""
    for result in RESULTS:
        RECONCILES.labels(result=result)
    for kind in kinds:
        for change in CHANGES:
            DRIFT.labels(kind=kind, change=change)


def forget_organization(organization: str, keep_environments: Collection[str] | None = None) -> None:
    """Drop an Organization's series: all of them (deleted), or the quota series of the
    environments it no longer has (so alerts and dashboards do not report ghosts)."""
    for sample_labels in {
        tuple(sorted(s.labels.items())) for family in QUOTA_USE.collect() for s in family.samples
    }:
        labels = dict(sample_labels)
        if labels.get("organization") != organization:
            continue
        if keep_environments is None or labels.get("environment") not in keep_environments:
            QUOTA_USE.remove(labels["organization"], labels["environment"], labels["resource"])
    if keep_environments is None:
        with contextlib.suppress(KeyError):
            ORGANIZATION_READY.remove(organization)
