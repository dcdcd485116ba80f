"""The quota pool's pure core: which quota keys a pool manages, its initial split, and the next
writes that move capacity where it is used while the pool can never be exceeded.

**The invariant**, per pooled resource: the namespaces' effective `hard` add up to at most the
pool. A namespace's effective hard is the most its quota admission may let it reach: the
largest of `spec.hard` (what the quota controller will copy into status), `status.hard` (what
quota admission enforces now; the controller copies spec into it a moment after each change)
and `status.used` (admission may have let it reach more than an older, larger hard). A key
missing from `spec.hard` is unlimited. Every function below keeps it after every single write:

- never below used: a shrink sets `hard` to at least what is used (and the write carries the
  resourceVersion it was planned from, so it cannot pass a pod admitted meanwhile);
- shrink before grow: a step is either shrinks only or grows only, and a grow is sized so that
  the effective sum stays within the pool, counting each namespace's larger of spec and status
  (a shrink counts only once the quota controller has copied it into status);
- free capacity goes where it is used: targets are each namespace's use plus an equal share of
  what is free (within floors and ceilings). A rebalance starts only when a namespace has less
  than half of its share left, when capacity is unallocated, or when a bound or the pool changed:
  a pod started where headroom is left writes nothing.

All amounts are integers in the resource's smallest unit (millicores for CPU, bytes, objects).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from tenantry.api.base import is_quota_resource, quota_order
from tenantry.api.organization import Organization
from tenantry.api.policy import TenancyPolicy
from tenantry.api.pool import QuotaPool
from tenantry.api.quantity import QuantityError, parse_quantity

# The one place that says which keys of a `tenantry-quota` a pool manages: the quota carries
# them in this annotation (comma-separated, in quota_order). The rebalancer writes
# these keys; the renderer's values for them are only the initial split, which the reconcile
# replaces with the live values before comparing or applying (never "healed" as drift).
POOL_ANNOTATION = "tenantry.dev/quota-pool"

Amounts = dict[str, int]


def effective_pool(org: Organization, policy: TenancyPolicy) -> QuotaPool | None:
    """The Organization's own pool, else its policy's default pool (unless that pools none of
    the Organization's environments), else None."""
    if org.spec.quota_pool is not None:
        return org.spec.quota_pool
    pool = policy.spec.quota_pool
    if pool is not None and org.spec.environments is not None and not pool.members(org.spec.environments):
        return None
    return pool


def pool_members(org: Organization, policy: TenancyPolicy) -> list[str]:
    """The environments of `org` (environments filled in) that share its pool, in spec order."""
    pool = effective_pool(org, policy)
    if pool is None:
        return []
    return pool.members(list(org.spec.environments or []))


def pooled_keys(quota: Mapping[str, object] | None) -> tuple[str, ...]:
    """The keys of a live or rendered ResourceQuota that its pool manages (none: not pooled)."""
    meta = (quota or {}).get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    value = (annotations or {}).get(POOL_ANNOTATION) if isinstance(annotations, dict) else None
    if not isinstance(value, str) or not value:
        return ()
    return tuple(k for k in value.split(",") if is_quota_resource(k))


# ---- units ------------------------------------------------------------------------------------


def _scale(resource: str) -> int:
    return 1000 if resource.endswith(".cpu") else 1


def to_units(resource: str, quantity: str | int, *, up: bool) -> int:
    """A quantity in the resource's smallest unit, rounded up (`up`) or down."""
    value = parse_quantity(quantity) * _scale(resource)
    return math.ceil(value) if up else math.floor(value)


def units_or_none(resource: str, quantity: object, *, up: bool) -> int | None:
    """Like `to_units`; None for a value that is absent or not a quantity."""
    if not isinstance(quantity, str | int) or isinstance(quantity, bool):
        return None
    try:
        return to_units(resource, quantity, up=up)
    except QuantityError:
        return None


_BINARY = (("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10))


def from_units(resource: str, amount: int) -> str:
    """The quantity a ResourceQuota gets for `amount` units: "1500m", "2", "3Gi", "10"."""
    if _scale(resource) == 1000:
        return str(amount // 1000) if amount % 1000 == 0 else f"{amount}m"
    # Bytes (memory, storage, huge pages) read best in binary units; counts never get one.
    if (resource.endswith(("memory", "storage")) or "hugepages-" in resource) and amount:
        for suffix, size in _BINARY:
            if amount % size == 0:
                return f"{amount // size}{suffix}"
    return str(amount)


# ---- the pool in units --------------------------------------------------------------------------


@dataclass(frozen=True)
class Bounds:
    """A pool in units: totals, and per namespace its floors and ceilings."""

    total: Amounts
    floors: dict[str, Amounts] = field(default_factory=dict)
    ceilings: dict[str, Amounts] = field(default_factory=dict)

    @property
    def resources(self) -> tuple[str, ...]:
        return tuple(sorted(self.total, key=quota_order))


def bounds_of(pool: QuotaPool, namespaces: Mapping[str, str]) -> Bounds:
    """`pool` in units, floors and ceilings by namespace (`namespaces`: environment -> namespace)."""

    def per_namespace(values: Mapping[str, Mapping[str, str]], up: bool) -> dict[str, Amounts]:
        return {
            namespaces[env]: {r: to_units(r, q, up=up) for r, q in amounts.items() if r in pool.total}
            for env, amounts in values.items()
            if env in namespaces
        }

    return Bounds(
        total={r: to_units(r, q, up=False) for r, q in pool.total.items()},
        floors=per_namespace(pool.floors, up=False),
        ceilings=per_namespace(pool.ceilings, up=False),
    )


@dataclass(frozen=True)
class Member:
    """One pooled namespace's ResourceQuota as last seen. `spec`/`status`: hard per pooled
    resource (None: the key is absent); `used`: status.used (absent: 0)."""

    namespace: str
    spec: dict[str, int | None]
    status: dict[str, int | None]
    used: Amounts

    def effective(self, resource: str) -> float:
        """The most quota admission may let this namespace reach: see the module docstring."""
        spec = self.spec.get(resource)
        if spec is None:
            return math.inf
        status = self.status.get(resource)
        return max(spec, status if status is not None else 0, self.used.get(resource, 0))

    def enforced(self, resource: str) -> int | None:
        """The hard admission checks a new pod against (status; None: not enforced yet)."""
        spec, status = self.spec.get(resource), self.status.get(resource)
        if spec is None or status is None:
            return None
        return min(spec, status)


def member_of(namespace: str, quota: Mapping[str, object] | None, resources: Iterable[str]) -> Member:
    """A live ResourceQuota (or None: it does not exist yet) as a Member, in units."""
    quota = quota or {}
    spec_hard = _section(quota, "spec", "hard")
    status_hard = _section(quota, "status", "hard")
    used = _section(quota, "status", "used")
    spec: dict[str, int | None] = {}
    status: dict[str, int | None] = {}
    amounts: Amounts = {}
    for r in resources:
        spec[r] = units_or_none(r, spec_hard.get(r), up=True)
        status[r] = units_or_none(r, status_hard.get(r), up=True)
        amounts[r] = units_or_none(r, used.get(r), up=True) or 0
    return Member(namespace, spec, status, amounts)


def _section(obj: Mapping[str, object], part: str, key: str) -> dict[str, object]:
    section = obj.get(part)
    value = section.get(key) if isinstance(section, dict) else None
    return value if isinstance(value, dict) else {}


# ---- targets ------------------------------------------------------------------------------------


def _fill(amounts: dict[str, int], room: dict[str, int], available: int) -> int:
    """Give out `available` in equal shares up to each one's `room` (namespaces in name order take
    the indivisible rest); returns what is left."""
    room = {k: v for k, v in room.items() if v > 0}
    while available > 0 and room:
        share = available // len(room)
        if share == 0:
            for name in sorted(room)[:available]:
                amounts[name] += 1
                room[name] -= 1
            return 0
        for name in sorted(room):
            given = min(share, room[name])
            amounts[name] += given
            room[name] -= given
            available -= given
        room = {k: v for k, v in room.items() if v > 0}
    return available


def targets(bounds: Bounds, resource: str, members: list[Member]) -> dict[str, int]:
    """Where each namespace's hard should be for `resource`: its use (never less), then its floor,
    then an equal share of what is left, within its ceiling. When use alone exceeds the pool,
    each target is its use (the pool is over-committed: nothing grows)."""
    total = bounds.total[resource]
    wanted = {m.namespace: m.used.get(resource, 0) for m in members}
    available = total - sum(wanted.values())
    if available <= 0:
        return wanted
    ceilings = {m.namespace: bounds.ceilings.get(m.namespace, {}).get(resource, total) for m in members}
    floors = {
        m.namespace: min(bounds.floors.get(m.namespace, {}).get(resource, 0), ceilings[m.namespace])
        for m in members
    }
    available = _fill(wanted, {n: floors[n] - wanted[n] for n in wanted}, available)
    _fill(wanted, {n: ceilings[n] - wanted[n] for n in wanted}, available)
    return wanted


def initial_split(bounds: Bounds, namespaces: list[str]) -> dict[str, Amounts]:
    """The split of an unused pool: floors, then equal shares within ceilings (`tenantry render`)."""
    empty = [Member(n, {}, {}, {}) for n in namespaces]
    split: dict[str, Amounts] = {n: {} for n in namespaces}
    for resource in bounds.resources:
        for name, amount in targets(bounds, resource, empty).items():
            split[name][resource] = amount
    return split


# ---- the next step --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    """Set these pooled keys of one namespace's quota (planned from the state it was read in)."""

    namespace: str
    hard: Amounts


@dataclass(frozen=True)
class Step:
    """The next writes: all shrinks, or all grows (never both), in namespace order.
    `exhausted`: (namespace, resource) at its limit that the pool cannot give more to.
    `waiting`: resources whose grows wait for the quota controller to copy a shrink into status."""

    kind: str  # "shrink", "grow" or "none"
    writes: list[Write] = field(default_factory=list)
    exhausted: list[tuple[str, str]] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)


def _headroom_low(member: Member, resource: str, target: int) -> bool:
    """Has this namespace less than half of the headroom its target would give it?"""
    enforced = member.enforced(resource)
    spec = member.spec.get(resource)
    if enforced is None or spec is None or target <= spec:
        return False
    used = member.used.get(resource, 0)
    return 2 * (enforced - used) < target - used


def needs_rebalance(bounds: Bounds, resource: str, members: list[Member], goal: dict[str, int]) -> bool:
    """Whether `resource` is to be moved now. Not on every change of use: only when the pool
    is exceeded or has capacity nobody holds, a key is missing, a namespace sits above its
    ceiling or below its floor, or a namespace has less than half of its share of headroom."""
    total = bounds.total[resource]
    effective = sum(m.effective(resource) for m in members)
    if effective > total:
        return True
    for m in members:
        spec = m.spec.get(resource)
        if spec is None:
            return True
        ceiling = bounds.ceilings.get(m.namespace, {}).get(resource)
        if ceiling is not None and spec > max(ceiling, goal[m.namespace]):
            return True
        floor = bounds.floors.get(m.namespace, {}).get(resource, 0)
        if spec < min(floor, goal[m.namespace]):
            return True
        if _headroom_low(m, resource, goal[m.namespace]):
            return True
    return effective < total and any((m.spec.get(resource) or 0) < goal[m.namespace] for m in members)


def next_step(bounds: Bounds, members: list[Member]) -> Step:
    """The next writes toward the targets, each safe on its own (see the module docstring)."""
    members = sorted(members, key=lambda m: m.namespace)
    goals = {r: targets(bounds, r, members) for r in bounds.resources}
    active = [r for r in bounds.resources if needs_rebalance(bounds, r, members, goals[r])]
    exhausted = _exhausted(bounds, members, goals)

    shrinks: dict[str, Amounts] = {}
    for r in active:
        for m in members:
            spec, goal = m.spec.get(r), goals[r][m.namespace]
            if spec is None or goal < spec:
                shrinks.setdefault(m.namespace, {})[r] = goal
    if shrinks:
        return Step("shrink", [Write(n, hard) for n, hard in sorted(shrinks.items())], exhausted)

    grows: dict[str, Amounts] = {}
    waiting: list[str] = []
    for r in active:
        total = bounds.total[r]
        effective = {m.namespace: m.effective(r) for m in members}
        for m in members:
            spec, goal = m.spec.get(r), goals[r][m.namespace]
            assert spec is not None  # a missing key is a shrink, above
            if goal <= spec:
                continue
            others = sum(v for n, v in effective.items() if n != m.namespace)
            status = m.status.get(r) or 0
            # As much of the goal as keeps the effective sum within the pool (a shrink not yet
            # in status still counts at its old size).
            room = total - others
            grown = min(goal, room) if math.isfinite(room) else spec
            if grown <= spec:
                waiting.append(r)
                continue
            grows.setdefault(m.namespace, {})[r] = int(grown)
            effective[m.namespace] = max(grown, status, m.used.get(r, 0))
    writes = [Write(n, hard) for n, hard in sorted(grows.items())]
    return Step("grow" if writes else "none", writes, exhausted, sorted(set(waiting)))


def _exhausted(
    bounds: Bounds, members: list[Member], goals: dict[str, dict[str, int]]
) -> list[tuple[str, str]]:
    """(namespace, resource) where a namespace uses all it may and the pool has nothing to add."""
    out = []
    for r in bounds.resources:
        for m in members:
            # By spec, not status: a grow the quota controller has not copied yet is room.
            # A namespace that holds and uses nothing has reached no limit of its own.
            spec, used = m.spec.get(r), m.used.get(r, 0)
            if spec is None or used < spec or used == 0:
                continue
            if goals[r][m.namespace] <= spec:
                out.append((m.namespace, r))
    return out


def allocate_missing(
    bounds: Bounds, members: list[Member], wanted: Mapping[str, Amounts]
) -> dict[str, Amounts]:
    """Values for pooled keys that do not exist yet (a quota about to be created, or a key
    someone removed): at most `wanted` (the initial split), and never more than the pool has
    free beside every other member's effective hard (counting the ones given here). A key
    that exists keeps its live value; only missing ones are returned."""
    out: dict[str, Amounts] = {}
    for r in bounds.resources:
        known = [m for m in members if m.spec.get(r) is not None]
        free = bounds.total[r] - sum(m.effective(r) for m in known)
        for m in sorted(members, key=lambda m: m.namespace):
            if m.spec.get(r) is not None:
                continue
            given = max(
                0, min(wanted.get(m.namespace, {}).get(r, 0), int(free) if math.isfinite(free) else 0)
            )
            out.setdefault(m.namespace, {})[r] = given
            free -= max(given, m.used.get(r, 0))
    return out
