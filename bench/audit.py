"""Counting writes in a real kube-apiserver's audit log (bench/real_cluster.py).

The log is JSON lines, one per request at stage ResponseComplete (the realk8s audit policy logs
writes only, at level Metadata). kube-apiserver rotates `audit.log` at `--audit-log-maxsize` into
`audit-<timestamp>.log` in the same directory, so a window of time is counted over every
`audit*.log` file, each entry by its `stageTimestamp` (when the answer was sent).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

OPERATOR_USER = "tenantry-operator"

# How late a watch event may reach the operator after the write it reports (measured: tens of
# milliseconds on the loaded 2-core plane). A quota change this close before a status write may
# not be in it: the operator then owes the Organization a usage refresh, held back like any other.
WATCH_DELIVERY = timedelta(seconds=1)


def stamp(text: str) -> datetime:
    """`2026-12-05T14:20:37.648941Z` (RFC 3339, microseconds) as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def key(entry: dict[str, Any]) -> str:
    """`verb resource[/subresource] code`: what the tables count."""
    ref = entry.get("objectRef") or {}
    resource = ref.get("resource", "?") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    code = (entry.get("responseStatus") or {}).get("code", "?")
    return f"{entry.get('verb', '?')} {resource} {code}"


def entries(
    lines: Iterable[str], start: datetime, end: datetime, user: str | None
) -> Iterable[dict[str, Any]]:
    """Complete entries with start <= stageTimestamp < end (of `user` if given)."""
    needle = f'"username":"{user}"' if user else ""
    for line in lines:
        if needle not in line:  # cheap: most lines of a busy log are someone else's
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # the line being written while we read
        if entry.get("stage") != "ResponseComplete" or "stageTimestamp" not in entry:
            continue
        if user and (entry.get("user") or {}).get("username") != user:
            continue
        if start <= stamp(entry["stageTimestamp"]) < end:
            yield entry


def files(logs: Path, start: datetime) -> list[Path]:
    """Every audit log file that may hold an entry at or after `start` (rotated ones included)."""
    found = []
    for path in sorted(logs.glob("audit*.log")):
        if datetime.fromtimestamp(path.stat().st_mtime, UTC) >= start:
            found.append(path)
    return found


def count(logs: Path, start: datetime, end: datetime, user: str | None = None) -> dict[str, Any]:
    """Writes in [start, end): total, per user, and per user per `verb resource code`."""
    by_user: dict[str, dict[str, int]] = {}
    for path in files(logs, start):
        with path.open(errors="replace") as handle:
            for entry in entries(handle, start, end, user):
                name = (entry.get("user") or {}).get("username", "?")
                counts = by_user.setdefault(name, {})
                counts[key(entry)] = counts.get(key(entry), 0) + 1
    return {
        "total": sum(sum(c.values()) for c in by_user.values()),
        "by_user_total": {name: sum(c.values()) for name, c in sorted(by_user.items())},
        "by_user": {name: dict(sorted(c.items())) for name, c in sorted(by_user.items())},
    }


@dataclass
class StatusTimeline:
    """Per Organization (`<org>` of namespaces `<org>-<env>`), when the operator wrote its status
    and when one of its quotas' status changed (kube-controller-manager's updates, its recount
    every 5 minutes, and quota admission's), answered writes only, in time order. The operator
    writes usage alone at most every 30 s, so a quota change after an Organization's status
    write is a usage refresh it owes, restart or not.

    A change up to WATCH_DELIVERY before a status write counts as after it: the write may
    predate the watch event that told the operator of the change."""

    writes: dict[str, list[datetime]]
    changes: dict[str, list[datetime]]

    def held_back(self, stopped: datetime) -> set[str]:
        """Organizations owed a usage refresh as of `stopped` (the old process's exit): the
        process after it makes them on the same schedule; not caused by the restart."""
        held = set()
        for org, changed in self.changes.items():
            written = [w for w in self.writes.get(org, ()) if w < stopped]
            moved = [c for c in changed if c < stopped]
            if written and moved and moved[-1] > written[-1] - WATCH_DELIVERY:
                held.add(org)
        return held

    def usage_refreshes(self, window: datetime) -> dict[str, int]:
        """Per Organization, its status writes from `window` on that follow a quota change since
        its previous status write. Any other status write there is counted by the caller."""
        found: dict[str, int] = {}
        for org, times in self.writes.items():
            changed = self.changes.get(org, [])
            for previous, when in zip([None, *times], times, strict=False):
                after = None if previous is None else previous - WATCH_DELIVERY
                if when >= window and any((after is None or after < c) and c < when for c in changed):
                    found[org] = found.get(org, 0) + 1
        return found


def status_timeline(logs: Path, start: datetime, end: datetime) -> StatusTimeline:
    """The StatusTimeline of [start, end), from one read of the log."""
    writes: dict[str, list[datetime]] = {}
    changes: dict[str, list[datetime]] = {}
    for path in files(logs, start):
        with path.open(errors="replace") as handle:
            relevant = (t for t in handle if '"resourcequotas"' in t or '"organizations"' in t)
            for entry in entries(relevant, start, end, None):
                ref = entry.get("objectRef") or {}
                ok = (entry.get("responseStatus") or {}).get("code", 500) < 300
                if ref.get("subresource") != "status" or not ok:
                    continue
                when = stamp(entry["stageTimestamp"])
                user = (entry.get("user") or {}).get("username")
                if ref.get("resource") == "organizations" and user == OPERATOR_USER:
                    writes.setdefault(str(ref.get("name")), []).append(when)
                elif ref.get("resource") == "resourcequotas" and ref.get("namespace"):
                    changes.setdefault(str(ref["namespace"]).rsplit("-", 1)[0], []).append(when)
    for times in (*writes.values(), *changes.values()):
        times.sort()
    return StatusTimeline(writes, changes)


def status_writes_of(logs: Path, start: datetime, end: datetime) -> dict[str, int]:
    """The operator's Organization status writes in [start, end), per Organization."""
    found: dict[str, int] = {}
    for path in files(logs, start):
        with path.open(errors="replace") as handle:
            for entry in entries(handle, start, end, OPERATOR_USER):
                ref = entry.get("objectRef") or {}
                if ref.get("resource") == "organizations" and ref.get("subresource") == "status":
                    found[str(ref.get("name"))] = found.get(str(ref.get("name")), 0) + 1
    return found


def last_apply(logs: Path, start: datetime, end: datetime, besides: str = "") -> datetime | None:
    """When the operator's last write of a managed object (not its Organizations' status or
    finalizer, not an Event, not one named `besides`: the drift probes' heals) in [start, end)
    was answered: everything applied by then."""
    last: datetime | None = None
    for path in files(logs, start):
        with path.open(errors="replace") as handle:
            for entry in entries(handle, start, end, OPERATOR_USER):
                ref = entry.get("objectRef") or {}
                if ref.get("resource") in ("organizations", "events") or ref.get("name") == besides:
                    continue
                when = stamp(entry["stageTimestamp"])
                last = when if last is None else max(last, when)
    return last


class Tail:
    """The newest writes of one user, read incrementally (never the whole log again).

    Follows `audit.log` across a rotation: when its inode changes, the rest of the old file is
    read under its new name (the rotated file keeps the inode) before the new one from 0.
    """

    def __init__(self, logs: Path, user: str) -> None:
        self.logs, self.user = logs, user
        self.needle = f'"username":"{user}"'
        self.last: datetime | None = None
        current = logs / "audit.log"
        info = current.stat()
        self.inode, self.offset, self.rest = info.st_ino, info.st_size, b""

    def _read(self, path: Path) -> None:
        with path.open("rb") as handle:
            handle.seek(self.offset)
            data = self.rest + handle.read()
            self.offset = handle.tell()
        *complete, self.rest = data.split(b"\n")
        for raw in complete:
            line = raw.decode(errors="replace")
            if self.needle in line:
                with_time = [e for e in entries([line], datetime.min.replace(tzinfo=UTC), _FAR, self.user)]
                for entry in with_time:
                    when = stamp(entry["stageTimestamp"])
                    self.last = when if self.last is None else max(self.last, when)

    def poll(self) -> datetime | None:
        """Read what is new; the time of this user's newest write seen so far."""
        current = self.logs / "audit.log"
        try:
            info = current.stat()
        except FileNotFoundError:
            return self.last
        if info.st_ino != self.inode:
            for path in self.logs.glob("audit-*.log"):
                if os.stat(path).st_ino == self.inode:
                    self._read(path)
                    break
            self.inode, self.offset, self.rest = info.st_ino, 0, b""
        self._read(current)
        return self.last


_FAR = datetime(9999, 1, 1, tzinfo=UTC)
