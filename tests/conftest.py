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


def rfc3339(when: dt.datetime) -> str:
    """A timestamp as grants carry it (RFC 3339, UTC, whole seconds)."""
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def grant_spec(
    *,
    expires: dt.datetime,
    approved_at: dt.datetime | None = None,
    approved_by: str = "lead@acme.example",
    name: str = "inc-4711",
    subject: str = "dana",
    requested_by: str = "dana@acme.example",
    reason: str = "incident 4711",
    ticket: str = "INC-4711",
    elevation: str = "developer-exec",
    environment: str = "prod",
) -> dict[str, Any]:
    """One entry of an Organization's spec.access.grants (approved when `approved_at` is given)."""
    grant: dict[str, Any] = {
        "name": name,
        "subject": {"kind": "Group", "name": subject},
        "elevation": elevation,
        "environment": environment,
        "reason": reason,
        "ticket": ticket,
        "requestedBy": requested_by,
        "expires": rfc3339(expires),
    }
    if approved_at is not None:
        grant["approval"] = {"approvedBy": approved_by, "approvedAt": rfc3339(approved_at)}
    return grant
