"""The e2e harness: one way to talk to the real cluster, wait on it and run the operator.

Every e2e module imports from here (`from tests.e2e.conftest import ...`) and marks itself
`pytestmark = needs_cluster`: without TENANTRY_E2E_KUBECONFIG (CI has no cluster) it is skipped.

What the harness promises, because a real cluster punished each of these once (issue 15):
- every kubectl call has a server-side `--request-timeout` and a local subprocess timeout;
- every wait has a timeout and says what it waited for;
- an operator started by a test logs to a file under pytest's tmp dir (a pipe nobody reads
  blocks the operator after 64 KiB), its log tail is attached to a failing test's report, and it
  is always stopped (terminate, then kill), whatever the test did;
- admission policies a module installs are removed when that module ends (`admission_installed`),
  so the next module's operator is not refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import minimal_org

KUBECONFIG = os.environ.get("TENANTRY_E2E_KUBECONFIG")
ROOT = Path(__file__).resolve().parents[2]

needs_cluster = pytest.mark.skipif(
    not KUBECONFIG, reason="TENANTRY_E2E_KUBECONFIG is not set: no real cluster to run the e2e suite against"
)

# The API server answers in milliseconds; a request that takes longer than this is a hung cluster.
REQUEST_TIMEOUT = "30s"
# kubectl's own budget on top (start-up, discovery, a `wait` that has its own --timeout).
SUBPROCESS_TIMEOUT = 150.0
# How long an Organization may take to become Ready after a write (a few seconds on a real
# control plane; the rest is headroom for a busy machine).
READY_TIMEOUT = 90.0
# How long a stopping operator gets between SIGTERM and SIGKILL.
STOP_GRACE = 15.0

# The identity the admission policies (manifests/admission) let write what Tenantry manages.
OPERATOR_SA_NAMESPACE = "tenantry-system"
OPERATOR_SA_NAME = "tenantry"
OPERATOR_SA = f"system:serviceaccount:{OPERATOR_SA_NAMESPACE}:{OPERATOR_SA_NAME}"


# --- kubectl -----------------------------------------------------------------------------------


def kubectl(
    *args: str,
    stdin: str | None = None,
    check: bool = True,
    kubeconfig: str | Path | None = None,
    timeout: float = SUBPROCESS_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run kubectl against the e2e cluster (as its admin, or as `kubeconfig`'s user)."""
    config = kubeconfig or KUBECONFIG
    assert config is not None, "TENANTRY_E2E_KUBECONFIG is not set"
    command = ["kubectl", "--kubeconfig", str(config), f"--request-timeout={REQUEST_TIMEOUT}", *args]
    try:
        proc = subprocess.run(
            command, input=stdin, capture_output=True, text=True, check=False, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"kubectl {' '.join(args)}: no answer within {timeout:.0f} s") from exc
    if check and proc.returncode:
        raise AssertionError(f"kubectl {' '.join(args)}: {proc.stderr}")
    return proc


def manifest(obj: dict[str, Any]) -> str:
    """An object as kubectl's stdin: JSON, not YAML. PyYAML writes the string "n" unquoted and
    kubectl reads YAML 1.1, where `n` is a boolean (seen on 1.36.2: "cannot unmarshal bool into
    Go struct field PodSpec.spec.nodeName of type string")."""
    return json.dumps(obj)


def get(*args: str, kubeconfig: str | Path | None = None) -> dict[str, Any] | None:
    """The object as JSON, or None when kubectl cannot get it (not found, or not allowed)."""
    proc = kubectl("get", *args, "-o", "json", check=False, kubeconfig=kubeconfig)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def apply(
    obj: dict[str, Any],
    *,
    force: bool = True,
    check: bool = True,
    impersonate: tuple[str, ...] = (),
    dry_run: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Server-side apply of one object as kubectl's field manager (conflicts forced by default:
    the tests, not the operator, decide what the object says)."""
    args = ["apply", "--server-side", "-f", "-"]
    if force:
        args.append("--force-conflicts")
    if dry_run:
        args.append("--dry-run=server")
    return kubectl(*impersonate, *args, stdin=manifest(obj), check=check)


def delete(*args: str, wait: bool = False, timeout: str = "120s") -> None:
    """Delete, ignoring what is not there; `wait` blocks until it is gone (with a timeout)."""
    extra = ["--wait=true", f"--timeout={timeout}"] if wait else ["--wait=false"]
    kubectl("delete", *args, "--ignore-not-found", *extra, check=False)


def impersonating(user: str, *groups: str) -> tuple[str, ...]:
    """kubectl's impersonation flags for `user` in `groups` (the admin may impersonate anyone)."""
    flags: tuple[str, ...] = ("--as", user)
    for group in groups:
        flags += ("--as-group", group)
    return flags


def can(
    verb: str,
    resource: str,
    namespace: str,
    *groups: str,
    user: str = "e2e-person",
    subresource: str | None = None,
    kubeconfig: Path | None = None,
) -> bool:
    """`kubectl auth can-i` as `user` in `groups` (impersonated by the admin), or as the user of
    `kubeconfig` (its own credentials, no impersonation): the API server's own RBAC decision.

    A subresource goes in `--subresource`: `can-i create pods/exec` asks about a pod *named*
    exec, which no role mentions, so it would answer "no" for every exec grant."""
    assert "/" not in resource, f"pass the subresource of {resource} as subresource="
    who = () if kubeconfig else impersonating(user, *groups)
    args = ["auth", "can-i", verb, resource, "-n", namespace, *who]
    if subresource:
        args += ["--subresource", subresource]
    proc = kubectl(*args, check=False, kubeconfig=kubeconfig)
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl auth can-i {verb} {resource}: {proc.stderr}"
    return answer == "yes"


def user_kubeconfig(user: str) -> Path:
    """The kubeconfig of another user (alice, bob, operator...) of the e2e cluster: a file
    `<user>.kubeconfig` beside TENANTRY_E2E_KUBECONFIG. Skips the test when there is none."""
    assert KUBECONFIG is not None
    path = Path(KUBECONFIG).parent / f"{user}.kubeconfig"
    if not path.is_file():
        pytest.skip(f"no {path.name} beside TENANTRY_E2E_KUBECONFIG")
    return path


# --- waiting -----------------------------------------------------------------------------------


def wait_for(check: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.5) -> Any:
    """Call `check` until it returns something truthy (returned), at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def conditions(obj: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions", [])}


def ready(name: str, timeout: float = READY_TIMEOUT) -> dict[str, Any]:
    """The Organization once Ready for its current generation."""

    def check() -> dict[str, Any] | None:
        obj = get("organization", name)
        if not obj or conditions(obj).get("Ready", {}).get("status") != "True":
            return None
        return obj if obj["status"].get("observedGeneration") == obj["metadata"]["generation"] else None

    result: dict[str, Any] = wait_for(check, timeout=timeout, what=f"Organization {name} to be Ready")
    return result


def org(name: str, **spec: Any) -> dict[str, Any]:
    """A minimal Organization (prod and dev) with an admins group, for the default policy."""
    spec.setdefault("members", {"admins": [{"kind": "Group", "name": f"{name}-admins"}]})
    return minimal_org(name, **spec)


def served(group_version: str) -> bool:
    return kubectl("get", "--raw", f"/apis/{group_version}", check=False).returncode == 0


# --- what the suite installs -------------------------------------------------------------------


def install_crds_and_roles() -> None:
    """crds/ (Established) and the shared tenant ClusterRoles the operator binds."""
    kubectl("apply", "--server-side", "-k", str(ROOT / "crds"))
    kubectl("apply", "--server-side", "-f", str(ROOT / "manifests/base/tenant-roles.yaml"))
    for crd in ("organizations.tenantry.dev", "tenancypolicies.tenantry.dev"):
        kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")


def install_stand_in_crd(
    group: str, kind: str, plural: str, annotations: dict[str, str] | None = None
) -> str:
    """A CRD of another project (Gateway API, the Prometheus Operator) with its names and a
    schema that accepts any content, Established; its name is returned. For tests of what our
    manifests and policies do once such a CRD is installed, not of the other project."""
    name = f"{plural}.{group}"
    metadata: dict[str, Any] = {"name": name}
    if annotations:
        metadata["annotations"] = annotations
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": metadata,
        "spec": {
            "group": group,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                }
            ],
        },
    }
    apply(crd)
    kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    return name


def install_operator_identity() -> None:
    """The operator's ServiceAccount and its RBAC from manifests/base (namespace, ServiceAccount,
    ClusterRole and bindings; not the Deployment), so that impersonating it, or running as it,
    has exactly the rights the shipped install gives."""
    for name in ("namespace.yaml", "serviceaccount.yaml", "operator-rbac.yaml"):
        kubectl("apply", "--server-side", "-f", str(ROOT / "manifests/base" / name))


def serviceaccount_kubeconfig(directory: Path, namespace: str, name: str) -> Path:
    """A kubeconfig that authenticates as a ServiceAccount with a short-lived token from
    `kubectl create token` (the TokenRequest API), for the e2e cluster's server and CA."""
    assert KUBECONFIG is not None
    token = kubectl("create", "token", name, "-n", namespace, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(Path(KUBECONFIG).read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
    cluster = next(c for c in admin["clusters"] if c["name"] == context["cluster"])["cluster"]
    cluster = dict(cluster)
    authority = cluster.get("certificate-authority")
    if authority and not Path(authority).is_absolute():  # relative to the admin kubeconfig
        cluster["certificate-authority"] = str(Path(KUBECONFIG).parent / authority)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": cluster}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": "e2e", "user": name}}],
        "current-context": name,
    }
    path = directory / f"{namespace}-{name}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def admission_installed(*kustomizations: Path) -> Iterator[None]:
    """Admission policies applied for a block and removed after it, even when it fails: the
    policies refuse writes by anyone but the operator's ServiceAccount, so one left installed
    makes every later operator (a certificate user) fail."""
    try:
        for path in kustomizations:
            kubectl("apply", "--server-side", "-k", str(path))
        yield
    finally:
        for path in reversed(kustomizations):
            kubectl("delete", "-k", str(path), "--ignore-not-found", check=False)


# --- the operator as a process -----------------------------------------------------------------


def free_port() -> int:
    """A loopback port nobody listens on now (engineers share the machine: no fixed ports)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Operator:
    """One `tenantry run` process whose output goes to `log`."""

    proc: subprocess.Popen[bytes]
    log: Path
    args: tuple[str, ...]
    _stopped: bool = field(default=False, repr=False)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def healthy(self) -> bool:
        """Running, and its liveness endpoint answers 200 (what the kubelet would ask)."""
        if not self.alive():
            return False
        url = self.args[self.args.index("--liveness") + 1]
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 80) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def wait(self, timeout: float) -> int:
        """The exit code once the process ends by itself (within `timeout`)."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"the operator did not exit within {timeout:.0f} s: {self.tail(20)}"
            ) from exc

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_GRACE seconds; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_GRACE)


# Operators that a failing test's report shows the log tail of: every one still running, and
# every one started during the current test.
_RUNNING: list[Operator] = []
_STARTED_IN_TEST: list[Operator] = []


class OperatorFactory:
    """Starts operators and stops every one it started when closed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[Operator] = []

    def __call__(
        self, *args: str, kubeconfig: str | Path | None = None, standalone: bool = True, resync: int = 20
    ) -> Operator:
        config = kubeconfig or KUBECONFIG
        assert config is not None
        command = [
            sys.executable, "-m", "tenantry", "run",
            "--kubeconfig", str(config),
            "--metrics-port", "0",
            "--resync-seconds", str(resync),
            "--log-format", "console",
        ]  # fmt: skip
        if standalone:
            command.append("--standalone")
        if not any(a.startswith("--liveness") for a in args):
            command += ["--liveness", f"http://127.0.0.1:{free_port()}/healthz"]
        command += args
        return self.spawn(command)

    def spawn(self, command: list[str]) -> Operator:
        """Run `command` with its output in a new log file, tracked like an operator."""
        log = self.directory / f"operator-{len(self.started) + 1}.log"
        with log.open("wb") as out:  # the child keeps its own descriptor
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        operator = Operator(proc, log, tuple(command))
        self.started.append(operator)
        _RUNNING.append(operator)
        _STARTED_IN_TEST.append(operator)
        return operator

    def close(self) -> None:
        for operator in reversed(self.started):
            operator.stop()
            if operator in _RUNNING:
                _RUNNING.remove(operator)


@pytest.fixture
def start_operator(tmp_path: Path) -> Iterator[OperatorFactory]:
    """Start `tenantry run` processes for one test; all are stopped when it ends."""
    factory = OperatorFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="module")
def start_module_operator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorFactory]:
    """The same for operators that serve a whole module."""
    factory = OperatorFactory(tmp_path_factory.mktemp("operators"))
    try:
        yield factory
    finally:
        factory.close()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _STARTED_IN_TEST.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not report.failed:
        return
    shown = [*_RUNNING, *(o for o in _STARTED_IN_TEST if o not in _RUNNING)]
    for operator in shown:
        state = "running" if operator.alive() else f"exited {operator.proc.returncode}"
        report.sections.append((f"operator log ({state}) {operator.log}", operator.tail()))


def pytest_sessionfinish(session: pytest.Session) -> None:
    # Belt and braces: a fixture that never ran its teardown (an interrupted run) leaves nothing.
    for operator in list(_RUNNING):
        operator.stop()
