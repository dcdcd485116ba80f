"""List-then-watch of one kind: the feed of the inventory, and of the Organizations and policies.

Why not Kopf for the children: Kopf creates a worker task and an event queue per watched
object, which for ~40,000 children at start-up costs hundreds of MB and seconds before any
handler runs. Here a LIST fills the inventory page by page, and one watch stream per kind,
started at the LIST's resourceVersion, keeps it current, so the inventory is consistent with
the API server at every moment (no window where a deletion is missed).

The same informer feeds the Organizations and TenancyPolicies (full bodies, no selector).
Kopf's own watcher treats a 404 on a watched resource as fatal and stops the whole operator
(by design: kopf#350), and a CRD deleted while watched gives exactly that 404; this informer
instead reports the resource as not served, keeps the process (and the healing of the other
kinds) running, and lists again once the resource is served again.

Why not the official client's `kubernetes.aio.watch.Watch`: it deserialises every event into
a model (we keep slim JSON), and on 410 Gone it reconnects from the same, expired
resourceVersion instead of listing again and reporting what changed meanwhile.

One asyncio task per kind (supervised by the runtime: `keep`); events are handed to `deliver`
in stream order. It reconnects with backoff; on 410 Gone (every informer at once after an
API-server restart, whose new watch cache starts at the current revision), and after the
resource was not served, it lists again and reports the differences as events: only objects
whose resourceVersion differs from the one last seen, each through `relist_transform` (the
slim copy for children) as it is decoded, so a relist of 40,000 unchanged children holds and
queues nothing but their versions.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from tenantry.kube.client import ApiError, KubeClient
from tenantry.kube.inventory import entry
from tenantry.kube.resources import Kind
from tenantry.observe import metrics
from tenantry.observe.logging import get_logger

log = get_logger("tenantry.informer")
Event = dict[str, Any]
# While a resource is not served (its CRD is missing), look again this often.
NOT_SERVED_POLL_SECONDS = 5.0


class Informer:
    def __init__(
        self,
        client: KubeClient,
        kind: Kind,
        selector: str,
        deliver: Callable[[Event], None],
        *,
        read_timeout: float = 300.0,
        transform: Callable[[dict[str, Any]], Any] = entry,
        relist_transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        on_served: Callable[[bool], None] | None = None,
        keep: Callable[[Callable[[], Coroutine[Any, Any, None]], str], None] | None = None,
    ) -> None:
        self.client, self.kind, self.selector = client, kind, selector
        self._deliver = deliver  # called in stream order
        self._transform = transform  # what start() returns per listed object
        self._relist_transform = relist_transform or _without_managed_fields
        self._on_served = on_served  # called when served/not served changes
        self._keep = keep  # runs the watch loop under supervision (restarted if it fails)
        self.served = True
        self.not_served_poll = NOT_SERVED_POLL_SECONDS
        metrics.RESOURCE_SERVED.labels(resource=kind.plural).set(1)
        self._resource_version = ""
        # Every object known, with the resourceVersion last seen (compared for equality only).
        self._versions: dict[tuple[str, str], str] = {}
        self._task: asyncio.Task[None] | None = None
        self._read_timeout = read_timeout

    async def start(self) -> list[Any]:
        """LIST now (each object through `transform`, page by page), then watch in a task.

        A resource that is not served (its CRD is not installed) lists as empty; the task
        then waits for it to be served and lists it then."""
        listed: list[Any] = []
        try:
            listed, self._resource_version = await self.client.list_with_version(
                self.kind, self.selector, 500, self._listed
            )
        except ApiError as exc:
            if not _not_served(exc):
                raise
            self._set_served(False)
        name = f"tenantry watch {self.kind.plural}"
        if self._keep is not None:
            self._keep(self.run, name)
        else:
            self._task = asyncio.create_task(self.run(), name=name)
        return listed

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _listed(self, obj: dict[str, Any]) -> Any:
        self._versions[_ident(obj)] = _version(obj)
        return self._transform(obj)

    def _set_served(self, served: bool) -> None:
        """Record (and report once per change) whether the API server serves this resource."""
        if served == self.served:
            return
        self.served = served
        metrics.RESOURCE_SERVED.labels(resource=self.kind.plural).set(1 if served else 0)
        if served:
            log.info("resource is served again; listing it", kind=self.kind.kind)
        else:
            log.warning(
                "resource is not served by the API server (its CRD is not installed or was deleted); "
                "its objects are not handled until it is, everything else carries on",
                kind=self.kind.kind,
                resource=self.kind.plural,
            )
        if self._on_served is not None:
            self._on_served(served)

    def _emit_deleted(self, idents: set[tuple[str, str]]) -> None:
        for namespace, name in sorted(idents):
            meta = {"name": name, **({"namespace": namespace} if namespace else {})}
            self._deliver(
                {
                    "type": "DELETED",
                    "object": {"apiVersion": self.kind.api_version, "kind": self.kind.kind, "metadata": meta},
                }
            )

    def _gone(self) -> None:
        """The resource is no longer served: none of its objects exist any more."""
        self._emit_deleted(set(self._versions))
        self._versions, self._resource_version = {}, ""
        self._set_served(False)

    async def _relist(self) -> None:
        """After 410 Gone, or once a resource is served again: list again and report what
        changed meanwhile as events (a not-served resource has no objects). An object whose
        resourceVersion is the one last seen has not changed: it is dropped as it is decoded."""
        before = self._versions
        seen: dict[tuple[str, str], str] = {}

        def changed(item: dict[str, Any]) -> dict[str, Any] | None:
            ident, version = _ident(item), _version(item)
            seen[ident] = version
            return None if before.get(ident) == version else self._relist_transform(item)

        try:
            items, self._resource_version = await self.client.list_with_version(
                self.kind, self.selector, 500, changed
            )
        except ApiError as exc:
            if not _not_served(exc):
                raise
            self._gone()
            return
        self._versions = seen
        self._set_served(True)
        self._emit_deleted(set(before) - set(seen))
        for item in items:
            if item is not None:
                self._deliver({"type": "MODIFIED", "object": item})

    async def run(self) -> None:
        """List (when needed) and watch, forever."""
        delay = 0.2
        while True:
            try:
                if not self.served:
                    # Nothing to watch; a watch started later from "" would miss what exists by
                    # then, so look with a LIST until the resource is served.
                    await asyncio.sleep(self.not_served_poll)
                    await self._relist()
                    continue
                await self._watch_once()
                delay = 0.2
            except _GoneError:
                log.info("watch expired; listing again", kind=self.kind.kind)
                try:
                    await self._relist()
                except ApiError as exc:
                    # The next watch, from the expired version, gets 410 again: listed again then.
                    log.warning("relist failed", kind=self.kind.kind, error=str(exc))
                    await asyncio.sleep(random.uniform(0, delay))
                    delay = min(delay * 2, 10.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, ApiError) and _not_served(exc):
                    # The resource went away under the watch (its CRD was deleted): every object
                    # of it is gone too. Report them as deleted and wait for it to come back.
                    self._gone()
                    continue
                log.warning("watch failed; reconnecting", kind=self.kind.kind, error=str(exc), retry_in=delay)
                await asyncio.sleep(random.uniform(0, delay))
                delay = min(delay * 2, 10.0)

    async def _watch_once(self) -> None:
        query = {
            "allowWatchBookmarks": "true",
            "resourceVersion": self._resource_version,
            "timeoutSeconds": str(int(self._read_timeout)),
        }
        if self.selector:
            query["labelSelector"] = self.selector
        try:
            async for event in self.client.watch(self.kind, query, read_timeout=self._read_timeout + 30):
                self._on_event(event)
        except ApiError as exc:
            if exc.status == 410:  # the same expiry, answered as an HTTP status
                raise _GoneError() from exc
            raise

    def _on_event(self, event: Event) -> None:
        obj = event.get("object") or {}
        if event.get("type") == "ERROR":
            if obj.get("code") == 410:
                raise _GoneError()
            raise ApiError(int(obj.get("code") or 0), obj.get("reason", "Error"), obj.get("message", ""))
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            self._resource_version = version
        if event.get("type") == "BOOKMARK":
            return
        obj.setdefault("apiVersion", self.kind.api_version)
        obj.setdefault("kind", self.kind.kind)
        if event.get("type") == "DELETED":
            self._versions.pop(_ident(obj), None)
        else:
            self._versions[_ident(obj)] = _version(obj)
        self._deliver(event)


class _GoneError(Exception):
    """The watch's resourceVersion is too old (410): the caller must list again."""


def _not_served(exc: ApiError) -> bool:
    """A 404 on a collection (LIST or watch) means the resource is not served: a real API server
    answers it in plain text (see ApiError.not_served), and a JSON 404 can only mean the same,
    as a served collection always exists."""
    return exc.status == 404


def _ident(obj: dict[str, Any]) -> tuple[str, str]:
    # Interned: the inventory holds the same namespaces and names.
    meta = obj.get("metadata") or {}
    return (sys.intern(meta.get("namespace") or ""), sys.intern(meta.get("name") or ""))


def _version(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _without_managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
    (obj.get("metadata") or {}).pop("managedFields", None)
    return obj
