"""Docs that on-call engineers rely on must name what the code actually emits."""

from __future__ import annotations

import re

from tenantry.observe.metrics import REGISTRY
from tenantry.reconcile import reasons
from tests.conftest import ROOT


def test_every_reason_has_a_troubleshooting_section() -> None:
    headings = set(re.findall(r"^## (\w+)$", (ROOT / "docs" / "troubleshooting.md").read_text(), re.M))
    missing = set(reasons.ALL) - headings
    assert not missing, f"docs/troubleshooting.md lacks sections for {sorted(missing)}"
    stale = headings - set(reasons.ALL)
    assert not stale, f"docs/troubleshooting.md documents reasons the code never emits: {sorted(stale)}"


def test_every_exported_metric_is_documented() -> None:
    text = (ROOT / "docs" / "metrics.md").read_text()
    for family in REGISTRY.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{name}`" in text, f"docs/metrics.md does not document {name}"


def test_the_reason_list_is_complete() -> None:
    constants = {v for k, v in vars(reasons).items() if k.isupper() and isinstance(v, str)}
    assert constants == set(reasons.ALL)
