"""CustomResourceDefinitions generated from the pydantic models, so the two cannot disagree.

`crds/*.yaml` is this module's output (`tenantry crds`); a test fails when it is stale.
Pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3 schema: no
`$ref`, no `anyOf` for optional fields, no `propertyNames`, no `uniqueItems`, no `const`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from tenantry import GROUP, VERSION
from tenantry.api.base import API_VERSION_MAX, KIND_MAX
from tenantry.api.organization import ORGANIZATION_CEL, ObjectMeta, OrganizationSpec
from tenantry.api.policy import TenancyPolicySpec
from tenantry.api.status import OrganizationStatus, TenancyPolicyStatus

_KEEP = {
    "type",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "format",
    "description",
    "default",
    "anyOf",
    "nullable",
}


def _structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "allOf" in schema and len(schema["allOf"]) == 1:
        merged = {**schema["allOf"][0], **{k: v for k, v in schema.items() if k != "allOf"}}
        return _structural(merged, defs)
    if "anyOf" in schema and not schema.get("x-kubernetes-int-or-string"):
        branches = [b for b in schema["anyOf"] if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"cannot express union in a structural schema: {schema}")
        merged = {**branches[0], **{k: v for k, v in schema.items() if k != "anyOf"}}
        if merged.get("default", ...) is None:
            del merged["default"]
        return _structural(merged, defs)
    if "patternProperties" in schema:
        # dict[DNSLabel, X]: key patterns cannot be expressed structurally; CEL rules check keys.
        (value_schema,) = schema["patternProperties"].values()
        rest = {k: v for k, v in schema.items() if k != "patternProperties"}
        return _structural({**rest, "additionalProperties": value_schema}, defs)
    if "const" in schema:
        schema = {**schema, "enum": [schema["const"]]}
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-"):
            out[key] = value
        elif key not in _KEEP:
            continue
        elif key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _structural(value, defs)
        elif key == "anyOf":
            out[key] = [{k: v for k, v in b.items() if k == "type"} for b in value]
        else:
            out[key] = value
    if isinstance(out.get("additionalProperties"), bool):
        # Structural schemas forbid `additionalProperties` beside `properties`; unknown fields
        # are pruned by the API server and rejected by kubectl's strict field validation.
        del out["additionalProperties"]
    if "default" in out and out["default"] in ({}, []):
        # Empty defaults add noise to every stored object; omitted means the same here.
        del out["default"]
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural schema of one pydantic model (camelCase, defaults, CEL rules)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _structural(raw, raw.get("$defs", {}))


def metadata_schema() -> dict[str, Any]:
    """`metadata` at the root: a CRD may restrict only `name` and `generateName`.

    Both must be declared, or the API server's CEL environment replaces them with unbounded
    strings and every root rule reading `self.metadata.name` is costed at 3 MB.
    """
    meta = model_schema(ObjectMeta)
    return {
        "type": "object",
        "properties": {name: meta["properties"][name] for name in ("name", "generateName")},
    }


def _crd(
    kind: str,
    plural: str,
    short: str,
    spec_model: type[BaseModel],
    status_model: type[BaseModel],
    columns: list[dict[str, Any]],
    root_rules: list[Any],
    spec_required: bool,
) -> dict[str, Any]:
    status = model_schema(status_model)
    # Kopf may keep bookkeeping under status.kopf; declare it so the API server keeps it.
    status["properties"]["kopf"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    root: dict[str, Any] = {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string", "maxLength": API_VERSION_MAX},
            "kind": {"type": "string", "maxLength": KIND_MAX},
            "metadata": metadata_schema(),
            "spec": model_schema(spec_model),
            "status": status,
        },
    }
    if spec_required:
        root["required"] = ["spec"]
    if root_rules:
        root["x-kubernetes-validations"] = root_rules
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}", "labels": {"app.kubernetes.io/part-of": "tenantry"}},
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": ["tenantry"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def _condition_column(name: str, condition: str, field: str = "status") -> dict[str, Any]:
    return {
        "name": name,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{condition}")].{field}',
    }


AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def organization_crd() -> dict[str, Any]:
    return _crd(
        "Organization",
        "organizations",
        "org",
        OrganizationSpec,
        OrganizationStatus,
        [
            {"name": "Environments", "type": "string", "jsonPath": ".spec.environments"},
            {"name": "Policy", "type": "string", "jsonPath": ".spec.policy"},
            _condition_column("Ready", "Ready"),
            _condition_column("Reason", "Ready", "reason"),
            # The busiest pooled resource, "requests.cpu 83%" (empty without a pool).
            {"name": "Pool", "type": "string", "jsonPath": ".status.quotaPool.use"},
            AGE,
        ],
        ORGANIZATION_CEL,
        spec_required=True,
    )


def tenancy_policy_crd() -> dict[str, Any]:
    return _crd(
        "TenancyPolicy",
        "tenancypolicies",
        "tpol",
        TenancyPolicySpec,
        TenancyPolicyStatus,
        [
            {"name": "Organizations", "type": "integer", "jsonPath": ".status.organizations"},
            _condition_column("Ready", "Ready"),
            AGE,
        ],
        [],
        spec_required=False,
    )


def all_crds() -> list[dict[str, Any]]:
    return [organization_crd(), tenancy_policy_crd()]
