"""Shared building blocks of the API models: strict camelCase models, names, quantities.

Every model forbids unknown fields: a typo such as `enviroments` must be an error the user
sees, not a field the API server silently prunes.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

from tenantry.api.quantity import QuantityError, parse_quantity, quantity_str

DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DNS_LABEL_RE = re.compile(DNS_LABEL_PATTERN)
# Label values: empty, or up to 63 of [A-Za-z0-9_.-] starting and ending alphanumeric.
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"

# Every string, list and map of both CRDs is bounded: the API server costs each CEL rule from
# these bounds (docs/crd-cost.md). String limits are Kubernetes' own
# (k8s.io/apimachinery/pkg/util/validation, k8s.io/apiserver/pkg/storage/names, metav1.Condition).
DNS_LABEL_MAX = 63  # IsDNS1123Label: namespace names, environment and organization names
DNS_SUBDOMAIN_MAX = 253  # IsDNS1123Subdomain: object names, RBAC subject names, API groups
LABEL_VALUE_MAX = 63  # IsValidLabelValue
LABEL_KEY_MAX = 317  # IsQualifiedName: DNS-subdomain prefix (253) + "/" + name (63)
GENERATE_NAME_MAX = 58  # storage/names.MaxGeneratedNameLength: 63 minus 5 random characters
API_VERSION_MAX = 317  # <group: DNS subdomain, 253>/<version: DNS-1035 label, 63>
KIND_MAX = 63  # a CRD's names.kind is validated as a DNS-1035 label (lowercased)
# Quantities have no length limit in Kubernetes; 64 characters is far beyond any real value
# ("1234567890123456789Gi" is 21) and is what the cost estimate assumes.
QUANTITY_MAX_LENGTH = 64
URL_MAX = 2048  # the customary practical URL limit (RFC 9110 recommends at least 8000 octets)

# List and map caps, chosen here (Kubernetes has none for these): generous for a tenant, small
# enough that the nested CEL rules stay far under the API server's budget.
MAX_ENVIRONMENTS = 20
MAX_SUBJECTS = 100  # per tenant role, and per list of platform admins / quota approvers
MAX_LABELS = 64  # labels or a label selector's matchLabels
MAX_CIDRS = 32  # `except` entries, denied egress CIDRs
MAX_PORTS = 32
MAX_NETWORK_RULES = 64  # egress rules, allowFrom exceptions
MAX_NAMES = 64  # reserved names / prefixes, managed-by values, source repos, ingress controllers
MAX_CONDITIONS = 16  # status conditions (7 are written today)


def cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    """One CRD `x-kubernetes-validations` entry; the API server evaluates it at admission."""
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


class Model(BaseModel):
    """Base of every API model: camelCase on the wire, unknown fields rejected, types strict.

    Strict as the API server's schema is: `"yes"` is not a boolean, `true` is not a port,
    `"4"` is not an integer and `4` is not a string. (YAML's own unquoted `yes`/`true` are
    booleans before validation, as kubectl reads them.)
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        str_strip_whitespace=False,
        strict=True,
    )


def _check_dns_label(value: str) -> str:
    if len(value) > DNS_LABEL_MAX:
        raise ValueError(f"must be at most {DNS_LABEL_MAX} characters (got {len(value)})")
    if not _DNS_LABEL_RE.match(value):
        raise ValueError(
            "must be lowercase letters, digits and '-', starting and ending with a letter or digit"
        )
    return value


_DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def _to_date(value: Any) -> dt.date:
    """A JSON date as the CRD's `format: date` takes it: the string YYYY-MM-DD, nothing else.

    (An unquoted YAML 20270630 is a number, not a Unix timestamp to convert; 2027-02-30 is text
    that is not a date.)
    """
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and _DATE_RE.match(value):
        try:
            return dt.date.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"must be a date YYYY-MM-DD (got the string {value!r}: {exc})") from exc
    if isinstance(value, str):
        shown = f"the string {value[:40]!r}"
    elif isinstance(value, int | float) and not isinstance(value, bool):
        shown = f"the number {value}; quote a date"
    else:
        shown = "null" if value is None else type(value).__name__
    raise ValueError(f"must be a date YYYY-MM-DD (got {shown})")


Date = Annotated[dt.date, BeforeValidator(_to_date)]

_LABEL_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _check_label_key(key: str) -> str:
    """A label key as the API server takes it (IsQualifiedName): [prefix/]name."""
    parts = key.split("/")
    name, prefix = parts[-1], parts[0] if len(parts) == 2 else None
    valid = (
        len(parts) <= 2
        and 0 < len(name) <= LABEL_VALUE_MAX
        and _LABEL_NAME_RE.match(name) is not None
        and (
            prefix is None
            or (0 < len(prefix) <= DNS_SUBDOMAIN_MAX and _DNS_SUBDOMAIN_RE.match(prefix) is not None)
        )
    )
    if not valid:
        shown = key if len(key) <= 80 else key[:80] + "..."
        raise ValueError(
            f"label key {shown!r} is not valid: a name of at most {LABEL_VALUE_MAX} letters, digits, "
            "'-', '_' or '.', starting and ending with a letter or digit, optionally after a DNS subdomain "
            "and '/' (such as app.kubernetes.io/name)"
        )
    return key


# Map keys cannot carry a pattern in a structural schema (and a CEL rule over them would be
# costed at the request size, docs/crd-cost.md): the API server checks label keys where the
# labels land (Namespaces, selectors); validate and the operator check them in the policy.
LabelKey = Annotated[str, AfterValidator(_check_label_key)]

LabelValue = Annotated[str, Field(max_length=LABEL_VALUE_MAX, pattern=LABEL_VALUE_PATTERN)]

DNSLabel = Annotated[
    str,
    Field(pattern=DNS_LABEL_PATTERN, max_length=DNS_LABEL_MAX, min_length=1),
    AfterValidator(_check_dns_label),
]


def _to_nonnegative_quantity(value: Any) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValueError("must be a quantity such as 500m, 4, 16Gi")
    if isinstance(value, float):
        # The CRD declares int-or-string: the API server takes 2.0 (an integral number) but
        # refuses 0.5; a fraction must be written as a string.
        if not value.is_integer():
            raise ValueError(
                f"{value!r} is a number with a fraction, which the API server refuses here; "
                f"quote it ('{value!r}') or use a suffix (500m)"
            )
        value = int(value)
    try:
        amount = parse_quantity(value)
    except QuantityError as exc:
        raise ValueError(str(exc)) from exc
    if amount < 0 or (isinstance(value, str) and value.startswith("-")):
        raise ValueError(f"{value!r} is negative; quotas and limits must be zero or more")
    text = quantity_str(value)
    if len(text) > QUANTITY_MAX_LENGTH:
        raise ValueError(f"must be at most {QUANTITY_MAX_LENGTH} characters (got {len(text)})")
    return text


# Non-negative quantity: the CRD pattern has no '-' so the API server rejects negatives too.
NONNEGATIVE_QUANTITY_PATTERN = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

Quantity = Annotated[
    str,
    BeforeValidator(_to_nonnegative_quantity),
    WithJsonSchema(
        {
            # How Kubernetes declares resource.Quantity: pattern and minimum apply to whichever
            # of the two types the value has.
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": NONNEGATIVE_QUANTITY_PATTERN,
            "maxLength": QUANTITY_MAX_LENGTH,
            "minimum": 0,
        }
    ),
]

# The keys a ResourceQuota's spec.hard accepts, exactly as Kubernetes 1.36 validates them
# (pkg/apis/core/validation/validation.go ValidateResourceQuotaResourceName, and
# pkg/apis/core/helper/helpers.go IsStandardQuotaResourceName): a qualified name ([prefix/]name);
# without a "/" it must be one of these standard names or start with hugepages- or
# requests.hugepages-; with a "/" anything qualified: extended resources
# (requests.nvidia.com/gpu), object counts (count/<resource>[.<group>]) and storage-class keys
# (<class>.storageclass.storage.k8s.io/requests.storage, .../persistentvolumeclaims).
STANDARD_QUOTA_RESOURCES: tuple[str, ...] = (
    "requests.cpu",
    "limits.cpu",
    "cpu",
    "requests.memory",
    "limits.memory",
    "memory",
    "requests.storage",
    "requests.ephemeral-storage",
    "limits.ephemeral-storage",
    "ephemeral-storage",
    "persistentvolumeclaims",
    "pods",
    "services",
    "services.loadbalancers",
    "services.nodeports",
    "configmaps",
    "secrets",
    "replicationcontrollers",
    "resourcequotas",
)
QUOTA_PREFIXES: tuple[str, ...] = ("hugepages-", "requests.hugepages-")
# Object counts: Kubernetes' integerResources (helpers.go IsIntegerResourceName).
_INTEGER_RESOURCES = frozenset(
    {
        "pods",
        "resourcequotas",
        "services",
        "replicationcontrollers",
        "secrets",
        "configmaps",
        "persistentvolumeclaims",
        "services.nodeports",
        "services.loadbalancers",
    }
)
# A ResourceQuota of ours holds at most this many keys (bounds the CRD rule's cost).
MAX_QUOTA_RESOURCES = 64
_QUALIFIED_NAME_RE = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)


def _qualified(name: str) -> bool:
    """IsQualifiedName: an optional DNS-subdomain prefix (<= 253) and "/", a name (<= 63)."""
    prefix, _, last = name.rpartition("/")
    return (
        _QUALIFIED_NAME_RE.match(name) is not None
        and len(last) <= LABEL_VALUE_MAX
        and len(prefix) <= DNS_SUBDOMAIN_MAX
    )


def is_quota_resource(name: str) -> bool:
    """Would the API server accept `name` as a key of a ResourceQuota's spec.hard?"""
    if not _qualified(name):
        return False
    return "/" in name or name in STANDARD_QUOTA_RESOURCES or name.startswith(QUOTA_PREFIXES)


def is_integer_resource(name: str) -> bool:
    """Must the quota for `name` be a whole number? Object counts, and what helpers.go's
    IsExtendedResourceName calls extended: a "/" name outside kubernetes.io/ that does not start
    with requests. (count/..., nvidia.com/gpu, <class>.storageclass.storage.k8s.io/...)."""
    if name in _INTEGER_RESOURCES:
        return True
    native = "/" not in name or "kubernetes.io/" in name
    return not native and not name.startswith("requests.") and _qualified("requests." + name)


def quota_order(name: str) -> tuple[int, str]:
    """Standard names in their table order, then every other key alphabetically."""
    if name in STANDARD_QUOTA_RESOURCES:
        return (STANDARD_QUOTA_RESOURCES.index(name), "")
    return (len(STANDARD_QUOTA_RESOURCES), name)


WHOLE_QUANTITY_PATTERN = r"^\+?[0-9]+(([KMGTPE]i)|[kMGTPE]|([eE]\+?[0-9]+))?$"
_WHOLE_QUANTITY_RE = re.compile(WHOLE_QUANTITY_PATTERN)
_ALLOWED_QUOTA_TEXT = (
    "a standard name (" + ", ".join(STANDARD_QUOTA_RESOURCES) + "), hugepages-<size>, "
    "requests.hugepages-<size>, or a qualified name with a '/': requests.<domain>/<name> (extended "
    "resources such as requests.nvidia.com/gpu), count/<resource>[.<group>], "
    "<class>.storageclass.storage.k8s.io/requests.storage or /persistentvolumeclaims"
)


def _check_quota_keys(value: dict[str, str]) -> dict[str, str]:
    unknown = sorted(k for k in value if not is_quota_resource(k))
    if unknown:
        shown = ", ".join(k if len(k) <= 80 else k[:80] + "..." for k in unknown)
        raise ValueError(f"not a quota resource Kubernetes accepts: {shown}; allowed: {_ALLOWED_QUOTA_TEXT}")
    fractional = sorted(k for k in value if is_integer_resource(k) and not _WHOLE_QUANTITY_RE.match(value[k]))
    if fractional:
        shown = ", ".join(f"{k}: {value[k]!r}" for k in fractional)
        raise ValueError(
            f"{shown}: object counts must be whole numbers (such as 10, 1k), and so must every "
            "'/' key not under requests. or kubernetes.io/; the API server refuses a ResourceQuota "
            "with a fraction there"
        )
    return dict(sorted(value.items(), key=lambda kv: quota_order(kv[0])))


_STANDARD_QUOTA_CEL = "[" + ", ".join(f"'{name}'" for name in STANDARD_QUOTA_RESOURCES) + "]"
# The CRD's version of is_quota_resource: a standard name, a hugepages name, or a "/" name; both
# shapes qualified. Map keys cost nothing in the API server's estimate (docs/crd-cost.md), so the
# regex stays cheap; the lengths of the two parts are left to `tenantry validate` and the API
# server's own ResourceQuota validation.
_QUOTA_KEY_RULE = (
    f"self.all(k, k in {_STANDARD_QUOTA_CEL} || "
    "((k.startsWith('hugepages-') || k.startsWith('requests.hugepages-') || k.contains('/')) && "
    "k.matches('" + _QUALIFIED_NAME_RE.pattern.replace("\\", "\\\\") + "')))"
)

ResourceList = Annotated[
    dict[str, Quantity],
    # Before the validator, so that pydantic emits it as maxProperties.
    Field(max_length=MAX_QUOTA_RESOURCES),
    AfterValidator(_check_quota_keys),
    Field(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    _QUOTA_KEY_RULE,
                    "not a quota resource Kubernetes accepts; allowed: " + _ALLOWED_QUOTA_TEXT,
                ),
            ]
        }
    ),
]

# Compute resources of a container (LimitRange defaults): cpu, memory, ephemeral-storage.
CONTAINER_RESOURCES: tuple[str, ...] = ("cpu", "memory", "ephemeral-storage")


def _check_container_keys(value: dict[str, str]) -> dict[str, str]:
    unknown = sorted(set(value) - set(CONTAINER_RESOURCES))
    if unknown:
        raise ValueError(
            f"unknown container resource(s) {', '.join(unknown)}; allowed: {', '.join(CONTAINER_RESOURCES)}"
        )
    return dict(sorted(value.items()))


ContainerResources = Annotated[
    dict[str, Quantity],
    # Before the validator, so that pydantic emits it as maxProperties.
    Field(max_length=len(CONTAINER_RESOURCES)),
    AfterValidator(_check_container_keys),
    Field(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.all(k, k in ['cpu', 'memory', 'ephemeral-storage'])",
                    "allowed container resources: cpu, memory, ephemeral-storage",
                )
            ]
        }
    ),
]


def duplicates(values: Iterable[Any]) -> list[str]:
    """The values that occur more than once, sorted, as text (for "listed twice" messages)."""
    seen: set[Any] = set()
    twice: set[str] = set()
    for value in values:
        if value in seen:
            twice.add(str(value))
        seen.add(value)
    return sorted(twice)
