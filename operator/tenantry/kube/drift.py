"""Will this edit be healed? Drift, defined by the rendering, exactly: the one place that says.

An object an Organization renders is in sync when the live object equals the rendered one,
field by field, modulo what the API server itself adds or rewrites. Everything else is drift:
a changed value, a field someone added inside what we own (a `matchLabels` in the podSelector
of `tenantry-default-deny`, a key in a quota's `spec.hard`, a `scopeSelector` on the quota, an
`aggregationRule` on our ClusterRole), and a field we applied before and no longer render (a
namespace label dropped from the policy's `namespaceLabels`, a quota key dropped from the
policy). Drift is healed at once (the child's watch event queues the Organization at drift
priority) and reported as a `DriftCorrected` Event naming every field path.

What is compared, per kind (`SECTIONS`): every top-level section of the body that the kind
has, exactly; and in `metadata`:
- every label and annotation we render, with our value;
- a key we do not render is drift when it is under our keys (`OUR_KEY_PREFIXES`, `OUR_KEYS`),
  or when our field manager applied it before (its Apply entry in `metadata.managedFields`,
  kept in the inventory as `applied`); any other key is someone else's and left alone
  (other tools label namespaces too);
- nothing else: status, uid, resourceVersion, finalizers, ownerReferences are not ours.

What the API server adds or rewrites, and is therefore not drift (`expected()` applies it to
the rendered object; `_normalised()` to both sides). Sources: kubernetes/kubernetes
`staging/src/k8s.io/api/*/v1/types.go` (json `omitempty`), `pkg/apis/*/v1/defaults.go`:
- empty lists and empty Go maps are omitted (`omitempty`): `ingress: []`, `matchLabels: {}`,
  `data: {}` (`core/v1` `SetDefaults_ConfigMap` sets `data` to `{}`); empty *structs* such
  as `podSelector: {}` are kept, and compared (`{podSelector: {}}` is not
  `{namespaceSelector: {}}`);
- quantities are canonicalised (`1000m` is stored as `1`, `1024Mi` as `1Gi`): compared by
  value in a ResourceQuota's `spec.hard` and a LimitRange's resource lists (apimachinery
  `resource.Quantity`);
- NetworkPolicy: a port without `protocol` gets `TCP` (`networking/v1` `SetDefaults_NetworkPolicyPort`);
  without `policyTypes`, `[Ingress]` plus `Egress` when it has egress rules
  (`SetDefaults_NetworkPolicy`);
- (Cluster)RoleBinding: `roleRef.apiGroup` and a User's or Group's `apiGroup` become
  `rbac.authorization.k8s.io` (`rbac/v1` `SetDefaults_RoleBinding`, `SetDefaults_Subject`);
- LimitRange, items of type Container: `default` takes `max` where unset, `defaultRequest`
  takes `default`, then `min`, where unset (`core/v1` `SetDefaults_LimitRangeItem`);
- Namespace: the label `kubernetes.io/metadata.name` (`core/v1` `SetDefaults_Namespace`),
  `spec.finalizers` and `status` (the namespace registry and controller): not compared.

How drift is healed, with server-side apply's real semantics (docs/real-api-server.md):
1. a forced apply of the rendered object (`force=true`, field manager `tenantry`) takes every
   field we send from whoever changed it, replaces atomic lists and structs whole (a narrowed
   `podSelector`: LabelSelector is `+structType=atomic`), and removes what we applied before
   and omit now, unless another manager owns it too;
2. what is left is a field another manager added inside a *granular* map or struct (a label,
   a key in `spec.hard` or `data`, a field of `spec`): an apply never removes a field it does
   not own, so `leftovers()` removes exactly those with a JSON merge patch carrying the apply's
   `resourceVersion` (the API server refuses it with 409 if the object changed in between).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tenantry.api.quantity import QuantityError, parse_quantity
from tenantry.kube.client import FIELD_MANAGER
from tenantry.render import labels as lbl

RBAC_GROUP = "rbac.authorization.k8s.io"

# Per kind, the top-level sections of the body that are ours: every one the kind has, so a
# section someone adds (binaryData on the guardrails ConfigMap, aggregationRule on the member
# ClusterRole, whose rules the aggregation controller would then rewrite) is drift too.
# A Namespace has none: its `spec.finalizers` belong to the namespace controller.
SECTIONS: dict[str, tuple[str, ...]] = {
    "Namespace": (),
    "ResourceQuota": ("spec",),
    "LimitRange": ("spec",),
    "ConfigMap": ("data", "binaryData"),
    "NetworkPolicy": ("spec",),
    "RoleBinding": ("roleRef", "subjects"),
    "ClusterRole": ("rules", "aggregationRule"),
    "ClusterRoleBinding": ("roleRef", "subjects"),
    "AppProject": ("spec",),
}
ALL_SECTIONS = tuple(sorted({s for sections in SECTIONS.values() for s in sections}))
METADATA_MAPS = ("labels", "annotations")

OUR_KEY_PREFIXES = ("tenantry.dev/", lbl.PSA_PREFIX)
OUR_KEYS = frozenset({lbl.ORGANIZATION, lbl.ENVIRONMENT, lbl.MANAGED_BY, lbl.APP_MANAGED_BY})
# Set by the API server on every namespace (immutable): never ours, never removed.
SERVER_KEYS = frozenset({lbl.METADATA_NAME})

# Go maps (`map[string]...` with omitempty): omitted when empty. Struct fields are not.
_GO_MAPS = frozenset(
    {"labels", "annotations", "matchLabels", "data", "binaryData", "hard"}
    | {"max", "min", "default", "defaultRequest", "maxLimitRequestRatio"}
)
_RESOURCE_LISTS = ("max", "min", "default", "defaultRequest", "maxLimitRequestRatio")

Path = tuple[str | int, ...]


def ours(key: str) -> bool:
    """A label or annotation key only Tenantry writes on the objects it owns."""
    return key in OUR_KEYS or key.startswith(OUR_KEY_PREFIXES)


def sections_of(kind: str) -> tuple[str, ...]:
    return SECTIONS.get(kind, ALL_SECTIONS)


# -- what the inventory keeps ---------------------------------------------------------------------
def applied_record(obj: dict[str, Any]) -> dict[str, list[str]]:
    """Label and annotation keys our field manager applied (its Apply entry in managedFields),
    beyond those `ours()` recognises by name: what tells a namespace label we applied from one
    someone else set. Empty for most objects (all their keys are ours by name)."""
    meta = obj.get("metadata") or {}
    if "managedFields" not in meta:
        record: dict[str, list[str]] = obj.get("applied") or {}
        return record
    out: dict[str, list[str]] = {}
    for entry in meta.get("managedFields") or []:
        if entry.get("manager") != FIELD_MANAGER or entry.get("operation") != "Apply":
            continue
        if entry.get("subresource"):
            continue
        fields = ((entry.get("fieldsV1") or {}).get("f:metadata") or {}) if isinstance(entry, dict) else {}
        for part in METADATA_MAPS:
            keys = sorted(
                k[2:]
                for k in fields.get(f"f:{part}") or {}
                if k.startswith("f:") and not ours(k[2:]) and k[2:] not in SERVER_KEYS
            )
            if keys:
                out[part] = keys
    return out


# -- the comparison -------------------------------------------------------------------------------
def expected(desired: dict[str, Any]) -> dict[str, Any]:
    """The rendered object as the API server stores it: with its defaults (see the module
    docstring). Pure; `desired` is not changed."""
    kind = desired.get("kind")
    out: dict[str, Any] = _normalised(desired)
    if kind == "NetworkPolicy":
        spec = out.setdefault("spec", {})
        for direction in ("ingress", "egress"):
            for rule in spec.get(direction) or []:
                for port in rule.get("ports") or []:
                    port.setdefault("protocol", "TCP")
        if not spec.get("policyTypes"):
            spec["policyTypes"] = ["Ingress", *(["Egress"] if spec.get("egress") else [])]
    elif kind in ("RoleBinding", "ClusterRoleBinding"):
        if "roleRef" in out:
            out["roleRef"].setdefault("apiGroup", RBAC_GROUP)
        for subject in out.get("subjects") or []:
            if subject.get("kind") in ("User", "Group"):
                subject.setdefault("apiGroup", RBAC_GROUP)
    elif kind == "LimitRange":
        for item in (out.get("spec") or {}).get("limits") or []:
            if item.get("type") != "Container":
                continue
            default = {**item.get("max", {}), **item.get("default", {})}
            request = {**item.get("min", {}), **default, **item.get("defaultRequest", {})}
            for name, values in (("default", default), ("defaultRequest", request)):
                if values:
                    item[name] = values
    return out


def differences(desired: dict[str, Any], live: dict[str, Any] | None) -> list[Path]:
    """Every field path where `live` is not what we render (empty: in sync). A missing object
    is the one path `()`."""
    if live is None:
        return [()]
    want, have = expected(desired), _normalised(live)
    kind = str(desired.get("kind"))
    out: list[Path] = []
    applied = applied_record(live)
    want_meta, have_meta = want.get("metadata") or {}, have.get("metadata") or {}
    for part in METADATA_MAPS:
        wanted, had = want_meta.get(part) or {}, have_meta.get(part) or {}
        ours_too = set(applied.get(part, ()))
        for key in sorted(set(wanted) | set(had)):
            if key in wanted:
                if had.get(key) != wanted[key]:
                    out.append(("metadata", part, key))
            elif key not in SERVER_KEYS and (ours(key) or key in ours_too):
                out.append(("metadata", part, key))
    for section in sections_of(kind):
        out += _diff(kind, want.get(section), have.get(section), (section,))
    return out


def in_sync(desired: dict[str, Any], live: dict[str, Any] | None) -> bool:
    """Would applying `desired` change `live`? (False means: write.)"""
    return live is not None and not differences(desired, live)


def leftovers(desired: dict[str, Any], live: dict[str, Any]) -> dict[str, Any] | None:
    """After a forced apply of `desired` returned `live`: the JSON merge patch that removes what
    the apply could not (fields another manager added in granular maps and structs), with
    `live`'s resourceVersion as precondition; None when nothing is left.

    Raises `StillDifferent` for a difference a merge patch cannot remove (a changed value, a
    list): after a forced apply there is none on a real API server, so it means something else
    rewrites the object and healing would only fight it."""
    paths = differences(desired, live)
    if not paths:
        return None
    want = expected(desired)
    removable = [p for p in paths if _value_at(want, p) is _ABSENT and all(isinstance(s, str) for s in p)]
    if len(removable) != len(paths):
        raise StillDifferentError([p for p in paths if p not in removable])
    patch: dict[str, Any] = {"metadata": {"resourceVersion": live["metadata"].get("resourceVersion")}}
    for path in removable:
        node = patch
        for step in path[:-1]:
            node = node.setdefault(str(step), {})
        node[str(path[-1])] = None
    return patch


class StillDifferentError(Exception):
    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        super().__init__(f"still differs after a forced apply: {describe(paths)}")


def describe(paths: list[Path]) -> str:
    """Field paths for people: `spec.podSelector.matchLabels.x`, `metadata.labels["team"]`,
    `spec.egress[0].ports`."""
    return ", ".join(_path_text(p) for p in paths) if paths and paths != [()] else "the whole object"


def status_only(previous: dict[str, Any] | None, current: dict[str, Any] | None) -> bool:
    """Two slim copies that differ at most in status and resourceVersion (a quota's usage moved:
    kube-controller-manager's write, not drift)."""

    def essence(obj: dict[str, Any]) -> dict[str, Any]:
        meta = {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}
        return {**{k: v for k, v in obj.items() if k != "status"}, "metadata": meta}

    return previous is not None and current is not None and essence(previous) == essence(current)


# -- helpers --------------------------------------------------------------------------------------
_ABSENT: Any = object()


def _normalised(value: Any, key: str | None = None) -> Any:
    """A deep copy without nulls, empty lists and empty Go maps (what `omitempty` drops)."""
    if isinstance(value, dict):
        out = {}
        for k, raw in value.items():
            v = _normalised(raw, k)
            if v is None or v == [] or (v == {} and k in _GO_MAPS):
                continue
            out[k] = v
        return out
    if isinstance(value, list):
        return [_normalised(v) for v in value]
    return value


def _is_quantity(kind: str, path: Path) -> bool:
    if kind == "ResourceQuota":
        return len(path) == 3 and path[:2] == ("spec", "hard")
    if kind == "LimitRange":
        return len(path) == 5 and path[:2] == ("spec", "limits") and path[3] in _RESOURCE_LISTS
    return False


def _same_scalar(kind: str, path: Path, want: Any, have: Any) -> bool:
    if want == have and type(want) is type(have):
        return True
    if _is_quantity(kind, path) and isinstance(want, str | int) and isinstance(have, str | int):
        try:
            return parse_quantity(want) == parse_quantity(have)
        except QuantityError:
            return False
    return False


def _diff(kind: str, want: Any, have: Any, path: Path) -> list[Path]:
    if isinstance(want, dict) and isinstance(have, dict):
        out: list[Path] = []
        for key in sorted(set(want) | set(have)):
            if key not in have or key not in want:
                out.append((*path, key))
            else:
                out += _diff(kind, want[key], have[key], (*path, key))
        return out
    if isinstance(want, list) and isinstance(have, list) and len(want) == len(have):
        pairs = enumerate(zip(want, have, strict=True))
        return [p for i, (w, h) in pairs for p in _diff(kind, w, h, (*path, i))]
    if want is None and have is None:
        return []
    if isinstance(want, dict | list) or isinstance(have, dict | list):
        return [path]
    return [] if _same_scalar(kind, path, want, have) else [path]


def _value_at(obj: Any, path: Path) -> Any:
    for step in path:
        in_map = isinstance(obj, dict) and step in obj
        if in_map or (isinstance(obj, list) and isinstance(step, int) and step < len(obj)):
            obj = obj[step]
        else:
            return _ABSENT
    return obj


def _path_text(path: Path) -> str:
    def parts() -> Iterator[str]:
        for i, step in enumerate(path):
            if isinstance(step, int):
                yield f"[{step}]"
            elif path[:i] and path[i - 1] in (*METADATA_MAPS, *_GO_MAPS) and not step.isidentifier():
                yield f'["{step}"]'
            else:
                yield f".{step}" if i else step

    return "".join(parts())
