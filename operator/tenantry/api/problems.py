"""Human-readable validation problems: which field, what is wrong, what is allowed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with an object, located by a dotted field path (`spec.quota.prod`)."""

    path: str
    message: str
    # "warning": rendered anyway, but worth telling (an expired exception that is skipped).
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        return f"warning: {text}" if self.severity == "warning" else text


def format_path(loc: Sequence[int | str]) -> str:
    """`('spec', 'environments', 1)` -> `spec.environments[1]`; odd keys are quoted."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.replace("_", "").replace("-", "").isalnum() and "." not in part:
            out += f".{part}" if out else part
        else:
            out += f'["{part}"]'
    return out


_DROP_LOC = {"function-after", "function-before", "function-wrap"}


def _clean_loc(loc: Iterable[int | str]) -> list[int | str]:
    # pydantic puts validator names ("function-after[...]") and union branches into `loc`;
    # a person wants the field path only.
    return [
        p for p in loc if not (isinstance(p, str) and (p.split("[")[0] in _DROP_LOC or p.startswith("[")))
    ]


def problems_from_validation_error(error: ValidationError) -> list[Problem]:
    problems = []
    for item in error.errors(include_url=False):
        message = item["msg"]
        message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; see `kubectl explain` or the CRD schema)"
        elif item["type"] == "missing":
            message = "required field is missing"
        elif item["type"] == "literal_error":
            message = f"{message} (got {item.get('input')!r})"
        problems.append(Problem(format_path(_clean_loc(item["loc"])), message))
    return sorted(set(problems))


class InvalidObjectError(ValueError):
    """Raised when an object cannot be rendered; carries every problem found, not just the first."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))
