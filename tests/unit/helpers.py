"""Small queries over rendered objects, so tests read like the rules they check."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tenantry.api.organization import Organization
from tenantry.api.policy import TenancyPolicy, builtin_default_policy
from tenantry.render import Rendering, render_organization

TODAY = dt.date(2026, 11, 26)


def render(doc: dict[str, Any], policy: TenancyPolicy | None = None, today: dt.date = TODAY) -> Rendering:
    return render_organization(Organization.model_validate(doc), policy or builtin_default_policy(), today)


def find(objects: list[dict[str, Any]], kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    for obj in objects:
        meta = obj["metadata"]
        if obj["kind"] == kind and meta["name"] == name and meta.get("namespace") == namespace:
            return obj
    raise AssertionError(
        f"no {kind} {namespace}/{name} among {[(o['kind'], o['metadata']['name']) for o in objects]}"
    )


def names(objects: list[dict[str, Any]], kind: str, namespace: str | None = None) -> list[str]:
    return [
        o["metadata"]["name"]
        for o in objects
        if o["kind"] == kind and o["metadata"].get("namespace") == namespace
    ]


def allows(role: dict[str, Any], group: str, resource: str, verb: str) -> bool:
    """Does a (Cluster)Role's rules grant `verb` on `group/resource`? (no wildcards are used)"""
    for rule in role["rules"]:
        if group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]:
            return True
    return False
