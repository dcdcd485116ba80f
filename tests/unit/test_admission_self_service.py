"""The guardrails that make Organization Admin self-service safe, and imagePullPolicy Always:
manifests/admission/guardrails/{rbac,network-policies,image-pulls}.yaml and the mutation in
manifests/admission/image-pulls/, evaluated with cel-python on the real YAML in the API server's
order (tests/unit/test_admission_guardrails.py's `submit`: mutations first, then every
validating guardrail with the parameter the renderer writes).

The promise: an Organization Admin may write Roles, RoleBindings and NetworkPolicies in its own
namespaces, and nothing it writes reaches outside the Organization; every container of a tenant
pod pulls its image.
"""

from __future__ import annotations

import copy
import ipaddress
import random
from typing import Any

import pytest

from tenantry.api.organization import Organization
from tenantry.api.policy import TenancyPolicy
from tests.unit import test_admission_guardrails as g
from tests.unit.test_admission_guardrails import (
    ACME,
    POLICY,
    REPLICASET_CONTROLLER,
    Cluster,
    Decision,
    Request,
    cluster_for,
    create,
    submit,
    update,
)
from tests.unit.test_admission_policies import OPERATOR, TENANT

Json = dict[str, Any]


def _policy(**changes: Any) -> TenancyPolicy:
    """POLICY with spec fields replaced (environments: per name, merged)."""
    doc = POLICY.model_dump(by_alias=True, exclude_none=True, mode="json")
    for env in doc["spec"]["environments"]:
        env.update(changes.pop(env["name"], {}))
    for key, value in changes.items():
        doc["spec"].setdefault(key, {}).update(value)
    return TenancyPolicy.model_validate(doc)


def _org(**network: Any) -> Organization:
    spec: Json = {"environments": ["prod", "dev"]}
    if network:
        spec["network"] = network
    return Organization.model_validate({"metadata": {"name": "acme"}, "spec": spec})


# === image pulls =============================================================================

WITHOUT_MUTATION = [p for p in g.MUTATING if p["metadata"]["name"] != "tenantry-image-pulls"]
POD_KINDS = [
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
    "ReplicationController",
    "PodTemplate",
]


def _pulling(policy: str | None = None, **extra: Any) -> Json:
    container: Json = {"name": "app", "image": "ghcr.io/acme/app:1"}
    if policy:
        container["imagePullPolicy"] = policy
    return {**container, **extra}


def _pod_spec(policy: str | None = "IfNotPresent") -> Json:
    return {
        "containers": [_pulling(policy), _pulling("Always", name="sidecar")],
        "initContainers": [_pulling(policy, name="init")],
        # Placement is another guardrail's concern: satisfied here.
        "nodeSelector": {"pool": "tenants"},
        "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "tenants", "effect": "NoSchedule"}
        ],
    }


def _with_template(kind: str, spec: Json, namespace: str = "acme-prod") -> Json:
    group, version, _ = g.RESOURCES[kind]
    api = f"{group}/{version}" if group else version
    template = {"metadata": {"labels": {"app": "x"}}, "spec": spec}
    body: Json = {"apiVersion": api, "kind": kind, "metadata": {"name": "w", "namespace": namespace}}
    if kind == "PodTemplate":
        body["template"] = template
    elif kind == "CronJob":
        body["spec"] = {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}
    else:
        body["spec"] = {"selector": {"matchLabels": {"app": "x"}}, "template": template}
    return body


def _pod_spec_of(body: Json) -> Json:
    if body["kind"] == "Pod":
        return body["spec"]
    if body["kind"] == "PodTemplate":
        return body["template"]["spec"]
    if body["kind"] == "CronJob":
        return body["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return body["spec"]["template"]["spec"]


def _policies_set(decision: Decision) -> list[str]:
    assert decision.allowed, decision.why
    assert decision.object is not None
    spec = _pod_spec_of(decision.object)
    return [c.get("imagePullPolicy", "") for c in spec["containers"] + spec.get("initContainers", [])]


def _pod(spec: Json, namespace: str = "acme-prod") -> Json:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": namespace},
        "spec": spec,
    }


@pytest.mark.parametrize("policy", ["IfNotPresent", "Never", None])
def test_the_mutation_makes_every_container_of_a_new_pod_pull(policy: str | None) -> None:
    assert _policies_set(create(_pod(_pod_spec(policy)))) == ["Always", "Always", "Always"]


@pytest.mark.parametrize("kind", POD_KINDS)
def test_the_mutation_sets_the_template_of_every_workload_kind(kind: str) -> None:
    assert _policies_set(create(_with_template(kind, _pod_spec()))) == ["Always", "Always", "Always"]


@pytest.mark.parametrize("kind", ["Pod", *POD_KINDS])
def test_without_the_mutation_the_validating_guardrail_says_what_to_set(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kubernetes 1.30 to 1.35, or manifests/admission/image-pulls not installed."""
    monkeypatch.setattr(g, "MUTATING", WITHOUT_MUTATION)
    body = _pod(_pod_spec()) if kind == "Pod" else _with_template(kind, _pod_spec())
    decision = create(body)
    assert not decision.allowed
    assert decision.policy == "tenantry-guardrail-image-pulls"
    assert (
        "container app (IfNotPresent), init (IfNotPresent) must set imagePullPolicy: Always" in decision.why
    )
    assert "spec.guardrails.alwaysPullImages" in decision.why
    always = _pod(_pod_spec("Always")) if kind == "Pod" else _with_template(kind, _pod_spec("Always"))
    assert create(always).allowed


def test_an_ephemeral_container_is_set_as_it_is_added_and_old_ones_are_left_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old = _pod(_pod_spec("Always"))
    # Added before the guardrail existed: immutable, and a patch to it would fail the request.
    old["spec"]["ephemeralContainers"] = [_pulling("IfNotPresent", name="debug-old")]
    new = copy.deepcopy(old)
    new["spec"]["ephemeralContainers"].append(_pulling("IfNotPresent", name="debug"))
    decision = update(new, old, sub="ephemeralcontainers")
    assert decision.allowed, decision.why
    assert decision.object is not None
    assert [c["imagePullPolicy"] for c in decision.object["spec"]["ephemeralContainers"]] == [
        "IfNotPresent",
        "Always",
    ]
    monkeypatch.setattr(g, "MUTATING", WITHOUT_MUTATION)
    refused = update(new, old, sub="ephemeralcontainers")
    assert not refused.allowed and "container debug (IfNotPresent)" in refused.why


def test_an_unchanged_template_is_not_rolled_and_a_changed_one_is_set() -> None:
    """Editing a label must not restart a Deployment's pods; changing its pod spec sets Always."""
    old = _with_template("Deployment", _pod_spec())
    relabelled = copy.deepcopy(old)
    relabelled["metadata"]["labels"] = {"team": "payments"}
    decision = update(relabelled, old)
    assert decision.allowed and decision.object == relabelled
    changed = copy.deepcopy(old)
    _pod_spec_of(changed)["containers"][0]["image"] = "ghcr.io/acme/app:2"
    assert _policies_set(update(changed, old)) == ["Always", "Always", "Always"]


def test_pods_kubernetes_controllers_create_from_older_templates_pull_too() -> None:
    decision = submit(Request("CREATE", REPLICASET_CONTROLLER, _pod(_pod_spec())), ACME)
    assert _policies_set(decision) == ["Always", "Always", "Always"]


def test_an_environment_may_switch_it_off() -> None:
    cluster = cluster_for(g.organization(), _policy(dev={"guardrails": {"alwaysPullImages": False}}))
    assert cluster.params["acme-dev"]["data"]["alwaysPullImages"] == "false"
    body = _pod(_pod_spec(), "acme-dev")
    assert create(body, cluster=cluster) == Decision(True, "admitted", object=body)
    assert _policies_set(create(_pod(_pod_spec()), cluster=cluster)) == ["Always", "Always", "Always"]


# === RBAC self-service =======================================================================

ROLE = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "Role",
    "metadata": {"name": "reader", "namespace": "acme-prod"},
    "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
}


def binding(
    role: str = "tenantry:developer",
    *subjects: Json,
    kind: str = "ClusterRole",
    name: str = "team",
    namespace: str = "acme-prod",
    **meta: Any,
) -> Json:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace, **meta},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
        "subjects": list(subjects) or [group("acme-devs")],
    }


def group(name: str) -> Json:
    return {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": name}


def user(name: str) -> Json:
    return {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": name}


def sa(namespace: str, name: str = "default") -> Json:
    return {"kind": "ServiceAccount", "name": name, "namespace": namespace}


def test_an_admin_binds_its_roles_and_the_tenant_roles_to_its_people() -> None:
    assert create(ROLE).allowed
    assert create(binding("reader", group("acme-devs"), user("carol@acme.example"), kind="Role")).allowed
    for role in ("tenantry:developer", "tenantry:viewer", "tenantry:organization-admin"):
        assert create(binding(role)).allowed, role
    assert create(binding("tenantry:viewer", sa("acme-prod"), sa("acme-dev", "ci"))).allowed


@pytest.mark.parametrize(
    "role",
    [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:aggregate-to-admin",
        "tenantry:platform-admin",
        "tenantry:organization-admin-self-service",
        "tenantry:member:beta",
        # Not in prod: the policy lets developers exec only where developerExec is true.
        "tenantry:developer-exec",
    ],
)
def test_no_other_cluster_role_is_bound(role: str) -> None:
    decision = create(binding(role))
    assert not decision.allowed
    assert decision.policy == "tenantry-guardrail-rbac"
    assert f"ClusterRole {role} may not be bound in acme-prod" in decision.why
    assert "tenantry:developer, tenantry:organization-admin, tenantry:viewer" in decision.why


def test_developer_exec_is_bindable_where_the_policy_lets_developers_exec() -> None:
    cluster = cluster_for(g.organization(), _policy(dev={"developerExec": True}))
    assert create(binding("tenantry:developer-exec", namespace="acme-dev"), cluster=cluster).allowed
    assert not create(binding("tenantry:developer-exec"), cluster=cluster).allowed


def _exec_role(namespace: str, *resources: str, groups: tuple[str, ...] = ("",)) -> Json:
    body = copy.deepcopy(ROLE)
    body["metadata"]["namespace"] = namespace
    body["rules"] = [{"apiGroups": list(groups), "resources": list(resources), "verbs": ["create", "get"]}]
    return body


@pytest.mark.parametrize(
    "resources", [("pods/exec",), ("pods/attach",), ("pods", "pods/portforward"), ("pods/*",), ("*",)]
)
def test_no_role_hands_out_exec_where_developers_may_not_exec(resources: tuple[str, ...]) -> None:
    """Organization Admins hold exec everywhere; without this rule a Role of their own would pass
    it on to developers in prod, where the policy says developerExec: false."""
    decision = create(_exec_role("acme-prod", *resources))
    assert not decision.allowed
    assert decision.policy == "tenantry-guardrail-rbac" and "rule exec" in decision.why
    assert "does not let developers exec" in decision.why


def test_exec_in_a_role_where_developers_may_exec_or_of_another_group() -> None:
    cluster = cluster_for(g.organization(), _policy(dev={"developerExec": True}))
    assert create(_exec_role("acme-dev", "pods/exec"), cluster=cluster).allowed
    assert create(_exec_role("acme-prod", "pods/exec", groups=("apps",)), cluster=cluster).allowed
    assert create(_exec_role("acme-prod", "pods", "pods/log"), cluster=cluster).allowed


@pytest.mark.parametrize(
    ("subject", "needle"),
    [
        (group("system:authenticated"), "Group system:authenticated is one of Kubernetes' own identities"),
        (group("system:serviceaccounts"), "Group system:serviceaccounts is one of"),
        (group("system:serviceaccounts:beta-prod"), "Group system:serviceaccounts:beta-prod is one of"),
        (user("system:anonymous"), "User system:anonymous is one of"),
        (sa("beta-prod"), "ServiceAccount beta-prod/default is not in a namespace of Organization acme"),
        (
            sa("kube-system", "replicaset-controller"),
            "ServiceAccount kube-system/replicaset-controller is not",
        ),
    ],
)
def test_subjects_stay_inside_the_organization(subject: Json, needle: str) -> None:
    decision = create(binding("tenantry:viewer", group("acme-devs"), subject))
    assert not decision.allowed and needle in decision.why


def test_only_subjects_a_write_adds_are_checked() -> None:
    """A binding made before a rule tightened keeps working and can be edited."""
    old = binding("tenantry:viewer", sa("beta-prod"))
    kept = binding("tenantry:viewer", sa("beta-prod"), group("acme-devs"))
    assert update(kept, old).allowed
    assert not update(binding("tenantry:viewer", sa("beta-prod"), sa("beta-dev")), old).allowed


@pytest.mark.parametrize("kind", ["Role", "RoleBinding"])
def test_names_starting_with_tenantry_are_the_operators(kind: str) -> None:
    body = copy.deepcopy(ROLE) if kind == "Role" else binding()
    body["metadata"]["name"] = "tenantry:organization-admins-2"
    decision = create(body)
    assert not decision.allowed and "rule reserved-name" in decision.why


def test_the_operators_own_bindings_are_not_judged_here() -> None:
    """tenantry-protect-managed-objects decides about objects with our label; members may be
    ServiceAccounts of any namespace (a CI deployer)."""
    ours = binding(
        "tenantry:developer",
        sa("ci", "deployer"),
        name="tenantry:developers",
        labels={"app.kubernetes.io/managed-by": "tenantry", "tenantry.dev/organization": "acme"},
    )
    assert create(ours, who=OPERATOR).allowed


MFA_SUFFIX = _policy(prod={"mfa": {"required": True, "groupSuffix": ":mfa"}})
MFA_GROUP = _policy(prod={"mfa": {"required": True, "group": "mfa-verified"}})


def test_in_an_mfa_environment_only_the_mfa_form_of_groups() -> None:
    cluster = cluster_for(g.organization(), MFA_SUFFIX)
    assert create(binding("tenantry:viewer", group("acme-devs:mfa")), cluster=cluster).allowed
    for subject, needle in [
        (group("acme-devs"), "Group acme-devs cannot be bound in acme-prod"),
        (user("carol@acme.example"), "User carol@acme.example cannot be bound"),
        (sa("acme-prod"), "ServiceAccount default cannot be bound"),
    ]:
        decision = create(binding("tenantry:viewer", subject), cluster=cluster)
        assert not decision.allowed and needle in decision.why and "a Group ending in :mfa" in decision.why
    # dev requires no MFA.
    assert create(binding("tenantry:viewer", user("carol"), namespace="acme-dev"), cluster=cluster).allowed


def test_with_one_mfa_group_only_groups() -> None:
    cluster = cluster_for(g.organization(), MFA_GROUP)
    assert create(binding("tenantry:viewer", group("acme-devs")), cluster=cluster).allowed
    decision = create(binding("tenantry:viewer", user("carol")), cluster=cluster)
    assert not decision.allowed and "Users and ServiceAccounts would be bound" in decision.why


def test_without_the_parameter_no_role_or_binding_is_created() -> None:
    bare = Cluster(namespaces=ACME.namespaces, annotations=ACME.annotations)
    assert not create(ROLE, cluster=bare).allowed
    assert not create(binding(), cluster=bare).allowed


# === NetworkPolicies =========================================================================


def netpol(
    *, ingress: list[Json] | None = None, egress: list[Json] | None = None, name: str = "allow"
) -> Json:
    spec: Json = {"podSelector": {}, "policyTypes": []}
    if ingress is not None:
        spec["ingress"] = ingress
        spec["policyTypes"].append("Ingress")
    if egress is not None:
        spec["egress"] = egress
        spec["policyTypes"].append("Egress")
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "acme-prod"},
        "spec": spec,
    }


def from_(*peers: Json) -> Json:
    return {"from": list(peers)}


def ns_selector(selector: Json) -> Json:
    return {"namespaceSelector": selector}


def block(cidr: str, *excepts: str) -> Json:
    ip: Json = {"cidr": cidr}
    if excepts:
        ip["except"] = list(excepts)
    return {"ipBlock": ip}


PINNED = [
    {"matchLabels": {"tenantry.dev/organization": "acme"}},
    {"matchLabels": {"tenantry.dev/organization": "acme", "team": "payments"}},
    {"matchLabels": {"kubernetes.io/metadata.name": "acme-dev"}},
    {"matchExpressions": [{"key": "tenantry.dev/organization", "operator": "In", "values": ["acme"]}]},
    {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["acme-dev", "acme-prod"]}
        ]
    },
    {
        "matchLabels": {"team": "x"},
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["acme-dev"]}
        ],
    },
]
UNPINNED = [
    {},
    {"matchLabels": {"team": "payments"}},
    {"matchLabels": {"tenantry.dev/organization": "beta"}},
    {"matchLabels": {"kubernetes.io/metadata.name": "beta-prod"}},
    {"matchLabels": {"organization": "acme"}},  # the constitution's label: not protected against spoofing
    {"matchExpressions": [{"key": "tenantry.dev/organization", "operator": "NotIn", "values": ["beta"]}]},
    {"matchExpressions": [{"key": "tenantry.dev/organization", "operator": "Exists"}]},
    {
        "matchExpressions": [
            {"key": "tenantry.dev/organization", "operator": "In", "values": ["acme", "beta"]}
        ]
    },
    {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["acme-dev", "kube-system"]}
        ]
    },
]


@pytest.mark.parametrize("selector", PINNED)
def test_peers_pinned_to_the_organization_are_accepted(selector: Json) -> None:
    assert create(netpol(ingress=[from_(ns_selector(selector))])).allowed
    assert create(netpol(egress=[{"to": [{**ns_selector(selector), "podSelector": {}}]}])).allowed


@pytest.mark.parametrize("selector", UNPINNED)
def test_a_namespace_selector_reaching_outside_the_organization_is_refused(selector: Json) -> None:
    for policy in (
        netpol(ingress=[from_(ns_selector(selector))]),
        netpol(egress=[{"to": [ns_selector(selector)]}]),
    ):
        decision = create(policy)
        assert not decision.allowed
        assert decision.policy == "tenantry-guardrail-network-policies"
        assert "rule namespace-selector" in decision.why and "tenantry.dev/organization: acme" in decision.why


def test_one_unpinned_peer_among_pinned_ones_is_refused() -> None:
    ok = ns_selector(PINNED[0])
    assert not create(netpol(ingress=[from_(ok), from_(ok, ns_selector({}))])).allowed


def test_pod_selectors_stay_in_the_namespace() -> None:
    assert create(netpol(ingress=[from_({"podSelector": {"matchLabels": {"app": "web"}}})])).allowed


@pytest.mark.parametrize(
    "policy",
    [
        netpol(ingress=[{}]),
        netpol(ingress=[{"from": []}]),
        netpol(ingress=[{"ports": [{"port": 8080}]}]),
        netpol(egress=[{}]),
        netpol(egress=[{"ports": [{"port": 443}]}]),
    ],
)
def test_a_rule_without_peers_is_everyone_and_refused(policy: Json) -> None:
    decision = create(policy)
    assert not decision.allowed and "rule peers" in decision.why


@pytest.mark.parametrize(
    "peer",
    [
        block("203.0.113.0/24"),
        block("8.8.8.8/32"),
        block(
            "0.0.0.0/0",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
            "169.254.169.254/32",
            "100.100.100.200/32",
        ),
        block("169.254.0.0/16", "169.254.169.254/32"),  # link-local, the metadata endpoint carved out
    ],
)
def test_ip_blocks_outside_the_cluster_are_accepted(peer: Json) -> None:
    assert create(netpol(egress=[{"to": [peer]}])).allowed, create(netpol(egress=[{"to": [peer]}])).why


@pytest.mark.parametrize(
    ("peer", "shown"),
    [
        (block("10.244.0.0/16"), "10.244.0.0/16"),
        (block("10.0.0.1/8"), "10.0.0.1/8"),  # host bits set: the API server accepts it
        (block("192.168.1.7/32"), "192.168.1.7/32"),
        (block("169.254.169.254/32"), "169.254.169.254/32"),
        (block("169.254.0.0/16"), "169.254.0.0/16"),  # the metadata endpoint inside
        (block("0.0.0.0/0"), "0.0.0.0/0"),
        (block("0.0.0.0/0", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"), "0.0.0.0/0"),
        (block("8.0.0.0/5", "10.0.0.0/9"), "8.0.0.0/5"),  # half of 10.0.0.0/8 carved out
        (block("2001:db8::/32"), "2001:db8::/32"),
        (block("::ffff:10.0.0.0/104"), "::ffff:10.0.0.0/104"),
    ],
)
def test_ip_blocks_covering_pods_services_or_metadata_are_refused(peer: Json, shown: str) -> None:
    for policy in (netpol(egress=[{"to": [peer]}]), netpol(ingress=[from_(peer)])):
        decision = create(policy)
        assert not decision.allowed
        assert f"ipBlock {shown}" in decision.why and "rule ip-block" in decision.why


def test_an_exception_of_the_organization_opens_its_range_until_it_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    org = _org(
        ipBlockExceptions=[
            {"cidr": "10.20.0.0/16", "reason": "legacy VMs in the pod range", "expires": "2026-11-26"},
            {"cidr": "2001:db8::/32", "reason": "the office over IPv6"},
        ]
    )
    cluster = cluster_for(org)
    for cidr in ("10.20.0.0/16", "10.20.5.0/24", "2001:db8::/32"):
        assert create(netpol(egress=[{"to": [block(cidr)]}]), cluster=cluster).allowed, cidr
    for cidr in ("10.20.0.0/15", "10.21.0.0/16", "2001:db8::/31", "2001:db8:1::/48"):
        assert not create(netpol(egress=[{"to": [block(cidr)]}]), cluster=cluster).allowed, cidr
    # Expired the next day: the operator renders the parameter without it.
    monkeypatch.setattr(g, "TODAY", g.TODAY.replace(day=27))
    later = cluster_for(org)
    assert not create(netpol(egress=[{"to": [block("10.20.5.0/24")]}]), cluster=later).allowed


def test_narrower_cluster_ranges_free_the_rest_of_the_private_space() -> None:
    policy = _policy(network={"podCidrs": ["10.244.0.0/16"], "serviceCidrs": ["10.96.0.0/12"]})
    cluster = cluster_for(g.organization(), policy)
    assert create(netpol(egress=[{"to": [block("192.168.1.0/24")]}]), cluster=cluster).allowed
    assert not create(netpol(egress=[{"to": [block("10.244.3.0/24")]}]), cluster=cluster).allowed
    assert not create(netpol(egress=[{"to": [block("10.100.0.0/16")]}]), cluster=cluster).allowed


def _reference_refuses(cidr: str, excepts: list[str], protected: list[str]) -> bool:
    """ipaddress' answer to "does this IPv4 ipBlock reach a protected range?"."""
    net = ipaddress.ip_network(cidr, strict=False)
    carved = [ipaddress.ip_network(e, strict=False) for e in excepts]
    for text in protected:
        r = ipaddress.ip_network(text)
        if r.version != 4 or not net.overlaps(r):
            continue
        inner = net if net.prefixlen >= r.prefixlen else r
        if not any(inner.subnet_of(e) for e in carved):  # type: ignore[arg-type]
            return True
    return False


def test_the_ipv4_arithmetic_agrees_with_pythons_ipaddress() -> None:
    """The guardrail parses IPv4 by hand (no CIDR library before Kubernetes 1.31): 150 random
    blocks, with and without excepts, decided as ipaddress decides them."""
    rng = random.Random(22)
    protected = ACME.params["acme-prod"]["data"]["protectedCidrs"].split(",")
    interesting = [10, 100, 169, 172, 192, 203, 8, 0]
    for _ in range(150):
        prefix = rng.choice([0, 1, 4, 5, 7, 8, 9, 10, 12, 16, 20, 24, 31, 32])
        first = rng.choice(interesting) if rng.random() < 0.8 else rng.randrange(256)
        address = f"{first}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"
        net = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
        excepts = []
        for _ in range(rng.choice([0, 0, 1, 3])):
            longer = rng.randint(prefix, 32)
            subnets = list(net.subnets(new_prefix=longer)) if longer - prefix <= 8 else [net]
            excepts.append(str(rng.choice(subnets)))
        cidr = f"{address}/{prefix}"
        decision = create(netpol(egress=[{"to": [block(cidr, *excepts)]}]))
        assert decision.allowed != _reference_refuses(cidr, excepts, protected), (cidr, excepts, decision.why)


def test_network_policy_names_starting_with_tenantry_are_the_operators() -> None:
    decision = create(netpol(ingress=[from_({"podSelector": {}})], name="tenantry-allow-everything"))
    assert not decision.allowed and "rule reserved-name" in decision.why


def test_the_operators_own_network_policies_are_not_judged_here() -> None:
    ours = netpol(
        ingress=[from_(ns_selector({"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}))]
    )
    ours["metadata"].update(
        name="tenantry-allow-ingress-controllers", labels={"app.kubernetes.io/managed-by": "tenantry"}
    )
    assert create(ours, who=OPERATOR).allowed


def test_tenants_cannot_dress_their_objects_as_the_operators() -> None:
    """The operator finds its objects by label: a tenant's Role, RoleBinding or NetworkPolicy
    with our labels would be adopted, healed or pruned. tenantry-guardrail-labels refuses them."""
    for body in (ROLE, binding(), netpol(ingress=[from_({"podSelector": {}})])):
        for labels in ({"app.kubernetes.io/managed-by": "tenantry"}, {"tenantry.dev/organization": "acme"}):
            dressed = copy.deepcopy(body)
            dressed["metadata"]["labels"] = labels
            decision = create(dressed, who=TENANT)
            assert not decision.allowed and decision.policy in (
                "tenantry-guardrail-labels",
                "tenantry-guardrail-rbac",
                "tenantry-guardrail-network-policies",
            ), decision
