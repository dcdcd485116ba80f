"""Checks of an Organization against its TenancyPolicy: what the CRD schema cannot see.

The schema (and its CEL rules) validate one object on its own; these rules need the policy.
They return every problem at once so a pull request is fixed in one round.
"""

from __future__ import annotations

import datetime as dt
import ipaddress

from tenantry.api.base import DNS_LABEL_MAX, QUOTA_RESOURCES
from tenantry.api.common import Subject
from tenantry.api.organization import Organization, namespace_name
from tenantry.api.policy import TenancyPolicy
from tenantry.api.problems import Problem
from tenantry.api.quantity import parse_quantity


def reserved_reason(namespace: str, policy: TenancyPolicy) -> str | None:
    """Why a namespace name is off limits for tenants, or None if it is free to use."""
    reserved = policy.spec.reserved_namespaces
    if namespace in reserved.all_names():
        return f"{namespace!r} is a reserved namespace"
    for prefix in reserved.all_prefixes():
        if namespace.startswith(prefix):
            return f"{namespace!r} starts with the reserved prefix {prefix!r}"
    return None


def raised_quotas(org: Organization, policy: TenancyPolicy) -> list[tuple[str, str, str, str | None]]:
    """(environment, resource, override, policy default) for every override above the default.

    A resource the policy leaves unlimited counts as raised: setting any limit there is only
    a raise if the policy had a lower one, so an absent default is treated as zero.
    """
    raised = []
    for env, overrides in org.spec.quota.items():
        env_policy = policy.spec.environment(env)
        defaults = env_policy.quota if env_policy else {}
        for resource, value in overrides.items():
            default = defaults.get(resource)
            if default is None or parse_quantity(value) > parse_quantity(default):
                raised.append((env, resource, value, default))
    return raised


def effective_quota(org: Organization, policy: TenancyPolicy, env: str) -> dict[str, str]:
    """The ResourceQuota hard limits for one environment: policy default plus overrides."""
    env_policy = policy.spec.environment(env)
    hard = dict(env_policy.quota) if env_policy else {}
    hard.update(org.spec.quota.get(env, {}))
    order = {name: i for i, name in enumerate(QUOTA_RESOURCES)}
    return dict(sorted(hard.items(), key=lambda kv: order.get(kv[0], len(order))))


def _subject_problems(path: str, subject: Subject, policy: TenancyPolicy) -> list[Problem]:
    if subject.kind == "ServiceAccount" and subject.namespace:
        why = reserved_reason(subject.namespace, policy)
        if why:
            return [
                Problem(
                    path,
                    f"ServiceAccount {subject.namespace}/{subject.name} lives in a reserved namespace "
                    f"({why}); system service accounts cannot be tenant members",
                )
            ]
    admins = {(s.kind, s.name, s.namespace) for s in policy.spec.rbac.platform_admins}
    if (subject.kind, subject.name, subject.namespace) in admins:
        return [
            Problem(
                path,
                f"{subject.kind} {subject.name!r} is a platform admin of policy {policy.name!r}; "
                "platform admins are granted through the policy, not as tenant members",
            )
        ]
    return []


def check_organization(org: Organization, policy: TenancyPolicy, today: dt.date) -> list[Problem]:
    """Every problem of `org` under `policy` (errors, then warnings), in a stable order."""
    problems: list[Problem] = []
    spec = org.spec
    if spec.policy != policy.name:
        problems.append(
            Problem("spec.policy", f"names policy {spec.policy!r} but was checked against {policy.name!r}")
        )
    allowed_envs = [e.name for e in policy.spec.environments]
    for i, env in enumerate(spec.environments):
        if env not in allowed_envs:
            problems.append(
                Problem(
                    f"spec.environments[{i}]",
                    f"{env!r} is not an environment of policy {policy.name!r} "
                    f"(allowed: {', '.join(allowed_envs)})",
                )
            )
        namespace = namespace_name(org.name, env)
        if len(namespace) > DNS_LABEL_MAX:
            problems.append(
                Problem(
                    f"spec.environments[{i}]",
                    f"namespace name {namespace!r} would be {len(namespace)} characters; "
                    f"<organization>-<environment> must be at most {DNS_LABEL_MAX}",
                )
            )
        why = reserved_reason(namespace, policy)
        if why:
            problems.append(
                Problem(
                    f"spec.environments[{i}]",
                    f"namespace {why}; choose another organization or environment name",
                )
            )

    managers = policy.spec.managed_by.allowed
    if spec.managed_by is not None and spec.managed_by not in managers:
        problems.append(
            Problem("spec.managedBy", f"{spec.managed_by!r} is not allowed (allowed: {', '.join(managers)})")
        )

    raised = raised_quotas(org, policy)
    if raised and spec.quota_approval is None:
        for env, resource, value, default in raised:
            ceiling = f"the policy default {default}" if default is not None else "unlimited by the policy"
            problems.append(
                Problem(
                    f'spec.quota.{env}["{resource}"]',
                    f"{value} is above {ceiling}; raising a quota requires spec.quotaApproval "
                    "with approvedBy and justification",
                )
            )

    for env in spec.environments:
        if policy.spec.environment(env) is None:
            continue
        hard = effective_quota(org, policy, env)
        for kind in ("cpu", "memory", "ephemeral-storage"):
            request, limit = hard.get(f"requests.{kind}"), hard.get(f"limits.{kind}")
            if request is not None and limit is not None and parse_quantity(request) > parse_quantity(limit):
                problems.append(
                    Problem(
                        f"spec.quota.{env}",
                        f"requests.{kind} ({request}) would exceed limits.{kind} ({limit}); "
                        "no pod could use the full request, raise the limit too",
                    )
                )

    for role in ("admins", "developers", "viewers"):
        for i, subject in enumerate(getattr(spec.members, role)):
            problems += _subject_problems(f"spec.members.{role}[{i}]", subject, policy)

    denied = [ipaddress.ip_network(c) for c in policy.spec.network.denied_egress_cidrs]
    for i, rule in enumerate(spec.network.egress):
        if rule.cidr is None:
            continue
        net = ipaddress.ip_network(rule.cidr)
        for block in denied:
            if net.version == block.version and net.subnet_of(block):  # type: ignore[arg-type]
                problems.append(
                    Problem(
                        f"spec.network.egress[{i}].cidr",
                        f"{rule.cidr} lies inside {block}, "
                        f"which policy {policy.name!r} denies for all tenants",
                    )
                )

    for i, exception in enumerate(spec.network.allow_from):
        if not exception.active_on(today):
            problems.append(
                Problem(
                    f"spec.network.allowFrom[{i}].expires",
                    f"the exception for {exception.organization!r} expired on {exception.expires}; "
                    "it is no longer rendered (renew or remove it)",
                    severity="warning",
                )
            )
    return sorted(problems, key=lambda p: (p.severity != "error", p.path, p.message))


def errors_only(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]
