"""Every admission object we ship passes the API server's validation, offline.

On Kubernetes 1.36.2 `kubectl apply -k manifests/admission` failed ("The ValidatingAdmissionPolicy
"tenantry-mfa" is invalid: spec.matchConstraints.resourceRules[0].resources: Invalid value:
["*","*/*"]: if '*/*' is present, must not specify other resources") while every offline test
passed: they compiled the CEL and checked the schema, not the rules of
pkg/apis/admissionregistration/validation/validation.go. `tests/unit/admission_validation.py`
models that file; this module runs it over manifests/admission (and whatever the renderer
produces of those kinds), checks the OpenAPI schema strictly, and pins the model to the
refusals the real file makes, one test per rule.
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tenantry.api.organization import Organization
from tenantry.api.policy import builtin_default_policy
from tenantry.render import render_organization
from tests.conftest import EXAMPLES, ROOT, TODAY
from tests.unit.admission_validation import (
    KINDS,
    MUTATING_BINDING,
    MUTATING_POLICY,
    VALIDATING_BINDING,
    VALIDATING_POLICY,
    errors,
)

Json = dict[str, Any]
ADMISSION = ROOT / "manifests" / "admission"
# Where each kind is served as admissionregistration.k8s.io/v1 (the floor the manifests promise:
# docs/admission.md; the placement mutation is v1 from 1.36).
SERVED_SINCE = {
    VALIDATING_POLICY: "1.30",
    VALIDATING_BINDING: "1.30",
    MUTATING_POLICY: "1.36",
    MUTATING_BINDING: "1.36",
}


def _shipped() -> list[tuple[str, Json]]:
    return [
        (f"{path.relative_to(ROOT)}:{doc['metadata']['name']}:{doc['kind']}", doc)
        for path in sorted(ADMISSION.rglob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") in KINDS
    ]


def _rendered() -> list[tuple[str, Json]]:
    """Admission objects in what the renderer produces for every example (none today: the
    policies are static manifests; should it start to render some, they are checked too)."""
    found = []
    for path in sorted(EXAMPLES.glob("organization-*.yaml")):
        org = Organization.model_validate(yaml.safe_load(path.read_text()))
        for obj in render_organization(org, builtin_default_policy(), TODAY).objects:
            if obj["kind"] in KINDS:
                found.append((f"rendered {path.name}:{obj['metadata']['name']}:{obj['kind']}", obj))
    return found


OBJECTS = _shipped() + _rendered()


@pytest.mark.parametrize(("where", "obj"), OBJECTS, ids=[w for w, _ in OBJECTS])
def test_the_api_server_validation_accepts_every_admission_object(where: str, obj: Json) -> None:
    assert errors(obj) == [], f"{where}: the API server would refuse it"


@pytest.mark.parametrize(("where", "obj"), OBJECTS, ids=[w for w, _ in OBJECTS])
def test_every_admission_object_matches_the_openapi_schema_strictly(where: str, obj: Json) -> None:
    kubernetes_validate.validate(obj, SERVED_SINCE[obj["kind"]], strict=True)


def test_every_shipped_kind_and_file_is_checked() -> None:
    kinds = {obj["kind"] for _, obj in OBJECTS}
    assert kinds == set(KINDS)
    files = {where.split(":")[0] for where, _ in OBJECTS}
    assert {
        str(p.relative_to(ROOT)) for p in ADMISSION.rglob("*.yaml") if p.name != "kustomization.yaml"
    } == files


def test_every_binding_names_a_shipped_policy_and_every_policy_is_bound() -> None:
    """Not the API server's check (a binding to a missing policy is stored and does nothing), but
    the same mistake: a policy that nothing binds is never evaluated."""
    pairs = {(VALIDATING_BINDING, VALIDATING_POLICY), (MUTATING_BINDING, MUTATING_POLICY)}
    for binding_kind, policy_kind in pairs:
        policies = {o["metadata"]["name"] for _, o in OBJECTS if o["kind"] == policy_kind}
        bound = {o["spec"]["policyName"] for _, o in OBJECTS if o["kind"] == binding_kind}
        assert bound == policies, (binding_kind, bound ^ policies)


# === the regression ===============================================================================

# tenantry-mfa's rule as 1.36.2 refused it.
REFUSED_MFA = """
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: tenantry-mfa
spec:
  failurePolicy: Fail
  matchConstraints:
    namespaceSelector:
      matchLabels:
        tenantry.dev/mfa: required
    resourceRules:
      - apiGroups: ["*"]
        apiVersions: ["*"]
        operations: [CREATE, UPDATE, DELETE]
        resources: ["*", "*/*"]
        scope: Namespaced
  validations:
    - expression: "true"
"""


def test_star_beside_star_slash_star_is_refused_as_on_1_36_2() -> None:
    assert errors(yaml.safe_load(REFUSED_MFA)) == [
        "spec.matchConstraints.resourceRules[0].resources: Invalid value: ['*', '*/*']: "
        "if '*/*' is present, must not specify other resources"
    ]


# === the model refuses what validation.go refuses ===================================================


def _vap(**spec: Any) -> Json:
    body: Json = {
        "matchConstraints": {
            "resourceRules": [
                {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}
            ]
        },
        "validations": [{"expression": "true"}],
    }
    body.update(spec)
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": VALIDATING_POLICY,
        "metadata": {"name": "p"},
        "spec": body,
    }


# A JSONPatch expression the real server compiles (`[]` is list(dyn) there, and refused).
PATCH = "[JSONPatch{op: 'add', path: '/metadata/labels/x', value: 'y'}]"


def _map(**spec: Any) -> Json:
    body: Json = {
        "matchConstraints": {
            "resourceRules": [
                {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}
            ]
        },
        "mutations": [{"patchType": "JSONPatch", "jsonPatch": {"expression": PATCH}}],
        "reinvocationPolicy": "Never",
    }
    body.update(spec)
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": MUTATING_POLICY,
        "metadata": {"name": "m"},
        "spec": body,
    }


def _binding(kind: str = VALIDATING_BINDING, **spec: Any) -> Json:
    body: Json = {"policyName": "p"}
    if kind == VALIDATING_BINDING:
        body["validationActions"] = ["Deny"]
    body.update(spec)
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": "b"},
        "spec": body,
    }


def _rule(**fields: Any) -> Json:
    rule: Json = {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}
    rule.update(fields)
    return rule


def _with_rules(*rules: Json) -> Json:
    return _vap(matchConstraints={"resourceRules": list(rules)})


def _messages(obj: Json) -> list[str]:
    """The errors without their path: what the tables below compare."""
    return [e.split(": ", 1)[1] for e in errors(obj)]


RESOURCES = "spec.matchConstraints.resourceRules[0].resources"


RESOURCE_CASES: list[tuple[Any, list[str]]] = [
    (["*/*"], []),
    (["*"], []),
    (["*", "pods/status"], []),  # `*` is resources without subresources: a subresource may join
    (["pods", "pods/*"], []),
    (
        ["*", "*/*"],
        [f"{RESOURCES}: Invalid value: ['*', '*/*']: if '*/*' is present, must not specify other resources"],
    ),
    (
        ["pods", "*/*"],
        [
            f"{RESOURCES}: Invalid value: ['pods', '*/*']: "
            "if '*/*' is present, must not specify other resources"
        ],
    ),
    (
        ["*", "pods"],
        [
            f"{RESOURCES}: Invalid value: ['*', 'pods']: "
            "if '*' is present, must not specify other resources without subresources"
        ],
    ),
    # validation.go's quirk: only the last entry without a `/` decides.
    (["pods", "*"], []),
    (
        ["pods/*", "pods/log"],
        [f"{RESOURCES}[1]: Invalid value: 'pods/log': if 'pods/*' is present, must not specify pods/log"],
    ),
    (
        ["*/log", "pods/log"],
        [f"{RESOURCES}[1]: Invalid value: 'pods/log': if '*/log' is present, must not specify pods/log"],
    ),
    (["pods/log", "pods/*"], []),  # order-dependent: only later entries are compared
    ([], [f"{RESOURCES}: Required value"]),
    (["pods", ""], [f"{RESOURCES}[1]: Required value"]),
]


@pytest.mark.parametrize(("resources", "expected"), RESOURCE_CASES)
def test_resources(resources: list[str], expected: list[str]) -> None:
    assert errors(_with_rules(_rule(resources=resources))) == expected


RULE = "spec.matchConstraints.resourceRules[0]"


RULE_CASES: list[tuple[Any, list[str]]] = [
    (
        {"apiGroups": ["*", "apps"]},
        ["apiGroups: Invalid value: ['*', 'apps']: if '*' is present, must not specify other API groups"],
    ),
    ({"apiGroups": []}, ["apiGroups: Required value"]),
    (
        {"apiVersions": ["*", "v1"]},
        ["apiVersions: Invalid value: ['*', 'v1']: if '*' is present, must not specify other API versions"],
    ),
    ({"apiVersions": [""]}, ["apiVersions[0]: Required value"]),
    (
        {"operations": ["*", "CREATE"]},
        ["operations: Invalid value: ['*', 'CREATE']: if '*' is present, must not specify other operations"],
    ),
    ({"operations": ["PATCH"]}, ['operations[0]: Unsupported value: "PATCH"']),
    ({"operations": []}, ["operations: Required value"]),
    ({"scope": "Namespace"}, ['scope: Unsupported value: "Namespace"']),
    (
        {"resourceNames": ["a/b", "x", "x", ".."]},
        [
            "resourceNames[0]: Invalid value: 'a/b': may not contain '/'",
            'resourceNames[2]: Duplicate value: "x"',
            "resourceNames[3]: Invalid value: '..': may not be '..'",
        ],
    ),
    ({"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"], "scope": "*"}, []),
]


@pytest.mark.parametrize(("fields", "expected"), RULE_CASES)
def test_rules(fields: Json, expected: list[str]) -> None:
    assert errors(_with_rules(_rule(**fields))) == [f"{RULE}.{e}" for e in expected]


def test_exclude_rules_are_validated_like_resource_rules() -> None:
    policy = _vap()
    policy["spec"]["matchConstraints"]["excludeResourceRules"] = [_rule(resources=["*", "*/*"])]
    assert _messages(policy) == [
        "Invalid value: ['*', '*/*']: if '*/*' is present, must not specify other resources"
    ]


def test_match_constraints_need_a_resource_rule_and_valid_selectors() -> None:
    assert errors(_vap(matchConstraints={})) == ["spec.matchConstraints.resourceRules: Required value"]
    unmatched = _vap()
    del unmatched["spec"]["matchConstraints"]
    assert errors(unmatched) == ["spec.matchConstraints: Required value"]
    constraints = {
        "resourceRules": [_rule()],
        "matchPolicy": "Loose",
        "namespaceSelector": {
            "matchLabels": {"tenantry.dev/mfa": "not ok!"},
            "matchExpressions": [
                {"key": "a", "operator": "In"},
                {"key": "b", "operator": "Exists", "values": ["x"]},
                {"key": "c", "operator": "Gt", "values": ["1"]},
                {"key": "-bad", "operator": "NotIn", "values": ["x"]},
            ],
        },
        "objectSelector": {"matchExpressions": [{"key": "d", "operator": "In", "values": ["white space"]}]},
    }
    assert errors(_vap(matchConstraints=constraints)) == [
        'spec.matchConstraints.matchPolicy: Unsupported value: "Loose"',
        "spec.matchConstraints.namespaceSelector.matchLabels: Invalid value: 'not ok!': "
        "a valid label must be an empty string or consist of alphanumeric characters",
        "spec.matchConstraints.namespaceSelector.matchExpressions[0].values: Required value: "
        "must be specified when `operator` is 'In' or 'NotIn'",
        "spec.matchConstraints.namespaceSelector.matchExpressions[1].values: Forbidden: "
        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
        "spec.matchConstraints.namespaceSelector.matchExpressions[2].operator: Invalid value: 'Gt': "
        "not a valid selector operator",
        "spec.matchConstraints.namespaceSelector.matchExpressions[3].key: Invalid value: '-bad': "
        "name part must consist of alphanumeric characters, '-', '_' or '.'",
        "spec.matchConstraints.objectSelector.matchExpressions[0].values[0]: Invalid value: 'white space': "
        "a valid label must be an empty string or consist of alphanumeric characters",
    ]


def test_failure_policy_defaults_to_fail_and_takes_only_fail_or_ignore() -> None:
    assert errors(_vap()) == []
    assert errors(_vap(failurePolicy="Ignore")) == []
    assert errors(_vap(failurePolicy="Warn")) == ['spec.failurePolicy: Unsupported value: "Warn"']
    assert errors(_map(failurePolicy="fail")) == ['spec.failurePolicy: Unsupported value: "fail"']


PARAM_KIND_CASES: list[tuple[Any, list[str]]] = [
    ({"apiVersion": "tenantry.dev/v1alpha1", "kind": "TenancyPolicy"}, []),
    ({"apiVersion": "v1", "kind": "ConfigMap"}, []),
    ({"kind": "ConfigMap"}, ["spec.paramKind.apiVersion: Required value"]),
    (
        {"apiVersion": "a/b/c", "kind": "X"},
        ["spec.paramKind.apiVersion: Invalid value: 'a/b/c': unexpected GroupVersion string: a/b/c"],
    ),
    (
        {"apiVersion": "tenantry.dev/", "kind": "X"},
        ["spec.paramKind.apiVersion: Invalid value: 'tenantry.dev/': version must be specified"],
    ),
    (
        {"apiVersion": "Tenantry.dev/v1", "kind": "X"},
        [
            "spec.paramKind.apiVersion: Invalid value: 'Tenantry.dev': "
            "a lowercase RFC 1123 subdomain must consist of "
            "lower case alphanumeric characters, '-' or '.'"
        ],
    ),
    ({"apiVersion": "v1", "kind": ""}, ["spec.paramKind.kind: Required value"]),
    (
        {"apiVersion": "v1", "kind": "Config_Map"},
        [
            "spec.paramKind.kind: Invalid value: 'Config_Map': "
            "may have mixed case, but should otherwise match a DNS-1035 label"
        ],
    ),
]


@pytest.mark.parametrize(("kind", "expected"), PARAM_KIND_CASES)
def test_param_kind(kind: Json, expected: list[str]) -> None:
    assert errors(_vap(paramKind=kind)) == expected


def test_match_conditions_names_count_and_expressions() -> None:
    conditions = [
        {"name": "a", "expression": "true"},
        {"name": "a", "expression": "true"},
        {"name": "not a name!", "expression": "true"},
        {"name": "", "expression": "  "},
    ]
    assert errors(_vap(matchConditions=conditions)) == [
        'spec.matchConditions: duplicate entries for key [name="a"] (server-side apply)',
        "spec.matchConditions[2].name: Invalid value: 'not a name!': "
        "name part must consist of alphanumeric characters, '-', '_' or '.'",
        "spec.matchConditions[3].expression: Required value",
        "spec.matchConditions[3].name: Required value",
    ]
    many = [{"name": f"c{i}", "expression": "true"} for i in range(65)]
    assert errors(_vap(matchConditions=many)) == [
        "spec.matchConditions: Too many: 65: must have at most 64 items"
    ]
    assert errors(_vap(matchConditions=many[:64])) == []


def test_variable_names_are_cel_identifiers_once_each() -> None:
    variables = [
        {"name": "ok_1", "expression": "1"},
        {"name": "has-dash", "expression": "1"},
        {"name": "namespace", "expression": "1"},  # a CEL reserved word
        {"name": "ok_1", "expression": "2"},
        {"name": "e", "expression": " "},
    ]
    assert errors(_vap(variables=variables)) == [
        "spec.variables[1].name: Invalid value: 'has-dash': must be a valid CEL identifier",
        "spec.variables[2].name: Invalid value: 'namespace': must be a valid CEL identifier",
        'spec.variables: duplicate entries for key [name="ok_1"] (server-side apply)',
        "spec.variables[4].expression: Required value: expression is not specified",
    ]
    repeated = [{"name": "a", "expression": "1"}, {"name": "a", "expression": "2"}]
    assert errors(_map(variables=repeated)) == [], "a mutating policy's variables are an atomic list"


def test_validations_messages_and_reasons() -> None:
    validations = [
        {"expression": "true", "message": "one line", "reason": "Forbidden"},
        {"expression": "true", "message": "two\nlines"},
        {"expression": "true", "message": "  "},
        {"expression": "true", "messageExpression": " "},
        {"expression": "true", "reason": "Unauthorized"},
        {"expression": ""},
    ]
    assert errors(_vap(validations=validations)) == [
        "spec.validations[1].message: Invalid value: 'two\\nlines': must not contain line breaks",
        "spec.validations[2].message: Invalid value: must be non-empty if specified",
        "spec.validations[3].messageExpression: Invalid value: must be non-empty if specified",
        'spec.validations[4].reason: Unsupported value: "Unauthorized"',
        "spec.validations[5].expression: Required value: expression is not specified",
    ]


def test_a_folded_yaml_message_has_no_line_breaks_but_a_literal_one_has() -> None:
    folded = yaml.safe_load("m: >-\n  one\n  line\n")["m"]
    literal = yaml.safe_load("m: |-\n  two\n  lines\n")["m"]
    assert errors(_vap(validations=[{"expression": "true", "message": folded}])) == []
    assert _messages(_vap(validations=[{"expression": "true", "message": literal}])) == [
        "Invalid value: 'two\\nlines': must not contain line breaks"
    ]


def test_validations_or_audit_annotations_are_required() -> None:
    assert errors(_vap(validations=[])) == [
        "spec.validations: Required value: validations or auditAnnotations must contain at least one item",
        "spec.auditAnnotations: Required value: "
        "validations or auditAnnotations must contain at least one item",
    ]
    assert errors(_vap(validations=[], auditAnnotations=[{"key": "k", "valueExpression": "'v'"}])) == []


def test_audit_annotations() -> None:
    annotations = [
        {"key": "who", "valueExpression": "'x'"},
        {"key": "who", "valueExpression": "'y'"},
        {"key": "not ok", "valueExpression": "'z'"},
        {"key": "big", "valueExpression": "'" + "x" * 5200 + "'"},
        {"key": "none", "valueExpression": ""},
    ]
    assert errors(_vap(auditAnnotations=annotations)) == [
        'spec.auditAnnotations[1].key: Duplicate value: "who"',
        "spec.auditAnnotations[2].key: Invalid value: p/not ok: "
        "name part must consist of alphanumeric characters, '-', '_' or '.'",
        "spec.auditAnnotations[3].valueExpression: Required value: must not exceed 5120 bytes in length",
        "spec.auditAnnotations[4].valueExpression: Required value: valueExpression is not specified",
    ]
    many = [{"key": f"k{i}", "valueExpression": "'v'"} for i in range(21)]
    assert _messages(_vap(auditAnnotations=many)) == [
        "Invalid value: must not have more than 20 auditAnnotations"
    ]


def test_metadata_name_namespace_and_labels() -> None:
    policy = _vap()
    policy["metadata"] = {
        "name": "Tenantry_MFA",
        "namespace": "x",
        "labels": {"app.kubernetes.io/part-of": "a b"},
    }
    assert errors(policy) == [
        "metadata.name: Invalid value: 'Tenantry_MFA': a lowercase RFC 1123 subdomain must consist of "
        "lower case alphanumeric characters, '-' or '.'",
        "metadata.namespace: Forbidden: not allowed on this type",
        "metadata.labels: Invalid value: 'a b': "
        "a valid label must be an empty string or consist of alphanumeric characters",
    ]
    policy["metadata"] = {}
    assert errors(policy) == ["metadata.name: Required value: name or generateName is required"]


# --- bindings ---------------------------------------------------------------------------------------


ACTION_CASES: list[tuple[Any, list[str]]] = [
    (["Deny"], []),
    (["Warn", "Audit"], []),
    (["Deny", "Audit"], []),
    (
        ["Deny", "Warn"],
        ["spec.validationActions: Invalid value: ['Deny', 'Warn']: must not contain both Deny and Warn"],
    ),
    (["Deny", "Deny"], ['spec.validationActions: duplicate entries for key [="Deny"] (server-side apply)']),
    (["Block"], ['spec.validationActions[0]: Unsupported value: "Block"']),
    ([], ["spec.validationActions: Required value: at least one validation action is required"]),
]


@pytest.mark.parametrize(("actions", "expected"), ACTION_CASES)
def test_validation_actions(actions: list[str], expected: list[str]) -> None:
    assert errors(_binding(validationActions=actions)) == expected


PARAM_REF_CASES: list[tuple[Any, list[str]]] = [
    ({"name": "default", "parameterNotFoundAction": "Deny"}, []),
    ({"selector": {}, "parameterNotFoundAction": "Allow"}, []),
    ({"name": "default"}, ["spec.paramRef.parameterNotFoundAction: Required value"]),
    (
        {"name": "a", "selector": {}, "parameterNotFoundAction": "Deny"},
        [
            "spec.paramRef.name: Forbidden: name and selector are mutually exclusive",
            "spec.paramRef.selector: Forbidden: name and selector are mutually exclusive",
        ],
    ),
    (
        {"parameterNotFoundAction": "Deny"},
        ["spec.paramRef: Required value: one of name or selector must be specified"],
    ),
    (
        {"name": "a%b", "parameterNotFoundAction": "Ignore"},
        [
            "spec.paramRef.name: Invalid value: 'a%b': may not contain '%'",
            'spec.paramRef.parameterNotFoundAction: Unsupported value: "Ignore"',
        ],
    ),
]


@pytest.mark.parametrize(("ref", "expected"), PARAM_REF_CASES)
def test_param_ref(ref: Json, expected: list[str]) -> None:
    assert errors(_binding(paramRef=ref)) == expected
    assert errors(_binding(MUTATING_BINDING, paramRef=ref)) == expected


def test_binding_policy_name_and_match_resources() -> None:
    assert errors(_binding(policyName="")) == ["spec.policyName: Required value"]
    assert _messages(_binding(policyName="Not_A_Name")) == [
        "Invalid value: 'Not_A_Name': a lowercase RFC 1123 subdomain must consist of "
        "lower case alphanumeric characters, '-' or '.'"
    ]
    match = {"resourceRules": [_rule(resources=["*", "*/*"])], "matchPolicy": "Exact"}
    assert errors(_binding(matchResources=match)) == [
        "spec.matchResources.resourceRules[0].resources: Invalid value: ['*', '*/*']: "
        "if '*/*' is present, must not specify other resources"
    ]
    assert errors(_binding(matchResources={"namespaceSelector": {}})) == [], (
        "a binding needs no resourceRules"
    )


# --- mutating ------------------------------------------------------------------------------------------


def test_a_mutating_policy_or_binding_never_matches_delete() -> None:
    policy = _map(matchConstraints={"resourceRules": [_rule(operations=["CREATE", "DELETE"])]})
    assert errors(policy) == ['spec.matchConstraints.resourceRules.operations: Unsupported value: "DELETE"']
    binding = _binding(MUTATING_BINDING, matchResources={"resourceRules": [_rule(operations=["DELETE"])]})
    assert errors(binding) == ['spec.matchResources.resourceRules.operations: Unsupported value: "DELETE"']
    validating = _binding(matchResources={"resourceRules": [_rule(operations=["DELETE"])]})
    assert errors(validating) == []
    excluded = _map()
    excluded["spec"]["matchConstraints"]["excludeResourceRules"] = [_rule(operations=["DELETE"])]
    assert errors(excluded) == [], "excludeResourceRules are not checked for DELETE"


def test_mutations_and_reinvocation_policy() -> None:
    mutations = [
        {"patchType": "JSONPatch"},
        {
            "patchType": "ApplyConfiguration",
            "applyConfiguration": {"expression": "Object{}"},
            "jsonPatch": {"expression": "[]"},
        },
        {"patchType": "StrategicMerge"},
        {},
        {"patchType": "JSONPatch", "jsonPatch": {"expression": " "}},
    ]
    assert errors(_map(mutations=mutations, reinvocationPolicy="Always")) == [
        "spec.mutations[0].jsonPatch: Required value: must be specified when patchType is JSONPatch",
        "spec.mutations[1].jsonPatch: Invalid value: "
        "must not be specified when patchType is ApplyConfiguration",
        'spec.mutations[2].patchType: Unsupported value: "StrategicMerge"',
        "spec.mutations[3].patchType: Required value",
        "spec.mutations[4].jsonPatch.expression: Required value",
        'spec.reinvocationPolicy: Unsupported value: "Always"',
    ]
    spec = copy.deepcopy(_map()["spec"])
    del spec["reinvocationPolicy"]
    spec["mutations"] = []
    assert errors({**_map(), "spec": spec}) == [
        "spec.mutations: Required value: mutations must contain at least one item",
        "spec.reinvocationPolicy: Required value",
    ]


def test_the_fixed_mfa_policy_still_matches_every_resource_and_subresource() -> None:
    """`*/*` alone replaces `*` + `*/*`: rules.go matches resource `*` and subresource `*` (the
    empty subresource of a plain resource included)."""
    (mfa,) = [
        o for _, o in OBJECTS if o["metadata"]["name"] == "tenantry-mfa" and o["kind"] == VALIDATING_POLICY
    ]
    (rule, connect) = mfa["spec"]["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["*/*"] and rule["operations"] == ["CREATE", "UPDATE", "DELETE"]
    assert connect["operations"] == ["CONNECT"]


# === the samples tests/e2e sends to a real API server ===============================================


def _excluding_delete() -> Json:
    policy = _map()
    policy["spec"]["matchConstraints"]["excludeResourceRules"] = [_rule(operations=["DELETE"])]
    return policy


def samples() -> list[tuple[str, Json]]:
    """One object per case above, named apart: tests/e2e/test_admission_validation_model.py
    sends each to a real API server (a server-side dry run) and asserts it is refused exactly
    when `errors()` says so, at the paths it names."""
    found: list[tuple[str, Json]] = [
        (f"resources {r}", _with_rules(_rule(resources=r))) for r, _ in RESOURCE_CASES
    ]
    found += [(f"rule {f}", _with_rules(_rule(**f))) for f, _ in RULE_CASES]
    found += [(f"paramKind {k}", _vap(paramKind=k)) for k, _ in PARAM_KIND_CASES]
    found += [(f"validationActions {a}", _binding(validationActions=a)) for a, _ in ACTION_CASES]
    found += [(f"paramRef {r}", _binding(paramRef=r)) for r, _ in PARAM_REF_CASES]
    found += [
        (f"mutating binding paramRef {r}", _binding(MUTATING_BINDING, paramRef=r)) for r, _ in PARAM_REF_CASES
    ]
    found += [
        ("the refused tenantry-mfa", yaml.safe_load(REFUSED_MFA)),
        (
            "variables",
            _vap(variables=[{"name": "ok_1", "expression": "1"}, {"name": "namespace", "expression": "1"}]),
        ),
        (
            "duplicate variables",
            _vap(variables=[{"name": "a", "expression": "1"}, {"name": "a", "expression": "2"}]),
        ),
        ("message with a line break", _vap(validations=[{"expression": "true", "message": "two\nlines"}])),
        ("blank message", _vap(validations=[{"expression": "true", "message": "  "}])),
        ("reason", _vap(validations=[{"expression": "true", "reason": "Unauthorized"}])),
        ("no validations", _vap(validations=[])),
        (
            "audit annotations only",
            _vap(validations=[], auditAnnotations=[{"key": "k", "valueExpression": "'v'"}]),
        ),
        (
            "duplicate audit annotation",
            _vap(
                auditAnnotations=[
                    {"key": "k", "valueExpression": "'v'"},
                    {"key": "k", "valueExpression": "'w'"},
                ]
            ),
        ),
        (
            "duplicate matchConditions",
            _vap(matchConditions=[{"name": "a", "expression": "true"}, {"name": "a", "expression": "false"}]),
        ),
        (
            "a mutating policy's variables may repeat a name",
            _map(variables=[{"name": "a", "expression": "1"}, {"name": "a", "expression": "2"}]),
        ),
        (
            "65 matchConditions",
            _vap(matchConditions=[{"name": f"c{i}", "expression": "true"} for i in range(65)]),
        ),
        (
            "64 matchConditions",
            _vap(matchConditions=[{"name": f"c{i}", "expression": "true"} for i in range(64)]),
        ),
        ("failurePolicy", _vap(failurePolicy="Warn")),
        (
            "mutating DELETE",
            _map(matchConstraints={"resourceRules": [_rule(operations=["CREATE", "DELETE"])]}),
        ),
        ("mutating excluding DELETE", _excluding_delete()),
        (
            "mutating binding DELETE",
            _binding(MUTATING_BINDING, matchResources={"resourceRules": [_rule(operations=["DELETE"])]}),
        ),
        ("reinvocationPolicy", _map(reinvocationPolicy="Always")),
        ("no mutations", _map(mutations=[])),
        ("binding without resourceRules", _binding(matchResources={"namespaceSelector": {}})),
        (
            "a binding's */* beside *",
            _binding(matchResources={"resourceRules": [_rule(resources=["*", "*/*"])]}),
        ),
        (
            "In without values",
            _vap(
                matchConstraints={
                    "resourceRules": [_rule()],
                    "namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]},
                }
            ),
        ),
    ]
    for i, (_, obj) in enumerate(found):
        obj["metadata"]["name"] = f"e2e-model-{i}"
    return found


def test_the_samples_cover_accepted_and_refused_objects_of_every_kind() -> None:
    found = samples()
    assert {obj["kind"] for _, obj in found} == set(KINDS)
    verdicts = [bool(errors(obj)) for _, obj in found]
    assert sum(verdicts) >= 30 and verdicts.count(False) >= 15
