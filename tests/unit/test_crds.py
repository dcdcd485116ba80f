"""The CRDs are generated from the models; check they are current, structural, and that the
API server (schema + CEL) would accept the examples and reject what a single object reveals."""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import pytest
import yaml

from tenantry.api.crd import all_crds, organization_crd
from tenantry.api.documents import dump_yaml
from tenantry.api.organization import ALWAYS_RESERVED_PREFIXES, METADATA_ENDPOINTS, reserved_prefix_rule
from tenantry.api.policy import TenancyPolicy
from tenantry.render import checks
from tests.conftest import EXAMPLES, ROOT
from tests.unit.cidr_cel import FUNCTIONS as CIDR_FUNCTIONS
from tests.unit.test_bad_inputs import BASE, CASES

CRD_DIR = ROOT / "crds"


def test_crds_directory_is_up_to_date() -> None:
    for crd in all_crds():
        path = CRD_DIR / f"{crd['metadata']['name']}.yaml"
        assert path.read_text() == dump_yaml([crd]), f"{path} is stale: run `tenantry crds --output-dir crds`"


def _nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from _nodes(schema[key], f"{path}[]")


@pytest.mark.parametrize("crd", all_crds(), ids=lambda c: c["metadata"]["name"])
def test_schemas_are_structural(crd: dict[str, Any]) -> None:
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _nodes(root):
        assert "$ref" not in node and "$defs" not in node, path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), path
        assert "anyOf" not in node or node.get("x-kubernetes-int-or-string"), path
        assert not ("properties" in node and "additionalProperties" in node), path
        assert "uniqueItems" not in node and "propertyNames" not in node and "const" not in node, path


_CEL = celpy.Environment()


def _cel_ok(rule: str, data: Any) -> bool:
    # Kubernetes escapes the CEL keyword `namespace` as `__namespace__`; cel-python does not need to.
    program = _CEL.program(_CEL.compile(rule.replace("__namespace__", "namespace")), functions=CIDR_FUNCTIONS)
    return bool(program.evaluate({"self": celpy.json_to_cel(data)}))


def _cel_failures(schema: dict[str, Any], data: Any) -> list[str]:
    failures = [
        v["message"] for v in schema.get("x-kubernetes-validations", []) if not _cel_ok(v["rule"], data)
    ]
    if isinstance(data, dict):
        props = schema.get("properties")
        for key, value in data.items():
            sub = props.get(key) if props is not None else schema.get("additionalProperties")
            if isinstance(sub, dict):
                failures += _cel_failures(sub, value)
    elif isinstance(data, list) and isinstance(schema.get("items"), dict):
        for item in data:
            failures += _cel_failures(schema["items"], item)
    return failures


def api_server_rejects(doc: dict[str, Any]) -> list[str]:
    """What the API server would say about `doc` given our CRD: schema errors and CEL failures."""
    root = organization_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    errors = [e.message for e in jsonschema.Draft7Validator(root).iter_errors(doc)]
    if not errors:  # CEL runs only on objects that passed the schema
        errors = _cel_failures(root, doc)
    return errors


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("organization-*.yaml")), ids=lambda p: p.name)
def test_api_server_accepts_the_examples(path: Path) -> None:
    assert api_server_rejects(yaml.safe_load(path.read_text())) == []


def test_api_server_accepts_an_organization_without_environments() -> None:
    doc = {"apiVersion": "tenantry.dev/v1alpha1", "kind": "Organization", "metadata": {"name": "acme"}}
    assert api_server_rejects({**doc, "spec": {}}) == []
    assert api_server_rejects({**doc, "spec": {"quota": {"prod": {"pods": 3}}}}) == []


# Cases a single object reveals, which the API server must therefore reject itself; the rest
# need the TenancyPolicy (allowed environments, defaults, approval) and are the operator's job.
REJECTED_AT_API = {
    "uppercase org name",
    "underscore in org name",
    "org name over 63 chars",
    "org-env over 63 chars",
    "uppercase environment",
    "no environments",
    "kube-system via org kube",
    "openshift prefix",
    "negative quantity",
    "malformed quantity",
    "unknown quota resource",
    "quota for unlisted environment",
    "approval without approver",
    "egress without reason",
    "egress with cidr and organization",
    "egress with neither",
    "port out of range",
    "unknown protocol",
    "exception without reason",
    "exception from bad org name",
    "cluster-admin group member",
    "system user member",
    "service account without namespace",
    "namespace on a group",
    "unknown subject kind",
    "bad deletion policy",
    "missing spec",
    "boolean port",
    "string port",
    "fractional port",
    "number for a string",
    "number for a name",
    "exception expiring on a number",
    "fractional pod count",
    "quantity with a space",
    "negative zero",
    "egress to no environment",
    "prefix length out of range",
    "host bits set",
    "except outside cidr",
    "egress to cloud metadata",
    "IPv4-mapped IPv6 cidr",
    "leading zero in a cidr",
    "except of another address family",
    "egress to cloud metadata over NAT64",
    "exception from no environment",
}


@pytest.mark.parametrize("case", [c for c in CASES if c[0] in REJECTED_AT_API], ids=lambda c: c[0])
def test_api_server_rejects_what_one_object_reveals(case: Any) -> None:
    doc = copy.deepcopy(BASE)
    case[1](doc)
    assert api_server_rejects(doc), f"the CRD would admit: {case[0]}"


def test_the_crd_names_exactly_the_metadata_endpoints_rendering_carves_out() -> None:
    # render/checks.py denies them (and their IPv6 spellings) whatever the policy; the CRD's
    # copy leaves out the IPv4-mapped ones, which its CIDR rule refuses as a spelling.
    always = checks.denied_networks(
        TenancyPolicy.model_validate(
            {
                "metadata": {"name": "p"},
                "spec": {
                    "environments": [{"name": "dev", "quota": {"pods": "1"}}],
                    "network": {"deniedEgressCidrs": []},
                },
            }
        )
    )
    mapped = ipaddress.IPv6Network("::ffff:0:0/96")
    expected = {n for n in always if not (n.version == 6 and n.subnet_of(mapped))}
    assert {ipaddress.ip_network(c) for c in METADATA_ENDPOINTS} == expected


def test_every_named_api_case_exists() -> None:
    assert {c[0] for c in CASES} >= REJECTED_AT_API


@pytest.mark.parametrize(
    "prefixes", [ALWAYS_RESERVED_PREFIXES, ("my-app-", "x", "a-b-", "-z")], ids=["reserved", "dashes"]
)
def test_reserved_prefix_rule_means_the_concatenation_it_replaces(prefixes: tuple[str, ...]) -> None:
    """The rule compares the name's parts (cheap); it must mean `<name>-<env>`.startsWith(p)."""
    rule = reserved_prefix_rule(prefixes)
    assert "+" not in rule
    names = {"acme", "a", "kube", "kubes", "openshift", "x"}
    envs = {"prod", "system", "app", "app-x", "b", "c-d"}
    for prefix in prefixes:
        names |= {prefix[:k] for k in range(1, len(prefix) + 1)} | {prefix + "q"}
        envs |= {prefix[k + 1 :] for k, char in enumerate(prefix) if char == "-" and prefix[k + 1 :]}
    names.discard("-")
    for name in sorted(names):
        for env in sorted(envs):
            doc = {"metadata": {"name": name}, "spec": {"environments": ["prod", env]}}
            expected = not any(f"{name}-{e}".startswith(p) for e in ("prod", env) for p in prefixes)
            assert _cel_ok(rule, doc) == expected, (name, env)
