"""The deletion rule, per kind, from the kind table (reconcile/deletion.py)."""

from __future__ import annotations

import pytest

from tenantry.kube import drift
from tenantry.kube import resources as res
from tenantry.reconcile.deletion import when_not_rendered, when_released

RELEASED = {
    # kind: (Retain, Delete)
    res.NAMESPACE: ("orphan", "delete"),
    res.RESOURCE_QUOTA: ("keep", "keep"),  # Retain: the guardrail stays; Delete: goes with the namespace
    res.LIMIT_RANGE: ("keep", "keep"),
    res.GUARDRAILS: ("keep", "keep"),  # the admission guardrails keep holding on retained data
    res.NETWORK_POLICY: ("keep", "keep"),  # deny-all stays on retained data
    res.ROLE_BINDING: ("delete", "keep"),  # Retain withdraws tenant access
    res.CLUSTER_ROLE: ("delete", "delete"),
    res.CLUSTER_ROLE_BINDING: ("delete", "delete"),
    res.APP_PROJECT: ("delete", "delete"),  # in Argo CD's namespace, not the tenant's
}


def test_every_child_kind_has_a_row() -> None:
    assert set(RELEASED) == set(res.CHILD_KINDS)


@pytest.mark.parametrize("kind", res.CHILD_KINDS, ids=lambda k: k.kind)
def test_what_a_released_object_becomes(kind: res.Kind) -> None:
    assert (when_released(kind, "Retain"), when_released(kind, "Delete")) == RELEASED[kind]


@pytest.mark.parametrize("kind", res.CHILD_KINDS, ids=lambda k: k.kind)
def test_quotas_and_limits_only_go_with_their_namespace(kind: res.Kind) -> None:
    expected = "keep" if kind in (res.RESOURCE_QUOTA, res.LIMIT_RANGE, res.GUARDRAILS) else "delete"
    assert when_not_rendered(kind) == expected


def test_every_child_kind_reports_in_a_status_area_and_has_its_drift_sections() -> None:
    for kind in res.CHILD_KINDS:
        assert kind.area in {"NamespacesReady", "QuotaReady", "NetworkReady", "RBACReady"}, kind.kind
        assert kind.kind in drift.SECTIONS, kind.kind
