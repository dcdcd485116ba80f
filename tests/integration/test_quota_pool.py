"""The quota pool end to end against the fake API server with quota admission for pods
(tests/fakeapi/quota.py: pods checked against status.hard, status.used written with a new
resourceVersion, the quota controller copying spec.hard into status): capacity follows the
pods, the pool is never exceeded at any change the API server makes, conflicts are redone, a
restart writes nothing, a retained namespace gives its share back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from tenantry.api.quantity import parse_quantity
from tests.fakeapi.quota import QuotaSystem
from tests.fakeapi.server import FakeApiServer
from tests.integration.conftest import ORG, Api, Operator, org_body, settled
from tests.integration.test_lifecycle import events
from tests.integration.test_onboarding import ready, until

POOLED = ("acme-staging", "acme-dev")
TOTAL = 10


def quota_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/resourcequotas/tenantry-quota"


def pool_org(total: int = TOTAL, **more: Any) -> dict[str, Any]:
    return org_body(
        environments=["prod", "staging", "dev"],
        quotaPool={"environments": ["staging", "dev"], "total": {"pods": str(total)}, **more},
    )


def pod(name: str) -> dict[str, Any]:
    amounts = {"cpu": "10m", "memory": "16Mi"}
    resources = {"requests": amounts, "limits": amounts}
    return {
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "x", "resources": resources}]},
    }


class Watcher:
    """Checks the pool after every change the fake API server makes to a pooled quota: the sum of
    spec.hard, of status.hard (what admission enforces) and of status.used."""

    def __init__(self, kube: FakeApiServer, total: int) -> None:
        self.kube, self.total = kube, total
        self.violations: list[str] = []
        self.highest_used = 0
        kube.listeners.append(self.changed)

    def _sum(self, part: str, key: str) -> int:
        found = 0
        for namespace in POOLED:
            quota = self.kube.objects["v1/resourcequotas"].get((namespace, "tenantry-quota"))
            value = ((quota or {}).get(part) or {}).get(key, {}).get("pods")
            if quota is not None and value is None and part == "spec":
                return 10**9  # a missing key is unlimited
            found += int(parse_quantity(value)) if value is not None else 0
        return found

    def changed(self, key: str, _: str, obj: dict[str, Any]) -> None:
        if key != "v1/resourcequotas" or obj["metadata"].get("namespace") not in POOLED:
            return
        if all(
            ("v1/resourcequotas" in self.kube.objects)
            and (ns, "tenantry-quota") in self.kube.objects["v1/resourcequotas"]
            for ns in POOLED
        ):
            for part, field in (("spec", "hard"), ("status", "hard"), ("status", "used")):
                total = self._sum(part, field)
                if total > self.total:
                    self.violations.append(f"{part}.{field} adds up to {total} > {self.total}")
            self.highest_used = max(self.highest_used, self._sum("status", "used"))


@pytest_asyncio.fixture
async def quotas(kube: FakeApiServer) -> AsyncIterator[QuotaSystem]:
    assert kube.quota_system is not None  # every fake API server runs the quota controller
    yield kube.quota_system


async def calm(operator: Operator, quotas: QuotaSystem) -> None:
    """Nothing left to happen: the operator idle AND every quota in force (the quota controller
    copies spec.hard into status a moment after each write, which brings the operator back)."""
    while True:
        await settled(operator)
        stored = quotas.server.objects["v1/resourcequotas"].values()
        if all((q.get("status") or {}).get("hard") == q["spec"].get("hard") for q in stored):
            await asyncio.sleep(0.05)  # longer than the controller's lag: nothing new came
            if all((q.get("status") or {}).get("hard") == q["spec"].get("hard") for q in stored):
                await settled(operator)
                return
        await asyncio.sleep(0.01)


async def hard(api: Api, namespace: str) -> int:
    quota = await api.get(quota_path(namespace))
    return int(parse_quantity(quota["spec"]["hard"]["pods"]))


async def create_pods(api: Api, namespace: str, count: int, prefix: str) -> int:
    """Create pods as fast as they are admitted, retrying a refused one a little later (the
    operator gives the namespace more room); returns how many were admitted."""
    admitted = 0
    for i in range(count):
        for _ in range(50):
            async with api.session.post(
                api.base + f"/api/v1/namespaces/{namespace}/pods", json=pod(f"{prefix}-{i}")
            ) as response:
                if response.status == 201:
                    admitted += 1
                    break
                assert response.status == 403, await response.text()
            await asyncio.sleep(0.02)
    return admitted


async def test_a_pool_starts_from_its_split_and_reports_itself(
    api: Api, operator: Operator, quotas: QuotaSystem
) -> None:
    await api.create(ORG, pool_org())
    org = await ready(api)
    assert [await hard(api, ns) for ns in POOLED] == [5, 5]
    prod = await api.get(quota_path("acme-prod"))
    assert prod["spec"]["hard"]["pods"] == "200"  # not pooled: the policy's default
    pool = await until(lambda: _pool_status(api))
    assert pool["resources"] == [
        {"resource": "pods", "pool": "10", "hard": "10", "used": "0", "exhausted": False}
    ]
    assert [n["namespace"] for n in pool["namespaces"]] == list(POOLED)
    assert org["status"]["conditions"][0]["status"] == "True"


async def _pool_status(api: Api) -> Any:
    org = await api.get(f"{ORG}/acme")
    return (org.get("status") or {}).get("quotaPool")


async def test_capacity_follows_the_pods_and_the_pool_is_never_exceeded(
    api: Api, operator: Operator, quotas: QuotaSystem
) -> None:
    watcher = Watcher(api.kube, TOTAL)
    await api.create(ORG, pool_org())
    await ready(api)
    # dev takes everything staging does not use.
    assert await create_pods(api, "acme-dev", 9, "dev") == 9
    assert await hard(api, "acme-dev") >= 9
    assert await hard(api, "acme-staging") <= 1
    # staging wants some back: dev's unused share and then what dev releases.
    for i in range(5):
        await api.delete(f"/api/v1/namespaces/acme-dev/pods/dev-{i}")
    assert await create_pods(api, "acme-staging", 5, "staging") == 5
    assert watcher.violations == []
    assert watcher.highest_used <= TOTAL
    rebalanced = await until(lambda: events(api, "QuotaPoolRebalanced"))
    assert "acme-staging pods" in " ".join(e["message"] for e in rebalanced)


async def test_an_exhausted_pool_refuses_and_says_where(
    api: Api, operator: Operator, quotas: QuotaSystem
) -> None:
    await api.create(ORG, pool_org(total=4))
    await ready(api)
    assert await create_pods(api, "acme-dev", 4, "dev") == 4
    async with api.session.post(
        api.base + "/api/v1/namespaces/acme-dev/pods", json=pod("one-too-many")
    ) as response:
        assert response.status == 403
        assert "exceeded quota: tenantry-quota" in (await response.json())["message"]

    async def reported() -> list[str]:
        found = [e["message"] for e in await events(api, "QuotaPoolExhausted")]
        return [m for m in found if "acme-dev uses 4 of its pods limit 4" in m]

    assert await until(reported)


async def test_a_pod_where_headroom_is_left_writes_no_quota_and_a_restart_writes_nothing(
    api: Api, operator: Operator, quotas: QuotaSystem
) -> None:
    await api.create(ORG, pool_org(total=100))
    await ready(api)
    await calm(operator, quotas)
    before = len(api.writes())
    assert await create_pods(api, "acme-dev", 3, "dev") == 3
    await calm(operator, quotas)
    assert [w for w in api.writes()[before:] if "resourcequotas" in w[1]] == []
    await operator.restart()
    await calm(operator, quotas)
    after_restart = len(api.writes())
    await calm(operator, quotas)
    quota_writes = [w for w in api.writes()[after_restart:] if "resourcequotas" in w[1]]
    assert quota_writes == []


async def test_a_conflict_with_admission_is_redone_from_the_fresh_quota(
    api: Api, operator: Operator, quotas: QuotaSystem
) -> None:
    await api.create(ORG, pool_org())
    await ready(api)
    fault = api.kube.fail("PATCH", quota_path("acme-staging"), code=409, reason="Conflict", times=1)
    assert await create_pods(api, "acme-dev", 8, "dev") == 8
    assert fault.hits == 1
    assert await hard(api, "acme-dev") >= 8


async def test_a_retained_namespace_leaves_the_pool_and_gives_its_share_back(
    api: Api, operator: Operator, quotas: QuotaSystem
) -> None:
    await api.create(ORG, pool_org())
    await ready(api)
    assert await create_pods(api, "acme-staging", 2, "staging") == 2
    await api.patch(
        f"{ORG}/acme", {"spec": {"environments": ["prod", "dev"], "quotaPool": {"environments": ["dev"]}}}
    )

    async def released() -> bool:
        staging = await api.get(quota_path("acme-staging"))
        return staging["spec"]["hard"]["pods"] == "2" and "tenantry.dev/quota-pool" not in staging[
            "metadata"
        ].get("annotations", {})

    await until(released)
    assert await until(lambda: _hard_is(api, "acme-dev", TOTAL))
    assert await until(lambda: events(api, "QuotaPoolReleased"))


async def _hard_is(api: Api, namespace: str, value: int) -> bool:
    return await hard(api, namespace) == value


async def test_a_rebalanced_split_survives_a_restart_without_a_write(
    api: Api, operator: Operator, quotas: QuotaSystem
) -> None:
    """Server-side apply carries the live split: the initial split is never applied again."""
    await api.create(ORG, pool_org())
    await ready(api)
    assert await create_pods(api, "acme-dev", 9, "dev") == 9
    await operator.restart()  # may finish a rebalance under way (dev at its limit, room left)
    await calm(operator, quotas)
    taken = await hard(api, "acme-dev")
    assert taken >= 9
    before = len(api.writes())
    await operator.restart()
    await calm(operator, quotas)
    assert [w for w in api.writes()[before:] if "resourcequotas" in w[1]] == []
    assert await hard(api, "acme-dev") == taken


async def test_adding_shrinking_and_removing_a_pool_converge_safely(
    api: Api, operator: Operator, quotas: QuotaSystem
) -> None:
    plain = org_body(environments=["prod", "staging", "dev"])
    await api.create(ORG, plain)
    await ready(api)
    assert await create_pods(api, "acme-dev", 3, "dev") == 3
    assert [await hard(api, ns) for ns in POOLED] == [100, 50]  # the policy's fixed quotas
    # Added: the namespaces shrink into the pool, never below what they use.
    pool = {"environments": ["staging", "dev"], "total": {"pods": "8"}}
    await api.patch(f"{ORG}/acme", {"spec": {"quotaPool": pool}})
    assert await until(lambda: _sum_is(api, 8))
    assert await hard(api, "acme-dev") >= 3
    # Shrunk below what dev uses: dev keeps exactly its 3 pods (never below used), staging 0.
    await api.patch(f"{ORG}/acme", {"spec": {"quotaPool": {"total": {"pods": "2"}}}})
    assert await until(lambda: _sum_is(api, 3))
    assert [await hard(api, ns) for ns in POOLED] == [0, 3]
    # Removed: the fixed quotas again, and no pool annotation.
    await api.patch(f"{ORG}/acme", {"spec": {"quotaPool": None}})

    async def fixed() -> bool:
        dev = await api.get(quota_path("acme-dev"))
        annotations = dev["metadata"].get("annotations", {})
        return dev["spec"]["hard"]["pods"] == "50" and "tenantry.dev/quota-pool" not in annotations

    assert await until(fixed)
    org = await ready(api)
    assert "quotaPool" not in org["status"]


async def _sum_is(api: Api, total: int) -> bool:
    return sum([await hard(api, ns) for ns in POOLED]) == total


async def test_pods_in_both_namespaces_at_once_with_a_lagging_quota_controller(
    api: Api, operator: Operator, kube: FakeApiServer
) -> None:
    """The quota controller copies spec.hard into status late (admission enforces status), and
    staging's quota later than dev's: a grow of dev waits until staging's shrink is enforced, so
    no sum (spec, status, used) ever exceeds the pool."""
    assert kube.quota_system is not None
    kube.quota_system.sync_delay = {"acme-staging": 0.4, "acme-dev": 0.05}
    watcher = Watcher(kube, TOTAL)
    await api.create(ORG, pool_org())
    await ready(api)

    async def enforced() -> bool:  # until then Kubernetes enforces nothing (no status.hard)
        quotas = [await api.get(quota_path(ns)) for ns in POOLED]
        return all(q.get("status") for q in quotas)

    await until(enforced)
    dev, staging = await asyncio.gather(
        create_pods(api, "acme-dev", 6, "dev"), create_pods(api, "acme-staging", 4, "staging")
    )
    assert (dev, staging) == (6, 4)
    assert watcher.violations == []
    assert watcher.highest_used == TOTAL
