"""Every problem of an object in one run, not in rounds.

pydantic reports every field error of an object at once, but checks that span fields (a
model's own validator) run only once its fields are valid, and the policy checks need a whole
Organization: a file with schema errors used to show its cross-field and policy problems only
after those were fixed (issue 20: 10 problems took 3 runs). Here an object with errors is
reduced, round after round, by what was refused, until what is left can be read; the problems
found on the way keep their paths in the original object, and what could be a consequence of
the reduction (anything at or under a removed path, or mentioning it) is left out.

What is removed: a field that is refused, the parent of a missing field, and from a list the
whole entry that holds an error (the first list on the path; the other entries keep their
original indices in every message). `metadata` and the object's identity are never removed:
without them there is nothing to check further. The reduced model is for reporting only,
never rendered or applied.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tenantry.api.problems import Problem, format_path

# Enough for every level an error can hide behind (fields, then the spec's own validator, then
# whatever that one refused); each round removes at least one path, so it always ends.
MAX_ROUNDS = 8

Error = tuple[Problem, tuple[Any, ...], str]  # problem, cleaned location, pydantic error type


@dataclass
class Reduction:
    """What was removed from an object, and how to report a later problem in its terms."""

    removed: list[str] = field(default_factory=list)
    # Formatted path of a list -> the original index of each entry still in it.
    kept: dict[str, list[int]] = field(default_factory=dict)

    def locate(self, problem: Problem) -> Problem | None:
        """`problem` with original list indices, or None when the reduction may have caused it."""
        path = problem.path
        for list_path, indices in self.kept.items():
            prefix = list_path + "["
            if path.startswith(prefix):
                digits, _, rest = path[len(prefix) :].partition("]")
                if digits.isdigit() and int(digits) < len(indices):
                    path = f"{prefix}{indices[int(digits)]}]{rest}"
            if path == list_path:  # e.g. "at least 1 item" once its only bad entry is gone
                return None
        for removed in self.removed:
            if (
                path == removed
                or path.startswith((removed + ".", removed + "["))
                or removed in problem.message
            ):
                return None
        return Problem(path, problem.message, problem.severity)


def reduce_and_recheck(
    doc: dict[str, Any], errors: Sequence[Error], validate: Callable[[Any], Any]
) -> tuple[Any, list[Problem], Reduction]:
    """Remove what `errors` refused from a copy of `doc` and validate again, until it reads.

    `validate(doc)` returns a model or a list of `Error`. Returns (the model or None, the
    problems the later rounds found, in the original object's terms, the reduction)."""
    reduction = Reduction()
    current = copy.deepcopy(doc)
    later: list[Problem] = []
    for _ in range(MAX_ROUNDS):
        if not _remove(current, errors, reduction):
            return None, later, reduction
        result = validate(current)
        if not isinstance(result, list):
            return result, later, reduction
        errors = result
        for problem, _, _ in errors:
            located = reduction.locate(problem)
            if located is not None and located not in later:
                later.append(located)
    return None, later, reduction


def _remove(doc: dict[str, Any], errors: Sequence[Error], reduction: Reduction) -> bool:
    """Remove what each error refused; False when nothing (more) can be removed."""
    keys: list[tuple[Any, ...]] = []
    entries: dict[tuple[Any, ...], set[int]] = {}
    for _, loc, kind in errors:
        target = loc[:-1] if kind == "missing" else loc
        first_index = next((i for i, part in enumerate(target) if isinstance(part, int)), None)
        if first_index is not None:
            entries.setdefault(tuple(target[:first_index]), set()).add(int(target[first_index]))
            target = target[:first_index]
            if len(target) >= 2 and target[0] == "spec":
                continue
            return False
        if len(target) < 2 or target[0] != "spec":
            return False  # the object's identity, or the whole spec: nothing left to check
        keys.append(tuple(target))
    changed = False
    for list_loc, indices in entries.items():
        items = _get(doc, list_loc)
        if not isinstance(items, list):
            continue
        name = format_path(list_loc)
        kept = reduction.kept.setdefault(name, list(range(len(items))))
        for index in sorted(indices, reverse=True):
            if index < len(items):
                del items[index]
                del kept[index]
                changed = True
    for key in keys:
        parent = _get(doc, key[:-1])
        if isinstance(parent, dict) and key[-1] in parent:
            del parent[key[-1]]
            reduction.removed.append(format_path(key))
            changed = True
    return changed


def _get(doc: Any, loc: Sequence[Any]) -> Any:
    for part in loc:
        in_map = isinstance(doc, dict) and part in doc
        in_list = isinstance(doc, list) and isinstance(part, int) and 0 <= part < len(doc)
        if not (in_map or in_list):
            return None
        doc = doc[part]
    return doc
