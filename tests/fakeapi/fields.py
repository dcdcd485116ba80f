"""Patches and field ownership, as the API server applies them to one object.

Modelled (Kubernetes docs "Server-Side Apply"; apimachinery's managedfields):
- JSON merge patch (RFC 7386); strategic merge patch is treated as a merge patch (the two differ
  only for lists with merge keys, which Tenantry never patches);
- server-side apply with the API types' merge semantics: maps and structs are granular (each key
  is a field of its own: a label, a key of `spec.hard` or `data`), except the structs a resource
  declares atomic (`ResourceInfo.atomic`, from the `+structType=atomic` markers: a LabelSelector
  such as a NetworkPolicy's `spec.podSelector`, a binding's `roleRef`, a quota's
  `scopeSelector`), which are one field, replaced whole by an apply; lists are atomic (every list
  Tenantry writes is `+listType=atomic`). A manager owns the fields it applied; fields it applied
  before and omits now are removed unless another manager owns them too; without `force`,
  changing a field another manager owns is a 409 Conflict; with `force` the field moves to the
  applier; a field another manager owns and the applier does not send stays, force or not;
- an update (merge patch, JSON patch, PUT) takes every field it changes away from the other
  managers and gives it to the updater (`fieldManager`, or the User-Agent before its first "/");
- `metadata.managedFields` rendered from that ownership (FieldsV1 trees, one entry per manager,
  operation and subresource).

Not modelled (left to tests/e2e): `+mapType=atomic` maps (none in what Tenantry writes), list-map
and list-set merge strategies (`x-kubernetes-list-type: map` items owned separately), and
managedFields sent by clients. Shared ownership is: applying the value a field already has is no
conflict, so both managers own it (seen on 1.36.2, test_fake_apiserver.py).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

FieldPath = tuple[str, ...]
# Never owned by a manager: identity and server-maintained metadata.
SERVER_META = frozenset(
    {
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
    }
)
ABSENT: Any = object()


class ApplyConflictError(Exception):
    def __init__(self, conflicts: list[tuple[str, FieldPath]]) -> None:
        self.conflicts = conflicts
        super().__init__(
            f"Apply failed with {len(conflicts)} conflict(s): "
            + "; ".join(f'conflict with "{manager}": .{".".join(path)}' for manager, path in conflicts)
        )


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes a key, everything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def field_paths(
    body: Any, *, status: bool = False, prefix: FieldPath = (), atomic: frozenset[FieldPath] = frozenset()
) -> set[FieldPath]:
    """The leaf fields of `body` a manager can own: the main resource's (status=False) or the
    status subresource's (status=True). Lists, empty maps and atomic structs are leaves."""
    if not isinstance(body, Mapping) or (not body and prefix) or prefix in atomic:
        return {prefix} if prefix else set()
    out: set[FieldPath] = set()
    for key, value in body.items():
        if not prefix:
            if key in ("apiVersion", "kind"):
                continue
            if (key == "status") != status:
                continue
        if prefix == ("metadata",) and key in SERVER_META:
            continue
        out |= field_paths(value, status=status, prefix=(*prefix, key), atomic=atomic)
    return out


def apply_merge(target: Any, applied: Any, atomic: frozenset[FieldPath], prefix: FieldPath = ()) -> Any:
    """The object with an applied configuration merged in: granular maps key by key, atomic
    structs (and lists, and scalars) replaced whole."""
    if not isinstance(applied, Mapping) or (prefix and prefix in atomic):
        return copy.deepcopy(applied)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in applied.items():
        result[key] = apply_merge(result.get(key), value, atomic, (*prefix, key))
    return result


def value_at(obj: Any, path: FieldPath) -> Any:
    for part in path:
        if not isinstance(obj, Mapping) or part not in obj:
            return ABSENT
        obj = obj[part]
    return obj


def remove_at(obj: dict[str, Any], path: FieldPath) -> None:
    """Remove one leaf, and the maps it leaves empty (the API server keeps no empty parent an
    applier did not send)."""
    chain: list[tuple[dict[str, Any], str]] = []
    node: Any = obj
    for part in path[:-1]:
        if not isinstance(node, dict) or part not in node:
            return
        chain.append((node, part))
        node = node[part]
    if not isinstance(node, dict) or path[-1] not in node:
        return
    del node[path[-1]]
    for parent, part in reversed(chain):
        if parent[part] == {}:
            del parent[part]
        else:
            break


Owner = tuple[str, str, str]  # (manager, "Apply" | "Update", subresource or "")


class Ownership:
    """Who owns which leaf fields of one object."""

    def __init__(self, atomic: frozenset[FieldPath] = frozenset()) -> None:
        self.owners: dict[Owner, set[FieldPath]] = {}
        self.times: dict[Owner, str] = {}
        self.atomic = atomic  # the paths of the resource's atomic structs

    def apply(
        self,
        old: dict[str, Any],
        body: dict[str, Any],
        manager: str,
        *,
        force: bool,
        subresource: str,
        now: str,
    ) -> dict[str, Any]:
        """The object after `manager` applies `body` (raises ApplyConflictError without force)."""
        status = subresource == "status"
        me: Owner = (manager, "Apply", subresource)
        sent = field_paths(body, status=status, atomic=self.atomic)
        others = {owner: paths for owner, paths in self.owners.items() if owner != me}
        conflicts = [
            (owner[0], path)
            for owner, paths in others.items()
            for path in sorted(sent & paths)
            if value_at(old, path) != value_at(body, path)
        ]
        if conflicts and not force:
            raise ApplyConflictError(conflicts)
        new: dict[str, Any] = apply_merge(old, _without_nulls(body), self.atomic)
        owned_elsewhere = set().union(*others.values()) if others else set()
        for path in self.owners.get(me, set()) - sent - owned_elsewhere:
            remove_at(new, path)  # applied before, omitted now, nobody else owns it
        for paths in others.values():
            paths.difference_update({p for p in sent if value_at(old, p) != value_at(body, p)})
        if self.owners.get(me) != sent or any(value_at(old, p) != value_at(body, p) for p in sent):
            self.times[me] = now  # the entry's time moves only when this manager changed something
        self.owners[me] = sent
        self._forget_absent(new)
        return new

    def update(
        self, old: dict[str, Any], new: dict[str, Any], manager: str, *, subresource: str, now: str
    ) -> None:
        """Record an update: what changed belongs to `manager` now, and to nobody else."""
        status = subresource == "status"
        changed = {
            path
            for path in field_paths(new, status=status, atomic=self.atomic)
            | field_paths(old, status=status, atomic=self.atomic)
            if value_at(new, path) != value_at(old, path)
        }
        if not changed:
            return
        me: Owner = (manager, "Update", subresource)
        for owner, paths in self.owners.items():
            if owner != me:
                paths.difference_update(changed)
        self.owners.setdefault(me, set()).update(p for p in changed if value_at(new, p) is not ABSENT)
        self.times[me] = now
        self._forget_absent(new)

    def snapshot(self) -> tuple[dict[Owner, set[FieldPath]], dict[Owner, str]]:
        return {o: set(p) for o, p in self.owners.items()}, dict(self.times)

    def restore(self, saved: tuple[dict[Owner, set[FieldPath]], dict[Owner, str]]) -> None:
        self.owners, self.times = saved

    def _forget_absent(self, obj: dict[str, Any]) -> None:
        for owner in list(self.owners):
            self.owners[owner] = {p for p in self.owners[owner] if value_at(obj, p) is not ABSENT}
            if not self.owners[owner]:
                del self.owners[owner]
                self.times.pop(owner, None)

    def managed_fields(self, api_version: str) -> list[dict[str, Any]]:
        entries = []
        for owner, paths in self.owners.items():
            manager, operation, subresource = owner
            entry: dict[str, Any] = {
                "manager": manager,
                "operation": operation,
                "apiVersion": api_version,
                "time": self.times.get(owner, ""),
                "fieldsType": "FieldsV1",
                "fieldsV1": _fields_v1(paths),
            }
            if subresource:
                entry["subresource"] = subresource
            entries.append(entry)
        return entries


def _fields_v1(paths: set[FieldPath]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for part in path:
            node = node.setdefault(f"f:{part}", {})
    return tree


def _without_nulls(body: Any) -> Any:
    """An applied null means "not set by me": it never deletes (unlike in a merge patch)."""
    if isinstance(body, Mapping):
        return {k: _without_nulls(v) for k, v in body.items() if v is not None}
    return body
