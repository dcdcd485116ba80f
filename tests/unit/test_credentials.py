"""Credentials as kubectl reads them: exec plugins (v1, v1beta1), token files, auth-provider
tokens, in-cluster projected tokens, proxy-url; refreshed before they expire."""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tenantry.kube.credentials import CredentialsError, jwt_expiry, load_connection

PLUGIN = """#!{python}
import json, os, sys
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
with open({record!r}, "w") as out:
    json.dump({{"info": info, "argv": sys.argv[1:], "env": os.environ.get("PLUGIN_ENV"),
               "stdin_tty": sys.stdin.isatty()}}, out)
status = {status}
print(json.dumps({{"apiVersion": info["apiVersion"], "kind": "ExecCredential", "status": status}}))
"""


def jwt(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part(claims)}.sig"


def kubeconfig(tmp_path: Path, user: dict[str, Any], **cluster: Any) -> str:
    path = tmp_path / "kubeconfig"
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1", **cluster}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def plugin(tmp_path: Path, status: dict[str, Any]) -> tuple[str, Path]:
    record = tmp_path / "plugin-ran.json"
    script = tmp_path / "plugin"
    script.write_text(PLUGIN.format(python=sys.executable, record=str(record), status=repr(status)))
    script.chmod(0o755)
    return str(script), record


@pytest.mark.parametrize(
    "version", ["client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"]
)
def test_an_exec_plugin_gives_the_token_with_its_env_args_and_the_cluster(
    tmp_path: Path, version: str
) -> None:
    expires = "2099-01-01T00:00:00Z"
    command, record = plugin(tmp_path, {"token": "from-the-plugin", "expirationTimestamp": expires})
    ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").decode()
    path = kubeconfig(
        tmp_path,
        {
            "exec": {
                "apiVersion": version,
                "command": command,
                "args": ["token", "--cluster", "prod"],
                "env": [{"name": "PLUGIN_ENV", "value": "set"}],
                "interactiveMode": "Never",
                "provideClusterInfo": True,
            }
        },
        **{"certificate-authority-data": ca, "proxy-url": "http://proxy.example:3128"},
    )
    connection = load_connection(path)
    assert connection.token == "from-the-plugin"
    assert connection.proxy == "http://proxy.example:3128"
    assert connection.refresh_at is not None and connection.refresh_at < 4070908800  # before expiry
    ran = json.loads(record.read_text())
    assert ran["argv"] == ["token", "--cluster", "prod"] and ran["env"] == "set"
    assert ran["info"]["apiVersion"] == version and ran["info"]["spec"]["interactive"] is False
    assert ran["info"]["spec"]["cluster"]["server"] == "https://127.0.0.1:1"
    assert ran["info"]["spec"]["cluster"]["certificate-authority-data"] == ca
    assert ran["stdin_tty"] is False, "never waits for input"


def test_an_exec_plugin_may_give_a_client_certificate(tmp_path: Path) -> None:
    command, _ = plugin(tmp_path, {"clientCertificateData": "CERT", "clientKeyData": "KEY"})
    exec_ = {"apiVersion": "client.authentication.k8s.io/v1", "command": command, "interactiveMode": "Never"}
    connection = load_connection(kubeconfig(tmp_path, {"exec": exec_}))
    assert (connection.token, connection.certificate_data, connection.private_key_data) == (
        None,
        b"CERT",
        b"KEY",
    )


def test_a_token_without_expiry_is_refreshed_before_its_jwt_expires(tmp_path: Path) -> None:
    exp = int(time.time()) + 3600
    command, _ = plugin(tmp_path, {"token": jwt({"exp": exp})})
    exec_ = {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": command}
    connection = load_connection(kubeconfig(tmp_path, {"exec": exec_}))
    assert connection.refresh_at is not None and exp - 120 < connection.refresh_at < exp


@pytest.mark.parametrize(
    ("exec_", "message"),
    [
        ({"apiVersion": "client.authentication.k8s.io/v1alpha1"}, "not supported"),
        ({"apiVersion": "client.authentication.k8s.io/v1"}, "interactiveMode is required"),
        ({"apiVersion": "client.authentication.k8s.io/v1", "interactiveMode": "Always"}, "no terminal"),
    ],
)
def test_an_exec_plugin_the_operator_cannot_use_is_refused_with_a_reason(
    tmp_path: Path, exec_: dict[str, Any], message: str
) -> None:
    command, record = plugin(tmp_path, {"token": "t"})
    with pytest.raises(CredentialsError, match=message):
        load_connection(kubeconfig(tmp_path, {"exec": {"command": command, **exec_}}))
    assert not record.exists(), "not run"


def test_a_failing_exec_plugin_is_an_error_never_anonymous(tmp_path: Path) -> None:
    script = tmp_path / "failing"
    script.write_text("#!/bin/sh\necho 'token expired, run aws sso login' >&2\nexit 3\n")
    script.chmod(0o755)
    exec_ = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": str(script),
        "interactiveMode": "Never",
    }
    with pytest.raises(CredentialsError, match="exited with 3: token expired, run aws sso login"):
        load_connection(kubeconfig(tmp_path, {"exec": exec_}))


def test_a_token_file_is_read_and_read_again_every_minute(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("file-token\n")
    connection = load_connection(kubeconfig(tmp_path, {"tokenFile": "token"}))  # relative to the kubeconfig
    assert connection.token == "file-token"
    assert connection.refresh_at is not None and connection.refresh_at <= time.time() + 60


def test_an_oidc_auth_provider_gives_its_id_token(tmp_path: Path) -> None:
    token = jwt({"exp": int(time.time()) + 3600, "sub": "alice"})
    user = {"auth-provider": {"name": "oidc", "config": {"id-token": token, "client-id": "k8s"}}}
    connection = load_connection(kubeconfig(tmp_path, user, **{"insecure-skip-tls-verify": True}))
    assert connection.token == token and connection.insecure


def test_in_cluster_the_projected_token_is_read_from_its_file_and_again_before_it_rotates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, text in (("token", "projected-1"), ("namespace", "tenantry-system"), ("ca.crt", "CA")):
        (tmp_path / name).write_text(text)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    connection = load_connection(service_account=str(tmp_path))
    assert (connection.server, connection.token) == ("https://10.0.0.1:443", "projected-1")
    assert connection.ca_path == str(tmp_path / "ca.crt")
    assert connection.refresh_at is not None and connection.refresh_at <= time.time() + 60
    (tmp_path / "token").write_text("projected-2")  # the kubelet rotated it
    assert load_connection(service_account=str(tmp_path)).token == "projected-2"


def test_jwt_expiry() -> None:
    assert jwt_expiry(jwt({"exp": 1700000000})) == 1700000000
    assert jwt_expiry(jwt({"sub": "x"})) is None
    assert jwt_expiry("not-a-jwt") is None
