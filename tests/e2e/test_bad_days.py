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

import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import (
    KUBECONFIG,
    Operator,
    OperatorFactory,
    apply,
    conditions,
    get,
    install_crds_and_roles,
    install_operator_identity,
    kubectl,
    manifest,
    org,
    wait_for,
)

OPERATOR_NS = "tenantry-system"

pytestmark = pytest.mark.skipif(
    not KUBECONFIG, reason="TENANTRY_E2E_KUBECONFIG is not set: no real cluster to run the e2e suite against"
)


def is_ready(name: str) -> bool:
    obj = get("organization", name)
    return bool(
        obj
        and conditions(obj).get("Ready", {}).get("status") == "True"
        and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]
    )


@pytest.fixture(scope="module")
def installed() -> Iterator[None]:
    install_crds_and_roles()
    install_operator_identity()  # the namespace of the Lease, and the exec plugin's ServiceAccount
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
def replicas(start_operator: OperatorFactory, installed: None) -> Iterator[list[Operator]]:
    started: list[Operator] = []
    yield started
    # While the replicas run, so the Organizations' finalizers are carried out (start_operator
    # stops them afterwards, and a failing test's report shows their logs).
    for name in NAMES:
        kubectl(
            "delete", "organization", name, "--ignore-not-found", "--wait=true", "--timeout=90s", check=False
        )


def realk8s_dir() -> Path:
    assert KUBECONFIG is not None
    return Path(KUBECONFIG).resolve().parent


def restart_kube_apiserver(meanwhile: Callable[[], object] = lambda: None) -> float:
    """Stop kube-apiserver (SIGTERM, as an upgrade or a certificate rotation does), call
    `meanwhile` while it is down, start it again with the same command line; returns the
    time.monotonic() at which /readyz answered ok."""
    pids = realk8s_dir() / "pids"
    lines = pids.read_text().splitlines()
    pid = next(int(line.split()[1]) for line in lines if line.startswith("kube-apiserver "))
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    cwd = os.readlink(f"/proc/{pid}/cwd")
    os.kill(pid, signal.SIGTERM)
    try:
        # With watches open, a graceful stop can take the whole termination grace (60 s and more).
        wait_for(
            lambda: not Path(f"/proc/{pid}").exists(), timeout=20, interval=0.1, what="kube-apiserver to exit"
        )
    except AssertionError:
        os.kill(pid, signal.SIGKILL)
        wait_for(
            lambda: not Path(f"/proc/{pid}").exists(), timeout=20, interval=0.1, what="kube-apiserver to exit"
        )
    meanwhile()
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

    wait_for(ready, timeout=120, interval=0.1, what="kube-apiserver /readyz")
    return time.monotonic()


@pytest.mark.skipif(
    not KUBECONFIG or not (Path(KUBECONFIG).resolve().parent / "pids").exists(),
    reason="needs the realk8s control plane's pids file (kube-apiserver is restarted by PID)",
)
def test_an_api_server_restart_with_two_replicas_and_one_starting(
    start_operator: OperatorFactory, replicas: list[Operator]
) -> None:
    for _ in (1, 2):
        replicas.append(
            start_operator("--operator-namespace", OPERATOR_NS, "--log-format", "json", standalone=False)
        )
    apply(org("e2e-bd-a"))
    wait_for(lambda: is_ready("e2e-bd-a"), timeout=90, what="e2e-bd-a Ready")
    assert get("networkpolicy", "-n", "e2e-bd-a-prod", "tenantry-default-deny")

    # A third replica (a pod rescheduled during a control-plane upgrade) starts while the API
    # server is down: it must start once the server is back, not a minute later.
    def third() -> None:
        replica = start_operator(
            "--operator-namespace", OPERATOR_NS, "--log-format", "json", standalone=False
        )
        replicas.append(replica)
        wait_for(
            lambda: "Activity 'tenantry-startup' failed" in replica.output(),
            timeout=60,
            what="the third replica's start-up to meet the API server down",
        )

    ready_at = restart_kube_apiserver(meanwhile=third)
    kubectl("delete", "networkpolicy", "-n", "e2e-bd-a-prod", "tenantry-default-deny")
    apply(org("e2e-bd-b"))
    wait_for(
        lambda: get("networkpolicy", "-n", "e2e-bd-a-prod", "tenantry-default-deny"),
        timeout=30,
        what="the deleted default-deny back",
    )
    healed = time.monotonic() - ready_at
    wait_for(
        lambda: is_ready("e2e-bd-b"),
        timeout=max(1.0, 30 - (time.monotonic() - ready_at)),
        what="e2e-bd-b Ready within 30 s of /readyz",
    )
    onboarded = time.monotonic() - ready_at
    print(f"after /readyz: drift healed in {healed:.1f} s, new Organization Ready in {onboarded:.1f} s")
    assert healed < 30 and onboarded < 30
    wait_for(replicas[2].healthy, timeout=20, what="the replica started during the restart up and alive")
    print(f"the replica started during the restart alive {time.monotonic() - ready_at:.1f} s after /readyz")
    assert all(r.healthy() for r in replicas), "every replica up and alive"
    lease = get("lease", "-n", OPERATOR_NS, "tenantry")
    assert lease and lease["spec"].get("holderIdentity"), "someone leads"


def test_an_admission_refusal_lifted_heals_within_20_s(
    start_operator: OperatorFactory, replicas: list[Operator]
) -> None:
    replicas.append(start_operator("--log-format", "json"))
    apply(org("e2e-bd-c"))
    wait_for(lambda: is_ready("e2e-bd-c"), timeout=90, what="e2e-bd-c Ready")
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
                    "create", "--dry-run=server", "-f", "-", stdin=manifest(probe), check=False
                ).returncode
                != 0
            ),
            timeout=30,
            what="the freeze to refuse a LimitRange",
        )
        kubectl("delete", "limitrange", "-n", "e2e-bd-c-dev", "tenantry-limits")

        def failing() -> dict[str, dict[str, Any]] | None:
            conds = conditions(get("organization", "e2e-bd-c"))
            return conds if conds.get("Ready", {}).get("reason") == "ApplyFailed" else None

        conds = wait_for(failing, timeout=30, what="ApplyFailed while the freeze lasts")
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
    wait_for(
        lambda: get("limitrange", "-n", "e2e-bd-c-dev", "tenantry-limits"),
        timeout=20,
        interval=0.2,
        what="the LimitRange back within 20 s of the freeze's end",
    )
    healed = time.monotonic() - lifted
    print(f"LimitRange back {healed:.1f} s after the policy was removed")
    wait_for(lambda: is_ready("e2e-bd-c"), timeout=20, what="e2e-bd-c Ready again")
    log = replicas[0].output()
    assert '"reconcile failed"' in log and "e2e-bd-c" in log


def test_an_exec_plugin_kubeconfig(
    tmp_path: Path, start_operator: OperatorFactory, replicas: list[Operator]
) -> None:
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
        start_operator(
            "--operator-namespace",
            OPERATOR_NS,
            "--log-format",
            "json",
            kubeconfig=kubeconfig,
            standalone=False,
        )
    )
    apply(org("e2e-bd-x"))
    wait_for(lambda: is_ready("e2e-bd-x"), timeout=90, what="e2e-bd-x Ready with the exec plugin")
    lease = get("lease", "-n", OPERATOR_NS, "tenantry")
    assert lease is not None
    log = replicas[0].output()
    assert "system:anonymous" not in log
    audit = realk8s_dir() / "logs" / "audit.log"
    if audit.exists():
        assert "system:serviceaccount:tenantry-system:tenantry" in audit.read_text()[-5_000_000:]
