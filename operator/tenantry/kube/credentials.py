"""Who we are and where the API server is, read as kubectl reads it.

pykube-ng finds and parses the configuration: `KubeConfig.from_service_account()` in a pod,
else `KubeConfig.from_file()` (`--kubeconfig`, `$KUBECONFIG`, `~/.kube/config`), with the
current context's cluster and user, and every `*-data` field or file path resolved relative to
the kubeconfig (its `BytesOrFile`). This module turns that user into credentials:

- client certificates (`client-certificate[-data]`, `client-key[-data]`);
- `token`, or `tokenFile` (read again every minute, as client-go does);
- in cluster: the projected service-account token, read from its file again every minute (the
  kubelet rotates it well before it expires), never only after a 401;
- `exec` credential plugins (`client.authentication.k8s.io/v1` and `v1beta1`: EKS's
  `aws eks get-token`, GKE's `gke-gcloud-auth-plugin`, `kubelogin`): `command`, `args`, `env`,
  `interactiveMode` (we have no terminal: `Always` is refused with a message, the others run
  without one), `provideClusterInfo` (the cluster is passed in `KUBERNETES_EXEC_INFO`); the
  token or client certificate it prints is used until shortly before its
  `expirationTimestamp` (or the token's own `exp`), then the plugin runs again;
- `auth-provider` (`oidc`, and the legacy `gcp`/`azure` ones): pykube-ng's HTTP client runs the
  provider (refreshing an expired OIDC id-token when pykube-ng's `oidc` extra is installed), as
  Kopf's pykube login does; we read `id-token` for OIDC (Kopf reads only `access-token`);
- the cluster's `server`, `certificate-authority[-data]`, `insecure-skip-tls-verify` and
  `proxy-url`.

Why the exec plugin is run here: pykube-ng runs it per request in its `requests` session and
knows only v1alpha1/v1beta1; Kopf's pykube login ignores `exec` (requests then go out as
`system:anonymous`); the official client's kubeconfig loader runs it but ignores
`interactiveMode` and `provideClusterInfo`, and when the plugin fails it logs and carries on
without credentials, which is the same anonymous failure, later.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import subprocess
import time
from typing import Any

import pykube

from tenantry.kube.client import Connection

log = logging.getLogger("tenantry.login")
SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
# Token files are read again this often (client-go's cached file token source: 1 minute).
TOKEN_FILE_PERIOD = 60.0
# Expiring credentials are renewed this long before they expire (clocks differ a little).
EXPIRY_MARGIN = 60.0
EXEC_TIMEOUT = 60.0


class CredentialsError(Exception):
    pass


def load_connection(kubeconfig: str | None = None, *, service_account: str = SERVICE_ACCOUNT) -> Connection:
    """Credentials now. Called again before they expire and after a 401."""
    try:
        if kubeconfig:
            config = pykube.KubeConfig.from_file(kubeconfig)
        else:
            try:
                config = pykube.KubeConfig.from_service_account(service_account)
                return _in_cluster(config, service_account)
            except (FileNotFoundError, KeyError):
                config = pykube.KubeConfig.from_file()
        return _from_kubeconfig(config)
    except CredentialsError:
        raise
    except (pykube.PyKubeError, FileNotFoundError, KeyError, ValueError, TypeError) as exc:
        raise CredentialsError(
            f"no cluster credentials (in-cluster service account or kubeconfig): {exc}"
        ) from exc


def _in_cluster(config: Any, service_account: str) -> Connection:
    cluster = config.cluster
    return Connection(
        server=cluster["server"],
        ca_path=cluster["certificate-authority"].filename(),
        token=_read(os.path.join(service_account, "token")),
        refresh_at=time.time() + TOKEN_FILE_PERIOD,
    )


def _from_kubeconfig(config: Any) -> Connection:
    cluster, user = config.cluster, config.user
    ca = cluster.get("certificate-authority")
    cert, key = user.get("client-certificate"), user.get("client-key")
    token: str | None = None
    refresh_at: float | None = None
    certificate_data = key_data = None
    if "exec" in user:
        token, certificate_data, key_data, refresh_at = run_exec_plugin(user["exec"], cluster)
    elif user.get("token"):
        token = str(user["token"])
    elif user.get("tokenFile"):
        token = _read(_relative(config, str(user["tokenFile"])))
        refresh_at = time.time() + TOKEN_FILE_PERIOD
    elif user.get("auth-provider"):
        token = _auth_provider_token(config)
    if token and refresh_at is None:
        expires = jwt_expiry(token)
        refresh_at = expires - EXPIRY_MARGIN if expires is not None else None
    return Connection(
        server=str(cluster["server"]),
        ca_path=ca.filename() if ca else None,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        token=token,
        certificate_path=cert.filename() if cert and certificate_data is None else None,
        certificate_data=certificate_data,
        private_key_path=key.filename() if key and key_data is None else None,
        private_key_data=key_data,
        refresh_at=refresh_at,
        proxy=cluster.get("proxy-url"),
    )


def run_exec_plugin(
    spec: dict[str, Any], cluster: dict[str, Any]
) -> tuple[str | None, bytes | None, bytes | None, float | None]:
    """Run a client-go credential plugin: (token, client certificate, client key, refresh at)."""
    api_version = spec.get("apiVersion")
    if api_version not in EXEC_API_VERSIONS:
        supported = ", ".join(EXEC_API_VERSIONS)
        raise CredentialsError(f"exec plugin apiVersion {api_version!r} is not supported; use {supported}")
    command = spec.get("command")
    if not command:
        raise CredentialsError("exec plugin without a command")
    mode = spec.get("interactiveMode") or ("IfAvailable" if api_version.endswith("v1beta1") else None)
    if api_version.endswith("/v1") and mode is None:
        raise CredentialsError("exec plugin: interactiveMode is required by client.authentication.k8s.io/v1")
    if mode == "Always":
        raise CredentialsError(
            f"exec plugin {command!r} has interactiveMode: Always, but the operator has no terminal; "
            "log in beforehand (or use a plugin mode that needs no input, e.g. a service account token)"
        )
    info: dict[str, Any] = {"interactive": False}
    if spec.get("provideClusterInfo"):
        info["cluster"] = _cluster_info(cluster)
    env = dict(os.environ)
    env.update({e["name"]: e["value"] for e in spec.get("env") or []})
    env["KUBERNETES_EXEC_INFO"] = json.dumps(
        {"apiVersion": api_version, "kind": "ExecCredential", "spec": info}
    )
    try:
        done = subprocess.run(  # the kubeconfig's command, run as kubectl runs it
            [command, *(spec.get("args") or [])],
            env=env,
            stdin=subprocess.DEVNULL,  # never waits for input
            capture_output=True,
            timeout=EXEC_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        hint = spec.get("installHint")
        raise CredentialsError(
            f"exec plugin {command!r} did not run: {exc}" + (f"; {hint}" if hint else "")
        ) from exc
    if done.returncode != 0:
        stderr = done.stderr.decode(errors="replace").strip()[:500]
        raise CredentialsError(f"exec plugin {command!r} exited with {done.returncode}: {stderr}")
    try:
        credential = json.loads(done.stdout)
        status = credential["status"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CredentialsError(f"exec plugin {command!r} printed no ExecCredential with a status") from exc
    if credential.get("apiVersion") != api_version:
        answered = credential.get("apiVersion")
        raise CredentialsError(
            f"exec plugin {command!r} answered with apiVersion {answered!r}, not {api_version!r}"
        )
    token = status.get("token") or None
    certificate = status.get("clientCertificateData")
    key = status.get("clientKeyData")
    if not token and not (certificate and key):
        raise CredentialsError(
            f"exec plugin {command!r} printed neither a token nor a client certificate and key"
        )
    refresh_at = None
    if status.get("expirationTimestamp"):
        expires = dt.datetime.fromisoformat(str(status["expirationTimestamp"]).replace("Z", "+00:00"))
        refresh_at = expires.timestamp() - EXPIRY_MARGIN
    elif token and (exp := jwt_expiry(token)) is not None:
        refresh_at = exp - EXPIRY_MARGIN
    return (
        token,
        certificate.encode() if certificate else None,
        key.encode() if key else None,
        refresh_at,
    )


def _cluster_info(cluster: dict[str, Any]) -> dict[str, Any]:
    """The Cluster object of KUBERNETES_EXEC_INFO (client.authentication.k8s.io)."""
    info: dict[str, Any] = {"server": cluster["server"]}
    ca = cluster.get("certificate-authority")
    if ca is not None:
        info["certificate-authority-data"] = base64.b64encode(ca.bytes()).decode()
    if cluster.get("insecure-skip-tls-verify"):
        info["insecure-skip-tls-verify"] = True
    if cluster.get("tls-server-name"):
        info["tls-server-name"] = cluster["tls-server-name"]
    if cluster.get("proxy-url"):
        info["proxy-url"] = cluster["proxy-url"]
    for extension in cluster.get("extensions") or []:
        if extension.get("name") == "client.authentication.k8s.io/exec":
            info["config"] = extension.get("extension")
    return info


def _auth_provider_token(config: Any) -> str | None:
    provider = config.user["auth-provider"]
    try:
        # pykube-ng's adapter runs the provider (an expired OIDC token is refreshed here).
        pykube.HTTPClient(config).get(version="", base="/")
    except Exception as exc:  # the token read below may still do; a 401 later says if not
        log.warning("auth-provider %s not refreshed: %s", provider.get("name"), exc)
    settings = config.user["auth-provider"].get("config") or {}
    key = "id-token" if provider.get("name") == "oidc" else "access-token"
    token = settings.get(key)
    return str(token) if token else None


def jwt_expiry(token: str) -> float | None:
    """A JWT's `exp` (seconds since the epoch), or None when it has none or is no JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) else None


def _relative(config: Any, path: str) -> str:
    base = config.kubeconfig_path
    return path if os.path.isabs(path) or base is None else str(base.parent / path)


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read().strip()
