"""The workers that drain the queue, with backoff for failures, and the periodic resync.

A worker reconciles only while this replica may write (`active`: it holds the Lease, or runs
standalone); a name taken just as the replica stopped leading is given back at its priority.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from tenantry.kube.client import ApiError, NotLeaderError
from tenantry.observe.logging import get_logger
from tenantry.reconcile.cluster import Cluster
from tenantry.reconcile.events import Events
from tenantry.reconcile.organization import OrganizationReconciler, Requeue, WritesFailedError
from tenantry.reconcile.policy import POLICY_KEY_PREFIX, reconcile_policy, remove_platform_admins
from tenantry.reconcile.queue import Priority

log = get_logger("tenantry.operator")
# Past the expiry instant, so the reconcile's clock is on the far side of it.
WAKE_MARGIN = 0.05
Spawn = Callable[[Coroutine[Any, Any, None], str], None]


@dataclass
class Workers:
    cluster: Cluster
    events: Events
    active: asyncio.Event
    spawn: Spawn
    max_backoff: float = 15.0
    first_backoff: float = 0.5
    failures: dict[str, int] = field(default_factory=dict)
    # Organization -> the wake-up already scheduled (one timer per change time).
    scheduled: dict[str, dt.datetime] = field(default_factory=dict)
    # When the workers last finished (or started waiting for) a name: the liveness probe's
    # "is the work loop moving?" (time.monotonic()).
    progress: float = field(default_factory=time.monotonic)

    def backoff(self, name: str, exc: BaseException) -> float:
        """The Organization's next retry delay: exponential per Organization (0.5 s, 1 s, 2 s, ...)
        up to `max_backoff`, and never sooner than the API server's Retry-After."""
        count = self.failures[name] = self.failures.get(name, 0) + 1
        delay: float = min(self.first_backoff * 2.0 ** (count - 1), self.max_backoff)
        after: float | None = getattr(exc, "retry_after", None)
        return max(delay, after) if after is not None else delay

    def stuck(self, threshold: float) -> str | None:
        """Why the work loop looks stuck (for the liveness probe), or None: names wait while
        this replica may write, and no reconcile finished for `threshold` seconds."""
        quiet = time.monotonic() - self.progress
        if self.active.is_set() and len(self.events.queue) and quiet > threshold:
            return f"no reconcile finished for {quiet:.0f} s while {len(self.events.queue)} wait"
        return None

    async def work(self, most: Priority = Priority.RESYNC) -> None:
        """Reconcile names from the queue, one at a time: those of priority `most` or more
        urgent. The drift lane (`most=Priority.DRIFT`) is a worker that only heals: while every
        other worker is busy onboarding (a reconcile of a new Organization writes ~40 objects,
        seconds on a loaded API server), a deleted NetworkPolicy does not wait for one of them."""
        queue = self.events.queue
        reconciler = OrganizationReconciler(self.cluster)
        while True:
            # A turn for the event loop between reconciles: a no-op reconcile awaits nothing
            # that yields (the inventory answers), so a pass over 1,000 of them (a resync, a
            # resume) would hold the loop to its end, and a drift event would wait for it.
            await asyncio.sleep(0)
            self.progress = time.monotonic()
            await self.active.wait()
            self.progress = time.monotonic()
            name = await queue.get(most)
            if not self.active.is_set():  # stopped leading while waiting: leave it for later
                await queue.give_back(name)
                continue
            try:
                if name.startswith(POLICY_KEY_PREFIX):
                    policy = name.removeprefix(POLICY_KEY_PREFIX)
                    body = self.events.policy_bodies.get(policy)
                    if body is not None:
                        await reconcile_policy(self.cluster, body)
                    else:  # deleted
                        await remove_platform_admins(self.cluster, policy)
                else:
                    await reconciler.reconcile(name)
                    self._wake_later(name)
                self.failures.pop(name, None)
            except Requeue as again:
                self.spawn(queue.put_later(name, Priority.RETRY, again.delay), f"requeue {name}")
            except NotLeaderError:
                # Stopped leading mid-reconcile: nothing failed, whoever leads next does it.
                log.info("reconcile interrupted: no longer the leader", organization=name)
                await queue.give_back(name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let one Organization stop the worker
                delay = self.backoff(name, exc)
                expected = isinstance(exc, ApiError | WritesFailedError)
                getattr(log, "warning" if expected else "error")(
                    "reconcile failed",
                    organization=name,
                    error=str(exc),
                    retry_in=delay,
                    failures=self.failures[name],
                    exc_info=not expected,
                )
                self.spawn(queue.put_later(name, Priority.RETRY, delay), f"retry {name}")
            finally:
                await queue.done(name)

    def _wake_later(self, name: str) -> None:
        """Reconcile again right when the rendering changes on its own (a grant expiring): the
        periodic resync is far too slow for a time-boxed grant."""
        when = self.cluster.wake_at.get(name)
        if when is None or self.scheduled.get(name) == when:
            return
        self.scheduled[name] = when
        delay = max(0.0, (when - self.cluster.now()).total_seconds()) + WAKE_MARGIN
        self.spawn(self.events.queue.put_later(name, Priority.CHANGE, delay), f"grant timer {name}")

    async def resync(self, every: float) -> None:
        """Periodic resync: covers lost watch events and expiring exceptions. Costs no request
        per Organization when nothing changed (the inventory answers)."""
        while True:
            await asyncio.sleep(every)
            await self.events.enqueue_all(Priority.RESYNC)
