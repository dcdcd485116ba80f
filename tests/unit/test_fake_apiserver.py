"""The fake API server holds to what a real one does, for each behaviour Tenantry relies on.

Each test names the real behaviour it copies (docs/real-api-server.md lists the sources). If one
of these fails, the integration tests built on the fake prove nothing about that behaviour.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest_asyncio

from tests.fakeapi.server import FakeApiServer

NS = "/api/v1/namespaces"
CM = "/api/v1/namespaces/team/configmaps"
QUOTA = "/api/v1/namespaces/team/resourcequotas"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"


class Client:
    def __init__(self, server: FakeApiServer, session: aiohttp.ClientSession) -> None:
        self.server, self.session = server, session

    async def send(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, Any]:
        async with self.session.request(
            method,
            self.server.url + path,
            data=json.dumps(body) if body is not None else None,
            headers={"Content-Type": content_type, "User-Agent": "unit-test/1.0"},
        ) as response:
            text = await response.text()
            data = json.loads(text) if "json" in (response.content_type or "") else text
            return response.status, data

    async def apply(
        self, path: str, body: dict[str, Any], manager: str, force: bool = True
    ) -> tuple[int, Any]:
        query = f"?fieldManager={manager}" + ("&force=true" if force else "")
        return await self.send("PATCH", path + query, body, APPLY)

    async def watch(self, path: str, count: int, **query: str) -> list[dict[str, Any]]:
        """The first `count` events of a watch (or fewer, if the stream ends)."""
        params = "&".join(f"{k}={v}" for k, v in {"watch": "true", "timeoutSeconds": "3", **query}.items())
        events: list[dict[str, Any]] = []
        async with self.session.get(f"{self.server.url}{path}?{params}") as response:
            async for line in response.content:
                events.append(json.loads(line))
                if len(events) == count:
                    break
        return events


@pytest_asyncio.fixture
async def client() -> AsyncIterator[Client]:
    async with FakeApiServer() as server, aiohttp.ClientSession() as session:
        c = Client(server, session)
        status, _ = await c.send("POST", NS, {"metadata": {"name": "team"}})
        assert status == 201
        yield c
        assert not server.crashes


def configmap(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


async def test_an_unserved_resource_is_a_plain_text_404_and_a_missing_object_a_json_one(
    client: Client,
) -> None:
    # Seen on 1.36.2 (issue 7): Go's http.NotFound for a group/version/resource not served.
    status, body = await client.send("GET", "/apis/argoproj.io/v1alpha1/namespaces/argocd/appprojects")
    assert (status, body) == (404, "404 page not found\n")
    status, body = await client.send("GET", f"{CM}/absent")
    assert status == 404
    assert (body["kind"], body["reason"], body["message"]) == (
        "Status",
        "NotFound",
        'configmaps "absent" not found',
    )


async def test_apply_removes_what_the_manager_applied_before_and_omits_now(client: Client) -> None:
    # Server-Side Apply docs, "Field management": fields a manager stops sending are removed,
    # unless another manager owns them too.
    await client.apply(f"{CM}/c", configmap("c", a="1", b="2"), "tenantry")
    await client.send("PATCH", f"{CM}/c", {"data": {"other": "x"}}, MERGE)
    status, obj = await client.apply(f"{CM}/c", configmap("c", a="1"), "tenantry")
    assert status == 200
    assert obj["data"] == {"a": "1", "other": "x"}
    managers = {(m["manager"], m["operation"]) for m in obj["metadata"]["managedFields"]}
    assert managers == {("tenantry", "Apply"), ("unit-test", "Update")}


async def test_apply_without_force_conflicts_with_another_manager(client: Client) -> None:
    await client.apply(f"{CM}/c", configmap("c", a="1"), "first")
    status, body = await client.apply(f"{CM}/c", configmap("c", a="2"), "second", force=False)
    assert status == 409 and body["reason"] == "Conflict"
    status, obj = await client.apply(f"{CM}/c", configmap("c", a="2"), "second", force=True)
    assert status == 200 and obj["data"] == {"a": "2"}


async def test_a_write_that_changes_nothing_keeps_the_resource_version(client: Client) -> None:
    _, first = await client.apply(f"{CM}/c", configmap("c", a="1"), "tenantry")
    _, again = await client.apply(f"{CM}/c", configmap("c", a="1"), "tenantry")
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]


async def test_a_watch_with_a_label_selector_sees_an_object_leave_and_come_back(client: Client) -> None:
    # cacheWatcher.convertToWatchEvent: stops matching -> DELETED, starts matching -> ADDED.
    _, created = await client.send("POST", CM, {"metadata": {"name": "c", "labels": {"ours": "yes"}}})
    since = created["metadata"]["resourceVersion"]
    await client.send("PATCH", f"{CM}/c", {"metadata": {"labels": {"ours": None}}}, MERGE)
    await client.send("PATCH", f"{CM}/c", {"metadata": {"labels": {"ours": "yes"}}}, MERGE)
    events = await client.watch(CM, 2, resourceVersion=since, labelSelector="ours=yes")
    assert [e["type"] for e in events] == ["DELETED", "ADDED"]


async def test_a_watch_from_before_the_history_window_is_told_410_expired(client: Client) -> None:
    _, created = await client.send("POST", CM, configmap("c"))
    client.server.forget_history("v1/configmaps")
    events = await client.watch(CM, 5, resourceVersion=created["metadata"]["resourceVersion"])
    assert [(e["type"], e["object"]["code"]) for e in events] == [("ERROR", 410)]


async def test_creates_in_a_missing_or_terminating_namespace_are_refused(client: Client) -> None:
    # The NamespaceLifecycle admission plugin.
    status, body = await client.send("POST", "/api/v1/namespaces/nowhere/configmaps", configmap("c"))
    assert (status, body["message"]) == (404, 'namespaces "nowhere" not found')
    await client.send("PATCH", f"{NS}/team", {"metadata": {"finalizers": ["example.com/hold"]}}, MERGE)
    await client.send("DELETE", f"{NS}/team")
    status, body = await client.send("POST", CM, configmap("c"))
    assert status == 403 and "being terminated" in body["message"]


async def test_deleting_a_namespace_deletes_its_contents_first(client: Client) -> None:
    await client.send("POST", CM, configmap("c"))
    cms = asyncio.create_task(client.watch("/api/v1/configmaps", 2))
    namespaces = asyncio.create_task(client.watch(NS, 3, labelSelector="kubernetes.io/metadata.name=team"))
    await asyncio.sleep(0.1)
    await client.send("DELETE", f"{NS}/team")
    assert [e["type"] for e in await cms] == ["ADDED", "DELETED"]
    assert [e["type"] for e in await namespaces] == ["ADDED", "MODIFIED", "DELETED"]
    assert (await client.send("GET", f"{CM}/c"))[0] == 404


async def test_the_status_subresource_and_the_main_endpoint_change_only_their_part(client: Client) -> None:
    quota = {"metadata": {"name": "q"}, "spec": {"hard": {"pods": "1"}}, "status": {"used": {"pods": "9"}}}
    _, created = await client.send("POST", QUOTA, quota)
    assert "status" not in created
    _, obj = await client.send(
        "PATCH",
        f"{QUOTA}/q/status",
        {"spec": {"hard": {"pods": "5"}}, "status": {"used": {"pods": "0"}}},
        MERGE,
    )
    assert obj["spec"]["hard"] == {"pods": "1"} and obj["status"] == {"used": {"pods": "0"}}
    _, obj = await client.send("PATCH", f"{QUOTA}/q", {"status": {"used": {"pods": "3"}}}, MERGE)
    assert obj["status"] == {"used": {"pods": "0"}}


async def test_finalizers_hold_a_deletion_until_the_last_one_is_removed(client: Client) -> None:
    await client.send("POST", CM, {"metadata": {"name": "c", "finalizers": ["example.com/hold"]}})
    status, marked = await client.send("DELETE", f"{CM}/c")
    assert status == 200 and marked["metadata"]["deletionTimestamp"]
    status, _ = await client.send("PATCH", f"{CM}/c", {"metadata": {"finalizers": ["a", "b"]}}, MERGE)
    assert status == 422, "no new finalizer on an object being deleted"
    await client.send("PATCH", f"{CM}/c", {"metadata": {"finalizers": None}}, MERGE)
    assert (await client.send("GET", f"{CM}/c"))[0] == 404


async def test_list_pages_come_from_one_snapshot(client: Client) -> None:
    for name in "abc":
        await client.send("POST", CM, configmap(name))
    _, first = await client.send("GET", f"{CM}?limit=2")
    await client.send("POST", CM, configmap("d"))
    _, second = await client.send("GET", f"{CM}?limit=2&continue={first['metadata']['continue']}")
    assert [i["metadata"]["name"] for i in first["items"] + second["items"]] == ["a", "b", "c"]
    assert second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    status, body = await client.send("GET", f"{CM}?limit=2&continue=unknown:2")
    assert (status, body["reason"]) == (410, "Expired")


async def test_an_injected_error_changes_nothing(client: Client) -> None:
    fault = client.server.fail("POST", CM, code=500)
    status, _ = await client.send("POST", CM, configmap("c"))
    assert (status, fault.hits) == (500, 1)
    assert (await client.send("GET", f"{CM}/c"))[0] == 404
    assert (await client.send("POST", CM, configmap("c")))[0] == 201


async def test_bookmarks_come_periodically_when_asked_for_and_the_stream_ends_at_its_timeout() -> None:
    # API concepts, "Watch bookmarks": about once a minute on a real server (here 0.1 s).
    async with FakeApiServer(bookmark_every=0.1) as server, aiohttp.ClientSession() as session:
        client = Client(server, session)
        _, created = await client.send("POST", NS, {"metadata": {"name": "team"}})
        events = await client.watch(
            NS,
            3,
            resourceVersion=created["metadata"]["resourceVersion"],
            allowWatchBookmarks="true",
            timeoutSeconds="1",
        )
        assert [e["type"] for e in events] == ["BOOKMARK"] * 3
        assert events[-1]["object"]["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
        started = asyncio.get_running_loop().time()
        assert (
            await client.watch(
                NS, 100, resourceVersion=created["metadata"]["resourceVersion"], timeoutSeconds="1"
            )
            == []
        )
        assert asyncio.get_running_loop().time() - started < 2


NETPOL = "/apis/networking.k8s.io/v1/namespaces/team/networkpolicies"
DENY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "deny"},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
}


def owners(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["manager"]: m["fieldsV1"] for m in obj["metadata"]["managedFields"]}


async def test_an_edit_inside_an_atomic_struct_takes_the_whole_struct(client: Client) -> None:
    # meta/v1 types.go: LabelSelector is `+structType=atomic`; seen on 1.36.2 (issue 15 item 1):
    # `kubectl patch --field-manager=intruder` of podSelector.matchLabels owns f:podSelector.
    await client.apply(f"{NETPOL}/deny", DENY, "tenantry")
    status, obj = await client.send(
        "PATCH",
        f"{NETPOL}/deny?fieldManager=intruder",
        {"spec": {"podSelector": {"matchLabels": {"x": "y"}}}},
        MERGE,
    )
    assert status == 200 and obj["spec"]["podSelector"] == {"matchLabels": {"x": "y"}}
    assert owners(obj)["intruder"] == {"f:spec": {"f:podSelector": {}}}
    assert "f:podSelector" not in owners(obj)["tenantry"]["f:spec"]


async def test_a_forced_apply_replaces_an_atomic_struct_whole(client: Client) -> None:
    await client.apply(f"{NETPOL}/deny", DENY, "tenantry")
    await client.send(
        "PATCH",
        f"{NETPOL}/deny?fieldManager=intruder",
        {"spec": {"podSelector": {"matchLabels": {"x": "y"}}}},
        MERGE,
    )
    status, body = await client.apply(f"{NETPOL}/deny", DENY, "tenantry", force=False)
    assert status == 409 and body["details"]["causes"][0]["field"] == ".spec.podSelector"
    status, obj = await client.apply(f"{NETPOL}/deny", DENY, "tenantry")
    assert status == 200 and obj["spec"]["podSelector"] == {}
    assert "intruder" not in owners(obj)


async def test_a_key_another_manager_added_to_a_granular_map_survives_a_forced_apply(client: Client) -> None:
    # A map without `+mapType=atomic` is granular: each key is a field; an apply removes only
    # what its manager owned (Server-Side Apply docs, "Merge strategy").
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "q"},
        "spec": {"hard": {"pods": "1"}},
    }
    await client.apply(f"{QUOTA}/q", quota, "tenantry")
    await client.send(
        "PATCH", f"{QUOTA}/q?fieldManager=intruder", {"spec": {"hard": {"services": "5"}}}, MERGE
    )
    status, obj = await client.apply(f"{QUOTA}/q", quota, "tenantry")
    assert status == 200 and obj["spec"]["hard"] == {"pods": "1", "services": "5"}
    assert owners(obj)["intruder"] == {"f:spec": {"f:hard": {"f:services": {}}}}


async def test_applying_a_foreign_key_with_its_value_only_shares_it(client: Client) -> None:
    # Server-Side Apply docs, "Conflicts" / shared ownership: applying the value a field already
    # has is no conflict, so force takes nothing: both managers own it, and omitting it later
    # leaves it (the other manager still owns it). "Apply it, then apply without it" is no way
    # to remove someone else's key: Tenantry removes it with a merge patch (next test).
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "q"},
        "spec": {"hard": {"pods": "1"}},
    }
    await client.apply(f"{QUOTA}/q", quota, "tenantry")
    await client.send(
        "PATCH", f"{QUOTA}/q?fieldManager=intruder", {"spec": {"hard": {"services": "5"}}}, MERGE
    )
    taken = {**quota, "spec": {"hard": {"pods": "1", "services": "5"}}}
    _, obj = await client.apply(f"{QUOTA}/q", taken, "tenantry")
    assert owners(obj)["intruder"] == {"f:spec": {"f:hard": {"f:services": {}}}}
    _, obj = await client.apply(f"{QUOTA}/q", quota, "tenantry")
    assert obj["spec"]["hard"] == {"pods": "1", "services": "5"}


async def test_a_merge_patch_with_a_stale_resource_version_is_a_conflict(client: Client) -> None:
    # API concepts, "Resource versions": an update carrying metadata.resourceVersion is refused
    # with 409 Conflict when the object changed since; with the current one it removes the key.
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "q"},
        "spec": {"hard": {"pods": "1"}},
    }
    _, obj = await client.apply(f"{QUOTA}/q", quota, "tenantry")
    _, patched = await client.send(
        "PATCH", f"{QUOTA}/q?fieldManager=intruder", {"spec": {"hard": {"x": "5"}}}, MERGE
    )
    removal = {"spec": {"hard": {"x": None}}}
    status, _ = await client.send(
        "PATCH",
        f"{QUOTA}/q",
        {**removal, "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}},
        MERGE,
    )
    assert status == 409
    status, done = await client.send(
        "PATCH",
        f"{QUOTA}/q",
        {**removal, "metadata": {"resourceVersion": patched["metadata"]["resourceVersion"]}},
        MERGE,
    )
    assert status == 200 and done["spec"]["hard"] == {"pods": "1"}
    assert "intruder" not in owners(done)
