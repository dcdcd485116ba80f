"""Reconcile one Organization: render, compare with the inventory, apply what differs, prune
what is no longer wanted, report. Everything here is idempotent: run it twice, the second run
makes no request at all (the inventory answers every read)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import time
from typing import Any

from tenantry.api.documents import parse_access, parse_object
from tenantry.api.organization import Organization
from tenantry.api.policy import TenancyPolicy, select_policy
from tenantry.api.problems import InvalidObjectError
from tenantry.api.quantity import parse_quantity
from tenantry.api.status import MAX_OWNED_NAMESPACES
from tenantry.kube import drift
from tenantry.kube import resources as res
from tenantry.kube.client import ApiError, KubeClient, NotLeaderError
from tenantry.observe import metrics
from tenantry.observe.logging import get_logger
from tenantry.reconcile import reasons
from tenantry.reconcile.cluster import Cluster
from tenantry.reconcile.deletion import when_not_rendered, when_released
from tenantry.reconcile.grants import transitions
from tenantry.reconcile.identity import expected_identity, identity_hint
from tenantry.reconcile.pool import Pools
from tenantry.reconcile.status import Outcome, build_status, same_status, utc_now
from tenantry.render import ObjectKey, is_managed_name, object_key, render_organization
from tenantry.render import labels as lbl
from tenantry.render.access import MFA_LABEL
from tenantry.render.checks import with_policy_environments
from tenantry.render.permitted import permitted_access
from tenantry.render.pool import pooled_keys

FINALIZER = "tenantry.dev/finalizer"
# What an invalid Organization's access is made of (render/permitted.py).
ACCESS_KINDS = ("RoleBinding", "ClusterRole", "ClusterRoleBinding")
# One write of a reconcile: the desired object, the live one (None: missing), what it corrects.
Write = tuple[dict[str, Any], dict[str, Any] | None, str | None]
# Why a write did not happen: the API server refused it, or the object still differs after it.
Failure = ApiError | drift.StillDifferentError
log = get_logger("tenantry.reconcile")


class WritesFailedError(Exception):
    """Some writes of a reconcile were refused or failed (status says which): the reconcile
    failed, and the Organization is retried with its backoff. `retry_after`: the API server's
    longest Retry-After among them."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class Requeue(Exception):  # noqa: N818 - it is a control-flow signal, not an error
    """Come back later (a namespace is still terminating, a conflict to re-read)."""

    def __init__(self, delay: float, why: str) -> None:
        self.delay, self.why = delay, why
        super().__init__(why)


def _namespace_of(obj: dict[str, Any]) -> str | None:
    """The namespace an object is in, or is (for a Namespace); None for cluster-scoped ones."""
    return str(obj["metadata"]["name"]) if obj["kind"] == "Namespace" else obj["metadata"].get("namespace")


def _recorded(owned_namespaces: list[dict[str, str]]) -> set[tuple[str, str]]:
    return {(str(n.get("name")), str(n.get("uid"))) for n in owned_namespaces}


def _describe(obj: dict[str, Any]) -> str:
    """`Kind namespace/name`, or `Kind name` for a cluster-scoped object (a Namespace)."""
    meta = obj["metadata"]
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj['kind']} {where}{meta['name']}"


def _ready_since(status: dict[str, Any] | None) -> float | None:
    """Seconds since the Ready condition last changed (a restarted process knows no better
    time of the last status write), or None."""
    ready = next((c for c in (status or {}).get("conditions", []) if c.get("type") == "Ready"), None)
    since = (ready or {}).get("lastTransitionTime")
    if not since:
        return None
    try:
        when = dt.datetime.strptime(since, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return (dt.datetime.now(dt.UTC) - when).total_seconds()


def _quota_in_force(quota: dict[str, Any]) -> bool:
    """Has kube-controller-manager copied this ResourceQuota's spec.hard into its status.hard
    (the limits the API server's quota admission enforces)? Compared as quantities."""
    spec = (quota.get("spec") or {}).get("hard") or {}
    status = (quota.get("status") or {}).get("hard") or {}
    if spec.keys() != status.keys():
        return False
    try:
        return all(parse_quantity(spec[k]) == parse_quantity(status[k]) for k in spec)
    except ValueError:
        return spec == status


def _where(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else str(meta["name"])


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
        """Post an Event about the Organization where platform admins look (`event_namespace`,
        what `kubectl describe org` shows) and in its home namespace, where its members can
        read it without cluster-wide rights."""
        home = self._home(body)
        for namespace in (self.cluster.event_namespace, *([home] if home else [])):
            try:
                await self.client.event(body, type_, reason, message, namespace)
            except ApiError as exc:  # an Event is best effort; never fail a reconcile over it
                log.warning("event not posted", reason=reason, namespace=namespace, error=str(exc))

    def _home(self, body: dict[str, Any]) -> str | None:
        """The first namespace of the Organization (its environments in spec order, as status
        lists them: the status this reconcile started from, else the one it wrote) that is ours
        and not going away; None when it has none yet."""
        org = body["metadata"]["name"]
        written = self.cluster.organizations.get(org) or {}
        listed = [
            n.get("name") for b in (body, written) for n in (b.get("status") or {}).get("namespaces", [])
        ]
        owned = sorted(key[3] for key in self.cluster.inventory.owned_keys(org) if key[1] == "Namespace")
        serving = [ns for ns in dict.fromkeys((*listed, *owned)) if ns and self._serving(org, ns)]
        # Members read what the Organization's status says without MFA (`get` on it), so its
        # Events go where a session without MFA can read them too, when there is such a place.
        plain = [ns for ns in serving if not self._mfa_required(ns)]
        return next(iter(plain or serving), None)

    def _mfa_required(self, namespace: str) -> bool:
        live = self.cluster.inventory.get(("v1", "Namespace", "", namespace)) or {}
        return bool(((live.get("metadata") or {}).get("labels") or {}).get(MFA_LABEL))

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
        except (Requeue, NotLeaderError):
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
            members = parse_access(body)
            policy = select_policy(members.spec.policy, self.cluster.policies) if members else None
            await self._withdraw_forbidden_access(body, members, policy, outcome)
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
        if outcome.stalled and outcome.ready_reason in (reasons.INVALID_SPEC, reasons.POLICY_NOT_FOUND):
            self._report_existing(body, outcome)
        self._hold_for_quota(body, outcome)
        await self._write_status(body, outcome, generation)
        await self._report_grants(body, outcome)
        if outcome.failed_writes:
            # After the status (and its Event) says what failed: retried with the
            # Organization's backoff, not left to the next resync.
            raise WritesFailedError(
                f"{len(outcome.failed_writes)} write(s) failed: " + "; ".join(outcome.failed_writes),
                max((e.retry_after for e in outcome.write_errors if e.retry_after is not None), default=None),
            )

    async def _converge(
        self, body: dict[str, Any], org: Organization, policy: TenancyPolicy, outcome: Outcome
    ) -> None:
        try:
            rendering = render_organization(org, policy, self.cluster.today(), self.cluster.now())
        except InvalidObjectError as exc:
            outcome.fail(reasons.INVALID_SPEC, "; ".join(str(p) for p in exc.problems), stalled=True)
            await self._withdraw_forbidden_access(body, org, policy, outcome)
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
        await self._apply_waves(body, waves, blocked, outcome)

        owned_namespaces = self._owned_namespaces(body, org.name, rendering.namespaces)
        outcome.owned_namespaces = owned_namespaces
        await self._prune(body, org, desired_keys, blocked, _recorded(owned_namespaces))
        outcome.quota_pool = await self.pools.rebalance(body, filled, policy, blocked)
        for entry in outcome.namespaces:  # phases after this pass's writes (created, re-adopted)
            if entry["phase"] in ("Missing", "Adopting"):
                entry["phase"] = await self._namespace_phase(org.name, entry["name"])
        outcome.quota = self._quota_usage(rendering.namespaces)
        self._check_quota_in_force(objects, blocked, outcome)
        for warning in rendering.warnings:
            log.info("warning", organization=org.name, warning=str(warning))
        previous = (body.get("status") or {}).get("grants") or []
        outcome.grant_transitions = list(transitions(org.name, previous, rendering.grants))
        if any(n["phase"] == "Terminating" for n in outcome.namespaces):
            await self._write_status(body, outcome, body["metadata"].get("generation"))
            await self._report_grants(body, outcome)
            raise Requeue(2.0, "namespace terminating")

    async def _report_grants(self, body: dict[str, Any], outcome: Outcome) -> None:
        """The grants' Events (requested, active, expired, revoked), once the status recording
        them is written: they are found by comparing with the grants status had, so a pass whose
        status write is held back (a quota not yet in force) reports them with the next."""
        for type_, reason, message in outcome.grant_transitions:
            await self.event(body, type_, reason, message)

    async def _withdraw_forbidden_access(
        self, body: dict[str, Any], org: Organization | None, policy: TenancyPolicy | None, outcome: Outcome
    ) -> None:
        """The Organization is invalid, so nothing of it is applied, except that its access
        shrinks to what the current policy and spec still allow (render/permitted.py): bindings
        are rewritten (a group to its MFA form) or deleted, never created in a namespace that
        does not exist. A spec whose members cannot be read allows nobody. Without its policy
        (PolicyNotFound) nothing can be decided and everything stays as last applied."""
        name = body["metadata"]["name"]
        if org is None:
            objects: list[dict[str, Any]] = []
            namespace_objects: list[dict[str, Any]] = []
            left_out = ["spec.members: cannot be read, so nobody is bound"]
        elif policy is None:
            return
        else:
            permitted = permitted_access(org, policy, self.cluster.now())
            ours = {ns for ns in permitted.namespaces.values() if self._serving(name, ns)}
            objects = [o for o in permitted.objects if _namespace_of(o) in (None, *ours)]
            # The MFA label and annotation the `tenantry-mfa` admission policy reads; the rest
            # of the namespace is left as last applied.
            namespace_objects = [
                o
                for o in permitted.namespace_objects
                if o["metadata"]["name"] in ours and self._mfa_differs(o)
            ]
            left_out = [str(p) for p in permitted.left_out]
        if left_out:
            outcome.message += "; while invalid, access is bound only where still allowed, left out: " + (
                "; ".join(left_out)
            )
        waves = self._writes([*namespace_objects, *objects], set(), applied_before=False)
        changed = [
            f"Namespace {_where(obj)} labelled for MFA"
            if obj["kind"] == "Namespace"
            else f"{obj['kind']} {_where(obj)} {'rewritten' if live else 'created'}"
            for wave in waves.values()
            for obj, live, _ in wave
        ]
        for wave in sorted(waves):
            await self._apply_wave(body, waves[wave], outcome)
        keep = {object_key(o) for o in objects}
        recorded = _recorded((body.get("status") or {}).get("ownedNamespaces") or [])
        if not recorded:
            # Recorded before this version (no status.ownedNamespaces yet): withdrawing access
            # must not wait for a record, so the namespaces our labels give this Organization
            # count here; only access objects (RoleBindings, the member ClusterRole) are deleted.
            recorded = self._labelled_namespaces(name)
        for obj in self._owned(name, recorded, besides=keep):
            if obj["kind"] in ACCESS_KINDS and await self._delete(obj):
                changed.append(f"{obj['kind']} {_where(obj)} deleted")
        if changed:
            message = (
                f"{name} is invalid; access reduced to what the policy and spec still allow "
                f"({', '.join(changed)})" + (f"; left out: {'; '.join(left_out)}" if left_out else "")
            )
            log.warning("access withdrawn", organization=name, changed=changed, left_out=left_out)
            await self.event(body, "Warning", reasons.ACCESS_WITHDRAWN, message)

    def _report_existing(self, body: dict[str, Any], outcome: Outcome) -> None:
        """While the Organization cannot be converged (InvalidSpec, PolicyNotFound) nothing of
        it is applied, but what exists stays: status keeps saying so. Its namespaces (those the
        last status listed, and those of its record, never a retained one), with their phase
        now, their quota use, and the guardrails their ConfigMaps still carry."""
        name = body["metadata"]["name"]
        current = body.get("status") or {}
        environment_of = {
            str(n.get("name")): str(n.get("environment")) for n in current.get("namespaces") or []
        }
        recorded = _recorded(current.get("ownedNamespaces") or []) or self._labelled_namespaces(name)
        for namespace, _ in sorted(recorded):
            found = self.cluster.inventory.get(("v1", "Namespace", "", namespace)) or {}
            labels = (found.get("metadata") or {}).get("labels") or {}
            if lbl.OWNER_ENVIRONMENT in labels and not labels.get(lbl.ORPHANED):
                environment_of.setdefault(namespace, labels[lbl.OWNER_ENVIRONMENT])
        outcome.namespaces = []
        for namespace, environment in environment_of.items():
            live = self.cluster.inventory.get(("v1", "Namespace", "", namespace))
            if live is None or lbl.owner_of(live["metadata"].get("labels")) != name:
                continue  # gone, or not ours (any more): not reported as this Organization's
            phase = "Terminating" if live["metadata"].get("deletionTimestamp") else None
            outcome.namespaces.append(
                {
                    "name": namespace,
                    "environment": environment,
                    "phase": phase or (live.get("status") or {}).get("phase") or "Active",
                }
            )
        listed = {n["environment"]: n["name"] for n in outcome.namespaces}
        outcome.quota = self._quota_usage(listed)
        outcome.guardrails = [
            g
            for g in current.get("guardrails") or []
            if listed.get(g.get("environment")) == g.get("namespace")
        ]

    def _labelled_namespaces(self, org: str) -> set[tuple[str, str]]:
        inventory = self.cluster.inventory
        found = set()
        for api_version, kind, _, name in inventory.owned_keys(org):
            live = inventory.get((api_version, kind, "", name)) if kind == "Namespace" else None
            if live is not None:
                found.add((name, str(live["metadata"].get("uid"))))
        return found

    def _serving(self, org: str, namespace: str) -> bool:
        """Is `namespace` ours for `org`, and not going away (only such get access written)?"""
        live = self.cluster.inventory.get(("v1", "Namespace", "", namespace))
        if live is None or live["metadata"].get("deletionTimestamp"):
            return False
        return lbl.owner_of(live["metadata"].get("labels")) == org

    def _mfa_differs(self, desired: dict[str, Any]) -> bool:
        live = self.cluster.inventory.get(object_key(desired)) or {}
        for part, prefix in (("labels", MFA_LABEL), ("annotations", f"{MFA_LABEL}-")):
            want = {k: v for k, v in (desired["metadata"].get(part) or {}).items() if k.startswith(prefix)}
            have = {
                k: v
                for k, v in ((live.get("metadata") or {}).get(part) or {}).items()
                if k.startswith(prefix)
            }
            if want != have:
                return True
        return False

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
            if drift.in_sync(obj, live):
                continue
            wave = res.kind_of(obj["apiVersion"], obj["kind"]).wave
            waves.setdefault(wave, []).append((obj, live, self._drift(obj, live, applied_before)))
        return waves

    def _drift(self, obj: dict[str, Any], live: dict[str, Any] | None, applied_before: bool) -> str | None:
        """What applying `obj` corrects, if it is drift (decided before the write: the watch
        event of our own write must not change the answer)."""
        if live is not None and applied_before:
            return "modified: " + drift.describe(drift.differences(obj, live))
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

        async def send(obj: dict[str, Any], live: dict[str, Any] | None) -> dict[str, Any] | Failure:
            async with limit:
                try:
                    return await self._send(obj, live)
                except (ApiError, drift.StillDifferentError) as exc:
                    return exc

        results = await asyncio.gather(*(send(obj, live) for obj, live, _ in wave))
        for (obj, _, correction), result in zip(wave, results, strict=True):
            await self._record(body, obj, correction, result, outcome)

    async def _apply_waves(
        self, body: dict[str, Any], waves: dict[int, list[Write]], blocked: set[str], outcome: Outcome
    ) -> None:
        for wave in sorted(waves):
            # Nothing is written into a namespace whose create was refused in an earlier wave.
            writes = [w for w in waves[wave] if _namespace_of(w[0]) not in blocked]
            await self._apply_wave(body, writes, outcome)
            for obj, _, _ in writes:
                namespace = str(obj["metadata"]["name"])
                create_refused = obj["kind"] == "Namespace" and namespace in outcome.refused_writes
                if create_refused and self.cluster.inventory.get(object_key(obj)) is None:
                    blocked.add(namespace)

    async def _send(self, obj: dict[str, Any], live: dict[str, Any] | None) -> dict[str, Any]:
        """Heal with server-side apply's semantics (kube/drift.py): a forced apply, then, only if
        another manager added fields the apply cannot remove, a merge patch removing exactly
        those, on the condition that the object is still the one the apply returned. A pooled
        quota is applied with its resourceVersion as a precondition (reconcile/pool.py): its
        limits are the rebalancer's, carried from the live object, never an older split."""
        if obj["kind"] == "ResourceQuota" and pooled_keys(obj):
            applied = await self.pools.apply(obj)
        else:
            applied = await self.client.apply(obj)
        patch = drift.leftovers(obj, applied)
        if patch is None:
            return applied
        kind = res.kind_of(obj["apiVersion"], obj["kind"])
        return await self.client.merge_patch(
            kind, obj["metadata"]["name"], patch, namespace=obj["metadata"].get("namespace")
        )

    async def _record(
        self,
        body: dict[str, Any],
        obj: dict[str, Any],
        correction: str | None,
        result: dict[str, Any] | Failure,
        outcome: Outcome,
    ) -> None:
        org = body["metadata"]["name"]
        namespace = _namespace_of(obj)
        what = _describe(obj)
        if isinstance(result, ApiError | drift.StillDifferentError):
            area = res.kind_of(obj["apiVersion"], obj["kind"]).area or "NamespacesReady"
            message = f"{what}: {result}"
            identity = expected_identity(str(result))
            if identity is not None:
                hint = identity_hint(identity)
                message = f"{message} ({hint})"
                if not self.cluster.identity_warned:
                    self.cluster.identity_warned = True
                    log.error("refused by admission: wrong identity", expected=identity, hint=hint)
            outcome.areas[area] = (reasons.APPLY_FAILED, message)
            outcome.fail(reasons.APPLY_FAILED, message, stalled=False)
            outcome.failed_writes.append(message)
            outcome.write_errors.append(result)
            if obj["kind"] == "Namespace":
                outcome.refused_writes.add(str(obj["metadata"]["name"]))
            log.warning(
                "apply failed", organization=org, namespace=namespace, kind=obj["kind"], error=str(result)
            )
            return
        self.cluster.inventory.upsert(result)
        if correction:
            change = "deleted" if correction == "deleted" else "modified"
            metrics.DRIFT.labels(kind=obj["kind"], change=change).inc()
            message = f"{what} was {correction}; restored to the desired state"
            log.warning(
                "drift corrected", organization=org, namespace=namespace, kind=obj["kind"], change=correction
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
    def _owned_namespaces(
        self, body: dict[str, Any], org: str, rendered: dict[str, str]
    ) -> list[dict[str, str]]:
        """The record of the namespaces `org` created or adopted: those it renders now and that
        are ours (the inventory has them with our labels), and those recorded before that still
        exist with the same uid (a namespace deleted and re-created by someone else with copied
        labels is not the one we recorded). Kept in status.ownedNamespaces."""
        by_name: dict[str, str] = {}
        for entry in (body.get("status") or {}).get("ownedNamespaces") or []:
            live = self.cluster.inventory.get(("v1", "Namespace", "", entry.get("name", "")))
            ours = live is not None and lbl.owner_of(live["metadata"].get("labels")) == org
            if ours and live is not None and live["metadata"].get("uid") == entry.get("uid"):
                by_name[entry["name"]] = entry["uid"]
        for namespace in rendered.values():
            live = self.cluster.inventory.get(("v1", "Namespace", "", namespace))
            if live is not None and lbl.owner_of(live["metadata"].get("labels")) == org:
                by_name[namespace] = str(live["metadata"].get("uid") or "")
        current = set(rendered.values())
        # Bounded by the CRD (MAX_OWNED_NAMESPACES): rendered ones first; an old orphan left out
        # is only ever left alone, never deleted.
        names = sorted(by_name, key=lambda n: (n not in current, n))[:MAX_OWNED_NAMESPACES]
        return [{"name": n, "uid": by_name[n]} for n in sorted(names)]

    async def _prune(
        self,
        body: dict[str, Any],
        org: Organization,
        desired: set[ObjectKey],
        blocked: set[str],
        recorded: set[tuple[str, str]],
    ) -> None:
        owned = self._owned(org.name, recorded, besides=desired)
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

    def _owned(
        self, org: str, recorded: set[tuple[str, str]], besides: set[ObjectKey] | None = None
    ) -> list[dict[str, Any]]:
        """What we created for `org`: our labels AND a name we generate AND, for a namespace and
        what is in it, the namespace in our record (status.ownedNamespaces, by name and uid);
        without `besides`.

        Labels and names alone do not prove it (anyone can create `<org>-anything` and copy our
        labels onto it); whatever fails is never pruned, orphaned or deleted. Chosen by key, so
        only what is returned is unpacked from the inventory (a reconcile prunes little or
        nothing of ~40 objects).
        """
        inventory = self.cluster.inventory
        recorded_names = {name for name, _ in recorded}
        owned = []
        for key in inventory.owned_keys(org):
            api_version, kind, namespace, name = key
            if besides is not None and key in besides:
                continue
            inside_unrecorded = (
                kind != "Namespace"
                and bool(namespace)
                and res.kind_of(api_version, kind).in_tenant_namespace
                and namespace not in recorded_names
            )
            obj = inventory.get(key)
            if obj is None:
                continue
            unrecorded = kind == "Namespace" and (name, obj["metadata"].get("uid")) not in recorded
            if not is_managed_name(kind, name, org) or inside_unrecorded or unrecorded:
                log.warning(
                    "object carries our labels but is not one we created; left alone",
                    organization=org,
                    namespace=namespace or None,
                    kind=kind,
                    name=name,
                )
                continue
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
        owned = self._owned(name, _recorded((body.get("status") or {}).get("ownedNamespaces") or []))
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
        try:
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
        except ApiError as exc:
            # Already released (a reconcile queued before the DELETED event arrived, working
            # from the cached body): the Organization is gone, which is what was wanted.
            if exc.status == 404 and not exc.not_served:
                log.debug("already finalized", organization=name)
                return
            raise
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
    def _check_quota_in_force(
        self, objects: list[dict[str, Any]], blocked: set[str], outcome: Outcome
    ) -> None:
        """Not Ready while a quota is applied but not yet in force: the API server's quota
        admission limits only what a quota's status.hard names, and status.hard is
        kube-controller-manager's copy of spec.hard, made after our write. Until then a tenant's
        pods are admitted without limit, so "Ready" would claim a guardrail that is not there."""
        pending = []
        for obj in objects:
            if obj["kind"] != "ResourceQuota" or _namespace_of(obj) in blocked:
                continue
            live = self.cluster.inventory.get(object_key(obj))
            if live is not None and not _quota_in_force(live):
                pending.append(_describe(live))
        if not pending:
            return
        outcome.quota_pending = pending
        message = (
            f"{', '.join(pending)} not yet in force: kube-controller-manager has not copied its "
            "spec.hard into status.hard, and until it does the API server limits nothing there"
        )
        outcome.areas.setdefault("QuotaReady", (reasons.QUOTA_NOT_IN_FORCE, message))
        if outcome.ready_reason == reasons.RECONCILED and not outcome.progressing:
            outcome.progressing = True
            outcome.message = message

    def _hold_for_quota(self, body: dict[str, Any], outcome: Outcome) -> None:
        """No status write while the only thing between the Organization and Ready is a quota
        coming into force, for at most `quota_enforce_grace` seconds from when this process first
        saw it so: the quota's watch event brings the Organization back (reconcile/events.py),
        and a single write says Ready, with the quota usage kube-controller-manager computed in
        the same update. Onboarding then costs one status write, not "Progressing" then "Ready"
        then the usage (issue 17). Past the grace, status says QuotaNotInForce, once: each
        further quota coming into force is not a write of its own (kube-controller-manager
        writes at most 20 quota statuses a second by default, so a burst of onboarding keeps
        many Organizations waiting, each for several of its quotas), only Ready is."""
        name = body["metadata"]["name"]
        if not outcome.quota_pending:
            self.cluster.quota_pending_since.pop(name, None)
            return
        if outcome.failed_writes or outcome.ready_reason != reasons.RECONCILED:
            return  # something else to report: written now
        current = body.get("status") or {}
        reported = any(
            c.get("type") == "QuotaReady" and c.get("reason") == reasons.QUOTA_NOT_IN_FORCE
            for c in current.get("conditions") or []
        )
        if reported and current.get("observedGeneration") == body["metadata"].get("generation"):
            # Said already, for this generation; looked at again now and then in case the
            # quota's update was missed (a watch that broke).
            raise Requeue(self.cluster.quota_enforce_grace, "quota not yet in force (reported)")
        now = time.monotonic()
        since = self.cluster.quota_pending_since.setdefault(name, now)
        # The grace runs from when kube-controller-manager last brought a quota (anyone's) into
        # force, not from when this Organization started waiting: while it works through a
        # backlog (20 a second, and a burst of onboarding makes thousands), each Organization
        # waits its turn without a write; only a controller that stopped is reported. Never
        # longer than ten graces in all.
        grace = self.cluster.quota_enforce_grace
        stalled = now - max(since, self.cluster.quota_progress)
        left = min(grace - stalled, 10 * grace - (now - since))
        if left > 0:
            raise Requeue(left, "quota not yet in force")

    def _quota_usage(self, namespaces: dict[str, str]) -> list[dict[str, Any]]:
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
            wait = self.cluster.quota_status_due(name, time.monotonic(), _ready_since(current))
            if wait > 0:
                raise Requeue(wait, "quota usage refresh")
        patched = await self.client.merge_patch(
            res.ORGANIZATION, name, {"status": status}, subresource="status"
        )
        # Every status write carries the quota usage of the moment: the next write for usage
        # alone waits a full interval from this one.
        self.cluster.quota_status_written[name] = time.monotonic()
        self.cluster.remember_organization(patched)
        old_ready = next((c for c in (current or {}).get("conditions", []) if c.get("type") == "Ready"), None)
        new_ready = status["conditions"][0]
        if old_ready is None or (old_ready.get("status"), old_ready.get("reason")) != (
            new_ready["status"],
            new_ready["reason"],
        ):
            type_ = "Normal" if new_ready["status"] == "True" or outcome.progressing else "Warning"
            await self.event(body, type_, new_ready["reason"], new_ready["message"])
