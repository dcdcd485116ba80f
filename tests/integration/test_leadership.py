"""One leader: replicas elect a writer on a coordination.k8s.io Lease (no Kopf peering CRDs).

Every request of the operator carries `User-Agent: tenantry/<version> (<identity>)`, so the
fake API server's request log tells which replica wrote what.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tenantry.kube.client import Connection, Retry
from tenantry.kube.lease import LeaseNamespaceMissingError, LeaseTimings
from tenantry.reconcile.config import Config
from tenantry.reconcile.runtime import Runtime
from tests.integration.conftest import ORG, Api, org_body
from tests.integration.test_onboarding import ready, until
from tests.unit.helpers import TODAY

NETPOL = "/apis/networking.k8s.io/v1/namespaces/acme-prod/networkpolicies/tenantry-default-deny"
LEASE = "/apis/coordination.k8s.io/v1/namespaces/tenantry-system/leases/tenantry"
# Fast timings (retry < renew deadline < duration; a request times out before the deadline).
FAST = LeaseTimings(duration=2, renew_deadline=1.5, retry=0.5, request_timeout=1.0)
WRITES = {"POST", "PUT", "PATCH", "DELETE"}


def writes_by(kube: Any, identity: str) -> list[tuple[int, str, str]]:
    """(position in the request log, method, path) of every write the replica `identity` sent,
    its Lease renewals aside."""
    out = []
    for index, request in enumerate(kube.requests):
        method = request.method
        agent = request.headers.get("User-Agent", "")
        if method in WRITES and f"({identity})" in agent and "/leases/" not in request.path:
            out.append((index, method, request.path))
    return out


async def replica(kube: Any, identity: str) -> Runtime:
    """One replica's runtime (Kopf only starts and stops it; two Kopfs in one event loop would
    treat each other's tasks as their own)."""
    runtime = Runtime(
        Connection(server=str(kube.url).rstrip("/")),
        Config(
            leader_election=True,
            identity=identity,
            lease_timings=FAST,
            workers=2,
            resync_seconds=3600,
            today=lambda: TODAY,
            retry=Retry(attempts=4, first_delay=0.01, max_delay=0.05),
        ),
    )
    await runtime.start()
    return runtime


async def test_one_replica_writes_and_a_standby_takes_over_when_it_dies(api: Api, kube: Any) -> None:
    await api.create("/api/v1/namespaces", {"metadata": {"name": "tenantry-system"}})
    first = await replica(kube, "first")
    await asyncio.wait_for(first.active.wait(), timeout=10)
    second = await replica(kube, "second")
    try:
        await api.create(ORG, org_body())
        await ready(api)
        await asyncio.sleep(1.5)  # a few renewals: the standby must stay a standby
        assert not second.active.is_set()
        assert writes_by(kube, "first"), "the leader reconciled"
        assert writes_by(kube, "second") == [], "a standby must write nothing"
        lease = await api.get(LEASE)
        assert lease["spec"]["holderIdentity"] == "first"

        # The leader dies without releasing its Lease (kill -9): the standby takes over once the
        # Lease is not renewed for its duration, and heals what changed meanwhile.
        await first.stop(release=False)
        died, boundary = time.monotonic(), len(kube.requests)
        await api.delete(NETPOL)
        await asyncio.wait_for(second.active.wait(), timeout=10)
        took_over = time.monotonic() - died
        assert took_over <= FAST.duration + FAST.retry + 2.0  # duration + retry, plus scheduling
        await until(lambda: api.get(NETPOL), timeout=10.0)
        assert (await api.get(LEASE))["spec"]["holderIdentity"] == "second"
        assert writes_by(kube, "second"), "the new leader healed the drift"
        assert all(i >= boundary for i, _, _ in writes_by(kube, "second")), "never two writers at once"
        assert all(i < boundary for i, _, _ in writes_by(kube, "first"))
    finally:
        await second.stop()
        await first.stop()


async def test_without_the_operator_namespace_it_says_what_to_do(kube: Any) -> None:
    # (tests/integration/test_run_command.py: `tenantry run` then exits non-zero with this.)
    with pytest.raises(LeaseNamespaceMissingError, match=r"tenantry-system.*--standalone"):
        await replica(kube, "lonely")


async def test_a_leader_stopping_gracefully_hands_the_lease_over(api: Api, kube: Any) -> None:
    await api.create("/api/v1/namespaces", {"metadata": {"name": "tenantry-system"}})
    first = await replica(kube, "first")
    await asyncio.wait_for(first.active.wait(), timeout=10)
    second = await replica(kube, "second")
    try:
        await first.stop()  # SIGTERM: the Lease is released after its last write
        released = (await api.get(LEASE))["spec"]
        assert released.get("holderIdentity") in (None, ""), released
        # Taken at the standby's next retry, not after the lease duration (no timing asserted here;
        # bench/ measures the handover).
        await asyncio.wait_for(second.active.wait(), timeout=10)
        assert (await api.get(LEASE))["spec"]["holderIdentity"] == "second"
    finally:
        await second.stop()
        await first.stop()
