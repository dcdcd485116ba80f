"""Units of surviving an API server's bad days: task supervision, the per-Organization backoff,
Retry-After, the write fence, the stale-response guard, honest status while writes fail."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp.web
import pytest
import pytest_asyncio

from tenantry.kube.client import ApiError, Connection, KubeClient, NotLeaderError, Retry, retry_after
from tenantry.kube.inventory import Inventory, older
from tenantry.kube.lease import LeaseTimings
from tenantry.kube.resources import NAMESPACE
from tenantry.observe import metrics
from tenantry.reconcile import reasons
from tenantry.reconcile.status import Outcome, build_status
from tenantry.reconcile.supervisor import Supervisor
from tenantry.reconcile.workers import Workers
from tests.integration.kopf_harness import eventually


def failures(task: str) -> float:
    return metrics.TASK_FAILURES.labels(task=task)._value.get()


# -- supervision ---------------------------------------------------------------------------------
async def test_a_long_running_task_that_fails_is_restarted_with_growing_capped_delays() -> None:
    supervisor = Supervisor(first_delay=0.01, max_delay=0.04, failing_after=3)
    starts: list[float] = []

    async def flaky() -> None:
        starts.append(time.monotonic())
        raise ConnectionResetError("dropped")

    before = failures("tenantry flaky")
    supervisor.keep(flaky, "tenantry flaky")
    try:
        await eventually(lambda: len(starts) >= 6)
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert gaps[0] >= 0.01 and gaps[1] >= 0.02 and gaps[2] >= 0.04
        assert gaps[4] < 0.12, "capped at 0.04 (uncapped it would be 0.16)"
        assert failures("tenantry flaky") - before >= 5
        [problem] = supervisor.problems()
        assert problem.startswith("task 'tenantry flaky' failed ") and problem.endswith(" times in a row")
    finally:
        await supervisor.stop()


async def test_a_task_that_returns_is_restarted_too_and_a_healthy_run_is_not_a_problem() -> None:
    supervisor = Supervisor(first_delay=0.01, failing_after=1, healthy_after=0.05)
    runs: list[int] = []

    async def once_then_forever() -> None:
        runs.append(1)
        if len(runs) == 1:
            return  # a loop that ended: nothing would do its work any more
        await asyncio.Event().wait()

    supervisor.keep(once_then_forever, "tenantry loop")
    try:
        await eventually(lambda: len(runs) >= 2)
        assert supervisor.problems(), "just failed"
        await asyncio.sleep(0.08)
        assert supervisor.problems() == [], "running well again for healthy_after"
    finally:
        await supervisor.stop()
    assert not supervisor.tasks


async def test_a_one_shot_task_that_fails_is_logged_and_counted(capsys: pytest.CaptureFixture[str]) -> None:
    supervisor = Supervisor()
    before = failures("retry")

    async def boom() -> None:
        raise RuntimeError("timer broke")

    supervisor.spawn(boom(), "retry acme")
    await asyncio.sleep(0.01)
    assert failures("retry") == before + 1
    assert "timer broke" in capsys.readouterr().out
    assert not supervisor.tasks


# -- backoff ------------------------------------------------------------------------------------------
def workers(max_backoff: float = 15.0) -> Workers:
    return Workers(None, None, asyncio.Event(), lambda c, n: None, max_backoff)  # type: ignore[arg-type]


def test_the_backoff_doubles_per_organization_up_to_the_maximum() -> None:
    w = workers(max_backoff=4.0)
    error = ApiError(422, "Invalid", "refused")
    assert [w.backoff("acme", error) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert w.backoff("beta", error) == 0.5, "each Organization has its own"


def test_the_backoff_is_never_shorter_than_retry_after() -> None:
    w = workers()
    assert w.backoff("acme", ApiError(429, "TooManyRequests", "slow down", retry_after=7)) == 7
    assert w.backoff("acme", ApiError(429, "TooManyRequests", "slow down", retry_after=0.1)) == 1.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("3", 3.0), (" 1 ", 1.0), ("0", 0.0), (None, None), ("", None), ("soon", None), ("-2", None)],
)
def test_retry_after_is_read_in_seconds(header: str | None, seconds: float | None) -> None:
    assert retry_after(header) == seconds


# -- the client: Retry-After, the fence ---------------------------------------------------------------
class Throttling:
    """Answers 429 with Retry-After `times` times, then 200; records when each request came."""

    def __init__(self, times: int, after: str) -> None:
        self.times, self.after, self.seen = times, after, []  # type: ignore[var-annotated]
        self.url = ""
        self.delay = 0.0
        self.authorization: list[str | None] = []

    async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        self.seen.append((request.method, time.monotonic()))
        self.authorization.append(request.headers.get("Authorization"))
        await asyncio.sleep(self.delay)
        if len(self.seen) <= self.times:
            body = {"kind": "Status", "reason": "TooManyRequests", "message": "slow down", "code": 429}
            return aiohttp.web.json_response(body, status=429, headers={"Retry-After": self.after})
        return aiohttp.web.json_response({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}})


@pytest_asyncio.fixture
async def throttling() -> AsyncIterator[Throttling]:
    srv = Throttling(times=1, after="1")
    app = aiohttp.web.Application()
    app.router.add_route("*", "/{tail:.*}", srv.handle)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    srv.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    try:
        yield srv
    finally:
        await runner.cleanup()


async def client_for(url: str, **kwargs: Any) -> KubeClient:
    return KubeClient(
        Connection(server=url), retry=Retry(attempts=3, first_delay=0.001, max_delay=0.002), **kwargs
    )


async def close(client: KubeClient) -> None:
    closed: Any = client.close()
    if inspect.isawaitable(closed):
        await closed


async def test_a_429_is_retried_no_sooner_than_its_retry_after(throttling: Throttling) -> None:
    client = await client_for(throttling.url)
    try:
        assert await client.get(NAMESPACE, "x")
    finally:
        await close(client)
    (_, first), (_, second) = throttling.seen
    assert second - first >= 1.0


async def test_a_retry_after_longer_than_the_clients_limit_is_left_to_the_organizations_backoff(
    throttling: Throttling,
) -> None:
    throttling.after = "60"
    client = await client_for(throttling.url)
    try:
        with pytest.raises(ApiError) as raised:
            await client.get(NAMESPACE, "x")
    finally:
        await close(client)
    assert (raised.value.status, raised.value.retry_after) == (429, 60.0)
    assert len(throttling.seen) == 1


async def test_a_fenced_client_sends_no_write_and_still_reads(throttling: Throttling) -> None:
    throttling.times = 0
    client = await client_for(throttling.url, fence=lambda: 0.0)
    try:
        with pytest.raises(NotLeaderError):
            await client.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}})
        assert throttling.seen == [], "nothing sent"
        assert await client.get(NAMESPACE, "x"), "reads are not fenced"
        # The Lease's own writes are not fenced (they are how the fence is lifted).
        await client.replace(NAMESPACE, {"metadata": {"name": "x"}}, fenced=False)
    finally:
        await close(client)
    assert [m for m, _ in throttling.seen] == ["GET", "PUT"]


async def test_a_write_never_outlasts_the_fence(throttling: Throttling) -> None:
    """A write's timeout ends where the right to write ends: a slow write cannot land after
    another replica may have taken the Lease."""

    throttling.times, throttling.delay = 0, 2.0
    started = time.monotonic()
    left = 0.3
    client = KubeClient(Connection(server=throttling.url), retry=Retry(attempts=1), fence=lambda: left)
    try:
        with pytest.raises(ApiError, match="ConnectionError"):
            await client.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}})
    finally:
        await close(client)
    assert time.monotonic() - started < 1.5


async def test_expiring_credentials_are_read_again_before_the_request(throttling: Throttling) -> None:
    """An exec plugin's token, a projected service-account token: renewed before they expire,
    not only after a 401."""
    throttling.times = 0
    url = throttling.url
    fresh = Connection(server=url, token="new", refresh_at=time.time() + 600)
    client = KubeClient(
        Connection(server=url, token="old", refresh_at=time.time() - 1),
        retry=Retry(attempts=1),
        reload=lambda: fresh,
    )
    try:
        await client.get(NAMESPACE, "x")
        await client.get(NAMESPACE, "x")
    finally:
        await close(client)
    assert throttling.authorization == ["Bearer new", "Bearer new"]
    assert client.connection is fresh


def test_lease_timings_keep_the_fence_before_the_takeover() -> None:
    LeaseTimings()  # client-go's defaults are consistent
    with pytest.raises(ValueError, match="renew_deadline"):
        LeaseTimings(duration=10, renew_deadline=10, retry=2)
    with pytest.raises(ValueError, match="timeout"):
        LeaseTimings(duration=15, renew_deadline=10, retry=2, request_timeout=10)


# -- the cache never goes backwards -------------------------------------------------------------------
def policy_obj(rv: str, deny: str = "all") -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": "tenantry-default-deny",
            "namespace": "acme-prod",
            "resourceVersion": rv,
            "labels": {"app.kubernetes.io/managed-by": "tenantry", "tenantry.dev/organization": "acme"},
        },
        "spec": {"podSelector": {}, "policyTypes": [deny]},
    }


def test_an_apply_response_older_than_the_watch_is_ignored() -> None:
    inventory = Inventory()
    inventory.upsert(policy_obj("12", deny="edited"))  # the watch: someone's edit after our write
    inventory.upsert(policy_obj("11"))  # our write's response, handled late
    kept = inventory.get(("networking.k8s.io/v1", "NetworkPolicy", "acme-prod", "tenantry-default-deny"))
    assert kept is not None and kept["spec"]["policyTypes"] == ["edited"]
    assert inventory.is_stale(policy_obj("11")) and not inventory.is_stale(policy_obj("13"))


def test_versions_are_compared_as_numbers_and_only_when_both_are() -> None:
    assert older(policy_obj("9"), policy_obj("10")), "numbers, not strings"
    assert not older(policy_obj("10"), policy_obj("10"))
    assert not older(policy_obj("abc"), policy_obj("10")), "not comparable: the newer state wins"
    assert not older(policy_obj("9"), None)


# -- honest status while writes fail --------------------------------------------------------------
def test_failed_writes_are_reconciling_and_retrying_never_reconciled() -> None:
    outcome = Outcome()
    message = "LimitRange acme-dev/tenantry-limits: 422 Invalid: frozen"
    outcome.fail(reasons.APPLY_FAILED, message, stalled=False)
    outcome.failed_writes.append(message)
    status = build_status(outcome, 1, None, "2026-12-05T10:00:00Z")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == ("False", "ApplyFailed")
    assert (conditions["Reconciling"]["status"], conditions["Reconciling"]["reason"]) == (
        "True",
        "ApplyFailed",
    )
    assert "retried with backoff" in conditions["Reconciling"]["message"]
    assert (conditions["Stalled"]["status"], conditions["Stalled"]["reason"]) == ("False", "Retrying")
    assert all(c["reason"] != "Reconciled" for c in conditions.values())
