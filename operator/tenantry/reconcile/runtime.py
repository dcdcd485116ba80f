"""The operator process: informers feeding events (events.py) into a queue, the workers
(workers.py) draining it, one leader (kube/lease.py). This module only wires them together;
Kopf's part is in frame.py.

Everything Tenantry watches (Organizations, TenancyPolicies, and the ~40,000 managed children)
is fed by our own list+watch informers (kube/informer.py): they keep one slim copy per child
and no task per object, and, unlike Kopf's watcher, they survive a CRD that disappears (Kopf
stops the whole operator on a 404 from a watched resource, by design). Kopf runs the process:
login, start-up and clean-up, the liveness endpoint, signals. Which replica writes is decided
by one coordination.k8s.io Lease (kube/lease.py); every replica keeps its inventory current,
so a standby takes over without listing anything again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tenantry import __version__
from tenantry.kube import resources as res
from tenantry.kube.client import Connection, KubeClient
from tenantry.kube.informer import Informer
from tenantry.kube.inventory import pack_body, slim, unpack_body
from tenantry.kube.lease import Leadership
from tenantry.observe import metrics
from tenantry.observe.logging import get_logger
from tenantry.reconcile.cluster import Cluster
from tenantry.reconcile.config import Config
from tenantry.reconcile.events import Events, lean
from tenantry.reconcile.queue import Priority, WorkQueue
from tenantry.reconcile.supervisor import Supervisor
from tenantry.reconcile.workers import Workers
from tenantry.render import labels as lbl

log = get_logger("tenantry.operator")
OWNED = f"{lbl.APP_MANAGED_BY}={lbl.APP_MANAGED_BY_VALUE}"


@dataclass
class Runtime:
    connection: Connection
    config: Config = field(default_factory=Config)
    cluster: Cluster | None = None
    events: Events | None = None
    informers: list[Informer] = field(default_factory=list)
    leadership: Leadership | None = None
    _events: asyncio.Queue[tuple[Callable[[dict[str, Any]], Awaitable[None]], dict[str, Any]]] = field(
        default_factory=asyncio.Queue
    )
    supervisor: Supervisor = field(default_factory=Supervisor)
    workers: Workers | None = None
    _client: KubeClient | None = None  # while start() runs: closed if it fails
    started: asyncio.Event = field(default_factory=asyncio.Event)
    # Set while this replica may write (always, without leader election).
    active: asyncio.Event = field(default_factory=asyncio.Event)
    # When the event feed last handled an event or found none waiting (time.monotonic()).
    _events_progress: float = field(default_factory=time.monotonic)

    @property
    def tasks(self) -> set[asyncio.Task[Any]]:
        return self.supervisor.tasks

    @property
    def queue(self) -> WorkQueue | None:
        return self.events.queue if self.events is not None else None

    # -- start-up / shutdown -------------------------------------------------------------------
    async def start(self) -> None:
        """Start everything, or (on any failure) nothing: what was started is stopped and the
        client closed before the error is raised, so Kopf's retry of the start-up begins afresh."""
        try:
            await self._start()
        except BaseException:
            await self.supervisor.stop()
            self.leadership = None
            if self._client is not None:
                await self._client.close()
            raise

    async def _start(self) -> None:
        client = self._client = KubeClient(
            self.connection,
            retry=self.config.retry,
            reload=self.config.reload_credentials,
            user_agent=f"tenantry/{__version__} ({self.config.identity})",
        )
        cluster = Cluster(
            client=client,
            reserved_namespaces=(self.config.operator_namespace,),
            event_namespace=self.config.event_namespace,
            today=self.config.today,
            now=self.config.now,
            quota_status_interval=self.config.quota_status_interval_seconds,
            quota_enforce_grace=self.config.quota_enforce_grace_seconds,
            applies_in_flight=self.config.applies_in_flight,
        )
        events = Events(cluster, WorkQueue())
        if self.config.leader_election:
            self.leadership = Leadership(
                client,
                self.config.operator_namespace,
                self.config.lease_name,
                self.config.identity,
                self.config.lease_timings,
                on_elected=lambda: events.enqueue_all(Priority.RESYNC),
            )
            await self.leadership.check()
            self.active = self.leadership.active
            client.fence = self.leadership.write_time_left
        # Fill the inventory (LIST) and keep it current (watch from that LIST's version) before
        # any reconcile: a restart sees everything that exists and writes nothing that is right.
        # All kinds at once: the sooner every kind is listed, the sooner a resume can heal.
        children = [
            Informer(
                client,
                kind,
                OWNED,
                self._deliver(events.on_child),
                relist_transform=slim,
                on_served=self._optional_kind_served(cluster, events, kind) if kind.optional else None,
                keep=self.supervisor.keep,
            )
            for kind in res.CHILD_KINDS
        ]
        # Packed as listed: the bodies wait until every kind is listed, and 1,000 of them as dicts
        # are ~18 MB.
        organizations = Informer(
            client,
            res.ORGANIZATION,
            "",
            self._deliver(events.on_organization),
            transform=lambda body: pack_body(lean(body)),
            on_served=_organizations_served,
            keep=self.supervisor.keep,
        )
        policies = Informer(
            client,
            res.TENANCY_POLICY,
            "",
            self._deliver(events.on_policy),
            transform=lean,
            on_served=_policies_served,
            keep=self.supervisor.keep,
        )
        informers = [*children, organizations, policies]
        for informer in informers:
            informer.not_served_poll = self.config.not_served_poll_seconds
        results = await asyncio.gather(*(i.start() for i in informers), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]
        self.informers = informers
        for informer, listed in zip(children, results[: len(children)], strict=True):
            if not informer.served:
                cluster.missing_kinds.add(informer.kind.kind)
            cluster.inventory.fill_entries(listed)  # type: ignore[arg-type]
        # Organizations and policies are known before the first reconcile: work starts at once,
        # and drift during a resume is healed first.
        organization_bodies = map(unpack_body, results[-2])  # type: ignore[arg-type]
        events.load(organizations=organization_bodies, policies=results[-1])  # type: ignore[arg-type]
        self.cluster, self.events = cluster, events
        metrics.initialise([k.kind for k in res.CHILD_KINDS])
        metrics.STATE.read_from(events.metrics_state)
        # Queued before the election can finish: its "reconcile everything" then coalesces with
        # this one instead of running every Organization a second time.
        await events.enqueue_all(Priority.CHANGE)
        keep = self.supervisor.keep
        if self.leadership is not None:
            keep(self.leadership.run, "tenantry leader election")
        else:
            self.active.set()
            metrics.LEADER.set(1)  # standalone: the only writer
        keep(self._event_loop, "tenantry events")
        workers = self.workers = Workers(cluster, events, self.active, self._spawn, self.config.max_backoff)
        for i in range(self.config.workers):
            keep(workers.work, f"tenantry worker {i}")
        keep(lambda: workers.work(Priority.DRIFT), "tenantry drift lane")
        keep(lambda: workers.resync(self.config.resync_seconds), "tenantry resync")
        self.started.set()
        log.info(
            "started",
            inventory=len(cluster.inventory),
            organizations=len(cluster.organizations),
            policies=len(cluster.policies),
            leader_election=self.config.leader_election,
        )

    async def stop(self, *, release: bool = True) -> None:
        """Stop; `release=False` stops like a crash (the Lease is left to expire)."""
        if self.events is not None:
            metrics.STATE.release(self.events.metrics_state)
        await asyncio.gather(*(informer.stop() for informer in self.informers))
        self.informers.clear()
        await self.supervisor.stop()
        if self.leadership is not None and release:
            # After every worker stopped: the next leader never overlaps with our writes.
            await self.leadership.release()
        self.leadership = None
        if self.cluster:
            await self.cluster.client.close()

    def _spawn(self, coro: Any, name: str) -> None:
        self.supervisor.spawn(coro, name)

    def problems(self) -> list[str]:
        """Why this replica is not alive (the liveness probe fails with these), or []: a task
        that keeps failing, a work loop or event feed that does not move although work waits,
        an election that makes no rounds. Waiting to lead, an API server that refuses or is
        down: alive (a restart would not help)."""
        if not self.started.is_set():
            return []
        found = self.supervisor.problems()
        threshold = self.config.stuck_seconds
        quiet = time.monotonic() - self._events_progress
        if not self._events.empty() and quiet > threshold:
            found.append(f"the event feed handled no event for {quiet:.0f} s ({self._events.qsize()} wait)")
        if self.workers is not None and (why := self.workers.stuck(threshold)):
            found.append(why)
        if self.leadership is not None and (why := self.leadership.stuck()):
            found.append(why)
        return found

    def health(self) -> dict[str, Any]:
        """What the liveness endpoint shows when alive."""
        return {
            "started": self.started.is_set(),
            "leader": self.active.is_set(),
            "queued": len(self.queue) if self.queue is not None else 0,
            "tasks": len(self.supervisor.tasks),
        }

    def _optional_kind_served(
        self, cluster: Cluster, events: Events, kind: res.Kind
    ) -> Callable[[bool], None]:
        """Argo CD installed (or removed) while we run: its AppProjects start (or stop) being
        rendered without a restart."""

        def served(now: bool) -> None:
            if now:
                cluster.missing_kinds.discard(kind.kind)
                self._spawn(events.enqueue_all(Priority.CHANGE), f"tenantry {kind.plural} served")
            else:
                cluster.missing_kinds.add(kind.kind)

        return served

    def _deliver(
        self, handler: Callable[[dict[str, Any]], Awaitable[None]]
    ) -> Callable[[dict[str, Any]], None]:
        def deliver(event: dict[str, Any]) -> None:
            self._events.put_nowait((handler, event))

        return deliver

    async def _event_loop(self) -> None:
        """Watch events of every kind, in the order each informer delivered them."""
        while True:
            self._events_progress = time.monotonic()
            handler, event = await self._events.get()
            try:
                await handler(event)
            except Exception as exc:  # one odd event must not stop the feed
                log.error("watch event not processed", error=str(exc), exc_info=True)


def _organizations_served(served: bool) -> None:
    if not served:
        log.warning(
            "the Organization CRD is not served: no Organization is reconciled until "
            f"{res.ORGANIZATION_CRD} is installed again; managed namespaces and their contents "
            "are kept as they are"
        )


def _policies_served(served: bool) -> None:
    if not served:
        log.warning(
            "the TenancyPolicy CRD is not served: Organizations keep the last policies seen "
            f"until {res.TENANCY_POLICY_CRD} is installed again"
        )
