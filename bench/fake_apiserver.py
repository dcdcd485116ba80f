"""The test suite's fake Kubernetes API server (kmock + `TenantryKube`), as a process of its own.

    python bench/fake_apiserver.py [--port 0]

Prints `READY <port>` on stdout once it listens on 127.0.0.1. It is the integration tests'
`TenantryKube` (imported, not copied) plus request counters the benchmark reads over HTTP:

    GET  /_bench/counters[?window=W]  -> the counters of every window (or of W), as JSON
    POST /_bench/window?name=restart  -> count from now on into the window "restart"

Requests sent with a `User-Agent` starting with `tenantry-bench` (the benchmark's own set-up
and polling) are served but not counted. Everything else (Kopf's watches, Tenantry's client)
is counted per window as reads (list, get, watch, discovery) and writes (create, apply, patch,
update, delete), also per resource; each write is recorded (time, verb, path, Event reason).

Changes to kmock's costs, not to its answers, so the fake is less of a bottleneck than it would
be at this scale: served requests are not kept (`_forget`), a GET is a key lookup
(`_serve_fetch`). And one fix: LISTs honour `?limit=`/`continue` (`_serve_list`), so a client
sees pages as from an API server (kmock answers every LIST in one piece).

Besides the test suite's resources it declares Kopf's `ClusterKopfPeering` (as
`manifests/base/kopf-peering.yaml` installs it), so the operator can run with peering.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
from kmock._internal import parsing as kmock_parsing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: `tests`

from tests.integration.kmock_fixture import (
    VERBS,
    TenantryKube,
    declare_tenantry_resources,
    parse_path_with_namespaces,
)

BENCH_AGENT = "tenantry-bench"
WRITE_LOG_LIMIT = 5000  # per window; the counts stay exact beyond it


def classify(request: kmock.Request) -> str:
    """The verb of a request, as the Kubernetes audit log would name it."""
    method = str(request.method.value if request.method else "").upper()
    if method == "GET":
        if request.action == kmock.action.WATCH:
            return "watch"
        if request.resource is None or request.resource.plural is None:
            return "discovery"
        return "list" if request.action == kmock.action.LIST else "get"
    if method == "PATCH":
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        return "apply" if content_type == "application/apply-patch+yaml" else "patch"
    return {"POST": "create", "PUT": "update", "DELETE": "delete"}.get(method, method.lower())


READS = {"list", "get", "watch", "discovery"}


@attrs.define(kw_only=True)
class CountingKube(TenantryKube):
    """`TenantryKube` that counts what it serves, per window, and serves `/_bench/` itself."""

    window: str = attrs.field(default="startup", init=False)
    windows: dict[str, dict[str, Any]] = attrs.field(factory=dict, init=False)
    list_snapshots: dict[str, dict[str, Any]] = attrs.field(factory=dict, init=False)

    def _current(self) -> dict[str, Any]:
        return self.windows.setdefault(
            self.window,
            {
                "started_at": time.time(),
                "reads": 0,
                "writes": 0,
                "errors": 0,
                "by_verb": {},
                "by_client": {},
                "by_resource": {},
                "write_log": [],
                "last_request_at": None,
                "last_object_request_at": None,  # peering heartbeats excluded
                "last_write_at": None,
                "first_at": {},  # "<resource> <verb>" -> when first seen (a timeline of the start)
            },
        )

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if raw_request.path.startswith("/_bench/"):
            return self._control(raw_request)
        return await super().__call__(raw_request)

    def _control(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if raw_request.path == "/_bench/window" and raw_request.method == "POST":
            self.window = raw_request.query.get("name", "default")
            self._current()
            return aiohttp.web.json_response({"window": self.window})
        if raw_request.path == "/_bench/counters":  # ?window=NAME: only that window
            only = raw_request.query.get("window")
            windows = {k: v for k, v in self.windows.items() if only in (None, k)}
            return aiohttp.web.json_response(
                {
                    "now": time.time(),
                    "window": self.window,
                    "objects": len(self._objects),
                    "requests_kept": len(self._requests),
                    "windows": windows,
                }
            )
        return aiohttp.web.json_response({"error": "unknown bench path"}, status=404)

    async def _handle(self, request: kmock.Request) -> Any:
        counters = (
            None if request.headers.get("User-Agent", "").startswith(BENCH_AGENT) else self._count(request)
        )
        try:
            response = await super()._handle(request)
        except Exception:
            if counters is not None:
                counters["errors"] += 1
            raise
        finally:
            self._forget(request)
        if counters is not None and getattr(response, "status", 200) >= 400:
            counters["errors"] += 1
        return response

    async def _serve_list(self, request: kmock.Request) -> Any:
        """`?limit=` pages, as an API server serves them: every page of one LIST comes from the
        snapshot taken for the first one (kmock 0.8 ignores `limit` and sends everything)."""
        limit = int(request.params.get("limit") or 0)
        token = request.params.get("continue")
        if token:
            snapshot, _, offset = token.rpartition(":")
            if snapshot not in self.list_snapshots:
                raise kmock.KubernetesError(status=410, reason="Expired", message="continue expired")
            result = self.list_snapshots[snapshot]
        else:
            result = await super()._serve_list(request)
            offset, snapshot = "0", str(uuid.uuid4())
            if not limit or len(result["items"]) <= limit:
                return result
            self.list_snapshots[snapshot] = result
        start = int(offset)
        page = {
            **result,
            "metadata": dict(result["metadata"]),
            "items": result["items"][start : start + limit],
        }
        if start + limit < len(result["items"]):
            page["metadata"]["continue"] = f"{snapshot}:{start + limit}"
        else:
            del self.list_snapshots[snapshot]
        return page

    async def _serve_fetch(self, request: kmock.Request) -> Any:
        """kmock scans every stored object for each GET (~40,000 at N=1,000); an API server
        looks the key up. Same answers, without the O(objects) scan."""
        if request.resource is None or request.name is None:
            raise kmock.KubernetesObjectNotFoundError()
        namespace = request.namespace if self._info(request.resource).namespaced else None
        key = (request.resource, namespace, request.name)
        if key not in self._objects or self._objects[key].deleted:
            raise kmock.KubernetesObjectNotFoundError()
        return self._objects[key].raw

    def _forget(self, request: kmock.Request) -> None:
        """kmock keeps every request and, for each new one, scans that whole history for every
        reaction (``request in reaction``): O(requests²), ~0.1 s per request after a few
        hundred. The benchmark needs no history (it has its counters), so a served request is
        dropped; the ones being served (open watches included) stay, as kmock's matching needs."""
        for index, kept in enumerate(self._requests):
            if kept is request:
                del self._requests[index]
                return

    def _count(self, request: kmock.Request) -> dict[str, Any]:
        counters = self._current()
        agent = request.headers.get("User-Agent", "")
        verb = classify(request)
        now = time.time()
        counters["by_verb"][verb] = counters["by_verb"].get(verb, 0) + 1
        client = "kopf" if agent.startswith("kopf/") else "tenantry-client"
        counters["by_client"][client] = counters["by_client"].get(client, 0) + 1
        resource = request.resource.plural if request.resource and request.resource.plural else "-"
        per_resource = counters["by_resource"].setdefault(resource, {})
        per_resource[verb] = per_resource.get(verb, 0) + 1
        counters["first_at"].setdefault(f"{resource} {verb}", now)
        counters["last_request_at"] = now
        if request.resource is None or request.resource.group != "kopf.dev":
            counters["last_object_request_at"] = now
        if verb in READS:
            counters["reads"] += 1
        else:
            counters["writes"] += 1
            counters["last_write_at"] = now
            if len(counters["write_log"]) < WRITE_LOG_LIMIT:
                data = request.data if isinstance(request.data, dict) else {}
                counters["write_log"].append(
                    {"at": now, "verb": verb, "path": request.url.path, "reason": data.get("reason")}
                )
        return counters


async def serve(port: int) -> None:
    # Gap (a) of kmock_fixture.py: /api/v1/namespaces paths. The tests monkeypatch it per test;
    # this process is all fake API server, so it is patched for the process's lifetime.
    kmock_parsing.parse_path = parse_path_with_namespaces
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with CountingKube() as kube, kmock.Server(kube, port=port) as server:
        declare_tenantry_resources(kube)
        kube.resources["kopf.dev/v1/clusterkopfpeerings"] = kmock.ResourceInfo(
            kind="ClusterKopfPeering", singular="clusterkopfpeering", namespaced=False, verbs=VERBS
        )
        print(f"READY {server.port}", flush=True)
        await stop.wait()
        crashes = [e for e in kube.errors if not isinstance(e, kmock.KubernetesError)]
        for crash in crashes[:20]:
            print(f"kmock crashed while serving: {crash!r}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed when ready)")
    args = parser.parse_args()
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
