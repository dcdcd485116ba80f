"""The kinds Tenantry reads and writes, and their REST paths."""

from __future__ import annotations

from dataclasses import dataclass

from tenantry import API_VERSION


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    namespaced: bool

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if subresource:
            base += f"/{subresource}"
        return base


NAMESPACE = Kind("v1", "Namespace", "namespaces", namespaced=False)
RESOURCE_QUOTA = Kind("v1", "ResourceQuota", "resourcequotas", namespaced=True)
LIMIT_RANGE = Kind("v1", "LimitRange", "limitranges", namespaced=True)
NETWORK_POLICY = Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", namespaced=True)
ROLE_BINDING = Kind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", namespaced=True)
CLUSTER_ROLE = Kind("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", namespaced=False)
CLUSTER_ROLE_BINDING = Kind(
    "rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings", namespaced=False
)
APP_PROJECT = Kind("argoproj.io/v1alpha1", "AppProject", "appprojects", namespaced=True)
CRD = Kind(
    "apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", namespaced=False
)
EVENT = Kind("v1", "Event", "events", namespaced=True)
ORGANIZATION = Kind(API_VERSION, "Organization", "organizations", namespaced=False)
TENANCY_POLICY = Kind(API_VERSION, "TenancyPolicy", "tenancypolicies", namespaced=False)
ORGANIZATION_CRD = f"{ORGANIZATION.plural}.{API_VERSION.split('/')[0]}"
TENANCY_POLICY_CRD = f"{TENANCY_POLICY.plural}.{API_VERSION.split('/')[0]}"

# Everything an Organization renders to; the operator watches these (by our label) for drift.
CHILD_KINDS: tuple[Kind, ...] = (
    NAMESPACE,
    RESOURCE_QUOTA,
    LIMIT_RANGE,
    NETWORK_POLICY,
    ROLE_BINDING,
    CLUSTER_ROLE,
    CLUSTER_ROLE_BINDING,
    APP_PROJECT,
)
# Kinds that exist only where another product is installed (Argo CD); skipped when absent.
OPTIONAL_KINDS: tuple[Kind, ...] = (APP_PROJECT,)
_BY_KIND = {(k.api_version, k.kind): k for k in (*CHILD_KINDS, EVENT, ORGANIZATION, TENANCY_POLICY, CRD)}


def kind_of(api_version: str, kind: str) -> Kind:
    try:
        return _BY_KIND[(api_version, kind)]
    except KeyError:
        raise ValueError(f"Tenantry does not manage {api_version} {kind}") from None
