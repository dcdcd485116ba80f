"""The image and the install manifests: what a platform team applies must be safe as shipped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from tenantry.api.documents import dump_yaml
from tenantry.api.organization import Organization
from tenantry.api.policy import builtin_default_policy
from tenantry.render import render_organization, render_shared_cluster_roles
from tenantry.render.rbac import SHARED_ROLES
from tests.conftest import ROOT, TODAY

MANIFESTS = ROOT / "manifests"


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_dockerfile_is_multistage_non_root_pinned_and_runs_the_operator() -> None:
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    froms = [i["value"] for i in parser.structure if i["instruction"] == "FROM"]
    assert len(froms) >= 2, "multi-stage build"
    for image in froms:
        ref = image.split()[0]
        assert ":" in ref and not ref.endswith(":latest"), f"unpinned base image {ref}"
    final = parser.structure[max(i for i, s in enumerate(parser.structure) if s["instruction"] == "FROM") :]
    users = [s["value"] for s in final if s["instruction"] == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "the runtime stage runs as non-root"
    entry = [s["value"] for s in final if s["instruction"] == "ENTRYPOINT"]
    assert entry and yaml.safe_load(entry[-1]) == ["tenantry", "run"]


def test_every_file_the_dockerfile_copies_exists() -> None:
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    copies = [s["value"].split() for s in parser.structure if s["instruction"] == "COPY"]
    local = [args for args in copies if not any(a.startswith("--from") for a in args)]
    assert local
    for args in local:
        for source in args[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"


def _kustomization_resources(directory: Path) -> list[Path]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return [directory / r for r in kustomization.get("resources", [])]


@pytest.mark.parametrize(
    "directory", [MANIFESTS / "base", MANIFESTS / "overlays" / "example", ROOT / "crds"], ids=lambda p: p.name
)
def test_kustomizations_reference_only_existing_files(directory: Path) -> None:
    for resource in _kustomization_resources(directory):
        assert resource.exists(), f"{directory}: {resource} does not exist"
        if resource.is_dir():
            assert (resource / "kustomization.yaml").exists(), f"{resource} is not a kustomization"


def test_shipped_tenant_roles_are_the_renderers() -> None:
    assert (MANIFESTS / "base" / "tenant-roles.yaml").read_text() == dump_yaml(render_shared_cluster_roles())


def _operator_role() -> dict[str, Any]:
    (role,) = [d for d in docs(MANIFESTS / "base" / "operator-rbac.yaml") if d["kind"] == "ClusterRole"]
    return role


def test_operator_role_has_no_wildcards_escalation_or_secrets() -> None:
    for rule in _operator_role()["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
        assert not {"escalate", "impersonate"} & set(rule["verbs"]), rule
        assert "secrets" not in rule["resources"], rule


def test_operator_binds_tenant_roles_only_by_name() -> None:
    bind_rules = [r for r in _operator_role()["rules"] if "bind" in r["verbs"]]
    assert len(bind_rules) == 1
    assert bind_rules[0]["verbs"] == ["bind"]
    assert sorted(bind_rules[0]["resourceNames"]) == sorted(SHARED_ROLES)


def test_nothing_grants_cluster_admin() -> None:
    for path in MANIFESTS.rglob("*.yaml"):
        for doc in docs(path):
            if doc.get("kind") in ("ClusterRoleBinding", "RoleBinding"):
                assert doc["roleRef"]["name"] not in ("cluster-admin", "admin", "edit"), path


def test_deployment_runs_restricted_with_probes_and_resources() -> None:
    (deploy,) = [d for d in docs(MANIFESTS / "base" / "deployment.yaml") if d["kind"] == "Deployment"]
    pod = deploy["spec"]["template"]["spec"]
    assert deploy["spec"]["replicas"] >= 2, "a hot standby"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert pod["serviceAccountName"] == "tenantry"


def test_pod_disruption_budget_and_metrics_service_select_the_operator() -> None:
    (deploy,) = docs(MANIFESTS / "base" / "deployment.yaml")
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    (pdb,) = docs(MANIFESTS / "base" / "pdb.yaml")
    (svc,) = docs(MANIFESTS / "base" / "service.yaml")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert svc["spec"]["selector"].items() <= labels.items()
    assert svc["spec"]["ports"][0]["name"] == "metrics"


def _grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (verb, group, resource)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        if not rule.get("resourceNames")  # a rule limited by name covers only those names
    }


def test_operator_may_create_every_role_it_renders_without_escalate() -> None:
    """RBAC escalation prevention: creating a (Cluster)Role needs every permission in it."""
    held = _grants(_operator_role()["rules"])
    examples = [
        yaml.safe_load(p.read_text()) for p in sorted((ROOT / "examples").glob("organization-*.yaml"))
    ]
    roles = [
        obj
        for doc in examples
        for obj in render_organization(
            Organization.model_validate(doc), builtin_default_policy(), TODAY
        ).objects
        if obj["kind"] in ("Role", "ClusterRole")
    ]
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        assert (verb, group, resource) in held, (
                            f"{role['metadata']['name']} grants {verb} {group}/{resource}, "
                            "not held by the operator (the API server would refuse to create it)"
                        )


def test_operator_may_bind_every_role_its_bindings_reference() -> None:
    """Binding a role needs `bind` on it, or every permission in it."""
    bindable = {
        n for r in _operator_role()["rules"] if "bind" in r["verbs"] for n in r.get("resourceNames", [])
    }
    examples = [
        yaml.safe_load(p.read_text()) for p in sorted((ROOT / "examples").glob("organization-*.yaml"))
    ]
    for doc in examples:
        org = Organization.model_validate(doc)
        for obj in render_organization(org, builtin_default_policy(), TODAY).objects:
            if obj["kind"] in ("RoleBinding", "ClusterRoleBinding"):
                ref = obj["roleRef"]["name"]
                assert ref in bindable or ref == f"tenantry:member:{org.name}", ref
