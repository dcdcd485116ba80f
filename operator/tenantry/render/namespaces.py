"""The Namespace of one environment: the constitution's labels, ownership, Pod Security."""

from __future__ import annotations

from typing import Any

from tenantry.api.organization import Organization
from tenantry.api.policy import TenancyPolicy
from tenantry.render import labels as lbl
from tenantry.render.access import namespace_mfa_metadata


def resolved_managed_by(org: Organization, policy: TenancyPolicy) -> str:
    return org.spec.managed_by or policy.spec.managed_by.default


def render_namespace(org: Organization, policy: TenancyPolicy, env: str, name: str) -> dict[str, Any]:
    env_policy = policy.spec.environment(env)
    assert env_policy is not None  # checks.check_organization refused unknown environments
    level = env_policy.pod_security
    # Policy-wide extra labels first, so ours win on any clash: a policy cannot fake ownership.
    labels: dict[str, str] = dict(sorted(policy.spec.namespace_labels.items()))
    labels.update(
        {
            lbl.ORGANIZATION: org.name,
            lbl.ENVIRONMENT: env,
            lbl.MANAGED_BY: resolved_managed_by(org, policy),
            **lbl.ownership_labels(org.name, env),
            f"{lbl.PSA_PREFIX}enforce": level,
            f"{lbl.PSA_PREFIX}enforce-version": "latest",
            f"{lbl.PSA_PREFIX}audit": level,
            f"{lbl.PSA_PREFIX}warn": level,
        }
    )
    # Where MFA is required: the label the MFA admission policy selects on, and how it recognises
    # an MFA session (manifests/admission/access/mfa.yaml).
    mfa_labels, mfa_annotations = namespace_mfa_metadata(policy, env)
    labels.update(mfa_labels)
    annotations = {lbl.POLICY: policy.name, **mfa_annotations}
    if org.spec.display_name:
        annotations[lbl.DISPLAY_NAME] = org.spec.display_name
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
    }
