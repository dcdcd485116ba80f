"""Access only ever shrinks toward the policy: an Organization made invalid keeps no binding the
current policy and spec forbid (issue 20), against the fake API server."""

from __future__ import annotations

import time
from typing import Any

from tests.integration.conftest import ORG, POLICY, Api, Operator, org_body, policy_body
from tests.integration.test_lifecycle import events
from tests.integration.test_onboarding import condition, ready, until

RB = "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings/{name}"
MEMBER_CRB = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/tenantry:member:acme"
# Issue 20: within 5 s of the tightening.
WITHIN = 5.0
MEMBERS = {
    "admins": [{"kind": "Group", "name": "acme-admins"}],
    "developers": [
        {"kind": "Group", "name": "acme-devs"},
        {"kind": "ServiceAccount", "name": "ci", "namespace": "acme-ci"},
    ],
    "viewers": [{"kind": "User", "name": "auditor@acme.example"}],
}


def environments(mfa: bool) -> list[dict[str, Any]]:
    prod: dict[str, Any] = {"name": "prod", "quota": {"pods": "10"}}
    if mfa:
        prod["mfa"] = {"required": True, "groupSuffix": ":mfa"}
    return [prod, {"name": "dev", "quota": {"pods": "10"}}]


async def subjects(api: Api, ns: str, name: str) -> list[str] | None:
    binding = await api.get(RB.format(ns=ns, name=name))
    return None if binding is None else [s["name"] for s in binding["subjects"]]


async def test_a_policy_tightening_withdraws_forbidden_access_within_five_seconds(
    api: Api, operator: Operator
) -> None:
    await api.create(POLICY, policy_body(environments=environments(mfa=False)))
    await api.create(ORG, org_body(members=MEMBERS))
    await ready(api)
    assert await subjects(api, "acme-prod", "tenantry:organization-admins") == ["acme-admins"]
    assert await subjects(api, "acme-prod", "tenantry:viewers") == ["auditor@acme.example"]

    started = time.monotonic()
    await api.patch(f"{POLICY}/default", {"spec": {"environments": environments(mfa=True)}})

    async def shrunk() -> bool:
        return (
            await subjects(api, "acme-prod", "tenantry:organization-admins") == ["acme-admins:mfa"]
            and await subjects(api, "acme-prod", "tenantry:developers") == ["acme-devs:mfa"]
            and await subjects(api, "acme-prod", "tenantry:viewers") is None
        )

    await until(shrunk, timeout=WITHIN)
    print(f"forbidden access withdrawn {time.monotonic() - started:.2f}s after the tightening")
    # Where MFA is not required the User and the ServiceAccount keep their access (the CI case).
    assert await subjects(api, "acme-dev", "tenantry:developers") == ["acme-devs", "ci"]
    assert await subjects(api, "acme-dev", "tenantry:viewers") == ["auditor@acme.example"]
    # The namespace carries the MFA label the admission policy selects on.
    prod = await api.get("/api/v1/namespaces/acme-prod")
    assert prod["metadata"]["labels"]["tenantry.dev/mfa"] == "required"

    org = await api.get(f"{ORG}/acme")
    ready_cond = condition(org, "Ready")
    assert ready_cond["status"] == "False" and ready_cond["reason"] == "InvalidSpec"
    assert "left out" in ready_cond["message"] and "spec.members.viewers[0]" in ready_cond["message"]
    withdrawn = await until(lambda: events(api, "AccessWithdrawn"))
    message = withdrawn[0]["message"]
    assert "RoleBinding acme-prod/tenantry:viewers deleted" in message
    assert "User auditor@acme.example not bound in 'acme-prod'" in message
    assert "ServiceAccount acme-ci/ci not bound in 'acme-prod'" in message

    # Loosened again: the Organization is valid and everything comes back.
    await api.patch(f"{POLICY}/default", {"spec": {"environments": environments(mfa=False)}})
    await ready(api)
    assert await subjects(api, "acme-prod", "tenantry:viewers") == ["auditor@acme.example"]
    assert await subjects(api, "acme-prod", "tenantry:organization-admins") == ["acme-admins"]


async def test_a_member_removed_in_an_otherwise_invalid_edit_loses_access(
    api: Api, operator: Operator
) -> None:
    await api.create(POLICY, policy_body(environments=environments(mfa=False)))
    await api.create(ORG, org_body(members=MEMBERS))
    await ready(api)
    # One edit: the viewer removed, and a quota raised without approval (invalid).
    members = {**MEMBERS, "viewers": []}
    await api.patch(f"{ORG}/acme", {"spec": {"members": members, "quota": {"prod": {"pods": "20"}}}})
    await until(lambda: _gone(api, "acme-prod", "tenantry:viewers"), timeout=WITHIN)
    assert await _gone(api, "acme-dev", "tenantry:viewers")
    org = await api.get(f"{ORG}/acme")
    assert condition(org, "Ready")["reason"] == "InvalidSpec"
    # Everything else stays as last applied: the quota was not raised.
    quota = await api.get("/api/v1/namespaces/acme-prod/resourcequotas/tenantry-quota")
    assert quota["spec"]["hard"]["pods"] == "10"
    member = await api.get(MEMBER_CRB)
    assert "auditor@acme.example" not in [s["name"] for s in member["subjects"]]


async def test_members_that_cannot_be_read_leave_nobody_bound(api: Api, operator: Operator) -> None:
    await api.create(ORG, org_body(members=MEMBERS))
    await ready(api)
    # The fake does not validate the CRD schema: a member that no model reads.
    await api.patch(f"{ORG}/acme", {"spec": {"members": {"admins": [{"kind": "Robot", "name": "r2"}]}}})
    for ns in ("acme-prod", "acme-dev"):
        for name in ("tenantry:organization-admins", "tenantry:developers", "tenantry:viewers"):
            await until(lambda ns=ns, name=name: _gone(api, ns, name), timeout=WITHIN)
    await until(lambda: _absent(api, MEMBER_CRB), timeout=WITHIN)
    withdrawn = await until(lambda: events(api, "AccessWithdrawn"))
    assert "spec.members: cannot be read, so nobody is bound" in withdrawn[0]["message"]


async def test_an_unreadable_quota_keeps_the_access_the_members_still_have(
    api: Api, operator: Operator
) -> None:
    await api.create(ORG, org_body(members=MEMBERS))
    await ready(api)
    await api.patch(f"{ORG}/acme", {"spec": {"quota": {"prod": {"pods": "many"}}}})
    await until(lambda: _invalid(api))
    assert await subjects(api, "acme-prod", "tenantry:organization-admins") == ["acme-admins"]
    assert await events(api, "AccessWithdrawn") == []


async def _gone(api: Api, ns: str, name: str) -> bool:
    return await subjects(api, ns, name) is None


async def _absent(api: Api, path: str) -> bool:
    return await api.get(path) is None


async def _invalid(api: Api) -> bool:
    org = await api.get(f"{ORG}/acme")
    cond = condition(org, "Ready")
    return bool(cond and cond["reason"] == "InvalidSpec")


QUOTA_STATUS = "/api/v1/namespaces/acme-prod/resourcequotas/tenantry-quota/status"


async def test_while_invalid_status_keeps_saying_which_namespaces_exist_and_their_quota_use(
    api: Api, kube: Any
) -> None:
    # Nothing is applied while the spec is invalid, but the namespaces stay, and so does their
    # quota use: status must keep telling the truth about them (and keep it fresh).
    op = Operator(kube)
    await op.start(quota_status_interval_seconds=1.0)
    try:
        await api.create(POLICY, policy_body(environments=environments(mfa=False)))
        await api.create(ORG, org_body(members=MEMBERS))
        valid = await ready(api)
        namespaces = valid["status"]["namespaces"]
        assert [n["name"] for n in namespaces] == ["acme-prod", "acme-dev"]
        await api.patch(f"{ORG}/acme", {"spec": {"quota": {"prod": {"pods": "20"}}}})
        await until(lambda: _invalid(api))
        org = await api.get(f"{ORG}/acme")
        assert org["status"]["namespaces"] == namespaces
        assert {q["namespace"] for q in org["status"]["quota"]} == {"acme-prod", "acme-dev"}
        assert org["status"]["guardrails"] == valid["status"]["guardrails"]

        # Quota use moves while invalid (the resourcequota controller's write): status follows.
        await api.request(
            "PATCH",
            QUOTA_STATUS,
            {"status": {"hard": {"pods": "10"}, "used": {"pods": "7"}}},
            "application/merge-patch+json",
        )

        async def used_reported() -> bool:
            org = await api.get(f"{ORG}/acme")
            usage = {q["environment"]: q for q in org["status"].get("quota", [])}
            return usage.get("prod", {}).get("used", {}).get("pods") == "7"

        await until(used_reported, timeout=1.0 + 3.0)

        # Without its policy (PolicyNotFound) the same holds.
        await api.patch(f"{ORG}/acme", {"spec": {"quota": None, "policy": "absent"}})

        async def policy_not_found() -> bool:
            cond = condition(await api.get(f"{ORG}/acme"), "Ready")
            return bool(cond and cond["reason"] == "PolicyNotFound")

        await until(policy_not_found)
        org = await api.get(f"{ORG}/acme")
        assert org["status"]["namespaces"] == namespaces
        assert {q["namespace"] for q in org["status"]["quota"]} == {"acme-prod", "acme-dev"}
    finally:
        await op.stop()
