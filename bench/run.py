"""Benchmark: one Tenantry replica carrying N Organizations, then a restart with drift during it.

    python bench/run.py --orgs 100 [--mode standalone|leader] [--operator-src DIR] [--workdir DIR]

Three processes, all on 127.0.0.1: the fake API server (`bench/fake_apiserver.py`), the
operator (`python -m tenantry run`, with `--standalone`, or with leader election on the Lease
`tenantry-system/tenantry` as `manifests/base/deployment.yaml` runs it), and this driver. The driver

1. starts the fake API server and the operator, and waits for the operator's liveness;
2. creates N Organizations (3 environments, 3 members, 1 egress rule each) and waits until
   all are Ready (condition Ready=True, observedGeneration == generation), then until the
   operator has made no request for a few seconds;
3. stops the operator (SIGTERM) and starts a new one; while it resumes, changes four of the
   managed NetworkPolicies behind its back (deleted at its first LIST; deleted and modified
   when it answers its liveness probe; deleted once it watches NetworkPolicies) and measures
   how long each takes to be re-applied;
4. waits until the resume is done, at least `--observe` seconds have passed since the restart
   and the operator is quiet, then counts every request the new operator made;
5. measures the CPU of one no-op resync of all N (the new process runs with `--resync-seconds
   R`, 90 by default, so its first resync comes after the observation);
6. drift probes once settled: `--probes` NetworkPolicies deleted or modified one at a time,
   heal time p50/p99;
7. the same probes while the fake's quota controller churns `status.used` (`--churn-count`
   quotas every `--churn-every` s), with the operator's CPU and writes meanwhile.

Before all that, `--raw-baseline kubectl` (the default) times 4 parallel `kubectl apply
--server-side` of the same rendered objects against a fake API server of its own
(bench/raw_apply.py). The fake API server runs its quota controller (every ResourceQuota gets
`status.hard`/`status.used`, see bench/fake_apiserver.py) unless `--no-quota-controller`.

Requests are counted by the fake API server (the driver's own requests are not counted);
CPU time and peak RSS come from the kernel (wait4 rusage of each operator process). The
result is `<workdir>/result.json` and a table on stdout. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import hashlib
import json
import math
import os
import platform
import random
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aiohttp
import raw_apply  # bench/raw_apply.py (this script's directory is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
AGENT = "tenantry-bench"  # the fake API server does not count requests with this User-Agent
ORGS = "/apis/tenantry.dev/v1alpha1/organizations"
ENVIRONMENTS = ["prod", "staging", "dev"]
DRIFT_NAME = "tenantry-default-deny"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/tenantry-system/leases"


def say(what: str) -> None:
    """Progress on stderr (the table and the JSON come at the end)."""
    print(f"{time.strftime('%H:%M:%S')} {what}", file=sys.stderr, flush=True)


# -- child processes ---------------------------------------------------------------------------
def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the driver dies, even by SIGKILL."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Child:
    """A child process reaped with wait4, so its CPU time and peak RSS are exact at exit."""

    name: str
    popen: subprocess.Popen[bytes]
    exit_code: int | None = None
    usage: resource.struct_rusage | None = None
    killed: bool = False

    @classmethod
    def start(
        cls,
        name: str,
        argv: list[str],
        log: Path,
        stdout: int | None = None,
        env: dict[str, str] | None = None,
    ) -> Child:
        with log.open("ab") as handle:
            popen = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdout=stdout if stdout is not None else handle,
                stderr=handle,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, no locks taken
            )
        return cls(name, popen)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        if self.exit_code is not None:
            return False
        pid, status, usage = os.wait4(self.pid, os.WNOHANG)
        if pid == 0:
            return True
        self.exit_code, self.usage = os.waitstatus_to_exitcode(status), usage
        self.popen.returncode = self.exit_code
        return False

    async def stop(self, grace: float = 30.0) -> float:
        """SIGTERM, then SIGKILL after `grace` seconds; returns how long it took to exit."""
        started = time.monotonic()
        if self.alive():
            self.popen.terminate()
        while self.alive():
            if not self.killed and time.monotonic() - started > grace:
                self.popen.kill()
                self.killed = True
            await asyncio.sleep(0.05)
        return time.monotonic() - started

    def kill_now(self) -> None:
        if self.alive():
            self.popen.kill()
            _, status, usage = os.wait4(self.pid, 0)
            self.exit_code, self.usage = os.waitstatus_to_exitcode(status), usage
            self.popen.returncode = self.exit_code

    def cpu_seconds(self) -> float:
        """User + system CPU seconds so far (all threads)."""
        if self.usage is not None:
            return self.usage.ru_utime + self.usage.ru_stime
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_mb(self) -> dict[str, float]:
        """Peak (VmHWM) and current (VmRSS) resident memory, in MiB."""
        if self.usage is not None:
            return {"peak": self.usage.ru_maxrss / 1024}
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{self.pid}/status").read_text().splitlines()
        )
        return {"peak": int(status["VmHWM"].split()[0]) / 1024, "now": int(status["VmRSS"].split()[0]) / 1024}


async def sample_rss(child: Child, series: list[tuple[float, float]], every: float = 1.0) -> None:
    """RSS over time (seconds since the start of sampling, MiB), until the process exits."""
    started = time.monotonic()
    while child.alive():
        with contextlib.suppress(OSError, KeyError):
            series.append((round(time.monotonic() - started, 1), round(child.memory_mb()["now"], 1)))
        await asyncio.sleep(every)


def cpu_ticks() -> dict[int, tuple[int, str]]:
    """CPU ticks (user + system) and command line of every process."""
    ticks: dict[int, tuple[int, str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rpartition(")")[2].split()
            cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
            ticks[int(stat.parent.name)] = (int(fields[11]) + int(fields[12]), cmd)
    return ticks


async def watch_contention(mine: list[Child], seen: dict[str, int], every: float = 2.0) -> None:
    """Other busy processes (e.g. a second benchmark) skew every timing: record them."""
    before = cpu_ticks()
    while True:
        await asyncio.sleep(every)
        now, own = cpu_ticks(), {os.getpid(), *(child.pid for child in mine)}
        for pid, (ticks, cmd) in now.items():
            busy = (ticks - before.get(pid, (ticks, ""))[0]) / os.sysconf("SC_CLK_TCK") / every
            ours = cmd.startswith(raw_apply.KUBECTL)  # the raw baseline's own kubectl processes
            if pid not in own and not ours and busy > 0.2:  # more than a fifth of a core
                seen[cmd] = seen.get(cmd, 0) + 1
        before = now


# -- talking to the fake API server and the operator -------------------------------------------
@dataclass
class Bench:
    args: argparse.Namespace
    session: aiohttp.ClientSession
    api: str = ""
    workdir: Path = Path()
    kubeconfig: Path = Path()
    children: list[Child] = field(default_factory=list)
    window_name: str = "startup"
    rss: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    samplers: list[asyncio.Task[None]] = field(default_factory=list)
    second: Any = None  # (process 2, its metrics port, when it was started)

    async def call(self, method: str, url: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.request(method, url, json=body) as response:
            text = await response.text()
            return response.status, (json.loads(text) if text.strip().startswith("{") else text)

    async def counters(self, window: str | None = None) -> dict[str, Any]:
        query = f"?window={window}" if window else ""
        _, data = await self.call("GET", f"{self.api}/_bench/counters{query}")
        return dict(data)

    async def window(self, name: str) -> None:
        await self.call("POST", f"{self.api}/_bench/window?name={name}")
        self.window_name = name

    def start_operator(self, index: int, extra: list[str] | None = None) -> tuple[Child, int, int]:
        live, metrics = free_port(), free_port()
        argv = [
            *(sys.executable, "-m", "tenantry", "run", "--kubeconfig", str(self.kubeconfig)),
            *(["--standalone"] if self.args.mode == "standalone" else []),
            *("--metrics-port", str(metrics), "--liveness", f"http://127.0.0.1:{live}/healthz"),
            *("--log-level", self.args.log_level, "--log-format", "json"),
            *(extra or []),
        ]
        # The operator's source is imported from --operator-src (a snapshot keeps runs comparable).
        env = {**os.environ, "PYTHONPATH": str(self.args.operator_src)}
        log = self.workdir / f"operator-{index}.log"
        child = Child.start(f"operator-{index}", argv, log, env=env)
        self.children.append(child)
        series = self.rss.setdefault(child.name, [])
        self.samplers.append(asyncio.create_task(sample_rss(child, series)))
        return child, live, metrics

    async def wait_live(self, child: Child, port: int, within: float = 120) -> float:
        """Seconds until the liveness endpoint answers 200 (Kopf serves it after start-up)."""
        started = time.monotonic()
        while time.monotonic() - started < within:
            if not child.alive():
                raise RuntimeError(f"{child.name} exited with {child.exit_code}; see its log")
            with contextlib.suppress(aiohttp.ClientError):
                if (await self.call("GET", f"http://127.0.0.1:{port}/healthz"))[0] == 200:
                    return time.monotonic() - started
            await asyncio.sleep(0.02)
        raise TimeoutError(f"{child.name} did not answer its liveness probe in {within}s")

    async def metrics(self, port: int) -> dict[str, float]:
        """The operator's Prometheus metrics, summed per metric name (labels dropped)."""
        _, text = await self.call("GET", f"http://127.0.0.1:{port}/metrics")
        sums: dict[str, float] = {}
        for line in str(text).splitlines():
            if line and not line.startswith("#") and "_created" not in line and "_bucket" not in line:
                name, _, value = line.rpartition(" ")
                key = name.split("{")[0]
                if 'result="' in name:
                    key += "." + name.split('result="')[1].split('"')[0]
                sums[key] = sums.get(key, 0.0) + float(value)
        return sums

    async def until(
        self, what: str, check: Callable[[], Awaitable[bool]], within: float, interval: float
    ) -> float:
        started = time.monotonic()
        while not await check():
            if time.monotonic() - started > within:
                raise TimeoutError(f"{what}: not reached in {within:.0f}s")
            await asyncio.sleep(interval)
        return time.monotonic() - started

    async def quiet(self, seconds: float, within: float) -> float:
        """Wait until the operator has made no request for `seconds`."""

        async def check() -> bool:
            data = await self.counters(self.window_name)
            last = data["windows"].get(self.window_name, {}).get("last_object_request_at")
            return last is None or data["now"] - last >= seconds

        return await self.until("operator quiet", check, within, 0.5)


# Pods pooled over the three environments of every Organization (`--pool`; 0: no pool).
POOL = {"pods": 0}


def organization(name: str) -> dict[str, Any]:
    pool = {"quotaPool": {"total": {"pods": str(POOL["pods"])}}} if POOL["pods"] else {}
    return {
        "apiVersion": "tenantry.dev/v1alpha1",
        "kind": "Organization",
        "metadata": {"name": name},
        "spec": {
            "displayName": f"Bench {name}",
            "environments": ENVIRONMENTS,
            "members": {
                "admins": [{"kind": "Group", "name": f"{name}-admins"}],
                "developers": [{"kind": "Group", "name": f"{name}-devs"}],
                "viewers": [{"kind": "User", "name": f"auditor@{name}.example"}],
            },
            "network": {
                "egress": [
                    {
                        "cidr": "10.20.0.0/16",
                        "ports": [{"port": 5432, "protocol": "TCP"}],
                        "reason": "managed Postgres",
                    }
                ]
            },
            **pool,
        },
    }


def ready(org: dict[str, Any]) -> bool:
    generation = org["metadata"].get("generation")
    return any(
        c.get("type") == "Ready" and c.get("status") == "True" and c.get("observedGeneration") == generation
        for c in (org.get("status") or {}).get("conditions", [])
    )


def per_org(window: dict[str, Any], n: int) -> dict[str, Any]:
    return {
        "reads": window["reads"],
        "writes": window["writes"],
        "reads_per_org": round(window["reads"] / n, 2),
        "writes_per_org": round(window["writes"] / n, 2),
        "by_verb": window["by_verb"],
        "by_client": window["by_client"],
        "by_resource": window["by_resource"],
        "error_responses": window["errors"],
    }


def log_summary(path: Path) -> dict[str, Any]:
    levels: dict[str, int] = {}
    samples: list[str] = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            level = str(json.loads(line).get("level", "?"))
        except (ValueError, AttributeError):
            level = "non-json"
        levels[level] = levels.get(level, 0) + 1
        if level not in ("info", "debug") and len(samples) < 10:
            samples.append(line[:400])
    return {"lines_by_level": levels, "first_notable_lines": samples}


# -- the scenario --------------------------------------------------------------------------------
async def onboard(bench: Bench, n: int) -> dict[str, Any]:
    names = [f"org-{i:04d}" for i in range(n)]
    gate = asyncio.Semaphore(8)

    async def create(name: str) -> None:
        async with gate:
            status, data = await bench.call("POST", bench.api + ORGS, organization(name))
            if status >= 300:
                raise RuntimeError(f"creating {name}: {status} {data}")

    started = time.monotonic()
    await asyncio.gather(*(create(name) for name in names))
    created = time.monotonic() - started
    seen: dict[str, int] = {}

    async def all_ready() -> bool:
        if time.monotonic() - started > 30 and not seen.get("ready"):
            window = (await bench.counters("onboard"))["windows"]["onboard"]
            if not window["by_verb"].get("watch"):
                raise RuntimeError(
                    "after 30 s the operator has opened no watch and no Organization is Ready: "
                    "Kopf paused its watchers (see the operator log, e.g. 'peering CRD is missing')"
                )
        _, data = await bench.call("GET", bench.api + ORGS)
        seen["ready"] = sum(1 for org in data["items"] if ready(org))
        return seen["ready"] == n

    interval = 0.5 if n <= 200 else 2.0  # one LIST of every Organization per poll
    await bench.until(f"{n} Organizations Ready", all_ready, bench.args.timeout, interval)
    return {"create_seconds": round(created, 2), "all_ready_seconds": round(time.monotonic() - started, 2)}


@dataclass
class Probe:
    """A managed NetworkPolicy changed behind the operator's back, and when it was re-applied."""

    name: str
    path: str
    change: str  # "deleted", or "modified" (policyTypes [Ingress, Egress] -> [Egress])
    after_restart: float  # seconds after the new process was started
    reconciles_before: float  # how far the resume was at that moment (0: not serving metrics yet)
    at: float = 0.0
    heal_seconds: float | None = None
    restored: bool = False


async def drift(bench: Bench, name: str, org: str, change: str, restarted_at: float, port: int) -> Probe:
    path = f"/apis/networking.k8s.io/v1/namespaces/{org}-prod/networkpolicies/{DRIFT_NAME}"
    values: dict[str, float] = {}
    with contextlib.suppress(aiohttp.ClientError):  # not serving metrics yet
        values = await bench.metrics(port)
    at = time.time()
    if change == "deleted":
        status, _ = await bench.call("DELETE", bench.api + path)
    else:  # drops ingress isolation: every pod of the namespace is open to ingress again
        async with bench.session.patch(
            bench.api + path,
            json={"spec": {"policyTypes": ["Egress"]}},
            headers={"Content-Type": "application/merge-patch+json"},
        ) as response:
            status = response.status
    assert status == 200, f"{change} {path}: {status}"
    done = sum(v for k, v in values.items() if k.startswith("tenantry_reconcile_total."))
    return Probe(name, path, change, round(at - restarted_at, 2), done, at)


async def wait_heals(bench: Bench, probes: list[Probe]) -> None:
    """Until every probe was re-applied (the operator's apply reaching the API server)."""

    async def healed() -> bool:
        log = (await bench.counters("restart"))["windows"]["restart"]["write_log"]
        for probe in probes:
            applies = [w["at"] for w in log if w["path"] == probe.path and w["verb"] == "apply"]
            if applies and probe.heal_seconds is None:
                probe.heal_seconds = round(applies[0] - probe.at, 3)
        return all(p.heal_seconds is not None for p in probes)

    with contextlib.suppress(TimeoutError):
        await bench.until("drift healed", healed, bench.args.heal_timeout, 0.05)
    for probe in probes:
        status, after = await bench.call("GET", bench.api + probe.path)
        probe.restored = status == 200 and after["spec"].get("policyTypes") == ["Ingress", "Egress"]


async def restart_with_drift(bench: Bench, n: int, previous: Child) -> dict[str, Any]:
    result: dict[str, Any] = {"stop_seconds": round(await previous.stop(), 2), "stop_killed": previous.killed}
    await bench.window("restart")
    restarted_at = time.time()
    child, live_port, metrics_port = bench.start_operator(
        2, ["--resync-seconds", str(bench.args.resync_seconds)]
    )

    async def resumed() -> bool:
        with contextlib.suppress(aiohttp.ClientError):
            values = await bench.metrics(metrics_port)
            done = sum(v for k, v in values.items() if k.startswith("tenantry_reconcile_total."))
            result["resume_seconds"] = round(time.time() - restarted_at, 2)
            return done >= n and values.get("tenantry_queue_depth", 1) == 0
        return False

    # Every poll is a scrape of /metrics, which costs the operator CPU: once a second.
    resume = asyncio.create_task(bench.until("resume", resumed, bench.args.timeout, 1.0))

    # Four managed NetworkPolicies are changed behind the operator's back while it resumes:
    # one as soon as it sends its first LIST (start-up, before it watches anything) ...
    async def listing() -> bool:
        return "list" in (await bench.counters("restart"))["windows"]["restart"]["by_verb"]

    await bench.until("operator listing", listing, 120, 0.01)
    probes = [
        await drift(
            bench, "deleted during start-up", f"org-{n - 4:04d}", "deleted", restarted_at, metrics_port
        )
    ]
    # ... two as soon as it answers its liveness probe (as the requirement says) ...
    await bench.wait_live(child, live_port)
    result["liveness_seconds"] = round(time.time() - restarted_at, 2)
    for org, change in ((f"org-{n - 1:04d}", "deleted"), (f"org-{n - 3:04d}", "modified")):
        probes.append(await drift(bench, f"{change} at liveness", org, change, restarted_at, metrics_port))

    # ... and one once it watches NetworkPolicies (its LIST is done): drift it must see.
    async def watching() -> bool:
        window = (await bench.counters("restart"))["windows"]["restart"]
        return bool(window["by_resource"].get("networkpolicies", {}).get("watch"))

    await bench.until("operator watching NetworkPolicies", watching, 120, 0.02)
    org = f"org-{n - 2:04d}"
    probes.append(await drift(bench, "deleted once watched", org, "deleted", restarted_at, metrics_port))
    await wait_heals(bench, probes)
    await resume
    result["drift"] = [vars(p) for p in probes]
    remaining = restarted_at + bench.args.observe - time.time()
    if remaining > 0:
        await asyncio.sleep(remaining)
    await bench.quiet(bench.args.quiet, bench.args.timeout)
    result["observed_seconds"] = round(time.time() - restarted_at, 1)
    result["operator_metrics"] = await bench.metrics(metrics_port)
    result["memory_mb_before_stop"] = child.memory_mb()

    window = (await bench.counters("restart"))["windows"]["restart"]
    healed_paths = {p.path for p in probes}
    heal_writes = [
        w
        for w in window["write_log"]
        if w["path"] in healed_paths or (w["path"].endswith("/events") and w["reason"] == "DriftCorrected")
    ]
    peering = [w for w in window["write_log"] if w["path"].startswith(LEASES)]
    other = [w for w in window["write_log"] if w not in heal_writes and w not in peering]
    result["requests"] = per_org(window, n)
    first = sorted(window["first_at"].items(), key=lambda item: item[1])
    result["first_seen_after_restart"] = {what: round(at - restarted_at, 2) for what, at in first}
    result["writes_first_minute"] = sum(1 for w in window["write_log"] if w["at"] < restarted_at + 60)
    result["heal_writes"] = [f"{w['verb']} {w['path']} {w['reason'] or ''}".strip() for w in heal_writes]
    result["peering_writes"] = len(peering)
    result["other_writes"] = len(other) + max(0, window["writes"] - len(window["write_log"]))
    result["other_writes_sample"] = [f"{w['verb']} {w['path']}" for w in other[:20]]
    result["cpu_seconds_at_observed"] = round(child.cpu_seconds(), 2)
    result["peak_rss_mb_at_observed"] = round(child.memory_mb()["peak"], 1)
    bench.second = (child, metrics_port, restarted_at)
    return result


def reconciles(values: dict[str, float]) -> float:
    return sum(v for k, v in values.items() if k.startswith("tenantry_reconcile_total."))


def percentile(values: list[float], q: float) -> float | None:
    """Nearest rank (with 20 probes, p99 is the slowest one)."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


async def scrape_cost(bench: Bench, child: Child, port: int) -> tuple[float, int]:
    """What one scrape of /metrics costs the operator: CPU of the least of 3 scrapes, 1 s
    apart, idle included (seconds); and its size in bytes."""
    costs, size = [], 0
    for _ in range(3):
        before = child.cpu_seconds()
        _, text = await bench.call("GET", f"http://127.0.0.1:{port}/metrics")
        await asyncio.sleep(1)
        costs.append(child.cpu_seconds() - before)
        size = len(str(text))
    return min(costs), size


async def noop_resync(bench: Bench, n: int) -> dict[str, Any]:
    """CPU of one full no-op resync of all N (process 2 runs with `--resync-seconds R`; its
    first resync starts R seconds after its start). Measured from the kernel's CPU counter of
    the process, sampled every 0.1 s, without scraping /metrics meanwhile (a scrape of the
    per-quota series costs the operator CPU too: measured apart, `scrape_cpu_ms`). The resync
    is over when the process is idle again for a second; one scrape then checks that N
    reconciles happened and the queue is empty. Idle CPU (Lease renewals) is subtracted."""
    child, port, started = bench.second
    due = started + bench.args.resync_seconds
    result: dict[str, Any] = {"resync_seconds": bench.args.resync_seconds}
    await bench.window("resync")
    if due - time.time() < 12:
        result["error"] = (
            f"resync due {due - time.time():.1f} s after this phase began: raise --resync-seconds"
        )
        return result
    scrape_cpu, result["metrics_bytes"] = await scrape_cost(bench, child, port)
    base = reconciles(await bench.metrics(port))
    await asyncio.sleep(1)
    idle_from, idle_cpu_from = time.time(), child.cpu_seconds()
    await asyncio.sleep(max(1.0, due - 0.5 - time.time()))
    idle_to, cpu_from = time.time(), child.cpu_seconds()
    idle_rate = (cpu_from - idle_cpu_from) / (idle_to - idle_from)
    result["idle_cpu_per_second"] = round(idle_rate, 4)
    result["scrape_cpu_ms"] = round(1000 * (scrape_cpu - idle_rate), 1)
    tick = 1 / os.sysconf("SC_CLK_TCK")
    busy_since: float | None = None
    quiet_since: float | None = None
    last_t, last_cpu = idle_to, cpu_from
    end_t, end_cpu = idle_to, cpu_from
    deadline = time.time() + bench.args.timeout
    while time.time() < deadline:
        await asyncio.sleep(0.1)
        now_t, now_cpu = time.time(), child.cpu_seconds()
        busy = now_cpu - last_cpu > max(2 * tick, 0.2 * (now_t - last_t))
        if busy:
            busy_since = busy_since or last_t
            quiet_since = None
            end_t, end_cpu = now_t, now_cpu
        elif busy_since is not None:
            quiet_since = quiet_since or now_t
            if now_t - quiet_since >= 1.0:
                values = await bench.metrics(port)
                result["reconciles"] = reconciles(values) - base
                if result["reconciles"] >= n and values.get("tenantry_queue_depth", 1) == 0:
                    break
                quiet_since = None  # not done: keep measuring (this scrape is included)
        last_t, last_cpu = now_t, now_cpu
    else:
        result["error"] = "the resync did not finish in --timeout"
    cpu = end_cpu - cpu_from
    result["started_after_due_seconds"] = round((busy_since or idle_to) - due, 2)
    result["wall_seconds"] = round(end_t - (busy_since or idle_to), 2)
    result["cpu_seconds_raw"] = round(cpu, 2)
    result["cpu_seconds"] = round(cpu - idle_rate * (end_t - idle_to), 2)
    result["cpu_ms_per_organization"] = round(1000 * result["cpu_seconds"] / n, 2)
    result["cpu_share_of_period"] = round(result["cpu_seconds"] / bench.args.resync_seconds, 4)
    window = (await bench.counters("resync"))["windows"]["resync"]
    result.update(
        writes=window["writes"],
        writes_not_lease=sum(1 for w in window["write_log"] if not w["path"].startswith(LEASES)),
        quota_status_writes=window["quota_status_writes"],
    )
    return result


async def probe_heals(bench: Bench, n: int, label: str, count: int, avoid: set[str]) -> dict[str, Any]:
    """`count` drift probes, one at a time: a managed NetworkPolicy deleted or modified (in turn)
    in a random Organization and environment; heal = until the operator's re-apply reaches the
    API server (the fake's timestamp of that PATCH)."""
    rng = random.Random(f"{label}-{n}")
    candidates = [f"org-{i:04d}" for i in range(n) if f"org-{i:04d}" not in avoid]
    heals: list[float] = []
    missed = 0
    for index in range(count):
        org = rng.choice(candidates)
        env = rng.choice(ENVIRONMENTS)
        path = f"/apis/networking.k8s.io/v1/namespaces/{org}-{env}/networkpolicies/{DRIFT_NAME}"
        change = "deleted" if index % 2 == 0 else "modified"
        at = time.time()
        if change == "deleted":
            status, _ = await bench.call("DELETE", bench.api + path)
        else:
            async with bench.session.patch(
                bench.api + path,
                json={"spec": {"policyTypes": ["Egress"]}},
                headers={"Content-Type": "application/merge-patch+json"},
            ) as response:
                status = response.status
        assert status == 200, f"{change} {path}: {status}"
        healed: list[float] = []

        async def applied(path: str = path, at: float = at, healed: list[float] = healed) -> bool:
            _, data = await bench.call("GET", f"{bench.api}/_bench/writes?path={path}")
            times = [w["at"] for w in data["writes"] if w["verb"] == "apply" and w["at"] >= at]
            healed.extend(times[:1])
            return bool(times)

        try:
            await bench.until(f"probe {path}", applied, bench.args.probe_timeout, 0.02)
            heals.append(round(healed[0] - at, 3))
        except TimeoutError:
            missed += 1
        await asyncio.sleep(0.3)
    return {
        "probes": count,
        "not_healed": missed,
        "heal_seconds": heals,
        "p50": percentile(heals, 50),
        "p99": percentile(heals, 99),
        "max": max(heals, default=None),
    }


async def churn_phase(bench: Bench, n: int, avoid: set[str]) -> dict[str, Any]:
    """Quota status churn on (a pod started or stopped in `--churn-count` random namespaces
    every `--churn-every` s), then drift probes while it runs."""
    child, port, _ = bench.second
    await bench.window("churn")
    await bench.call(
        "POST", f"{bench.api}/_bench/churn?every={bench.args.churn_every}&count={bench.args.churn_count}"
    )
    started, cpu_before = time.time(), child.cpu_seconds()
    reconciles_before = reconciles(await bench.metrics(port))
    await asyncio.sleep(3)
    probes = await probe_heals(bench, n, "churn", bench.args.probes, avoid)
    elapsed, cpu = time.time() - started, child.cpu_seconds() - cpu_before
    await bench.call("POST", f"{bench.api}/_bench/churn?every=0")
    window = (await bench.counters("churn"))["windows"]["churn"]
    org_status = window["by_resource"].get("organizations", {})
    return {
        "every": bench.args.churn_every,
        "count": bench.args.churn_count,
        "seconds": round(elapsed, 1),
        "quota_status_events": window["quota_status_writes"],
        "quota_events_per_second": round(window["quota_status_writes"] / elapsed, 1),
        "operator_cpu_seconds": round(cpu, 2),
        "operator_cpu_share": round(cpu / elapsed, 3),
        "reconciles": reconciles(await bench.metrics(port)) - reconciles_before,
        "operator_writes": window["writes"],
        "organization_status_writes": org_status.get("patch", 0),
        # Pooled quotas (--pool): the rebalancer's writes (docs/quota-pool.md).
        "quota_writes": sum(window["by_resource"].get("resourcequotas", {}).values()),
        "drift": probes,
    }


async def raw_baseline(bench: Bench, n: int) -> dict[str, Any]:
    """The same rendered objects, `kubectl apply --server-side` x4, on a fake API server of its
    own (started the same way, quota controller included), before the operator's run."""
    server = Child.start(
        "fake-apiserver-raw",
        [sys.executable, str(ROOT / "bench" / "fake_apiserver.py"), *fake_options(bench.args)],
        bench.workdir / "fake-apiserver-raw.log",
        stdout=subprocess.PIPE,
    )
    bench.children.append(server)
    try:
        assert server.popen.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(server.popen.stdout.readline), 60)
        api = f"http://127.0.0.1:{int(line.split()[1])}"
        orgs = [organization(f"org-{i:04d}") for i in range(n)]
        result = await raw_apply.baseline(
            api,
            orgs,
            operator_src=bench.args.operator_src,
            workdir=bench.workdir,
            client=bench.args.raw_baseline,
            workers=4,
        )
        result["quota_status_done_after_apply_seconds"] = round(await raw_apply.quotas_settled(api), 2)
        result["fake_apiserver_cpu_seconds"] = round(server.cpu_seconds(), 2)
        return result
    finally:
        await server.stop(10)


def fake_options(args: argparse.Namespace) -> list[str]:
    latency = ["--latency-ms", str(args.latency_ms)] if args.latency_ms else []
    if not args.quota_controller:
        return ["--no-quota-controller", *latency]
    return ["--quota-delay", str(args.quota_delay), *latency]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    n, workdir = args.orgs, Path(args.workdir)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(headers={"User-Agent": AGENT}, timeout=timeout) as session:
        bench = Bench(args, session, workdir=workdir, kubeconfig=workdir / "kubeconfig")
        contention: dict[str, int] = {}
        bench.samplers.append(asyncio.create_task(watch_contention(bench.children, contention)))
        try:
            result = await scenario(bench, n)
            # Processes using > 20 % of a core while we measured, and in how many 2 s samples.
            result["other_busy_processes"] = contention
            return result
        finally:
            for task in bench.samplers:
                task.cancel()
            for child in bench.children:
                child.kill_now()


async def after_restart(bench: Bench, n: int, result: dict[str, Any]) -> None:
    """Process 2 once the restart is observed: a no-op resync, drift probes, quota churn."""
    restart_orgs = {f"org-{n - i:04d}" for i in range(1, 5)}
    result["resync"] = await noop_resync(bench, n)
    say(f"resync: {result['resync']}; drift probes (settled)")
    await bench.window("probes")
    result["drift_settled"] = await probe_heals(bench, n, "settled", bench.args.probes, restart_orgs)
    say(f"settled drift p50/p99 {result['drift_settled']['p50']}/{result['drift_settled']['p99']} s; churn")
    result["churn"] = await churn_phase(bench, n, restart_orgs)
    say("churn done; stopping")
    second, _, _ = bench.second
    result["restart"]["stop_seconds_end"] = round(await second.stop(), 2)
    result["restart"]["cpu_seconds"] = round(second.cpu_seconds(), 2)
    result["restart"]["peak_rss_mb"] = round(second.memory_mb()["peak"], 1)
    result["restart"]["log"] = log_summary(bench.workdir / "operator-2.log")


async def scenario(bench: Bench, n: int) -> dict[str, Any]:
    say(f"raw baseline ({bench.args.raw_baseline})")
    raw = await raw_baseline(bench, n) if bench.args.raw_baseline != "none" else None
    say(f"raw baseline: {raw and raw['seconds']} s; onboarding {n} Organizations")
    server = Child.start(
        "fake-apiserver",
        [sys.executable, str(ROOT / "bench" / "fake_apiserver.py"), *fake_options(bench.args)],
        bench.workdir / "fake-apiserver.log",
        stdout=subprocess.PIPE,
    )
    bench.children.append(server)
    assert server.popen.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(server.popen.stdout.readline), 60)
    if not line.startswith(b"READY "):
        raise RuntimeError(f"fake API server did not start: {line!r}")
    bench.api = f"http://127.0.0.1:{int(line.split()[1])}"
    bench.kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "bench", "cluster": {"server": bench.api}}],
                "users": [{"name": "bench", "user": {}}],
                "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}],
                "current-context": "bench",
            }
        )
    )
    if bench.args.mode == "leader":  # the Lease lives in the operator's namespace
        await bench.call("POST", bench.api + "/api/v1/namespaces", {"metadata": {"name": "tenantry-system"}})
    result: dict[str, Any] = {
        "orgs": n,
        "mode": bench.args.mode,
        "machine": machine(),
        "operator_source": fingerprint(bench.args.operator_src),
        "quota_controller": bench.args.quota_controller,
        "pooled_pods": bench.args.pool,
        "api_latency_ms": bench.args.latency_ms,
        "raw_apply_baseline": raw,
    }

    await bench.window("onboard")
    first, live_port, metrics_port = bench.start_operator(1)
    onboarding: dict[str, Any] = {"liveness_seconds": round(await bench.wait_live(first, live_port), 2)}
    cpu_before = first.cpu_seconds()
    onboard_started = time.time()
    onboarding.update(await onboard(bench, n))
    onboarding["cpu_seconds_to_ready"] = round(first.cpu_seconds() - cpu_before, 2)
    onboarding["memory_mb_at_ready"] = first.memory_mb()
    onboarding["quiet_after_seconds"] = round(await bench.quiet(bench.args.quiet, bench.args.timeout), 1)
    last = (await bench.counters("onboard"))["windows"]["onboard"]["last_object_request_at"]
    onboarding["last_request_seconds"] = round(last - onboard_started, 2)  # quota status settled
    onboarding["memory_mb_settled"] = first.memory_mb()
    onboarding["operator_metrics"] = await bench.metrics(metrics_port)
    counters = await bench.counters()
    onboarding["requests"] = per_org(counters["windows"]["onboard"], n)
    onboarding["fake_apiserver_objects"] = counters["objects"]
    onboarding["fake_apiserver_cpu_seconds"] = round(server.cpu_seconds(), 2)
    result["onboarding"] = onboarding

    say(f"onboarded: all Ready after {onboarding['all_ready_seconds']} s; restart")
    result["restart"] = await restart_with_drift(bench, n, first)
    say(f"restart observed: {result['restart']['other_writes']} writes besides heals and Lease; resync")
    onboarding["quota_status_writes"] = counters["windows"]["onboard"]["quota_status_writes"]
    await after_restart(bench, n, result)
    onboarding["cpu_seconds_total"] = round(first.cpu_seconds(), 2)
    onboarding["peak_rss_mb"] = round(first.memory_mb()["peak"], 1)
    onboarding["log"] = log_summary(bench.workdir / "operator-1.log")
    result["fake_apiserver"] = {
        "cpu_seconds": round(server.cpu_seconds(), 2),
        "peak_rss_mb": round(server.memory_mb()["peak"], 1),
    }
    result["rss_mib_every_second"] = bench.rss
    await server.stop(10)
    return result


def machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    cpu = [x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("model name")]
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu[0].split(":", 1)[1].strip() if cpu else platform.processor(),
        "memory": meminfo[0].split(":", 1)[1].strip(),
        "python": platform.python_version(),
        "kopf": version("kopf"),
        "kubernetes_client": version("kubernetes"),
    }


def fingerprint(src: Path) -> dict[str, Any]:
    """Which operator code was measured (the repository has no VCS metadata to name it by)."""
    files = sorted((src / "tenantry").rglob("*.py"))
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(src)).encode() + b"\0" + path.read_bytes())
    newest = max(path.stat().st_mtime for path in files)
    return {
        "path": str(src),
        "files": len(files),
        "sha256": digest.hexdigest()[:16],
        "newest_file": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(newest)),
    }


def table(result: dict[str, Any]) -> str:
    on, re_ = result["onboarding"], result["restart"]
    rows: list[tuple[str, Any]] = [
        ("Organizations", result["orgs"]),
        ("mode", result["mode"]),
        ("onboarding wall time (first POST -> all Ready)", f"{on['all_ready_seconds']} s"),
        ("operator CPU, onboarding (to all Ready)", f"{on['cpu_seconds_to_ready']} s"),
        ("operator CPU, process 1 total", f"{on['cpu_seconds_total']} s"),
        ("requests per Organization, onboarding (reads / writes)", _rw(on["requests"])),
        ("peak RSS, process 1 (onboarding)", f"{on['peak_rss_mb']} MiB"),
        ("RSS after onboarding settled", f"{on['memory_mb_settled'].get('now', 0):.1f} MiB"),
        ("restart: liveness answers after", f"{re_['liveness_seconds']} s"),
        ("restart: resume done (all reconciled, queue empty) after", f"{re_['resume_seconds']} s"),
    ]
    for probe in re_["drift"]:
        heal = probe["heal_seconds"]
        rows.append(
            (
                f"drift heal, {probe['name']} (+{probe['after_restart']} s)",
                "NOT HEALED" if heal is None else f"{heal} s",
            )
        )
    rows += [
        ("writes after restart (drift heals and Lease renewals excluded)", re_["other_writes"]),
        ("writes of the drift heals", len(re_["heal_writes"])),
        ("Lease renewals after restart", re_["peering_writes"]),
        ("writes in the first minute after restart (all)", re_["writes_first_minute"]),
        ("requests per Organization, restart (reads / writes)", _rw(re_["requests"])),
        ("operator CPU, process 2 to the end of the observation", f"{re_['cpu_seconds_at_observed']} s"),
        ("operator CPU, process 2 total (incl. resync, probes, churn)", f"{re_['cpu_seconds']} s"),
        ("peak RSS, process 2 (whole life)", f"{re_['peak_rss_mb']} MiB"),
        ("fake API server CPU, whole run", f"{result['fake_apiserver']['cpu_seconds']} s"),
    ]
    raw = result.get("raw_apply_baseline")
    if raw:
        rows.insert(
            3,
            (
                f"raw baseline: {raw['objects']} objects, {raw['workers']} x {raw['client']} SSA",
                f"{raw['seconds']} s (+{raw['quota_status_done_after_apply_seconds']} s: last quota status)",
            ),
        )
    rows.insert(4, ("onboarding: first POST -> last operator request", f"{on['last_request_seconds']} s"))
    rows.insert(5, ("quota status writes by the fake's controller, onboarding", on["quota_status_writes"]))
    sync = result["resync"]
    if "error" in sync:
        rows.append(("no-op resync", sync["error"]))
    else:
        rows += [
            (
                f"no-op resync of all {result['orgs']}: operator CPU (idle subtracted)",
                f"{sync['cpu_seconds']} s ({sync['cpu_ms_per_organization']} ms each)",
            ),
            ("no-op resync: wall time (busy to idle)", f"{sync['wall_seconds']} s"),
            (
                "one scrape of /metrics: operator CPU; size",
                f"{sync['scrape_cpu_ms']} ms; {sync['metrics_bytes']} B",
            ),
            ("no-op resync: writes (Lease renewals excluded)", sync["writes_not_lease"]),
        ]
    for label, drift in (
        ("settled", result["drift_settled"]),
        ("during quota churn", result["churn"]["drift"]),
    ):
        rows.append(
            (
                f"drift heal {label}: p50 / p99 / max of {drift['probes']}",
                f"{drift['p50']} / {drift['p99']} / {drift['max']} s"
                + (f" ({drift['not_healed']} NOT HEALED)" if drift["not_healed"] else ""),
            )
        )
    churn = result["churn"]
    rows += [
        (
            "quota churn: status events/s; operator CPU share",
            f"{churn['quota_events_per_second']}/s; {churn['operator_cpu_share'] * 100:.1f} % of a core",
        ),
        (
            "quota churn: Organization status writes / quota events",
            f"{churn['organization_status_writes']} / {churn['quota_status_events']}",
        ),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def _rw(requests: dict[str, Any]) -> str:
    return (
        f"{requests['reads_per_org']} / {requests['writes_per_org']} "
        f"({requests['reads']} / {requests['writes']} in total)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orgs", type=int, default=100, help="how many Organizations (N)")
    parser.add_argument("--mode", choices=["standalone", "leader"], default="standalone")
    parser.add_argument(
        "--operator-src", type=Path, default=ROOT / "operator", help="directory holding `tenantry/`"
    )
    parser.add_argument("--output", help="write the JSON result here (default: <workdir>/result.json)")
    parser.add_argument("--workdir", help="kubeconfig and logs (default: /tmp/tenantry-bench-N)")
    parser.add_argument("--observe", type=float, default=60.0, help="seconds to watch after restart")
    parser.add_argument("--quiet", type=float, default=5.0, help="no request for this long = settled")
    parser.add_argument("--timeout", type=float, default=1800.0, help="bound of every wait")
    parser.add_argument("--heal-timeout", type=float, default=120.0)
    parser.add_argument("--log-level", default="WARNING", help="the operator's log level")
    parser.add_argument(
        "--raw-baseline",
        choices=["kubectl", "http", "none"],
        default="kubectl",
        help="first time 4 parallel `kubectl apply --server-side` of the rendered objects",
    )
    parser.add_argument(
        "--no-quota-controller",
        dest="quota_controller",
        action="store_false",
        help="the fake API server without its quota controller (as before)",
    )
    parser.add_argument("--quota-delay", type=float, default=0.5, help="quota write -> its status (s)")
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="the fake answers each request this much later, as a real API server (both fakes)",
    )
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=90.0,
        help="process 2's --resync-seconds: the first (measured) resync is this long after start",
    )
    parser.add_argument("--probes", type=int, default=20, help="drift probes per phase (settled, churn)")
    parser.add_argument("--probe-timeout", type=float, default=10.0, help="one probe's heal bound")
    parser.add_argument("--churn-every", type=float, default=1.0, help="quota churn: a round every S s")
    parser.add_argument("--churn-count", type=int, default=20, help="quota churn: quotas per round")
    parser.add_argument(
        "--pool", type=int, default=0, help="pool this many pods over each Organization's environments"
    )
    args = parser.parse_args()
    POOL["pods"] = args.pool
    if args.orgs < 4:
        parser.error("--orgs must be at least 4 (four Organizations get a drift probe)")
    args.workdir = args.workdir or f"/tmp/tenantry-bench-{args.orgs}"
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up on `kill`
    result = asyncio.run(run(args))
    result["driver_cpu_seconds"] = round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 2)
    output = Path(args.output or Path(args.workdir) / "result.json")
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    if result["other_busy_processes"]:
        print(f"\nWARNING: other busy processes during the run: {result['other_busy_processes']}")
    print(f"\nJSON: {output}")


if __name__ == "__main__":
    main()
