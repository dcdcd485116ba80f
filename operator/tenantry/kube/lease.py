"""Leader election on a coordination.k8s.io Lease: the one answer to "may this replica write?".

client-go's algorithm (k8s.io/client-go/tools/leaderelection), in our idiom: a candidate takes
the Lease when its holder has not renewed it for `duration` seconds (as this replica observed
it: clocks are not compared across machines), the holder renews every `retry` seconds, and a
holder that could not renew for `renew_deadline` seconds stops. Unlike client-go (whose
controllers exit then) a replica that lost the Lease stands again as a candidate: it keeps its
inventory current, so it can take over again without listing anything.

Fencing: a write is allowed only until `renew_deadline` after the start of the last successful
renewal, and every write's timeout ends there too (KubeClient.fence), so no write of ours is
in flight once another replica can take the Lease: that needs `duration` seconds without a
renewal, as that replica observed it, and it observed our last renewal after we sent it.
`renew_deadline` < `duration` keeps a margin for clock-rate drift. Each Lease request has its
own timeout (`request_timeout`, shorter than the renew deadline) and one attempt: the loop is
the retry.

Why not `kubernetes.aio.leaderelection` (used before): it catches only `ApiException`, so a
dropped connection (aiohttp's ClientConnectorError during an API-server restart) ended the
election task for good; its requests had the library's 300 s default timeout, longer than any
deadline; and it has no fencing (its renew deadline is checked only between requests).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tenantry.kube.client import KubeClient
from tenantry.kube.resources import LEASE, NAMESPACE
from tenantry.observe import metrics
from tenantry.observe.logging import get_logger

log = get_logger("tenantry.lease")


@dataclass(frozen=True)
class LeaseTimings:
    """client-go's defaults: a standby takes over at most `duration + retry` seconds after the
    leader's last renewal (17 s), and a leader that cannot renew for `renew_deadline` stops
    writing, `duration - renew_deadline` (5 s) before anyone can take over."""

    duration: int = 15  # whole seconds: the Lease stores leaseDurationSeconds as an integer
    renew_deadline: float = 10.0
    retry: float = 2.0
    # One Lease request's timeout: a hung request must not outlast the renew deadline.
    request_timeout: float = 4.0

    def __post_init__(self) -> None:
        if not self.retry < self.renew_deadline < self.duration:
            raise ValueError("lease timings need retry < renew_deadline < duration")
        if self.request_timeout >= self.renew_deadline:
            raise ValueError("a Lease request's timeout must be shorter than the renew deadline")


class LeaseNamespaceMissingError(Exception):
    pass


def _micro_time(now: dt.datetime) -> str:
    """metav1.MicroTime as the API server writes it."""
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Leadership:
    """Runs the election forever; `active` is set exactly while this replica may write."""

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
        # Renewed by us up to then (event-loop time): the fence.
        self._valid_until = 0.0
        self._expiry: asyncio.TimerHandle | None = None
        # The other holder's record as last observed, and when (event-loop time).
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        # Event-loop time of the last round of the election loop (liveness).
        self.heartbeat: float | None = None
        # The Lease names us (set on acquiring, cleared on release).
        self._holds_record = False
        metrics.LEADER.set(0)

    @property
    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def write_time_left(self) -> float:
        """Seconds this replica may still write (<= 0: it may not)."""
        return self._valid_until - self._now if self.active.is_set() else 0.0

    async def check(self) -> None:
        """Fail fast, with a message, when the Lease can never be written (no namespace)."""
        if await self.client.get(NAMESPACE, self.namespace) is None:
            raise LeaseNamespaceMissingError(
                f"namespace {self.namespace!r} does not exist, so the leader Lease cannot be created: "
                "install the operator's manifests (kubectl apply -k manifests/base), pass "
                "--operator-namespace NAME, or run a single replica with --standalone"
            )

    def stuck(self) -> str | None:
        """Why the election loop looks stuck (for the liveness probe), or None."""
        if self.heartbeat is None:
            return None
        quiet = self._now - self.heartbeat
        limit = self.timings.retry + self.timings.request_timeout * 2 + self.timings.duration
        return f"the leader election made no round for {quiet:.0f} s" if quiet > limit else None

    async def run(self) -> None:
        try:
            while True:
                self.heartbeat = started = self._now
                try:
                    renewed = await self._try_acquire_or_renew()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # connection errors, timeouts, 5xx, 409: a missed round
                    renewed = False
                    level = "warning" if self.active.is_set() else "debug"
                    getattr(log, level)("leader Lease not renewed", error=str(exc) or repr(exc))
                if renewed:
                    await self._renewed(started)
                await asyncio.sleep(self.timings.retry)
        finally:
            self._stop_leading(None)

    async def release(self) -> None:
        """Give the Lease up on a graceful stop (client-go's ReleaseOnCancel), so a standby takes
        over at its next retry instead of after the whole lease duration. Only after this
        replica stopped writing; a crash skips it and the Lease simply expires."""
        if not self._holds_record:
            return
        self._holds_record = False
        try:
            lease = await self._get()
            spec = (lease or {}).get("spec") or {}
            if lease is None or spec.get("holderIdentity") != self.identity:
                return
            lease["spec"] = {**spec, "holderIdentity": None, "leaseDurationSeconds": 1}
            await self._put(lease)
        except Exception as exc:  # best effort: the Lease then simply expires
            log.warning("leader Lease not released; it expires instead", error=str(exc).strip())
            return
        log.info("leader Lease released", lease=f"{self.namespace}/{self.name}")

    # -- one round --------------------------------------------------------------------------------
    async def _get(self) -> dict[str, Any] | None:
        return await self.client.get(
            LEASE, self.name, self.namespace, request_timeout=self.timings.request_timeout, attempts=1
        )

    async def _put(self, lease: dict[str, Any]) -> None:
        await self.client.replace(
            LEASE, lease, request_timeout=self.timings.request_timeout, attempts=1, fenced=False
        )

    async def _try_acquire_or_renew(self) -> bool:
        now = dt.datetime.now(dt.UTC)
        lease = await self._get()
        mine = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.timings.duration,
            "acquireTime": _micro_time(now),
            "renewTime": _micro_time(now),
            "leaseTransitions": 0,
        }
        if lease is None:
            await self.client.create(
                LEASE,
                {
                    "apiVersion": LEASE.api_version,
                    "kind": LEASE.kind,
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": mine,
                },
                request_timeout=self.timings.request_timeout,
                attempts=1,
                fenced=False,
            )
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        record = (holder, spec.get("renewTime"), spec.get("acquireTime"), spec.get("leaseDurationSeconds"))
        if record != self._observed:
            self._observed, self._observed_at = record, self._now
        if holder and holder != self.identity:
            # Another holder's record that we have seen unchanged for its whole duration is
            # expired (measured on our clock from when we first saw it, as client-go does).
            duration = float(spec.get("leaseDurationSeconds") or self.timings.duration)
            if self._observed_at + duration > self._now:
                return False
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == self.identity:
            mine["acquireTime"] = spec.get("acquireTime") or mine["acquireTime"]
            mine["leaseTransitions"] = transitions
        else:
            mine["leaseTransitions"] = transitions + 1
        # resourceVersion kept: the PUT is refused (409) if another candidate wrote first.
        await self._put({**lease, "spec": {**spec, **mine}})
        return True

    async def _renewed(self, started: float) -> None:
        self._valid_until = started + self.timings.renew_deadline
        if self._expiry is not None:
            self._expiry.cancel()
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_at(self._valid_until, self._stop_leading, "not renewed within the deadline")
        self._holds_record = True
        if self.active.is_set():
            return
        log.info("leader Lease acquired: this replica writes", lease=f"{self.namespace}/{self.name}")
        if self._on_elected is not None:
            result = self._on_elected()
            if asyncio.iscoroutine(result):
                await result
        if self._now < self._valid_until:
            self.active.set()
            metrics.LEADER.set(1)

    def _stop_leading(self, why: str | None) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        was_active = self.active.is_set()
        self.active.clear()
        self._valid_until = 0.0
        metrics.LEADER.set(0)
        if why is not None and was_active:
            log.warning(
                f"leader Lease {why}: stopped writing; standing again as a candidate",
                lease=f"{self.namespace}/{self.name}",
            )
