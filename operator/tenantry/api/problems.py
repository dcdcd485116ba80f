"""Human-readable validation problems: which field, what is wrong, what is allowed."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from tenantry.api.base import DNS_LABEL_PATTERN, LABEL_VALUE_PATTERN

# What a value may show of itself in a message: enough to recognise it, never a screenful.
SHOW_MAX = 80
# Characters a terminal acts on (C0/C1 controls, DEL) or that reorder text (bidi controls).
_UNSAFE_RE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def escape(text: str) -> str:
    """`text` with every control character written as an escape: printing it moves no cursor.

    A name such as `\\r\\x1b[2K valid: 1 Organization(s)` would otherwise overwrite the error
    line on a terminal, or in a CI log viewer that renders escapes.
    """
    return _UNSAFE_RE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def show(value: Any, limit: int = SHOW_MAX) -> str:
    """A short, escaped rendering of a user-supplied value for a message.

    Strings are quoted (shortened past `limit`); containers are named, not expanded: a
    billion-laughs alias or a 1 MB list must not become a 1 GB message.
    """
    if isinstance(value, str):
        text = value if len(value) <= limit else value[:limit] + "..."
        return escape(repr(text))
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        text = str(value) if -(10**limit) < value < 10**limit else "a very large integer"
        return text if len(text) <= limit else text[:limit] + "..."
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return f"a mapping ({len(value)} key(s))"
    if isinstance(value, list | tuple):
        return f"a list ({len(value)} item(s))"
    return f"a {type(value).__name__}"


def type_name(value: Any) -> str:
    """The JSON/YAML name of a value's type, for "must be a string (got a list)"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {show(value)}"
    if isinstance(value, int | float):
        return f"the number {show(value)}"
    if isinstance(value, str):
        return f"the string {show(value)}"
    return show(value)


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with an object, located by a dotted field path (`spec.quota.prod`)."""

    path: str
    message: str
    # "warning": rendered anyway, but worth telling (an expired exception that is skipped).
    # "note": how the input was read, nothing wrong (environments taken from the policy).
    severity: Literal["error", "warning", "note"] = "error"

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        return f"{self.severity}: {text}" if self.severity != "error" else text


def format_path(loc: Sequence[Any]) -> str:
    """`('spec', 'environments', 1)` -> `spec.environments[1]`; odd keys are quoted and escaped."""
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif not isinstance(part, str):
            out += f"[{show(part)}]"  # a key that is not a string (only a hand-made dict has one)
        elif part and part.isascii() and part.replace("_", "").replace("-", "").isalnum():
            out += f".{part}" if out else part
        else:
            text = part if len(part) <= SHOW_MAX else part[:SHOW_MAX] + "..."
            out += "[" + escape(_json_quote(text)) + "]"
    return out


def _json_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_DROP_LOC = {"function-after", "function-before", "function-wrap"}


def _clean_loc(loc: Iterable[Any]) -> list[Any]:
    # pydantic puts validator names ("function-after[...]") and union branches into `loc`;
    # a person wants the field path only.
    return [
        p for p in loc if not (isinstance(p, str) and (p.split("[")[0] in _DROP_LOC or p.startswith("[")))
    ]


_EXPECTED = {
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dict_type": "a mapping",
    "list_type": "a list",
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "date_type": "a date YYYY-MM-DD",
    "date_parsing": "a date YYYY-MM-DD",
    "date_from_datetime_parsing": "a date YYYY-MM-DD",
    "date_from_datetime_inexact": "a date YYYY-MM-DD",
}


def _pattern_messages() -> dict[str, str]:
    return {
        DNS_LABEL_PATTERN: "must be lowercase letters, digits and '-', "
        "starting and ending with a letter or digit",
        LABEL_VALUE_PATTERN: "must be a label value: up to 63 letters, digits, '-', '_' or '.', "
        "starting and ending with a letter or digit (or empty)",
    }


def _message(item: Any) -> str:
    kind, value = item["type"], item.get("input")
    if kind == "extra_forbidden":
        return "unknown field (check the spelling; see `kubectl explain` or the CRD schema)"
    if kind == "missing":
        return "required field is missing"
    if kind in _EXPECTED:
        return f"must be {_EXPECTED[kind]} (got {type_name(value)})"
    if kind == "string_pattern_mismatch":
        pattern = (item.get("ctx") or {}).get("pattern")
        friendly = _pattern_messages().get(str(pattern), f"must match the pattern {pattern}")
        return f"{friendly} (got {show(value)})"
    message = str(item["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "literal_error":
        return f"{message} (got {show(value)})"
    return message


def located_errors(error: ValidationError) -> list[tuple[Problem, tuple[Any, ...], str]]:
    """Each error as (problem, its field location, pydantic's error type)."""
    out = []
    for item in error.errors(include_url=False, include_context=True, include_input=True):
        loc = tuple(_clean_loc(item["loc"]))
        out.append((Problem(format_path(loc), _message(item)), loc, str(item["type"])))
    return out


class InvalidObjectError(ValueError):
    """Raised when an object cannot be rendered; carries every problem found, not just the first."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))
