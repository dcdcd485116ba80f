"""bench/audit.py: writes counted in a time window across kube-apiserver's rotated audit logs."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import audit  # noqa: E402 - bench/ is not a package
from run import percentile  # noqa: E402

T0 = datetime(2026, 12, 5, 14, 0, 0, tzinfo=UTC)


def line(
    at: datetime, user: str = "tenantry-operator", verb: str = "patch", sub: str = "", code: int = 200
) -> str:
    ref = {"resource": "organizations", "name": "org-0001", **({"subresource": sub} if sub else {})}
    return json.dumps(
        {
            "kind": "Event",
            "stage": "ResponseComplete",
            "verb": verb,
            "user": {"username": user},
            "objectRef": ref,
            "responseStatus": {"code": code},
            "stageTimestamp": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        },
        separators=(",", ":"),
    )


def write(path: Path, lines: list[str], mtime: datetime) -> None:
    path.write_text("".join(f"{text}\n" for text in lines))
    os.utime(path, (mtime.timestamp(), mtime.timestamp()))


def test_a_window_counts_the_rotated_file_and_the_current_one(tmp_path: Path) -> None:
    rotated = [line(T0 + timedelta(seconds=s)) for s in (1, 9, 10)]  # 1 is before the window
    write(tmp_path / "audit-2026-12-05T14-00-10.000.log", rotated, T0 + timedelta(seconds=10))
    current = [
        line(T0 + timedelta(seconds=11), sub="status"),
        line(T0 + timedelta(seconds=12), user="admin", verb="create", code=201),
        line(T0 + timedelta(seconds=20)),  # the end is excluded
        '{"stage":"ResponseComplete","user":{"username":"tenantry-operator"},"stageTi',  # half-written
    ]
    write(tmp_path / "audit.log", current, T0 + timedelta(seconds=20))
    # A file last written before the window cannot hold an entry in it: not even opened.
    write(tmp_path / "audit-2026-12-05T13-00-00.000.log", ["not json"], T0 - timedelta(hours=1))

    everyone = audit.count(tmp_path, T0 + timedelta(seconds=5), T0 + timedelta(seconds=20))
    assert everyone["total"] == 4
    assert everyone["by_user"] == {
        "admin": {"create organizations 201": 1},
        "tenantry-operator": {"patch organizations 200": 2, "patch organizations/status 200": 1},
    }
    mine = audit.count(tmp_path, T0 + timedelta(seconds=5), T0 + timedelta(seconds=20), "tenantry-operator")
    assert mine["by_user_total"] == {"tenantry-operator": 3}


def test_the_tail_follows_a_rotation_and_ignores_what_came_before_it(tmp_path: Path) -> None:
    current = tmp_path / "audit.log"
    write(current, [line(T0)], T0)
    tail = audit.Tail(tmp_path, "tenantry-operator")
    assert tail.poll() is None  # the entry before the tail started is not counted
    with current.open("a") as handle:
        handle.write(line(T0 + timedelta(seconds=5)) + "\n" + line(T0 + timedelta(seconds=6), user="admin"))
    assert tail.poll() == T0 + timedelta(seconds=5)
    # Rotation: the old file renamed (same inode) after one more line, a new audit.log.
    with current.open("a") as handle:
        handle.write("\n" + line(T0 + timedelta(seconds=7)) + "\n")
    current.rename(tmp_path / "audit-2026-12-05T14-00-07.000.log")
    write(current, [line(T0 + timedelta(seconds=3))], T0 + timedelta(seconds=8))
    assert tail.poll() == T0 + timedelta(seconds=7)


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 21)]
    assert percentile(values, 50) == 10.0
    assert percentile(values, 99) == 20.0
    assert percentile([], 50) is None


def entry(at: datetime, user: str, resource: str, name: str, namespace: str = "", code: int = 200) -> str:
    ref = {"resource": resource, "name": name, "subresource": "status"}
    if namespace:
        ref["namespace"] = namespace
    return json.dumps(
        {
            "stage": "ResponseComplete",
            "verb": "patch" if user == audit.OPERATOR_USER else "update",
            "user": {"username": user},
            "objectRef": ref,
            "responseStatus": {"code": code},
            "stageTimestamp": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        },
        separators=(",", ":"),  # as kube-apiserver writes it
    )


def test_held_back_names_the_organizations_whose_quota_moved_after_their_last_status_write(
    tmp_path: Path,
) -> None:
    at = [T0 + timedelta(seconds=s) for s in range(12)]
    lines = [
        entry(at[1], "system:apiserver", "resourcequotas", "tenantry-quota", "org-0001-prod"),
        entry(at[3], audit.OPERATOR_USER, "organizations", "org-0001"),
        # After org-0001's status write: its usage refresh is being held back.
        entry(
            at[5],
            "system:serviceaccount:kube-system:resourcequota-controller",
            "resourcequotas",
            "q",
            "org-0001-dev",
        ),
        entry(at[4], "system:apiserver", "resourcequotas", "tenantry-quota", "org-0002-prod"),
        entry(at[6], audit.OPERATOR_USER, "organizations", "org-0002"),
        # A refused status write is no write: org-0003's usage is still held back.
        entry(at[2], "system:apiserver", "resourcequotas", "tenantry-quota", "org-0003-prod"),
        entry(at[1], audit.OPERATOR_USER, "organizations", "org-0003"),
        entry(at[7], audit.OPERATOR_USER, "organizations", "org-0003", code=504),
        # 30 ms before org-0004's status write: the watch may not have delivered it yet.
        entry(at[7] - timedelta(milliseconds=30), "system:apiserver", "resourcequotas", "q", "org-0004-dev"),
        entry(at[7], audit.OPERATOR_USER, "organizations", "org-0004"),
        # After the old process stopped (at[9]): not its business.
        entry(at[10], "system:apiserver", "resourcequotas", "tenantry-quota", "org-0002-dev"),
        entry(at[11], audit.OPERATOR_USER, "organizations", "org-0001"),
    ]
    write(tmp_path / "audit.log", lines, at[11])
    assert audit.status_timeline(tmp_path, T0, at[11]).held_back(at[9]) == {
        "org-0001",
        "org-0003",
        "org-0004",
    }
    assert audit.status_writes_of(tmp_path, at[9], at[11] + timedelta(seconds=1)) == {"org-0001": 1}


def test_last_apply_is_the_operators_last_write_of_a_managed_object(tmp_path: Path) -> None:
    def write_of(at: datetime, resource: str, user: str = audit.OPERATOR_USER, verb: str = "patch") -> str:
        return json.dumps(
            {
                "stage": "ResponseComplete",
                "verb": verb,
                "user": {"username": user},
                "objectRef": {"resource": resource, "name": "x"},
                "responseStatus": {"code": 201},
                "stageTimestamp": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            },
            separators=(",", ":"),
        )

    at = [T0 + timedelta(seconds=s) for s in range(8)]
    lines = [
        write_of(at[1], "namespaces"),
        write_of(at[3], "networkpolicies"),
        write_of(at[4], "organizations"),  # its status or finalizer: not an apply
        write_of(at[5], "events", verb="create"),
        write_of(at[6], "rolebindings", user="admin"),  # someone else's
    ]
    write(tmp_path / "audit.log", lines, at[7])
    assert audit.last_apply(tmp_path, T0, at[7]) == at[3]
    assert audit.last_apply(tmp_path, T0, at[7], besides="x") is None  # the probes' heals
    assert audit.last_apply(tmp_path, at[4], at[7]) is None


def test_usage_refreshes_are_status_writes_after_a_quota_change_since_the_previous_one(
    tmp_path: Path,
) -> None:
    at = [T0 + timedelta(seconds=s) for s in range(10)]
    controller = "system:serviceaccount:kube-system:resourcequota-controller"
    lines = [
        entry(at[0], audit.OPERATOR_USER, "organizations", "org-0001"),  # its Ready write
        entry(at[1], controller, "resourcequotas", "tenantry-quota", "org-0001-prod"),
        entry(at[5], audit.OPERATOR_USER, "organizations", "org-0001"),  # a refresh, in the window
        entry(at[6], audit.OPERATOR_USER, "organizations", "org-0001"),  # nothing moved before it
        entry(at[2], audit.OPERATOR_USER, "organizations", "org-0002"),
        entry(at[7], controller, "resourcequotas", "tenantry-quota", "org-0002-dev"),
        entry(at[8], audit.OPERATOR_USER, "organizations", "org-0002"),  # a refresh
        entry(at[3], controller, "resourcequotas", "tenantry-quota", "org-0003-dev"),
        entry(at[4], audit.OPERATOR_USER, "organizations", "org-0003"),  # before the window
        # 30 ms before org-0004's first write, so maybe not in it: the next one is a refresh too.
        entry(at[6] - timedelta(milliseconds=30), controller, "resourcequotas", "q", "org-0004-dev"),
        entry(at[6], audit.OPERATOR_USER, "organizations", "org-0004"),
        entry(at[8], audit.OPERATOR_USER, "organizations", "org-0004"),
    ]
    write(tmp_path / "audit.log", lines, at[9])
    refreshes = audit.status_timeline(tmp_path, T0, at[9]).usage_refreshes(at[5])
    assert refreshes == {"org-0001": 1, "org-0002": 1, "org-0004": 2}
