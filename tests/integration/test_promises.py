"""Promises whose code was guarded by no test: each test here fails when that code is removed
(tests/mutation/run.py removes it and checks)."""

from __future__ import annotations

from typing import Any

from tenantry.reconcile.queue import Priority
from tests.fakeapi.server import FakeApiServer
from tests.integration.conftest import (
    ORG,
    Api,
    Operator,
    metric_total,
    org_body,
    reconciles,
    settled,
)
from tests.integration.test_lifecycle import NETPOL, _gone, events
from tests.integration.test_onboarding import ready, until

DRIFT = "tenantry_drift_corrections_total"
DEV = "/api/v1/namespaces/acme-dev"
DEV_BINDING = (
    "/apis/rbac.authorization.k8s.io/v1/namespaces/acme-dev/rolebindings/tenantry:organization-admins"
)
NETPOLS = "networking.k8s.io/v1/networkpolicies"


async def test_drift_while_the_operator_was_down_is_reported_in_events_and_metrics(
    api: Api, operator: Operator
) -> None:
    await api.create(ORG, org_body())
    org = await ready(api)
    assert org["status"]["appliedObjects"], "what was applied is kept in status, for the next process"
    await settled(operator)
    await operator.stop()
    await api.delete(NETPOL)  # nobody watching: a new process has no tombstone for it
    before = metric_total(DRIFT, kind="NetworkPolicy", change="deleted")
    await operator.start()
    await until(lambda: api.get(NETPOL))
    drift = await until(lambda: events(api, "DriftCorrected"))
    assert [e["message"] for e in drift] == [
        "NetworkPolicy acme-prod/tenantry-default-deny was deleted; restored to the desired state"
    ]
    assert metric_total(DRIFT, kind="NetworkPolicy", change="deleted") == before + 1


async def test_our_own_prune_is_not_reported_as_drift(api: Api, operator: Operator) -> None:
    # Delete: we delete the namespace; Retain: we delete the tenant RoleBinding. Neither is
    # drift, neither now nor when the environment comes back and they are created again.
    await api.create(ORG, org_body(deletionPolicy="Delete"))
    await api.create(ORG, org_body("beta"))
    await ready(api)
    await ready(api, "beta")
    drift_before = metric_total(DRIFT)
    for name in ("acme", "beta"):
        await api.patch(f"{ORG}/{name}", {"spec": {"environments": ["prod"]}})
    await until(lambda: _gone(api, DEV))
    await until(lambda: _gone(api, DEV_BINDING.replace("acme", "beta")))
    await ready(api)
    await ready(api, "beta")
    await settled(operator)
    assert await events(api, "NamespaceDeleted"), "the prune happened"

    for name in ("acme", "beta"):
        await api.patch(f"{ORG}/{name}", {"spec": {"environments": ["prod", "dev"]}})
    await until(lambda: api.get(DEV))
    await until(lambda: api.get(DEV_BINDING.replace("acme", "beta")))
    await ready(api)
    await ready(api, "beta")
    await settled(operator)
    assert await api.get(DEV_BINDING)
    assert [e["message"] for e in await events(api, "DriftCorrected")] == []
    assert metric_total(DRIFT) == drift_before


async def test_a_spec_change_is_not_reported_as_drift(api: Api, operator: Operator) -> None:
    await api.create(ORG, org_body())
    await ready(api)
    # The member ClusterRole lists the namespaces; the retained namespace is re-adopted: both
    # change because the spec did, and neither is drift.
    drift_before = metric_total(DRIFT)
    for environments in (["prod"], ["prod", "dev"]):  # removed (retained), then back
        await api.patch(f"{ORG}/acme", {"spec": {"environments": environments}})
        await ready(api)
        await settled(operator)
    assert await api.get(DEV_BINDING)
    assert [e["message"] for e in await events(api, "DriftCorrected")] == []
    assert metric_total(DRIFT) == drift_before


async def test_a_terminating_namespace_is_requeued_and_re_created_once_gone(
    api: Api, operator: Operator
) -> None:
    await api.create(ORG, org_body())
    await ready(api)
    # Another controller's finalizer keeps the namespace terminating after someone deletes it.
    await api.patch(DEV, {"metadata": {"finalizers": ["example.com/hold"]}})
    await settled(operator)
    uid = (await api.get(DEV))["metadata"]["uid"]
    requeued = reconciles("requeue")
    await api.delete(DEV)
    # One watch event (the deletionTimestamp), then no event at all while it terminates: the
    # second pass can only come from the Requeue.
    await until(lambda: _async(reconciles("requeue") >= requeued + 2), timeout=15.0)
    org = await api.get(f"{ORG}/acme")
    assert {n["name"]: n["phase"] for n in org["status"]["namespaces"]}["acme-dev"] == "Terminating"
    assert (await api.get(DEV))["metadata"]["uid"] == uid, "not re-created while terminating"

    await api.patch(DEV, {"metadata": {"finalizers": []}})  # the other controller is done

    async def recreated() -> Any:
        ns = await api.get(DEV)
        return ns if ns and ns["metadata"]["uid"] != uid else None

    ns = await until(recreated)
    assert not ns["metadata"].get("deletionTimestamp")
    org = await ready(api)
    assert [n["phase"] for n in org["status"]["namespaces"]] == ["Active", "Active"]


async def _async(value: Any) -> Any:
    return value


async def test_a_deletion_missed_while_the_watch_was_broken_is_healed_after_410(
    api: Api, operator: Operator, kube: FakeApiServer
) -> None:
    await api.create(ORG, org_body())
    await ready(api)
    await settled(operator)
    # The policy goes and no watcher hears it: by the time the watch reconnects, the deletion is
    # older than the watch cache's window (what a client whose watch was broken misses).
    kube.delete_unheard(NETPOLS, "acme-prod", "tenantry-default-deny")
    assert await api.get(NETPOL) is None
    kube.end_watches(NETPOLS)  # the watch breaks
    # It reconnects from its resourceVersion, is told 410 Gone, lists again: the policy is not
    # in the list, so the informer reports it deleted, and it is restored.
    restored = await until(lambda: api.get(NETPOL), timeout=10.0)
    assert restored["spec"]["policyTypes"] == ["Ingress", "Egress"]
    watches = [r for r in kube.requests if r.verb == "watch" and r.plural == "networkpolicies"]
    lists = [r for r in kube.requests if r.verb == "list" and r.plural == "networkpolicies"]
    assert [r.expired for r in watches].count(True) == 1, "the reconnect was told 410 Gone"
    assert len(lists) >= 2, "and listed again"
    drift = await until(lambda: events(api, "DriftCorrected"))
    assert "NetworkPolicy acme-prod/tenantry-default-deny was deleted" in drift[0]["message"]


async def test_drift_during_a_pass_over_every_organization_is_healed_before_the_pass_ends(
    api: Api, operator: Operator
) -> None:
    # A resync queues every Organization; each no-op reconcile awaits nothing that yields, so
    # without a turn for the event loop between them the whole pass would run first.
    names = [f"t{i:03d}" for i in range(120)]
    for name in names:
        await api.create(ORG, org_body(name, environments=["prod"]))
    for name in names:
        await ready(api, name, timeout=30.0)
    await settled(operator)
    runtime = operator.runtime
    assert runtime is not None and runtime.events is not None
    before = reconciles()
    await runtime.events.enqueue_all(Priority.RESYNC)
    path = NETPOL.replace("acme", "t119")
    await api.delete(path)
    await until(lambda: api.get(path), timeout=10.0)
    assert reconciles() - before < len(names), "healed while the resync pass was still running"


async def test_what_a_tenant_admin_writes_is_never_healed_pruned_or_adopted(
    api: Api, operator: Operator
) -> None:
    """Organization Admin self-service: a tenant's own RoleBinding and NetworkPolicy carry none of
    our labels, so the operator neither adopts nor prunes them, not even when it withdraws tenant
    access from a retained namespace; they go with the namespace. (Roles the operator never
    reads at all; the fake does not serve them.)"""
    await api.create(ORG, org_body())
    await ready(api)
    rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/acme-dev"
    tenant_objects = {
        f"{rbac}/rolebindings": {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "team", "namespace": "acme-dev"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
            "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "acme-devs"}],
        },
        f"/apis/{NETPOLS}".replace("networkpolicies", "namespaces/acme-dev/networkpolicies"): {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "allow-web", "namespace": "acme-dev"},
            "spec": {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]},
        },
    }
    for path, body in tenant_objects.items():
        await api.create(path, body)
    paths = [f"{path}/{body['metadata']['name']}" for path, body in tenant_objects.items()]
    before = [await api.get(path) for path in paths]
    drift_before = metric_total(DRIFT)
    # Retain: dev stays, our RoleBindings in it go; then dev comes back (re-adopted).
    for environments in (["prod"], ["prod", "dev"]):
        await api.patch(f"{ORG}/acme", {"spec": {"environments": environments}})
        await ready(api)
        await settled(operator)
    assert [await api.get(path) for path in paths] == before
    touched = [(m, p) for m, p in api.writes() if any(p.startswith(path) for path in paths)]
    assert touched == []
    assert [e["message"] for e in await events(api, "DriftCorrected")] == []
    assert metric_total(DRIFT) == drift_before
