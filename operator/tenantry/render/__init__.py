"""The pure core: (Organization, TenancyPolicy, today) -> the exact Kubernetes objects.

No I/O, no clock, no randomness: the same inputs give the same objects in the same order, so
`tenantry render` output is stable for GitOps diffs and the operator can compare live state
against it field by field. `today` is an input because cross-tenant exceptions expire, `now`
because grants of elevated access do (to the second).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from tenantry.api.organization import Organization
from tenantry.api.policy import TenancyPolicy
from tenantry.api.problems import InvalidObjectError, Problem
from tenantry.render.access import grant_status, next_change
from tenantry.render.checks import check_organization, defaulted_note, errors_only, with_policy_environments
from tenantry.render.gitops import render_app_project
from tenantry.render.guardrails import GUARDRAILS_NAME, guardrail_status, render_guardrails
from tenantry.render.namespaces import render_namespace
from tenantry.render.network import render_network_policies
from tenantry.render.pool import bounds_of, effective_pool, from_units, initial_split, pool_members
from tenantry.render.quota import LIMIT_RANGE_NAME, QUOTA_NAME, render_limit_range, render_quota
from tenantry.render.rbac import (
    MEMBER_PREFIX,
    render_grant_bindings,
    render_member_access,
    render_platform_admins,
    render_role_bindings,
    render_shared_cluster_roles,
)

ObjectKey = tuple[str, str, str, str]


def object_key(obj: dict[str, Any]) -> ObjectKey:
    """(apiVersion, kind, namespace or "", name): identifies one object across renders."""
    meta = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])


@dataclass(frozen=True)
class Rendering:
    """What one Organization becomes. `warnings` were rendered around, not refused (and notes:
    how it was read, such as environments taken from the policy)."""

    organization: str
    objects: list[dict[str, Any]]
    namespaces: dict[str, str]
    warnings: list[Problem] = field(default_factory=list)
    # Per environment, the guardrails that apply (status.guardrails; `tenantry render` shows the
    # ConfigMaps they come from).
    guardrails: list[dict[str, Any]] = field(default_factory=list)
    # status.grants: every grant of spec.access with its phase at `now`.
    grants: list[dict[str, Any]] = field(default_factory=list)
    # When the rendering changes on its own next (a grant starting or expiring), or None.
    next_change: dt.datetime | None = None


def start_of(today: dt.date) -> dt.datetime:
    """`now` for callers that only know the day: its first second, UTC."""
    return dt.datetime.combine(today, dt.time.min, tzinfo=dt.UTC)


def render_organization(
    org: Organization, policy: TenancyPolicy, today: dt.date, now: dt.datetime | None = None
) -> Rendering:
    """Render every object of `org`; raise `InvalidObjectError` listing all errors if any.

    An Organization without `spec.environments` gets every environment of its policy. `now`
    decides which grants are in force (default: the start of `today`, UTC).
    """
    now = now if now is not None else start_of(today)
    problems = check_organization(org, policy, today, now)
    errors = errors_only(problems)
    if errors:
        raise InvalidObjectError(errors)
    note = defaulted_note(org, policy)
    org = with_policy_environments(org, policy)
    objects: list[dict[str, Any]] = []
    namespaces = org.namespaces()
    split = _pool_split(org, policy, namespaces)
    for env, namespace in namespaces.items():
        objects.append(render_namespace(org, policy, env, namespace))
        # Right after its namespace: the guardrail admission policies refuse new pods, claims,
        # ingresses... in a tenant namespace until its parameter exists (docs/admission.md).
        objects.append(render_guardrails(org, policy, env, namespace, today))
        objects.append(render_quota(org, policy, env, namespace, split.get(namespace)))
        objects.append(render_limit_range(org, policy, env, namespace))
        objects += render_network_policies(org, policy, env, namespace, today)
        objects += render_role_bindings(org, policy, env, namespace)
        objects += render_grant_bindings(org, policy, env, namespace, now)
    objects += render_member_access(org)
    objects += render_app_project(org, policy)
    return Rendering(
        organization=org.name,
        objects=objects,
        namespaces=namespaces,
        warnings=([note] if note else []) + [p for p in problems if p.severity == "warning"],
        guardrails=guardrail_status(org, policy, today),
        grants=grant_status(org, policy, now),
        next_change=next_change(org, now),
    )


def _pool_split(
    org: Organization, policy: TenancyPolicy, namespaces: dict[str, str]
) -> dict[str, dict[str, str]]:
    """Per pooled namespace, the pool's initial split (what a new quota starts from; the operator
    then moves it where it is used, render/pool.py). Empty without a pool."""
    pool = effective_pool(org, policy)
    if pool is None:
        return {}
    members = {env: namespaces[env] for env in pool_members(org, policy)}
    split = initial_split(bounds_of(pool, members), list(members.values()))
    return {ns: {r: from_units(r, amount) for r, amount in amounts.items()} for ns, amounts in split.items()}


def is_managed_name(kind: str, name: str, org: str) -> bool:
    """Could the renderer have produced an object of this kind and name for `org`?

    Labels alone do not prove we created something (anyone can copy labels onto an object);
    the operator prunes only objects that also carry one of the names we generate.
    """
    if kind == "Namespace":
        return name.startswith(f"{org}-")
    if kind == "ResourceQuota":
        return name == QUOTA_NAME
    if kind == "LimitRange":
        return name == LIMIT_RANGE_NAME
    if kind == "ConfigMap":
        return name == GUARDRAILS_NAME
    if kind == "NetworkPolicy":
        return name.startswith("tenantry-")
    if kind == "RoleBinding":  # the member bindings, and grants' `tenantry:grant:<name>`
        return name.startswith("tenantry:")
    if kind in ("ClusterRole", "ClusterRoleBinding"):
        return name == f"{MEMBER_PREFIX}{org}"
    if kind == "AppProject":
        return name == org
    return False


def render_policy_objects(policy: TenancyPolicy) -> list[dict[str, Any]]:
    """Cluster-wide objects a policy implies: the platform-admin binding."""
    return render_platform_admins(policy)


__all__ = [
    "ObjectKey",
    "Rendering",
    "is_managed_name",
    "object_key",
    "render_organization",
    "render_policy_objects",
    "render_shared_cluster_roles",
    "start_of",
]
