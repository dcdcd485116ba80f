"""A real API server's bad days (issue 18), on a real control plane:

- kube-apiserver restarted under two replicas (`tenantry run --operator-namespace ...`, as
  manifests/base runs them): drift heals and a new Organization becomes Ready within 30 s of
  `/readyz`;
- a ValidatingAdmissionPolicy refusing LimitRange writes in one tenant namespace (a maintenance
  freeze) while the LimitRange is deleted: honest status meanwhile, healed within 20 s of the
  policy's removal;
- a kubeconfig whose user is an `exec` credential plugin (as EKS, GKE and AKS hand out).

The restart test needs the control plane of /work/shared/tools/realk8s/up.sh (its `pids` file
next to the kubeconfig): it stops kube-apiserver by its PID and starts it again with the same
command line (read from /proc/PID/cmdline), recording the new PID for down.sh.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import minimal_org

KUBECONFIG = os.environ.get("TENANTRY_E2E_KUBECONFIG")
ROOT = Path(__file__).resolve().parents[2]
OPERATOR_NS = "tenantry-system"

pytestmark = pytest.mark.skipif(
    not KUBECONFIG, reason="TENANTRY_E2E_KUBECONFIG is not set: no real cluster to run the e2e suite against"
)


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert KUBECONFIG is not None
    proc = subprocess.run(
        ["kubectl", "--kubeconfig", KUBECONFIG, *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if check and proc.returncode:
        raise AssertionError(f"kubectl {' '.join(args)}: {proc.stderr}")
    return proc


def get(*args: str) -> dict[str, Any] | None:
    proc = kubectl("get", *args, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def apply(obj: dict[str, Any]) -> None:
    kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(obj))


def wait_for(check: Callable[[], Any], timeout: float = 60, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s")


def conditions(name: str) -> dict[str, dict[str, Any]]:
    obj = get("organization", name)
    return {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions", [])}


def is_ready(name: str) -> bool:
    obj = get("organization", name)
    conds = {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions", [])}
    return bool(
        obj
        and conds.get("Ready", {}).get("status") == "True"
        and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]
    )


def org(name: str) -> dict[str, Any]:
    return minimal_org(name, members={"admins": [{"kind": "Group", "name": f"{name}-admins"}]})


class Replica:
    """One `tenantry run` process with its own log file (never a pipe nobody reads)."""

    def __init__(self, tmp: Path, name: str, kubeconfig: str, *extra: str, port: int) -> None:
        self.log = tmp / f"{name}.log"
        self.liveness = f"http://127.0.0.1:{port}/healthz"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tenantry",
                    "run",
                    "--kubeconfig",
                    kubeconfig,
                    "--metrics-port",
                    "0",
                    "--liveness",
                    self.liveness,
                    "--log-format",
                    "json",
                    *extra,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(self.liveness, timeout=5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def installed() -> Iterator[None]:
    kubectl("apply", "--server-side", "-k", str(ROOT / "crds"))
    kubectl("apply", "--server-side", "-f", str(ROOT / "manifests/base/tenant-roles.yaml"))
    kubectl("apply", "--server-side", "-f", str(ROOT / "manifests/base/namespace.yaml"))
    kubectl("apply", "--server-side", "-f", str(ROOT / "manifests/base/serviceaccount.yaml"))
    kubectl("apply", "--server-side", "-f", str(ROOT / "manifests/base/operator-rbac.yaml"))
    kubectl("wait", "--for=condition=Established", "crd/organizations.tenantry.dev", "--timeout=60s")
    # Left over by an interrupted run (deleted while no operator ran): let them go.
    for name in NAMES:
        if (get("organization", name) or {}).get("metadata", {}).get("deletionTimestamp"):
            kubectl(
                "patch",
                "organization",
                name,
                "--type=merge",
                "-p",
                '{"metadata":{"finalizers":[]}}',
                check=False,
            )
        kubectl(
            "delete", "organization", name, "--ignore-not-found", "--wait=true", "--timeout=30s", check=False
        )
    yield


NAMES = ("e2e-bd-a", "e2e-bd-b", "e2e-bd-c", "e2e-bd-x")


@pytest.fixture
def replicas(tmp_path: Path, installed: None) -> Iterator[list[Replica]]:
    started: list[Replica] = []
    yield started
    # While the replicas run, so the Organizations' finalizers are carried out.
    for name in NAMES:
        kubectl(
            "delete", "organization", name, "--ignore-not-found", "--wait=true", "--timeout=90s", check=False
        )
    for replica in started:
        replica.stop()
    for replica in started:  # kept for a failing test's report
        print(f"--- {replica.log}:\n{replica.log.read_text()[-4000:]}")


def realk8s_dir() -> Path:
    assert KUBECONFIG is not None
    return Path(KUBECONFIG).resolve().parent


def restart_kube_apiserver() -> float:
    """Stop kube-apiserver (SIGTERM, as an upgrade or a certificate rotation does), start it again
    with the same command line; returns the time.monotonic() at which /readyz answered ok."""
    pids = realk8s_dir() / "pids"
    lines = pids.read_text().splitlines()
    pid = next(int(line.split()[1]) for line in lines if line.startswith("kube-apiserver "))
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    cwd = os.readlink(f"/proc/{pid}/cwd")
    os.kill(pid, signal.SIGTERM)
    try:
        # With watches open, a graceful stop can take the whole termination grace (60 s and more).
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=20, interval=0.1)
    except AssertionError:
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=20, interval=0.1)
    log = (realk8s_dir() / "logs" / "kube-apiserver.restarted.log").open("ab")
    proc = subprocess.Popen(
        [a.decode() for a in argv], cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    pids.write_text(
        "".join(
            f"kube-apiserver {proc.pid}\n" if line.startswith("kube-apiserver ") else f"{line}\n"
            for line in lines
        )
    )
    print("restarted:", shlex.join(a.decode() for a in argv[:3]), "...")

    def ready() -> bool:
        return kubectl("get", "--raw", "/readyz", check=False).stdout.strip() == "ok"

    wait_for(ready, timeout=120, interval=0.1)
    return time.monotonic()


@pytest.mark.skipif(
    not KUBECONFIG or not (Path(KUBECONFIG).resolve().parent / "pids").exists(),
    reason="needs the realk8s control plane's pids file (kube-apiserver is restarted by PID)",
)
def test_an_api_server_restart_with_two_replicas(tmp_path: Path, replicas: list[Replica]) -> None:
    assert KUBECONFIG is not None
    for i in (1, 2):
        replicas.append(
            Replica(tmp_path, f"replica-{i}", KUBECONFIG, "--operator-namespace", OPERATOR_NS, port=18180 + i)
        )
    apply(org("e2e-bd-a"))
    wait_for(lambda: is_ready("e2e-bd-a"), timeout=90)
    assert get("networkpolicy", "-n", "e2e-bd-a-prod", "tenantry-default-deny")

    ready_at = restart_kube_apiserver()
    kubectl("delete", "networkpolicy", "-n", "e2e-bd-a-prod", "tenantry-default-deny")
    apply(org("e2e-bd-b"))
    wait_for(lambda: get("networkpolicy", "-n", "e2e-bd-a-prod", "tenantry-default-deny"), timeout=30)
    healed = time.monotonic() - ready_at
    wait_for(lambda: is_ready("e2e-bd-b"), timeout=max(1.0, 30 - (time.monotonic() - ready_at)))
    onboarded = time.monotonic() - ready_at
    print(f"after /readyz: drift healed in {healed:.1f} s, new Organization Ready in {onboarded:.1f} s")
    assert healed < 30 and onboarded < 30
    assert all(r.alive() for r in replicas), "both replicas up and alive"
    lease = get("lease", "-n", OPERATOR_NS, "tenantry")
    assert lease and lease["spec"].get("holderIdentity"), "someone leads"


def test_an_admission_refusal_lifted_heals_within_20_s(tmp_path: Path, replicas: list[Replica]) -> None:
    assert KUBECONFIG is not None
    replicas.append(Replica(tmp_path, "standalone", KUBECONFIG, "--standalone", port=18183))
    apply(org("e2e-bd-c"))
    wait_for(lambda: is_ready("e2e-bd-c"), timeout=90)
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "e2e-maintenance-freeze"},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "e2e-bd-c-dev"}},
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["limitranges"],
                    }
                ],
            },
            "validations": [{"expression": "false", "message": "maintenance freeze: no LimitRange changes"}],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "e2e-maintenance-freeze"},
        "spec": {"policyName": "e2e-maintenance-freeze", "validationActions": ["Deny"]},
    }
    probe = {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": "e2e-probe", "namespace": "e2e-bd-c-dev"},
        "spec": {"limits": [{"type": "Container", "max": {"cpu": "1"}}]},
    }
    try:
        apply(policy)
        apply(binding)
        # In force once a dry-run write is refused (the policy reaches admission within seconds).
        wait_for(
            lambda: (
                kubectl(
                    "create", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(probe), check=False
                ).returncode
                != 0
            ),
            timeout=30,
        )
        kubectl("delete", "limitrange", "-n", "e2e-bd-c-dev", "tenantry-limits")

        def failing() -> dict[str, dict[str, Any]] | None:
            conds = conditions("e2e-bd-c")
            return conds if conds.get("Ready", {}).get("reason") == "ApplyFailed" else None

        conds = wait_for(failing, timeout=30)
        assert "maintenance freeze" in conds["Ready"]["message"]
        assert (conds["Reconciling"]["status"], conds["Reconciling"]["reason"]) == ("True", "ApplyFailed")
        assert (conds["Stalled"]["status"], conds["Stalled"]["reason"]) == ("False", "Retrying")
        time.sleep(20)  # the freeze lasts: the backoff grows to its maximum meanwhile
    finally:
        kubectl(
            "delete",
            "validatingadmissionpolicybinding",
            "e2e-maintenance-freeze",
            "--ignore-not-found",
            check=False,
        )
        kubectl(
            "delete", "validatingadmissionpolicy", "e2e-maintenance-freeze", "--ignore-not-found", check=False
        )
    lifted = time.monotonic()
    wait_for(lambda: get("limitrange", "-n", "e2e-bd-c-dev", "tenantry-limits"), timeout=20, interval=0.2)
    healed = time.monotonic() - lifted
    print(f"LimitRange back {healed:.1f} s after the policy was removed")
    wait_for(lambda: is_ready("e2e-bd-c"), timeout=20)
    log = replicas[0].log.read_text()
    assert '"reconcile failed"' in log and "e2e-bd-c" in log


def test_an_exec_plugin_kubeconfig(tmp_path: Path, replicas: list[Replica]) -> None:
    """The user is an exec plugin that prints a ServiceAccount token (as `aws eks get-token`
    prints one): the operator runs it and acts as that identity, never as system:anonymous."""
    assert KUBECONFIG is not None
    admin = yaml.safe_load(Path(KUBECONFIG).read_text())
    plugin = tmp_path / "get-token"
    plugin.write_text(
        "#!/bin/sh\n"
        f"TOKEN=$(kubectl --kubeconfig {shlex.quote(KUBECONFIG)} create token tenantry -n {OPERATOR_NS} "
        "--duration 10m) || exit 1\n"
        'printf \'{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential",'
        '"status":{"token":"%s"}}\' "$TOKEN"\n'
    )
    plugin.chmod(0o755)
    cluster = admin["clusters"][0]
    kubeconfig = tmp_path / "exec.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [
                    {
                        "name": "sa",
                        "user": {
                            "exec": {
                                "apiVersion": "client.authentication.k8s.io/v1",
                                "command": str(plugin),
                                "interactiveMode": "Never",
                                "env": [{"name": "PATH", "value": os.environ.get("PATH", "/usr/bin:/bin")}],
                            }
                        },
                    }
                ],
                "contexts": [{"name": "sa", "context": {"cluster": cluster["name"], "user": "sa"}}],
                "current-context": "sa",
            }
        )
    )
    replicas.append(
        Replica(tmp_path, "exec", str(kubeconfig), "--operator-namespace", OPERATOR_NS, port=18184)
    )
    apply(org("e2e-bd-x"))
    wait_for(lambda: is_ready("e2e-bd-x"), timeout=90)
    lease = get("lease", "-n", OPERATOR_NS, "tenantry")
    assert lease is not None
    log = replicas[0].log.read_text()
    assert "system:anonymous" not in log
    audit = realk8s_dir() / "logs" / "audit.log"
    if audit.exists():
        assert "system:serviceaccount:tenantry-system:tenantry" in audit.read_text()[-5_000_000:]
