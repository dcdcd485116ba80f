"""Models that both Organization and TenancyPolicy use: RBAC subjects and network ports."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from tenantry.api.base import DNS_SUBDOMAIN_MAX, DNSLabel, Model, cel

# Subjects that would hand a tenant cluster-wide power. `system:` groups and users are the
# API server's own identities (system:masters is cluster-admin; system:authenticated is everyone).
FORBIDDEN_SUBJECT_PREFIX = "system:"


class Subject(Model):
    """Who gets a role: a User, a Group, or a ServiceAccount (which needs its namespace)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.kind != 'ServiceAccount' || has(self.__namespace__)",
                    "namespace is required when kind is ServiceAccount",
                ),
                cel(
                    "self.kind == 'ServiceAccount' || !has(self.__namespace__)",
                    "namespace is only allowed when kind is ServiceAccount",
                ),
                cel(
                    f"!self.name.startsWith('{FORBIDDEN_SUBJECT_PREFIX}')",
                    "names starting with 'system:' are Kubernetes' own identities "
                    "(system:masters is cluster-admin) and cannot be tenant members",
                ),
            ]
        }
    )

    kind: Literal["User", "Group", "ServiceAccount"]
    name: str = Field(min_length=1, max_length=DNS_SUBDOMAIN_MAX)
    namespace: DNSLabel | None = None

    @model_validator(mode="after")
    def _check(self) -> Subject:
        if self.kind == "ServiceAccount" and not self.namespace:
            raise ValueError("namespace is required when kind is ServiceAccount")
        if self.kind != "ServiceAccount" and self.namespace:
            raise ValueError("namespace is only allowed when kind is ServiceAccount")
        if self.name.startswith(FORBIDDEN_SUBJECT_PREFIX):
            raise ValueError(
                f"{self.name!r}: names starting with 'system:' are Kubernetes' own identities "
                "(system:masters is cluster-admin) and cannot be tenant members"
            )
        return self

    def as_rbac(self) -> dict[str, str]:
        """The RBAC `subjects[]` entry for this subject."""
        if self.kind == "ServiceAccount":
            assert self.namespace is not None  # enforced by the validator above
            return {"kind": "ServiceAccount", "name": self.name, "namespace": self.namespace}
        return {"kind": self.kind, "apiGroup": "rbac.authorization.k8s.io", "name": self.name}


class Port(Model):
    """A port (or port range with `endPort`) and protocol that a network rule opens."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("!has(self.endPort) || self.endPort >= self.port", "endPort must be >= port"),
            ]
        }
    )

    port: int = Field(ge=1, le=65535)
    end_port: int | None = Field(default=None, ge=1, le=65535)
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"

    @model_validator(mode="after")
    def _check(self) -> Port:
        if self.end_port is not None and self.end_port < self.port:
            raise ValueError(f"endPort {self.end_port} must be >= port {self.port}")
        return self

    def as_k8s(self) -> dict[str, object]:
        out: dict[str, object] = {"protocol": self.protocol, "port": self.port}
        if self.end_port is not None:
            out["endPort"] = self.end_port
        return out
