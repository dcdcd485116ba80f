"""CRDs that are missing, deleted while watched, and installed again, as a real API server does it.

What the fake does here is what Kubernetes does (and the e2e suite checks on a real cluster):
- deleting a CRD first marks it (deletionTimestamp; the API server's
  `customresourcecleanup.apiextensions.k8s.io` finalizer), then deletes every object of it
  (their finalizers run), then the CRD goes;
- once it is gone, its watches end and every request for it is a plain-text 404.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tenantry.observe.metrics import RESOURCE_SERVED
from tests.fakeapi.resources import ResourceInfo
from tests.integration.conftest import (
    CRDS,
    ORG,
    POLICY,
    R_ORGANIZATIONS,
    R_POLICIES,
    Api,
    Operator,
    crd_object,
    declare_argocd,
    org_body,
    policy_body,
)
from tests.integration.test_lifecycle import QUOTA, _gone
from tests.integration.test_onboarding import ready, until

NAMESPACE = "/api/v1/namespaces/acme-prod"
ADMINS = "/apis/rbac.authorization.k8s.io/v1/namespaces/acme-prod/rolebindings/tenantry:organization-admins"
PROJECT = "/apis/argoproj.io/v1alpha1/namespaces/argocd/appprojects/acme"


async def uninstall(api: Api, plural: str, resource: str, objects: str) -> None:
    """`kubectl delete crd <plural>.tenantry.dev`, step by step as the API server does it."""
    await api.delete(f"{CRDS}/{plural}.tenantry.dev")  # marked: its finalizer holds it
    for item in (await api.get(objects))["items"]:
        await api.delete(f"{objects}/{item['metadata']['name']}")
        await until(lambda name=item["metadata"]["name"]: _gone(api, f"{objects}/{name}"), timeout=10.0)
    await api.patch(f"{CRDS}/{plural}.tenantry.dev", {"metadata": {"finalizers": []}})
    api.kube.stop_serving(resource)  # its watches end; requests get the plain-text 404


async def install(api: Api, plural: str, info: ResourceInfo) -> None:
    api.kube.serve(info)
    await api.create(CRDS, crd_object(plural))


def served(plural: str) -> float:
    return float(RESOURCE_SERVED.labels(resource=plural)._value.get())


async def test_deleting_the_organization_crd_keeps_every_tenant_and_the_operator_running(
    api: Api, operator: Operator
) -> None:
    # deletionPolicy Delete: deleting the CRD must still not delete the tenant's namespaces.
    await api.create(ORG, org_body(deletionPolicy="Delete"))
    await ready(api)
    namespace_uid = (await api.get(NAMESPACE))["metadata"]["uid"]
    info = api.kube.served[R_ORGANIZATIONS]

    await uninstall(api, "organizations", R_ORGANIZATIONS, ORG)

    await until(lambda: asyncio.sleep(0, served("organizations") == 0.0), timeout=10.0)
    assert operator.runtime is not None and operator.runtime.tasks, "the operator keeps running"
    assert (await api.get(NAMESPACE))["metadata"]["uid"] == namespace_uid, "the namespace is kept"
    assert await api.get(ADMINS) is not None, "tenant access is kept as it was"
    assert (await api.get(QUOTA))["spec"]["hard"], "guardrails are kept"

    # Installed again (a GitOps tool re-creating the CRD, then the Organization): reconciled,
    # without an operator restart, into the very same namespace.
    await install(api, "organizations", info)
    await until(lambda: asyncio.sleep(0, served("organizations") == 1.0), timeout=10.0)
    await api.create(ORG, org_body(deletionPolicy="Delete"))
    await ready(api)
    assert (await api.get(NAMESPACE))["metadata"]["uid"] == namespace_uid


async def test_a_missing_tenancypolicy_crd_keeps_the_last_policy_and_drift_still_heals(
    api: Api, operator: Operator
) -> None:
    quota = {"name": "prod", "quota": {"pods": "7"}}
    await api.create(POLICY, policy_body(environments=[quota]))
    await api.create(ORG, org_body(environments=["prod"]))
    await ready(api)
    info = api.kube.served[R_POLICIES]

    await uninstall(api, "tenancypolicies", R_POLICIES, POLICY)
    await until(lambda: asyncio.sleep(0, served("tenancypolicies") == 0.0), timeout=10.0)

    # Drift on a child of an Organization whose policy went with the CRD: healed with the last
    # policy seen (pods 7), never with the built-in default (pods 200).
    await api.patch(QUOTA, {"spec": {"hard": {"pods": "1000"}}})
    await until(lambda: _quota_pods(api, "7"), timeout=10.0)

    await install(api, "tenancypolicies", info)
    await until(lambda: asyncio.sleep(0, served("tenancypolicies") == 1.0), timeout=10.0)
    await api.create(POLICY, policy_body(environments=[{"name": "prod", "quota": {"pods": "9"}}]))
    await until(lambda: _quota_pods(api, "9"), timeout=10.0)


async def _quota_pods(api: Api, value: str) -> bool:
    quota = await api.get(QUOTA)
    return bool(quota and quota["spec"]["hard"].get("pods") == value)


async def test_argocd_installed_while_running_gets_projects_without_a_restart(api: Api, kube: Any) -> None:
    op = Operator(kube)
    await op.start(not_served_poll_seconds=0.1)
    try:
        await api.create(POLICY, policy_body(gitops={"argocd": {"enabled": True}}))
        await api.create(ORG, org_body())
        await ready(api)  # without Argo CD: Ready (and no JSON decode of a text 404)
        await declare_argocd(api)
        await until(lambda: api.get(PROJECT), timeout=10.0)
    finally:
        await op.stop()
