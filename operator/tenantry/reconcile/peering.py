"""Is this replica the active one? Kopf's peering rule, read from Kopf's peering object.

Kopf pauses its own watchers on a standby replica, but our workers and periodic resync are
our own tasks: without this gate a standby would reconcile from a stale inventory. The rule is
Kopf's: a replica is active when no other live peer has a priority equal to or above its own.
"""

from __future__ import annotations

import datetime as dt
from typing import Any


def _alive(info: dict[str, Any], now: dt.datetime) -> bool:
    lastseen = info.get("lastseen")
    if not lastseen:
        return True
    seen = dt.datetime.fromisoformat(str(lastseen).replace("Z", "+00:00"))
    if seen.tzinfo is None:
        seen = seen.replace(tzinfo=dt.UTC)
    return seen + dt.timedelta(seconds=int(info.get("lifetime", 60))) > now


def is_active(peering: dict[str, Any] | None, identity: str, priority: int, now: dt.datetime) -> bool:
    """True when no other live peer in `peering.status` has priority >= ours."""
    peers = (peering or {}).get("status") or {}
    for peer_id, info in peers.items():
        if peer_id == identity or not isinstance(info, dict) or not _alive(info, now):
            continue
        if int(info.get("priority", 0)) >= priority:
            return False
    return True
