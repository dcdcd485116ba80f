"""Typed models of Tenantry's custom resources (pydantic), and their CRDs. No I/O here."""

from tenantry.api.organization import Organization, OrganizationSpec
from tenantry.api.policy import TenancyPolicy, TenancyPolicySpec, builtin_default_policy
from tenantry.api.problems import InvalidObjectError, Problem

__all__ = [
    "InvalidObjectError",
    "Organization",
    "OrganizationSpec",
    "Problem",
    "TenancyPolicy",
    "TenancyPolicySpec",
    "builtin_default_policy",
]
