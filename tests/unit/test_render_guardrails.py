"""render/guardrails.py: policy ∩ Organization per environment, widening only with approval."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import ValidationError

from tenantry.api.organization import Organization
from tenantry.api.policy import TenancyPolicy
from tenantry.render import render_organization
from tenantry.render.checks import check_organization, errors_only
from tenantry.render.guardrails import effective_guardrails, guardrail_status
from tests.unit.test_admission_guardrails import POLICY

TODAY = dt.date(2026, 11, 26)


def org(approval: bool = False, **guardrails: Any) -> Organization:
    spec: dict[str, Any] = {"environments": ["prod", "dev"], "guardrails": guardrails}
    if approval:
        spec["quotaApproval"] = {"approvedBy": "finops", "justification": "dedicated GPU pool"}
    return Organization.model_validate(
        {
            "apiVersion": "tenantry.dev/v1alpha1",
            "kind": "Organization",
            "metadata": {"name": "acme"},
            "spec": spec,
        }
    )


def errors(o: Organization) -> list[str]:
    return [str(p) for p in errors_only(check_organization(o, POLICY, TODAY))]


def test_a_subset_narrows() -> None:
    narrowed = org(storageClasses=["standard"], registries=["ghcr.io/acme/team/"])
    assert errors(narrowed) == []
    assert effective_guardrails(narrowed, POLICY, "prod").lists["storage_classes"] == ("standard",)


def test_widening_is_an_error_without_approval_and_applies_with_it() -> None:
    wide = {
        "storageClasses": ["premium"],
        "registries": ["quay.io/"],
        "placement": {"nodeSelector": {"pool": "gpu"}},
    }
    assert errors(org(**wide)) == [
        "spec.guardrails.placement.nodeSelector[\"pool\"]: 'gpu' moves the pods of environment 'prod' "
        "off the "
        "node pool policy 'default' sets (pool=tenants); that requires spec.quotaApproval",
        "spec.guardrails.registries[0]: 'quay.io/' is not allowed by policy 'default' in environment 'prod' "
        "(allowed: ghcr.io/acme/, registry.example.com/); an Organization may only narrow its policy's "
        "guardrails, widening them requires spec.quotaApproval",
        "spec.guardrails.storageClasses[0]: 'premium' is not allowed by policy 'default' in environment "
        "'prod' "
        "(allowed: standard, fast); an Organization may only narrow its policy's guardrails, widening them "
        "requires spec.quotaApproval",
    ]
    approved = org(approval=True, **wide)
    assert errors(approved) == []
    assert effective_guardrails(approved, POLICY, "dev").node_selector == {"pool": "gpu"}


def test_a_toleration_from_the_organization_needs_approval() -> None:
    toleration = {"tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]}
    assert len(errors(org(placement=toleration))) == 1
    data = {
        o["metadata"]["namespace"]: o["data"]
        for o in render_organization(org(approval=True, placement=toleration), POLICY, TODAY).objects
        if o["kind"] == "ConfigMap"
    }
    assert data["acme-prod"]["tolerations"] == "dedicated=tenants:NoSchedule,gpu:NoSchedule"


def test_status_lists_every_guardrail_per_environment() -> None:
    status = guardrail_status(org(storageClasses=["standard"]), POLICY)
    assert [s["namespace"] for s in status] == ["acme-prod", "acme-dev"]
    prod = status[0]["applied"]
    assert prod == [
        "tenantry-guardrail-classes: ingressClasses nginx, internal; gatewayClasses shared; "
        "storageClasses standard",
        "tenantry-guardrail-workloads: registries ghcr.io/acme/, registry.example.com/; priorityClasses "
        "tenant-low, tenant-high; runtimeClasses gvisor",
        "tenantry-guardrail-services: NodePort refused, LoadBalancer refused, externalIPs refused; "
        "ExternalName to api.stripe.com, *.amazonaws.com",
        "tenantry-guardrail-labels: keys refused: tenantry.dev/*, example.com/billing, "
        "security.example.com/*",
        "tenantry-guardrail-placement: nodeSelector pool=tenants; tolerations dedicated=tenants:NoSchedule",
        "tenantry-guardrail-hosts: hosts *.acme.apps.example.com, acme.example.com; Ingress annotations "
        "refused: *-snippet, nginx.ingress.kubernetes.io/auth-secret, "
        "nginx.ingress.kubernetes.io/auth-tls-secret, "
        "nginx.ingress.kubernetes.io/proxy-ssl-secret, nginx.ingress.kubernetes.io/auth-tls-match-cn, "
        "nginx.ingress.kubernetes.io/auth-url, nginx.ingress.kubernetes.io/mirror-target, "
        "nginx.ingress.kubernetes.io/mirror-host",
        "tenantry-guardrail-volumes: spec.volumeName acme-prod-*",
        "tenantry-guardrail-tokens: Secrets of type kubernetes.io/service-account-token refused",
    ]
    assert "NodePort allowed" in status[1]["applied"][2]


def test_hosts_come_from_the_policy_per_organization() -> None:
    acme = effective_guardrails(org(), POLICY, "prod")
    assert acme.hosts == ("*.acme.apps.example.com", "acme.example.com")
    assert acme.persistent_volumes == ("acme-prod-*",)
    beta = Organization.model_validate({**org().model_dump(by_alias=True), "metadata": {"name": "beta"}})
    assert effective_guardrails(beta, POLICY, "dev").hosts == ("*.beta.apps.example.com", "beta.example.com")


def test_an_organization_narrows_its_hosts_and_widens_them_only_with_approval() -> None:
    narrowed = org(hosts=["shop.acme.apps.example.com", "*.api.acme.apps.example.com"])
    assert errors(narrowed) == []
    assert effective_guardrails(narrowed, POLICY, "prod").hosts == (
        "shop.acme.apps.example.com",
        "*.api.acme.apps.example.com",
    )
    own_domain = {"hosts": ["*.acme.apps.example.com", "acme.com", "*.acme.com"]}
    assert errors(org(**own_domain)) == [
        "spec.guardrails.hosts[1]: 'acme.com' is not among the hosts policy 'default' allows in environment "
        "'prod' (*.acme.apps.example.com, acme.example.com); an Organization may only narrow its policy's "
        "guardrails, widening them requires spec.quotaApproval",
        "spec.guardrails.hosts[2]: '*.acme.com' is not among the hosts policy 'default' allows in "
        "environment "
        "'prod' (*.acme.apps.example.com, acme.example.com); an Organization may only narrow its policy's "
        "guardrails, widening them requires spec.quotaApproval",
    ]
    assert errors(org(approval=True, **own_domain)) == []


def test_no_approval_gives_one_organization_another_ones_hosts() -> None:
    for host in ("billing.beta.apps.example.com", "*.beta.apps.example.com", "*.apps.example.com"):
        problems = errors(org(approval=True, hosts=[host]))
        assert (
            len(problems) == 1 and "no approval can give one Organization another's hosts" in problems[0]
        ), host


def test_the_parameter_carries_hosts_names_volumes_and_annotations() -> None:
    data = {
        o["metadata"]["namespace"]: o["data"]
        for o in render_organization(org(), POLICY, TODAY).objects
        if o["kind"] == "ConfigMap"
    }
    prod = data["acme-prod"]
    assert prod["hosts"] == "*.acme.apps.example.com,acme.example.com"
    assert prod["externalNames"] == "api.stripe.com,*.amazonaws.com"
    assert prod["persistentVolumes"] == "acme-prod-*"
    assert prod["deniedIngressAnnotations"].startswith("*-snippet,nginx.ingress.kubernetes.io/auth-secret,")
    assert data["acme-dev"]["persistentVolumes"] == "acme-dev-*"


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("169.254.169.254", "is an IP address"),
        ("billing.beta-prod.svc", "is a cluster-internal name"),
        ("*.svc.cluster.local", "is a cluster-internal name"),
        ("kubernetes", "is a single label"),
    ],
)
def test_a_policy_cannot_allow_external_names_inside_the_cluster(entry: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        TenancyPolicy.model_validate(
            {"metadata": {"name": "p"}, "spec": {"guardrails": {"externalNames": [entry]}}}
        )
