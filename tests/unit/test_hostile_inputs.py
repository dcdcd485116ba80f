"""Input that once crashed, hung or was wrongly accepted: one test per class of the bug report.

`tenantry validate` and `render` are the gate CI and GitOps reviews trust, so each class must
end in exit 0, 1 or 2 with a message naming where and what is allowed, never a traceback.
"""

from __future__ import annotations

import datetime as dt
import io
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tenantry.api.documents import MAX_INPUT_BYTES, parse_documents, parse_object
from tenantry.api.loader import MAX_DEPTH, load_stream
from tenantry.api.organization import Organization
from tenantry.api.policy import builtin_default_policy
from tenantry.cli import main
from tenantry.render import render_organization

ORG = """\
apiVersion: tenantry.dev/v1alpha1
kind: Organization
metadata:
  name: acme
spec:
  environments: [prod, dev]
"""


def run(*argv: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old = sys.stdin
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    try:
        code = main(list(argv), out, err)
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.stdin = old
    return code, out.getvalue(), err.getvalue()


def write(tmp_path: Path, text: str | bytes, name: str = "in.yaml") -> str:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def both(tmp_path: Path, text: str | bytes) -> list[tuple[int, str, str]]:
    """validate and render of the same input."""
    path = write(tmp_path, text)
    return [run("validate", "-f", path, "--today", "2026-11-26"), run("render", "-f", path)]


def org(spec: str) -> str:
    return ORG.replace("  environments: [prod, dev]\n", spec)


# -- crashes and hangs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        org(
            "  environments: [prod]\n  network:\n    allowFrom:\n    - {organization: beta, reason: r, "
            "expires: 2027-02-30}\n"
        ),
        org("  displayName: 2027-13-45\n  environments: [prod]\n"),
        ORG + "extra: 2027-02-30\n",
    ],
    ids=["expires", "displayName", "ignored-field"],
)
def test_an_impossible_unquoted_date_is_text_not_a_crash(tmp_path: Path, text: str) -> None:
    for code, _, err in both(tmp_path, text):
        assert code in (0, 1), err
        assert "Traceback" not in err
        if "expires" in text:
            assert "spec.network.allowFrom[0].expires: must be a date YYYY-MM-DD" in err


def test_display_name_that_looks_like_a_date_is_kept_as_written(tmp_path: Path) -> None:
    docs = parse_documents(org("  displayName: 2027-13-45\n  environments: [prod]\n"), "x")
    assert docs.problems == []
    assert docs.organizations[0][1].spec.display_name == "2027-13-45"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (ORG.replace("acme", "acm\xe9").encode("latin-1"), "is not UTF-8 text (byte 0xe9 on line 4)"),
        (ORG.encode("utf-16"), "is UTF-16 text"),
        (b"\x00\x01\x02binary\xff", "is binary, not YAML"),
    ],
    ids=["latin-1", "utf-16", "binary"],
)
def test_a_file_that_is_not_utf8_is_refused_cleanly(tmp_path: Path, data: bytes, fragment: str) -> None:
    path = write(tmp_path, data)
    for argv in (["validate", "-f", path], ["render", "-f", path]):
        code, _, err = run(*argv)
        assert code == 1 and f"{path}: file: {fragment}" in err
    code, _, err = run("validate", "-f", "-", stdin=data)
    assert code == 1 and f"<stdin>: file: {fragment}" in err


def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    assert run("validate", "-f", write(tmp_path, b"\xef\xbb\xbf" + ORG.encode()))[0] == 0


def test_dev_zero_is_refused_by_the_size_limit_without_reading_it_all() -> None:
    started = time.monotonic()
    code, _, err = run("validate", "-f", "/dev/zero")
    assert code == 1
    assert f"is larger than {MAX_INPUT_BYTES // 2**20} MiB, the limit of one input" in err
    assert time.monotonic() - started < 20


def test_an_input_past_the_size_limit_is_refused_with_the_limit(tmp_path: Path) -> None:
    path = write(tmp_path, b"# " + b"x" * MAX_INPUT_BYTES + b"\n")
    code, _, err = run("validate", "-f", path)
    assert code == 1 and "split it into several files" in err


@pytest.mark.parametrize("kind", ["[Organization]", "{a: b}", "[[1]]", "null", "7"])
def test_kind_of_any_type_is_a_message(tmp_path: Path, kind: str) -> None:
    code, _, err = run("validate", "-f", write(tmp_path, ORG.replace("kind: Organization", f"kind: {kind}")))
    assert code == 1
    assert "kind: " in err and "is not one of Organization, TenancyPolicy" in err


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 500, 3_000, 1_000_000])
def test_deep_nesting_is_refused_without_recursion(tmp_path: Path, depth: int) -> None:
    # Objects are built from libyaml's events with an explicit stack: composing nodes in C
    # (yaml.CSafeLoader) overflows the C stack at 100,000 levels where libyaml has no limit.
    text = ORG + "extra: " + "[" * depth + "]" * depth + "\n"
    code, _, err = run("validate", "-f", write(tmp_path, text))
    assert code == 1
    if depth < 1000:  # libyaml itself stops at 1,000 levels (with its own message)
        assert f"line 7, column {7 + MAX_DEPTH}: nested more than {MAX_DEPTH} levels deep" in err
    else:
        assert "line 7, column" in err and "nesting depth" in err


def test_deep_block_nesting_is_refused(tmp_path: Path) -> None:
    text = ORG + "".join(f"{'  ' * i}k:\n" for i in range(200))
    code, _, err = run("validate", "-f", write(tmp_path, text))
    assert code == 1 and f"nested more than {MAX_DEPTH} levels deep" in err


def test_deep_nesting_in_a_hand_made_dict_is_refused_too() -> None:
    doc: dict[str, Any] = {"kind": "Organization"}
    node = doc
    for _ in range(100_000):
        node["x"] = {}
        node = node["x"]
    (problem,) = parse_object(doc)  # type: ignore[misc]
    assert "nested more than" in problem.message


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", ".NaN", "+.INF"])
@pytest.mark.parametrize("where", ["org", "policy"])
def test_nan_and_infinity_are_refused(tmp_path: Path, value: str, where: str) -> None:
    if where == "org":
        text = org(f"  environments: [prod]\n  quota:\n    prod: {{pods: {value}}}\n")
    else:
        text = (
            "apiVersion: tenantry.dev/v1alpha1\nkind: TenancyPolicy\nmetadata: {name: p}\n"
            f"spec:\n  environments:\n  - name: prod\n    quota: {{pods: {value}}}\n"
        )
    for code, out, err in both(tmp_path, text):
        assert code == 1, out
        assert "is not a number Kubernetes can store (JSON has no infinity or NaN)" in err
        assert "inf" not in out


def test_nan_in_a_hand_made_dict_is_a_problem_not_an_exception() -> None:
    doc = yaml.safe_load(org("  environments: [prod]\n  quota:\n    prod: {pods: 1}\n"))
    doc["spec"]["quota"]["prod"]["pods"] = float("nan")
    problems = parse_object(doc)
    assert isinstance(problems, list) and "nan" in str(problems[0])


BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
apiVersion: *i
kind: Organization
metadata: {name: acme}
spec: {environments: [prod]}
"""


def test_a_billion_laughs_is_refused_at_once(tmp_path: Path) -> None:
    started = time.monotonic()
    for code, _, err in both(tmp_path, BILLION_LAUGHS):
        assert code == 1
        assert "the document expands to more than 200,000 values" in err
        assert len(err) < 2000
    assert time.monotonic() - started < 10


def test_aliases_within_the_limit_still_work(tmp_path: Path) -> None:
    text = org("  environments: &envs [prod, dev]\n  quota: {}\n") + "---\n" + ORG.replace("acme", "beta")
    assert run("validate", "-f", write(tmp_path, text))[0] == 0


def test_a_recursive_alias_is_refused() -> None:
    (loaded,) = load_stream("a: &x [1, *x]\n")
    assert loaded.error is not None and "refers to a value that contains it" in str(loaded.error)


def test_crds_output_dir_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    path = write(tmp_path, "x")
    code, _, err = run("crds", "--output-dir", path)
    assert code == 2 and "is not a directory" in err
    code, _, err = run("crds", "--output-dir", str(Path(path) / "sub"))
    assert code == 2 and "cannot write into" in err


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("command", [["crds"], ["roles"], ["render", "-f", "-"]])
def test_a_full_disk_is_an_error_message_not_a_traceback(command: list[str]) -> None:
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "tenantry", *command],
            input=ORG,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    assert proc.returncode == 2, proc.stderr
    assert "tenantry: error: cannot write the output: No space left on device" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_closed_pipe_is_quiet() -> None:
    proc = subprocess.run(
        f"{sys.executable} -m tenantry crds | head -c 10 >/dev/null",
        shell=True,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    assert "Traceback" not in proc.stderr and "Exception" not in proc.stderr


# -- accepted, but wrong or unsafe ------------------------------------------------------------


def test_empty_environments_on_egress_and_allow_from_are_refused_by_both_commands(tmp_path: Path) -> None:
    text = org(
        "  environments: [prod]\n  network:\n"
        "    egress: [{organization: beta, environments: [], reason: r}]\n"
        "    allowFrom: [{organization: beta, environments: [], reason: r}]\n"
    )
    for code, out, err in both(tmp_path, text):
        assert code == 1 and out == ""
        for path in ("spec.network.egress[0].environments", "spec.network.allowFrom[0].environments"):
            assert f"Organization/acme: {path}: an empty list would select no namespace" in err


def test_two_organizations_rendering_the_same_namespace_are_refused(tmp_path: Path) -> None:
    text = (
        ORG.replace("acme", "x").replace("[prod, dev]", "[team-prod]")
        + "---\n"
        + ORG.replace("acme", "x-team").replace("[prod, dev]", "[prod]")
    )
    for code, out, err in both(tmp_path, text):
        assert code == 1 and out == ""
        assert (
            "Organization/x-team: spec.environments[0]: namespace 'x-team-prod' is also rendered by "
            "Organization 'x' (environment 'team-prod')"
        ) in err
        assert "Organization/x: spec.environments[0]: namespace 'x-team-prod' is also rendered" in err


def test_the_same_organization_twice_is_refused(tmp_path: Path) -> None:
    a, b = write(tmp_path, ORG, "a.yaml"), write(tmp_path, ORG, "b.yaml")
    code, _, err = run("validate", "-f", a, "-f", b)
    assert code == 1
    assert f"{b}: Organization/acme: metadata.name: Organization 'acme' is given more than once" in err


@pytest.mark.parametrize(
    "text",
    [
        ORG + "spec: {environments: [dev]}\n",
        org("  environments: [prod]\n  environments: [dev]\n"),
        org("  environments: [prod]\n  quota:\n    prod: {pods: '1', pods: '500'}\n"),
    ],
    ids=["top", "spec", "nested"],
)
def test_duplicate_keys_are_refused_with_both_lines(tmp_path: Path, text: str) -> None:
    for code, _, err in both(tmp_path, text):
        assert code == 1
        assert "duplicate key" in err and "(first at line" in err and "refuse duplicate keys" in err


def test_a_merge_key_is_not_a_duplicate(tmp_path: Path) -> None:
    text = "base: &b {kind: Organization}\n---\n" + ORG.replace(
        "kind: Organization\n", "<<: {kind: X}\nkind: Organization\n"
    )
    (doc,) = [d for d in load_stream(text) if d.index == 1]
    assert doc.data["kind"] == "Organization"


@pytest.mark.parametrize(
    ("cidr", "carved"),
    [
        (
            "::/0",
            [
                "64:ff9b::6464:64c8/128",  # NAT64 of 100.100.100.200
                "64:ff9b::a9fe:a9fe/128",  # NAT64 of 169.254.169.254
                "::ffff:6464:64c8/128",  # ::ffff:100.100.100.200
                "::ffff:a9fe:a9fe/128",  # ::ffff:169.254.169.254
                "fd00:ec2::254/128",
                "fd20:ce::254/128",
            ],
        ),
        ("fd00::/8", ["fd00:ec2::254/128", "fd20:ce::254/128"]),
        ("0.0.0.0/0", ["100.100.100.200/32", "169.254.169.254/32"]),
        ("64:ff9b::/96", ["64:ff9b::6464:64c8/128", "64:ff9b::a9fe:a9fe/128"]),
    ],
)
def test_cloud_metadata_is_carved_out_of_ipv6_egress_too(
    tmp_path: Path, cidr: str, carved: list[str]
) -> None:
    text = org(f"  environments: [prod]\n  network:\n    egress: [{{cidr: '{cidr}', reason: r}}]\n")
    code, out, err = run("render", "-f", write(tmp_path, text))
    assert code == 0, err
    policy = next(o for o in yaml.safe_load_all(out) if o["metadata"]["name"] == "tenantry-allow-egress")
    assert policy["spec"]["egress"][0]["to"] == [{"ipBlock": {"cidr": cidr, "except": sorted(carved)}}]


@pytest.mark.parametrize(
    "cidr",
    [
        "fd00:ec2::254/128",
        "64:ff9b::a9fe:a9fe/128",
        "fd20:ce::254/128",
        "169.254.169.254/32",
    ],
)
def test_cloud_metadata_cannot_be_an_egress_target_in_any_spelling(tmp_path: Path, cidr: str) -> None:
    text = org(f"  environments: [prod]\n  network:\n    egress: [{{cidr: '{cidr}', reason: r}}]\n")
    for code, out, err in both(tmp_path, text):
        assert code == 1 and out == ""
        assert (
            "spec.network.egress[0].cidr: " in err and "which policy 'default' denies for all tenants" in err
        )


@pytest.mark.parametrize("cidr", ["::ffff:169.254.169.254/128", "::ffff:a9fe:a9fe/128", "::ffff:0:0/96"])
def test_an_ipv4_mapped_egress_is_refused_as_the_api_servers_cidr_library_refuses_it(
    tmp_path: Path, cidr: str
) -> None:
    # k8s.io/apiserver/pkg/cel/library/cidr.go: isCIDR() is false for IPv4-mapped IPv6, so the
    # CRD refuses them (the metadata endpoints' mapped spellings included); validate agrees.
    text = org(f"  environments: [prod]\n  network:\n    egress: [{{cidr: '{cidr}', reason: r}}]\n")
    for code, out, err in both(tmp_path, text):
        assert code == 1 and out == ""
        assert "spec.network.egress[0].cidr: " in err and "IPv4-mapped IPv6" in err


ESCAPE = "\r\x1b[2Kvalid: 1 Organization(s), 0 TenancyPolicy(ies)\x1b]0;x\x07\u202e"


def _doc(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tenantry.dev/v1alpha1",
        "kind": "Organization",
        "metadata": {"name": "acme"},
        "spec": {"environments": ["prod"], **spec},
    }


@pytest.mark.parametrize(
    "doc",
    [
        {**_doc(), "metadata": {"name": ESCAPE}},
        {**_doc(), "kind": ESCAPE},
        _doc(quota={"prod": {ESCAPE: "1"}}),
        _doc(**{ESCAPE: 1}),
        _doc(members={"admins": [{"kind": "ServiceAccount", "name": ESCAPE, "namespace": "kube-system"}]}),
    ],
    ids=["name", "kind", "quota-key", "field", "subject"],
)
def test_terminal_escapes_in_the_input_are_printed_escaped(tmp_path: Path, doc: dict[str, Any]) -> None:
    text = yaml.safe_dump(doc)
    assert "\x1b" not in text  # the YAML file itself escapes them: "\e"
    code, out, err = run("validate", "-f", write(tmp_path, text))
    assert code == 1
    assert not any(c in err + out for c in "\r\x1b\x07\u202e"), repr(err)
    assert "\\x1b" in err or "\\r" in err


def test_an_organization_listing_itself_is_refused(tmp_path: Path) -> None:
    text = org(
        "  environments: [prod, dev]\n  network:\n"
        "    egress: [{organization: acme, reason: r}]\n"
        "    allowFrom: [{organization: acme, reason: r}]\n"
    )
    for code, out, err in both(tmp_path, text):
        assert code == 1 and out == ""
        assert "spec.network.allowFrom[0].organization: 'acme' is this Organization" in err
        assert "spec.network.egress[0].organization: 'acme' is this Organization" in err


# -- messages ---------------------------------------------------------------------------------


def test_a_missing_policy_says_how_each_command_takes_one(tmp_path: Path) -> None:
    path = write(tmp_path, org("  policy: gold\n  environments: [prod]\n"))
    # Both take --policy (issue 20: troubleshooting.md's `validate ... --policy` was refused).
    assert "add its file with --policy or another -f; known: default" in run("validate", "-f", path)[2]
    assert "pass its file with --policy or -f; known: default" in run("render", "-f", path)[2]


def test_null_members_name_the_type_not_a_class(tmp_path: Path) -> None:
    code, _, err = run("validate", "-f", write(tmp_path, org("  environments: [prod]\n  members: null\n")))
    assert code == 1
    assert "spec.members: must be a mapping (got null)" in err
    assert "instance of" not in err and "Members" not in err


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("1", "mapping key 1 is not a string; quote the key ('1')"),
        ("null", "mapping key null (empty or ~) is not a string"),
        ("yes", "mapping key true is not a string: unquoted yes/no/on/off/true/false are booleans"),
        ("[a]", "a mapping key must be a string, not a list or a mapping"),
    ],
)
def test_a_non_string_key_is_named_with_its_line(tmp_path: Path, key: str, message: str) -> None:
    code, _, err = run("validate", "-f", write(tmp_path, org(f"  environments: [prod]\n  {key}: x\n")))
    assert code == 1
    assert f"line 7, column 3: {message}" in err
    assert "spec.None" not in err and "spec[1]" not in err


def test_a_second_stdin_is_a_usage_error() -> None:
    code, _, err = run("validate", "-f", "-", "-f", "-", stdin=ORG.encode())
    assert code == 2 and "standard input (-) can be read only once" in err
    code, _, err = run("render", "-f", "-", "--policy", "-", stdin=ORG.encode())
    assert code == 2 and "standard input (-) can be read only once" in err


def test_stdin_is_read(tmp_path: Path) -> None:
    assert run("validate", "-f", "-", stdin=ORG.encode())[0] == 0


@pytest.mark.parametrize(("path", "fragment"), [("", "-f needs a file name"), (".", "it is a directory")])
def test_an_empty_or_directory_file_name_is_a_usage_error(path: str, fragment: str) -> None:
    code, _, err = run("validate", "-f", path)
    assert code == 2 and fragment in err and "Is a directory" not in err


def test_an_organization_in_the_policy_file_is_not_rendered(tmp_path: Path) -> None:
    policy = "apiVersion: tenantry.dev/v1alpha1\nkind: TenancyPolicy\nmetadata: {name: default}\n---\n"
    policy += ORG.replace("acme", "stowaway")
    code, out, err = run("render", "-f", write(tmp_path, ORG), "--policy", write(tmp_path, policy, "p.yaml"))
    assert code == 1 and out == ""
    assert (
        "Organization/stowaway: is in a --policy file, so it is not rendered; pass Organizations with -f"
        in err
    )


@pytest.mark.parametrize("command", ["render", "validate", "crds", "roles", "run"])
def test_help_describes_each_command_its_options_and_exit_codes(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = run(command, "--help")
    out = capsys.readouterr().out
    assert code == 0
    assert len(out.split("\n\n")[1]) > 40  # a description paragraph
    if command in ("render", "validate"):
        assert "-f FILE, --filename FILE" in out and "standard input" in out and "MiB" in out
    if command != "run":
        assert "exit codes:" in out and "1  invalid input" in out and "2  usage or I/O error" in out


def test_top_level_help_lists_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run("--help")
    out = capsys.readouterr().out
    assert code == 0 and "exit codes:" in out and "0  success" in out


# -- strict types and quantities (as the API server's schema) --------------------------------

POLICY = """\
apiVersion: tenantry.dev/v1alpha1
kind: TenancyPolicy
metadata: {name: strict}
spec:
  environments:
  - name: prod
    quota: {pods: 10}
"""


@pytest.mark.parametrize(
    ("line", "path", "message"),
    [
        (
            '    developerExec: "yes"\n',
            "spec.environments[0].developerExec",
            "must be true or false (got the string 'yes')",
        ),
        (
            "    developerExec: 1\n",
            "spec.environments[0].developerExec",
            "must be true or false (got the number 1)",
        ),
        ("    quota: {pods: .inf}\n", "", "is not a number Kubernetes can store"),
        ("    quota: {pods: 0.5}\n", "spec.environments[0].quota.pods", "0.5 is a number with a fraction"),
        (
            "    quota: {pods: 100m}\n",
            "spec.environments[0].quota",
            "pods: '100m': object counts must be whole numbers",
        ),
        (
            '    quota: {requests.cpu: "-0"}\n',
            'spec.environments[0].quota["requests.cpu"]',
            "'-0' is negative",
        ),
    ],
)
def test_a_policy_is_parsed_strictly(tmp_path: Path, line: str, path: str, message: str) -> None:
    text = POLICY.replace(
        "    quota: {pods: 10}\n", line if "quota" in line else "    quota: {pods: 10}\n" + line
    )
    org_text = org(
        "  policy: strict\n  environments: [prod]\n  members:\n    developers: [{kind: Group, name: d}]\n"
    )
    policy_path, org_path = write(tmp_path, text, "p.yaml"), write(tmp_path, org_text, "o.yaml")
    code, _, err = run("validate", "-f", policy_path, "-f", org_path)
    assert code == 1
    assert (f"{path}: {message}" if path else message) in err
    code, out, err = run("render", "-f", org_path, "--policy", policy_path)
    assert code == 1 and out == "" and "developers-exec" not in out


# -- spec: {} ---------------------------------------------------------------------------------


def test_an_organization_without_environments_gets_the_policys(tmp_path: Path) -> None:
    path = write(tmp_path, ORG.replace("  environments: [prod, dev]\n", "").replace("spec:\n", "spec: {}\n"))
    code, out, err = run("validate", "-f", path)
    assert code == 0, err
    assert (
        "note: spec.environments: not set, so every environment of policy 'default': prod, staging, dev"
        in err
    )
    code, out, err = run("render", "-f", path)
    assert code == 0, err
    assert "note: spec.environments: not set" in err
    namespaces = [o["metadata"]["name"] for o in yaml.safe_load_all(out) if o["kind"] == "Namespace"]
    assert namespaces == ["acme-prod", "acme-staging", "acme-dev"]


def test_the_operator_renders_an_organization_without_environments_the_same_way() -> None:
    body = {
        "apiVersion": "tenantry.dev/v1alpha1",
        "kind": "Organization",
        "metadata": {"name": "acme"},
        "spec": {},
    }
    parsed = parse_object(body)  # what reconcile/organization.py does with the API server's body
    assert isinstance(parsed, Organization)
    rendering = render_organization(parsed, builtin_default_policy(), dt.date(2026, 11, 26))
    assert rendering.namespaces == {"prod": "acme-prod", "staging": "acme-staging", "dev": "acme-dev"}


def test_without_environments_quota_keys_and_names_are_checked_against_the_policy(tmp_path: Path) -> None:
    text = org("  quota:\n    qa: {pods: '1'}\n")
    code, _, err = run("validate", "-f", write(tmp_path, text))
    assert code == 1 and "spec.quota: names environment(s) qa that policy 'default' does not have" in err
    long_name = ORG.replace("acme", "a" * 58).replace("  environments: [prod, dev]\n", "  members: {}\n")
    code, _, err = run("validate", "-f", write(tmp_path, long_name, "long.yaml"))
    assert code == 1 and "would be 66 characters" in err  # <58 a's>-staging


def test_defaulted_environments_take_part_in_collisions(tmp_path: Path) -> None:
    text = (
        ORG.replace("acme", "a").replace("[prod, dev]", "[b-prod]")
        + "---\n"
        + ORG.replace("acme", "a-b").replace("  environments: [prod, dev]\n", "  members: {}\n")
    )
    code, _, err = run("validate", "-f", write(tmp_path, text))
    assert code == 1 and "namespace 'a-b-prod' is also rendered by Organization 'a'" in err


@pytest.mark.parametrize(
    ("field", "fragment"),
    [
        (
            "namespaceLabels: {'bad key': x}",
            "spec.namespaceLabels[\"bad key\"]: label key 'bad key' is not valid",
        ),
        ("namespaceLabels: {'a/b/c': x}", "label key 'a/b/c' is not valid"),
        ("namespaceLabels: {'Example.com/x': x}", "label key 'Example.com/x' is not valid"),
        ("namespaceLabels: {team: 'a b'}", "spec.namespaceLabels.team: must be a label value"),
        ("network: {dns: {podSelector: {'-x': y}}}", "label key '-x' is not valid"),
        ("network: {ingressControllers: [{namespace: n, podSelector: {app: '-'}}]}", "must be a label value"),
    ],
)
def test_policy_labels_have_label_syntax(tmp_path: Path, field: str, fragment: str) -> None:
    text = (
        f"apiVersion: tenantry.dev/v1alpha1\nkind: TenancyPolicy\nmetadata: {{name: p}}\nspec:\n  {field}\n"
    )
    code, _, err = run("validate", "-f", write(tmp_path, text))
    assert code == 1 and fragment in err, err


def test_valid_label_keys_are_accepted(tmp_path: Path) -> None:
    labels = "{app.kubernetes.io/part-of: x, team: a_b.c-d, example.com/Tier: '', k8s-app: kube-dns}"
    text = "apiVersion: tenantry.dev/v1alpha1\nkind: TenancyPolicy\nmetadata: {name: p}\nspec:\n"
    text += f"  namespaceLabels: {labels}\n"
    assert run("validate", "-f", write(tmp_path, text))[0] == 0
