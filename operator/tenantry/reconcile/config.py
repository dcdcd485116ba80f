"""What `tenantry run` can be told: the operator's settings, in one place."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from tenantry.kube.client import Connection, Retry
from tenantry.kube.lease import LeaseTimings


@dataclass
class Config:
    workers: int = 4
    # Writes one reconcile has in flight at once (objects of one apply wave, kube/resources.py).
    applies_in_flight: int = 8
    resync_seconds: float = 300.0
    operator_namespace: str = "tenantry-system"
    event_namespace: str = "default"
    # Per-Organization backoff of failed reconciles (failed writes): 0.5 s doubling up to this.
    max_backoff: float = 15.0
    # The liveness probe fails when work waits and nothing moved for this long.
    stuck_seconds: float = 300.0
    # Leader election on a Lease in the operator's namespace; False: this replica always writes.
    leader_election: bool = False
    lease_name: str = "tenantry"
    lease_timings: LeaseTimings = field(default_factory=LeaseTimings)
    identity: str = "tenantry"
    retry: Retry = field(default_factory=Retry)
    today: Callable[[], dt.date] = dt.date.today
    # The clock grants expire by (an aware UTC datetime).
    now: Callable[[], dt.datetime] = field(default_factory=lambda: lambda: dt.datetime.now(dt.UTC))
    # Fresh credentials after a 401 (rotated service-account tokens); None: keep the first.
    reload_credentials: Callable[[], Connection] | None = None
    # Organization status writes for quota usage alone, at most one per this many seconds each.
    quota_status_interval_seconds: float = 30.0
    # Status writes held back while only a new quota coming into force is missing (at most).
    quota_enforce_grace_seconds: float = 60.0
    # How often a resource that is not served (CRD missing) is looked for again.
    not_served_poll_seconds: float = 5.0
