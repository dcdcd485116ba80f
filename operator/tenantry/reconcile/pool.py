"""The quota pool's shell: carries the live split into the applied quotas, rebalances from the
quota informer's events, releases a retained namespace's share. The decisions are
render/pool.py's; this module reads the inventory, writes, and reports.

How pooled `hard` values coexist with server-side apply: the renderer's values for pooled keys
are only the initial split. Before comparing and applying, `carry_live` replaces them with the
live quota's values (a key that is missing gets what the pool has free, render/pool.py
`allocate_missing`), so an apply never moves capacity and a rebalance is never "healed" as
drift; and it carries the live quota's resourceVersion, so an apply planned from a stale copy
is refused (409) instead of writing old values back. Every write of pooled keys is a merge
patch with that resourceVersion precondition: quota admission writes `status.used` the same
way (an UpdateStatus with the resourceVersion it read), so the two are serialised by the API
server and a shrink can never pass a pod admitted meanwhile (docs/quota-pool.md).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from tenantry.api.organization import Organization
from tenantry.api.policy import TenancyPolicy
from tenantry.kube import resources as res
from tenantry.kube.client import ApiError, KubeClient
from tenantry.observe import metrics
from tenantry.observe.logging import get_logger
from tenantry.reconcile import reasons
from tenantry.reconcile.cluster import Cluster, PoolView
from tenantry.render import ObjectKey
from tenantry.render.pool import (
    POOL_ANNOTATION,
    Bounds,
    Member,
    allocate_missing,
    bounds_of,
    effective_pool,
    from_units,
    member_of,
    next_step,
    pool_members,
    pooled_keys,
    to_units,
)
from tenantry.render.quota import QUOTA_NAME

log = get_logger("tenantry.pool")
# Plans per reconcile: a plan ends at its first conflict (a pod admitted meanwhile) and the
# next one starts from what the API server said; shrinks and grows are separate plans.
MAX_PLANS = 6
# Attempts of one apply or release whose quota changed under it (409) before giving up to the
# next reconcile.
MAX_CONFLICTS = 5


def quota_key(namespace: str) -> ObjectKey:
    return ("v1", "ResourceQuota", namespace, QUOTA_NAME)


# Posts an Event about the Organization: (body, type, reason, message).
Emit = Callable[[dict[str, Any], str, str, str], Awaitable[None]]


def _rv(obj: Mapping[str, Any] | None) -> int:
    text = str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")
    return int(text) if text.isdigit() else 0


class Pools:
    """One Organization reconcile's view of its pool (the cluster-wide state lives in Cluster)."""

    def __init__(self, cluster: Cluster, emit: Emit) -> None:
        self.cluster = cluster
        self.emit = emit

    @property
    def client(self) -> KubeClient:
        return self.cluster.client

    # -- reading -------------------------------------------------------------------------------
    async def live(self, namespace: str) -> dict[str, Any] | None:
        """The quota as the API server last told us. A watch event older than one of our own
        writes can still be queued behind it: never plan from a copy older than what we saw."""
        key = quota_key(namespace)
        obj = self.cluster.inventory.get(key)
        if obj is not None and _rv(obj) < self.cluster.pool_seen.get(key, 0):
            obj = await self.refresh(namespace)
        return obj

    async def refresh(self, namespace: str) -> dict[str, Any] | None:
        fresh = await self.client.get(res.RESOURCE_QUOTA, QUOTA_NAME, namespace)
        if fresh is not None:
            self.seen(fresh)
            return self.cluster.inventory.get(quota_key(namespace))
        return None

    def seen(self, obj: dict[str, Any]) -> None:
        key = quota_key(obj["metadata"]["namespace"])
        self.cluster.inventory.upsert(obj)
        self.cluster.pool_seen[key] = max(self.cluster.pool_seen.get(key, 0), _rv(obj))

    # -- the apply of pooled quotas --------------------------------------------------------------
    async def carry_live(
        self, org: Organization, policy: TenancyPolicy, objects: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """`objects` with each pooled quota's pooled keys set to the live values (missing ones:
        what the pool has free) and the live resourceVersion as a precondition."""
        pool = effective_pool(org, policy)
        if pool is None:
            return objects
        members = {env: ns for env, ns in org.namespaces().items() if env in pool_members(org, policy)}
        bounds = bounds_of(pool, members)
        lives = {ns: await self.live(ns) for ns in members.values()}
        known = [member_of(ns, live, bounds.resources) for ns, live in lives.items()]
        wanted = {
            obj["metadata"]["namespace"]: {
                r: to_units(r, obj["spec"]["hard"][r], up=False) for r in pooled_keys(obj)
            }
            for obj in objects
            if obj["kind"] == "ResourceQuota" and pooled_keys(obj)
        }
        missing = allocate_missing(bounds, known, wanted)
        out = []
        for obj in objects:
            keys = pooled_keys(obj) if obj["kind"] == "ResourceQuota" else ()
            live = lives.get(obj["metadata"].get("namespace", ""))
            out.append(_with_pooled(obj, live, keys, missing) if keys else obj)
        return out

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply of a pooled quota with its resourceVersion precondition; on a
        conflict (a pod admitted meanwhile), again from the fresh quota."""
        namespace = obj["metadata"]["namespace"]
        keys = pooled_keys(obj)
        for attempt in range(1, MAX_CONFLICTS + 1):
            try:
                result = await self.client.apply(obj)
            except ApiError as exc:
                if exc.status != 409 or attempt == MAX_CONFLICTS:
                    raise
                metrics.POOL_CONFLICTS.inc()
                fresh = await self.refresh(namespace)
                # Missing keys of a fresh quota: nothing more than 0 until the rebalance
                # finds room (0 never takes capacity from the pool).
                obj = _with_pooled(obj, fresh, keys, {namespace: dict.fromkeys(keys, 0)})
                continue
            self.seen(result)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    # -- rebalancing ----------------------------------------------------------------------------
    async def rebalance(
        self,
        body: dict[str, Any],
        org: Organization,
        policy: TenancyPolicy,
        blocked: set[str],
    ) -> dict[str, Any] | None:
        """Move capacity where it is used (render/pool.py decides); returns status.quotaPool."""
        pool = effective_pool(org, policy)
        if pool is None:
            self.cluster.pool_views.pop(org.name, None)
            self.cluster.pool_exhausted.pop(org.name, None)
            return None
        environments = {ns: env for env, ns in org.namespaces().items() if env in pool_members(org, policy)}
        bounds = bounds_of(pool, {env: ns for ns, env in environments.items()})
        moves: list[str] = []
        writes = 0
        started = time.perf_counter()
        members: list[Member] = []
        lives: dict[str, dict[str, Any]] = {}
        step = None
        for _ in range(MAX_PLANS):
            lives = {}
            for ns in environments:
                live = await self.live(ns)
                if live is not None:
                    lives[ns] = live
            # A namespace being deleted (or refused) still holds its quota until it is gone: it
            # counts, but is never written (a shrink skipped there holds every grow back).
            members = [member_of(ns, live, bounds.resources) for ns, live in lives.items()]
            step = next_step(bounds, members)
            planned = [w for w in step.writes if w.namespace not in blocked]
            if not planned:
                break
            for write in planned:
                before = next(m for m in members if m.namespace == write.namespace)
                result = await self._write(write.namespace, lives[write.namespace], write.hard)
                if result is None:
                    break  # 409: plan again from what the API server says now
                writes += 1
                metrics.POOL_WRITES.labels(direction=step.kind).inc()
                for r, amount in write.hard.items():
                    old = before.spec.get(r)
                    shown = from_units(r, old) if old is not None else "unlimited"
                    moves.append(f"{write.namespace} {r} {shown}→{from_units(r, amount)}")
        if writes:
            metrics.POOL_REBALANCE_SECONDS.observe(time.perf_counter() - started)
            message = f"moved capacity within the quota pool ({writes} write(s)): " + ", ".join(moves)
            log.info("quota pool rebalanced", organization=org.name, writes=writes, moves=moves)
            await self.emit(body, "Normal", reasons.QUOTA_POOL_REBALANCED, message)
        exhausted = set(step.exhausted) if step is not None else set()
        await self._report_exhausted(body, org.name, bounds, members, exhausted)
        view = _view(org.name, bounds, members, environments, exhausted)
        self.cluster.pool_views[org.name] = view
        return _status(view)

    async def _write(
        self, namespace: str, live: dict[str, Any], hard: dict[str, int]
    ) -> dict[str, Any] | None:
        """One planned change, only if the quota is still the one it was planned from."""
        patch = {
            "metadata": {"resourceVersion": live["metadata"]["resourceVersion"]},
            "spec": {"hard": {r: from_units(r, amount) for r, amount in hard.items()}},
        }
        try:
            result = await self.client.merge_patch(res.RESOURCE_QUOTA, QUOTA_NAME, patch, namespace=namespace)
        except ApiError as exc:
            if exc.status != 409:
                raise
            metrics.POOL_CONFLICTS.inc()
            await self.refresh(namespace)
            return None
        self.seen(result)
        return result

    async def _report_exhausted(
        self,
        body: dict[str, Any],
        org: str,
        bounds: Bounds,
        members: list[Member],
        exhausted: set[tuple[str, str]],
    ) -> None:
        """A Warning when a namespace newly hits its limit with nothing left in the pool: which
        namespace, which resource, what it uses and what the whole pool is doing."""
        before = self.cluster.pool_exhausted.get(org, set())
        self.cluster.pool_exhausted[org] = exhausted
        for namespace, r in sorted(exhausted - before):
            member = next(m for m in members if m.namespace == namespace)
            used = sum(m.used.get(r, 0) for m in members)
            message = (
                f"quota pool exhausted: {namespace} uses {from_units(r, member.used.get(r, 0))} of its "
                f"{r} limit {from_units(r, member.spec.get(r) or 0)} and the pool has nothing left to give "
                f"(pool {from_units(r, bounds.total[r])}, used {from_units(r, used)} in all); new pods "
                f"there are refused by the quota until another namespace frees capacity or the pool grows"
            )
            log.warning("quota pool exhausted", organization=org, namespace=namespace, resource=r)
            await self.emit(body, "Warning", reasons.QUOTA_POOL_EXHAUSTED, message)

    # -- leaving the pool -------------------------------------------------------------------------
    async def release(self, body: dict[str, Any], namespace: str) -> None:
        """A pooled namespace kept under `deletionPolicy: Retain` leaves the pool: its pooled keys
        drop to what it uses (its pods stay, it cannot grow) and the rest returns to the pool."""
        for _ in range(MAX_CONFLICTS):
            live = await self.live(namespace)
            keys = pooled_keys(live)
            if live is None or not keys:
                return
            used = (live.get("status") or {}).get("used") or {}
            patch = {
                "metadata": {
                    "resourceVersion": live["metadata"]["resourceVersion"],
                    "annotations": {POOL_ANNOTATION: None},
                },
                "spec": {"hard": {r: used.get(r, "0") for r in keys}},
            }
            try:
                result = await self.client.merge_patch(
                    res.RESOURCE_QUOTA, QUOTA_NAME, patch, namespace=namespace
                )
            except ApiError as exc:
                if exc.status != 409:
                    raise
                metrics.POOL_CONFLICTS.inc()
                await self.refresh(namespace)
                continue
            self.seen(result)
            await self.emit(
                body,
                "Normal",
                reasons.QUOTA_POOL_RELEASED,
                f"namespace {namespace} left the quota pool (deletionPolicy: Retain): its "
                f"{', '.join(keys)} limits are now what it uses, the rest went back to the pool",
            )
            return


def _with_pooled(
    obj: dict[str, Any],
    live: dict[str, Any] | None,
    keys: tuple[str, ...],
    missing: Mapping[str, Mapping[str, int]],
) -> dict[str, Any]:
    namespace = obj["metadata"]["namespace"]
    live_hard = ((live or {}).get("spec") or {}).get("hard") or {}
    hard = dict(obj["spec"]["hard"])
    for r in keys:
        value = live_hard.get(r)
        hard[r] = value if value is not None else from_units(r, missing.get(namespace, {}).get(r, 0))
    meta = dict(obj["metadata"])
    if live is not None:
        meta["resourceVersion"] = live["metadata"]["resourceVersion"]
    return {**obj, "metadata": meta, "spec": {**obj["spec"], "hard": hard}}


def _view(
    org: str,
    bounds: Bounds,
    members: list[Member],
    environments: Mapping[str, str],
    exhausted: set[tuple[str, str]],
) -> PoolView:
    resources = []
    for r in bounds.resources:
        hard = sum(m.spec.get(r) or 0 for m in members)
        used = sum(m.used.get(r, 0) for m in members)
        resources.append((r, bounds.total[r], hard, used, any(x[1] == r for x in exhausted)))
    namespaces = [
        (m.namespace, environments[m.namespace], {r: m.spec.get(r) for r in bounds.resources}, dict(m.used))
        for m in sorted(members, key=lambda m: list(environments).index(m.namespace))
    ]
    return PoolView(organization=org, resources=resources, namespaces=namespaces)


def _status(view: PoolView) -> dict[str, Any]:
    busiest = ""
    worst = -1.0
    for r, total, _, used, _ in view.resources:
        ratio = used / total if total else (1.0 if used else 0.0)
        if ratio > worst:
            busiest, worst = f"{r} {round(ratio * 100)}%", ratio
    return {
        "use": busiest,
        "resources": [
            {
                "resource": r,
                "pool": from_units(r, total),
                "hard": from_units(r, hard),
                "used": from_units(r, used),
                "exhausted": exhausted,
            }
            for r, total, hard, used, exhausted in view.resources
        ],
        "namespaces": [
            {
                "namespace": ns,
                "environment": env,
                "hard": {r: from_units(r, v) for r, v in hard.items() if v is not None},
                "used": {r: from_units(r, v) for r, v in used.items()},
            }
            for ns, env, hard, used in view.namespaces
        ],
    }
