"""The documented install, executed: docs/install.md's Install block, README's "Running as the
operator's identity" block, then the example Organization applied as shipped and Ready.

The shell blocks are read from the docs themselves (a doc that drifts from behaviour fails here)
and run verbatim with bash, in order, from the repository root, against the e2e cluster
(`KUBECONFIG`). A small extractor rather than Sybil or pytest-codeblocks: the blocks must run in
one order across two files, with shared shell state (`ME`, files written by one block and read by
the next) and an operator left running in the background, none of which those tools do without
glue of the same size; and it adds no dependency. Everything installed is removed afterwards
(the admission policies last installed would refuse every later test's operator).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import KUBECONFIG, ROOT, get, kubectl, ready

pytestmark = pytest.mark.skipif(
    not KUBECONFIG, reason="TENANTRY_E2E_KUBECONFIG is not set: no real cluster to run the e2e suite against"
)


def bash_block(doc: str, heading: str) -> str:
    """The first ```bash block under `heading` of `doc`."""
    text = (ROOT / doc).read_text()
    section = text.split(f"{heading}\n", 1)[1]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, f"no bash block under {heading!r} in {doc}"
    return match.group(1)


def run_block(block: str, workdir: Path, log: Path, pidfile: Path) -> None:
    """Run one block with bash -e in `workdir` (a copy-free run: paths are relative to the repo
    root, so the repo root is the working directory); a background job's pid goes to `pidfile`."""
    script = "set -euo pipefail\n" + block
    if block.rstrip().splitlines()[-1].split("#")[0].rstrip().endswith("&"):
        script += f'\necho $! > "{pidfile}"\n'
    env = {**os.environ, "KUBECONFIG": str(KUBECONFIG), "TENANTRY_DOC_TMP": str(workdir)}
    with log.open("a") as out:
        proc = subprocess.run(
            ["bash", "-c", script], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, check=False
        )
    assert proc.returncode == 0, (
        f"documented block failed ({proc.returncode}):\n{block}\n{log.read_text()[-3000:]}"
    )


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="tenantry-docs-") as path:
        yield Path(path)


def test_install_then_the_example_organization_in_one_pass(workdir: Path) -> None:
    log, pidfile = workdir / "blocks.log", workdir / "operator.pid"
    created = [ROOT / name for name in ("tenantry-ca.crt", "tenantry.kubeconfig")]
    assert not any(p.exists() for p in created), "the README recipe writes these in the working directory"
    policy_existed = get("tenancypolicy", "default") is not None
    try:
        run_block(bash_block("docs/install.md", "## Install"), workdir, log, pidfile)
        run_block(bash_block("README.md", "### Running as the operator's identity"), workdir, log, pidfile)
        assert pidfile.exists(), "the operator was started in the background"
        # The example as shipped, with the README's own commands.
        run_block(bash_block("README.md", "### Your first Organization"), workdir, log, pidfile)
        ready("acme")
    finally:
        kubectl(
            "delete", "-f", str(ROOT / "examples/organization-acme.yaml"), "--ignore-not-found", check=False
        )
        if pidfile.exists():
            try:
                kubectl("wait", "--for=delete", "organization/acme", "--timeout=60s", check=False)
                os.kill(int(pidfile.read_text()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
        for kustomization in ("admission", "admission/placement", "admission/image-pulls"):
            path = str(ROOT / "manifests" / kustomization)
            kubectl("delete", "-k", path, "--ignore-not-found", check=False)
        # The install made it, with the reader as a platform admin: not for later modules.
        if not policy_existed:
            kubectl("delete", "tenancypolicy", "default", "--ignore-not-found", check=False)
        kubectl(
            "delete", "deployment", "tenantry", "-n", "tenantry-system", "--ignore-not-found", check=False
        )
        for env in ("prod", "staging", "dev"):
            kubectl("delete", "namespace", f"acme-{env}", "--ignore-not-found", "--wait=false", check=False)
        for path in created:
            path.unlink(missing_ok=True)
