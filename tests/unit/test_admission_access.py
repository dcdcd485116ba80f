"""The production-access admission policies (manifests/admission/access/), evaluated with
cel-python on the real YAML in the API server's order, as in test_admission_guardrails.py:
matchConstraints (resource rules with scope, the namespaceSelector on the request namespace's
labels), the binding's parameters (every TenancyPolicy for the grant approval, none for MFA),
matchConditions without `variables`, then the validations with lazy `variables`.

The namespaces are what the renderer writes for an Organization under an MFA policy, so the
label and annotations under test are the ones the operator applies.
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest
import yaml
from celpy.adapter import json_to_cel

from tenantry.api.organization import Organization
from tenantry.api.policy import TenancyPolicy
from tenantry.render import render_organization
from tests.conftest import ROOT, grant_spec
from tests.unit.admission_cel import EvaluationError
from tests.unit.admission_cel import condition as _condition
from tests.unit.test_admission_guardrails import (
    _conditions_hold,
    _matches,
    _message,
    _with_variables,
)
from tests.unit.test_admission_policies import OPERATOR, Who, service_account, user

Json = dict[str, Any]
ACCESS = ROOT / "manifests" / "admission" / "access"
DOCS = [
    d
    for p in sorted(ACCESS.glob("*.yaml"))
    if p.name != "kustomization.yaml"
    for d in yaml.safe_load_all(p.read_text())
    if d
]
POLICIES = {d["metadata"]["name"]: d for d in DOCS if d["kind"] == "ValidatingAdmissionPolicy"}
BINDINGS = {d["spec"]["policyName"]: d for d in DOCS if d["kind"] == "ValidatingAdmissionPolicyBinding"}
NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)

POLICY_BODY: Json = {
    "apiVersion": "tenantry.dev/v1alpha1",
    "kind": "TenancyPolicy",
    "metadata": {"name": "default"},
    "spec": {
        "environments": [
            {"name": "prod", "quota": {"pods": "10"}, "mfa": {"required": True, "groupSuffix": ":mfa"}},
            {"name": "staging", "quota": {"pods": "10"}, "mfa": {"required": True, "group": "mfa-verified"}},
            {"name": "dev", "quota": {"pods": "10"}, "developerExec": True},
        ],
        "rbac": {"platformAdmins": [{"kind": "Group", "name": "platform-team"}]},
        "access": {"maxGrantHours": 4, "approvers": [{"kind": "User", "name": "oncall-lead@acme.example"}]},
    },
}
POLICY = TenancyPolicy.model_validate(POLICY_BODY)
ORG = Organization.model_validate(
    {
        "apiVersion": "tenantry.dev/v1alpha1",
        "kind": "Organization",
        "metadata": {"name": "acme"},
        "spec": {"members": {"developers": [{"kind": "Group", "name": "acme-devs"}]}},
    }
)
NAMESPACES = {
    o["metadata"]["name"]: o
    for o in render_organization(ORG, POLICY, NOW.date(), NOW).objects
    if o["kind"] == "Namespace"
}

# --- a replica of the dispatch ---------------------------------------------------------------


def _request(
    op: str, who: Who, namespace: str | None, resource: tuple[str, str, str], sub: str, name: str
) -> Json:
    group, version, plural = resource
    req: Json = {
        "resource": {"group": group, "version": version, "resource": plural},
        "name": name,
        "operation": op,
        "userInfo": {"username": who.username, "groups": list(who.groups)},
    }
    if namespace is not None:
        req["namespace"] = namespace
    if sub:
        req["subResource"] = sub
    return req


def decide(
    policy_name: str,
    req: Json,
    obj: Json | None,
    old: Json | None,
    params: list[Json],
    namespace: Json | None,
) -> tuple[bool, str]:
    policy = POLICIES[policy_name]
    labels = ((namespace or {}).get("metadata") or {}).get("labels") or {}
    if not _matches(policy["spec"]["matchConstraints"], req, labels, required=True):
        return True, "not matched"
    ref = BINDINGS[policy_name]["spec"].get("paramRef")
    evaluations: list[Json | None] = [None] if ref is None else list(params)
    if ref is not None and not params:
        assert ref["parameterNotFoundAction"] == "Allow"
        return True, "no params"
    for param in evaluations:
        activation = {
            "request": json_to_cel(req),
            "object": json_to_cel(obj),
            "oldObject": json_to_cel(old),
            "params": json_to_cel(param),
            "namespaceObject": json_to_cel(namespace),
        }
        if not _conditions_hold(policy, activation):
            continue
        full = _with_variables(policy, activation)
        for validation in policy["spec"]["validations"]:
            if not _condition(validation["expression"], full):
                return False, _message(validation, full)
    return True, "admitted"


# --- MFA ---------------------------------------------------------------------------------------

POD = ("", "v1", "pods")
DEVS = user("dana@acme.example", "acme-devs")
DEVS_MFA = user("dana@acme.example", "acme-devs", "acme-devs:mfa")
STAGING_MFA = user("dana@acme.example", "acme-devs", "mfa-verified")


def mfa(
    op: str, who: Who, namespace: str, resource: tuple[str, str, str] = POD, sub: str = ""
) -> tuple[bool, str]:
    req = _request(op, who, namespace, resource, sub, "web-1")
    return decide("tenantry-mfa", req, {"kind": "Pod"}, None, [], NAMESPACES[namespace])


def test_the_renderer_marks_mfa_namespaces() -> None:
    assert NAMESPACES["acme-prod"]["metadata"]["labels"]["tenantry.dev/mfa"] == "required"
    assert NAMESPACES["acme-prod"]["metadata"]["annotations"]["tenantry.dev/mfa-group-suffix"] == ":mfa"
    assert NAMESPACES["acme-staging"]["metadata"]["annotations"]["tenantry.dev/mfa-group"] == "mfa-verified"
    assert "tenantry.dev/mfa" not in NAMESPACES["acme-dev"]["metadata"]["labels"]


@pytest.mark.parametrize(
    "op,sub",
    [
        ("CREATE", ""),
        ("UPDATE", ""),
        ("DELETE", ""),
        ("CONNECT", "exec"),
        ("CONNECT", "attach"),
        ("CONNECT", "portforward"),
        ("CREATE", "eviction"),
    ],
)
def test_without_mfa_no_write_and_no_exec_in_prod(op: str, sub: str) -> None:
    allowed, why = mfa(op, DEVS, "acme-prod", sub=sub)
    assert not allowed
    assert why == (
        "namespace acme-prod requires MFA (its TenancyPolicy environment sets mfa.required): "
        "dana@acme.example has no group ending in :mfa; sign in again with MFA"
    )
    assert mfa(op, DEVS_MFA, "acme-prod", sub=sub) == (True, "admitted")


def test_one_mfa_group_mode() -> None:
    allowed, why = mfa("CONNECT", DEVS, "acme-staging", sub="exec")
    assert not allowed and "not the group mfa-verified" in why
    assert mfa("CONNECT", STAGING_MFA, "acme-staging", sub="exec") == (True, "admitted")


def test_non_mfa_environments_and_kubernetes_identities_are_not_matched() -> None:
    assert mfa("CREATE", DEVS, "acme-dev") == (True, "not matched")
    for who in (
        OPERATOR,
        service_account("kube-system", "replicaset-controller"),
        Who("system:node:n1", ("system:nodes",)),
    ):
        assert mfa("CREATE", who, "acme-prod") == (True, "admitted")
    assert mfa("CREATE", user("root", "system:masters"), "acme-prod")[0]


def test_cluster_scoped_requests_are_never_matched() -> None:
    req = _request("CREATE", DEVS, None, ("", "v1", "nodes"), "", "n1")
    req_ns = _request("UPDATE", DEVS, None, ("", "v1", "namespaces"), "", "acme-prod")
    # scope: Namespaced: a namespaceSelector alone would not skip cluster-scoped requests.
    for rule in POLICIES["tenantry-mfa"]["spec"]["matchConstraints"]["resourceRules"]:
        assert rule["scope"] == "Namespaced"
    assert req["resource"]["resource"] == "nodes" and req_ns


def test_a_namespace_without_its_annotation_fails_closed() -> None:
    bare = copy.deepcopy(NAMESPACES["acme-prod"])
    del bare["metadata"]["annotations"]
    req = _request("CREATE", DEVS_MFA, "acme-prod", POD, "", "web-1")
    allowed, why = decide("tenantry-mfa", req, {"kind": "Pod"}, None, [], bare)
    assert not allowed and "no MFA group (the namespace names none)" in why


# --- grant approval ------------------------------------------------------------------------------

REQUESTER = user("dana@acme.example", "acme-devs")
APPROVER = user("oncall-lead@acme.example")
PLATFORM = user("pat@platform.example", "platform-team")
ORG_RESOURCE = ("tenantry.dev", "v1alpha1", "organizations")


def grant(approved_by: str | None = "oncall-lead@acme.example", hours: int = 2, **extra: Any) -> Json:
    g = grant_spec(
        expires=NOW + dt.timedelta(hours=hours),
        approved_at=NOW if approved_by is not None else None,
        approved_by=approved_by or "",
        reason="incident 4711: payments stuck",
    )
    g.update(extra)
    return g


def org_with(*grants: Json) -> Json:
    return {
        "apiVersion": "tenantry.dev/v1alpha1",
        "kind": "Organization",
        "metadata": {"name": "acme"},
        "spec": {"access": {"grants": list(grants)}},
    }


def write(who: Who, new: Json, old: Json | None = None, params: list[Json] | None = None) -> tuple[bool, str]:
    req = _request("CREATE" if old is None else "UPDATE", who, None, ORG_RESOURCE, "", "acme")
    return decide("tenantry-grant-approval", req, new, old, [POLICY_BODY] if params is None else params, None)


def test_requesting_is_free_approving_needs_an_approver() -> None:
    assert write(REQUESTER, org_with(grant(None))) == (True, "admitted")  # matchConditions: skipped
    allowed, why = write(user("mallory@acme.example"), org_with(grant()), org_with(grant(None)))
    assert not allowed
    assert why.startswith(
        "Organization acme: grant(s) inc-4711 carry an approval, accepted only from a subject "
        "TenancyPolicy default"
    )
    assert write(APPROVER, org_with(grant()), org_with(grant(None))) == (True, "admitted")
    assert write(PLATFORM, org_with(grant(approved_by="pat@platform.example")), org_with(grant(None)))[0]


def test_never_by_the_requester_or_the_subject() -> None:
    requester_approver = user("dana@acme.example", "platform-team")
    allowed, why = write(
        requester_approver, org_with(grant(approved_by="pat@platform.example")), org_with(grant(None))
    )
    assert not allowed and "requested, or is the subject of, grant(s) inc-4711" in why
    member = user("erin@acme.example", "platform-team", "dana")
    assert not write(member, org_with(grant(approved_by="pat@platform.example")), org_with(grant(None)))[0]


def test_longer_than_the_session_timeout_is_refused() -> None:
    allowed, why = write(APPROVER, org_with(grant(hours=5)), org_with(grant(None, hours=5)))
    assert not allowed and why == (
        "Organization acme: grant(s) inc-4711 must end after approval.approvedAt and last at most 4 hours "
        "(TenancyPolicy default, spec.access.maxGrantHours)"
    )
    assert not write(APPROVER, org_with(grant(hours=-1)), org_with(grant(None, hours=-1)))[0]


def test_an_approved_grant_changed_by_the_requester_is_refused() -> None:
    approved = org_with(grant())
    extended = org_with(grant(hours=3))
    assert not write(REQUESTER, extended, approved)[0]
    swapped = org_with(grant(subject={"kind": "Group", "name": "mallory"}))
    assert not write(REQUESTER, swapped, approved)[0]
    # Unrelated edits keep the approval; removing (revoking) it is free.
    other = copy.deepcopy(approved)
    other["spec"]["displayName"] = "Acme"
    assert write(REQUESTER, other, approved) == (True, "admitted")
    assert write(REQUESTER, org_with(), approved)[0]


def test_a_gitops_controller_approves_when_listed() -> None:
    argocd = service_account("argocd", "argocd-application-controller")
    assert not write(argocd, org_with(grant()))[0]
    listed = copy.deepcopy(POLICY_BODY)
    listed["spec"]["access"]["approvers"].append(
        {"kind": "ServiceAccount", "name": "argocd-application-controller", "namespace": "argocd"}
    )
    assert write(argocd, org_with(grant()), params=[listed])[0]


def test_only_the_organizations_own_policy_decides() -> None:
    other = copy.deepcopy(POLICY_BODY)
    other["metadata"]["name"] = "strict"
    other["spec"]["access"]["approvers"] = []
    other["spec"]["rbac"]["platformAdmins"] = []
    assert write(APPROVER, org_with(grant()), params=[POLICY_BODY, other])[0]


@pytest.mark.parametrize(
    "body", [{"metadata": {"name": "acme"}}, {"metadata": {"name": "acme"}, "spec": {}}, org_with()]
)
def test_no_expression_fails_on_the_barest_organizations(body: Json) -> None:
    try:
        assert write(user("x"), body, body)[0]
        assert write(user("x"), body)[0]
    except EvaluationError as exc:  # pragma: no cover - a bug in the policy
        pytest.fail(str(exc))
