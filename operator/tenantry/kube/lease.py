"""Leader election on a coordination.k8s.io Lease: the one answer to "may this replica write?".

The official client's asyncio flavour (`kubernetes.aio.leaderelection`) does the election
(client-go's algorithm: acquire when the holder has not renewed for a lease duration, renew
every retry period, step down when renewing fails for the renew deadline), on the operator's
own `ApiClient`. This module turns its callbacks into an `asyncio.Event` the workers wait on.
Leases exist on every cluster: unlike Kopf's peering, no
extra CRD is needed, and there is one decision instead of Kopf's plus a copy of its rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes.aio import client as aio_client
from kubernetes.aio.leaderelection import electionconfig, leaderelection
from kubernetes.aio.leaderelection.resourcelock.leaselock import LeaseLock

from tenantry.kube.client import KubeClient
from tenantry.kube.resources import NAMESPACE
from tenantry.observe import metrics
from tenantry.observe.logging import get_logger

log = get_logger("tenantry.lease")


@dataclass(frozen=True)
class LeaseTimings:
    """client-go's defaults: a standby takes over at most `duration + retry` seconds after the
    leader's last renewal (17 s), and a leader that cannot renew for `renew_deadline` stops."""

    duration: int = 15  # whole seconds: the Lease stores leaseDurationSeconds as an integer
    renew_deadline: float = 10.0
    retry: float = 2.0


class LeaseNamespaceMissingError(Exception):
    pass


class _LeaseLock(LeaseLock):
    """The library's Lease lock, with `create` fixed: kubernetes 37.0.2 passes `pretty=True`
    to `create_namespaced_lease`, which its own pydantic validation refuses (a string is
    expected), so the stock lock can never create the Lease. Locks are the library's extension
    point (`BaseLock`: get/create/update); only `create` differs."""

    async def create(self, name: str, namespace: str, election_record: Any) -> bool:
        body = aio_client.V1Lease(
            metadata=aio_client.V1ObjectMeta(name=name), spec=self.update_lease(election_record)
        )
        try:
            await self.api_instance.create_namespaced_lease(namespace, body)
        except aio_client.ApiException as exc:
            log.warning("leader Lease not created", lease=f"{namespace}/{name}", error=str(exc).strip())
            return False
        return True


class Leadership:
    """Runs the election forever; `active` is set exactly while this replica holds the Lease."""

    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        name: str,
        identity: str,
        timings: LeaseTimings | None = None,
        on_elected: Callable[[], Any] | None = None,
    ) -> None:
        self.client, self.namespace, self.name, self.identity = client, namespace, name, identity
        self.timings = timings or LeaseTimings()
        self.active = asyncio.Event()
        self._on_elected = on_elected
        self._leading: asyncio.Task[Any] | None = None
        # Held the Lease last we knew (survives the election task being cancelled at stop).
        self._holding = False
        metrics.LEADER.set(0)
        # The library logs every failed renewal with a traceback through stdlib logging; ours
        # go through structlog's formatter like Kopf's (observe/logging.py).
        logging.getLogger("kubernetes.aio.leaderelection").setLevel(logging.WARNING)

    async def check(self) -> None:
        """Fail fast, with a message, when the Lease can never be written (no namespace)."""
        if await self.client.get(NAMESPACE, self.namespace) is None:
            raise LeaseNamespaceMissingError(
                f"namespace {self.namespace!r} does not exist, so the leader Lease cannot be created: "
                "install the operator's manifests (kubectl apply -k manifests/base), pass "
                "--operator-namespace NAME, or run a single replica with --standalone"
            )

    async def run(self) -> None:
        try:
            while True:
                # The client's own ApiClient: the same identity (its token refreshed in place
                # after a 401) and connection pool as every other request of the operator. A
                # new lock per round, as certificates rotated meanwhile mean a new ApiClient.
                lock = _LeaseLock(self.name, self.namespace, self.identity, self.client.api_client)
                config = electionconfig.Config(
                    lock,
                    lease_duration=self.timings.duration,
                    renew_deadline=self.timings.renew_deadline,
                    retry_period=self.timings.retry,
                    onstarted_leading=self._lead,
                    onstopped_leading=self._stop_leading,
                )
                # run() returns when leadership is lost; stand again as a candidate.
                await leaderelection.LeaderElection(config).run()
        finally:
            # The library does not cancel its leading task when run() itself is cancelled.
            if self._leading is not None:
                self._leading.cancel()
            self.active.clear()
            metrics.LEADER.set(0)

    async def release(self) -> None:
        """Give the Lease up on a graceful stop (client-go's ReleaseOnCancel), so a standby takes
        over at its next retry instead of after the whole lease duration. Only after this
        replica stopped writing; a crash skips it and the Lease simply expires."""
        if not self._holding:
            return
        self._holding = False
        api = aio_client.CoordinationV1Api(self.client.api_client)
        try:
            lease = await api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            lease.spec.holder_identity = None
            lease.spec.lease_duration_seconds = 1
            await api.replace_namespaced_lease(self.name, self.namespace, lease)
        except Exception as exc:  # best effort: the Lease then simply expires
            log.warning("leader Lease not released; it expires instead", error=str(exc).strip())
            return
        log.info("leader Lease released", lease=f"{self.namespace}/{self.name}")

    async def _lead(self) -> None:
        self._leading = asyncio.current_task()
        log.info("leader Lease acquired: this replica writes", lease=f"{self.namespace}/{self.name}")
        if self._on_elected is not None:
            result = self._on_elected()
            if asyncio.iscoroutine(result):
                await result
        self._holding = True
        self.active.set()
        metrics.LEADER.set(1)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()  # held until the library cancels it on losing the Lease

    async def _stop_leading(self) -> None:
        self._holding = False
        self.active.clear()
        metrics.LEADER.set(0)
        log.warning(
            "leader Lease lost (not renewed within the deadline): standing by",
            lease=f"{self.namespace}/{self.name}",
        )
