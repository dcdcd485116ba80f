"""Production access on a real cluster, checked the way the API server decides it:
`kubectl auth can-i --as USER --as-group GROUP` (RBAC as rendered and applied by the operator).

MFA (group-suffix mode) in prod: a member group without its MFA form can do nothing in the
namespace, with it what its role allows. A grant gives exactly its elevation, only once
approved, and is gone within a few seconds of its expiry, also across an operator restart.
The admission policies are not installed here (see test_the_admission_policies_deny_with_their_message
for those): this is the RBAC half. Objects are named `e2e-acc*` and cleaned up.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import grant_spec
from tests.e2e.conftest import (
    Operator,
    OperatorFactory,
    apply,
    can,
    delete,
    get,
    install_crds_and_roles,
    needs_cluster,
    ready,
    wait_for,
)

pytestmark = needs_cluster

PROD = "e2e-acc-prod"
GRANT = "tenantry:grant:inc-1"
# How long after its expiry a grant's binding may still exist on a real cluster: the operator's
# timer fires at the expiry (about 0.1 s in the integration tests); the rest is API latency.
EXPIRY_SLACK = 5.0


def policy() -> dict[str, Any]:
    return {
        "apiVersion": "tenantry.dev/v1alpha1",
        "kind": "TenancyPolicy",
        "metadata": {"name": "e2e-access"},
        "spec": {
            "environments": [
                {"name": "prod", "quota": {"pods": "10"}, "mfa": {"required": True, "groupSuffix": ":mfa"}},
                {"name": "dev", "quota": {"pods": "10"}, "developerExec": True},
            ],
            "access": {"maxGrantHours": 1, "approvers": [{"kind": "User", "name": "lead@e2e.example"}]},
        },
    }


def organization(*grants: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "policy": "e2e-access",
        "environments": ["prod", "dev"],
        "members": {"developers": [{"kind": "Group", "name": "e2e-devs"}]},
    }
    if grants:
        spec["access"] = {"grants": list(grants)}
    return {
        "apiVersion": "tenantry.dev/v1alpha1",
        "kind": "Organization",
        "metadata": {"name": "e2e-acc"},
        "spec": spec,
    }


def grant(expires: dt.datetime, approved: bool) -> dict[str, Any]:
    return grant_spec(
        expires=expires,
        approved_at=now() - dt.timedelta(seconds=5) if approved else None,
        approved_by="lead@e2e.example",
        name="inc-1",
        subject="e2e-oncall",
        requested_by="oncall@e2e.example",
        reason="e2e incident",
        ticket="E2E-1",
    )


@pytest.fixture(scope="module")
def cluster(start_module_operator: OperatorFactory) -> Iterator[None]:
    install_crds_and_roles()
    apply(policy())
    yield
    # The tests' operators are gone; one more removes the Organization's finalizer.
    start_module_operator()
    delete("organization", "e2e-acc", wait=True)
    start_module_operator.close()
    delete("tenancypolicy", "e2e-access")
    for ns in (PROD, "e2e-acc-dev"):
        delete("namespace", ns)


@pytest.fixture
def operator(cluster: None, start_operator: OperatorFactory) -> Operator:
    return start_operator()


def test_mfa_environment_gives_nothing_without_the_mfa_group(operator: Operator) -> None:
    apply(organization())
    ready("e2e-acc")
    assert not can("get", "pods", PROD, "e2e-devs"), "no MFA: not even reads"
    assert not can("create", "deployments.apps", PROD, "e2e-devs")
    assert can("get", "pods", PROD, "e2e-devs:mfa")
    assert can("create", "deployments.apps", PROD, "e2e-devs:mfa"), "with MFA: what the role allows"
    assert not can("create", "pods", PROD, "e2e-devs:mfa", subresource="exec"), (
        "developers never exec in prod"
    )
    assert can("get", "pods", "e2e-acc-dev", "e2e-devs"), "dev needs no MFA"
    assert can("create", "pods", "e2e-acc-dev", "e2e-devs", subresource="exec"), "dev sets developerExec"


def test_a_grant_gives_exactly_its_elevation_only_once_approved_until_it_expires(operator: Operator) -> None:
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=45)
    apply(organization(grant(expires, approved=False)))
    ready("e2e-acc")
    assert get("rolebinding", GRANT, "-n", PROD) is None, "not bound before approval"
    assert not can("create", "pods", PROD, "e2e-oncall:mfa", subresource="exec")

    apply(organization(grant(expires, approved=True)))
    wait_for(
        lambda: get("rolebinding", GRANT, "-n", PROD), timeout=30, what=f"RoleBinding {GRANT} once approved"
    )
    assert can("create", "pods", PROD, "e2e-oncall:mfa", subresource="exec")
    assert not can("create", "pods", PROD, "e2e-oncall", subresource="exec"), (
        "the grant is bound in its MFA form"
    )
    assert not can("create", "deployments.apps", PROD, "e2e-oncall:mfa"), "exactly its elevation"
    assert not can("create", "pods", "e2e-acc-dev", "e2e-oncall:mfa", subresource="exec"), (
        "only its environment"
    )

    wait_for(
        lambda: get("rolebinding", GRANT, "-n", PROD) is None,
        timeout=(expires - now()).total_seconds() + 30,
        what=f"RoleBinding {GRANT} to go at the grant's expiry",
        interval=0.2,
    )
    late = (now() - expires).total_seconds()
    assert late <= EXPIRY_SLACK, f"the grant outlived its expiry by {late:.1f} s"
    assert not can("create", "pods", PROD, "e2e-oncall:mfa", subresource="exec")


def test_a_grant_that_expires_while_the_operator_is_down_is_gone_right_after_start(
    cluster: None, start_operator: OperatorFactory
) -> None:
    first = start_operator()
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    apply(organization(grant(expires, approved=True)))
    wait_for(lambda: get("rolebinding", GRANT, "-n", PROD), timeout=60, what=f"RoleBinding {GRANT}")
    first.stop()
    time.sleep(max(0.0, (expires - now()).total_seconds()) + 2)
    assert get("rolebinding", GRANT, "-n", PROD) is not None, "nobody removed it while the operator was down"
    started = time.monotonic()
    start_operator()
    wait_for(
        lambda: get("rolebinding", GRANT, "-n", PROD) is None,
        timeout=60,
        what=f"the restarted operator to remove the expired RoleBinding {GRANT}",
    )
    assert time.monotonic() - started < 30, "removed by the first reconcile after start"


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
