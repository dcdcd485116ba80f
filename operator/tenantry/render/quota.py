"""ResourceQuota (hard limits, no burst) and LimitRange (defaults so pods without requests fit)."""

from __future__ import annotations

from typing import Any

from tenantry.api.base import quota_order
from tenantry.api.organization import Organization
from tenantry.api.policy import TenancyPolicy
from tenantry.render import labels as lbl
from tenantry.render.checks import effective_quota
from tenantry.render.pool import POOL_ANNOTATION

QUOTA_NAME = "tenantry-quota"
LIMIT_RANGE_NAME = "tenantry-limits"


def render_quota(
    org: Organization, policy: TenancyPolicy, env: str, namespace: str, pooled: dict[str, str] | None = None
) -> dict[str, Any]:
    """The environment's ResourceQuota. `pooled`: the pool's initial split for this namespace
    (render/pool.py); those keys are marked as the pool's in POOL_ANNOTATION."""
    annotations = {lbl.POLICY: policy.name}
    approval = org.spec.quota_approval
    if org.spec.quota.get(env) and approval is not None:
        # Keep the audit trail next to the numbers it justifies.
        annotations[lbl.QUOTA_APPROVED_BY] = approval.approved_by
        if approval.ticket:
            annotations[lbl.QUOTA_TICKET] = approval.ticket
    hard = effective_quota(org, policy, env)
    if pooled:
        merged = {**hard, **pooled}
        hard = {k: merged[k] for k in sorted(merged, key=quota_order)}
        annotations[POOL_ANNOTATION] = ",".join(pooled)
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {
            "name": QUOTA_NAME,
            "namespace": namespace,
            "labels": lbl.ownership_labels(org.name, env),
            "annotations": annotations,
        },
        "spec": {"hard": hard},
    }


def render_limit_range(org: Organization, policy: TenancyPolicy, env: str, namespace: str) -> dict[str, Any]:
    env_policy = policy.spec.environment(env)
    assert env_policy is not None
    defaults = env_policy.limit_range
    limit: dict[str, Any] = {
        "type": "Container",
        "default": dict(defaults.default),
        "defaultRequest": dict(defaults.default_request),
    }
    if defaults.max:
        limit["max"] = dict(defaults.max)
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {
            "name": LIMIT_RANGE_NAME,
            "namespace": namespace,
            "labels": lbl.ownership_labels(org.name, env),
        },
        "spec": {"limits": [limit]},
    }
