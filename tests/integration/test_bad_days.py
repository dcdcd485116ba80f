"""An API server's bad days, at the TCP level and in its answers: connections dropped in the
middle of requests and watches, new connections refused for a while, latency, an admission
policy refusing writes for a while, throttling. The operator talks to the fake API server
through a fault-injecting proxy (tests/faultproxy.py); the test's own requests go direct.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import pytest_asyncio

from tenantry.kube.client import ApiError, Connection, Retry
from tenantry.kube.lease import LeaseTimings
from tenantry.reconcile.config import Config
from tenantry.reconcile.queue import Priority
from tenantry.reconcile.runtime import Runtime
from tests.faultproxy import FaultProxy
from tests.integration.conftest import ORG, Api, Operator, org_body, reconciles, settled
from tests.integration.kopf_harness import eventually
from tests.integration.test_leadership import LEASE, writes_by
from tests.integration.test_onboarding import condition, ready, until
from tests.unit.helpers import TODAY

NETPOL = "/apis/networking.k8s.io/v1/namespaces/acme-prod/networkpolicies/tenantry-default-deny"
LIMITS = "/api/v1/namespaces/acme-dev/limitranges/tenantry-limits"
FAST = LeaseTimings(duration=3, renew_deadline=2.0, retry=0.25, request_timeout=0.5)


@pytest_asyncio.fixture
async def proxy(api: Api) -> AsyncIterator[FaultProxy]:
    target = urlsplit(api.kube.url)
    assert target.hostname is not None and target.port is not None
    async with FaultProxy(target.hostname, target.port) as running:
        yield running


async def through(operator: Operator, proxy: FaultProxy, **config: Any) -> Runtime:
    operator.server = proxy.url
    return await operator.restart(max_backoff=0.5, **config)


def alive(runtime: Runtime) -> None:
    """Every long-running task still runs, and the liveness probe would say so."""
    names = {task.get_name() for task in runtime.tasks}
    assert {"tenantry events", "tenantry resync", "tenantry worker 0"} <= names, names
    assert any(n.startswith("tenantry watch ") for n in names), names
    assert runtime.problems() == []


async def test_every_connection_dropped_and_refused_for_a_while_then_drift_heals(
    api: Api, operator: Operator, proxy: FaultProxy
) -> None:
    await api.create("/api/v1/namespaces", {"metadata": {"name": "tenantry-system"}})
    runtime = await through(operator, proxy, leader_election=True, identity="one", lease_timings=FAST)
    await asyncio.wait_for(runtime.active.wait(), timeout=10)
    await api.create(ORG, org_body())
    await ready(api)

    # The API server restarts: every connection (watches, the Lease renewal) is reset, and new
    # ones are refused for 1.5 s, shorter than the renew deadline. Meanwhile someone deletes a
    # NetworkPolicy (the watch that would tell is down).
    await proxy.refuse()
    await api.delete(NETPOL)
    await asyncio.sleep(1.5)
    await proxy.accept()
    back = time.monotonic()
    await until(lambda: api.get(NETPOL), timeout=10)
    healed = time.monotonic() - back
    await api.create(ORG, org_body("beta"))
    await ready(api, "beta")
    assert healed < 5, healed
    alive(runtime)
    assert (await api.get(LEASE))["spec"]["holderIdentity"] == "one"


async def test_a_replica_started_while_the_api_server_is_down_starts_once_it_is_back(
    api: Api, kube: Any, proxy: FaultProxy
) -> None:
    # A whole-cluster restart or a control-plane upgrade: the replica starts while no connection
    # is accepted. Kopf would retry a failed start-up after a minute; it starts within seconds.
    await api.create("/api/v1/namespaces", {"metadata": {"name": "tenantry-system"}})
    await proxy.refuse()
    op = Operator(kube)
    op.server = proxy.url
    starting = asyncio.create_task(
        op.start(leader_election=True, identity="one", lease_timings=FAST, max_backoff=0.5)
    )
    try:
        await asyncio.sleep(1.5)
        assert not starting.done(), "started without an API server"
        await proxy.accept()
        back = time.monotonic()
        runtime = await starting  # the harness gives up 5 s after the start: a minute's wait fails
        print(f"started {time.monotonic() - back:.2f} s after the API server came back")
        await asyncio.wait_for(runtime.active.wait(), timeout=10)
        await api.create(ORG, org_body())
        await ready(api)
        alive(runtime)
    finally:
        if not starting.done():
            starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await op.stop()


async def test_a_failed_start_up_leaves_nothing_running_for_the_retry(proxy: FaultProxy) -> None:
    # What one start-up attempt opened (the client's connection pool, informer tasks) is
    # closed before Kopf retries it: a minute of retries must not pile up sessions or watches.
    await proxy.refuse()
    config = Config(
        leader_election=True, identity="one", lease_timings=FAST, today=lambda: TODAY, retry=Retry(attempts=1)
    )
    runtime = Runtime(Connection(server=proxy.url), config)
    with pytest.raises(ApiError):
        await runtime.start()
    client = runtime._client
    assert client is not None
    pool = client.api_client.rest_client.pool_manager
    assert pool is not None and pool.closed, "the failed attempt's session is left open"
    assert not runtime.supervisor.tasks and runtime.leadership is None
    assert not runtime.started.is_set()


async def test_a_write_whose_answer_is_lost_is_retried(
    api: Api, operator: Operator, proxy: FaultProxy
) -> None:
    await through(operator, proxy)
    # The namespace's apply reaches the API server, the connection dies before the answer.
    proxy.lose_answer("PATCH /api/v1/namespaces/acme-prod?")
    await api.create(ORG, org_body())
    org = await ready(api)
    assert condition(org, "Ready")["reason"] == "Reconciled"
    assert not proxy._lose, "the answer was lost once"


async def test_watches_dropped_mid_stream_resume_and_see_what_changed(
    api: Api, operator: Operator, proxy: FaultProxy
) -> None:
    runtime = await through(operator, proxy)
    await api.create(ORG, org_body())
    await ready(api)
    watches = sum(1 for informer in runtime.informers if informer.served)  # one stream each
    for _ in range(3):
        await eventually(lambda: proxy.open >= watches)  # every watch (re)connected
        assert proxy.drop_all() >= watches  # the watch streams (and any request) end mid-way
    await api.delete(NETPOL)
    await until(lambda: api.get(NETPOL), timeout=10)
    alive(runtime)


async def test_latency_on_every_chunk_changes_nothing_but_time(
    api: Api, operator: Operator, proxy: FaultProxy
) -> None:
    proxy.latency = 0.02
    await through(operator, proxy)
    await api.create(ORG, org_body())
    await ready(api, timeout=20)
    await settled(operator)
    before = len(api.writes())
    assert operator.runtime is not None and operator.runtime.events is not None
    await operator.runtime.events.enqueue_all(Priority.RESYNC)
    await settled(operator, reconciled_more_than=reconciles())
    assert len(api.writes()) == before, "a no-op resync makes no write, however slow the link"


async def test_a_leader_that_cannot_renew_stops_writing_before_the_lease_can_be_taken(
    api: Api, kube: Any, proxy: FaultProxy
) -> None:
    """client-go's rule with fencing: the leader (behind the proxy) loses its connection; it stops
    writing at its renew deadline, before the standby (direct) can take the Lease, and stands
    again once the API server is reachable."""
    await api.create("/api/v1/namespaces", {"metadata": {"name": "tenantry-system"}})

    async def replica(identity: str, server: str) -> Runtime:
        runtime = Runtime(
            Connection(server=server),
            Config(
                leader_election=True,
                identity=identity,
                lease_timings=FAST,
                workers=2,
                resync_seconds=3600,
                today=lambda: TODAY,
                retry=Retry(attempts=3, first_delay=0.01, max_delay=0.05),
                max_backoff=0.5,
            ),
        )
        await runtime.start()
        return runtime

    first = await replica("first", proxy.url)
    await asyncio.wait_for(first.active.wait(), timeout=10)
    second = await replica("second", kube.url)
    try:
        await api.create(ORG, org_body())
        await ready(api)
        await proxy.refuse()
        cut = time.monotonic()
        await asyncio.wait_for(_cleared(first.active), timeout=10)
        stopped = time.monotonic() - cut
        assert stopped <= FAST.renew_deadline + 0.3, stopped
        boundary = len(kube.requests)
        await asyncio.wait_for(second.active.wait(), timeout=15)
        took_over = time.monotonic() - cut
        assert took_over >= FAST.duration - 0.5, "the Lease was taken only after it expired"
        assert stopped < took_over
        # The new leader heals drift; the old one wrote nothing once it could not renew.
        await api.delete(NETPOL)
        await until(lambda: api.get(NETPOL), timeout=10)
        assert all(i < boundary for i, _, _ in writes_by(kube, "first"))
        # The API server is back: the old leader stands again, as a standby.
        await proxy.accept()
        await asyncio.sleep(FAST.duration)
        assert not first.active.is_set()
        assert (await api.get(LEASE))["spec"]["holderIdentity"] == "second"
        assert first.problems() == []
    finally:
        await second.stop()
        await first.stop()


async def _cleared(event: asyncio.Event) -> None:
    while event.is_set():  # noqa: ASYNC110 - waiting for an Event to be cleared
        await asyncio.sleep(0.01)


async def test_an_admission_refusal_is_retried_with_backoff_and_healed_when_lifted(
    api: Api, operator: Operator
) -> None:
    """A ValidatingAdmissionPolicy refuses LimitRange writes in acme-dev for a while (a
    maintenance freeze), and the LimitRange is deleted meanwhile: status and an Event say so
    honestly, the error metric counts, and the object is back soon after the refusal ends."""
    await operator.restart(max_backoff=0.5)
    await api.create(ORG, org_body())
    await ready(api)
    errors_before = reconciles("error")
    freeze = api.kube.fail(
        "PATCH",
        LIMITS,
        code=422,
        reason="Invalid",
        message='limitranges "tenantry-limits" is forbidden: ValidatingAdmissionPolicy '
        "'maintenance-freeze' denied request: frozen",
        times=None,
    )
    await api.delete(LIMITS)

    async def failing() -> Any:
        org = await api.get(f"{ORG}/acme")
        cond = condition(org, "Ready")
        return org if cond and cond["reason"] == "ApplyFailed" and freeze.hits >= 3 else None

    org = await until(failing, timeout=10)
    reconciling, stalled = condition(org, "Reconciling"), condition(org, "Stalled")
    assert reconciling is not None and stalled is not None
    assert (reconciling["status"], reconciling["reason"]) == ("True", "ApplyFailed")
    assert (stalled["status"], stalled["reason"]) == ("False", "Retrying")
    assert "LimitRange acme-dev/tenantry-limits: 422 Invalid" in condition(org, "Ready")["message"]
    assert reconciles("error") > errors_before, "counted as failed, so the alert can fire"
    events = (await api.get("/api/v1/namespaces/default/events"))["items"]
    assert any(e["reason"] == "ApplyFailed" for e in events)

    freeze.lift()
    lifted = time.monotonic()
    await until(lambda: api.get(LIMITS), timeout=10)
    assert time.monotonic() - lifted < 2.0  # within the (test's) maximum backoff, 0.5 s
    org = await ready(api)
    assert condition(org, "Stalled")["reason"] == "Reconciled"


async def test_nothing_is_written_into_a_namespace_whose_create_was_refused(
    api: Api, operator: Operator
) -> None:
    refused = api.kube.fail(
        "PATCH",
        "/api/v1/namespaces/acme-prod",
        code=403,
        reason="Forbidden",
        message='namespaces "acme-prod" is forbidden: ValidatingAdmissionPolicy denied request',
        times=None,
    )
    await operator.restart(max_backoff=0.5)
    await api.create(ORG, org_body())

    async def failing() -> Any:
        org = await api.get(f"{ORG}/acme")
        cond = condition(org, "Ready")
        return org if cond and cond["reason"] == "ApplyFailed" and refused.hits >= 2 else None

    org = await until(failing, timeout=10)
    message = condition(org, "Ready")["message"]
    assert "Namespace acme-prod: 403 Forbidden" in message and "acme-prod/acme-prod" not in message
    assert "404" not in message, "nothing was tried inside the namespace that does not exist"
    inside = [p for _, p in api.writes() if "/namespaces/acme-prod/" in p]
    assert inside == []
    assert await api.get("/api/v1/namespaces/acme-dev"), "the other environments are served"
    refused.lift()
    await ready(api)


async def test_a_throttled_write_waits_as_long_as_retry_after_says(api: Api, operator: Operator) -> None:
    await operator.restart(max_backoff=0.5)
    await api.create(ORG, org_body())
    await ready(api)
    throttle = api.kube.fail(
        "PATCH", LIMITS, code=429, reason="TooManyRequests", times=1, headers={"Retry-After": "1"}
    )
    await api.delete(LIMITS)
    deleted = time.monotonic()
    await until(lambda: api.get(LIMITS), timeout=10)
    assert throttle.hits == 1
    assert time.monotonic() - deleted >= 1.0, "not retried before Retry-After"
