"""How watch events become work: every Organization, TenancyPolicy and managed child event
updates the operator's state and queues what must be reconciled, at which priority.

Nothing here talks to the API server except to ask, when a TenancyPolicy disappears, whether
its CRD is going away. Drift outranks spec changes, which outrank periodic resyncs.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tenantry.api.documents import parse_object
from tenantry.api.policy import TenancyPolicy
from tenantry.kube import drift
from tenantry.kube import resources as res
from tenantry.kube.inventory import slim
from tenantry.observe import metrics
from tenantry.observe.logging import get_logger
from tenantry.reconcile.cluster import Cluster
from tenantry.reconcile.observed import current_state
from tenantry.reconcile.policy import POLICY_KEY_PREFIX
from tenantry.reconcile.queue import Priority, WorkQueue
from tenantry.render import object_key
from tenantry.render.pool import pooled_keys

log = get_logger("tenantry.operator")


@dataclass
class Events:
    cluster: Cluster
    queue: WorkQueue
    # Latest TenancyPolicy bodies (valid or not), for their own reconcile and status.
    policy_bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Organizations with drift seen before the Organization itself (start-up): healed first.
    drifted_before_seen: set[str] = field(default_factory=set)
    # What each Organization was last queued for: a spec change is compared with this, never
    # with a cache entry a status write may have refreshed meanwhile.
    seen_significant: dict[str, bytes] = field(default_factory=dict)
    # Ready status per Organization, for the metrics read at scrape time.
    ready_of: dict[str, str] = field(default_factory=dict)

    def load(self, organizations: Iterable[dict[str, Any]], policies: Iterable[dict[str, Any]]) -> None:
        """The start-up LIST: known before the first reconcile, queued by `enqueue_all`. Read one
        at a time (an iterator need not hold them all)."""
        for body in policies:
            self.store_policy(body)
        for body in organizations:
            name = body["metadata"]["name"]
            self.cluster.organizations[name] = body
            self.seen_significant[name] = _significant(body)
            self.count_ready(name, body)

    async def enqueue_all(self, priority: Priority) -> None:
        """Every Organization at `priority`, every TenancyPolicy at resync priority."""
        for name in list(self.cluster.organizations):
            await self.queue.put(name, priority)
        for name in list(self.policy_bodies):
            await self.queue.put(f"{POLICY_KEY_PREFIX}{name}", Priority.RESYNC)

    async def on_organization(self, event: dict[str, Any]) -> None:
        obj = lean(event["object"])
        name = obj["metadata"]["name"]
        old = self.cluster.organizations.get(name)
        if event.get("type") == "DELETED":
            self.cluster.organizations.pop(name, None)
            self.seen_significant.pop(name, None)
            self.cluster.inventory.forget_owner(name)
            self.cluster.pool_views.pop(name, None)
            self.cluster.pool_exhausted.pop(name, None)
        else:
            if not self.cluster.remember_organization(obj):
                return  # older than what a write of ours already returned
            significant = _significant(obj)
            if self.seen_significant.get(name) != significant:
                # Compared with what the last event said, not with the cache: a status write's
                # response may already carry a newer spec, and that spec still needs a reconcile.
                self.seen_significant[name] = significant
                drifted = name in self.drifted_before_seen
                self.drifted_before_seen.discard(name)
                await self.queue.put(name, Priority.DRIFT if drifted else Priority.CHANGE)
        # A policy's status counts its Organizations: refresh it when membership changes.
        before = _policy_of(old) if old else None
        after = _policy_of(obj) if event.get("type") != "DELETED" else None
        if before != after:
            for policy in (before, after):
                if policy in self.policy_bodies:
                    await self.queue.put(f"{POLICY_KEY_PREFIX}{policy}", Priority.RESYNC)
        self.count_ready(name, None if event.get("type") == "DELETED" else obj)

    async def on_policy(self, event: dict[str, Any]) -> None:
        obj = lean(event["object"])
        name = obj["metadata"]["name"]
        old = self.cluster.policies.get(name)
        if event.get("type") == "DELETED":
            if await self.cluster.crd_going_away(res.TENANCY_POLICY_CRD):
                # Every policy goes with its CRD; Organizations falling back to the built-in
                # default (or to "policy not found") would rewrite every tenant. Keep the last
                # policy seen until the CRD and its policies are back.
                log.warning("TenancyPolicy deleted with its CRD; its last version stays in use", policy=name)
                return
            self.cluster.policies.pop(name, None)
            self.policy_bodies.pop(name, None)
            # Its platform-admin binding goes with it (reconcile/policy.py, by a worker: only
            # the leader writes).
            await self.queue.put(f"{POLICY_KEY_PREFIX}{name}", Priority.CHANGE)
        else:
            previous = self.policy_bodies.get(name)
            self.store_policy(obj)
            if previous is None or _significant(previous) != _significant(obj):
                await self.queue.put(f"{POLICY_KEY_PREFIX}{name}", Priority.CHANGE)
        if self.cluster.policies.get(name) != old:
            for org_name, org in list(self.cluster.organizations.items()):
                if (org.get("spec") or {}).get("policy", "default") == name:
                    await self.queue.put(org_name, Priority.CHANGE)

    async def on_child(self, event: dict[str, Any]) -> None:
        obj = event["object"]
        inventory = self.cluster.inventory
        if inventory.is_stale(obj):
            return  # older than what the inventory has (a write's response came first)
        if event.get("type") == "DELETED":
            key, owner = inventory.remove(obj)
            self.cluster.pool_seen.pop(key, None)
            if key in self.cluster.expected_deletions:
                self.cluster.expected_deletions.discard(key)
                inventory.forget_tombstone(key)
                priority = Priority.CHANGE
            else:
                priority = Priority.DRIFT
        else:
            previous = inventory.get(object_key(obj))
            key, owner = inventory.upsert(obj)
            seen = previous is not None and previous["metadata"].get("resourceVersion") == obj[
                "metadata"
            ].get("resourceVersion")
            if seen:
                return  # our own write, already recorded from its response
            # A quota's usage changed (its status only): refresh the status, it is not drift. A
            # pooled quota's use is what its pool is rebalanced from: promptly (docs/quota-pool.md).
            # A quota just come into force (status.hard changed) is what its Organization's Ready
            # waits for (reconcile/organization.py): promptly too.
            hard_changed = _hard_of(obj) != _hard_of(previous)
            if hard_changed and obj.get("kind") == "ResourceQuota" and _hard_of(obj):
                # kube-controller-manager is working through the quotas (reconcile/organization.py
                # reports a wait only once it stops).
                self.cluster.quota_progress = time.monotonic()
            if drift.status_only(previous, slim(obj)):
                prompt = pooled_keys(obj) or hard_changed
                priority = Priority.CHANGE if prompt else Priority.RESYNC
            else:
                priority = Priority.DRIFT
        if owner and owner in self.cluster.organizations:
            await self.queue.put(owner, priority)
        elif owner and priority == Priority.DRIFT:
            # Its Organization has not been seen yet (start-up): heal first once it is.
            self.drifted_before_seen.add(owner)

    def store_policy(self, body: dict[str, Any]) -> None:
        """Keep a TenancyPolicy's body (for its own status) and, when valid, its model."""
        parsed = parse_object(body)
        name = body["metadata"]["name"]
        self.policy_bodies[name] = body
        if isinstance(parsed, TenancyPolicy):
            self.cluster.policies[name] = parsed
        else:
            self.cluster.policies.pop(name, None)
            log.error("invalid TenancyPolicy ignored", policy=name, problems=[str(p) for p in parsed])

    def count_ready(self, name: str, body: dict[str, Any] | None) -> None:
        """Remember each Organization's Ready status, for the metrics read at scrape time."""
        if body is None:
            self.ready_of.pop(name, None)
        else:
            self.ready_of[name] = _ready_of(body)

    def metrics_state(self) -> metrics.State:
        return current_state(
            self.cluster.inventory, self.cluster.organizations, self.ready_of, self.cluster.pool_views
        )


def lean(obj: dict[str, Any]) -> dict[str, Any]:
    """Without metadata.managedFields (never read; the bulk of a GitOps-applied body)."""
    (obj.get("metadata") or {}).pop("managedFields", None)
    return obj


def _ready_of(body: dict[str, Any]) -> str:
    for cond in (body.get("status") or {}).get("conditions", []):
        if cond.get("type") == "Ready" and cond.get("status") in ("True", "False"):
            return str(cond["status"])
    return "Unknown"


def _hard_of(obj: dict[str, Any] | None) -> Any:
    return ((obj or {}).get("status") or {}).get("hard")


def _policy_of(org: dict[str, Any]) -> str:
    return str((org.get("spec") or {}).get("policy", "default"))


def _significant(body: dict[str, Any]) -> bytes:
    """What makes an Organization worth reconciling again (status-only writes are not), as a
    digest: it is only ever compared, and 1,000 specs kept as dicts for that were ~3.5 MB.
    Keys sorted: the order they come in changes nothing, any change of a value changes it."""
    meta = body.get("metadata", {})
    significant = [
        meta.get("generation"),
        meta.get("deletionTimestamp"),
        list(meta.get("finalizers") or ()),
        body.get("spec"),
    ]
    return hashlib.sha256(json.dumps(significant, sort_keys=True, separators=(",", ":")).encode()).digest()
