"""Live-versus-desired comparison: what counts as drift, and what must not (or every resync writes)."""

from __future__ import annotations

from tenantry.kube.compare import covers, in_sync, stale_keys

DENY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "tenantry-default-deny", "labels": {"tenantry.dev/organization": "acme"}},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []},
}


def live(**spec: object) -> dict[str, object]:
    base = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    base.update(spec)
    return {**DENY, "metadata": {**DENY["metadata"], "uid": "u", "resourceVersion": "7"}, "spec": base}


def test_an_api_server_that_omits_empty_lists_is_in_sync() -> None:
    assert in_sync(DENY, live())


def test_an_added_allow_rule_is_drift() -> None:
    assert not in_sync(DENY, live(ingress=[{}]))


def test_quantities_compare_by_value() -> None:
    assert covers({"hard": {"cpu": "1"}}, {"hard": {"cpu": "1000m"}})
    assert not covers({"hard": {"cpu": "2"}}, {"hard": {"cpu": "1000m"}})


def test_list_elements_must_match_exactly_but_top_level_maps_may_have_more() -> None:
    assert covers({"spec": {"a": 1, "extra": 2}}, {"spec": {"a": 1}})
    assert not covers({"rules": [{"a": 1, "extra": 2}]}, {"rules": [{"a": 1}]})
    assert not covers({"subjects": [{"name": "x"}, {"name": "y"}]}, {"subjects": [{"name": "x"}]})


def test_other_peoples_labels_are_fine_but_a_label_of_ours_we_dropped_is_not() -> None:
    theirs = {**DENY, "metadata": {**DENY["metadata"], "labels": {**DENY["metadata"]["labels"], "team": "x"}}}
    assert in_sync(DENY, theirs)
    ours = {
        **DENY,
        "metadata": {
            **DENY["metadata"],
            "labels": {**DENY["metadata"]["labels"], "tenantry.dev/orphaned": "true"},
        },
    }
    assert not in_sync(DENY, ours)
    assert stale_keys(DENY, ours) == {"labels": ["tenantry.dev/orphaned"]}
