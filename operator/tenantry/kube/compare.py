"""Is a live object already what we want? Decides whether a write is needed at all.

Server-side apply only changes fields we send, so the question is whether every field we send
already has our value (a subset test), with two refinements: quantities compare by value
("1000m" == "1", as the API server canonicalises them), and labels/annotations under our own
keys must match exactly, so a key we stopped setting (e.g. `tenantry.dev/orphaned` after
re-adoption) is noticed and removed by the next apply.
"""

from __future__ import annotations

from typing import Any

from tenantry.api.quantity import QuantityError, parse_quantity
from tenantry.render import labels as lbl

_OUR_KEY_PREFIXES = ("tenantry.dev/", lbl.PSA_PREFIX)
_OUR_KEYS = {lbl.ORGANIZATION, lbl.ENVIRONMENT, lbl.MANAGED_BY, lbl.APP_MANAGED_BY}


def _ours(key: str) -> bool:
    return key in _OUR_KEYS or key.startswith(_OUR_KEY_PREFIXES)


def _scalar_equal(want: Any, have: Any) -> bool:
    if want == have:
        return True
    if isinstance(want, str | int) and isinstance(have, str | int) and not isinstance(want, bool):
        try:
            return parse_quantity(want) == parse_quantity(have)
        except QuantityError:
            return False
    return False


def covers(live: Any, desired: Any, *, exact: bool = False) -> bool:
    """True when `live` has every field of `desired` with the same value.

    Inside lists the match is exact (no extra keys): the lists we send are atomic for server-side
    apply, so an added key (an `ipBlock` slipped into a peer, a subject appended to a binding)
    is drift that our next apply replaces. An empty list or map we send matches an absent field
    (the API server omits empty values).
    """
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return not desired and live is None
        if exact and set(live) - set(desired):
            return False
        return all(
            covers(live[key], value, exact=exact) if key in live else value in ([], {})
            for key, value in desired.items()
        )
    if isinstance(desired, list):
        if live is None:
            return not desired
        if not isinstance(live, list) or len(live) != len(desired):
            return False
        return all(covers(have, want, exact=True) for have, want in zip(live, desired, strict=True))
    return _scalar_equal(desired, live)


def _string_map_matches(live: dict[str, str] | None, desired: dict[str, str] | None) -> bool:
    live, desired = live or {}, desired or {}
    if any(live.get(k) != v for k, v in desired.items()):
        return False
    return all(k in desired for k in live if _ours(k))


def in_sync(desired: dict[str, Any], live: dict[str, Any] | None) -> bool:
    """Would applying `desired` change `live`? (False means: write.)"""
    if live is None:
        return False
    want_meta, have_meta = desired.get("metadata", {}), live.get("metadata", {})
    if not _string_map_matches(have_meta.get("labels"), want_meta.get("labels")):
        return False
    if not _string_map_matches(have_meta.get("annotations"), want_meta.get("annotations")):
        return False
    body = {k: v for k, v in desired.items() if k not in ("apiVersion", "kind", "metadata", "status")}
    return covers(live, body)


def drifted_fields(desired: dict[str, Any], live: dict[str, Any]) -> list[str]:
    """Top-level sections that differ, for the drift Event ("spec", "metadata.labels", ...)."""
    fields = []
    want_meta, have_meta = desired.get("metadata", {}), live.get("metadata", {})
    for part in ("labels", "annotations"):
        if not _string_map_matches(have_meta.get(part), want_meta.get(part)):
            fields.append(f"metadata.{part}")
    for key, value in desired.items():
        if key not in ("apiVersion", "kind", "metadata", "status") and not covers(live.get(key), value):
            fields.append(key)
    return fields


def stale_keys(desired: dict[str, Any], live: dict[str, Any] | None) -> dict[str, list[str]]:
    """Labels/annotations under our keys that live has and desired no longer sets."""
    out: dict[str, list[str]] = {}
    for part in ("labels", "annotations"):
        want = desired.get("metadata", {}).get(part) or {}
        have = ((live or {}).get("metadata") or {}).get(part) or {}
        keys = sorted(k for k in have if _ours(k) and k not in want)
        if keys:
            out[part] = keys
    return out
