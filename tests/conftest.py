"""Shared test helpers: the examples, and building Organizations from small dicts."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TODAY = dt.date(2026, 11, 26)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture
def acme_doc() -> dict[str, Any]:
    return copy.deepcopy(load_yaml(EXAMPLES / "organization-acme.yaml"))


def minimal_org(name: str = "acme", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"environments": ["prod", "dev"]}
    body.update(spec)
    return {
        "apiVersion": "tenantry.dev/v1alpha1",
        "kind": "Organization",
        "metadata": {"name": name},
        "spec": body,
    }
