"""What the fake API server serves: resource declarations, as an API server's discovery lists them."""

from __future__ import annotations

from dataclasses import dataclass, field

VERBS = frozenset({"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"})


@dataclass(frozen=True)
class ResourceInfo:
    """One served resource. `key` is how tests name it: "v1/namespaces" (the core group) or
    "networking.k8s.io/v1/networkpolicies"."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    # Subresources with the API server's semantics: "status" (the main endpoint ignores status,
    # /status changes only status), "finalize" (namespaces).
    subresources: frozenset[str] = frozenset()
    # metadata.generation: set and increased on changes outside metadata and status. Only the
    # types whose registry strategy does it (custom resources, CRDs, NetworkPolicies, ...), not
    # e.g. ConfigMaps, Namespaces, ResourceQuotas or RoleBindings.
    generation: bool = False
    verbs: frozenset[str] = VERBS
    short_names: tuple[str, ...] = ()
    singular: str = field(default="")
    # Structs that server-side apply treats as one field (`+structType=atomic` in
    # k8s.io/api/*/types.go), by path; every other map and struct is granular, every list
    # Tenantry writes atomic (tests/fakeapi/fields.py).
    atomic: frozenset[tuple[str, ...]] = frozenset()

    @property
    def key(self) -> str:
        return f"{self.group}/{self.version}/{self.plural}" if self.group else f"{self.version}/{self.plural}"

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def qualified(self) -> str:
        """How the API server names the resource in messages: `namespaces`, `organizations.tenantry.dev`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


def _r(group: str, version: str, plural: str, kind: str, namespaced: bool, **more: object) -> ResourceInfo:
    return ResourceInfo(group, version, plural, kind, namespaced, singular=kind.lower(), **more)  # type: ignore[arg-type]


STATUS = frozenset({"status"})
_ROLE_REF = frozenset({("roleRef",)})  # rbac/v1 RoleRef

# Everything Tenantry reads or writes, and what its tests and bench create.
TENANTRY_RESOURCES: tuple[ResourceInfo, ...] = (
    _r(
        "",
        "v1",
        "namespaces",
        "Namespace",
        False,
        subresources=frozenset({"status", "finalize"}),
        short_names=("ns",),
    ),
    _r(
        "",
        "v1",
        "resourcequotas",
        "ResourceQuota",
        True,
        subresources=STATUS,
        short_names=("quota",),
        atomic=frozenset({("spec", "scopeSelector")}),  # core/v1 ScopeSelector
    ),
    _r("", "v1", "limitranges", "LimitRange", True, short_names=("limits",)),
    _r("", "v1", "configmaps", "ConfigMap", True, short_names=("cm",)),
    _r("", "v1", "events", "Event", True, short_names=("ev",)),
    _r("events.k8s.io", "v1", "events", "Event", True),
    _r(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "NetworkPolicy",
        True,
        generation=True,
        short_names=("netpol",),
        atomic=frozenset({("spec", "podSelector")}),  # meta/v1 LabelSelector
    ),
    _r("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True, atomic=_ROLE_REF),
    _r(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        False,
        atomic=_ROLE_REF,
    ),
    _r("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    _r("coordination.k8s.io", "v1", "leases", "Lease", True),
    _r(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        subresources=STATUS,
        generation=True,
        short_names=("crd", "crds"),
    ),
    _r(
        "tenantry.dev",
        "v1alpha1",
        "organizations",
        "Organization",
        False,
        subresources=STATUS,
        generation=True,
        short_names=("org",),
    ),
    _r(
        "tenantry.dev",
        "v1alpha1",
        "tenancypolicies",
        "TenancyPolicy",
        False,
        subresources=STATUS,
        generation=True,
    ),
)

# Pods, for quota admission (tests/fakeapi/quota.py); the operator never reads or writes them.
PODS = _r("", "v1", "pods", "Pod", True, subresources=STATUS, short_names=("po",))

# Argo CD's AppProject CRD (no status subresource): served only once a test installs Argo CD.
APPPROJECTS = _r("argoproj.io", "v1alpha1", "appprojects", "AppProject", True, generation=True)
