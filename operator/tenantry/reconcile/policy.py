"""Reconcile one TenancyPolicy: its platform-admin binding and its status, and remove that
binding when the policy is deleted.

A policy's Organizations are re-reconciled by the runtime when the policy changes; this
module handles what belongs to the policy itself.
"""

from __future__ import annotations

from typing import Any

from tenantry.api.documents import parse_object
from tenantry.api.policy import TenancyPolicy
from tenantry.kube import resources as res
from tenantry.kube.client import FIELD_MANAGER, ApiError
from tenantry.kube.drift import in_sync
from tenantry.observe.logging import get_logger
from tenantry.reconcile import reasons
from tenantry.reconcile.cluster import Cluster
from tenantry.reconcile.status import condition, same_status, utc_now
from tenantry.render import labels as lbl
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
    if not desired and live is not None and _created_by_us(live, policy.name):
        await cluster.client.delete(res.CLUSTER_ROLE_BINDING, binding_name, uid=live["metadata"].get("uid"))
        log.info("platform admins unbound", policy=policy.name, why="spec.rbac.platformAdmins is empty")


async def remove_platform_admins(cluster: Cluster, name: str) -> None:
    """The TenancyPolicy `name` was deleted (not with its CRD: reconcile/events.py keeps those):
    the platform admins it named lose the access it gave them. Only the binding we created is
    deleted (uid precondition), with a log line and an Event; a same-named one someone else
    made is left alone, saying so."""
    binding_name = f"{PLATFORM_ADMINS_BINDING_PREFIX}{name}"
    live = await cluster.client.get(res.CLUSTER_ROLE_BINDING, binding_name)
    if live is None:
        return
    if not _created_by_us(live, name):
        log.warning(
            "binding carries the name of ours but we did not create it; left alone", binding=binding_name
        )
        return
    if not await cluster.client.delete(
        res.CLUSTER_ROLE_BINDING, binding_name, uid=live["metadata"].get("uid")
    ):
        return
    subjects = ", ".join(f"{s.get('kind')} {s.get('name')}" for s in live.get("subjects") or [])
    message = (
        f"TenancyPolicy {name} was deleted: ClusterRoleBinding {binding_name} removed; "
        f"it granted tenantry:platform-admin to {subjects or 'nobody'}"
    )
    log.warning("platform admins unbound", policy=name, why="TenancyPolicy deleted", subjects=subjects)
    try:
        await cluster.client.event(
            live, "Normal", reasons.PLATFORM_ADMINS_UNBOUND, message, cluster.event_namespace
        )
    except ApiError as exc:
        log.warning("event not posted", policy=name, error=str(exc))


def _created_by_us(binding: dict[str, Any], policy: str) -> bool:
    """Did we create this binding for `policy`? Our labels for it, and the API server's record
    of our field manager's server-side apply (metadata.managedFields): labels alone can be
    copied onto a binding someone made by hand, and that one is never ours to delete."""
    meta = binding.get("metadata") or {}
    labels = meta.get("labels") or {}
    if labels.get(lbl.APP_MANAGED_BY) != lbl.APP_MANAGED_BY_VALUE or labels.get(lbl.POLICY) != policy:
        return False
    return any(
        entry.get("manager") == FIELD_MANAGER
        and entry.get("operation") == "Apply"
        and not entry.get("subresource")
        for entry in meta.get("managedFields") or []
    )
