"""Kopf in the test's event loop: start it, stop it gracefully, and wait for conditions.

Kopf only logs in, starts and stops Tenantry's runtime (see tenantry.reconcile.frame); the API
traffic is our client's, against the fake API server (tests/fakeapi).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import kopf


class _ForeignTasks(frozenset):
    """
    ``kopf.run_tasks(ignored=...)``: the tasks that the operator must not wait for or cancel
    at its exit. Kopf treats EVERY task created after its start as its own "hung" sub-task,
    and waits up to 5 s for them, then cancels them. In one event loop, that includes the fake API
    server's connection handlers (an open watch stream never ends), so each teardown would
    take 5 s and kill its connections. Here: pre-existing tasks + aiohttp server handlers.
    """

    def __contains__(self, task: object) -> bool:
        if super().__contains__(task):
            return True
        # The fixture's teardown runs in a task created after the operator started; Kopf would
        # take it for its own hung task and cancel it after 5 s. Test-runner tasks are foreign.
        name = task.get_name() if isinstance(task, asyncio.Task) else ""
        if name.startswith(("tenantry ", "requeue ", "retry ")):
            # The runtime's own tasks: it stops them itself (before Kopf exits), and with two
            # operators in one loop (leader election tests) one Kopf must not cancel the other's.
            return True
        if not name.startswith(("tenantry ", "worker for", "requeue ", "retry ")) and name.startswith(
            "Task-"
        ):
            return True
        coro = task.get_coro() if isinstance(task, asyncio.Task) else None
        return getattr(coro, "__qualname__", "").startswith("RequestHandler.")


@contextlib.asynccontextmanager
async def run_operator(
    *,
    registry: kopf.OperatorRegistry,
    settings: kopf.OperatorSettings,
    memo: kopf.Memo | None = None,
    startup_timeout: float = 5,
    stop_timeout: float = 10,
) -> AsyncIterator[asyncio.Task[None]]:
    """Run Kopf in the current loop until the block exits; then stop it via stop_flag."""
    ready_flag = asyncio.Event()
    stop_flag = asyncio.Event()
    ignored = _ForeignTasks(asyncio.all_tasks())
    tasks = await kopf.spawn_tasks(
        registry=registry,
        settings=settings,
        memo=memo,
        clusterwide=True,
        standalone=True,  # no namespace scanning; no peering objects needed
        ready_flag=ready_flag,
        stop_flag=stop_flag,
    )
    operator = asyncio.create_task(kopf.run_tasks(tasks, ignored=ignored), name="kopf operator")
    ready = asyncio.create_task(ready_flag.wait())
    try:
        await asyncio.wait({operator, ready}, timeout=startup_timeout, return_when=asyncio.FIRST_COMPLETED)
        if operator.done():
            operator.result()  # re-raise the startup failure
            raise RuntimeError("The operator exited during startup.")
        if not ready_flag.is_set():
            raise TimeoutError("The operator did not become ready in time.")
        yield operator
    finally:
        ready.cancel()
        stop_flag.set()  # NOT operator.cancel(): a stop-flag exit is the graceful one
        done, _ = await asyncio.wait({operator}, timeout=stop_timeout)
        if not done:
            operator.cancel()
            await asyncio.gather(operator, return_exceptions=True)
    # Only reached if the test body did not fail: then surface the operator's own problems.
    if not done:
        raise TimeoutError("The operator did not stop in time.")
    operator.result()  # re-raises a crash of Kopf's root tasks, if any


async def eventually(predicate: Callable[[], Any], *, timeout: float = 5, interval: float = 0.02) -> Any:
    """Poll a condition without blocking the loop (the fake API server and Kopf run in it)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"Condition not met in {timeout}s: {predicate}")
        await asyncio.sleep(interval)
