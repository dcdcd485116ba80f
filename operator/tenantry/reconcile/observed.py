"""The operator's state as metrics, computed when Prometheus scrapes (observe/metrics.STATE).

Nothing here runs on the reconcile path: readiness and quota use of 1,000 Organizations cost
one pass over ~3,000 quotas per scrape instead of work in every reconcile.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from tenantry.api.quantity import QuantityError, parse_quantity
from tenantry.kube.inventory import Inventory
from tenantry.observe.metrics import State
from tenantry.render import labels as lbl
from tenantry.render.access import GRANT_PREFIX


def quota_ratios(hard: Mapping[str, str], used: Mapping[str, str]) -> Iterator[tuple[str, float]]:
    """used / hard per resource of a quota's status; resources without a limit read 0."""
    for resource, limit in sorted(hard.items()):
        try:
            total = parse_quantity(limit)
            ratio = float(parse_quantity(used.get(resource, "0")) / total) if total else 0.0
        except QuantityError:
            continue
        yield resource, ratio


def current_state(inventory: Inventory, organizations: Mapping[str, Any], ready: Mapping[str, str]) -> State:
    """Ready per known Organization; quota use of the environments they have now (a namespace
    retained after its environment was removed is labelled orphaned and not reported)."""
    rows: list[tuple[str, str, str, float]] = []
    for quota in inventory.quotas():
        labels = quota["metadata"].get("labels") or {}
        organization, environment = lbl.owner_of(labels), labels.get(lbl.OWNER_ENVIRONMENT)
        if organization is None or organization not in organizations or environment is None:
            continue
        namespace = inventory.get(("v1", "Namespace", "", quota["metadata"].get("namespace", "")))
        if namespace is None or (namespace["metadata"].get("labels") or {}).get(lbl.ORPHANED):
            continue
        status = quota.get("status") or {}
        for resource, ratio in quota_ratios(status.get("hard") or {}, status.get("used") or {}):
            rows.append((organization, environment, resource, ratio))
    grants: dict[tuple[str, str], int] = {}
    for name in organizations:
        for obj in inventory.owned_by(name):
            meta = obj["metadata"]
            environment = (meta.get("labels") or {}).get(lbl.OWNER_ENVIRONMENT)
            if obj["kind"] == "RoleBinding" and meta["name"].startswith(GRANT_PREFIX) and environment:
                grants[(name, environment)] = grants.get((name, environment), 0) + 1
    return State(
        ready={name: ready.get(name, "Unknown") for name in organizations},
        quota_use=rows,
        active_grants=grants,
    )
