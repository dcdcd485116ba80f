"""Drift is every difference from the rendering (kube/drift.py): fields another manager adds
inside what we own, and fields we applied before and no longer render, are healed, each
reported with its field path. Over HTTP against the fake, which models server-side apply's
field ownership and atomic structs as the real API server does (tests/fakeapi/fields.py;
tests/e2e/test_drift.py runs the same edits on a real one)."""

from __future__ import annotations

from typing import Any

from tests.integration.conftest import ORG, POLICY, Api, Operator, org_body, policy_body
from tests.integration.test_lifecycle import NETPOL, QUOTA, events
from tests.integration.test_onboarding import ready, until

MERGE = "application/merge-patch+json"
NAMESPACE = "/api/v1/namespaces/acme-prod"
MEMBER_ROLE = "/apis/rbac.authorization.k8s.io/v1/clusterroles/tenantry:member:acme"


async def intrude(api: Api, path: str, patch: dict[str, Any]) -> Any:
    """`kubectl patch --type=merge --field-manager=intruder`."""
    return await api.request("PATCH", f"{path}?fieldManager=intruder", patch, MERGE)


async def drift_messages(api: Api) -> list[str]:
    return [e["message"] for e in await events(api, "DriftCorrected")]


async def test_a_narrowed_default_deny_is_restored_and_reported_with_its_field_path(
    api: Api, operator: Operator
) -> None:
    await api.create(ORG, org_body())
    await ready(api)
    edited = await intrude(api, NETPOL, {"spec": {"podSelector": {"matchLabels": {"x": "y"}}}})
    assert edited["spec"]["podSelector"] == {"matchLabels": {"x": "y"}}

    async def healed() -> bool:
        return (await api.get(NETPOL))["spec"]["podSelector"] == {}

    await until(healed, timeout=5.0)
    messages = await until(lambda: drift_messages(api))
    assert messages == [
        "NetworkPolicy acme-prod/tenantry-default-deny was modified: spec.podSelector.matchLabels; "
        "restored to the desired state"
    ]
    owners = {m["manager"] for m in (await api.get(NETPOL))["metadata"]["managedFields"]}
    assert owners == {"tenantry"}


async def test_a_key_another_manager_added_to_our_quota_is_removed(api: Api, operator: Operator) -> None:
    await api.create(ORG, org_body())
    await ready(api)
    await intrude(api, QUOTA, {"spec": {"hard": {"count/secrets": "1000"}}})

    async def healed() -> bool:
        return "count/secrets" not in (await api.get(QUOTA))["spec"]["hard"]

    await until(healed, timeout=5.0)
    messages = await until(lambda: drift_messages(api))
    assert 'was modified: spec.hard["count/secrets"]' in messages[0]
    # Removed by a merge patch that carried the forced apply's resourceVersion as precondition.
    patches = [
        r.body
        for r in api.kube.requests
        if r.verb == "patch" and r.path.endswith("/resourcequotas/tenantry-quota") and not r.query
    ]
    assert patches[-1]["spec"] == {"hard": {"count/secrets": None}}
    assert patches[-1]["metadata"]["resourceVersion"]


async def test_a_label_of_ours_someone_added_is_removed(api: Api, operator: Operator) -> None:
    await api.create(ORG, org_body())
    await ready(api)
    await intrude(api, NAMESPACE, {"metadata": {"labels": {"tenantry.dev/orphaned": "true"}}})

    async def healed() -> bool:
        return "tenantry.dev/orphaned" not in (await api.get(NAMESPACE))["metadata"]["labels"]

    await until(healed, timeout=5.0)
    assert 'metadata.labels["tenantry.dev/orphaned"]' in (await until(lambda: drift_messages(api)))[0]


async def test_an_aggregation_rule_added_to_the_member_role_is_removed(api: Api, operator: Operator) -> None:
    # The aggregation controller would rewrite the role's rules from every matching ClusterRole.
    await api.create(ORG, org_body())
    await ready(api)
    selector = {"clusterRoleSelectors": [{"matchLabels": {"rbac.example.com/aggregate-to-acme": "true"}}]}
    await intrude(api, MEMBER_ROLE, {"aggregationRule": selector})

    async def healed() -> bool:
        return "aggregationRule" not in await api.get(MEMBER_ROLE)

    await until(healed, timeout=5.0)
    assert "was modified: aggregationRule" in (await until(lambda: drift_messages(api)))[0]


async def test_a_quota_key_dropped_alone_from_the_policy_goes(api: Api, operator: Operator) -> None:
    quota = {"pods": "7", "services.nodeports": "0"}
    await api.create(
        POLICY,
        policy_body("p", environments=[{"name": "prod", "quota": quota}, {"name": "dev", "quota": quota}]),
    )
    await api.create(ORG, org_body(policy="p"))
    await ready(api)
    assert (await api.get(QUOTA))["spec"]["hard"] == quota
    await api.patch(
        f"{POLICY}/p",
        {
            "spec": {
                "environments": [{"name": "prod", "quota": {"pods": "7"}}, {"name": "dev", "quota": quota}]
            }
        },
    )

    async def dropped() -> bool:
        return (await api.get(QUOTA))["spec"]["hard"] == {"pods": "7"}

    await until(dropped, timeout=5.0)
    assert await drift_messages(api) == [], "a policy change is an update, not drift"


async def test_a_namespace_label_dropped_from_the_policy_goes_and_others_labels_stay(
    api: Api, operator: Operator
) -> None:
    await api.create(
        POLICY,
        policy_body(
            "p",
            namespaceLabels={"cost-center": "42"},
            environments=[{"name": "prod", "quota": {"pods": "7"}}],
        ),
    )
    await api.create(ORG, org_body(policy="p", environments=["prod"]))
    await ready(api)
    await intrude(api, NAMESPACE, {"metadata": {"labels": {"team.example.com/owner": "x"}}})
    assert (await api.get(NAMESPACE))["metadata"]["labels"]["cost-center"] == "42"
    await api.patch(f"{POLICY}/p", {"spec": {"namespaceLabels": None}})

    async def dropped() -> bool:
        return "cost-center" not in (await api.get(NAMESPACE))["metadata"]["labels"]

    await until(dropped, timeout=5.0)
    assert (await api.get(NAMESPACE))["metadata"]["labels"]["team.example.com/owner"] == "x"


async def test_a_drift_is_healed_while_every_worker_waits_on_a_loaded_api_server(api: Api, kube: Any) -> None:
    # The drift lane: a worker that only heals. Here the one general worker is stuck in beta's
    # onboarding (the API server does not answer its writes), as every worker is during a burst
    # of onboarding on a loaded API server; a deleted NetworkPolicy of acme must not wait for it.
    op = Operator(kube)
    await op.start(workers=1)
    hold = kube.hold("PATCH", "/api/v1/namespaces/beta-")
    try:
        await api.create(ORG, org_body())
        await ready(api)
        await api.create(ORG, org_body("beta"))
        await until(lambda: _true(hold.held > 0))
        await api.delete(NETPOL)
        await until(lambda: api.get(NETPOL), timeout=3.0)
        assert hold.held and not hold.released.is_set(), "healed while beta's onboarding still waits"
        hold.release()
        await ready(api, "beta")
    finally:
        hold.release()
        await op.stop()


async def _true(value: bool) -> bool:
    return value
