"""Never touch what we did not render: a namespace is an Organization's only if it renders it now
or recorded it before (status.ownedNamespaces, by name and uid), never because of its name and
labels alone."""

from __future__ import annotations

from typing import Any

from tests.integration.conftest import ORG, POLICY, Api, Operator, org_body, policy_body
from tests.integration.test_lifecycle import _gone, events
from tests.integration.test_onboarding import condition, ready, until

COPIED_LABELS = {"app.kubernetes.io/managed-by": "tenantry", "tenantry.dev/organization": "acme"}
LEGACY = "/api/v1/namespaces/acme-legacy"
LEGACY_BINDING = "/apis/rbac.authorization.k8s.io/v1/namespaces/acme-legacy/rolebindings/tenantry:viewers"


async def hand_made_lookalike(api: Api) -> None:
    """`acme-legacy`, created by hand with Tenantry's labels copied onto it (and onto a binding
    in it with a name Tenantry generates)."""
    await api.create(
        "/api/v1/namespaces",
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "acme-legacy", "labels": COPIED_LABELS},
        },
    )
    await api.create(
        "/apis/rbac.authorization.k8s.io/v1/namespaces/acme-legacy/rolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "tenantry:viewers", "labels": COPIED_LABELS},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "Group", "name": "legacy-team", "apiGroup": "rbac.authorization.k8s.io"}],
        },
    )


async def test_the_record_names_every_namespace_we_render_with_its_uid(api: Api, operator: Operator) -> None:
    await api.create(ORG, org_body())
    org = await ready(api)
    uids = {
        n: (await api.get(f"/api/v1/namespaces/{n}"))["metadata"]["uid"] for n in ("acme-dev", "acme-prod")
    }
    assert org["status"]["ownedNamespaces"] == [{"name": n, "uid": u} for n, u in sorted(uids.items())]


async def test_a_lookalike_namespace_is_not_deleted_with_its_organization(
    api: Api, operator: Operator
) -> None:
    await hand_made_lookalike(api)
    await api.create(ORG, org_body(deletionPolicy="Delete"))
    await ready(api)
    await api.delete(f"{ORG}/acme")
    await until(lambda: _gone(api, f"{ORG}/acme"))
    assert await api.get("/api/v1/namespaces/acme-prod") is None  # what it rendered went
    legacy = await api.get(LEGACY)
    assert legacy is not None and not legacy["metadata"].get("deletionTimestamp")
    assert legacy["metadata"]["labels"] == {**COPIED_LABELS, "kubernetes.io/metadata.name": "acme-legacy"}
    assert await api.get(LEGACY_BINDING)


async def test_a_lookalike_namespace_is_not_orphaned_and_its_contents_stay(
    api: Api, operator: Operator
) -> None:
    await hand_made_lookalike(api)
    await api.create(ORG, org_body())
    await ready(api)
    await api.delete(f"{ORG}/acme")  # Retain: orphan what it rendered, withdraw tenant access
    await until(lambda: _gone(api, f"{ORG}/acme"))
    assert (await api.get("/api/v1/namespaces/acme-dev"))["metadata"]["labels"][
        "tenantry.dev/orphaned"
    ] == "true"
    assert "tenantry.dev/orphaned" not in (await api.get(LEGACY))["metadata"]["labels"]
    assert await api.get(LEGACY_BINDING), "a binding in a namespace we never rendered is not ours to delete"
    writes = [w for w in api.writes() if "acme-legacy" in w[1]]
    assert writes == []


async def test_a_namespace_of_another_organization_is_refused(api: Api, operator: Operator) -> None:
    # `x` with environment `team-prod` and `x-team` with `prod` both render `x-team-prod`.
    environments = [{"name": env, "quota": {"pods": "5"}} for env in ("prod", "team-prod")]
    await api.create(POLICY, policy_body("p", environments=environments))
    await api.create(ORG, org_body("x", policy="p", environments=["team-prod"]))
    await ready(api, "x")
    before = await api.get("/api/v1/namespaces/x-team-prod")
    await api.create(ORG, org_body("x-team", policy="p", environments=["prod"]))

    async def refused() -> Any:
        org = await api.get(f"{ORG}/x-team")
        cond = condition(org, "Ready")
        return org if cond and cond["reason"] == "NamespaceConflict" else None

    org = await until(refused)
    assert org["status"]["namespaces"] == [{"name": "x-team-prod", "environment": "prod", "phase": "Refused"}]
    assert org["status"].get("ownedNamespaces") == []
    assert await until(lambda: events(api, "AdoptionRefused"))
    after = await api.get("/api/v1/namespaces/x-team-prod")
    assert after["metadata"]["labels"] == before["metadata"]["labels"]
    assert after["metadata"].get("annotations") == before["metadata"].get("annotations")
    role_bindings = await api.get("/apis/rbac.authorization.k8s.io/v1/namespaces/x-team-prod/rolebindings")
    assert {b["metadata"]["labels"]["tenantry.dev/organization"] for b in role_bindings["items"]} == {"x"}
