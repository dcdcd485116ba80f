"""The Organization custom resource: one tenant, rendered into `<org>-<env>` namespaces."""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.config import JsonDict

from tenantry import API_VERSION
from tenantry.api.access import Access
from tenantry.api.base import (
    DNS_LABEL_MAX,
    DNS_SUBDOMAIN_MAX,
    GENERATE_NAME_MAX,
    MAX_CIDRS,
    MAX_ENVIRONMENTS,
    MAX_NETWORK_RULES,
    MAX_PORTS,
    MAX_SUBJECTS,
    Date,
    DNSLabel,
    LabelValue,
    Model,
    ResourceList,
    cel,
    duplicates,
)
from tenantry.api.common import Port, Subject
from tenantry.api.guardrails import OrganizationGuardrails
from tenantry.api.pool import QuotaPool

# Reserved namespace prefixes that no policy can lift: Kubernetes' and OpenShift's own.
ALWAYS_RESERVED_PREFIXES: tuple[str, ...] = ("kube-", "openshift-")
ALWAYS_RESERVED_NAMES: tuple[str, ...] = ("default",)


def _check_cidr(value: str) -> str:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a CIDR such as 10.20.0.0/16 ({exc})") from exc
    if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped is not None:
        # The API server's CIDR library (k8s.io/apiserver/pkg/cel/library/cidr.go) refuses them.
        raise ValueError(f"{value!r} is an IPv4-mapped IPv6 CIDR; write the IPv4 CIDR instead")
    return value


# The same, checked by the API server itself (Kubernetes' CEL CIDR library, k8s >= 1.30):
# `isCIDR` refuses a prefix length out of range, leading zeros and IPv4-mapped IPv6; comparing
# with `masked()` refuses bits set after the prefix length (cidr() alone accepts 10.0.0.1/8).
CIDR_RULE = cel(
    "isCIDR(self) && cidr(self) == cidr(self).masked()",
    "must be a CIDR such as 10.20.0.0/16: a valid prefix length, no bits set after it, "
    "no IPv4-mapped IPv6 address",
)
CIDR = Annotated[
    str,
    Field(min_length=1, max_length=43, json_schema_extra={"x-kubernetes-validations": [CIDR_RULE]}),
    AfterValidator(_check_cidr),
]
# Cloud metadata endpoints, which no egress may name whatever the policy says (render/checks.py
# ALWAYS_DENIED_EGRESS_CIDRS, with the NAT64 spelling of each IPv4 one; IPv4-mapped spellings
# are refused by CIDR_RULE already): a single Organization shows it, so the API server refuses it.
METADATA_ENDPOINTS = (
    "169.254.169.254/32",
    "100.100.100.200/32",
    "fd00:ec2::254/128",
    "fd20:ce::254/128",
    "64:ff9b::a9fe:a9fe/128",
    "64:ff9b::6464:64c8/128",
)


def _unique(value: list[Any]) -> list[Any]:
    dupes = duplicates(value)
    if dupes:
        raise ValueError(f"duplicate entries: {', '.join(dupes)}")
    return value


def _set_list(**kwargs: Any) -> Any:
    """A list of unique scalars: `x-kubernetes-list-type: set` makes the API server check it."""
    return Field(json_schema_extra={"x-kubernetes-list-type": "set"}, **kwargs)


EnvironmentList = Annotated[list[DNSLabel], AfterValidator(_unique)]


def _not_empty(value: list[str]) -> list[str]:
    if not value:
        raise ValueError(
            "an empty list would select no namespace; list the environments, or leave the field out "
            "for all of them"
        )
    return value


# Which environments of another organization a network entry selects: omitted means all of
# them; an empty list is refused (it would select none, and validate and render must not
# disagree on what it means). minItems makes the API server refuse it too.
EnvironmentSelection = Annotated[list[DNSLabel], AfterValidator(_unique), AfterValidator(_not_empty)]


def _selection(**kwargs: Any) -> Any:
    return Field(json_schema_extra={"x-kubernetes-list-type": "set", "minItems": 1}, **kwargs)


class Member(Subject):
    """A subject of a tenant role, bound in every environment or only in those listed.

    `environments` is how a machine identity (a CI ServiceAccount) is a member where MFA is not
    required: it cannot pass MFA, so an MFA environment never binds it (docs/access.md)."""

    environments: EnvironmentSelection | None = _selection(default=None, max_length=MAX_ENVIRONMENTS)

    def bound_in(self, env: str) -> bool:
        return self.environments is None or env in self.environments


class Members(Model):
    """RBAC subjects per tenant role. Membership lives here, in Git, not in ad-hoc bindings."""

    admins: list[Member] = Field(default_factory=list, max_length=MAX_SUBJECTS)
    developers: list[Member] = Field(default_factory=list, max_length=MAX_SUBJECTS)
    viewers: list[Member] = Field(default_factory=list, max_length=MAX_SUBJECTS)


class QuotaApproval(Model):
    """Who approved quota above the policy default, and why (the constitution's adjustment rule)."""

    approved_by: str = Field(min_length=1, max_length=DNS_SUBDOMAIN_MAX)
    justification: str = Field(min_length=1, max_length=1024)
    ticket: str | None = Field(default=None, max_length=DNS_SUBDOMAIN_MAX)

    @model_validator(mode="after")
    def _check(self) -> QuotaApproval:
        if not self.approved_by.strip():
            raise ValueError("approvedBy must name the approver")
        if not self.justification.strip():
            raise ValueError("justification must say why the quota is raised")
        return self


class EgressRule(Model):
    """One entry of the org's egress allow-list: a CIDR, or another organization's namespaces.

    Cross-tenant traffic needs both ends to consent: the other organization must list this one
    in its `allowFrom` (see docs/architecture.md, "cross-tenant exceptions").
    """

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.cidr) != has(self.organization)",
                    "set exactly one of cidr or organization",
                ),
                cel("!has(self.except) || has(self.cidr)", "except is only allowed with cidr"),
                cel(
                    "!has(self.environments) || has(self.organization)",
                    "environments is only allowed with organization",
                ),
                cel(
                    "!has(self.cidr) || !has(self.except) || !isCIDR(self.cidr) || "
                    "self.except.all(e, !isCIDR(e) || cidr(self.cidr).containsCIDR(e))",
                    "every except must lie inside cidr (and be of its address family)",
                    field_path=".except",
                ),
                cel(
                    "!has(self.cidr) || !isCIDR(self.cidr) || ("
                    # `!(a == b)`: the API server costs CIDR `==` at 1, but `!=` as a traversal
                    # of unknown size (refused as 100x over budget on 1.36.2).
                    + " && ".join(f"!(cidr(self.cidr) == cidr('{c}'))" for c in METADATA_ENDPOINTS)
                    + ")",
                    "cidr names a cloud metadata endpoint, which no tenant may reach "
                    "(its node credentials): " + ", ".join(METADATA_ENDPOINTS),
                    field_path=".cidr",
                ),
            ]
        }
    )

    cidr: CIDR | None = None
    except_: list[CIDR] | None = Field(default=None, alias="except", max_length=MAX_CIDRS)
    organization: DNSLabel | None = None
    environments: EnvironmentSelection | None = _selection(default=None, max_length=MAX_ENVIRONMENTS)
    ports: list[Port] = Field(default_factory=list, max_length=MAX_PORTS)
    reason: str = Field(min_length=1, max_length=512)

    @model_validator(mode="after")
    def _check(self) -> EgressRule:
        if (self.cidr is None) == (self.organization is None):
            raise ValueError("set exactly one of cidr or organization")
        if self.except_ is not None and self.cidr is None:
            raise ValueError("except is only allowed with cidr")
        if self.environments is not None and self.organization is None:
            raise ValueError("environments is only allowed with organization")
        if not self.reason.strip():
            raise ValueError("reason must explain why this egress is needed")
        if self.cidr and self.except_:
            outer = ipaddress.ip_network(self.cidr)
            for inner_text in self.except_:
                inner = ipaddress.ip_network(inner_text)
                if inner.version != outer.version or not inner.subnet_of(outer):  # type: ignore[arg-type]
                    raise ValueError(f"except {inner_text} is not inside cidr {self.cidr}")
        return self


class AllowFrom(Model):
    """A documented cross-tenant exception: let another organization's namespaces reach ours."""

    organization: DNSLabel
    environments: EnvironmentSelection | None = _selection(default=None, max_length=MAX_ENVIRONMENTS)
    ports: list[Port] = Field(default_factory=list, max_length=MAX_PORTS)
    reason: str = Field(min_length=1, max_length=512)
    expires: Date | None = None

    @model_validator(mode="after")
    def _check(self) -> AllowFrom:
        if not self.reason.strip():
            raise ValueError("reason must document why this cross-tenant traffic is allowed")
        return self

    def active_on(self, today: dt.date) -> bool:
        """An exception is in force up to and including its `expires` day."""
        return self.expires is None or today <= self.expires


class IPBlockException(Model):
    """A documented exception for the Organization's own NetworkPolicies: its admins may name
    this range in an `ipBlock` although it lies inside the cluster's pod or service ranges
    (TenancyPolicy spec.network.podCidrs, serviceCidrs), which the self-service guardrail
    refuses otherwise (docs/admission.md, "Organization Admin self-service")."""

    cidr: CIDR
    reason: str = Field(min_length=1, max_length=512)
    expires: Date | None = None

    @model_validator(mode="after")
    def _check(self) -> IPBlockException:
        if not self.reason.strip():
            raise ValueError("reason must document why the Organization's admins may use this range")
        return self

    def active_on(self, today: dt.date) -> bool:
        """In force up to and including its `expires` day, like allowFrom."""
        return self.expires is None or today <= self.expires


class Network(Model):
    egress: list[EgressRule] = Field(default_factory=list, max_length=MAX_NETWORK_RULES)
    allow_from: list[AllowFrom] = Field(default_factory=list, max_length=MAX_NETWORK_RULES)
    ip_block_exceptions: list[IPBlockException] = Field(
        default_factory=list,
        max_length=MAX_NETWORK_RULES,
        description="Ranges inside the cluster's pod or service ranges that the Organization's "
        "admins may name in an ipBlock of their own NetworkPolicies (reason required; expires "
        "like allowFrom).",
    )


class OrganizationSpec(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.quota) || !has(self.environments) "
                    "|| self.quota.all(e, e in self.environments)",
                    "every key of quota must be one of spec.environments",
                    ".quota",
                ),
                cel(
                    "!has(self.quotaPool) || !has(self.quotaPool.environments) || !has(self.environments) "
                    "|| self.quotaPool.environments.all(e, e in self.environments)",
                    "every environment of quotaPool must be one of spec.environments",
                    ".quotaPool.environments",
                ),
            ]
        }
    )

    display_name: str | None = Field(default=None, max_length=256)
    policy: DNSLabel = "default"
    environments: EnvironmentList | None = _set_list(
        default=None,
        min_length=1,
        max_length=MAX_ENVIRONMENTS,
        description="The environments, one namespace <organization>-<environment> each. Leave it "
        "out for every environment of the policy (spec: {} is a complete Organization); when the "
        "policy gains or loses an environment, so does the Organization.",
    )
    managed_by: LabelValue | None = None
    members: Members = Field(default_factory=Members)
    # Keys must be environments (CEL below), so there are at most as many as environments.
    quota: dict[DNSLabel, ResourceList] = Field(default_factory=dict, max_length=MAX_ENVIRONMENTS)
    quota_approval: QuotaApproval | None = None
    # One budget shared by several environments (api/pool.py, docs/quota-pool.md); left out:
    # the policy's default pool, if it has one, else every namespace keeps its own quota.
    quota_pool: QuotaPool | None = None
    network: Network = Field(default_factory=Network)
    # Narrows the policy's guardrails; widening needs quotaApproval (docs/admission.md).
    guardrails: OrganizationGuardrails = Field(default_factory=OrganizationGuardrails)
    deletion_policy: Literal["Retain", "Delete"] = "Retain"
    # Time-boxed elevated access (api/access.py, docs/access.md).
    access: Access = Field(default_factory=Access)

    @field_validator("quota")
    @classmethod
    def _quota_keys(cls, quota: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        # A field validator (environments is declared, so validated, before quota): the problem
        # is located at spec.quota, as the CRD's CEL rule reports it (fieldPath .quota).
        # Without environments, the policy's apply: the policy checks see the quota keys.
        environments = info.data.get("environments")
        extra = sorted(set(quota) - set(environments)) if environments is not None else []
        if extra:
            raise ValueError(
                f"quota names environment(s) {', '.join(extra)} that are not in spec.environments "
                f"({', '.join(environments or [])})"
            )
        return quota

    @model_validator(mode="after")
    def _pool_environments(self) -> OrganizationSpec:
        if self.quota_pool is not None and self.quota_pool.environments and self.environments is not None:
            outside = [e for e in self.quota_pool.environments if e not in self.environments]
            if outside:
                raise ValueError(
                    f"quotaPool.environments names {', '.join(outside)}, not in spec.environments "
                    f"({', '.join(self.environments)})"
                )
        return self


class ObjectMeta(Model):
    """The part of metadata we read. Everything else (uid, labels, ...) is accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    name: DNSLabel
    # Declared so that the CRD can bound it (docs/crd-cost.md); the API server appends 5
    # random characters and truncates longer prefixes.
    generate_name: str | None = Field(default=None, max_length=GENERATE_NAME_MAX)
    generation: int | None = None
    resource_version: str | None = None
    uid: str | None = None


def namespace_name(org: str, env: str) -> str:
    """The constitution's naming rule: `<org>-<env>`."""
    return f"{org}-{env}"


def _starts_with_rule(prefix: str) -> tuple[list[str], list[str]]:
    """CEL for "`<name>-<e>` starts with `prefix`", without building the string.

    Concatenating `self.metadata.name + '-' + e` costs its whole length on every environment;
    comparing the parts costs a few characters. `<name>-<e>` starts with `prefix` exactly when
    the name itself starts with it, or the name is the part of `prefix` before one of its
    dashes and `e` starts with the rest. Returns (clauses on the name alone, clauses on `e`).
    """
    on_name = [f"self.metadata.name.startsWith('{prefix}')"]
    on_env: list[str] = []
    for cut, char in enumerate(prefix):
        if char != "-" or cut == 0:
            continue
        head, rest = prefix[:cut], prefix[cut + 1 :]
        if rest:
            on_env.append(f"(self.metadata.name == '{head}' && e.startsWith('{rest}'))")
        else:
            on_name.append(f"self.metadata.name == '{head}'")
    return on_name, on_env


def reserved_prefix_rule(prefixes: tuple[str, ...]) -> str:
    """The CEL rule refusing `<name>-<environment>` namespaces that start with a reserved prefix."""
    on_name: list[str] = []
    on_env: list[str] = []
    for prefix in prefixes:
        name_clauses, env_clauses = _starts_with_rule(prefix)
        on_name += name_clauses
        on_env += env_clauses
    rule = f"!({' || '.join(on_name)})"
    if on_env:
        # Without environments the policy's apply, which only the operator and validate know.
        rule += (
            f" && (!has(self.spec.environments) || self.spec.environments.all(e, !({' || '.join(on_env)})))"
        )
    return rule


def _org_cel_rules() -> list[JsonDict]:
    # metadata.name is a DNS label by the CRD schema (pattern, maxLength 63), so these rules
    # read a bounded string; without environments (the policy's apply) only the name is checked.
    return [
        cel(
            "!has(self.spec.environments) || "
            f"self.spec.environments.all(e, size(self.metadata.name) + 1 + size(e) <= {DNS_LABEL_MAX})",
            f"namespace name <organization>-<environment> must be at most {DNS_LABEL_MAX} characters",
        ),
        cel(
            reserved_prefix_rule(ALWAYS_RESERVED_PREFIXES),
            "namespace name <organization>-<environment> must not start with a reserved prefix "
            f"({', '.join(ALWAYS_RESERVED_PREFIXES)})",
        ),
    ]


class Organization(Model):
    """The whole Organization object, as read from a file or from the API server."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["tenantry.dev/v1alpha1"] = API_VERSION
    kind: Literal["Organization"] = "Organization"
    metadata: ObjectMeta
    spec: OrganizationSpec

    @property
    def name(self) -> str:
        return self.metadata.name

    def namespaces(self) -> dict[str, str]:
        """Environment -> namespace name, in spec order (after `with_environments` if unset)."""
        return {env: namespace_name(self.name, env) for env in self.spec.environments or []}

    def with_environments(self, environments: list[str]) -> Organization:
        """This Organization with `spec.environments` filled in (the policy's, when unset)."""
        if self.spec.environments is not None:
            return self
        spec = self.spec.model_copy(update={"environments": list(environments)})
        return self.model_copy(update={"spec": spec})


ORGANIZATION_CEL = _org_cel_rules()
