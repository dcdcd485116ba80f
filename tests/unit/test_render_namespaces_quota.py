"""Namespaces, ResourceQuotas and LimitRanges, per the constitution's tenancy sections."""

from __future__ import annotations

from typing import Any

import pytest

from tenantry.api.policy import TenancyPolicy, builtin_default_policy
from tenantry.api.problems import InvalidObjectError
from tests.conftest import minimal_org
from tests.unit.helpers import find, render


def test_one_namespace_per_environment_named_org_dash_env() -> None:
    objects = render(minimal_org(environments=["prod", "staging", "dev"])).objects
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"] == [
        "acme-prod",
        "acme-staging",
        "acme-dev",
    ]


def test_namespace_carries_constitution_labels_ownership_and_pod_security(acme_doc: dict[str, Any]) -> None:
    ns = find(render(acme_doc).objects, "Namespace", "acme-prod")
    labels = ns["metadata"]["labels"]
    assert labels["organization"] == "acme"
    assert labels["environment"] == "prod"
    assert labels["managed-by"] == "argocd"
    assert labels["tenantry.dev/organization"] == "acme"
    assert labels["app.kubernetes.io/managed-by"] == "tenantry"
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
    assert ns["metadata"]["annotations"]["tenantry.dev/display-name"] == "ACME Corp"


def test_managed_by_defaults_to_the_policy_default() -> None:
    ns = find(render(minimal_org()).objects, "Namespace", "acme-prod")
    assert ns["metadata"]["labels"]["managed-by"] == "tenantry"


def test_policy_namespace_labels_cannot_override_ownership() -> None:
    policy = builtin_default_policy().model_copy(
        update={
            "spec": builtin_default_policy().spec.model_copy(
                update={"namespace_labels": {"tenantry.dev/organization": "evil", "cost-center": "42"}}
            )
        }
    )
    labels = find(render(minimal_org(), policy).objects, "Namespace", "acme-prod")["metadata"]["labels"]
    assert labels["tenantry.dev/organization"] == "acme"
    assert labels["cost-center"] == "42"


def test_quota_is_the_policy_default_for_each_environment() -> None:
    objects = render(minimal_org()).objects
    prod = find(objects, "ResourceQuota", "tenantry-quota", "acme-prod")["spec"]["hard"]
    dev = find(objects, "ResourceQuota", "tenantry-quota", "acme-dev")["spec"]["hard"]
    assert prod["requests.cpu"] == "8" and prod["limits.memory"] == "32Gi"
    assert dev["requests.cpu"] == "2" and dev["pods"] == "50"
    # Object-count quotas from the multi-tenancy benchmarks.
    assert prod["services.loadbalancers"] == "0" and prod["services.nodeports"] == "0"
    assert {"persistentvolumeclaims", "requests.storage"} <= set(prod)


def test_override_at_or_below_default_needs_no_approval() -> None:
    objects = render(minimal_org(quota={"prod": {"requests.cpu": "4", "pods": 100}})).objects
    hard = find(objects, "ResourceQuota", "tenantry-quota", "acme-prod")["spec"]["hard"]
    assert hard["requests.cpu"] == "4"
    assert hard["pods"] == "100"
    assert hard["limits.cpu"] == "16"  # untouched resources keep the default


def test_an_override_equal_to_the_default_in_any_spelling_is_no_raise() -> None:
    # Only a value above the default needs spec.quotaApproval (`>`, not `>=`).
    equal = {"requests.cpu": "8000m", "limits.memory": "32Gi", "pods": 200, "services.nodeports": "0"}
    hard = find(
        render(minimal_org(quota={"prod": equal})).objects, "ResourceQuota", "tenantry-quota", "acme-prod"
    )
    assert hard["spec"]["hard"]["requests.cpu"] == "8000m"
    assert "tenantry.dev/quota-approved-by" not in hard["metadata"].get("annotations", {})
    with pytest.raises(InvalidObjectError, match=r"requires spec\.quotaApproval"):
        render(minimal_org(quota={"prod": {"requests.cpu": "8001m"}}))


def test_override_above_default_is_honoured_with_a_complete_approval(acme_doc: dict[str, Any]) -> None:
    quota = find(render(acme_doc).objects, "ResourceQuota", "tenantry-quota", "acme-prod")
    assert quota["spec"]["hard"]["requests.cpu"] == "16"
    assert quota["spec"]["hard"]["limits.memory"] == "64Gi"
    assert quota["metadata"]["annotations"]["tenantry.dev/quota-approved-by"] == "jane@platform.example"
    assert quota["metadata"]["annotations"]["tenantry.dev/quota-ticket"] == "CHG-1234"


def test_override_above_default_without_approval_is_refused_naming_each_raise(
    acme_doc: dict[str, Any],
) -> None:
    del acme_doc["spec"]["quotaApproval"]
    with pytest.raises(InvalidObjectError) as info:
        render(acme_doc)
    paths = [p.path for p in info.value.problems]
    assert 'spec.quota.prod["requests.cpu"]' in paths
    assert 'spec.quota.prod["limits.memory"]' in paths
    assert "above the policy default 8" in str(info.value)
    assert "requires spec.quotaApproval" in str(info.value)


def test_limit_range_gives_defaults_so_pods_without_requests_fit() -> None:
    lr = find(render(minimal_org()).objects, "LimitRange", "tenantry-limits", "acme-prod")
    (limit,) = lr["spec"]["limits"]
    assert limit["type"] == "Container"
    assert limit["defaultRequest"] == {"cpu": "100m", "memory": "128Mi", "ephemeral-storage": "128Mi"}
    assert limit["default"] == {"cpu": "500m", "memory": "512Mi", "ephemeral-storage": "1Gi"}


def test_the_default_quota_caps_everything_a_tenant_can_exhaust() -> None:
    """Object counts, ephemeral storage and devices, besides CPU, memory and volumes (issue 21;
    the Multi-Tenancy Benchmark checks FNS-1 and FNS-2 look for these keys)."""
    for env in ("prod", "staging", "dev"):
        minimal = minimal_org()
        minimal["spec"]["environments"] = [env]
        quota = find(render(minimal).objects, "ResourceQuota", "tenantry-quota", f"acme-{env}")
        hard = quota["spec"]["hard"]
        for key in (
            "requests.cpu",
            "limits.cpu",
            "requests.memory",
            "limits.memory",
            "requests.ephemeral-storage",
            "limits.ephemeral-storage",
            "pods",
            "services",
            "replicationcontrollers",
            "resourcequotas",
            "secrets",
            "configmaps",
            "persistentvolumeclaims",
            "services.nodeports",
            "services.loadbalancers",
        ):
            assert key in hard, (env, key)
        assert hard["requests.nvidia.com/gpu"] == "0"
        assert hard["requests.hugepages-1Gi"] == hard["requests.hugepages-2Mi"] == "0"
        assert all(hard[k] != "0" for k in ("secrets", "configmaps", "resourcequotas", "services"))


def test_every_child_carries_ownership_labels(acme_doc: dict[str, Any]) -> None:
    for obj in render(acme_doc).objects:
        labels = obj["metadata"]["labels"]
        assert labels["tenantry.dev/organization"] == "acme", obj["metadata"]
        assert labels["app.kubernetes.io/managed-by"] == "tenantry", obj["metadata"]


def test_custom_policy_environments_and_pod_security() -> None:
    policy = TenancyPolicy.model_validate(
        {
            "apiVersion": "tenantry.dev/v1alpha1",
            "kind": "TenancyPolicy",
            "metadata": {"name": "strict"},
            "spec": {"environments": [{"name": "qa", "quota": {"pods": 5}, "podSecurity": "baseline"}]},
        }
    )
    objects = render(minimal_org(policy="strict", environments=["qa"]), policy).objects
    labels = find(objects, "Namespace", "acme-qa")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert find(objects, "ResourceQuota", "tenantry-quota", "acme-qa")["spec"]["hard"] == {"pods": "5"}
