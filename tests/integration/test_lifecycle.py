"""Drift self-healing, environment removal, deletion policies, re-adoption, refusal, restarts,
policy changes and API errors: the operator's promises, over HTTP against the fake API server."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

from tenantry.kube.client import Connection
from tenantry.observe.metrics import DRIFT, REGISTRY
from tests.integration.conftest import (
    ORG,
    POLICY,
    Api,
    Operator,
    declare_argocd,
    org_body,
    policy_body,
    reconciles,
    settled,
)
from tests.integration.test_onboarding import condition, ready, until
from tests.unit.helpers import TODAY

NETPOL = "/apis/networking.k8s.io/v1/namespaces/acme-prod/networkpolicies/tenantry-default-deny"
QUOTA = "/api/v1/namespaces/acme-prod/resourcequotas/tenantry-quota"
BINDING = "/apis/rbac.authorization.k8s.io/v1/namespaces/acme-dev/rolebindings/tenantry:organization-admins"


async def events(api: Api, reason: str) -> list[dict[str, Any]]:
    listing = await api.get("/api/v1/namespaces/default/events")
    return [e for e in (listing or {}).get("items", []) if e.get("reason") == reason]


async def test_deleted_network_policy_comes_back_and_is_reported(api: Api, operator: Operator) -> None:
    await api.create(ORG, org_body())
    await ready(api)
    await api.delete(NETPOL)
    # The < 2 s target is measured by bench/ (docs/performance.md), not asserted here.
    restored = await until(lambda: api.get(NETPOL))
    assert restored["spec"] == {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [],
        "egress": [],
    }
    drift = await until(lambda: events(api, "DriftCorrected"))
    assert "NetworkPolicy acme-prod/tenantry-default-deny was deleted" in drift[0]["message"]


async def test_edited_quota_is_restored(api: Api, operator: Operator) -> None:
    await api.create(ORG, org_body())
    await ready(api)
    await api.patch(QUOTA, {"spec": {"hard": {"requests.cpu": "999"}}})

    async def healed() -> bool:
        quota = await api.get(QUOTA)
        return quota["spec"]["hard"]["requests.cpu"] == "8"

    await until(healed, timeout=10.0)
    drift = await until(lambda: events(api, "DriftCorrected"))
    assert "ResourceQuota acme-prod/tenantry-quota was modified: spec" in drift[0]["message"]


async def test_relabelled_namespace_is_restored(api: Api, operator: Operator) -> None:
    await api.create(ORG, org_body())
    await ready(api)
    await api.patch("/api/v1/namespaces/acme-prod", {"metadata": {"labels": {"environment": "dev"}}})

    async def healed() -> bool:
        ns = await api.get("/api/v1/namespaces/acme-prod")
        return ns["metadata"]["labels"]["environment"] == "prod"

    await until(healed, timeout=10.0)


async def test_removed_environment_is_retained_without_tenant_access(api: Api, operator: Operator) -> None:
    await api.create(ORG, org_body())
    await ready(api)
    await api.patch(f"{ORG}/acme", {"spec": {"environments": ["prod"]}})

    async def orphaned() -> bool:
        ns = await api.get("/api/v1/namespaces/acme-dev")
        return ns["metadata"]["labels"].get("tenantry.dev/orphaned") == "true"

    await until(orphaned)
    await until(lambda: _gone(api, BINDING))
    assert await api.get("/api/v1/namespaces/acme-dev/resourcequotas/tenantry-quota")  # guardrails stay
    org = await ready(api)
    assert [n["name"] for n in org["status"]["namespaces"]] == ["acme-prod"]


async def _gone(api: Api, path: str) -> bool:
    return await api.get(path) is None


async def test_removed_environment_is_deleted_with_delete_policy(api: Api, operator: Operator) -> None:
    await api.create(ORG, org_body(deletionPolicy="Delete"))
    await ready(api)
    await api.patch(f"{ORG}/acme", {"spec": {"environments": ["prod"]}})
    await until(lambda: _gone(api, "/api/v1/namespaces/acme-dev"))
    assert await api.get("/api/v1/namespaces/acme-prod")


async def test_deleting_with_retain_keeps_namespaces_and_recreation_readopts_them(
    api: Api, operator: Operator
) -> None:
    await api.create(ORG, org_body())
    await ready(api)
    await api.delete(f"{ORG}/acme")
    await until(lambda: _gone(api, f"{ORG}/acme"))
    ns = await api.get("/api/v1/namespaces/acme-prod")
    assert ns["metadata"]["labels"]["tenantry.dev/orphaned"] == "true"
    assert await api.get(BINDING) is None
    assert await api.get("/apis/rbac.authorization.k8s.io/v1/clusterroles/tenantry:member:acme") is None

    await api.create(ORG, org_body())
    org = await ready(api)
    assert [n["phase"] for n in org["status"]["namespaces"]] == ["Active", "Active"]
    ns = await api.get("/api/v1/namespaces/acme-prod")
    assert "tenantry.dev/orphaned" not in ns["metadata"]["labels"]
    assert await api.get(BINDING)


async def test_deleting_with_delete_policy_removes_namespaces(api: Api, operator: Operator) -> None:
    await api.create(ORG, org_body(deletionPolicy="Delete"))
    await ready(api)
    await api.delete(f"{ORG}/acme")
    await until(lambda: _gone(api, f"{ORG}/acme"))
    assert await api.get("/api/v1/namespaces/acme-prod") is None
    assert await api.get("/api/v1/namespaces/acme-dev") is None


async def test_pre_existing_namespace_is_never_adopted(api: Api, operator: Operator) -> None:
    await api.create(
        "/api/v1/namespaces",
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "acme-prod", "labels": {"team": "legacy"}},
        },
    )
    await api.create(ORG, org_body())

    async def refused() -> Any:
        org = await api.get(f"{ORG}/acme")
        cond = condition(org, "Ready")
        return org if cond and cond["reason"] == "NamespaceConflict" else None

    org = await until(refused)
    assert condition(org, "Stalled")["status"] == "True"
    assert "acme-prod" in condition(org, "Ready")["message"]
    ns = await api.get("/api/v1/namespaces/acme-prod")
    assert ns["metadata"]["labels"] == {"team": "legacy", "kubernetes.io/metadata.name": "acme-prod"}
    assert await api.get("/api/v1/namespaces/acme-prod/resourcequotas/tenantry-quota") is None
    assert await api.get("/api/v1/namespaces/acme-dev")  # the free environment is still served
    assert await until(lambda: events(api, "NamespaceConflict"))


async def test_reserved_names_are_refused_with_a_condition(api: Api, operator: Operator) -> None:
    kube_system = await api.get("/api/v1/namespaces/kube-system")
    await api.create(ORG, org_body(name="kube", environments=["system"]))

    async def invalid() -> Any:
        org = await api.get(f"{ORG}/kube")
        cond = condition(org, "Ready")
        return org if cond and cond["reason"] == "InvalidSpec" else None

    org = await until(invalid)
    assert "reserved prefix 'kube-'" in condition(org, "Ready")["message"]
    # kube-system exists on every cluster (and in the fake): it is left exactly as it was.
    assert await api.get("/api/v1/namespaces/kube-system") == kube_system
    assert not [w for w in api.writes() if "/namespaces/kube-system" in w[1]], "nothing written there"


async def test_restart_converges_with_zero_writes(api: Api, operator: Operator) -> None:
    for name in ("acme", "beta", "gamma"):
        await api.create(ORG, org_body(name=name))
    for name in ("acme", "beta", "gamma"):
        await ready(api, name)
    await settled(operator)
    await operator.stop()
    before = len(api.writes())
    assert before > 0, "the onboarding writes are seen (else this test could not fail)"
    done = reconciles()
    await operator.start()
    # Every Organization is reconciled once after the start (and nothing is written).
    await settled(operator, reconciled_more_than=done + 2)
    assert api.writes()[before:] == []


async def test_restart_mid_reconcile_converges_without_duplicates(api: Api, operator: Operator) -> None:
    await operator.stop()
    await api.create(ORG, org_body())
    # Only the namespace got created before the "crash".
    await api.request(
        "PATCH",
        "/api/v1/namespaces/acme-prod?fieldManager=tenantry&force=true",
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": "acme-prod",
                "labels": {"app.kubernetes.io/managed-by": "tenantry", "tenantry.dev/organization": "acme"},
            },
        },
        "application/apply-patch+yaml",
    )
    await operator.start()
    org = await ready(api)
    assert [n["phase"] for n in org["status"]["namespaces"]] == ["Active", "Active"]
    namespaces = await api.get("/api/v1/namespaces?labelSelector=tenantry.dev/organization=acme")
    assert sorted(n["metadata"]["name"] for n in namespaces["items"]) == ["acme-dev", "acme-prod"]


async def test_policy_change_reconciles_its_organizations(api: Api, operator: Operator) -> None:
    await api.create(ORG, org_body())
    await ready(api)
    await api.create(
        POLICY,
        policy_body(
            environments=[{"name": "prod", "quota": {"pods": "7"}}, {"name": "dev", "quota": {"pods": "3"}}]
        ),
    )

    async def updated() -> bool:
        quota = await api.get(QUOTA)
        # Server-side apply removes the keys the new policy dropped (fields.py models it).
        return quota["spec"]["hard"] == {"pods": "7"}

    await until(updated)


async def test_api_errors_are_retried_until_converged(api: Api, operator: Operator) -> None:
    quota = api.kube.fail("PATCH", "/api/v1/namespaces/acme-prod/resourcequotas/tenantry-quota", times=2)
    limits = api.kube.fail(
        "PATCH", "/api/v1/namespaces/acme-dev/limitranges/tenantry-limits", code=429, reason="TooManyRequests"
    )
    await api.create(ORG, org_body())
    await ready(api)
    assert await api.get(QUOTA)
    assert (quota.hits, limits.hits) == (2, 1), "every injected error was answered, and retried"


async def test_policy_status_and_platform_admin_binding(api: Api, operator: Operator) -> None:
    await api.create(ORG, org_body())
    await api.create(
        POLICY,
        policy_body(rbac={"platformAdmins": [{"kind": "Group", "name": "platform"}]}),
    )

    async def policy_ready() -> Any:
        policy = await api.get(f"{POLICY}/default")
        conds = (policy.get("status") or {}).get("conditions", [])
        return (
            policy
            if conds and conds[0]["status"] == "True" and policy["status"]["organizations"] == 1
            else None
        )

    await until(policy_ready)
    binding = await until(
        lambda: api.get(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/tenantry:platform-admins:default"
        )
    )
    assert binding["roleRef"]["name"] == "tenantry:platform-admin"
    assert binding["subjects"] == [
        {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "platform"}
    ]


async def test_invalid_policy_is_reported_in_its_status(api: Api, operator: Operator) -> None:
    await api.create(
        POLICY,
        policy_body("broken", environments=[{"name": "prod", "quota": {"pods": "-1"}}]),
    )

    async def invalid() -> Any:
        policy = await api.get(f"{POLICY}/broken")
        conds = (policy.get("status") or {}).get("conditions", [])
        return conds[0] if conds and conds[0]["reason"] == "InvalidPolicy" else None

    cond = await until(invalid)
    assert "spec.environments[0].quota.pods" in cond["message"] and "negative" in cond["message"]


async def test_an_exception_is_removed_when_it_expires(api: Api, kube: Any) -> None:
    today = [TODAY]
    op = Operator(kube)
    await op.start(today=lambda: today[0], resync_seconds=0.2)
    try:
        await api.create(
            ORG,
            org_body(
                network={
                    "allowFrom": [{"organization": "beta", "reason": "billing", "expires": "2026-12-01"}]
                }
            ),
        )
        path = "/apis/networking.k8s.io/v1/namespaces/acme-prod/networkpolicies/tenantry-allow-from-beta"
        await until(lambda: api.get(path))
        today[0] = dt.date(2026, 12, 2)  # the periodic resync notices the expiry
        await until(lambda: _gone(api, path))
    finally:
        await op.stop()


async def test_drift_is_counted_in_metrics(api: Api, operator: Operator) -> None:
    before = DRIFT.labels(kind="NetworkPolicy", change="deleted")._value.get()
    await api.create(ORG, org_body())
    await ready(api)
    await api.delete(NETPOL)
    await until(lambda: api.get(NETPOL))
    assert DRIFT.labels(kind="NetworkPolicy", change="deleted")._value.get() == before + 1


async def test_objects_merely_labelled_as_ours_are_never_deleted(api: Api, operator: Operator) -> None:
    await api.create(ORG, org_body())
    await ready(api)
    # A tenant copies our labels onto its own NetworkPolicy: we did not create it, so it stays.
    labels = {"app.kubernetes.io/managed-by": "tenantry", "tenantry.dev/organization": "acme"}
    mine = "/apis/networking.k8s.io/v1/namespaces/acme-prod/networkpolicies"
    await api.create(
        mine,
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "team-allow-metrics", "labels": labels},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        },
    )
    await api.patch(f"{ORG}/acme", {"spec": {"displayName": "ACME"}})  # trigger a reconcile
    await ready(api)
    await asyncio.sleep(0.3)
    assert await api.get(f"{mine}/team-allow-metrics")


async def test_argocd_project_per_organization_where_argocd_is_installed(
    api: Api, operator: Operator
) -> None:
    await declare_argocd(api)
    await operator.restart()
    await api.create(
        POLICY,
        policy_body(gitops={"argocd": {"enabled": True}}),
    )
    await api.create(ORG, org_body())
    project = await until(lambda: api.get("/apis/argoproj.io/v1alpha1/namespaces/argocd/appprojects/acme"))
    assert [d["namespace"] for d in project["spec"]["destinations"]] == ["acme-prod", "acme-dev"]
    assert project["spec"]["clusterResourceWhitelist"] == []


async def test_without_argocd_the_project_is_skipped_not_failed(api: Api, operator: Operator) -> None:
    await api.create(
        POLICY,
        policy_body(gitops={"argocd": {"enabled": True}}),
    )
    await api.create(ORG, org_body())
    org = await ready(api)
    assert condition(org, "RBACReady")["status"] == "True"


async def test_rotated_credentials_are_reloaded_on_401(api: Api, kube: Any) -> None:
    reloads: list[int] = []

    def reload() -> Connection:
        reloads.append(1)
        return Connection(server=str(kube.url).rstrip("/"))

    kube.fail(
        "PATCH", "/api/v1/namespaces/acme-prod", code=401, reason="Unauthorized", message="token expired"
    )
    op = Operator(kube)
    await op.start(reload_credentials=reload)
    try:
        await api.create(ORG, org_body())
        await ready(api)
        assert reloads == [1]
    finally:
        await op.stop()


async def test_a_conflict_on_the_finalizer_patch_is_retried(api: Api, operator: Operator) -> None:
    conflict = api.kube.fail(
        "PATCH",
        "/apis/tenantry.dev/v1alpha1/organizations/acme",
        code=409,
        reason="Conflict",
        message="the object has been modified",
    )
    await api.create(ORG, org_body())
    org = await ready(api)
    assert conflict.hits == 1  # the conflict really happened
    assert "tenantry.dev/finalizer" in org["metadata"]["finalizers"]


async def test_drift_is_healed_after_a_watch_stream_failed(api: Api, kube: Any) -> None:
    # The first watch of NetworkPolicies fails; Kopf reconnects and the stream works again.
    failed = kube.fail(watch_of="networking.k8s.io/v1/networkpolicies")
    op = Operator(kube)
    await op.start()
    try:
        await api.create(ORG, org_body())
        await ready(api)
        assert failed.hits == 1
        await api.delete(NETPOL)
        await until(lambda: api.get(NETPOL), timeout=10.0)
    finally:
        await op.stop()


async def test_an_expired_watch_is_relisted_and_drift_still_heals(
    api: Api, operator: Operator, kube: Any
) -> None:
    netpols = "networking.k8s.io/v1/networkpolicies"
    await api.create(ORG, org_body())
    await ready(api)
    # The watch cache's window moves past the informer's resourceVersion, and its watch breaks:
    # the reconnect is told 410 Expired (an ERROR event, as the API server sends it).
    kube.forget_history(netpols)
    kube.end_watches(netpols)

    def requests(verb: str) -> list[Any]:
        return [r for r in kube.requests if r.verb == verb and r.plural == "networkpolicies"]

    await until(lambda: asyncio.sleep(0, any(r.expired for r in requests("watch"))))
    await until(lambda: asyncio.sleep(0, len(requests("list")) >= 2))  # a 410 makes it list again
    await api.delete(NETPOL)
    await until(lambda: api.get(NETPOL), timeout=10.0)


async def test_an_allow_rule_slipped_into_default_deny_is_removed(api: Api, operator: Operator) -> None:
    await api.create(ORG, org_body())
    await ready(api)
    await api.patch(NETPOL, {"spec": {"ingress": [{}]}})  # "allow all ingress"

    async def healed() -> bool:
        spec = (await api.get(NETPOL))["spec"]
        return spec.get("ingress") in (None, [])

    await until(healed)
    drift = await until(lambda: events(api, "DriftCorrected"))
    assert "NetworkPolicy acme-prod/tenantry-default-deny was modified: spec" in drift[0]["message"]


async def test_a_subject_appended_to_a_managed_binding_is_removed(api: Api, operator: Operator) -> None:
    await api.create(ORG, org_body())
    await ready(api)
    binding = await api.get(BINDING)
    intruder = {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "mallory"}
    await api.patch(BINDING, {"subjects": [*binding["subjects"], intruder]})

    async def healed() -> bool:
        return intruder not in (await api.get(BINDING))["subjects"]

    await until(healed)


async def test_drift_while_the_operator_was_down_is_healed_and_reported(api: Api, operator: Operator) -> None:
    await api.create(ORG, org_body())
    org = await ready(api)
    assert org["status"]["appliedObjects"]
    await operator.stop()
    await api.delete(NETPOL)
    await operator.start()
    await until(lambda: api.get(NETPOL))
    drift = await until(lambda: events(api, "DriftCorrected"))
    assert "NetworkPolicy acme-prod/tenantry-default-deny was deleted" in drift[0]["message"]


async def test_quota_usage_reaches_the_metrics_at_once_and_the_status_within_the_interval(
    api: Api, kube: Any
) -> None:
    # The docs promise: status.quota at most one interval (30 s; 2 s here) after Ready, the
    # metric as soon as the quota's status is known.
    op = Operator(kube)
    await op.start(quota_status_interval_seconds=2.0)
    try:
        await api.create(ORG, org_body())
        await ready(api)
        # What the resourcequota controller does when pods start.
        await api.request(
            "PATCH",
            f"{QUOTA}/status",
            {"status": {"hard": {"pods": "200"}, "used": {"pods": "150"}}},
            "application/merge-patch+json",
        )
        started = time.monotonic()

        async def reported() -> Any:
            org = await api.get(f"{ORG}/acme")
            usage = {q["environment"]: q for q in (org.get("status") or {}).get("quota", [])}
            return usage.get("prod", {}).get("used", {}).get("pods") == "150"

        def ratio() -> float | None:
            return REGISTRY.get_sample_value(
                "tenantry_quota_use_ratio",
                {"organization": "acme", "environment": "prod", "resource": "pods"},
            )

        async def measured() -> bool:
            return ratio() == 0.75

        await until(measured, timeout=1.0)
        await until(reported, timeout=2.0 + 2.0)
        print(f"status.quota filled {time.monotonic() - started:.2f}s after the usage changed")
        assert (await api.get(QUOTA))["spec"]["hard"]["requests.cpu"] == "8"  # nothing re-applied
    finally:
        await op.stop()


async def test_a_terminating_namespace_is_deleted_and_reported_once(api: Api, kube: Any) -> None:
    op = Operator(kube)
    await op.start(resync_seconds=0.1)
    try:
        await api.create(ORG, org_body(deletionPolicy="Delete"))
        await ready(api)
        # Another controller's finalizer keeps the namespace terminating for a while.
        await api.patch("/api/v1/namespaces/acme-dev", {"metadata": {"finalizers": ["example.com/hold"]}})
        await api.patch(f"{ORG}/acme", {"spec": {"environments": ["prod"]}})
        terminating = await until(lambda: _terminating(api, "/api/v1/namespaces/acme-dev"))
        assert terminating
        await asyncio.sleep(1.0)  # ~10 resyncs while it terminates
        assert len(await events(api, "NamespaceDeleted")) == 1
        await api.patch("/api/v1/namespaces/acme-dev", {"metadata": {"finalizers": []}})
        await until(lambda: _gone(api, "/api/v1/namespaces/acme-dev"))
    finally:
        await op.stop()


async def _terminating(api: Api, path: str) -> bool:
    obj = await api.get(path)
    return bool(obj and obj["metadata"].get("deletionTimestamp"))


async def test_deleting_an_organization_spares_objects_merely_labelled_as_its(
    api: Api, operator: Operator
) -> None:
    await api.create(ORG, org_body(deletionPolicy="Delete"))
    await ready(api)
    labels = {"app.kubernetes.io/managed-by": "tenantry", "tenantry.dev/organization": "acme"}
    await api.create(
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "payments", "labels": labels}},
    )
    await api.delete(f"{ORG}/acme")
    await until(lambda: _gone(api, f"{ORG}/acme"))
    assert await api.get("/api/v1/namespaces/acme-prod") is None
    assert await api.get("/api/v1/namespaces/payments"), "never delete what we did not create"


async def test_quota_usage_alone_is_written_to_status_at_most_once_per_interval(api: Api, kube: Any) -> None:
    # kube-controller-manager updates a quota's usage with every pod start or stop: without a
    # limit, each would be a status write of the Organization.
    op = Operator(kube)
    await op.start(quota_status_interval_seconds=5.0)
    try:
        await api.create(ORG, org_body())
        await ready(api)
        status_path = f"{ORG}/acme/status"

        def status_writes() -> int:
            return sum(1 for _, path in api.writes() if path == status_path)

        async def set_used(pods: str) -> None:
            body = {"status": {"hard": {"pods": "200"}, "used": {"pods": pods}}}
            await api.request("PATCH", f"{QUOTA}/status", body, "application/merge-patch+json")

        async def used_is(pods: str) -> bool:
            org = await api.get(f"{ORG}/acme")
            usage = {q["environment"]: q for q in (org.get("status") or {}).get("quota", [])}
            return usage.get("prod", {}).get("used", {}).get("pods") == pods

        await set_used("150")
        await until(lambda: used_is("150"))
        before = status_writes()
        for pods in ("160", "170", "180"):
            await set_used(pods)
        await until(lambda: used_is("180"), timeout=15.0)
        assert status_writes() == before + 1, "three usage changes within the interval: one write"
    finally:
        await op.stop()
