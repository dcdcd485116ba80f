"""Compile manifests/admission/ the way the API server does before it stores a policy.

On Kubernetes 1.36.2 all three policies were refused ("undeclared reference to 'variables'") while
the cel-python tests passed: cel-python evaluates whatever it is given, in one environment with
every name in it. The API server compiles every expression of a ValidatingAdmissionPolicy when the
policy is created or updated, each field in its own environment, and refuses the whole policy if
one expression does not compile. This module replays that compilation with cel-python's parser
(the AST) and a small type checker over it, built from what Kubernetes' own source declares:

- pkg/apis/admissionregistration/validation/validation.go, validateValidatingAdmissionPolicySpec:
  matchConditions go through validateMatchConditionsExpression with the *stateless* compiler (no
  variable composition, so no `variables`), HasParams = spec.paramKind set, HasAuthorizer = true;
  variables go through validateVariable and CompositedCompiler.CompileAndStoreVariable, one after
  the other, HasParams and HasAuthorizer as above; validations through validateValidationExpression
  (HasAuthorizer = true); messageExpression through validateMessageExpression (HasAuthorizer =
  **false**); auditAnnotations valueExpression with HasAuthorizer = true. Every compile uses
  environment.NewExpressions unless the same expression was already stored in the old object.
- staging/src/k8s.io/apiserver/pkg/admission/plugin/cel/compile.go, createEnvForOpts: `object`,
  `oldObject` (dyn), `namespaceObject` (BuildNamespaceType) and `request` (BuildRequestType) always;
  `params` (dyn) only with HasParams; `authorizer` and `authorizer.requestResource` only with
  HasAuthorizer. CompileCELExpression refuses an output type that is not exactly one of the
  accessor's ReturnTypes (bool for matchConditions and validations, string for messageExpression,
  any for variables).
- staging/src/k8s.io/apiserver/pkg/admission/plugin/cel/composition.go: `variables` is an object
  type ("kubernetes.variables") that gains one field per compiled variable, typed by that
  variable's output type; a variable that reads a later (or unknown) one selects a field that does
  not exist yet: "undefined field".
- staging/src/k8s.io/apiserver/pkg/cel/environment/base.go: the libraries, by the Kubernetes
  version that introduced them. New expressions compile against DefaultCompatibilityVersion, which
  was n-1 up to 1.31 (1.29 on a 1.30 API server), so a library introduced at 1.30 (IP, CIDR) is
  usable in a new policy from Kubernetes 1.31 on, Format (1.31) from 1.32, two-variable
  comprehensions (1.32) from 1.33. Our floor is Kubernetes 1.30, so the allowed set is everything
  introduced at 1.29 or earlier.

MutatingAdmissionPolicies (manifests/admission/placement/) compile the same way
(.../policy/mutating/compilation.go, compilePolicy: HasParams = spec.paramKind set, HasAuthorizer =
true, variables through CompileAndStoreVariables, matchConditions through CompileCondition), and
each mutation with HasPatchTypes, which compile.go's createEnvForOpts turns into the patch types
(`JSONPatch{op, path, from, value}` and `Object...` initialisers, mutation.DynamicTypeResolver) and
the JSONPatch library (`jsonpatch.escapeKey`). Only mutations see them. A JSONPatch expression
must give a list of JSONPatch, an ApplyConfiguration expression an `Object{...}`.

What this does not replay: the estimated cost (the API server checks none for policies, only the
runtime limits), and `status.typeChecking` (schema-typed checking after the policy is stored, which
only produces warnings). See docs/admission.md, "How the API server compiles these policies".
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import lark
import pytest
import yaml
from celpy.celparser import CELParser

from tests.conftest import ROOT

Json = dict[str, Any]
ADMISSION = ROOT / "manifests" / "admission"

# --- the Kubernetes CEL environment ---------------------------------------------------------

OLDEST_SUPPORTED = (1, 30)
# base.go: a new expression compiles against DefaultCompatibilityVersion, n-1 on 1.30.
COMPATIBILITY_VERSION = (OLDEST_SUPPORTED[0], OLDEST_SUPPORTED[1] - 1)

# CEL's standard definitions (cel-spec langdef, "List of Standard Definitions"): global functions
# and type conversions, and the functions called as receiver methods.
STANDARD_GLOBALS = {
    "size",
    "int",
    "uint",
    "double",
    "string",
    "bytes",
    "bool",
    "duration",
    "timestamp",
    "dyn",
    "type",
    "matches",
}
STANDARD_MEMBERS = {
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "size",
    "getDate",
    "getDayOfMonth",
    "getDayOfWeek",
    "getDayOfYear",
    "getFullYear",
    "getHours",
    "getMilliseconds",
    "getMinutes",
    "getMonth",
    "getSeconds",
}
MACROS_GLOBAL = {"has"}
MACROS_MEMBER = {"all": 2, "exists": 2, "exists_one": 2, "filter": 2, "map": 2}  # map also takes 3


@dataclass(frozen=True)
class Library:
    """One entry of base.go's baseOptsWithoutStrictCost: introduced at a Kubernetes version."""

    name: str
    introduced: tuple[int, int]
    globals: frozenset[str] = frozenset()
    members: frozenset[str] = frozenset()


LIBRARIES = [
    # IntroducedVersion 1.0 (the CEL epoch, 1.23): library.URLs, library.Regex, library.Lists.
    Library(
        "Kubernetes URL library",
        (1, 0),
        frozenset({"url", "isURL"}),
        frozenset({"getScheme", "getHost", "getHostname", "getPort", "getEscapedPath", "getQuery"}),
    ),
    Library("Kubernetes regex library", (1, 0), members=frozenset({"find", "findAll"})),
    Library(
        "Kubernetes list library",
        (1, 0),
        members=frozenset({"isSorted", "sum", "min", "max", "indexOf", "lastIndexOf"}),
    ),
    # ext.Strings: version 0 until 1.29, version 2 from 1.29 (format and strings.quote since v1).
    Library(
        "CEL strings extension",
        (1, 0),
        frozenset({"strings.quote"}),
        frozenset(
            {
                "charAt",
                "indexOf",
                "lastIndexOf",
                "lowerAscii",
                "upperAscii",
                "replace",
                "split",
                "substring",
                "trim",
                "join",
                "format",
            }
        ),
    ),
    Library(
        "Kubernetes authorizer library",
        (1, 27),
        members=frozenset(
            {
                "path",
                "group",
                "serviceAccount",
                "resource",
                "subresource",
                "namespace",
                "name",
                "check",
                "allowed",
                "reason",
                "errored",
                "error",
            }
        ),
    ),
    # 1.28: CrossTypeNumericComparisons, OptionalTypes, library.Quantity.
    Library(
        "Kubernetes quantity library",
        (1, 28),
        frozenset({"quantity", "isQuantity"}),
        frozenset(
            {
                "sign",
                "isGreaterThan",
                "isLessThan",
                "compareTo",
                "add",
                "sub",
                "asInteger",
                "isInteger",
                "asApproximateFloat",
            }
        ),
    ),
    Library(
        "CEL optional types",
        (1, 28),
        frozenset({"optional.of", "optional.none", "optional.ofNonZeroValue"}),
        frozenset({"hasValue", "value", "or", "orValue"}),
    ),
    Library(
        "CEL sets extension",
        (1, 29),
        frozenset({"sets.contains", "sets.equivalent", "sets.intersects"}),
    ),
    # Too new for a policy that must be accepted by a 1.30 API server:
    Library(
        "Kubernetes IP and CIDR libraries",
        (1, 30),
        frozenset({"ip", "isIP", "cidr", "isCIDR", "ip.isCanonical"}),
        frozenset(
            {
                "family",
                "isUnspecified",
                "isLoopback",
                "isLinkLocalMulticast",
                "isLinkLocalUnicast",
                "isGlobalUnicast",
                "containsIP",
                "containsCIDR",
                "masked",
                "prefixLength",
            }
        ),
    ),
    Library("Kubernetes format library", (1, 31), members=frozenset({"validate"})),
    Library(
        "CEL two-variable comprehensions",
        (1, 32),
        members=frozenset({"transformList", "transformMap", "transformMapEntry", "existsOne"}),
    ),
    Library(
        "Kubernetes semver library",
        (1, 33),
        frozenset({"semver", "isSemver"}),
        frozenset({"major", "minor", "patch"}),
    ),
]
NAMESPACES = {f.split(".")[0] for lib in LIBRARIES for f in lib.globals if "." in f}
AVAILABLE = [lib for lib in LIBRARIES if lib.introduced <= COMPATIBILITY_VERSION]
ALLOWED_GLOBALS = STANDARD_GLOBALS | {f for lib in AVAILABLE for f in lib.globals}
ALLOWED_MEMBERS = STANDARD_MEMBERS | {f for lib in AVAILABLE for f in lib.members}


# Result types the checker needs of library functions (everything else it types as dyn).
RESULTS: dict[str, Any] = {
    **dict.fromkeys(
        [
            "sets.contains",
            "sets.equivalent",
            "sets.intersects",
            "isURL",
            "isQuantity",
            "isGreaterThan",
            "isLessThan",
            "isInteger",
            "hasValue",
            "allowed",
            "errored",
            "isSorted",
            "startsWith",
            "endsWith",
            "contains",
            "matches",
        ],
        "bool",
    ),
    **dict.fromkeys(["size", "compareTo", "sign", "asInteger", "indexOf", "lastIndexOf"], "int"),
    **dict.fromkeys(
        [
            "lowerAscii",
            "upperAscii",
            "trim",
            "replace",
            "substring",
            "charAt",
            "join",
            "format",
            "find",
            "reason",
            "strings.quote",
            "getScheme",
            "getHost",
            "getHostname",
            "getPort",
            "getEscapedPath",
        ],
        "string",
    ),
    "asApproximateFloat": "double",
}


def _too_new(function: str) -> str:
    for lib in LIBRARIES:
        if lib not in AVAILABLE and (function in lib.globals or function in lib.members):
            major, minor = lib.introduced
            return f" ({lib.name}, introduced at {major}.{minor}: new expressions from {major}.{minor + 1})"
    return ""


# --- types -----------------------------------------------------------------------------------

DYN = "dyn"
FREE = "?"  # the element type of an empty literal, unified with whatever it meets


@dataclass(frozen=True)
class ListOf:
    elem: Any

    def __str__(self) -> str:
        return f"list({self.elem})"


@dataclass(frozen=True)
class MapOf:
    key: Any
    value: Any

    def __str__(self) -> str:
        return f"map({self.key}, {self.value})"


@dataclass(frozen=True, eq=False)
class Obj:
    """An object type with declared fields (selecting another is "undefined field")."""

    name: str
    fields: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name


GVK = Obj("kubernetes.GroupVersionKind", {"group": "string", "version": "string", "kind": "string"})
GVR = Obj("kubernetes.GroupVersionResource", {"group": "string", "version": "string", "resource": "string"})
# compile.go, BuildRequestType (uid, object and oldObject are left out by design).
REQUEST = Obj(
    "kubernetes.AdmissionRequest",
    {
        "kind": GVK,
        "resource": GVR,
        "subResource": "string",
        "requestKind": GVK,
        "requestResource": GVR,
        "requestSubResource": "string",
        "name": "string",
        "namespace": "string",
        "operation": "string",
        "userInfo": Obj(
            "kubernetes.UserInfo",
            {
                "username": "string",
                "uid": "string",
                "groups": ListOf("string"),
                "extra": MapOf("string", ListOf("string")),
            },
        ),
        "dryRun": "bool",
        "options": DYN,
    },
)
# compile.go, BuildNamespaceType.
NAMESPACE = Obj(
    "kubernetes.Namespace",
    {
        "metadata": Obj(
            "kubernetes.NamespaceMetadata",
            {
                "name": "string",
                "generateName": "string",
                "namespace": "string",
                "labels": MapOf("string", "string"),
                "annotations": MapOf("string", "string"),
                "UID": "string",
                "creationTimestamp": "timestamp",
                "deletionGracePeriodSeconds": "int",
                "deletionTimestamp": "timestamp",
                "generation": "int",
                "resourceVersion": "string",
                "finalizers": ListOf("string"),
            },
        ),
        "spec": Obj("kubernetes.NamespaceSpec", {"finalizers": ListOf("string")}),
        "status": Obj(
            "kubernetes.NamespaceStatus",
            {
                "conditions": ListOf(
                    Obj(
                        "kubernetes.NamespaceCondition",
                        {
                            "status": "string",
                            "type": "string",
                            "lastTransitionTime": "timestamp",
                            "message": "string",
                            "reason": "string",
                        },
                    )
                ),
                "phase": "string",
            },
        ),
    },
)
AUTHORIZER = Obj("kubernetes.authorization.Authorizer")
# mutation/common and mutation/unstructured: the JSONPatch type, and Object initialisers.
JSONPATCH = Obj("JSONPatch", {"op": "string", "path": "string", "from": "string", "value": DYN})
OBJECT = Obj("Object")
PATCH_FUNCTION = Obj("jsonpatch.escapeKey")
RESOURCE_CHECK = Obj("kubernetes.authorization.ResourceCheck")
RESULTS["split"] = ListOf("string")
NUMERIC = {"int", "uint", "double"}
PRIMITIVE = {"string", "bool", "bytes", "timestamp", "duration"} | NUMERIC


def _unify(a: Any, b: Any) -> Any | None:
    """The common type of two branches or literal elements, None if there is none."""
    if a == FREE:
        return b
    if b == FREE:
        return a
    if DYN in (a, b):
        return DYN
    if a == b or a is b:
        return a
    if isinstance(a, ListOf) and isinstance(b, ListOf):
        elem = _unify(a.elem, b.elem)
        return None if elem is None else ListOf(elem)
    if isinstance(a, MapOf) and isinstance(b, MapOf):
        key, value = _unify(a.key, b.key), _unify(a.value, b.value)
        return None if key is None or value is None else MapOf(key, value)
    if a in NUMERIC and b in NUMERIC:
        return DYN
    return None


# --- the compile environment of each field ---------------------------------------------------


class CompileError(Exception):
    pass


@dataclass(frozen=True)
class Env:
    """The names one field of a policy is compiled with."""

    params: bool
    authorizer: bool
    variables: Mapping[str, Any] | None  # None: `variables` is not declared at all
    patch_types: bool = False  # a mutation: JSONPatch, Object types and jsonpatch.escapeKey

    def declared(self) -> dict[str, Any]:
        names: dict[str, Any] = {
            "object": DYN,
            "oldObject": DYN,
            "request": REQUEST,
            "namespaceObject": NAMESPACE,
        }
        if self.params:
            names["params"] = DYN
        if self.authorizer:
            names["authorizer"] = AUTHORIZER
            names["authorizer.requestResource"] = RESOURCE_CHECK
        if self.variables is not None:
            names["variables"] = Obj("kubernetes.variables", dict(self.variables))
        if self.patch_types:
            names["jsonpatch.escapeKey"] = PATCH_FUNCTION
        return names


class Checker:
    """Resolves every name and function of one expression and infers its type."""

    def __init__(self, env: Env) -> None:
        self.root = env.declared()

    def check(self, expression: str) -> Any:
        try:
            tree = CELParser().parse(expression)
        except Exception as exc:  # any parse failure is a compile failure
            raise CompileError(f"syntax error: {exc}") from exc
        return self.infer(tree, {})

    # The grammar (celpy/cel.lark) nests every binary operator as [left-with-operator, right].
    def infer(self, node: Any, scope: dict[str, Any]) -> Any:
        kids = [c for c in node.children if c is not None]
        rule = node.data
        if rule == "expr":
            if len(kids) == 1:
                return self.infer(kids[0], scope)
            cond, yes, no = (self.infer(k, scope) for k in kids)
            self._expect_bool(cond, "_?_:_")
            both = _unify(yes, no)
            if both is None:
                raise CompileError(f"found no matching overload for '_?_:_' applied to '(bool, {yes}, {no})'")
            return both
        if rule in ("conditionalor", "conditionaland"):
            if len(kids) == 1:
                return self.infer(kids[0], scope)
            op = "_||_" if rule == "conditionalor" else "_&&_"
            for kid in kids:
                self._expect_bool(self.infer(kid, scope), op)
            return "bool"
        if rule == "relation":
            if len(kids) == 1:
                return self.infer(kids[0], scope)
            left_node, right = kids
            left = self.infer(left_node.children[0], scope)
            return self._relation(left_node.data, left, self.infer(right, scope))
        if rule in ("addition", "multiplication"):
            if len(kids) == 1:
                return self.infer(kids[0], scope)
            left_node, right = kids
            return self._arithmetic(
                left_node.data, self.infer(left_node.children[0], scope), self.infer(right, scope)
            )
        if rule == "unary":
            if len(kids) == 1:
                return self.infer(kids[0], scope)
            operand = self.infer(kids[1], scope)
            if kids[0].data == "unary_not":
                self._expect_bool(operand, "!_")
                return "bool"
            if operand not in NUMERIC | {DYN}:
                raise CompileError(f"found no matching overload for '-_' applied to '({operand})'")
            return operand
        if rule in ("member", "primary"):
            return self.infer(kids[0], scope)
        if rule == "member_dot":
            return self._select(kids[0], str(kids[1]), scope)
        if rule == "member_dot_arg":
            target, name = kids[0], str(kids[1])
            args = kids[2].children if len(kids) > 2 else []
            return self._member_call(target, name, args, scope)
        if rule == "member_index":
            return self._index(self.infer(kids[0], scope), self.infer(kids[1], scope))
        if rule == "member_object":
            return self._construct(kids, scope)
        if rule == "ident":
            return self._ident(str(kids[0]), scope)
        if rule == "dot_ident":
            return self._ident(str(kids[0]), {})
        if rule in ("ident_arg", "dot_ident_arg"):
            name = str(kids[0])
            args = kids[1].children if len(kids) > 1 else []
            return self._global_call(name, args, scope)
        if rule == "paren_expr":
            return self.infer(kids[0], scope)
        if rule == "list_lit":
            elems = [self.infer(e, scope) for e in (kids[0].children if kids else [])]
            return ListOf(self._homogeneous(elems, "list"))
        if rule == "map_lit":
            inits = kids[0].children if kids else []
            keys = [self.infer(k, scope) for k in inits[0::2]]
            values = [self.infer(v, scope) for v in inits[1::2]]
            return MapOf(self._homogeneous(keys, "map key"), self._homogeneous(values, "map value"))
        if rule == "literal":
            return self._literal(kids[0])
        raise CompileError(f"unexpected syntax {rule}")

    def _construct(self, kids: list[Any], scope: dict[str, Any]) -> Any:
        """`JSONPatch{...}` or `Object.spec{...}`: declared only where patch types are."""
        name = self._qualified(kids[0])
        if "jsonpatch.escapeKey" not in self.root or name is None:
            raise CompileError("message construction: no message types are declared")
        inits = kids[1].children if len(kids) > 1 else []
        fields = [(str(inits[i]), self.infer(inits[i + 1], scope)) for i in range(0, len(inits), 2)]
        if name == "JSONPatch":
            for field_name, got in fields:
                if field_name not in JSONPATCH.fields:
                    raise CompileError(f"undefined field '{field_name}'")
                wanted = JSONPATCH.fields[field_name]
                if wanted != DYN and got not in (wanted, DYN):
                    raise CompileError(f"expected type '{wanted}' but found '{got}' (JSONPatch.{field_name})")
            return JSONPATCH
        if name == "Object" or name.startswith("Object."):
            return OBJECT if name == "Object" else DYN
        raise CompileError(f"undeclared reference to '{name}'")

    # -- names

    def _ident(self, name: str, scope: dict[str, Any]) -> Any:
        if name in scope:
            return scope[name]
        if name in self.root:
            return self.root[name]
        raise CompileError(f"undeclared reference to '{name}'")

    @staticmethod
    def _unwrap(node: Any) -> Any:
        """Down the grammar's single-child chain (expr > conditionalor > ... > member > primary)."""
        while node.data not in ("ident", "member_dot", "paren_expr"):
            kids = [c for c in node.children if c is not None]
            if len(kids) != 1 or not isinstance(kids[0], lark.Tree):
                break
            node = kids[0]
        return node

    def _qualified(self, node: Any) -> str | None:
        """`a.b.c` written as plain identifiers (a qualified function or variable name)."""
        node = self._unwrap(node)
        if node.data == "ident":
            return str(node.children[0])
        if node.data == "member_dot":
            head = self._qualified(node.children[0])
            return None if head is None else f"{head}.{node.children[1]}"
        return None

    def _select(self, target_node: Any, name: str, scope: dict[str, Any]) -> Any:
        qualified = self._qualified(target_node)
        if qualified is not None and qualified not in scope and f"{qualified}.{name}" in self.root:
            return self.root[f"{qualified}.{name}"]  # authorizer.requestResource
        return self._field(self.infer(target_node, scope), name)

    @staticmethod
    def _field(target: Any, name: str) -> Any:
        if target == DYN:
            return DYN
        if isinstance(target, MapOf):
            if target.key not in ("string", DYN, FREE):
                raise CompileError(f"type '{target}' does not support field selection")
            return target.value if target.value != FREE else DYN
        if isinstance(target, Obj):
            if name not in target.fields:
                raise CompileError(f"undefined field '{name}'")
            return target.fields[name]
        raise CompileError(f"type '{target}' does not support field selection")

    @staticmethod
    def _index(target: Any, index: Any) -> Any:
        if target == DYN:
            return DYN
        if isinstance(target, ListOf):
            if index not in NUMERIC | {DYN}:
                raise CompileError(f"found no matching overload for '_[_]' applied to '({target}, {index})'")
            return DYN if target.elem == FREE else target.elem
        if isinstance(target, MapOf):
            return DYN if target.value == FREE else target.value
        raise CompileError(f"found no matching overload for '_[_]' applied to '({target}, {index})'")

    # -- functions and macros

    def _global_call(self, name: str, args: list[Any], scope: dict[str, Any]) -> Any:
        if name == "has":
            if len(args) != 1:
                raise CompileError("has() takes exactly one argument")
            node = self._unwrap(args[0])
            if node.data != "member_dot":
                raise CompileError("invalid argument to has() macro")
            self.infer(node, scope)
            return "bool"
        if name not in ALLOWED_GLOBALS:
            raise CompileError(f"undeclared reference to '{name}'{_too_new(name)}")
        types = [self.infer(a, scope) for a in args]
        if name == "size":
            if len(types) != 1 or not (
                types[0] in ("string", "bytes", DYN) or isinstance(types[0], ListOf | MapOf)
            ):
                raise CompileError(
                    f"found no matching overload for 'size' applied to '({', '.join(map(str, types))})'"
                )
            return "int"
        if name in ("int", "uint", "double", "string", "bytes", "bool", "duration", "timestamp"):
            if len(types) != 1:
                raise CompileError(f"found no matching overload for '{name}'")
            return name
        return RESULTS.get(name, DYN)

    def _member_call(self, target_node: Any, name: str, args: list[Any], scope: dict[str, Any]) -> Any:
        if name in MACROS_MEMBER:
            return self._macro(target_node, name, args, scope)
        qualified = self._qualified(target_node)
        head = None if qualified is None else qualified.split(".")[0]
        if head is not None and head not in scope and head not in self.root:
            # Not a value: a qualified function name such as sets.contains or optional.of.
            full = f"{qualified}.{name}"
            if full in self.root and self.root[full] is PATCH_FUNCTION:
                for arg in args:
                    self.infer(arg, scope)
                return "string"
            if full not in ALLOWED_GLOBALS:
                unknown = full if head in NAMESPACES else head
                raise CompileError(f"undeclared reference to '{unknown}'{_too_new(full)}")
            for arg in args:
                self.infer(arg, scope)
            return RESULTS.get(full, DYN)
        target = self.infer(target_node, scope)
        for arg in args:
            self.infer(arg, scope)
        if name not in ALLOWED_MEMBERS:
            raise CompileError(f"undeclared reference to '{name}'{_too_new(name)}")
        if name in ("startsWith", "endsWith", "contains", "matches") and target not in ("string", DYN):
            raise CompileError(f"found no matching overload for '{name}' applied to '{target}'")
        return RESULTS.get(name, DYN)

    def _macro(self, target_node: Any, name: str, args: list[Any], scope: dict[str, Any]) -> Any:
        if not (len(args) == MACROS_MEMBER[name] or (name == "map" and len(args) == 3)):
            raise CompileError(f"{name}() takes {MACROS_MEMBER[name]} arguments, got {len(args)}")
        var = self._qualified(args[0])
        if var is None or "." in var:
            raise CompileError(f"{name}() argument must be a simple name")
        target = self.infer(target_node, scope)
        if isinstance(target, ListOf):
            elem = DYN if target.elem == FREE else target.elem
        elif isinstance(target, MapOf):
            elem = DYN if target.key == FREE else target.key
        elif target == DYN:
            elem = DYN
        else:
            raise CompileError(f"expression of type '{target}' cannot be the range of a comprehension")
        inner = {**scope, var: elem}
        bodies = [self.infer(a, inner) for a in args[1:]]
        if name in ("all", "exists", "exists_one", "filter"):
            self._expect_bool(bodies[0], name)
            return "bool" if name != "filter" else ListOf(elem)
        if len(bodies) == 2:
            self._expect_bool(bodies[0], "map")
        return ListOf(bodies[-1])

    # -- operators

    @staticmethod
    def _expect_bool(t: Any, op: str) -> None:
        if t not in ("bool", DYN):
            raise CompileError(f"found no matching overload for '{op}' applied to '{t}'")

    @staticmethod
    def _relation(op: str, left: Any, right: Any) -> str:
        if op == "relation_in":
            if not (right == DYN or isinstance(right, ListOf | MapOf)):
                raise CompileError(f"found no matching overload for '@in' applied to '({left}, {right})'")
            return "bool"
        if op in ("relation_eq", "relation_ne"):
            if "null" in (left, right) or _unify(left, right) is not None:
                return "bool"
        elif left in (DYN,) or right in (DYN,) or _unify(left, right) is not None:
            return "bool"
        raise CompileError(f"found no matching overload for '{op}' applied to '({left}, {right})'")

    @staticmethod
    def _arithmetic(op: str, left: Any, right: Any) -> Any:
        def fail() -> CompileError:
            return CompileError(f"found no matching overload for '{op}' applied to '({left}, {right})'")

        if op == "addition_add":
            if "string" in (left, right):
                if {left, right} <= {"string", DYN}:
                    return "string"
                raise fail()
            if isinstance(left, ListOf) or isinstance(right, ListOf):
                if DYN in (left, right):
                    return left if left != DYN else right
                both = _unify(left, right)
                if isinstance(both, ListOf):
                    return both
                raise fail()
        if left == DYN and right == DYN:
            return DYN
        if left in NUMERIC | {DYN} and right in NUMERIC | {DYN}:
            if left == right or DYN in (left, right):
                return left if left != DYN else right
            raise fail()
        if {left, right} & {"timestamp", "duration"} and {left, right} <= {"timestamp", "duration", DYN}:
            return DYN
        raise fail()

    # -- literals

    @staticmethod
    def _homogeneous(types: list[Any], what: str) -> Any:
        """cel.HomogeneousAggregateLiterals (base.go, every version): one element type per literal."""
        common: Any = FREE
        for t in types:
            unified = _unify(common, t)
            if unified is None or (unified == DYN and DYN not in (common, t)):
                raise CompileError(f"expected type '{common}' but found '{t}' ({what} literal)")
            common = unified
        return common

    @staticmethod
    def _literal(token: Any) -> str:
        kind = token.type
        if kind in ("STRING_LIT", "MLSTRING_LIT"):
            return "string"
        if kind == "BYTES_LIT":
            return "bytes"
        if kind == "BOOL_LIT":
            return "bool"
        if kind == "NULL_LIT":
            return "null"
        if kind == "UINT_LIT":
            return "uint"
        if kind == "FLOAT_LIT":
            return "double"
        return "int"


# --- a policy, field by field ----------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    policy: str
    where: str
    expression: str
    error: str

    def __str__(self) -> str:
        return f"{self.policy} {self.where}: {self.error}\n    {self.expression!r}"


def _returns(where: str, got: Any, wanted: str) -> str | None:
    if got == wanted:
        return None
    return f"must evaluate to {wanted} but got {got}"


def compile_policy(policy: Json) -> Iterator[Finding]:
    """Every error the API server's validation would report for this policy's expressions."""
    name = policy["metadata"]["name"]
    spec = policy["spec"]
    params = spec.get("paramKind") is not None

    def compile_one(where: str, expression: str, env: Env, wanted: str | None) -> Any:
        try:
            got = Checker(env).check(expression)
        except CompileError as exc:
            findings.append(Finding(name, where, expression, f"compilation failed: {exc}"))
            return DYN
        problem = _returns(where, got, wanted) if wanted else None
        if problem:
            findings.append(Finding(name, where, expression, problem))
        return got

    findings: list[Finding] = []
    for i, condition in enumerate(spec.get("matchConditions", [])):
        env = Env(params=params, authorizer=True, variables=None)
        compile_one(f"spec.matchConditions[{i}].expression", condition["expression"], env, "bool")
    variables: dict[str, Any] = {}
    for i, variable in enumerate(spec.get("variables", [])):
        env = Env(params=params, authorizer=True, variables=dict(variables))
        variables[variable["name"]] = compile_one(
            f"spec.variables[{i}].expression ({variable['name']})", variable["expression"], env, None
        )
    full = Env(params=params, authorizer=True, variables=variables)
    for i, validation in enumerate(spec.get("validations", [])):
        compile_one(f"spec.validations[{i}].expression", validation["expression"], full, "bool")
        if validation.get("messageExpression", "").strip():
            no_authorizer = Env(params=params, authorizer=False, variables=variables)
            compile_one(
                f"spec.validations[{i}].messageExpression",
                validation["messageExpression"],
                no_authorizer,
                "string",
            )
    for i, mutation in enumerate(spec.get("mutations", [])):
        patch_env = Env(params=params, authorizer=True, variables=variables, patch_types=True)
        if mutation["patchType"] == "JSONPatch":
            where = f"spec.mutations[{i}].jsonPatch.expression"
            expression = mutation["jsonPatch"]["expression"]
            got = compile_one(where, expression, patch_env, None)
            if got != DYN and got != ListOf(JSONPATCH):
                findings.append(
                    Finding(name, where, expression, f"must evaluate to list(JSONPatch) but got {got}")
                )
        else:
            where = f"spec.mutations[{i}].applyConfiguration.expression"
            expression = mutation["applyConfiguration"]["expression"]
            got = compile_one(where, expression, patch_env, None)
            if got is not OBJECT:
                findings.append(Finding(name, where, expression, f"must evaluate to Object but got {got}"))
    for i, annotation in enumerate(spec.get("auditAnnotations", [])):
        where = f"spec.auditAnnotations[{i}].valueExpression"
        got = compile_one(where, annotation["valueExpression"], full, None)
        if got not in ("string", "null", DYN):
            findings.append(
                Finding(name, where, annotation["valueExpression"], f"must evaluate to string but got {got}")
            )
    yield from findings


POLICY_KINDS = ("ValidatingAdmissionPolicy", "MutatingAdmissionPolicy")


def policies_in(text: str) -> list[Json]:
    return [d for d in yaml.safe_load_all(text) if d and d.get("kind") in POLICY_KINDS]


def _current() -> list[Json]:
    """Every policy under manifests/admission/, the guardrails and the placement mutation included."""
    return [p for path in sorted(ADMISSION.rglob("*.yaml")) for p in policies_in(path.read_text())]


POLICIES = _current()


# === the manifests compile ==================================================================


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p["metadata"]["name"])
def test_every_expression_compiles_in_its_own_environment(policy: Json) -> None:
    findings = list(compile_policy(policy))
    assert not findings, "the API server would refuse this policy:\n" + "\n".join(map(str, findings))


def test_every_policy_is_checked() -> None:
    names = {p["metadata"]["name"] for p in POLICIES}
    assert {
        "tenantry-protect-managed-objects",
        "tenantry-protect-namespace-labels",
        "tenantry-quota-approval",
        "tenantry-guardrail-classes",
        "tenantry-guardrail-workloads",
        "tenantry-guardrail-services",
        "tenantry-guardrail-labels",
        "tenantry-guardrail-parameter",
        "tenantry-guardrail-placement",
        "tenantry-guardrail-hosts",
        "tenantry-guardrail-volumes",
        "tenantry-guardrail-tokens",
        "tenantry-guardrail-image-pulls",
        "tenantry-guardrail-rbac",
        "tenantry-guardrail-network-policies",
        "tenantry-placement",
        "tenantry-image-pulls",
        "tenantry-organization-finalizer",
        "tenantry-mfa",
        "tenantry-grant-approval",
    } == names
    for policy in POLICIES:
        spec = policy["spec"]
        assert spec.get("validations") or spec.get("mutations")
        # Every policy but the parameterless one-rule tokens guardrail names its terms.
        assert spec.get("variables") or policy["metadata"]["name"] == "tenantry-guardrail-tokens"


# === the regression: what 1.36.2 refused =====================================================

# The quota-approval policy as the API server refused it (commit 604ce91, trimmed to the fields
# that are compiled): "spec.matchConditions[0].expression: ... undeclared reference to 'variables'".
REFUSED = """
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: tenantry-quota-approval
spec:
  failurePolicy: Fail
  paramKind: {apiVersion: tenantry.dev/v1alpha1, kind: TenancyPolicy}
  variables:
    - name: policyName
      expression: "has(object.spec.policy) ? object.spec.policy : 'default'"
    - name: oldSpec
      expression: "oldObject == null || !has(oldObject.spec) ? {} : oldObject.spec"
    - name: approvalWritten
      expression: >-
        has(object.spec.quotaApproval) && (
        !has(variables.oldSpec.quotaApproval) ||
        variables.oldSpec.quotaApproval != object.spec.quotaApproval)
  matchConditions:
    - name: quota-approval-written
      expression: variables.approvalWritten
    - name: organizations-own-policy
      expression: params.metadata.name == variables.policyName
  validations:
    - expression: variables.approvalWritten
      messageExpression: "'written by ' + request.userInfo.username"
"""


def test_the_refused_policy_is_refused_for_variables_in_match_conditions() -> None:
    (policy,) = policies_in(REFUSED)
    findings = list(compile_policy(policy))
    assert [(f.where, f.error) for f in findings] == [
        ("spec.matchConditions[0].expression", "compilation failed: undeclared reference to 'variables'"),
        ("spec.matchConditions[1].expression", "compilation failed: undeclared reference to 'variables'"),
    ]


OLD_COMMIT = "604ce91"  # the last commit with the manifests the API server refused


def _old_manifests() -> list[Json]:
    try:
        names = subprocess.run(
            ["git", "-C", str(ROOT), "ls-tree", "--name-only", OLD_COMMIT, "manifests/admission/"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        texts = [
            subprocess.run(
                ["git", "-C", str(ROOT), "show", f"{OLD_COMMIT}:{name}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            for name in names
            if name.endswith(".yaml")
        ]
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"no git history with commit {OLD_COMMIT} here")
    return [p for text in texts for p in policies_in(text)]


def test_the_old_manifests_are_refused_like_the_real_api_server_refused_them() -> None:
    """All three policies of the old manifests, from git: each one has a matchCondition that
    reads `variables`, the exact error 1.36.2 gave."""
    old = _old_manifests()
    # Policies added after that regression: the guardrails and the production-access ones.
    guardrails = (
        "tenantry-guardrail-",
        "tenantry-placement",
        "tenantry-image-pulls",
        "tenantry-organization-finalizer",
        "tenantry-mfa",
        "tenantry-grant-approval",
    )
    assert {p["metadata"]["name"] for p in old} == {
        p["metadata"]["name"] for p in POLICIES if not p["metadata"]["name"].startswith(guardrails)
    }
    for policy in old:
        errors = {(f.where, f.error) for f in compile_policy(policy)}
        assert (
            "spec.matchConditions[0].expression",
            "compilation failed: undeclared reference to 'variables'",
        ) in errors


# === the checker refuses what the API server refuses =========================================


def _policy(**spec: Any) -> Json:
    base: Json = {
        "failurePolicy": "Fail",
        "paramKind": {"apiVersion": "tenantry.dev/v1alpha1", "kind": "TenancyPolicy"},
        "validations": [{"expression": "true"}],
    }
    base.update(spec)
    return {"kind": "ValidatingAdmissionPolicy", "metadata": {"name": "p"}, "spec": base}


def _errors(**spec: Any) -> list[str]:
    return [f"{f.where}: {f.error}" for f in compile_policy(_policy(**spec))]


def test_a_variable_sees_only_earlier_variables() -> None:
    variables = [
        {"name": "a", "expression": "variables.b"},
        {"name": "b", "expression": "'x'"},
        {"name": "c", "expression": "variables.b + variables.nope"},
    ]
    assert _errors(variables=variables) == [
        "spec.variables[0].expression (a): compilation failed: undefined field 'b'",
        "spec.variables[2].expression (c): compilation failed: undefined field 'nope'",
    ]


def test_match_conditions_see_no_variables_and_params_only_with_a_param_kind() -> None:
    assert _errors(matchConditions=[{"name": "m", "expression": "params.metadata.name == 'x'"}]) == []
    without = _policy(matchConditions=[{"name": "m", "expression": "params.metadata.name == 'x'"}])
    del without["spec"]["paramKind"]
    assert [f.error for f in compile_policy(without)] == [
        "compilation failed: undeclared reference to 'params'"
    ]
    assert (
        _errors(
            matchConditions=[
                {"name": "m", "expression": "authorizer.group('').resource('pods').check('get').allowed()"}
            ]
        )
        == []
    )


def test_message_expressions_get_no_authorizer_and_must_be_strings() -> None:
    validations = [
        {"expression": "true", "messageExpression": "authorizer.path('/x').check('get').reason()"},
        {"expression": "true", "messageExpression": "size(request.name)"},
        {"expression": "true", "messageExpression": "'ok ' + object.metadata.name"},
        {"expression": "object.spec.x"},
    ]
    assert _errors(validations=validations) == [
        "spec.validations[0].messageExpression: compilation failed: undeclared reference to 'authorizer'",
        "spec.validations[1].messageExpression: must evaluate to string but got int",
        "spec.validations[3].expression: must evaluate to bool but got dyn",
    ]


def test_the_request_is_a_typed_object() -> None:
    validations = [
        {"expression": "request.userInfo.username == 'x'"},
        {"expression": "request.user == 'x'"},
        {"expression": "has(request.userInfo.group)"},
        {"expression": "request.operation == 1"},
        {"expression": "request.name.size() > 0 && request.name.foo"},
    ]
    assert _errors(validations=validations) == [
        "spec.validations[1].expression: compilation failed: undefined field 'user'",
        "spec.validations[2].expression: compilation failed: undefined field 'group'",
        "spec.validations[3].expression: compilation failed: "
        "found no matching overload for 'relation_eq' applied to '(string, int)'",
        "spec.validations[4].expression: compilation failed: type 'string' does not support field selection",
    ]


def test_functions_outside_the_kubernetes_1_30_environment_are_refused() -> None:
    validations = [
        {"expression": "isIP(object.spec.address)"},  # IP library: 1.30, new expressions from 1.31
        {"expression": "object.spec.name.reverse() == 'x'"},  # strings v3: never in base.go's list
        {"expression": "sets.contains([1], [1])"},
        {"expression": "object.spec.names.all(n, n.lowerAscii() == n) && object.spec.q.isQuantity()"},
        {"expression": "quantity(object.spec.q).isGreaterThan(quantity('1'))"},
        {"expression": "frobnicate(1)"},
        {"expression": "has(object)"},
        {"expression": "object.spec.all(k, v, v == 1)"},  # two-variable comprehensions: 1.32
        {"expression": "[1, 'a'] == []"},  # homogeneous aggregate literals
    ]
    assert _errors(validations=validations) == [
        "spec.validations[0].expression: compilation failed: undeclared reference to 'isIP' "
        "(Kubernetes IP and CIDR libraries, introduced at 1.30: new expressions from 1.31)",
        "spec.validations[1].expression: compilation failed: undeclared reference to 'reverse'",
        "spec.validations[3].expression: compilation failed: undeclared reference to 'isQuantity'",
        "spec.validations[5].expression: compilation failed: undeclared reference to 'frobnicate'",
        "spec.validations[6].expression: compilation failed: invalid argument to has() macro",
        "spec.validations[7].expression: compilation failed: all() takes 2 arguments, got 3",
        "spec.validations[8].expression: compilation failed: "
        "expected type 'int' but found 'string' (list literal)",
    ]


def test_comprehension_variables_are_scoped_to_their_macro() -> None:
    validations = [
        {"expression": "object.spec.items.exists(i, i.name == 'x') && i.name == 'y'"},
        {"expression": "object.spec.items.exists(i, object.spec.items.all(j, i == j))"},
    ]
    assert _errors(validations=validations) == [
        "spec.validations[0].expression: compilation failed: undeclared reference to 'i'",
    ]


# === MutatingAdmissionPolicy: the patch types exist in mutations only =========================


def _mutating(**spec: Any) -> Json:
    base: Json = {
        "failurePolicy": "Fail",
        "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
        "reinvocationPolicy": "IfNeeded",
    }
    base.update(spec)
    return {"kind": "MutatingAdmissionPolicy", "metadata": {"name": "m"}, "spec": base}


def _jsonpatch(expression: str) -> Json:
    return {"patchType": "JSONPatch", "jsonPatch": {"expression": expression}}


def test_mutations_see_the_patch_types_and_nothing_else_does() -> None:
    good = "[JSONPatch{op: 'add', path: '/spec/x/' + jsonpatch.escapeKey('a/b'), value: {'k': 'v'}}]"
    policy = _mutating(
        variables=[{"name": "p", "expression": "JSONPatch{op: 'add', path: '/x'}"}],
        matchConditions=[{"name": "c", "expression": "jsonpatch.escapeKey('a') == 'a'"}],
        mutations=[_jsonpatch(good), _jsonpatch("JSONPatch{op: 'add', path: '/x'}")],
    )
    assert [(f.where, f.error) for f in compile_policy(policy)] == [
        ("spec.matchConditions[0].expression", "compilation failed: undeclared reference to 'jsonpatch'"),
        (
            "spec.variables[0].expression (p)",
            "compilation failed: message construction: no message types are declared",
        ),
        ("spec.mutations[1].jsonPatch.expression", "must evaluate to list(JSONPatch) but got JSONPatch"),
    ]


def test_a_jsonpatch_has_four_fields_and_string_paths() -> None:
    policy = _mutating(
        mutations=[
            _jsonpatch("[JSONPatch{op: 'add', pth: '/x'}]"),
            _jsonpatch("[JSONPatch{op: 'add', path: 1}]"),
            {"patchType": "ApplyConfiguration", "applyConfiguration": {"expression": "Object{}"}},
            {"patchType": "ApplyConfiguration", "applyConfiguration": {"expression": "'x'"}},
        ]
    )
    assert [f.error for f in compile_policy(policy)] == [
        "compilation failed: undefined field 'pth'",
        "compilation failed: expected type 'string' but found 'int' (JSONPatch.path)",
        "must evaluate to Object but got string",
    ]
