"""The operator process's shared state: the API client, the inventory of what we own, the latest
Organizations and TenancyPolicies, and what we are deleting ourselves."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tenantry.api.policy import TenancyPolicy
from tenantry.kube import resources as res
from tenantry.kube.client import ApiError, KubeClient
from tenantry.kube.inventory import Bodies, Inventory
from tenantry.observe.logging import get_logger
from tenantry.render import ObjectKey

log = get_logger("tenantry.reconcile")


@dataclass(frozen=True)
class PoolView:
    """One Organization's quota pool as last rebalanced, for metrics read at scrape time.
    resources: (resource, pool, sum of hard, sum of used, exhausted), in units;
    namespaces: (namespace, environment, hard per resource (None: missing), used per resource)."""

    organization: str
    resources: list[tuple[str, int, int, int, bool]]
    namespaces: list[tuple[str, str, dict[str, int | None], dict[str, int]]]


@dataclass
class Cluster:
    """Shared state of the operator process, filled by watch events."""

    client: KubeClient
    inventory: Inventory = field(default_factory=Inventory)
    organizations: Bodies = field(default_factory=Bodies)
    policies: dict[str, TenancyPolicy] = field(default_factory=dict)
    reserved_namespaces: tuple[str, ...] = ("tenantry-system",)
    event_namespace: str = "default"
    today: Callable[[], dt.date] = dt.date.today
    now: Callable[[], dt.datetime] = field(default_factory=lambda: lambda: dt.datetime.now(dt.UTC))
    # Organization -> when its rendering changes on its own next (a grant starting or expiring).
    wake_at: dict[str, dt.datetime] = field(default_factory=dict)
    # Optional kinds (Argo CD's AppProject) whose CRDs this cluster does not have.
    missing_kinds: set[str] = field(default_factory=set)
    # Keys we are deleting ourselves: their DELETED events are not drift.
    expected_deletions: set[ObjectKey] = field(default_factory=set)
    # Status writes caused by quota usage alone: at most one per this many seconds per Organization.
    quota_status_interval: float = 30.0
    # How long a status write is held back while the only thing missing is a new quota coming
    # into force: kube-controller-manager takes milliseconds, but under a burst of onboarding as
    # long as its 20 writes a second take (150 s for 1,000 Organizations' 3,000 quotas). Its
    # watch event brings the Organization back, and one status write says Ready, with the
    # quota usage, instead of "Progressing" followed by "Ready".
    quota_enforce_grace: float = 60.0
    # Organization -> when this process first found one of its quotas not yet in force.
    quota_pending_since: dict[str, float] = field(default_factory=dict)
    # When a quota (any) last came into force, as a watch event said (monotonic time).
    quota_progress: float = 0.0
    # Writes one reconcile has in flight at once.
    applies_in_flight: int = 8
    # Whether the "refused by admission: wrong identity" error was logged (once per process).
    identity_warned: bool = False
    # When each Organization's status was last written for quota usage alone (monotonic time).
    quota_status_written: dict[str, float] = field(default_factory=dict)
    # Quota pools (reconcile/pool.py): per pooled quota the newest resourceVersion seen in a
    # response (the inventory may briefly hold an older watch event), per Organization its
    # pool as last rebalanced and the (namespace, resource) pairs reported exhausted.
    pool_seen: dict[ObjectKey, int] = field(default_factory=dict)
    pool_views: dict[str, PoolView] = field(default_factory=dict)
    pool_exhausted: dict[str, set[tuple[str, str]]] = field(default_factory=dict)

    def quota_status_due(self, name: str, now: float, ready_age: float | None = None) -> float:
        """Seconds to wait before the next quota-usage-only status write of `name` (0: now, and
        the write is recorded as made). The interval runs from the last status write of this
        process; a process that has made none (just restarted) counts from the Ready condition's
        last transition (`ready_age` seconds ago), so a restart right after onboarding spreads
        the usage writes the previous process was holding back instead of making them at once."""
        last = self.quota_status_written.get(name)
        if last is None and ready_age is not None:
            last = now - max(0.0, ready_age)
        interval = self.quota_status_interval
        if last is not None and now - last < interval:
            return interval - (now - last)
        self.quota_status_written[name] = now
        return 0.0

    def remember_organization(self, body: dict[str, Any]) -> bool:
        """Keep the newest body seen of an Organization (from a watch event or from the response
        to one of our writes); False, and nothing changes, when `body` is older than the cached
        one. resourceVersions are etcd revisions on every real API server: compared as numbers
        only when both are, as the API conventions allow no other ordering."""
        name = body["metadata"]["name"]
        cached = self.organizations.get(name)
        if cached is not None:
            old = str(cached["metadata"].get("resourceVersion") or "")
            new = str(body["metadata"].get("resourceVersion") or "")
            if old.isdigit() and new.isdigit() and int(new) < int(old):
                return False
        self.organizations[name] = body
        return True

    async def crd_going_away(self, crd: str) -> bool:
        """Is this CRD being deleted (or gone)? Then the API server is deleting every object of
        it: that is an uninstall or a re-install, not a tenant leaving."""
        try:
            found = await self.client.get(res.CRD, crd)
        except ApiError as exc:
            if exc.status == 403 or exc.not_served:
                log.warning("cannot read the CRD; assuming it stays", crd=crd, error=str(exc))
                return False
            raise
        return found is None or bool(found["metadata"].get("deletionTimestamp"))
