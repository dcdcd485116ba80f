"""Integration fixtures: the real operator (Kopf + our runtime + our HTTP client) against the
fake API server (tests/fakeapi, which says what it models), over real HTTP on 127.0.0.1.

`Api` is what a person or Argo CD does to the cluster: plain aiohttp, independent of our client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import kopf
import pytest_asyncio

from tenantry.kube.client import Connection, Retry
from tenantry.observe import metrics
from tenantry.reconcile.config import Config
from tenantry.reconcile.frame import register
from tenantry.reconcile.runtime import Runtime
from tests.conftest import minimal_org
from tests.fakeapi.resources import APPPROJECTS
from tests.fakeapi.server import FakeApiServer, Request
from tests.integration.kopf_harness import eventually, run_operator
from tests.unit.helpers import TODAY

# Marks the test's own requests, so RBAC tests can tell them from the operator's.
TEST_CLIENT = {"X-Tenantry-Test-Client": "1"}
ORG = "/apis/tenantry.dev/v1alpha1/organizations"
POLICY = "/apis/tenantry.dev/v1alpha1/tenancypolicies"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
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


@pytest_asyncio.fixture
async def kube() -> AsyncIterator[FakeApiServer]:
    """A running fake API server (random port on 127.0.0.1) serving Tenantry's resources, with
    both CRD objects present, as after `kubectl apply -f crds/`."""
    async with FakeApiServer() as server:
        async with aiohttp.ClientSession() as session:
            for plural in ("organizations", "tenancypolicies"):
                async with session.post(
                    server.url + CRDS, json=crd_object(plural), headers=TEST_CLIENT
                ) as response:
                    assert response.status < 300, await response.text()
        yield server
        assert not server.crashes, f"the fake API server crashed while serving: {server.crashes!r}"


class Api:
    """What a person or Argo CD does to the cluster: plain HTTP, independent of our client."""

    def __init__(self, kube: FakeApiServer, session: aiohttp.ClientSession) -> None:
        self.kube, self.session, self.base = kube, session, kube.url

    async def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        async with self.session.request(
            method, self.base + path, json=body, headers={"Content-Type": content_type, **TEST_CLIENT}
        ) as response:
            data = await response.json(content_type=None) if response.content_length != 0 else None
            if response.status >= 400:
                raise AssertionError(f"{method} {path}: {response.status} {data}")
            return data

    async def get(self, path: str) -> Any:
        """The object, or None when the API server says it does not exist (a JSON 404 Status).

        A plain-text 404 means the path is not served at all (a typo in the group or plural, or
        an undeclared resource): that is a broken test, not an absent object, so it fails."""
        async with self.session.get(self.base + path, headers=TEST_CLIENT) as response:
            if response.status == 404:
                if "json" not in (response.content_type or ""):
                    raise AssertionError(f"GET {path}: not served ({await response.text()!r})")
                return None
            data = await response.json(content_type=None)
            if response.status >= 400:
                raise AssertionError(f"GET {path}: {response.status} {data}")
            return data

    async def create(self, path: str, body: dict[str, Any]) -> Any:
        return await self.request("POST", path, body)

    async def patch(self, path: str, body: dict[str, Any]) -> Any:
        return await self.request("PATCH", path, body, "application/merge-patch+json")

    async def delete(self, path: str) -> Any:
        return await self.request("DELETE", path)

    def writes(self) -> list[tuple[str, str]]:
        """Every write request the operator has sent so far, as (method, path), oldest first.

        The test's own requests (TEST_CLIENT header) are not counted.
        """
        return [
            (r.method, r.path)
            for r in self.kube.requests
            if not is_test_client(r) and r.method in WRITE_METHODS
        ]


WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
TEST_CLIENT_HEADER = next(iter(TEST_CLIENT))


def is_test_client(request: Request) -> bool:
    return bool(request.headers.get(TEST_CLIENT_HEADER))


def metric_total(name: str, **labels: str) -> float:
    """Sum of every sample of the counter `name` (e.g. "tenantry_drift_corrections_total")
    whose labels include `labels`, read from the operator's registry as a scrape would."""
    total = 0.0
    for family in metrics.REGISTRY.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def reconciles(result: str | None = None) -> float:
    """Organization reconciles finished so far in this process (all results, or one)."""
    return metric_total("tenantry_reconcile_total", **({"result": result} if result else {}))


async def settled(operator: Operator, *, reconciled_more_than: float | None = None) -> None:
    """Wait until the operator has nothing left to do: no watch event waiting to be handled,
    nothing queued, no reconcile running (and, if given, more reconciles finished than that)."""
    runtime = operator.runtime
    assert runtime is not None and runtime.queue is not None
    queue = runtime.queue

    def idle() -> bool:
        events = runtime._events
        return (
            (events is None or events.empty())
            and len(queue) == 0
            and not queue._active
            and (reconciled_more_than is None or reconciles() > reconciled_more_than)
        )

    await eventually(idle, timeout=10.0)


def org_body(name: str = "acme", **spec: Any) -> dict[str, Any]:
    """A small Organization with an admin group, so RBAC objects are rendered too."""
    spec.setdefault("members", {"admins": [{"kind": "Group", "name": f"{name}-admins"}]})
    return minimal_org(name, **spec)


def policy_body(name: str = "default", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tenantry.dev/v1alpha1",
        "kind": "TenancyPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


async def declare_argocd(api: Api) -> None:
    """Install Argo CD in the fake cluster: its namespace, and its AppProject CRD served."""
    api.kube.serve(APPPROJECTS)
    if await api.get("/api/v1/namespaces/argocd") is None:
        await api.create("/api/v1/namespaces", {"metadata": {"name": "argocd"}})


def kopf_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.scanning.disabled = True
    settings.process.ultimate_exiting_timeout = None
    settings.networking.error_backoffs = [0.05, 0.1, 0.2]
    settings.queueing.error_delays = [0.1, 0.2, 0.5]
    settings.watching.reconnect_backoff = 0.05
    # Kopf keeps a worker task per watched object until it idles out; short, so teardown is quick.
    settings.queueing.idle_timeout = 0.2
    settings.queueing.exit_timeout = 0.2
    return settings


@pytest_asyncio.fixture
async def api(kube: FakeApiServer) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(kube, session)


class Operator:
    """A running Tenantry; `restart()` stops it and starts a fresh process state."""

    def __init__(self, kube: FakeApiServer) -> None:
        self.kube = kube
        # Where the operator connects: the fake API server, or a proxy in front of it.
        self.server: str = kube.url
        self.runtime: Runtime | None = None
        self._ctx: Any = None

    async def start(self, **config: Any) -> Runtime:
        registry = kopf.OperatorRegistry()
        defaults: dict[str, Any] = {
            "workers": 2,
            "resync_seconds": 3600,
            "today": lambda: TODAY,
            "retry": Retry(attempts=4, first_delay=0.01, max_delay=0.05),
            "not_served_poll_seconds": 0.2,
        }
        defaults.update(config)
        runtime = Runtime(Connection(server=self.server), Config(**defaults))
        register(registry, runtime)
        self._ctx = run_operator(registry=registry, settings=kopf_settings())
        await self._ctx.__aenter__()
        await runtime.started.wait()
        self.runtime = runtime
        return runtime

    async def stop(self) -> None:
        if self.runtime is not None:
            await self.runtime.stop()  # our workers first, so Kopf has no sub-tasks to wait for
        if self._ctx is not None:
            await self._ctx.__aexit__(None, None, None)
            self._ctx = None

    async def restart(self, **config: Any) -> Runtime:
        await self.stop()
        return await self.start(**config)


@pytest_asyncio.fixture
async def operator(kube: FakeApiServer) -> AsyncIterator[Operator]:
    op = Operator(kube)
    await op.start()
    try:
        yield op
    finally:
        await op.stop()  # before the fake API server goes away
