"""Label and annotation keys Tenantry writes, and the ownership rules built on them.

The constitution names the three metadata labels `organization`, `environment` and
`managed-by`; we write them exactly so. Ownership is a label of our own: a namespace without it
was not created by us and is never adopted, relabelled or deleted.
"""

from __future__ import annotations

from tenantry import GROUP

ORGANIZATION = "organization"
ENVIRONMENT = "environment"
MANAGED_BY = "managed-by"

# Ownership: every object we create carries both. The operator's watches select on OWNED_BY.
OWNER = f"{GROUP}/organization"
OWNER_ENVIRONMENT = f"{GROUP}/environment"
APP_MANAGED_BY = "app.kubernetes.io/managed-by"
APP_MANAGED_BY_VALUE = "tenantry"
# Set on namespaces kept by `deletionPolicy: Retain` after their Organization is gone.
ORPHANED = f"{GROUP}/orphaned"

# Annotations that document why an object exists.
DISPLAY_NAME = f"{GROUP}/display-name"
POLICY = f"{GROUP}/policy"
REASON = f"{GROUP}/reason"
EXPIRES = f"{GROUP}/expires"
QUOTA_APPROVED_BY = f"{GROUP}/quota-approved-by"
QUOTA_TICKET = f"{GROUP}/quota-ticket"

PSA_PREFIX = "pod-security.kubernetes.io/"
# The immutable label the API server puts on every namespace: tenants cannot spoof it.
METADATA_NAME = "kubernetes.io/metadata.name"

OWNED_SELECTOR = f"{APP_MANAGED_BY}={APP_MANAGED_BY_VALUE},{OWNER}"


def ownership_labels(org: str, env: str | None = None) -> dict[str, str]:
    labels = {APP_MANAGED_BY: APP_MANAGED_BY_VALUE, OWNER: org}
    if env is not None:
        labels[OWNER_ENVIRONMENT] = env
    return labels


def owner_of(labels: dict[str, str] | None) -> str | None:
    """The organization that created an object, or None when it is not ours."""
    labels = labels or {}
    if labels.get(APP_MANAGED_BY) != APP_MANAGED_BY_VALUE:
        return None
    return labels.get(OWNER) or None
