"""Production access against the fake API server: MFA forms of bindings, a grant bound only
once approved and removed at its expiry (measured), also when it expired during a restart."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

from tenantry.reconcile.queue import Priority
from tests.conftest import grant_spec
from tests.integration.conftest import (
    ORG,
    POLICY,
    Api,
    Operator,
    metric_total,
    org_body,
    policy_body,
    settled,
)
from tests.integration.test_lifecycle import events
from tests.integration.test_onboarding import ready, until

RB = "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings/{name}"
GRANT = RB.format(ns="acme-prod", name="tenantry:grant:inc-4711")
# How long after its expiry a grant's binding may still exist (the integration runs show ~0.1 s).
EXPIRY_SLACK = 2.0


def access_policy() -> dict[str, Any]:
    return policy_body(
        environments=[
            {"name": "prod", "quota": {"pods": "10"}, "mfa": {"required": True, "groupSuffix": ":mfa"}},
            {"name": "dev", "quota": {"pods": "10"}, "developerExec": True},
        ],
        access={"maxGrantHours": 1, "approvers": [{"kind": "User", "name": "lead@acme.example"}]},
    )


def grant(expires: dt.datetime, approved: bool) -> dict[str, Any]:
    approved_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5) if approved else None
    return grant_spec(expires=expires, approved_at=approved_at)


async def gone_after(api: Api, path: str, expires: dt.datetime) -> float:
    async def gone() -> bool:
        return await api.get(path) is None

    await until(gone, timeout=(expires - dt.datetime.now(dt.UTC)).total_seconds() + 10)
    return (dt.datetime.now(dt.UTC) - expires).total_seconds()


async def test_mfa_bindings_and_a_grant_from_request_to_expiry(api: Api, operator: Operator) -> None:
    await api.create(POLICY, access_policy())
    # Whole seconds (RFC 3339 in the spec): a few seconds ahead.
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=4)).replace(microsecond=0)
    await api.create(
        ORG,
        org_body(
            members={"developers": [{"kind": "Group", "name": "acme-devs"}]},
            access={"grants": [grant(expires, approved=False)]},
        ),
    )
    org = await ready(api)
    devs = await api.get(RB.format(ns="acme-prod", name="tenantry:developers"))
    assert devs["subjects"][0]["name"] == "acme-devs:mfa"
    dev_devs = await api.get(RB.format(ns="acme-dev", name="tenantry:developers"))
    assert dev_devs["subjects"][0]["name"] == "acme-devs"
    # Requested, not approved: nothing bound.
    assert await api.get(GRANT) is None
    assert org["status"]["grants"][0]["phase"] == "Pending"
    assert await until(lambda: events(api, "GrantRequested"))

    org["spec"]["access"]["grants"] = [grant(expires, approved=True)]
    await api.patch(f"{ORG}/acme", {"spec": {"access": org["spec"]["access"]}})
    binding = await until(lambda: api.get(GRANT))
    assert binding["roleRef"]["name"] == "tenantry:developer-exec"
    assert binding["subjects"] == [
        {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "dana:mfa"}
    ]
    active = await until(lambda: events(api, "GrantActive"))
    assert (
        "approved by lead@acme.example" in active[0]["message"] and "ticket INC-4711" in active[0]["message"]
    )
    status = (await api.get(f"{ORG}/acme"))["status"]
    assert status["grants"][0]["phase"] == "Active"
    assert metric_total("tenantry_active_grants", organization="acme", environment="prod") == 1

    expired_before = metric_total("tenantry_grants_expired_total", environment="prod")
    late = await gone_after(api, GRANT, expires)
    assert late < EXPIRY_SLACK, f"grant binding still there {late:.2f}s after its expiry"
    print(f"grant binding removed {late:.2f}s after its expiry")
    assert await until(lambda: events(api, "GrantExpired"))
    assert metric_total("tenantry_grants_expired_total", environment="prod") == expired_before + 1
    assert metric_total("tenantry_active_grants", organization="acme", environment="prod") == 0
    # The member bindings stay.
    assert await api.get(RB.format(ns="acme-prod", name="tenantry:developers")) is not None


async def test_a_grant_that_expired_during_a_restart_is_removed_at_start(
    api: Api, operator: Operator
) -> None:
    await api.create(POLICY, access_policy())
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)).replace(microsecond=0)
    await api.create(
        ORG,
        org_body(
            members={"developers": [{"kind": "Group", "name": "acme-devs"}]},
            access={"grants": [grant(expires, approved=True)]},
        ),
    )
    await until(lambda: api.get(GRANT))
    await until(lambda: _phase(api, "Active"))
    await operator.stop()
    await asyncio.sleep(max(0.0, (expires - dt.datetime.now(dt.UTC)).total_seconds()) + 0.5)
    assert await api.get(GRANT) is not None  # nobody removed it while the operator was down
    started = time.monotonic()
    await operator.start()
    await until(lambda: _gone(api))
    assert time.monotonic() - started < 5.0
    assert await until(lambda: events(api, "GrantExpired"))


async def _phase(api: Api, phase: str) -> bool:
    org = await api.get(f"{ORG}/acme")
    return [g["phase"] for g in (org.get("status") or {}).get("grants", [])] == [phase]


async def _gone(api: Api) -> bool:
    return await api.get(GRANT) is None


async def test_a_revoked_grant_is_removed_and_recorded(api: Api, operator: Operator) -> None:
    await api.create(POLICY, access_policy())
    expires = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(minutes=30)
    await api.create(
        ORG,
        org_body(
            members={"developers": [{"kind": "Group", "name": "acme-devs"}]},
            access={"grants": [grant(expires, approved=True)]},
        ),
    )
    await until(lambda: api.get(GRANT))
    await api.patch(f"{ORG}/acme", {"spec": {"access": {"grants": []}}})
    await until(lambda: _gone(api))
    revoked = await until(lambda: events(api, "GrantRevoked"))
    assert "revoked" in revoked[0]["message"]
    # Reported once: later reconciles (a resync, the binding's own DELETED event) see status
    # without the grant.
    await operator.runtime.events.enqueue_all(Priority.RESYNC)  # type: ignore[union-attr]
    await settled(operator)
    assert len(await events(api, "GrantRevoked")) == 1
    assert not (await api.get(f"{ORG}/acme"))["status"].get("grants")


async def test_a_grant_is_reported_once_when_the_status_waited_for_a_quota(
    api: Api, operator: Operator, kube: Any
) -> None:
    # The first status write waits for acme-dev's quota to come into force (a lagging
    # controller): the grant's Event comes with that write, not once per pass before it.
    assert kube.quota_system is not None
    kube.quota_system.sync_delay = {"acme-dev": 0.5}
    await api.create(POLICY, access_policy())
    expires = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(minutes=30)
    await api.create(
        ORG,
        org_body(
            members={"developers": [{"kind": "Group", "name": "acme-devs"}]},
            access={"grants": [grant(expires, approved=True)]},
        ),
    )
    await ready(api)
    await settled(operator)
    assert len(await events(api, "GrantActive")) == 1
    # Revoked right away: reported, as status recorded the grant.
    await api.patch(f"{ORG}/acme", {"spec": {"access": {"grants": []}}})
    await until(lambda: _gone(api))
    await until(lambda: events(api, "GrantRevoked"))
