"""The inventory: a slim copy of what we own, who owns it, and what someone deleted."""

from __future__ import annotations

from typing import Any

from tenantry.kube.inventory import Bodies, Inventory, entry, slim
from tenantry.render import labels as lbl
from tenantry.render import object_key


def ours(org: str = "acme") -> dict[str, str]:
    return {lbl.APP_MANAGED_BY: lbl.APP_MANAGED_BY_VALUE, lbl.OWNER: org, "team": "x"}


def netpol(name: str = "tenantry-default-deny", namespace: str = "acme-prod", **meta: Any) -> dict[str, Any]:
    labels = meta.pop("labels", ours())
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": "u-1",
            "resourceVersion": "7",
            "labels": labels,
            "annotations": {"tenantry.dev/checksum": "abc", "kubectl.kubernetes.io/last-applied": "{...}"},
            "managedFields": [{"manager": "tenantry"}],
            "creationTimestamp": "2026-11-26T00:00:00Z",
            "generation": 3,
            **meta,
        },
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        "status": {"whatever": 1},
    }


def namespace(name: str = "acme-prod", org: str = "acme", **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "uid": "n-1", "resourceVersion": "3", "labels": ours(org), **meta},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active", "conditions": [{"type": "X"}]},
    }


def quota() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "tenantry-quota", "namespace": "acme-prod", "labels": ours()},
        "spec": {"hard": {"pods": "10"}},
        "status": {"hard": {"pods": "10"}, "used": {"pods": "4"}},
    }


def binding() -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "tenantry:viewers", "namespace": "acme-prod", "labels": ours()},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "Group", "name": "acme-viewers"}],
    }


# -- slim ----------------------------------------------------------------------------------------
def test_slim_keeps_identity_labels_our_annotations_and_the_spec_only() -> None:
    assert slim(netpol()) == {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": "tenantry-default-deny",
            "namespace": "acme-prod",
            "uid": "u-1",
            "resourceVersion": "7",
            "labels": ours(),
            "annotations": {"tenantry.dev/checksum": "abc"},
        },
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }


def test_slim_keeps_the_deletion_timestamp() -> None:
    terminating = namespace(deletionTimestamp="2026-11-26T01:00:00Z")
    assert slim(terminating)["metadata"]["deletionTimestamp"] == "2026-11-26T01:00:00Z"


def test_slim_keeps_a_quotas_status_and_a_namespaces_phase_only() -> None:
    assert slim(quota())["status"] == {"hard": {"pods": "10"}, "used": {"pods": "4"}}
    assert slim(namespace())["status"] == {"phase": "Active"}


def test_slim_keeps_the_rbac_sections() -> None:
    slimmed = slim(binding())
    assert slimmed["roleRef"]["name"] == "view"
    assert slimmed["subjects"] == [{"kind": "Group", "name": "acme-viewers"}]


def test_slim_does_not_share_the_callers_labels() -> None:
    obj = netpol()
    slimmed = slim(obj)
    obj["metadata"]["labels"]["team"] = "changed"
    assert slimmed["metadata"]["labels"]["team"] == "x"


# -- upsert / get / remove / owned_by ------------------------------------------------------------
def test_upsert_records_the_slim_object_and_its_owner() -> None:
    inventory = Inventory()
    key, owner = inventory.upsert(netpol())
    assert (key, owner) == (object_key(netpol()), "acme")
    assert inventory.get(key) == slim(netpol())
    assert len(inventory) == 1


def test_get_returns_a_copy_the_caller_may_modify() -> None:
    inventory = Inventory()
    key, _ = inventory.upsert(netpol())
    inventory.get(key)["spec"]["policyTypes"].append("Nope")  # type: ignore[index]
    assert inventory.get(key)["spec"]["policyTypes"] == ["Ingress", "Egress"]  # type: ignore[index]


def test_an_object_without_our_labels_is_not_kept() -> None:
    inventory = Inventory()
    key, owner = inventory.upsert(netpol(labels={"team": "x"}))
    assert owner is None and inventory.get(key) is None and len(inventory) == 0


def test_an_object_that_loses_our_labels_leaves_the_inventory_and_its_owner() -> None:
    inventory = Inventory()
    key, _ = inventory.upsert(netpol())
    inventory.upsert(netpol(labels={"team": "x"}))
    assert inventory.get(key) is None
    assert inventory.owned_by("acme") == []


def test_an_object_relabelled_to_another_organization_moves_to_it() -> None:
    inventory = Inventory()
    inventory.upsert(netpol())
    inventory.upsert(netpol(labels=ours("beta")))
    assert inventory.owned_by("acme") == []
    assert [o["metadata"]["labels"][lbl.OWNER] for o in inventory.owned_by("beta")] == ["beta"]


def test_owned_by_lists_each_organizations_objects_sorted_by_key() -> None:
    inventory = Inventory()
    inventory.upsert(netpol("b"))
    inventory.upsert(netpol("a"))
    inventory.upsert(namespace())
    inventory.upsert(namespace("beta-prod", "beta"))
    acme = inventory.owned_by("acme")
    assert [object_key(o) for o in acme] == sorted(object_key(o) for o in acme)
    assert [(o["kind"], o["metadata"]["name"]) for o in acme] == [
        ("NetworkPolicy", "a"),
        ("NetworkPolicy", "b"),
        ("Namespace", "acme-prod"),
    ]
    assert [o["metadata"]["name"] for o in inventory.owned_by("beta")] == ["beta-prod"]
    assert inventory.owned_by("nobody") == []


def test_remove_forgets_the_object_and_leaves_a_tombstone() -> None:
    inventory = Inventory()
    key, _ = inventory.upsert(netpol())
    assert not inventory.was_deleted(key)
    # A DELETED event may carry a bare object (the informer's synthetic ones have no labels):
    # the owner comes from what the inventory knew.
    meta = {"name": "tenantry-default-deny", "namespace": "acme-prod"}
    bare = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta}
    assert inventory.remove(bare) == (key, "acme")
    assert inventory.get(key) is None
    assert inventory.owned_by("acme") == []
    assert inventory.was_deleted(key)


def test_removing_an_unknown_object_uses_its_own_labels() -> None:
    inventory = Inventory()
    key, owner = inventory.remove(netpol())
    assert owner == "acme" and inventory.was_deleted(key)
    key, owner = inventory.remove(netpol("foreign", labels={"team": "x"}))
    assert owner is None and not inventory.was_deleted(key)


def test_an_upsert_clears_the_tombstone() -> None:
    inventory = Inventory()
    key, _ = inventory.upsert(netpol())
    inventory.remove(netpol())
    inventory.upsert(netpol())  # restored (by us) or re-created
    assert not inventory.was_deleted(key)


def test_forget_tombstone() -> None:
    inventory = Inventory()
    key, _ = inventory.upsert(netpol())
    inventory.remove(netpol())
    inventory.forget_tombstone(key)
    assert not inventory.was_deleted(key)
    inventory.forget_tombstone(key)  # twice is fine


def test_forget_owner_drops_that_organizations_tombstones_only() -> None:
    inventory = Inventory()
    acme, _ = inventory.upsert(netpol())
    beta, _ = inventory.upsert(netpol(namespace="beta-prod", labels=ours("beta")))
    inventory.remove(netpol())
    inventory.remove(netpol(namespace="beta-prod", labels=ours("beta")))
    inventory.forget_owner("acme")
    assert not inventory.was_deleted(acme)
    assert inventory.was_deleted(beta)


def test_forget_owner_keeps_what_still_exists() -> None:
    inventory = Inventory()
    key, _ = inventory.upsert(namespace())  # a retained namespace outlives its Organization
    inventory.forget_owner("acme")
    assert inventory.get(key) is not None
    assert [o["metadata"]["name"] for o in inventory.owned_by("acme")] == ["acme-prod"]


# -- fill_entries (start-up LIST) ----------------------------------------------------------------
def test_fill_entries_loads_listed_objects_but_never_over_watch_events() -> None:
    inventory = Inventory()
    newer = netpol(resourceVersion="9")
    inventory.upsert(newer)  # a watch event arrived before the LIST result was applied
    deleted = netpol("gone")
    inventory.upsert(deleted)
    inventory.remove(deleted)  # ... and a deletion too
    inventory.fill_entries(
        [entry(netpol()), entry(deleted), entry(netpol("listed")), entry(netpol("x", labels={"a": "b"}))]
    )
    assert inventory.get(object_key(newer))["metadata"]["resourceVersion"] == "9"  # type: ignore[index]
    assert inventory.get(object_key(deleted)) is None, "a deletion seen by the watch wins"
    assert inventory.get(object_key(netpol("listed"))) == slim(netpol("listed"))
    assert inventory.get(object_key(netpol("x"))) is None, "not ours"
    assert [o["metadata"]["name"] for o in inventory.owned_by("acme")] == ["listed", "tenantry-default-deny"]


def test_bodies_are_kept_packed_and_handed_out_as_copies() -> None:
    bodies = Bodies()
    bodies["acme"] = {"metadata": {"name": "acme"}, "spec": {"environments": ["prod"]}}
    got = bodies["acme"]
    got["spec"]["environments"].append("dev")  # a caller's change stays the caller's
    assert bodies["acme"]["spec"]["environments"] == ["prod"]
    assert "acme" in bodies and len(bodies) == 1 and list(bodies) == ["acme"]
    bodies.pop("acme")
    assert "acme" not in bodies and bodies.get("acme") is None


def test_an_older_state_never_replaces_a_newer_one() -> None:
    """The response to our apply (no quota status yet) can arrive after the watch event of the
    status kube-controller-manager wrote right after it: the usage must not be lost (issue 20)."""
    inv = Inventory()
    newer = quota()
    newer["metadata"]["resourceVersion"] = "101"
    older = quota()
    older["metadata"]["resourceVersion"] = "100"
    del older["status"]
    inv.upsert(newer)
    key, owner = inv.upsert(older)
    assert owner == "acme"
    kept = inv.get(key)
    assert kept is not None and kept["status"]["used"] == {"pods": "4"}
    # A newer state does replace it; so does one whose version is not a number.
    newest = quota()
    newest["metadata"]["resourceVersion"] = "102"
    newest["status"]["used"] = {"pods": "5"}
    inv.upsert(newest)
    assert inv.get(key)["status"]["used"] == {"pods": "5"}  # type: ignore[index]
    opaque = quota()
    opaque["metadata"]["resourceVersion"] = "abc"
    opaque["status"]["used"] = {"pods": "6"}
    inv.upsert(opaque)
    assert inv.get(key)["status"]["used"] == {"pods": "6"}  # type: ignore[index]
