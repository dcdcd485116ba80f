"""Who we are and where the API server is: pykube-ng reads the in-cluster service account or a
kubeconfig (through Kopf's own pykube login, so Kopf and our client agree on the identity)."""

from __future__ import annotations

import logging
import os

import kopf

from tenantry.kube.client import Connection


class CredentialsError(Exception):
    pass


def load_connection(kubeconfig: str | None = None) -> Connection:
    """Credentials now. Called again on a 401, since service-account tokens rotate."""
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig
    try:
        info = kopf.login_via_pykube(
            logger=logging.getLogger("tenantry.login"), settings=kopf.OperatorSettings()
        )
    except kopf.LoginError as exc:
        raise CredentialsError(
            f"no cluster credentials (in-cluster service account or kubeconfig): {exc}"
        ) from exc
    if info is None:
        raise CredentialsError("pykube-ng is not installed; it reads the cluster credentials")
    return Connection.from_kopf(info)
