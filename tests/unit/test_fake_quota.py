"""The test double's quota admission holds to the real pod evaluator's rule
(pkg/quota/v1/evaluator/core/pods.go, Constraints): a pod must declare what a quota caps only
for cpu and memory; ephemeral storage and extended resources it leaves out count 0."""

from __future__ import annotations

from decimal import Decimal

from tests.fakeapi.quota import pod_usage


def pod(**resources: dict[str, str]) -> dict[str, object]:
    return {"spec": {"containers": [{"name": "app", "resources": resources}]}}


def test_cpu_and_memory_must_be_declared_when_a_quota_caps_them() -> None:
    _, missing = pod_usage(
        pod(requests={"memory": "1Mi"}), ["requests.cpu", "requests.memory", "limits.memory"]
    )
    assert missing == ["requests.cpu", "limits.memory"]


def test_ephemeral_storage_left_out_is_admitted_and_counts_zero() -> None:
    usage, missing = pod_usage(
        pod(requests={"cpu": "1m"}),
        ["requests.cpu", "requests.ephemeral-storage", "limits.ephemeral-storage"],
    )
    assert missing == []
    assert usage == {
        "requests.cpu": Decimal("0.001"),
        "requests.ephemeral-storage": Decimal(0),
        "limits.ephemeral-storage": Decimal(0),
    }


def test_declared_ephemeral_storage_counts() -> None:
    usage, _ = pod_usage(pod(requests={"ephemeral-storage": "1Gi"}), ["requests.ephemeral-storage", "pods"])
    assert usage == {"requests.ephemeral-storage": Decimal(1024**3), "pods": Decimal(1)}
