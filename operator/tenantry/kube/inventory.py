"""What we own, as the API server last told us: a slim, in-memory copy of every managed child.

Filled once by a LIST per kind at start-up, then kept current by watch events. Reconciles read
from here instead of the API server, so a no-op reconcile costs no request at all, and a
restart converges with zero writes. Each entry keeps only what comparisons and status need
(labels, our annotations, the spec-like sections, quota status), not the whole object, and
keeps it as compact JSON, deflated against a preset dictionary (`Packer`): at 1,000
organizations there are ~40,000 entries; as a dict each costs ~3 KB, as JSON text ~0.6 KB,
deflated ~0.1 KB (measured; see docs/performance.md).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import sys
import zlib
from collections import defaultdict
from collections.abc import Iterator, MutableMapping
from typing import Any

from tenantry.api.documents import parse_object
from tenantry.api.organization import Organization
from tenantry.api.policy import builtin_default_policy
from tenantry.kube import drift
from tenantry.kube.resources import child_kind
from tenantry.render import ObjectKey, object_key, render_organization
from tenantry.render import labels as lbl


def slim(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata", {})
    kept_meta: dict[str, Any] = {
        k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "deletionTimestamp") if k in meta
    }
    if meta.get("labels"):
        kept_meta["labels"] = dict(meta["labels"])
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if drift.ours(k)}
    if annotations:
        kept_meta["annotations"] = annotations
    out: dict[str, Any] = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": kept_meta}
    # What drift compares (kube/drift.py): the kind's sections, and which label and annotation
    # keys our field manager applied (from managedFields, which is not kept).
    for section in drift.sections_of(obj["kind"]):
        if section in obj:
            out[section] = obj[section]
    applied = drift.applied_record(obj)
    if applied:
        out["applied"] = applied
    row = child_kind(obj["apiVersion"], obj["kind"])
    keep_status = row.status if row is not None else "none"
    if keep_status == "all" and "status" in obj:
        out["status"] = obj["status"]
    elif keep_status == "phase" and "status" in obj:
        out["status"] = {"phase": obj["status"].get("phase")}
    return out


def _key(obj: dict[str, Any]) -> ObjectKey:
    # Interned: the same few apiVersions, kinds and names (tenantry-default-deny, ...) repeat in
    # every namespace, and the same namespaces across 40,000 keys.
    api_version, kind, namespace, name = object_key(obj)
    return (sys.intern(api_version), sys.intern(kind), sys.intern(namespace), sys.intern(name))


# What a typical Organization renders to: the preset dictionary the entries are deflated
# against. A slim object of 0.6 KB deflates to ~0.3 KB on its own (too short to repeat itself
# much), to ~0.1 KB against the keys, labels, rules and subjects every rendering shares.
_SAMPLE: dict[str, Any] = {
    "apiVersion": "tenantry.dev/v1alpha1",
    "kind": "Organization",
    "metadata": {"name": "example"},
    "spec": {
        "displayName": "Example",
        "environments": ["prod", "staging", "dev"],
        "members": {
            "admins": [{"kind": "Group", "name": "example-admins"}],
            "developers": [{"kind": "Group", "name": "example-devs"}],
            "viewers": [{"kind": "User", "name": "auditor@example.com"}],
        },
        "network": {
            "egress": [{"cidr": "10.0.0.0/8", "ports": [{"port": 443, "protocol": "TCP"}], "reason": "db"}]
        },
    },
}
_WBITS = -15  # raw deflate (no header, dictionary id or checksum: 10 bytes less each), 32 KiB window


def _sample_dictionary() -> bytes:
    """The slim objects of _SAMPLE's rendering, as compact JSON; the last 32 KiB count."""
    org = parse_object(_SAMPLE)
    assert isinstance(org, Organization), org
    rendering = render_organization(org, builtin_default_policy(), dt.date(2000, 1, 1))
    # Every live object has these, the rendering does not.
    live = {"uid": "00000000-0000-0000-0000-000000000000", "resourceVersion": "1"}
    texts = [_dump(slim({**obj, "metadata": {**obj["metadata"], **live}})) for obj in rendering.objects]
    return "".join(texts).encode()[-(1 << -_WBITS) :]


def _dump(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


class Packer:
    """JSON objects <-> deflated compact JSON, all against one preset dictionary.

    Setting up a deflate stream with a 32 KiB dictionary costs more than compressing 0.6 KB, so
    every entry starts from a copy of one stream that has the dictionary loaded already. Both
    directions are safe to call from several threads (each call uses a stream of its own)."""

    def __init__(self, dictionary: bytes) -> None:
        self._dictionary = dictionary
        self._primed = zlib.compressobj(6, zlib.DEFLATED, _WBITS, 8, zlib.Z_DEFAULT_STRATEGY, dictionary)

    def pack(self, obj: Any) -> bytes:
        stream = self._primed.copy()
        return stream.compress(_dump(obj).encode()) + stream.flush()

    def unpack(self, packed: bytes) -> Any:
        return json.loads(zlib.decompressobj(_WBITS, self._dictionary).decompress(packed))


@functools.cache
def packer() -> Packer:
    """The inventory's Packer (built on first use: rendering the sample takes a few ms)."""
    return Packer(_sample_dictionary())


def _pack(obj: dict[str, Any]) -> bytes:
    return packer().pack(slim(obj))


def _unpack(packed: bytes) -> dict[str, Any]:
    obj: dict[str, Any] = packer().unpack(packed)
    return obj


Entry = tuple[ObjectKey, str | None, bytes]  # key, owner, packed slim object


def entry(obj: dict[str, Any]) -> Entry:
    """What the inventory keeps of one listed object (pure; safe to compute in a thread)."""
    return _key(obj), lbl.owner_of(obj.get("metadata", {}).get("labels")), _pack(obj)


def older(candidate: dict[str, Any] | None, kept: dict[str, Any] | None) -> bool:
    """Is `candidate` an older state of the same object than `kept`?

    What this relies on: for one object on one API server, resourceVersion is the etcd revision
    of its last write (ModRevision), and revisions only grow, so a later write of the same
    object has the larger number. The API conventions call resourceVersions opaque and promise
    only equality; KEP-5504 ("Comparable Resource Versions", with client-go's
    CompareResourceVersion and a conformance test) makes "a monotonically increasing integer"
    the documented promise. So versions are compared only when both are decimal integers;
    anything else (an aggregated API server with its own versions) counts as not older, the
    behaviour before this guard."""
    if candidate is None or kept is None:
        return False
    new = str((candidate.get("metadata") or {}).get("resourceVersion") or "")
    old = str((kept.get("metadata") or {}).get("resourceVersion") or "")
    return new.isdigit() and old.isdigit() and int(new) < int(old)


class Inventory:
    def __init__(self) -> None:
        self._objects: dict[ObjectKey, bytes] = {}
        self._by_owner: dict[str, set[ObjectKey]] = defaultdict(set)
        # Keys deleted by someone since we last wrote them: a later "missing" is drift, not new.
        self._tombstones: dict[ObjectKey, str] = {}  # key -> owner
        # ResourceQuotas, for the quota-use metrics read at scrape time (without a full scan).
        self._quota_keys: set[ObjectKey] = set()

    def __len__(self) -> int:
        return len(self._objects)

    def upsert(self, obj: dict[str, Any]) -> tuple[ObjectKey, str | None]:
        """Record the live state; returns the key and the owning organization (if ours).

        A state older than the one kept (a write's response that arrives after the watch
        delivered a later change) is ignored: the cache never goes backwards, or a change made
        in that window would never be seen as drift (see `older`)."""
        key = _key(obj)
        owner = lbl.owner_of(obj.get("metadata", {}).get("labels"))
        previous = self.get(key)
        if older(obj, previous):
            # The response to our write can arrive after the watch event of a later change
            # (kube-controller-manager fills a new quota's status within milliseconds): the
            # older state must not replace the newer, or the quota's usage is lost until the
            # next change (issue 20: status.quota and the quota metrics empty for minutes).
            assert previous is not None
            return key, lbl.owner_of(previous["metadata"].get("labels"))
        if previous is not None:
            old_owner = lbl.owner_of(previous["metadata"].get("labels"))
            if old_owner and old_owner != owner:
                self._by_owner[old_owner].discard(key)
        if owner is None:
            self._objects.pop(key, None)
            self._quota_keys.discard(key)
            return key, None
        self._objects[key] = _pack(obj)
        if key[1] == "ResourceQuota":
            self._quota_keys.add(key)
        self._by_owner[sys.intern(owner)].add(key)
        self._tombstones.pop(key, None)
        return key, owner

    def is_stale(self, obj: dict[str, Any]) -> bool:
        """Is `obj` older than what is kept of it (see `older`)?"""
        return older(obj, self.get(_key(obj)))

    def remove(self, obj: dict[str, Any]) -> tuple[ObjectKey, str | None]:
        key = _key(obj)
        packed = self._objects.pop(key, None)
        self._quota_keys.discard(key)
        previous = _unpack(packed) if packed is not None else None
        owner = lbl.owner_of((previous or obj).get("metadata", {}).get("labels"))
        if owner:
            self._by_owner[owner].discard(key)
            self._tombstones[key] = owner
        return key, owner

    def fill_entries(self, entries: list[Entry]) -> None:
        """Start-up LIST results, already packed; entries set by watch events win."""
        for key, owner, packed in entries:
            if owner is None or key in self._objects or key in self._tombstones:
                continue
            self._objects[key] = packed
            self._by_owner[sys.intern(owner)].add(key)
            if key[1] == "ResourceQuota":
                self._quota_keys.add(key)

    def get(self, key: ObjectKey) -> dict[str, Any] | None:
        """A fresh copy of the slim object (callers may modify it)."""
        packed = self._objects.get(key)
        return _unpack(packed) if packed is not None else None

    def owned_by(self, org: str) -> list[dict[str, Any]]:
        return [_unpack(self._objects[k]) for k in self.owned_keys(org)]

    def owned_keys(self, org: str) -> list[ObjectKey]:
        """The keys of what `org` owns (nothing unpacked), sorted."""
        return sorted(k for k in self._by_owner.get(org, ()) if k in self._objects)

    def quotas(self) -> Iterator[dict[str, Any]]:
        """Every ResourceQuota we own (slim copies, status included)."""
        for key in list(self._quota_keys):
            packed = self._objects.get(key)
            if packed is not None:
                yield _unpack(packed)

    def was_deleted(self, key: ObjectKey) -> bool:
        return key in self._tombstones

    def forget_tombstone(self, key: ObjectKey) -> None:
        self._tombstones.pop(key, None)

    def forget_owner(self, org: str) -> None:
        """An Organization is gone: its tombstones (and empty index entry) can go too."""
        for key in [k for k, owner in self._tombstones.items() if owner == org]:
            del self._tombstones[key]
        if not self._by_owner.get(org):
            self._by_owner.pop(org, None)


def pack_body(body: dict[str, Any]) -> bytes:
    """A whole object as Bodies keeps it."""
    return zlib.compress(_dump(body).encode())


def unpack_body(packed: bytes) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(zlib.decompress(packed))
    return body


class Bodies(MutableMapping[str, dict[str, Any]]):
    """Whole objects by name, kept as deflated compact JSON (1,000 Organizations with full
    status: ~18 MB as dicts, ~4.7 MB as JSON, ~1 MB deflated; measured). Reads return a fresh
    copy, so a caller can change what it got without changing what is kept: store it back to
    keep a change. A body of ~5 KB repeats itself enough to need no preset dictionary."""

    def __init__(self) -> None:
        self._packed: dict[str, bytes] = {}

    def __getitem__(self, name: str) -> dict[str, Any]:
        return unpack_body(self._packed[name])

    def __setitem__(self, name: str, body: dict[str, Any]) -> None:
        self._packed[name] = pack_body(body)

    def __delitem__(self, name: str) -> None:
        del self._packed[name]

    def __contains__(self, name: object) -> bool:
        return name in self._packed

    def __iter__(self) -> Iterator[str]:
        return iter(self._packed)

    def __len__(self) -> int:
        return len(self._packed)
