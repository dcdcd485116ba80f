"""The constitution's deletion rule, written once: what happens to a managed object when its
Organization lets it go (the Organization is deleted, or an environment is removed).

`deletionPolicy: Delete` deletes the namespace, and everything in it goes with it; what lives
outside namespaces (member ClusterRole/Binding, the Argo CD AppProject) is deleted.
`deletionPolicy: Retain` (the default) keeps the namespace and its data under its guardrails
(quota, limits, deny-all network policies) and withdraws tenant access: role bindings and the
member role are deleted, the namespace is labelled orphaned.

What the operator merely stops rendering while its namespace stays (a cross-tenant exception
removed, a RoleBinding no longer wanted) is deleted, except quotas and limits, which only ever
go with their namespace. Each kind's purpose comes from the kind table (kube/resources.py).
"""

from __future__ import annotations

from typing import Literal

from tenantry.kube.resources import Kind

Action = Literal["delete", "orphan", "keep"]


def when_released(kind: Kind, deletion_policy: str) -> Action:
    """An object whose namespace, or whose whole Organization, is let go."""
    if kind.purpose == "namespace":
        return "delete" if deletion_policy == "Delete" else "orphan"
    if kind.namespaced and kind.in_tenant_namespace:
        if deletion_policy == "Delete":
            return "keep"  # deleted with its namespace
        return "delete" if kind.purpose == "access" else "keep"
    return "delete"  # outside the tenant's namespaces: belongs to the Organization as a whole


def when_not_rendered(kind: Kind) -> Action:
    """An object the Organization no longer renders, while its namespace stays."""
    return "delete" if kind.pruned_alone else "keep"
