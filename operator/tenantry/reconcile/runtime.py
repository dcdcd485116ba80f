"""The operator process: informers feeding a queue, the workers draining it, one leader.

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
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import kopf

from tenantry import __version__
from tenantry.api.documents import parse_object
from tenantry.api.policy import TenancyPolicy
from tenantry.kube import resources as res
from tenantry.kube.client import ApiError, Connection, KubeClient, Retry
from tenantry.kube.informer import Informer
from tenantry.kube.inventory import slim
from tenantry.kube.lease import Leadership, LeaseNamespaceMissingError, LeaseTimings
from tenantry.observe import metrics
from tenantry.observe.logging import get_logger
from tenantry.reconcile.observed import current_state
from tenantry.reconcile.organization import Cluster, OrganizationReconciler, Requeue
from tenantry.reconcile.policy import POLICY_KEY_PREFIX, reconcile_policy
from tenantry.reconcile.queue import Priority, WorkQueue
from tenantry.render import labels as lbl
from tenantry.render import object_key

log = get_logger("tenantry.operator")
OWNED = f"{lbl.APP_MANAGED_BY}={lbl.APP_MANAGED_BY_VALUE}"


@dataclass
class Config:
    workers: int = 4
    resync_seconds: float = 300.0
    operator_namespace: str = "tenantry-system"
    event_namespace: str = "default"
    max_backoff: float = 60.0
    # Leader election on a Lease in the operator's namespace; False: this replica always writes.
    leader_election: bool = False
    lease_name: str = "tenantry"
    lease_timings: LeaseTimings = field(default_factory=LeaseTimings)
    identity: str = "tenantry"
    retry: Retry = field(default_factory=Retry)
    today: Callable[[], dt.date] = dt.date.today
    # Fresh credentials after a 401 (rotated service-account tokens); None: keep the first.
    reload_credentials: Callable[[], Connection] | None = None
    # How often a resource that is not served (CRD missing) is looked for again.
    not_served_poll_seconds: float = 5.0


def _identity(obj: dict[str, Any]) -> dict[str, Any]:
    return obj


@dataclass
class Runtime:
    connection: Connection
    config: Config = field(default_factory=Config)
    cluster: Cluster | None = None
    queue: WorkQueue | None = None
    # Latest TenancyPolicy bodies (valid or not), for their own reconcile and status.
    policy_bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    informers: list[Informer] = field(default_factory=list)
    leadership: Leadership | None = None
    drifted_before_seen: set[str] = field(default_factory=set)
    _events: asyncio.Queue[tuple[Callable[[dict[str, Any]], Awaitable[None]], dict[str, Any]]] | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    failures: dict[str, int] = field(default_factory=dict)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    ready_of: dict[str, str] = field(default_factory=dict)
    # Set while this replica may write (always, without leader election).
    active: asyncio.Event = field(default_factory=asyncio.Event)
    # What each queued Organization was last reconciled from: a spec change is compared with
    # this, never with a cache entry a status write may have refreshed meanwhile.
    seen_significant: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    # -- start-up / shutdown -------------------------------------------------------------------
    async def start(self) -> None:
        client = KubeClient(
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
        )
        self.queue = WorkQueue()
        self._events = asyncio.Queue()
        if self.config.leader_election:
            self.leadership = Leadership(
                client,
                self.config.operator_namespace,
                self.config.lease_name,
                self.config.identity,
                self.config.lease_timings,
                on_elected=lambda: self._enqueue_all(Priority.RESYNC),
            )
            await self.leadership.check()
            self.active = self.leadership.active
        # Fill the inventory (LIST) and keep it current (watch from that LIST's version) before
        # any reconcile: a restart sees everything that exists and writes nothing that is right.
        # All kinds at once: the sooner every kind is listed, the sooner a resume can heal.
        children = [
            Informer(
                client,
                kind,
                OWNED,
                self._deliver(self.on_child),
                on_served=self._optional_kind_served(cluster, kind) if kind.optional else None,
            )
            for kind in res.CHILD_KINDS
        ]
        organizations = Informer(
            client,
            res.ORGANIZATION,
            "",
            self._deliver(self.on_organization),
            transform=_identity,
            on_served=self._organizations_served,
        )
        policies = Informer(
            client,
            res.TENANCY_POLICY,
            "",
            self._deliver(self.on_policy),
            transform=_identity,
            on_served=self._policies_served,
        )
        informers = [*children, organizations, policies]
        for informer in informers:
            informer.not_served_poll = self.config.not_served_poll_seconds
        results = await asyncio.gather(*(i.start() for i in informers), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            await asyncio.gather(*(informer.stop() for informer in informers))
            await client.close()
            raise failed[0]
        self.informers = informers
        for informer, listed in zip(children, results[: len(children)], strict=True):
            if not informer.served:
                cluster.missing_kinds.add(informer.kind.kind)
            cluster.inventory.fill_entries(listed)  # type: ignore[arg-type]
        for body in results[-1]:  # type: ignore[union-attr]
            self._store_policy(cluster, body)
            self.policy_bodies[body["metadata"]["name"]] = body
        # Organizations are known before the first reconcile: work starts at once, and drift
        # during a resume is healed first.
        for body in results[-2]:  # type: ignore[union-attr]
            cluster.organizations[body["metadata"]["name"]] = body
            self.seen_significant[body["metadata"]["name"]] = _significant(body)
            self._count_ready(body["metadata"]["name"], body)
        self.cluster = cluster
        metrics.initialise([k.kind for k in res.CHILD_KINDS])
        metrics.STATE.read_from(self.metrics_state)
        if self.leadership is not None:
            self._spawn(self.leadership.run(), "tenantry leader election")
        else:
            self.active.set()
            metrics.LEADER.set(1)  # standalone: the only writer
        self._spawn(self._event_loop(), "tenantry events")
        for i in range(self.config.workers):
            self._spawn(self._worker(), f"tenantry worker {i}")
        self._spawn(self._resync_loop(), "tenantry resync")
        await self._enqueue_all(Priority.CHANGE)
        self.started.set()
        log.info(
            "started",
            inventory=len(cluster.inventory),
            organizations=len(cluster.organizations),
            policies=len(cluster.policies),
            leader_election=self.config.leader_election,
        )

    async def stop(self) -> None:
        metrics.STATE.release(self.metrics_state)
        await asyncio.gather(*(informer.stop() for informer in self.informers))
        self.informers.clear()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        if self.cluster:
            await self.cluster.client.close()

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _optional_kind_served(self, cluster: Cluster, kind: res.Kind) -> Callable[[bool], None]:
        """Argo CD installed (or removed) while we run: its AppProjects start (or stop) being
        rendered without a restart."""

        def served(now: bool) -> None:
            if now:
                cluster.missing_kinds.discard(kind.kind)
                self._spawn(self._enqueue_all(Priority.CHANGE), f"tenantry {kind.plural} served")
            else:
                cluster.missing_kinds.add(kind.kind)

        return served

    def _organizations_served(self, served: bool) -> None:
        if not served:
            log.warning(
                "the Organization CRD is not served: no Organization is reconciled until "
                f"{res.ORGANIZATION_CRD} is installed again; managed namespaces and their contents "
                "are kept as they are"
            )

    def _policies_served(self, served: bool) -> None:
        if not served:
            log.warning(
                "the TenancyPolicy CRD is not served: Organizations keep the last policies seen "
                "until tenancypolicies.tenantry.dev is installed again"
            )

    async def _enqueue_all(self, priority: Priority) -> None:
        """Every Organization at `priority`, every TenancyPolicy at resync priority."""
        assert self.queue is not None
        cluster = self.cluster
        if cluster is None:
            return
        for name in list(cluster.organizations):
            await self.queue.put(name, priority)
        for name in list(self.policy_bodies):
            await self.queue.put(f"{POLICY_KEY_PREFIX}{name}", Priority.RESYNC)

    def _deliver(
        self, handler: Callable[[dict[str, Any]], Awaitable[None]]
    ) -> Callable[[dict[str, Any]], None]:
        def deliver(event: dict[str, Any]) -> None:
            assert self._events is not None
            self._events.put_nowait((handler, event))

        return deliver

    async def _event_loop(self) -> None:
        """Watch events of every kind, in the order each informer delivered them."""
        assert self._events is not None
        while True:
            handler, event = await self._events.get()
            try:
                await handler(event)
            except Exception as exc:  # one odd event must not stop the feed
                log.error("watch event not processed", error=str(exc), exc_info=True)

    # -- workers ---------------------------------------------------------------------------------
    async def _worker(self) -> None:
        assert self.queue is not None and self.cluster is not None
        reconciler = OrganizationReconciler(self.cluster)
        while True:
            await self.active.wait()
            name = await self.queue.get()
            if not self.active.is_set():  # stopped leading while waiting: leave it for later
                await self.queue.give_back(name)
                continue
            try:
                if name.startswith(POLICY_KEY_PREFIX):
                    body = self.policy_bodies.get(name.removeprefix(POLICY_KEY_PREFIX))
                    if body is not None:
                        await reconcile_policy(self.cluster, body)
                else:
                    await reconciler.reconcile(name)
                self.failures.pop(name, None)
            except Requeue as again:
                self._spawn(self.queue.put_later(name, Priority.RETRY, again.delay), f"requeue {name}")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let one Organization stop the worker
                count = self.failures[name] = self.failures.get(name, 0) + 1
                delay = min(0.5 * 2 ** (count - 1), self.config.max_backoff)
                level = "warning" if isinstance(exc, ApiError) else "error"
                getattr(log, level)(
                    "reconcile failed",
                    organization=name,
                    error=str(exc),
                    retry_in=delay,
                    exc_info=not isinstance(exc, ApiError),
                )
                self._spawn(self.queue.put_later(name, Priority.RETRY, delay), f"retry {name}")
            finally:
                await self.queue.done(name)

    async def _resync_loop(self) -> None:
        """Periodic resync: covers lost watch events and expiring exceptions. Costs no request
        per Organization when nothing changed (the inventory answers)."""
        assert self.queue is not None and self.cluster is not None
        while True:
            await asyncio.sleep(self.config.resync_seconds)
            await self._enqueue_all(Priority.RESYNC)

    # -- watch events ----------------------------------------------------------------------------
    async def on_organization(self, event: dict[str, Any]) -> None:
        await self.started.wait()
        assert self.cluster is not None and self.queue is not None
        obj = event["object"]
        name = obj["metadata"]["name"]
        old = self.cluster.organizations.get(name)
        if event.get("type") == "DELETED":
            self.cluster.organizations.pop(name, None)
            self.seen_significant.pop(name, None)
            self.cluster.inventory.forget_owner(name)
        else:
            if not self.cluster.remember_organization(obj):
                return  # older than what a write of ours already returned
            significant = _significant(obj)
            if self.seen_significant.get(name) != significant:
                # Compared with what the last event said, not with the cache: a status write's
                # response may already carry a newer spec, and that spec still needs a reconcile.
                self.seen_significant[name] = significant
                drifted = name in self.drifted_before_seen
                self.drifted_before_seen.discard(name)
                await self.queue.put(name, Priority.DRIFT if drifted else Priority.CHANGE)
        # A policy's status counts its Organizations: refresh it when membership changes.
        before = _policy_of(old) if old else None
        after = _policy_of(obj) if event.get("type") != "DELETED" else None
        if before != after:
            for policy in (before, after):
                if policy in self.policy_bodies:
                    await self.queue.put(f"{POLICY_KEY_PREFIX}{policy}", Priority.RESYNC)
        self._count_ready(name, None if event.get("type") == "DELETED" else obj)

    async def on_policy(self, event: dict[str, Any]) -> None:
        await self.started.wait()
        assert self.cluster is not None and self.queue is not None
        obj = event["object"]
        name = obj["metadata"]["name"]
        old = self.cluster.policies.get(name)
        if event.get("type") == "DELETED":
            if await self.cluster.crd_going_away(res.TENANCY_POLICY_CRD):
                # Every policy goes with its CRD; Organizations falling back to the built-in
                # default (or to "policy not found") would rewrite every tenant. Keep the last
                # policy seen until the CRD and its policies are back.
                log.warning("TenancyPolicy deleted with its CRD; its last version stays in use", policy=name)
                return
            self.cluster.policies.pop(name, None)
            self.policy_bodies.pop(name, None)
        else:
            self._store_policy(self.cluster, obj)
            previous = self.policy_bodies.get(name)
            self.policy_bodies[name] = obj
            if previous is None or _significant(previous) != _significant(obj):
                await self.queue.put(f"{POLICY_KEY_PREFIX}{name}", Priority.CHANGE)
        if self.cluster.policies.get(name) != old:
            for org_name, org in list(self.cluster.organizations.items()):
                if (org.get("spec") or {}).get("policy", "default") == name:
                    await self.queue.put(org_name, Priority.CHANGE)

    async def on_child(self, event: dict[str, Any]) -> None:
        await self.started.wait()
        assert self.cluster is not None and self.queue is not None
        obj = event["object"]
        inventory = self.cluster.inventory
        if event.get("type") == "DELETED":
            key, owner = inventory.remove(obj)
            if key in self.cluster.expected_deletions:
                self.cluster.expected_deletions.discard(key)
                inventory.forget_tombstone(key)
                priority = Priority.CHANGE
            else:
                priority = Priority.DRIFT
        else:
            previous = inventory.get(object_key(obj))
            key, owner = inventory.upsert(obj)
            seen = previous is not None and previous["metadata"].get("resourceVersion") == obj[
                "metadata"
            ].get("resourceVersion")
            if seen:
                return  # our own write, already recorded from its response
            # A quota's usage changed (its status only): refresh the status, it is not drift.
            priority = Priority.RESYNC if _same_but_status(previous, slim(obj)) else Priority.DRIFT
        if owner and owner in self.cluster.organizations:
            await self.queue.put(owner, priority)
        elif owner and priority == Priority.DRIFT:
            # Its Organization has not been seen yet (start-up): heal first once it is.
            self.drifted_before_seen.add(owner)

    @staticmethod
    def _store_policy(cluster: Cluster, body: dict[str, Any]) -> None:
        parsed = parse_object(body)
        name = body["metadata"]["name"]
        if isinstance(parsed, TenancyPolicy):
            cluster.policies[name] = parsed
        else:
            cluster.policies.pop(name, None)
            log.error("invalid TenancyPolicy ignored", policy=name, problems=[str(p) for p in parsed])

    def _count_ready(self, name: str, body: dict[str, Any] | None) -> None:
        """Remember each Organization's Ready status, for the metrics read at scrape time."""
        if body is None:
            self.ready_of.pop(name, None)
        else:
            self.ready_of[name] = _ready_of(body)

    def metrics_state(self) -> metrics.State:
        if self.cluster is None:
            return metrics.State()
        return current_state(self.cluster.inventory, self.cluster.organizations, self.ready_of)


def _ready_of(body: dict[str, Any]) -> str:
    for cond in (body.get("status") or {}).get("conditions", []):
        if cond.get("type") == "Ready" and cond.get("status") in ("True", "False"):
            return str(cond["status"])
    return "Unknown"


def _same_but_status(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    def essence(obj: dict[str, Any]) -> dict[str, Any]:
        meta = {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}
        return {**{k: v for k, v in obj.items() if k != "status"}, "metadata": meta}

    return a is not None and b is not None and essence(a) == essence(b)


def _policy_of(org: dict[str, Any]) -> str:
    return str((org.get("spec") or {}).get("policy", "default"))


def _significant(body: dict[str, Any]) -> tuple[Any, ...]:
    """What makes an Organization worth reconciling again (status-only writes are not)."""
    meta = body.get("metadata", {})
    return (
        meta.get("generation"),
        meta.get("deletionTimestamp"),
        tuple(meta.get("finalizers") or ()),
        body.get("spec"),
    )


def register(registry: kopf.OperatorRegistry, runtime: Runtime) -> None:
    """Wire the runtime into Kopf: login, start-up and clean-up (no resource handlers: the
    informers do all watching)."""

    @kopf.on.login(registry=registry, id="tenantry-login")
    def login(**_: Any) -> kopf.ConnectionInfo:
        # The client's current credentials (reloaded after a 401): one identity for everything.
        c = runtime.cluster.client.connection if runtime.cluster else runtime.connection
        return kopf.ConnectionInfo(
            server=c.server,
            ca_path=c.ca_path,
            ca_data=c.ca_data,
            insecure=c.insecure,
            scheme="Bearer" if c.token else None,
            token=c.token,
            certificate_path=c.certificate_path,
            certificate_data=c.certificate_data,
            private_key_path=c.private_key_path,
            private_key_data=c.private_key_data,
            default_namespace=runtime.config.operator_namespace,
        )

    @kopf.on.startup(registry=registry, id="tenantry-startup")
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False  # we post the Events people need, with our reasons
        settings.scanning.disabled = True  # Kopf watches no resource of ours
        try:
            await runtime.start()
        except LeaseNamespaceMissingError as exc:
            raise kopf.PermanentError(str(exc)) from exc  # exit, saying what to do; never idle
        except ApiError as exc:
            if exc.status in (401, 403):
                raise kopf.PermanentError(
                    f"the API server refused the operator's credentials or permissions: {exc}; "
                    "check the kubeconfig or the operator's ClusterRole (manifests/base/operator-rbac.yaml)"
                ) from exc
            raise

    @kopf.on.cleanup(registry=registry, id="tenantry-cleanup")
    async def cleanup(**_: Any) -> None:
        await runtime.stop()
