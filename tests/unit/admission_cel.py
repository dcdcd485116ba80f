"""cel-python made to evaluate admission expressions as the API server does (cel-go's has(),
runtime errors that deny instead of reading as false, lazily evaluated `variables`), with the
Kubernetes string functions and JSONPatch the policies use. Shared by the admission tests."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import celpy
import lark
from celpy import InterpretedRunner, celtypes
from celpy.evaluation import CELEvalError, Evaluator


class EvaluationError(AssertionError):
    """An expression failed at runtime where the API server denies the request for it
    (failurePolicy: Fail): the text is what the API server would answer."""


class _CelGoEvaluator(Evaluator):
    """cel-python's evaluator with cel-go's has(): the operand of the last field selection is
    evaluated and its errors propagate; a missing field of a map is false, and so is any field of
    null (interpreter/attributes.go, refQualify with presenceTest)."""

    def macro_has_eval(self, exprlist: lark.Tree[Any]) -> Any:
        node = exprlist.children[0]
        while isinstance(node, lark.Tree) and node.data != "member_dot" and len(node.children) == 1:
            node = node.children[0]
        if not isinstance(node, lark.Tree) or node.data != "member_dot":
            return CELEvalError("invalid argument to has() macro", ValueError, None)
        target_tree, name = node.children
        target = self.visit(target_tree)
        if isinstance(target, CELEvalError):
            return target
        if target is None:
            return celtypes.BoolType(False)
        if isinstance(target, celtypes.MapType):
            return celtypes.BoolType(celtypes.StringType(str(name)) in target)
        return CELEvalError(f"no such key: {name}", KeyError, None)


class _CelGoRunner(InterpretedRunner):
    def evaluate(self, context: Any) -> Any:
        return _CelGoEvaluator(ast=self.ast, activation=self.new_activation()).evaluate(context)


def _split(text: Any, sep: Any) -> Any:
    return celtypes.ListType([celtypes.StringType(part) for part in str(text).split(str(sep))])


def _join(items: Any, sep: Any = "") -> Any:
    return celtypes.StringType(str(sep).join(str(i) for i in items))


def _replace(text: Any, old: Any, new: Any) -> Any:
    return celtypes.StringType(str(text).replace(str(old), str(new)))


def _substring(text: Any, start: Any, end: Any = None) -> Any:
    """cel-go's strings extension: code points from start to end, an error outside the string."""
    value = str(text)
    stop = len(value) if end is None else int(end)
    if not 0 <= int(start) <= stop <= len(value):
        raise ValueError(f"index out of range: {start}")
    return celtypes.StringType(value[int(start) : stop])


def _index_of(items: Any, item: Any) -> Any:
    """The Kubernetes list library's `indexOf`: the first index, -1 when absent."""
    values = list(items)
    return celtypes.IntType(values.index(item) if item in values else -1)


# Kubernetes' strings and list library functions the policies use (cel-python lacks them).
FUNCTIONS = {
    "split": _split,
    "join": _join,
    "replace": _replace,
    "substring": _substring,
    "indexOf": _index_of,
}
_ENV = celpy.Environment(runner_class=_CelGoRunner)


def _jsonpatch(fields: Any) -> Any:
    """`JSONPatch{...}` of a mutation, as a map marked as a patch."""
    return celtypes.MapType({celtypes.StringType("_jsonpatch"): celtypes.BoolType(True), **dict(fields)})


@functools.cache
def _program(expression: str) -> Any:
    return _ENV.program(_ENV.compile(expression), functions=FUNCTIONS)


def evaluate(expression: str, activation: Mapping[str, Any]) -> Any:
    try:
        return _program(expression).evaluate({**activation, "JSONPatch": _jsonpatch})
    except CELEvalError as exc:
        detail = str(exc.args[0]).split(" (in activation")[0][:300]  # cel-python appends the activation
        raise EvaluationError(f"expression '{expression.strip()}' resulted in error: {detail}") from exc


def condition(expression: str, activation: Mapping[str, Any]) -> bool:
    result = evaluate(expression, activation)
    if not isinstance(result, celtypes.BoolType):  # the compiler only accepts bool expressions
        raise EvaluationError(f"expression '{expression.strip()}' gave {result!r}, not a bool")
    return bool(result)


class LazyVariables(celtypes.MapType):
    """`variables` the way composition.go provides it: each one evaluated on first reference,
    once per evaluation; an error reaches only the expressions that read it."""

    def __init__(self, expressions: Mapping[str, str], activation: dict[str, Any]) -> None:
        super().__init__()
        self._expressions = expressions
        self._activation = activation

    def __contains__(self, key: object) -> bool:
        return key in self._expressions

    def __getitem__(self, key: Any) -> Any:
        name = str(key)
        if name not in self._expressions:
            raise KeyError(name)
        if not super().__contains__(key):
            try:
                value = evaluate(self._expressions[name], self._activation)
            except EvaluationError as exc:
                value = CELEvalError(f'composited variable "{name}" fails to evaluate: {exc}', KeyError, None)
            super().__setitem__(celtypes.StringType(name), value)
        return super().__getitem__(celtypes.StringType(name))


def conditions_hold(conditions: list[dict[str, Any]], activation: Mapping[str, Any]) -> bool:
    """matchConditions as matcher.go decides them: any false means no match, even if another
    errored; otherwise an error denies (failurePolicy Fail)."""
    results: list[bool | EvaluationError] = []
    for match in conditions:
        try:
            results.append(condition(match["expression"], activation))
        except EvaluationError as exc:
            results.append(exc)
    if False in results:
        return False
    for result in results:
        if isinstance(result, EvaluationError):
            raise result
    return True
