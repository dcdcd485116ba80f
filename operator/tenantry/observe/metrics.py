"""Prometheus metrics. Names are the contract with the dashboards and alerts in manifests/."""

from __future__ import annotations

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
QUEUE_DEPTH = Gauge("tenantry_queue_depth", "Organizations waiting to be reconciled.", registry=REGISTRY)
