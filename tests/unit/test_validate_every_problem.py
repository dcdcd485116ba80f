"""`tenantry validate` reports every problem of a file in one run: schema, cross-field and
policy together (issue 20: a file with 10 problems took 3 runs), with the --policy of render."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT
from tests.unit.test_cli import run, write

TEN = ROOT / "tests" / "data" / "ten-problems.yaml"


def paths(err: str) -> list[str]:
    """The field path of each problem line (`file: object: path: message`)."""
    out = []
    for line in err.splitlines():
        parts = line.split(": ", 3)
        if len(parts) == 4:
            out.append(parts[2])
    return out


def test_ten_problems_of_three_kinds_in_one_run() -> None:
    code, _, err = run("validate", "-f", str(TEN), "--today", "2026-11-26")
    assert code == 1
    assert sorted(paths(err)) == sorted(
        [
            # schema
            "spec.deletionPolicy",
            "spec.managedBy",
            "spec.members.admins[0].kind",
            "spec.network.egress[1].cidr",
            'spec.quota.prod["requests.cpu"]',
            "spec.unknownField",
            # cross-field
            "spec.quota",
            # policy
            "spec.environments[2]",
            "spec.network.allowFrom[0].organization",
            "spec.network.egress[0].cidr",
        ]
    )
    assert err.rstrip().endswith("invalid: 10 error(s)")
    # Messages as precise as when each kind was found on its own.
    assert "'uat' is not an environment of policy 'default' (allowed: prod, staging, dev)" in err
    assert "quota names environment(s) qa that are not in spec.environments (prod, dev, uat)" in err


def _doc() -> dict[str, Any]:
    return {
        "apiVersion": "tenantry.dev/v1alpha1",
        "kind": "Organization",
        "metadata": {"name": "acme"},
        "spec": {"environments": ["prod", "dev"]},
    }


def test_entries_after_a_removed_one_keep_their_index(tmp_path: Path) -> None:
    doc = _doc()
    doc["spec"]["network"] = {
        "egress": [
            {"cidr": "10.0.0.0/33", "ports": [{"port": 80}], "reason": "bad"},
            {"cidr": "169.254.169.254/32", "ports": [{"port": 80}], "reason": "metadata"},
        ]
    }
    code, _, err = run("validate", "-f", write(tmp_path, "o.yaml", [doc]))
    assert code == 1
    assert paths(err) == ["spec.network.egress[0].cidr", "spec.network.egress[1].cidr"]
    assert "lies inside 169.254.169.254/32" in err


def test_what_the_schema_refused_causes_no_second_message(tmp_path: Path) -> None:
    doc = _doc()
    doc["spec"]["environments"] = ["Prod!"]  # its removal would leave the list empty
    doc["spec"]["quotaApproval"] = {"approvedBy": "jane@example.com"}  # justification missing
    doc["spec"]["quota"] = {}
    code, _, err = run("validate", "-f", write(tmp_path, "o.yaml", [doc]))
    assert code == 1
    assert sorted(paths(err)) == ["spec.environments[0]", "spec.quotaApproval.justification"]


def test_validate_takes_the_policy_option_of_render(tmp_path: Path) -> None:
    policy = yaml.safe_load((ROOT / "examples" / "policy-default.yaml").read_text())
    policy["metadata"]["name"] = "strict"
    for env in policy["spec"]["environments"]:
        env["mfa"] = {"required": True, "groupSuffix": ":mfa"}
    doc = copy.deepcopy(_doc())
    doc["spec"]["policy"] = "strict"
    doc["spec"]["members"] = {"viewers": [{"kind": "User", "name": "carol"}]}
    org_file, policy_file = write(tmp_path, "org.yaml", [doc]), write(tmp_path, "policy.yaml", [policy])
    # troubleshooting.md: `tenantry validate -f org.yaml --policy policy.yaml`
    code, _, err = run("validate", "-f", org_file, "--policy", policy_file)
    assert code == 1
    assert paths(err) == ["spec.members.viewers[0]"] and "requires MFA" in err
    code, _, err = run("render", "-f", org_file, "--policy", policy_file)
    assert code == 1 and paths(err) == ["spec.members.viewers[0]"]
    # Without it, the policy is missing, and the message names the option.
    code, _, err = run("validate", "-f", org_file)
    assert code == 1 and "--policy" in err
