"""The informer's list-then-watch loop, against a fake of its collaborator (the client's LIST
and watch calls), not over HTTP. The fake speaks both shapes of that collaborator: the
thread-based one (`list_with_version_sync`, `stream_sync` returning a response of lines) and
the asyncio one (`list_with_version`, `watch` yielding decoded events).

What matters here: after 410 Gone the informer lists again and reports what disappeared
meanwhile as DELETED (the inventory would keep a deleted object forever otherwise), watches
again from the new list's resourceVersion, and a resource that stops being served reports
all its objects deleted, then lists them again once it is served.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from tenantry.kube.client import NOT_SERVED, ApiError
from tenantry.kube.informer import Informer
from tenantry.kube.resources import NETWORK_POLICY

API = "networking.k8s.io/v1"


def obj(name: str, rv: str = "1", namespace: str = "acme-prod") -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": rv},
        "spec": {},
    }


def deleted(name: str, namespace: str = "acme-prod") -> dict[str, Any]:
    """The synthetic DELETED event: identity only."""
    meta = {"name": name, "namespace": namespace}
    return {"type": "DELETED", "object": {"apiVersion": API, "kind": "NetworkPolicy", "metadata": meta}}


class Stream:
    """A watch response: its events, then (if `hold`) open until released, like a quiet watch."""

    def __init__(self, *events: dict[str, Any], hold: bool = False) -> None:
        self.events = events
        self.lines = [(json.dumps(e) + "\n").encode() for e in events]
        self.hold = hold
        self.released = threading.Event()

    async def decoded(self) -> AsyncIterator[dict[str, Any]]:
        for event in self.events:
            yield json.loads(json.dumps(event))  # a fresh copy, as decoding a line gives
        if self.hold:
            await asyncio.Event().wait()  # until the informer's task is cancelled

    def stream(self, amt: Any = None, decode_content: Any = None) -> Iterator[bytes]:
        yield from self.lines
        if self.hold:
            self.released.wait(10)

    def release_conn(self) -> None:
        self.released.set()

    shutdown = release_conn


class FakeClient:
    """Answers each LIST and watch from a script; records what was asked."""

    def __init__(self, lists: list[Any], streams: list[Any]) -> None:
        self.lists, self.streams = lists, streams
        self.watched_from: list[str] = []
        self.list_calls = 0

    def list_with_version_sync(
        self, kind: Any, selector: Any, page: int = 500, transform: Any = None
    ) -> tuple[list[Any], str]:
        assert kind is NETWORK_POLICY
        self.list_calls += 1
        answer = self.lists.pop(0)
        if isinstance(answer, Exception):
            raise answer
        items, version = answer
        items = json.loads(json.dumps(items))
        return [transform(i) if transform else i for i in items], version

    async def list_with_version(
        self, kind: Any, selector: Any = None, page: int = 500, transform: Any = None
    ) -> tuple[list[Any], str]:
        return self.list_with_version_sync(kind, selector, page, transform)

    def _next_stream(self, query: dict[str, str]) -> Stream:
        self.watched_from.append(query["resourceVersion"])
        answer = self.streams.pop(0) if self.streams else Stream(hold=True)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def stream_sync(self, verb: str, path: str, query: dict[str, str], read_timeout: float) -> Any:
        assert path == NETWORK_POLICY.path()
        return self._next_stream(query)

    async def watch(self, kind: Any, query: dict[str, str], read_timeout: float) -> AsyncIterator[Any]:
        assert kind is NETWORK_POLICY
        async for event in self._next_stream(query).decoded():
            yield event


NOT_SERVED_ERROR = ApiError(404, NOT_SERVED, "404 page not found")


def informer(client: FakeClient, events: list[dict[str, Any]], served: list[bool] | None = None) -> Informer:
    inf = Informer(
        client,  # type: ignore[arg-type]
        NETWORK_POLICY,
        "app.kubernetes.io/managed-by=tenantry",
        events.append,
        transform=lambda o: o["metadata"]["name"],
        on_served=None if served is None else served.append,
    )
    inf.not_served_poll = 0.01
    return inf


async def stop(inf: Informer) -> None:
    result: Any = inf.stop()
    if inspect.isawaitable(result):
        await result


async def until(check: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("not reached")
        await asyncio.sleep(0.005)


async def test_start_lists_then_watches_from_the_lists_version() -> None:
    client = FakeClient([([obj("a"), obj("b")], "5")], [])
    events: list[dict[str, Any]] = []
    inf = informer(client, events)
    try:
        assert await inf.start() == ["a", "b"], "each listed object through transform"
        await until(lambda: client.watched_from == ["5"])
    finally:
        await stop(inf)


async def test_after_410_it_lists_again_and_reports_what_disappeared_as_deleted() -> None:
    added = {"type": "ADDED", "object": obj("c", "6")}
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}
    client = FakeClient(
        # "a" was deleted while the watch was broken; its DELETED event is lost for good.
        [([obj("a"), obj("b")], "5"), ([obj("b", "8"), obj("c", "6")], "9")],
        [Stream(added, gone)],
    )
    events: list[dict[str, Any]] = []
    inf = informer(client, events)
    try:
        await inf.start()
        await until(lambda: len(events) >= 3)
        await until(lambda: client.watched_from == ["5", "9"])  # from the new list's version
        # "c" at version 6 came through the watch already: unchanged, it is not reported again.
        assert events == [added, deleted("a"), {"type": "MODIFIED", "object": obj("b", "8")}]
    finally:
        await stop(inf)


async def test_a_deletion_the_watch_reported_is_not_reported_again_by_a_relist() -> None:
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410}}
    removed = {"type": "DELETED", "object": obj("a", "6")}
    client = FakeClient([([obj("a"), obj("b")], "5"), ([obj("b")], "9")], [Stream(removed, gone)])
    events: list[dict[str, Any]] = []
    inf = informer(client, events)
    try:
        await inf.start()
        await until(lambda: len(events) >= 1 and client.watched_from == ["5", "9"])
        assert events == [removed]  # "b" is unchanged (version 1 both times): nothing to report
    finally:
        await stop(inf)


async def test_a_relist_reports_only_changed_objects_slimmed_as_they_are_decoded() -> None:
    """After an API-server restart every informer relists at once: what is unchanged is
    dropped as it is decoded, and what changed goes through the relist transform (the slim
    copy), so memory holds only the changes, never every full object of the kind."""
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410}}
    unchanged = [obj(f"p{i}") for i in range(50)]
    changed = {**obj("p7", "9"), "big": "x" * 10_000}
    client = FakeClient([(unchanged, "5"), ([*unchanged[:7], changed, *unchanged[8:]], "9")], [Stream(gone)])
    events: list[dict[str, Any]] = []
    inf = Informer(
        client,  # type: ignore[arg-type]
        NETWORK_POLICY,
        "",
        events.append,
        transform=lambda o: None,
        relist_transform=lambda o: {k: v for k, v in o.items() if k != "big"},
    )
    try:
        await inf.start()
        await until(lambda: client.watched_from == ["5", "9"])
        assert events == [{"type": "MODIFIED", "object": obj("p7", "9")}]
    finally:
        await stop(inf)


async def test_the_watch_resumes_from_the_last_event_seen() -> None:
    modified = {"type": "MODIFIED", "object": obj("a", "7")}
    bookmark = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}}
    client = FakeClient([([obj("a")], "5")], [Stream(modified, bookmark)])
    events: list[dict[str, Any]] = []
    inf = informer(client, events)
    try:
        await inf.start()
        await until(lambda: client.watched_from == ["5", "12"] and len(events) == 1)
        assert events == [modified], "bookmarks move the version, they are no events"
    finally:
        await stop(inf)


async def test_a_relist_of_a_resource_no_longer_served_reports_everything_deleted() -> None:
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410}}
    client = FakeClient(
        [([obj("a"), obj("b", namespace="acme-dev")], "5"), NOT_SERVED_ERROR, ([], "30")],
        [Stream(gone)],  # 410, and the relist finds the resource gone (its CRD was deleted)
    )
    events: list[dict[str, Any]] = []
    served: list[bool] = []
    inf = informer(client, events, served)
    try:
        await inf.start()
        await until(lambda: served == [False, True])
        assert events == [deleted("b", "acme-dev"), deleted("a")], "each once, then nothing"
        await until(lambda: client.watched_from == ["5", "30"])
    finally:
        await stop(inf)


async def test_a_resource_that_stops_being_served_is_emptied_then_listed_when_back() -> None:
    client = FakeClient(
        [([obj("a")], "5"), NOT_SERVED_ERROR, ([obj("a", "20"), obj("z", "21")], "22")],
        [NOT_SERVED_ERROR],  # the CRD went away under the watch
    )
    events: list[dict[str, Any]] = []
    served: list[bool] = []
    inf = informer(client, events, served)
    try:
        await inf.start()
        await until(lambda: served == [False, True] and len(events) == 3)
        assert events == [
            deleted("a"),
            {"type": "MODIFIED", "object": obj("a", "20")},
            {"type": "MODIFIED", "object": obj("z", "21")},
        ]
        assert inf.served
        await until(lambda: client.watched_from == ["5", "22"])
    finally:
        await stop(inf)


async def test_a_resource_not_served_at_start_lists_as_empty_and_is_listed_once_served() -> None:
    client = FakeClient([NOT_SERVED_ERROR, ([obj("a", "3")], "4")], [])
    events: list[dict[str, Any]] = []
    served: list[bool] = []
    inf = informer(client, events, served)
    try:
        assert await inf.start() == []
        await until(lambda: served == [False, True] and events)
        assert events == [{"type": "MODIFIED", "object": obj("a", "3")}]
        await until(lambda: client.watched_from == ["4"])
    finally:
        await stop(inf)


async def test_any_other_list_error_at_start_is_raised() -> None:
    client = FakeClient([ApiError(403, "Forbidden", "no")], [])
    inf = informer(client, [])
    try:
        await inf.start()
    except ApiError as exc:
        assert exc.status == 403
    else:
        raise AssertionError("a 403 must not be taken for 'not served'")
    finally:
        await stop(inf)
