"""Production access: the MFA form of member bindings, and the RoleBindings of active grants.

Pure like the rest of the renderer: `now` is an input, so `tenantry render --now` and the
operator agree on which grants are in force. A grant renders RoleBinding `tenantry:grant:<name>`
in its environment's namespace, binding the elevation's tenant ClusterRole to its one subject;
once it expires it is simply not rendered any more, and the operator's pruning deletes the
binding (also right after a restart: nothing else has to remember it).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from tenantry import GROUP
from tenantry.api.access import Grant, MFAPolicy
from tenantry.api.common import Subject
from tenantry.api.organization import Organization
from tenantry.api.policy import TenancyPolicy
from tenantry.api.problems import Problem

GRANT_PREFIX = "tenantry:grant:"
# Label on a namespace whose environment requires MFA: the MFA admission policy selects on it.
MFA_LABEL = f"{GROUP}/mfa"
MFA_REQUIRED = "required"
MFA_SUFFIX_ANNOTATION = f"{GROUP}/mfa-group-suffix"
MFA_GROUP_ANNOTATION = f"{GROUP}/mfa-group"
GRANT_REASON = f"{GROUP}/grant-reason"
GRANT_TICKET = f"{GROUP}/grant-ticket"
GRANT_REQUESTED_BY = f"{GROUP}/grant-requested-by"
GRANT_APPROVED_BY = f"{GROUP}/grant-approved-by"
GRANT_EXPIRES = f"{GROUP}/grant-expires"

ELEVATION_ROLES: dict[str, str] = {
    "developer-exec": "tenantry:developer-exec",
    "developer": "tenantry:developer",
    "organization-admin": "tenantry:organization-admin",
    "viewer": "tenantry:viewer",
}


def mfa_of(policy: TenancyPolicy, env: str) -> MFAPolicy | None:
    """The environment's MFA rule, when it requires MFA."""
    env_policy = policy.spec.environment(env)
    if env_policy is None or env_policy.mfa is None or not env_policy.mfa.required:
        return None
    return env_policy.mfa


def mfa_subject(subject: Subject, mfa: MFAPolicy | None) -> Subject:
    """How a subject is bound in an environment: a Group in its MFA form where MFA is required."""
    if mfa is None or subject.kind != "Group":
        return subject
    return subject.model_copy(update={"name": mfa.group_for(subject.name)})


def namespace_mfa_metadata(policy: TenancyPolicy, env: str) -> tuple[dict[str, str], dict[str, str]]:
    """(labels, annotations) on the namespace that the MFA admission policy reads."""
    mfa = mfa_of(policy, env)
    if mfa is None:
        return {}, {}
    if mfa.group_suffix:
        return {MFA_LABEL: MFA_REQUIRED}, {MFA_SUFFIX_ANNOTATION: mfa.group_suffix}
    assert mfa.group is not None
    return {MFA_LABEL: MFA_REQUIRED}, {MFA_GROUP_ANNOTATION: mfa.group}


def mfa_refusal(path: str, subject: Subject, env: str, policy: TenancyPolicy) -> Problem:
    if subject.kind == "ServiceAccount":
        why = (
            f"ServiceAccount {subject.namespace}/{subject.name} is a workload, not a person, and cannot "
            "pass MFA; CI deploys to an MFA environment through the GitOps controller (Argo CD, Flux), "
            "which the platform team grants; bind the ServiceAccount in the other environments only "
            "with `environments: [...]` on the member"
        )
    else:
        why = (
            f"User {subject.name!r} would be bound whether or not the session passed MFA; bind the "
            "person through an identity-provider group (its MFA form is bound)"
        )
    return Problem(path, f"environment {env!r} of policy {policy.name!r} requires MFA (mfa.required): {why}")


def mfa_problems(org: Organization, policy: TenancyPolicy, environments: list[str]) -> list[Problem]:
    """Members that cannot be bound in an MFA form: Users and ServiceAccounts bound in MFA
    environments (all of them, unless the member lists its `environments`)."""
    problems: list[Problem] = []
    mfa_envs = [env for env in environments if mfa_of(policy, env) is not None]
    if not mfa_envs:
        return problems
    for role in ("admins", "developers", "viewers"):
        for i, member in enumerate(getattr(org.spec.members, role)):
            where = [env for env in mfa_envs if member.bound_in(env)]
            if member.kind != "Group" and where:
                problems.append(mfa_refusal(f"spec.members.{role}[{i}]", member, ", ".join(where), policy))
    return problems


def member_environment_problems(org: Organization, environments: list[str]) -> list[Problem]:
    """A member's `environments` must be environments of the Organization."""
    problems: list[Problem] = []
    for role in ("admins", "developers", "viewers"):
        for i, member in enumerate(getattr(org.spec.members, role)):
            for j, env in enumerate(member.environments or []):
                if env not in environments:
                    problems.append(
                        Problem(
                            f"spec.members.{role}[{i}].environments[{j}]",
                            f"{env!r} is not an environment of this Organization ({', '.join(environments)})",
                        )
                    )
    return problems


def approvers_of(policy: TenancyPolicy) -> list[Subject]:
    return [*policy.spec.access.approvers, *policy.spec.rbac.platform_admins]


def grant_problems(
    org: Organization, policy: TenancyPolicy, environments: list[str], now: dt.datetime
) -> list[Problem]:
    """Errors (the grant cannot be what it says) and warnings (expired, pending) of each grant."""
    problems: list[Problem] = []
    limit = policy.spec.access.max_grant_hours
    for i, grant in enumerate(org.spec.access.grants):
        path = f"spec.access.grants[{i}]"
        if grant.environment not in environments:
            problems.append(
                Problem(
                    f"{path}.environment",
                    f"grant {grant.name!r}: {grant.environment!r} is not an environment of this "
                    f"Organization ({', '.join(environments)})",
                )
            )
            continue
        if grant.subject.kind != "Group" and mfa_of(policy, grant.environment) is not None:
            problems.append(mfa_refusal(f"{path}.subject", grant.subject, grant.environment, policy))
        if grant.approval is not None:
            hours = (grant.expires_at - grant.approved_at_time).total_seconds() / 3600
            if hours > limit:
                problems.append(
                    Problem(
                        f"{path}.expires",
                        f"grant {grant.name!r} would last {hours:g} hours from its approval; policy "
                        f"{policy.name!r} allows at most {limit} (access.maxGrantHours, the session timeout)",
                    )
                )
            if not approvers_of(policy):
                problems.append(
                    Problem(
                        f"{path}.approval",
                        f"grant {grant.name!r} is approved, but policy {policy.name!r} names no approver "
                        "(access.approvers, rbac.platformAdmins), so no approval can be genuine",
                    )
                )
        phase = grant.phase(now)
        if phase == "Expired":
            problems.append(
                Problem(
                    f"{path}.expires",
                    f"grant {grant.name!r} expired at {grant.expires}; it is no longer rendered (remove it)",
                    severity="warning",
                )
            )
        elif phase == "Pending":
            problems.append(
                Problem(
                    f"{path}.approval",
                    f"grant {grant.name!r} ({grant.elevation} in {grant.environment}) waits for approval "
                    "by an approver of the policy; it is not rendered until then",
                    severity="note",
                )
            )
    return problems


def _subject_text(subject: Subject) -> str:
    if subject.kind == "ServiceAccount":
        return f"ServiceAccount {subject.namespace}/{subject.name}"
    return f"{subject.kind} {subject.name}"


def grant_status(org: Organization, policy: TenancyPolicy, now: dt.datetime) -> list[dict[str, Any]]:
    """status.grants: every grant with its phase (Pending, Scheduled, Active, Expired)."""
    rows = []
    for grant in org.spec.access.grants:
        row: dict[str, Any] = {
            "name": grant.name,
            "environment": grant.environment,
            "elevation": grant.elevation,
            "subject": _subject_text(mfa_subject(grant.subject, mfa_of(policy, grant.environment))),
            "phase": grant.phase(now),
            "requestedBy": grant.requested_by,
            "ticket": grant.ticket,
            "expires": grant.expires,
        }
        if grant.approval is not None:
            row["approvedBy"] = grant.approval.approved_by
        rows.append(row)
    return rows


def next_change(org: Organization, now: dt.datetime) -> dt.datetime | None:
    """When the rendering changes next on its own: a grant starting or expiring."""
    times: list[dt.datetime] = []
    for grant in org.spec.access.grants:
        if grant.approval is not None and grant.approved_at_time > now:
            times.append(grant.approved_at_time)
        if grant.expires_at > now:
            times.append(grant.expires_at)
    return min(times, default=None)


def active_grants(org: Organization, now: dt.datetime) -> list[Grant]:
    return [g for g in org.spec.access.grants if g.phase(now) == "Active"]
