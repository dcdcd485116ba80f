"""A coalescing priority queue of Organization names.

Waiters are all woken on a put (few: the workers and the drift lane), since the one woken
first may be the drift lane, which leaves anything but drift to the others.

Many events for one Organization (its 30 children all changing at once) collapse into one
pending entry. Drift outranks spec changes, which outrank periodic resyncs, so a deleted
NetworkPolicy is restored within seconds even while 1,000 Organizations resume. One name is
never reconciled by two workers at once; an event during a reconcile re-queues it after.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from enum import IntEnum

from tenantry.observe import metrics


class Priority(IntEnum):
    DRIFT = 0
    CHANGE = 1
    RETRY = 2
    RESYNC = 3


class WorkQueue:
    def __init__(self) -> None:
        self._heap: list[tuple[int, int, str]] = []
        self._pending: dict[str, int] = {}
        self._active: set[str] = set()
        self._dirty: dict[str, int] = {}
        self._taken: dict[str, int] = {}  # name being worked on -> the priority it was taken at
        self._counter = itertools.count()
        self._ready = asyncio.Condition()

    def __len__(self) -> int:
        return len(self._pending)

    async def put(self, name: str, priority: Priority) -> None:
        async with self._ready:
            self._put_locked(name, int(priority))
            self._ready.notify_all()

    def _put_locked(self, name: str, priority: int) -> None:
        if name in self._active:
            self._dirty[name] = min(priority, self._dirty.get(name, priority))
            return
        current = self._pending.get(name)
        if current is not None and current <= priority:
            return
        self._pending[name] = priority
        heapq.heappush(self._heap, (priority, next(self._counter), name))
        metrics.QUEUE_DEPTH.set(len(self._pending))

    async def put_later(self, name: str, priority: Priority, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.put(name, priority)

    async def get(self, most: Priority = Priority.RESYNC) -> str:
        """The most urgent pending name, once there is one of priority `most` or more urgent
        (the drift lane takes drift only, and so is free the moment a drift comes in)."""
        async with self._ready:
            while True:
                while self._heap:
                    priority, _, name = self._heap[0]
                    if self._pending.get(name) != priority:  # superseded entry
                        heapq.heappop(self._heap)
                        continue
                    if priority > most:
                        break
                    heapq.heappop(self._heap)
                    del self._pending[name]
                    self._active.add(name)
                    self._taken[name] = priority
                    metrics.QUEUE_DEPTH.set(len(self._pending))
                    return name
                await self._ready.wait()

    async def give_back(self, name: str) -> None:
        """A name taken but not worked on (this replica stopped leading meanwhile): pending
        again, at the priority it was taken at (a drift stays a drift)."""
        async with self._ready:
            priority = self._taken.pop(name, int(Priority.RESYNC))
            self._active.discard(name)
            again = self._dirty.pop(name, None)
            self._put_locked(name, priority if again is None else min(priority, again))
            self._ready.notify_all()

    async def done(self, name: str) -> None:
        async with self._ready:
            self._taken.pop(name, None)
            self._active.discard(name)
            again = self._dirty.pop(name, None)
            if again is not None:
                self._put_locked(name, again)
                self._ready.notify_all()
