"""`tenantry run` as a real process: credentials from a kubeconfig, liveness, metrics, work."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import aiohttp
import yaml

from tests.integration.conftest import ORG, Api, org_body
from tests.integration.test_onboarding import ready


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_kubeconfig(api: Api, tmp_path: Path) -> Path:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "fake",
                "clusters": [
                    {"name": "fake", "cluster": {"server": api.base, "insecure-skip-tls-verify": True}}
                ],
                "users": [{"name": "test", "user": {"token": "test-token"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "test"}}],
            }
        )
    )
    return kubeconfig


async def test_run_serves_liveness_and_metrics_and_reconciles(api: Api, tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(api, tmp_path)
    health, metrics = free_port(), free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tenantry",
        "run",
        "--kubeconfig",
        str(kubeconfig),
        "--standalone",
        "--liveness",
        f"http://127.0.0.1:{health}/healthz",
        "--metrics-port",
        str(metrics),
        "--log-format",
        "json",
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await api.create(ORG, org_body())
        await ready(api, timeout=20)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{health}/healthz") as response:
                assert response.status == 200
            async with session.get(f"http://127.0.0.1:{metrics}/metrics") as response:
                text = await response.text()
        assert 'tenantry_reconcile_total{result="ok"}' in text
        assert 'tenantry_organization_ready{organization="acme"} 1.0' in text
    finally:
        proc.terminate()
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=20)
    assert b'"organization": "acme"' in stderr  # JSON logs with the organization on each line


async def test_the_liveness_probe_answers_for_a_leader_elected_replica(api: Api, tmp_path: Path) -> None:
    """The probe runs in Kopf's liveness endpoint, in the operator's event loop (the election's
    clock is that loop's): 200 with what it saw, not a handler error retried for a minute."""
    await api.create("/api/v1/namespaces", {"metadata": {"name": "tenantry-system"}})
    health = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tenantry",
        "run",
        "--kubeconfig",
        str(write_kubeconfig(api, tmp_path)),
        "--liveness",
        f"http://127.0.0.1:{health}/healthz",
        "--metrics-port",
        "0",
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await api.create(ORG, org_body())
        await ready(api, timeout=20)
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"http://127.0.0.1:{health}/healthz", timeout=aiohttp.ClientTimeout(total=10)
            ) as response,
        ):
            assert response.status == 200
            body = await response.json()
        assert body["tenantry"]["leader"] is True and body["tenantry"]["started"] is True
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), timeout=20)


async def test_run_with_leader_election_and_no_namespace_exits_saying_what_to_do(
    api: Api, tmp_path: Path
) -> None:
    # The README's path without --standalone, on a cluster without the operator's namespace:
    # a clear error and a non-zero exit, never an operator that idles.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tenantry",
        "run",
        "--kubeconfig",
        str(write_kubeconfig(api, tmp_path)),
        "--liveness",
        f"http://127.0.0.1:{free_port()}/healthz",
        "--metrics-port",
        str(free_port()),
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    output = (stdout + stderr).decode()
    assert proc.returncode != 0
    assert "namespace 'tenantry-system' does not exist" in output
    assert "--standalone" in output
