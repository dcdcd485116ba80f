"""Quota admission and the quota controller, for pods, as the real ones work (Kubernetes 1.36):

- admission (k8s.io/apiserver plugin/resourcequota, controller.go `checkRequest`): a pod create in
  a namespace with ResourceQuotas is checked against each quota's **status.hard** (what the
  controller last copied from spec.hard; a key not in status.hard is not enforced). A quota that
  constrains `requests.cpu` refuses a pod whose containers do not all request CPU ("must
  specify"; only cpu and memory are required so, pkg/quota/v1/evaluator/core/pods.go: a container
  that declares no ephemeral storage counts 0 for it); `used + request > hard` is refused with
  the real message ("exceeded quota: NAME, requested: ..., used: ..., limited: ..."), HTTP 403.
  Admitted, the quota's `status.used` is written (a new resourceVersion: a client's write
  planned from the older one gets 409, as the real UpdateStatus with its resourceVersion makes
  them serialise) before the pod is stored;
- the controller (pkg/controller/resourcequota, `syncResourceQuota`): a quota whose spec.hard
  differs from status.hard gets status.hard = spec.hard and a recount of used, `sync_delay`
  seconds later (0: at once; per namespace if a mapping, so a later change can be synced
  first); deleting a pod recounts its namespace's quotas the same way.

Not modelled: scopes, other resources than pods, LimitRange defaulting (tests give requests).
"""

from __future__ import annotations

import asyncio
import copy
from decimal import Decimal
from typing import Any

from tenantry.api.quantity import parse_quantity
from tests.fakeapi.resources import ResourceInfo
from tests.fakeapi.server import ApiStatusError, FakeApiServer

PODS = "v1/pods"
QUOTAS = "v1/resourcequotas"
# Pod usage per quota resource name: (container field, resource), or a count.
_COMPUTE = {
    "requests.cpu": ("requests", "cpu"),
    "cpu": ("requests", "cpu"),
    "limits.cpu": ("limits", "cpu"),
    "requests.memory": ("requests", "memory"),
    "memory": ("requests", "memory"),
    "limits.memory": ("limits", "memory"),
    "requests.ephemeral-storage": ("requests", "ephemeral-storage"),
    "limits.ephemeral-storage": ("limits", "ephemeral-storage"),
}
_COUNTS = ("pods", "count/pods")
# What a pod must declare when a quota caps it: only cpu and memory (the pod evaluator's
# Constraints, pkg/quota/v1/evaluator/core/pods.go, validationSet); a container that declares no
# ephemeral storage is admitted and counts 0 for it.
_REQUIRED = frozenset(("requests.cpu", "cpu", "limits.cpu", "requests.memory", "memory", "limits.memory"))


def pod_usage(pod: dict[str, Any], resources: list[str]) -> tuple[dict[str, Decimal], list[str]]:
    """What a pod counts for each of `resources`, and the resources it fails to specify."""
    containers = (pod.get("spec") or {}).get("containers") or []
    usage: dict[str, Decimal] = {}
    missing = []
    for name in resources:
        if name in _COUNTS:
            usage[name] = Decimal(1)
        elif name in _COMPUTE:
            part, resource = _COMPUTE[name]
            values = [((c.get("resources") or {}).get(part) or {}).get(resource) for c in containers]
            if any(v is None for v in values) and name in _REQUIRED:
                missing.append(name)
                continue
            usage[name] = sum((parse_quantity(v) for v in values if v is not None), start=Decimal(0))
    return usage, missing


def _text(value: Decimal) -> str:
    """A quantity as the API server prints a canonical one (enough for tests: "1500m", "2")."""
    if value == value.to_integral_value():
        return str(int(value))
    milli = value * 1000
    return f"{int(milli)}m" if milli == milli.to_integral_value() else str(value)


class QuotaSystem:
    """Installs admission and the controller on a FakeApiServer (which must serve pods)."""

    def __init__(self, server: FakeApiServer, sync_delay: float | dict[str, float] = 0.0) -> None:
        self.server = server
        # Seconds until the controller syncs a quota; per namespace when a mapping (the real
        # controller's work queue gives no order between quotas).
        self.sync_delay = sync_delay
        self.refused: list[tuple[str, str]] = []  # (namespace, message) of every refusal
        server.admitters.append(self.admit)
        server.listeners.append(self.changed)

    # -- admission ------------------------------------------------------------------------------
    def admit(self, info: ResourceInfo, namespace: str | None, body: dict[str, Any]) -> None:
        if info.key != PODS or namespace is None:
            return
        for (ns, name), quota in sorted(self.server.objects[QUOTAS].items()):
            if ns != namespace:
                continue
            hard = (quota.get("status") or {}).get("hard") or {}
            used = dict((quota.get("status") or {}).get("used") or {})
            constrained = sorted(k for k in hard if k in _COMPUTE or k in _COUNTS)
            if not constrained:
                continue
            usage, missing = pod_usage(body, constrained)
            if missing:
                self._refuse(namespace, f"failed quota: {name}: must specify {','.join(missing)}")
            exceeded = [
                k
                for k in constrained
                if parse_quantity(used.get(k, "0")) + usage[k] > parse_quantity(hard[k])
            ]
            if exceeded:
                self._refuse(
                    namespace,
                    f"exceeded quota: {name}, requested: {_list(usage, exceeded)}, used: "
                    f"{_list({k: parse_quantity(used.get(k, '0')) for k in exceeded}, exceeded)}, "
                    f"limited: {_list({k: parse_quantity(hard[k]) for k in exceeded}, exceeded)}",
                )
            for k in constrained:
                used[k] = _text(parse_quantity(used.get(k, "0")) + usage[k])
            self.server.write_status(QUOTAS, namespace, name, {**quota.get("status", {}), "used": used})

    def _refuse(self, namespace: str, message: str) -> None:
        self.refused.append((namespace, message))
        raise ApiStatusError(403, "Forbidden", f"pods is forbidden: {message}")

    # -- the controller ---------------------------------------------------------------------------
    def changed(self, key: str, change: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        if key == QUOTAS and change != "DELETED":
            if (obj.get("spec") or {}).get("hard") != (obj.get("status") or {}).get("hard"):
                self._later(meta.get("namespace"), meta["name"])
        elif key == PODS and change == "DELETED":
            for ns, name in list(self.server.objects[QUOTAS]):
                if ns == meta.get("namespace"):
                    self._later(ns, name)

    def _later(self, namespace: str, name: str) -> None:
        delay = (
            self.sync_delay
            if isinstance(self.sync_delay, float | int)
            else self.sync_delay.get(namespace, 0.0)
        )
        if delay <= 0:
            self.sync(namespace, name)
        else:
            asyncio.get_running_loop().call_later(delay, self.sync, namespace, name)

    def sync(self, namespace: str, name: str) -> None:
        """status.hard = spec.hard; used recounted from the pods of the namespace."""
        quota = self.server.objects[QUOTAS].get((namespace, name))
        if quota is None:
            return
        hard = copy.deepcopy((quota.get("spec") or {}).get("hard") or {})
        used = dict.fromkeys(hard, Decimal(0))
        for (ns, _), pod in self.server.objects[PODS].items():
            if ns != namespace:
                continue
            usage, _ = pod_usage(pod, list(hard))
            for k, amount in usage.items():
                used[k] += amount
        self.server.write_status(
            QUOTAS, namespace, name, {"hard": hard, "used": {k: _text(v) for k, v in used.items()}}
        )


def _amount(values: dict[str, Any], key: str) -> Decimal:
    return parse_quantity(values.get(key, "0"))


def _list(values: dict[str, Decimal], keys: list[str]) -> str:
    return ",".join(f"{k}={_text(values[k])}" for k in keys)
