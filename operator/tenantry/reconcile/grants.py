"""The audit trail of elevated access: every grant requested, in force, expired or revoked is
an Event on the Organization and a structured log line with who, what and why.

Transitions are found by comparing the grants the Organization's status showed with the ones
this reconcile renders, so they survive a restart: a grant that expired while the operator was
down is reported as expired by the first reconcile after it, when its binding is pruned.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tenantry.observe import metrics
from tenantry.observe.logging import get_logger
from tenantry.reconcile import reasons

log = get_logger("tenantry.audit")


def _what(grant: dict[str, Any]) -> str:
    return (
        f"grant {grant['name']}: {grant['elevation']} in {grant['environment']} for {grant['subject']} "
        f"(ticket {grant['ticket']}, requested by {grant['requestedBy']}"
        + (f", approved by {grant['approvedBy']}" if grant.get("approvedBy") else "")
        + f", expires {grant['expires']})"
    )


def transitions(
    org: str, before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> Iterator[tuple[str, str, str]]:
    """(Event type, reason, message) for every change of a grant's phase, and log lines."""
    old = {g["name"]: g for g in before}
    new = {g["name"]: g for g in after}
    for name, grant in new.items():
        was = old.get(name, {}).get("phase")
        phase = grant["phase"]
        if phase == was:
            continue
        if phase == "Pending":
            reason, type_, why = reasons.GRANT_REQUESTED, "Normal", "requested, waiting for approval"
        elif phase == "Active":
            reason, type_, why = reasons.GRANT_ACTIVE, "Warning", "approved and in force: RoleBinding created"
        elif phase == "Expired" and was is not None:
            reason, type_, why = reasons.GRANT_EXPIRED, "Normal", "expired: RoleBinding removed"
            if was == "Active":
                metrics.GRANTS_EXPIRED.labels(environment=grant["environment"]).inc()
        else:
            continue
        yield type_, reason, _audit(org, reason, grant, why)
    for name, grant in old.items():
        if name not in new and grant.get("phase") in ("Active", "Scheduled", "Pending"):
            why = "revoked (removed from spec.access.grants)" + (
                ": RoleBinding removed" if grant.get("phase") == "Active" else ""
            )
            yield "Normal", reasons.GRANT_REVOKED, _audit(org, reasons.GRANT_REVOKED, grant, why)


def _audit(org: str, reason: str, grant: dict[str, Any], why: str) -> str:
    log.warning(
        "grant " + why.split(":", maxsplit=1)[0],
        organization=org,
        reason=reason,
        grant=grant["name"],
        elevation=grant["elevation"],
        environment=grant["environment"],
        subject=grant["subject"],
        requested_by=grant["requestedBy"],
        approved_by=grant.get("approvedBy"),
        ticket=grant["ticket"],
        expires=grant["expires"],
    )
    return f"{_what(grant)} {why}"
