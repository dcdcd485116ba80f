"""Every condition reason and Event reason the operator emits.

docs/troubleshooting.md has a section per reason (a test keeps them in step), so whatever a
person sees in `kubectl describe` leads to an explanation and a fix.
"""

from __future__ import annotations

# Condition reasons (Ready, Stalled, Reconciling, NamespacesReady, QuotaReady, ...).
RECONCILED = "Reconciled"
PROGRESSING = "Progressing"
APPLIED = "Applied"
INVALID_SPEC = "InvalidSpec"
POLICY_NOT_FOUND = "PolicyNotFound"
NAMESPACE_CONFLICT = "NamespaceConflict"
APPLY_FAILED = "ApplyFailed"
# QuotaReady=False until kube-controller-manager copied each quota's spec.hard into status.hard:
# the API server's quota admission enforces status.hard only, so until then nothing is limited.
QUOTA_NOT_IN_FORCE = "QuotaNotInForce"
# Stalled=False while failed writes are retried (not "Reconciled": they are not).
RETRYING = "Retrying"
# TenancyPolicy Ready reasons.
VALID = "Valid"
INVALID_POLICY = "InvalidPolicy"
# Event-only reasons.
DRIFT_CORRECTED = "DriftCorrected"
NAMESPACE_RETAINED = "NamespaceRetained"
NAMESPACE_DELETED = "NamespaceDeleted"
# Audit trail of elevated access (reconcile/grants.py) and of refused adoptions.
GRANT_REQUESTED = "GrantRequested"
GRANT_ACTIVE = "GrantActive"
GRANT_EXPIRED = "GrantExpired"
GRANT_REVOKED = "GrantRevoked"
ADOPTION_REFUSED = "AdoptionRefused"
# An invalid Organization's access reduced to what the current policy and spec still allow.
ACCESS_WITHDRAWN = "AccessWithdrawn"
# Quota pools (reconcile/pool.py, docs/quota-pool.md).
QUOTA_POOL_REBALANCED = "QuotaPoolRebalanced"
QUOTA_POOL_EXHAUSTED = "QuotaPoolExhausted"
QUOTA_POOL_RELEASED = "QuotaPoolReleased"
# A deleted TenancyPolicy's platform-admin ClusterRoleBinding removed (reconcile/policy.py).
PLATFORM_ADMINS_UNBOUND = "PlatformAdminsUnbound"

ALL: tuple[str, ...] = (
    RECONCILED,
    PROGRESSING,
    APPLIED,
    INVALID_SPEC,
    POLICY_NOT_FOUND,
    NAMESPACE_CONFLICT,
    APPLY_FAILED,
    QUOTA_NOT_IN_FORCE,
    RETRYING,
    VALID,
    INVALID_POLICY,
    DRIFT_CORRECTED,
    NAMESPACE_RETAINED,
    NAMESPACE_DELETED,
    GRANT_REQUESTED,
    GRANT_ACTIVE,
    GRANT_EXPIRED,
    GRANT_REVOKED,
    ADOPTION_REFUSED,
    ACCESS_WITHDRAWN,
    QUOTA_POOL_REBALANCED,
    QUOTA_POOL_EXHAUSTED,
    QUOTA_POOL_RELEASED,
    PLATFORM_ADMINS_UNBOUND,
)
# Reasons that mean "a person must change something"; Argo CD shows them as Degraded.
STALLED: tuple[str, ...] = (INVALID_SPEC, POLICY_NOT_FOUND, NAMESPACE_CONFLICT)
