"""Label and field selectors, with the API server's syntax (k8s.io/apimachinery labels.Parse)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any


class SelectorError(ValueError):
    pass


_SPLIT = re.compile(r",(?![^()]*\))")  # commas outside of "in (a,b)" parentheses
_TERM = re.compile(
    r"""^\s*(?:
    !\s*(?P<absent>[^\s!=,()]+)
  | (?P<key>[^\s!=,()]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^\s!=,()]*)
  | (?P<setkey>[^\s!=,()]+)\s+(?P<setop>in|notin)\s*\((?P<values>[^()]*)\)
  | (?P<present>[^\s!=,()]+)
)\s*$""",
    re.X,
)

Check = Callable[[Mapping[str, str]], bool]


def label_selector(selector: str) -> Check:
    """=, ==, !=, in, notin, key, !key; terms AND-ed. `!=` and `notin` match absent keys."""
    checks: list[Check] = []
    for term in filter(str.strip, _SPLIT.split(selector or "")):
        m = _TERM.match(term)
        if m is None:
            raise SelectorError(f"unable to parse requirement: {term!r}")
        if m["absent"]:
            checks.append(lambda ls, k=m["absent"]: k not in ls)
        elif m["present"]:
            checks.append(lambda ls, k=m["present"]: k in ls)
        elif m["key"]:
            k, v, neg = m["key"], m["value"], m["op"] == "!="
            checks.append(lambda ls, k=k, v=v, neg=neg: (ls.get(k) == v) != neg)
        else:
            values = {v.strip() for v in m["values"].split(",") if v.strip()}
            neg = m["setop"] == "notin"
            checks.append(lambda ls, k=m["setkey"], vs=values, neg=neg: (ls.get(k) in vs) != neg)
    return lambda labels: all(check(labels) for check in checks)


def field_selector(selector: str) -> Callable[[Mapping[str, Any]], bool]:
    """`metadata.name` and `metadata.namespace` with =, ==, != (what every resource supports)."""
    checks: list[Callable[[Mapping[str, Any]], bool]] = []
    for term in filter(str.strip, (selector or "").split(",")):
        m = re.fullmatch(r"\s*metadata\.(name|namespace)\s*(==|=|!=)\s*([^\s,]*)\s*", term)
        if m is None:
            raise SelectorError(
                f'"{term}" is not a known field selector: only "metadata.name", "metadata.namespace"'
            )
        name, neg, value = m[1], m[2] == "!=", m[3]
        checks.append(lambda meta, f=name, v=value, neg=neg: (meta.get(f) == v) != neg)
    return lambda meta: all(check(meta) for check in checks)


def object_filter(labels: str, fields: str) -> Callable[[Mapping[str, Any]], bool]:
    by_labels, by_fields = label_selector(labels), field_selector(fields)

    def matches(obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        return by_labels(meta.get("labels") or {}) and by_fields(meta)

    return matches
