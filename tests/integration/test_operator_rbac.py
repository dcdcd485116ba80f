"""The operator's ClusterRole is exactly what its code uses: run a full lifecycle against the fake API server,
turn every request the operator made into RBAC (verb, group, resource), compare with
manifests/base/operator-rbac.yaml. Fails on a permission the code needs but lacks, and on one
it holds but never uses."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml

from tenantry.kube.lease import LeaseTimings
from tests.integration.conftest import ORG, POLICY, Api, Operator, declare_argocd, org_body, policy_body
from tests.integration.test_lifecycle import NETPOL, QUOTA, _gone
from tests.integration.test_onboarding import ready, until

ROOT = Path(__file__).resolve().parents[2]
Permission = tuple[str, str, str]  # (verb, apiGroup, resource[/subresource])

# Permissions no HTTP request shows: `bind` is checked by the API server's escalation
# prevention when a binding is written.
NOT_VISIBLE_AS_REQUESTS: set[Permission] = {
    ("bind", "rbac.authorization.k8s.io", "clusterroles"),
    # Escalation prevention: to create the member ClusterRoles it renders, the operator must
    # hold what they grant (tests/unit/test_manifests.py checks this from the renderer).
    ("get", "tenantry.dev", "organizations"),
}


def operator_rules() -> set[Permission]:
    docs = list(yaml.safe_load_all((ROOT / "manifests/base/operator-rbac.yaml").read_text()))
    out: set[Permission] = set()
    rules = [rule for d in docs if d["kind"] in ("ClusterRole", "Role") for rule in d["rules"]]
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((verb, group, resource))
    return out


def used_permissions(kube: Any) -> set[Permission]:
    used: set[Permission] = set()
    for request in kube.requests:
        if (
            request.headers.get("X-Tenantry-Test-Client")
            or request.resource is None
            or not request.resource.plural
        ):
            continue  # the test's own requests, and discovery
        resource = (request.resource.plural or "") + (
            f"/{request.subresource}" if request.subresource else ""
        )
        group = request.resource.group
        method = request.method
        content_type = request.headers.get("Content-Type", "")
        if method == "GET":
            verbs = {"get"} if request.name else {"watch" if request.query.get("watch") else "list"}
        elif method == "PATCH":
            # Server-side apply creates what is missing: the API server checks create too.
            verbs = {"patch", "create"} if "apply-patch" in content_type else {"patch"}
        else:
            verbs = {{"POST": "create", "DELETE": "delete", "PUT": "update"}[method]}
        used |= {(verb, group, resource) for verb in verbs}
    return used


async def test_operator_role_matches_what_the_code_does(api: Api, operator: Operator) -> None:
    # A lifecycle that exercises every kind of request the operator makes, Argo CD and leader
    # election included.
    await declare_argocd(api)
    await api.create("/api/v1/namespaces", {"metadata": {"name": "tenantry-system"}})
    await operator.restart(
        leader_election=True, identity="rbac", lease_timings=LeaseTimings(2, 1.5, 0.5, 1.0)
    )
    assert operator.runtime is not None
    await asyncio.wait_for(operator.runtime.active.wait(), timeout=10)
    await asyncio.sleep(1.5)  # at least one renewal (update) of the Lease
    await api.create(
        POLICY,
        policy_body(
            rbac={"platformAdmins": [{"kind": "Group", "name": "platform"}]},
            gitops={"argocd": {"enabled": True}},
        ),
    )
    await api.create(ORG, org_body(name="retained"))
    await api.create(ORG, org_body(deletionPolicy="Delete"))
    await ready(api)
    await ready(api, "retained")
    exception = {"network": {"allowFrom": [{"organization": "beta", "reason": "r"}]}}
    allow = "/apis/networking.k8s.io/v1/namespaces/retained-prod/networkpolicies/tenantry-allow-from-beta"
    await api.patch(f"{ORG}/retained", {"spec": exception})
    await until(lambda: api.get(allow))
    await api.patch(f"{ORG}/retained", {"spec": {"network": {"allowFrom": []}}})
    await until(lambda: _gone(api, allow))
    await api.delete(NETPOL)
    await until(lambda: api.get(NETPOL))
    await api.patch(QUOTA, {"spec": {"hard": {"pods": "1"}}})
    await api.create(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x-prod"}}
    )
    await api.create(ORG, org_body(name="x"))  # refused: get on a namespace we do not own
    # A quota pool: an apply that conflicts (409) reads the quota again (get); Retain releases it.
    api.kube.fail("PATCH", "/api/v1/namespaces/pooled-dev/resourcequotas/tenantry-quota", code=409)
    await api.create(ORG, org_body(name="pooled", quotaPool={"total": {"pods": "10"}}))
    await ready(api, "pooled")
    await api.delete(f"{ORG}/pooled")
    await until(lambda: _gone(api, f"{ORG}/pooled"))
    await api.delete(f"{ORG}/acme")
    await api.delete(f"{ORG}/retained")
    await until(lambda: _gone(api, f"{ORG}/acme"))
    await until(lambda: _gone(api, f"{ORG}/retained"))

    granted, used = operator_rules(), used_permissions(api.kube)
    missing = used - granted
    assert not missing, f"the operator makes requests its ClusterRole does not allow: {sorted(missing)}"
    unused = granted - used - NOT_VISIBLE_AS_REQUESTS
    assert not unused, f"the ClusterRole grants what the code never uses: {sorted(unused)}"
