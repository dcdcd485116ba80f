"""List-then-watch of one managed kind: the inventory's feed.

Why not Kopf for the children: Kopf creates a worker task and an event queue per watched
object, which for ~40,000 children at start-up costs hundreds of MB and seconds before any
handler runs. Here a LIST fills the inventory page by page, and one watch stream per kind,
started at the LIST's resourceVersion, keeps it current, so the inventory is consistent with
the API server at every moment (no window where a deletion is missed). Kopf still watches the
Organizations and TenancyPolicies, where per-object handling is what we want.

The stream runs in a thread (the `kubernetes` client is synchronous) and hands each event to
the event loop. It reconnects with backoff; on 410 Gone it lists again and reports the
differences as events.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes.watch.watch import iter_resp_lines

from tenantry.kube.client import ApiError, KubeClient
from tenantry.kube.inventory import Entry, entry
from tenantry.kube.resources import Kind
from tenantry.observe.logging import get_logger

log = get_logger("tenantry.informer")
Event = dict[str, Any]


class Informer:
    def __init__(
        self,
        client: KubeClient,
        kind: Kind,
        selector: str,
        deliver: Callable[[Event], None],
        *,
        read_timeout: float = 300.0,
    ) -> None:
        self.client, self.kind, self.selector = client, kind, selector
        self._deliver = deliver  # called on the event loop, in stream order
        self._loop: asyncio.AbstractEventLoop | None = None
        self._resource_version = ""
        self._known: set[tuple[str, str]] = set()
        self._stopped = threading.Event()
        self._response: Any = None
        self._thread: threading.Thread | None = None
        self._read_timeout = read_timeout

    async def start(self) -> list[Entry]:
        """LIST now (packed for the inventory, page by page), then watch in a thread."""
        self._loop = asyncio.get_running_loop()
        entries, self._resource_version = await asyncio.to_thread(
            self.client.list_with_version_sync, self.kind, self.selector, 500, entry
        )
        self._known = {(key[2], key[3]) for key, _, _ in entries}
        self._thread = threading.Thread(target=self._run, name=f"watch {self.kind.plural}", daemon=True)
        self._thread.start()
        return entries

    def stop(self) -> None:
        self._stopped.set()
        response = self._response
        if response is not None:  # unblock the thread's read
            shutdown = getattr(response, "shutdown", None)
            (shutdown or response.release_conn)()

    def _list(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]]
        items, self._resource_version = self.client.list_with_version_sync(self.kind, self.selector)
        self._known = {_ident(i) for i in items}
        return items

    def _emit(self, event: Event) -> None:
        assert self._loop is not None
        if not self._stopped.is_set():
            self._loop.call_soon_threadsafe(self._deliver, event)

    def _relist(self) -> None:
        """After 410 Gone: list again and report what changed meanwhile as events."""
        before = self._known
        items = self._list()
        now = {_ident(i) for i in items}
        for namespace, name in sorted(before - now):
            meta = {"name": name, **({"namespace": namespace} if namespace else {})}
            self._emit(
                {
                    "type": "DELETED",
                    "object": {"apiVersion": self.kind.api_version, "kind": self.kind.kind, "metadata": meta},
                }
            )
        for item in items:
            self._emit({"type": "MODIFIED", "object": item})

    def _run(self) -> None:
        delay = 0.2
        while not self._stopped.is_set():
            try:
                self._watch_once()
                delay = 0.2
            except _GoneError:
                log.info("watch expired; listing again", kind=self.kind.kind)
                try:
                    self._relist()
                except (ApiError, OSError) as exc:
                    log.warning("relist failed", kind=self.kind.kind, error=str(exc))
            except Exception as exc:
                if self._stopped.is_set():
                    return
                log.warning("watch failed; reconnecting", kind=self.kind.kind, error=str(exc), retry_in=delay)
                time.sleep(random.uniform(0, delay))
                delay = min(delay * 2, 10.0)

    def _watch_once(self) -> None:
        query = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": self._resource_version,
            "labelSelector": self.selector,
            "timeoutSeconds": str(int(self._read_timeout)),
        }
        response = self.client.stream_sync(
            "watch", self.kind.path(), query, read_timeout=self._read_timeout + 30
        )
        self._response = response
        try:
            for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                if self._stopped.is_set():
                    return
                if not line:
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    if obj.get("code") == 410:
                        raise _GoneError()
                    raise ApiError(
                        int(obj.get("code") or 0), obj.get("reason", "Error"), obj.get("message", "")
                    )
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if version:
                    self._resource_version = version
                if event.get("type") == "BOOKMARK":
                    continue
                obj.setdefault("apiVersion", self.kind.api_version)
                obj.setdefault("kind", self.kind.kind)
                if event.get("type") == "DELETED":
                    self._known.discard(_ident(obj))
                else:
                    self._known.add(_ident(obj))
                self._emit(event)
        finally:
            self._response = None
            response.release_conn()


class _GoneError(Exception):
    """The watch's resourceVersion is too old (410): the caller must list again."""


def _ident(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")
