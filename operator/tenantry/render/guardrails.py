"""The guardrails of one tenant namespace: policy ∩ Organization, rendered once, as a ConfigMap.

The admission policies in manifests/admission/guardrail-*.yaml take the ConfigMap
`tenantry-guardrails` of the request's namespace as their parameter (a namespaced paramRef
resolves in the request's namespace), so the API server enforces the guardrails with no webhook
and without the operator: the lists are computed here, by the pure renderer, and `tenantry render`
shows them. See docs/admission.md, "Guardrails".

Data format (every value a string, lists comma-separated; no value can contain a comma):
class lists and `registries`: `*` allows anything, the empty string nothing; `nodePorts`,
`loadBalancers`: `true`/`false`; `deniedLabelKeys`: keys, or prefixes ending in `/`;
`nodeSelector`: `key=value,...`; `tolerations`: `key=value:Effect` (operator Equal) or
`key:Effect` (operator Exists), the effect empty for all effects; `hosts`: names and `*.`-names
(placeholders filled in), `*` any; `externalNames`: names and `*.`-names; `persistentVolumes`:
names and prefixes ending in `*`; `deniedIngressAnnotations`: keys, prefixes ending in `/`,
suffixes starting with `*`. Hosts, external names and volumes: empty means none. `alwaysPullImages`:
`true`/`false`. For the Organization Admin self-service guardrails: `organizationNamespaces`
(the Organization's namespaces), `bindableClusterRoles` (the ClusterRoles its own RoleBindings may
reference), `protectedCidrs` (the cluster's pod and service ranges and the denied egress
networks, which a tenant ipBlock may not cover) and `ipBlockExceptions` (the Organization's
active spec.network.ipBlockExceptions).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from tenantry import GROUP
from tenantry.api.guardrails import (
    ALWAYS_DENIED_INGRESS_ANNOTATIONS,
    CLASS_FIELDS,
    DEFAULT_DENIED_INGRESS_ANNOTATIONS,
    PLACEHOLDERS,
    Guardrails,
    NodePlacement,
    Toleration,
)
from tenantry.api.organization import Organization
from tenantry.api.policy import TenancyPolicy
from tenantry.api.problems import Problem
from tenantry.render import labels as lbl
from tenantry.render.access import mfa_of
from tenantry.render.cidrs import denied_networks
from tenantry.render.rbac import bindable_cluster_roles

GUARDRAILS_NAME = "tenantry-guardrails"
ANY = "*"
# Keys no tenant may set on its objects, whatever the policy says.
ALWAYS_DENIED_KEYS: tuple[str, ...] = (f"{GROUP}/",)
STATUS_ENTRY_MAX = 512

# The admission policies, in the order `tenantry render` and the status list them.
POLICIES = {
    "classes": "tenantry-guardrail-classes",
    "workloads": "tenantry-guardrail-workloads",
    "services": "tenantry-guardrail-services",
    "labels": "tenantry-guardrail-labels",
    "placement": "tenantry-guardrail-placement",
    "hosts": "tenantry-guardrail-hosts",
    "volumes": "tenantry-guardrail-volumes",
    "tokens": "tenantry-guardrail-tokens",
    "image-pulls": "tenantry-guardrail-image-pulls",
    "rbac": "tenantry-guardrail-rbac",
    "network-policies": "tenantry-guardrail-network-policies",
}

_DATA_KEYS = {
    "ingress_classes": "ingressClasses",
    "gateway_classes": "gatewayClasses",
    "storage_classes": "storageClasses",
    "priority_classes": "priorityClasses",
    "runtime_classes": "runtimeClasses",
    "registries": "registries",
}


@dataclass(frozen=True)
class Effective:
    """The guardrails of one environment of one Organization. None: anything is allowed."""

    lists: dict[str, tuple[str, ...] | None]
    node_ports: bool
    load_balancers: bool
    denied_label_keys: tuple[str, ...]
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    # Empty: none. Placeholders already filled in.
    hosts: tuple[str, ...] = ()
    external_names: tuple[str, ...] = ()
    persistent_volumes: tuple[str, ...] = ()
    denied_ingress_annotations: tuple[str, ...] = ALWAYS_DENIED_INGRESS_ANNOTATIONS
    always_pull_images: bool = True


def fill(pattern: str, org: str, env: str) -> str:
    """A policy pattern for one namespace: {organization} and {environment} filled in."""
    return pattern.replace("{organization}", org).replace("{environment}", env)


def host_inside(host: str, patterns: tuple[str, ...]) -> bool:
    """Is `host` (a name or a `*.`-name) among the names `patterns` allow? `*.a.b` allows every
    name under a.b (at any depth, wildcards included), not a.b itself. The admission policy
    tenantry-guardrail-hosts decides the same way."""
    return any(p in ("*", host) or (p.startswith("*.") and host.endswith(p[1:])) for p in patterns)


def shared_host_domains(policy: TenancyPolicy, env: str) -> tuple[str, ...]:
    """The domains the policy shares out per Organization: for each host pattern naming
    {organization}, what follows the label that holds it (`.apps.example.com` for
    `*.{organization}.apps.example.com`). A name there belongs to the Organization it names."""
    base, override = _policy_guardrails(policy, env)
    patterns = _pick("hosts", base, override) or []
    out = []
    for pattern in patterns:
        labels = pattern.split(".")
        for i, label in enumerate(labels):
            if PLACEHOLDERS[0] in label:
                tail = ".".join(labels[i + 1 :])
                if tail and PLACEHOLDERS[0] not in tail and PLACEHOLDERS[1] not in tail:
                    out.append(tail)
                break
    return tuple(dict.fromkeys(out))


def _policy_guardrails(policy: TenancyPolicy, env: str) -> tuple[Guardrails, Guardrails | None]:
    env_policy = policy.spec.environment(env)
    return policy.spec.guardrails, env_policy.guardrails if env_policy else None


def _pick(name: str, base: Guardrails, override: Guardrails | None) -> Any:
    value = getattr(override, name) if override is not None else None
    return value if value is not None else getattr(base, name)


def policy_guardrails(policy: TenancyPolicy, env: str) -> Effective:
    """What the policy alone allows in `env`: the environment's field, else the policy-wide one."""
    base, override = _policy_guardrails(policy, env)
    lists = {}
    for name in CLASS_FIELDS:
        value = _pick(name, base, override)
        lists[name] = None if value is None else tuple(value)
    placement: NodePlacement | None = _pick("placement", base, override)
    denied = _pick("denied_label_keys", base, override) or []
    annotations = _pick("denied_ingress_annotations", base, override)
    if annotations is None:
        annotations = DEFAULT_DENIED_INGRESS_ANNOTATIONS
    return Effective(
        lists=lists,
        node_ports=bool(_pick("node_ports", base, override)),
        load_balancers=bool(_pick("load_balancers", base, override)),
        denied_label_keys=tuple(dict.fromkeys([*ALWAYS_DENIED_KEYS, *denied])),
        node_selector=dict(placement.node_selector) if placement else {},
        tolerations=tuple(placement.tolerations) if placement else (),
        hosts=tuple(_pick("hosts", base, override) or ()),
        external_names=tuple(_pick("external_names", base, override) or ()),
        persistent_volumes=tuple(_pick("persistent_volumes", base, override) or ()),
        denied_ingress_annotations=tuple(dict.fromkeys([*ALWAYS_DENIED_INGRESS_ANNOTATIONS, *annotations])),
        always_pull_images=_pick("always_pull_images", base, override) is not False,
    )


def _filled(values: tuple[str, ...], org: str, env: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(fill(v, org, env) for v in values))


def _host_problems(org: Organization, policy: TenancyPolicy, env: str, approved: bool) -> list[Problem]:
    hosts = org.spec.guardrails.hosts
    if hosts is None:
        return []
    allowed = _filled(policy_guardrails(policy, env).hosts, org.name, env)
    shared = shared_host_domains(policy, env)
    own = [d for d in allowed if any(d.endswith("." + s) for s in shared)]
    problems = []
    for i, host in enumerate(hosts):
        bare = host.removeprefix("*.")
        in_shared = any(bare == s or bare.endswith("." + s) for s in shared)
        if in_shared and not host_inside(host, tuple(own)):
            problems.append(
                Problem(
                    f"spec.guardrails.hosts[{i}]",
                    f"{host!r} is in the names policy {policy.name!r} gives each Organization "
                    f"({', '.join('*.<organization>.' + s for s in shared)}) but not in {org.name!r}'s "
                    f"({', '.join(own) or 'none'}); no approval can give one Organization another's hosts",
                )
            )
        elif not approved and not host_inside(host, allowed):
            problems.append(
                Problem(
                    f"spec.guardrails.hosts[{i}]",
                    f"{host!r} is not among the hosts policy {policy.name!r} allows in environment {env!r} "
                    f"({', '.join(allowed) or 'none'}); an Organization may only narrow its policy's "
                    "guardrails, widening them requires spec.quotaApproval",
                )
            )
    return problems


def _inside(name: str, value: str, allowed: tuple[str, ...]) -> bool:
    if name == "registries":
        return any(value.startswith(prefix) for prefix in allowed)
    return value in allowed


def _camel(name: str) -> str:
    return _DATA_KEYS[name]


def guardrail_problems(org: Organization, policy: TenancyPolicy, environments: list[str]) -> list[Problem]:
    """Where the Organization widens its policy's guardrails without spec.quotaApproval, or
    claims hosts of another Organization (never allowed)."""
    approved = org.spec.quota_approval is not None
    wanted = org.spec.guardrails
    problems: list[Problem] = []
    for env in environments:
        if policy.spec.environment(env) is None:
            continue
        problems += _host_problems(org, policy, env, approved)
        if approved:
            continue
        allowed = policy_guardrails(policy, env)
        for name in CLASS_FIELDS:
            values = getattr(wanted, name)
            limit = allowed.lists[name]
            if values is None or limit is None:
                continue
            for i, value in enumerate(values):
                if not _inside(name, value, limit):
                    shown = ", ".join(limit) or "none"
                    problems.append(
                        Problem(
                            f"spec.guardrails.{_camel(name)}[{i}]",
                            f"{value!r} is not allowed by policy {policy.name!r} in environment {env!r} "
                            f"(allowed: {shown}); an Organization may only narrow its policy's guardrails, "
                            "widening them requires spec.quotaApproval",
                        )
                    )
        if wanted.placement is None:
            continue
        for key, value in wanted.placement.node_selector.items():
            pool = allowed.node_selector.get(key)
            if pool is not None and pool != value:
                problems.append(
                    Problem(
                        f'spec.guardrails.placement.nodeSelector["{key}"]',
                        f"{value!r} moves the pods of environment {env!r} off the node pool policy "
                        f"{policy.name!r} sets ({key}={pool}); that requires spec.quotaApproval",
                    )
                )
        for i, toleration in enumerate(wanted.placement.tolerations):
            if toleration not in allowed.tolerations:
                problems.append(
                    Problem(
                        f"spec.guardrails.placement.tolerations[{i}]",
                        f"a toleration of taint {toleration.key!r} lets the pods of environment {env!r} "
                        f"onto nodes policy {policy.name!r} keeps them off; that requires spec.quotaApproval",
                    )
                )
    # One problem per field and value (the first environment that refuses it), not per environment.
    first: dict[str, Problem] = {}
    for problem in problems:
        first.setdefault(problem.path, problem)
    return list(first.values())


def effective_guardrails(org: Organization, policy: TenancyPolicy, env: str) -> Effective:
    """The policy's guardrails for `env`, narrowed (or, with approval, widened) by `org`."""
    allowed = policy_guardrails(policy, env)
    wanted = org.spec.guardrails
    lists = dict(allowed.lists)
    for name in CLASS_FIELDS:
        values = getattr(wanted, name)
        if values is not None:
            lists[name] = tuple(values)
    selector = dict(allowed.node_selector)
    tolerations = list(allowed.tolerations)
    if wanted.placement is not None:
        selector.update(wanted.placement.node_selector)
        tolerations += [t for t in wanted.placement.tolerations if t not in tolerations]
    hosts = tuple(wanted.hosts) if wanted.hosts is not None else _filled(allowed.hosts, org.name, env)
    return Effective(
        lists=lists,
        node_ports=allowed.node_ports,
        load_balancers=allowed.load_balancers,
        denied_label_keys=allowed.denied_label_keys,
        node_selector=dict(sorted(selector.items())),
        tolerations=tuple(tolerations),
        hosts=hosts,
        external_names=allowed.external_names,
        persistent_volumes=_filled(allowed.persistent_volumes, org.name, env),
        denied_ingress_annotations=allowed.denied_ingress_annotations,
        always_pull_images=allowed.always_pull_images,
    )


def _list(values: tuple[str, ...] | None) -> str:
    return ANY if values is None else ",".join(values)


def _toleration(t: Toleration) -> str:
    head = t.key if t.operator == "Exists" else f"{t.key}={t.value}"
    return f"{head}:{t.effect or ''}"


def protected_cidrs(policy: TenancyPolicy) -> tuple[str, ...]:
    """What a tenant's own ipBlock may not cover: pods, Services, and the denied egress networks."""
    nets = {
        ipaddress.ip_network(c) for c in [*policy.spec.network.pod_cidrs, *policy.spec.network.service_cidrs]
    }
    nets.update(denied_networks(policy))
    return tuple(str(n) for n in sorted(nets, key=lambda n: (n.version, n)))


def ip_block_exceptions(org: Organization, today: dt.date) -> tuple[str, ...]:
    """The Organization's ipBlock exceptions in force on `today`."""
    active = [e.cidr for e in org.spec.network.ip_block_exceptions if e.active_on(today)]
    return tuple(dict.fromkeys(active))


def guardrail_data(org: Organization, policy: TenancyPolicy, env: str, today: dt.date) -> dict[str, str]:
    g = effective_guardrails(org, policy, env)
    env_policy = policy.spec.environment(env)
    developer_exec = env_policy is not None and env_policy.developer_exec
    data = {"organization": org.name, "environment": env, "policy": policy.name}
    for name in CLASS_FIELDS:
        data[_camel(name)] = _list(g.lists[name])
    data["nodePorts"] = "true" if g.node_ports else "false"
    data["loadBalancers"] = "true" if g.load_balancers else "false"
    data["deniedLabelKeys"] = ",".join(g.denied_label_keys)
    data["nodeSelector"] = ",".join(f"{k}={v}" for k, v in g.node_selector.items())
    data["tolerations"] = ",".join(_toleration(t) for t in g.tolerations)
    data["hosts"] = ",".join(g.hosts)
    data["deniedIngressAnnotations"] = ",".join(g.denied_ingress_annotations)
    data["externalNames"] = ",".join(g.external_names)
    data["persistentVolumes"] = ",".join(g.persistent_volumes)
    data["alwaysPullImages"] = "true" if g.always_pull_images else "false"
    data["organizationNamespaces"] = ",".join(org.namespaces().values())
    data["bindableClusterRoles"] = ",".join(bindable_cluster_roles(developer_exec))
    data["protectedCidrs"] = ",".join(protected_cidrs(policy))
    data["ipBlockExceptions"] = ",".join(ip_block_exceptions(org, today))
    return data


def render_guardrails(
    org: Organization, policy: TenancyPolicy, env: str, namespace: str, today: dt.date
) -> dict[str, Any]:
    """The ConfigMap the guardrail admission policies read in `namespace`."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": GUARDRAILS_NAME,
            "namespace": namespace,
            "labels": lbl.ownership_labels(org.name, env),
            "annotations": {lbl.POLICY: policy.name},
        },
        "data": guardrail_data(org, policy, env, today),
    }


def _bounded(text: str) -> str:
    return text if len(text) <= STATUS_ENTRY_MAX else text[: STATUS_ENTRY_MAX - 1] + "…"


def describe(org: Organization, policy: TenancyPolicy, env: str, today: dt.date) -> list[str]:
    """One line per guardrail policy: what applies in `env` (status and `tenantry render`)."""
    g = effective_guardrails(org, policy, env)

    def allowed(name: str) -> str:
        values = g.lists[name]
        return "any" if values is None else (", ".join(values) or "none")

    services = [
        f"NodePort {'allowed' if g.node_ports else 'refused'}",
        f"LoadBalancer {'allowed' if g.load_balancers else 'refused'}",
        "externalIPs refused",
    ]
    denied = [k + "*" if k.endswith("/") else k for k in g.denied_label_keys]
    placement = ", ".join(f"{k}={v}" for k, v in g.node_selector.items()) or "none"
    tolerations = ", ".join(_toleration(t) for t in g.tolerations) or "none"
    hosts = "any" if "*" in g.hosts else (", ".join(g.hosts) or "none")
    lines = [
        f"{POLICIES['classes']}: ingressClasses {allowed('ingress_classes')}; gatewayClasses "
        f"{allowed('gateway_classes')}; storageClasses {allowed('storage_classes')}",
        f"{POLICIES['workloads']}: registries {allowed('registries')}; priorityClasses "
        f"{allowed('priority_classes')}; runtimeClasses {allowed('runtime_classes')}",
        f"{POLICIES['services']}: {', '.join(services)}; ExternalName to "
        f"{', '.join(g.external_names) or 'none'}",
        f"{POLICIES['labels']}: keys refused: {', '.join(denied)}",
        f"{POLICIES['placement']}: nodeSelector {placement}; tolerations {tolerations}",
        f"{POLICIES['hosts']}: hosts {hosts}; Ingress annotations refused: "
        f"{', '.join(g.denied_ingress_annotations)}",
        f"{POLICIES['volumes']}: spec.volumeName {', '.join(g.persistent_volumes) or 'none'}",
        f"{POLICIES['tokens']}: Secrets of type kubernetes.io/service-account-token refused",
        f"{POLICIES['image-pulls']}: imagePullPolicy "
        + ("Always on every container" if g.always_pull_images else "as the pod sets it"),
    ]
    if policy.spec.rbac.organization_admin_self_service:
        exceptions = ip_block_exceptions(org, today)
        env_policy = policy.spec.environment(env)
        roles = bindable_cluster_roles(env_policy is not None and env_policy.developer_exec)
        lines += [
            f"{POLICIES['rbac']}: RoleBindings to the namespace's Roles and {', '.join(roles)}; "
            "subjects: no system: names, ServiceAccounts of the Organization's namespaces only"
            + ("; MFA: Groups only" if mfa_of(policy, env) is not None else ""),
            f"{POLICIES['network-policies']}: peers inside the Organization; no ipBlock covering the "
            "policy's podCidrs, serviceCidrs or denied egress networks"
            + (f" except {', '.join(exceptions)}" if exceptions else ""),
        ]
    return [_bounded(line) for line in lines]


def guardrail_status(org: Organization, policy: TenancyPolicy, today: dt.date) -> list[dict[str, Any]]:
    """status.guardrails: per environment, the guardrails that apply (`org` with its environments)."""
    return [
        {"environment": env, "namespace": namespace, "applied": describe(org, policy, env, today)}
        for env, namespace in org.namespaces().items()
    ]
