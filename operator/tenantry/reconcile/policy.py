"""Reconcile one TenancyPolicy: its platform-admin binding and its status.

A policy's Organizations are re-reconciled by the runtime when the policy changes; this
module handles what belongs to the policy itself.
"""

from __future__ import annotations

from typing import Any

from tenantry.api.documents import parse_object
from tenantry.api.policy import TenancyPolicy
from tenantry.kube import resources as res
from tenantry.kube.client import ApiError
from tenantry.kube.drift import in_sync
from tenantry.observe.logging import get_logger
from tenantry.reconcile import reasons
from tenantry.reconcile.cluster import Cluster
from tenantry.reconcile.status import condition, same_status, utc_now
from tenantry.render import render_policy_objects
from tenantry.render.rbac import PLATFORM_ADMINS_BINDING_PREFIX

log = get_logger("tenantry.policy")
POLICY_KEY_PREFIX = "TenancyPolicy/"


async def reconcile_policy(cluster: Cluster, body: dict[str, Any]) -> None:
    name = body["metadata"]["name"]
    parsed = parse_object(body)
    users = sum(
        1
        for org in cluster.organizations.values()
        if (org.get("spec") or {}).get("policy", "default") == name
    )
    if isinstance(parsed, TenancyPolicy):
        await _ensure_platform_admins(cluster, parsed)
        valid, reason, message = True, reasons.VALID, "policy accepted"
    else:
        valid, reason, message = False, reasons.INVALID_POLICY, "; ".join(str(p) for p in parsed)
    generation = body["metadata"].get("generation")
    current = body.get("status") or {}
    old = next((c for c in current.get("conditions", []) if c.get("type") == "Ready"), None)
    status: dict[str, Any] = {
        "conditions": [condition("Ready", valid, reason, message, generation, current, utc_now())],
        "organizations": users,
    }
    if generation is not None:
        status["observedGeneration"] = generation
    if same_status(current, status):
        return
    await cluster.client.merge_patch(res.TENANCY_POLICY, name, {"status": status}, subresource="status")
    if not old or old.get("reason") != reason:
        type_ = "Normal" if valid else "Warning"
        try:
            await cluster.client.event(body, type_, reason, message, cluster.event_namespace)
        except ApiError as exc:
            log.warning("event not posted", policy=name, error=str(exc))


async def _ensure_platform_admins(cluster: Cluster, policy: TenancyPolicy) -> None:
    binding_name = f"{PLATFORM_ADMINS_BINDING_PREFIX}{policy.name}"
    live = await cluster.client.get(res.CLUSTER_ROLE_BINDING, binding_name)
    desired = render_policy_objects(policy)
    for obj in desired:
        if not in_sync(obj, live):
            await cluster.client.apply(obj)
            log.info("platform admins bound", policy=policy.name, subjects=len(obj["subjects"]))
    if not desired and live is not None:
        await cluster.client.delete(res.CLUSTER_ROLE_BINDING, binding_name, uid=live["metadata"].get("uid"))
        log.info("platform admins unbound", policy=policy.name)
