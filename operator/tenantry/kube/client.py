"""The Kubernetes API client: server-side apply, reads, deletes, status patches, Events.

Built on the official `kubernetes` client (its REST layer; it is synchronous, so every call
runs in a worker thread and never blocks the operator's event loop). Credentials come from
Kopf's login (pykube-ng reads kubeconfig or in-cluster service-account files), so Kopf's
watches and our writes use one identity. Transient failures (429, 5xx, connection errors,
timeouts) are retried here with exponential backoff; anything else is raised as `ApiError`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlencode

import urllib3
from kubernetes import client as k8s

from tenantry import __version__
from tenantry.kube.resources import EVENT, Kind, kind_of
from tenantry.observe import metrics

FIELD_MANAGER = "tenantry"
T = TypeVar("T")
RETRYABLE = {429, 500, 502, 503, 504}
NOT_FOUND = frozenset({404})


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status, self.reason, self.message = status, reason, message
        super().__init__(f"{status} {reason}: {message}")

    @property
    def not_served(self) -> bool:
        """The API server does not serve this group/version/resource at all (a CRD that is not
        installed, or was deleted): it answers such paths with a plain-text `404 page not found`,
        not with a JSON Status. A missing object of a served resource is a JSON 404 instead."""
        return self.status == 404 and self.reason == NOT_SERVED


NOT_SERVED = "NotServed"


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

    @classmethod
    def from_kopf(cls, info: Any) -> Connection:
        token = info.token if getattr(info, "scheme", None) in (None, "Bearer") else None
        return cls(
            server=info.server,
            ca_path=info.ca_path,
            ca_data=info.ca_data,
            insecure=bool(info.insecure),
            token=token,
            certificate_path=info.certificate_path,
            certificate_data=info.certificate_data,
            private_key_path=info.private_key_path,
            private_key_data=info.private_key_data,
        )


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


@dataclass
class KubeClient:
    connection: Connection
    retry: Retry = field(default_factory=Retry)
    timeout: float = 30.0
    reload: Callable[[], Connection] | None = None
    # Shows in the API server's audit log which replica made a request.
    user_agent: str = f"tenantry/{__version__}"
    _api: k8s.ApiClient = field(init=False)

    def __post_init__(self) -> None:
        self._configure()

    def _configure(self) -> None:
        conf = k8s.Configuration(host=self.connection.server.rstrip("/"))
        conf.verify_ssl = not self.connection.insecure
        conf.ssl_ca_cert = as_file(self.connection.ca_path, self.connection.ca_data)
        conf.cert_file = as_file(self.connection.certificate_path, self.connection.certificate_data)
        conf.key_file = as_file(self.connection.private_key_path, self.connection.private_key_data)
        if self.connection.token:
            conf.api_key = {"authorization": f"Bearer {self.connection.token}"}
        conf.retries = False  # we retry ourselves, with metrics and backoff we control
        conf.connection_pool_maxsize = 16
        self._api = k8s.ApiClient(conf)

    def _reload_credentials(self) -> None:
        """Service-account tokens rotate: read the credentials again and rebuild the client."""
        assert self.reload is not None
        self.connection = self.reload()
        self._api.close()  # type: ignore[no-untyped-call]
        self._configure()

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]

    # -- the one HTTP primitive ---------------------------------------------------------------
    def _request_once(
        self,
        verb: str,
        method: str,
        path: str,
        query: dict[str, str] | None,
        body: Any,
        content_type: str | None,
    ) -> Any:
        url = self._api.configuration.host + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": "application/json", "User-Agent": self.user_agent}
        auth = self._api.configuration.api_key.get("authorization")
        if auth:
            headers["Authorization"] = auth
        if body is not None:
            # The REST layer serialises dict bodies as JSON for JSON and +yaml content types
            # (JSON is YAML), so server-side apply bodies go out as JSON too.
            headers["Content-Type"] = content_type or "application/json"
        response = self._api.rest_client.request(  # type: ignore[no-untyped-call]
            method, url, headers=headers, body=body, _request_timeout=self.timeout
        )
        raw = response.read() if hasattr(response, "read") else response.data
        status = int(response.status)
        metrics.API_REQUESTS.labels(verb=verb, code=str(status)).inc()
        if status >= 400:
            raise error_from_response(status, response.headers.get("Content-Type"), raw or b"")
        try:
            return json.loads(raw) if raw else None
        except ValueError as exc:
            raise ApiError(status, "InvalidResponse", f"not JSON: {raw[:200]!r}") from exc

    def _request(
        self,
        verb: str,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
        expected: frozenset[int] = frozenset(),
    ) -> Any:
        """One API call with retries. `expected` statuses (404 for a lookup) are answers, not errors."""
        delay = self.retry.first_delay
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return self._request_once(verb, method, path, query, body, content_type)
            except ApiError as exc:
                if exc.status == 401 and self.reload is not None and attempt == 1:
                    self._reload_credentials()  # then retry once with them
                    continue
                if exc.status not in RETRYABLE or attempt == self.retry.attempts:
                    if exc.status not in expected:
                        metrics.API_ERRORS.labels(verb=verb, code=str(exc.status)).inc()
                    raise
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                metrics.API_REQUESTS.labels(verb=verb, code="connection").inc()
                if attempt == self.retry.attempts:
                    metrics.API_ERRORS.labels(verb=verb, code="connection").inc()
                    raise ApiError(0, "ConnectionError", str(exc)) from exc
            # Full jitter: replicas and workers that failed together do not retry together.
            time.sleep(random.uniform(0, delay))
            delay = min(delay * 2, self.retry.max_delay)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- typed operations (sync; the async wrappers below run them in threads) ------------------
    def apply_sync(self, obj: dict[str, Any]) -> dict[str, Any]:
        kind = kind_of(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        path = kind.path(meta.get("namespace"), meta["name"])
        query = {"fieldManager": FIELD_MANAGER, "force": "true"}
        result: dict[str, Any] = self._request(
            "apply", "PATCH", path, query, obj, "application/apply-patch+yaml"
        )
        return result

    def get_sync(self, kind: Kind, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self._request(
                "get", "GET", kind.path(namespace, name), expected=NOT_FOUND
            )
        except ApiError as exc:
            if exc.status == 404 and not exc.not_served:
                return None  # a served resource without that object
            raise
        return result

    def list_sync(
        self, kind: Kind, label_selector: str | None = None, page: int = 500
    ) -> list[dict[str, Any]]:
        return self.list_with_version_sync(kind, label_selector, page)[0]

    def list_with_version_sync(
        self,
        kind: Kind,
        label_selector: str | None = None,
        page: int = 500,
        transform: Callable[[dict[str, Any]], T] | None = None,
    ) -> tuple[list[T], str]:
        """All items (paginated) and the list's resourceVersion, where a watch can start.

        `transform` is applied to each item as its page arrives, so a large list never holds
        every full object at once (40,000 children at start-up would be ~300 MB).
        """
        items: list[T] = []
        query: dict[str, str] = {"limit": str(page)}
        if label_selector:
            query["labelSelector"] = label_selector
        while True:
            data = self._request("list", "GET", kind.path(), query)
            for item in data.get("items", []):
                item.setdefault("apiVersion", kind.api_version)
                item.setdefault("kind", kind.kind)
                items.append(transform(item) if transform else item)
            meta = data.get("metadata") or {}
            if not meta.get("continue"):
                return items, str(meta.get("resourceVersion") or "")
            query["continue"] = meta["continue"]

    def stream_sync(self, verb: str, path: str, query: dict[str, str], read_timeout: float) -> Any:
        """Open a streaming GET (a watch); the caller reads its lines and releases it."""
        url = self._api.configuration.host + path + f"?{urlencode(query)}"
        headers = {"Accept": "application/json", "User-Agent": self.user_agent}
        auth = self._api.configuration.api_key.get("authorization")
        if auth:
            headers["Authorization"] = auth
        response = self._api.rest_client.pool_manager.request(
            "GET",
            url,
            headers=headers,
            preload_content=False,
            timeout=urllib3.Timeout(connect=10, read=read_timeout),
        )
        metrics.API_REQUESTS.labels(verb=verb, code=str(response.status)).inc()
        if response.status >= 400:
            data = response.read()
            response.release_conn()
            if response.status == 401 and self.reload is not None:
                self._reload_credentials()  # the informer reconnects after its backoff
            raise error_from_response(int(response.status), response.headers.get("Content-Type"), data)
        return response

    def delete_sync(
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
            self._request("delete", "DELETE", kind.path(namespace, name), body=body, expected=NOT_FOUND)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def merge_patch_sync(
        self,
        kind: Kind,
        name: str,
        patch: dict[str, Any],
        subresource: str | None = None,
        namespace: str | None = None,
    ) -> dict[str, Any]:
        path = kind.path(namespace, name, subresource)
        result: dict[str, Any] = self._request(
            "patch", "PATCH", path, body=patch, content_type="application/merge-patch+json"
        )
        return result

    def event_sync(
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
        self._request("event", "POST", EVENT.path(namespace), body=event)

    # -- async surface ---------------------------------------------------------------------------
    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(self.apply_sync, obj)

    async def get(self, kind: Kind, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.get_sync, kind, name, namespace)

    async def list(self, kind: Kind, label_selector: str | None = None) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.list_sync, kind, label_selector)

    async def delete(
        self, kind: Kind, name: str, namespace: str | None = None, uid: str | None = None
    ) -> bool:
        return await asyncio.to_thread(self.delete_sync, kind, name, namespace, uid)

    async def merge_patch(
        self,
        kind: Kind,
        name: str,
        patch: dict[str, Any],
        subresource: str | None = None,
        namespace: str | None = None,
    ) -> dict[str, Any]:
        return await asyncio.to_thread(self.merge_patch_sync, kind, name, patch, subresource, namespace)

    async def event(
        self, regarding: dict[str, Any], type_: str, reason: str, message: str, namespace: str
    ) -> None:
        await asyncio.to_thread(self.event_sync, regarding, type_, reason, message, namespace)
