"""The Organization custom resource: one tenant, rendered into `<org>-<env>` namespaces."""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, model_validator
from pydantic.config import JsonDict

from tenantry import API_VERSION
from tenantry.api.base import (
    DNS_LABEL_MAX,
    DNS_LABEL_PATTERN,
    LABEL_VALUE_PATTERN,
    DNSLabel,
    Model,
    ResourceList,
    cel,
)
from tenantry.api.common import Port, Subject

# Reserved namespace prefixes that no policy can lift: Kubernetes' and OpenShift's own.
ALWAYS_RESERVED_PREFIXES: tuple[str, ...] = ("kube-", "openshift-")
ALWAYS_RESERVED_NAMES: tuple[str, ...] = ("default",)


def _check_cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a CIDR such as 10.20.0.0/16 ({exc})") from exc
    return value


CIDR = Annotated[str, Field(min_length=1, max_length=43), AfterValidator(_check_cidr)]


def _unique(value: list[Any]) -> list[Any]:
    seen: set[Any] = set()
    dupes = sorted({str(v) for v in value if v in seen or seen.add(v)})  # type: ignore[func-returns-value]
    if dupes:
        raise ValueError(f"duplicate entries: {', '.join(dupes)}")
    return value


def _set_list(**kwargs: Any) -> Any:
    """A list of unique scalars: `x-kubernetes-list-type: set` makes the API server check it."""
    return Field(json_schema_extra={"x-kubernetes-list-type": "set"}, **kwargs)


EnvironmentList = Annotated[list[DNSLabel], AfterValidator(_unique)]


class Members(Model):
    """RBAC subjects per tenant role. Membership lives here, in Git, not in ad-hoc bindings."""

    admins: list[Subject] = Field(default_factory=list, max_length=100)
    developers: list[Subject] = Field(default_factory=list, max_length=100)
    viewers: list[Subject] = Field(default_factory=list, max_length=100)


class QuotaApproval(Model):
    """Who approved quota above the policy default, and why (the constitution's adjustment rule)."""

    approved_by: str = Field(min_length=1, max_length=253)
    justification: str = Field(min_length=1, max_length=1024)
    ticket: str | None = Field(default=None, max_length=253)

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
            ]
        }
    )

    cidr: CIDR | None = None
    except_: list[CIDR] | None = Field(default=None, alias="except", max_length=32)
    organization: DNSLabel | None = None
    environments: EnvironmentList | None = _set_list(default=None, max_length=20)
    ports: list[Port] = Field(default_factory=list, max_length=32)
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
    environments: EnvironmentList | None = _set_list(default=None, max_length=20)
    ports: list[Port] = Field(default_factory=list, max_length=32)
    reason: str = Field(min_length=1, max_length=512)
    expires: dt.date | None = None

    @model_validator(mode="after")
    def _check(self) -> AllowFrom:
        if not self.reason.strip():
            raise ValueError("reason must document why this cross-tenant traffic is allowed")
        return self

    def active_on(self, today: dt.date) -> bool:
        """An exception is in force up to and including its `expires` day."""
        return self.expires is None or today <= self.expires


class Network(Model):
    egress: list[EgressRule] = Field(default_factory=list, max_length=64)
    allow_from: list[AllowFrom] = Field(default_factory=list, max_length=64)


class OrganizationSpec(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.quota) || self.quota.all(e, e in self.environments)",
                    "every key of quota must be one of spec.environments",
                    ".quota",
                ),
            ]
        }
    )

    display_name: str | None = Field(default=None, max_length=256)
    policy: DNSLabel = "default"
    environments: EnvironmentList = _set_list(min_length=1, max_length=20)
    managed_by: str | None = Field(default=None, max_length=63, pattern=LABEL_VALUE_PATTERN)
    members: Members = Field(default_factory=Members)
    quota: dict[DNSLabel, ResourceList] = Field(default_factory=dict)
    quota_approval: QuotaApproval | None = None
    network: Network = Field(default_factory=Network)
    deletion_policy: Literal["Retain", "Delete"] = "Retain"

    @model_validator(mode="after")
    def _check(self) -> OrganizationSpec:
        extra = sorted(set(self.quota) - set(self.environments))
        if extra:
            raise ValueError(
                f"quota names environment(s) {', '.join(extra)} that are not in spec.environments "
                f"({', '.join(self.environments)})"
            )
        return self


class ObjectMeta(Model):
    """The part of metadata we read. Everything else (uid, labels, ...) is accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    name: DNSLabel
    generation: int | None = None
    resource_version: str | None = None
    uid: str | None = None


def namespace_name(org: str, env: str) -> str:
    """The constitution's naming rule: `<org>-<env>`."""
    return f"{org}-{env}"


def _org_cel_rules() -> list[JsonDict]:
    prefix_checks = " || ".join(
        f"(self.metadata.name + '-' + e).startsWith('{p}')" for p in ALWAYS_RESERVED_PREFIXES
    )
    return [
        cel(
            f"self.spec.environments.all(e, size(self.metadata.name) + 1 + size(e) <= {DNS_LABEL_MAX})",
            f"namespace name <organization>-<environment> must be at most {DNS_LABEL_MAX} characters",
        ),
        cel(
            f"self.spec.environments.all(e, !({prefix_checks}))",
            "namespace name <organization>-<environment> must not start with a reserved prefix "
            f"({', '.join(ALWAYS_RESERVED_PREFIXES)})",
        ),
        cel(
            f"self.metadata.name.matches('{DNS_LABEL_PATTERN}') "
            f"&& size(self.metadata.name) <= {DNS_LABEL_MAX}",
            "organization name must be a DNS label: lowercase letters, digits and '-'",
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
        """Environment -> namespace name, in spec order."""
        return {env: namespace_name(self.name, env) for env in self.spec.environments}


ORGANIZATION_CEL = _org_cel_rules()
