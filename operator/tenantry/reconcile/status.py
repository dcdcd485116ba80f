"""Building the Organization's status: conditions a person can act on, namespaces, quota use.

Conditions follow the kstatus conventions (`Ready`, plus abnormal-true `Reconciling` and
`Stalled`): Flux's health checks read them as they are; Argo CD reads them through the Lua
health check in manifests/argocd/.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from tenantry.reconcile import reasons


@dataclass
class Outcome:
    """What one reconcile pass found and did; turned into status by `build_status`."""

    ready_reason: str = reasons.RECONCILED
    message: str = "all objects match the policy"
    stalled: bool = False
    progressing: bool = False
    namespaces: list[dict[str, str]] = field(default_factory=list)
    quota: list[dict[str, Any]] = field(default_factory=list)
    # Per environment, the guardrails that apply (render/guardrails.py, guardrail_status).
    guardrails: list[dict[str, Any]] = field(default_factory=list)
    # Per area (Namespaces, Quota, Network, RBAC): None = fine, else (reason, message).
    areas: dict[str, tuple[str, str] | None] = field(default_factory=dict)
    # Every grant of spec.access with its phase (render/access.py, grant_status).
    grants: list[dict[str, Any]] = field(default_factory=list)
    # The grants' Events of this pass (type, reason, message): posted once status records them.
    grant_transitions: list[tuple[str, str, str]] = field(default_factory=list)
    # Fingerprint of the desired object set, kept in status once all of it is applied.
    applied_objects: str | None = None
    # The namespaces this Organization created or adopted ({name, uid}); None: unchanged.
    owned_namespaces: list[dict[str, str]] | None = None
    # Writes that failed this pass ("Kind ns/name: error"), their errors, and the namespaces
    # whose own write failed: the reconcile failed and is retried with backoff.
    failed_writes: list[str] = field(default_factory=list)
    write_errors: list[Any] = field(default_factory=list)
    refused_writes: set[str] = field(default_factory=set)
    # Namespaces whose ResourceQuota is applied but not yet in force (status.hard is not yet
    # spec.hard): the Organization is not Ready until kube-controller-manager catches up.
    quota_pending: list[str] = field(default_factory=list)
    # status.quotaPool (reconcile/pool.py); None without a pool.
    quota_pool: dict[str, Any] | None = None

    def fail(self, reason: str, message: str, *, stalled: bool) -> None:
        """Record a failure; every one is kept in the message. The first decides the Ready
        reason, except that a stalled failure (it needs a person: an invalid spec, a namespace
        conflict) outranks transient ones (an apply that will be retried): a later transient
        failure never clears Stalled or hides the reason a person must act on."""
        if self.ready_reason == reasons.RECONCILED:
            self.ready_reason, self.message, self.stalled = reason, message, stalled
        elif stalled and not self.stalled:
            self.message = f"{message}; also {self.ready_reason}: {self.message}"
            self.ready_reason, self.stalled = reason, True
        elif message not in self.message:
            self.message = f"{self.message}; also {reason}: {message}"


AREAS = ("NamespacesReady", "QuotaReady", "NetworkReady", "RBACReady")
RETRY_NOTE = " (retried with backoff)"
MESSAGE_MAX = 32768


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int | None,
    current: dict[str, Any] | None,
    now: str,
) -> dict[str, Any]:
    """A condition whose lastTransitionTime moves only when its status does."""
    value = "True" if status else "False"
    if len(message) > MESSAGE_MAX:  # the CRD bounds it (metav1.Condition's limit)
        message = message[: MESSAGE_MAX - 1] + "…"
    old = next((c for c in (current or {}).get("conditions", []) if c.get("type") == type_), None)
    since = old.get("lastTransitionTime") if old and old.get("status") == value else now
    cond = {"type": type_, "status": value, "reason": reason, "message": message, "lastTransitionTime": since}
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def build_status(
    outcome: Outcome, generation: int | None, current: dict[str, Any] | None, now: str
) -> dict[str, Any]:
    ready = outcome.ready_reason == reasons.RECONCILED and not outcome.progressing
    # Not ready but nothing wrong: work is still under way.
    ready_reason = (
        reasons.PROGRESSING
        if outcome.ready_reason == reasons.RECONCILED and not ready
        else outcome.ready_reason
    )

    def cond(type_: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
        return condition(type_, ok, reason, message, generation, current, now)

    # Failed writes that are retried with backoff: still reconciling, not stalled (no person
    # needs to act unless they keep failing), and neither condition says "Reconciled".
    retrying = bool(outcome.failed_writes) and not outcome.stalled
    reconciling = outcome.progressing or retrying
    if retrying:
        reconciling_reason, reconciling_message = reasons.APPLY_FAILED, outcome.message + RETRY_NOTE
    elif outcome.progressing:
        reconciling_reason, reconciling_message = reasons.PROGRESSING, outcome.message
    else:
        reconciling_reason, reconciling_message = reasons.RECONCILED, ""
    if outcome.stalled:
        stalled_reason, stalled_message = outcome.ready_reason, outcome.message
    elif retrying:
        stalled_reason, stalled_message = reasons.RETRYING, "failed writes are retried with backoff"
    else:
        stalled_reason, stalled_message = reasons.RECONCILED, ""
    conditions = [
        cond("Ready", ready, ready_reason, outcome.message),
        cond("Reconciling", reconciling, reconciling_reason, reconciling_message),
        cond("Stalled", outcome.stalled, stalled_reason, stalled_message),
    ]
    for area in AREAS:
        problem = outcome.areas.get(area)
        if problem is None and outcome.stalled:
            problem = (outcome.ready_reason, "not applied: " + outcome.message)
        reason, message = problem if problem else (reasons.APPLIED, "")
        conditions.append(cond(area, problem is None, reason, message))
    status: dict[str, Any] = {
        "conditions": conditions,
        "namespaces": outcome.namespaces,
        "quota": outcome.quota,
        "guardrails": outcome.guardrails,
    }
    if outcome.grants or (current or {}).get("grants"):
        # Written as [] once the last grant is gone: a merge patch that leaves the key out
        # would keep the old list (and every reconcile would report the revocation again).
        status["grants"] = outcome.grants
    if outcome.quota_pool is not None or (current or {}).get("quotaPool"):
        # null once the pool is gone: a merge patch that leaves the key out would keep it.
        status["quotaPool"] = outcome.quota_pool
    # Kept from the last time everything was applied, so drift is recognised after a restart.
    applied = outcome.applied_objects if ready else (current or {}).get("appliedObjects")
    if applied:
        status["appliedObjects"] = applied
    owned = outcome.owned_namespaces
    if owned is None:
        owned = (current or {}).get("ownedNamespaces")
    if owned is not None:
        status["ownedNamespaces"] = owned
    if generation is not None:
        status["observedGeneration"] = generation
    return status


def same_status(a: dict[str, Any] | None, b: dict[str, Any]) -> bool:
    """Equal apart from anything Kopf keeps under status.kopf."""
    a = {k: v for k, v in (a or {}).items() if k != "kopf"}
    return a == {k: v for k, v in b.items() if k != "kopf"}
