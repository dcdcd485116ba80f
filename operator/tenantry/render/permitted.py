"""The access an invalid Organization may still have: access only ever shrinks toward the policy.

An Organization can become invalid without anyone touching it (the policy tightens: prod now
requires MFA, a namespace becomes reserved, a member becomes a platform admin). Its objects are
then left as last applied, except access: a binding the current policy and spec forbid must not
outlive them. This is the pure half of that rule: given the spec and the policy, the member
RoleBindings, grant RoleBindings and member ClusterRole/Binding with every forbidden subject
dropped, and, per subject left out, why.

Forbidden, per environment: a subject the policy refuses as a member anywhere (a platform admin,
a ServiceAccount of a reserved namespace), a User or ServiceAccount where MFA is required (it
would be bound whether or not the session passed MFA), every subject of an environment the
policy does not have or whose namespace it reserves, and a grant with any error. What is still
allowed is bound exactly as `render_organization` binds it (a group in its MFA form where MFA
is required), so for a valid Organization this is its RBAC, object for object (a test holds the
two together).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from tenantry.api.base import DNS_LABEL_MAX
from tenantry.api.common import Subject
from tenantry.api.organization import Member, Members, Organization, namespace_name
from tenantry.api.policy import TenancyPolicy
from tenantry.api.problems import Problem
from tenantry.render.access import grant_problems, mfa_of, mfa_refusal
from tenantry.render.checks import reserved_reason, subject_problems, with_policy_environments
from tenantry.render.namespaces import render_namespace
from tenantry.render.rbac import render_grant_bindings, render_member_access, render_role_bindings

ROLES = ("admins", "developers", "viewers")


@dataclass(frozen=True)
class PermittedAccess:
    """RBAC objects still allowed, and who was left out (`path` names the member or grant)."""

    objects: list[dict[str, Any]]
    # Environment -> namespace for the environments the policy still allows access in.
    namespaces: dict[str, str]
    # The Namespace objects of those environments: they carry the MFA label and annotation the
    # `tenantry-mfa` admission policy reads (the only protection of `mfa.group` environments).
    namespace_objects: list[dict[str, Any]]
    left_out: list[Problem] = field(default_factory=list)


def _subject_text(subject: Subject) -> str:
    if subject.kind == "ServiceAccount":
        return f"ServiceAccount {subject.namespace}/{subject.name}"
    return f"{subject.kind} {subject.name}"


def _environment_refusal(org: Organization, policy: TenancyPolicy, env: str) -> str | None:
    """Why no access may be bound in `env` at all, or None."""
    if policy.spec.environment(env) is None:
        return f"{env!r} is not an environment of policy {policy.name!r}"
    namespace = namespace_name(org.name, env)
    if len(namespace) > DNS_LABEL_MAX:
        return f"namespace name {namespace!r} is longer than {DNS_LABEL_MAX} characters"
    return reserved_reason(namespace, policy)


def _with(org: Organization, members: Members, grants: list[Any] | None = None) -> Organization:
    update: dict[str, Any] = {"members": members}
    if grants is not None:
        update["access"] = org.spec.access.model_copy(update={"grants": grants})
    return org.model_copy(update={"spec": org.spec.model_copy(update=update)})


def permitted_access(org: Organization, policy: TenancyPolicy, now: dt.datetime) -> PermittedAccess:
    """What of `org`'s access the current `policy` and spec still allow (see the module doc)."""
    org = with_policy_environments(org, policy)
    assert org.spec.environments is not None
    left_out: list[Problem] = []
    envs: list[str] = []
    for i, env in enumerate(org.spec.environments):
        why = _environment_refusal(org, policy, env)
        if why is None:
            envs.append(env)
        else:
            left_out.append(
                Problem(
                    f"spec.environments[{i}]",
                    f"no access bound in namespace {namespace_name(org.name, env)!r}: {why}",
                )
            )

    # Per member: refused everywhere (by the policy), or only where MFA is required.
    refused_everywhere: set[tuple[str, int]] = set()
    for role in ROLES:
        for i, subject in enumerate(getattr(org.spec.members, role)):
            path = f"spec.members.{role}[{i}]"
            for problem in subject_problems(path, subject, policy):
                refused_everywhere.add((role, i))
                left_out.append(Problem(path, f"{_subject_text(subject)} not bound: {problem.message}"))

    objects: list[dict[str, Any]] = []
    namespaces: dict[str, str] = {}
    namespace_objects: list[dict[str, Any]] = []
    bound_somewhere: set[tuple[str, int]] = set()
    grant_errors: dict[int, list[str]] = {}
    for problem in grant_problems(org, policy, envs, now):
        index = _grant_index(problem.path)
        if problem.severity == "error" and index is not None:
            grant_errors.setdefault(index, []).append(problem.message)
    grants = [g for i, g in enumerate(org.spec.access.grants) if i not in grant_errors]
    for i, grant in enumerate(org.spec.access.grants):
        if i in grant_errors and grant.phase(now) == "Active":
            left_out.append(
                Problem(
                    f"spec.access.grants[{i}]",
                    f"grant {grant.name!r} not bound: {'; '.join(grant_errors[i])}",
                )
            )
    for env in envs:
        namespace = namespace_name(org.name, env)
        namespaces[env] = namespace
        mfa = mfa_of(policy, env)
        kept: dict[str, list[Member]] = {}
        for role in ROLES:
            kept[role] = []
            for i, subject in enumerate(getattr(org.spec.members, role)):
                if (role, i) in refused_everywhere or not subject.bound_in(env):
                    continue
                if mfa is not None and subject.kind != "Group":
                    refusal = mfa_refusal(f"spec.members.{role}[{i}]", subject, env, policy)
                    left_out.append(
                        Problem(
                            refusal.path,
                            f"{_subject_text(subject)} not bound in {namespace!r}: {refusal.message}",
                        )
                    )
                    continue
                kept[role].append(subject)
                bound_somewhere.add((role, i))
        scoped = _with(org, Members(**kept), grants)
        objects += render_role_bindings(scoped, policy, env, namespace)
        objects += render_grant_bindings(scoped, policy, env, namespace, now)
        namespace_objects.append(render_namespace(org, policy, env, namespace))

    everywhere = Members(
        **{
            role: [s for i, s in enumerate(getattr(org.spec.members, role)) if (role, i) in bound_somewhere]
            for role in ROLES
        }
    )
    # `get` on the namespaces access is still bound in, for whoever is bound in one of them.
    visible = org.model_copy(
        update={"spec": org.spec.model_copy(update={"environments": envs, "members": everywhere})}
    )
    objects += render_member_access(visible)
    return PermittedAccess(objects, namespaces, namespace_objects, left_out)


def _grant_index(path: str) -> int | None:
    """3 for `spec.access.grants[3]` or anything below it."""
    prefix = "spec.access.grants["
    if not path.startswith(prefix):
        return None
    digits = path[len(prefix) :].split("]", 1)[0]
    return int(digits) if digits.isdigit() else None
