import datetime as dt

from tenantry.reconcile.peering import is_active

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
FRESH = (NOW - dt.timedelta(seconds=10)).isoformat()
STALE = (NOW - dt.timedelta(seconds=120)).isoformat()


def peering(**peers: tuple[int, str]) -> dict[str, object]:
    return {
        "status": {k: {"priority": p, "lifetime": 60, "lastseen": seen} for k, (p, seen) in peers.items()}
    }


def test_alone_or_highest_is_active() -> None:
    assert is_active(None, "me", 5, NOW)
    assert is_active(peering(me=(5, FRESH)), "me", 5, NOW)
    assert is_active(peering(me=(5, FRESH), other=(3, FRESH)), "me", 5, NOW)


def test_a_live_higher_or_equal_peer_makes_us_stand_by() -> None:
    assert not is_active(peering(other=(9, FRESH)), "me", 5, NOW)
    assert not is_active(peering(other=(5, FRESH)), "me", 5, NOW)  # equal: Kopf freezes both


def test_dead_peers_do_not_count() -> None:
    assert is_active(peering(other=(9, STALE)), "me", 5, NOW)
