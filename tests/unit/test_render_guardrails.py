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
    status = guardrail_status(org(storageClasses=["standard"]), POLICY, TODAY)
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
        "tenantry-guardrail-image-pulls: imagePullPolicy Always on every container",
        "tenantry-guardrail-rbac: RoleBindings to the namespace's Roles and tenantry:developer, "
        "tenantry:organization-admin, tenantry:viewer; subjects: no system: names, ServiceAccounts of "
        "the Organization's namespaces only",
        "tenantry-guardrail-network-policies: peers inside the Organization; no ipBlock covering the "
        "policy's podCidrs, serviceCidrs or denied egress networks",
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


def _data(
    o: Organization, policy: TenancyPolicy = POLICY, today: dt.date = TODAY
) -> dict[str, dict[str, str]]:
    return {
        obj["metadata"]["namespace"]: obj["data"]
        for obj in render_organization(o, policy, today).objects
        if obj["kind"] == "ConfigMap"
    }


def _policy_with_dev(**dev: Any) -> TenancyPolicy:
    """POLICY with fields of its `dev` environment replaced."""
    doc = POLICY.model_dump(by_alias=True, exclude_none=True, mode="json")
    doc["spec"]["environments"][1].update(dev)
    return TenancyPolicy.model_validate(doc)


def test_the_parameter_carries_what_the_self_service_guardrails_read() -> None:
    data = _data(org())
    assert data["acme-prod"]["organizationNamespaces"] == "acme-prod,acme-dev"
    # developer-exec is bindable only where the policy lets developers exec (not prod by default).
    assert (
        data["acme-prod"]["bindableClusterRoles"]
        == "tenantry:developer,tenantry:organization-admin,tenantry:viewer"
    )
    dev_policy = _policy_with_dev(developerExec=True)
    assert "tenantry:developer-exec" in _data(org(), dev_policy)["acme-dev"]["bindableClusterRoles"].split(
        ","
    )
    protected = data["acme-prod"]["protectedCidrs"].split(",")
    for cidr in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "10.96.0.0/12",
        "169.254.169.254/32",
    ):
        assert cidr in protected
    assert data["acme-prod"]["ipBlockExceptions"] == ""


def test_pod_and_service_ranges_come_from_the_policy() -> None:
    policy = TenancyPolicy.model_validate(
        {
            "metadata": {"name": "default"},
            "spec": {"network": {"podCidrs": ["10.244.0.0/16"], "serviceCidrs": ["10.96.0.0/12"]}},
        }
    )
    o = Organization.model_validate({"metadata": {"name": "acme"}, "spec": {"environments": ["prod"]}})
    protected = _data(o, policy)["acme-prod"]["protectedCidrs"].split(",")
    assert "10.244.0.0/16" in protected and "10.96.0.0/12" in protected
    assert "10.0.0.0/8" not in protected and "192.168.0.0/16" not in protected
    assert "169.254.169.254/32" in protected  # metadata: always


def _with_exceptions(*exceptions: dict[str, Any]) -> Organization:
    return Organization.model_validate(
        {
            "metadata": {"name": "acme"},
            "spec": {"environments": ["prod", "dev"], "network": {"ipBlockExceptions": list(exceptions)}},
        }
    )


def test_ip_block_exceptions_apply_until_they_expire() -> None:
    o = _with_exceptions(
        {"cidr": "10.20.0.0/16", "reason": "the legacy VMs share the pod range", "expires": "2026-11-26"},
        {"cidr": "192.168.5.0/24", "reason": "office network"},
    )
    assert _data(o)["acme-prod"]["ipBlockExceptions"] == "10.20.0.0/16,192.168.5.0/24"
    assert _data(o, today=dt.date(2026, 11, 27))["acme-prod"]["ipBlockExceptions"] == "192.168.5.0/24"
    expired = check_organization(o, POLICY, dt.date(2026, 11, 27))
    assert [p.path for p in expired if p.severity == "warning"] == [
        "spec.network.ipBlockExceptions[0].expires"
    ]


def test_no_exception_opens_a_cloud_metadata_endpoint() -> None:
    o = _with_exceptions(
        {"cidr": "169.254.0.0/16", "reason": "link-local"}, {"cidr": "::/0", "reason": "all v6"}
    )
    paths = {p.path for p in errors_only(check_organization(o, POLICY, TODAY))}
    assert paths == {"spec.network.ipBlockExceptions[0].cidr", "spec.network.ipBlockExceptions[1].cidr"}


def test_image_pulls_are_always_unless_the_environment_says_otherwise() -> None:
    assert {ns: d["alwaysPullImages"] for ns, d in _data(org()).items()} == {
        "acme-prod": "true",
        "acme-dev": "true",
    }
    policy = _policy_with_dev(guardrails={"nodePorts": True, "alwaysPullImages": False})
    assert {ns: d["alwaysPullImages"] for ns, d in _data(org(), policy).items()} == {
        "acme-prod": "true",
        "acme-dev": "false",
    }
