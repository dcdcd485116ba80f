"""The operator's state as metrics, computed when Prometheus scrapes (observe/metrics.STATE).

Nothing here runs on the reconcile path: readiness and quota use of 1,000 Organizations cost
one pass over ~3,000 quotas per scrape instead of work in every reconcile.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from tenantry.api.quantity import QuantityError, parse_quantity
from tenantry.kube.inventory import Inventory
from tenantry.observe import metrics
from tenantry.observe.metrics import State
from tenantry.reconcile.cluster import PoolView
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


def current_state(
    inventory: Inventory,
    organizations: Mapping[str, Any],
    ready: Mapping[str, str],
    pools: Mapping[str, PoolView] | None = None,
) -> State:
    """Ready per known Organization; quota use of the environments they have now (a namespace
    retained after its environment was removed is labelled orphaned and not reported).

    Quota use is a generator, read while the scrape writes it out (27,000 rows at 1,000
    Organizations; see StateFamily.streamed)."""
    known = set(organizations)
    return State(
        ready={name: ready.get(name, "Unknown") for name in known},
        quota_use=_quota_use(inventory, known),
        active_grants=_active_grants(inventory, known),
        pools=pool_rows([v for name, v in (pools or {}).items() if name in known]),
    )


def _in_base_units(resource: str, amount: int) -> float:
    """Units of render/pool.py (millicores for CPU) as Prometheus' base units (cores)."""
    return amount / 1000 if resource.endswith(".cpu") else float(amount)


def pool_rows(views: list[PoolView]) -> dict[str, list[tuple[tuple[str, ...], float]]]:
    """The pool metric families' rows, from each pool as last rebalanced."""
    rows: dict[str, list[tuple[tuple[str, ...], float]]] = {f.name: [] for f in metrics.POOL_FAMILIES}
    for view in sorted(views, key=lambda v: v.organization):
        org = view.organization
        for r, total, _, used, exhausted in view.resources:
            rows[metrics.POOL_SIZE.name].append(((org, r), _in_base_units(r, total)))
            rows[metrics.POOL_USED.name].append(((org, r), _in_base_units(r, used)))
            rows[metrics.POOL_EXHAUSTED.name].append(((org, r), 1.0 if exhausted else 0.0))
        for namespace, _, hard, used_by in view.namespaces:
            for r, amount in hard.items():
                if amount is not None:
                    rows[metrics.POOL_NAMESPACE_HARD.name].append(
                        ((org, namespace, r), _in_base_units(r, amount))
                    )
            for r, amount in used_by.items():
                rows[metrics.POOL_NAMESPACE_USED.name].append(
                    ((org, namespace, r), _in_base_units(r, amount))
                )
    return rows


def _quota_use(inventory: Inventory, organizations: set[str]) -> Iterator[tuple[str, str, str, float]]:
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
            yield organization, environment, resource, ratio


def _active_grants(inventory: Inventory, organizations: set[str]) -> dict[tuple[str, str], int]:
    """Grant RoleBindings per (organization, environment). Chosen by key (kind and name), so
    only those few are unpacked, not the ~40 objects of every Organization."""
    grants: dict[tuple[str, str], int] = {}
    for name in organizations:
        for key in inventory.owned_keys(name):
            if key[1] != "RoleBinding" or not key[3].startswith(GRANT_PREFIX):
                continue
            obj = inventory.get(key)
            environment = ((obj or {}).get("metadata", {}).get("labels") or {}).get(lbl.OWNER_ENVIRONMENT)
            if environment:
                grants[(name, environment)] = grants.get((name, environment), 0) + 1
    return grants
