"""RBAC: tenant roles never write guardrails or anything cluster-scoped; bindings only to our roles."""

from __future__ import annotations

from typing import Any

import pytest

from tenantry.api.policy import TenancyPolicy, builtin_default_policy
from tenantry.render import render_policy_objects, render_shared_cluster_roles
from tenantry.render.rbac import TENANT_ROLES
from tests.conftest import minimal_org
from tests.unit.helpers import allows, find, names, render

ROLES = {r["metadata"]["name"]: r for r in render_shared_cluster_roles()}
GUARDRAILS = [
    ("", "resourcequotas"),
    ("", "limitranges"),
    ("networking.k8s.io", "networkpolicies"),
    ("rbac.authorization.k8s.io", "rolebindings"),
    ("rbac.authorization.k8s.io", "roles"),
]
CLUSTER_SCOPED = [
    ("", "namespaces"),
    ("", "nodes"),
    ("rbac.authorization.k8s.io", "clusterroles"),
    ("rbac.authorization.k8s.io", "clusterrolebindings"),
    ("tenantry.dev", "organizations"),
]
WRITE_VERBS = ["create", "update", "patch", "delete", "deletecollection"]


@pytest.mark.parametrize("role", ["tenantry:organization-admin", "tenantry:developer", "tenantry:viewer"])
@pytest.mark.parametrize(("group", "resource"), GUARDRAILS)
def test_tenant_roles_cannot_write_guardrails(role: str, group: str, resource: str) -> None:
    for verb in WRITE_VERBS:
        assert not allows(ROLES[role], group, resource, verb), (role, resource, verb)


@pytest.mark.parametrize("role", sorted(TENANT_ROLES))
def test_tenant_roles_read_endpoints_but_never_write_them(role: str) -> None:
    """Hand-written Endpoints are mirrored into EndpointSlices and routed to by the shared
    ingress controller: write would let a tenant point a Service at another tenant's pod
    (CVE-2021-25740). Only the platform admins write them."""
    for verb in WRITE_VERBS:
        assert not allows(ROLES[role], "", "endpoints", verb), (role, verb)
        assert not allows(ROLES[role], "discovery.k8s.io", "endpointslices", verb), (role, verb)
    # developer-exec and organization-admin-self-service are bound beside a full role; the
    # reads come from that one.
    if role not in ("tenantry:developer-exec", "tenantry:organization-admin-self-service"):
        assert allows(ROLES[role], "", "endpoints", "list")
    assert allows(ROLES["tenantry:platform-admin"], "", "endpoints", "create")


@pytest.mark.parametrize("role", sorted(TENANT_ROLES))
@pytest.mark.parametrize(("group", "resource"), CLUSTER_SCOPED)
def test_tenant_roles_hold_nothing_cluster_scoped(role: str, group: str, resource: str) -> None:
    for verb in ["get", "list", "watch", *WRITE_VERBS]:
        assert not allows(ROLES[role], group, resource, verb)


def test_no_role_uses_wildcards_or_escalation_verbs() -> None:
    for role in ROLES.values():
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
            assert not {"bind", "escalate", "impersonate"} & set(rule["verbs"])


def test_organization_admin_fully_controls_workloads_and_sees_guardrails() -> None:
    admin = ROLES["tenantry:organization-admin"]
    for verb in ["create", "update", "delete"]:
        assert allows(admin, "apps", "deployments", verb)
        assert allows(admin, "", "secrets", verb)
    assert allows(admin, "", "pods/exec", "create")
    assert allows(admin, "", "resourcequotas", "get")
    assert allows(admin, "networking.k8s.io", "networkpolicies", "list")


def test_developer_deploys_and_reads_logs_but_exec_is_a_separate_role() -> None:
    dev = ROLES["tenantry:developer"]
    assert allows(dev, "apps", "deployments", "create")
    assert allows(dev, "", "pods/log", "get")
    assert not allows(dev, "", "pods/exec", "create")
    assert allows(ROLES["tenantry:developer-exec"], "", "pods/exec", "create")


def test_viewer_is_read_only_with_logs_and_no_secrets() -> None:
    viewer = ROLES["tenantry:viewer"]
    assert allows(viewer, "apps", "deployments", "list")
    assert allows(viewer, "", "pods/log", "get")
    for verb in ["get", "list", "watch"]:
        assert not allows(viewer, "", "secrets", verb)
    for rule in viewer["rules"]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}


def test_bindings_per_namespace_reference_only_tenant_roles(acme_doc: dict[str, Any]) -> None:
    bindings = [o for o in render(acme_doc).objects if o["kind"] == "RoleBinding"]
    assert bindings
    for binding in bindings:
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": binding["roleRef"]["name"],
        }
        assert binding["roleRef"]["name"] in TENANT_ROLES
        assert binding["roleRef"]["name"] != "cluster-admin"


def test_developer_exec_only_where_the_policy_allows_it_never_prod_by_default(
    acme_doc: dict[str, Any],
) -> None:
    objects = render(acme_doc).objects
    assert "tenantry:developers-exec" not in names(objects, "RoleBinding", "acme-prod")
    assert "tenantry:developers-exec" in names(objects, "RoleBinding", "acme-staging")
    assert "tenantry:developers-exec" in names(objects, "RoleBinding", "acme-dev")


def test_members_become_subjects_of_their_role(acme_doc: dict[str, Any]) -> None:
    objects = render(acme_doc).objects
    admins = find(objects, "RoleBinding", "tenantry:organization-admins", "acme-prod")
    assert admins["subjects"] == [
        {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "acme-admins"}
    ]
    devs = find(objects, "RoleBinding", "tenantry:developers", "acme-dev")
    assert {"kind": "ServiceAccount", "name": "ci-deployer", "namespace": "acme-dev"} in devs["subjects"]
    viewers = find(objects, "RoleBinding", "tenantry:viewers", "acme-prod")
    assert viewers["roleRef"]["name"] == "tenantry:viewer"


def test_no_binding_for_a_role_without_members() -> None:
    objects = render(minimal_org(members={"admins": [{"kind": "User", "name": "a@x"}]})).objects
    assert names(objects, "RoleBinding", "acme-prod") == [
        "tenantry:organization-admins",
        "tenantry:organization-admins-self-service",
    ]


def test_members_may_get_only_their_own_namespaces_and_organization(acme_doc: dict[str, Any]) -> None:
    objects = render(acme_doc).objects
    role = find(objects, "ClusterRole", "tenantry:member:acme")
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["namespaces"],
            "verbs": ["get"],
            "resourceNames": ["acme-dev", "acme-prod", "acme-staging"],
        },
        {
            "apiGroups": ["tenantry.dev"],
            "resources": ["organizations"],
            "verbs": ["get"],
            "resourceNames": ["acme"],
        },
    ]
    binding = find(objects, "ClusterRoleBinding", "tenantry:member:acme")
    assert len(binding["subjects"]) == 4


def test_platform_admins_come_from_the_policy() -> None:
    policy = TenancyPolicy.model_validate(
        {
            "apiVersion": "tenantry.dev/v1alpha1",
            "kind": "TenancyPolicy",
            "metadata": {"name": "default"},
            "spec": {"rbac": {"platformAdmins": [{"kind": "Group", "name": "platform-team"}]}},
        }
    )
    (binding,) = render_policy_objects(policy)
    assert binding["kind"] == "ClusterRoleBinding"
    assert binding["roleRef"]["name"] == "tenantry:platform-admin"
    assert binding["subjects"] == [
        {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "platform-team"}
    ]
    assert allows(ROLES["tenantry:platform-admin"], "tenantry.dev", "organizations", "create")


def test_argocd_project_is_limited_to_the_organizations_namespaces(acme_doc: dict[str, Any]) -> None:
    default = builtin_default_policy()
    gitops = default.spec.gitops.model_copy(
        update={"argocd": default.spec.gitops.argocd.model_copy(update={"enabled": True})}
    )
    policy = default.model_copy(update={"spec": default.spec.model_copy(update={"gitops": gitops})})
    project = find(render(acme_doc, policy).objects, "AppProject", "acme", "argocd")
    assert [d["namespace"] for d in project["spec"]["destinations"]] == [
        "acme-prod",
        "acme-staging",
        "acme-dev",
    ]
    assert project["spec"]["clusterResourceWhitelist"] == []
    blocked = {b["kind"] for b in project["spec"]["namespaceResourceBlacklist"]}
    assert {"ResourceQuota", "LimitRange", "NetworkPolicy", "RoleBinding"} <= blocked
    assert "AppProject" not in {o["kind"] for o in render(acme_doc).objects}  # off by default


def test_self_service_writes_roles_bindings_and_network_policies_and_nothing_else() -> None:
    """The constitution's "full control within org namespaces": the self-service role adds exactly
    Roles, RoleBindings and NetworkPolicies (the admission guardrails keep them inside the
    Organization); never quotas or limits, never escalate or bind."""
    role = ROLES["tenantry:organization-admin-self-service"]
    for verb in WRITE_VERBS:
        assert allows(role, "rbac.authorization.k8s.io", "roles", verb)
        assert allows(role, "rbac.authorization.k8s.io", "rolebindings", verb)
        assert allows(role, "networking.k8s.io", "networkpolicies", verb)
        assert not allows(role, "", "resourcequotas", verb)
        assert not allows(role, "", "limitranges", verb)
    assert [(r["apiGroups"], r["resources"]) for r in role["rules"]] == [
        (["rbac.authorization.k8s.io"], ["rolebindings", "roles"]),
        (["networking.k8s.io"], ["networkpolicies"]),
    ]


def test_one_policy_switch_turns_self_service_off() -> None:
    org = minimal_org(members={"admins": [{"kind": "Group", "name": "acme-admins"}]})
    on = render(org).objects
    assert find(on, "RoleBinding", "tenantry:organization-admins-self-service", "acme-prod")["roleRef"][
        "name"
    ] == ("tenantry:organization-admin-self-service")
    off_policy = TenancyPolicy.model_validate(
        {"metadata": {"name": "default"}, "spec": {"rbac": {"organizationAdminSelfService": False}}}
    )
    off = render(org, off_policy).objects
    for namespace in ("acme-prod", "acme-dev"):
        assert names(off, "RoleBinding", namespace) == ["tenantry:organization-admins"]


def test_self_service_is_bound_to_the_mfa_form_of_admin_groups() -> None:
    policy = TenancyPolicy.model_validate(
        {
            "metadata": {"name": "default"},
            "spec": {
                "environments": [
                    {
                        "name": "prod",
                        "quota": {"pods": "10"},
                        "mfa": {"required": True, "groupSuffix": ":mfa"},
                    }
                ]
            },
        }
    )
    org = minimal_org(environments=["prod"], members={"admins": [{"kind": "Group", "name": "acme-admins"}]})
    binding = find(
        render(org, policy).objects, "RoleBinding", "tenantry:organization-admins-self-service", "acme-prod"
    )
    assert [s["name"] for s in binding["subjects"]] == ["acme-admins:mfa"]
