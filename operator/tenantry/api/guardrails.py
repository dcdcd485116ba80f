"""Guardrails the API server enforces in tenant namespaces (manifests/admission/guardrail-*.yaml).

A TenancyPolicy sets them policy-wide (`spec.guardrails`) and per environment
(`spec.environments[].guardrails`, each field replacing the policy-wide one); an Organization may
narrow them (`spec.guardrails`). The renderer turns the result into one ConfigMap per tenant
namespace, the parameter of the admission policies (render/guardrails.py, docs/admission.md).

Every value lands in that ConfigMap as a comma-separated list, so none may contain a comma: the
patterns below make sure of it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from tenantry.api.base import (
    DNS_SUBDOMAIN_MAX,
    LABEL_KEY_MAX,
    MAX_LABELS,
    MAX_NAMES,
    LabelKey,
    LabelValue,
    Model,
)

MAX_TOLERATIONS = 16
REGISTRY_MAX = 255

# IngressClass, GatewayClass, StorageClass, PriorityClass and RuntimeClass names are DNS subdomains.
ClassName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=DNS_SUBDOMAIN_MAX,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    ),
]
# An image prefix: a registry host (with an optional port), optionally a repository path, always
# ending in "/" so that `ghcr.io/acme/` never admits `ghcr.io/acme-evil/...`.
Registry = Annotated[
    str,
    Field(min_length=2, max_length=REGISTRY_MAX, pattern=r"^[a-z0-9][-a-z0-9._:]*(/[-a-z0-9._]+)*/$"),
]
# A label or annotation key, or a prefix ending in "/" (every key under it).
DeniedKey = Annotated[
    str,
    Field(
        min_length=2,
        max_length=LABEL_KEY_MAX,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$",
    ),
]


def _unique(value: list[str]) -> list[str]:
    dupes = sorted({v for v in value if value.count(v) > 1})
    if dupes:
        raise ValueError(f"listed twice: {', '.join(dupes)}")
    return value


def _names(description: str | None = None) -> Any:
    return Field(
        default=None,
        max_length=MAX_NAMES,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description=description,
    )


ClassList = Annotated[list[ClassName], AfterValidator(_unique)]
RegistryList = Annotated[list[Registry], AfterValidator(_unique)]


class Toleration(Model):
    """A toleration the placement guardrail adds to every pod (no tolerationSeconds)."""

    key: LabelKey = Field(max_length=LABEL_KEY_MAX)
    operator: Literal["Equal", "Exists"] = "Equal"
    value: LabelValue | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None

    @model_validator(mode="after")
    def _check(self) -> Toleration:
        if self.operator == "Exists" and self.value:
            raise ValueError("a toleration with operator Exists takes no value")
        if self.operator == "Equal" and self.value is None:
            raise ValueError("a toleration with operator Equal needs a value (or use operator Exists)")
        return self


class NodePlacement(Model):
    """Where the pods of a tenant namespace run: a node pool, by node labels and taints."""

    node_selector: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=MAX_LABELS)
    tolerations: list[Toleration] = Field(default_factory=list, max_length=MAX_TOLERATIONS)


class Guardrails(Model):
    """What tenants may use. A list left out allows anything; an empty list allows nothing."""

    ingress_classes: ClassList | None = _names(
        description="IngressClasses a tenant Ingress may name (spec.ingressClassName or the "
        "kubernetes.io/ingress.class annotation). Left out: any."
    )
    gateway_classes: ClassList | None = _names(description="GatewayClasses a tenant Gateway may name.")
    storage_classes: ClassList | None = _names(
        description="StorageClasses a tenant PersistentVolumeClaim may use; a claim without a class "
        "gets the cluster default, which must be listed too."
    )
    priority_classes: ClassList | None = _names(description="PriorityClasses a tenant pod may name.")
    runtime_classes: ClassList | None = _names(description="RuntimeClasses a tenant pod may name.")
    registries: RegistryList | None = _names(
        description="Image prefixes (ending in /) every container, init container and ephemeral "
        "container image must start with, as written (nginx is not docker.io/library/nginx)."
    )
    node_ports: bool | None = Field(default=None, description="Services of type NodePort allowed.")
    load_balancers: bool | None = Field(default=None, description="Services of type LoadBalancer allowed.")
    denied_label_keys: Annotated[list[DeniedKey], AfterValidator(_unique)] | None = _names(
        description="Label and annotation keys tenants may not set (a key ending in / is a prefix); "
        "tenantry.dev/ is always denied."
    )
    placement: NodePlacement | None = None
    always_pull_images: bool | None = Field(
        default=None,
        description="Every container of a tenant pod pulls its image (imagePullPolicy: Always), so "
        "an image another tenant pulled onto a shared node is not reused without credentials. "
        "Left out: true.",
    )


class OrganizationGuardrails(Model):
    """An Organization's narrowing of its policy's guardrails, for all its environments. A class or
    registry outside the policy's list, or a toleration, widens it: that needs spec.quotaApproval,
    like a quota raise."""

    ingress_classes: ClassList | None = _names()
    gateway_classes: ClassList | None = _names()
    storage_classes: ClassList | None = _names()
    priority_classes: ClassList | None = _names()
    runtime_classes: ClassList | None = _names()
    registries: RegistryList | None = _names()
    placement: NodePlacement | None = None


CLASS_FIELDS: tuple[str, ...] = (
    "ingress_classes",
    "gateway_classes",
    "storage_classes",
    "priority_classes",
    "runtime_classes",
    "registries",
)
