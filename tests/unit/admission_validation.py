"""What the API server checks in an admission policy or binding before it stores it, apart from
compiling its CEL (tests/unit/test_admission_compile.py does that), offline.

A model of Kubernetes 1.36's pkg/apis/admissionregistration/validation/validation.go for the four
kinds Tenantry ships (ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
MutatingAdmissionPolicy, MutatingAdmissionPolicyBinding), applied after the v1 defaults
(pkg/apis/admissionregistration/v1/defaults.go: failurePolicy Fail, matchPolicy Equivalent, empty
namespace and object selectors, rule scope `*`), because the API server defaults before it
validates. Label selectors and names are checked as apimachinery's meta/v1/validation and
util/validation do; resourceNames and paramRef.name as api/validate/content IsPathSegmentName.

`errors(obj)` returns the field errors the API server would report, `path: message`, with the
API server's own wording, so a test can name the exact refusal (the first one on 1.36.2 was
`spec.matchConstraints.resourceRules[0].resources: if '*/*' is present, must not specify other
resources`). Each check names the Go function it models; quirks are kept on purpose (see
`_resources`). Unknown fields and wrong types are the OpenAPI schema's (kubernetes_validate in
the tests), not this module's.
"""

from __future__ import annotations

import re
from typing import Any

Json = dict[str, Any]

VALIDATING_POLICY = "ValidatingAdmissionPolicy"
VALIDATING_BINDING = "ValidatingAdmissionPolicyBinding"
MUTATING_POLICY = "MutatingAdmissionPolicy"
MUTATING_BINDING = "MutatingAdmissionPolicyBinding"
KINDS = (VALIDATING_POLICY, VALIDATING_BINDING, MUTATING_POLICY, MUTATING_BINDING)

FAILURE_POLICIES = ("Fail", "Ignore")
MATCH_POLICIES = ("Equivalent", "Exact")
OPERATIONS = ("*", "CONNECT", "CREATE", "DELETE", "UPDATE")
MUTATING_OPERATIONS = (
    "*",
    "CONNECT",
    "CREATE",
    "UPDATE",
)  # "MutatingAdmissionPolicy does not support DELETE"
SCOPES = ("*", "Cluster", "Namespaced")
REASONS = ("Forbidden", "Invalid", "RequestEntityTooLarge")
VALIDATION_ACTIONS = ("Audit", "Deny", "Warn")
PATCH_TYPES = ("ApplyConfiguration", "JSONPatch")
REINVOCATION_POLICIES = ("IfNeeded", "Never")
PARAMETER_NOT_FOUND_ACTIONS = ("Deny", "Allow")
MAX_MATCH_CONDITIONS = 64
MAX_AUDIT_ANNOTATIONS = 20
MAX_AUDIT_ANNOTATION_VALUE_EXPRESSION = 5 * 1024

# isCELIdentifier: [_a-zA-Z][_a-zA-Z0-9]* minus CEL's reserved words.
CEL_IDENTIFIER = re.compile(r"^[_a-zA-Z][_a-zA-Z0-9]*$")
CEL_RESERVED = frozenset(
    {"true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function", "if"}
    | {"import", "let", "loop", "package", "namespace", "return", "var", "void", "while"}
)

# k8s.io/apimachinery/pkg/util/validation.
DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN = re.compile(rf"^{DNS1123_LABEL}(\.{DNS1123_LABEL})*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
QUALIFIED_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


# --- util/validation ---------------------------------------------------------------------------


def is_dns1123_subdomain(value: str) -> list[str]:
    problems = []
    if len(value) > 253:
        problems.append("must be no more than 253 characters")
    if not DNS1123_SUBDOMAIN.match(value):
        problems.append(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"
        )
    return problems


def is_dns1035_label(value: str) -> list[str]:
    problems = []
    if len(value) > 63:
        problems.append("must be no more than 63 characters")
    if not DNS1035_LABEL.match(value):
        problems.append("a DNS-1035 label must consist of lower case alphanumeric characters or '-'")
    return problems


def is_qualified_name(value: str) -> list[str]:
    """IsQualifiedName: `[prefix/]name`, prefix a DNS-1123 subdomain, name at most 63 characters."""
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
        problems: list[str] = []
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            return ["prefix part must be non-empty"]
        problems = [f"prefix part {p}" for p in is_dns1123_subdomain(prefix)]
    else:
        return [
            "a qualified name must consist of alphanumeric characters, '-', '_' or '.', "
            "with an optional DNS subdomain prefix and '/'"
        ]
    if not name:
        problems.append("name part must be non-empty")
    elif len(name) > 63:
        problems.append("name part must be no more than 63 characters")
    elif not QUALIFIED_NAME_PART.match(name):
        problems.append("name part must consist of alphanumeric characters, '-', '_' or '.'")
    return problems


def is_label_value(value: str) -> list[str]:
    problems = []
    if len(value) > 63:
        problems.append("must be no more than 63 characters")
    if not LABEL_VALUE.match(value):
        problems.append("a valid label must be an empty string or consist of alphanumeric characters")
    return problems


def is_path_segment_name(value: str) -> list[str]:
    """api/validate/content IsPathSegmentName (resourceNames, paramRef.name)."""
    if value in (".", ".."):
        return [f"may not be '{value}'"]
    return [f"may not contain '{c}'" for c in ("/", "%") if c in value]


# --- meta/v1 validation --------------------------------------------------------------------------


def _object_meta(meta: Json) -> list[str]:
    """ValidateObjectMeta(requiresNamespace=false, NameIsDNSSubdomain): every kind here is
    cluster-scoped."""
    errs = []
    name = meta.get("name", "")
    if not name and not meta.get("generateName"):
        errs.append("metadata.name: Required value: name or generateName is required")
    elif name:
        errs += [f"metadata.name: Invalid value: {name!r}: {p}" for p in is_dns1123_subdomain(name)]
    if meta.get("namespace"):
        errs.append("metadata.namespace: Forbidden: not allowed on this type")
    errs += _labels(meta.get("labels") or {}, "metadata.labels")
    for key in meta.get("annotations") or {}:
        errs += [f"metadata.annotations: Invalid value: {key!r}: {p}" for p in is_qualified_name(key)]
    return errs


def _labels(labels: Json, path: str) -> list[str]:
    errs = []
    for key, value in labels.items():
        errs += [f"{path}: Invalid value: {key!r}: {p}" for p in is_qualified_name(key)]
        errs += [f"{path}: Invalid value: {value!r}: {p}" for p in is_label_value(str(value))]
    return errs


def _label_selector(selector: Json, path: str) -> list[str]:
    """ValidateLabelSelector, strict (AllowInvalidLabelValueInSelector false): "this type was
    released after issue #99139 was resolved"."""
    errs = _labels(selector.get("matchLabels") or {}, f"{path}.matchLabels")
    for i, requirement in enumerate(selector.get("matchExpressions") or []):
        where = f"{path}.matchExpressions[{i}]"
        operator, values = requirement.get("operator"), requirement.get("values") or []
        if operator in ("In", "NotIn"):
            if not values:
                errs.append(
                    f"{where}.values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
                )
        elif operator in ("Exists", "DoesNotExist"):
            if values:
                errs.append(
                    f"{where}.values: Forbidden: "
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
                )
        else:
            errs.append(f"{where}.operator: Invalid value: {operator!r}: not a valid selector operator")
        errs += [
            f"{where}.key: Invalid value: {requirement.get('key')!r}: {p}"
            for p in is_qualified_name(requirement.get("key", ""))
        ]
        for j, value in enumerate(values):
            errs += [f"{where}.values[{j}]: Invalid value: {value!r}: {p}" for p in is_label_value(value)]
    return errs


# --- rules ---------------------------------------------------------------------------------------


def _resources(resources: list[str], path: str) -> list[str]:
    """validateResources (subresources allowed), as written, order-dependence included:
    - `x/*` makes a later `x/y` an error, `*/y` a later `x/y` (an earlier one is not checked);
    - `*/*` must stand alone;
    - `*` beside a resource without subresource is refused only when that resource comes after
      the last `*` (Go overwrites `hasResourceWithoutSubresource` for each entry without a `/`)."""
    errs = []
    if not resources:
        errs.append(f"{path}: Required value")
    with_wildcard_sub: set[str] = set()
    sub_with_wildcard_resource: set[str] = set()
    double = single = without_sub = False
    for i, entry in enumerate(resources):
        if entry == "":
            errs.append(f"{path}[{i}]: Required value")
            continue
        double = double or entry == "*/*"
        single = single or entry == "*"
        if "/" not in entry:
            without_sub = entry != "*"
            continue
        resource, sub = entry.split("/", 1)
        if resource in with_wildcard_sub:
            errs.append(
                f"{path}[{i}]: Invalid value: {entry!r}: "
                f"if '{resource}/*' is present, must not specify {entry}"
            )
        if sub in sub_with_wildcard_resource:
            errs.append(
                f"{path}[{i}]: Invalid value: {entry!r}: if '*/{sub}' is present, must not specify {entry}"
            )
        if sub == "*":
            with_wildcard_sub.add(resource)
        if resource == "*":
            sub_with_wildcard_resource.add(sub)
    if len(resources) > 1 and double:
        errs.append(
            f"{path}: Invalid value: {resources}: if '*/*' is present, must not specify other resources"
        )
    if single and without_sub:
        errs.append(
            f"{path}: Invalid value: {resources}: "
            "if '*' is present, must not specify other resources without subresources"
        )
    return errs


def _rule_with_operations(rule: Json, path: str) -> list[str]:
    """validateRuleWithOperations + validateRule(allowSubResource=true)."""
    errs = []
    ops = rule.get("operations") or []
    if not ops:
        errs.append(f"{path}.operations: Required value")
    if len(ops) > 1 and "*" in ops:
        errs.append(
            f"{path}.operations: Invalid value: {ops}: if '*' is present, must not specify other operations"
        )
    for i, op in enumerate(ops):
        if op not in OPERATIONS:
            errs.append(f'{path}.operations[{i}]: Unsupported value: "{op}"')
    groups = rule.get("apiGroups") or []
    if not groups:
        errs.append(f"{path}.apiGroups: Required value")
    if len(groups) > 1 and "*" in groups:
        errs.append(
            f"{path}.apiGroups: Invalid value: {groups}: if '*' is present, must not specify other API groups"
        )
    versions = rule.get("apiVersions") or []
    if not versions:
        errs.append(f"{path}.apiVersions: Required value")
    if len(versions) > 1 and "*" in versions:
        errs.append(
            f"{path}.apiVersions: Invalid value: {versions}: "
            "if '*' is present, must not specify other API versions"
        )
    errs += [f"{path}.apiVersions[{i}]: Required value" for i, v in enumerate(versions) if v == ""]
    errs += _resources(rule.get("resources") or [], f"{path}.resources")
    scope = rule.get("scope", "*")  # SetDefaults_Rule
    if scope not in SCOPES:
        errs.append(f'{path}.scope: Unsupported value: "{scope}"')
    return errs


def _named_rule(rule: Json, path: str) -> list[str]:
    """validateNamedRuleWithOperations: resourceNames are path segments, without duplicates."""
    errs = []
    seen: set[str] = set()
    for i, name in enumerate(rule.get("resourceNames") or []):
        errs += [
            f"{path}.resourceNames[{i}]: Invalid value: {name!r}: {p}" for p in is_path_segment_name(name)
        ]
        if name in seen:
            errs.append(f'{path}.resourceNames[{i}]: Duplicate value: "{name}"')
        seen.add(name)
    return errs + _rule_with_operations(rule, path)


def _match_resources(match: Json, path: str) -> list[str]:
    """validateMatchResources, after SetDefaults_MatchResources."""
    errs = []
    policy = match.get("matchPolicy", "Equivalent")
    if policy not in MATCH_POLICIES:
        errs.append(f'{path}.matchPolicy: Unsupported value: "{policy}"')
    errs += _label_selector(match.get("namespaceSelector") or {}, f"{path}.namespaceSelector")
    errs += _label_selector(match.get("objectSelector") or {}, f"{path}.objectSelector")
    for field in ("resourceRules", "excludeResourceRules"):
        for i, rule in enumerate(match.get(field) or []):
            errs += _named_rule(rule, f"{path}.{field}[{i}]")
    return errs


def _mutable_operations(match: Json, path: str) -> list[str]:
    """ "It is only possible to mutate create and update requests": DELETE in a resourceRule of a
    mutating policy or binding (excludeResourceRules are not checked), reported without index."""
    return [
        f'{path}.resourceRules.operations: Unsupported value: "{op}"'
        for rule in match.get("resourceRules") or []
        for op in rule.get("operations") or []
        if op not in MUTATING_OPERATIONS
    ]


# --- the policy specs ------------------------------------------------------------------------------


def _param_kind(kind: Json, path: str) -> list[str]:
    """validateParamKind."""
    errs = []
    api_version = kind.get("apiVersion", "")
    if not api_version:
        errs.append(f"{path}.apiVersion: Required value")
    elif api_version.count("/") > 1:
        errs.append(
            f"{path}.apiVersion: Invalid value: {api_version!r}: "
            f"unexpected GroupVersion string: {api_version}"
        )
    else:
        group, _, version = api_version.rpartition("/")
        if group:
            errs += [f"{path}.apiVersion: Invalid value: {group!r}: {p}" for p in is_dns1123_subdomain(group)]
        if not version:
            errs.append(f"{path}.apiVersion: Invalid value: {api_version!r}: version must be specified")
        else:
            errs += [f"{path}.apiVersion: Invalid value: {version!r}: {p}" for p in is_dns1035_label(version)]
    name = kind.get("kind", "")
    if not name:
        errs.append(f"{path}.kind: Required value")
    elif is_dns1035_label(name.lower()):
        errs.append(
            f"{path}.kind: Invalid value: {name!r}: "
            "may have mixed case, but should otherwise match a DNS-1035 label"
        )
    return errs


def _match_conditions(conditions: list[Json], path: str) -> list[str]:
    """validateMatchConditions / validateMatchCondition (the CEL itself: compile_policy)."""
    errs = []
    if len(conditions) > MAX_MATCH_CONDITIONS:
        errs.append(f"{path}: Too many: {len(conditions)}: must have at most {MAX_MATCH_CONDITIONS} items")
    seen: set[str] = set()
    for i, condition in enumerate(conditions):
        if not condition.get("expression", "").strip():
            errs.append(f"{path}[{i}].expression: Required value")
        name = condition.get("name", "")
        if not name:
            errs.append(f"{path}[{i}].name: Required value")
        else:
            errs += [f"{path}[{i}].name: Invalid value: {name!r}: {p}" for p in is_qualified_name(name)]
            if name in seen:
                # validation.go: `{path}[i].name: Duplicate value`; `+listType=map` keyed by name
                # makes server-side apply refuse it first, in its own words.
                errs.append(f'{path}: duplicate entries for key [name="{name}"] (server-side apply)')
            seen.add(name)
    return errs


def _variables(variables: list[Json], path: str, keyed: bool) -> list[str]:
    """validateVariable. validation.go lets a repeated name through (`kubectl create` stores it),
    but a ValidatingAdmissionPolicy's `variables` is `+listType=map` keyed by name (k8s.io/api
    admissionregistration/v1 types.go; a MutatingAdmissionPolicy's is atomic), so server-side
    apply refuses it ("failed to create typed patch object ... duplicate entries for key"), as
    seen on 1.36.2: we apply server-side, so it counts."""
    errs = []
    seen: set[str] = set()
    for i, variable in enumerate(variables):
        name = variable.get("name", "")
        if not name.strip():
            errs.append(f"{path}[{i}].name: Required value: name is not specified")
        elif not CEL_IDENTIFIER.match(name) or name in CEL_RESERVED:
            errs.append(f"{path}[{i}].name: Invalid value: {name!r}: must be a valid CEL identifier")
        if keyed and name in seen:
            errs.append(f'{path}: duplicate entries for key [name="{name}"] (server-side apply)')
        seen.add(name)
        if not variable.get("expression", "").strip():
            errs.append(f"{path}[{i}].expression: Required value: expression is not specified")
    return errs


def _validations(validations: list[Json], path: str) -> list[str]:
    """validateValidation."""
    errs = []
    for i, validation in enumerate(validations):
        where = f"{path}[{i}]"
        if not validation.get("expression", "").strip():
            errs.append(f"{where}.expression: Required value: expression is not specified")
        message_expression = validation.get("messageExpression", "")
        if message_expression and not message_expression.strip():
            errs.append(f"{where}.messageExpression: Invalid value: must be non-empty if specified")
        message = validation.get("message", "")
        if message and not message.strip():
            errs.append(f"{where}.message: Invalid value: must be non-empty if specified")
        elif re.search(r"[\n\r]+", message.strip()):
            errs.append(f"{where}.message: Invalid value: {message!r}: must not contain line breaks")
        reason = validation.get("reason")
        if reason is not None and reason not in REASONS:
            errs.append(f'{where}.reason: Unsupported value: "{reason}"')
    return errs


def _audit_annotations(policy_name: str, annotations: list[Json], path: str) -> list[str]:
    """validateAuditAnnotation and the count and duplicate checks around it."""
    errs = []
    if len(annotations) > MAX_AUDIT_ANNOTATIONS:
        errs.append(
            f"{path}: Invalid value: must not have more than {MAX_AUDIT_ANNOTATIONS} auditAnnotations"
        )
    seen: set[str] = set()
    for i, annotation in enumerate(annotations):
        key = annotation.get("key", "")
        if policy_name:
            errs += [
                f"{path}[{i}].key: Invalid value: {policy_name}/{key}: {p}"
                for p in is_qualified_name(f"{policy_name}/{key}")
            ]
        else:
            errs.append(f"{path}[{i}].key: Invalid value: {key!r}: requires metadata.name be non-empty")
        value = annotation.get("valueExpression", "").strip()
        if not value:
            errs.append(f"{path}[{i}].valueExpression: Required value: valueExpression is not specified")
        elif len(value) > MAX_AUDIT_ANNOTATION_VALUE_EXPRESSION:
            errs.append(
                f"{path}[{i}].valueExpression: Required value: must not exceed "
                f"{MAX_AUDIT_ANNOTATION_VALUE_EXPRESSION} bytes in length"
            )
        if key in seen:
            errs.append(f'{path}[{i}].key: Duplicate value: "{key}"')
        seen.add(key)
    return errs


def _policy_common(spec: Json, variables_keyed: bool) -> list[str]:
    """What both policy specs check the same way: failurePolicy (defaulted to Fail), paramKind,
    matchConstraints with at least one resourceRule ("to provide type information"),
    matchConditions and variables."""
    errs = []
    failure = spec.get("failurePolicy", "Fail")
    if failure not in FAILURE_POLICIES:
        errs.append(f'spec.failurePolicy: Unsupported value: "{failure}"')
    if spec.get("paramKind") is not None:
        errs += _param_kind(spec["paramKind"], "spec.paramKind")
    constraints = spec.get("matchConstraints")
    if constraints is None:
        errs.append("spec.matchConstraints: Required value")
    else:
        errs += _match_resources(constraints, "spec.matchConstraints")
        if not constraints.get("resourceRules"):
            errs.append("spec.matchConstraints.resourceRules: Required value")
    errs += _match_conditions(spec.get("matchConditions") or [], "spec.matchConditions")
    errs += _variables(spec.get("variables") or [], "spec.variables", variables_keyed)
    return errs


def _validating_policy(obj: Json) -> list[str]:
    """validateValidatingAdmissionPolicySpec."""
    spec = obj.get("spec") or {}
    errs = _policy_common(spec, variables_keyed=True)
    validations, annotations = spec.get("validations") or [], spec.get("auditAnnotations")
    if not validations and not annotations:
        errs.append(
            "spec.validations: Required value: validations or auditAnnotations must contain at least one item"
        )
        errs.append(
            "spec.auditAnnotations: Required value: "
            "validations or auditAnnotations must contain at least one item"
        )
        return errs
    errs += _validations(validations, "spec.validations")
    if annotations is not None:
        errs += _audit_annotations(
            obj.get("metadata", {}).get("name", ""), annotations, "spec.auditAnnotations"
        )
    return errs


def _mutating_policy(obj: Json) -> list[str]:
    """validateMutatingAdmissionPolicySpec."""
    spec = obj.get("spec") or {}
    errs = _policy_common(spec, variables_keyed=False)
    errs += _mutable_operations(spec.get("matchConstraints") or {}, "spec.matchConstraints")
    mutations = spec.get("mutations") or []
    if not mutations:
        errs.append("spec.mutations: Required value: mutations must contain at least one item")
    for i, mutation in enumerate(mutations):
        errs += _mutation(mutation, f"spec.mutations[{i}]")
    reinvocation = spec.get("reinvocationPolicy", "")
    if not reinvocation:
        errs.append("spec.reinvocationPolicy: Required value")
    elif reinvocation not in REINVOCATION_POLICIES:
        errs.append(f'spec.reinvocationPolicy: Unsupported value: "{reinvocation}"')
    return errs


def _mutation(mutation: Json, path: str) -> list[str]:
    """validateMutation: the patchType's own field, and not the other one."""
    patch_type = mutation.get("patchType", "")
    if not patch_type:
        return [f"{path}.patchType: Required value"]
    if patch_type not in PATCH_TYPES:
        return [f'{path}.patchType: Unsupported value: "{patch_type}"']
    own, other = (
        ("jsonPatch", "applyConfiguration")
        if patch_type == "JSONPatch"
        else ("applyConfiguration", "jsonPatch")
    )
    errs = []
    if mutation.get(own) is None:
        errs.append(f"{path}.{own}: Required value: must be specified when patchType is {patch_type}")
    elif not mutation[own].get("expression", "").strip():
        errs.append(f"{path}.{own}.expression: Required value")
    if mutation.get(other) is not None:
        errs.append(f"{path}.{other}: Invalid value: must not be specified when patchType is {patch_type}")
    return errs


# --- the bindings --------------------------------------------------------------------------------


def _param_ref(ref: Json | None, path: str) -> list[str]:
    """validateParamRef: a name or a selector (not both), and parameterNotFoundAction."""
    if ref is None:
        return []
    errs = []
    name, selector = ref.get("name", ""), ref.get("selector")
    if name:
        errs += [f"{path}.name: Invalid value: {name!r}: {p}" for p in is_path_segment_name(name)]
        if selector is not None:
            errs.append(f"{path}.name: Forbidden: name and selector are mutually exclusive")
    if selector is not None:
        errs += _label_selector(selector, f"{path}.selector")
        if name:
            errs.append(f"{path}.selector: Forbidden: name and selector are mutually exclusive")
    if not name and selector is None:
        errs.append(f"{path}: Required value: one of name or selector must be specified")
    action = ref.get("parameterNotFoundAction") or ""
    if not action:
        errs.append(f"{path}.parameterNotFoundAction: Required value")
    elif action not in PARAMETER_NOT_FOUND_ACTIONS:
        errs.append(f'{path}.parameterNotFoundAction: Unsupported value: "{action}"')
    return errs


def _validation_actions(actions: list[str], path: str) -> list[str]:
    """validateValidationActions."""
    errs = []
    seen: set[str] = set()
    for i, action in enumerate(actions):
        if action not in VALIDATION_ACTIONS:
            errs.append(f'{path}[{i}]: Unsupported value: "{action}"')
        if action in seen:
            # validation.go: `{path}[i]: Duplicate value`; but `+listType=set` makes server-side
            # apply refuse it first, in its own words (seen on 1.36.2): we apply server-side.
            errs.append(f'{path}: duplicate entries for key [="{action}"] (server-side apply)')
        seen.add(action)
    if {"Deny", "Warn"} <= seen:
        errs.append(f"{path}: Invalid value: {actions}: must not contain both Deny and Warn")
    if not seen:
        errs.append(f"{path}: Required value: at least one validation action is required")
    return errs


def _binding(obj: Json) -> list[str]:
    spec = obj.get("spec") or {}
    errs = []
    policy = spec.get("policyName", "")
    if not policy:
        errs.append("spec.policyName: Required value")
    else:
        errs += [f"spec.policyName: Invalid value: {policy!r}: {p}" for p in is_dns1123_subdomain(policy)]
    errs += _param_ref(spec.get("paramRef"), "spec.paramRef")
    if spec.get("matchResources") is not None:
        errs += _match_resources(spec["matchResources"], "spec.matchResources")
    return errs


def _validating_binding(obj: Json) -> list[str]:
    """validateValidatingAdmissionPolicyBindingSpec."""
    actions = (obj.get("spec") or {}).get("validationActions") or []
    return _binding(obj) + _validation_actions(actions, "spec.validationActions")


def _mutating_binding(obj: Json) -> list[str]:
    """validateMutatingAdmissionPolicyBindingSpec: no validationActions, no DELETE."""
    return _binding(obj) + _mutable_operations(
        (obj.get("spec") or {}).get("matchResources") or {}, "spec.matchResources"
    )


CHECKS = {
    VALIDATING_POLICY: _validating_policy,
    VALIDATING_BINDING: _validating_binding,
    MUTATING_POLICY: _mutating_policy,
    MUTATING_BINDING: _mutating_binding,
}


def errors(obj: Json) -> list[str]:
    """Every field error the API server's validation reports for this object (CEL aside)."""
    return _object_meta(obj.get("metadata") or {}) + CHECKS[obj["kind"]](obj)
