"""
Test harness: kmock 0.8 as a fake Kubernetes API + a real Kopf operator, in one event loop.

Layers (read top to bottom):

1. ``parse_path_with_namespaces`` -- kmock cannot parse ``/api/v1/namespaces[/name[/status]]``
   (500: "not enough values to unpack"). Parsing happens in ``kmock._internal.parsing.parse_path``
   before any handler or DSL reaction runs, so the only place to fix it is that function; the
   ``kube`` fixture monkeypatches it for the duration of a test.

2. ``TenantryKube`` -- a subclass of ``kmock.KubernetesEmulator`` that owns the WRITE path
   (POST/PATCH/PUT/DELETE of k8s objects) and overrides list/watch. Everything else is kmock's:
   discovery, fetch, request recording, the ``kube[...] << response`` DSL, error rendering,
   the ``kube.objects[...]`` store. See NOTES.md for why a subclass (and not DSL reactions).

3. ``kube`` fixture -- the server on a random local port with Tenantry's resources declared.

4. ``kopf_settings`` / ``kopf_registry`` / ``run_operator`` -- Kopf configured for tests and
   started in the pytest event loop; stopped via stop_flag before kmock goes away.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import datetime
import math
import random
import re
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import aiohttp.web
import attrs
import jsonpatch
import jsonpointer
import kmock
import kopf
import pytest
import pytest_asyncio
import yaml
from kmock._internal import parsing as _kmock_parsing  # private, but the only hook for gap (a)

# --------------------------------------------------------------------------------------------
# Gap (a): /api/v1/namespaces paths.
# --------------------------------------------------------------------------------------------
_original_parse_path = _kmock_parsing.parse_path


def parse_path_with_namespaces(path: str) -> _kmock_parsing.ParsedPath:
    """
    kmock reads ``/api/v1/namespaces/X/...`` as "namespace X", so the namespaces resource
    itself is unreachable: ``/api/v1/namespaces`` crashes (500), ``/api/v1/namespaces/X``
    is read as a LIST of plural=None in namespace X. Only these shapes are rerouted:
    ``/api/v1/namespaces``, ``/api/v1/namespaces/X``, ``/api/v1/namespaces/X/{status,finalize}``.
    ``/api/v1/namespaces/X/<plural>[/...]`` (namespaced resources) go to kmock as before.
    """
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"]:
        if len(parts) <= 4 or (len(parts) == 5 and parts[4] in {"status", "finalize"}):
            return _kmock_parsing.ParsedPath(
                group="",
                version="v1",
                plural="namespaces",
                namespace=None,
                name=parts[3] if len(parts) > 3 else None,
                subresource=parts[4] if len(parts) > 4 else None,
            )
    return _original_parse_path(path)


# --------------------------------------------------------------------------------------------
# Gaps (b)-(e): the write path, selectors, and watch semantics.
# --------------------------------------------------------------------------------------------
NAMESPACES = kmock.resource("", "v1", "namespaces")
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what the API server uses for generateName


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge-patch: dicts merge recursively, ``None`` deletes, lists replace."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# Server-side apply, for one applier at a time: each manager owns the leaf fields it applied
# (lists count as one field, like the atomic lists we send); fields it applied before and omits
# now are removed; a plain update (merge-patch, PUT) of a field takes it away from the appliers.
# Not modelled: conflicts without force, list-map merge keys, shared ownership.
_NOT_OWNED_META = {"name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp"}
FieldPath = tuple[str, ...]


def field_paths(body: Any, prefix: FieldPath = ()) -> set[FieldPath]:
    if not isinstance(body, Mapping) or (body == {} and prefix):
        return {prefix} if prefix else set()
    out: set[FieldPath] = set()
    for key, value in body.items():
        if not prefix and key in ("apiVersion", "kind", "status"):
            continue
        if prefix == ("metadata",) and key in _NOT_OWNED_META:
            continue
        out |= field_paths(value, (*prefix, key))
    return out


def _value_at(obj: Any, path: FieldPath) -> Any:
    for part in path:
        if not isinstance(obj, Mapping) or part not in obj:
            return _ABSENT
        obj = obj[part]
    return obj


_ABSENT = object()


def _remove_at(obj: dict[str, Any], path: FieldPath) -> None:
    parents = []
    node: Any = obj
    for part in path[:-1]:
        if not isinstance(node, dict) or part not in node:
            return
        parents.append((node, part))
        node = node[part]
    if isinstance(node, dict):
        node.pop(path[-1], None)


def _error(status: int, reason: str, message: str) -> kmock.KubernetesError:
    # Rendered by kmock as a proper v1 Status with this HTTP code (and recorded in kube.errors).
    return kmock.KubernetesError(status=status, reason=reason, message=message, details={})


_SELECTOR_SPLIT = re.compile(r",(?![^()]*\))")  # commas outside of "in (a,b)" parentheses
_SELECTOR_TERM = re.compile(
    r"""^\s*(?:
    !\s*(?P<absent>[^\s!=,()]+)
  | (?P<key>[^\s!=,()]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^\s!=,()]*)
  | (?P<setkey>[^\s!=,()]+)\s+(?P<setop>in|notin)\s*\((?P<values>[^()]*)\)
  | (?P<present>[^\s!=,()]+)
)\s*$""",
    re.X,
)


def parse_label_selector(selector: str) -> Callable[[Mapping[str, str]], bool]:
    """All of k8s label-selector syntax: =, ==, !=, in, notin, key, !key (terms AND-ed)."""
    checks: list[Callable[[Mapping[str, str]], bool]] = []
    for term in filter(str.strip, _SELECTOR_SPLIT.split(selector or "")):
        m = _SELECTOR_TERM.match(term)
        if m is None:
            raise _error(400, "BadRequest", f"unable to parse requirement: {term!r}")
        if m["absent"]:
            checks.append(lambda ls, k=m["absent"]: k not in ls)
        elif m["present"]:
            checks.append(lambda ls, k=m["present"]: k in ls)
        elif m["key"]:
            k, v, neg = m["key"], m["value"], m["op"] == "!="
            checks.append(lambda ls, k=k, v=v, neg=neg: (ls.get(k) == v) != neg)
        else:
            vals = {v.strip() for v in m["values"].split(",") if v.strip()}
            neg = m["setop"] == "notin"
            checks.append(lambda ls, k=m["setkey"], vals=vals, neg=neg: (ls.get(k) in vals) != neg)
    return lambda labels: all(check(labels) for check in checks)


def parse_field_selector(selector: str) -> Callable[[Mapping[str, Any]], bool]:
    """Only ``metadata.name`` and ``metadata.namespace`` (=, ==, !=); anything else is a 400."""
    checks: list[Callable[[Mapping[str, Any]], bool]] = []
    for term in filter(str.strip, (selector or "").split(",")):
        m = re.fullmatch(r"\s*metadata\.(name|namespace)\s*(==|=|!=)\s*([^\s,]*)\s*", term)
        if m is None:
            raise _error(400, "BadRequest", f"field selector not supported by this fake: {term!r}")
        field, neg, value = m[1], m[2] == "!=", m[3]
        checks.append(lambda meta, f=field, v=value, neg=neg: (meta.get(f) == v) != neg)
    return lambda obj: all(check(obj.get("metadata", {})) for check in checks)


@attrs.define(kw_only=True)
class TenantryKube(kmock.KubernetesEmulator):
    """
    kmock's emulator with a Kubernetes-like write path. It adds (and only adds) what the
    Tenantry + Kopf flow needs:

    - metadata: uid, creationTimestamp, generation (+1 when anything outside metadata/status
      changes), resourceVersion (one global counter, +1 on every real change, like etcd);
    - ``generateName``; apiVersion/kind filled in; namespaces get ``kubernetes.io/metadata.name``;
    - merge-patch (RFC 7386), JSON-patch with a failed ``test`` -> 422, PUT (replace),
      server-side apply (create if missing; otherwise a merge, no field ownership);
    - a stale ``metadata.resourceVersion`` in a merge-patch/PUT/apply body -> 409;
    - status subresource: ``/status`` changes only status; the main endpoint ignores status;
    - a no-op write changes nothing: no new resourceVersion, no watch event;
    - DELETE honours finalizers (deletionTimestamp + MODIFIED; DELETED once they are gone);
    - a watch from ``?resourceVersion=`` replays the deletions since then (a bounded log, like
      the API server's watch cache); kmock alone only replays objects that still exist;
    - list/watch honour ``labelSelector`` (and ``metadata.name|namespace`` field selectors);
      list returns the current resourceVersion; watch replays only objects newer than
      ``?resourceVersion=`` and subscribes before the snapshot, so no event is lost;
    - a write answered by a DSL reaction with an error status (``kube[...] << 500``) does NOT
      change state (plain kmock would apply the write and then answer 500);
    - any request for an undeclared resource is a ``text/plain`` 404 ``404 page not found``, as a
      real API server answers for a group/version it does not serve (plain kmock answers JSON
      for reads and stores writes to ANY resource).

    - a namespace that goes takes everything in it (DELETED events first), as the namespace
      controller does;
    - server-side apply field ownership for one applier (``field_paths``): fields a manager
      applied before and omits now are removed, an update takes a field away from its appliers;

    Not emulated (test these on a real cluster): SSA conflicts and shared ownership, list-type
    merge strategies, garbage collection by ownerReferences, admission,
    RBAC, schema validation/pruning, periodic bookmarks (one is sent after the replay), watch
    ``timeoutSeconds``.
    """

    _revision: int = attrs.field(default=0, init=False)
    # Per object: field manager -> the leaf fields it owns through server-side apply.
    _applied: dict[Any, dict[str, set[FieldPath]]] = attrs.field(factory=dict, init=False)
    _write_results: dict[Any, Any] = attrs.field(factory=dict, init=False)
    # Recent deletions, so a watch from an older resourceVersion replays them, as an API server's
    # watch cache does (kmock only replays objects that still exist). Bounded, like the cache.
    _deletions: collections.deque[tuple[Any, dict[str, Any]]] = attrs.field(
        factory=lambda: collections.deque(maxlen=50_000), init=False
    )

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # kmock guesses no k8s action for PUT; answer it with the same renderer as PATCH.
        self.fallback[kmock.method.PUT] << self._serve_update

    # ---- helpers ----------------------------------------------------------------------------
    def _info(self, resource: kmock.resource) -> kmock.ResourceInfo:
        # NB: ``self.resources[r]`` auto-creates an entry; do not pollute discovery.
        return self.resources[resource] if resource in self.resources else kmock.ResourceInfo()

    def _type_meta(self, resource: kmock.resource) -> dict[str, str]:
        info = self._info(resource)
        api_version = f"{resource.group}/{resource.version}" if resource.group else resource.version
        return {"apiVersion": api_version, "kind": info.kind or resource.plural.capitalize()}

    def _next_rv(self) -> str:
        self._revision += 1
        return str(self._revision)

    @staticmethod
    def _now() -> str:
        return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    @staticmethod
    def _body(request: kmock.Request) -> Any:
        if request.data is not None:
            return request.data
        return yaml.safe_load(request.text) if request.text.strip() else None

    def _selector(self, request: kmock.Request) -> Callable[[Mapping[str, Any]], bool]:
        labels = parse_label_selector(request.params.get("labelSelector", ""))
        fields = parse_field_selector(request.params.get("fieldSelector", ""))
        return lambda obj: labels(obj.get("metadata", {}).get("labels") or {}) and fields(obj)

    def _is_error_injected(self, request: kmock.Request) -> bool:
        """Does a user's DSL reaction (not kmock's fallbacks) answer this request with an error?"""
        for reaction in self._payloads:
            if -math.inf in reaction.priorities or reaction._disabled.is_set():
                continue  # kmock's own (and our) fallback reactions live at -inf
            if request in reaction._source:
                response = reaction.response
                payload = response.payload
                if (
                    (response.status or 0) >= 400
                    or isinstance(payload, BaseException)
                    or (isinstance(payload, type) and issubclass(payload, BaseException))
                ):
                    return True
        return False

    # ---- the write path ---------------------------------------------------------------------
    async def _handle(self, request: kmock.Request) -> Any:
        if request.resource is not None and request.resource not in self.resources:
            # What a real API server answers for a group/version/resource it does not serve (a
            # CRD that is not installed, or was deleted): plain text, not a JSON Status
            # (Go's http.NotFound text, seen on 1.36.2: issue 7). kmock would answer JSON.
            return aiohttp.web.Response(status=404, text="404 page not found\n", content_type="text/plain")
        is_write = request.resource is not None and (
            request.action in {kmock.action.CREATE, kmock.action.UPDATE, kmock.action.DELETE}
            or (request.method == kmock.method.PUT and request.name is not None)
        )
        if not is_write:
            return await super()._handle(request)  # reads & discovery: kmock as is (+ overrides)

        # Skip KubernetesEmulator._handle (its write path); go straight to reactions/fallbacks.
        respond = super(kmock.KubernetesEmulator, self)._handle
        if self._is_error_injected(request):
            return await respond(request)
        try:
            async with self._lock:
                result, events = self._write(request)
                routed = [(request.resource, event) for event in events]
                if request.resource == NAMESPACES:
                    for event in events:
                        if event["type"] == "DELETED":  # its contents went first
                            routed[:0] = self._delete_contents(event["object"]["metadata"]["name"])
                for resource, event in routed:
                    if event["type"] == "DELETED":
                        self._deletions.append((resource, event))
                    await self._buses[resource].put(event)
            self._write_results[request] = result
            return await respond(request)  # user reactions first, then _serve_create/update/delete
        finally:
            self._write_results.pop(request, None)

    def _delete_contents(self, namespace: str) -> list[tuple[Any, dict[str, Any]]]:
        """What the namespace controller does before a namespace goes: delete everything in it."""
        out = []
        for key, obj in list(self._objects.items()):
            if key[1] != namespace or obj.deleted:
                continue
            gone = copy.deepcopy(obj.raw)
            gone.setdefault("metadata", {})["resourceVersion"] = self._next_rv()
            obj.delete()
            self._applied.pop(key, None)
            out.append((key[0], {"type": "DELETED", "object": gone}))
        return out

    async def _serve_create(self, request: kmock.Request) -> Any:
        return self._write_results[request]

    async def _serve_update(self, request: kmock.Request) -> Any:
        return self._write_results[request]

    async def _serve_delete(self, request: kmock.Request) -> Any:
        return self._write_results[request]

    def _write(self, request: kmock.Request) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        resource = request.resource
        if resource not in self.resources:  # plain kmock stores writes to ANY resource; k8s: 404
            raise kmock.KubernetesResourceNotFoundError()
        info = self._info(resource)
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        is_apply = content_type == "application/apply-patch+yaml"
        if is_apply and not request.params.get("fieldManager"):
            raise _error(422, "Invalid", "fieldManager: Required value: is required for apply patch")

        if request.action == kmock.action.CREATE:
            return self._create(request, self._body(request))

        key = (resource, request.namespace if info.namespaced else None, request.name)
        obj = self._objects[key] if key in self._objects and not self._objects[key].deleted else None
        if obj is None and is_apply:  # server-side apply creates missing objects
            return self._create(request, self._body(request))
        if obj is None:
            raise kmock.KubernetesObjectNotFoundError()
        old: dict[str, Any] = copy.deepcopy(obj.raw)
        old_meta = old.setdefault("metadata", {})

        if request.action == kmock.action.DELETE:
            if old_meta.get("finalizers"):
                if old_meta.get("deletionTimestamp"):
                    return old, []  # already terminating
                new = copy.deepcopy(old)
                new["metadata"].update(
                    deletionTimestamp=self._now(),
                    deletionGracePeriodSeconds=0,
                    resourceVersion=self._next_rv(),
                )
                obj.history.append(new)
                return new, [{"type": "MODIFIED", "object": new}]
            gone = copy.deepcopy(old)
            gone["metadata"]["resourceVersion"] = self._next_rv()
            obj.delete()
            return gone, [{"type": "DELETED", "object": gone}]

        # PATCH or PUT: compute the new state, then keep the server-owned parts.
        body = self._body(request)
        if request.method == kmock.method.PUT:
            new = copy.deepcopy(body)
        elif content_type == "application/json-patch+json":
            try:
                new = jsonpatch.apply_patch(old, body, in_place=False)
            except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as e:
                raise _error(422, "Invalid", f"the server rejected our request: {e}")
        else:  # merge-patch, strategic-merge-patch (no strategies here), apply (see field_paths)
            new = merge_patch(old, body or {})
            owners = self._applied.setdefault(key, {})
            if is_apply:
                manager = request.params["fieldManager"]
                sent = field_paths(body or {})
                for path in owners.get(manager, set()) - sent:
                    _remove_at(new, path)  # applied before, omitted now: removed
                owners[manager] = sent
            else:
                changed = {
                    p for p in field_paths(new) | field_paths(old) if _value_at(new, p) != _value_at(old, p)
                }
                for fields in owners.values():
                    fields.difference_update(changed)  # an update takes the field from its appliers
        if not isinstance(new, dict):
            raise _error(400, "BadRequest", "the body must be an object")
        if content_type != "application/json-patch+json" and isinstance(body, Mapping):
            sent_rv = (body.get("metadata") or {}).get("resourceVersion")
            if sent_rv and sent_rv != old_meta.get("resourceVersion"):
                raise _error(
                    409,
                    "Conflict",
                    "the object has been modified; please apply your changes to the latest version",
                )

        if request.subresource == "status":
            new = (
                {**old, "status": new["status"]}
                if "status" in new
                else {k: v for k, v in old.items() if k != "status"}
            )
        elif request.subresource is not None:
            raise _error(404, "NotFound", f"subresource {request.subresource!r} is not emulated")
        elif "status" in info.subresources:
            new = {k: v for k, v in new.items() if k != "status"}
            if "status" in old:
                new["status"] = old["status"]

        new.update(self._type_meta(resource))
        meta = new.setdefault("metadata", {})
        for field in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ):
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        if resource == NAMESPACES:
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
        if not meta.get("finalizers"):
            meta.pop("finalizers", None)  # the API server drops empty finalizer lists too

        if new == old:
            return old, []  # no-op: same resourceVersion, no watch event (as in Kubernetes)
        essence = lambda o: {k: v for k, v in o.items() if k not in {"metadata", "status"}}
        if essence(new) != essence(old):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        meta["resourceVersion"] = self._next_rv()
        obj.history.append(new)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            obj.delete()  # the last finalizer is gone: the object is deleted for real
            return new, [{"type": "DELETED", "object": new}]
        return new, [{"type": "MODIFIED", "object": new}]

    def _create(self, request: kmock.Request, body: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        resource = request.resource
        info = self._info(resource)
        if not isinstance(body, Mapping):
            raise _error(400, "BadRequest", "the body must be an object")
        new: dict[str, Any] = {**self._type_meta(resource), **copy.deepcopy(dict(body))}
        meta = new.setdefault("metadata", {})
        if request.name and meta.setdefault("name", request.name) != request.name:
            raise _error(400, "BadRequest", "the name of the object does not match the URL")
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise _error(
                    422, "Invalid", "metadata.name: Required value: name or generateName is required"
                )
            meta["name"] = meta["generateName"] + "".join(random.choices(_NAME_ALPHABET, k=5))
        namespace = request.namespace or meta.get("namespace")
        if info.namespaced:
            if not namespace:
                raise _error(400, "BadRequest", "a namespaced object needs a namespace")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
            namespace = None
        key = (resource, namespace, meta["name"])
        if key in self._objects and not self._objects[key].deleted:
            raise _error(409, "AlreadyExists", f"{resource.plural} {meta['name']!r} already exists")

        for field in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(field, None)
        meta.update(
            uid=str(uuid.uuid4()),
            creationTimestamp=self._now(),
            generation=1,
            resourceVersion=self._next_rv(),
        )
        if resource == NAMESPACES:
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
        if "status" in info.subresources:
            new.pop("status", None)  # like the API server: status is set only via /status

        if key in self._objects:
            self._objects[key].create(new)  # re-creation after a soft-deletion keeps the history
        else:
            self._objects[key] = new
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        manager = request.params.get("fieldManager")
        applied = content_type == "application/apply-patch+yaml" and manager
        self._applied[key] = {manager: field_paths(body)} if applied else {}
        return new, [{"type": "ADDED", "object": new}]

    # ---- the read path: selectors, list resourceVersion, lossless watch ------------------------
    def _matches_scope(self, request: kmock.Request, key: tuple[Any, str | None, str]) -> bool:
        resource, namespace, name = key
        return (
            resource == request.resource
            and (request.namespace is None or namespace == request.namespace)
            and (request.name is None or name == request.name)
        )

    async def _serve_list(self, request: kmock.Request) -> Any:
        selector = self._selector(request)
        result = await super()._serve_list(request)  # kmock's 404 for undeclared resources
        type_meta = self._type_meta(request.resource)
        return {
            "apiVersion": type_meta["apiVersion"],
            "kind": f"{type_meta['kind']}List",
            "metadata": {"resourceVersion": str(self._revision)},
            "items": [item for item in result["items"] if selector(item)],
        }

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        selector = self._selector(request)
        since = request.params.get("resourceVersion", "")
        since_rv = int(since) if since.isdigit() else 0
        yield b""  # send the headers now: the stream is open even if nothing happens
        bus = self._buses[request.resource]
        async with self._lock:  # writes take this lock too: snapshot + subscription are atomic
            marker = await bus.mark()
            snapshot_rv = str(self._revision)
            snapshot = [
                obj.raw
                for key, obj in self._objects.items()
                if self._matches_scope(request, key) and not obj.deleted
            ]
        try:
            for raw in snapshot:
                if int(raw.get("metadata", {}).get("resourceVersion") or 0) > since_rv and selector(raw):
                    yield {"type": "ADDED", "object": raw}
            if since_rv:
                for resource, event in list(self._deletions):
                    raw = event["object"]
                    meta = raw.get("metadata", {})
                    key = (resource, meta.get("namespace"), meta.get("name"))
                    newer = int(meta.get("resourceVersion") or 0) > since_rv
                    if (
                        newer
                        and resource == request.resource
                        and self._matches_scope(request, key)
                        and selector(raw)
                    ):
                        yield event
            if request.params.get("allowWatchBookmarks") == "true":
                # A bookmark, as the API server sends them (about once a minute on a real one):
                # a resourceVersion to resume from, never ahead of the events sent before it.
                yield {
                    "type": "BOOKMARK",
                    "object": {
                        **self._type_meta(request.resource),
                        "metadata": {"resourceVersion": snapshot_rv},
                    },
                }
            async for event in bus.stream(since=marker):
                if event.get("type") == END_OF_WATCH:
                    return  # the API server closes the watches of a resource it stops serving
                raw = event["object"]
                meta = raw.get("metadata", {})
                key = (request.resource, meta.get("namespace"), meta.get("name"))
                if self._matches_scope(request, key) and selector(raw):
                    yield event
        finally:
            await bus.unmark(marker)


# --------------------------------------------------------------------------------------------
# Fixtures: the fake API server.
# --------------------------------------------------------------------------------------------
VERBS = {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}


def declare_tenantry_resources(kube: TenantryKube) -> None:
    """Discovery info. ``namespaced`` and ``verbs`` MUST be set: Kopf skips resources that
    lack list/watch, and treats namespaced=None as cluster-scoped."""
    R = kmock.ResourceInfo
    kube.resources["v1/namespaces"] = R(
        kind="Namespace",
        singular="namespace",
        namespaced=False,
        verbs=VERBS,
        shortnames={"ns"},
        subresources={"status"},
    )
    kube.resources["v1/resourcequotas"] = R(
        kind="ResourceQuota", singular="resourcequota", namespaced=True, verbs=VERBS, subresources={"status"}
    )
    kube.resources["v1/limitranges"] = R(
        kind="LimitRange", singular="limitrange", namespaced=True, verbs=VERBS
    )
    kube.resources["v1/configmaps"] = R(kind="ConfigMap", singular="configmap", namespaced=True, verbs=VERBS)
    kube.resources["v1/events"] = R(kind="Event", singular="event", namespaced=True, verbs=VERBS)
    kube.resources["events.k8s.io/v1/events"] = R(
        kind="Event", singular="event", namespaced=True, verbs=VERBS
    )
    kube.resources["networking.k8s.io/v1/networkpolicies"] = R(
        kind="NetworkPolicy", singular="networkpolicy", namespaced=True, verbs=VERBS
    )
    kube.resources["rbac.authorization.k8s.io/v1/rolebindings"] = R(
        kind="RoleBinding", singular="rolebinding", namespaced=True, verbs=VERBS
    )
    kube.resources["rbac.authorization.k8s.io/v1/clusterrolebindings"] = R(
        kind="ClusterRoleBinding", singular="clusterrolebinding", namespaced=False, verbs=VERBS
    )
    kube.resources["rbac.authorization.k8s.io/v1/clusterroles"] = R(
        kind="ClusterRole", singular="clusterrole", namespaced=False, verbs=VERBS
    )
    kube.resources["tenantry.dev/v1alpha1/organizations"] = R(
        kind="Organization",
        singular="organization",
        namespaced=False,
        verbs=VERBS,
        shortnames={"org"},
        subresources={"status"},
    )
    kube.resources["tenantry.dev/v1alpha1/tenancypolicies"] = R(
        kind="TenancyPolicy", singular="tenancypolicy", namespaced=False, verbs=VERBS, subresources={"status"}
    )
    kube.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = R(
        kind="CustomResourceDefinition", singular="customresourcedefinition", namespaced=False, verbs=VERBS
    )
    kube.resources["coordination.k8s.io/v1/leases"] = R(
        kind="Lease", singular="lease", namespaced=True, verbs=VERBS
    )


END_OF_WATCH = "__END_OF_WATCH__"
R_ORGANIZATIONS = "tenantry.dev/v1alpha1/organizations"
R_POLICIES = "tenantry.dev/v1alpha1/tenancypolicies"
CRD_CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"


def crd_object(plural: str) -> dict[str, Any]:
    """The CRD object itself, with the finalizer the API server puts on every CRD (it deletes
    the custom objects before the CRD goes)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.tenantry.dev", "finalizers": [CRD_CLEANUP_FINALIZER]},
        "spec": {"group": "tenantry.dev", "names": {"plural": plural}, "scope": "Cluster"},
    }


async def end_watches(kube: TenantryKube, resource: str) -> None:
    """Close every open watch of `resource` (group/version/plural), as a real API server does
    when the resource stops being served."""
    await kube._buses[kmock.resource(*_split(resource))].put({"type": END_OF_WATCH})


def _split(resource: str) -> tuple[str, str, str]:
    parts = resource.split("/")
    return ("", *parts) if len(parts) == 2 else (parts[0], parts[1], parts[2])  # type: ignore[return-value]


@pytest_asyncio.fixture
async def kube(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TenantryKube]:
    """A running fake API server (random port on 127.0.0.1) with Tenantry's resources."""
    monkeypatch.setattr(_kmock_parsing, "parse_path", parse_path_with_namespaces)
    async with TenantryKube() as server, kmock.Server(server):
        declare_tenantry_resources(server)
        async with aiohttp.ClientSession() as session:
            for plural in ("organizations", "tenancypolicies"):
                url = f"{str(server.url).rstrip('/')}/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
                # The test side of the cluster (see conftest.TEST_CLIENT), not the operator.
                headers = {"X-Tenantry-Test-Client": "1"}
                async with session.post(url, json=crd_object(plural), headers=headers) as response:
                    assert response.status < 300, await response.text()
        yield server
        # kube.errors also holds the expected KubernetesErrors (404, 409, 422, injected ones).
        # Anything else is a crash inside kmock or our layer: fail loudly instead of silently.
        crashes = [e for e in server.errors if not isinstance(e, kmock.KubernetesError)]
        assert not crashes, f"kmock crashed while serving: {crashes!r}"


# --------------------------------------------------------------------------------------------
# Fixtures: Kopf in the same event loop.
# --------------------------------------------------------------------------------------------
@pytest.fixture
def kopf_registry() -> kopf.OperatorRegistry:
    """A fresh registry per test: decorators with ``registry=`` do not leak between tests."""
    return kopf.OperatorRegistry()


@pytest.fixture
def kopf_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = "tenantry.dev/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="tenantry.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="tenantry.dev", key="last-handled-configuration"
    )
    settings.posting.enabled = False  # post the Events we want ourselves
    settings.scanning.disabled = True  # no CRD/namespace re-scanning
    settings.process.ultimate_exiting_timeout = None  # never schedule a SIGKILL (see NOTES.md)
    settings.networking.error_backoffs = [0.05, 0.1, 0.2]  # retries of 5xx/429: fast in tests
    settings.queueing.error_delays = [0.1, 0.2, 0.5]  # framework-level errors
    settings.execution.default_backoff = 0.1  # handler retries after unexpected errors
    settings.watching.reconnect_backoff = 0.05
    return settings


class _ForeignTasks(frozenset):
    """
    ``kopf.run_tasks(ignored=...)``: the tasks that the operator must not wait for or cancel
    at its exit. Kopf treats EVERY task created after its start as its own "hung" sub-task,
    and waits up to 5 s for them, then cancels them. In one event loop, that includes kmock's
    server-side connection handlers (an open watch stream never ends), so each teardown would
    take 5 s and kill kmock's connections. Here: pre-existing tasks + aiohttp server handlers.
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


def login_to(kube: TenantryKube, registry: kopf.OperatorRegistry) -> None:
    """Point Kopf at kmock: a login handler instead of kubeconfig/in-cluster credentials."""

    @kopf.on.login(registry=registry)
    def login_to_kmock(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=str(kube.url).rstrip("/"), default_namespace="default")


async def eventually(predicate: Callable[[], Any], *, timeout: float = 5, interval: float = 0.02) -> Any:
    """Poll a condition without blocking the loop (kmock and Kopf run in it)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"Condition not met in {timeout}s: {predicate}")
        await asyncio.sleep(interval)
