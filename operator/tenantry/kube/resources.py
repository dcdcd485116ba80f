"""The kinds Tenantry reads and writes, and their REST paths."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tenantry import API_VERSION

Purpose = Literal["namespace", "guardrail", "access"]


@dataclass(frozen=True)
class Kind:
    """A kind Tenantry reads or writes. For the kinds an Organization renders to (CHILD_KINDS)
    the rest of the row says how the operator treats them: which status condition reports them,
    and what happens to them when they are no longer rendered or their Organization lets them go
    (reconcile/deletion.py). What counts as drift in them is kube/drift.py's to say."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool
    # How much of `status` the inventory keeps ("phase": only status.phase).
    status: Literal["none", "phase", "all"] = "none"
    # The Organization status condition that reports objects of this kind.
    area: str | None = None
    # namespace: the tenant namespace itself; guardrail: quota, limits, network policy (stay with
    # a retained namespace); access: what gives tenants access (goes when access is withdrawn).
    purpose: Purpose | None = None
    # Deleted when no longer rendered; False: only ever removed together with its namespace.
    pruned_alone: bool = True
    # Exists only where another product is installed (Argo CD); skipped while not served.
    optional: bool = False
    # Namespaced objects live in the tenant's namespaces, except those of another product
    # (an AppProject lives in Argo CD's namespace and belongs to the Organization as a whole).
    in_tenant_namespace: bool = True
    # When it is applied within one reconcile: every object of a wave after all of the waves
    # before it (and concurrently with the rest of its wave). 0: the Namespace, since the API
    # server refuses objects in a namespace that does not exist yet (NamespaceLifecycle); 1: the
    # guardrails ConfigMap, the admission policies' parameter, before anything it guards;
    # 3: bindings, after the roles they bind.
    wave: int = 2

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


NAMESPACE = Kind(
    "v1",
    "Namespace",
    "namespaces",
    False,
    status="phase",
    area="NamespacesReady",
    purpose="namespace",
    wave=0,
)
RESOURCE_QUOTA = Kind(
    "v1",
    "ResourceQuota",
    "resourcequotas",
    True,
    status="all",
    area="QuotaReady",
    purpose="guardrail",
    pruned_alone=False,
)
LIMIT_RANGE = Kind(
    "v1", "LimitRange", "limitranges", True, area="QuotaReady", purpose="guardrail", pruned_alone=False
)
# The guardrail admission policies' parameter (render/guardrails.py): stays with a retained
# namespace, so its guardrails keep holding there.
GUARDRAILS = Kind(
    "v1",
    "ConfigMap",
    "configmaps",
    True,
    area="QuotaReady",
    purpose="guardrail",
    pruned_alone=False,
    wave=1,
)
NETWORK_POLICY = Kind(
    "networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", True, area="NetworkReady", purpose="guardrail"
)
_RBAC = "rbac.authorization.k8s.io/v1"
ROLE_BINDING = Kind(
    _RBAC,
    "RoleBinding",
    "rolebindings",
    True,
    area="RBACReady",
    purpose="access",
    wave=3,
)
CLUSTER_ROLE = Kind(_RBAC, "ClusterRole", "clusterroles", False, area="RBACReady", purpose="access")
CLUSTER_ROLE_BINDING = Kind(
    _RBAC,
    "ClusterRoleBinding",
    "clusterrolebindings",
    False,
    area="RBACReady",
    purpose="access",
    wave=3,
)
APP_PROJECT = Kind(
    "argoproj.io/v1alpha1",
    "AppProject",
    "appprojects",
    True,
    area="RBACReady",
    purpose="access",
    optional=True,
    in_tenant_namespace=False,
)
CRD = Kind(
    "apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", namespaced=False
)
EVENT = Kind("v1", "Event", "events", namespaced=True)
LEASE = Kind("coordination.k8s.io/v1", "Lease", "leases", namespaced=True)
ORGANIZATION = Kind(API_VERSION, "Organization", "organizations", namespaced=False)
TENANCY_POLICY = Kind(API_VERSION, "TenancyPolicy", "tenancypolicies", namespaced=False)
ORGANIZATION_CRD = f"{ORGANIZATION.plural}.{API_VERSION.split('/')[0]}"
TENANCY_POLICY_CRD = f"{TENANCY_POLICY.plural}.{API_VERSION.split('/')[0]}"

# Everything an Organization renders to; the operator watches these (by our label) for drift.
CHILD_KINDS: tuple[Kind, ...] = (
    NAMESPACE,
    RESOURCE_QUOTA,
    LIMIT_RANGE,
    GUARDRAILS,
    NETWORK_POLICY,
    ROLE_BINDING,
    CLUSTER_ROLE,
    CLUSTER_ROLE_BINDING,
    APP_PROJECT,
)
_BY_KIND = {(k.api_version, k.kind): k for k in (*CHILD_KINDS, EVENT, ORGANIZATION, TENANCY_POLICY, CRD)}


def kind_of(api_version: str, kind: str) -> Kind:
    try:
        return _BY_KIND[(api_version, kind)]
    except KeyError:
        raise ValueError(f"Tenantry does not manage {api_version} {kind}") from None


def child_kind(api_version: str, kind: str) -> Kind | None:
    """The CHILD_KINDS row of a managed object's kind, or None for any other kind."""
    found = _BY_KIND.get((api_version, kind))
    return found if found is not None and found in CHILD_KINDS else None
