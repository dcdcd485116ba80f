"""Parse YAML text (one or many documents) into Organizations and TenancyPolicies.

Pure: takes text, returns models and located problems. The CLI reads files; the operator
gets dicts from the API server and uses `parse_object` directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from tenantry import API_VERSION
from tenantry.api.organization import Organization
from tenantry.api.policy import TenancyPolicy
from tenantry.api.problems import Problem, problems_from_validation_error

KINDS: dict[str, type[Organization] | type[TenancyPolicy]] = {
    "Organization": Organization,
    "TenancyPolicy": TenancyPolicy,
}


@dataclass(frozen=True)
class Located:
    """A problem with the file and object it belongs to, ready to print."""

    source: str
    obj: str
    problem: Problem

    def __str__(self) -> str:
        return f"{self.source}: {self.obj}: {self.problem}"


@dataclass
class Documents:
    organizations: list[tuple[str, Organization]] = field(default_factory=list)
    policies: list[tuple[str, TenancyPolicy]] = field(default_factory=list)
    problems: list[Located] = field(default_factory=list)


def describe(doc: Any, index: int) -> str:
    """`Organization/acme`, or a positional name when the document has no usable name."""
    if isinstance(doc, dict):
        kind = doc.get("kind") or "object"
        meta = doc.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        if isinstance(name, str) and name:
            return f"{kind}/{name}"
        return f"{kind} (document {index + 1})"
    return f"document {index + 1}"


def parse_object(doc: Any) -> Organization | TenancyPolicy | list[Problem]:
    """One decoded object -> its model, or every problem with it."""
    if not isinstance(doc, dict):
        return [Problem("", f"expected a Kubernetes object (a mapping), got {type(doc).__name__}")]
    kind = doc.get("kind")
    if kind not in KINDS:
        return [Problem("kind", f"{kind!r} is not one of {', '.join(KINDS)}")]
    if doc.get("apiVersion") != API_VERSION:
        return [Problem("apiVersion", f"{doc.get('apiVersion')!r} is not supported; use {API_VERSION}")]
    try:
        return KINDS[kind].model_validate(doc)
    except ValidationError as exc:
        return problems_from_validation_error(exc)


def parse_documents(text: str, source: str) -> Documents:
    out = Documents()
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        out.problems.append(Located(source, where, Problem("", f"not valid YAML: {exc}")))
        return out
    if not docs:
        out.problems.append(Located(source, "file", Problem("", "contains no objects")))
    for index, doc in enumerate(docs):
        parsed = parse_object(doc)
        if isinstance(parsed, Organization):
            out.organizations.append((source, parsed))
        elif isinstance(parsed, TenancyPolicy):
            out.policies.append((source, parsed))
        else:
            out.problems += [Located(source, describe(doc, index), p) for p in parsed]
    return out


class _NoAliasDumper(yaml.SafeDumper):
    """Repeated sub-structures (the same Subject schema thrice) are written out, not aliased."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


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
