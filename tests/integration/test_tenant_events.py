"""Tenants see why: every Event about an Organization is also in its home namespace (the first
of its environments), where members read it without cluster-wide rights (issue 20)."""

from __future__ import annotations

from typing import Any

from tests.integration.conftest import ORG, POLICY, Api, Operator, metric_total, org_body, policy_body
from tests.integration.test_onboarding import ready, until


async def tenant_events(api: Api, namespace: str, reason: str) -> list[dict[str, Any]]:
    listing = await api.get(f"/api/v1/namespaces/{namespace}/events")
    return [e for e in (listing or {}).get("items", []) if e.get("reason") == reason]


async def test_status_changes_are_explained_in_the_first_namespace_of_the_organization(
    api: Api, operator: Operator
) -> None:
    await api.create(ORG, org_body())  # environments prod, dev
    await ready(api)
    reconciled = await until(lambda: tenant_events(api, "acme-prod", "Reconciled"))
    involved = reconciled[0]["involvedObject"]
    # The API server requires the involved object's namespace to be the Event's own.
    assert involved["kind"] == "Organization" and involved["name"] == "acme"
    assert involved["namespace"] == "acme-prod"
    assert await tenant_events(api, "acme-dev", "Reconciled") == []  # one copy, not one per namespace
    # Where platform admins look (kubectl describe org), as before, without a namespace.
    default = await until(lambda: tenant_events(api, "default", "Reconciled"))
    assert "namespace" not in default[0]["involvedObject"]

    await api.patch(f"{ORG}/acme", {"spec": {"environments": ["prod", "nope"]}})
    invalid = await until(lambda: tenant_events(api, "acme-prod", "InvalidSpec"))
    assert "spec.environments[1]" in invalid[0]["message"]


async def test_the_home_namespace_is_one_a_session_without_mfa_can_read(api: Api, operator: Operator) -> None:

    await api.create(
        POLICY,
        policy_body(
            environments=[
                {"name": "prod", "quota": {"pods": "10"}, "mfa": {"required": True, "groupSuffix": ":mfa"}},
                {"name": "dev", "quota": {"pods": "10"}},
            ]
        ),
    )
    await api.create(ORG, org_body())
    await ready(api)
    assert await until(lambda: tenant_events(api, "acme-dev", "Reconciled"))
    assert await tenant_events(api, "acme-prod", "Reconciled") == []


async def test_an_optional_resource_not_served_is_not_an_api_error(api: Api, kube: Any) -> None:
    """troubleshooting.md, "API errors": the AppProject CRD missing (no Argo CD) is
    tenantry_resource_served 0, not a rising tenantry_api_errors_total (issue 20)."""
    before = metric_total("tenantry_api_errors_total", code="404")
    op = Operator(kube)
    await op.start()
    try:
        await api.create(ORG, org_body())
        await ready(api)
        assert metric_total("tenantry_resource_served", resource="appprojects") == 0
        assert metric_total("tenantry_api_errors_total", code="404") == before
    finally:
        await op.stop()
