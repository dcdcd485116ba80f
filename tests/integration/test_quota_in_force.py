"""An Organization is Ready only once each of its quotas is in force, and onboarding costs one
status write (issue 17).

The API server's quota admission enforces a ResourceQuota's status.hard, which
kube-controller-manager copies from spec.hard after the write that created it; until then the
namespace is not limited at all. The fake API server runs that controller (tests/fakeapi/quota.py)
with a per-namespace delay, so the order of things can be arranged.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.fakeapi.quota import QUOTAS
from tests.fakeapi.server import FakeApiServer
from tests.integration.conftest import ORG, Api, Operator, org_body, settled
from tests.integration.test_onboarding import condition, ready, until

ORGANIZATIONS = "tenantry.dev/v1alpha1/organizations"
STATUS = f"{ORG}/acme/status"
ENVIRONMENTS = ("acme-prod", "acme-dev")


def in_force(quota: dict[str, Any]) -> bool:
    return bool((quota.get("status") or {}).get("hard")) and quota["status"]["hard"] == quota["spec"]["hard"]


def quotas_in_force(kube: FakeApiServer) -> dict[str, bool]:
    return {ns: in_force(kube.objects[QUOTAS][(ns, "tenantry-quota")]) for ns in ENVIRONMENTS}


def status_writes(api: Api) -> int:
    return sum(1 for method, path in api.writes() if path == STATUS and method == "PATCH")


def lagging(kube: FakeApiServer, delays: dict[str, float]) -> None:
    assert kube.quota_system is not None  # every fake API server runs the quota controller
    kube.quota_system.sync_delay = delays


async def test_ready_only_once_every_quota_is_in_force_with_one_status_write(
    api: Api, operator: Operator, kube: FakeApiServer
) -> None:
    # acme-dev's quota comes into force 0.6 s after it was created (a busy controller).
    lagging(kube, {"acme-dev": 0.6})
    seen_ready_with: list[dict[str, bool]] = []

    def on_change(key: str, change: str, obj: dict[str, Any]) -> None:
        if key == ORGANIZATIONS and change != "DELETED":
            ready_now = (condition(obj, "Ready") or {}).get("status") == "True"
            if ready_now and not seen_ready_with:
                seen_ready_with.append(quotas_in_force(kube))

    kube.listeners.append(on_change)
    created = time.monotonic()
    await api.create(ORG, org_body())
    org = await ready(api)
    print(f"Ready {time.monotonic() - created:.2f}s after the create (dev's quota lags 0.6 s)")
    assert seen_ready_with == [dict.fromkeys(ENVIRONMENTS, True)], "Ready before a quota was in force"
    # The one status write carries the usage kube-controller-manager computed with status.hard.
    usage = {q["namespace"]: q for q in org["status"]["quota"]}
    assert usage["acme-dev"]["hard"] == kube.objects[QUOTAS][("acme-dev", "tenantry-quota")]["spec"]["hard"]
    assert usage["acme-dev"]["used"], "the usage comes with the same write"
    assert status_writes(api) == 1, "onboarding writes the status once: not Progressing, then Ready"
    # A restart right after onboarding has nothing held back to write.
    await settled(operator)  # the Ready Events are posted after the status write
    writes = len(api.writes())
    await operator.restart()
    await ready(api)
    await asyncio.sleep(1.0)
    assert len(api.writes()) == writes, api.writes()[writes:]


async def test_a_quota_not_in_force_after_the_grace_is_reported_then_ready_when_it_is(
    api: Api, kube: FakeApiServer
) -> None:
    lagging(kube, {"acme-dev": 3600.0})  # kube-controller-manager's quota controller is stuck
    op = Operator(kube)
    await op.start(quota_enforce_grace_seconds=0.5)
    try:
        await api.create(ORG, org_body())

        async def reported() -> Any:
            org = await api.get(f"{ORG}/acme")
            quota = condition(org, "QuotaReady") if org.get("status") else None
            return org if quota and quota["reason"] == "QuotaNotInForce" else None

        org = await until(reported, timeout=5.0)
        ready_now = condition(org, "Ready")
        assert ready_now is not None
        assert (ready_now["status"], ready_now["reason"]) == ("False", "Progressing")
        assert "ResourceQuota acme-dev/tenantry-quota not yet in force" in ready_now["message"]
        assert condition(org, "Stalled")["status"] == "False"  # type: ignore[index]
        assert kube.quota_system is not None
        kube.quota_system.sync("acme-dev", "tenantry-quota")  # the controller catches up
        await ready(api, timeout=5.0)
    finally:
        await op.stop()


async def test_past_the_grace_the_wait_is_reported_once_not_per_quota_coming_into_force(
    api: Api, kube: FakeApiServer
) -> None:
    # kube-controller-manager behind (a burst of onboarding): staging's and dev's quotas come
    # into force one after the other, long after the grace.
    lagging(kube, {"acme-staging": 3600.0, "acme-dev": 3600.0})
    op = Operator(kube)
    await op.start(quota_enforce_grace_seconds=0.3)
    try:
        await api.create(ORG, org_body(environments=["prod", "staging", "dev"]))

        async def reported() -> Any:
            org = await api.get(f"{ORG}/acme")
            quota = condition(org, "QuotaReady") if org.get("status") else None
            return quota if quota and quota["reason"] == "QuotaNotInForce" else None

        await until(reported, timeout=5.0)
        assert status_writes(api) == 1
        assert kube.quota_system is not None
        kube.quota_system.sync("acme-staging", "tenantry-quota")
        await asyncio.sleep(0.5)  # longer than the grace: the Organization was looked at again
        assert status_writes(api) == 1, "staging's quota in force (dev's not yet) is no write"
        kube.quota_system.sync("acme-dev", "tenantry-quota")
        await ready(api, timeout=5.0)
        assert status_writes(api) == 2
    finally:
        await op.stop()


async def test_while_the_quota_controller_works_through_a_backlog_nothing_is_written(
    api: Api, kube: FakeApiServer
) -> None:
    # A burst of onboarding: kube-controller-manager brings quotas into force one after the
    # other (others' first), acme's last. While it makes progress acme waits without a status
    # write, however long past the grace; once it stops, the wait is reported.
    others = [f"{org}-{env}" for org in ("beta", "gamma") for env in ("prod", "staging", "dev")]
    lagging(kube, dict.fromkeys([*others, "acme-dev"], 3600.0))
    op = Operator(kube)
    await op.start(quota_enforce_grace_seconds=0.4)
    try:
        for name in ("beta", "gamma"):
            await api.create(ORG, org_body(name, environments=["prod", "staging", "dev"]))
        await api.create(ORG, org_body())
        await asyncio.sleep(0.2)
        assert kube.quota_system is not None
        for namespace in others:  # one every 0.2 s: 1.2 s of progress, three graces
            kube.quota_system.sync(namespace, "tenantry-quota")
            await asyncio.sleep(0.2)
        assert status_writes(api) == 0, "acme's wait reported while the controller made progress"

        async def reported() -> Any:
            org = await api.get(f"{ORG}/acme")
            quota = condition(org, "QuotaReady") if org.get("status") else None
            return quota if quota and quota["reason"] == "QuotaNotInForce" else None

        await until(reported, timeout=5.0)  # the controller stopped: one grace later
    finally:
        await op.stop()


async def test_a_wait_is_reported_after_ten_graces_even_while_the_controller_makes_progress(
    api: Api, kube: FakeApiServer
) -> None:
    # A controller that keeps bringing others' quotas into force but never acme's: the wait is
    # not held back for ever (10 graces: 2 s here), it is reported while progress goes on.
    names = [f"org{i}" for i in range(8)]
    others = [f"{name}-{env}" for name in names for env in ("prod", "staging", "dev")]
    lagging(kube, dict.fromkeys([*others, "acme-dev"], 3600.0))
    op = Operator(kube)
    await op.start(quota_enforce_grace_seconds=0.2)
    try:
        for name in names:
            await api.create(ORG, org_body(name, environments=["prod", "staging", "dev"]))
        await api.create(ORG, org_body())

        async def progress() -> None:
            assert kube.quota_system is not None
            for namespace in others:  # one every 0.15 s: 3.6 s of progress
                kube.quota_system.sync(namespace, "tenantry-quota")
                await asyncio.sleep(0.15)

        controller = asyncio.create_task(progress())

        async def reported() -> Any:
            org = await api.get(f"{ORG}/acme")
            quota = condition(org, "QuotaReady") if org.get("status") else None
            return quota if quota and quota["reason"] == "QuotaNotInForce" else None

        await until(reported, timeout=10.0)
        assert not controller.done(), "reported only once the controller stopped making progress"
        await controller
    finally:
        await op.stop()
