"""The quota pool's pure core (render/pool.py): the split, the triggers, and the invariant.

The property tests replay the API server as it is (kubernetes plugin/pkg/admission/resourcequota,
pkg/controller/resourcequota): quota admission admits a pod when `used + request <= status.hard`
and writes `status.used` with the quota's resourceVersion; the quota controller copies `spec.hard`
into `status.hard` some time after each change and recomputes `used` when pods go. The operator
plans from a possibly stale view (never older than its own last write to a quota), then writes
each planned change with the resourceVersion it planned from: a write whose quota changed
meanwhile is refused (409) and the rest of that plan is dropped. Hypothesis picks the order of
every event; after each one, the namespaces' hard values add up to at most the pool.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tenantry.render.pool import (
    Bounds,
    Member,
    Write,
    allocate_missing,
    from_units,
    initial_split,
    next_step,
    targets,
    to_units,
)

R1, R2 = "requests.cpu", "pods"


def member(
    name: str, spec: dict[str, int | None], used: dict[str, int], status: dict[str, int | None] | None = None
) -> Member:
    return Member(name, dict(spec), dict(status if status is not None else spec), dict(used))


# ---- examples -------------------------------------------------------------------------------------


def test_the_initial_split_gives_floors_then_equal_shares_within_ceilings() -> None:
    bounds = Bounds(total={R1: 6000}, floors={"b": {R1: 1000}}, ceilings={"a": {R1: 1500}})
    # b: its floor plus an equal share of the rest; a: capped, the rest shared by b and c.
    assert initial_split(bounds, ["a", "b", "c"]) == {"a": {R1: 1500}, "b": {R1: 2750}, "c": {R1: 1750}}


def test_targets_never_go_below_use_and_an_overcommitted_pool_grows_nobody() -> None:
    bounds = Bounds(total={R1: 10})
    assert targets(bounds, R1, [member("a", {R1: 8}, {R1: 8}), member("b", {R1: 8}, {R1: 7})]) == {
        "a": 8,
        "b": 7,
    }


def test_a_pod_where_headroom_is_left_writes_nothing() -> None:
    bounds = Bounds(total={R2: 100})
    settled = [member("a", {R2: 50}, {R2: 10}), member("b", {R2: 50}, {R2: 10})]
    assert next_step(bounds, settled).kind == "none"
    one_more = [member("a", {R2: 50}, {R2: 11}), member("b", {R2: 50}, {R2: 10})]
    assert next_step(bounds, one_more).kind == "none"


def test_a_namespace_running_out_gets_capacity_shrunk_from_the_others_first() -> None:
    bounds = Bounds(total={R2: 100})
    state = [member("a", {R2: 50}, {R2: 48}), member("b", {R2: 50}, {R2: 2})]
    step = next_step(bounds, state)
    assert step.kind == "shrink"
    assert step.writes == [Write("b", {R2: 27})]  # b keeps its use plus half of the 50 free
    # The shrink written, but the quota controller has not copied it into status yet: no grow.
    pending = [member("a", {R2: 50}, {R2: 48}), member("b", {R2: 27}, {R2: 2}, status={R2: 50})]
    assert next_step(bounds, pending).kind == "none"
    assert next_step(bounds, pending).waiting == [R2]
    synced = [member("a", {R2: 50}, {R2: 48}), member("b", {R2: 27}, {R2: 2})]
    assert next_step(bounds, synced).writes == [Write("a", {R2: 73})]


def test_what_a_namespace_stops_using_flows_to_the_one_that_needs_it() -> None:
    bounds = Bounds(total={R2: 10})
    state = [member("a", {R2: 5}, {R2: 5}), member("b", {R2: 5}, {R2: 0})]
    assert next_step(bounds, state).writes == [Write("b", {R2: 2})]


def test_an_exhausted_pool_is_reported_and_writes_nothing() -> None:
    bounds = Bounds(total={R2: 10})
    state = [member("a", {R2: 6}, {R2: 6}), member("b", {R2: 4}, {R2: 4})]
    step = next_step(bounds, state)
    assert (step.kind, step.writes) == ("none", [])
    assert step.exhausted == [("a", R2), ("b", R2)]


def test_a_missing_key_is_unlimited_and_is_set_first() -> None:
    bounds = Bounds(total={R2: 10})
    state = [member("a", {R2: None}, {R2: 3}), member("b", {R2: 5}, {R2: 1})]
    step = next_step(bounds, state)
    assert step.kind == "shrink"
    assert [w.namespace for w in step.writes] == ["a", "b"]


def test_new_quotas_get_at_most_what_is_free() -> None:
    bounds = Bounds(total={R2: 10})
    existing = member("a", {R2: 8}, {R2: 1})
    new = Member("b", {R2: None}, {R2: None}, {})
    assert allocate_missing(bounds, [existing, new], {"b": {R2: 5}}) == {"b": {R2: 2}}


@pytest.mark.parametrize(
    ("resource", "text", "units", "shown"),
    [
        (R1, "1500m", 1500, "1500m"),
        (R1, "2", 2000, "2"),
        ("requests.memory", "1Gi", 2**30, "1Gi"),
        (R2, "10", 10, "10"),
    ],
)
def test_units_round_trip(resource: str, text: str, units: int, shown: str) -> None:
    assert to_units(resource, text, up=True) == units
    assert from_units(resource, units) == shown


# ---- the invariant, for any order of events ------------------------------------------------------------


@dataclass
class Quota:
    spec: dict[str, int | None]
    status: dict[str, int | None]
    used: dict[str, int]
    rv: int = 1
    history: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    written_rv: int = 0  # the operator's view of this quota is never older than its own last write

    def record(self) -> None:
        self.history.append(
            (self.rv, copy.deepcopy({"spec": self.spec, "status": self.status, "used": self.used}))
        )

    def bump(self) -> None:
        self.rv += 1
        self.record()


def effective(q: Quota, r: str) -> float:
    spec = q.spec.get(r)
    return math.inf if spec is None else max(spec, q.status.get(r) or 0, q.used.get(r, 0))


@st.composite
def worlds(draw: st.DrawFn, violating: bool = False) -> tuple[Bounds, dict[str, Quota]]:
    names = ["a", "b", "c"][: draw(st.integers(2, 3))]
    resources = draw(st.sampled_from([(R1,), (R2,), (R1, R2)]))
    total = {r: draw(st.integers(0, 40)) for r in resources}
    floors: dict[str, dict[str, int]] = {}
    ceilings: dict[str, dict[str, int]] = {}
    for r in resources:
        room = total[r]
        for n in names:
            if draw(st.booleans()):
                f = draw(st.integers(0, room))
                floors.setdefault(n, {})[r] = f
                room -= f
            if draw(st.booleans()):
                ceilings.setdefault(n, {})[r] = draw(st.integers(floors.get(n, {}).get(r, 0), total[r] + 5))
    quotas: dict[str, Quota] = {}
    left = dict(total)
    for n in names:
        spec: dict[str, int | None] = {}
        used: dict[str, int] = {}
        for r in resources:
            if violating:
                spec[r] = draw(st.one_of(st.none(), st.integers(0, 30)))
            else:
                spec[r] = draw(st.integers(0, left[r]))
                left[r] -= spec[r] or 0
            used[r] = draw(st.integers(0, spec[r] if spec[r] is not None else 30))
        quotas[n] = Quota(spec, dict(spec), used)
        quotas[n].record()
    return Bounds(total=total, floors=floors, ceilings=ceilings), quotas


def view(quotas: dict[str, Quota], data: st.DataObject) -> tuple[list[Member], dict[str, int]]:
    """What the operator's inventory may say: any state of each quota from its own last write on,
    with the resourceVersion of that state."""
    members: list[Member] = []
    versions: dict[str, int] = {}
    for name, q in quotas.items():
        seen = [(rv, s) for rv, s in q.history if rv >= q.written_rv]
        rv, state = data.draw(st.sampled_from(seen))
        members.append(Member(name, dict(state["spec"]), dict(state["status"]), dict(state["used"])))
        versions[name] = rv
    return members, versions


def check(bounds: Bounds, quotas: dict[str, Quota], ceiling: dict[str, float]) -> None:
    for r, total in bounds.total.items():
        eff = sum(effective(q, r) for q in quotas.values())
        assert eff <= max(total, ceiling[r]), (
            r,
            total,
            {n: (q.spec, q.status, q.used) for n, q in quotas.items()},
        )
        ceiling[r] = min(ceiling[r], eff) if eff > total else total
        assert sum(q.used.get(r, 0) for q in quotas.values()) <= max(total, ceiling[r])


def run(bounds: Bounds, quotas: dict[str, Quota], data: st.DataObject, steps: int) -> None:
    ceiling = {r: sum(effective(q, r) for q in quotas.values()) for r in bounds.total}
    check(bounds, quotas, ceiling)
    pending: list[tuple[Write, int]] = []
    kinds = ["admit", "release", "sync", "plan", "write"]
    for _ in range(steps):
        kind = data.draw(st.sampled_from(kinds))
        name = data.draw(st.sampled_from(sorted(quotas)))
        q = quotas[name]
        r = data.draw(st.sampled_from(sorted(bounds.total)))
        if kind == "admit":  # quota admission: against status.hard, with the quota's resourceVersion
            k = data.draw(st.integers(1, 5))
            enforced = q.status.get(r)
            if enforced is not None and q.used.get(r, 0) + k <= enforced:
                q.used[r] = q.used.get(r, 0) + k
                q.bump()
        elif kind == "release":  # the quota controller recounts after pods went
            if q.used.get(r, 0):
                q.used[r] -= data.draw(st.integers(1, q.used[r]))
                q.bump()
        elif kind == "sync":  # the quota controller copies spec.hard into status.hard
            if q.status != q.spec:
                q.status = dict(q.spec)
                q.bump()
        elif kind == "plan" and not pending:
            members, versions = view(quotas, data)
            pending = [(w, versions[w.namespace]) for w in next_step(bounds, members).writes]
        elif kind == "write" and pending:
            write, rv = pending.pop(0)
            target = quotas[write.namespace]
            if target.rv != rv:
                pending = []  # 409 Conflict: read again, plan again
                continue
            for key, value in write.hard.items():
                old = target.spec.get(key)
                # Never below what is used (the write is planned from this very state).
                assert value >= min(old if old is not None else value, target.used.get(key, 0))
                target.spec[key] = value
            target.bump()
            target.written_rv = target.rv
        check(bounds, quotas, ceiling)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world=worlds(), data=st.data())
def test_the_pool_is_never_exceeded_whatever_the_order_of_events(
    world: tuple[Bounds, dict[str, Quota]], data: st.DataObject
) -> None:
    bounds, quotas = world
    run(bounds, quotas, data, steps=60)
    for r, total in bounds.total.items():
        assert sum(q.spec[r] or 0 for q in quotas.values()) <= total


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world=worlds(violating=True), data=st.data())
def test_a_pool_that_starts_exceeded_only_ever_shrinks_toward_it(
    world: tuple[Bounds, dict[str, Quota]], data: st.DataObject
) -> None:
    bounds, quotas = world
    run(bounds, quotas, data, steps=60)


@settings(max_examples=200, deadline=None)
@given(world=worlds())
def test_planning_twice_from_the_same_state_is_stable(world: tuple[Bounds, dict[str, Quota]]) -> None:
    """After the writes of a step land and the controller syncs, the plan converges: no
    endless rewriting of the same values."""
    bounds, quotas = world
    members = [Member(n, dict(q.spec), dict(q.spec), dict(q.used)) for n, q in quotas.items()]
    for _ in range(6):
        step = next_step(bounds, members)
        if not step.writes:
            break
        by_name = {w.namespace: w.hard for w in step.writes}
        members = [
            Member(
                m.namespace,
                {**m.spec, **by_name.get(m.namespace, {})},
                {**m.spec, **by_name.get(m.namespace, {})},
                m.used,
            )
            for m in members
        ]
    assert next_step(bounds, members).writes == []
