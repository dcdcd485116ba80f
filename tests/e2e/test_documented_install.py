"""The docs, executed on a real control plane: every bash block of README.md and docs/*.md that
tests/docblocks.py's RUN_BY gives to this module, verbatim, in the order a reader meets them.

1. README, "Running the operator against a cluster" then "Your first Organization": the
   operator as the reader's own admin identity (`~/.kube/config`: HOME is a temporary
   directory holding the e2e kubeconfig there), no admission policies.
2. docs/install.md's Install, README's "Running as the operator's identity", "Your first
   Organization" again (the example applies as shipped after exactly the documented edit),
   then what docs/troubleshooting.md tells a user to run (against that `acme`) and the GitOps
   walkthrough's commands (in a Git-repository-like directory holding `organizations/acme.yaml`
   and the cluster's `policy.yaml`).
3. docs/admission.md's block on its own.
4. docs/install.md's "An overlay of your own", on a cluster with and without the Prometheus
   Operator's CRDs (test stand-ins: the CRDs only, no operator behind them).

Blocks run through tests/docblocks.py (one extractor, ours; its docstring says why not Sybil
or pytest-codeblocks): shared shell state, files one block writes for the next, and the
operator a block leaves running in the background for the blocks after it. Everything
installed is removed afterwards (the admission policies would refuse every later test's
operator), except what the suite keeps anyway (the CRDs, the tenant roles, `tenantry-system`).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.docblocks import Shell, under
from tests.e2e.conftest import KUBECONFIG, ROOT, apply, get, install_stand_in_crd, kubectl, ready

pytestmark = pytest.mark.skipif(
    not KUBECONFIG, reason="TENANTRY_E2E_KUBECONFIG is not set: no real cluster to run the e2e suite against"
)

README_RUN = ("README.md", "## Running the operator against a cluster")
FIRST_ORGANIZATION = ("README.md", "### Your first Organization")
INSTALL = ("docs/install.md", "## Install")
OVERLAY = ("docs/install.md", "### An overlay of your own")
IDENTITY = ("README.md", "### Running as the operator's identity")
ADMISSION = ("docs/admission.md", "# Admission guardrails")
TROUBLESHOOTING = [
    ("docs/troubleshooting.md", heading)
    for heading in (
        "# Troubleshooting",
        "## Progressing",
        "## QuotaNotInForce",
        "## InvalidSpec",
        "## PolicyNotFound",
        "## InvalidPolicy",
        "## Operator down",
        "## Reconciles failing",
        "## Quota pool exhausted",
        "## CRD not served",
        "## Guardrail denials",
    )
]
GITOPS = ("docs/gitops.md", "# GitOps walkthrough: an Organization in Git to namespaces ready")
# Files the blocks run from the repository root write there (a reader's working directory).
WRITTEN = ("tenantry-ca.crt", "tenantry.kubeconfig", "org.yaml", "policy.yaml")
ADMISSION_KUSTOMIZATIONS = (
    "admission",
    "admission/placement",
    "admission/image-pulls",
    "admission/finalizer",
)
ACME_NAMESPACES = ("acme-prod", "acme-staging", "acme-dev")


def on_path() -> str:
    """`tenantry` as the docs call it (this interpreter's venv), and kubectl as the suite has it."""
    return f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def stop(pids: list[int]) -> None:
    """Stop the operators the blocks left running (`tenantry run ... &`), and wait until they
    are gone: the next one listens on the same ports."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)


def remove_acme(shell: Shell) -> None:
    """The example Organization deleted while its operator runs (so its finalizer is released),
    then the operator stopped and the namespaces deleted, waited for: the next test starts as
    on a cluster that never had them."""
    kubectl("delete", "-f", str(ROOT / "examples/organization-acme.yaml"), "--ignore-not-found", check=False)
    kubectl("wait", "--for=delete", "organization/acme", "--timeout=60s", check=False)
    stop(shell.background or [])
    for namespace in ACME_NAMESPACES:
        kubectl("delete", "namespace", namespace, "--ignore-not-found", "--timeout=90s", check=False)


def uninstall(*, delete_policy: bool) -> None:
    """What an install block put in besides what the suite keeps (the CRDs, the tenant roles,
    `tenantry-system`): the admission policies (they would refuse every later test's operator),
    the Deployment, and the TenancyPolicy `default` when asked."""
    for kustomization in ADMISSION_KUSTOMIZATIONS:
        kubectl("delete", "-k", str(ROOT / "manifests" / kustomization), "--ignore-not-found", check=False)
    if delete_policy:
        kubectl("delete", "tenancypolicy", "default", "--ignore-not-found", check=False)
    kubectl("delete", "deployment", "tenantry", "-n", "tenantry-system", "--ignore-not-found", check=False)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """pytest's own (kept after a failure): blocks.log there has every block and its output."""
    return tmp_path


@pytest.fixture
def repository_root_kept_clean() -> Iterator[None]:
    written = [ROOT / name for name in WRITTEN]
    assert not any(p.exists() for p in written), f"the blocks write these in the repository root: {WRITTEN}"
    yield
    for path in written:
        path.unlink(missing_ok=True)


def test_the_readme_run_without_admission_policies(workdir: Path) -> None:
    home = workdir / "home"
    (home / ".kube").mkdir(parents=True)
    shutil.copy(str(KUBECONFIG), home / ".kube" / "config")
    # KUBECONFIG empty: kubectl and `tenantry run --kubeconfig ~/.kube/config` read HOME's.
    shell = Shell(log=workdir / "blocks.log", env={"HOME": str(home), "KUBECONFIG": "", "PATH": on_path()})
    try:
        for block in under(*README_RUN):
            shell.run(block)
        assert shell.background, "the operator was started in the background"
        for block in under(*FIRST_ORGANIZATION):
            shell.run(block)
        ready("acme")
    finally:
        remove_acme(shell)


def test_install_then_the_example_organization_troubleshooting_and_gitops_in_one_pass(
    workdir: Path, repository_root_kept_clean: None
) -> None:
    policy_existed = get("tenancypolicy", "default") is not None
    shell = Shell(log=workdir / "blocks.log", env={"KUBECONFIG": str(KUBECONFIG), "PATH": on_path()})
    try:
        for section in (INSTALL, IDENTITY):
            for block in under(*section):
                shell.run(block)
        assert shell.background, "the operator was started in the background"
        for block in under(*FIRST_ORGANIZATION):
            shell.run(block)
        ready("acme")

        for section in TROUBLESHOOTING:
            for block in under(*section):
                shell.run(block)

        # The GitOps walkthrough runs in the Git repository of the Organizations and the policy.
        repository = workdir / "gitops"
        (repository / "organizations").mkdir(parents=True)
        shutil.copy(ROOT / "examples/organization-acme.yaml", repository / "organizations/acme.yaml")
        policy = kubectl("get", "tenancypolicy", "default", "-o", "yaml").stdout
        (repository / "policy.yaml").write_text(policy)
        for block in under(*GITOPS):
            shell.run(block, cwd=repository)
        rendered = (repository / "acme.rendered.yaml").read_text()
        assert "name: acme-prod\n" in rendered
    finally:
        remove_acme(shell)
        # The install made the policy with the reader as a platform admin: not for later modules.
        uninstall(delete_policy=not policy_existed)


def test_the_admission_page_installs_its_policies_all_or_nothing(workdir: Path) -> None:
    policy_existed = get("tenancypolicy", "default") is not None
    shell = Shell(log=workdir / "blocks.log", env={"KUBECONFIG": str(KUBECONFIG), "PATH": on_path()})
    try:
        for block in under(*ADMISSION):
            shell.run(block)
        assert get("validatingadmissionpolicy", "tenantry-protect-namespace-labels") is not None
        assert get("validatingadmissionpolicybinding", "tenantry-protect-namespace-labels") is not None
    finally:
        kubectl("delete", "-k", str(ROOT / "manifests/admission"), "--ignore-not-found", check=False)
        if not policy_existed:
            kubectl("delete", "tenancypolicy", "default", "--ignore-not-found", check=False)


PROMETHEUS_KINDS = {"prometheusrules": "PrometheusRule", "servicemonitors": "ServiceMonitor"}


def built(kustomization: str) -> list[dict[str, Any]]:
    """What `kubectl kustomize manifests/<kustomization>` gives: the objects the apply should leave."""
    text = kubectl("kustomize", str(ROOT / "manifests" / kustomization)).stdout
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.mark.parametrize(
    "prometheus_operator", [False, True], ids=["no-prometheus-operator", "prometheus-operator"]
)
def test_the_overlay_installs_in_one_pass(workdir: Path, prometheus_operator: bool) -> None:
    # The overlay brings its own TenancyPolicy `default`: a reader's cluster has none yet.
    previous = get("tenancypolicy", "default")
    if previous is not None:
        kubectl("delete", "tenancypolicy", "default")
    if prometheus_operator:
        for plural, kind in PROMETHEUS_KINDS.items():
            install_stand_in_crd("monitoring.coreos.com", kind, plural)
    shell = Shell(log=workdir / "blocks.log", env={"KUBECONFIG": str(KUBECONFIG), "PATH": on_path()})
    try:
        blocks = under(*OVERLAY)
        for block in blocks:
            shell.run(block)
        output = (workdir / "blocks.log").read_text()
        for block in blocks:
            output = output.replace(block.text, "")  # what the commands printed, not what they are

        policy = get("tenancypolicy", "default")
        assert policy is not None, "the overlay's TenancyPolicy default"
        # kubectl reports each object as it applies it: the bindings' parameter went in first, so
        # no binding ever denied for want of it (parameterNotFoundAction: Deny).
        applied = output.index("tenancypolicy.tenantry.dev/default serverside-applied")
        assert applied < output.index("validatingadmissionpolicybinding.admissionregistration.k8s.io/")
        # Every guardrail and binding of the overlay is in the cluster (none refused on the way).
        for obj in built("overlays/example"):
            if obj["kind"].startswith("ValidatingAdmissionPolicy"):
                name = obj["metadata"]["name"]
                assert get(obj["kind"].lower(), name) is not None, f"{obj['kind']} {name} missing"
        deployment = get("deployment", "tenantry", "-n", "tenantry-system")
        assert deployment is not None
        image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image == "registry.example.com/platform/tenantry:0.1.0", image

        if prometheus_operator:
            assert "monitoring skipped" not in output
            assert get("prometheusrule", "tenantry", "-n", "tenantry-system") is not None
            assert get("servicemonitor", "tenantry", "-n", "tenantry-system") is not None
            assert get("configmap", "tenantry-grafana-dashboards", "-n", "tenantry-system") is not None
        else:
            assert "monitoring skipped: install the Prometheus Operator" in output
            assert get("configmap", "tenantry-grafana-dashboards", "-n", "tenantry-system") is None
    finally:
        if prometheus_operator:
            kubectl("delete", "-k", str(ROOT / "manifests/monitoring"), "--ignore-not-found", check=False)
            for plural in PROMETHEUS_KINDS:
                kubectl("delete", "crd", f"{plural}.monitoring.coreos.com", "--ignore-not-found", check=False)
        uninstall(delete_policy=True)  # kubectl delete waits until it is gone
        if previous is not None:
            metadata = previous["metadata"]
            restored = {
                "apiVersion": previous["apiVersion"],
                "kind": previous["kind"],
                "metadata": {k: metadata[k] for k in ("name", "labels", "annotations") if k in metadata},
                "spec": previous["spec"],
            }
            apply(restored)
