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

A quota controller (what kube-controller-manager's resourcequota controller does for a
namespace without pods or PVCs; `--no-quota-controller` turns it off):

- `--quota-delay` seconds (0.5 by default) after a ResourceQuota is created, or after a write
  changes its `spec.hard`, it writes `status.hard` = `spec.hard` and `status.used` = "0" for
  every key of `spec.hard` (a value that churn set is kept while its key stays in spec.hard),
  as an update of the status subresource: a new resourceVersion and one MODIFIED watch event,
  the same as `PUT .../resourcequotas/NAME/status` from the real controller. A write that leaves
  status already right gets no status write (the real controller also writes only on change).
  These writes are not requests of the operator: they are counted apart
  (`quota_status_writes` in each window).
- `--quota-churn SECONDS` (or `POST /_bench/churn?every=SECONDS&count=K` while running; every=0
  stops it): every SECONDS, K random quotas (`--quota-churn-count`, 10 by default) get a new
  `status.used`, as when a pod starts or stops: `pods` and `count/pods` n, `requests.cpu` and
  `cpu` n*250m, `limits.cpu` n*500m, `requests.memory` and `memory` n*256Mi, `limits.memory`
  n*512Mi (n in 0..5, different from the current pod count); the other keys keep their value.
  Each is again one status update with one MODIFIED event.

Not modelled: usage computed from real pods/PVCs/services (there are none), the controller's
full resync every 5 minutes (`--resource-quota-sync-period`, which writes only on change, so it
sends no event in a steady state), the status write's 409 retries, admission's quota checks
(nothing is refused for exceeding a quota), and scopes/scopeSelectors.

    GET  /_bench/writes?path=P        -> the times of the last writes (verb, at) to path P
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import random
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
WRITES_PER_PATH = 8  # the last writes of every path, for the drift probes (`/_bench/writes`)
QUOTAS = kmock.resource("", "v1", "resourcequotas")
# Requests that are not about objects: Kopf peering heartbeats, the leader Lease renewals.
HEARTBEAT_GROUPS = ("kopf.dev", "coordination.k8s.io")


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
    writes_by_path: dict[str, list[tuple[str, float]]] = attrs.field(factory=dict, init=False)
    # The quota controller (see the module's docstring).
    quota_controller: bool = True
    quota_delay: float = 0.5
    churn_every: float = 0.0
    churn_count: int = 10
    _quota_due: dict[tuple[Any, str | None, str], float] = attrs.field(factory=dict, init=False)
    quota_stats: dict[str, int] = attrs.field(
        factory=lambda: {"status_writes": 0, "churn_writes": 0, "churn_rounds": 0}, init=False
    )

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
                "last_object_request_at": None,  # heartbeats, Lease renewals, unserved polls excluded
                "last_write_at": None,
                "quota_status_writes": 0,  # the fake's quota controller (not the operator)
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
        if raw_request.path == "/_bench/churn" and raw_request.method == "POST":
            self.churn_every = float(raw_request.query.get("every", "0"))
            self.churn_count = int(raw_request.query.get("count", self.churn_count))
            return aiohttp.web.json_response({"every": self.churn_every, "count": self.churn_count})
        if raw_request.path == "/_bench/writes":
            writes = self.writes_by_path.get(raw_request.query.get("path", ""), [])
            return aiohttp.web.json_response(
                {"now": time.time(), "writes": [{"verb": v, "at": at} for v, at in writes]}
            )
        if raw_request.path == "/_bench/counters":  # ?window=NAME: only that window
            only = raw_request.query.get("window")
            windows = {k: v for k, v in self.windows.items() if only in (None, k)}
            return aiohttp.web.json_response(
                {
                    "now": time.time(),
                    "window": self.window,
                    "objects": len(self._objects),
                    "requests_kept": len(self._requests),
                    "quota_controller": {**self.quota_stats, "pending": len(self._quota_due)},
                    "windows": windows,
                }
            )
        return aiohttp.web.json_response({"error": "unknown bench path"}, status=404)

    async def _handle(self, request: kmock.Request) -> Any:
        if (
            request.resource is not None
            and request.resource.plural is None
            and request.method == kmock.method.GET
        ):
            # Discovery of one group/version (`/api/v1`, `/apis/G/V`): kmock serves it, but
            # `TenantryKube` takes it for an undeclared resource and answers 404; kubectl needs it.
            counters = (
                None
                if request.headers.get("User-Agent", "").startswith(BENCH_AGENT)
                else self._count(request)
            )
            try:
                return await kmock.KubernetesEmulator._handle(self, request)
            finally:
                self._forget(request)
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

    async def _serve_version(self, request: kmock.Request) -> Any:
        """kmock names the core group's version "/v1"; an API server (and kubectl) says "v1"."""
        result = await super()._serve_version(request)
        result["groupVersion"] = result["groupVersion"].lstrip("/")
        return result

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

    # -- the quota controller -------------------------------------------------------------------
    def _write(self, request: kmock.Request) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Every write of the emulator; a quota whose status no longer matches its spec.hard is
        due for a status update `quota_delay` seconds later (the controller's work queue)."""
        result, events = super()._write(request)
        if self.quota_controller and request.resource == QUOTAS:
            for event in events:
                raw = event["object"]
                if event["type"] != "DELETED" and self._quota_status(raw) != raw.get("status"):
                    meta = raw["metadata"]
                    key = (QUOTAS, meta.get("namespace"), meta["name"])
                    self._quota_due.setdefault(key, time.monotonic() + self.quota_delay)
        return result, events

    @staticmethod
    def _quota_status(raw: dict[str, Any]) -> dict[str, Any]:
        """What the controller computes for a namespace without pods or PVCs: hard = spec.hard,
        used = 0 for every key (a value set by churn is kept while its key is still hard)."""
        hard = dict((raw.get("spec") or {}).get("hard") or {})
        used = (raw.get("status") or {}).get("used") or {}
        return {"hard": hard, "used": {key: used.get(key, "0") for key in hard}}

    async def _update_quota_status(self, key: tuple[Any, str | None, str], status: Any = None) -> bool:
        """One status update, as `PUT .../resourcequotas/NAME/status`: new resourceVersion, one
        MODIFIED event; nothing if the status is already right or the quota is gone."""
        async with self._lock:
            if key not in self._objects or self._objects[key].deleted:
                return False
            obj = self._objects[key]
            new: dict[str, Any] = copy.deepcopy(obj.raw)
            new["status"] = status if status is not None else self._quota_status(new)
            if new.get("status") == obj.raw.get("status"):
                return False
            new["metadata"]["resourceVersion"] = self._next_rv()
            obj.history.append(new)
            await self._buses[QUOTAS].put({"type": "MODIFIED", "object": new})
        self._current()["quota_status_writes"] += 1
        return True

    async def run_quota_controller(self) -> None:
        """Status of new or changed quotas after `quota_delay`; churn of `status.used`."""
        next_churn = time.monotonic()
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            for key in [k for k, due in self._quota_due.items() if due <= now]:
                del self._quota_due[key]
                if await self._update_quota_status(key):
                    self.quota_stats["status_writes"] += 1
            if self.churn_every <= 0:
                next_churn = now
            elif now >= next_churn:
                next_churn = now + self.churn_every
                await self._churn()

    async def _churn(self) -> None:
        """A pod started or stopped in each of `churn_count` random namespaces."""
        quotas = [k for k, o in self._objects.items() if k[0] == QUOTAS and not o.deleted]
        self.quota_stats["churn_rounds"] += 1
        for key in random.sample(quotas, min(self.churn_count, len(quotas))):
            raw = self._objects[key].raw
            status = raw.get("status")
            if not status or "used" not in status:
                continue  # not synced by the controller yet
            current = str(status["used"].get("pods", "0"))
            pods = int(current) if current.isdigit() else 0
            n = random.choice([i for i in range(6) if i != pods])
            usage = {
                "pods": str(n),
                "count/pods": str(n),
                "requests.cpu": f"{n * 250}m" if n else "0",
                "cpu": f"{n * 250}m" if n else "0",
                "limits.cpu": f"{n * 500}m" if n else "0",
                "requests.memory": f"{n * 256}Mi" if n else "0",
                "memory": f"{n * 256}Mi" if n else "0",
                "limits.memory": f"{n * 512}Mi" if n else "0",
            }
            used = {k: usage.get(k, v) for k, v in status["used"].items()}
            if await self._update_quota_status(key, {**status, "used": used}):
                self.quota_stats["churn_writes"] += 1

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
        # Not object work: heartbeats, and the operator's poll of a kind that is not served
        # (Argo CD's AppProjects every few seconds, while Argo CD is not installed).
        if request.resource is None or (
            request.resource.group not in HEARTBEAT_GROUPS and request.resource in self.resources
        ):
            counters["last_object_request_at"] = now
        if verb in READS:
            counters["reads"] += 1
        else:
            counters["writes"] += 1
            counters["last_write_at"] = now
            recent = self.writes_by_path.setdefault(request.url.path, [])
            recent.append((verb, now))
            del recent[:-WRITES_PER_PATH]
            if len(counters["write_log"]) < WRITE_LOG_LIMIT:
                data = request.data if isinstance(request.data, dict) else {}
                counters["write_log"].append(
                    {"at": now, "verb": verb, "path": request.url.path, "reason": data.get("reason")}
                )
        return counters


async def serve(args: argparse.Namespace) -> None:
    # Gap (a) of kmock_fixture.py: /api/v1/namespaces paths. The tests monkeypatch it per test;
    # this process is all fake API server, so it is patched for the process's lifetime.
    kmock_parsing.parse_path = parse_path_with_namespaces
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    kube_options = {
        "quota_controller": args.quota_controller,
        "quota_delay": args.quota_delay,
        "churn_every": args.quota_churn,
        "churn_count": args.quota_churn_count,
    }
    async with CountingKube(**kube_options) as kube, kmock.Server(kube, port=args.port) as server:
        declare_tenantry_resources(kube)
        controller = asyncio.create_task(kube.run_quota_controller())
        kube.resources["kopf.dev/v1/clusterkopfpeerings"] = kmock.ResourceInfo(
            kind="ClusterKopfPeering", singular="clusterkopfpeering", namespaced=False, verbs=VERBS
        )
        print(f"READY {server.port}", flush=True)
        await stop.wait()
        controller.cancel()
        crashes = [e for e in kube.errors if not isinstance(e, kmock.KubernetesError)]
        for crash in crashes[:20]:
            print(f"kmock crashed while serving: {crash!r}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed when ready)")
    parser.add_argument(
        "--no-quota-controller",
        dest="quota_controller",
        action="store_false",
        help="no ResourceQuota status at all (the fake as it was before)",
    )
    parser.add_argument(
        "--quota-delay", type=float, default=0.5, help="seconds from a quota write to its status"
    )
    parser.add_argument(
        "--quota-churn",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="every SECONDS, change status.used of --quota-churn-count random quotas (0: never)",
    )
    parser.add_argument("--quota-churn-count", type=int, default=10, help="quotas changed per round")
    args = parser.parse_args()
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
