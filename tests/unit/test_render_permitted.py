"""The access an invalid Organization keeps: only what the current policy and spec still allow."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from tenantry.api.organization import Organization
from tenantry.api.policy import TenancyPolicy, builtin_default_policy
from tenantry.api.problems import InvalidObjectError
from tenantry.render import render_organization
from tenantry.render.permitted import permitted_access
from tests.conftest import TODAY, grant_spec

NOW = dt.datetime.combine(TODAY, dt.time(12), tzinfo=dt.UTC)
RBAC_KINDS = ("RoleBinding", "ClusterRole", "ClusterRoleBinding")


def tightened(base: TenancyPolicy, **per_env: dict[str, Any]) -> TenancyPolicy:
    """`base` with fields of some environments changed (the policy tightening of issue 20)."""
    doc = base.model_dump(by_alias=True, exclude_none=True)
    for env in doc["spec"]["environments"]:
        env.update(per_env.get(env["name"], {}))
    return TenancyPolicy.model_validate(doc)


MFA_PROD = {"mfa": {"required": True, "groupSuffix": ":mfa"}}


def acme(doc: dict[str, Any]) -> Organization:
    return Organization.model_validate(doc)


def bindings(objects: list[dict[str, Any]]) -> dict[tuple[str, str], list[str]]:
    return {
        (o["metadata"]["namespace"], o["metadata"]["name"]): [s["name"] for s in o["subjects"]]
        for o in objects
        if o["kind"] == "RoleBinding"
    }


def test_a_valid_organization_keeps_exactly_its_rendered_access(acme_doc: dict[str, Any]) -> None:
    org, policy = acme(acme_doc), builtin_default_policy()
    rendered = render_organization(org, policy, TODAY, NOW)
    permitted = permitted_access(org, policy, NOW)
    assert permitted.objects == [o for o in rendered.objects if o["kind"] in RBAC_KINDS]
    assert permitted.left_out == []
    assert permitted.namespace_objects == [o for o in rendered.objects if o["kind"] == "Namespace"]


def test_mfa_in_prod_drops_users_and_service_accounts_there_and_binds_groups_in_their_mfa_form(
    acme_doc: dict[str, Any],
) -> None:
    doc = copy.deepcopy(acme_doc)
    del doc["spec"]["members"]["developers"][1]["environments"]  # bound everywhere, prod included
    org = acme(doc)
    policy = tightened(builtin_default_policy(), prod=MFA_PROD)
    with pytest.raises(InvalidObjectError):  # the Organization is invalid under this policy
        render_organization(org, policy, TODAY, NOW)
    permitted = permitted_access(org, policy, NOW)
    got = bindings(permitted.objects)
    assert got[("acme-prod", "tenantry:organization-admins")] == ["acme-admins:mfa"]
    assert got[("acme-prod", "tenantry:developers")] == ["acme-devs:mfa"]
    assert ("acme-prod", "tenantry:viewers") not in got  # its only member is a User
    # Where MFA is not required, the User and the ServiceAccount stay bound (the CI case).
    assert got[("acme-dev", "tenantry:developers")] == ["acme-devs", "ci-deployer"]
    assert got[("acme-staging", "tenantry:viewers")] == ["auditor@acme.example"]
    paths = sorted(p.path for p in permitted.left_out)
    assert paths == ["spec.members.developers[1]", "spec.members.viewers[0]"]
    why = {p.path: p.message for p in permitted.left_out}
    assert "ServiceAccount acme-dev/ci-deployer not bound in 'acme-prod'" in why["spec.members.developers[1]"]
    assert "requires MFA" in why["spec.members.viewers[0]"]
    # Still a member elsewhere: keeps `get` on the namespace names.
    member = next(o for o in permitted.objects if o["kind"] == "ClusterRoleBinding")
    assert "auditor@acme.example" in [s["name"] for s in member["subjects"]]


def test_a_member_refused_everywhere_is_bound_nowhere(acme_doc: dict[str, Any]) -> None:
    doc = copy.deepcopy(acme_doc)
    base = builtin_default_policy().model_dump(by_alias=True, exclude_none=True)
    base["spec"]["rbac"]["platformAdmins"] = [{"kind": "Group", "name": "acme-devs"}]
    policy = TenancyPolicy.model_validate(base)
    permitted = permitted_access(acme(doc), policy, NOW)
    for subjects in bindings(permitted.objects).values():
        assert "acme-devs" not in subjects
    member = next(o for o in permitted.objects if o["kind"] == "ClusterRoleBinding")
    assert "acme-devs" not in [s["name"] for s in member["subjects"]]
    assert [p.path for p in permitted.left_out] == ["spec.members.developers[0]"]
    assert "platform admin" in permitted.left_out[0].message


def test_an_environment_the_policy_dropped_gets_no_access(acme_doc: dict[str, Any]) -> None:
    base = builtin_default_policy().model_dump(by_alias=True, exclude_none=True)
    base["spec"]["environments"] = [e for e in base["spec"]["environments"] if e["name"] != "staging"]
    permitted = permitted_access(acme(acme_doc), TenancyPolicy.model_validate(base), NOW)
    assert {ns for ns, _ in bindings(permitted.objects)} == {"acme-prod", "acme-dev"}
    assert set(permitted.namespaces) == {"prod", "dev"}
    assert permitted.left_out[0].path == "spec.environments[1]"
    role = next(o for o in permitted.objects if o["kind"] == "ClusterRole")
    assert "acme-staging" not in role["rules"][0]["resourceNames"]


def test_a_grant_with_an_error_is_not_bound_and_says_why(acme_doc: dict[str, Any]) -> None:
    doc = copy.deepcopy(acme_doc)
    base = builtin_default_policy().model_dump(by_alias=True, exclude_none=True)
    base["spec"]["access"] = {
        "maxGrantHours": 4,
        "approvers": [{"kind": "User", "name": "lead@acme.example"}],
    }
    approved = NOW - dt.timedelta(minutes=1)
    good = grant_spec(expires=NOW + dt.timedelta(hours=1), approved_at=approved, name="ok", environment="dev")
    user = grant_spec(
        expires=NOW + dt.timedelta(hours=1), approved_at=approved, name="user", environment="prod"
    )
    user["subject"] = {"kind": "User", "name": "dana@acme.example"}
    doc["spec"]["access"] = {"grants": [good, user]}
    policy = tightened(TenancyPolicy.model_validate(base), prod=MFA_PROD)
    permitted = permitted_access(acme(doc), policy, NOW)
    got = bindings(permitted.objects)
    assert ("acme-dev", "tenantry:grant:ok") in got
    assert ("acme-prod", "tenantry:grant:user") not in got
    refused = [p for p in permitted.left_out if p.path == "spec.access.grants[1]"]
    assert refused and "grant 'user' not bound" in refused[0].message and "MFA" in refused[0].message


def test_a_machine_identity_listing_non_mfa_environments_is_valid_and_bound_only_there(
    acme_doc: dict[str, Any],
) -> None:
    """docs/access.md: CI's ServiceAccount may be bound in non-MFA environments."""
    doc = copy.deepcopy(acme_doc)
    doc["spec"]["members"]["developers"][1]["environments"] = ["staging", "dev"]
    doc["spec"]["members"]["viewers"] = [{"kind": "Group", "name": "acme-auditors"}]
    policy = tightened(builtin_default_policy(), prod=MFA_PROD)
    rendered = render_organization(acme(doc), policy, TODAY, NOW)  # valid: nothing raised
    got = bindings(rendered.objects)
    assert got[("acme-prod", "tenantry:developers")] == ["acme-devs:mfa"]
    assert got[("acme-staging", "tenantry:developers")] == ["acme-devs", "ci-deployer"]
    assert got[("acme-dev", "tenantry:developers")] == ["acme-devs", "ci-deployer"]
    assert permitted_access(acme(doc), policy, NOW).left_out == []


def test_a_member_listing_prod_or_an_unknown_environment_is_refused_with_its_path(
    acme_doc: dict[str, Any],
) -> None:
    doc = copy.deepcopy(acme_doc)
    doc["spec"]["members"]["developers"][1]["environments"] = ["prod", "qa"]
    policy = tightened(builtin_default_policy(), prod=MFA_PROD)
    with pytest.raises(InvalidObjectError) as caught:
        render_organization(acme(doc), policy, TODAY, NOW)
    messages = {p.path: p.message for p in caught.value.problems}
    assert (
        "'qa' is not an environment of this Organization"
        in messages["spec.members.developers[1].environments[1]"]
    )
    assert "requires MFA" in messages["spec.members.developers[1]"]
    assert "environments: [...]" in messages["spec.members.developers[1]"]
