"""How watch events become queue entries (reconcile/events.py), with the real queue and
inventory and no API server: the handlers only touch the cluster state and the queue."""

from __future__ import annotations

from typing import Any

from tenantry.reconcile.cluster import Cluster
from tenantry.reconcile.events import Events
from tenantry.reconcile.queue import Priority, WorkQueue
from tenantry.render import labels as lbl
from tenantry.render import object_key


def organization(name: str, generation: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "tenantry.dev/v1alpha1",
        "kind": "Organization",
        "metadata": {"name": name, "generation": generation, "resourceVersion": str(10 + generation)},
        "spec": {"environments": ["prod"]},
    }


def netpol(org: str) -> dict[str, Any]:
    labels = {lbl.APP_MANAGED_BY: lbl.APP_MANAGED_BY_VALUE, lbl.OWNER: org}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "tenantry-default-deny", "namespace": f"{org}-prod", "labels": labels},
        "spec": {"podSelector": {}},
    }


def runtime() -> Events:
    return Events(Cluster(client=None), WorkQueue())  # type: ignore[arg-type]  # never contacted


async def order(rt: Events) -> list[str]:
    assert rt.queue is not None
    out = []
    while len(rt.queue):
        name = await rt.queue.get()
        out.append(name)
        await rt.queue.done(name)
    return out


async def test_drift_seen_before_its_organization_is_healed_first() -> None:
    rt = runtime()
    await rt.on_organization({"type": "ADDED", "object": organization("beta")})
    # acme's NetworkPolicy is deleted before acme itself is seen (start-up, or its CRD was not
    # served): nothing to queue yet, but acme must not wait behind the others once it arrives.
    await rt.on_child({"type": "DELETED", "object": netpol("acme")})
    assert rt.queue is not None and len(rt.queue) == 1
    await rt.on_organization({"type": "ADDED", "object": organization("acme")})
    assert await order(rt) == ["acme", "beta"]


async def test_without_earlier_drift_a_new_organization_waits_its_turn() -> None:
    rt = runtime()
    await rt.on_organization({"type": "ADDED", "object": organization("beta")})
    await rt.on_organization({"type": "ADDED", "object": organization("acme")})
    assert await order(rt) == ["beta", "acme"]


async def test_the_earlier_drift_counts_once() -> None:
    rt = runtime()
    await rt.on_child({"type": "DELETED", "object": netpol("acme")})
    await rt.on_organization({"type": "ADDED", "object": organization("acme")})
    assert await order(rt) == ["acme"]
    await rt.on_organization({"type": "ADDED", "object": organization("beta")})
    await rt.on_organization({"type": "MODIFIED", "object": organization("acme", generation=2)})
    assert await order(rt) == ["beta", "acme"], "a later spec change is a change, not drift"


async def test_drift_of_a_known_organization_jumps_the_queue() -> None:
    rt = runtime()
    for name in ("beta", "acme"):
        await rt.on_organization({"type": "ADDED", "object": organization(name)})
    await rt.on_child({"type": "DELETED", "object": netpol("acme")})
    assert await order(rt) == ["acme", "beta"]


async def test_our_own_deletion_is_a_change_and_leaves_no_tombstone() -> None:
    rt = runtime()
    assert rt.cluster is not None and rt.queue is not None
    for name in ("beta", "acme"):
        await rt.on_organization({"type": "ADDED", "object": organization(name)})
    rt.cluster.inventory.upsert(netpol("acme"))
    key = object_key(netpol("acme"))
    rt.cluster.expected_deletions.add(key)  # what the reconciler records before it deletes
    await rt.on_child({"type": "DELETED", "object": netpol("acme")})
    assert key not in rt.cluster.expected_deletions
    assert not rt.cluster.inventory.was_deleted(key)
    assert await order(rt) == ["beta", "acme"], "queued as a change, behind beta"


async def test_someone_elses_deletion_leaves_a_tombstone() -> None:
    rt = runtime()
    assert rt.cluster is not None
    await rt.on_organization({"type": "ADDED", "object": organization("acme")})
    rt.cluster.inventory.upsert(netpol("acme"))
    await rt.on_child({"type": "DELETED", "object": netpol("acme")})
    assert rt.cluster.inventory.was_deleted(object_key(netpol("acme")))
    await rt.queue.put("other", Priority.CHANGE)  # type: ignore[union-attr]
    assert await order(rt) == ["acme", "other"]


async def test_organizations_are_kept_without_managed_fields() -> None:
    rt = runtime()
    body = organization("acme")
    body["metadata"]["managedFields"] = [{"manager": "argocd-controller", "fieldsV1": {"f:spec": {}}}]
    await rt.on_organization({"type": "ADDED", "object": body})
    assert "managedFields" not in rt.cluster.organizations["acme"]["metadata"]


def quota(org: str, resource_version: str, status: dict[str, Any]) -> dict[str, Any]:
    labels = {lbl.APP_MANAGED_BY: lbl.APP_MANAGED_BY_VALUE, lbl.OWNER: org}
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {
            "name": "tenantry-quota",
            "namespace": f"{org}-prod",
            "labels": labels,
            "resourceVersion": resource_version,
        },
        "spec": {"hard": {"pods": "10"}},
        "status": status,
    }


async def test_a_quota_coming_into_force_is_queued_before_resyncs_and_usage_alone_after() -> None:
    # Ready waits for each quota to be in force (status.hard filled by kube-controller-manager):
    # that update is followed up promptly. Usage moving (a pod started) is not urgent.
    rt = runtime()
    for name in ("acme", "beta"):
        await rt.on_organization({"type": "ADDED", "object": organization(name)})
    await rt.on_child({"type": "ADDED", "object": quota("acme", "20", {})})
    await order(rt)
    assert rt.queue is not None
    await rt.queue.put("beta", Priority.RESYNC)
    in_force = {"hard": {"pods": "10"}, "used": {"pods": "0"}}
    await rt.on_child({"type": "MODIFIED", "object": quota("acme", "21", in_force)})
    assert await order(rt) == ["acme", "beta"]
    await rt.queue.put("beta", Priority.RESYNC)
    used = {"hard": {"pods": "10"}, "used": {"pods": "1"}}
    await rt.on_child({"type": "MODIFIED", "object": quota("acme", "22", used)})
    assert await order(rt) == ["beta", "acme"]
