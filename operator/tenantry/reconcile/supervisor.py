"""Supervision of the operator's tasks: nothing dies silently.

The long-running tasks (the leader election, one watch per kind, the event feed, the workers,
the resync) each run forever. One that fails (a bug, an exception nobody expected from a
dropped connection) is logged with its traceback, counted in
`tenantry_task_restarts_total{task}` and started again after a capped exponential backoff
(reset once it has run for `healthy_after` seconds), as controller-runtime restarts a
runnable's loop with `wait.Until`-style backoff instead of leaving the process half alive.
One that keeps failing stays visible: `problems()` names it, and the liveness probe
(reconcile/frame.py) fails, so the kubelet restarts the pod.

Short-lived tasks (a retry timer, a grant timer) are `spawn`ed: their failure is logged and
counted too, instead of Python's "Task exception was never retrieved" at garbage collection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from tenantry.observe import metrics
from tenantry.observe.logging import get_logger

log = get_logger("tenantry.operator")
Factory = Callable[[], Coroutine[Any, Any, None]]


@dataclass
class Supervisor:
    first_delay: float = 0.5
    max_delay: float = 30.0
    # A task that ran this long before failing is starting afresh: its backoff starts again.
    healthy_after: float = 60.0
    # A long-running task failing this many times in a row is reported by problems().
    failing_after: int = 5
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    # Long-running task name -> consecutive failures (0: running well).
    failures: dict[str, int] = field(default_factory=dict)
    # Long-running task name -> when its current run started (monotonic).
    since: dict[str, float] = field(default_factory=dict)

    def keep(self, factory: Factory, name: str) -> None:
        """Run `factory()` forever: restarted with backoff whenever it fails or returns."""
        self.failures[name] = 0
        self.spawn(self._keep(factory, name), name)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """A task whose failure is logged and counted (never silently dropped)."""
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            metrics.TASK_FAILURES.labels(task=_family(task.get_name())).inc()
            log.error("task failed", task=task.get_name(), error=repr(exc), exc_info=exc)

    async def _keep(self, factory: Factory, name: str) -> None:
        delay = self.first_delay
        while True:
            started = self.since[name] = time.monotonic()
            try:
                await factory()
                why = "returned"
                error: BaseException | None = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                why, error = repr(exc), exc
            if time.monotonic() - started >= self.healthy_after:
                delay, self.failures[name] = self.first_delay, 0
            self.failures[name] += 1
            metrics.TASK_FAILURES.labels(task=_family(name)).inc()
            log.error("task stopped; restarting it", task=name, error=why, retry_in=delay, exc_info=error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_delay)

    def problems(self) -> list[str]:
        """Long-running tasks that keep failing (what the liveness probe reports): failed
        `failing_after` times in a row, and not yet running well again since."""
        now = time.monotonic()
        return [
            f"task {name!r} failed {count} times in a row"
            for name, count in sorted(self.failures.items())
            if count >= self.failing_after and now - self.since.get(name, now) < self.healthy_after
        ]

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        self.failures.clear()
        self.since.clear()


def _family(name: str) -> str:
    """A bounded label: "tenantry worker 3" -> "tenantry worker", "retry acme" -> "retry"."""
    words = name.split()
    if words and words[0] in ("retry", "requeue", "grant"):
        return words[0]
    return " ".join(w for w in words if not w.isdigit())[:60]
