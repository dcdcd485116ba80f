"""Parse YAML text (one or many documents) into Organizations and TenancyPolicies.

Pure: takes text, returns models and located problems. The CLI reads files; the operator
gets dicts from the API server and uses `parse_object` directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from tenantry import API_VERSION
from tenantry.api.loader import MAX_DEPTH, MAX_DOCUMENT_VALUES, load_stream
from tenantry.api.organization import Organization
from tenantry.api.policy import TenancyPolicy
from tenantry.api.problems import (
    SHOW_MAX,
    Problem,
    escape,
    format_path,
    located_errors,
    show,
    type_name,
)
from tenantry.api.repair import Error, Reduction, reduce_and_recheck

KINDS: dict[str, type[Organization] | type[TenancyPolicy]] = {
    "Organization": Organization,
    "TenancyPolicy": TenancyPolicy,
}

# The largest input one `-f` may name (documented in the README). The API server takes at most
# 3 MiB per object; 16 MiB hold about 90,000 small Organizations, validated in about 15 s. Past
# it the input is refused at once with a message, not read half-way or until memory runs out.
MAX_INPUT_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Located:
    """A problem with the file and object it belongs to, ready to print."""

    source: str
    obj: str
    problem: Problem

    def __str__(self) -> str:
        # Everything here may come from the input; escaped, it cannot move a terminal's cursor.
        return escape(f"{self.source}: {self.obj}: {self.problem}")


@dataclass(frozen=True)
class Partial:
    """An Organization with errors, reduced to what could be read (api/repair.py): checked
    against its policy too, so one run reports every problem; never rendered."""

    source: str
    organization: Organization
    reduction: Reduction


@dataclass
class Documents:
    organizations: list[tuple[str, Organization]] = field(default_factory=list)
    policies: list[tuple[str, TenancyPolicy]] = field(default_factory=list)
    problems: list[Located] = field(default_factory=list)
    partial: list[Partial] = field(default_factory=list)


def _name_part(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    return escape(value if len(value) <= SHOW_MAX else value[:SHOW_MAX] + "...")


def describe(doc: Any, index: int) -> str:
    """`Organization/acme`, or a positional name when the document has no usable name."""
    if isinstance(doc, dict):
        kind = _name_part(doc.get("kind")) or "object"
        meta = doc.get("metadata")
        name = _name_part(meta.get("name")) if isinstance(meta, dict) else None
        if name:
            return f"{kind}/{name}"
        return f"{kind} (document {index + 1})"
    return f"document {index + 1}"


_JSON_SCALARS = (str, int, float, bool, type(None))
# Problems `parse_object` returns at most (plus one line saying how many more there are).
MAX_OBJECT_PROBLEMS = 20


def _json_problem(doc: Any) -> Problem | None:
    """Why `doc` is not JSON data the API server could have sent (None: it is).

    Iterative and bounded: a hand-made dict nested 100,000 deep, or one that contains itself,
    is refused without recursion and without walking forever.
    """
    stack: list[tuple[Any, tuple[Any, ...]]] = [(doc, ())]
    seen = 0
    while stack:
        value, path = stack.pop()
        seen += 1
        if seen > MAX_DOCUMENT_VALUES:
            return Problem("", f"the object has more than {MAX_DOCUMENT_VALUES:,} values")
        if len(path) > MAX_DEPTH:
            return Problem(format_path(path[:MAX_DEPTH]), f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    return Problem(format_path(path), f"key {show(key)} is not a string")
                stack.append((item, (*path, key)))
        elif isinstance(value, list):
            stack.extend((item, (*path, i)) for i, item in enumerate(value))
        elif isinstance(value, float):
            if not math.isfinite(value):
                return Problem(format_path(path), f"{value} is not a number JSON can hold")
        elif not isinstance(value, _JSON_SCALARS):
            return Problem(format_path(path), f"{show(value)} is not a JSON value")
    return None


def _validate(doc: Any) -> Organization | TenancyPolicy | list[Problem]:
    """`doc` is JSON data (from the loader, or checked by `_json_problem`)."""
    parsed = _validate_located(doc)
    if isinstance(parsed, list):
        return sorted({problem for problem, _, _ in parsed})
    return parsed


def _validate_located(doc: Any) -> Organization | TenancyPolicy | list[Error]:
    if not isinstance(doc, dict):
        return [(Problem("", f"expected a Kubernetes object (a mapping), got {type_name(doc)}"), (), "type")]
    kind = doc.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        return [(Problem("kind", f"{show(kind)} is not one of {', '.join(KINDS)}"), ("kind",), "kind")]
    api_version = doc.get("apiVersion")
    if api_version != API_VERSION:
        problem = Problem("apiVersion", f"{show(api_version)} is not supported; use {API_VERSION}")
        return [(problem, ("apiVersion",), "apiVersion")]
    try:
        return KINDS[kind].model_validate(doc)
    except ValidationError as exc:
        return located_errors(exc)
    except (ArithmeticError, ValueError, TypeError, RecursionError) as exc:  # pragma: no cover
        # A validator that let something through: still a problem to report, not a crash.
        return [(Problem("", f"cannot be read ({type(exc).__name__}: {show(str(exc))})"), (), "crash")]


def _every_problem(doc: Any) -> tuple[Organization | TenancyPolicy | None, list[Problem], Reduction | None]:
    """(model, problems, reduction): the model when `doc` is valid; else every problem, those
    that only show once the first are out of the way included (api/repair.py), and for an
    Organization the model of what could be read, to check against its policy as well."""
    parsed = _validate_located(doc)
    if not isinstance(parsed, list):
        return parsed, [], None
    problems = sorted({problem for problem, _, _ in parsed})
    model, later, reduction = reduce_and_recheck(doc, parsed, _validate_located)
    problems += [p for p in later if p not in problems]
    return (model if isinstance(model, Organization) else None), problems, reduction


def parse_object(doc: Any) -> Organization | TenancyPolicy | list[Problem]:
    """One decoded object -> its model, or every problem with it. Never raises.

    The operator calls this with what the API server sent, which is JSON; anything else
    (a non-string key, NaN, a value that contains itself) is reported, not trusted.
    """
    problem = _json_problem(doc)
    if problem is not None:
        return [problem]
    parsed = _validate(doc)
    if isinstance(parsed, list) and len(parsed) > MAX_OBJECT_PROBLEMS:
        # The operator writes these into a status condition, whose message the API server
        # bounds (32 KiB): the first ones, and how many more `tenantry validate` would list.
        more = len(parsed) - MAX_OBJECT_PROBLEMS
        parsed = [
            *parsed[:MAX_OBJECT_PROBLEMS],
            Problem("", f"... and {more} more problem(s); `tenantry validate` lists them all"),
        ]
    return parsed


# What decides who may have access: enough to withdraw what an unreadable spec no longer allows.
ACCESS_FIELDS = ("policy", "environments", "members")


def parse_access(doc: Any) -> Organization | None:
    """An Organization whose full spec cannot be read, reduced to the fields that decide access
    (`ACCESS_FIELDS`; grants and everything else dropped), or None when even those cannot be
    read. Used only to shrink access (reconcile: an invalid spec), never to apply anything."""
    if not isinstance(doc, dict) or not isinstance(doc.get("spec"), dict):
        return None
    spec = {k: v for k, v in doc["spec"].items() if k in ACCESS_FIELDS}
    parsed = parse_object({**doc, "spec": spec})
    return parsed if isinstance(parsed, Organization) else None


def decode(data: bytes) -> str | Problem:
    """The text of a file as Kubernetes reads it (UTF-8, an optional BOM), or why it is not text."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return Problem("", "is UTF-16 text; Kubernetes manifests are UTF-8: convert it (iconv -t UTF-8)")
    if b"\x00" in data:
        offset = data.index(b"\x00")
        return Problem("", f"is binary, not YAML (a NUL byte at offset {offset})")
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return Problem(
            "",
            f"is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); Kubernetes manifests "
            "are UTF-8: convert it (for Latin-1: iconv -f LATIN1 -t UTF-8)",
        )


def parse_documents(text: str, source: str) -> Documents:
    """Every object of a YAML stream, read one document at a time (only models are kept)."""
    out = Documents()
    count = 0
    for loaded in load_stream(text):
        count += 1
        if loaded.error is not None:
            out.problems.append(Located(source, loaded.error.where, Problem("", str(loaded.error))))
            continue
        model, problems, reduction = _every_problem(loaded.data)
        if not problems and isinstance(model, Organization):
            out.organizations.append((source, model))
        elif not problems and isinstance(model, TenancyPolicy):
            out.policies.append((source, model))
        else:
            where = describe(loaded.data, loaded.index)
            out.problems += [Located(source, where, p) for p in problems]
            if isinstance(model, Organization) and reduction is not None:
                out.partial.append(Partial(source, model, reduction))
    if not count:
        out.problems.append(Located(source, "file", Problem("", "contains no objects")))
    return out


_Dumper: type[Any] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's emitter, same bytes
_STR, _MAP, _SEQ = "tag:yaml.org,2002:str", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"
_RESOLVED_MAX = 50_000


class _NoAliasDumper(_Dumper):  # type: ignore[misc]
    """Repeated sub-structures (the same Subject schema thrice) are written out, not aliased.

    Rendering writes the same strings (labels, verbs, resource names) hundreds of thousands of
    times: their implicit tags are remembered, and plain str/dict/list skip the generic
    representer lookup. The nodes, and so the bytes, are exactly SafeDumper's.
    """

    _resolved: dict[tuple[str, tuple[bool, bool]], str] = {}  # noqa: RUF012 - a shared cache

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is not yaml.ScalarNode:
            return super().resolve(kind, value, implicit)
        key = (value, implicit)
        tag = self._resolved.get(key)
        if tag is None:
            if len(self._resolved) > _RESOLVED_MAX:
                self._resolved.clear()
            tag = self._resolved[key] = super().resolve(kind, value, implicit)
        return tag

    def represent_data(self, data: Any) -> Any:
        kind = type(data)
        if kind is str:
            return yaml.ScalarNode(_STR, data)
        if kind is dict:
            return self.represent_mapping(_MAP, data)
        if kind is list:
            return self.represent_sequence(_SEQ, data)
        return super().represent_data(data)


def dump_yaml(objects: list[dict[str, Any]]) -> str:
    """Multi-document YAML, keys in the order the renderer built them, byte-for-byte stable."""
    return yaml.dump_all(
        objects,
        Dumper=_NoAliasDumper,
        sort_keys=False,
        default_flow_style=False,
        width=100,
        explicit_start=True,
    )
