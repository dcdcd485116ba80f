"""Status written by the operator. Declared in the CRD: a real API server drops any status
field the schema does not name, so everything the operator reports must be modelled here.

Every string, list and map is bounded like the spec's (docs/crd-cost.md): status is part of
the schema that root CEL rules are costed against.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from tenantry.api.base import (
    DNS_LABEL_MAX,
    MAX_CONDITIONS,
    MAX_ENVIRONMENTS,
    MAX_LABELS,
    QUANTITY_MAX_LENGTH,
    Model,
)

# metav1.Condition's own limits (k8s.io/apimachinery/pkg/apis/meta/v1/types.go).
CONDITION_TYPE_MAX = 316
CONDITION_REASON_MAX = 1024
CONDITION_MESSAGE_MAX = 32768

StatusQuantity = Annotated[str, Field(max_length=QUANTITY_MAX_LENGTH)]


class Condition(Model):
    """A kstatus/metav1.Condition-shaped condition (Argo CD and Flux health checks read these)."""

    type: str = Field(max_length=CONDITION_TYPE_MAX)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(max_length=CONDITION_REASON_MAX)
    message: str = Field(default="", max_length=CONDITION_MESSAGE_MAX)
    # RFC 3339, as metav1.Condition declares it (format date-time).
    last_transition_time: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    observed_generation: int | None = Field(default=None, ge=0)


class NamespaceStatus(Model):
    name: str = Field(max_length=DNS_LABEL_MAX)
    environment: str = Field(max_length=DNS_LABEL_MAX)
    # Active / Terminating from the namespace; Missing before creation; Refused if it exists
    # without our ownership labels or is reserved; Orphaned after a Retain deletion.
    phase: str = Field(max_length=DNS_LABEL_MAX)


# Environments come and go; namespaces kept by `Retain` stay recorded while they exist.
MAX_OWNED_NAMESPACES = 3 * MAX_ENVIRONMENTS
UID_MAX = 36  # a UUID, as the API server writes metadata.uid


class OwnedNamespace(Model):
    """A namespace this Organization created or adopted (it rendered it), by name and uid: the
    record that makes it ours to orphan or delete later. Labels alone never do (anyone can copy
    them onto a namespace named `<org>-anything`)."""

    name: str = Field(max_length=DNS_LABEL_MAX)
    uid: str = Field(max_length=UID_MAX)


class QuotaUsage(Model):
    environment: str = Field(max_length=DNS_LABEL_MAX)
    namespace: str = Field(max_length=DNS_LABEL_MAX)
    # Copied from the live ResourceQuota's status: up to 20 resources of ours, with room for
    # entries someone added by hand before drift healing removes them. Values are the API
    # server's canonical quantities, never longer than the ones we set.
    hard: dict[str, StatusQuantity] = Field(default_factory=dict, max_length=MAX_LABELS)
    used: dict[str, StatusQuantity] = Field(default_factory=dict, max_length=MAX_LABELS)


class PoolResourceStatus(Model):
    """One pooled resource: the pool, what its namespaces hold (spec.hard) and use, together."""

    resource: str = Field(max_length=DNS_LABEL_MAX)
    pool: StatusQuantity
    hard: StatusQuantity
    used: StatusQuantity
    # A namespace is at its limit and the pool has nothing left to give it.
    exhausted: bool = False


class PoolNamespaceStatus(Model):
    namespace: str = Field(max_length=DNS_LABEL_MAX)
    environment: str = Field(max_length=DNS_LABEL_MAX)
    hard: dict[str, StatusQuantity] = Field(default_factory=dict, max_length=MAX_LABELS)
    used: dict[str, StatusQuantity] = Field(default_factory=dict, max_length=MAX_LABELS)


class QuotaPoolStatus(Model):
    """status.quotaPool (docs/quota-pool.md): the pool, its use, and each namespace's share."""

    use: str = Field(default="", max_length=DNS_LABEL_MAX + 8)
    resources: list[PoolResourceStatus] = Field(default_factory=list, max_length=MAX_LABELS)
    namespaces: list[PoolNamespaceStatus] = Field(default_factory=list, max_length=MAX_ENVIRONMENTS)


GUARDRAIL_LINES = 12  # one line per guardrail admission policy (8 today)
GUARDRAIL_LINE_MAX = 512


class GuardrailStatus(Model):
    """What the guardrail admission policies allow in one environment (render/guardrails.py)."""

    environment: str = Field(max_length=DNS_LABEL_MAX)
    namespace: str = Field(max_length=DNS_LABEL_MAX)
    applied: list[Annotated[str, Field(max_length=GUARDRAIL_LINE_MAX)]] = Field(
        default_factory=list, max_length=GUARDRAIL_LINES
    )


class GrantStatus(Model):
    """One grant of spec.access.grants and its phase: Pending, Scheduled, Active or Expired."""

    name: str = Field(max_length=DNS_LABEL_MAX)
    environment: str = Field(max_length=DNS_LABEL_MAX)
    elevation: str = Field(max_length=DNS_LABEL_MAX)
    subject: str = Field(max_length=300)  # "<kind> <name>", as bound (MFA form included)
    phase: Literal["Pending", "Scheduled", "Active", "Expired"]
    requested_by: str = Field(max_length=253)
    approved_by: str | None = Field(default=None, max_length=253)
    ticket: str = Field(max_length=253)
    expires: str = Field(max_length=35)


MAX_GRANTS = 16


class OrganizationStatus(Model):
    observed_generation: int | None = Field(default=None, ge=0)
    # Fingerprint of the set of objects last applied in full: an object of that set found
    # missing later (even across an operator restart) was deleted by someone: drift.
    applied_objects: str | None = Field(default=None, max_length=64)
    conditions: list[Condition] = Field(default_factory=list, max_length=MAX_CONDITIONS)
    namespaces: list[NamespaceStatus] = Field(default_factory=list, max_length=MAX_ENVIRONMENTS)
    owned_namespaces: list[OwnedNamespace] = Field(default_factory=list, max_length=MAX_OWNED_NAMESPACES)
    quota: list[QuotaUsage] = Field(default_factory=list, max_length=MAX_ENVIRONMENTS)
    guardrails: list[GuardrailStatus] = Field(default_factory=list, max_length=MAX_ENVIRONMENTS)
    grants: list[GrantStatus] = Field(default_factory=list, max_length=MAX_GRANTS)
    quota_pool: QuotaPoolStatus | None = None


class TenancyPolicyStatus(Model):
    observed_generation: int | None = Field(default=None, ge=0)
    conditions: list[Condition] = Field(default_factory=list, max_length=MAX_CONDITIONS)
    organizations: int | None = Field(default=None, ge=0)
