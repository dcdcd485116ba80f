"""build_status: conditions a person can act on, transitions, appliedObjects; same_status."""

from __future__ import annotations

from typing import Any

from tenantry.reconcile import reasons
from tenantry.reconcile.status import AREAS, Outcome, build_status, same_status

T0, T1 = "2026-11-26T10:00:00Z", "2026-11-26T11:00:00Z"


def conds(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def ok(**kw: Any) -> Outcome:
    outcome = Outcome(applied_objects="fp-1", **kw)
    outcome.namespaces = [{"name": "acme-prod", "environment": "prod", "phase": "Active"}]
    return outcome


def test_all_applied_is_ready_with_every_area_applied() -> None:
    status = build_status(ok(), 3, None, T0)
    c = conds(status)
    assert [x["type"] for x in status["conditions"]] == ["Ready", "Reconciling", "Stalled", *AREAS]
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("True", reasons.RECONCILED)
    assert (c["Reconciling"]["status"], c["Stalled"]["status"]) == ("False", "False")
    assert all((c[a]["status"], c[a]["reason"]) == ("True", reasons.APPLIED) for a in AREAS)
    assert all(x["observedGeneration"] == 3 and x["lastTransitionTime"] == T0 for x in c.values())
    assert status["observedGeneration"] == 3
    assert status["appliedObjects"] == "fp-1"
    assert status["namespaces"] == [{"name": "acme-prod", "environment": "prod", "phase": "Active"}]


def test_no_generation_no_observed_generation() -> None:
    status = build_status(ok(), None, None, T0)
    assert "observedGeneration" not in status
    assert all("observedGeneration" not in c for c in status["conditions"])


def test_progressing_is_not_ready_and_reconciling() -> None:
    outcome = ok(progressing=True)
    outcome.message = "waiting for a terminating namespace"
    c = conds(build_status(outcome, 1, None, T0))
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("False", reasons.PROGRESSING)
    assert (c["Reconciling"]["status"], c["Reconciling"]["reason"]) == ("True", reasons.PROGRESSING)
    assert c["Reconciling"]["message"] == "waiting for a terminating namespace"
    assert c["Stalled"]["status"] == "False"


def test_a_stalled_failure_marks_every_area_not_applied() -> None:
    outcome = ok()
    outcome.fail(reasons.INVALID_SPEC, "spec.environments[0]: bad", stalled=True)
    c = conds(build_status(outcome, 2, None, T0))
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("False", reasons.INVALID_SPEC)
    assert (c["Stalled"]["status"], c["Stalled"]["reason"]) == ("True", reasons.INVALID_SPEC)
    assert c["Stalled"]["message"] == "spec.environments[0]: bad"
    for area in AREAS:
        assert (c[area]["status"], c[area]["reason"]) == ("False", reasons.INVALID_SPEC)
        assert c[area]["message"] == "not applied: spec.environments[0]: bad"


def test_a_failed_area_is_reported_in_that_area_only() -> None:
    outcome = ok()
    outcome.areas["NetworkReady"] = (reasons.APPLY_FAILED, "NetworkPolicy acme-prod/x: 500")
    outcome.fail(reasons.APPLY_FAILED, "NetworkPolicy acme-prod/x: 500", stalled=False)
    c = conds(build_status(outcome, 1, None, T0))
    assert (c["NetworkReady"]["status"], c["NetworkReady"]["reason"]) == ("False", reasons.APPLY_FAILED)
    assert all(c[a]["status"] == "True" for a in AREAS if a != "NetworkReady")
    assert c["Stalled"]["status"] == "False", "a transient failure is retried, not stalled"


def test_the_transition_time_moves_only_when_the_status_does() -> None:
    first = build_status(ok(), 1, None, T0)
    again = build_status(ok(), 2, first, T1)
    assert all(c["lastTransitionTime"] == T0 for c in again["conditions"]), "nothing transitioned"
    assert conds(again)["Ready"]["observedGeneration"] == 2

    failing = ok()
    failing.areas["QuotaReady"] = (reasons.APPLY_FAILED, "quota: 500")
    failing.fail(reasons.APPLY_FAILED, "quota: 500", stalled=False)
    failed = build_status(failing, 2, again, T1)
    c = conds(failed)
    assert c["Ready"]["lastTransitionTime"] == T1 and c["QuotaReady"]["lastTransitionTime"] == T1
    assert c["NetworkReady"]["lastTransitionTime"] == T0, "still True: no transition"
    assert c["Stalled"]["lastTransitionTime"] == T0, "still False: no transition"


def test_applied_objects_are_kept_from_the_last_fully_applied_pass() -> None:
    first = build_status(ok(), 1, None, T0)
    failing = Outcome(applied_objects="fp-2")
    failing.fail(reasons.APPLY_FAILED, "500", stalled=False)
    failed = build_status(failing, 2, first, T1)
    assert failed["appliedObjects"] == "fp-1", "not everything of fp-2 was applied"
    assert build_status(Outcome(applied_objects="fp-2"), 2, failed, T1)["appliedObjects"] == "fp-2"


def test_nothing_applied_yet_no_applied_objects() -> None:
    failing = Outcome(applied_objects="fp-1")
    failing.fail(reasons.POLICY_NOT_FOUND, "no policy", stalled=True)
    assert "appliedObjects" not in build_status(failing, 1, None, T0)


def test_same_status_ignores_kopf_and_nothing_else() -> None:
    status = build_status(ok(), 1, None, T0)
    assert same_status({**status, "kopf": {"progress": {}}}, status)
    assert same_status(status, {**status, "kopf": {"x": 1}})
    assert not same_status(None, status)
    assert not same_status({**status, "observedGeneration": 0}, status)
    assert not same_status({k: v for k, v in status.items() if k != "appliedObjects"}, status)


def test_rebuilding_an_unchanged_status_later_is_the_same_status() -> None:
    """What makes a no-op resync write nothing: a later pass with the same outcome."""
    first = build_status(ok(), 1, None, T0)
    assert same_status(first, build_status(ok(), 1, first, T1))
    assert not same_status(first, build_status(ok(), 2, first, T1)), "a new generation is news"
