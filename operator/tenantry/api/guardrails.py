"""Guardrails the API server enforces in tenant namespaces (manifests/admission/guardrail-*.yaml).

A TenancyPolicy sets them policy-wide (`spec.guardrails`) and per environment
(`spec.environments[].guardrails`, each field replacing the policy-wide one); an Organization may
narrow them (`spec.guardrails`). The renderer turns the result into one ConfigMap per tenant
namespace, the parameter of the admission policies (render/guardrails.py, docs/admission.md).

Every value lands in that ConfigMap as a comma-separated list, so none may contain a comma: the
patterns below make sure of it.
"""

from __future__ import annotations

import re
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
PLACEHOLDERS = ("{organization}", "{environment}")

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


# A DNS label in which `{organization}` and `{environment}` may stand for (parts of) the label.
_TEMPLATE_CHAR = r"(\{organization\}|\{environment\}|[a-z0-9])"
_TEMPLATE_LABEL = rf"{_TEMPLATE_CHAR}((\{{organization\}}|\{{environment\}}|[-a-z0-9])*{_TEMPLATE_CHAR})?"
_TEMPLATE_NAME = rf"{_TEMPLATE_LABEL}(\.{_TEMPLATE_LABEL})*"
_DNS_NAME = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"

# A host pattern of the policy: a DNS name, or `*.` and a DNS name (every name under it), with
# placeholders filled in per namespace (`*.{organization}.apps.example.com`); `*` alone: any host.
HostPattern = Annotated[
    str,
    Field(min_length=1, max_length=DNS_SUBDOMAIN_MAX, pattern=rf"^(\*|(\*\.)?{_TEMPLATE_NAME})$"),
]
# A host an Organization lists: a DNS name, or `*.` and a DNS name.
Host = Annotated[str, Field(min_length=1, max_length=DNS_SUBDOMAIN_MAX, pattern=rf"^(\*\.)?{_DNS_NAME}$")]
# A PersistentVolume name (a DNS subdomain), with placeholders, optionally ending in `*` (a prefix).
VolumePattern = Annotated[
    str, Field(min_length=1, max_length=DNS_SUBDOMAIN_MAX, pattern=rf"^{_TEMPLATE_NAME}[-.]?\*?$")
]
# An annotation key, a prefix ending in "/", or a suffix starting with "*" (`*-snippet`).
AnnotationPattern = Annotated[
    str,
    Field(min_length=2, max_length=LABEL_KEY_MAX, pattern=r"^(\*[-A-Za-z0-9_./]+|[-A-Za-z0-9_./]+)$"),
]

# Names that are never a valid ExternalName target, whatever a policy lists: IP addresses spelled
# as a name (`169.254.169.254` passes Kubernetes' DNS-name validation) and the cluster's own
# Service names, which lead into other tenants' namespaces.
_IPV4_LIKE = re.compile(r"^[0-9.]+$")
CLUSTER_SUFFIXES: tuple[str, ...] = (".svc", ".cluster.local")


def external_name_refusal(name: str) -> str | None:
    """Why `name` can never be an allowed ExternalName target, or None."""
    bare = name.removeprefix("*.").rstrip(".")
    if _IPV4_LIKE.match(bare):
        return "is an IP address; ExternalName targets are DNS names outside the cluster"
    if (
        bare in ("svc", "cluster.local", "localhost")
        or bare.endswith((*CLUSTER_SUFFIXES, ".localhost"))
        or (".svc." in bare)
    ):
        return "is a cluster-internal name (*.svc, *.cluster.local): it would lead into other namespaces"
    if "." not in bare:
        return (
            "is a single label, which a pod's DNS search path resolves as a Service of the cluster; "
            "list a fully qualified name"
        )
    return None


def _external_names(value: list[str]) -> list[str]:
    for entry in value:
        why = external_name_refusal(entry)
        if why:
            raise ValueError(f"{entry!r} {why}")
    return value


ExternalName = Annotated[
    str, Field(min_length=1, max_length=DNS_SUBDOMAIN_MAX, pattern=rf"^(\*\.)?{_DNS_NAME}$")
]

# Ingress annotations known to let a tenant reconfigure a shared ingress controller or read
# another namespace's Secrets. `*-snippet` (configuration, server, auth, stream, modsecurity
# snippets: CVE-2021-25742, CVE-2023-5044) is always refused; the rest is the default of
# spec.guardrails.deniedIngressAnnotations: Secrets named `namespace/name` (auth-tls-secret,
# proxy-ssl-secret, auth-secret) and the IngressNightmare injection paths (CVE-2025-1097,
# CVE-2025-1098, CVE-2025-24514).
ALWAYS_DENIED_INGRESS_ANNOTATIONS: tuple[str, ...] = ("*-snippet",)
DEFAULT_DENIED_INGRESS_ANNOTATIONS: tuple[str, ...] = (
    "nginx.ingress.kubernetes.io/auth-secret",
    "nginx.ingress.kubernetes.io/auth-tls-secret",
    "nginx.ingress.kubernetes.io/proxy-ssl-secret",
    "nginx.ingress.kubernetes.io/auth-tls-match-cn",
    "nginx.ingress.kubernetes.io/auth-url",
    "nginx.ingress.kubernetes.io/mirror-target",
    "nginx.ingress.kubernetes.io/mirror-host",
)
# The built-in default policy's hosts: each Organization gets the names under its own subdomain
# of the platform's apps domain (replace example.com with yours).
DEFAULT_HOSTS: tuple[str, ...] = ("*.{organization}.apps.example.com",)


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
    hosts: Annotated[list[HostPattern], AfterValidator(_unique)] | None = _names(
        description="Hostnames an Ingress or a Gateway API route (spec.hostnames) may use: a name, "
        "`*.` and a name (every name under it), with {organization} and {environment} filled in per "
        "namespace; `*` any host. Left out: none (every host, host-less rule and defaultBackend refused)."
    )
    external_names: (
        Annotated[list[ExternalName], AfterValidator(_unique), AfterValidator(_external_names)] | None
    ) = _names(
        description="Targets a Service of type ExternalName may name (a name, or `*.` and a name). "
        "Never IP addresses or cluster-internal names. Left out: none (ExternalName refused)."
    )
    persistent_volumes: Annotated[list[VolumePattern], AfterValidator(_unique)] | None = _names(
        description="PersistentVolumes a claim may name in spec.volumeName (a name, or a prefix ending "
        "in *, with {organization} and {environment}). Left out: none. A PV pre-bound by the "
        "platform (spec.claimRef) needs no volumeName."
    )
    denied_ingress_annotations: Annotated[list[AnnotationPattern], AfterValidator(_unique)] | None = _names(
        description="Ingress annotation keys tenants may not set (a key, a prefix ending in /, or a "
        "suffix starting with *). *-snippet is always refused. Left out: the built-in list of "
        "ingress-nginx annotations that read other namespaces' Secrets or inject configuration."
    )
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
    # Replaces the policy's hosts; a host outside them widens the policy (needs quotaApproval), and
    # a host inside another Organization's share of the policy's hosts is always refused.
    hosts: Annotated[list[Host], AfterValidator(_unique)] | None = _names(
        description="The hostnames this Organization's Ingresses and routes may use (replaces the "
        "policy's hosts; a host outside them needs spec.quotaApproval)."
    )


CLASS_FIELDS: tuple[str, ...] = (
    "ingress_classes",
    "gateway_classes",
    "storage_classes",
    "priority_classes",
    "runtime_classes",
    "registries",
)
