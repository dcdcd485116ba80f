"""The work queue: coalescing, priority order, one worker per name, delayed puts."""

from __future__ import annotations

import asyncio

import pytest

from tenantry.reconcile.queue import Priority, WorkQueue


async def drain(queue: WorkQueue) -> list[str]:
    """Everything queued, in the order workers would get it (each finished at once)."""
    out = []
    while len(queue):
        name = await asyncio.wait_for(queue.get(), 1)
        out.append(name)
        await queue.done(name)
    return out


async def nothing_ready(queue: WorkQueue) -> bool:
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    ready = getter.done()
    getter.cancel()
    await asyncio.gather(getter, return_exceptions=True)
    return not ready


def test_the_priority_order_is_drift_change_retry_resync() -> None:
    assert Priority.DRIFT < Priority.CHANGE < Priority.RETRY < Priority.RESYNC


async def test_many_events_for_one_name_coalesce_into_one_entry() -> None:
    queue = WorkQueue()
    for _ in range(30):
        await queue.put("acme", Priority.DRIFT)
    await queue.put("acme", Priority.RESYNC)
    assert len(queue) == 1
    assert await drain(queue) == ["acme"]
    assert await nothing_ready(queue)


async def test_names_come_out_by_priority_then_in_arrival_order() -> None:
    queue = WorkQueue()
    await queue.put("resync-1", Priority.RESYNC)
    await queue.put("retry", Priority.RETRY)
    await queue.put("change-1", Priority.CHANGE)
    await queue.put("drift", Priority.DRIFT)
    await queue.put("change-2", Priority.CHANGE)
    await queue.put("resync-2", Priority.RESYNC)
    assert await drain(queue) == ["drift", "change-1", "change-2", "retry", "resync-1", "resync-2"]


async def test_a_more_urgent_reason_moves_a_pending_name_up() -> None:
    queue = WorkQueue()
    await queue.put("beta", Priority.RESYNC)
    await queue.put("acme", Priority.RESYNC)
    await queue.put("other", Priority.CHANGE)
    await queue.put("acme", Priority.DRIFT)  # acme's NetworkPolicy was just deleted
    assert len(queue) == 3
    assert await drain(queue) == ["acme", "other", "beta"]


async def test_a_less_urgent_reason_does_not_move_a_pending_name_down() -> None:
    queue = WorkQueue()
    await queue.put("acme", Priority.DRIFT)
    await queue.put("beta", Priority.CHANGE)
    await queue.put("acme", Priority.RESYNC)
    assert await drain(queue) == ["acme", "beta"]


async def test_a_name_being_reconciled_is_not_handed_to_a_second_worker() -> None:
    queue = WorkQueue()
    await queue.put("acme", Priority.CHANGE)
    assert await queue.get() == "acme"
    await queue.put("acme", Priority.DRIFT)  # an event while the first worker reconciles it
    assert len(queue) == 0, "held back, not pending"
    assert await nothing_ready(queue), "a second worker must not get acme now"
    await queue.put("beta", Priority.RESYNC)
    assert await asyncio.wait_for(queue.get(), 1) == "beta", "other names are not blocked"
    await queue.done("beta")
    await queue.done("acme")  # the first worker finishes: now it comes back, once
    assert len(queue) == 1
    assert await drain(queue) == ["acme"]


async def test_events_during_a_reconcile_come_back_once_at_their_most_urgent_priority() -> None:
    queue = WorkQueue()
    await queue.put("acme", Priority.CHANGE)
    assert await queue.get() == "acme"
    await queue.put("acme", Priority.RESYNC)
    await queue.put("acme", Priority.DRIFT)
    await queue.put("acme", Priority.RETRY)
    await queue.put("beta", Priority.CHANGE)
    await queue.done("acme")
    assert await drain(queue) == ["acme", "beta"], "acme is back at DRIFT, ahead of beta's CHANGE"


async def test_a_finished_name_without_new_events_is_not_requeued() -> None:
    queue = WorkQueue()
    await queue.put("acme", Priority.CHANGE)
    assert await queue.get() == "acme"
    await queue.done("acme")
    assert len(queue) == 0
    assert await nothing_ready(queue)


async def test_a_waiting_worker_is_woken_by_a_put() -> None:
    queue = WorkQueue()
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()
    await queue.put("acme", Priority.RESYNC)
    assert await asyncio.wait_for(getter, 1) == "acme"


async def test_put_later_queues_after_the_delay_not_before() -> None:
    queue = WorkQueue()
    later = asyncio.ensure_future(queue.put_later("acme", Priority.RETRY, 0.05))
    await asyncio.sleep(0)
    assert len(queue) == 0, "not yet"
    await asyncio.wait_for(later, 1)
    assert len(queue) == 1
    assert await drain(queue) == ["acme"]


async def test_put_later_cancelled_queues_nothing() -> None:
    queue = WorkQueue()
    later = asyncio.ensure_future(queue.put_later("acme", Priority.RETRY, 10))
    await asyncio.sleep(0)
    later.cancel()
    with pytest.raises(asyncio.CancelledError):
        await later
    assert len(queue) == 0


async def test_a_name_given_back_unworked_keeps_its_priority() -> None:
    # A replica that stops leading while a worker holds a drifted name gives it back: when it
    # (or another) leads again, the drift still goes first.
    queue = WorkQueue()
    await queue.put("drifted", Priority.DRIFT)
    await queue.put("resync", Priority.RESYNC)
    taken = await queue.get()
    assert taken == "drifted"
    await queue.give_back(taken)
    assert await queue.get() == "drifted"


async def test_the_drift_lane_takes_drift_only_and_never_keeps_work_from_the_others() -> None:
    queue = WorkQueue()
    lane = asyncio.create_task(queue.get(Priority.DRIFT))
    worker = asyncio.create_task(queue.get())
    await asyncio.sleep(0.01)  # both wait, the lane first
    await queue.put("acme", Priority.CHANGE)
    assert await asyncio.wait_for(worker, 1.0) == "acme"
    assert not lane.done(), "the drift lane took a change"
    await queue.put("beta", Priority.DRIFT)
    assert await asyncio.wait_for(lane, 1.0) == "beta"
