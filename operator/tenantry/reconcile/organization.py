"""Reconcile one Organization: render, compare with the inventory, apply what differs, prune
what is no longer wanted, report. Everything here is idempotent: run it twice, the second run
makes no request at all (the inventory answers every read)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any

from tenantry.api.documents import parse_object
from tenantry.api.organization import Organization
from tenantry.api.policy import TenancyPolicy, select_policy
from tenantry.api.problems import InvalidObjectError
from tenantry.kube import resources as res
from tenantry.kube.client import ApiError, KubeClient
from tenantry.kube.compare import drifted_fields, in_sync, stale_keys
from tenantry.observe import metrics
from tenantry.observe.logging import get_logger
from tenantry.reconcile import reasons
from tenantry.reconcile.cluster import Cluster
from tenantry.reconcile.deletion import when_not_rendered, when_released
from tenantry.reconcile.grants import transitions
from tenantry.reconcile.pool import Pools
from tenantry.reconcile.status import Outcome, build_status, same_status, utc_now
from tenantry.render import ObjectKey, is_managed_name, object_key, render_organization
from tenantry.render import labels as lbl
from tenantry.render.checks import with_policy_environments
from tenantry.render.pool import pooled_keys

FINALIZER = "tenantry.dev/finalizer"
# One write of a reconcile: the desired object, the live one (None: missing), what it corrects.
Write = tuple[dict[str, Any], dict[str, Any] | None, str | None]
log = get_logger("tenantry.reconcile")


class Requeue(Exception):  # noqa: N818 - it is a control-flow signal, not an error
    """Come back later (a namespace is still terminating, a conflict to re-read)."""

    def __init__(self, delay: float, why: str) -> None:
        self.delay, self.why = delay, why
        super().__init__(why)


def _namespace_of(obj: dict[str, Any]) -> str | None:
    """The namespace an object is in, or is (for a Namespace); None for cluster-scoped ones."""
    return str(obj["metadata"]["name"]) if obj["kind"] == "Namespace" else obj["metadata"].get("namespace")


def _fingerprint(objects: list[dict[str, Any]]) -> str:
    """Short, stable digest of everything an Organization renders to, content included: when
    status says this very rendering was applied in full, any difference found later is drift;
    when the rendering changed (a spec or policy change, an exception expiring), differences
    are the update being made, not drift."""
    canonical = json.dumps(objects, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class OrganizationReconciler:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.pools = Pools(cluster, self.event)

    @property
    def client(self) -> KubeClient:
        return self.cluster.client

    async def event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        try:
            await self.client.event(body, type_, reason, message, self.cluster.event_namespace)
        except ApiError as exc:  # an Event is best effort; never fail a reconcile over it
            log.warning("event not posted", reason=reason, error=str(exc))

    # -- entry point ---------------------------------------------------------------------------
    async def reconcile(self, name: str) -> None:
        body = self.cluster.organizations.get(name)
        if body is None:
            return
        started = time.perf_counter()
        result = "ok"
        try:
            if body["metadata"].get("deletionTimestamp"):
                await self.finalize(body)
            else:
                await self.ensure(body)
        except Requeue:
            result = "requeue"
            raise
        except Exception:
            result = "error"
            raise
        finally:
            metrics.RECONCILES.labels(result=result).inc()
            metrics.RECONCILE_SECONDS.labels(result=result).observe(time.perf_counter() - started)

    # -- create / update / resume / resync ------------------------------------------------------
    async def ensure(self, body: dict[str, Any]) -> None:
        generation = body["metadata"].get("generation")
        outcome = Outcome()
        if FINALIZER not in (body["metadata"].get("finalizers") or []):
            body = await self._add_finalizer(body)

        parsed = parse_object(body)
        policy: TenancyPolicy | None = None
        if isinstance(parsed, list):
            outcome.fail(reasons.INVALID_SPEC, "; ".join(str(p) for p in parsed), stalled=True)
        else:
            assert isinstance(parsed, Organization)
            policy = select_policy(parsed.spec.policy, self.cluster.policies)
            if policy is None:
                outcome.fail(
                    reasons.POLICY_NOT_FOUND,
                    f"TenancyPolicy {parsed.spec.policy!r} does not exist; create it or set spec.policy",
                    stalled=True,
                )
        if isinstance(parsed, Organization) and policy is not None:
            await self._converge(body, parsed, policy, outcome)
        await self._write_status(body, outcome, generation)

    async def _converge(
        self, body: dict[str, Any], org: Organization, policy: TenancyPolicy, outcome: Outcome
    ) -> None:
        try:
            rendering = render_organization(org, policy, self.cluster.today(), self.cluster.now())
        except InvalidObjectError as exc:
            outcome.fail(reasons.INVALID_SPEC, "; ".join(str(p) for p in exc.problems), stalled=True)
            return
        fingerprint = _fingerprint(rendering.objects)
        outcome.applied_objects = fingerprint
        outcome.guardrails = rendering.guardrails
        outcome.grants = rendering.grants
        if rendering.next_change is not None:
            self.cluster.wake_at[org.name] = rendering.next_change
        else:
            self.cluster.wake_at.pop(org.name, None)
        # Everything of this very object set was applied before (status says so, and survives a
        # restart): whatever of it is missing now was deleted by someone.
        applied_before = (body.get("status") or {}).get("appliedObjects") == fingerprint
        blocked: set[str] = set()
        for env, namespace in rendering.namespaces.items():
            phase = await self._namespace_phase(org.name, namespace)
            outcome.namespaces.append({"name": namespace, "environment": env, "phase": phase})
            if phase in ("Refused", "Terminating"):
                blocked.add(namespace)
        refused = [n for n in outcome.namespaces if n["phase"] == "Refused"]
        await self._report_refused(body, org.name, refused)
        if refused:
            names = ", ".join(n["name"] for n in refused)
            outcome.fail(
                reasons.NAMESPACE_CONFLICT,
                f"namespace(s) {names} exist without Tenantry's ownership labels (or are reserved); "
                "Tenantry never adopts them: rename the environment or remove the namespace",
                stalled=True,
            )
            outcome.areas["NamespacesReady"] = (reasons.NAMESPACE_CONFLICT, outcome.message)
        if any(n["phase"] == "Terminating" for n in outcome.namespaces):
            outcome.progressing = True
            outcome.message = "waiting for a terminating namespace to be gone before re-creating it"

        # Pooled quota keys as they are live (the rebalancer's), never the initial split again.
        filled = with_policy_environments(org, policy)
        objects = await self.pools.carry_live(filled, policy, rendering.objects)
        desired_keys = {object_key(obj) for obj in objects}
        waves = self._writes(objects, blocked, applied_before)
        for wave in sorted(waves):
            await self._apply_wave(body, waves[wave], outcome)

        await self._prune(body, org, desired_keys, blocked)
        outcome.quota_pool = await self.pools.rebalance(body, filled, policy, blocked)
        for entry in outcome.namespaces:  # phases after this pass's writes (created, re-adopted)
            if entry["phase"] in ("Missing", "Adopting"):
                entry["phase"] = await self._namespace_phase(org.name, entry["name"])
        outcome.quota = self._quota_usage(org, rendering.namespaces)
        for warning in rendering.warnings:
            log.info("warning", organization=org.name, warning=str(warning))
        previous = (body.get("status") or {}).get("grants") or []
        for type_, reason, message in transitions(org.name, previous, rendering.grants):
            await self.event(body, type_, reason, message)
        if any(n["phase"] == "Terminating" for n in outcome.namespaces):
            await self._write_status(body, outcome, body["metadata"].get("generation"))
            raise Requeue(2.0, "namespace terminating")

    async def _report_refused(self, body: dict[str, Any], org: str, refused: list[dict[str, str]]) -> None:
        """An Event and a log line for each namespace newly refused (status had it otherwise)."""
        before = {n.get("name"): n.get("phase") for n in (body.get("status") or {}).get("namespaces", [])}
        for entry in refused:
            if before.get(entry["name"]) == "Refused":
                continue
            message = (
                f"namespace {entry['name']} (environment {entry['environment']}) exists without "
                f"Tenantry's ownership labels for {org}, or is reserved: not adopted, nothing written"
            )
            log.warning("adoption refused", organization=org, namespace=entry["name"], why=message)
            await self.event(body, "Warning", reasons.ADOPTION_REFUSED, message)

    async def _namespace_phase(self, org: str, namespace: str) -> str:
        # Names the policy reserves were refused by the renderer already; the operator's own
        # namespace is known only at run time.
        if namespace in self.cluster.reserved_namespaces:
            return "Refused"
        live = self.cluster.inventory.get(("v1", "Namespace", "", namespace))
        if live is None:
            existing = await self.client.get(res.NAMESPACE, namespace)
            if existing is None:
                return "Missing"
            owner = lbl.owner_of(existing.get("metadata", {}).get("labels"))
            if owner is None or owner != org:
                return "Refused"
            self.cluster.inventory.upsert(existing)
            live = self.cluster.inventory.get(("v1", "Namespace", "", namespace))
            assert live is not None
        if lbl.owner_of(live["metadata"].get("labels")) != org:
            return "Refused"
        if live["metadata"].get("deletionTimestamp"):
            return "Terminating"
        if (live["metadata"].get("labels") or {}).get(lbl.ORPHANED):
            return "Adopting"
        return (live.get("status") or {}).get("phase") or "Active"

    def _writes(
        self, objects: list[dict[str, Any]], blocked: set[str], applied_before: bool
    ) -> dict[int, list[Write]]:
        """What differs from the inventory, by apply wave, with what each write corrects."""
        waves: dict[int, list[Write]] = {}
        for obj in objects:
            if _namespace_of(obj) in blocked or obj["kind"] in self.cluster.missing_kinds:
                continue
            live = self.cluster.inventory.get(object_key(obj))
            if in_sync(obj, live):
                continue
            wave = res.kind_of(obj["apiVersion"], obj["kind"]).wave
            waves.setdefault(wave, []).append((obj, live, self._drift(obj, live, applied_before)))
        return waves

    def _drift(self, obj: dict[str, Any], live: dict[str, Any] | None, applied_before: bool) -> str | None:
        """What applying `obj` corrects, if it is drift (decided before the write: the watch
        event of our own write must not change the answer)."""
        if live is not None and applied_before:
            return "modified: " + ", ".join(drifted_fields(obj, live) or ["fields"])
        if live is None and (applied_before or self.cluster.inventory.was_deleted(object_key(obj))):
            return "deleted"
        return None

    async def _apply_wave(
        self,
        body: dict[str, Any],
        wave: list[Write],
        outcome: Outcome,
    ) -> None:
        """Send the wave's writes concurrently (at most `applies_in_flight` at once), then record
        their results in rendering order, so status, events and logs do not depend on timing."""
        limit = asyncio.Semaphore(self.cluster.applies_in_flight)

        async def send(obj: dict[str, Any], live: dict[str, Any] | None) -> dict[str, Any] | ApiError:
            async with limit:
                try:
                    return await self._send(obj, live)
                except ApiError as exc:
                    return exc

        results = await asyncio.gather(*(send(obj, live) for obj, live, _ in wave))
        for (obj, _, drift), result in zip(wave, results, strict=True):
            await self._record(body, obj, drift, result, outcome)

    async def _send(self, obj: dict[str, Any], live: dict[str, Any] | None) -> dict[str, Any]:
        stale = stale_keys(obj, live)
        if stale:
            # Server-side apply drops fields we stopped sending only if our manager owns
            # them; remove our stale keys explicitly so re-adoption works whoever set them.
            kind = res.kind_of(obj["apiVersion"], obj["kind"])
            patch = {"metadata": {part: dict.fromkeys(keys) for part, keys in stale.items()}}
            await self.client.merge_patch(
                kind, obj["metadata"]["name"], patch, namespace=obj["metadata"].get("namespace")
            )
        if obj["kind"] == "ResourceQuota" and pooled_keys(obj):
            return await self.pools.apply(obj)  # with its resourceVersion precondition
        return await self.client.apply(obj)

    async def _record(
        self,
        body: dict[str, Any],
        obj: dict[str, Any],
        drift: str | None,
        result: dict[str, Any] | ApiError,
        outcome: Outcome,
    ) -> None:
        org = body["metadata"]["name"]
        namespace = _namespace_of(obj)
        if isinstance(result, ApiError):
            area = res.kind_of(obj["apiVersion"], obj["kind"]).area or "NamespacesReady"
            message = f"{obj['kind']} {namespace}/{obj['metadata']['name']}: {result}"
            outcome.areas[area] = (reasons.APPLY_FAILED, message)
            outcome.fail(reasons.APPLY_FAILED, message, stalled=False)
            log.warning(
                "apply failed", organization=org, namespace=namespace, kind=obj["kind"], error=str(result)
            )
            return
        self.cluster.inventory.upsert(result)
        if drift:
            change = "deleted" if drift == "deleted" else "modified"
            metrics.DRIFT.labels(kind=obj["kind"], change=change).inc()
            what = (
                f"{obj['kind']} {namespace}/{obj['metadata']['name']}"
                if obj["metadata"].get("namespace")
                else f"{obj['kind']} {obj['metadata']['name']}"
            )
            message = f"{what} was {drift}; restored to the desired state"
            log.warning(
                "drift corrected", organization=org, namespace=namespace, kind=obj["kind"], change=drift
            )
            await self.event(body, "Warning", reasons.DRIFT_CORRECTED, message)
        else:
            log.info(
                "applied",
                organization=org,
                namespace=namespace,
                kind=obj["kind"],
                name=obj["metadata"]["name"],
            )

    # -- pruning ---------------------------------------------------------------------------------
    async def _prune(
        self, body: dict[str, Any], org: Organization, desired: set[ObjectKey], blocked: set[str]
    ) -> None:
        owned = self._owned(org.name, besides=desired)
        dropped_namespaces = {o["metadata"]["name"] for o in owned if o["kind"] == "Namespace"}
        policy = org.spec.deletion_policy
        for obj in owned:
            kind = res.kind_of(obj["apiVersion"], obj["kind"])
            namespace = obj["metadata"].get("namespace")
            if kind.purpose == "namespace" or namespace in dropped_namespaces:
                action = when_released(kind, policy)  # its environment was removed
            elif namespace in blocked:
                action = "keep"
            else:
                action = when_not_rendered(kind)
            if action == "delete":
                if await self._delete(obj) and kind.purpose == "namespace":
                    await self.event(
                        body,
                        "Normal",
                        reasons.NAMESPACE_DELETED,
                        f"environment removed: namespace {obj['metadata']['name']} deleted "
                        "(deletionPolicy: Delete)",
                    )
            elif action == "orphan":
                await self._orphan(body, obj)

    def _owned(self, org: str, besides: set[ObjectKey] | None = None) -> list[dict[str, Any]]:
        """What we created for `org`: our labels AND a name we generate; without `besides`.

        Labels alone do not prove it (anyone can copy them onto an object); whatever fails the
        name test is never pruned, orphaned or deleted. Chosen by key, so only what is returned
        is unpacked from the inventory (a reconcile prunes little or nothing of ~40 objects).
        """
        inventory = self.cluster.inventory
        owned = []
        for key in inventory.owned_keys(org):
            _, kind, namespace, name = key
            if not is_managed_name(kind, name, org):
                log.warning(
                    "object carries our labels but a name we never create; left alone",
                    organization=org,
                    namespace=namespace or None,
                    kind=kind,
                    name=name,
                )
                continue
            if besides is not None and key in besides:
                continue
            obj = inventory.get(key)
            if obj is not None:
                owned.append(obj)
        return owned

    async def _delete(self, obj: dict[str, Any]) -> bool:
        """Delete what we saw (uid precondition); False when nothing was (newly) deleted."""
        key = object_key(obj)
        if obj["metadata"].get("deletionTimestamp"):
            return False
        kind = res.kind_of(obj["apiVersion"], obj["kind"])
        self.cluster.expected_deletions.add(key)
        inside = self._inside(obj) if kind.purpose == "namespace" else []
        # The namespace controller deletes what is inside a namespace we delete: not drift.
        self.cluster.expected_deletions.update(inside)
        try:
            deleted = await self.client.delete(
                kind,
                obj["metadata"]["name"],
                obj["metadata"].get("namespace"),
                uid=obj["metadata"].get("uid"),
            )
        except ApiError as exc:
            self.cluster.expected_deletions.difference_update({key, *inside})
            if exc.status != 409:  # 409: the uid precondition failed, it is not the object we saw
                raise
            return False
        if not deleted:  # already gone: no DELETED event will come for us to expect
            self.cluster.expected_deletions.difference_update({key, *inside})
            return False
        log.info(
            "deleted",
            kind=obj["kind"],
            namespace=obj["metadata"].get("namespace"),
            name=obj["metadata"]["name"],
        )
        return True

    def _inside(self, namespace_obj: dict[str, Any]) -> list[ObjectKey]:
        """Keys of what we own inside a namespace."""
        name = namespace_obj["metadata"]["name"]
        owner = lbl.owner_of(namespace_obj["metadata"].get("labels")) or ""
        return [
            object_key(o)
            for o in self.cluster.inventory.owned_by(owner)
            if o["metadata"].get("namespace") == name
        ]

    async def _orphan(self, body: dict[str, Any], namespace_obj: dict[str, Any]) -> None:
        labels = namespace_obj["metadata"].get("labels") or {}
        if labels.get(lbl.ORPHANED) == "true":
            return
        # Its quota stays (a guardrail), but not its share of a pool: that goes back.
        await self.pools.release(body, namespace_obj["metadata"]["name"])
        # A merge patch of the one label: a server-side apply would have to name every label
        # (fields our manager applied before and omits now are removed), and force-applying
        # labels another manager set would take them over.
        patch = {"metadata": {"labels": {lbl.ORPHANED: "true"}}}
        name = namespace_obj["metadata"]["name"]
        self.cluster.inventory.upsert(await self.client.merge_patch(res.NAMESPACE, name, patch))
        await self.event(
            body,
            "Normal",
            reasons.NAMESPACE_RETAINED,
            f"namespace {namespace_obj['metadata']['name']} kept with its data (deletionPolicy: Retain); "
            f"tenant access removed, labelled {lbl.ORPHANED}=true",
        )

    # -- deletion --------------------------------------------------------------------------------
    async def finalize(self, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        if FINALIZER not in (body["metadata"].get("finalizers") or []):
            return
        policy = (body.get("spec") or {}).get("deletionPolicy", "Retain")
        owned = self._owned(name)
        namespaces = [o for o in owned if o["kind"] == "Namespace"]
        if await self.cluster.crd_going_away(res.ORGANIZATION_CRD):
            # Deleting the CRD deletes every Organization: carrying out each deletionPolicy then
            # would delete (or strip the access of) every tenant at once, the mass deletion
            # tenancy operators are known for. Leave everything as it is; Organizations applied
            # again (the CRD re-installed, a GitOps sync) take their namespaces back.
            policy = "KeepAll (CRD deleted)"
            log.warning(
                "Organization deleted by the deletion of its CRD: its namespaces and everything in "
                "them are kept untouched",
                organization=name,
                namespaces=len(namespaces),
            )
        else:
            for obj in owned:
                action = when_released(res.kind_of(obj["apiVersion"], obj["kind"]), policy)
                if action == "delete":
                    await self._delete(obj)
                elif action == "orphan":
                    await self._orphan(body, obj)
            if policy == "Delete" and namespaces:
                raise Requeue(1.0, "waiting for namespaces to be deleted")
        finalizers = [f for f in body["metadata"].get("finalizers", []) if f != FINALIZER]
        await self.client.merge_patch(
            res.ORGANIZATION,
            name,
            {
                "metadata": {
                    "finalizers": finalizers,
                    "resourceVersion": body["metadata"].get("resourceVersion"),
                }
            },
        )
        log.info("finalized", organization=name, deletion_policy=policy, namespaces=len(namespaces))

    async def _add_finalizer(self, body: dict[str, Any]) -> dict[str, Any]:
        finalizers = [*(body["metadata"].get("finalizers") or []), FINALIZER]
        patched = await self.client.merge_patch(
            res.ORGANIZATION,
            body["metadata"]["name"],
            {
                "metadata": {
                    "finalizers": finalizers,
                    "resourceVersion": body["metadata"].get("resourceVersion"),
                }
            },
        )
        self.cluster.remember_organization(patched)
        return patched

    # -- status ----------------------------------------------------------------------------------
    def _quota_usage(self, org: Organization, namespaces: dict[str, str]) -> list[dict[str, Any]]:
        usage = []
        for env, namespace in namespaces.items():
            quota = self.cluster.inventory.get(("v1", "ResourceQuota", namespace, "tenantry-quota"))
            if quota is None:
                continue
            status = quota.get("status") or {}
            hard, used = status.get("hard") or {}, status.get("used") or {}
            usage.append({"environment": env, "namespace": namespace, "hard": hard, "used": used})
        return usage

    async def _write_status(self, body: dict[str, Any], outcome: Outcome, generation: int | None) -> None:
        current = body.get("status")
        status = build_status(outcome, generation, current, utc_now())
        if same_status(current, status):
            return
        name = body["metadata"]["name"]
        usage: dict[str, Any] = {k: status[k] for k in ("quota", "quotaPool") if k in status}
        if same_status({**(current or {}), **usage}, status):
            # Only quota usage moved: kube-controller-manager updates it with every pod or PVC
            # anywhere in the tenant, which would be a status write per pod start. Written at
            # most every `quota_status_interval` seconds per Organization (the quota-use metrics
            # are read live at scrape time; `kubectl describe quota` is always current).
            wait = self.cluster.quota_status_due(name, time.monotonic())
            if wait > 0:
                raise Requeue(wait, "quota usage refresh")
        patched = await self.client.merge_patch(
            res.ORGANIZATION, name, {"status": status}, subresource="status"
        )
        self.cluster.remember_organization(patched)
        old_ready = next((c for c in (current or {}).get("conditions", []) if c.get("type") == "Ready"), None)
        new_ready = status["conditions"][0]
        if old_ready is None or (old_ready.get("status"), old_ready.get("reason")) != (
            new_ready["status"],
            new_ready["reason"],
        ):
            type_ = "Normal" if new_ready["status"] == "True" or outcome.progressing else "Warning"
            await self.event(body, type_, new_ready["reason"], new_ready["message"])
