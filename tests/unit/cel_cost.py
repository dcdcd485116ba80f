"""A conservative re-implementation of the API server's static cost estimate of CRD CEL rules.

A real API server refuses a CustomResourceDefinition whose `x-kubernetes-validations` rules
are estimated too expensive, before any object is validated; kmock, jsonschema and cel-python
know nothing of it. This module estimates the same numbers from the CRD alone, so a unit test
can refuse what the API server would. It is written from the rules read in Kubernetes 1.36.2's
and cel-go 0.26.0's sources (the versions a 1.36.2 API server is built with); no code of
theirs is copied. The sources, and what each contributes:

- k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation/validation.go:
  `StaticEstimatedCostLimit = 10_000_000` per rule and `StaticEstimatedCRDCostLimit =
  100_000_000` for the sum over the whole schema; a rule's cost is its per-call estimate times
  the cardinality of its schema node (`getExpressionCost`), and the "exceeds budget by factor
  of ..." wording (`getCostErrorMessage`).
- .../apiextensions/validation/cel_validation.go: the cardinality. The root has 1; a child
  has its parent's times the parent's `maxItems` (array) or `maxProperties` (map), times 1
  for an object's properties (`extractMaxElements`). Below any unbounded list or map it is
  unbounded, and the rule's own fallback is used instead.
- .../apiserver/schema/cel/compilation.go: that fallback, `maxCardinality`:
  3 MiB (`MaxRequestSizeBytes`, k8s.io/apiserver/pkg/apis/cel/config.go) divided by the
  node's minimum serialized size + 1; and the size estimator, which follows a field path
  (`self.spec.x`, list items, map keys and values) to the schema and answers its
  `MaxElements`.
- k8s.io/apiserver/pkg/cel/common/schemas.go (`SchemaDeclType`) and limits.go: the sizes.
  A string is `4 * maxLength` (bytes per code point), or its longest `enum` value, or 12
  (`format: date`) / 32 (`date-time`, `duration`), else 3 MiB - 2. An int-or-string is
  `4 * maxLength` or 3 MiB - 2. A list is `maxItems`, else (3 MiB - 2) / (item min size + 1);
  a map is `maxProperties`, else (3 MiB - 2) / (value min size + 6). Minimum sizes: string 2,
  int 1, bool 4, list and map 2, object 2 + the sizes of its required properties without a
  default (`len(name) + 4 + size`), int-or-string 1, date 12, date-time 21. Map keys, ints and
  bools have `MaxElements` 0. At the root, `apiVersion`, `kind`, `metadata.name` and
  `metadata.generateName` are replaced by unbounded strings unless the schema declares all
  four as strings (apiextensions-apiserver/pkg/apiserver/schema/cel/model/schemas.go,
  `WithTypeAndObjectMeta`).
- github.com/google/cel-go/checker/cost.go and common/cost.go: the cost of each construct.
  Identifier 1; field selection +1 on an object or map; constants 0; `has()` 0 (Kubernetes
  sets `PresenceTestHasCost(false)`, k8s.io/apiserver/pkg/cel/environment/base.go); list
  literal +10, map literal +30; `&&`, `||` the sum of both sides; `?:` the condition plus the
  dearer branch; a comprehension its range, init and result, plus size(range) * (loop
  condition + loop step), with the macros expanded as cel-go's parser/macro.go does
  (all: condition 2, step 1 + predicate; exists: 3 and 1 + predicate; exists_one: step
  2 + predicate, result 2; map: init 10, step 12 + transform; filter: init 10, step
  13 + predicate); `==`, `!=` and string/bytes comparisons ceil(0.1 * the smaller size);
  string `+` ceil(0.1 * (sum of sizes)), the result as long as both; `x in list` size(list);
  `startsWith`/`endsWith` ceil(0.1 * size(arg)); `contains` ceil(0.1 * size(target)) *
  ceil(0.1 * size(arg)); `matches` ceil(0.1 * (size(target) + 1)) * ceil(0.25 *
  size(regex)); everything else (size(), `!`, arithmetic, int comparisons, indexing, `in`
  a map) 1; each call adds the cost of its arguments and target. Sizes are cel-go's
  `computeSize`: literals their length, schema paths the size estimator, other scalars 1,
  anything else unknown (2^64 - 1). Kubernetes' own estimator
  (k8s.io/apiserver/pkg/cel/library/cost.go) adds its library's functions; of those, the CIDR
  ones: `isCIDR(s)` and `cidr(s)` ceil(0.1 * size(s)); `masked()` 1; `==` of two CIDRs 1 (but
  `!=` is cel-go's, over an unknown size: write `!(a == b)`);
  `containsCIDR(c)` ceil(0.1 * 32) + ceil(0.1 * 16) + 1 (two IPv6 byte lists compared, the base
  masked), plus ceil(0.1 * size(c)) when `c` is a string to parse; a CIDR's size is unknown.

Where the estimate can be exact it is: calibrated against a real 1.36.2 API server's verdicts
on the CRDs it refused (tests/data/crds-refused-by-1.36/, test_crd_cel_cost.py), it
reproduces every reported factor. Where it cannot be, it errs upwards or refuses:
only the maximum is tracked (the server also uses only the maximum); any function,
operator or shape not listed above raises `UnsupportedError` rather than being guessed at, so a
new rule either gets an estimate that follows the rules above or makes the test fail until
the estimator learns it.
"""

from __future__ import annotations

import codecs
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import lark
from celpy.celparser import CELParser

# k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation/validation.go
PER_RULE_LIMIT = 10_000_000  # StaticEstimatedCostLimit
PER_CRD_LIMIT = 100_000_000  # StaticEstimatedCRDCostLimit
# k8s.io/apiserver/pkg/apis/cel/config.go
MAX_REQUEST_SIZE = 3 * 1024 * 1024  # MaxRequestSizeBytes
U64 = 2**64 - 1

# k8s.io/apiserver/pkg/cel/limits.go
MIN_STRING_SIZE = 2
MIN_BOOL_SIZE = 4
MIN_NUMBER_SIZE = 1
JSON_DATE_SIZE = 12
MIN_DATETIME_SIZE = 21
MIN_DURATION_SIZE = 3
MAX_DATETIME_SIZE = 32
MAX_DURATION_SIZE = 32

# cel-go common/cost.go
SELECT_AND_IDENT = 1
LIST_CREATE = 10
MAP_CREATE = 30
STRING_TRAVERSAL = 0.1
REGEX_LENGTH = 0.25

CEL_RESERVED = {
    "true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function",
    "if", "import", "let", "loop", "package", "namespace", "return", "var", "void", "while",
}  # fmt: skip


class UnsupportedError(Exception):
    """A construct the estimator does not model; extend it rather than guess."""


class CompileError(Exception):
    """What the API server's CEL compiler would refuse (an unknown field, a type mismatch)."""


def add(*values: int) -> int:
    return min(U64, sum(values))


def mul(a: int, b: int) -> int:
    return min(U64, a * b)


def factor(size: int, per_unit: float) -> int:
    """cel-go's multiplyByCostFactor: ceil(size * factor) in float64, saturating."""
    product = math.ceil(float(size) * per_unit)
    return U64 if product >= 2.0**64 else int(product)


# --- schema -> CEL declarations (SchemaDeclType) ---------------------------------------------


@dataclass
class Decl:
    """What the API server's CEL environment knows of one schema node."""

    kind: str  # string bytes int double bool dyn timestamp duration list map object
    max_elements: int = 0
    min_size: int = 1
    fields: dict[str, DeclField] = field(default_factory=dict)
    elem: Decl | None = None
    key: Decl | None = None


@dataclass
class DeclField:
    name: str  # as in the schema (the CEL name is the dict key, escaped)
    decl: Decl
    required: bool
    has_default: bool


def escape(name: str) -> str | None:
    """Kubernetes' CEL escaping of property names (k8s.io/apiserver/pkg/cel/escaping.go)."""
    if not name or name[0].isdigit():
        return None
    if name in CEL_RESERVED:
        return f"__{name}__"
    out = []
    i = 0
    while i < len(name):
        if name.startswith("__", i):
            out.append("__underscores__")
            i += 2
            continue
        char = name[i]
        if char == ".":
            out.append("__dot__")
        elif char == "-":
            out.append("__dash__")
        elif char == "/":
            out.append("__slash__")
        elif char.isascii() and (char.isalnum() or char == "_"):
            out.append(char)
        else:
            return None
        i += 1
    return "".join(out)


STRING_KEY = Decl("string", max_elements=0, min_size=MIN_STRING_SIZE)  # map keys: MaxElements 0


def _with_type_and_object_meta(schema: dict[str, Any]) -> dict[str, Any]:
    props = schema.get("properties") or {}
    meta = props.get("metadata") or {}
    meta_props = meta.get("properties") or {}
    if (
        props.get("kind", {}).get("type") == "string"
        and props.get("apiVersion", {}).get("type") == "string"
        and meta.get("type") == "object"
        and meta_props.get("name", {}).get("type") == "string"
        and meta_props.get("generateName", {}).get("type") == "string"
    ):
        return schema
    plain = {"type": "string"}
    props = {
        **props,
        "kind": plain,
        "apiVersion": plain,
        "metadata": {"type": "object", "properties": {"name": plain, "generateName": plain}},
    }
    return {**schema, "properties": props}


def _string_max(schema: dict[str, Any]) -> int:
    if "maxLength" in schema:
        return 4 * max(0, int(schema["maxLength"]))
    if schema.get("enum"):
        return max(len(v) for v in schema["enum"] if isinstance(v, str))
    return MAX_REQUEST_SIZE - 2


def schema_decl(schema: dict[str, Any], is_root: bool = False) -> Decl | None:
    """The CEL declaration of a structural schema node, as SchemaDeclType builds it."""
    if schema.get("x-kubernetes-int-or-string"):
        size = 4 * schema["maxLength"] if "maxLength" in schema else MAX_REQUEST_SIZE - 2
        return Decl("dyn", max_elements=size, min_size=1)
    if is_root:
        schema = _with_type_and_object_meta(schema)
    kind = schema.get("type")
    if kind == "array":
        if "items" not in schema:
            return None
        item = schema_decl(schema["items"], schema["items"].get("x-kubernetes-embedded-resource", False))
        if item is None:
            return None
        count = schema.get("maxItems", (MAX_REQUEST_SIZE - 2) // (item.min_size + 1))
        return Decl("list", max_elements=max(0, count), min_size=2, elem=item)
    if kind == "object":
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            value = schema_decl(extra, extra.get("x-kubernetes-embedded-resource", False))
            if value is None:
                return None
            count = schema.get("maxProperties", (MAX_REQUEST_SIZE - 2) // (value.min_size + 6))
            return Decl("map", max_elements=max(0, count), min_size=2, elem=value, key=STRING_KEY)
        required = set(schema.get("required", []))
        fields: dict[str, DeclField] = {}
        min_size = 2
        for name, prop in (schema.get("properties") or {}).items():
            sub = schema_decl(prop, prop.get("x-kubernetes-embedded-resource", False))
            if sub is None:
                continue
            escaped = escape(name)
            if escaped is not None:
                fields[escaped] = DeclField(name, sub, name in required, "default" in prop)
            if name in required and "default" not in prop:
                min_size += len(name) + sub.min_size + 4
        return Decl("object", min_size=min_size, fields=fields)
    if kind == "string":
        fmt = schema.get("format")
        if fmt == "byte":
            return Decl("bytes", schema.get("maxLength", MAX_REQUEST_SIZE - 2), MIN_STRING_SIZE)
        if fmt == "duration":
            return Decl("duration", MAX_DURATION_SIZE, MIN_DURATION_SIZE)
        if fmt == "date":
            return Decl("timestamp", JSON_DATE_SIZE, JSON_DATE_SIZE)
        if fmt == "date-time":
            return Decl("timestamp", MAX_DATETIME_SIZE, MIN_DATETIME_SIZE)
        return Decl("string", _string_max(schema), MIN_STRING_SIZE)
    if kind == "boolean":
        return Decl("bool", 0, MIN_BOOL_SIZE)
    if kind == "number":
        return Decl("double", 0, MIN_NUMBER_SIZE)
    if kind == "integer":
        return Decl("int", 0, MIN_NUMBER_SIZE)
    return None


# --- CEL source -> a small AST -----------------------------------------------------------------


@dataclass
class Node:
    """A CEL expression: op is 'lit', 'ident', 'select', 'has', 'call', 'list', 'map', 'macro'."""

    op: str
    name: str = ""  # function, field, identifier or macro name; literal type for 'lit'
    args: list[Node] = field(default_factory=list)
    target: Node | None = None  # the operand of select/has, the receiver of a member call
    value: Any = None  # literal value; iteration variable of a macro


_BINARY = {
    "conditionalor": "_||_",
    "conditionaland": "_&&_",
    "relation_lt": "_<_",
    "relation_le": "_<=_",
    "relation_gt": "_>_",
    "relation_ge": "_>=_",
    "relation_eq": "_==_",
    "relation_ne": "_!=_",
    "relation_in": "@in",
    "addition_add": "_+_",
    "addition_sub": "_-_",
    "multiplication_mul": "_*_",
    "multiplication_div": "_/_",
    "multiplication_mod": "_%_",
}
MACROS = {"all", "exists", "exists_one", "map", "filter"}
_PARSER = CELParser()


def parse(rule: str) -> Node:
    return _convert(_PARSER.parse(rule))


def _kids(tree: lark.Tree[Any]) -> list[Any]:
    return [c for c in tree.children if c is not None]


def _exprlist(tree: Any) -> list[Node]:
    return [] if tree is None else [_convert(c) for c in _kids(tree)]


def _literal(token: lark.Token) -> Node:
    text = str(token)
    kind = token.type
    if kind in ("STRING_LIT", "MLSTRING_LIT"):
        raw = text[0] in "rR"
        body = text[1:] if raw else text
        quote = 3 if body[:3] in ('"""', "'''") else 1
        body = body[quote:-quote]
        value = body if raw else codecs.decode(body, "unicode_escape")
        return Node("lit", "string", value=value)
    if kind == "BYTES_LIT":
        return Node("lit", "bytes", value=_literal(lark.Token("STRING_LIT", text[1:])).value.encode())
    if kind == "INT_LIT":
        return Node("lit", "int", value=int(text, 0))
    if kind == "UINT_LIT":
        return Node("lit", "uint", value=int(text[:-1], 0))
    if kind == "FLOAT_LIT":
        return Node("lit", "double", value=float(text))
    if kind == "BOOL_LIT":
        return Node("lit", "bool", value=text == "true")
    return Node("lit", "null")


def _convert(tree: Any) -> Node:
    if isinstance(tree, lark.Token):
        raise UnsupportedError(f"unexpected token {tree!r}")
    kids = _kids(tree)
    rule = tree.data
    if rule in ("expr",):
        if len(kids) == 1:
            return _convert(kids[0])
        return Node("call", "_?_:_", [_convert(k) for k in kids])
    if rule in ("conditionalor", "conditionaland", "relation", "addition", "multiplication"):
        if len(kids) == 1:
            return _convert(kids[0])
        left, right = kids
        if rule in ("conditionalor", "conditionaland"):
            return Node("call", _BINARY[rule], [_convert(left), _convert(right)])
        (lhs,) = _kids(left)
        return Node("call", _BINARY[left.data], [_convert(lhs), _convert(right)])
    if rule == "unary":
        if len(kids) == 1:
            return _convert(kids[0])
        op, operand = kids
        return Node("call", "!_" if op.data == "unary_not" else "-_", [_convert(operand)])
    if rule in ("member", "primary", "paren_expr"):
        (only,) = kids
        return _convert(only)
    if rule == "member_dot":
        operand, name = kids
        return Node("select", str(name), target=_convert(operand))
    if rule == "member_dot_arg":
        operand, name, *rest = kids
        args = _exprlist(rest[0] if rest else None)
        if str(name) in MACROS:
            if not args or args[0].op != "ident":
                raise CompileError(f"{name}() argument must be a simple name")
            if len(args) != (3 if str(name) == "map" and len(args) == 3 else 2):
                raise UnsupportedError(f"{name}() with {len(args)} arguments")
            return Node("macro", str(name), args[1:], target=_convert(operand), value=args[0].name)
        return Node("call", str(name), args, target=_convert(operand))
    if rule == "member_index":
        operand, index = kids
        return Node("call", "_[_]", [_convert(operand), _convert(index)])
    if rule == "ident_arg":
        name, *rest = kids
        args = _exprlist(rest[0] if rest else None)
        if str(name) == "has":
            if len(args) != 1 or args[0].op != "select":
                raise CompileError("invalid argument to has() macro")
            return Node("has", args[0].name, target=args[0].target)
        return Node("call", str(name), args)
    if rule == "ident":
        return Node("ident", str(kids[0]))
    if rule == "literal":
        return _literal(kids[0])
    if rule == "list_lit":
        return Node("list", args=_exprlist(kids[0] if kids else None))
    if rule == "map_lit":
        return Node("map", args=_exprlist(kids[0] if kids else None))
    raise UnsupportedError(f"CEL construct {rule}")


# --- the cost of one rule (cel-go checker/cost.go) --------------------------------------------

SCALARS = {"bool", "int", "uint", "double", "timestamp", "duration"}


@dataclass
class Val:
    """An expression's cost so far, its type, and cel-go's size estimate for it."""

    cost: int
    decl: Decl  # the type (a schema node, or made up for literals and results)
    size: int | None  # None: unknown to cel-go (2^64 - 1)
    from_schema: bool = False  # the size came from a field path into the schema


def _type_size(decl: Decl) -> int | None:
    return 1 if decl.kind in SCALARS else None


def _size(val: Val) -> int:
    return U64 if val.size is None else val.size


def _schema_val(cost: int, decl: Decl) -> Val:
    """A value reached by a field path: the size estimator answers MaxElements."""
    return Val(cost, decl, decl.max_elements, from_schema=True)


def _result(cost: int, decl: Decl, size: int | None = None) -> Val:
    return Val(cost, decl, size if size is not None else _type_size(decl))


BOOL = Decl("bool")
INT = Decl("int")
CIDR_TYPE = Decl("cidr")  # k8s' opaque CIDR type (cel/library/cidr.go)


class Coster:
    def __init__(self, root: Decl) -> None:
        self.root = root
        # What a rule does that the budget punishes, for tests that forbid it outright.
        self.concatenations = 0  # string/bytes `+`
        self.regex_inputs: list[int] = []  # the size of each string matches() runs over

    def cost(self, rule: str) -> int:
        return self.visit(parse(rule), {}).cost

    def visit(self, node: Node, scope: dict[str, Val]) -> Val:
        if node.op == "lit":
            kind = {"null": "null"}.get(node.name, node.name)
            size = len(node.value) if node.name in ("string", "bytes") else 1
            return Val(0, Decl(kind), size)
        if node.op == "ident":
            if node.name in scope:
                v = scope[node.name]
                return Val(SELECT_AND_IDENT, v.decl, v.size, v.from_schema)
            if node.name in ("self", "oldSelf"):
                return _schema_val(SELECT_AND_IDENT, self.root)
            raise CompileError(f"undeclared reference to '{node.name}'")
        if node.op in ("select", "has"):
            assert node.target is not None
            operand = self.visit(node.target, scope)
            decl = operand.decl
            if decl.kind == "object":
                if node.name not in decl.fields:
                    raise CompileError(f"undefined field '{node.name}'")
                sub = decl.fields[node.name].decl
            elif decl.kind == "map":
                assert decl.elem is not None
                sub = decl.elem
            else:
                raise UnsupportedError(f"field selection on {decl.kind}")
            if node.op == "has":  # presence tests cost nothing in Kubernetes (cost 0 + operand)
                return _result(operand.cost, BOOL)
            cost = add(operand.cost, SELECT_AND_IDENT)
            if decl.kind == "object" and operand.from_schema:
                return _schema_val(cost, sub)
            # a map entry by name: the size estimator finds no such field in the schema
            return _result(cost, sub)
        if node.op == "list":
            items = [self.visit(a, scope) for a in node.args]
            elem = items[0].decl if items else Decl("dyn")
            return Val(add(LIST_CREATE, *(i.cost for i in items)), Decl("list", elem=elem), len(items))
        if node.op == "map":
            entries = [self.visit(a, scope) for a in node.args]
            return Val(add(MAP_CREATE, *(e.cost for e in entries)), Decl("map"), len(entries) // 2)
        if node.op == "macro":
            return self.macro(node, scope)
        if node.op == "call":
            return self.call(node, scope)
        raise UnsupportedError(node.op)

    def macro(self, node: Node, scope: dict[str, Val]) -> Val:
        assert node.target is not None
        rng = self.visit(node.target, scope)
        if rng.decl.kind == "list":
            assert rng.decl.elem is not None
            item_decl = rng.decl.elem
        elif rng.decl.kind == "map":
            item_decl = STRING_KEY
        else:
            raise CompileError(f"{node.name}() over {rng.decl.kind}")
        if not rng.from_schema:
            # cel-go sizes the iteration variable of a literal or computed range by other rules
            # (and, for a literal list inside a rule on a map, oddly); not modelled.
            raise UnsupportedError(f"{node.name}() over a range that is not a schema field")
        var = _schema_val(SELECT_AND_IDENT, item_decl)
        inner = {**scope, str(node.value): var}
        body = [self.visit(a, inner) for a in node.args]
        count = _size(rng)
        accu = SELECT_AND_IDENT  # the @result accumulator identifier
        if node.name == "all":  # init true; condition @not_strictly_false(@result); step @result && p
            init, condition, step, result, out = 0, accu + 1, accu + body[0].cost, accu, BOOL
        elif node.name == "exists":  # condition @not_strictly_false(!@result); step @result || p
            init, condition, step, result, out = 0, accu + 2, accu + body[0].cost, accu, BOOL
        elif node.name == "exists_one":  # step p ? @result + 1 : @result; result @result == 1
            init, condition, step, result, out = 0, 0, body[0].cost + accu + 1, accu + 1, BOOL
        elif node.name == "map":  # init []; step @result + [f] (or p ? @result + [f] : @result)
            transform = body[-1].cost
            step = 1 + accu + LIST_CREATE + transform
            if len(body) == 2:
                step = body[0].cost + max(step, accu)
            init, condition, result = LIST_CREATE, 0, accu
            out = Decl("list", elem=body[-1].decl)
        else:  # filter: init []; step p ? @result + [x] : @result
            init, condition, result = LIST_CREATE, 0, accu
            step = body[0].cost + max(1 + accu + LIST_CREATE + SELECT_AND_IDENT, accu)
            out = Decl("list", elem=item_decl)
        cost = add(rng.cost, init, result, mul(count, add(step, condition)))
        size = count if out.kind == "list" else 1
        return Val(cost, out, size)

    def call(self, node: Node, scope: dict[str, Val]) -> Val:  # noqa: PLR0915 - one case per function
        fn = node.name
        target = self.visit(node.target, scope) if node.target is not None else None
        args = [self.visit(a, scope) for a in node.args]
        args_cost = add(*(a.cost for a in args))
        base = target.cost if target is not None else 0
        if fn in ("_&&_", "_||_"):
            return _result(args_cost, BOOL)
        if fn == "_?_:_":
            cond, yes, no = args
            size = None if yes.size is None or no.size is None else max(yes.size, no.size)
            return Val(add(cond.cost, max(yes.cost, no.cost)), yes.decl, size)
        if fn in ("!_", "-_"):
            return _result(add(1, args_cost), BOOL if fn == "!_" else args[0].decl)
        if fn == "_==_" and {a.decl.kind for a in args} == {"cidr"}:
            # k8s cost.go overrides `_==_` of two IPs/CIDRs (O(1)); not `_!=_`, which keeps
            # cel-go's traversal of the smaller operand, of unknown size: a 1.36.2 API server
            # refused `cidr(a) != cidr(b)` "by factor of more than 100x".
            return _result(add(1, args_cost), BOOL)
        if fn in ("_==_", "_!=_"):
            smallest = min(_size(args[0]), _size(args[1]))
            return _result(add(factor(smallest, STRING_TRAVERSAL), args_cost), BOOL)
        if fn in ("_<_", "_<=_", "_>_", "_>=_"):
            if {a.decl.kind for a in args} <= {"string", "bytes"}:
                smallest = min(_size(args[0]), _size(args[1]))
                return _result(add(factor(smallest, STRING_TRAVERSAL), args_cost), BOOL)
            if not {a.decl.kind for a in args} <= SCALARS:
                raise UnsupportedError(f"{fn} on {[a.decl.kind for a in args]}")
            return _result(add(1, args_cost), BOOL)
        if fn == "_+_":
            kinds = {a.decl.kind for a in args}
            if len(kinds) != 1:
                raise UnsupportedError(f"{fn} on {sorted(kinds)}")
            (kind,) = kinds
            total = add(_size(args[0]), _size(args[1]))
            if kind in ("string", "bytes"):
                self.concatenations += 1
                return Val(add(factor(total, STRING_TRAVERSAL), args_cost), args[0].decl, total)
            if kind == "list":
                return Val(add(1, args_cost), args[0].decl, total)
            if kind in ("int", "uint", "double"):
                return _result(add(1, args_cost), args[0].decl)
            raise UnsupportedError(f"{fn} on {kind}")
        if fn in ("_-_", "_*_", "_/_", "_%_"):
            if not {a.decl.kind for a in args} <= {"int", "uint", "double"}:
                raise UnsupportedError(f"{fn} on {[a.decl.kind for a in args]}")
            return _result(add(1, args_cost), args[0].decl)
        if fn == "@in":
            haystack = args[1].decl.kind
            if haystack == "list":
                return _result(add(factor(_size(args[1]), 1.0), args_cost), BOOL)
            if haystack == "map":
                return _result(add(1, args_cost), BOOL)
            raise CompileError(f"'in' on {haystack}")
        if fn == "_[_]":
            container, _index = args
            if container.decl.kind not in ("list", "map"):
                raise UnsupportedError(f"indexing {container.decl.kind}")
            assert container.decl.elem is not None
            if container.from_schema:
                return _schema_val(add(1, args_cost), container.decl.elem)
            raise UnsupportedError("indexing a value that is not a schema field")
        if fn == "size":
            operand = target if target is not None else (args[0] if len(args) == 1 else None)
            if operand is None or operand.decl.kind not in ("string", "bytes", "list", "map"):
                raise CompileError("size() takes one string, bytes, list or map")
            return _result(add(1, base, args_cost), INT)
        if fn in ("isCIDR", "cidr") and target is None:
            # k8s cel/library/cost.go: parsing is a traversal of the string argument.
            if len(args) != 1 or args[0].decl.kind != "string":
                raise CompileError(f"{fn}() takes one string")
            cost = add(factor(_size(args[0]), STRING_TRAVERSAL), args_cost)
            return _result(cost, BOOL) if fn == "isCIDR" else Val(cost, CIDR_TYPE, None)
        if target is not None and target.decl.kind == "cidr":
            if fn == "masked" and not args:  # accessors: nominal cost 1
                return Val(add(1, base), CIDR_TYPE, None)
            if fn == "containsCIDR" and len(args) == 1 and args[0].decl.kind in ("cidr", "string"):
                # Two IPv6 byte lists compared (max 16 + 16 bytes), the base masked (16), + 1;
                # a string argument is parsed first (a traversal of it).
                compare = add(factor(32, STRING_TRAVERSAL), factor(16, STRING_TRAVERSAL), 1)
                if args[0].decl.kind == "string":
                    compare = add(compare, factor(_size(args[0]), STRING_TRAVERSAL))
                return _result(add(base, compare, args_cost), BOOL)
            raise UnsupportedError(f"cidr.{fn}()")
        if target is None:
            raise UnsupportedError(f"function {fn}()")
        if target.decl.kind != "string" or len(args) != 1 or args[0].decl.kind != "string":
            raise UnsupportedError(f"{target.decl.kind}.{fn}({[a.decl.kind for a in args]})")
        if fn in ("startsWith", "endsWith"):
            return _result(add(base, factor(_size(args[0]), STRING_TRAVERSAL), args_cost), BOOL)
        if fn == "contains":
            product = mul(factor(_size(target), STRING_TRAVERSAL), factor(_size(args[0]), STRING_TRAVERSAL))
            return _result(add(base, product, args_cost), BOOL)
        if fn == "matches":
            self.regex_inputs.append(_size(target))
            text = factor(add(_size(target), 1), STRING_TRAVERSAL)
            regex = factor(_size(args[0]), REGEX_LENGTH)
            return _result(add(base, mul(text, regex), args_cost), BOOL)
        raise UnsupportedError(f"string.{fn}()")


def rule_cost(rule: str, node_schema: dict[str, Any], is_root: bool = False) -> int:
    """The per-call maximum cost the API server estimates for `rule` on this schema node."""
    decl = schema_decl(node_schema, is_root)
    if decl is None:
        raise CompileError("rule declared on a schema without a CEL type")
    return Coster(decl).cost(rule)


# --- the whole CRD: cardinality, per-rule and total verdicts ----------------------------------


@dataclass
class RuleCost:
    path: str  # as the API server names it, e.g. ...properties[spec].x-kubernetes-validations[0].rule
    rule: str
    per_call: int
    cardinality: int
    bounded: bool  # every list/map above the node is bounded (else the node's fallback is used)

    @property
    def total(self) -> int:
        return 0 if self.per_call == 0 else mul(self.per_call, self.cardinality)


def _extract_max_elements(schema: dict[str, Any]) -> int | None:
    if schema.get("type") == "object" and isinstance(schema.get("additionalProperties"), dict):
        return schema.get("maxProperties")
    if schema.get("type") == "array":
        return schema.get("maxItems")
    return 1


def walk(
    schema: dict[str, Any], path: str, cardinality: int | None = 1, is_root: bool = True
) -> Iterator[tuple[str, dict[str, Any], int | None, bool]]:
    """Every schema node: (path, schema, cardinality or None if unbounded, is_root)."""
    yield path, schema, cardinality, is_root
    per_child = _extract_max_elements(schema)
    child = None if cardinality is None or per_child is None else cardinality * max(0, per_child)
    for name, sub in (schema.get("properties") or {}).items():
        yield from walk(sub, f"{path}.properties[{name}]", child, False)
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}.items", child, False)
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}.additionalProperties", child, False)


def crd_rule_costs(crd: dict[str, Any]) -> list[RuleCost]:
    """Every rule of the CRD with its estimated cost, in the API server's order."""
    out: list[RuleCost] = []
    for version in crd["spec"]["versions"]:
        root = version["schema"]["openAPIV3Schema"]
        for path, node, cardinality, is_root in walk(root, "spec.validation.openAPIV3Schema"):
            rules = node.get("x-kubernetes-validations") or []
            if not rules:
                continue
            decl = schema_decl(node, is_root)
            if decl is None:
                raise CompileError(f"{path}: rules on a schema without a CEL type")
            coster = Coster(decl)
            fallback = MAX_REQUEST_SIZE // (decl.min_size + 1)  # maxCardinality()
            for i, entry in enumerate(rules):
                out.append(
                    RuleCost(
                        f"{path}.x-kubernetes-validations[{i}].rule",
                        entry["rule"],
                        coster.cost(entry["rule"]),
                        fallback if cardinality is None else cardinality,
                        cardinality is not None,
                    )
                )
    return out


def crd_total(costs: list[RuleCost]) -> int:
    return add(*(c.total for c in costs))


def exceed_factor(cost: int, limit: int) -> str:
    """The API server's wording of how far over budget a cost is (getCostErrorMessage)."""
    ratio = cost / limit
    if ratio > 100:
        return "more than 100x"
    if ratio < 1.5:
        return f"{ratio:f}x"
    return f"{ratio:.1f}x"


def refusals(crd: dict[str, Any]) -> dict[str, str]:
    """What the API server would say: {field path: exceed factor} for every cost refusal."""
    costs = crd_rule_costs(crd)
    out = {c.path: exceed_factor(c.total, PER_RULE_LIMIT) for c in costs if c.total > PER_RULE_LIMIT}
    total = crd_total(costs)
    if total > PER_CRD_LIMIT:
        out["spec.validation.openAPIV3Schema"] = exceed_factor(total, PER_CRD_LIMIT)
    return out


# --- what a rule may read: bounds, and presence (has()) ---------------------------------------


def unbounded_nodes(schema: dict[str, Any], path: str) -> Iterator[str]:
    """Schema nodes at or below `schema` whose CEL size is not bounded by the schema itself.

    A string needs maxLength, an enum, or a format of known length (date, date-time,
    duration); an int-or-string needs maxLength; a list maxItems; a map maxProperties. Map
    keys have no schema of their own (the API server sizes them 0); objects that only preserve
    unknown fields expose nothing to CEL.
    """
    for where, node, _cardinality, _root in walk(schema, path, 1, False):
        if node.get("x-kubernetes-int-or-string"):
            if "maxLength" not in node:
                yield where
        elif node.get("type") == "string":
            if not (
                "maxLength" in node
                or node.get("enum")
                or node.get("format") in ("date", "date-time", "duration")
            ):
                yield where
        elif node.get("type") == "array":
            if "maxItems" not in node:
                yield where
        elif (
            node.get("type") == "object"
            and isinstance(node.get("additionalProperties"), dict)
            and "maxProperties" not in node
        ):
            yield where


def _key(node: Node | None) -> str | None:
    """A printable identity for a field path (`self.managedBy`, `e.cidr`), or None."""
    if node is None:
        return None
    if node.op == "ident":
        return node.name
    if node.op == "select":
        base = _key(node.target)
        return None if base is None else f"{base}.{node.name}"
    return None


def _facts(node: Node, truth: bool) -> set[str]:
    """Fields known present when `node` evaluates to `truth` (from has() tests)."""
    if node.op == "has":
        base = _key(node.target)
        return {f"{base}.{node.name}"} if truth and base is not None else set()
    if node.op == "call" and node.name == "!_":
        return _facts(node.args[0], not truth)
    if node.op == "call" and node.name == "_&&_" and truth:
        return _facts(node.args[0], True) | _facts(node.args[1], True)
    if node.op == "call" and node.name == "_||_" and not truth:
        return _facts(node.args[0], False) | _facts(node.args[1], False)
    return set()


def unguarded_reads(rule: str, node_schema: dict[str, Any], is_root: bool = False) -> list[str]:
    """Optional fields `rule` reads without a has() test that guarantees them.

    On a real API server reading an absent field is an evaluation error ("no such key"), and
    the object is refused; defaults apply only where the schema declares `default`. A field
    is safe to read when it is required, has a schema default, or a has() on the way there
    (`!has(x.f) || ...`, `has(x.f) && ...`, `has(x.f) ? ... : ...`) proves it present. At the
    root, apiVersion, kind and metadata.name are always there.
    Conservative: `||` and `&&` are read left to right, though CEL would forgive an error on
    one side if the other side decides.
    """
    decl = schema_decl(node_schema, is_root)
    assert decl is not None
    found: list[str] = []

    def types(node: Node, scope: dict[str, Decl]) -> Decl | None:
        if node.op == "ident":
            return scope.get(node.name) or (decl if node.name in ("self", "oldSelf") else None)
        if node.op == "select" and node.target is not None:
            parent = types(node.target, scope)
            if parent is not None and parent.kind == "object" and node.name in parent.fields:
                return parent.fields[node.name].decl
            if parent is not None and parent.kind == "map":
                return parent.elem
        return None

    def check(node: Node, scope: dict[str, Decl], known: set[str]) -> None:
        if node.op in ("select", "has"):
            assert node.target is not None
            check(node.target, scope, known)
            if node.op == "has":
                return
            parent = types(node.target, scope)
            key = _key(node)
            if parent is not None and parent.kind == "map":
                found.append(f"{key}: a map entry read by name may be absent")
            elif parent is not None and parent.kind == "object":
                spec = parent.fields[node.name]
                if not spec.required and not spec.has_default and key not in known:
                    found.append(str(key))
            return
        if node.op == "macro":
            assert node.target is not None
            check(node.target, scope, known)
            rng = types(node.target, scope)
            item: Decl | None = None
            if rng is not None:
                item = rng.elem if rng.kind == "list" else STRING_KEY
            inner = {**scope, str(node.value): item} if item is not None else scope
            for arg in node.args:
                check(arg, inner, known)
            return
        if node.op == "call" and node.name in ("_&&_", "_||_"):
            left, right = node.args
            check(left, scope, known)
            check(right, scope, known | _facts(left, node.name == "_&&_"))
            return
        if node.op == "call" and node.name == "_?_:_":
            cond, yes, no = node.args
            check(cond, scope, known)
            check(yes, scope, known | _facts(cond, True))
            check(no, scope, known | _facts(cond, False))
            return
        if node.op == "call" and node.name == "_[_]":
            container = types(node.args[0], scope)
            if container is not None and container.kind == "map":
                found.append(f"{_key(node.args[0])}[...]: a map entry read by key may be absent")
        if node.target is not None:
            check(node.target, scope, known)
        for arg in node.args:
            check(arg, scope, known)

    # Every object the API server validates has these, whatever the schema says.
    always = {"self.apiVersion", "self.kind", "self.metadata", "self.metadata.name"} if is_root else set()
    check(parse(rule), {}, always)
    return found


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """`value` with the schema's `default`s filled in, as the API server does before validation.

    Only where the schema declares `default`, and only inside objects that are present.
    """
    if isinstance(value, dict):
        props = schema.get("properties")
        if props is not None:
            out = dict(value)
            for name, sub in props.items():
                if name not in out and "default" in sub:
                    out[name] = sub["default"]
                if name in out:
                    out[name] = apply_defaults(sub, out[name])
            return out
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            return {k: apply_defaults(extra, v) for k, v in value.items()}
        return value
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], v) for v in value]
    return value
