"""RBAC: four tenant ClusterRoles shipped once, bound per namespace by RoleBindings.

Binding shared ClusterRoles (instead of creating Roles per namespace) lets the operator be
granted `bind` on exactly these role names rather than holding every permission it hands out.
No tenant role can write ResourceQuotas, LimitRanges or anything cluster-scoped. Organization
Admins write Roles, RoleBindings and NetworkPolicies (`tenantry:organization-admin-self-service`,
bound where the policy's `rbac.organizationAdminSelfService` is on, the default): the admission
guardrails refuse every one that would reach outside the Organization, and RBAC's escalation
check keeps a Role within what its author holds (docs/admission.md).
No tenant role writes Endpoints: the EndpointSlice
mirroring controller copies hand-written Endpoints into EndpointSlices, so a selectorless Service
with Endpoints naming another tenant's pod IP would make the shared ingress controller (admitted
into every tenant namespace) connect to that pod (CVE-2021-25740; Kubernetes took Endpoints write
out of its own admin and edit roles in 1.22 for it). Services that need manual endpoints are the
platform admins' to write.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from tenantry import GROUP
from tenantry.api.common import Subject
from tenantry.api.organization import Organization
from tenantry.api.policy import TenancyPolicy
from tenantry.render import labels as lbl
from tenantry.render.access import (
    ELEVATION_ROLES,
    GRANT_APPROVED_BY,
    GRANT_EXPIRES,
    GRANT_PREFIX,
    GRANT_REASON,
    GRANT_REQUESTED_BY,
    GRANT_TICKET,
    mfa_of,
    mfa_subject,
)

RBAC_API = "rbac.authorization.k8s.io/v1"

ORGANIZATION_ADMIN = "tenantry:organization-admin"
ORGANIZATION_ADMIN_SELF_SERVICE = "tenantry:organization-admin-self-service"
DEVELOPER = "tenantry:developer"
DEVELOPER_EXEC = "tenantry:developer-exec"
VIEWER = "tenantry:viewer"
PLATFORM_ADMIN = "tenantry:platform-admin"
# Per-organization ClusterRole that lets members `get` their own namespaces and Organization.
MEMBER_PREFIX = "tenantry:member:"
PLATFORM_ADMINS_BINDING_PREFIX = "tenantry:platform-admins:"

# The only roles a tenant RoleBinding of ours may reference.
TENANT_ROLES: frozenset[str] = frozenset(
    {ORGANIZATION_ADMIN, ORGANIZATION_ADMIN_SELF_SERVICE, DEVELOPER, DEVELOPER_EXEC, VIEWER}
)
SHARED_ROLES: tuple[str, ...] = (
    ORGANIZATION_ADMIN,
    ORGANIZATION_ADMIN_SELF_SERVICE,
    DEVELOPER,
    DEVELOPER_EXEC,
    VIEWER,
    PLATFORM_ADMIN,
)
# Roles no binding we render may ever reference, whatever the input.
FORBIDDEN_ROLES: frozenset[str] = frozenset({"cluster-admin", "admin", "edit", "system:masters"})

READ = ["get", "list", "watch"]
WRITE = [*READ, "create", "update", "patch", "delete", "deletecollection"]

# What tenants run. Kept in one table so the three tenant roles cannot drift apart.
WORKLOADS: list[tuple[str, list[str]]] = [
    ("", ["pods", "services", "configmaps", "persistentvolumeclaims", "serviceaccounts"]),
    ("apps", ["deployments", "statefulsets", "daemonsets", "replicasets"]),
    ("batch", ["jobs", "cronjobs"]),
    ("autoscaling", ["horizontalpodautoscalers"]),
    ("policy", ["poddisruptionbudgets"]),
    ("networking.k8s.io", ["ingresses"]),
    ("coordination.k8s.io", ["leases"]),
]
SCALE = ("apps", ["deployments/scale", "statefulsets/scale", "replicasets/scale"])
# Read-only for every tenant role: the guardrails themselves and what explains them.
GUARDRAILS: list[tuple[str, list[str]]] = [
    ("", ["resourcequotas", "limitranges", "events"]),
    ("networking.k8s.io", ["networkpolicies"]),
    ("events.k8s.io", ["events"]),
    # Where Services route: read-only, written by Kubernetes' controllers (and, for Endpoints of
    # selectorless Services, by platform admins): see the module docstring.
    ("", ["endpoints"]),
    ("discovery.k8s.io", ["endpointslices"]),
]
INTERACTIVE = ["pods/exec", "pods/attach", "pods/portforward"]
# Organization Admin self-service. Explicit verbs: `*` would include `escalate` and `bind`, which
# would let an admin write a Role beyond what it holds, or bind roles it does not hold.
SELF_SERVICE: list[tuple[str, list[str]]] = [
    ("rbac.authorization.k8s.io", ["roles", "rolebindings"]),
    ("networking.k8s.io", ["networkpolicies"]),
]


def bindable_cluster_roles(developer_exec: bool) -> tuple[str, ...]:
    """The ClusterRoles an Organization Admin's own RoleBindings may reference in an environment:
    the tenant roles, `developer-exec` only where the policy lets developers exec, never the
    self-service role (who may write RBAC stays in the Organization, in Git)."""
    roles = [ORGANIZATION_ADMIN, DEVELOPER, VIEWER]
    if developer_exec:
        roles.append(DEVELOPER_EXEC)
    return tuple(sorted(roles))


def _rule(
    group: str, resources: list[str], verbs: list[str], names: list[str] | None = None
) -> dict[str, Any]:
    rule: dict[str, Any] = {"apiGroups": [group], "resources": sorted(resources), "verbs": list(verbs)}
    if names:
        rule["resourceNames"] = sorted(names)
    return rule


def _cluster_role(
    name: str, rules: list[dict[str, Any]], labels: dict[str, str], description: str
) -> dict[str, Any]:
    return {
        "apiVersion": RBAC_API,
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": labels, "annotations": {f"{GROUP}/description": description}},
        "rules": rules,
    }


def _shared_labels() -> dict[str, str]:
    return {lbl.APP_MANAGED_BY: lbl.APP_MANAGED_BY_VALUE}


def render_shared_cluster_roles() -> list[dict[str, Any]]:
    """The five roles installed once per cluster (also shipped in manifests/)."""
    guard_read = [_rule(g, r, READ) for g, r in GUARDRAILS]
    bindings_read = _rule("rbac.authorization.k8s.io", ["roles", "rolebindings"], READ)
    logs = _rule("", ["pods/log"], ["get", "list"])
    admin = [
        *[_rule(g, r, WRITE) for g, r in WORKLOADS],
        _rule("", ["secrets"], WRITE),
        _rule(SCALE[0], SCALE[1], ["get", "update", "patch"]),
        _rule("", INTERACTIVE, ["get", "create"]),
        _rule("", ["pods/eviction"], ["create"]),
        logs,
        *guard_read,
        bindings_read,
    ]
    developer = [
        *[_rule(g, r, WRITE) for g, r in WORKLOADS],
        _rule("", ["secrets"], WRITE),
        _rule(SCALE[0], SCALE[1], ["get", "update", "patch"]),
        logs,
        *guard_read,
    ]
    viewer = [
        *[_rule(g, r, READ) for g, r in WORKLOADS],
        _rule(SCALE[0], SCALE[1], ["get"]),
        logs,
        *guard_read,
        bindings_read,
    ]
    platform = [
        _rule(GROUP, ["organizations", "tenancypolicies"], WRITE),
        _rule(GROUP, ["organizations/status", "tenancypolicies/status"], READ),
        _rule("", ["namespaces", "nodes"], READ),
        *[_rule(g, r, WRITE) for g, r in WORKLOADS],
        _rule("", ["secrets"], WRITE),
        _rule("", ["endpoints"], WRITE),
        _rule("", ["resourcequotas", "limitranges"], WRITE),
        _rule("networking.k8s.io", ["networkpolicies"], WRITE),
        _rule("rbac.authorization.k8s.io", ["roles", "rolebindings"], READ),
        _rule("", INTERACTIVE, ["get", "create"]),
        logs,
        _rule("", ["events"], READ),
        _rule("events.k8s.io", ["events"], READ),
    ]
    labels = _shared_labels()
    return [
        _cluster_role(
            ORGANIZATION_ADMIN,
            admin,
            labels,
            "Full control of workloads in an organization's namespaces; read-only on its quotas, "
            "limits, network policies and role bindings (written through "
            "tenantry:organization-admin-self-service where the policy allows); nothing cluster-scoped.",
        ),
        _cluster_role(
            ORGANIZATION_ADMIN_SELF_SERVICE,
            [_rule(g, r, WRITE) for g, r in SELF_SERVICE],
            labels,
            "Organization Admin self-service: write Roles, RoleBindings and NetworkPolicies in an "
            "organization's namespaces, inside the tenantry-guardrail-rbac and "
            "tenantry-guardrail-network-policies admission policies; bound only where the policy's "
            "rbac.organizationAdminSelfService is true.",
        ),
        _cluster_role(DEVELOPER, developer, labels, "Deploy and read logs in an organization's namespaces."),
        _cluster_role(
            DEVELOPER_EXEC,
            [_rule("", INTERACTIVE, ["get", "create"])],
            labels,
            "exec/attach/port-forward; bound to developers only where the policy allows it.",
        ),
        _cluster_role(
            VIEWER,
            viewer,
            labels,
            "Read-only on workloads, logs, quotas and policies; no secrets.",
        ),
        _cluster_role(
            PLATFORM_ADMIN,
            platform,
            labels,
            "The platform team: manage Organizations and TenancyPolicies, and operate tenant namespaces.",
        ),
    ]


def _subjects(subjects: Sequence[Subject]) -> list[dict[str, str]]:
    seen: dict[tuple[str, str, str | None], dict[str, str]] = {}
    for subject in subjects:
        seen.setdefault((subject.kind, subject.name, subject.namespace), subject.as_rbac())
    return list(seen.values())


def _role_binding(
    org: str, env: str, namespace: str, name: str, role: str, subjects: list[Subject]
) -> dict[str, Any]:
    if role not in TENANT_ROLES:  # the renderer's own invariant, guarded against future edits
        raise ValueError(
            f"refusing to bind {role!r}: tenant bindings may only reference {sorted(TENANT_ROLES)}"
        )
    return {
        "apiVersion": RBAC_API,
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace, "labels": lbl.ownership_labels(org, env)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": _subjects(subjects),
    }


def render_role_bindings(
    org: Organization, policy: TenancyPolicy, env: str, namespace: str
) -> list[dict[str, Any]]:
    members = org.spec.members
    env_policy = policy.spec.environment(env)
    assert env_policy is not None
    # Where MFA is required, each member group is bound in its MFA form (Users and
    # ServiceAccounts are refused there by the checks): a session without MFA gets nothing.
    mfa = mfa_of(policy, env)
    self_service = policy.spec.rbac.organization_admin_self_service
    # A member that lists its environments is bound in those only (a CI ServiceAccount kept out
    # of MFA environments).
    admins, developers, viewers = (
        [m for m in role if m.bound_in(env)] for role in (members.admins, members.developers, members.viewers)
    )
    wanted = [
        ("tenantry:organization-admins", ORGANIZATION_ADMIN, admins),
        (
            "tenantry:organization-admins-self-service",
            ORGANIZATION_ADMIN_SELF_SERVICE,
            admins if self_service else [],
        ),
        ("tenantry:developers", DEVELOPER, developers),
        ("tenantry:developers-exec", DEVELOPER_EXEC, developers if env_policy.developer_exec else []),
        ("tenantry:viewers", VIEWER, viewers),
    ]
    return [
        _role_binding(org.name, env, namespace, name, role, [mfa_subject(s, mfa) for s in subjects])
        for name, role, subjects in wanted
        if subjects
    ]


def render_grant_bindings(
    org: Organization, policy: TenancyPolicy, env: str, namespace: str, now: dt.datetime
) -> list[dict[str, Any]]:
    """The RoleBindings of the grants active in `env` at `now`."""
    mfa = mfa_of(policy, env)
    out = []
    for grant in org.spec.access.grants:
        if grant.environment != env or grant.phase(now) != "Active":
            continue
        binding = _role_binding(
            org.name,
            env,
            namespace,
            f"{GRANT_PREFIX}{grant.name}",
            ELEVATION_ROLES[grant.elevation],
            [mfa_subject(grant.subject, mfa)],
        )
        assert grant.approval is not None
        binding["metadata"]["annotations"] = {
            GRANT_REASON: grant.reason,
            GRANT_TICKET: grant.ticket,
            GRANT_REQUESTED_BY: grant.requested_by,
            GRANT_APPROVED_BY: grant.approval.approved_by,
            GRANT_EXPIRES: grant.expires,
        }
        out.append(binding)
    return out


def render_member_access(org: Organization) -> list[dict[str, Any]]:
    """Let every member `get` (not list) its own namespaces and Organization.

    Namespaces are cluster-scoped, so a RoleBinding cannot grant this. `list` cannot be
    narrowed by name in RBAC, so members see their namespaces by name (`kubectl get ns
    acme-prod`) and the full list in `kubectl get organization acme -o yaml` (status).
    """
    members = [*org.spec.members.admins, *org.spec.members.developers, *org.spec.members.viewers]
    if not members:
        return []
    name = f"{MEMBER_PREFIX}{org.name}"
    labels = lbl.ownership_labels(org.name)
    role = _cluster_role(
        name,
        [
            _rule("", ["namespaces"], ["get"], list(org.namespaces().values())),
            _rule(GROUP, ["organizations"], ["get"], [org.name]),
        ],
        labels,
        f"Members of organization {org.name} may read their namespaces and Organization.",
    )
    binding = {
        "apiVersion": RBAC_API,
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": labels},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": _subjects(members),
    }
    return [role, binding]


def render_platform_admins(policy: TenancyPolicy) -> list[dict[str, Any]]:
    """The policy's platform admins, bound cluster-wide to the platform-admin role."""
    if not policy.spec.rbac.platform_admins:
        return []
    return [
        {
            "apiVersion": RBAC_API,
            "kind": "ClusterRoleBinding",
            "metadata": {
                "name": f"{PLATFORM_ADMINS_BINDING_PREFIX}{policy.name}",
                "labels": {**_shared_labels(), f"{GROUP}/policy": policy.name},
            },
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": PLATFORM_ADMIN,
            },
            "subjects": _subjects(policy.spec.rbac.platform_admins),
        }
    ]
