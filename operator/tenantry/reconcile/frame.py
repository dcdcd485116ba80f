"""Kopf, the operator's process frame: login, start-up, clean-up, the liveness probe (and, from
`tenantry run`, the liveness endpoint and signals). It watches nothing of ours: the informers
do (docs/architecture.md says why)."""

from __future__ import annotations

from typing import Any

import kopf

from tenantry.kube.client import ApiError
from tenantry.kube.lease import LeaseNamespaceMissingError
from tenantry.reconcile.runtime import Runtime

STARTUP_RETRY_SECONDS = 1.0


def register(registry: kopf.OperatorRegistry, runtime: Runtime) -> None:
    """Wire the runtime into Kopf: login, start-up and clean-up (no resource handlers: the
    informers do all watching)."""

    @kopf.on.login(registry=registry, id="tenantry-login")
    def login(**_: Any) -> kopf.ConnectionInfo:
        # The client's current credentials (reloaded after a 401): one identity for everything.
        c = runtime.cluster.client.connection if runtime.cluster else runtime.connection
        return kopf.ConnectionInfo(
            server=c.server,
            ca_path=c.ca_path,
            ca_data=c.ca_data,
            insecure=c.insecure,
            scheme="Bearer" if c.token else None,
            token=c.token,
            certificate_path=c.certificate_path,
            certificate_data=c.certificate_data,
            private_key_path=c.private_key_path,
            private_key_data=c.private_key_data,
            default_namespace=runtime.config.operator_namespace,
        )

    # Retried every second while it fails (Kopf's default is a minute): a replica started while
    # the API server is down or restarting (a control-plane upgrade, a whole-cluster restart)
    # starts as soon as it is back. One attempt is a Lease GET or a LIST per kind.
    @kopf.on.startup(registry=registry, id="tenantry-startup", backoff=STARTUP_RETRY_SECONDS)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False  # we post the Events people need, with our reasons
        settings.scanning.disabled = True  # Kopf watches no resource of ours
        try:
            await runtime.start()
        except LeaseNamespaceMissingError as exc:
            raise kopf.PermanentError(str(exc)) from exc  # exit, saying what to do; never idle
        except ApiError as exc:
            if exc.status in (401, 403):
                raise kopf.PermanentError(
                    f"the API server refused the operator's credentials or permissions: {exc}; "
                    "check the kubeconfig or the operator's ClusterRole (manifests/base/operator-rbac.yaml)"
                ) from exc
            raise

    @kopf.on.probe(registry=registry, id="tenantry")
    async def liveness(**_: Any) -> dict[str, Any]:
        # Kopf's liveness endpoint answers 500 when a probe fails permanently (and does not
        # cache the failure), so the kubelet restarts a replica whose work is stuck. Async: a
        # sync probe runs in a thread, away from the event loop whose clock the Lease uses.
        # Any other exception would be retried by Kopf for a minute, the request hanging.
        try:
            problems = runtime.problems()
        except Exception as exc:
            raise kopf.PermanentError(f"liveness not determined: {exc!r}") from exc
        if problems:
            raise kopf.PermanentError("not alive: " + "; ".join(problems))
        return runtime.health()

    @kopf.on.cleanup(registry=registry, id="tenantry-cleanup")
    async def cleanup(**_: Any) -> None:
        await runtime.stop()
