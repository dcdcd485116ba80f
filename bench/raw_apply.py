"""Baseline: the same rendered objects server-side applied by 4 parallel `kubectl apply`.

    python bench/raw_apply.py --orgs 100 [--client kubectl|http] [--workers 4] [--api URL]

What a person without the operator would do: render the N Organizations of the benchmark
(`tenantry render`, the operator's own renderer, byte for byte what it applies), split the
objects into `--workers` files by Organization (each file in render order: an environment's
Namespace before its objects), and run one `kubectl apply --server-side --force-conflicts` per
file, all at once. Each kubectl sends one `PATCH` with `Content-Type:
application/apply-patch+yaml`, `fieldManager=kubectl`, `force=true` per object, one after the
other. The time is from the start of the first kubectl to the exit of the last.

`--client kubectl` (the default) runs /usr/bin/kubectl itself, with `--validate=false`: the fake
API server serves no OpenAPI document (`/openapi/v2`, `/openapi/v3` are 404), which kubectl's
client-side validation needs. Discovery is warmed up once before the clock starts (kubectl
caches it in `--cache-dir`, as on a workstation). `--client http` sends the same PATCHes from
Python (aiohttp, `--workers` sequential streams), for a machine without kubectl.

Without `--api` it starts its own `bench/fake_apiserver.py` (quota controller on, as in
bench/run.py) and also reports when the last quota got its status. `bench/run.py` runs this
before the operator's onboarding (`--raw-baseline`), against a fake API server of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
KUBECTL = "/usr/bin/kubectl"
AGENT = "tenantry-bench"
FIELD_MANAGER = "kubectl"  # what `kubectl apply --server-side` sends by default
PLURALS = {
    ("v1", "Namespace"): "namespaces",
    ("v1", "ResourceQuota"): "resourcequotas",
    ("v1", "LimitRange"): "limitranges",
    ("v1", "ConfigMap"): "configmaps",
    ("networking.k8s.io/v1", "NetworkPolicy"): "networkpolicies",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "rolebindings",
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "clusterroles",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "clusterrolebindings",
}
RENDER_TIMEOUT = 600.0
APPLY_TIMEOUT = 1800.0


def render(orgs: list[dict[str, Any]], operator_src: Path, workdir: Path) -> list[list[dict[str, Any]]]:
    """`tenantry render` of every Organization; the objects grouped per Organization."""
    source = workdir / "raw-organizations.yaml"
    source.write_text(yaml.safe_dump_all(orgs))
    done = subprocess.run(
        [sys.executable, "-m", "tenantry", "render", "-f", str(source)],
        env={**os.environ, "PYTHONPATH": str(operator_src)},
        capture_output=True,
        text=True,
        timeout=RENDER_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"tenantry render failed ({done.returncode}): {done.stderr[:2000]}")
    per_org: dict[str, list[dict[str, Any]]] = {}
    for obj in yaml.load_all(done.stdout, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        if obj:
            owner = obj["metadata"].get("labels", {}).get("tenantry.dev/organization", "")
            per_org.setdefault(owner, []).append(obj)
    return list(per_org.values())


def shards(groups: list[list[dict[str, Any]]], workers: int) -> list[list[dict[str, Any]]]:
    """`workers` files of whole Organizations, each about the same size."""
    out: list[list[dict[str, Any]]] = [[] for _ in range(workers)]
    for index, group in enumerate(groups):
        out[index * workers // len(groups)].extend(group)
    return [shard for shard in out if shard]


def path_of(obj: dict[str, Any]) -> str:
    plural = PLURALS[(obj["apiVersion"], obj["kind"])]
    prefix = "/api/v1" if obj["apiVersion"] == "v1" else f"/apis/{obj['apiVersion']}"
    namespace = obj["metadata"].get("namespace")
    scope = f"/namespaces/{namespace}" if namespace else ""
    return f"{prefix}{scope}/{plural}/{obj['metadata']['name']}"


def kubeconfig(api: str, path: Path) -> Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "bench", "cluster": {"server": api}}],
                "users": [{"name": "bench", "user": {}}],
                "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}],
                "current-context": "bench",
            }
        )
    )
    return path


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[-3:]} failed: {done.stderr[:1000]}")


def _spawn(argv: list[str], log: Path, stdout: int | None = None) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        return subprocess.Popen(argv, stdout=stdout or handle, stderr=handle if stdout else subprocess.STDOUT)


async def apply_kubectl(api: str, files: list[Path], workdir: Path) -> dict[str, Any]:
    config = kubeconfig(api, workdir / "raw-kubeconfig")
    common = ["--kubeconfig", str(config), "--cache-dir", str(workdir / "raw-kubectl-cache")]
    # Discovery once, untimed (a workstation's kubectl has it cached).
    await asyncio.to_thread(_run, [KUBECTL, *common, "api-resources", "-o", "name"])
    argv = [
        KUBECTL,
        *common,
        "apply",
        "--server-side",
        "--force-conflicts",
        "--validate=false",  # the fake serves no OpenAPI (client-side validation needs it)
        "-o",
        "name",
    ]
    started = time.monotonic()
    procs = []
    for index, file in enumerate(files):
        procs.append(_spawn([*argv, "-f", str(file)], workdir / f"raw-kubectl-{index}.log"))
    cpu = 0.0
    exits = []
    for proc in procs:
        remaining = max(1.0, APPLY_TIMEOUT - (time.monotonic() - started))
        try:
            _, status, usage = await asyncio.wait_for(asyncio.to_thread(os.wait4, proc.pid, 0), remaining)
        except TimeoutError:
            for other in procs:
                other.kill()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        exits.append(proc.returncode)
        cpu += usage.ru_utime + usage.ru_stime
    seconds = time.monotonic() - started
    if any(exits):
        raise RuntimeError(f"kubectl apply exited with {exits}; see {workdir}/raw-kubectl-*.log")
    return {"seconds": round(seconds, 2), "client_cpu_seconds": round(cpu, 2)}


async def apply_http(api: str, parts: list[list[dict[str, Any]]]) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=120)
    headers = {"User-Agent": "kubectl/v1.32 (raw_apply http)", "Content-Type": "application/apply-patch+yaml"}
    errors: list[str] = []
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:

        async def worker(objects: list[dict[str, Any]]) -> None:
            for obj in objects:
                url = f"{api}{path_of(obj)}?fieldManager={FIELD_MANAGER}&force=true"
                async with session.patch(url, data=json.dumps(obj)) as response:
                    if response.status >= 300:
                        errors.append(f"{response.status} {url}: {(await response.text())[:200]}")

        cpu_before = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(worker(part) for part in parts)), APPLY_TIMEOUT)
        seconds = time.monotonic() - started
    if errors:
        raise RuntimeError(f"{len(errors)} applies failed, e.g. {errors[:3]}")
    cpu = sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - cpu_before
    return {"seconds": round(seconds, 2), "client_cpu_seconds": round(cpu, 2)}


async def baseline(
    api: str,
    orgs: list[dict[str, Any]],
    *,
    operator_src: Path,
    workdir: Path,
    client: str = "kubectl",
    workers: int = 4,
) -> dict[str, Any]:
    """Render, then apply everything with `workers` parallel streams; timed."""
    started = time.monotonic()
    parts = shards(render(orgs, operator_src, workdir), workers)
    result: dict[str, Any] = {
        "client": client,
        "workers": len(parts),
        "objects": sum(len(part) for part in parts),
        "render_seconds": round(time.monotonic() - started, 2),
    }
    if client == "kubectl":
        files = []
        for index, part in enumerate(parts):
            file = workdir / f"raw-shard-{index}.yaml"
            file.write_text(yaml.dump_all(part, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper)))
            files.append(file)
        result.update(await apply_kubectl(api, files, workdir))
    else:
        result.update(await apply_http(api, parts))
    result["applies_per_second"] = round(result["objects"] / result["seconds"], 1)
    return result


async def quotas_settled(api: str, within: float = 300.0) -> float:
    """Seconds until the fake's quota controller has nothing pending."""
    started = time.monotonic()
    async with aiohttp.ClientSession(headers={"User-Agent": AGENT}) as session:
        while time.monotonic() - started < within:
            async with session.get(f"{api}/_bench/counters?window=none") as response:
                if (await response.json())["quota_controller"]["pending"] == 0:
                    return time.monotonic() - started
            await asyncio.sleep(0.1)
    raise TimeoutError(f"quota statuses not all written in {within}s")


async def standalone(args: argparse.Namespace) -> dict[str, Any]:
    from run import organization  # noqa: PLC0415 - run.py imports this module

    workdir = Path(args.workdir)
    orgs = [organization(f"org-{i:04d}") for i in range(args.orgs)]
    server = None
    api = args.api
    if not api:
        argv = [sys.executable, str(ROOT / "bench" / "fake_apiserver.py")]
        server = _spawn(argv, workdir / "raw-fake-apiserver.log", stdout=subprocess.PIPE)
        assert server.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(server.stdout.readline), 60)
        api = f"http://127.0.0.1:{int(line.split()[1])}"
    try:
        result = await baseline(
            api,
            orgs,
            operator_src=args.operator_src,
            workdir=workdir,
            client=args.client,
            workers=args.workers,
        )
        if server is not None:
            result["quota_status_done_after_apply_seconds"] = round(await quotas_settled(api), 2)
        return result
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orgs", type=int, default=100)
    parser.add_argument("--client", choices=["kubectl", "http"], default="kubectl")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--api", help="a running API server (default: start bench/fake_apiserver.py)")
    parser.add_argument("--operator-src", type=Path, default=ROOT / "operator")
    parser.add_argument("--workdir", default="/tmp/tenantry-raw-apply")
    args = parser.parse_args()
    if args.api and not args.api.startswith(("http://127.0.0.1", "http://localhost")):
        parser.error("--api: only 127.0.0.1")
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    print(json.dumps(asyncio.run(standalone(args)), indent=2))


if __name__ == "__main__":
    main()
