"""A quota pool: one budget per quota resource, shared by several environments of an Organization.

Kubernetes has no cross-namespace quota; each namespace's ResourceQuota is enforced atomically
by the API server's quota admission. A pool is therefore a split of its totals into the
`tenantry-quota` of each pooled namespace, moved by the operator where it is used, such that
the namespaces' `hard` values never add up to more than the pool (docs/quota-pool.md).

What one object can say about itself is checked here (floors and ceilings name pooled
environments and pooled resources; the floors fit in the totals; a floor is not above its
ceiling). What needs the policy (environments that exist, raising a pool needs
`quotaApproval`) is in render/checks.py.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from tenantry.api.base import (
    MAX_ENVIRONMENTS,
    DNSLabel,
    Model,
    ResourceList,
    cel,
    duplicates,
)
from tenantry.api.quantity import parse_quantity


def _unique(value: list[str]) -> list[str]:
    dupes = duplicates(value)
    if dupes:
        raise ValueError(f"duplicate entries: {', '.join(dupes)}")
    return value


def _not_empty(value: list[str]) -> list[str]:
    if not value:
        raise ValueError("a pool needs at least one environment; leave the field out for all of them")
    return value


PoolEnvironments = Annotated[list[DNSLabel], AfterValidator(_unique), AfterValidator(_not_empty)]


def _within(field: str) -> str:
    return f"!has(self.{field}) || !has(self.environments) || self.{field}.all(e, e in self.environments)"


class QuotaPool(Model):
    """Totals shared by the pooled environments' namespaces, with per-environment bounds.

    `total` lists the pooled resources (the others stay per environment, from the policy and
    `spec.quota`). A floor is what a namespace always keeps (when the pool has it); a ceiling
    is the most it may get.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    _within("floors"), "every key of floors must be one of quotaPool.environments", ".floors"
                ),
                cel(
                    _within("ceilings"),
                    "every key of ceilings must be one of quotaPool.environments",
                    ".ceilings",
                ),
            ]
        }
    )

    environments: PoolEnvironments | None = Field(
        default=None,
        max_length=MAX_ENVIRONMENTS,
        json_schema_extra={"x-kubernetes-list-type": "set", "minItems": 1},
        description="The environments that share the pool; left out: every environment of the "
        "Organization. The others keep their own fixed quota.",
    )
    total: ResourceList = Field(
        json_schema_extra={"minProperties": 1},
        description="Per pooled resource, the most all pooled namespaces together may have.",
    )
    floors: dict[DNSLabel, ResourceList] = Field(default_factory=dict, max_length=MAX_ENVIRONMENTS)
    ceilings: dict[DNSLabel, ResourceList] = Field(default_factory=dict, max_length=MAX_ENVIRONMENTS)

    @model_validator(mode="after")
    def _check(self) -> QuotaPool:
        problems: list[str] = []
        if not self.total:
            problems.append("total must name at least one resource to pool")
        for part in ("floors", "ceilings"):
            bounds: dict[str, dict[str, str]] = getattr(self, part)
            if self.environments is not None:
                outside = sorted(set(bounds) - set(self.environments))
                if outside:
                    problems.append(
                        f"{part} names environment(s) {', '.join(outside)} that are not in "
                        f"quotaPool.environments ({', '.join(self.environments)})"
                    )
            for env, values in sorted(bounds.items()):
                unpooled = [r for r in values if r not in self.total]
                if unpooled:
                    problems.append(
                        f"{part}.{env}: {', '.join(unpooled)} not pooled (not in quotaPool.total: "
                        f"{', '.join(self.total) or 'none'}); a floor or ceiling bounds a pooled resource"
                    )
        for env in sorted(set(self.floors) & set(self.ceilings)):
            for resource, floor in self.floors[env].items():
                ceiling = self.ceilings[env].get(resource)
                if ceiling is not None and parse_quantity(floor) > parse_quantity(ceiling):
                    problems.append(
                        f'floors.{env}["{resource}"] ({floor}) is above '
                        f'ceilings.{env}["{resource}"] ({ceiling})'
                    )
        for resource, total in self.total.items():
            floors = {
                env: values[resource] for env, values in sorted(self.floors.items()) if resource in values
            }
            needed = sum((parse_quantity(v) for v in floors.values()), start=parse_quantity("0"))
            if needed > parse_quantity(total):
                shown = ", ".join(f"{env} {value}" for env, value in floors.items())
                problems.append(
                    f'total["{resource}"] ({total}) is below the floors it must cover: {shown} '
                    f"(together {_plain(needed)}); raise the total or lower the floors"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def members(self, environments: list[str]) -> list[str]:
        """Which of an Organization's environments share the pool, in the Organization's order."""
        chosen = set(self.environments) if self.environments is not None else set(environments)
        return [env for env in environments if env in chosen]


def _plain(value: Any) -> str:
    """A Decimal as a short number ("3", "1.5", "17179869184")."""
    text = format(value.normalize(), "f")
    return text
