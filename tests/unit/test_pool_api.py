"""The quota pool's API: the Organization's and the policy's `quotaPool`, what `validate` refuses
and what `render` shows (the initial split), and that an Organization without a pool is
rendered exactly as before."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tenantry.api.organization import Organization
from tenantry.api.policy import TenancyPolicy, TenancyPolicySpec, builtin_default_policy
from tenantry.api.problems import InvalidObjectError
from tenantry.render.checks import check_organization
from tenantry.render.pool import POOL_ANNOTATION, pooled_keys
from tests.conftest import minimal_org
from tests.unit.helpers import TODAY, find, render


def pooled(**pool: Any) -> dict[str, Any]:
    return minimal_org(environments=["prod", "staging", "dev"], quotaPool=pool)


def messages(doc: dict[str, Any], policy: TenancyPolicy | None = None) -> list[str]:
    org = Organization.model_validate(doc)
    return [
        f"{p.path}: {p.message}" for p in check_organization(org, policy or builtin_default_policy(), TODAY)
    ]


def test_the_pooled_quotas_start_from_the_split_and_name_their_pooled_keys() -> None:
    objects = render(
        pooled(environments=["staging", "dev"], total={"requests.cpu": "6", "pods": "150"})
    ).objects
    dev = find(objects, "ResourceQuota", "tenantry-quota", "acme-dev")
    staging = find(objects, "ResourceQuota", "tenantry-quota", "acme-staging")
    prod = find(objects, "ResourceQuota", "tenantry-quota", "acme-prod")
    assert dev["spec"]["hard"]["requests.cpu"] == "3" and staging["spec"]["hard"]["requests.cpu"] == "3"
    assert dev["spec"]["hard"]["pods"] == "75" and staging["spec"]["hard"]["pods"] == "75"
    assert dev["spec"]["hard"]["limits.cpu"] == "4"  # not pooled: the policy's default for dev
    assert pooled_keys(dev) == ("requests.cpu", "pods")
    assert POOL_ANNOTATION not in prod["metadata"]["annotations"]
    assert prod["spec"]["hard"]["requests.cpu"] == "8"  # prod keeps its fixed quota


def test_an_organization_without_a_pool_renders_no_pool_annotation() -> None:
    for obj in render(minimal_org()).objects:
        assert POOL_ANNOTATION not in (obj["metadata"].get("annotations") or {})


def test_floors_above_the_total_are_refused_with_each_floor_named() -> None:
    with pytest.raises(ValidationError) as err:
        Organization.model_validate(
            pooled(total={"pods": "10"}, floors={"dev": {"pods": "6"}, "staging": {"pods": "5"}})
        )
    assert 'total["pods"] (10) is below the floors it must cover: dev 6, staging 5 (together 11)' in str(
        err.value
    )


def test_a_floor_above_its_ceiling_and_bounds_of_unpooled_resources_are_refused() -> None:
    with pytest.raises(ValidationError) as err:
        Organization.model_validate(
            pooled(
                total={"pods": "10"},
                floors={"dev": {"pods": "6", "requests.cpu": "1"}},
                ceilings={"dev": {"pods": "5"}},
            )
        )
    text = str(err.value)
    assert 'floors.dev["pods"] (6) is above ceilings.dev["pods"] (5)' in text
    assert "floors.dev: requests.cpu not pooled" in text


def test_pool_environments_must_be_the_organizations() -> None:
    with pytest.raises(ValidationError, match=r"quotaPool\.environments names qa, not in spec\.environments"):
        Organization.model_validate(pooled(environments=["dev", "qa"], total={"pods": "10"}))


def test_raising_a_pool_needs_quota_approval() -> None:
    # The default policy gives staging 100 pods and dev 50: a pool of 150 is no raise, 151 is.
    assert messages(pooled(environments=["staging", "dev"], total={"pods": "150"})) == []
    found = messages(pooled(environments=["staging", "dev"], total={"pods": "151"}))
    assert found == [
        'spec.quotaPool.total["pods"]: 151 is above 150, the policy\'s default for the pooled environments; '
        "raising a pool requires spec.quotaApproval with approvedBy and justification"
    ]
    approved = pooled(environments=["staging", "dev"], total={"pods": "151"})
    approved["spec"]["quotaApproval"] = {"approvedBy": "platform", "justification": "load test"}
    assert messages(approved) == []


def test_a_pooled_resource_cannot_also_be_fixed_in_spec_quota() -> None:
    doc = pooled(environments=["staging", "dev"], total={"pods": "100"})
    doc["spec"]["quota"] = {"dev": {"pods": "10"}}
    assert any('spec.quota.dev["pods"]: pods of dev is pooled' in m for m in messages(doc))
    with pytest.raises(InvalidObjectError):
        render(doc)


def test_the_policy_default_pool_applies_to_organizations_without_their_own() -> None:
    policy = TenancyPolicy(
        metadata={"name": "default"},  # type: ignore[arg-type]
        spec=TenancyPolicySpec.model_validate(
            {"quotaPool": {"environments": ["staging", "dev"], "total": {"pods": "100"}}}
        ),
    )
    objects = render(minimal_org(environments=["prod", "dev"]), policy).objects
    dev = find(objects, "ResourceQuota", "tenantry-quota", "acme-dev")
    assert dev["spec"]["hard"]["pods"] == "100"  # the only pooled environment this Organization has
    assert pooled_keys(dev) == ("pods",)
    assert pooled_keys(find(objects, "ResourceQuota", "tenantry-quota", "acme-prod")) == ()


def test_a_policy_pool_must_name_its_own_environments() -> None:
    with pytest.raises(ValidationError, match=r"names qa, not environments of this policy"):
        TenancyPolicySpec.model_validate({"quotaPool": {"environments": ["qa"], "total": {"pods": "1"}}})


def test_a_policy_pool_of_environments_an_organization_lacks_gives_it_no_pool() -> None:
    policy = TenancyPolicy(
        metadata={"name": "default"},  # type: ignore[arg-type]
        spec=TenancyPolicySpec.model_validate(
            {"quotaPool": {"environments": ["staging", "dev"], "total": {"pods": "100"}}}
        ),
    )
    objects = render(minimal_org(environments=["prod"]), policy).objects
    quota = find(objects, "ResourceQuota", "tenantry-quota", "acme-prod")
    assert pooled_keys(quota) == ()
    assert quota["spec"]["hard"]["pods"] == "200"
