"""The Argo CD health check for Organizations (manifests/argocd), run the way Argo CD runs it: the
Lua script with the live object as the global `obj`, returning a table {status, message}.

The statuses come from the operator's own `build_status`, so the script is checked against what
the operator really writes, not against a hand-made imitation of it.
"""

from __future__ import annotations

import copy
import importlib
from typing import Any

import pytest
import yaml

from tenantry.reconcile.status import Outcome, build_status
from tests.conftest import ROOT

ARGOCD = ROOT / "manifests" / "argocd"
SCRIPT = ARGOCD / "health-organization.lua"
PATCH = ARGOCD / "argocd-cm-patch.yaml"
KEY = "resource.customizations.health.tenantry.dev_Organization"
NOW = "2026-11-26T10:00:00Z"
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


# Argo CD embeds gopher-lua, a Lua 5.1: run the script there too when lupa has it.
@pytest.fixture(params=["lupa", "lupa.lua51"])
def lua(request: pytest.FixtureRequest) -> Any:
    if request.param == "lupa":
        module = importlib.import_module("lupa")
    else:
        module = pytest.importorskip(request.param)
    return module.LuaRuntime()


def to_lua(runtime: Any, value: Any) -> Any:
    """JSON-like Python to Lua, as Argo CD converts the object: maps and 1-based arrays; null is nil."""
    if isinstance(value, dict):
        return runtime.table_from({k: to_lua(runtime, v) for k, v in value.items() if v is not None})
    if isinstance(value, list):
        return runtime.table_from([to_lua(runtime, v) for v in value])
    return value


def health(runtime: Any, obj: dict[str, Any]) -> dict[str, str]:
    runtime.globals().obj = to_lua(runtime, obj)
    result = runtime.execute(SCRIPT.read_text())
    assert result is not None, "the script must return a table"
    out = dict(result.items())
    assert set(out) == {"status", "message"}, out
    assert out["status"] in ARGO_STATUSES
    assert isinstance(out["message"], str)
    return {"status": out["status"], "message": out["message"]}


def organization(outcome: Outcome | None, generation: int = 3, observed: int | None = None) -> dict[str, Any]:
    """An Organization at `generation` whose status the operator built from `outcome` (None: none)."""
    body: dict[str, Any] = {
        "apiVersion": "tenantry.dev/v1alpha1",
        "kind": "Organization",
        "metadata": {"name": "acme", "generation": generation},
        "spec": {"environments": ["prod", "dev"]},
    }
    if outcome is not None:
        body["status"] = build_status(outcome, generation if observed is None else observed, None, NOW)
    return body


def failed(reason: str, message: str, *, stalled: bool) -> Outcome:
    outcome = Outcome()
    outcome.fail(reason, message, stalled=stalled)
    return outcome


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in obj["status"]["conditions"] if c["type"] == type_)
    return found


def test_reconciled_is_healthy(lua: Any) -> None:
    assert health(lua, organization(Outcome())) == {
        "status": "Healthy",
        "message": "all objects match the policy",
    }


def test_no_status_yet_is_progressing(lua: Any) -> None:
    assert health(lua, organization(None)) == {"status": "Progressing", "message": "Waiting for the operator"}


def test_status_of_an_older_generation_is_progressing(lua: Any) -> None:
    """Ready=True written for generation 2 says nothing about the spec at generation 3."""
    obj = organization(Outcome(), generation=3, observed=2)
    assert condition(obj, "Ready")["status"] == "True"
    assert health(lua, obj) == {"status": "Progressing", "message": "Waiting for the operator"}
    # ... and the same status, once the operator has seen generation 3, is healthy.
    obj["status"]["observedGeneration"] = 3
    assert health(lua, obj)["status"] == "Healthy"


def test_missing_observed_generation_is_progressing(lua: Any) -> None:
    obj = organization(Outcome())
    del obj["status"]["observedGeneration"]
    assert health(lua, obj)["status"] == "Progressing"


def test_reconciling_is_progressing(lua: Any) -> None:
    waiting = "waiting for a terminating namespace to be gone before re-creating it"
    obj = organization(Outcome(progressing=True, message=waiting))
    assert condition(obj, "Reconciling")["status"] == "True"
    assert condition(obj, "Ready")["status"] == "False"
    assert health(lua, obj) == {"status": "Progressing", "message": waiting}


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("NamespaceConflict", "namespace(s) acme-prod exist without Tenantry's ownership labels"),
        ("InvalidSpec", "spec.environments[0]: environment 'qa' is not defined by policy 'default'"),
        ("PolicyNotFound", "TenancyPolicy 'strict' does not exist; create it or set spec.policy"),
    ],
)
def test_stalled_is_degraded_with_its_message(lua: Any, reason: str, message: str) -> None:
    obj = organization(failed(reason, message, stalled=True))
    stalled = condition(obj, "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", reason)
    assert health(lua, obj) == {"status": "Degraded", "message": message}


def test_apply_failed_is_degraded_though_not_stalled(lua: Any) -> None:
    message = "NetworkPolicy acme-prod/tenantry-default-deny: 403 Forbidden"
    obj = organization(failed("ApplyFailed", message, stalled=False))
    assert condition(obj, "Stalled")["status"] == "False"
    assert condition(obj, "Reconciling")["status"] == "False"
    assert health(lua, obj) == {"status": "Degraded", "message": message}


def test_ready_false_for_another_reason_is_progressing(lua: Any) -> None:
    obj = organization(failed("SomethingNew", "the operator is working on it", stalled=False))
    assert health(lua, obj) == {"status": "Progressing", "message": "the operator is working on it"}


def test_stalled_wins_over_ready(lua: Any) -> None:
    obj = organization(Outcome())
    stalled = condition(obj, "Stalled")
    stalled.update(status="True", reason="NamespaceConflict", message="refused")
    assert health(lua, obj) == {"status": "Degraded", "message": "refused"}


def test_empty_message_falls_back_to_the_reason(lua: Any) -> None:
    obj = organization(failed("PolicyNotFound", "", stalled=True))
    assert health(lua, obj) == {"status": "Degraded", "message": "PolicyNotFound"}


@pytest.mark.parametrize(
    "status",
    [{}, {"observedGeneration": 3}, {"observedGeneration": 3, "conditions": []}],
    ids=["empty", "no-conditions", "empty-conditions"],
)
def test_status_without_conditions_is_progressing(lua: Any, status: dict[str, Any]) -> None:
    obj = organization(None)
    obj["status"] = copy.deepcopy(status)
    assert health(lua, obj)["status"] == "Progressing"


def test_the_argocd_cm_patch_embeds_the_script_verbatim() -> None:
    patch = yaml.safe_load(PATCH.read_text())
    assert (patch["apiVersion"], patch["kind"]) == ("v1", "ConfigMap")
    assert patch["metadata"]["name"] == "argocd-cm"
    assert patch["data"][KEY] == SCRIPT.read_text(), (
        "argocd-cm-patch.yaml is stale: copy health-organization.lua into it"
    )
