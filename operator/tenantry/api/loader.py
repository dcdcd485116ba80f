"""A YAML loader that yields exactly the JSON data the API server would accept, or says why not.

Kubernetes reads YAML by converting it to JSON (kubectl, sigs.k8s.io/yaml). This loader gives
the same data, so `tenantry validate` judges what the cluster will see, and it never crashes,
recurses or hangs on hostile input:

- libyaml (the C parser) produces events; objects are built from them here with an explicit
  stack, so nesting depth costs no Python or C recursion (3,000 levels of `[` are refused with
  a message, 1,000,000 levels too, where composing nodes in C would overflow the stack);
- unquoted dates stay strings (`2027-02-30` is text, as in JSON), sexagesimal `1:20` is text;
- `.nan`/`.inf`, integers beyond 64 bits, `!!binary`, `!!set`, custom tags: refused, JSON has
  no such values;
- mapping keys must be strings and must not repeat (kubectl refuses duplicate keys);
- aliases are followed, but a document may not expand to more than `MAX_DOCUMENT_VALUES`
  values (a "billion laughs" is refused at once), and an alias may not contain itself;
- one document's construction error is reported with its line and column, and the next
  document is still read. A syntax error ends the stream (there is no reliable resync).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)

from tenantry.api.problems import show

# Deeper than any Organization or TenancyPolicy (their schemas nest at most 8 levels).
MAX_DEPTH = 64
# Values one document may expand to, aliases followed. An Organization at every schema maximum
# is about 30,000; a billion laughs is 10^9.
MAX_DOCUMENT_VALUES = 200_000
_INT64 = 2**63

try:  # libyaml, the C parser; PyYAML falls back to its pure-Python parser without it.
    _Parser: type[Any] = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - every supported platform ships libyaml wheels
    _Parser = yaml.SafeLoader

_TAG = "tag:yaml.org,2002:"
_BOOL_RE = re.compile(r"^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$")
_TRUE = {"yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"}
_NULL_RE = re.compile(r"^(?:~|null|Null|NULL|)$")
_INT_RE = re.compile(r"^[-+]?(?:0b[0-1_]+|0[0-7_]+|(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+)$")
_FLOAT_RE = re.compile(
    r"^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+][0-9]+)?|[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_NUMBER_START = frozenset("-+0123456789.")
_MERGE = object()


class LoadError(ValueError):
    """Why a document cannot be read as a Kubernetes object, with its line and column."""

    def __init__(self, message: str, mark: Any = None) -> None:
        self.line = mark.line + 1 if mark is not None else None
        self.column = mark.column + 1 if mark is not None else None
        super().__init__(message)

    @property
    def where(self) -> str:
        return f"line {self.line}, column {self.column}" if self.line is not None else "YAML"


@dataclass(frozen=True)
class Loaded:
    """One non-empty document: its data, or why it cannot be read (never both)."""

    index: int
    line: int
    data: Any = None
    error: LoadError | None = None


def _int(text: str, mark: Any) -> int:
    digits = text.replace("_", "")
    sign = -1 if digits[0] == "-" else 1
    digits = digits.lstrip("+-")
    if digits.startswith("0b"):
        value = int(digits[2:], 2)
    elif digits.startswith("0x"):
        value = int(digits[2:], 16)
    elif digits != "0" and digits.startswith("0"):
        value = int(digits, 8)
    elif len(digits) > 20:
        value = _INT64  # refused below; int() of a huge string is slow and limited
    else:
        value = int(digits)
    value *= sign
    if not -_INT64 <= value < _INT64:
        raise LoadError(f"integer {show(text)} is out of range (Kubernetes integers are 64-bit)", mark)
    return value


def _float(text: str, mark: Any) -> float:
    lowered = text.replace("_", "").lower()
    if lowered.endswith((".inf", ".nan")):
        raise LoadError(
            f"{text} is not a number Kubernetes can store (JSON has no infinity or NaN); "
            "quote it if it is text",
            mark,
        )
    return float(lowered)


def _plain(value: str, mark: Any) -> Any:
    """The value of an unquoted scalar (YAML 1.1 as kubectl reads it, minus dates)."""
    if (not value or value[0] in "~nN") and _NULL_RE.match(value):
        return None
    if value[0] in _NUMBER_START:
        if _INT_RE.match(value):
            return _int(value, mark)
        if _FLOAT_RE.match(value):
            return _float(value, mark)
        return value
    if value[0] in "yYnNtTfFoO" and _BOOL_RE.match(value):
        return value in _TRUE
    if value == "<<":
        return _MERGE
    return value


def _scalar(event: ScalarEvent) -> Any:
    tag, value, mark = event.tag, event.value, event.start_mark
    if tag is None or tag == "!":
        if tag is None and event.implicit[0] and not event.style:
            return _plain(value, mark)
        return value
    if tag == _TAG + "str":
        return value
    if tag == _TAG + "null" and _NULL_RE.match(value):
        return None
    if tag == _TAG + "bool" and _BOOL_RE.match(value):
        return value in _TRUE
    if tag == _TAG + "int" and _INT_RE.match(value):
        return _int(value, mark)
    if tag == _TAG + "float" and (_FLOAT_RE.match(value) or _INT_RE.match(value)):
        return _float(value, mark)
    raise LoadError(_tag_message(tag, value), mark)


def _tag_message(tag: str, value: str | None = None) -> str:
    what = f"tag {show(tag)}" + (f" on {show(value)}" if value is not None else "")
    return (
        f"{what} is not supported: a Kubernetes object holds only strings, numbers, booleans, "
        "null, lists and mappings"
    )


def _check_container_tag(event: MappingStartEvent | SequenceStartEvent, expected: str) -> None:
    if event.tag not in (None, "!", _TAG + expected):
        raise LoadError(_tag_message(event.tag), event.start_mark)


class _Frame:
    """A mapping or sequence being built."""

    __slots__ = ("anchor", "data", "key", "key_mark", "keys", "mark", "merges", "size")

    def __init__(self, data: Any, anchor: str | None, mark: Any) -> None:
        self.data = data
        self.mark = mark
        self.anchor = anchor
        self.size = 1
        self.key: Any = _NO_KEY
        self.key_mark: Any = None
        self.keys: dict[str, int] = {}  # key -> line, for the duplicate message
        self.merges: list[dict[str, Any]] = []


_NO_KEY = object()


def _key_problem(key: Any) -> str:
    if isinstance(key, bool):
        return (
            f"mapping key {str(key).lower()} is not a string: unquoted yes/no/on/off/true/false are "
            "booleans in YAML; quote the key"
        )
    if key is None:
        return "mapping key null (empty or ~) is not a string; quote the key"
    if isinstance(key, int | float):
        return f"mapping key {key} is not a string; quote the key ('{key}')"
    return "a mapping key must be a string, not a list or a mapping"


class _Builder:
    """Builds one document from events; raises LoadError on the first thing JSON cannot hold."""

    def __init__(self) -> None:
        self.stack: list[_Frame] = []
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.open_anchors: set[str] = set()
        self.total = 0
        self.root: Any = None
        self.done = False

    def _count(self, size: int, mark: Any) -> None:
        self.total += size
        if self.total > MAX_DOCUMENT_VALUES:
            raise LoadError(
                f"the document expands to more than {MAX_DOCUMENT_VALUES:,} values (through YAML "
                "aliases, or simply too large for one object); nothing was read from it",
                mark,
            )

    def _add(self, value: Any, size: int, mark: Any, is_scalar_key: bool) -> None:
        if not self.stack:
            self.root, self.done = ("<<" if value is _MERGE else value), True
            return
        frame = self.stack[-1]
        frame.size += size
        if isinstance(frame.data, list):
            frame.data.append("<<" if value is _MERGE else value)
            return
        if frame.key is _NO_KEY:
            if value is not _MERGE:
                if not is_scalar_key or not isinstance(value, str):
                    raise LoadError(_key_problem(value), mark)
                if value in frame.keys:
                    raise LoadError(
                        f"duplicate key {show(value)} (first at line {frame.keys[value]}); "
                        "kubectl and the API server refuse duplicate keys",
                        mark,
                    )
                frame.keys[value] = mark.line + 1
            frame.key, frame.key_mark = value, mark
            return
        key, frame.key = frame.key, _NO_KEY
        if key is _MERGE:
            sources = value if isinstance(value, list) else [value]
            if not all(isinstance(s, dict) for s in sources):
                raise LoadError("a merge key (<<) needs a mapping or a list of mappings", frame.key_mark)
            frame.merges.extend(sources)
            return
        frame.data[key] = "<<" if value is _MERGE else value

    def feed(self, event: Any) -> None:
        kind = type(event)
        if kind is ScalarEvent:
            value = _scalar(event)
            self._count(1, event.start_mark)
            self._remember(event.anchor, value, 1, event.start_mark)
            self._add(value, 1, event.start_mark, is_scalar_key=True)
        elif kind is MappingStartEvent or kind is SequenceStartEvent:
            is_map = kind is MappingStartEvent
            _check_container_tag(event, "map" if is_map else "seq")
            if len(self.stack) >= MAX_DEPTH:
                raise LoadError(f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
            self._count(1, event.start_mark)
            if event.anchor is not None:
                self.open_anchors.add(event.anchor)
            self.stack.append(_Frame({} if is_map else [], event.anchor, event.start_mark))
        elif kind is MappingEndEvent or kind is SequenceEndEvent:
            frame = self.stack.pop()
            data = frame.data
            if frame.merges:
                merged: dict[str, Any] = {}
                for source in reversed(frame.merges):
                    merged.update(source)
                merged.update(data)
                data = merged
            if frame.anchor is not None:
                self.open_anchors.discard(frame.anchor)
            self._remember(frame.anchor, data, frame.size, frame.mark)
            self._add(data, frame.size, frame.mark, is_scalar_key=False)
        elif kind is AliasEvent:
            if event.anchor in self.open_anchors:
                raise LoadError(
                    f"alias *{show(event.anchor)} refers to a value that contains it", event.start_mark
                )
            if event.anchor not in self.anchors:
                raise LoadError(f"alias *{show(event.anchor)} has no anchor before it", event.start_mark)
            value, size = self.anchors[event.anchor]
            self._count(size, event.start_mark)
            self._add(value, size, event.start_mark, is_scalar_key=not isinstance(value, dict | list))

    def _remember(self, anchor: str | None, value: Any, size: int, mark: Any) -> None:
        if anchor is not None:
            self.anchors[anchor] = (value, size)


def load_stream(text: str) -> Iterator[Loaded]:
    """Every non-empty document of `text`, in order; a syntax error is the last item."""
    index = 0
    events = yaml.parse(text, Loader=_Parser)
    builder: _Builder | None = None
    failed: LoadError | None = None
    start_line = 1
    try:
        for event in events:
            kind = type(event)
            if kind is DocumentStartEvent:
                line = event.start_mark.line + 1 if event.start_mark is not None else 1
                builder, failed, start_line = _Builder(), None, line
            elif kind is DocumentEndEvent:
                if failed is not None:
                    yield Loaded(index, start_line, error=failed)
                    index += 1
                elif builder is not None and builder.root is not None:
                    yield Loaded(index, start_line, data=builder.root)
                    index += 1
                builder = None
            elif builder is not None and failed is None:
                try:
                    builder.feed(event)
                except LoadError as exc:
                    failed = exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        message = f"not valid YAML: {problem}" + (f" ({context})" if context else "")
        yield Loaded(index, start_line, error=LoadError(message, mark))
