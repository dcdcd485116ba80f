"""kube/drift.py: what is drift (every difference from the rendering) and what is not (what the
API server defaults or canonicalises, and what other people own outside of it)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tenantry.kube.drift import (
    StillDifferentError,
    applied_record,
    describe,
    differences,
    expected,
    in_sync,
    leftovers,
    status_only,
)
from tenantry.kube.inventory import slim

LABELS = {"app.kubernetes.io/managed-by": "tenantry", "tenantry.dev/organization": "acme"}
DENY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "tenantry-default-deny", "namespace": "acme-dev", "labels": LABELS},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []},
}
QUOTA = {
    "apiVersion": "v1",
    "kind": "ResourceQuota",
    "metadata": {"name": "tenantry-quota", "namespace": "acme-dev", "labels": LABELS},
    "spec": {"hard": {"requests.cpu": "1000m", "limits.memory": "1024Mi", "services.nodeports": "0"}},
}
NAMESPACE = {
    "apiVersion": "v1",
    "kind": "Namespace",
    "metadata": {
        "name": "acme-dev",
        "labels": {**LABELS, "team": "a"},
        "annotations": {"tenantry.dev/policy": "p"},
    },
}


def stored(obj: dict[str, Any], **meta: Any) -> dict[str, Any]:
    """`obj` as a real API server returns it after our apply: defaults applied, server metadata,
    our Apply entry in managedFields."""
    out = expected(obj)
    out["metadata"] = {**out["metadata"], "uid": "u", "resourceVersion": "7", **meta}
    labels = obj["metadata"].get("labels") or {}
    out["metadata"].setdefault(
        "managedFields",
        [
            {
                "manager": "tenantry",
                "operation": "Apply",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {".": {}, **{f"f:{k}": {} for k in labels}}}},
            }
        ],
    )
    return out


def edited(obj: dict[str, Any], *path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    node = out
    for step in path[:-1]:
        node = node.setdefault(step, {})
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


# -- what the API server does is not drift ----------------------------------------------------------
def test_an_api_server_that_omits_empty_lists_and_maps_is_in_sync() -> None:
    live = stored(DENY)
    assert "ingress" not in live["spec"] and live["spec"]["podSelector"] == {}
    assert in_sync(DENY, live)


def test_quantities_compare_by_value_where_they_are_quantities() -> None:
    live = edited(
        stored(QUOTA),
        "spec",
        "hard",
        value={"requests.cpu": "1", "limits.memory": "1Gi", "services.nodeports": "0"},
    )
    assert in_sync(QUOTA, live)
    assert differences(QUOTA, edited(live, "spec", "hard", "requests.cpu", value="2")) == [
        ("spec", "hard", "requests.cpu")
    ]


def test_network_policy_defaults_protocol_and_policy_types() -> None:
    desired = edited(DENY, "spec", value={"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]})
    live = edited(
        stored(desired),
        "spec",
        value={
            "podSelector": {},
            "ingress": [{"ports": [{"port": 80, "protocol": "TCP"}]}],
            "policyTypes": ["Ingress"],
        },
    )
    assert in_sync(desired, live)
    udp = edited(live, "spec", "ingress", value=[{"ports": [{"port": 80, "protocol": "UDP"}]}])
    assert differences(desired, udp) == [("spec", "ingress", 0, "ports", 0, "protocol")]


def test_binding_api_groups_are_defaulted_for_users_and_groups_only() -> None:
    desired = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "tenantry:viewers", "namespace": "acme-dev", "labels": LABELS},
        "roleRef": {"kind": "ClusterRole", "name": "tenantry:viewer"},
        "subjects": [
            {"kind": "Group", "name": "g"},
            {"kind": "ServiceAccount", "name": "s", "namespace": "n"},
        ],
    }
    live = stored(desired)
    assert live["roleRef"]["apiGroup"] == "rbac.authorization.k8s.io"
    assert live["subjects"][0]["apiGroup"] == "rbac.authorization.k8s.io"
    assert "apiGroup" not in live["subjects"][1]
    assert in_sync(desired, live)


def test_limit_range_container_defaults_follow_max_default_and_min() -> None:
    desired = {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": "tenantry-limits", "namespace": "acme-dev", "labels": LABELS},
        "spec": {"limits": [{"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "1Mi"}}]},
    }
    live = edited(
        stored(desired),
        "spec",
        value={
            "limits": [
                {
                    "type": "Container",
                    "max": {"cpu": "2"},
                    "min": {"memory": "1Mi"},
                    "default": {"cpu": "2"},
                    "defaultRequest": {"cpu": "2", "memory": "1Mi"},
                }
            ]
        },
    )
    assert in_sync(desired, live)


def test_the_namespace_name_label_finalizers_and_status_are_the_servers() -> None:
    live = stored(NAMESPACE)
    live["metadata"]["labels"]["kubernetes.io/metadata.name"] = "acme-dev"
    live["spec"], live["status"] = {"finalizers": ["kubernetes"]}, {"phase": "Active"}
    assert in_sync(NAMESPACE, live)


def test_someone_elses_label_on_our_namespace_is_theirs() -> None:
    live = stored(NAMESPACE)
    live["metadata"]["labels"]["argocd.argoproj.io/instance"] = "x"
    assert in_sync(NAMESPACE, live)


# -- every other difference is drift --------------------------------------------------------------------
def test_a_narrowed_pod_selector_is_drift() -> None:
    live = edited(stored(DENY), "spec", "podSelector", value={"matchLabels": {"x": "y"}})
    assert differences(DENY, live) == [("spec", "podSelector", "matchLabels")]
    assert describe(differences(DENY, live)) == "spec.podSelector.matchLabels"


def test_an_added_allow_rule_is_drift() -> None:
    assert not in_sync(DENY, edited(stored(DENY), "spec", "ingress", value=[{}]))


def test_a_peer_selecting_all_namespaces_is_not_a_peer_selecting_this_one() -> None:
    same = edited(DENY, "spec", "ingress", value=[{"from": [{"podSelector": {}}]}])
    everyone = edited(stored(same), "spec", "ingress", value=[{"from": [{"namespaceSelector": {}}]}])
    assert not in_sync(same, everyone)


def test_an_extra_key_in_a_map_we_send_is_drift() -> None:
    live = edited(stored(QUOTA), "spec", "hard", "pods", value="1")
    assert describe(differences(QUOTA, live)) == "spec.hard.pods"


def test_a_field_added_beside_ours_is_drift() -> None:
    live = edited(stored(QUOTA), "spec", "scopeSelector", value={"matchExpressions": []})
    assert differences(QUOTA, live) == [("spec", "scopeSelector")]
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "tenantry:member:acme", "labels": LABELS},
        "rules": [],
    }
    aggregated = {**stored(role), "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"a": "b"}}]}}
    assert differences(role, aggregated) == [("aggregationRule",)]


def test_a_quota_key_we_no_longer_render_is_drift() -> None:
    without = edited(QUOTA, "spec", "hard", "services.nodeports", value=None)
    assert differences(without, stored(QUOTA)) == [("spec", "hard", "services.nodeports")]
    assert describe(differences(without, stored(QUOTA))) == 'spec.hard["services.nodeports"]'


def test_a_namespace_label_we_applied_and_no_longer_render_is_drift() -> None:
    live = stored(NAMESPACE)  # our Apply entry owns `team`
    without = edited(NAMESPACE, "metadata", "labels", "team", value=None)
    assert differences(without, live) == [("metadata", "labels", "team")]
    # ... also from the inventory's slim copy, which keeps the record but not managedFields.
    assert slim(live)["applied"] == {"labels": ["team"]}
    assert differences(without, slim(live)) == [("metadata", "labels", "team")]
    # The same label set by someone else was never ours.
    theirs = {**live, "metadata": {**live["metadata"], "managedFields": []}}
    assert in_sync(without, theirs)


def test_labels_under_our_keys_are_ours_whoever_set_them() -> None:
    live = stored(DENY)
    live["metadata"]["labels"]["tenantry.dev/orphaned"] = "true"
    assert differences(DENY, live) == [("metadata", "labels", "tenantry.dev/orphaned")]
    assert describe(differences(DENY, live)) == 'metadata.labels["tenantry.dev/orphaned"]'


def test_the_record_of_applied_keys_leaves_out_our_own_and_the_servers() -> None:
    live = stored(NAMESPACE)
    live["metadata"]["managedFields"][0]["fieldsV1"]["f:metadata"]["f:labels"][
        "f:kubernetes.io/metadata.name"
    ] = {}
    live["metadata"]["managedFields"].append(
        {
            "manager": "kubectl",
            "operation": "Update",
            "fieldsV1": {"f:metadata": {"f:labels": {"f:other": {}}}},
        }
    )
    assert applied_record(live) == {"labels": ["team"]}


def test_a_missing_object_is_not_in_sync() -> None:
    assert differences(DENY, None) == [()]
    assert not in_sync(DENY, None)


# -- healing: what a forced apply leaves is removed, and only that ----------------------------------
def test_leftovers_remove_fields_another_manager_added_with_a_resource_version_precondition() -> None:
    live = edited(stored(QUOTA), "spec", "hard", "pods", value="1")
    live["metadata"]["labels"]["tenantry.dev/orphaned"] = "true"
    live["metadata"]["labels"]["theirs"] = "x"
    assert leftovers(QUOTA, live) == {
        "metadata": {"resourceVersion": "7", "labels": {"tenantry.dev/orphaned": None}},
        "spec": {"hard": {"pods": None}},
    }
    assert leftovers(QUOTA, stored(QUOTA)) is None


def test_a_difference_a_forced_apply_should_have_fixed_is_reported_not_patched() -> None:
    live = edited(stored(QUOTA), "spec", "hard", "requests.cpu", value="9")
    with pytest.raises(StillDifferentError, match=r'spec.hard\["requests.cpu"\]'):
        leftovers(QUOTA, live)


def test_a_quota_usage_update_is_status_only() -> None:
    before = slim({**stored(QUOTA), "status": {"used": {"pods": "1"}}})
    after = slim({**stored(QUOTA, resourceVersion="8"), "status": {"used": {"pods": "2"}}})
    assert status_only(before, after)
    assert not status_only(before, slim(edited(stored(QUOTA), "spec", "hard", "pods", value="1")))
