"""The client's error handling: what a response means, JSON or not (a real API server answers
unrouted paths in plain text, proxies in front of it answer in HTML)."""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp.web
import pytest
import pytest_asyncio

from tenantry.kube.client import (
    NOT_SERVED,
    ApiError,
    Connection,
    KubeClient,
    Retry,
    configuration_for,
    error_from_response,
    proxy_for,
)
from tenantry.kube.resources import NAMESPACE, ORGANIZATION

STATUS_404 = {
    "kind": "Status",
    "apiVersion": "v1",
    "status": "Failure",
    "message": 'namespaces "acme-prod" not found',
    "reason": "NotFound",
    "code": 404,
}
HTML_502 = b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>nginx</body>\r\n</html>\r\n"


# -- error_from_response (pure) --------------------------------------------------------------------
def test_a_json_status_gives_its_reason_and_message() -> None:
    error = error_from_response(404, "application/json", json.dumps(STATUS_404).encode())
    assert (error.status, error.reason, error.message) == (
        404,
        "NotFound",
        'namespaces "acme-prod" not found',
    )
    assert not error.not_served, "a missing object of a served resource"


def test_a_json_status_with_a_charset_is_still_json() -> None:
    conflict = {"reason": "Conflict", "message": "the object has been modified"}
    error = error_from_response(409, "application/json; charset=utf-8", json.dumps(conflict).encode())
    assert (error.reason, error.message) == ("Conflict", "the object has been modified")


def test_a_plain_text_404_means_the_resource_is_not_served() -> None:
    error = error_from_response(404, "text/plain; charset=utf-8", b"404 page not found\n")
    assert (error.status, error.reason, error.message) == (404, NOT_SERVED, "404 page not found")
    assert error.not_served


def test_an_empty_404_is_not_served_too() -> None:
    error = error_from_response(404, None, b"")
    assert error.not_served and error.message == "404 page not found"


def test_an_html_502_from_a_proxy_is_an_error_with_its_text() -> None:
    error = error_from_response(502, "text/html", HTML_502)
    assert (error.status, error.reason) == (502, "Error")
    assert error.message.startswith("<html>") and error.message.endswith("</html>")
    assert not error.not_served


def test_an_html_404_from_a_proxy_is_not_taken_for_a_missing_object() -> None:
    assert error_from_response(404, "text/html", b"<html>Not Found</html>").not_served


def test_a_long_text_body_is_cut() -> None:
    assert len(error_from_response(503, "text/plain", b"x" * 10_000).message) == 200


def test_json_content_type_with_a_body_that_is_not_json() -> None:
    error = error_from_response(500, "application/json", b"<html>oops</html>")
    assert (error.status, error.reason, error.message) == (500, "Error", "<html>oops</html>")


def test_json_that_is_not_an_object() -> None:
    error = error_from_response(500, "application/json", b'["a"]')
    assert (error.status, error.reason) == (500, "Error")


def test_a_json_status_without_a_reason() -> None:
    error = error_from_response(422, "application/json", b'{"message": "bad"}')
    assert (error.reason, error.message) == ("Error", "bad")


def test_not_served_needs_both_404_and_the_reason() -> None:
    assert ApiError(404, NOT_SERVED, "").not_served
    assert not ApiError(404, "NotFound", "").not_served
    assert not ApiError(500, NOT_SERVED, "").not_served


# -- over HTTP: the client's answers and retries ----------------------------------------------------
class Server:
    """A tiny HTTP server answering each path with a canned response; counts requests."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, str, bytes]] = {}
        self.hits: dict[str, int] = {}
        self.url = ""

    async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        self.hits[request.path] = self.hits.get(request.path, 0) + 1
        status, content_type, body = self.routes.get(
            request.path, (404, "text/plain", b"404 page not found\n")
        )
        return aiohttp.web.Response(status=status, body=body, headers={"Content-Type": content_type})


@pytest_asyncio.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    app = aiohttp.web.Application()
    app.router.add_route("*", "/{tail:.*}", srv.handle)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    srv.url = f"http://127.0.0.1:{port}"
    try:
        yield srv
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture
async def client(server: Server) -> AsyncIterator[KubeClient]:
    kube = KubeClient(
        Connection(server=server.url), retry=Retry(attempts=3, first_delay=0.001, max_delay=0.002)
    )
    try:
        yield kube
    finally:
        closed: Any = kube.close()
        if inspect.isawaitable(closed):
            await closed


NS_PATH = NAMESPACE.path(None, "acme-prod")
ORG_PATH = ORGANIZATION.path(None, "acme")


async def test_a_json_404_is_no_such_object(server: Server, client: KubeClient) -> None:
    server.routes[NS_PATH] = (404, "application/json", json.dumps(STATUS_404).encode())
    assert await client.get(NAMESPACE, "acme-prod") is None
    assert server.hits[NS_PATH] == 1, "an answer, not retried"


async def test_a_plain_text_404_is_raised_as_not_served(server: Server, client: KubeClient) -> None:
    # The Organization CRD is not installed: never "no such Organization".
    with pytest.raises(ApiError) as raised:
        await client.get(ORGANIZATION, "acme")
    assert raised.value.not_served
    assert server.hits[ORG_PATH] == 1


async def test_an_html_502_is_retried_then_raised_with_its_status(server: Server, client: KubeClient) -> None:
    server.routes[NS_PATH] = (502, "text/html", HTML_502)
    with pytest.raises(ApiError) as raised:
        await client.get(NAMESPACE, "acme-prod")
    assert (raised.value.status, raised.value.reason) == (502, "Error")
    assert "502 Bad Gateway" in raised.value.message
    assert server.hits[NS_PATH] == 3, "every attempt"


async def test_a_json_409_is_raised_at_once(server: Server, client: KubeClient) -> None:
    server.routes[NS_PATH] = (409, "application/json", b'{"reason": "Conflict", "message": "modified"}')
    with pytest.raises(ApiError) as raised:
        await client.get(NAMESPACE, "acme-prod")
    assert (raised.value.status, raised.value.reason, raised.value.message) == (409, "Conflict", "modified")
    assert server.hits[NS_PATH] == 1


async def test_a_200_that_is_not_json_is_an_error_not_a_crash(server: Server, client: KubeClient) -> None:
    # A proxy's login page, or a misrouted request.
    server.routes[NS_PATH] = (200, "text/html", b"<html>please log in</html>")
    with pytest.raises(ApiError) as raised:
        await client.get(NAMESPACE, "acme-prod")
    assert (raised.value.status, raised.value.reason) == (200, "InvalidResponse")
    assert "please log in" in raised.value.message


async def test_a_json_200_is_the_object(server: Server, client: KubeClient) -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "acme-prod"}}
    server.routes[NS_PATH] = (200, "application/json", json.dumps(body).encode())
    assert await client.get(NAMESPACE, "acme-prod") == body


def test_the_proxy_comes_from_the_environment_once_and_no_proxy_is_honoured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The session does not trust the environment per request (aiohttp would read ~/.netrc and
    # the proxy variables in a thread for every call); the proxy is taken from it up front.
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    conf = configuration_for(Connection(server="https://kube.example:6443"))
    assert conf.proxy == "http://proxy.example:3128"
    assert conf.client_session_kwargs == {"trust_env": False}
    monkeypatch.setenv("NO_PROXY", ".example")
    assert proxy_for("https://kube.example:6443") is None
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.delenv("NO_PROXY")
    assert proxy_for("https://kube.example:6443") is None
