"""Server-side apply as the API server does it for our one field manager (modelled by the fake,
see tests/fakeapi/fields.py; the e2e suite checks the same on a real cluster)."""

from __future__ import annotations

from tests.integration.conftest import ORG, POLICY, Api, Operator, org_body, policy_body
from tests.integration.test_lifecycle import QUOTA
from tests.integration.test_onboarding import ready, until


async def test_quota_keys_dropped_from_the_policy_are_removed_from_the_quota(
    api: Api, operator: Operator
) -> None:
    await api.create(ORG, org_body())
    await ready(api)
    assert len((await api.get(QUOTA))["spec"]["hard"]) > 1  # the built-in default's keys
    environments = [{"name": "prod", "quota": {"pods": "7"}}, {"name": "dev", "quota": {"pods": "3"}}]
    await api.create(POLICY, policy_body("e2e", environments=environments))
    await api.patch(f"{ORG}/acme", {"spec": {"policy": "e2e"}})

    async def exactly_pods() -> bool:
        return (await api.get(QUOTA))["spec"]["hard"] == {"pods": "7"}

    await until(exactly_pods)


async def test_labels_someone_else_set_on_our_namespace_are_left_alone(api: Api, operator: Operator) -> None:
    await api.create(ORG, org_body())
    await ready(api)
    namespace = "/api/v1/namespaces/acme-prod"
    await api.patch(namespace, {"metadata": {"labels": {"team.example.com/cost-center": "42"}}})
    await api.patch(f"{ORG}/acme", {"spec": {"displayName": "Acme Corp"}})  # a re-apply of acme
    await ready(api)
    labels = (await api.get(namespace))["metadata"]["labels"]
    assert labels["team.example.com/cost-center"] == "42"
