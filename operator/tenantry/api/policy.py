"""The TenancyPolicy custom resource: the constitution's `[X]` placeholders, filled in.

`TenancyPolicySpec()` with no arguments *is* the embedded default policy; it is what
`examples/policy-default.yaml` spells out (a test keeps the two equal). Each default says in
its description where the value comes from.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from tenantry import API_VERSION
from tenantry.api.access import AccessPolicy, MFAPolicy
from tenantry.api.base import (
    MAX_CIDRS,
    MAX_ENVIRONMENTS,
    MAX_LABELS,
    MAX_NAMES,
    MAX_PORTS,
    MAX_SUBJECTS,
    URL_MAX,
    ContainerResources,
    DNSLabel,
    LabelKey,
    LabelValue,
    Model,
    ResourceList,
    cel,
    duplicates,
)
from tenantry.api.common import Port, Subject
from tenantry.api.guardrails import DEFAULT_HOSTS, Guardrails
from tenantry.api.organization import ALWAYS_RESERVED_NAMES, ALWAYS_RESERVED_PREFIXES, CIDR, ObjectMeta
from tenantry.api.pool import QuotaPool
from tenantry.api.quantity import parse_quantity

PodSecurityLevel = Literal["privileged", "baseline", "restricted"]

# Every private range: RFC 1918, RFC 6598 (shared address space, used by some CNIs) and IPv6
# unique local addresses. Kubernetes' own default Service range (10.96.0.0/12 in kubeadm) is
# inside 10.0.0.0/8.
DEFAULT_POD_CIDRS: tuple[str, ...] = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
)
DEFAULT_SERVICE_CIDRS: tuple[str, ...] = ("10.96.0.0/12",)


class LimitRangeDefaults(Model):
    """Container defaults so that pods without requests/limits still fit under the quota."""

    # ephemeral-storage too: a container that declares none would count 0 against the quota's
    # ephemeral-storage limits (Kubernetes does not require it to declare one).
    default: ContainerResources = Field(
        default_factory=lambda: {"cpu": "500m", "memory": "512Mi", "ephemeral-storage": "1Gi"}
    )
    default_request: ContainerResources = Field(
        default_factory=lambda: {"cpu": "100m", "memory": "128Mi", "ephemeral-storage": "128Mi"}
    )
    max: ContainerResources | None = None

    @model_validator(mode="after")
    def _check(self) -> LimitRangeDefaults:
        for resource, request in self.default_request.items():
            limit = self.default.get(resource)
            if limit is not None and parse_quantity(request) > parse_quantity(limit):
                raise ValueError(
                    f"defaultRequest.{resource} ({request}) exceeds default.{resource} ({limit})"
                )
        for resource, ceiling in (self.max or {}).items():
            limit = self.default.get(resource)
            if limit is not None and parse_quantity(limit) > parse_quantity(ceiling):
                raise ValueError(f"default.{resource} ({limit}) exceeds max.{resource} ({ceiling})")
        return self


def _env(name: str, scale: int, pod_security: PodSecurityLevel, exec_: bool) -> EnvironmentPolicy:
    """Production gets the full default; staging half; dev a quarter (see examples/policy-default.yaml).

    Everything a tenant can exhaust is capped: compute, ephemeral and persistent storage, object
    counts (each Secret or ConfigMap may hold 1 MiB of etcd), and devices (GPUs and huge pages: 0
    unless an environment or an approved Organization says otherwise)."""
    return EnvironmentPolicy(
        name=name,
        quota={
            "requests.cpu": str(8 // scale),
            "limits.cpu": str(16 // scale),
            "requests.memory": f"{16 // scale}Gi",
            "limits.memory": f"{32 // scale}Gi",
            "requests.ephemeral-storage": f"{48 // scale}Gi",
            "limits.ephemeral-storage": f"{200 // scale}Gi",
            "requests.storage": f"{500 // scale}Gi",
            "persistentvolumeclaims": str(20 // scale),
            "pods": str(200 // scale),
            "services": str(48 // scale),
            "services.loadbalancers": "0",
            "services.nodeports": "0",
            "configmaps": str(100 // scale),
            "secrets": str(100 // scale),
            "replicationcontrollers": str(20 // scale),
            "resourcequotas": str(8 // scale),
            "requests.hugepages-1Gi": "0",
            "requests.hugepages-2Mi": "0",
            "requests.nvidia.com/gpu": "0",
        },
        pod_security=pod_security,
        developer_exec=exec_,
    )


class EnvironmentPolicy(Model):
    """What every `<org>-<env>` namespace of one environment gets by default."""

    name: DNSLabel
    quota: ResourceList
    limit_range: LimitRangeDefaults = Field(default_factory=LimitRangeDefaults)
    pod_security: PodSecurityLevel = "restricted"
    developer_exec: bool = False
    # Replaces spec.guardrails field by field for this environment (a field left out: the policy's).
    guardrails: Guardrails | None = None
    # MFA for this environment (api/access.py); left out: not required.
    mfa: MFAPolicy | None = None


class ClusterDNS(Model):
    """Where the cluster DNS pods run (kube-dns/CoreDNS in kube-system on most distributions)."""

    namespace: DNSLabel = "kube-system"
    pod_selector: dict[LabelKey, LabelValue] = Field(
        default_factory=lambda: {"k8s-app": "kube-dns"}, max_length=MAX_LABELS
    )
    ports: list[Port] = Field(
        default_factory=lambda: [Port(port=53, protocol="UDP"), Port(port=53, protocol="TCP")],
        min_length=1,
        max_length=MAX_PORTS,
    )


class IngressController(Model):
    namespace: DNSLabel
    pod_selector: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=MAX_LABELS)


class NetworkDefaults(Model):
    dns: ClusterDNS = Field(default_factory=ClusterDNS)
    ingress_controllers: list[IngressController] = Field(
        default_factory=lambda: [IngressController(namespace="ingress-nginx")], max_length=MAX_NAMES
    )
    allow_same_namespace: bool = True
    # Cloud metadata endpoints hand out node credentials; an org's egress allow-list never
    # reaches them, even when it allows 0.0.0.0/0 (they are carved out with `except`).
    denied_egress_cidrs: list[CIDR] = Field(
        default_factory=lambda: ["169.254.169.254/32"], max_length=MAX_CIDRS
    )
    # Where the cluster's pods and Services live. An ipBlock in a NetworkPolicy an Organization
    # Admin writes may not cover them (it would reach other tenants' pods past their namespaces'
    # isolation), unless the Organization lists an ipBlockException. The defaults are every
    # private range (RFC 1918, RFC 6598 shared space, IPv6 unique local), where pod and service
    # networks almost always are: narrow them to the cluster's --cluster-cidr and
    # --service-cluster-ip-range to let tenants name the rest of the private space.
    pod_cidrs: list[CIDR] = Field(
        default_factory=lambda: list(DEFAULT_POD_CIDRS),
        max_length=MAX_CIDRS,
        description="The cluster's pod ranges: tenant NetworkPolicy ipBlocks may not cover them.",
    )
    service_cidrs: list[CIDR] = Field(
        default_factory=lambda: list(DEFAULT_SERVICE_CIDRS),
        max_length=MAX_CIDRS,
        description="The cluster's Service ranges: tenant NetworkPolicy ipBlocks may not cover them.",
    )


class RBACDefaults(Model):
    platform_admins: list[Subject] = Field(default_factory=list, max_length=MAX_SUBJECTS)
    # Subjects whose `quotaApproval` the admission policy accepts (platform admins count too).
    quota_approvers: list[Subject] = Field(default_factory=list, max_length=MAX_SUBJECTS)
    # The constitution's "Organization Admin: full control within org namespaces": admins write
    # Roles, RoleBindings and NetworkPolicies there, inside the guardrails the API server keeps
    # (manifests/admission/guardrails/rbac.yaml, network-policies.yaml). False: read-only.
    organization_admin_self_service: bool = Field(
        default=True,
        description="Organization Admins may create Roles, RoleBindings and NetworkPolicies in "
        "their namespaces (guarded by admission policies); false makes them read-only.",
    )


class ReservedNamespaces(Model):
    """Namespaces no Organization may produce. `kube-`, `openshift-` and `default` always are."""

    names: list[DNSLabel] = Field(
        default_factory=lambda: ["default", "tenantry-system"], max_length=MAX_NAMES
    )
    prefixes: list[Annotated[str, Field(min_length=1, max_length=62, pattern=r"^[a-z0-9][-a-z0-9]*$")]] = (
        Field(default_factory=lambda: ["kube-", "openshift-", "tenantry-"], max_length=MAX_NAMES)
    )

    def all_names(self) -> tuple[str, ...]:
        return tuple(sorted({*ALWAYS_RESERVED_NAMES, *self.names}))

    def all_prefixes(self) -> tuple[str, ...]:
        return tuple(sorted({*ALWAYS_RESERVED_PREFIXES, *self.prefixes}))


DEFAULT_MANAGED_BY_ALLOWED: tuple[str, ...] = ("tenantry", "argocd", "flux", "terraform", "kubectl")


class ManagedByPolicy(Model):
    """Values allowed for the constitution's `managed-by` namespace label."""

    # A schema default: the API server fills it in, so CEL rules may read it without has().
    default: LabelValue = "tenantry"
    # No schema default (pydantic's default_factory is not emitted): CEL rules check has().
    allowed: list[LabelValue] = Field(
        default_factory=lambda: list(DEFAULT_MANAGED_BY_ALLOWED), max_length=MAX_NAMES
    )


class ArgoCDProjects(Model):
    """The constitution's "one project per organization": an Argo CD AppProject per Organization,
    limited to that organization's namespaces. Applied only where Argo CD's CRDs exist."""

    enabled: bool = False
    namespace: DNSLabel = "argocd"
    # Git repositories the organization's Applications may deploy from ("*": any).
    source_repos: list[Annotated[str, Field(min_length=1, max_length=URL_MAX)]] = Field(
        default_factory=lambda: ["*"], min_length=1, max_length=MAX_NAMES
    )
    destination_server: str = Field(default="https://kubernetes.default.svc", max_length=URL_MAX)


class GitOpsPolicy(Model):
    argocd: ArgoCDProjects = Field(default_factory=ArgoCDProjects)


def _unique_env_names(envs: list[EnvironmentPolicy]) -> list[EnvironmentPolicy]:
    dupes = duplicates(e.name for e in envs)
    if dupes:
        raise ValueError(f"environment(s) listed twice: {', '.join(dupes)}")
    return envs


_MANAGED_BY_DEFAULTS_CEL = "[" + ", ".join(f"'{v}'" for v in DEFAULT_MANAGED_BY_ALLOWED) + "]"


class TenancyPolicySpec(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                # managedBy and managedBy.allowed are optional with pydantic defaults the schema
                # does not declare, so the rule tests their presence; managedBy.default has a
                # schema default, so it is always there once managedBy is.
                cel(
                    "!has(self.managedBy) || (has(self.managedBy.allowed)"
                    " ? self.managedBy.allowed.exists(v, v == self.managedBy.default)"
                    f" : self.managedBy.default in {_MANAGED_BY_DEFAULTS_CEL})",
                    "managedBy.default must be one of managedBy.allowed",
                    ".managedBy",
                ),
            ]
        }
    )

    environments: Annotated[list[EnvironmentPolicy], AfterValidator(_unique_env_names)] = Field(
        default_factory=lambda: [
            _env("prod", 1, "restricted", exec_=False),
            _env("staging", 2, "restricted", exec_=True),
            _env("dev", 4, "restricted", exec_=True),
        ],
        min_length=1,
        max_length=MAX_ENVIRONMENTS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    network: NetworkDefaults = Field(default_factory=NetworkDefaults)
    rbac: RBACDefaults = Field(default_factory=RBACDefaults)
    reserved_namespaces: ReservedNamespaces = Field(default_factory=ReservedNamespaces)
    managed_by: ManagedByPolicy = Field(default_factory=ManagedByPolicy)
    gitops: GitOpsPolicy = Field(default_factory=GitOpsPolicy)
    # Grants: their approvers and the longest a grant may last (the session timeout).
    access: AccessPolicy = Field(default_factory=AccessPolicy)
    namespace_labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=MAX_LABELS)
    # Policy-wide guardrails (docs/admission.md); NodePort and LoadBalancer Services are off by
    # default, as the default quotas (services.nodeports, services.loadbalancers: 0) already say.
    # Each Organization gets the hosts under its own subdomain of the apps domain.
    guardrails: Guardrails = Field(
        default_factory=lambda: Guardrails(node_ports=False, load_balancers=False, hosts=list(DEFAULT_HOSTS))
    )
    # The pool an Organization gets when it sets none (api/pool.py); its environments that an
    # Organization does not have are left out of that Organization's pool. None: no pool.
    quota_pool: QuotaPool | None = None

    @model_validator(mode="after")
    def _check(self) -> TenancyPolicySpec:
        if self.managed_by.default not in self.managed_by.allowed:
            raise ValueError(
                f"managedBy.default {self.managed_by.default!r} must be one of managedBy.allowed "
                f"({', '.join(self.managed_by.allowed)})"
            )
        names = [e.name for e in self.environments]
        if self.quota_pool is not None and self.quota_pool.environments is not None:
            outside = [e for e in self.quota_pool.environments if e not in names]
            if outside:
                raise ValueError(
                    f"quotaPool.environments names {', '.join(outside)}, not environments of this "
                    f"policy ({', '.join(names)})"
                )
        return self

    def environment(self, name: str) -> EnvironmentPolicy | None:
        return next((e for e in self.environments if e.name == name), None)


class TenancyPolicy(Model):
    model_config = ConfigDict(extra="ignore")

    api_version: Literal["tenantry.dev/v1alpha1"] = API_VERSION
    kind: Literal["TenancyPolicy"] = "TenancyPolicy"
    metadata: ObjectMeta
    spec: TenancyPolicySpec = Field(default_factory=TenancyPolicySpec)

    @property
    def name(self) -> str:
        return self.metadata.name


DEFAULT_POLICY_NAME = "default"


def builtin_default_policy() -> TenancyPolicy:
    """The policy used when an Organization names `default` and no such TenancyPolicy exists."""
    return TenancyPolicy(metadata=ObjectMeta(name=DEFAULT_POLICY_NAME))


def select_policy(name: str, available: dict[str, TenancyPolicy]) -> TenancyPolicy | None:
    """The policy an Organization names; `default` falls back to the built-in one."""
    if name in available:
        return available[name]
    if name == DEFAULT_POLICY_NAME:
        return builtin_default_policy()
    return None
