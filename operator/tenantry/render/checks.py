"""Checks of an Organization against its TenancyPolicy: what the CRD schema cannot see.

The schema (and its CEL rules) validate one object on its own; these rules need the policy.
They return every problem at once so a pull request is fixed in one round.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence

from tenantry.api.base import DNS_LABEL_MAX, quota_order
from tenantry.api.common import Subject
from tenantry.api.organization import Organization, namespace_name
from tenantry.api.policy import TenancyPolicy
from tenantry.api.problems import Problem
from tenantry.api.quantity import parse_quantity
from tenantry.render.access import grant_problems, member_environment_problems, mfa_problems
from tenantry.render.cidrs import denied_networks
from tenantry.render.guardrails import guardrail_problems
from tenantry.render.pool import effective_pool


def collisions(orgs: Sequence[Organization]) -> dict[int, list[Problem]]:
    """Per position in `orgs`, what it shares with another: its name, or a namespace.

    Two Organizations may render the same namespace (`x` with environment `team-prod` and
    `x-team` with `prod` are both `x-team-prod`); on a cluster only one can own it.
    """
    out: dict[int, list[Problem]] = {}
    first_of: dict[str, int] = {}
    owner: dict[str, tuple[int, str, int]] = {}
    for index, org in enumerate(orgs):
        if org.name in first_of:
            out.setdefault(index, []).append(
                Problem(
                    "metadata.name",
                    f"Organization {org.name!r} is given more than once (document {first_of[org.name] + 1} "
                    "of the Organizations read); each Organization must appear once",
                )
            )
            continue
        first_of[org.name] = index
        for i, env in enumerate(org.spec.environments or []):
            namespace = namespace_name(org.name, env)
            if namespace not in owner:
                owner[namespace] = (index, env, i)
                continue
            other, other_env, other_i = owner[namespace]
            rival = orgs[other].name
            out.setdefault(index, []).append(
                Problem(
                    f"spec.environments[{i}]",
                    f"namespace {namespace!r} is also rendered by Organization {rival!r} "
                    f"(environment {other_env!r}); namespace names must be unique across Organizations",
                )
            )
            out.setdefault(other, []).append(
                Problem(
                    f"spec.environments[{other_i}]",
                    f"namespace {namespace!r} is also rendered by Organization {org.name!r} "
                    f"(environment {env!r}); namespace names must be unique across Organizations",
                )
            )
    return out


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
    return dict(sorted(hard.items(), key=lambda kv: quota_order(kv[0])))


def pool_baseline(org: Organization, policy: TenancyPolicy, resource: str) -> str | None:
    """What a pool of `resource` may total without `quotaApproval`: the policy's default pool,
    else the sum of the policy's defaults over the pooled environments (None: some pooled
    environment has no default for it, so any total counts as a raise, as in raised_quotas)."""
    default_pool = policy.spec.quota_pool
    if default_pool is not None and resource in default_pool.total:
        return default_pool.total[resource]
    pool = effective_pool(org, policy)
    assert pool is not None
    total = parse_quantity("0")
    for env in pool.members(list(org.spec.environments or [])):
        env_policy = policy.spec.environment(env)
        value = env_policy.quota.get(resource) if env_policy else None
        if value is None:
            return None
        total += parse_quantity(value)
    return format(total.normalize(), "f")


def pool_problems(org: Organization, policy: TenancyPolicy) -> list[Problem]:
    """The pool under the policy: its environments exist, its pooled resources are not also
    fixed in spec.quota, and a total above the baseline has a quotaApproval."""
    pool = effective_pool(org, policy)
    if pool is None:
        return []
    own = org.spec.quota_pool is not None
    where = "spec.quotaPool" if own else f"policy {policy.name!r} spec.quotaPool"
    problems: list[Problem] = []
    environments = list(org.spec.environments or [])
    if own and pool.environments is not None:
        for i, env in enumerate(pool.environments):
            if env not in environments:
                problems.append(
                    Problem(
                        f"spec.quotaPool.environments[{i}]",
                        f"{env!r} is not an environment of this Organization ({', '.join(environments)})",
                    )
                )
    members = pool.members(environments)
    for env in members:
        for resource in sorted(set(org.spec.quota.get(env, {})) & set(pool.total)):
            problems.append(
                Problem(
                    f'spec.quota.{env}["{resource}"]',
                    f"{resource} of {env} is pooled ({where}); bound it with quotaPool.floors or "
                    "quotaPool.ceilings instead of a fixed quota",
                )
            )
    if own and org.spec.quota_approval is None:
        for resource, total in pool.total.items():
            baseline = pool_baseline(org, policy, resource)
            if baseline is None or parse_quantity(total) > parse_quantity(baseline):
                ceiling = (
                    f"{baseline}, the policy's default for the pooled environments"
                    if baseline is not None
                    else "unlimited by the policy in a pooled environment"
                )
                problems.append(
                    Problem(
                        f'spec.quotaPool.total["{resource}"]',
                        f"{total} is above {ceiling}; raising a pool requires spec.quotaApproval "
                        "with approvedBy and justification",
                    )
                )
    return problems


def subject_problems(path: str, subject: Subject, policy: TenancyPolicy) -> list[Problem]:
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


def with_policy_environments(org: Organization, policy: TenancyPolicy) -> Organization:
    """`org`, or, when it names no environments, `org` with every environment of its policy."""
    return org.with_environments([e.name for e in policy.spec.environments])


def defaulted_note(org: Organization, policy: TenancyPolicy) -> Problem | None:
    """Says that `org` gets the policy's environments (None when it names its own)."""
    if org.spec.environments is not None:
        return None
    names = ", ".join(e.name for e in policy.spec.environments)
    return Problem(
        "spec.environments",
        f"not set, so every environment of policy {policy.name!r}: {names}",
        severity="note",
    )


def check_organization(
    org: Organization, policy: TenancyPolicy, today: dt.date, now: dt.datetime | None = None
) -> list[Problem]:
    """Every problem of `org` under `policy` (errors, then warnings), in a stable order.

    `now` (default: the start of `today`, UTC) decides which grants have expired."""
    problems: list[Problem] = []
    org = with_policy_environments(org, policy)
    spec = org.spec
    assert spec.environments is not None
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

    problems += pool_problems(org, policy) + guardrail_problems(org, policy, spec.environments)
    known_envs = [e for e in spec.environments if policy.spec.environment(e) is not None]
    problems += mfa_problems(org, policy, known_envs) + member_environment_problems(org, spec.environments)
    problems += grant_problems(
        org, policy, known_envs, now or dt.datetime.combine(today, dt.time.min, tzinfo=dt.UTC)
    )

    for role in ("admins", "developers", "viewers"):
        for i, subject in enumerate(getattr(spec.members, role)):
            problems += subject_problems(f"spec.members.{role}[{i}]", subject, policy)

    denied = denied_networks(policy)
    for i, rule in enumerate(spec.network.egress):
        if rule.organization == org.name:
            problems.append(
                Problem(
                    f"spec.network.egress[{i}].organization",
                    f"{org.name!r} is this Organization; egress to itself is not cross-tenant traffic "
                    "and is not opened (its environments stay isolated from each other)",
                )
            )
        if rule.cidr is None:
            continue
        net = ipaddress.ip_network(rule.cidr)
        for block in denied:
            if net.version == block.version and net.subnet_of(block):  # type: ignore[arg-type]
                problems.append(
                    Problem(
                        f"spec.network.egress[{i}].cidr",
                        f"{rule.cidr} lies inside {block}, "
                        f"which policy {policy.name!r} denies for all tenants (cloud metadata and "
                        "spec.network.deniedEgressCidrs, IPv6 spellings included)",
                    )
                )

    problems += _allow_from_problems(org, policy)
    problems += _exception_problems(org, policy, today)

    if spec.environments is not None:
        extra = sorted(set(spec.quota) - set(spec.environments))
        if extra:  # only possible when the environments came from the policy
            problems.append(
                Problem(
                    "spec.quota",
                    f"names environment(s) {', '.join(extra)} that policy {policy.name!r} does not have "
                    f"(spec.environments is not set, so the Organization has {', '.join(spec.environments)})",
                )
            )
    return sorted(problems, key=lambda p: (p.severity != "error", p.path, p.message))


def _allow_from_problems(org: Organization, policy: TenancyPolicy) -> list[Problem]:
    """An exception admitting the Organization itself; environments of another Organization
    (in allowFrom and egress) that the policy does not define. Organizations that exchange
    traffic are expected to share the policy's environment names; a name it does not define
    would select no namespace that exists."""
    network = org.spec.network
    problems = [
        Problem(
            f"spec.network.allowFrom[{i}].organization",
            f"{org.name!r} is this Organization; allowFrom admits other Organizations, "
            "its own environments stay isolated from each other",
        )
        for i, exception in enumerate(network.allow_from)
        if exception.organization == org.name
    ]
    policy_envs = [e.name for e in policy.spec.environments]
    selections = [("allowFrom", i, x.environments) for i, x in enumerate(network.allow_from)]
    selections += [("egress", i, x.environments) for i, x in enumerate(network.egress)]
    return problems + [
        Problem(
            f"spec.network.{section}[{i}].environments[{j}]",
            f"{env!r} is not an environment of policy {policy.name!r} (allowed: {', '.join(policy_envs)})",
        )
        for section, i, environments in selections
        for j, env in enumerate(environments or [])
        if env not in policy_envs
    ]


def _exception_problems(org: Organization, policy: TenancyPolicy, today: dt.date) -> list[Problem]:
    """Documented exceptions: allowFrom expires; an ipBlock
    exception may open the cluster's ranges to the Organization's own NetworkPolicies, never a
    network denied to every tenant (cloud metadata)."""
    problems: list[Problem] = []
    for i, exception in enumerate(org.spec.network.allow_from):
        if not exception.active_on(today):
            problems.append(
                Problem(
                    f"spec.network.allowFrom[{i}].expires",
                    f"the exception for {exception.organization!r} expired on {exception.expires}; "
                    "it is no longer rendered (renew or remove it)",
                    severity="warning",
                )
            )
    denied = denied_networks(policy)
    for i, block_exception in enumerate(org.spec.network.ip_block_exceptions):
        net = ipaddress.ip_network(block_exception.cidr)
        for block in denied:
            if net.version == block.version and net.overlaps(block):
                problems.append(
                    Problem(
                        f"spec.network.ipBlockExceptions[{i}].cidr",
                        f"{block_exception.cidr} overlaps {block}, which policy {policy.name!r} denies "
                        "for all tenants (cloud metadata and spec.network.deniedEgressCidrs, IPv6 "
                        "spellings included): no exception can open it",
                    )
                )
        if not block_exception.active_on(today):
            problems.append(
                Problem(
                    f"spec.network.ipBlockExceptions[{i}].expires",
                    f"the ipBlock exception for {block_exception.cidr} expired on {block_exception.expires}; "
                    "the admission guardrail no longer accepts it in new NetworkPolicies "
                    "(renew or remove it)",
                    severity="warning",
                )
            )

    return problems


def errors_only(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]
