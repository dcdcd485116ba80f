"""Cross-tenant exceptions need both ends (mutual consent), so check that both ends exist.

Namespaces deny ingress *and* egress by default. Traffic from beta to acme flows only when
acme lists beta in `network.allowFrom` and beta lists acme in `network.egress`. Each side
renders only its own half (so `render` of one Organization is complete and self-contained);
this module finds halves without a partner, for `tenantry validate` and for status.
"""

from __future__ import annotations

import datetime as dt

from tenantry.api.organization import Organization
from tenantry.api.problems import Problem


def _pairs_allowed(org: Organization, today: dt.date) -> set[tuple[str, str | None]]:
    """(source org, source env or None for all) that `org` admits."""
    pairs: set[tuple[str, str | None]] = set()
    for exception in org.spec.network.allow_from:
        if exception.active_on(today):
            if exception.environments is None:
                pairs.add((exception.organization, None))
            for env in exception.environments or []:
                pairs.add((exception.organization, env))
    return pairs


def unmatched_exceptions(orgs: list[Organization], today: dt.date) -> dict[str, list[Problem]]:
    """Per organization, the cross-tenant halves whose other half is missing (as warnings).

    Only organizations present in `orgs` are judged; a partner that is not in the set is
    unknown, not missing.
    """
    by_name = {o.name: o for o in orgs}
    out: dict[str, list[Problem]] = {}
    for org in orgs:
        for i, rule in enumerate(org.spec.network.egress):
            target = by_name.get(rule.organization or "")
            if target is None:
                continue
            admitted = _pairs_allowed(target, today)
            for env in org.spec.environments or []:  # resolved by the caller (with_environments)
                if (org.name, env) not in admitted and (org.name, None) not in admitted:
                    out.setdefault(org.name, []).append(
                        Problem(
                            f"spec.network.egress[{i}]",
                            f"{target.name!r} does not list {org.name!r} (environment {env!r}) in "
                            "spec.network.allowFrom, so this egress opens nothing until it does",
                            severity="warning",
                        )
                    )
        for i, exception in enumerate(org.spec.network.allow_from):
            source = by_name.get(exception.organization)
            if source is None or not exception.active_on(today):
                continue
            declared = any(rule.organization == org.name for rule in source.spec.network.egress)
            if not declared:
                out.setdefault(org.name, []).append(
                    Problem(
                        f"spec.network.allowFrom[{i}]",
                        f"{source.name!r} declares no egress to {org.name!r} in spec.network.egress, "
                        "so no traffic flows until it does (cross-tenant traffic needs both sides)",
                        severity="warning",
                    )
                )
    return out
