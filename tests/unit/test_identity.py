"""A refusal by Tenantry's admission policies names the identity they expect (issue 20)."""

from __future__ import annotations

from tenantry.reconcile.identity import expected_identity, identity_hint

REFUSAL = (
    '403 Forbidden: namespaces "beta-prod" is forbidden: ValidatingAdmissionPolicy '
    "'tenantry-protect-namespace-labels' with binding 'tenantry-protect-namespace-labels' denied "
    "request: Namespace beta-prod carries tenantry.dev labels: only the operator "
    "(system:serviceaccount:tenantry-system:tenantry) and the platform admins of TenancyPolicy "
    "'default' may create such a namespace, kubernetes-admin may not."
)


def test_the_expected_identity_is_read_from_the_refusal() -> None:
    assert expected_identity(REFUSAL) == "system:serviceaccount:tenantry-system:tenantry"
    hint = identity_hint("system:serviceaccount:tenantry-system:tenantry")
    assert (
        "system:serviceaccount:tenantry-system:tenantry" in hint
        and "Running as the operator's identity" in hint
    )


def test_other_refusals_get_no_hint() -> None:
    assert expected_identity('403 Forbidden: namespaces is forbidden: User "x" cannot create') is None
    other = "ValidatingAdmissionPolicy 'freeze' denied request: only the operator (x) may"
    assert expected_identity(other) is None
