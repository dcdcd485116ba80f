"""Building the Organization's status: conditions a person can act on, namespaces, quota use.

Conditions follow the kstatus conventions (`Ready`, plus abnormal-true `Reconciling` and
`Stalled`): Flux's health checks read them as they are; Argo CD reads them through the Lua
health check in manifests/argocd/.
"""

from __future__ import annotations

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
    # Per area (Namespaces, Quota, Network, RBAC): None = fine, else (reason, message).
    areas: dict[str, tuple[str, str] | None] = field(default_factory=dict)
    # Fingerprint of the desired object set, kept in status once all of it is applied.
    applied_objects: str | None = None

    def fail(self, reason: str, message: str, *, stalled: bool) -> None:
        self.ready_reason, self.message, self.stalled = reason, message, stalled


AREAS = ("NamespacesReady", "QuotaReady", "NetworkReady", "RBACReady")


def _condition(
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int | None,
    previous: dict[Any, Any],
    now: str,
) -> dict[str, Any]:
    value = "True" if status else "False"
    old = previous.get(type_)
    since = old.get("lastTransitionTime") if old and old.get("status") == value else now
    cond = {"type": type_, "status": value, "reason": reason, "message": message, "lastTransitionTime": since}
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def build_status(
    outcome: Outcome, generation: int | None, current: dict[str, Any] | None, now: str
) -> dict[str, Any]:
    previous = {c.get("type"): c for c in (current or {}).get("conditions", []) if isinstance(c, dict)}
    ready = outcome.ready_reason == reasons.RECONCILED and not outcome.progressing
    conditions = [
        _condition(
            "Ready",
            ready,
            outcome.ready_reason
            if outcome.ready_reason != reasons.RECONCILED or ready
            else reasons.PROGRESSING,
            outcome.message,
            generation,
            previous,
            now,
        ),
        _condition(
            "Reconciling",
            outcome.progressing,
            reasons.PROGRESSING if outcome.progressing else reasons.RECONCILED,
            outcome.message if outcome.progressing else "",
            generation,
            previous,
            now,
        ),
        _condition(
            "Stalled",
            outcome.stalled,
            outcome.ready_reason if outcome.stalled else reasons.RECONCILED,
            outcome.message if outcome.stalled else "",
            generation,
            previous,
            now,
        ),
    ]
    for area in AREAS:
        problem = outcome.areas.get(area)
        if problem is None and outcome.stalled:
            problem = (outcome.ready_reason, "not applied: " + outcome.message)
        conditions.append(
            _condition(
                area,
                problem is None,
                problem[0] if problem else reasons.APPLIED,
                problem[1] if problem else "",
                generation,
                previous,
                now,
            )
        )
    status: dict[str, Any] = {
        "conditions": conditions,
        "namespaces": outcome.namespaces,
        "quota": outcome.quota,
    }
    # Kept from the last time everything was applied, so drift is recognised after a restart.
    applied = outcome.applied_objects if ready else (current or {}).get("appliedObjects")
    if applied:
        status["appliedObjects"] = applied
    if generation is not None:
        status["observedGeneration"] = generation
    return status


def same_status(a: dict[str, Any] | None, b: dict[str, Any]) -> bool:
    """Equal apart from anything Kopf keeps under status.kopf."""
    a = {k: v for k, v in (a or {}).items() if k != "kopf"}
    return a == {k: v for k, v in b.items() if k != "kopf"}
