"""Status written by the operator. Declared in the CRD: a real API server drops any status
field the schema does not name, so everything the operator reports must be modelled here."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tenantry.api.base import Model


class Condition(Model):
    """A kstatus/metav1.Condition-shaped condition (Argo CD and Flux health checks read these)."""

    type: str = Field(max_length=316)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(max_length=1024)
    message: str = Field(default="", max_length=32768)
    last_transition_time: str | None = None
    observed_generation: int | None = None


class NamespaceStatus(Model):
    name: str
    environment: str
    # Active / Terminating from the namespace; Missing before creation; Refused if it exists
    # without our ownership labels or is reserved; Orphaned after a Retain deletion.
    phase: str


class QuotaUsage(Model):
    environment: str
    namespace: str
    hard: dict[str, str] = Field(default_factory=dict)
    used: dict[str, str] = Field(default_factory=dict)


class OrganizationStatus(Model):
    observed_generation: int | None = None
    # Fingerprint of the set of objects last applied in full: an object of that set found
    # missing later (even across an operator restart) was deleted by someone: drift.
    applied_objects: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    namespaces: list[NamespaceStatus] = Field(default_factory=list)
    quota: list[QuotaUsage] = Field(default_factory=list)


class TenancyPolicyStatus(Model):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    organizations: int | None = None
