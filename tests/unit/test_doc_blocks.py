"""The docs' shell blocks are run, all of them (tests/docblocks.py): every bash block is run by a
test or marked with the reason it cannot be, the commands the troubleshooting and GitOps pages
name in their text are in their blocks, and the README's set-up commands are what CI runs.

The e2e suite runs the blocks on a real control plane (tests/e2e/test_documented_install.py);
this module runs without a cluster, in the default test run."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docblocks import DOCS, MARKER, NOT_OURS, ROOT, RUN_BY, Block, blocks, commands, under

SET_UP = ("README.md", "## Set-up: two commands")
# Pages whose text tells a user to run commands: each such command is in one of their blocks.
COMMAND_PAGES = ("docs/troubleshooting.md", "docs/gitops.md")
COMMAND = re.compile(r"^(kubectl|curl|tenantry|\.venv/bin/tenantry) \S")


def test_every_bash_block_is_run_by_a_test_or_marked_with_why_not() -> None:
    unaccounted = [
        f"{b.doc}:{b.line} ({b.heading})"
        for doc in DOCS
        if doc not in NOT_OURS
        for b in blocks(doc)
        if b.not_run is None and (doc, b.heading) not in RUN_BY
    ]
    assert not unaccounted, (
        "bash blocks no test runs: add them to RUN_BY in tests/docblocks.py and run them, or mark "
        f"them <!-- docs-test: not run: REASON --> in the doc: {unaccounted}"
    )
    assert set(NOT_OURS) <= set(DOCS) and not any(doc in NOT_OURS for doc, _ in RUN_BY)


def test_every_marker_is_well_formed_and_right_above_a_bash_block() -> None:
    for doc in DOCS:
        lines = (ROOT / doc).read_text().splitlines()
        for number, line in enumerate(lines):
            if "docs-test" not in line:
                continue
            assert MARKER.match(line), f"{doc}:{number + 1}: malformed marker {line!r}"
            following = lines[number + 1] if number + 1 < len(lines) else ""
            assert following == "```bash", (
                f"{doc}:{number + 1}: a marker must sit right above a ```bash fence"
            )


@pytest.mark.parametrize(("doc", "heading"), sorted(RUN_BY))
def test_each_block_in_run_by_exists_and_its_test_names_it(doc: str, heading: str) -> None:
    assert under(doc, heading)
    runner = ROOT / RUN_BY[(doc, heading)]
    assert heading in runner.read_text(), f"{runner.name} does not run {doc} {heading!r}"


def test_commands_the_text_names_are_in_the_pages_blocks() -> None:
    for doc in COMMAND_PAGES:
        text = (ROOT / doc).read_text()
        code = "".join(b.text for b in blocks(doc))
        prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
        for span in re.findall(r"`([^`\n]+)`", prose):
            # A command with arguments (not just the name of one, such as `tenantry run`).
            if COMMAND.match(span) and len(span.split()) >= 3:
                assert span in code, f"{doc}: `{span}` is named in the text but is in no bash block"


def test_the_readme_set_up_commands_are_what_ci_runs() -> None:
    (block,) = under(*SET_UP)
    wanted = commands(block)
    assert len(wanted) == 2, wanted
    ci = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    positions = []
    for command in wanted:
        assert command in ci, f".ci/run does not run the README's set-up command {command!r}"
        positions.append(ci.index(command))
    assert positions == sorted(positions), "CI runs the README's set-up commands in another order"


def test_the_readme_render_command_renders_both_examples() -> None:
    (block,) = under(*SET_UP)
    render = commands(block)[0].split("&&")[-1].strip()
    argv = shlex.split(render)
    assert argv[0] == ".venv/bin/tenantry", render
    proc = subprocess.run(
        [sys.executable, "-m", "tenantry", *argv[1:]], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    for namespace in ("acme-prod", "acme-dev", "beta-prod"):
        assert f"name: {namespace}\n" in proc.stdout


def test_the_extractor_reads_headings_markers_and_other_languages(tmp_path: Path) -> None:
    doc = tmp_path / "page.md"
    doc.write_text(
        "# Page\n```bash\necho one\n```\n## Part\n```yaml\na: 1\n```\n"
        "<!-- docs-test: not run: needs Argo CD -->\n```bash\nkubectl -n argocd get cm\n```\n"
        "```bash\necho \\\n  two  # a comment\n# only a comment\n```\n"
    )
    found = blocks(str(doc))
    assert [(b.heading, b.line, b.not_run) for b in found] == [
        ("# Page", 2, None),
        ("## Part", 10, "needs Argo CD"),
        ("## Part", 13, None),
    ]
    assert commands(found[2]) == ["echo    two  # a comment"]
    assert isinstance(found[0], Block) and found[0].text == "echo one\n"
