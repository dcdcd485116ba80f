"""The API client over real TLS: CA data or file, client certificates (mTLS), bearer tokens,
and a token rotated while requests and a watch are in use.

A small aiohttp HTTPS server on 127.0.0.1 stands in for the API server here (certificates made
by trustme): this is about the connection set-up every real cluster needs, which the plain-HTTP
fake of the other integration tests never exercises.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp.web
import pytest
import pytest_asyncio
import trustme
from kubernetes.aio import client as aio_client

from tenantry.kube.client import ApiError, Connection, KubeClient, Retry
from tenantry.kube.resources import NAMESPACE


@dataclass
class TlsApi:
    url: str
    ca: trustme.CA
    tokens: set[str] = field(default_factory=lambda: {"first"})
    seen: list[tuple[str, str | None, str | None]] = field(default_factory=list)  # path, token, client CN


@pytest_asyncio.fixture
async def tls_api() -> AsyncIterator[TlsApi]:
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_OPTIONAL  # client certificates are checked when sent
    state = TlsApi(url="", ca=ca)

    def client_cn(request: aiohttp.web.Request) -> str | None:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        for rdn in (peer or {}).get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    return str(value)
        return None

    def authorised(request: aiohttp.web.Request) -> tuple[bool, str | None]:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else None
        state.seen.append((request.path, token, client_cn(request)))
        return (token in state.tokens or client_cn(request) is not None), token

    def unauthorised() -> aiohttp.web.Response:
        status = {"kind": "Status", "code": 401, "reason": "Unauthorized", "message": "Unauthorized"}
        return aiohttp.web.json_response(status, status=401)

    async def get_namespace(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        ok, _ = authorised(request)
        if not ok:
            return unauthorised()
        if request.query.get("watch"):
            response = aiohttp.web.StreamResponse()
            response.content_type = "application/json"
            await response.prepare(request)
            event = {"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "2"}}}
            await response.write((json.dumps(event) + "\n").encode())
            return response
        name = request.match_info.get("name", "")
        return aiohttp.web.json_response(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        )

    app = aiohttp.web.Application()
    app.router.add_get("/api/v1/namespaces/{name}", get_namespace)
    app.router.add_get("/api/v1/namespaces", get_namespace)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"https://127.0.0.1:{port}"
    try:
        yield state
    finally:
        await runner.cleanup()


FAST = Retry(attempts=2, first_delay=0.01, max_delay=0.02)


async def test_a_token_with_the_cluster_ca_given_as_data(tls_api: TlsApi) -> None:
    ca = tls_api.ca.cert_pem.bytes()
    client = KubeClient(Connection(server=tls_api.url, ca_data=ca, token="first"), retry=FAST)
    try:
        assert (await client.get(NAMESPACE, "acme-prod"))["metadata"]["name"] == "acme-prod"  # type: ignore[index]
    finally:
        await client.close()
    assert tls_api.seen[-1] == ("/api/v1/namespaces/acme-prod", "first", None)


async def test_a_client_certificate_from_data_with_the_ca_as_a_file(tls_api: TlsApi, tmp_path: Any) -> None:
    ca_file = tmp_path / "ca.pem"
    tls_api.ca.cert_pem.write_to_path(str(ca_file))
    cert = tls_api.ca.issue_cert("tenantry-operator", common_name="tenantry-operator")
    connection = Connection(
        server=tls_api.url,
        ca_path=str(ca_file),
        certificate_data=b"".join(blob.bytes() for blob in cert.cert_chain_pems),
        private_key_data=cert.private_key_pem.bytes(),
    )
    client = KubeClient(connection, retry=FAST)
    try:
        await client.get(NAMESPACE, "x")
    finally:
        await client.close()
    assert tls_api.seen[-1] == ("/api/v1/namespaces/x", None, "tenantry-operator")


async def test_an_unknown_ca_is_refused_unless_insecure_is_asked_for(tls_api: TlsApi) -> None:
    client = KubeClient(Connection(server=tls_api.url, token="first"), retry=FAST)
    try:
        with pytest.raises(ApiError, match="ConnectionError"):
            await client.get(NAMESPACE, "x")
    finally:
        await client.close()
    insecure = KubeClient(Connection(server=tls_api.url, token="first", insecure=True), retry=FAST)
    try:
        assert await insecure.get(NAMESPACE, "x") is not None
    finally:
        await insecure.close()


async def test_a_rotated_token_is_reloaded_once_and_used_by_requests_and_watches(tls_api: TlsApi) -> None:
    ca = tls_api.ca.cert_pem.bytes()
    reloads: list[int] = []

    def reload() -> Connection:
        reloads.append(1)
        return Connection(server=tls_api.url, ca_data=ca, token="second")

    client = KubeClient(Connection(server=tls_api.url, ca_data=ca, token="first"), retry=FAST, reload=reload)
    try:
        await client.get(NAMESPACE, "before")
        tls_api.tokens = {"second"}  # the old token is revoked
        await client.get(NAMESPACE, "after")
        events = [e async for e in client.watch(NAMESPACE, {"timeoutSeconds": "1"}, read_timeout=5)]
        # The official client's typed APIs on the same ApiClient (how the Lease election talks).
        await aio_client.CoreV1Api(client.api_client).read_namespace("typed")
    finally:
        await client.close()
    assert reloads == [1]
    assert [token for path, token, _ in tls_api.seen if path == "/api/v1/namespaces/after"] == [
        "first",
        "second",
    ]
    assert ("/api/v1/namespaces", "second", None) in tls_api.seen
    assert tls_api.seen[-1] == ("/api/v1/namespaces/typed", "second", None)
    assert events[0]["object"]["metadata"]["name"] == "a"
