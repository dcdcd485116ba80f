"""Production access: MFA per environment (policy) and time-boxed elevated access (grants).

Kubernetes never sees MFA itself: the identity provider conveys it as a group (the API server's
structured authentication configuration can map an OIDC `amr` claim to one). A policy says per
environment whether MFA is required and how an MFA session shows: a suffix the IdP appends to
each of the member's groups after MFA (`groupSuffix: ":mfa"`, so `acme-devs` becomes
`acme-devs:mfa`), or one group every MFA session carries (`group`). See docs/access.md.

A grant is a request for one named elevation in one environment, for one subject, with a reason,
a ticket and an RFC 3339 expiry. It takes effect once `approval` is written by an approver of the
policy who is not the requester (manifests/admission/access/grant-approval.yaml) and lasts from
`approval.approvedAt` to `expires`, at most the policy's `access.maxGrantHours`.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from tenantry.api.base import DNS_SUBDOMAIN_MAX, MAX_SUBJECTS, DNSLabel, Model, cel, duplicates
from tenantry.api.common import Subject

MAX_GRANTS = 16
GRANT_NAME_MAX = 40
TIMESTAMP_MAX = 35
# RFC 3339 with a zone (what CEL's timestamp() and Go's time.RFC3339 accept).
TIMESTAMP_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$"
)
# The constitution's "Session Timeout: [X] hours": the longest a grant may last.
DEFAULT_MAX_GRANT_HOURS = 4
MAX_GRANT_HOURS_LIMIT = 24

Elevation = Literal["developer-exec", "developer", "organization-admin", "viewer"]


def parse_timestamp(value: str) -> dt.datetime:
    """An RFC 3339 timestamp with its zone, as an aware datetime."""
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone; write it as RFC 3339, e.g. 2026-11-26T18:00:00Z")
    return parsed


def _check_timestamp(value: str) -> str:
    try:
        parse_timestamp(value)
    except ValueError as exc:
        raise ValueError(
            f"{value!r} is not an RFC 3339 timestamp such as 2026-11-26T18:00:00Z ({exc})"
        ) from exc
    return value


Timestamp = Annotated[
    str,
    Field(min_length=20, max_length=TIMESTAMP_MAX, pattern=TIMESTAMP_PATTERN),
    AfterValidator(_check_timestamp),
]


class MFAPolicy(Model):
    """Whether an environment needs MFA, and how the identity provider shows an MFA session."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!self.required || has(self.groupSuffix) != has(self.group)",
                    "with required: true set exactly one of groupSuffix or group",
                ),
            ]
        }
    )

    required: bool = False
    # Appended by the IdP to each of a member's groups after MFA: RoleBindings bind `<group><suffix>`.
    group_suffix: str | None = Field(default=None, min_length=1, max_length=32, pattern=r"^[^\s]+$")
    # One group every MFA session carries: RBAC cannot require two groups at once, so members
    # keep their bindings and the admission policy refuses writes and exec/attach/port-forward.
    group: str | None = Field(default=None, min_length=1, max_length=DNS_SUBDOMAIN_MAX)

    @model_validator(mode="after")
    def _check(self) -> MFAPolicy:
        if self.required and (self.group_suffix is None) == (self.group is None):
            raise ValueError("with required: true set exactly one of groupSuffix or group")
        if self.group is not None and self.group.startswith("system:"):
            raise ValueError("group must be a group of the identity provider, not a system: group")
        return self

    def group_for(self, group: str) -> str:
        """The MFA form of a member group, as RoleBindings bind it."""
        return f"{group}{self.group_suffix}" if self.required and self.group_suffix else group


class AccessPolicy(Model):
    """Who may approve grants, and how long one may last."""

    max_grant_hours: int = Field(
        default=DEFAULT_MAX_GRANT_HOURS,
        ge=1,
        le=MAX_GRANT_HOURS_LIMIT,
        description="The constitution's session timeout: the longest a grant may last, from its "
        "approval to its expiry.",
    )
    # Subjects whose approval of a grant the admission policy accepts (platform admins count too).
    approvers: list[Subject] = Field(default_factory=list, max_length=MAX_SUBJECTS)


class GrantApproval(Model):
    approved_by: str = Field(min_length=1, max_length=DNS_SUBDOMAIN_MAX)
    approved_at: Timestamp


class Grant(Model):
    """One time-boxed elevation for one subject in one environment."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.approval) || self.approval.approvedBy != self.requestedBy",
                    "a grant cannot be approved by its requester",
                ),
            ]
        }
    )

    name: Annotated[
        str, Field(min_length=1, max_length=GRANT_NAME_MAX, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    ]
    subject: Subject
    elevation: Elevation
    environment: DNSLabel
    reason: str = Field(min_length=1, max_length=512)
    ticket: str = Field(min_length=1, max_length=DNS_SUBDOMAIN_MAX)
    requested_by: str = Field(min_length=1, max_length=DNS_SUBDOMAIN_MAX)
    expires: Timestamp
    approval: GrantApproval | None = None

    @model_validator(mode="after")
    def _check(self) -> Grant:
        if not self.reason.strip():
            raise ValueError("reason must say why the elevation is needed")
        if self.approval is not None:
            if self.approval.approved_by == self.requested_by:
                raise ValueError("a grant cannot be approved by its requester")
            if self.expires_at <= self.approved_at_time:
                raise ValueError("expires must be after approval.approvedAt")
        return self

    @property
    def expires_at(self) -> dt.datetime:
        return parse_timestamp(self.expires)

    @property
    def approved_at_time(self) -> dt.datetime:
        assert self.approval is not None
        return parse_timestamp(self.approval.approved_at)

    def phase(self, now: dt.datetime) -> str:
        """Pending (not approved), Scheduled (approved for later), Active, or Expired."""
        if now >= self.expires_at:
            return "Expired"
        if self.approval is None:
            return "Pending"
        if now < self.approved_at_time:
            return "Scheduled"
        return "Active"


def _unique_names(grants: list[Grant]) -> list[Grant]:
    dupes = duplicates(g.name for g in grants)
    if dupes:
        raise ValueError(f"grant name(s) used twice: {', '.join(dupes)}")
    return grants


class Access(Model):
    grants: Annotated[list[Grant], AfterValidator(_unique_names)] = Field(
        default_factory=list,
        max_length=MAX_GRANTS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )


__all__ = ["Access", "AccessPolicy", "Elevation", "Grant", "GrantApproval", "MFAPolicy", "parse_timestamp"]
