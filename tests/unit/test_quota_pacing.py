"""How often quota usage alone may cause an Organization status write (reconcile/cluster.py)."""

from __future__ import annotations

from typing import Any

from tenantry.reconcile.cluster import Cluster
from tenantry.reconcile.organization import _ready_since


def cluster() -> Cluster:
    return Cluster(client=None, quota_status_interval=30.0)  # type: ignore[arg-type]


def test_usage_alone_is_written_at_most_once_per_interval() -> None:
    c = cluster()
    assert c.quota_status_due("acme", 100.0) == 0.0
    assert c.quota_status_due("acme", 110.0) == 20.0
    assert c.quota_status_due("acme", 130.0) == 0.0
    assert c.quota_status_due("beta", 131.0) == 0.0  # per Organization


def test_a_restarted_process_counts_the_interval_from_the_last_ready_transition() -> None:
    """Right after onboarding, a new process holds usage back as the old one did: a restart
    makes no burst of writes (issue 17); long after it, the usage is written at once."""
    c = cluster()
    assert c.quota_status_due("acme", 1000.0, ready_age=12.0) == 18.0
    assert c.quota_status_due("old", 1000.0, ready_age=3600.0) == 0.0
    assert c.quota_status_due("odd", 1000.0, ready_age=-5.0) == 30.0  # a clock ahead: never negative


def test_ready_since_reads_the_ready_condition() -> None:
    status: dict[str, Any] = {"conditions": [{"type": "Ready", "lastTransitionTime": "2000-01-01T00:00:00Z"}]}
    age = _ready_since(status)
    assert age is not None and age > 365 * 24 * 3600
    assert _ready_since({"conditions": [{"type": "Ready", "lastTransitionTime": "yesterday"}]}) is None
    assert _ready_since(None) is None
