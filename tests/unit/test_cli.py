"""The `tenantry` CLI: what platform engineers and GitOps pipelines run offline."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tenantry.api.policy import TenancyPolicy, builtin_default_policy
from tenantry.cli import main
from tests.conftest import EXAMPLES, ROOT

ORGS = [str(EXAMPLES / "organization-acme.yaml"), str(EXAMPLES / "organization-beta.yaml")]
GOLDEN = ROOT / "tests" / "golden" / "acme-beta.yaml"


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        code = main(list(argv), out, err)
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def write(tmp_path: Path, name: str, docs: list[dict[str, Any]] | str) -> str:
    path = tmp_path / name
    path.write_text(docs if isinstance(docs, str) else yaml.safe_dump_all(docs))
    return str(path)


def test_render_matches_the_reviewed_golden_output() -> None:
    code, out, err = run("render", "-f", ORGS[0], "-f", ORGS[1], "--today", "2026-11-26")
    assert code == 0, err
    assert out == GOLDEN.read_text(), (
        "render output changed: review, then regenerate tests/golden/acme-beta.yaml"
    )


def test_render_is_byte_for_byte_deterministic() -> None:
    first = run("render", "-f", *ORGS[:1], "--today", "2026-11-26")[1]
    second = run("render", "-f", *ORGS[:1], "--today", "2026-11-26")[1]
    assert first == second and first


def test_every_rendered_object_is_a_valid_kubernetes_object() -> None:
    _, out, _ = run(
        "render", "-f", ORGS[0], "-f", ORGS[1], "--include-cluster-objects", "--today", "2026-11-26"
    )
    objects = list(yaml.safe_load_all(out))
    assert len(objects) > 40
    for obj in objects:
        kubernetes_validate.validate(obj, "1.33", strict=True)


def test_object_identities_are_unique() -> None:
    _, out, _ = run("render", "-f", ORGS[0], "-f", ORGS[1], "--include-cluster-objects")
    keys = [
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in yaml.safe_load_all(out)
    ]
    assert len(keys) == len(set(keys))


def test_namespaces_come_before_the_objects_inside_them() -> None:
    _, out, _ = run("render", "-f", ORGS[0])
    seen: set[str] = set()
    for obj in yaml.safe_load_all(out):
        if obj["kind"] == "Namespace":
            seen.add(obj["metadata"]["name"])
        elif "namespace" in obj["metadata"]:
            assert obj["metadata"]["namespace"] in seen


def test_render_with_an_explicit_policy_file(tmp_path: Path) -> None:
    policy = {
        "apiVersion": "tenantry.dev/v1alpha1",
        "kind": "TenancyPolicy",
        "metadata": {"name": "small"},
        "spec": {"environments": [{"name": "prod", "quota": {"pods": 3}}]},
    }
    org = {
        "apiVersion": "tenantry.dev/v1alpha1",
        "kind": "Organization",
        "metadata": {"name": "tiny"},
        "spec": {"policy": "small", "environments": ["prod"]},
    }
    code, out, err = run(
        "render", "-f", write(tmp_path, "o.yaml", [org]), "--policy", write(tmp_path, "p.yaml", [policy])
    )
    assert code == 0, err
    quota = next(o for o in yaml.safe_load_all(out) if o["kind"] == "ResourceQuota")
    assert quota["spec"]["hard"] == {"pods": "3"}


def test_render_refuses_an_unknown_policy_naming_it(tmp_path: Path) -> None:
    org = {
        "apiVersion": "tenantry.dev/v1alpha1",
        "kind": "Organization",
        "metadata": {"name": "tiny"},
        "spec": {"policy": "gold", "environments": ["prod"]},
    }
    code, out, err = run("render", "-f", write(tmp_path, "o.yaml", [org]))
    assert code == 1 and out == ""
    assert "Organization/tiny: spec.policy: TenancyPolicy 'gold' was not given" in err


def test_validate_accepts_the_examples() -> None:
    code, out, err = run(
        "validate", "-f", *ORGS[:1], "-f", ORGS[1], "-f", str(EXAMPLES / "policy-default.yaml")
    )
    assert code == 0, err
    assert "valid: 2 Organization(s), 1 TenancyPolicy(ies)" in out


def test_validate_names_file_object_field_and_what_is_allowed(tmp_path: Path) -> None:
    bad = {
        "apiVersion": "tenantry.dev/v1alpha1",
        "kind": "Organization",
        "metadata": {"name": "acme"},
        "spec": {"environments": ["prod", "qa"]},
    }
    path = write(tmp_path, "acme.yaml", [bad])
    code, _, err = run("validate", "-f", path)
    assert code == 1
    assert (
        f"{path}: Organization/acme: spec.environments[1]: 'qa' is not an environment of policy 'default' "
        "(allowed: prod, staging, dev)"
    ) in err
    assert "invalid: 1 error(s)" in err


def test_validate_reports_problems_in_every_file_and_document(tmp_path: Path) -> None:
    good = {
        "apiVersion": "tenantry.dev/v1alpha1",
        "kind": "Organization",
        "metadata": {"name": "ok"},
        "spec": {"environments": ["prod"]},
    }
    a = write(
        tmp_path, "a.yaml", [good, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}]
    )
    b = write(tmp_path, "b.yaml", "spec: [unclosed\n")
    code, _, err = run("validate", "-f", a, "-f", b)
    assert code == 1
    assert f"{a}: ConfigMap/x: kind: 'ConfigMap' is not one of Organization, TenancyPolicy" in err
    assert f"{b}: line 1, column 7" in err or f"{b}: line 2" in err


def test_validate_warns_about_a_one_sided_cross_tenant_exception(tmp_path: Path) -> None:
    acme = yaml.safe_load(Path(ORGS[0]).read_text())
    beta = yaml.safe_load(Path(ORGS[1]).read_text())
    beta["spec"]["network"]["egress"] = []
    code, _, err = run("validate", "-f", write(tmp_path, "x.yaml", [acme, beta]), "--today", "2026-11-26")
    assert code == 0  # a warning, not an error: beta may add its side later
    lines = [line for line in err.splitlines() if "warning" in line]
    assert len(lines) == 1
    assert (
        "Organization/acme: warning: spec.network.allowFrom[0]: 'beta' declares no egress to 'acme'"
        in lines[0]
    )


def test_validate_rejects_a_bad_policy(tmp_path: Path) -> None:
    negative = {
        "apiVersion": "tenantry.dev/v1alpha1",
        "kind": "TenancyPolicy",
        "metadata": {"name": "p"},
        "spec": {"environments": [{"name": "prod", "quota": {"pods": "-3"}}]},
    }
    manager = {
        "apiVersion": "tenantry.dev/v1alpha1",
        "kind": "TenancyPolicy",
        "metadata": {"name": "q"},
        "spec": {"managedBy": {"default": "helm", "allowed": ["argocd"]}},
    }
    code, _, err = run("validate", "-f", write(tmp_path, "p.yaml", [negative, manager]))
    assert code == 1
    assert "TenancyPolicy/p: spec.environments[0].quota.pods: '-3' is negative" in err
    assert "TenancyPolicy/q: spec: managedBy.default 'helm' must be one of managedBy.allowed" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["render"],
        ["frobnicate"],
        ["validate", "-f", "/nonexistent/file.yaml"],
        ["render", "-f", "x", "--today", "soon"],
    ],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    assert run(*argv)[0] == 2


def test_crds_command_prints_both_crds() -> None:
    code, out, _ = run("crds")
    assert code == 0
    assert [d["metadata"]["name"] for d in yaml.safe_load_all(out)] == [
        "organizations.tenantry.dev",
        "tenancypolicies.tenantry.dev",
    ]


def test_python_dash_m_and_console_script_work() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tenantry", "validate", "-f", ORGS[0]],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_default_policy_example_is_the_embedded_default() -> None:
    example = TenancyPolicy.model_validate(yaml.safe_load((EXAMPLES / "policy-default.yaml").read_text()))
    assert example == builtin_default_policy()


@pytest.mark.parametrize("flag", ["--workers", "--applies-in-flight"])
@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_run_refuses_counts_that_would_never_do_anything(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = run("run", flag, value)
    assert code == 2
    assert f"argument {flag}:" in capsys.readouterr().err
