"""The docs' shell blocks, read from the docs themselves and run as a reader would run them.

Every ```bash block of README.md and docs/*.md is either run by a test (`RUN_BY` says which)
or carries, on the line right above its fence, a marker saying why it cannot run in the test
environment:

    <!-- docs-test: not run: needs Argo CD (the e2e control plane has none) -->

tests/unit/test_doc_blocks.py fails on a block that is neither (no silent skipping), on a
`RUN_BY` entry whose block is gone, and on a test module in `RUN_BY` that does not name its
block's heading. The e2e tests (tests/e2e/test_documented_install.py) run the blocks verbatim
with bash, in the order a reader meets them, on a real control plane; the README's set-up
block is held equal to `.ci/run`, which CI runs on a fresh clone.

Our own small extractor rather than Sybil or pytest-codeblocks: the blocks of several files
run in one order with shared shell state (`ME` set in one block and used in the next, files
one block writes and the next reads, `kubectl` context), and a block may leave the operator
running in the background for the blocks after it (its pid is kept and it is stopped at the
end); those tools run each block (or each file) as a test of its own and would need glue of
the same size for that. It also adds no dependency.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")))
MARKER = re.compile(r"^<!-- docs-test: not run: (?P<why>\S.*?) -->$")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\s*$")
HEADING = re.compile(r"^#{1,6} \S")

E2E_INSTALL = "tests/e2e/test_documented_install.py"
UNIT = "tests/unit/test_doc_blocks.py"
# (document, heading) -> the test module that runs every bash block under that heading.
RUN_BY: Mapping[tuple[str, str], str] = {
    ("README.md", "## Set-up: two commands"): UNIT,
    ("README.md", "## Running the operator against a cluster"): E2E_INSTALL,
    ("README.md", "### Your first Organization"): E2E_INSTALL,
    ("README.md", "### Running as the operator's identity"): E2E_INSTALL,
    ("docs/install.md", "## Install"): E2E_INSTALL,
    ("docs/install.md", "### An overlay of your own"): E2E_INSTALL,
    ("docs/admission.md", "# Admission guardrails"): E2E_INSTALL,
    ("docs/troubleshooting.md", "# Troubleshooting"): E2E_INSTALL,
    ("docs/troubleshooting.md", "## Progressing"): E2E_INSTALL,
    ("docs/troubleshooting.md", "## QuotaNotInForce"): E2E_INSTALL,
    ("docs/troubleshooting.md", "## InvalidSpec"): E2E_INSTALL,
    ("docs/troubleshooting.md", "## PolicyNotFound"): E2E_INSTALL,
    ("docs/troubleshooting.md", "## InvalidPolicy"): E2E_INSTALL,
    ("docs/troubleshooting.md", "## Operator down"): E2E_INSTALL,
    ("docs/troubleshooting.md", "## Reconciles failing"): E2E_INSTALL,
    ("docs/troubleshooting.md", "## Quota pool exhausted"): E2E_INSTALL,
    ("docs/troubleshooting.md", "## CRD not served"): E2E_INSTALL,
    ("docs/troubleshooting.md", "## Guardrail denials"): E2E_INSTALL,
    ("docs/gitops.md", "# GitOps walkthrough: an Organization in Git to namespaces ready"): E2E_INSTALL,
}
# Pages whose blocks are not ours to mark: docs/performance.md belongs to the benchmark work
# (its blocks run bench/, minutes long on a fake API server, not the docs' reader path).
NOT_OURS: Mapping[str, str] = {
    "docs/performance.md": "benchmark commands (bench/run.py, minutes each), run by the benchmark work",
}


@dataclass(frozen=True)
class Block:
    doc: str
    heading: str  # the nearest heading above it, as written ("## Install")
    line: int  # of the opening fence, 1-based
    text: str
    not_run: str | None  # the marker's reason, if marked


def blocks(doc: str) -> list[Block]:
    """Every ```bash block of `doc` (a path relative to the repository root), in order."""
    lines = (ROOT / doc).read_text().splitlines()
    found: list[Block] = []
    heading, i, fenced_lang = "", 0, None
    while i < len(lines):
        line = lines[i]
        fence = FENCE.match(line)
        if fence and fenced_lang is None:
            fenced_lang = fence["lang"]
            start, body = i, []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            if fenced_lang == "bash":
                marker = MARKER.match(lines[start - 1]) if start else None
                why = marker["why"] if marker else None
                found.append(Block(doc, heading, start + 1, "\n".join(body) + "\n", why))
            fenced_lang = None
        elif HEADING.match(line):
            heading = line.rstrip()
        i += 1
    return found


def under(doc: str, heading: str) -> list[Block]:
    """The bash blocks under `heading` of `doc` that a test runs (marked ones left out)."""
    assert (doc, heading) in RUN_BY, f"{doc} {heading!r} is not in tests/docblocks.py RUN_BY"
    found = [b for b in blocks(doc) if b.heading == heading and b.not_run is None]
    assert found, f"no bash block to run under {heading!r} in {doc}"
    return found


def commands(block: Block) -> list[str]:
    """The block's commands: lines without comments-only lines and blanks, continuation lines
    joined (for comparing with a script, not for running)."""
    joined = block.text.replace("\\\n", " ")
    return [
        line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


@dataclass
class Shell:
    """Runs blocks one after another as a reader's terminal would: `bash -euo pipefail`, the
    repository root (or `cwd`) as working directory, `env` on top of the test's environment.
    Variables a block sets are carried to the next block of the same Shell; a block whose last
    command ends in `&` leaves that job running, its pid in `background`."""

    log: Path
    env: Mapping[str, str]
    cwd: Path = ROOT
    state: Path | None = None
    background: list[int] | None = None

    def run(self, block: Block, cwd: Path | None = None) -> None:
        state = self.state or self.log.with_suffix(".vars")
        self.state = state
        if self.background is None:
            self.background = []
        pidfile = self.log.with_suffix(".pid")
        script = "set -euo pipefail\n"
        if state.exists():
            script += f'source "{state}"\n'
        script += "__before=$(compgen -v | sort)\n" + block.text
        last = block.text.rstrip().splitlines()[-1].split("#")[0].rstrip()
        if last.endswith("&"):
            script += f'echo $! > "{pidfile}"\n'
        # Carried to the next block: the variables this one set (as a terminal keeps them).
        script += (
            'for __v in $(comm -13 <(echo "$__before") <(compgen -v | sort)); do\n'
            f'  [[ $__v == __* ]] || declare -p "$__v" >> "{state}"\n'
            "done\n"
        )
        with self.log.open("a") as out:
            out.write(f"\n### {block.doc}:{block.line} ({block.heading})\n{block.text}")
            out.flush()
            proc = subprocess.run(
                ["bash", "-c", script],
                cwd=cwd or self.cwd,
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if pidfile.exists():
            self.background.append(int(pidfile.read_text()))
            pidfile.unlink()
        assert proc.returncode == 0, (
            f"{block.doc}:{block.line} ({block.heading}) failed ({proc.returncode}):\n{block.text}\n"
            f"{self.log.read_text()[-4000:]}"
        )
