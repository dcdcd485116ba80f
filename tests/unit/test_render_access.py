"""MFA forms of member bindings and grants of time-boxed elevated access, as rendered."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import pytest
import yaml

from tenantry.api.organization import Organization
from tenantry.api.policy import TenancyPolicy
from tenantry.api.problems import InvalidObjectError
from tenantry.cli import main
from tenantry.render import is_managed_name, render_organization
from tenantry.render.access import GRANT_PREFIX
from tests.conftest import grant_spec, rfc3339

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
TODAY = NOW.date()
POLICY = TenancyPolicy.model_validate(
    {
        "apiVersion": "tenantry.dev/v1alpha1",
        "kind": "TenancyPolicy",
        "metadata": {"name": "default"},
        "spec": {
            "environments": [
                {"name": "prod", "quota": {"pods": "10"}, "mfa": {"required": True, "groupSuffix": ":mfa"}},
                {"name": "staging", "quota": {"pods": "10"}, "mfa": {"required": True, "group": "mfa"}},
                {"name": "dev", "quota": {"pods": "10"}, "developerExec": True},
            ],
            "access": {"maxGrantHours": 4, "approvers": [{"kind": "User", "name": "lead@acme.example"}]},
        },
    }
)


def grant(hours: float = 2, approved: bool = True, **extra: Any) -> dict[str, Any]:
    approved_at = NOW - dt.timedelta(minutes=1) if approved else None
    g = grant_spec(expires=NOW + dt.timedelta(hours=hours), approved_at=approved_at)
    g.update(extra)
    return g


def org(members: dict[str, Any] | None = None, grants: list[dict[str, Any]] | None = None) -> Organization:
    spec: dict[str, Any] = {"members": members or {"developers": [{"kind": "Group", "name": "acme-devs"}]}}
    if grants is not None:
        spec["access"] = {"grants": grants}
    return Organization.model_validate(
        {
            "apiVersion": "tenantry.dev/v1alpha1",
            "kind": "Organization",
            "metadata": {"name": "acme"},
            "spec": spec,
        }
    )


def bindings(o: Organization, now: dt.datetime = NOW) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (b["metadata"]["namespace"], b["metadata"]["name"]): b
        for b in render_organization(o, POLICY, TODAY, now).objects
        if b["kind"] == "RoleBinding"
    }


def test_member_groups_are_bound_in_their_mfa_form_where_mfa_is_required() -> None:
    found = bindings(org())
    assert found[("acme-prod", "tenantry:developers")]["subjects"][0]["name"] == "acme-devs:mfa"
    # One MFA group: RBAC cannot require two groups, so the binding stays; admission checks MFA.
    assert found[("acme-staging", "tenantry:developers")]["subjects"][0]["name"] == "acme-devs"
    assert found[("acme-dev", "tenantry:developers")]["subjects"][0]["name"] == "acme-devs"


@pytest.mark.parametrize(
    "subject,words",
    [
        ({"kind": "User", "name": "dana@acme.example"}, "User 'dana@acme.example' would be bound whether"),
        ({"kind": "ServiceAccount", "name": "ci", "namespace": "ci"}, "ServiceAccount ci/ci is a workload"),
    ],
)
def test_users_and_service_accounts_are_refused_in_mfa_environments(
    subject: dict[str, Any], words: str
) -> None:
    with pytest.raises(InvalidObjectError) as caught:
        render_organization(org({"developers": [subject]}), POLICY, TODAY, NOW)
    messages = [str(p) for p in caught.value.problems]
    assert len(messages) == 1
    assert "spec.members.developers[0]" in messages[0]
    assert "environment 'prod, staging' of policy 'default' requires MFA (mfa.required)" in messages[0]
    assert words in messages[0]


def test_an_approved_grant_binds_exactly_its_elevation_in_its_environment() -> None:
    found = bindings(org(grants=[grant()]))
    binding = found[("acme-prod", f"{GRANT_PREFIX}inc-4711")]
    assert binding["roleRef"]["name"] == "tenantry:developer-exec"
    assert binding["subjects"] == [
        {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "dana:mfa"}
    ]
    assert binding["metadata"]["annotations"]["tenantry.dev/grant-approved-by"] == "lead@acme.example"
    assert binding["metadata"]["annotations"]["tenantry.dev/grant-ticket"] == "INC-4711"
    assert not [k for k in found if k[1].startswith(GRANT_PREFIX) and k[0] != "acme-prod"]
    assert is_managed_name("RoleBinding", f"{GRANT_PREFIX}inc-4711", "acme")


def test_pending_expired_and_future_grants_are_not_rendered() -> None:
    assert not [k for k in bindings(org(grants=[grant(approved=False)])) if k[1].startswith(GRANT_PREFIX)]
    expired = org(grants=[grant(hours=2)])
    later = NOW + dt.timedelta(hours=2)
    assert not [k for k in bindings(expired, later) if k[1].startswith(GRANT_PREFIX)]
    assert [k for k in bindings(expired, later - dt.timedelta(seconds=1)) if k[1].startswith(GRANT_PREFIX)]
    rendering = render_organization(expired, POLICY, TODAY, later)
    assert [w.message for w in rendering.warnings if "expired" in w.message] == [
        f"grant 'inc-4711' expired at {rfc3339(later)}; it is no longer rendered (remove it)"
    ]
    assert rendering.grants[0]["phase"] == "Expired" and rendering.next_change is None
    future = grant(
        approval={"approvedBy": "lead@acme.example", "approvedAt": rfc3339(NOW + dt.timedelta(hours=1))}
    )
    assert not [k for k in bindings(org(grants=[future])) if k[1].startswith(GRANT_PREFIX)]


def test_the_rendering_says_when_it_changes_next() -> None:
    rendering = render_organization(
        org(grants=[grant(hours=1), grant(hours=3, name="other")]), POLICY, TODAY, NOW
    )
    assert rendering.next_change == NOW + dt.timedelta(hours=1)
    assert [(g["name"], g["phase"], g["subject"]) for g in rendering.grants] == [
        ("inc-4711", "Active", "Group dana:mfa"),
        ("other", "Active", "Group dana:mfa"),
    ]


def test_a_grant_longer_than_the_session_timeout_is_refused() -> None:
    with pytest.raises(InvalidObjectError) as caught:
        render_organization(org(grants=[grant(hours=5)]), POLICY, TODAY, NOW)
    assert "allows at most 4 (access.maxGrantHours, the session timeout)" in str(caught.value.problems[0])


def test_a_grant_needs_a_known_environment_and_a_group_in_mfa_environments() -> None:
    with pytest.raises(InvalidObjectError) as caught:
        render_organization(
            org(grants=[grant(environment="qa"), grant(name="u", subject={"kind": "User", "name": "dana"})]),
            POLICY,
            TODAY,
            NOW,
        )
    text = " | ".join(str(p) for p in caught.value.problems)
    assert "'qa' is not an environment of this Organization" in text
    assert "spec.access.grants[1].subject" in text


def test_an_approval_under_a_policy_without_approvers_is_refused() -> None:
    body = POLICY.model_dump(by_alias=True, exclude_none=True, mode="json")
    body["spec"]["access"]["approvers"] = []
    bare = TenancyPolicy.model_validate(body)
    with pytest.raises(InvalidObjectError) as caught:
        render_organization(org(grants=[grant()]), bare, TODAY, NOW)
    assert "names no approver" in str(caught.value.problems[0])


def test_the_requester_cannot_be_the_approver_in_the_model() -> None:
    with pytest.raises(ValueError, match="cannot be approved by its requester"):
        org(grants=[grant(requestedBy="lead@acme.example")])


def test_render_shows_mfa_bindings_and_active_grants(tmp_path: Any) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(POLICY.model_dump(by_alias=True, exclude_none=True, mode="json")))
    org_file = tmp_path / "org.yaml"
    org_file.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "tenantry.dev/v1alpha1",
                "kind": "Organization",
                "metadata": {"name": "acme"},
                "spec": {
                    "members": {"developers": [{"kind": "Group", "name": "acme-devs"}]},
                    "access": {"grants": [grant()]},
                },
            }
        )
    )
    out, err = io.StringIO(), io.StringIO()
    args = ["render", "-f", str(org_file), "--policy", str(policy_file), "--now", rfc3339(NOW)]
    assert main(args, out, err) == 0, err.getvalue()
    docs = list(yaml.safe_load_all(out.getvalue()))
    names = {
        (d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs if d["kind"] == "RoleBinding"
    }
    assert ("acme-prod", "tenantry:grant:inc-4711") in names
    prod_devs = next(
        d
        for d in docs
        if d["metadata"].get("namespace") == "acme-prod" and d["metadata"]["name"] == "tenantry:developers"
    )
    assert prod_devs["subjects"][0]["name"] == "acme-devs:mfa"
    out2 = io.StringIO()
    assert main([*args[:-1], rfc3339(NOW + dt.timedelta(hours=3))], out2, io.StringIO()) == 0
    assert "tenantry:grant:inc-4711" not in out2.getvalue()
