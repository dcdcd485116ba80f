"""The Kubernetes API client: server-side apply, reads, lists, watches, deletes, status
patches, Events; every request of the operator goes through here.

Built on the official client's asyncio flavour (`kubernetes.aio`): its `Configuration` holds
the identity and TLS, its `ApiClient` serialises the request and authenticates it
(`param_serialize`, which runs the token refresh hook) and sends it (`call_api`, on one shared
aiohttp session); nothing runs in a worker thread. The typed API classes are not used for our
objects: they deserialise into models, where the inventory wants the raw JSON of ~40,000
objects, and they know nothing of the kinds we apply generically. The Lease election uses the
same `ApiClient` (kube/lease.py), so there is one identity and one connection pool.

Transient failures (429, 5xx, connection errors, timeouts) are retried here with jittered
exponential backoff; anything else is raised as `ApiError`. The library's own retry
(aiohttp-retry) is left off: it retries only idempotent methods (server-side apply is a PATCH
and is idempotent), reports nothing per attempt (we count every attempt), and raises the
library's exception types instead of one error type with the API server's reason.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import random
import re
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from kubernetes.aio import client as aio_client

from tenantry import __version__
from tenantry.kube.resources import EVENT, Kind, kind_of
from tenantry.observe import metrics
from tenantry.observe.logging import get_logger

FIELD_MANAGER = "tenantry"
T = TypeVar("T")
RETRYABLE = {429, 500, 502, 503, 504}
NOT_FOUND = frozenset({404})
log = get_logger("tenantry.client")


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str, retry_after: float | None = None) -> None:
        self.status, self.reason, self.message = status, reason, message
        # The API server's Retry-After (seconds) on a 429 or 503: when to ask again at the earliest.
        self.retry_after = retry_after
        super().__init__(f"{status} {reason}: {message}")

    @property
    def not_served(self) -> bool:
        """The API server does not serve this group/version/resource at all (a CRD that is not
        installed, or was deleted): it answers such paths with a plain-text `404 page not found`,
        not with a JSON Status. A missing object of a served resource is a JSON 404 instead."""
        return self.status == 404 and self.reason == NOT_SERVED


NOT_SERVED = "NotServed"


class NotLeaderError(Exception):
    """A write not sent: this replica can no longer be sure it holds the leader Lease (it was
    not renewed within the renew deadline). Not an ApiError: nothing was asked of the API
    server, and the work is given back, not failed."""


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header. The API server sends whole seconds (API Priority and
    Fairness, `--max-requests-inflight`); an HTTP date is not used by it and is ignored."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def error_from_response(status: int, content_type: str | None, raw: bytes) -> ApiError:
    """The error a response carries. A real API server sends a JSON `Status` for API errors, but
    plain text for paths it does not route (HTTP 404 `404 page not found` for a group/version
    that is not served) and from proxies in front of it (502/503 HTML pages): never assume JSON."""
    text = raw.decode("utf-8", "replace")
    if "json" in (content_type or "").lower():
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            return ApiError(status, str(data.get("reason") or "Error"), str(data.get("message") or ""))
    if status == 404:
        return ApiError(404, NOT_SERVED, text.strip()[:200] or "404 page not found")
    return ApiError(status, "Error", text.strip()[:200])


_JSON = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


def decode_list(raw: bytes, each: Callable[[dict[str, Any]], T]) -> tuple[list[T], dict[str, Any]]:
    """A List response: `each` of its items, applied to every item as soon as it is decoded, and
    the List's other fields (metadata). `json.loads` of a page would hold all its objects at
    once, as dicts several times the size of their JSON: one such page of 500 raised the peak
    RSS of a start-up by ~9.5 MiB (measured), and the pymalloc arenas it took stay allocated.
    ValueError if `raw` is not one JSON object."""
    text = raw.decode("utf-8")
    items: list[T] = []
    rest: dict[str, Any] = {}
    pos = _expect(text, _skip(text, 0), "{")
    if text.startswith("}", pos):
        pos += 1
    else:
        while True:
            key, pos = _JSON.raw_decode(text, pos)
            if not isinstance(key, str):
                raise ValueError(f"an object key that is not a string at {pos}")
            pos = _expect(text, _skip(text, pos), ":")
            if key == "items" and text.startswith("[", pos):
                pos = _skip(text, pos + 1)
                if text.startswith("]", pos):
                    pos += 1
                else:
                    while True:
                        item, pos = _JSON.raw_decode(text, pos)
                        items.append(each(item))
                        pos, separator = _after_value(text, pos, ",]")
                        if separator == "]":
                            break
            else:
                rest[key], pos = _JSON.raw_decode(text, pos)
            pos, separator = _after_value(text, pos, ",}")
            if separator == "}":
                break
    if _skip(text, pos) != len(text):
        raise ValueError(f"extra data after the List at {pos}")
    return items, rest


def _skip(text: str, pos: int) -> int:
    found = _SPACE.match(text, pos)
    return found.end() if found is not None else pos


def _expect(text: str, pos: int, char: str) -> int:
    if not text.startswith(char, pos):
        raise ValueError(f"expected {char!r} at {pos}")
    return _skip(text, pos + 1)


def _after_value(text: str, pos: int, separators: str) -> tuple[int, str]:
    """Past the whitespace, one of `separators` and the whitespace after a value."""
    pos = _skip(text, pos)
    char = text[pos : pos + 1]
    if not char or char not in separators:
        raise ValueError(f"expected one of {separators!r} at {pos}")
    return _skip(text, pos + 1), char


# Connection-level failures: the request may not have reached the API server, or its answer
# did not reach us; retried like a 503.
CONNECTION_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


@dataclass(frozen=True)
class Connection:
    """Where and who: the fields of Kopf's ConnectionInfo that the REST client needs."""

    server: str
    ca_path: str | None = None
    ca_data: bytes | None = None
    insecure: bool = False
    token: str | None = None
    certificate_path: str | None = None
    certificate_data: bytes | None = None
    private_key_path: str | None = None
    private_key_data: bytes | None = None
    # When to read the credentials again (time.time()), before they expire: an exec plugin's
    # token, a token file (a projected service-account token, rotated by the kubelet). None:
    # they do not expire (or only a 401 tells).
    refresh_at: float | None = None
    # The cluster's proxy-url from the kubeconfig (else the environment's HTTPS_PROXY/NO_PROXY).
    proxy: str | None = None


_PEM_FILES: dict[bytes, str] = {}


def as_file(path: str | None, data: bytes | None) -> str | None:
    """A path for PEM data (the REST layers want files): one temporary file per distinct
    certificate or key, however often the credentials are reloaded."""
    if path or data is None:
        return path
    if data not in _PEM_FILES:
        handle = tempfile.NamedTemporaryFile(prefix="tenantry-", suffix=".pem", delete=False)  # noqa: SIM115
        with handle:
            handle.write(data)
        _PEM_FILES[data] = handle.name
    return _PEM_FILES[data]


@dataclass
class Retry:
    attempts: int = 6
    first_delay: float = 0.2
    max_delay: float = 5.0
    # The longest Retry-After honoured between two attempts of one request; a longer one ends
    # the request (the Organization's own backoff, which honours it too, takes over).
    max_retry_after: float = 10.0


def configuration_for(connection: Connection) -> aio_client.Configuration:
    conf = aio_client.Configuration(host=connection.server.rstrip("/"))
    conf.verify_ssl = not connection.insecure
    if connection.ca_data is not None:
        conf.ca_cert_data = connection.ca_data.decode()
    else:
        conf.ssl_ca_cert = connection.ca_path
    # ssl.load_cert_chain only reads files.
    conf.cert_file = as_file(connection.certificate_path, connection.certificate_data)
    conf.key_file = as_file(connection.private_key_path, connection.private_key_data)
    if connection.token:
        conf.api_key = {"BearerToken": connection.token}
        conf.api_key_prefix = {"BearerToken": "Bearer"}
    conf.retries = None  # we retry ourselves (see the module docstring)
    # The library's session trusts the environment, so for every request aiohttp reads ~/.netrc
    # and the proxy variables in a worker thread: two thread hops per request, which were the
    # operator's busiest code at 1,000 Organizations. Kubernetes credentials never come from
    # .netrc; the proxy is resolved here once, from the same variables aiohttp reads.
    conf.client_session_kwargs = {"trust_env": False}
    conf.proxy = connection.proxy or proxy_for(connection.server)
    return conf


def proxy_for(server: str) -> str | None:
    """The proxy for the API server from HTTPS_PROXY / HTTP_PROXY, unless NO_PROXY exempts it."""
    url = urllib.parse.urlsplit(server)
    if not url.hostname or urllib.request.proxy_bypass(url.hostname):
        return None
    return urllib.request.getproxies().get(url.scheme or "https")


def _same_transport(a: Connection, b: Connection) -> bool:
    """Do two connections need the same TLS set-up (everything but the token)?"""
    return (a.server, a.ca_path, a.ca_data, a.insecure, a.proxy, a.certificate_path, a.certificate_data) == (
        b.server,
        b.ca_path,
        b.ca_data,
        b.insecure,
        b.proxy,
        b.certificate_path,
        b.certificate_data,
    ) and (a.private_key_path, a.private_key_data) == (b.private_key_path, b.private_key_data)


@dataclass
class KubeClient:
    connection: Connection
    retry: Retry = field(default_factory=Retry)
    timeout: float = 30.0
    # Fresh credentials after a 401 (service-account tokens rotate); None: keep the first.
    reload: Callable[[], Connection] | None = None
    # Shows in the API server's audit log which replica made a request.
    user_agent: str = f"tenantry/{__version__}"
    # Leader fencing: seconds this replica may still write (<= 0: not at all); None: always.
    # Every write checks it before each attempt and times out when it runs out (kube/lease.py).
    fence: Callable[[], float] | None = None
    api_client: aio_client.ApiClient = field(init=False)
    _reload_lock: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)
    _retired: list[aio_client.ApiClient] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.api_client = self._new_api_client()

    def _new_api_client(self) -> aio_client.ApiClient:
        api = aio_client.ApiClient(configuration_for(self.connection))
        api.user_agent = self.user_agent
        return api

    async def close(self) -> None:
        for api in (*self._retired, self.api_client):
            await api.close()  # type: ignore[no-untyped-call]
        self._retired.clear()

    async def _reload_credentials(self, failed: Connection) -> None:
        """A 401: read the credentials again (once, however many requests failed with the same
        credentials at the same time). A new token is set in place, so requests in flight, open
        watches and the Lease election all use it next; new certificates need a new session."""
        if self.reload is None:
            return
        async with self._reload_lock:
            if self.connection is not failed:
                return  # another request reloaded them already
            # In a thread: an exec plugin (aws eks get-token, kubelogin) may take a second.
            fresh = await asyncio.to_thread(self.reload)
            if _same_transport(fresh, self.connection):
                conf = self.api_client.configuration
                conf.api_key = {"BearerToken": fresh.token} if fresh.token else {}
                conf.api_key_prefix = {"BearerToken": "Bearer"} if fresh.token else {}
                self.connection = fresh
                return
            self.connection = fresh
            # Requests in flight finish (or fail and retry) on the old session; closed at exit.
            self._retired.append(self.api_client)
            self.api_client = self._new_api_client()

    async def _refresh_if_expiring(self, current: Connection) -> None:
        """Credentials that expire (an exec plugin's token, a projected service-account token)
        are read again shortly before they do, as client-go does, not only after a 401. If that
        fails, the current ones are used (they may still be valid) and tried again in 10 s."""
        if current.refresh_at is None or self.reload is None or time.time() < current.refresh_at:
            return
        try:
            await self._reload_credentials(current)
        except Exception as exc:  # a failing plugin must not fail a request its token may serve
            log.warning("credentials not refreshed; using the current ones", error=str(exc))
            if self.connection is current:
                self.connection = dataclasses.replace(current, refresh_at=time.time() + 10)

    # -- the one HTTP primitive ---------------------------------------------------------------
    async def _send(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None,
        body: Any,
        content_type: str | None,
        limits: aiohttp.ClientTimeout,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            # JSON is YAML: server-side apply bodies go out as JSON with the apply content type.
            headers["Content-Type"] = content_type or "application/json"
        api = self.api_client
        method, url, headers, body, _ = await api.param_serialize(
            method=method,
            resource_path=path,
            query_params=list((query or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        return await api.call_api(method, url, header_params=headers, body=body, _request_timeout=limits)

    async def _request(
        self,
        verb: str,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
        expected: frozenset[int] = frozenset(),
        decode: Callable[[bytes], Any] = json.loads,
        *,
        request_timeout: float | None = None,
        attempts: int | None = None,
        fenced: bool = True,
    ) -> Any:
        """One API call with retries. `expected` statuses (404 for a lookup) are answers, not errors;
        a successful answer's body is `decode`d (JSON). A write is `fenced` (see `fence`) unless
        it is the Lease's own; `request_timeout` and `attempts` override the client's for this call."""
        delay = self.retry.first_delay
        attempts = attempts or self.retry.attempts
        for attempt in range(1, attempts + 1):
            connection = self.connection
            total = request_timeout or self.timeout
            if fenced and method != "GET" and self.fence is not None:
                left = self.fence()
                if left <= 0:
                    metrics.WRITES_FENCED.inc()
                    raise NotLeaderError(f"{verb} {path} not sent: this replica is not the leader")
                total = min(total, left)  # never in flight past the moment the Lease may be taken
            limits = aiohttp.ClientTimeout(total=total)
            wait: float | None = None
            try:
                await self._refresh_if_expiring(connection)
                connection = self.connection
                response = await self._send(method, path, query, body, content_type, limits)
                raw = await response.read()
            except CONNECTION_ERRORS as exc:
                metrics.API_REQUESTS.labels(verb=verb, code="connection").inc()
                if attempt == attempts:
                    metrics.API_ERRORS.labels(verb=verb, code="connection").inc()
                    raise ApiError(0, "ConnectionError", str(exc) or type(exc).__name__) from exc
            else:
                status = int(response.status)
                metrics.API_REQUESTS.labels(verb=verb, code=str(status)).inc()
                if status < 400:
                    try:
                        return decode(raw) if raw else None
                    except ValueError as exc:
                        raise ApiError(status, "InvalidResponse", f"not JSON: {raw[:200]!r}") from exc
                error = error_from_response(status, response.headers.get("Content-Type"), raw)
                error.retry_after = wait = retry_after(response.headers.get("Retry-After"))
                if status == 401 and self.reload is not None and attempt == 1:
                    await self._reload_credentials(connection)
                    continue  # once more, with the fresh credentials
                too_long = wait is not None and wait > self.retry.max_retry_after
                if status not in RETRYABLE or attempt == attempts or too_long:
                    # A resource that is not served (an optional CRD such as Argo CD's AppProject
                    # not installed) is state, reported by tenantry_resource_served, not an error.
                    if status not in expected and not error.not_served:
                        metrics.API_ERRORS.labels(verb=verb, code=str(status)).inc()
                    raise error
            # Full jitter: replicas and workers that failed together do not retry together. A
            # throttled request (429 from API Priority and Fairness, with Retry-After) waits at
            # least as long as the API server asked.
            pause = random.uniform(0, delay)
            await asyncio.sleep(max(pause, wait) if wait is not None else pause)
            delay = min(delay * 2, self.retry.max_delay)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- operations ------------------------------------------------------------------------------
    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply with our one field manager, taking over only the fields we send."""
        kind = kind_of(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        path = kind.path(meta.get("namespace"), meta["name"])
        query = {"fieldManager": FIELD_MANAGER, "force": "true"}
        result: dict[str, Any] = await self._request(
            "apply", "PATCH", path, query, obj, "application/apply-patch+yaml"
        )
        return result

    async def get(
        self,
        kind: Kind,
        name: str,
        namespace: str | None = None,
        *,
        request_timeout: float | None = None,
        attempts: int | None = None,
    ) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self._request(
                "get",
                "GET",
                kind.path(namespace, name),
                expected=NOT_FOUND,
                request_timeout=request_timeout,
                attempts=attempts,
            )
        except ApiError as exc:
            if exc.status == 404 and not exc.not_served:
                return None  # a served resource without that object
            raise
        return result

    async def create(
        self,
        kind: Kind,
        obj: dict[str, Any],
        *,
        request_timeout: float | None = None,
        attempts: int | None = None,
        fenced: bool = True,
    ) -> dict[str, Any]:
        path = kind.path(obj["metadata"].get("namespace"))
        result: dict[str, Any] = await self._request(
            "create",
            "POST",
            path,
            body=obj,
            request_timeout=request_timeout,
            attempts=attempts,
            fenced=fenced,
        )
        return result

    async def replace(
        self,
        kind: Kind,
        obj: dict[str, Any],
        *,
        request_timeout: float | None = None,
        attempts: int | None = None,
        fenced: bool = True,
    ) -> dict[str, Any]:
        """PUT: with `metadata.resourceVersion` set, refused (409) if the object changed since."""
        meta = obj["metadata"]
        path = kind.path(meta.get("namespace"), meta["name"])
        result: dict[str, Any] = await self._request(
            "update", "PUT", path, body=obj, request_timeout=request_timeout, attempts=attempts, fenced=fenced
        )
        return result

    async def list_with_version(
        self,
        kind: Kind,
        label_selector: str | None = None,
        page: int = 500,
        transform: Callable[[dict[str, Any]], T] | None = None,
    ) -> tuple[list[T], str]:
        """All items (paginated) and the list's resourceVersion, where a watch can start.

        `transform` is applied to each item as soon as it is decoded, so neither a page nor the
        list ever holds every full object at once (40,000 children at start-up would be ~300 MB).
        """
        items: list[T] = []
        query: dict[str, str] = {"limit": str(page)}
        if label_selector:
            query["labelSelector"] = label_selector

        def each(item: dict[str, Any]) -> Any:
            item.setdefault("apiVersion", kind.api_version)
            item.setdefault("kind", kind.kind)
            return transform(item) if transform else item

        def decode(raw: bytes) -> tuple[list[T], dict[str, Any]]:
            return decode_list(raw, each)

        while True:
            listed, data = await self._request("list", "GET", kind.path(), query, decode=decode)
            items += listed
            meta = data.get("metadata") or {}
            if not meta.get("continue"):
                return items, str(meta.get("resourceVersion") or "")
            query["continue"] = meta["continue"]

    async def watch(
        self, kind: Kind, query: dict[str, str], read_timeout: float
    ) -> AsyncIterator[dict[str, Any]]:
        """The events of one watch request, decoded, until the API server ends the stream."""
        await self._refresh_if_expiring(self.connection)
        connection = self.connection
        limits = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=read_timeout)
        response = await self._send("GET", kind.path(), {**query, "watch": "true"}, None, None, limits)
        try:
            metrics.API_REQUESTS.labels(verb="watch", code=str(response.status)).inc()
            if response.status >= 400:
                raw = await response.read()
                if response.status == 401:
                    await self._reload_credentials(connection)  # the informer reconnects after its backoff
                raise error_from_response(int(response.status), response.headers.get("Content-Type"), raw)
            # One JSON event per line (aiohttp splits lines; the library sizes its buffer for
            # large objects).
            async for line in response.response.content:
                if line.strip():
                    yield json.loads(line)
        finally:
            response.response.release()

    async def delete(
        self, kind: Kind, name: str, namespace: str | None = None, uid: str | None = None
    ) -> bool:
        """Delete; `uid` is a precondition so we never delete a same-named object we did not see."""
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Background",
        }
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self._request("delete", "DELETE", kind.path(namespace, name), body=body, expected=NOT_FOUND)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def merge_patch(
        self,
        kind: Kind,
        name: str,
        patch: dict[str, Any],
        subresource: str | None = None,
        namespace: str | None = None,
    ) -> dict[str, Any]:
        path = kind.path(namespace, name, subresource)
        result: dict[str, Any] = await self._request(
            "patch", "PATCH", path, body=patch, content_type="application/merge-patch+json"
        )
        return result

    async def event(
        self, regarding: dict[str, Any], type_: str, reason: str, message: str, namespace: str
    ) -> None:
        meta = regarding["metadata"]
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": regarding.get("apiVersion"),
                "kind": regarding.get("kind"),
                "name": meta["name"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
                # The API server requires an Event's involvedObject.namespace to equal its own
                # namespace, except in `default` (pkg/apis/core/validation/events.go): an Event
                # about a cluster-scoped Organization in a tenant namespace names that namespace.
                **({"namespace": meta.get("namespace") or namespace} if namespace != "default" else {}),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "tenantry"},
            "reportingComponent": "tenantry.dev/operator",
            "reportingInstance": "tenantry",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self._request("event", "POST", EVENT.path(namespace), body=event)
