"""Onboarding, spec changes and status, against a fake API server over HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

from tenantry.reconcile.queue import Priority
from tests.integration.conftest import ORG, Api, Operator, org_body, reconciles, settled


def condition(org: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for cond in ((org or {}).get("status") or {}).get("conditions", []):
        if cond["type"] == type_:
            return cond
    return None


async def ready(api: Api, name: str = "acme", timeout: float = 10.0) -> dict[str, Any]:
    async def check() -> Any:
        org = await api.get(f"{ORG}/{name}")
        cond = condition(org, "Ready")
        return (
            org
            if cond
            and cond["status"] == "True"
            and org["status"].get("observedGeneration") == org["metadata"]["generation"]
            else None
        )

    return await until(check, timeout)


async def until(check: Any, timeout: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached in {timeout}s")
        await asyncio.sleep(0.02)


async def test_onboarding_creates_every_rendered_object(api: Api, operator: Operator) -> None:
    await api.create(ORG, org_body())
    org = await ready(api)
    for ns in ("acme-prod", "acme-dev"):
        namespace = await api.get(f"/api/v1/namespaces/{ns}")
        assert namespace["metadata"]["labels"]["organization"] == "acme"
        assert await api.get(f"/api/v1/namespaces/{ns}/resourcequotas/tenantry-quota")
        assert await api.get(f"/api/v1/namespaces/{ns}/limitranges/tenantry-limits")
        assert await api.get(
            f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/tenantry-default-deny"
        )
        binding = await api.get(
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings/tenantry:organization-admins"
        )
        assert binding["roleRef"]["name"] == "tenantry:organization-admin"
    assert "tenantry.dev/finalizer" in org["metadata"]["finalizers"]
    assert [n["phase"] for n in org["status"]["namespaces"]] == ["Active", "Active"]
    assert {c["type"] for c in org["status"]["conditions"]} >= {
        "Ready",
        "Stalled",
        "Reconciling",
        "QuotaReady",
        "NetworkReady",
        "RBACReady",
        "NamespacesReady",
    }


async def test_a_no_op_resync_makes_zero_writes(api: Api, operator: Operator) -> None:
    await api.create(ORG, org_body())
    await ready(api)
    await settled(operator)
    before = len(api.writes())
    assert before > 0, "the onboarding writes are seen (else this test could not fail)"
    assert operator.runtime is not None and operator.runtime.queue is not None
    done = reconciles()
    await operator.runtime.queue.put("acme", Priority.RESYNC)
    await settled(operator, reconciled_more_than=done)  # the resync really ran
    assert api.writes()[before:] == []


async def test_objects_are_applied_in_waves_namespace_guardrails_rest_bindings(
    api: Api, operator: Operator
) -> None:
    # The Namespaces before what lives in them (the API server refuses the rest otherwise: the
    # fake models NamespaceLifecycle), the guardrails ConfigMaps before what they guard, roles
    # before the bindings that bind them; the objects of one wave go out concurrently.
    await api.create(ORG, org_body())
    await ready(api)

    def wave(path: str) -> int:
        if path.startswith("/api/v1/namespaces/") and path.count("/") == 4:
            return 0
        if "/configmaps/" in path:
            return 1
        return 3 if "rolebindings/" in path else 2

    applied = [path for method, path in api.writes() if method == "PATCH" and "/organizations/" not in path]
    waves = [wave(path) for path in applied]
    # Per namespace: itself, ConfigMap, quota, limits, 4 NetworkPolicies, the admins' 2 RoleBindings;
    # then the member ClusterRole and its binding.
    assert len(applied) == 22
    assert waves == sorted(waves), list(zip(waves, applied, strict=True))
    assert set(waves) == {0, 1, 2, 3}


async def test_an_organization_created_with_its_finalizer_gets_no_finalizer_write(
    api: Api, operator: Operator
) -> None:
    # manifests/admission/finalizer: the API server sets the finalizer at create (1.36), and the
    # operator's first reconcile then has nothing to add (one request fewer per Organization).
    body = org_body()
    body["metadata"]["finalizers"] = ["tenantry.dev/finalizer"]
    await api.create(ORG, body)
    await ready(api)
    assert [w for w in api.writes() if w == ("PATCH", f"{ORG}/acme")] == []
