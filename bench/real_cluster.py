"""Benchmark on a real control plane: raw `kubectl apply` baseline, then Tenantry, in one run.

    python bench/real_cluster.py --realk8s /tmp/realk8s --reset /work/shared/tools/realk8s/up.sh \
        --orgs 1000 --workdir /tmp/benchrun [--raw-baseline none] [--py-spy /path/to/py-spy]

`--realk8s DIR` is the state directory of a control plane started by realk8s' up.sh (etcd,
kube-apiserver, kube-controller-manager; no kubelet): `DIR/bin/kubectl`, `DIR/admin.kubeconfig`
(the driver's own requests), `DIR/operator.kubeconfig` (user `tenantry-operator`), `DIR/pids`
(`name pid` per control-plane process) and `DIR/logs/audit*.log` (writes, Metadata level, JSON
lines, rotated at 100 MB). Every figure below comes from the kernel (CPU seconds, RSS), the audit
log (writes) or the driver's own watches (times); the driver never polls with LISTs.

Phases, each timed, in one run:

1. `--reset CMD` (a shell command) before the raw phase and before the operator phase, so each
   starts on a fresh control plane; then the CRDs (`kubectl apply --server-side -k crds`, waited
   Established), `manifests/base/namespace.yaml` and `tenant-roles.yaml`. Without `--reset` the
   raw baseline is refused (the operator would see its objects) and the operator phase runs on
   the cluster as it is (it must hold no Organization named `org-NNNN`). Before the operator
   phase, `manifests/admission/finalizer` as docs/install.md installs it where MutatingAdmissionPolicy
   is served (Kubernetes 1.36; `--finalizer-policy none` leaves it out).
2. Raw baseline (unless `--raw-baseline none`): `tenantry render` of the N Organizations (the
   objects the operator applies), split by Organization into 4 files, 4 x `kubectl apply
   --server-side --force-conflicts -f FILE` at once ($REALK8S/bin/kubectl, admin kubeconfig,
   default client-side validation; discovery and OpenAPI warmed up in `--cache-dir` before the
   clock). Time from the first start to the last exit; CPU seconds of each control-plane process
   (/proc/PID/stat) and of the kubectls (wait4 rusage); audit-log writes per user in the window.
   Then, on a watch of the quotas, until every ResourceQuota is in force (kube-controller-manager
   copied spec.hard into status.hard: what an Organization's Ready waits for), with the
   control plane's CPU until then. Three ratios: all Ready / kubectl's exit, all Ready / every
   raw quota in force (like for like), the operator's last apply / kubectl's exit.
3. Operator onboarding: `python -m tenantry run --kubeconfig operator.kubeconfig --standalone`,
   waited live; the driver watches Organizations and NetworkPolicies `tenantry-default-deny` over
   its own connections, then POSTs the N Organizations over 4 concurrent streams. Time from the
   first POST to all Ready (Ready=True, observedGeneration == generation, seen on the watch).
   Meanwhile every `--probe-every` s a drift probe: the NetworkPolicy `tenantry-default-deny` of
   the `prod` environment of an Organization already Ready is deleted; heal time is from the
   DELETE's answer to the watch's ADDED. Operator CPU and RSS, control-plane CPU, the operator's
   writes by verb/resource/code, and the ratio onboarding / raw.
4. Restart right after onboarding: SIGTERM, a new process at once, its writes in the next
   `--observe` s (the target is 0).
5. Restart after quiet: once the operator made no write for `--quiet` s, the same again.
6. Settled drift probes: `--probes` one at a time, alternately deleted and modified (the
   policyTypes [Ingress, Egress] changed to [Egress] by a merge patch; healed when the watch
   shows them restored).
7. No-op resync: the operator's CPU over one period of `--resync-seconds` at rest (extended by
   up to one more period until `tenantry_reconcile_total` moved by N, i.e. a resync ran), as a
   fraction of the period, and the operator's writes in it (target 0).
8. RSS (peak and current) of each operator process.

Result: `<workdir>/result.json` and a table on stdout; progress on stderr. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import resource
import signal
import ssl
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import audit  # bench/audit.py (this script's directory is on sys.path)
import raw_apply
import yaml
from run import Child, free_port, organization, percentile, ready, reconciles, say

ROOT = Path(__file__).resolve().parent.parent
ORGS = "/apis/tenantry.dev/v1alpha1/organizations"
NETPOLS = "/apis/networking.k8s.io/v1"
DRIFT_NAME = "tenantry-default-deny"
STREAMS = 4
QUOTA_SELECTOR = "labelSelector=app.kubernetes.io%2Fmanaged-by%3Dtenantry"


def now() -> datetime:
    return datetime.now(UTC)


# -- the control plane -------------------------------------------------------------------------
def control_plane_pids(realk8s: Path) -> dict[str, int]:
    pids = {}
    for line in (realk8s / "pids").read_text().splitlines():
        name, _, pid = line.partition(" ")
        if pid.strip().isdigit():
            pids[name] = int(pid)
    return pids


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ControlPlaneCpu:
    """CPU seconds each control-plane process spends between `start()` and `stop()`."""

    def __init__(self, realk8s: Path) -> None:
        self.pids = control_plane_pids(realk8s)
        self.before: dict[str, float] = {}

    def start(self) -> None:
        self.before = {name: cpu_of(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        spent = {name: round(cpu_of(pid) - self.before[name], 2) for name, pid in self.pids.items()}
        spent["total"] = round(sum(spent.values()), 2)
        return spent


def ssl_context(config: dict[str, Any], workdir: Path) -> tuple[str, ssl.SSLContext]:
    """The server and a TLS context with the kubeconfig's client certificate (`*-data` fields,
    as realk8s writes them; files also work)."""
    context_name = config["current-context"]
    ctx = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == ctx["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == ctx["user"])

    def pem(kind: str) -> str:
        if f"{kind}-data" in user:
            path = workdir / f"driver-{kind}.pem"
            path.write_bytes(base64.b64decode(user[f"{kind}-data"]))
            path.chmod(0o600)
            return str(path)
        return str(user[kind])

    if "certificate-authority-data" in cluster:
        tls = ssl.create_default_context(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
        )
    else:
        tls = ssl.create_default_context(cafile=cluster["certificate-authority"])
    tls.load_cert_chain(pem("client-certificate"), pem("client-key"))
    return str(cluster["server"]).rstrip("/"), tls


class Api:
    """The driver's own connection to kube-apiserver (admin's client certificate)."""

    def __init__(self, server: str, tls: ssl.SSLContext) -> None:
        self.server = server
        self.throttled = 0  # 429s answered to the driver
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=tls, limit=32),
            headers={"User-Agent": "tenantry-bench-real"},
            timeout=aiohttp.ClientTimeout(total=60),
        )

    async def call(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, Any]:
        """One request; a 429 (e.g. "storage is (re)initializing" just after a CRD is
        installed, or API priority and fairness) is retried after its Retry-After, as
        client-go does, up to 30 times."""
        data = json.dumps(body) if body is not None else None
        for _ in range(30):
            async with self.session.request(
                method, self.server + path, data=data, headers={"Content-Type": content_type}
            ) as response:
                text = await response.text()
                if response.status != 429:
                    return response.status, (json.loads(text) if text.startswith("{") else text)
                self.throttled += 1
                await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
        return 429, text

    async def watch(self, path: str, query: str, on_event: Callable[[str, dict[str, Any]], None]) -> None:
        """LIST once, then WATCH from its resourceVersion, forever; a watch that ends (the
        server's timeout) resumes from the last version seen, a 410 Gone lists again. Our own
        loop: aiohttp has no informer, and the kubernetes client's Watch is synchronous."""
        version = ""
        while True:
            if not version:
                status, listed = await self.call("GET", f"{path}?{query}")
                if status != 200:
                    raise RuntimeError(f"LIST {path}: {status} {str(listed)[:300]}")
                for item in listed["items"]:
                    on_event("ADDED", item)
                version = listed["metadata"]["resourceVersion"]
            url = f"{self.server}{path}?{query}&watch=1&allowWatchBookmarks=true&resourceVersion={version}"
            timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
            try:
                async with self.session.get(url, timeout=timeout) as response:
                    if response.status == 429:
                        await asyncio.sleep(1)
                        continue
                    if response.status != 200:
                        raise RuntimeError(f"WATCH {path}: {response.status} {(await response.text())[:300]}")
                    async for line in response.content:
                        event = json.loads(line)
                        if event["type"] == "ERROR":
                            version = ""  # 410 Gone: too old, list again
                            break
                        version = event["object"]["metadata"]["resourceVersion"]
                        if event["type"] != "BOOKMARK":
                            on_event(event["type"], event["object"])
            except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
                continue  # a quiet or cut stream: resume from `version`

    async def close(self) -> None:
        await self.session.close()


# -- what the watches see ----------------------------------------------------------------------
@dataclass
class Waiter:
    """A drift probe's wait: first `changed` (our own change seen), then `healed`."""

    changed: Callable[[str, dict[str, Any]], bool]
    healed: Callable[[str, dict[str, Any]], bool]
    seen_change: bool = False
    done: asyncio.Future[float] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


@dataclass
class Cluster:
    ready: dict[str, float] = field(default_factory=dict)  # Organization -> when first seen Ready
    all_ready: asyncio.Event = field(default_factory=asyncio.Event)
    expected: int = 0
    waiters: dict[str, Waiter] = field(default_factory=dict)  # namespace -> its probe

    def on_org(self, kind: str, org: dict[str, Any]) -> None:
        name = org["metadata"]["name"]
        if kind != "DELETED" and ready(org) and name not in self.ready:
            self.ready[name] = time.monotonic()
            if self.expected and len(self.ready) >= self.expected:
                self.all_ready.set()

    def on_netpol(self, kind: str, policy: dict[str, Any]) -> None:
        waiter = self.waiters.get(policy["metadata"].get("namespace", ""))
        if waiter is None or waiter.done.done():
            return
        if not waiter.seen_change:
            waiter.seen_change = waiter.changed(kind, policy)
        elif waiter.healed(kind, policy):
            waiter.done.set_result(time.monotonic())


@dataclass
class QuotasInForce:
    """When every expected ResourceQuota is in force: kube-controller-manager copied its
    spec.hard into status.hard (quota admission enforces status.hard only). What an
    Organization's Ready waits for, so the raw baseline is timed to the same point too."""

    expected: int
    in_force: set[str] = field(default_factory=set)
    at: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def on_quota(self, kind: str, quota: dict[str, Any]) -> None:
        meta = quota["metadata"]
        key = f"{meta.get('namespace')}/{meta['name']}"
        hard = (quota.get("spec") or {}).get("hard")
        if kind != "DELETED" and hard and (quota.get("status") or {}).get("hard") == hard:
            self.in_force.add(key)
        else:
            self.in_force.discard(key)
        if self.at is None and len(self.in_force) >= self.expected:
            self.at = time.monotonic()
            self.done.set()


async def probe(api: Api, cluster: Cluster, org: str, change: str, within: float) -> float:
    """Delete (or modify) `<org>-prod`'s default-deny; seconds from our answer to the heal."""
    namespace = f"{org}-prod"
    path = f"{NETPOLS}/namespaces/{namespace}/networkpolicies/{DRIFT_NAME}"
    if change == "deleted":
        waiter = Waiter(lambda kind, _: kind == "DELETED", lambda kind, _: kind == "ADDED")
        cluster.waiters[namespace] = waiter
        status, body = await api.call("DELETE", path)
    else:
        waiter = Waiter(
            lambda _, p: p["spec"].get("policyTypes") == ["Egress"],
            lambda _, p: p["spec"].get("policyTypes") == ["Ingress", "Egress"],
        )
        cluster.waiters[namespace] = waiter
        patch = {"spec": {"policyTypes": ["Egress"]}}
        status, body = await api.call("PATCH", path, patch, "application/merge-patch+json")
    answered = time.monotonic()
    try:
        if status != 200:
            raise RuntimeError(f"{change} {path}: {status} {str(body)[:300]}")
        healed = await asyncio.wait_for(waiter.done, within)
        return max(0.0, healed - answered)
    finally:
        cluster.waiters.pop(namespace, None)


async def post(api: Api, names: list[str], errors: list[str]) -> None:
    """One stream of POSTs, one Organization after the other."""
    for name in names:
        status, body = await api.call("POST", ORGS, organization(name))
        if status != 201:
            errors.append(f"{name}: {status} {str(body)[:200]}")


def heal_stats(times: list[float], failures: list[str]) -> dict[str, Any]:
    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 1)

    return {
        "count": len(times),
        "p50_ms": ms(percentile(times, 50)),
        "p99_ms": ms(percentile(times, 99)),
        "max_ms": ms(max(times) if times else None),
        "failures": failures,
    }


# -- the driver --------------------------------------------------------------------------------
@dataclass
class Driver:
    args: argparse.Namespace
    realk8s: Path
    workdir: Path
    kubectl: str = ""
    operators: list[Child] = field(default_factory=list)
    operator_ports: dict[str, tuple[int, int]] = field(default_factory=dict)
    onboarding: tuple[datetime, Child | None] = (datetime.min, None)  # its start, py-spy
    stopped_at: datetime = datetime.min  # when the operator stopped last was gone
    onboarding_started: datetime = datetime.min  # the operator phase's start (after its install)
    rss_at_stop: dict[str, float] = field(default_factory=dict)  # MiB, by process name

    def __post_init__(self) -> None:
        self.kubectl = str(self.realk8s / "bin" / "kubectl")
        self.logs = self.realk8s / "logs"
        self.admin = self.realk8s / "admin.kubeconfig"

    def sh(self, *argv: str, timeout: float = 120) -> str:
        done = subprocess.run(
            [self.kubectl, "--kubeconfig", str(self.admin), *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=ROOT,
        )
        if done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(argv)} failed: {done.stderr[:1500]}")
        return done.stdout

    def reset_and_install(self) -> float:
        started = time.monotonic()
        if self.args.reset:
            say(f"reset: {self.args.reset}")
            # REALK8S tells realk8s' up.sh which state directory to (re)start.
            env = {**os.environ, "REALK8S": str(self.realk8s)}
            done = subprocess.run(
                self.args.reset, shell=True, env=env, capture_output=True, text=True, timeout=600, check=False
            )
            with (self.workdir / "reset.log").open("a") as log:
                log.write(done.stdout + done.stderr)
            if done.returncode != 0:
                raise RuntimeError(f"--reset failed ({done.returncode}): {done.stderr[-1500:]}")
        self.sh("apply", "--server-side", "-k", "crds")
        self.sh("wait", "--for=condition=Established", "crd", "--all", "--timeout=120s", timeout=150)
        self.sh(
            "apply",
            "--server-side",
            "-f",
            "manifests/base/namespace.yaml",
            "-f",
            "manifests/base/tenant-roles.yaml",
        )
        return round(time.monotonic() - started, 1)

    def install_finalizer_policy(self) -> bool:
        """manifests/admission/finalizer, as docs/install.md installs it where the API server
        serves MutatingAdmissionPolicy (1.36), unless `--finalizer-policy none`; waited until in
        force (a server-side dry run of an Organization gets the finalizer). True if installed."""
        if self.args.finalizer_policy == "none":
            return False
        served = self.sh("api-resources", "--api-group=admissionregistration.k8s.io", "-o", "name").split()
        if "mutatingadmissionpolicies.admissionregistration.k8s.io" not in served:
            say("finalizer policy: MutatingAdmissionPolicy not served, the operator adds the finalizer")
            return False
        self.sh("apply", "--server-side", "-k", "manifests/admission/finalizer")
        probe = json.dumps(organization("bench-finalizer-probe"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = subprocess.run(
                [
                    self.kubectl,
                    "--kubeconfig",
                    str(self.admin),
                    "create",
                    "--dry-run=server",
                    "-f",
                    "-",
                    "-o",
                    "json",
                ],
                input=probe,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            if done.returncode == 0 and json.loads(done.stdout)["metadata"].get("finalizers"):
                say("finalizer policy: installed and in force")
                return True
            time.sleep(0.5)
        raise RuntimeError("manifests/admission/finalizer installed but not in force after 60 s")

    async def connect(self) -> Api:
        config = yaml.safe_load(self.admin.read_text())
        server, tls = ssl_context(config, self.workdir)
        return Api(server, tls)

    # -- raw baseline ----------------------------------------------------------------------------
    async def raw(self, names: list[str]) -> dict[str, Any]:
        install = self.reset_and_install()
        say(f"raw: rendering {len(names)} Organizations")
        parts = raw_apply.shards(
            raw_apply.render([organization(n) for n in names], self.args.operator_src, self.workdir), STREAMS
        )
        files = []
        for index, part in enumerate(parts):
            file = self.workdir / f"raw-shard-{index}.yaml"
            file.write_text(yaml.dump_all(part, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper)))
            files.append(file)
        cache = ["--cache-dir", str(self.workdir / "kubectl-cache")]
        # Discovery and the OpenAPI documents client-side validation reads, cached before the clock
        # (as on a workstation): a server-side dry run of one shard's first object.
        head = self.workdir / "raw-warmup.yaml"
        head.write_text(yaml.safe_dump(parts[0][0]))
        self.sh(*cache, "apply", "--server-side", "--dry-run=server", "-f", str(head))
        argv = [self.kubectl, "--kubeconfig", str(self.admin), *cache]
        argv += ["apply", "--server-side", "--force-conflicts", "-o", "name"]
        plane = ControlPlaneCpu(self.realk8s)
        quotas = QuotasInForce(sum(1 for part in parts for obj in part if obj["kind"] == "ResourceQuota"))
        api = await self.connect()
        watch = asyncio.create_task(api.watch("/api/v1/resourcequotas", QUOTA_SELECTOR, quotas.on_quota))
        say(f"raw: {sum(map(len, parts))} objects, {len(files)} x kubectl apply --server-side")
        plane.start()
        since = now()
        started = time.monotonic()
        procs = [
            Child.start(f"kubectl-{i}", [*argv, "-f", str(f)], self.workdir / f"raw-kubectl-{i}.log")
            for i, f in enumerate(files)
        ]
        try:
            await self.until(
                "raw kubectl apply", lambda: not any(p.alive() for p in procs), self.args.timeout, 0.05
            )
        finally:
            for proc in procs:
                proc.kill_now()
        seconds = time.monotonic() - started
        cpu = plane.stop()
        if any(p.exit_code for p in procs):
            codes = [p.exit_code for p in procs]
            raise RuntimeError(f"kubectl apply exited with {codes}; see {self.workdir}/raw-kubectl-*.log")
        say(f"raw: applied after {seconds:.1f}s; waiting for the {quotas.expected} quotas to be in force")
        try:
            await asyncio.wait_for(quotas.done.wait(), self.args.timeout)
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watch
            await api.close()
        assert quotas.at is not None
        in_force = quotas.at - started
        cpu_in_force = plane.stop()
        await asyncio.sleep(2)  # the audit log is written after the answer
        return {
            "in_force_seconds": round(in_force, 2),
            "control_plane_cpu_seconds_until_in_force": cpu_in_force,
            "reset_and_install_seconds": install,
            "objects": sum(map(len, parts)),
            "kubectls": len(files),
            "seconds": round(seconds, 2),
            "objects_per_second": round(sum(map(len, parts)) / seconds, 1),
            "kubectl_cpu_seconds": round(sum(p.cpu_seconds() for p in procs), 2),
            "control_plane_cpu_seconds": cpu,
            "writes": audit.count(self.logs, since, now()),
        }

    # -- the operator ----------------------------------------------------------------------------
    def start_operator(self) -> Child:
        index = len(self.operators) + 1
        live, metrics = free_port(), free_port()
        argv = [
            *(sys.executable, "-m", "tenantry", "run", "--standalone"),
            *("--kubeconfig", str(self.realk8s / "operator.kubeconfig")),
            *("--liveness", f"http://127.0.0.1:{live}/healthz", "--metrics-port", str(metrics)),
            *("--resync-seconds", str(self.args.resync_seconds), "--log-level", self.args.log_level),
            *("--log-format", "json"),
        ]
        env = {**os.environ, "PYTHONPATH": str(self.args.operator_src)}
        child = Child.start(f"operator-{index}", argv, self.workdir / f"operator-{index}.log", env=env)
        self.operators.append(child)
        self.operator_ports[child.name] = (live, metrics)
        return child

    async def wait_live(self, child: Child, api: Api, within: float = 120) -> float:
        live = self.operator_ports[child.name][0]

        async def answers() -> bool:
            if not child.alive():
                raise RuntimeError(f"{child.name} exited with {child.exit_code}; see its log")
            with contextlib.suppress(aiohttp.ClientError):
                async with api.session.get(f"http://127.0.0.1:{live}/healthz") as response:
                    return response.status == 200
            return False

        return await self.until_async(f"{child.name} live", answers, within, 0.05)

    async def metrics(self, child: Child, api: Api) -> dict[str, float]:
        port = self.operator_ports[child.name][1]
        async with api.session.get(f"http://127.0.0.1:{port}/metrics") as response:
            text = await response.text()
        sums: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#") and "_created" not in line and "_bucket" not in line:
                name, _, value = line.rpartition(" ")
                metric = name.split("{")[0]
                if 'result="' in name:
                    metric += "." + name.split('result="')[1].split('"')[0]
                sums[metric] = sums.get(metric, 0.0) + float(value)
        return sums

    async def until(self, what: str, check: Callable[[], bool], within: float, interval: float) -> float:
        async def wrapped() -> bool:
            return check()

        return await self.until_async(what, wrapped, within, interval)

    async def until_async(
        self, what: str, check: Callable[[], Awaitable[bool]], within: float, interval: float
    ) -> float:
        started = time.monotonic()
        while not await check():
            if time.monotonic() - started > within * self.args.timeout_scale:
                raise TimeoutError(f"{what}: not reached in {within * self.args.timeout_scale:.0f}s")
            await asyncio.sleep(interval)
        return time.monotonic() - started

    async def restart(self, api: Api, label: str) -> dict[str, Any]:
        """SIGTERM the operator, start a new one at once, count its writes for --observe s."""
        old = self.operators[-1]
        say(f"{label}: SIGTERM {old.name}")
        stop_seconds = await self.stop_operator(old)
        self.stopped_at = now()
        child = self.start_operator()
        since = now()
        live = await self.wait_live(child, api)
        await asyncio.sleep(max(0.0, self.args.observe - (now() - since).total_seconds()))
        await asyncio.sleep(2)
        end = now()  # one window for every count below
        writes = audit.count(self.logs, since, end, audit.OPERATOR_USER)
        # Usage refreshes the old process held back (due 30 s after its last status write of
        # the Organization): the new one makes them on the same schedule, as the old would have.
        timeline = audit.status_timeline(self.logs, self.onboarding_started, end)
        held = timeline.held_back(self.stopped_at)
        statuses = audit.status_writes_of(self.logs, since, end)
        held_writes = sum(n for org, n in statuses.items() if org in held)
        # Usage refreshes after a quota status changed meanwhile (kube-controller-manager's
        # recount every 5 minutes, a pod started): made with or without the restart.
        refreshes = timeline.usage_refreshes(since)
        moved_writes = sum(n for org, n in refreshes.items() if org not in held)
        say(
            f"{label}: {writes['total']} writes by {audit.OPERATOR_USER} in {self.args.observe:.0f}s, "
            f"{held_writes} of them usage refreshes the old process held back ({len(held)} held), "
            f"{moved_writes} after quota changes in the window"
        )
        return {
            "held_back_by_old_process": len(held),
            "operator_writes_held_back": held_writes,
            "operator_writes_after_quota_changes": moved_writes,
            "operator_writes_otherwise": writes["total"] - held_writes - moved_writes,
            "old_process_exit_seconds": round(stop_seconds, 2),
            "old_process": self.usage(old),
            "live_after_seconds": round(live, 2),
            "observed_seconds": self.args.observe,
            "operator_writes": writes["total"],
            "operator_writes_by_kind": writes["by_user"].get(audit.OPERATOR_USER, {}),
        }

    async def stop_operator(self, child: Child) -> float:
        """SIGTERM (SIGKILL after 30 s); its RSS just before is kept (wait4 only has the peak)."""
        if child.alive():
            with contextlib.suppress(OSError, KeyError):
                self.rss_at_stop[child.name] = child.memory_mb()["now"]
        return await child.stop()

    def usage(self, child: Child) -> dict[str, Any]:
        """CPU seconds, peak RSS and current RSS (or RSS when it was stopped), MiB."""
        memory = child.memory_mb()
        if "now" not in memory and child.name in self.rss_at_stop:
            memory["at_stop"] = self.rss_at_stop[child.name]
        return {
            "cpu_seconds": round(child.cpu_seconds(), 2),
            **{f"rss_{k}_mib": round(v, 1) for k, v in memory.items()},
        }

    async def quiet(self, seconds: float, within: float) -> float:
        """Until the operator made no write for `seconds` (its writes read from the audit log)."""
        tail = audit.Tail(self.logs, audit.OPERATOR_USER)
        started = now()

        def still() -> bool:
            last = tail.poll() or started
            return (now() - last).total_seconds() >= seconds

        return await self.until("operator quiet", still, within, 1.0)

    async def drift_while_onboarding(
        self, api: Api, cluster: Cluster, heals: list[float], failures: list[str]
    ) -> None:
        """Every --probe-every s, delete the default-deny of an Organization already Ready."""
        probed: set[str] = set()
        while True:
            await asyncio.sleep(self.args.probe_every)
            candidates = [n for n in cluster.ready if n not in probed]
            if not candidates:
                continue
            org = random.choice(candidates)
            probed.add(org)
            try:
                heals.append(await probe(api, cluster, org, "deleted", self.args.probe_timeout))
            except (TimeoutError, RuntimeError) as error:
                failures.append(f"{org}: {type(error).__name__} {error}")

    def start_py_spy(self, child: Child) -> Child | None:
        if not self.args.py_spy:
            return None
        argv = [self.args.py_spy, "record", "-r", "20", "-f", "raw", "--nonblocking"]
        argv += ["-o", str(self.workdir / "py-spy-onboarding.txt"), "--pid", str(child.pid)]
        return Child.start("py-spy", argv, self.workdir / "py-spy.log")

    async def onboard(self, api: Api, cluster: Cluster, names: list[str]) -> dict[str, Any]:
        child = self.operators[-1]
        plane = ControlPlaneCpu(self.realk8s)
        spy = self.start_py_spy(child)
        cluster.expected = len(names)
        errors: list[str] = []
        heals: list[float] = []
        failures: list[str] = []
        say(f"onboarding: POSTing {len(names)} Organizations over {STREAMS} streams")
        plane.start()
        cpu_before = child.cpu_seconds()
        since = now()
        started = time.monotonic()
        prober = asyncio.create_task(self.drift_while_onboarding(api, cluster, heals, failures))
        try:
            await asyncio.gather(*(post(api, names[i::STREAMS], errors) for i in range(STREAMS)))
            posted = time.monotonic() - started
            if errors:
                raise RuntimeError(f"{len(errors)} POSTs failed, e.g. {errors[:3]}")
            say(f"onboarding: all POSTed after {posted:.1f}s, waiting for Ready")
            progress = asyncio.create_task(self.report_progress(cluster))
            try:
                await asyncio.wait_for(cluster.all_ready.wait(), self.args.timeout * self.args.timeout_scale)
            except TimeoutError:
                missing = sorted(set(names) - set(cluster.ready))
                raise TimeoutError(f"{len(missing)} Organizations not Ready, e.g. {missing[:5]}") from None
            finally:
                progress.cancel()
            seconds = time.monotonic() - started
        finally:
            prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await prober
        cpu = child.cpu_seconds() - cpu_before
        plane_cpu = plane.stop()
        if spy is not None:
            spy.popen.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT, then exits
        memory = child.memory_mb()
        metrics = await self.metrics(child, api)
        say(f"onboarding: all {len(names)} Ready after {seconds:.1f}s")
        # The restart comes at once: the writes are counted after it (finish_onboarding).
        self.onboarding = (since, spy)
        return {
            "seconds": round(seconds, 2),
            "posts_seconds": round(posted, 2),
            "operator_cpu_seconds": round(cpu, 2),
            "operator_rss_peak_mib": round(memory["peak"], 1),
            "operator_rss_now_mib": round(memory.get("now", 0.0), 1),
            "control_plane_cpu_seconds": plane_cpu,
            "reconciles": reconciles(metrics),
            "drift_heal_during_onboarding": heal_stats(heals, failures),
            "py_spy": str(self.workdir / "py-spy-onboarding.txt") if spy else None,
        }

    async def finish_onboarding(self, onboarding: dict[str, Any], n: int) -> None:
        """Writes from the first POST until the onboarding process exited; py-spy's end."""
        since, spy = self.onboarding
        if spy is not None:
            with contextlib.suppress(TimeoutError):
                await self.until("py-spy written", lambda: not spy.alive(), 60, 0.2)
            await spy.stop()
        writes = audit.count(self.logs, since, self.stopped_at)
        mine = writes["by_user"].get(audit.OPERATOR_USER, {})
        applied = audit.last_apply(self.logs, since, self.stopped_at, besides=DRIFT_NAME)
        onboarding.update(
            {
                "applied_seconds": round((applied - since).total_seconds(), 2) if applied else None,
                "operator_writes": sum(mine.values()),
                "operator_writes_per_org": round(sum(mine.values()) / n, 2),
                "operator_writes_by_kind": mine,
                "writes_by_user": writes["by_user_total"],
            }
        )

    async def report_progress(self, cluster: Cluster) -> None:
        while True:
            await asyncio.sleep(10)
            say(f"onboarding: {len(cluster.ready)}/{cluster.expected} Ready")

    async def settled_probes(self, api: Api, cluster: Cluster, names: list[str]) -> dict[str, Any]:
        heals: dict[str, list[float]] = {"deleted": [], "modified": []}
        failures: list[str] = []
        for index, org in enumerate(random.sample(names, min(self.args.probes, len(names)))):
            change = "deleted" if index % 2 == 0 else "modified"
            try:
                heals[change].append(await probe(api, cluster, org, change, self.args.probe_timeout))
            except (TimeoutError, RuntimeError) as error:
                failures.append(f"{org} {change}: {type(error).__name__} {error}")
            await asyncio.sleep(0.5)
        return {
            "all": heal_stats(heals["deleted"] + heals["modified"], failures),
            "deleted": heal_stats(heals["deleted"], []),
            "modified": heal_stats(heals["modified"], []),
        }

    async def noop_resync(self, api: Api, n: int) -> dict[str, Any]:
        """Operator CPU over one resync period at rest; extended until a resync of all N ran."""
        child = self.operators[-1]
        period = self.args.resync_seconds
        before = reconciles(await self.metrics(child, api))
        cpu_before = child.cpu_seconds()
        since = now()
        started = time.monotonic()
        await asyncio.sleep(period)

        async def resynced() -> bool:
            moved = reconciles(await self.metrics(child, api)) - before
            return moved >= n or time.monotonic() - started >= 2 * period

        await self.until_async("resync", resynced, 2 * period, 1.0)
        seconds = time.monotonic() - started
        cpu = child.cpu_seconds() - cpu_before
        moved = reconciles(await self.metrics(child, api)) - before
        await asyncio.sleep(2)
        end = now()
        writes = audit.count(self.logs, since, end, audit.OPERATOR_USER)
        refreshes = audit.status_timeline(self.logs, self.onboarding_started, end).usage_refreshes(since)
        return {
            "operator_writes_after_quota_changes": sum(refreshes.values()),
            "resync_seconds": period,
            "window_seconds": round(seconds, 1),
            "operator_cpu_seconds": round(cpu, 2),
            "cpu_fraction_of_period": round(cpu / seconds, 4),
            "reconciles_in_window": moved,
            "resync_observed": moved >= n,
            "operator_writes": writes["total"],
            "operator_writes_by_kind": writes["by_user"].get(audit.OPERATOR_USER, {}),
        }

    async def operator_phase(self, names: list[str], result: dict[str, Any]) -> None:
        # With --reset a fresh control plane; without, the CRDs and roles applied (idempotent).
        result["operator_install_seconds"] = self.reset_and_install()
        result["finalizer_policy"] = self.install_finalizer_policy()
        self.onboarding_started = now()
        api = await self.connect()
        cluster = Cluster()
        watches = [
            asyncio.create_task(api.watch(ORGS, "limit=0", cluster.on_org)),
            asyncio.create_task(
                api.watch(
                    f"{NETPOLS}/networkpolicies",
                    f"fieldSelector=metadata.name%3D{DRIFT_NAME}",
                    cluster.on_netpol,
                )
            ),
        ]
        try:
            status, listed = await api.call("GET", f"{ORGS}?limit=1")
            if status != 200:
                raise RuntimeError(f"cannot list Organizations: {status} {str(listed)[:300]}")
            if listed["items"]:
                raise RuntimeError("the cluster already holds Organizations: use --reset or a fresh one")
            child = self.start_operator()
            say(f"operator: started {child.name} (pid {child.pid})")
            result["operator_start_to_live_seconds"] = round(await self.wait_live(child, api), 2)
            await self.guard(watches, self.onboard(api, cluster, names), result, "onboarding")
            await self.guard(
                watches, self.restart(api, "restart right after onboarding"), result, "restart_now"
            )
            await self.finish_onboarding(result["onboarding"], len(names))
            say(f"waiting until the operator made no write for {self.args.quiet:.0f}s")
            result["quiet_after_seconds"] = round(await self.quiet(self.args.quiet, self.args.timeout), 1)
            await self.guard(watches, self.restart(api, "restart after quiet"), result, "restart_after_quiet")
            say(f"settled drift probes: {self.args.probes}")
            await self.guard(watches, self.settled_probes(api, cluster, names), result, "drift_settled")
            say(f"no-op resync: {self.args.resync_seconds:.0f}s at rest")
            await self.guard(watches, self.noop_resync(api, len(names)), result, "noop_resync")
        finally:
            for task in watches:
                task.cancel()
            await asyncio.gather(*watches, return_exceptions=True)
            result["driver_requests_throttled"] = api.throttled
            await api.close()
            for child in self.operators:
                await self.stop_operator(child)
            result["operators"] = {child.name: self.usage(child) for child in self.operators}

    async def guard(
        self,
        watches: list[asyncio.Task[None]],
        phase: Awaitable[dict[str, Any]],
        result: dict[str, Any],
        key: str,
    ) -> None:
        """Run a phase; a watch that failed fails it (else its waits would only time out)."""
        task = asyncio.ensure_future(phase)
        done, _ = await asyncio.wait([task, *watches], return_when=asyncio.FIRST_COMPLETED)
        if task not in done:
            task.cancel()
            failed = next(w for w in watches if w in done)
            raise RuntimeError(f"a watch ended: {failed.exception()!r}")
        result[key] = task.result()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(args.workdir)
    driver = Driver(args, Path(args.realk8s), workdir)
    names = [f"org-{i:04d}" for i in range(args.orgs)]
    result: dict[str, Any] = {"orgs": args.orgs, "environments_per_org": 3, "started": now().isoformat()}
    try:
        if args.raw_baseline == "kubectl":
            result["raw"] = await driver.raw(names)
            say(f"raw: {result['raw']['seconds']}s")
        await driver.operator_phase(names, result)
    except Exception as error:  # what was measured before the failure is still worth writing
        traceback.print_exc()
        result["error"] = f"{type(error).__name__}: {error}"
    finally:
        for child in driver.operators:
            child.kill_now()
    if "raw" in result and "onboarding" in result:
        raw, onboarding = result["raw"], result["onboarding"]
        # Ready (every object applied and every quota in force) against kubectl's exit (applied
        # only), as the issue states it; against the same point of the raw baseline (its quotas
        # in force); and applied against applied.
        result["ratio_onboarding_to_raw"] = round(onboarding["seconds"] / raw["seconds"], 3)
        result["ratio_ready_to_raw_in_force"] = round(onboarding["seconds"] / raw["in_force_seconds"], 3)
        if onboarding.get("applied_seconds"):
            result["ratio_applied_to_raw_applied"] = round(onboarding["applied_seconds"] / raw["seconds"], 3)
    return result


def table(result: dict[str, Any]) -> str:
    rows: list[tuple[str, Any]] = [("Organizations (x3 environments)", result["orgs"])]
    raw = result.get("raw")
    if raw:
        rows += [
            ("raw: objects", raw["objects"]),
            ("raw: 4 x kubectl apply --server-side (s)", raw["seconds"]),
            ("raw: kubectl CPU (s)", raw["kubectl_cpu_seconds"]),
            ("raw: control-plane CPU (s)", raw["control_plane_cpu_seconds"]),
            ("raw: every quota in force after (s)", raw["in_force_seconds"]),
            ("raw: control-plane CPU until then (s)", raw["control_plane_cpu_seconds_until_in_force"]),
            ("raw: writes", raw["writes"]["total"]),
        ]
    onb = result.get("onboarding", {})
    if onb:
        heal = onb["drift_heal_during_onboarding"]
        rows += [
            ("onboarding: first POST to all Ready (s)", onb["seconds"]),
            ("onboarding: first POST to the last apply (s)", onb.get("applied_seconds")),
            ("onboarding: operator CPU (s)", onb["operator_cpu_seconds"]),
            ("onboarding: operator RSS peak (MiB)", onb["operator_rss_peak_mib"]),
            ("onboarding: control-plane CPU (s)", onb["control_plane_cpu_seconds"]),
            (
                "onboarding: operator writes (per Org)",
                f"{onb.get('operator_writes')} ({onb.get('operator_writes_per_org')})",
            ),
            ("onboarding: by kind", onb.get("operator_writes_by_kind")),
            ("heal during onboarding p50/p99/max ms (n)", _heal(heal)),
        ]
    for key, label in (
        ("restart_now", "restart right after onboarding"),
        ("restart_after_quiet", "restart after quiet"),
    ):
        if key in result:
            phase = result[key]
            rows.append((f"{label}: writes in {phase['observed_seconds']:.0f}s", phase["operator_writes"]))
            rows.append(
                (
                    f"{label}: of them held back by the old process",
                    f"{phase['operator_writes_held_back']} (it held {phase['held_back_by_old_process']})",
                )
            )
            rows.append(
                (
                    f"{label}: of them after quota changes in the window",
                    phase["operator_writes_after_quota_changes"],
                )
            )
            rows.append((f"{label}: of them otherwise (the restart's)", phase["operator_writes_otherwise"]))
            if phase["operator_writes"]:
                rows.append((f"{label}: by kind", phase["operator_writes_by_kind"]))
    if "drift_settled" in result:
        rows.append(("settled drift heal p50/p99/max ms (n)", _heal(result["drift_settled"]["all"])))
    if "noop_resync" in result:
        resync = result["noop_resync"]
        rows += [
            (
                f"no-op resync: CPU / period ({resync['window_seconds']:.0f}s)",
                f"{resync['cpu_fraction_of_period']:.2%} (resync seen: {resync['resync_observed']})",
            ),
            (
                "no-op resync: operator writes (after quota changes)",
                f"{resync['operator_writes']} ({resync.get('operator_writes_after_quota_changes')})",
            ),
        ]
    for name, usage in result.get("operators", {}).items():
        rows.append((f"{name}: CPU s, RSS peak/at stop MiB", _usage(usage)))
    width = max(len(label) for label, _ in rows)
    lines = [f"{label:<{width}}  {value}" for label, value in rows]
    if "ratio_onboarding_to_raw" in result:
        lines += ["", f"*** onboarding / raw baseline = {result['ratio_onboarding_to_raw']:.2f} ***"]
        lines += [f"*** all Ready / raw quotas in force = {result['ratio_ready_to_raw_in_force']:.2f} ***"]
        if "ratio_applied_to_raw_applied" in result:
            lines += [f"*** all applied / raw applied = {result['ratio_applied_to_raw_applied']:.2f} ***"]
    return "\n".join(lines)


def _heal(stats: dict[str, Any]) -> str:
    text = f"{stats['p50_ms']}/{stats['p99_ms']}/{stats['max_ms']} ({stats['count']})"
    return text + (f", {len(stats['failures'])} failed" if stats["failures"] else "")


def _usage(usage: dict[str, Any]) -> str:
    current = usage.get("rss_now_mib", usage.get("rss_at_stop_mib", "-"))
    return f"{usage['cpu_seconds']}, {usage.get('rss_peak_mib')}/{current}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realk8s", required=True, help="the control plane's state directory")
    parser.add_argument("--reset", help="shell command giving a fresh control plane (before each phase)")
    parser.add_argument("--orgs", type=int, default=100)
    parser.add_argument("--raw-baseline", choices=["kubectl", "none"], default="kubectl")
    parser.add_argument(
        "--finalizer-policy",
        choices=["auto", "none"],
        default="auto",
        help="install manifests/admission/finalizer before the operator phase where served (auto)",
    )
    parser.add_argument("--workdir", default="/tmp/tenantry-bench-real")
    parser.add_argument("--operator-src", type=Path, default=ROOT / "operator", help="holds `tenantry/`")
    parser.add_argument("--observe", type=float, default=60.0, help="seconds of writes counted per restart")
    parser.add_argument("--quiet", type=float, default=30.0, help="no write for this long before restart 2")
    parser.add_argument("--resync-seconds", type=float, default=120.0, help="the operator's resync period")
    parser.add_argument("--probes", type=int, default=20, help="settled drift probes")
    parser.add_argument(
        "--probe-every", type=float, default=2.0, help="drift probe interval while onboarding"
    )
    parser.add_argument("--probe-timeout", type=float, default=30.0, help="one probe's heal bound (s)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="bound of onboarding and of quiet (s)")
    parser.add_argument("--timeout-scale", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--log-level", default="WARNING", help="the operator's log level")
    parser.add_argument("--py-spy", help="py-spy binary: record the operator during onboarding")
    parser.add_argument("--output", help="the JSON result (default: <workdir>/result.json)")
    args = parser.parse_args()
    if args.raw_baseline != "none" and not args.reset:
        parser.error(
            "the raw baseline needs --reset: its objects would stay on the cluster and the operator "
            "phase would find them (give --reset CMD, or --raw-baseline none)"
        )
    if args.orgs < 1:
        parser.error("--orgs must be at least 1")
    realk8s = Path(args.realk8s)
    for needed in ("bin/kubectl", "admin.kubeconfig", "operator.kubeconfig"):
        if not args.reset and not (realk8s / needed).exists():
            parser.error(f"--realk8s: {realk8s / needed} missing (is the control plane up?)")
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up on `kill`
    result = asyncio.run(run(args))
    result["driver_cpu_seconds"] = round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 2)
    output = Path(args.output or Path(args.workdir) / "result.json")
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"\nJSON: {output}")
    if "error" in result:
        print(f"\nFAILED: {result['error']}")
        sys.exit(1)


if __name__ == "__main__":
    main()
