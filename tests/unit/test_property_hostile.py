"""Property-based: `validate` and `render` on generated hostile documents.

Starting from the valid examples, hypothesis replaces values anywhere with hostile ones (control
characters, huge numbers, NaN, impossible dates, wrong types, IPv6 metadata addresses, ...),
deletes keys, and corrupts the YAML text (aliases, duplicate keys, tags, encodings). For every
input: no exception escapes, the exit code is 0, 1 or 2, nothing hangs, and `render` never opens
a peer or a port that `validate` says is closed. `parse_object` (the operator's entry point)
never raises on hostile dicts.

Bounded for CI: `max_examples` and a per-example alarm keep the file well under 60 s on 2 cores.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import ipaddress
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tenantry.api.documents import decode, parse_documents, parse_object
from tenantry.api.organization import Organization
from tenantry.api.problems import Problem
from tenantry.cli import main
from tests.conftest import EXAMPLES

TODAY = "2026-11-26"
EXAMPLE_DOCS = [
    yaml.safe_load((EXAMPLES / name).read_text())
    for name in ("organization-acme.yaml", "organization-beta.yaml", "policy-default.yaml")
]
PER_EXAMPLE_SECONDS = 10
SETTINGS = settings(
    max_examples=300,
    deadline=None,  # the alarm below bounds each example; CI machines vary too much for deadlines
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,  # the same examples on every run: a CI failure reproduces locally
    database=None,
)


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    def expired(signum: int, frame: Any) -> None:
        raise TimeoutError(f"hung for more than {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# -- hostile values ---------------------------------------------------------------------------

NASTY_STRINGS = [
    "",
    " ",
    " 4",
    "-0",
    "0.5",
    "100m",
    "1e3",
    "yes",
    "true",
    "null",
    "~",
    "2027-02-30",
    "20270630",
    "::/0",
    "0.0.0.0/0",
    "fd00:ec2::254/128",
    "::ffff:169.254.169.254/128",
    "64:ff9b::a9fe:a9fe/128",
    "169.254.0.0/16",
    "fd00::/8",
    "system:masters",
    "kube-system",
    "tenantry-system",
    "acme",
    "beta",
    "prod",
    "team-prod",
    "\r\x1b[2Kvalid: 1 Organization(s)",
    "\u202e",
    "a" * 300,
    "Organization",
    "TenancyPolicy",
    "tenantry.dev/v1alpha1",
    "TCP",
    "ServiceAccount",
]
scalars = st.one_of(
    st.sampled_from(NASTY_STRINGS),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 53, 65535, 65536, 2**63]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
)
values = st.recursive(
    scalars | st.sampled_from([[], {}, ["prod"], [{"port": 1}], {"port": True}]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(NASTY_STRINGS), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, item in node.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            out += _paths(item, (*prefix, i))
    return out


def _mutate(doc: Any, draw: Callable[[Any], Any]) -> Any:
    paths = _paths(doc)
    network = [p for p in paths if "network" in p]  # where a wrong meaning opens traffic
    path = draw(st.sampled_from(network if network and draw(st.booleans()) else paths))
    action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
    if not path:
        return draw(values) if action == "replace" else doc
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if action == "replace":
        parent[last] = draw(values)
    elif action == "delete":
        del parent[last]
    elif isinstance(parent[last], dict):
        parent[last][draw(st.sampled_from([*NASTY_STRINGS[:12], "environments", "reason", "port"]))] = draw(
            values
        )
    elif isinstance(parent[last], list):
        parent[last].append(draw(values))
    return doc


# Fields of a network entry, with the values whose meaning render and validate could disagree on.
NETWORK_FIELDS: dict[str, list[Any]] = {
    "environments": [[], [], ["prod"], ["prod", "dev"], ["staging"], ["nope"], None, "prod"],
    "organization": ["acme", "beta", "gamma", "", None],
    "ports": [
        [],
        [{"port": 1}],
        [{"port": True}],
        [{"port": "80"}],
        [{"port": 0}],
        [{"port": 1.0}],
        [{"port": 80, "endPort": 79}],
        [{"port": 80, "protocol": "ICMP"}],
        None,
    ],
    "expires": ["2020-01-01", "2027-02-30", 20270630, "2099-01-01", "2026-11-26", "2026-11-25", None],
    "cidr": [
        "::/0",
        "0.0.0.0/0",
        "fd00:ec2::254/128",
        "::ffff:169.254.169.254/128",
        "169.254.0.0/16",
        "64:ff9b::/96",
        "fd00::/8",
        "10.0.0.0/8",
        None,
    ],
    "reason": ["r", "", " ", None],
}


def _mutate_network(doc: Any, draw: Callable[[Any], Any]) -> Any:
    """Set one field of one egress or allowFrom entry (adding the entry if there is none)."""
    spec = doc.get("spec") if isinstance(doc, dict) else None
    if not isinstance(spec, dict) or not isinstance(spec.get("environments", []), list):
        return doc
    network = spec.setdefault("network", {})
    if not isinstance(network, dict):
        return doc
    side = draw(st.sampled_from(["egress", "allowFrom"]))
    entries = network.setdefault(side, [])
    if not isinstance(entries, list):
        return doc
    if not entries or draw(st.booleans()):
        entries.append({"organization": draw(st.sampled_from(["acme", "beta"])), "reason": "r"})
    entry = entries[draw(st.integers(min_value=0, max_value=len(entries) - 1))]
    if not isinstance(entry, dict):
        return doc
    fields = ["environments", "organization", "ports", "reason"]
    fields.append("cidr" if side == "egress" else "expires")
    field = draw(st.sampled_from(fields))
    value = draw(st.sampled_from(NETWORK_FIELDS[field]))
    if value is None:
        entry.pop(field, None)
    else:
        entry[field] = value
    # Mostly keep the entry's shape valid (one of cidr or organization), so that it renders.
    if draw(st.integers(min_value=0, max_value=3)):
        if field == "cidr" and value is not None:
            for other in ("organization", "environments"):
                entry.pop(other, None)
        elif field in ("organization", "environments") and value is not None:
            entry.pop("cidr", None)
            entry.pop("except", None)
            entry.setdefault("organization", "beta")
    return doc


YAML_SNIPPETS = [
    "x: 2027-02-30",
    "x: .nan",
    "x: .inf",
    "a: &a [1, 2]\nb: *a",
    "kind: [Organization]",
    "kind: {a: b}",
    "dup: 1\ndup: 2",
    "? [a]\n: b",
    "1: one",
    "yes: no",
    "x: !!binary aGVsbG8=",
    "x: !!set {a, b}",
    "x: !custom 1",
    "<<: {kind: X}",
    "x: 1:20",
    "x: 0x1F",
    "x: 99999999999999999999999",
    "x: " + "[" * 70 + "]" * 70,
    "x: *undefined",
    "x: &r [*r]",
    "x: [unclosed",
    "\t",
    "---",
    "--- !!str",
    "%YAML 1.1\n---",
    "x: '\x1b[2K'",
]


@st.composite
def hostile_inputs(draw: Callable[[Any], Any]) -> bytes:
    picked = draw(st.lists(st.sampled_from(range(len(EXAMPLE_DOCS))), min_size=1, max_size=3, unique=True))
    docs = [copy.deepcopy(EXAMPLE_DOCS[i]) for i in picked]
    if draw(st.booleans()):
        # Meaning: valid documents with network entries changed, so that both commands accept
        # most of them and what render opens can be held against what validate said.
        for _ in range(draw(st.integers(min_value=1, max_value=3))):
            index = draw(st.integers(min_value=0, max_value=len(docs) - 1))
            docs[index] = _mutate_network(docs[index], draw)
        return yaml.safe_dump_all(docs, sort_keys=False).encode("utf-8")
    # Robustness: anything anywhere, in the data, the YAML text and the encoding.
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        index = draw(st.integers(min_value=0, max_value=len(docs) - 1))
        mutate = draw(st.sampled_from([_mutate, _mutate_network]))
        docs[index] = mutate(docs[index], draw)
    text = yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=draw(st.booleans()))
    if draw(st.integers(min_value=0, max_value=2)) == 0:
        lines = text.split("\n")
        at = draw(st.integers(min_value=0, max_value=len(lines)))
        lines.insert(at, draw(st.sampled_from(YAML_SNIPPETS)))
        text = "\n".join(lines)
    data = text.encode("utf-8")
    encoding = draw(st.sampled_from(["utf-8"] * 8 + ["bom", "latin-1", "utf-16", "nul"]))
    if encoding == "bom":
        data = b"\xef\xbb\xbf" + data
    elif encoding == "latin-1":
        data = text.encode("latin-1", "replace") + b"\xe9"
    elif encoding == "utf-16":
        data = text.encode("utf-16")
    elif encoding == "nul":
        data = data[: len(data) // 2] + b"\x00" + data[len(data) // 2 :]
    return data


# -- what validate says is open, and what render opens -----------------------------------------


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        code = main(list(argv), out, err)
    except SystemExit as exc:  # argparse; never expected here
        code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def _declared_organizations(data: bytes) -> dict[str, Organization]:
    """The Organizations validate accepted (what render may open traffic for)."""
    text = decode(data)
    assert isinstance(text, str)
    return {org.name: org for _, org in parse_documents(text, "x").organizations}


def _port_set(ports: list[Any]) -> set[tuple[str, int, int | None]]:
    return {(p.protocol, p.port, p.end_port) for p in ports}


def _rendered_ports(rule: dict[str, Any]) -> set[tuple[str, int, int | None]]:
    return {(p["protocol"], p["port"], p.get("endPort")) for p in rule.get("ports", [])}


# Written out, not taken from the code under test: cloud metadata in every spelling.
METADATA = [
    ipaddress.ip_network(c)
    for c in (
        "169.254.169.254/32",
        "100.100.100.200/32",
        "fd00:ec2::254/128",
        "fd20:ce::254/128",
        "::ffff:169.254.169.254/128",
        "::ffff:100.100.100.200/128",
        "64:ff9b::169.254.169.254/128",
        "64:ff9b::100.100.100.200/128",
    )
]


def _check_network_policy(obj: dict[str, Any], orgs: dict[str, Organization], today: dt.date) -> None:
    owner = obj["metadata"]["labels"]["tenantry.dev/organization"]
    org = orgs[owner]
    name = obj["metadata"]["name"]
    denied = METADATA
    spec = obj["spec"]
    for rule in spec.get("egress", []) + spec.get("ingress", []):
        for port in rule.get("ports", []):
            assert type(port["port"]) is int and 1 <= port["port"] <= 65535, port
        for peer in rule.get("to", []) + rule.get("from", []):
            assert peer != {} and peer.get("namespaceSelector") != {}, f"{name} opens every namespace"
            selector = peer.get("namespaceSelector", {})
            for expression in selector.get("matchExpressions", []):
                assert expression["values"], f"{name}: an empty In selects nothing or everything"
            if "ipBlock" in peer:
                net = ipaddress.ip_network(peer["ipBlock"]["cidr"])
                excepted = set(peer["ipBlock"].get("except", []))
                for block in denied:
                    if block.version == net.version and block.subnet_of(net):  # type: ignore[arg-type]
                        assert str(block) in excepted, f"{name} reaches cloud metadata {block}"
    if name.startswith("tenantry-allow-from-"):
        source = name.removeprefix("tenantry-allow-from-")
        active = [e for e in org.spec.network.allow_from if e.organization == source and e.active_on(today)]
        assert active, f"{name}: validate said {source!r}'s exception is expired or absent"
        assert source != owner, f"{name}: an Organization admits itself"
        declared = [_port_set(e.ports) for e in active]
        for rule in spec["ingress"]:
            assert _rendered_ports(rule) in declared, f"{name} opens ports nobody declared"
            for peer in rule["from"]:
                names = _selected_names(peer["namespaceSelector"])
                if names is None:  # every namespace of the source: only if an entry says so
                    assert any(e.environments is None for e in active), f"{name} admits all of {source}"
                else:
                    allowed = {f"{source}-{env}" for e in active for env in (e.environments or [])}
                    assert names <= allowed, f"{name} admits {names - allowed}"
    if name == "tenantry-allow-egress":
        declared = [_port_set(r.ports) for r in org.spec.network.egress]
        for rule in spec["egress"]:
            assert _rendered_ports(rule) in declared, f"{name} opens ports nobody declared"
            for peer in rule["to"]:
                if "namespaceSelector" in peer:
                    labels = peer["namespaceSelector"].get("matchLabels", {})
                    target = labels.get("tenantry.dev/organization")
                    assert target != owner, f"{name}: egress to its own namespaces"
                    if target is not None:  # every namespace of the target: only if a rule says so
                        rules = [r for r in org.spec.network.egress if r.organization == target]
                        assert any(r.environments is None for r in rules), f"{name} reaches all of {target}"


def _selected_names(selector: dict[str, Any]) -> set[str] | None:
    if "kubernetes.io/metadata.name" in selector.get("matchLabels", {}):
        return {selector["matchLabels"]["kubernetes.io/metadata.name"]}
    for expression in selector.get("matchExpressions", []):
        if expression["key"] == "kubernetes.io/metadata.name":
            return set(expression["values"])
    return None


def _validated_warnings_say_closed(err: str) -> set[str]:
    return {line for line in err.splitlines() if "no longer rendered" in line}


@SETTINGS
@given(data=hostile_inputs())
def test_validate_and_render_survive_hostile_documents(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("hostile") / "in.yaml"
    path.write_bytes(data)
    with time_limit(PER_EXAMPLE_SECONDS):
        v_code, v_out, v_err = run("validate", "-f", str(path), "--today", TODAY)
        r_code, r_out, r_err = run("render", "-f", str(path), "--today", TODAY)
    assert v_code in (0, 1, 2) and r_code in (0, 1, 2)
    assert "Traceback" not in v_err + r_err
    assert not any(c in v_err + r_err for c in "\r\x1b\x07\u202e"), "unescaped control characters"
    if v_code == 1 and "valid:" not in v_out:
        # Invalid for validate: render writes nothing (it may fail only for the same reasons).
        assert r_code in (1, 2) and r_out == "", r_err
    if r_code == 0 and r_out:
        assert v_code in (0, 1)
        orgs = _declared_organizations(data)
        today = dt.date.fromisoformat(TODAY)
        for obj in yaml.load_all(r_out, Loader=yaml.CSafeLoader):
            if obj["kind"] == "NetworkPolicy":
                _check_network_policy(obj, orgs, today)
            if obj["kind"] == "Namespace":
                assert obj["metadata"]["labels"]["tenantry.dev/organization"] in orgs
    if v_code == 0:
        assert r_code in (0, 2), r_err  # 2: no Organization in a valid file of policies only


hostile_keys = st.one_of(
    st.sampled_from(["kind", "apiVersion", "metadata", "spec", "name", "environments", "quota", "pods"]),
    st.integers(),
    st.none(),
    st.booleans(),
    st.tuples(st.integers()),
    st.floats(allow_nan=True),
)
hostile_dict_values = st.recursive(
    scalars | st.binary(max_size=4) | st.sets(st.integers(), max_size=2) | st.dates(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile_keys, inner, max_size=3),
    max_leaves=10,
)


@st.composite
def hostile_dicts(draw: Callable[[Any], Any]) -> Any:
    doc = copy.deepcopy(draw(st.sampled_from(EXAMPLE_DOCS)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        path = draw(st.sampled_from(_paths(doc)))
        if not path:
            continue
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        parent[path[-1]] = draw(hostile_dict_values)
    if isinstance(doc.get("spec"), dict) and draw(st.integers(min_value=0, max_value=9)) == 0:
        doc["spec"]["loop"] = doc  # a value that contains itself
    return doc


@SETTINGS
@given(doc=hostile_dicts())
def test_parse_object_never_raises_on_hostile_dicts(doc: Any) -> None:
    with time_limit(PER_EXAMPLE_SECONDS):
        parsed = parse_object(doc)
    assert isinstance(parsed, list) or parsed.kind in ("Organization", "TenancyPolicy")
    if isinstance(parsed, list):
        assert parsed and all(isinstance(p, Problem) for p in parsed)
        assert all(len(str(p)) < 2000 for p in parsed)


def test_parse_object_refuses_what_json_cannot_hold() -> None:
    base = copy.deepcopy(EXAMPLE_DOCS[1])
    for hostile in (
        {1: "x"},
        {None: "x"},
        {("a",): "x"},
        float("inf"),
        b"bytes",
        {1, 2},
        dt.date(2027, 1, 1),
    ):
        doc = copy.deepcopy(base)
        doc["spec"]["displayName"] = hostile
        problems = parse_object(doc)
        assert isinstance(problems, list), hostile
    looped = copy.deepcopy(base)
    looped["spec"]["members"]["self"] = looped
    assert isinstance(parse_object(looped), list)


def test_parse_object_reports_a_bounded_number_of_problems() -> None:
    """The operator writes them into a status condition, whose message is bounded (32 KiB)."""
    doc = copy.deepcopy(EXAMPLE_DOCS[0])
    doc["spec"]["network"]["egress"] = [
        {"cidr": "x" * 40, "ports": [{"port": 0}] * 32, "reason": ""} for _ in range(64)
    ]
    problems = parse_object(doc)
    assert isinstance(problems, list)
    assert len(problems) == 21 and "more problem(s); `tenantry validate` lists them all" in str(problems[-1])
    assert len("; ".join(str(p) for p in problems)) < 32768
