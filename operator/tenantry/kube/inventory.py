"""What we own, as the API server last told us: a slim, in-memory copy of every managed child.

Filled once by a LIST per kind at start-up, then kept current by watch events. Reconciles read
from here instead of the API server, so a no-op reconcile costs no request at all, and a
restart converges with zero writes. Each entry keeps only what comparisons and status need
(labels, our annotations, the spec-like sections, quota status), not the whole object:
at 1,000 organizations that is ~30,000 entries.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from tenantry.render import ObjectKey, object_key
from tenantry.render import labels as lbl

_BODY_SECTIONS = ("spec", "rules", "roleRef", "subjects")


def slim(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata", {})
    kept_meta: dict[str, Any] = {
        k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "deletionTimestamp") if k in meta
    }
    if meta.get("labels"):
        kept_meta["labels"] = dict(meta["labels"])
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith("tenantry.dev/")}
    if annotations:
        kept_meta["annotations"] = annotations
    out: dict[str, Any] = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": kept_meta}
    for section in _BODY_SECTIONS:
        if section in obj:
            out[section] = obj[section]
    if obj["kind"] == "ResourceQuota" and "status" in obj:
        out["status"] = obj["status"]
    if obj["kind"] == "Namespace" and "status" in obj:
        out["status"] = {"phase": obj["status"].get("phase")}
    return out


class Inventory:
    def __init__(self) -> None:
        self._objects: dict[ObjectKey, dict[str, Any]] = {}
        self._by_owner: dict[str, set[ObjectKey]] = defaultdict(set)
        # Keys deleted by someone since we last wrote them: a later "missing" is drift, not new.
        self._tombstones: set[ObjectKey] = set()

    def __len__(self) -> int:
        return len(self._objects)

    def upsert(self, obj: dict[str, Any]) -> tuple[ObjectKey, str | None]:
        """Record the live state; returns the key and the owning organization (if ours)."""
        key = object_key(obj)
        owner = lbl.owner_of(obj.get("metadata", {}).get("labels"))
        previous = self._objects.get(key)
        if previous is not None:
            old_owner = lbl.owner_of(previous["metadata"].get("labels"))
            if old_owner and old_owner != owner:
                self._by_owner[old_owner].discard(key)
        if owner is None:
            self._objects.pop(key, None)
            return key, None
        self._objects[key] = slim(obj)
        self._by_owner[owner].add(key)
        self._tombstones.discard(key)
        return key, owner

    def remove(self, obj: dict[str, Any]) -> tuple[ObjectKey, str | None]:
        key = object_key(obj)
        previous = self._objects.pop(key, None)
        owner = lbl.owner_of((previous or obj).get("metadata", {}).get("labels"))
        if owner:
            self._by_owner[owner].discard(key)
            self._tombstones.add(key)
        return key, owner

    def fill(self, objects: list[dict[str, Any]]) -> None:
        """Start-up LIST results; entries already set by (newer) watch events win."""
        for obj in objects:
            if object_key(obj) not in self._objects:
                self.upsert(obj)

    def get(self, key: ObjectKey) -> dict[str, Any] | None:
        return self._objects.get(key)

    def owned_by(self, org: str) -> list[dict[str, Any]]:
        return [self._objects[k] for k in sorted(self._by_owner.get(org, ())) if k in self._objects]

    def was_deleted(self, key: ObjectKey) -> bool:
        return key in self._tombstones

    def forget_tombstone(self, key: ObjectKey) -> None:
        self._tombstones.discard(key)
