"""NetworkPolicies: default deny, then only the explicit allows."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from tenantry.api.policy import builtin_default_policy
from tests.conftest import minimal_org
from tests.unit.helpers import find, names, render

SAFE_SELECTOR_KEYS = {
    "kubernetes.io/metadata.name",
    "tenantry.dev/organization",
    "app.kubernetes.io/managed-by",
}


def test_default_deny_for_ingress_and_egress_in_every_namespace() -> None:
    objects = render(minimal_org()).objects
    for ns in ("acme-prod", "acme-dev"):
        deny = find(objects, "NetworkPolicy", "tenantry-default-deny", ns)["spec"]
        assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []}


def test_dns_is_allowed_to_cluster_dns_pods_only() -> None:
    spec = find(render(minimal_org()).objects, "NetworkPolicy", "tenantry-allow-dns", "acme-prod")["spec"]
    (rule,) = spec["egress"]
    assert rule["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ]
    assert rule["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    assert spec["policyTypes"] == ["Egress"]


def test_ingress_only_from_the_ingress_controller_namespace() -> None:
    spec = find(
        render(minimal_org()).objects, "NetworkPolicy", "tenantry-allow-ingress-controllers", "acme-prod"
    )["spec"]
    assert spec["ingress"] == [
        {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]}
    ]


def test_same_namespace_traffic_follows_the_policy() -> None:
    assert "tenantry-allow-same-namespace" in names(
        render(minimal_org()).objects, "NetworkPolicy", "acme-prod"
    )
    default = builtin_default_policy()
    closed = default.model_copy(
        update={
            "spec": default.spec.model_copy(
                update={"network": default.spec.network.model_copy(update={"allow_same_namespace": False})}
            )
        }
    )
    assert "tenantry-allow-same-namespace" not in names(
        render(minimal_org(), closed).objects, "NetworkPolicy", "acme-prod"
    )


def test_egress_allow_list_with_ports_and_reasons(acme_doc: dict[str, Any]) -> None:
    policy = find(render(acme_doc).objects, "NetworkPolicy", "tenantry-allow-egress", "acme-prod")
    postgres, https = policy["spec"]["egress"]
    assert postgres == {
        "to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
        "ports": [{"protocol": "TCP", "port": 5432}],
    }
    assert https["ports"] == [{"protocol": "TCP", "port": 443}]
    assert "managed Postgres" in policy["metadata"]["annotations"]["tenantry.dev/reason"]


def test_cloud_metadata_is_carved_out_of_wide_egress(acme_doc: dict[str, Any]) -> None:
    policy = find(render(acme_doc).objects, "NetworkPolicy", "tenantry-allow-egress", "acme-prod")
    https = policy["spec"]["egress"][1]
    assert https["to"] == [
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["100.100.100.200/32", "169.254.169.254/32"]}}
    ]


def test_no_egress_policy_without_an_allow_list() -> None:
    assert "tenantry-allow-egress" not in names(render(minimal_org()).objects, "NetworkPolicy", "acme-prod")


def test_cross_tenant_exception_selects_the_source_by_immutable_name(acme_doc: dict[str, Any]) -> None:
    policy = find(render(acme_doc).objects, "NetworkPolicy", "tenantry-allow-from-beta", "acme-prod")
    assert policy["spec"]["ingress"] == [
        {
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "beta-prod"}}}],
            "ports": [{"protocol": "TCP", "port": 8080}],
        }
    ]
    assert policy["metadata"]["annotations"]["tenantry.dev/expires"] == "2027-06-30"
    assert "billing calls our API" in policy["metadata"]["annotations"]["tenantry.dev/reason"]


def test_expired_exception_is_not_rendered_but_reported(acme_doc: dict[str, Any]) -> None:
    rendering = render(acme_doc, today=dt.date(2027, 7, 1))
    assert "tenantry-allow-from-beta" not in names(rendering.objects, "NetworkPolicy", "acme-prod")
    (warning,) = rendering.warnings
    assert warning.path == "spec.network.allowFrom[0].expires"
    assert "expired on 2027-06-30" in warning.message


def test_exception_is_in_force_on_its_expiry_day(acme_doc: dict[str, Any]) -> None:
    objects = render(acme_doc, today=dt.date(2027, 6, 30)).objects
    assert "tenantry-allow-from-beta" in names(objects, "NetworkPolicy", "acme-prod")


def test_egress_to_another_organization_uses_names_or_ownership_labels() -> None:
    doc = minimal_org(
        network={
            "egress": [
                {"organization": "beta", "environments": ["prod", "dev"], "reason": "r"},
                {"organization": "gamma", "reason": "all of gamma"},
            ]
        }
    )
    rules = find(render(doc).objects, "NetworkPolicy", "tenantry-allow-egress", "acme-prod")["spec"]["egress"]
    assert rules[0]["to"] == [
        {
            "namespaceSelector": {
                "matchExpressions": [
                    {
                        "key": "kubernetes.io/metadata.name",
                        "operator": "In",
                        "values": ["beta-dev", "beta-prod"],
                    }
                ]
            }
        }
    ]
    assert rules[1]["to"] == [
        {
            "namespaceSelector": {
                "matchLabels": {
                    "app.kubernetes.io/managed-by": "tenantry",
                    "tenantry.dev/organization": "gamma",
                }
            }
        }
    ]


def _namespace_selectors(obj: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == "namespaceSelector":
                found.append(value)
            found += _namespace_selectors(value)
    elif isinstance(obj, list):
        for item in obj:
            found += _namespace_selectors(item)
    return found


@pytest.mark.parametrize("today", [dt.date(2026, 1, 1)])
def test_no_policy_selects_namespaces_by_a_label_a_tenant_could_set(
    acme_doc: dict[str, Any], today: dt.date
) -> None:
    selectors = _namespace_selectors(render(acme_doc, today=today).objects)
    assert selectors
    for selector in selectors:
        keys = set(selector.get("matchLabels", {})) | {e["key"] for e in selector.get("matchExpressions", [])}
        assert keys <= SAFE_SELECTOR_KEYS, selector
