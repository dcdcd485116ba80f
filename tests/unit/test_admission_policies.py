"""The guardrail ValidatingAdmissionPolicies in manifests/admission/, evaluated with cel-python.

`admit()` replays what the API server does with a policy, its binding and a request
(k8s.io/apiserver .../policy/validating/dispatcher.go and validator.go, .../cel/activation.go,
.../webhook/matchconditions/matcher.go):

1. matchConstraints: resource rules (a subresource such as `resourcequotas/status` matches only
   if listed) and the objectSelector, which matches when the old OR the new object matches;
2. params from the binding's paramRef, resolved *before* any expression runs: none found means
   parameterNotFoundAction decides (`Deny` denies the request outright, whoever sends it);
3. per param: matchConditions, which see object, oldObject, request, params, namespaceObject
   and authorizer but **no** `variables` (any false: skipped; else any error: denied under
   failurePolicy Fail); then the validations, with `variables` evaluated lazily on first
   reference and memoised (false: denied with the messageExpression, which falls back to
   `message` when it errors or gives no usable string; an error: denied under Fail).

Where the API server would deny because an expression *errored*, `admit()` raises
EvaluationError instead of returning a decision: that is a bug in a policy, never a verdict. cel-python
differs from cel-go in one place these policies depend on, `has()`: cel-python answers false when
anything inside the argument fails, cel-go evaluates the operand and fails if it cannot (has(a.b.c)
with `a` null is "no such key: b"). `_CEL` evaluates has() the cel-go way. Whether each
expression compiles where the API server compiles it is tests/unit/test_admission_compile.py.

The sample objects are what the renderer produces for examples/organization-acme.yaml, so the
labels under test are the labels the operator writes.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import celpy
import kubernetes_validate
import pytest
import yaml
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError

from tenantry.api.organization import Organization
from tenantry.api.policy import TenancyPolicy
from tenantry.render import labels as lbl
from tests.conftest import EXAMPLES, ROOT, load_yaml, minimal_org
from tests.unit.admission_cel import EvaluationError, LazyVariables
from tests.unit.admission_cel import condition as _condition
from tests.unit.admission_cel import conditions_hold as _all_conditions_hold
from tests.unit.admission_cel import evaluate as _evaluate
from tests.unit.helpers import find, render

Json = dict[str, Any]

ADMISSION = ROOT / "manifests" / "admission"
PROTECT_OBJECTS = "tenantry-protect-managed-objects"
PROTECT_NAMESPACES = "tenantry-protect-namespace-labels"
QUOTA_APPROVAL = "tenantry-quota-approval"


# --- the manifests -------------------------------------------------------------------------


def _manifests() -> list[Json]:
    docs: list[Json] = []
    for path in sorted(ADMISSION.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


MANIFESTS = _manifests()
POLICIES = {d["metadata"]["name"]: d for d in MANIFESTS if d["kind"] == "ValidatingAdmissionPolicy"}
BINDINGS = {d["spec"]["policyName"]: d for d in MANIFESTS if d["kind"] == "ValidatingAdmissionPolicyBinding"}


def _expressions(policy: Json) -> list[tuple[str, str]]:
    spec = policy["spec"]
    found = [(f"variables.{v['name']}", v["expression"]) for v in spec.get("variables", [])]
    found += [(f"matchConditions.{m['name']}", m["expression"]) for m in spec.get("matchConditions", [])]
    for i, validation in enumerate(spec["validations"]):
        found.append((f"validations[{i}]", validation["expression"]))
        if "messageExpression" in validation:
            found.append((f"validations[{i}].messageExpression", validation["messageExpression"]))
    return found


# --- a small replica of the API server's dispatch ------------------------------------------


@dataclass(frozen=True)
class Call:
    """One admission request: the AdmissionRequest and the two objects CEL sees beside it."""

    request: Json
    object: Json | None
    old_object: Json | None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    why: str  # "not matched", "no params", "skipped", "admitted", or the denial message
    fell_back: bool = False  # the messageExpression failed: `why` is the static `message`


def _labels(obj: Json | None) -> dict[str, str]:
    return dict((obj or {}).get("metadata", {}).get("labels") or {})


def _matches_constraints(policy: Json, call: Call) -> bool:
    constraints = policy["spec"]["matchConstraints"]
    assert set(constraints) <= {"resourceRules", "objectSelector"}, "replica does not model this"
    req = call.request
    resource = req["resource"]["resource"]
    if req.get("subResource"):
        resource += "/" + req["subResource"]
    rule_matches = any(
        req["operation"] in rule["operations"]
        and req["resource"]["group"] in rule["apiGroups"]
        and req["resource"]["version"] in rule["apiVersions"]
        and resource in rule["resources"]
        for rule in constraints["resourceRules"]
    )
    selector = constraints.get("objectSelector", {})
    assert set(selector) <= {"matchLabels"}, "replica does not model this"
    wanted = selector.get("matchLabels", {})

    def selected(obj: Json | None) -> bool:
        return obj is not None and all(_labels(obj).get(k) == v for k, v in wanted.items())

    return rule_matches and (not wanted or selected(call.object) or selected(call.old_object))


def _params(policy_name: str, cluster: list[Json]) -> list[Json] | Decision:
    ref = BINDINGS[policy_name]["spec"]["paramRef"]
    if "name" in ref:
        found = [p for p in cluster if p["metadata"]["name"] == ref["name"]]
    else:
        assert ref["selector"] == {}, "replica models the match-everything selector only"
        found = list(cluster)
    if found:
        return found
    if ref["parameterNotFoundAction"] == "Deny":
        return Decision(
            False,
            "failed to configure binding: no params found for policy binding "
            "with `Deny` parameterNotFoundAction",
        )
    return Decision(True, "no params")


def _activation(call: Call, param: Json) -> dict[str, Any]:
    """What matchConditions see (compile.go: no `variables` for them)."""
    return {
        "request": json_to_cel(call.request),
        "object": json_to_cel(call.object),
        "oldObject": json_to_cel(call.old_object),
        "params": json_to_cel(param),
        "namespaceObject": json_to_cel(None),  # none of these policies reads it
    }


def _with_variables(policy: Json, call: Call, param: Json) -> dict[str, Any]:
    """What validations and messageExpressions see: the same plus the lazy `variables`."""
    activation = _activation(call, param)
    expressions = {v["name"]: v["expression"] for v in policy["spec"].get("variables", [])}
    activation["variables"] = LazyVariables(expressions, dict(activation))
    activation["variables"]._activation["variables"] = activation["variables"]
    return activation


def _matches(policy: Json, call: Call, param: Json) -> bool:
    """matcher.go: any condition false means no match, even if another errored; otherwise an
    error denies (failurePolicy Fail)."""
    return _all_conditions_hold(policy["spec"].get("matchConditions", []), _activation(call, param))


def _message(validation: Json, activation: Mapping[str, Any]) -> tuple[str, bool]:
    """validator.go: the messageExpression's string, trimmed; `message` when it errors, is not a
    string, is empty, longer than 5 KiB or has a line break. Returns (message, fell back)."""
    expression = validation.get("messageExpression")
    if expression:
        try:
            result = _evaluate(expression, activation)
        except EvaluationError:
            result = None
        if isinstance(result, str):  # celtypes.StringType, or str from some of cel-python's operators
            text = result.strip()
            if text and "\n" not in text and len(text) <= 5 * 1024:
                return text, False
    fallback = (
        validation.get("message") or ""
    ).strip() or f"failed expression: {validation['expression'].strip()}"
    return fallback, True


def admit(policy_name: str, call: Call, cluster: list[Json]) -> Decision:
    """Would the API server admit `call` under this policy and its binding, given the
    TenancyPolicies in `cluster`? Raises EvaluationError where it would deny for an error."""
    policy = POLICIES[policy_name]
    if not _matches_constraints(policy, call):
        return Decision(True, "not matched")
    params = _params(policy_name, cluster)
    if isinstance(params, Decision):
        return params
    why = "skipped"
    for param in params:
        if not _matches(policy, call, param):
            continue
        why = "admitted"
        activation = _with_variables(policy, call, param)
        for validation in policy["spec"]["validations"]:
            if not _condition(validation["expression"], activation):
                message, fell_back = _message(validation, activation)
                return Decision(False, message, fell_back)
    return Decision(True, why)


def conditions_hold(policy_name: str, call: Call, param: Json) -> bool:
    """The policy's matchConditions alone, without the objectSelector in front of them."""
    return _matches(POLICIES[policy_name], call, param)


# --- who asks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Who:
    username: str
    groups: tuple[str, ...]


def user(name: str, *groups: str) -> Who:
    return Who(name, (*groups, "system:authenticated"))


def service_account(namespace: str, name: str) -> Who:
    return Who(
        f"system:serviceaccount:{namespace}:{name}",
        ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"),
    )


TENANT = user("alice@acme.example", "acme-admins")
OPERATOR = service_account("tenantry-system", "tenantry")
PLATFORM_BY_GROUP = user("bob@platform.example", "platform-team")
PLATFORM_BY_NAME = user("pat@platform.example")
PLATFORM_BOT = service_account("platform", "platform-bot")
APPROVER = user("finops@platform.example")
ARGOCD = service_account("argocd", "argocd-application-controller")
FLUX = service_account("flux-system", "kustomize-controller")
NAMESPACE_CONTROLLER = service_account("kube-system", "namespace-controller")
GARBAGE_COLLECTOR = service_account("kube-system", "generic-garbage-collector")
CONTROLLER_MANAGER = Who("system:kube-controller-manager", ("system:authenticated",))
QUOTA_CONTROLLER = service_account("kube-system", "resourcequota-controller")


def tenancy_policy(
    name: str = "default", admins: list[Json] | None = None, approvers: list[Json] | None = None
) -> Json:
    rbac: Json = {}
    if admins is not None:
        rbac["platformAdmins"] = admins
    if approvers is not None:
        rbac["quotaApprovers"] = approvers
    doc: Json = {
        "apiVersion": "tenantry.dev/v1alpha1",
        "kind": "TenancyPolicy",
        "metadata": {"name": name, "uid": f"uid-{name}"},
        "spec": {"rbac": rbac} if rbac else {},
    }
    TenancyPolicy.model_validate(doc)  # the sample is a TenancyPolicy the CRD would accept
    return doc


DEFAULT = tenancy_policy(
    admins=[
        {"kind": "Group", "name": "platform-team"},
        {"kind": "User", "name": "pat@platform.example"},
        {"kind": "ServiceAccount", "name": "platform-bot", "namespace": "platform"},
    ],
    approvers=[
        {"kind": "User", "name": "finops@platform.example"},
        # GitOps: the controller that applies the reviewed Organization files.
        {"kind": "ServiceAccount", "name": "argocd-application-controller", "namespace": "argocd"},
    ],
)
CLUSTER = [DEFAULT]


# --- what is asked -------------------------------------------------------------------------

RESOURCES = {
    "Namespace": ("", "v1", "namespaces"),
    "ResourceQuota": ("", "v1", "resourcequotas"),
    "LimitRange": ("", "v1", "limitranges"),
    "ConfigMap": ("", "v1", "configmaps"),
    "NetworkPolicy": ("networking.k8s.io", "v1", "networkpolicies"),
    "RoleBinding": ("rbac.authorization.k8s.io", "v1", "rolebindings"),
    "Organization": ("tenantry.dev", "v1alpha1", "organizations"),
}


def call(
    operation: str, who: Who, new: Json | None = None, old: Json | None = None, sub_resource: str = ""
) -> Call:
    body = new if new is not None else old
    assert body is not None
    kind = body["kind"]
    group, version, resource = RESOURCES[kind]
    meta = body["metadata"]
    request: Json = {
        "uid": "0d5f6c1e-0000-4000-8000-000000000000",
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource},
        "requestKind": {"group": group, "version": version, "kind": kind},
        "requestResource": {"group": group, "version": version, "resource": resource},
        "name": meta["name"],
        "operation": operation,
        "userInfo": {"username": who.username, "groups": list(who.groups)},
        "dryRun": False,
    }
    if sub_resource:
        request["subResource"] = request["requestSubResource"] = sub_resource
    # A Namespace's request carries its own name as namespace (what the API server does).
    namespace = meta["name"] if kind == "Namespace" else meta.get("namespace")
    if namespace:
        request["namespace"] = namespace
    return Call(request, new, old)


ACME = load_yaml(EXAMPLES / "organization-acme.yaml")
RENDERED = render(ACME).objects


def rendered(kind: str, name: str, namespace: str | None = "acme-prod") -> Json:
    return copy.deepcopy(find(RENDERED, kind, name, None if kind == "Namespace" else namespace))


def managed(kind: str) -> Json:
    names = {
        "ResourceQuota": "tenantry-quota",
        "LimitRange": "tenantry-limits",
        "ConfigMap": "tenantry-guardrails",
        "NetworkPolicy": "tenantry-default-deny",
        "RoleBinding": "tenantry:organization-admins",
    }
    return rendered(kind, names[kind])


def changed(obj: Json, labels: Mapping[str, str | None] | None = None, **meta: Any) -> Json:
    """A copy of `obj` with labels set (None removes one) and metadata fields replaced."""
    out = copy.deepcopy(obj)
    current = out["metadata"].setdefault("labels", {})
    for key, value in (labels or {}).items():
        if value is None:
            current.pop(key, None)
        else:
            current[key] = value
    out["metadata"].update(meta)
    return out


def spec_changed(obj: Json, **spec: Any) -> Json:
    out = copy.deepcopy(obj)
    for key, value in spec.items():
        if value is None:
            out["spec"].pop(key, None)
        else:
            out["spec"][key] = value
    return out


GUARDED_KINDS = ["ResourceQuota", "LimitRange", "ConfigMap", "NetworkPolicy", "RoleBinding"]
DELETED_AT = "2026-11-26T10:00:00Z"


# === the manifests themselves ==============================================================


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = load_yaml(ADMISSION / "kustomization.yaml")
    files = sorted(p.name for p in ADMISSION.glob("*.yaml") if p.name != "kustomization.yaml")
    # The guardrails (Kubernetes >= 1.30) are included; the placement mutation (>= 1.36) is not.
    assert sorted(kustomization["resources"]) == sorted([*files, "access", "guardrails"])
    for directory in ("access", "guardrails", "placement"):
        inner = load_yaml(ADMISSION / directory / "kustomization.yaml")
        listed = sorted(
            p.name for p in (ADMISSION / directory).glob("*.yaml") if p.name != "kustomization.yaml"
        )
        assert sorted(inner["resources"]) == listed, directory


def test_there_are_three_policies_each_with_a_denying_binding() -> None:
    assert set(POLICIES) == {PROTECT_OBJECTS, PROTECT_NAMESPACES, QUOTA_APPROVAL}
    assert set(BINDINGS) == set(POLICIES)
    for name, binding in BINDINGS.items():
        assert binding["spec"]["validationActions"] == ["Deny"], name
        assert POLICIES[name]["spec"]["failurePolicy"] == "Fail", name
        assert POLICIES[name]["spec"]["paramKind"] == {
            "apiVersion": "tenantry.dev/v1alpha1",
            "kind": "TenancyPolicy",
        }


@pytest.mark.parametrize("doc", MANIFESTS, ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_manifests_are_valid_admissionregistration_v1(doc: Json) -> None:
    assert doc["apiVersion"] == "admissionregistration.k8s.io/v1"
    kubernetes_validate.validate(doc, "1.30", strict=True)  # v1 is GA since Kubernetes 1.30


def test_parameters_the_documented_way() -> None:
    """docs/admission.md, "Parameters and what happens without them"."""
    for name in (PROTECT_OBJECTS, PROTECT_NAMESPACES):
        assert BINDINGS[name]["spec"]["paramRef"] == {"name": "default", "parameterNotFoundAction": "Deny"}
    assert BINDINGS[QUOTA_APPROVAL]["spec"]["paramRef"] == {
        "selector": {},
        "parameterNotFoundAction": "Allow",
    }


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_expression_compiles(name: str) -> None:
    for where, expression in _expressions(POLICIES[name]):
        try:
            celpy.Environment().compile(expression)
        except CELParseError as exc:
            pytest.fail(f"{name} {where}: {exc}")


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_validation_says_why(name: str) -> None:
    for validation in POLICIES[name]["spec"]["validations"]:
        assert validation["reason"] == "Forbidden"
        assert validation["message"].strip() and validation["messageExpression"].strip()


@pytest.mark.parametrize("name", [PROTECT_OBJECTS, PROTECT_NAMESPACES])
def test_the_operator_identity_is_the_deployed_service_account(name: str) -> None:
    base = ROOT / "manifests" / "base"
    account = load_yaml(base / "serviceaccount.yaml")["metadata"]
    namespace = load_yaml(base / "kustomization.yaml")["namespace"]
    expected = f"'system:serviceaccount:{namespace}:{account['name']}'"
    variables = {v["name"]: v["expression"] for v in POLICIES[name]["spec"]["variables"]}
    assert variables["operator"] == expected


# === tenantry-protect-managed-objects ======================================================


@pytest.mark.parametrize("kind", GUARDED_KINDS)
def test_a_tenant_cannot_change_a_managed_object(kind: str) -> None:
    old = managed(kind)
    new = changed(old, annotations={"edited": "by hand"})
    decision = admit(PROTECT_OBJECTS, call("UPDATE", TENANT, new, old), CLUSTER)
    assert not decision.allowed
    name = old["metadata"]["name"]
    assert f"{kind} acme-prod/{name} is managed by Tenantry" in decision.why
    assert "organization acme" in decision.why
    assert "may change it" in decision.why
    assert "alice@acme.example is neither" in decision.why
    assert "system:serviceaccount:tenantry-system:tenantry" in decision.why


def test_a_tenant_cannot_raise_the_quota() -> None:
    old = managed("ResourceQuota")
    new = copy.deepcopy(old)
    new["spec"]["hard"]["requests.cpu"] = "1000"
    assert not admit(PROTECT_OBJECTS, call("UPDATE", TENANT, new, old), CLUSTER).allowed


@pytest.mark.parametrize("kind", GUARDED_KINDS)
def test_a_tenant_cannot_delete_a_managed_object(kind: str) -> None:
    decision = admit(PROTECT_OBJECTS, call("DELETE", TENANT, old=managed(kind)), CLUSTER)
    assert not decision.allowed
    assert "may delete it, besides the namespace and garbage-collection controllers" in decision.why


def test_stripping_the_ownership_label_does_not_escape_the_policy() -> None:
    old = managed("NetworkPolicy")
    new = changed(old, labels={lbl.APP_MANAGED_BY: None})
    assert not admit(PROTECT_OBJECTS, call("UPDATE", TENANT, new, old), CLUSTER).allowed


def test_nobody_else_can_pass_an_object_off_as_tenantrys() -> None:
    """Adding the label to an object of one's own is refused with words that say so: the object
    is not managed by Tenantry, and the fix is to remove the label (issue 21 item 8)."""
    own = changed(managed("ConfigMap"), labels={lbl.APP_MANAGED_BY: None}, name="settings")
    claimed = changed(own, labels={lbl.APP_MANAGED_BY: "tenantry"})
    decision = admit(PROTECT_OBJECTS, call("UPDATE", TENANT, claimed, own), CLUSTER)
    assert not decision.allowed
    assert decision.why == (
        "ConfigMap acme-prod/settings: the label app.kubernetes.io/managed-by=tenantry marks the objects "
        "Tenantry owns, and only the operator (system:serviceaccount:tenantry-system:tenantry) and the "
        "platform admins of TenancyPolicy default (spec.rbac.platformAdmins) may set it; alice@acme.example "
        "is neither. Remove the label (or use another value of app.kubernetes.io/managed-by)."
    )
    assert "Change the Organization" not in decision.why
    created = admit(PROTECT_OBJECTS, call("CREATE", TENANT, managed("RoleBinding")), CLUSTER)
    assert not created.allowed and "marks the objects Tenantry owns" in created.why


@pytest.mark.parametrize("kind", GUARDED_KINDS)
def test_the_operator_may_create_change_and_delete(kind: str) -> None:
    obj = managed(kind)
    new = changed(obj, annotations={"tenantry.dev/policy": "default"})
    assert admit(PROTECT_OBJECTS, call("CREATE", OPERATOR, obj), CLUSTER) == Decision(True, "admitted")
    assert admit(PROTECT_OBJECTS, call("UPDATE", OPERATOR, new, obj), CLUSTER) == Decision(True, "admitted")
    assert admit(PROTECT_OBJECTS, call("DELETE", OPERATOR, old=obj), CLUSTER) == Decision(True, "admitted")


@pytest.mark.parametrize(
    "who", [PLATFORM_BY_GROUP, PLATFORM_BY_NAME, PLATFORM_BOT], ids=["group", "user", "service-account"]
)
def test_platform_admins_may_change_and_delete(who: Who) -> None:
    old = managed("ResourceQuota")
    new = changed(old, annotations={"incident": "INC-42"})
    assert admit(PROTECT_OBJECTS, call("UPDATE", who, new, old), CLUSTER).allowed
    assert admit(PROTECT_OBJECTS, call("DELETE", who, old=old), CLUSTER).allowed


def test_a_group_or_service_account_name_is_not_a_user_name() -> None:
    """`platform-team` is a Group: a user called `platform-team` is not a platform admin."""
    old = managed("ResourceQuota")
    impostors = [user("platform-team"), user("platform-bot"), service_account("other", "platform-bot")]
    for who in impostors:
        assert not admit(PROTECT_OBJECTS, call("DELETE", who, old=old), CLUSTER).allowed, who


@pytest.mark.parametrize(
    "who", [NAMESPACE_CONTROLLER, GARBAGE_COLLECTOR, CONTROLLER_MANAGER], ids=lambda w: w.username
)
@pytest.mark.parametrize("kind", GUARDED_KINDS)
def test_cleanup_controllers_may_delete(who: Who, kind: str) -> None:
    assert admit(PROTECT_OBJECTS, call("DELETE", who, old=managed(kind)), CLUSTER).allowed


def test_cleanup_controllers_may_finish_a_deletion_but_not_change_a_live_object() -> None:
    live = changed(managed("RoleBinding"), finalizers=["foregroundDeletion"])
    going = changed(live, deletionTimestamp=DELETED_AT)
    finished = changed(going, finalizers=[])
    assert admit(PROTECT_OBJECTS, call("UPDATE", GARBAGE_COLLECTOR, finished, going), CLUSTER).allowed
    edited = changed(live, annotations={"x": "y"})
    for who in (GARBAGE_COLLECTOR, NAMESPACE_CONTROLLER):
        assert not admit(PROTECT_OBJECTS, call("UPDATE", who, edited, live), CLUSTER).allowed


def test_unmanaged_objects_are_not_matched() -> None:
    theirs = changed(managed("ResourceQuota"), labels={lbl.APP_MANAGED_BY: "helm"}, name="team-quota")
    edited = changed(theirs, annotations={"x": "y"})
    update = call("UPDATE", TENANT, edited, theirs)
    assert admit(PROTECT_OBJECTS, update, CLUSTER) == Decision(True, "not matched")
    # The matchConditions agree with the objectSelector on their own.
    assert not conditions_hold(PROTECT_OBJECTS, update, DEFAULT)
    assert not conditions_hold(PROTECT_OBJECTS, call("DELETE", TENANT, old=theirs), DEFAULT)
    assert conditions_hold(PROTECT_OBJECTS, call("DELETE", TENANT, old=managed("ResourceQuota")), DEFAULT)


def test_quota_status_updates_are_not_matched() -> None:
    """The quota controller (and the API server's quota admission) write `resourcequotas/status`."""
    old = managed("ResourceQuota")
    new = copy.deepcopy(old)
    new["status"] = {"hard": old["spec"]["hard"], "used": {"pods": "3"}}
    status = call("UPDATE", QUOTA_CONTROLLER, new, old, sub_resource="status")
    assert admit(PROTECT_OBJECTS, status, CLUSTER) == Decision(True, "not matched")
    main = call("UPDATE", QUOTA_CONTROLLER, new, old)
    assert not admit(PROTECT_OBJECTS, main, CLUSTER).allowed


def test_without_a_default_tenancy_policy_everyone_is_denied() -> None:
    """Fail closed (docs/admission.md): params are resolved before any expression runs, so a
    missing `default` TenancyPolicy denies even the operator and the namespace controller."""
    for who, operation in ((OPERATOR, "UPDATE"), (NAMESPACE_CONTROLLER, "DELETE"), (TENANT, "UPDATE")):
        old = managed("LimitRange")
        decision = admit(
            PROTECT_OBJECTS, call(operation, who, old if operation == "UPDATE" else None, old), []
        )
        assert not decision.allowed and "no params found" in decision.why
    other = [tenancy_policy("strict", admins=[{"kind": "Group", "name": "platform-team"}])]
    assert not admit(PROTECT_OBJECTS, call("DELETE", OPERATOR, old=managed("LimitRange")), other).allowed


def test_platform_admins_of_other_policies_do_not_count() -> None:
    strict = tenancy_policy("strict", admins=[{"kind": "User", "name": "sam@platform.example"}])
    decision = admit(
        PROTECT_OBJECTS,
        call("DELETE", user("sam@platform.example"), old=managed("LimitRange")),
        [DEFAULT, strict],
    )
    assert not decision.allowed and "platform admins of TenancyPolicy default" in decision.why


def test_a_default_policy_without_rbac_still_lets_the_operator_through() -> None:
    bare = [tenancy_policy()]
    old = managed("NetworkPolicy")
    assert admit(PROTECT_OBJECTS, call("DELETE", OPERATOR, old=old), bare).allowed
    assert admit(PROTECT_OBJECTS, call("DELETE", NAMESPACE_CONTROLLER, old=old), bare).allowed
    assert not admit(PROTECT_OBJECTS, call("DELETE", PLATFORM_BY_GROUP, old=old), bare).allowed


# === tenantry-protect-namespace-labels =====================================================

NAMESPACE = rendered("Namespace", "acme-prod")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (lbl.ENVIRONMENT, "dev"),
        (lbl.ORGANIZATION, "beta"),
        (lbl.MANAGED_BY, "kubectl"),
        (lbl.APP_MANAGED_BY, "helm"),
        (lbl.OWNER, "beta"),
        (lbl.OWNER_ENVIRONMENT, "dev"),
        (lbl.ORPHANED, "true"),
        (f"{lbl.PSA_PREFIX}enforce", "privileged"),
        (f"{lbl.PSA_PREFIX}enforce", None),
        (lbl.ENVIRONMENT, None),
    ],
)
def test_a_tenant_cannot_change_tenantry_labels(key: str, value: str | None) -> None:
    new = changed(NAMESPACE, labels={key: value})
    decision = admit(PROTECT_NAMESPACES, call("UPDATE", TENANT, new, NAMESPACE), CLUSTER)
    assert not decision.allowed
    assert decision.why.startswith(
        f"namespace acme-prod: label {key} is set by Tenantry from Organization acme"
    )
    assert "alice@acme.example may not" in decision.why


def test_every_label_the_renderer_writes_is_protected() -> None:
    labels = _labels(NAMESPACE)
    assert len(labels) >= 10
    for key in labels:
        new = changed(NAMESPACE, labels={key: labels[key] + "x"})
        assert not admit(PROTECT_NAMESPACES, call("UPDATE", TENANT, new, NAMESPACE), CLUSTER).allowed, key


def test_the_message_counts_every_changed_label() -> None:
    new = changed(NAMESPACE, labels={lbl.ENVIRONMENT: "dev", lbl.OWNER_ENVIRONMENT: "dev", "team": "x"})
    decision = admit(PROTECT_NAMESPACES, call("UPDATE", TENANT, new, NAMESPACE), CLUSTER)
    assert not decision.allowed and "(and 1 more)" in decision.why


def test_other_labels_and_annotations_are_free() -> None:
    new = changed(
        NAMESPACE, labels={"team": "checkout", "cost-center": "4711"}, annotations={"owner": "alice"}
    )
    assert admit(PROTECT_NAMESPACES, call("UPDATE", TENANT, new, NAMESPACE), CLUSTER) == Decision(
        True, "admitted"
    )
    with_team = changed(NAMESPACE, labels={"team": "checkout"})
    without = changed(with_team, labels={"team": None})
    assert admit(PROTECT_NAMESPACES, call("UPDATE", TENANT, without, with_team), CLUSTER).allowed


@pytest.mark.parametrize("who", [OPERATOR, PLATFORM_BY_GROUP, PLATFORM_BOT], ids=lambda w: w.username)
def test_the_operator_and_platform_admins_may_relabel(who: Who) -> None:
    new = changed(NAMESPACE, labels={lbl.ORPHANED: "true", f"{lbl.PSA_PREFIX}enforce": "baseline"})
    assert admit(PROTECT_NAMESPACES, call("UPDATE", who, new, NAMESPACE), CLUSTER).allowed


def test_only_the_operator_and_platform_admins_delete_an_owned_namespace() -> None:
    decision = admit(PROTECT_NAMESPACES, call("DELETE", TENANT, old=NAMESPACE), CLUSTER)
    assert not decision.allowed
    assert "namespace acme-prod belongs to Tenantry (Organization acme)" in decision.why
    assert "deletionPolicy: Delete" in decision.why
    for who in (OPERATOR, PLATFORM_BY_GROUP, PLATFORM_BY_NAME):
        assert admit(PROTECT_NAMESPACES, call("DELETE", who, old=NAMESPACE), CLUSTER).allowed, who


def test_the_namespace_controller_only_finishes_what_was_started() -> None:
    assert not admit(PROTECT_NAMESPACES, call("DELETE", NAMESPACE_CONTROLLER, old=NAMESPACE), CLUSTER).allowed
    terminating = changed(NAMESPACE, deletionTimestamp=DELETED_AT)
    assert admit(PROTECT_NAMESPACES, call("DELETE", NAMESPACE_CONTROLLER, old=terminating), CLUSTER).allowed


def test_finalization_goes_through_subresources_that_are_not_matched() -> None:
    terminating = changed(NAMESPACE, deletionTimestamp=DELETED_AT)
    finalized = copy.deepcopy(terminating)
    finalized["spec"] = {"finalizers": []}
    for sub in ("finalize", "status"):
        request = call("UPDATE", NAMESPACE_CONTROLLER, finalized, terminating, sub_resource=sub)
        assert admit(PROTECT_NAMESPACES, request, CLUSTER) == Decision(True, "not matched")


def test_a_namespace_cannot_be_made_to_look_like_tenantrys() -> None:
    """The labels are how the operator recognises its namespaces: pre-creating `acme-qa` with
    them, or labelling a foreign one, would make the operator adopt it."""
    decision = admit(PROTECT_NAMESPACES, call("CREATE", TENANT, NAMESPACE), CLUSTER)
    assert not decision.allowed and "carries Tenantry ownership labels" in decision.why
    assert admit(PROTECT_NAMESPACES, call("CREATE", OPERATOR, NAMESPACE), CLUSTER).allowed
    foreign: Json = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "acme-qa", "labels": {"team": "x"}},
    }
    claimed = changed(foreign, labels=_labels(NAMESPACE))
    assert not admit(PROTECT_NAMESPACES, call("UPDATE", TENANT, claimed, foreign), CLUSTER).allowed


def test_foreign_namespaces_are_not_matched() -> None:
    foreign: Json = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "payments", "labels": {"environment": "prod"}},
    }
    edited = changed(foreign, labels={"environment": "dev"})
    update = call("UPDATE", TENANT, edited, foreign)
    assert admit(PROTECT_NAMESPACES, update, CLUSTER) == Decision(True, "not matched")
    assert not conditions_hold(PROTECT_NAMESPACES, update, DEFAULT)
    assert admit(PROTECT_NAMESPACES, call("DELETE", TENANT, old=foreign), CLUSTER).allowed


# === tenantry-quota-approval ===============================================================

APPROVAL = {"approvedBy": "jane@platform.example", "justification": "Peak season.", "ticket": "CHG-1234"}


def organization(**spec: Any) -> Json:
    doc: Json = copy.deepcopy(ACME)
    doc["spec"].pop("quotaApproval", None)
    doc["spec"].update(spec)
    Organization.model_validate(doc)  # the sample is an Organization the CRD would accept
    return doc


UNAPPROVED = organization(quota={})
APPROVED = organization(quota={"prod": {"requests.cpu": "16"}}, quotaApproval=APPROVAL)
RAISED = organization(quota={"prod": {"requests.cpu": "16"}})


def test_a_random_user_cannot_approve_a_quota() -> None:
    decision = admit(QUOTA_APPROVAL, call("UPDATE", TENANT, APPROVED, RAISED), CLUSTER)
    assert not decision.allowed
    assert decision.why.startswith("Organization acme: spec.quotaApproval (approvedBy jane@platform.example)")
    assert (
        "TenancyPolicy default lists in spec.rbac.quotaApprovers or spec.rbac.platformAdmins" in decision.why
    )
    assert "alice@acme.example is in neither" in decision.why


@pytest.mark.parametrize(
    "who", [APPROVER, PLATFORM_BY_GROUP, PLATFORM_BY_NAME, PLATFORM_BOT, ARGOCD], ids=lambda w: w.username
)
def test_approvers_and_platform_admins_may_approve(who: Who) -> None:
    assert admit(QUOTA_APPROVAL, call("UPDATE", who, APPROVED, RAISED), CLUSTER) == Decision(True, "admitted")
    assert admit(QUOTA_APPROVAL, call("CREATE", who, APPROVED), CLUSTER).allowed


def test_a_gitops_controller_approves_only_when_the_policy_lists_it() -> None:
    assert not admit(QUOTA_APPROVAL, call("UPDATE", FLUX, APPROVED, RAISED), CLUSTER).allowed
    listed = tenancy_policy(
        approvers=[{"kind": "ServiceAccount", "name": "kustomize-controller", "namespace": "flux-system"}]
    )
    assert admit(QUOTA_APPROVAL, call("UPDATE", FLUX, APPROVED, RAISED), [listed]).allowed


def test_creating_an_organization_with_an_approval_needs_an_approver() -> None:
    assert not admit(QUOTA_APPROVAL, call("CREATE", TENANT, APPROVED), CLUSTER).allowed
    assert admit(QUOTA_APPROVAL, call("CREATE", TENANT, UNAPPROVED), CLUSTER) == Decision(True, "skipped")


def test_an_unchanged_approval_on_an_unrelated_update_passes() -> None:
    members = copy.deepcopy(APPROVED["spec"]["members"])
    members["viewers"].append({"kind": "User", "name": "new-auditor@acme.example"})
    edited = spec_changed(APPROVED, members=members, displayName="ACME Corporation")
    assert admit(QUOTA_APPROVAL, call("UPDATE", TENANT, edited, APPROVED), CLUSTER) == Decision(
        True, "skipped"
    )
    finalizer = changed(APPROVED, finalizers=["tenantry.dev/finalizer"])
    assert admit(QUOTA_APPROVAL, call("UPDATE", OPERATOR, finalizer, APPROVED), CLUSTER).allowed


@pytest.mark.parametrize(
    "edit",
    [
        {"quota": {"prod": {"requests.cpu": "64"}}},
        {"quota": {"prod": {"requests.cpu": "16"}, "dev": {"pods": "500"}}},
        {"policy": "strict"},
        {"quotaApproval": {**APPROVAL, "justification": "Because."}},
    ],
    ids=["raise", "more-quota", "other-policy", "reworded"],
)
def test_an_approval_cannot_be_reused_for_something_else(edit: Json) -> None:
    strict = tenancy_policy("strict", approvers=[{"kind": "User", "name": "finops@platform.example"}])
    edited = spec_changed(APPROVED, **edit)
    decision = admit(QUOTA_APPROVAL, call("UPDATE", TENANT, edited, APPROVED), [DEFAULT, strict])
    assert not decision.allowed
    if "quotaApproval" not in edit:
        assert "The approval is unchanged but the quota or the policy it covers changed" in decision.why
    assert admit(QUOTA_APPROVAL, call("UPDATE", APPROVER, edited, APPROVED), [DEFAULT, strict]).allowed


def test_withdrawing_an_approval_is_free() -> None:
    assert admit(QUOTA_APPROVAL, call("UPDATE", TENANT, RAISED, APPROVED), CLUSTER).allowed
    assert admit(QUOTA_APPROVAL, call("UPDATE", TENANT, UNAPPROVED, APPROVED), CLUSTER).allowed


def test_only_the_organizations_own_policy_decides() -> None:
    """The binding selects every TenancyPolicy; the API server evaluates once per policy and
    denies if any evaluation denies, so evaluations against other policies must stand aside."""
    strict = tenancy_policy("strict", approvers=[{"kind": "User", "name": "sam@platform.example"}])
    sam = user("sam@platform.example")
    cluster = [DEFAULT, strict]
    assert not admit(QUOTA_APPROVAL, call("CREATE", sam, APPROVED), cluster).allowed
    under_strict = spec_changed(APPROVED, policy="strict")
    assert admit(QUOTA_APPROVAL, call("CREATE", sam, under_strict), cluster).allowed
    assert not admit(QUOTA_APPROVAL, call("CREATE", APPROVER, under_strict), cluster).allowed
    assert admit(QUOTA_APPROVAL, call("CREATE", PLATFORM_BY_GROUP, APPROVED), cluster).allowed


def test_an_organization_whose_policy_does_not_exist_is_not_checked() -> None:
    """The documented limit (docs/admission.md): no evaluation concerns a policy that is not
    there, and with no TenancyPolicy at all the binding's `Allow` applies."""
    ghost = spec_changed(APPROVED, policy="not-there")
    assert admit(QUOTA_APPROVAL, call("CREATE", TENANT, ghost), CLUSTER) == Decision(True, "skipped")
    assert admit(QUOTA_APPROVAL, call("CREATE", TENANT, APPROVED), []) == Decision(True, "no params")


def test_organization_status_is_not_matched() -> None:
    status = call("UPDATE", OPERATOR, APPROVED, RAISED, sub_resource="status")
    assert admit(QUOTA_APPROVAL, status, CLUSTER) == Decision(True, "not matched")


def test_the_gitops_example_in_the_docs_is_a_valid_policy() -> None:
    """The first YAML block of docs/admission.md is a TenancyPolicy listing a GitOps approver."""
    docs = (ROOT / "docs" / "admission.md").read_text()
    snippet = docs.split("```yaml\n", 1)[1].split("```", 1)[0]
    TenancyPolicy.model_validate(yaml.safe_load(snippet))


# === runtime errors: what the API server denies for, not on a decision =====================


def test_has_is_evaluated_the_way_cel_go_does() -> None:
    """has(a.b.c) evaluates a.b: null `a` (oldObject on CREATE, object on DELETE) is an error,
    which under failurePolicy Fail denies the request. cel-python alone would answer false."""
    missing = {"oldObject": json_to_cel(None), "object": json_to_cel({"metadata": {}})}
    with pytest.raises(EvaluationError, match="resulted in error"):
        _evaluate("has(oldObject.metadata.deletionTimestamp)", missing)
    with pytest.raises(EvaluationError, match="resulted in error"):
        _evaluate("has(object.spec.policy)", missing)
    assert _evaluate("has(oldObject.metadata)", missing) == celtypes.BoolType(False)
    assert _evaluate("has(object.metadata.labels)", missing) == celtypes.BoolType(False)
    assert _evaluate("oldObject == null || has(oldObject.metadata.labels)", missing)


def test_match_conditions_get_no_variables() -> None:
    """The bug 1.36.2 refused at creation: had it been stored, a matchCondition reading
    `variables` could only fail, and under failurePolicy Fail that denies."""
    refused = {"spec": {"matchConditions": [{"name": "m", "expression": "variables.managedBefore"}]}}
    with pytest.raises(EvaluationError, match="undeclared reference to 'variables'"):
        _matches(refused, call("DELETE", TENANT, old=managed("LimitRange")), DEFAULT)
    # A false condition wins over an erroring one (matcher.go): no match, no denial.
    mixed = {
        "spec": {
            "matchConditions": [
                {"name": "a", "expression": "variables.x"},
                {"name": "b", "expression": "false"},
            ]
        }
    }
    assert not _matches(mixed, call("DELETE", TENANT, old=managed("LimitRange")), DEFAULT)


def test_a_variable_error_reaches_only_the_expressions_that_read_it() -> None:
    policy = {"spec": {"variables": [{"name": "bad", "expression": "oldObject.metadata.name"}]}}
    activation = _with_variables(policy, call("CREATE", TENANT, managed("LimitRange")), DEFAULT)
    assert _condition("true || variables.bad == 'x'", activation)
    with pytest.raises(EvaluationError, match='composited variable "bad" fails to evaluate'):
        _condition("variables.bad == 'x'", activation)


def test_a_failing_message_expression_falls_back_to_message() -> None:
    activation = _with_variables({"spec": {}}, call("CREATE", TENANT, managed("LimitRange")), DEFAULT)
    assert _message(
        {"expression": "false", "message": "static", "messageExpression": "oldObject.x"}, activation
    ) == (
        "static",
        True,
    )
    assert _message({"expression": "false", "messageExpression": "'two\\nlines'"}, activation) == (
        "failed expression: false",
        True,
    )


LABELLED = {lbl.APP_MANAGED_BY: "tenantry"}


def _bare(kind: str, labels: Mapping[str, str] | None = LABELLED) -> Json:
    """The least an object of this kind can be: no optional field, at most the ownership label."""
    group, version, _ = RESOURCES[kind]
    meta: Json = (
        {"name": "bare"}
        if kind in ("Namespace", "Organization")
        else {"name": "bare", "namespace": "acme-prod"}
    )
    if labels is not None:
        meta["labels"] = dict(labels)
    return {"apiVersion": f"{group}/{version}".lstrip("/"), "kind": kind, "metadata": meta}


BARE_CALLS = [
    (op, kind, who, labels_before, labels_after)
    for kind in ["Namespace", *GUARDED_KINDS]
    for op in ("CREATE", "UPDATE", "DELETE")
    for who in (TENANT, OPERATOR, PLATFORM_BY_GROUP, NAMESPACE_CONTROLLER)
    for labels_before, labels_after in (
        (None, LABELLED),
        (LABELLED, None),
        (LABELLED, LABELLED),
        ({}, LABELLED),
    )
]


@pytest.mark.parametrize(("op", "kind", "who", "before", "after"), BARE_CALLS)
def test_no_expression_fails_on_the_barest_objects(
    op: str, kind: str, who: Who, before: Json | None, after: Json | None
) -> None:
    """Every operation on objects without labels, annotations or optional fields, old object null
    on CREATE and new object null on DELETE: admit() raises where an expression would fail, and
    every denial carries the messageExpression's text, not the fallback."""
    new = None if op == "DELETE" else _bare(kind, after)
    old = None if op == "CREATE" else _bare(kind, before)
    policy = PROTECT_NAMESPACES if kind == "Namespace" else PROTECT_OBJECTS
    for cluster in (CLUSTER, [tenancy_policy()]):
        decision = admit(policy, call(op, who, new, old), cluster)
        assert not decision.fell_back, decision


@pytest.mark.parametrize("op", ["CREATE", "UPDATE"])
@pytest.mark.parametrize("who", [TENANT, APPROVER, OPERATOR], ids=lambda w: w.username)
def test_no_expression_fails_on_the_barest_organizations(op: str, who: Who) -> None:
    bare = minimal_org("bare")
    approved = minimal_org("bare", quotaApproval={"approvedBy": "x", "justification": "y"})
    pairs = [(approved, None), (approved, bare), (bare, approved), (approved, approved)]
    for new, old in pairs:
        if op == "CREATE" and old is not None:
            continue
        if op == "UPDATE" and old is None:
            continue
        for cluster in (CLUSTER, [tenancy_policy()], [tenancy_policy("other")], []):
            decision = admit(QUOTA_APPROVAL, call(op, who, new, old), cluster)
            assert not decision.fell_back, decision
