"""NetworkPolicies: deny everything, then open exactly what the policy and the org declare.

Namespaces are selected by `kubernetes.io/metadata.name` (set by the API server, immutable)
or by our ownership labels (on namespaces, which tenants have no RBAC to relabel), never by
labels a tenant could put on its own objects.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from typing import Any

from tenantry.api.organization import EgressRule, Organization, namespace_name
from tenantry.api.policy import TenancyPolicy
from tenantry.render import labels as lbl
from tenantry.render.cidrs import IPNetwork, denied_networks

DEFAULT_DENY = "tenantry-default-deny"
ALLOW_DNS = "tenantry-allow-dns"
ALLOW_INGRESS_CONTROLLERS = "tenantry-allow-ingress-controllers"
ALLOW_SAME_NAMESPACE = "tenantry-allow-same-namespace"
ALLOW_EGRESS = "tenantry-allow-egress"
ALLOW_FROM_PREFIX = "tenantry-allow-from-"


def _policy(
    org: Organization,
    env: str,
    namespace: str,
    name: str,
    spec: dict[str, Any],
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": lbl.ownership_labels(org.name, env),
    }
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": metadata, "spec": spec}


def _namespace_is(names: list[str]) -> dict[str, Any]:
    if len(names) == 1:
        return {"matchLabels": {lbl.METADATA_NAME: names[0]}}
    return {"matchExpressions": [{"key": lbl.METADATA_NAME, "operator": "In", "values": sorted(names)}]}


def _org_namespaces(org: str, environments: list[str] | None) -> dict[str, Any]:
    """Selector for another organization's namespaces (all of them, or the named environments).

    `environments: []` is refused by the checks before rendering (it would select nothing, and
    an empty `In` is not a valid selector); it never means "all".
    """
    if environments is not None:
        if not environments:
            raise ValueError("environments: [] selects no namespace (refused by check_organization)")
        return _namespace_is([namespace_name(org, e) for e in environments])
    return {"matchLabels": {lbl.APP_MANAGED_BY: lbl.APP_MANAGED_BY_VALUE, lbl.OWNER: org}}


def _egress_peer(rule: EgressRule, denied: list[IPNetwork]) -> dict[str, Any]:
    if rule.cidr is not None:
        outer = ipaddress.ip_network(rule.cidr)
        carve = [
            str(c)
            for c in denied
            if c.version == outer.version and c != outer and c.subnet_of(outer)  # type: ignore[arg-type]
        ]
        excepted = sorted(set(rule.except_ or []) | set(carve))
        block: dict[str, Any] = {"cidr": rule.cidr}
        if excepted:
            block["except"] = excepted
        return {"ipBlock": block}
    assert rule.organization is not None
    return {"namespaceSelector": _org_namespaces(rule.organization, rule.environments)}


def render_network_policies(
    org: Organization, policy: TenancyPolicy, env: str, namespace: str, today: dt.date
) -> list[dict[str, Any]]:
    net = policy.spec.network
    objects = [
        # Explicit empty rule lists: we then own them, and an allow rule someone adds is drift
        # that our next server-side apply removes (it would survive an apply that omits them).
        _policy(
            org,
            env,
            namespace,
            DEFAULT_DENY,
            {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []},
        ),
        _policy(
            org,
            env,
            namespace,
            ALLOW_DNS,
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [
                            {
                                "namespaceSelector": _namespace_is([net.dns.namespace]),
                                "podSelector": {"matchLabels": dict(net.dns.pod_selector)},
                            }
                        ],
                        "ports": [p.as_k8s() for p in net.dns.ports],
                    }
                ],
            },
        ),
    ]
    if net.ingress_controllers:
        peers = []
        for controller in net.ingress_controllers:
            peer: dict[str, Any] = {"namespaceSelector": _namespace_is([controller.namespace])}
            if controller.pod_selector:
                peer["podSelector"] = {"matchLabels": dict(controller.pod_selector)}
            peers.append(peer)
        objects.append(
            _policy(
                org,
                env,
                namespace,
                ALLOW_INGRESS_CONTROLLERS,
                {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": peers}]},
            )
        )
    if net.allow_same_namespace:
        same: list[dict[str, Any]] = [{"podSelector": {}}]
        objects.append(
            _policy(
                org,
                env,
                namespace,
                ALLOW_SAME_NAMESPACE,
                {
                    "podSelector": {},
                    "policyTypes": ["Ingress", "Egress"],
                    "ingress": [{"from": same}],
                    "egress": [{"to": same}],
                },
            )
        )
    egress = org.spec.network.egress
    if egress:
        denied = denied_networks(policy)
        rules = []
        for rule in egress:
            entry: dict[str, Any] = {"to": [_egress_peer(rule, denied)]}
            if rule.ports:
                entry["ports"] = [p.as_k8s() for p in rule.ports]
            rules.append(entry)
        reasons = json.dumps([r.reason for r in egress], ensure_ascii=False)
        objects.append(
            _policy(
                org,
                env,
                namespace,
                ALLOW_EGRESS,
                {"podSelector": {}, "policyTypes": ["Egress"], "egress": rules},
                {lbl.REASON: reasons},
            )
        )
    objects += _render_allow_from(org, env, namespace, today)
    return objects


def _render_allow_from(org: Organization, env: str, namespace: str, today: dt.date) -> list[dict[str, Any]]:
    """One NetworkPolicy per source organization, holding each of its active exceptions."""
    by_source: dict[str, list[Any]] = {}
    for exception in org.spec.network.allow_from:
        if exception.active_on(today):
            by_source.setdefault(exception.organization, []).append(exception)
    objects = []
    for source in sorted(by_source):
        exceptions = by_source[source]
        rules = []
        for exception in exceptions:
            rule: dict[str, Any] = {
                "from": [{"namespaceSelector": _org_namespaces(source, exception.environments)}]
            }
            if exception.ports:
                rule["ports"] = [p.as_k8s() for p in exception.ports]
            rules.append(rule)
        annotations = {lbl.REASON: json.dumps([e.reason for e in exceptions], ensure_ascii=False)}
        expiries = [e.expires for e in exceptions]
        if all(expiries):
            annotations[lbl.EXPIRES] = max(d for d in expiries if d is not None).isoformat()
        objects.append(
            _policy(
                org,
                env,
                namespace,
                f"{ALLOW_FROM_PREFIX}{source}",
                {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": rules},
                annotations,
            )
        )
    return objects
