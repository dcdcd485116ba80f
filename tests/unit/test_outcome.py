"""An Organization's outcome keeps the failure a person must act on."""

from __future__ import annotations

from tenantry.reconcile import reasons
from tenantry.reconcile.status import MESSAGE_MAX, Outcome, condition


def test_a_transient_failure_after_a_stalled_one_keeps_stalled_and_its_reason() -> None:
    outcome = Outcome()
    outcome.fail(reasons.NAMESPACE_CONFLICT, "acme-prod exists without our labels", stalled=True)
    outcome.fail(reasons.APPLY_FAILED, "NetworkPolicy acme-dev/x: 500", stalled=False)
    assert outcome.stalled
    assert outcome.ready_reason == reasons.NAMESPACE_CONFLICT
    assert "acme-prod exists" in outcome.message and "NetworkPolicy acme-dev/x" in outcome.message


def test_a_stalled_failure_after_a_transient_one_takes_over() -> None:
    outcome = Outcome()
    outcome.fail(reasons.APPLY_FAILED, "500", stalled=False)
    outcome.fail(reasons.INVALID_SPEC, "spec.x: bad", stalled=True)
    assert outcome.stalled and outcome.ready_reason == reasons.INVALID_SPEC


def test_two_transient_failures_are_both_reported() -> None:
    outcome = Outcome()
    outcome.fail(reasons.APPLY_FAILED, "NetworkPolicy a: 500", stalled=False)
    outcome.fail(reasons.APPLY_FAILED, "RoleBinding b: 500", stalled=False)
    assert not outcome.stalled
    assert outcome.ready_reason == reasons.APPLY_FAILED
    assert "NetworkPolicy a" in outcome.message and "RoleBinding b" in outcome.message


def test_a_condition_message_never_exceeds_what_the_crd_accepts() -> None:
    cond = condition("Ready", False, reasons.INVALID_SPEC, "x" * 40000, 1, None, "2026-12-01T00:00:00Z")
    assert len(cond["message"]) == MESSAGE_MAX
