"""A small fake Kubernetes API server on aiohttp: what Tenantry's tests and bench talk to.

It is ours (no emulator library underneath) so that what it does is written down here, and each
behaviour our code depends on is modelled from the real API server's code or documentation
(see docs/real-api-server.md for the sources; tests/unit/test_fake_apiserver.py holds the fake
to each behaviour below).

Modelled:
- paths: `/api/v1[/namespaces/NS]/PLURAL[/NAME[/SUB]]`, `/apis/G/V/...`; discovery (`/api`,
  `/apis`, `/api/v1`, `/apis/G/V`, `/version`) for the declared resources, so kubectl works;
  anything else, including a resource that is not served (a CRD not installed or deleted), is
  the real server's `text/plain` `404 page not found`; a missing object of a served resource is a
  JSON `Status` 404 (`namespaces "x" not found`);
- objects: uid, creationTimestamp, resourceVersion (one counter for the whole server, as etcd's
  revision), generation (for the kinds that have it: +1 on changes outside metadata and status),
  `generateName`, apiVersion/kind, namespaces' `kubernetes.io/metadata.name` label,
  `spec.finalizers: [kubernetes]` and `status.phase`;
- writes: create (409 AlreadyExists), merge / strategic-merge / JSON patch (a failed `test` is
  422), PUT, server-side apply with field ownership and conflicts (see fields.py),
  `metadata.resourceVersion` preconditions (409 Conflict), DELETE with `preconditions` (uid,
  resourceVersion) and finalizers (deletionTimestamp, then gone when the last one is removed; no
  new finalizer on an object being deleted); a write that changes nothing changes nothing (no
  resourceVersion, no event); the status subresource (the main endpoint keeps status, `/status`
  changes only status); `metadata.managedFields` in every answer;
- NamespaceLifecycle admission: creating in a missing namespace is 404, in a terminating one 403;
  `default`, `kube-system`, `kube-public` and `kube-node-lease` exist from the start;
- the namespace controller, synchronously: deleting a namespace marks it Terminating, deletes
  everything in it (their DELETED events first), then removes its `kubernetes` finalizer; it goes
  once `metadata.finalizers` is empty too;
- list: label selectors (all of the syntax), `metadata.name`/`metadata.namespace` field
  selectors, `limit`/`continue` pages from one snapshot (410 for an unknown token), the list's
  resourceVersion;
- watch: JSON lines; from `resourceVersion=R` every event after R from the resource's history
  (ADDED for every current object when R is "" or "0"); 410 Expired (an ERROR event) when R is
  older than the history kept (`history` events per resource, or `forget_history()`, as the
  watch cache's window); with a label selector, an object that stops matching is DELETED and one
  that starts matching ADDED, as the watch cache does (cacheWatcher.convertToWatchEvent);
  bookmarks every `bookmark_every` seconds when asked for (`allowWatchBookmarks`); the stream ends
  after `timeoutSeconds`, and when the resource stops being served.

Not modelled (tests/e2e covers what our code depends on): authentication and RBAC (every request
is allowed; test_operator_rbac compares what was sent with our ClusterRole), admission other than
NamespaceLifecycle and, when installed (tests/fakeapi/quota.py, with the `PODS` resource), quota
admission for pods (tests/unit evaluates our policies), schema validation, defaulting and pruning
(the CRD tests), garbage collection by ownerReferences, list-map merge keys, `dryRun`
(refused, so a test cannot believe it worked), deletecollection, protobuf, HTTP/2 streams.

Test hooks (public, used by tests and bench): `requests` (the log), `fail()` (answer the next
matching requests with an error instead of serving them: state does not change), `end_watches()`,
`forget_history()`, `delete_unheard()`, `serve()`/`stop_serving()`, `write_status()` (a
controller's status update), `admitters` (admission plugins for creates), `listeners` (called
on every change) and `observers` (called on every request, with its answer's status).
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import json
import random
import socket
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp.web
import jsonpatch
import jsonpointer
import yaml

from tests.fakeapi.fields import SERVER_META, ApplyConflictError, Ownership, merge_patch
from tests.fakeapi.resources import PODS, TENANTRY_RESOURCES, ResourceInfo
from tests.fakeapi.selectors import SelectorError, object_filter

if TYPE_CHECKING:
    from tests.fakeapi.quota import QuotaSystem

NAMESPACES = "v1/namespaces"
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what the API server uses for generateName
_NOT_SERVED = "404 page not found\n"  # Go's http.NotFound, as a real API server answers
_END = {"type": "__END__"}  # ends a watch stream (never sent)


class ApiStatusError(Exception):
    """An error answered as a v1 Status."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def body(self) -> dict[str, Any]:
        return status_body(self.code, self.reason, self.message, self.details)


def status_body(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details or {},
        "code": code,
    }


@dataclass(eq=False)
class Hold:
    """Requests whose method is `method` and whose path starts with `prefix` wait until
    `release()` (an API server too loaded to answer them); `held` counts those that waited."""

    method: str
    prefix: str
    released: asyncio.Event = field(default_factory=asyncio.Event)
    held: int = 0

    def release(self) -> None:
        self.released.set()


class NotServedError(Exception):
    """The path is not served at all: text/plain 404."""


@dataclass
class Request:
    """One request as the fake understood it (the log a test asserts on)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    verb: str  # get, list, watch, create, patch, apply, update, delete, discovery, unserved
    resource: ResourceInfo | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    body: Any = None
    status: int = 0  # the answer's HTTP status (200 for a watch that started)
    expired: bool = False  # a watch told 410 Expired (in its stream, as the API server does)

    @property
    def group(self) -> str | None:
        return self.resource.group if self.resource else None

    @property
    def plural(self) -> str | None:
        return self.resource.plural if self.resource else None

    @property
    def user_agent(self) -> str:
        return self.headers.get("User-Agent", "")


@dataclass
class Fault:
    """Answer requests that match with this error, `times` times (None: always)."""

    method: str | None
    path: str | None
    watch_of: str | None
    code: int
    reason: str
    message: str
    times: int | None = 1
    hits: int = 0
    # Response headers (e.g. Retry-After, which API Priority and Fairness sends with a 429).
    headers: dict[str, str] = field(default_factory=dict)
    lifted: bool = False

    def lift(self) -> None:
        """The refusal ends (a maintenance freeze is over): matching requests are served again."""
        self.lifted = True

    def matches(self, request: Request) -> bool:
        if self.lifted:
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        if self.watch_of is not None:
            return (
                request.verb == "watch"
                and request.resource is not None
                and request.resource.key == self.watch_of
            )
        return (self.method is None or request.method == self.method) and (
            self.path is None or request.path == self.path
        )


@dataclass
class _Change:
    resource: str
    type: str  # ADDED, MODIFIED, DELETED
    obj: dict[str, Any]
    prev: dict[str, Any] | None
    rv: int


@dataclass(eq=False)
class _Watcher:
    resource: str
    namespace: str | None
    matches: Callable[[dict[str, Any]], bool]
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)

    def convert(self, change: _Change) -> dict[str, Any] | None:
        """The event this watcher gets for a change, as the watch cache converts it."""
        namespace = change.obj.get("metadata", {}).get("namespace")
        if self.namespace is not None and namespace != self.namespace:
            return None
        now = change.type != "DELETED" and self.matches(change.obj)
        before = change.prev is not None and self.matches(change.prev)
        if now and before:
            return {"type": change.type, "object": change.obj}
        if now:
            return {"type": "ADDED", "object": change.obj}
        if before:
            if change.type == "DELETED":
                return {"type": "DELETED", "object": change.obj}
            gone = copy.deepcopy(change.prev)
            assert gone is not None
            gone["metadata"]["resourceVersion"] = str(change.rv)
            return {"type": "DELETED", "object": gone}
        return None


Key = tuple[str, str]  # (namespace or "", name)


class FakeApiServer:
    def __init__(
        self,
        resources: Iterable[ResourceInfo] = TENANTRY_RESOURCES,
        *,
        keep_requests: bool = True,
        history: int = 10_000,
        bookmark_every: float = 60.0,
        quota_sync_delay: float | None = 0.005,
    ) -> None:
        self.served: dict[str, ResourceInfo] = {}
        self.objects: dict[str, dict[Key, dict[str, Any]]] = {}
        self.requests: list[Request] = []
        self.keep_requests = keep_requests
        self.listeners: list[Callable[[str, str, dict[str, Any]], None]] = []
        self.faults: list[Fault] = []
        self.holds: list[Hold] = []
        self.crashes: list[BaseException] = []
        # Called once per request, when its answer's status is known (a watch: once it started).
        self.observers: list[Callable[[Request], None]] = []
        # Admission plugins for creates (tests/fakeapi/quota.py): (resource, namespace, body); raise
        # ApiStatusError to refuse. Called after NamespaceLifecycle, before the object is stored.
        self.admitters: list[Callable[[ResourceInfo, str | None, dict[str, Any]], None]] = []
        self.history_size = history
        self.bookmark_every = bookmark_every
        self._history: dict[str, deque[_Change]] = {}
        self._compacted: dict[str, int] = {}  # per resource: the newest revision forgotten
        self._ownership: dict[tuple[str, str, str], Ownership] = {}
        self._watchers: dict[str, set[_Watcher]] = {}
        self._pages: dict[str, tuple[int, list[dict[str, Any]]]] = {}
        self._revision = 0
        self._runner: aiohttp.web.AppRunner | None = None
        self.url = ""
        for info in resources:
            self.serve(info)
        for name in SYSTEM_NAMESPACES:
            self._store_new(
                self.served[NAMESPACES], {"metadata": {"name": name}}, None, "kube-apiserver", apply=False
            )
        # Every real cluster runs kube-controller-manager's quota controller (and the API server
        # its quota admission): a new ResourceQuota is in force only once the controller copied
        # spec.hard into status.hard, a few milliseconds after the write that created it, never
        # in that write's response. None: no quota controller (a test of the fake itself).
        self.quota_system: QuotaSystem | None = None
        if quota_sync_delay is not None:
            from tests.fakeapi.quota import QuotaSystem  # noqa: PLC0415 - it imports this module

            self.serve(PODS)
            self.quota_system = QuotaSystem(self, sync_delay=quota_sync_delay)

    # ---- running -----------------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = aiohttp.web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = aiohttp.web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        listener = socket.create_server((host, port))  # port 0: any free one, known before serving
        bound = listener.getsockname()[1]
        await aiohttp.web.SockSite(self._runner, listener).start()
        self.url = f"http://{host}:{bound}"
        return self.url

    async def stop(self) -> None:
        for key in list(self._watchers):
            self.end_watches(key)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeApiServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    # ---- test hooks ---------------------------------------------------------------------------
    def serve(self, info: ResourceInfo) -> None:
        """Serve a resource (a CRD became established)."""
        self.served[info.key] = info
        self.objects.setdefault(info.key, {})

    def stop_serving(self, key: str) -> ResourceInfo:
        """Stop serving a resource (its CRD is gone): open watches end, requests get the plain 404."""
        info = self.served.pop(key)
        self.end_watches(key)
        return info

    def end_watches(self, key: str) -> None:
        """Close every open watch of a resource, as the API server does when it stops serving it
        (or restarts)."""
        for watcher in self._watchers.pop(key, set()):
            watcher.queue.put_nowait(_END)

    def forget_history(self, key: str) -> None:
        """The watch cache's window moves past now: a watch resuming from any earlier
        resourceVersion gets 410 Expired and must list again."""
        self._history[key] = deque()
        self._revision += 1  # as if etcd compacted at a newer revision (written elsewhere)
        self._compacted[key] = self._revision

    def delete_unheard(self, key: str, namespace: str | None, name: str) -> None:
        """The object goes and no watcher hears it: what a client whose watch was broken misses
        once the deletion is older than the watch cache's window."""
        del self.objects[key][(namespace or "", name)]
        self._ownership.pop((key, namespace or "", name), None)
        self.forget_history(key)

    def fail(
        self,
        method: str | None = None,
        path: str | None = None,
        *,
        watch_of: str | None = None,
        code: int = 500,
        reason: str = "InternalError",
        message: str = "injected by the test",
        times: int | None = 1,
        headers: dict[str, str] | None = None,
    ) -> Fault:
        """Answer the next `times` requests to `method path` (or watches of `watch_of`) with this
        error, without serving them (an admission refusal is `code=422, reason="Invalid"` or
        403 "Forbidden", as ValidatingAdmissionPolicy answers). Returns the fault; `fault.hits`
        counts its answers, `fault.lift()` ends it."""
        fault = Fault(method, path, watch_of, code, reason, message, times, headers=dict(headers or {}))
        self.faults.append(fault)
        return fault

    def hold(self, method: str, prefix: str) -> Hold:
        """Keep requests `method prefix...` unanswered until the returned hold is released."""
        hold = Hold(method, prefix)
        self.holds.append(hold)
        return hold

    def get(self, key: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        obj = self.objects.get(key, {}).get((namespace or "", name))
        return copy.deepcopy(obj) if obj is not None else None

    def write_status(self, key: str, namespace: str | None, name: str, status: dict[str, Any]) -> bool:
        """A controller's status update (PUT .../status): False if nothing changed or it is gone."""
        info = self.served[key]
        old = self.objects[key].get((namespace or "", name))
        if old is None or old.get("status") == status:
            return False
        new = copy.deepcopy(old)
        new["status"] = copy.deepcopy(status)
        self._ownership_of(key, namespace, name).update(
            old, new, "kube-controller-manager", subresource="status", now=_now()
        )
        self._commit(info, old, new)
        return True

    # ---- HTTP -----------------------------------------------------------------------------------
    async def handle(self, raw: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        """Serve one request; a bug of the fake itself is kept in `crashes` (tests fail on it)."""
        try:
            return await self._handle(raw)
        except Exception as error:
            self.crashes.append(error)
            raise

    async def _handle(self, raw: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        body_bytes = await raw.read()
        try:
            request = self._parse(raw, body_bytes)
        except NotServedError:
            unserved = Request(raw.method.upper(), raw.path, dict(raw.query), dict(raw.headers), "unserved")
            unserved.status = 404
            self._observe(unserved)
            return aiohttp.web.Response(status=404, text=_NOT_SERVED, content_type="text/plain")
        if self.keep_requests:
            self.requests.append(request)
        for hold in self.holds:
            if request.method == hold.method and request.path.startswith(hold.prefix):
                hold.held += 1
                await hold.released.wait()
        try:
            for fault in self.faults:
                if fault.matches(request):
                    fault.hits += 1
                    request.status = fault.code
                    self._observe(request)
                    body = ApiStatusError(fault.code, fault.reason, fault.message).body()
                    return aiohttp.web.Response(
                        status=fault.code,
                        body=json.dumps(body).encode(),
                        content_type="application/json",
                        headers=fault.headers,
                    )
            if request.verb == "watch":
                return await self._watch(raw, request)
            code, answer = self._serve(request)
        except ApiStatusError as error:
            code, answer = error.code, error.body()
        except SelectorError as error:
            code, answer = 400, status_body(400, "BadRequest", str(error))
        request.status = code
        self._observe(request)
        return aiohttp.web.Response(
            status=code, body=json.dumps(answer).encode(), content_type="application/json"
        )

    def _observe(self, request: Request) -> None:
        if self.keep_requests and request.verb == "unserved":
            self.requests.append(request)
        for observer in self.observers:
            observer(request)

    def _parse(self, raw: aiohttp.web.Request, body: bytes) -> Request:
        method = raw.method.upper()
        query = dict(raw.query)
        headers = dict(raw.headers)
        parts = [p for p in raw.path.split("/") if p]
        request = Request(method, raw.path, query, headers, "discovery")
        if parts in (["api"], ["apis"], ["version"]) or (
            method == "GET" and (parts == ["api", "v1"] or (len(parts) == 3 and parts[0] == "apis"))
        ):
            if parts[:1] == ["apis"] and len(parts) == 3 and not self._group_version(parts[1], parts[2]):
                raise NotServedError()
            return request
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise NotServedError()
        by_plural = {i.plural: i for i in self.served.values() if i.group == group and i.version == version}
        namespace = None
        if (
            len(rest) >= 3
            and rest[0] == "namespaces"
            and rest[2] in by_plural
            and by_plural[rest[2]].namespaced
        ):
            namespace, rest = rest[1], rest[2:]
        info = by_plural.get(rest[0]) if rest else None
        if info is None or len(rest) > 3:
            raise NotServedError()
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        if (subresource is not None and subresource not in info.subresources) or (
            namespace is None and info.namespaced and name is not None
        ):
            raise NotServedError()
        content_type = raw.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if method == "GET":
            verb = "get" if name else ("watch" if query.get("watch") in ("true", "1") else "list")
        elif method == "PATCH":
            verb = "apply" if content_type == "application/apply-patch+yaml" else "patch"
        else:
            verb = {"POST": "create", "PUT": "update", "DELETE": "delete"}.get(method, method.lower())
        parsed: Any = None
        if body:
            try:
                parsed = json.loads(body) if content_type != "application/apply-patch+yaml" else _yaml(body)
            except (ValueError, yaml.YAMLError) as error:
                parsed = _Unparsable(str(error))
        request.verb, request.resource, request.namespace = verb, info, namespace
        request.name, request.subresource, request.body = name, subresource, parsed
        return request

    def _group_version(self, group: str, version: str) -> list[ResourceInfo]:
        return [i for i in self.served.values() if i.group == group and i.version == version]

    def _serve(self, request: Request) -> tuple[int, Any]:
        if request.verb == "discovery":
            return 200, self._discovery(request)
        if "dryRun" in request.query:
            raise ApiStatusError(400, "BadRequest", "dryRun is not modelled by the fake API server")
        if isinstance(request.body, _Unparsable):
            raise ApiStatusError(400, "BadRequest", f"the body is not valid: {request.body.error}")
        info = request.resource
        assert info is not None
        if request.verb == "list":
            return 200, self._list(request, info)
        if request.verb == "get":
            return 200, self._existing(info, request.namespace, request.name)
        if request.verb == "create":
            if request.name is not None or request.subresource is not None:
                raise ApiStatusError(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            return 201, self._create(request, info, request.body, apply=False)
        if request.name is None:
            raise ApiStatusError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        if request.verb == "delete":
            return 200, self._delete(request, info)
        return self._update(request, info)

    # ---- discovery --------------------------------------------------------------------------------
    def _discovery(self, request: Request) -> dict[str, Any]:
        parts = [p for p in request.path.split("/") if p]
        if parts == ["version"]:
            return {"major": "1", "minor": "36", "gitVersion": "v1.36.0-fake", "platform": "linux/amd64"}
        if parts == ["api"]:
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if parts == ["apis"]:
            groups: dict[str, list[str]] = {}
            for info in self.served.values():
                if info.group and info.version not in groups.setdefault(info.group, []):
                    groups[info.group].append(info.version)
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": group,
                        "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
                        "preferredVersion": {
                            "groupVersion": f"{group}/{versions[0]}",
                            "version": versions[0],
                        },
                    }
                    for group, versions in groups.items()
                ],
            }
        group, version = ("", "v1") if parts[0] == "api" else (parts[1], parts[2])
        listed: list[dict[str, Any]] = []
        for info in self._group_version(group, version):
            listed.append(
                {
                    "name": info.plural,
                    "singularName": info.singular,
                    "namespaced": info.namespaced,
                    "kind": info.kind,
                    "verbs": sorted(info.verbs),
                    **({"shortNames": list(info.short_names)} if info.short_names else {}),
                }
            )
            for sub in sorted(info.subresources):
                listed.append(
                    {
                        "name": f"{info.plural}/{sub}",
                        "singularName": "",
                        "namespaced": info.namespaced,
                        "kind": info.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": listed,
        }

    # ---- reads ------------------------------------------------------------------------------------
    def _existing(self, info: ResourceInfo, namespace: str | None, name: str | None) -> dict[str, Any]:
        obj = self.objects[info.key].get((namespace or "", name or ""))
        if obj is None:
            raise _not_found(info, name or "")
        return obj

    def _in_scope(self, info: ResourceInfo, namespace: str | None) -> Iterator[dict[str, Any]]:
        store = self.objects[info.key]
        for (ns, _), obj in sorted(store.items()):
            if namespace is None or ns == namespace:
                yield obj

    def _list(self, request: Request, info: ResourceInfo) -> dict[str, Any]:
        limit = int(request.query.get("limit") or 0)
        token = request.query.get("continue")
        if token:
            snapshot_id, _, offset_text = token.rpartition(":")
            if snapshot_id not in self._pages:
                raise ApiStatusError(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result.",
                )
            revision, items = self._pages[snapshot_id]
            offset = int(offset_text)
        else:
            matches = object_filter(
                request.query.get("labelSelector", ""), request.query.get("fieldSelector", "")
            )
            revision, items, offset = (
                self._revision,
                [o for o in self._in_scope(info, request.namespace) if matches(o)],
                0,
            )
            snapshot_id = uuid.uuid4().hex
        meta: dict[str, Any] = {"resourceVersion": str(revision)}
        page = items[offset : offset + limit] if limit else items[offset:]
        if limit and offset + limit < len(items):
            self._pages[snapshot_id] = (revision, items)
            meta["continue"] = f"{snapshot_id}:{offset + limit}"
            while len(self._pages) > 100:  # the oldest snapshots expire, as etcd compacts them
                del self._pages[next(iter(self._pages))]
        else:
            self._pages.pop(snapshot_id, None)
        return {"apiVersion": info.group_version, "kind": f"{info.kind}List", "metadata": meta, "items": page}

    async def _watch(self, raw: aiohttp.web.Request, request: Request) -> aiohttp.web.StreamResponse:
        info = request.resource
        assert info is not None
        matches = object_filter(
            request.query.get("labelSelector", ""), request.query.get("fieldSelector", "")
        )
        since_text = request.query.get("resourceVersion", "")
        if since_text not in ("", "0") and not since_text.isdigit():
            raise ApiStatusError(400, "BadRequest", f"resourceVersion: Invalid value: {since_text!r}")
        since = int(since_text or 0)
        watcher = _Watcher(info.key, request.namespace, matches)
        # Registration and the initial events happen with no await in between: nothing is lost.
        if since and since < self._compacted.get(info.key, 0):
            initial = [
                {
                    "type": "ERROR",
                    "object": status_body(
                        410, "Expired", f"too old resource version: {since} ({self._compacted[info.key]})"
                    ),
                }
            ]
            initial.append(_END)
            request.expired = True
        elif since:
            initial = [
                e for c in self._history.get(info.key, ()) if c.rv > since if (e := watcher.convert(c))
            ]
        else:
            initial = [
                {"type": "ADDED", "object": o} for o in self._in_scope(info, request.namespace) if matches(o)
            ]
        for event in initial:
            watcher.queue.put_nowait(event)
        self._watchers.setdefault(info.key, set()).add(watcher)
        timeout = float(request.query.get("timeoutSeconds") or 1800)
        bookmarks = request.query.get("allowWatchBookmarks") == "true"
        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        request.status = 200
        try:
            await response.prepare(raw)
            self._observe(request)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            next_bookmark = loop.time() + self.bookmark_every
            while True:
                now = loop.time()
                wait = min(deadline, next_bookmark if bookmarks else deadline) - now
                try:
                    event = await asyncio.wait_for(watcher.queue.get(), timeout=max(wait, 0))
                except TimeoutError:
                    if loop.time() >= deadline:
                        break
                    next_bookmark = loop.time() + self.bookmark_every
                    event = {
                        "type": "BOOKMARK",
                        "object": {
                            "kind": info.kind,
                            "apiVersion": info.group_version,
                            "metadata": {"resourceVersion": str(self._revision)},
                        },
                    }
                if event is _END:
                    break
                await response.write(json.dumps(event).encode() + b"\n")
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._watchers.get(info.key, set()).discard(watcher)
        return response

    # ---- writes -----------------------------------------------------------------------------------
    def _ownership_of(self, key: str, namespace: str | None, name: str) -> Ownership:
        info = self.served.get(key)
        atomic = info.atomic if info is not None else frozenset()
        return self._ownership.setdefault((key, namespace or "", name), Ownership(atomic))

    def _commit(
        self,
        info: ResourceInfo,
        old: dict[str, Any] | None,
        new: dict[str, Any] | None,
        *,
        gone: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Store a change: a new revision, managedFields, history, watchers, listeners."""
        self._revision += 1
        store = self.objects[info.key]
        if new is not None:
            meta = new["metadata"]
            meta["resourceVersion"] = str(self._revision)
            ownership = self._ownership_of(info.key, meta.get("namespace"), meta["name"])
            meta["managedFields"] = ownership.managed_fields(info.group_version)
            if not meta["managedFields"]:
                del meta["managedFields"]
            store[(meta.get("namespace") or "", meta["name"])] = new
            change = _Change(info.key, "ADDED" if old is None else "MODIFIED", new, old, self._revision)
            result = new
        else:
            assert old is not None and gone is not None
            meta = gone["metadata"]
            meta["resourceVersion"] = str(self._revision)
            store.pop((meta.get("namespace") or "", meta["name"]), None)
            self._ownership.pop((info.key, meta.get("namespace") or "", meta["name"]), None)
            change = _Change(info.key, "DELETED", gone, old, self._revision)
            result = gone
        history = self._history.setdefault(info.key, deque())
        history.append(change)
        while len(history) > self.history_size:
            self._compacted[info.key] = history.popleft().rv
        for watcher in list(self._watchers.get(info.key, ())):
            event = watcher.convert(change)
            if event is not None:
                watcher.queue.put_nowait(event)
        for listener in list(self.listeners):
            listener(info.key, change.type, result)
        return result

    def _store_new(
        self, info: ResourceInfo, body: dict[str, Any], namespace: str | None, manager: str, *, apply: bool
    ) -> dict[str, Any]:
        new: dict[str, Any] = {"apiVersion": info.group_version, "kind": info.kind, **copy.deepcopy(body)}
        new["apiVersion"], new["kind"] = info.group_version, info.kind
        meta = new.setdefault("metadata", {})
        for server_owned in SERVER_META - {"name", "namespace"}:  # a client cannot set these
            meta.pop(server_owned, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now())
        if info.namespaced:
            meta["namespace"] = namespace
        if info.generation:
            meta["generation"] = 1
        if "status" in info.subresources:
            new.pop("status", None)  # status is set through /status only
        if info.key == NAMESPACES:
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
            new["spec"] = {"finalizers": ["kubernetes"]}
            new["status"] = {"phase": "Active"}
        if not meta.get("finalizers"):
            meta.pop("finalizers", None)
        ownership = self._ownership_of(info.key, namespace, meta["name"])
        if apply:
            ownership.apply({}, body, manager, force=True, subresource="", now=_now())
        else:
            ownership.update({}, new, manager, subresource="", now=_now())
        return self._commit(info, None, new)

    def _create(self, request: Request, info: ResourceInfo, body: Any, *, apply: bool) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiStatusError(400, "BadRequest", "the body of the request must be an object")
        meta = body.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiStatusError(400, "BadRequest", "metadata must be an object")
        if request.name is not None and meta.setdefault("name", request.name) != request.name:
            raise ApiStatusError(
                400, "BadRequest", "the name of the object does not match the name on the URL"
            )
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiStatusError(
                    422, "Invalid", "metadata.name: Required value: name or generateName is required"
                )
            meta["name"] = meta["generateName"] + "".join(random.choices(_NAME_ALPHABET, k=5))
        namespace = None
        if info.namespaced:
            namespace = request.namespace
            if meta.get("namespace") not in (None, namespace):
                raise ApiStatusError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            self._admit_namespace(info, namespace or "", meta["name"])
        if (namespace or "", meta["name"]) in self.objects[info.key]:
            raise ApiStatusError(
                409,
                "AlreadyExists",
                f'{info.qualified()} "{meta["name"]}" already exists',
                {"name": meta["name"], "kind": info.plural},
            )
        for admit in self.admitters:
            admit(info, namespace, body)
        return self._store_new(info, body, namespace, _manager(request), apply=apply)

    def _admit_namespace(self, info: ResourceInfo, namespace: str, name: str) -> None:
        """The NamespaceLifecycle admission plugin, for creates of namespaced objects."""
        ns = self.objects[NAMESPACES].get(("", namespace))
        if ns is None:
            raise ApiStatusError(
                404,
                "NotFound",
                f'namespaces "{namespace}" not found',
                {"name": namespace, "kind": "namespaces"},
            )
        if ns["metadata"].get("deletionTimestamp"):
            raise ApiStatusError(
                403,
                "Forbidden",
                f'{info.qualified()} "{name}" is forbidden: unable to create new content in namespace '
                f"{namespace} because it is being terminated",
                {
                    "name": name,
                    "kind": info.plural,
                    "causes": [{"reason": "NamespaceTerminating", "field": "metadata.namespace"}],
                },
            )

    def _update(self, request: Request, info: ResourceInfo) -> tuple[int, dict[str, Any]]:
        if (request.namespace or "", request.name or "") not in self.objects[info.key]:
            return self._update_unsafe(request, info, Ownership())  # 404, or an apply creating it
        ownership = self._ownership_of(info.key, request.namespace, request.name or "")
        saved = ownership.snapshot()
        try:
            return self._update_unsafe(request, info, ownership)
        except ApiStatusError:
            ownership.restore(saved)  # a refused write changes nothing, ownership included
            raise

    def _update_unsafe(
        self, request: Request, info: ResourceInfo, ownership: Ownership
    ) -> tuple[int, dict[str, Any]]:
        name = request.name
        assert name is not None
        key = (request.namespace or "", name)
        old = self.objects[info.key].get(key)
        body = request.body
        sub = request.subresource or ""
        if request.verb == "apply":
            if not request.query.get("fieldManager"):
                raise ApiStatusError(
                    422, "Invalid", "fieldManager: Required value: is required for apply patch"
                )
            if old is None:
                if sub:
                    raise _not_found(info, name)
                return 201, self._create(request, info, body, apply=True)
        if old is None:
            raise _not_found(info, name)
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        new = self._patched(request, old, ownership, content_type)
        if not isinstance(new, dict):
            raise ApiStatusError(400, "BadRequest", "the body of the request must be an object")
        new = copy.deepcopy(new)
        sent_rv = ((body.get("metadata") or {}) if isinstance(body, dict) else {}).get("resourceVersion")
        if (
            content_type != "application/json-patch+json"
            and sent_rv
            and sent_rv != old["metadata"].get("resourceVersion")
        ):
            raise _conflict(info, name)
        new = self._keep_server_owned(info, old, new, sub)
        if request.verb != "apply":
            ownership.update(
                old, new, _manager(request), subresource=sub if sub == "status" else "", now=_now()
            )
        meta = new["metadata"]
        if old["metadata"].get("deletionTimestamp") and set(meta.get("finalizers") or []) - set(
            old["metadata"].get("finalizers") or []
        ):
            raise ApiStatusError(
                422,
                "Invalid",
                "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being "
                "deleted",
            )
        meta["managedFields"] = ownership.managed_fields(info.group_version)
        if not meta["managedFields"]:
            del meta["managedFields"]
        if new == old:
            return 200, old  # nothing changed (not even ownership): same resourceVersion, no event
        if info.generation and _essence(info, new) != _essence(info, old):
            meta["generation"] = int(old["metadata"].get("generation") or 1) + 1
        if (
            meta.get("deletionTimestamp")
            and not meta.get("finalizers")
            and not _namespace_finalizers(info, new)
        ):
            return 200, self._commit(info, old, None, gone=new)  # the last finalizer went
        return 200, self._commit(info, old, new)

    def _patched(self, request: Request, old: dict[str, Any], ownership: Ownership, content_type: str) -> Any:
        """The object as the request would leave it, before the server keeps what is its own."""
        body, sub = request.body, request.subresource or ""
        if request.verb == "apply":
            if not isinstance(body, dict):
                raise ApiStatusError(400, "BadRequest", "the body of the request must be an object")
            try:
                return ownership.apply(
                    old,
                    body,
                    request.query["fieldManager"],
                    force=request.query.get("force") == "true",
                    subresource=sub,
                    now=_now(),
                )
            except ApplyConflictError as conflict:
                raise ApiStatusError(
                    409,
                    "Conflict",
                    str(conflict),
                    {
                        "causes": [
                            {
                                "reason": "FieldManagerConflict",
                                "message": f'conflict with "{m}"',
                                "field": "." + ".".join(p),
                            }
                            for m, p in conflict.conflicts
                        ]
                    },
                ) from None
        elif request.verb == "update":
            return copy.deepcopy(body)
        elif content_type == "application/json-patch+json":
            try:
                return jsonpatch.apply_patch(old, body, in_place=False)
            except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as error:
                raise ApiStatusError(
                    422, "Invalid", f"the server rejected our request due to an error in our request: {error}"
                ) from None
        elif content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            return merge_patch(old, body or {})
        else:
            raise ApiStatusError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types include: "
                "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml; "
                f'got "{content_type}"',
            )

    def _keep_server_owned(
        self, info: ResourceInfo, old: dict[str, Any], new: dict[str, Any], sub: str
    ) -> dict[str, Any]:
        """What a client cannot change through this endpoint, as the registry strategies keep it."""
        if sub == "status":
            new = (
                {**copy.deepcopy(old), "status": new.get("status")}
                if "status" in new
                else {k: v for k, v in copy.deepcopy(old).items() if k != "status"}
            )
        elif sub == "finalize":  # namespaces: only spec.finalizers
            finalizers = (new.get("spec") or {}).get("finalizers")
            new = copy.deepcopy(old)
            new["spec"] = {**(new.get("spec") or {}), "finalizers": finalizers or []}
        elif "status" in info.subresources:
            new = {k: v for k, v in new.items() if k != "status"}
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
        new["apiVersion"], new["kind"] = info.group_version, info.kind
        meta = new.setdefault("metadata", {})
        old_meta = old["metadata"]
        for owned in SERVER_META:  # a client cannot change these
            if owned in old_meta:
                meta[owned] = old_meta[owned]
            else:
                meta.pop(owned, None)
        if info.key == NAMESPACES:
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
            if sub != "finalize":
                new["spec"] = copy.deepcopy(old.get("spec") or {})
        if not meta.get("finalizers"):
            meta.pop("finalizers", None)  # the API server drops an empty list
        return new

    def _delete(self, request: Request, info: ResourceInfo) -> dict[str, Any]:
        name = request.name
        assert name is not None
        old = self._existing(info, request.namespace, name)
        options = request.body if isinstance(request.body, dict) else {}
        preconditions = options.get("preconditions") or {}
        if preconditions.get("uid") and preconditions["uid"] != old["metadata"].get("uid"):
            raise ApiStatusError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {info.qualified()} "{name}": Precondition failed: '
                f"UID in precondition: {preconditions['uid']}, "
                f"UID in object meta: {old['metadata'].get('uid')}",
            )
        if preconditions.get("resourceVersion") and preconditions["resourceVersion"] != old["metadata"].get(
            "resourceVersion"
        ):
            raise _conflict(info, name)
        if old["metadata"].get("deletionTimestamp"):
            return old  # already being deleted
        if info.key == NAMESPACES:
            return self._delete_namespace(info, old)
        if old["metadata"].get("finalizers"):
            new = copy.deepcopy(old)
            new["metadata"].update(deletionTimestamp=_now(), deletionGracePeriodSeconds=0)
            return self._commit(info, old, new)
        gone = copy.deepcopy(old)
        self._commit(info, old, None, gone=gone)
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "kind": info.plural, "uid": old["metadata"].get("uid")},
        }

    def _delete_namespace(self, info: ResourceInfo, old: dict[str, Any]) -> dict[str, Any]:
        """Marked Terminating; the namespace controller deletes what is in it, then finalizes it."""
        name = old["metadata"]["name"]
        marked = copy.deepcopy(old)
        marked["metadata"].update(deletionTimestamp=_now(), deletionGracePeriodSeconds=0)
        marked["status"] = {"phase": "Terminating"}
        answer = self._commit(info, old, marked)
        for other in self.served.values():
            if not other.namespaced:
                continue
            for (ns, _), obj in list(self.objects[other.key].items()):
                if ns == name:
                    self._commit(other, obj, None, gone=copy.deepcopy(obj))
        current = self.objects[NAMESPACES][("", name)]
        finalized = copy.deepcopy(current)
        finalized["spec"]["finalizers"] = []
        if finalized["metadata"].get("finalizers"):
            self._commit(info, current, finalized)
        else:
            self._commit(info, current, None, gone=finalized)
        return answer


class _Unparsable:
    def __init__(self, error: str) -> None:
        self.error = error


def _yaml(body: bytes) -> Any:
    """An apply body: YAML, which JSON is a subset of (what most clients send); libyaml if present."""
    try:
        return json.loads(body)
    except ValueError:
        return yaml.load(body, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _manager(request: Request) -> str:
    """`fieldManager`, else the User-Agent up to its first "/" (as the API server names it)."""
    return request.query.get("fieldManager") or request.user_agent.split("/", 1)[0][:128] or "unknown"


def _not_found(info: ResourceInfo, name: str) -> ApiStatusError:
    return ApiStatusError(
        404, "NotFound", f'{info.qualified()} "{name}" not found', {"name": name, "kind": info.plural}
    )


def _conflict(info: ResourceInfo, name: str) -> ApiStatusError:
    return ApiStatusError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {info.qualified()} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        {"name": name, "kind": info.plural},
    )


def _essence(info: ResourceInfo, obj: dict[str, Any]) -> dict[str, Any]:
    skip = {"metadata", "apiVersion", "kind"} | ({"status"} if "status" in info.subresources else set())
    return {k: v for k, v in obj.items() if k not in skip}


def _namespace_finalizers(info: ResourceInfo, obj: dict[str, Any]) -> list[str]:
    """A namespace also waits for its `spec.finalizers` (the namespace controller's)."""
    return list((obj.get("spec") or {}).get("finalizers") or []) if info.key == NAMESPACES else []


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
