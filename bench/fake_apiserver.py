"""The test suite's fake Kubernetes API server (`tests/fakeapi`), as a process of its own.

    python bench/fake_apiserver.py [--port 0]

Prints `READY <port>` on stdout once it listens on 127.0.0.1. It is the integration tests'
`FakeApiServer` (imported, not copied; its docstring says what it models), with the request
log off (the counters below replace it), plus request counters the benchmark reads over HTTP:

    GET  /_bench/counters[?window=W]  -> the counters of every window (or of W), as JSON
    POST /_bench/window?name=restart  -> count from now on into the window "restart"

Requests sent with a `User-Agent` starting with `tenantry-bench` (the benchmark's own set-up
and polling) are served but not counted. Everything else (Kopf's watches, Tenantry's client)
is counted per window as reads (list, get, watch, discovery) and writes (create, apply, patch,
update, delete), also per resource; each write is recorded (time, verb, path, Event reason).

A quota controller (what kube-controller-manager's resourcequota controller does for a
namespace without pods or PVCs; `--no-quota-controller` turns it off):

- `--quota-delay` seconds (0.5 by default) after a ResourceQuota is created, or after a write
  changes its `spec.hard`, it writes `status.hard` = `spec.hard` and `status.used` = "0" for
  every key of `spec.hard` (a value that churn set is kept while its key stays in spec.hard),
  as an update of the status subresource (`FakeApiServer.write_status`): a new
  resourceVersion and one MODIFIED watch event, the same as `PUT .../resourcequotas/NAME/status`
  from the real controller, with managedFields for kube-controller-manager. A write that leaves
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
import random
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp.web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: `tests`

from tests.fakeapi.server import FakeApiServer, Request

BENCH_AGENT = "tenantry-bench"
WRITE_LOG_LIMIT = 5000  # per window; the counts stay exact beyond it
WRITES_PER_PATH = 8  # the last writes of every path, for the drift probes (`/_bench/writes`)
QUOTAS = "v1/resourcequotas"
# Requests that are not about objects: the leader Lease's renewals.
HEARTBEAT_GROUPS = ("coordination.k8s.io",)
READS = {"list", "get", "watch", "discovery", "unserved"}


class Counters:
    """What the operator asked for, per window (the benchmark's phases)."""

    def __init__(self) -> None:
        self.window = "startup"
        self.windows: dict[str, dict[str, Any]] = {}
        self.writes_by_path: dict[str, list[tuple[str, float]]] = {}

    def current(self) -> dict[str, Any]:
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
                "last_object_request_at": None,  # Lease renewals and unserved polls excluded
                "last_write_at": None,
                "quota_status_writes": 0,  # the fake's quota controller (not the operator)
                "first_at": {},  # "<resource> <verb>" -> when first seen (a timeline of the start)
            },
        )

    def count(self, request: Request) -> None:
        if request.user_agent.startswith(BENCH_AGENT):
            return
        counters = self.current()
        verb, now = request.verb, time.time()
        counters["by_verb"][verb] = counters["by_verb"].get(verb, 0) + 1
        client = "kopf" if request.user_agent.startswith("kopf/") else "tenantry-client"
        counters["by_client"][client] = counters["by_client"].get(client, 0) + 1
        resource = request.plural or "-"
        per_resource = counters["by_resource"].setdefault(resource, {})
        per_resource[verb] = per_resource.get(verb, 0) + 1
        counters["first_at"].setdefault(f"{resource} {verb}", now)
        counters["last_request_at"] = now
        if request.status >= 400 and verb != "unserved":
            counters["errors"] += 1
        # Not object work: Lease renewals, and the operator's poll of a kind that is not served
        # (Argo CD's AppProjects every few seconds, while Argo CD is not installed).
        if verb != "unserved" and request.group not in HEARTBEAT_GROUPS:
            counters["last_object_request_at"] = now
        if verb in READS:
            counters["reads"] += 1
            return
        counters["writes"] += 1
        counters["last_write_at"] = now
        recent = self.writes_by_path.setdefault(request.path, [])
        recent.append((verb, now))
        del recent[:-WRITES_PER_PATH]
        if len(counters["write_log"]) < WRITE_LOG_LIMIT:
            data = request.body if isinstance(request.body, dict) else {}
            counters["write_log"].append(
                {"at": now, "verb": verb, "path": request.path, "reason": data.get("reason")}
            )


class QuotaController:
    """What kube-controller-manager's resourcequota controller does here (see the docstring)."""

    def __init__(
        self, kube: FakeApiServer, counters: Counters, delay: float, churn_every: float, churn_count: int
    ) -> None:
        self.kube, self.counters, self.delay = kube, counters, delay
        self.churn_every, self.churn_count = churn_every, churn_count
        self.due: dict[tuple[str | None, str], float] = {}
        self.stats = {"status_writes": 0, "churn_writes": 0, "churn_rounds": 0}
        kube.listeners.append(self.on_change)

    def on_change(self, resource: str, type_: str, obj: dict[str, Any]) -> None:
        """A quota whose status no longer matches its spec.hard is due `delay` seconds later
        (the controller's work queue)."""
        if resource != QUOTAS or type_ == "DELETED":
            return
        if self.wanted(obj) != obj.get("status"):
            meta = obj["metadata"]
            self.due.setdefault((meta.get("namespace"), meta["name"]), time.monotonic() + self.delay)

    @staticmethod
    def wanted(obj: dict[str, Any]) -> dict[str, Any]:
        """For a namespace without pods or PVCs: hard = spec.hard, used = 0 for every key (a value
        set by churn is kept while its key is still hard)."""
        hard = dict((obj.get("spec") or {}).get("hard") or {})
        used = (obj.get("status") or {}).get("used") or {}
        return {"hard": hard, "used": {key: used.get(key, "0") for key in hard}}

    def write(self, namespace: str | None, name: str, status: dict[str, Any] | None = None) -> bool:
        obj = self.kube.objects[QUOTAS].get((namespace or "", name))
        if obj is None:
            return False
        written = self.kube.write_status(QUOTAS, namespace, name, status or self.wanted(obj))
        if written:
            self.counters.current()["quota_status_writes"] += 1
        return written

    async def run(self) -> None:
        next_churn = time.monotonic()
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            for key in [k for k, due in self.due.items() if due <= now]:
                del self.due[key]
                if self.write(*key):
                    self.stats["status_writes"] += 1
            if self.churn_every <= 0:
                next_churn = now
            elif now >= next_churn:
                next_churn = now + self.churn_every
                self.churn()

    def churn(self) -> None:
        """A pod started or stopped in each of `churn_count` random namespaces."""
        quotas = list(self.kube.objects[QUOTAS].items())
        self.stats["churn_rounds"] += 1
        for (namespace, name), obj in random.sample(quotas, min(self.churn_count, len(quotas))):
            status = obj.get("status")
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
            if self.write(namespace, name, {**status, "used": used}):
                self.stats["churn_writes"] += 1


def control_routes(
    kube: FakeApiServer, counters: Counters, quotas: QuotaController | None
) -> list[aiohttp.web.RouteDef]:
    async def window(request: aiohttp.web.Request) -> aiohttp.web.Response:
        counters.window = request.query.get("name", "default")
        counters.current()
        return aiohttp.web.json_response({"window": counters.window})

    async def churn(request: aiohttp.web.Request) -> aiohttp.web.Response:
        if quotas is None:
            return aiohttp.web.json_response({"error": "no quota controller"}, status=409)
        quotas.churn_every = float(request.query.get("every", "0"))
        quotas.churn_count = int(request.query.get("count", quotas.churn_count))
        return aiohttp.web.json_response({"every": quotas.churn_every, "count": quotas.churn_count})

    async def writes(request: aiohttp.web.Request) -> aiohttp.web.Response:
        recent = counters.writes_by_path.get(request.query.get("path", ""), [])
        return aiohttp.web.json_response(
            {"now": time.time(), "writes": [{"verb": v, "at": at} for v, at in recent]}
        )

    async def read_counters(request: aiohttp.web.Request) -> aiohttp.web.Response:
        only = request.query.get("window")  # ?window=NAME: only that window
        controller = {**quotas.stats, "pending": len(quotas.due)} if quotas else {}
        return aiohttp.web.json_response(
            {
                "now": time.time(),
                "window": counters.window,
                "objects": sum(len(store) for store in kube.objects.values()),
                "requests_kept": len(kube.requests),
                "quota_controller": controller,
                "windows": {k: v for k, v in counters.windows.items() if only in (None, k)},
            }
        )

    return [
        aiohttp.web.post("/_bench/window", window),
        aiohttp.web.post("/_bench/churn", churn),
        aiohttp.web.get("/_bench/writes", writes),
        aiohttp.web.get("/_bench/counters", read_counters),
    ]


def latency_middleware(seconds: float) -> Any:
    """Each request (watches and /_bench/ aside) is answered `seconds` later, and requests
    overlap as on a multi-core API server: a real one takes milliseconds per server-side apply
    (the product owner's 4 x kubectl: 98 s for 37,000 objects, 10.6 ms per apply per stream)."""

    @aiohttp.web.middleware
    async def delayed(request: aiohttp.web.Request, handler: Any) -> aiohttp.web.StreamResponse:
        if not request.path.startswith("/_bench/") and request.query.get("watch") not in ("true", "1"):
            await asyncio.sleep(seconds)
        return await handler(request)

    return delayed


async def serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    kube = FakeApiServer(keep_requests=False)
    counters = Counters()
    kube.observers.append(counters.count)
    quotas = (
        QuotaController(kube, counters, args.quota_delay, args.quota_churn, args.quota_churn_count)
        if args.quota_controller
        else None
    )
    middlewares = [latency_middleware(args.latency_ms / 1000)] if args.latency_ms > 0 else []
    app = aiohttp.web.Application(client_max_size=64 * 1024 * 1024, middlewares=middlewares)
    app.add_routes(
        [*control_routes(kube, counters, quotas), aiohttp.web.route("*", "/{tail:.*}", kube.handle)]
    )
    runner = aiohttp.web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    listener = socket.create_server(("127.0.0.1", args.port))
    port = listener.getsockname()[1]
    await aiohttp.web.SockSite(runner, listener).start()
    controller = asyncio.create_task(quotas.run()) if quotas else None
    print(f"READY {port}", flush=True)
    await stop.wait()
    if controller:
        controller.cancel()
    await kube.stop()
    await runner.cleanup()
    for crash in kube.crashes[:20]:
        print(f"the fake API server crashed while serving: {crash!r}", file=sys.stderr)


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
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="answer every request this much later (0: at once)"
    )
    args = parser.parse_args()
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
