"""Which identity the admission policies expect, read from their refusal.

Tenantry's own ValidatingAdmissionPolicies (manifests/admission) accept writes to managed
objects only from the operator's ServiceAccount (and the platform admins), and say so in their
message: "only the operator (system:serviceaccount:tenantry-system:tenantry) ...". A process run
out of cluster with a person's kubeconfig is refused by them; this turns such a refusal into a
plain instruction (README, "Running as the operator's identity").
"""

from __future__ import annotations

_MARK = "only the operator ("


def expected_identity(error: str) -> str | None:
    """The identity a Tenantry admission policy expects, when `error` is such a refusal."""
    if "ValidatingAdmissionPolicy 'tenantry-" not in error or _MARK not in error:
        return None
    start = error.index(_MARK) + len(_MARK)
    end = error.find(")", start)
    return error[start:end] if end > start else None


def identity_hint(identity: str) -> str:
    return (
        f"Tenantry's admission policies accept these writes only from {identity}, and this process "
        "runs as another identity: run it in the cluster (manifests/base), or out of cluster with a "
        "kubeconfig for that ServiceAccount (README, 'Running as the operator's identity')"
    )
