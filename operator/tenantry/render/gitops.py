"""One Argo CD AppProject per Organization: its Applications may deploy only into the
organization's namespaces, create nothing cluster-scoped, and never touch the guardrails."""

from __future__ import annotations

from typing import Any

from tenantry.api.organization import Organization
from tenantry.api.policy import TenancyPolicy
from tenantry.render import labels as lbl

APP_PROJECT_API = "argoproj.io/v1alpha1"
# Kinds an organization's Applications may not manage even inside its namespaces.
GUARDED_KINDS = [
    {"group": "", "kind": "ResourceQuota"},
    {"group": "", "kind": "LimitRange"},
    {"group": "networking.k8s.io", "kind": "NetworkPolicy"},
    {"group": "rbac.authorization.k8s.io", "kind": "RoleBinding"},
    {"group": "rbac.authorization.k8s.io", "kind": "Role"},
]


def render_app_project(org: Organization, policy: TenancyPolicy) -> list[dict[str, Any]]:
    argocd = policy.spec.gitops.argocd
    if not argocd.enabled:
        return []
    return [
        {
            "apiVersion": APP_PROJECT_API,
            "kind": "AppProject",
            "metadata": {
                "name": org.name,
                "namespace": argocd.namespace,
                "labels": lbl.ownership_labels(org.name),
            },
            "spec": {
                "description": f"Organization {org.spec.display_name or org.name} (managed by Tenantry)",
                "sourceRepos": list(argocd.source_repos),
                "destinations": [
                    {"server": argocd.destination_server, "namespace": ns} for ns in org.namespaces().values()
                ],
                "clusterResourceWhitelist": [],
                "namespaceResourceBlacklist": GUARDED_KINDS,
            },
        }
    ]
