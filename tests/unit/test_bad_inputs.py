"""Every kind of bad input gets a precise error: the field path and what is allowed.

Each case starts from a valid Organization, breaks one thing, and names the path and the
words the user must see. Both layers are exercised: the model (what the CRD schema and CEL
also reject at the API server) and the policy checks (what only the operator/CLI can see).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tenantry.api.documents import parse_object
from tenantry.api.organization import Organization
from tenantry.api.policy import builtin_default_policy
from tenantry.api.problems import Problem
from tenantry.render.checks import check_organization, errors_only
from tests.unit.helpers import TODAY

BASE: dict[str, Any] = {
    "apiVersion": "tenantry.dev/v1alpha1",
    "kind": "Organization",
    "metadata": {"name": "acme"},
    "spec": {
        "environments": ["prod", "dev"],
        "members": {"admins": [{"kind": "Group", "name": "acme-admins"}]},
        "network": {"egress": [], "allowFrom": []},
    },
}


def problems_for(doc: dict[str, Any]) -> list[Problem]:
    parsed = parse_object(doc)
    if isinstance(parsed, list):
        return parsed
    assert isinstance(parsed, Organization)
    return errors_only(check_organization(parsed, builtin_default_policy(), TODAY))


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(doc: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return apply


def _del(path: str) -> Callable[[dict[str, Any]], None]:
    def apply(doc: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node = doc
        for part in parents:
            node = node[part]
        del node[last]

    return apply


APPROVAL = {"approvedBy": "jane@platform.example", "justification": "peak"}
CASES: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    (
        "uppercase org name",
        _set("metadata/name", "ACME"),
        "metadata.name",
        "must be lowercase letters, digits and '-', starting and ending with a letter or digit (got 'ACME')",
    ),
    (
        "underscore in org name",
        _set("metadata/name", "ac_me"),
        "metadata.name",
        "must be lowercase letters, digits and '-', starting and ending with a letter or digit (got 'ac_me')",
    ),
    ("org name over 63 chars", _set("metadata/name", "a" * 64), "metadata.name", "at most 63 characters"),
    (
        "org-env over 63 chars",
        _set("metadata/name", "a" * 60),
        "spec.environments[0]",
        "would be 65 characters; <organization>-<environment> must be at most 63",
    ),
    (
        "environment not in policy",
        _set("spec/environments", ["prod", "qa"]),
        "spec.environments[1]",
        "'qa' is not an environment of policy 'default' (allowed: prod, staging, dev)",
    ),
    (
        "uppercase environment",
        _set("spec/environments", ["Prod"]),
        "spec.environments[0]",
        "must be lowercase letters, digits and '-', starting and ending with a letter or digit (got 'Prod')",
    ),
    (
        "duplicate environment",
        _set("spec/environments", ["prod", "prod"]),
        "spec.environments",
        "duplicate entries: prod",
    ),
    ("no environments", _set("spec/environments", []), "spec.environments", "at least 1 item"),
    (
        "kube-system via org kube",
        lambda d: (_set("metadata/name", "kube")(d), _set("spec/environments", ["system"])(d)),
        "spec.environments[0]",
        "reserved prefix 'kube-'",
    ),
    (
        "openshift prefix",
        _set("metadata/name", "openshift"),
        "spec.environments[0]",
        "reserved prefix 'openshift-'",
    ),
    (
        "operator's own prefix",
        _set("metadata/name", "tenantry"),
        "spec.environments[0]",
        "reserved prefix 'tenantry-'",
    ),
    (
        "negative quantity",
        _set("spec/quota", {"prod": {"requests.cpu": "-1"}}),
        'spec.quota.prod["requests.cpu"]',
        "is negative",
    ),
    (
        "malformed quantity",
        _set("spec/quota", {"prod": {"limits.memory": "lots"}}),
        'spec.quota.prod["limits.memory"]',
        "not a Kubernetes quantity",
    ),
    (
        "unknown quota resource",
        _set("spec/quota", {"prod": {"gpus": "1"}}),
        "spec.quota.prod",
        "not a quota resource Kubernetes accepts: gpus; allowed: a standard name (requests.cpu",
    ),
    (
        "quota for unlisted environment",
        _set("spec/quota", {"staging": {"pods": "5"}}),
        "spec.quota",
        "quota names environment(s) staging that are not in spec.environments",
    ),
    (
        "raise without approval",
        _set("spec/quota", {"prod": {"requests.cpu": "64"}}),
        'spec.quota.prod["requests.cpu"]',
        "64 is above the policy default 8; raising a quota requires spec.quotaApproval",
    ),
    (
        "raise of an unset resource without approval",
        _set("spec/quota", {"prod": {"count/jobs.batch": "10"}}),
        'spec.quota.prod["count/jobs.batch"]',
        "unlimited by the policy",
    ),
    (
        "approval with blank justification",
        _set("spec/quotaApproval", {"approvedBy": "jane", "justification": "  "}),
        "spec.quotaApproval",
        "justification must say why",
    ),
    (
        "approval without approver",
        _set("spec/quotaApproval", {"justification": "peak"}),
        "spec.quotaApproval.approvedBy",
        "required field is missing",
    ),
    (
        "requests above limits",
        lambda d: (
            _set("spec/quota", {"prod": {"requests.cpu": "32"}})(d),
            _set("spec/quotaApproval", APPROVAL)(d),
        ),
        "spec.quota.prod",
        "requests.cpu (32) would exceed limits.cpu (16)",
    ),
    (
        "egress without reason",
        _set("spec/network/egress", [{"cidr": "10.0.0.0/8"}]),
        "spec.network.egress[0].reason",
        "required field is missing",
    ),
    (
        "egress with blank reason",
        _set("spec/network/egress", [{"cidr": "10.0.0.0/8", "reason": " "}]),
        "spec.network.egress[0]",
        "reason must explain",
    ),
    (
        "egress with cidr and organization",
        _set("spec/network/egress", [{"cidr": "10.0.0.0/8", "organization": "beta", "reason": "r"}]),
        "spec.network.egress[0]",
        "exactly one of cidr or organization",
    ),
    (
        "egress with neither",
        _set("spec/network/egress", [{"reason": "r"}]),
        "spec.network.egress[0]",
        "exactly one of cidr or organization",
    ),
    (
        "prefix length out of range",
        _set("spec/network/egress", [{"cidr": "10.0.0.0/33", "reason": "r"}]),
        "spec.network.egress[0].cidr",
        "is not a CIDR",
    ),
    (
        "host bits set",
        _set("spec/network/egress", [{"cidr": "10.0.0.1/16", "reason": "r"}]),
        "spec.network.egress[0].cidr",
        "has host bits set",
    ),
    (
        "IPv4-mapped IPv6 cidr",
        _set("spec/network/egress", [{"cidr": "::ffff:10.0.0.0/104", "reason": "r"}]),
        "spec.network.egress[0].cidr",
        "IPv4-mapped IPv6",
    ),
    (
        "leading zero in a cidr",
        _set("spec/network/egress", [{"cidr": "010.0.0.0/16", "reason": "r"}]),
        "spec.network.egress[0].cidr",
        "is not a CIDR",
    ),
    (
        "except of another address family",
        _set("spec/network/egress", [{"cidr": "10.0.0.0/16", "except": ["fd00::/64"], "reason": "r"}]),
        "spec.network.egress[0]",
        "except fd00::/64 is not inside cidr 10.0.0.0/16",
    ),
    (
        "egress to cloud metadata over NAT64",
        _set("spec/network/egress", [{"cidr": "64:ff9b::a9fe:a9fe/128", "reason": "r"}]),
        "spec.network.egress[0].cidr",
        "denies for all tenants",
    ),
    (
        "exception from an environment the policy lacks",
        _set("spec/network/allowFrom", [{"organization": "beta", "environments": ["qa"], "reason": "r"}]),
        "spec.network.allowFrom[0].environments[0]",
        "'qa' is not an environment of policy 'default'",
    ),
    (
        "egress to an environment the policy lacks",
        _set("spec/network/egress", [{"organization": "beta", "environments": ["qa"], "reason": "r"}]),
        "spec.network.egress[0].environments[0]",
        "'qa' is not an environment of policy 'default'",
    ),
    (
        "except outside cidr",
        _set("spec/network/egress", [{"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"], "reason": "r"}]),
        "spec.network.egress[0]",
        "except 10.1.0.0/24 is not inside cidr 10.0.0.0/16",
    ),
    (
        "egress to cloud metadata",
        _set("spec/network/egress", [{"cidr": "169.254.169.254/32", "reason": "r"}]),
        "spec.network.egress[0].cidr",
        "denies for all tenants",
    ),
    (
        "port out of range",
        _set("spec/network/egress", [{"cidr": "10.0.0.0/8", "ports": [{"port": 70000}], "reason": "r"}]),
        "spec.network.egress[0].ports[0].port",
        "less than or equal to 65535",
    ),
    (
        "unknown protocol",
        _set(
            "spec/network/egress",
            [{"cidr": "10.0.0.0/8", "ports": [{"port": 1, "protocol": "ICMP"}], "reason": "r"}],
        ),
        "spec.network.egress[0].ports[0].protocol",
        "'TCP', 'UDP' or 'SCTP'",
    ),
    (
        "exception without reason",
        _set("spec/network/allowFrom", [{"organization": "beta"}]),
        "spec.network.allowFrom[0].reason",
        "required field is missing",
    ),
    (
        "exception with bad date",
        _set("spec/network/allowFrom", [{"organization": "beta", "reason": "r", "expires": "2027-13-01"}]),
        "spec.network.allowFrom[0].expires",
        "must be a date YYYY-MM-DD (got the string '2027-13-01': month must be in 1..12)",
    ),
    (
        "exception from bad org name",
        _set("spec/network/allowFrom", [{"organization": "Beta!", "reason": "r"}]),
        "spec.network.allowFrom[0].organization",
        "must be lowercase letters, digits and '-', starting and ending with a letter or digit (got 'Beta!')",
    ),
    (
        "cluster-admin group member",
        _set("spec/members/admins", [{"kind": "Group", "name": "system:masters"}]),
        "spec.members.admins[0]",
        "system:masters is cluster-admin",
    ),
    (
        "system user member",
        _set("spec/members/viewers", [{"kind": "User", "name": "system:admin"}]),
        "spec.members.viewers[0]",
        "names starting with 'system:'",
    ),
    (
        "service account without namespace",
        _set("spec/members/developers", [{"kind": "ServiceAccount", "name": "ci"}]),
        "spec.members.developers[0]",
        "namespace is required when kind is ServiceAccount",
    ),
    (
        "kube-system service account",
        _set(
            "spec/members/admins", [{"kind": "ServiceAccount", "name": "default", "namespace": "kube-system"}]
        ),
        "spec.members.admins[0]",
        "system service accounts cannot be tenant members",
    ),
    (
        "namespace on a group",
        _set("spec/members/admins", [{"kind": "Group", "name": "g", "namespace": "x"}]),
        "spec.members.admins[0]",
        "only allowed when kind is ServiceAccount",
    ),
    (
        "unknown subject kind",
        _set("spec/members/admins", [{"kind": "Role", "name": "admin"}]),
        "spec.members.admins[0].kind",
        "'User', 'Group' or 'ServiceAccount'",
    ),
    (
        "managed-by not allowed",
        _set("spec/managedBy", "helm"),
        "spec.managedBy",
        "'helm' is not allowed (allowed: tenantry, argocd, flux, terraform, kubectl)",
    ),
    (
        "bad deletion policy",
        _set("spec/deletionPolicy", "Orphan"),
        "spec.deletionPolicy",
        "'Retain' or 'Delete'",
    ),
    ("misspelt field", _set("spec/enviroments", ["prod"]), "spec.enviroments", "unknown field"),
    (
        "egress to no environment",
        _set("spec/network/egress", [{"organization": "beta", "environments": [], "reason": "r"}]),
        "spec.network.egress[0].environments",
        "an empty list would select no namespace",
    ),
    (
        "exception from no environment",
        _set("spec/network/allowFrom", [{"organization": "beta", "environments": [], "reason": "r"}]),
        "spec.network.allowFrom[0].environments",
        "an empty list would select no namespace",
    ),
    # Strict types, as the API server's schema: no coercion between strings, numbers, booleans.
    (
        "boolean port",
        _set("spec/network/egress", [{"cidr": "10.0.0.0/8", "ports": [{"port": True}], "reason": "r"}]),
        "spec.network.egress[0].ports[0].port",
        "must be an integer (got the boolean true)",
    ),
    (
        "string port",
        _set("spec/network/egress", [{"cidr": "10.0.0.0/8", "ports": [{"port": "80"}], "reason": "r"}]),
        "spec.network.egress[0].ports[0].port",
        "must be an integer (got the string '80')",
    ),
    (
        "fractional port",
        _set("spec/network/egress", [{"cidr": "10.0.0.0/8", "ports": [{"port": 80.5}], "reason": "r"}]),
        "spec.network.egress[0].ports[0].port",
        "must be an integer (got the number 80.5)",
    ),
    (
        "number for a string",
        _set("spec/network/egress", [{"cidr": "10.0.0.0/8", "reason": 5}]),
        "spec.network.egress[0].reason",
        "must be a string (got the number 5)",
    ),
    (
        "number for a name",
        _set("metadata/name", 123),
        "metadata.name",
        "must be a string (got the number 123)",
    ),
    (
        "exception expiring on a number",
        _set("spec/network/allowFrom", [{"organization": "beta", "reason": "r", "expires": 20270630}]),
        "spec.network.allowFrom[0].expires",
        "must be a date YYYY-MM-DD (got the number 20270630; quote a date)",
    ),
    (
        "null members",
        _set("spec/members", None),
        "spec.members",
        "must be a mapping (got null)",
    ),
    (
        "fractional pod count",
        _set("spec/quota", {"prod": {"pods": 0.5}}),
        "spec.quota.prod.pods",
        "0.5 is a number with a fraction, which the API server refuses here",
    ),
    (
        "milli pod count",
        _set("spec/quota", {"prod": {"pods": "100m"}}),
        "spec.quota.prod",
        "pods: '100m': object counts must be whole numbers",
    ),
    (
        "quantity with a space",
        _set("spec/quota", {"prod": {"requests.cpu": " 4"}}),
        'spec.quota.prod["requests.cpu"]',
        "' 4' is not a Kubernetes quantity",
    ),
    (
        "negative zero",
        _set("spec/quota", {"prod": {"requests.cpu": "-0"}}),
        'spec.quota.prod["requests.cpu"]',
        "'-0' is negative",
    ),
    (
        "quantity past any exponent",
        _set("spec/quota", {"prod": {"requests.cpu": "1e99999999"}}),
        'spec.quota.prod["requests.cpu"]',
        "is too large or too small to be a quantity",
    ),
    ("missing spec", _del("spec"), "spec", "required field is missing"),
    ("wrong apiVersion", _set("apiVersion", "tenantry.dev/v1"), "apiVersion", "use tenantry.dev/v1alpha1"),
]


@pytest.mark.parametrize(("mutate", "path", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_a_precise_error(
    mutate: Callable[[dict[str, Any]], None], path: str, fragment: str
) -> None:
    doc = copy.deepcopy(BASE)
    mutate(doc)
    problems = problems_for(doc)
    assert problems, "expected the input to be refused"
    matching = [p for p in problems if p.path == path and fragment in p.message]
    assert matching, f"wanted {path!r} ~ {fragment!r}, got {[str(p) for p in problems]}"


def test_there_are_at_least_thirty_distinct_cases() -> None:
    assert len({c[0] for c in CASES}) >= 30


def test_the_base_document_is_valid() -> None:
    assert problems_for(copy.deepcopy(BASE)) == []


def test_all_problems_are_reported_at_once() -> None:
    doc = copy.deepcopy(BASE)
    doc["spec"]["environments"] = ["prod", "qa"]
    doc["spec"]["managedBy"] = "helm"
    doc["spec"]["quota"] = {"prod": {"pods": "999"}}
    paths = {p.path for p in problems_for(doc)}
    assert {"spec.environments[1]", "spec.managedBy", 'spec.quota.prod["pods"]'} <= paths
