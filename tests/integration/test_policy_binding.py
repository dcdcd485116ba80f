"""A TenancyPolicy's platform-admin ClusterRoleBinding (`tenantry:platform-admins:<policy>`)
lives as long as the policy: deleted while the operator runs, the binding we created goes with
it, reported by an Event; a same-named binding we did not create is never deleted, and a policy
deleted together with its CRD keeps its binding (as it keeps its Organizations' objects)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.integration.conftest import POLICY, R_POLICIES, Api, Operator, policy_body
from tests.integration.test_crd_lifecycle import served, uninstall
from tests.integration.test_lifecycle import events
from tests.integration.test_onboarding import until

CRB = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"
ADMINS = [{"kind": "Group", "name": "platform-team"}]


def binding_path(policy: str) -> str:
    return f"{CRB}/tenantry:platform-admins:{policy}"


async def gone(api: Api, path: str) -> bool:
    return await api.get(path) is None


async def policy_valid(api: Api, name: str) -> bool:
    policy = await api.get(f"{POLICY}/{name}")
    conds = ((policy or {}).get("status") or {}).get("conditions", [])
    return bool(conds and conds[0]["reason"] == "Valid")


async def test_a_deleted_policy_takes_its_platform_admin_binding_with_it(
    api: Api, operator: Operator
) -> None:
    await api.create(POLICY, policy_body("platform", rbac={"platformAdmins": ADMINS}))
    await until(lambda: api.get(binding_path("platform")))
    await api.delete(f"{POLICY}/platform")
    await until(lambda: gone(api, binding_path("platform")), timeout=5.0)
    unbound = await until(lambda: events(api, "PlatformAdminsUnbound"))
    assert unbound[0]["involvedObject"]["kind"] == "ClusterRoleBinding"
    assert "TenancyPolicy platform was deleted" in unbound[0]["message"]
    assert "Group platform-team" in unbound[0]["message"]


def handmade(policy: str) -> dict[str, Any]:
    """A binding someone made by hand, with the name and the labels of ours copied."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {
            "name": f"tenantry:platform-admins:{policy}",
            "labels": {"app.kubernetes.io/managed-by": "tenantry", "tenantry.dev/policy": policy},
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "auditors"}],
    }


async def test_a_binding_we_did_not_create_is_never_deleted(api: Api, operator: Operator) -> None:
    # A policy without platform admins renders no binding; the same-named binding is not ours.
    await api.create(CRB, handmade("bare"))
    await api.create(POLICY, policy_body("bare", rbac={"platformAdmins": []}))
    await until(lambda: policy_valid(api, "bare"))
    await api.delete(f"{POLICY}/bare")
    await until(lambda: gone(api, f"{POLICY}/bare"))
    # Something the operator does after the deletion, to know it has handled it.
    await api.create(POLICY, policy_body("marker", rbac={"platformAdmins": ADMINS}))
    await until(lambda: api.get(binding_path("marker")))
    await asyncio.sleep(0.5)
    assert (await api.get(binding_path("bare")))["roleRef"]["name"] == "view"
    assert await events(api, "PlatformAdminsUnbound") == []


async def test_a_policy_deleted_with_its_crd_keeps_its_binding(api: Api, operator: Operator) -> None:
    await api.create(POLICY, policy_body("platform", rbac={"platformAdmins": ADMINS}))
    await until(lambda: api.get(binding_path("platform")))
    await uninstall(api, "tenancypolicies", R_POLICIES, POLICY)
    await until(lambda: asyncio.sleep(0, served("tenancypolicies") == 0.0), timeout=10.0)
    await asyncio.sleep(0.5)
    assert await api.get(binding_path("platform")) is not None
