"""The monitoring manifests (manifests/monitoring) against the metrics the code exports.

A dashboard or alert that names a metric or label the operator does not export fails silently:
the panel stays empty and the alert never fires. So every PromQL expression in the dashboards and
the PrometheusRule is taken apart here, and each metric (and each label it filters or groups by)
is checked against `tenantry.observe.metrics.REGISTRY`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary
from prometheus_client.metrics import MetricWrapperBase

from tenantry.observe import metrics
from tests.conftest import ROOT

MONITORING = ROOT / "manifests" / "monitoring"
DASHBOARDS = MONITORING / "dashboards"
RULES = MONITORING / "prometheusrule.yaml"
SERVICE_MONITOR = MONITORING / "servicemonitor.yaml"
TROUBLESHOOTING = ROOT / "docs" / "troubleshooting.md"
DASHBOARD_FILES = sorted(DASHBOARDS.glob("*.json"))

# ---------------------------------------------------------------------------------------------
# What the operator exports
# ---------------------------------------------------------------------------------------------

# The series names a metric family of each type exposes (prometheus_client, text format).
# test_suffixes_match_prometheus_client keeps this table honest.
SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("_count", "_sum", "_created"),
}
# Labels Prometheus adds to every series it scrapes through the ServiceMonitor.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "service", "pod", "container", "endpoint"})
# Series of Prometheus itself that the manifests may use.
PROMETHEUS_OWN = frozenset({"up"})
# Label values the code writes, for the labels that alerts compare with `=`:
# result: OrganizationReconciler.reconcile; ready: Runtime._count_ready.
KNOWN_VALUES: dict[str, frozenset[str]] = {
    "result": frozenset({"ok", "requeue", "error"}),
    "ready": frozenset({"True", "False", "Unknown"}),
}


@dataclass(frozen=True)
class Family:
    name: str
    type: str
    labels: frozenset[str]


def exported_series() -> dict[str, Family]:
    """Every series name REGISTRY exposes, mapped to its family (histogram `_bucket` -> base)."""
    label_names = {
        m._name: frozenset(m._labelnames) for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)
    }
    # Families the operator computes at scrape time from its state (metrics.STATE).
    label_names.update({f.name: frozenset(f.labels) for f in metrics.STATE_FAMILIES})
    series: dict[str, Family] = {}
    for collected in metrics.REGISTRY.collect():
        assert collected.type in SUFFIXES, f"{collected.name}: teach this test the {collected.type} type"
        assert collected.name in label_names, f"{collected.name} is registered but not in observe/metrics.py"
        family = Family(collected.name, collected.type, label_names[collected.name])
        for suffix in SUFFIXES[collected.type]:
            series[collected.name + suffix] = family
        for sample in collected.samples:  # what is exposed already must agree with the table
            assert sample.name in series, sample.name
    return series


EXPORTED = exported_series()

# ---------------------------------------------------------------------------------------------
# A PromQL scanner: enough of the grammar to find every metric, matcher and grouping label
# ---------------------------------------------------------------------------------------------

# Word lists read better than a hundred quoted lines.
FUNCTIONS = frozenset(
    """abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes clamp
    clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year days_in_month deg
    delta deriv double_exponential_smoothing end exp floor histogram_avg histogram_count
    histogram_fraction histogram_quantile histogram_stddev histogram_stdvar histogram_sum holt_winters
    hour idelta increase info irate label_join label_replace last_over_time ln log10 log2
    mad_over_time max_over_time min_over_time minute month pi predict_linear present_over_time
    quantile_over_time rad rate resets round scalar sgn sin sinh sort sort_by_label sort_by_label_desc
    sort_desc sqrt start stddev_over_time stdvar_over_time sum_over_time tan tanh time timestamp
    vector year""".split()  # noqa: SIM905
)
AGGREGATIONS = frozenset(
    "sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk limit_ratio".split()  # noqa: SIM905
)
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = frozenset("and or unless bool offset atan2 inf nan group_left group_right".split())  # noqa: SIM905

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
    |(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    |(?P<variable>\$\{[^}]*\}|\$\w+|\[\[[\w:]+\]\])
    |(?P<duration>(?:\d+(?:ms|[smhdwy]))+(?![\w.]))
    |(?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    |(?P<ident>[A-Za-z_][\w:]*)
    |(?P<op>=~|!~|!=|==|<=|>=|[-+*/%^=<>(){}\[\],@:])
    """,
    re.VERBOSE,
)
_VARIABLE = re.compile(r"\$\{(\w+)[^}]*\}|\$(\w+)|\[\[(\w+)[^\]]*\]\]")


class PromQLError(ValueError):
    pass


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: tuple[tuple[str, str, str], ...]  # (label, operator, value)


@dataclass
class Query:
    selectors: list[Selector] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)  # by/without/on/ignoring/group_x labels

    @property
    def metrics(self) -> set[str]:
        return {s.metric for s in self.selectors}


def _tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise PromQLError(f"cannot read {expr[pos : pos + 20]!r} in {expr!r}")
        assert match.lastgroup is not None
        if match.lastgroup != "space":
            out.append((match.lastgroup, match.group()))
        pos = match.end()
    return out


def _unquote(token: tuple[str, str]) -> str:
    kind, text = token
    if kind != "string":
        raise PromQLError(f"expected a string, got {text!r}")
    return text[1:-1]


def _matchers(tokens: list[tuple[str, str]], i: int) -> tuple[list[tuple[str, str, str]], int]:
    """tokens[i] is "{": read `label op "value"` pairs; return them and the index after "}"."""
    found: list[tuple[str, str, str]] = []
    i += 1
    while True:
        if i >= len(tokens):
            raise PromQLError("unclosed {")
        if tokens[i][1] == "}":
            return found, i + 1
        if i + 2 >= len(tokens) or tokens[i][0] != "ident" or tokens[i + 1][1] not in ("=", "!=", "=~", "!~"):
            raise PromQLError(f"bad label matcher at {tokens[i][1]!r}")
        found.append((tokens[i][1], tokens[i + 1][1], _unquote(tokens[i + 2])))
        i += 3
        if i < len(tokens) and tokens[i][1] == ",":
            i += 1


def _label_list(tokens: list[tuple[str, str]], i: int) -> tuple[set[str], int]:
    """tokens[i] is "(" after by/without/on/...: read the label names up to ")"."""
    labels: set[str] = set()
    i += 1
    while i < len(tokens) and tokens[i][1] != ")":
        if tokens[i][0] == "ident":
            labels.add(tokens[i][1])
        elif tokens[i][1] != ",":
            raise PromQLError(f"bad label list at {tokens[i][1]!r}")
        i += 1
    if i >= len(tokens):
        raise PromQLError("unclosed label list")
    return labels, i + 1


def _word(tokens: list[tuple[str, str]], i: int, query: Query, expr: str) -> int:
    """tokens[i] is an identifier: a function, keyword, grouping clause or metric. Returns the next index."""
    text = tokens[i][1]
    following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
    word = text.lower()
    if following == "(":
        if word in GROUPING:
            labels, i = _label_list(tokens, i + 1)
            query.grouping |= labels
            return i
        if text not in FUNCTIONS and word not in AGGREGATIONS:
            raise PromQLError(f"unknown function {text}() in {expr!r}")
        return i + 1
    if (word in AGGREGATIONS and following.lower() in ("by", "without")) or word in KEYWORDS:
        return i + 1
    if text in FUNCTIONS or word in AGGREGATIONS or word in GROUPING:
        raise PromQLError(f"{text} without its arguments in {expr!r}")
    matchers: list[tuple[str, str, str]] = []
    if following == "{":
        matchers, i = _matchers(tokens, i + 1)
    else:
        i += 1
    query.selectors.append(Selector(text, tuple(matchers)))
    return i


def scan(expr: str) -> Query:
    """The metric selectors and grouping labels of a PromQL expression (Grafana variables allowed)."""
    tokens = _tokens(expr)
    query = Query()
    depth = 0
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        if text == "[":  # a range or subquery: durations, variables, ":" only
            close = next((j for j in range(i, len(tokens)) if tokens[j][1] == "]"), None)
            if close is None:
                raise PromQLError(f"unclosed [ in {expr!r}")
            i = close + 1
            continue
        if text in ("(", ")"):
            depth += 1 if text == "(" else -1
            if depth < 0:
                raise PromQLError(f"unbalanced ) in {expr!r}")
        if text == "{":  # a selector without a metric name: {__name__="..."}
            found, i = _matchers(tokens, i)
            names = [value for label, op, value in found if label == "__name__" and op == "="]
            if not names:
                raise PromQLError(f"selector without a metric name in {expr!r}")
            rest = tuple(m for m in found if m[0] != "__name__")
            query.selectors.append(Selector(names[0], rest))
            continue
        i = _word(tokens, i, query, expr) if kind == "ident" else i + 1
    if depth:
        raise PromQLError(f"unbalanced ( in {expr!r}")
    return query


def problems(expr: str) -> list[str]:
    """What in `expr` the operator does not export (empty: every series and label exists)."""
    try:
        query = scan(expr)
    except PromQLError as exc:
        return [str(exc)]
    found: list[str] = []
    available: set[str] = set(TARGET_LABELS)
    for selector in query.selectors:
        if selector.metric in PROMETHEUS_OWN:
            labels = TARGET_LABELS
        elif selector.metric in EXPORTED:
            family = EXPORTED[selector.metric]
            labels = family.labels | TARGET_LABELS
            if selector.metric.endswith("_bucket") and family.type == "histogram":
                labels |= {"le"}
        else:
            found.append(f"{selector.metric} is not exported by tenantry.observe.metrics")
            continue
        available |= labels
        for label, op, value in selector.matchers:
            if label not in labels:
                found.append(f"{selector.metric} has no label {label!r} (it has {sorted(labels)})")
            elif op in ("=", "!=") and "$" not in value and value not in KNOWN_VALUES.get(label, {value}):
                found.append(f"{selector.metric}: {label} is never {value!r}")
    found += [f"grouping by unknown label {label!r}" for label in sorted(query.grouping - available)]
    return found


def test_suffixes_match_prometheus_client() -> None:
    """The SUFFIXES table is what prometheus_client really exposes, per type."""
    registry = CollectorRegistry()
    Counter("x_total", "x", ["l"], registry=registry).labels("v").inc()
    Gauge("y", "y", ["l"], registry=registry).labels("v").set(1)
    Histogram("z_seconds", "z", ["l"], registry=registry).labels("v").observe(1)
    Summary("w_seconds", "w", ["l"], registry=registry).labels("v").observe(1)
    for collected in registry.collect():
        exposed = {s.name for s in collected.samples}
        expected = {collected.name + suffix for suffix in SUFFIXES[collected.type]}
        # `_created` can be switched off (PROMETHEUS_DISABLE_CREATED_SERIES); nothing else may differ.
        assert expected - exposed <= {collected.name + "_created"}, collected.name
        assert exposed <= expected, collected.name


def test_exported_series_are_what_the_code_defines() -> None:
    assert "tenantry_reconcile_total" in EXPORTED
    assert "tenantry_reconcile" not in EXPORTED  # a counter is only ever exposed with _total
    histogram = EXPORTED["tenantry_reconcile_duration_seconds_bucket"]
    assert histogram.name == "tenantry_reconcile_duration_seconds"
    assert "tenantry_reconcile_duration_seconds" not in EXPORTED  # a histogram has no bare series
    assert EXPORTED["tenantry_drift_corrections_total"].labels == {"kind", "change"}
    assert EXPORTED["tenantry_queue_depth"].labels == frozenset()


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("up", {"up"}),
        ('absent(up{job=~".*tenantry.*"} == 1)', {"up"}),
        (
            "histogram_quantile(0.95, sum by (le, result) "
            "(rate(tenantry_reconcile_duration_seconds_bucket[$__rate_interval])))",
            {"tenantry_reconcile_duration_seconds_bucket"},
        ),
        (
            "sum by (kind) (increase(tenantry_drift_corrections_total[15m])) > 0 or sum by (kind) "
            "(tenantry_drift_corrections_total unless tenantry_drift_corrections_total offset 15m)",
            {"tenantry_drift_corrections_total"},
        ),
        (
            'max by (resource) (tenantry_quota_use_ratio{organization="$organization", environment=~"$env"})',
            {"tenantry_quota_use_ratio"},
        ),
        ('label_replace(up, "x", "tenantry_in_a_string_total", "job", "(.*)")', {"up"}),
        ("sum without (pod) (a) / on (job) group_left (le) b offset 5m > bool 1e3", {"a", "b"}),
        ('{__name__="tenantry_queue_depth", pod="p"}', {"tenantry_queue_depth"}),
        ("max_over_time(tenantry_queue_depth[1h:5m]) @ end()", {"tenantry_queue_depth"}),
        ("topk(20, sum(tenantry_queue_depth))", {"tenantry_queue_depth"}),
    ],
)
def test_scan_finds_every_metric(expr: str, expected: set[str]) -> None:
    assert scan(expr).metrics == expected


@pytest.mark.parametrize(
    "expr",
    ["rate(tenantry_reconcile_total[5m]", "sum(x{a=1})", "rates(x[5m])", "sum by x", "x{a=", "x[5m"],
)
def test_scan_refuses_what_it_cannot_read(expr: str) -> None:
    with pytest.raises(PromQLError):
        scan(expr)


@pytest.mark.parametrize(
    ("expr", "complaint"),
    [
        ("rate(tenantry_reconciles_total[5m])", "tenantry_reconciles_total is not exported"),
        ("tenantry_reconcile", "tenantry_reconcile is not exported"),  # counter without _total
        ("tenantry_reconcile_duration_seconds > 1", "tenantry_reconcile_duration_seconds is not exported"),
        ("histogram_quantile(0.9, rate(tenantry_reconcile_total_bucket[5m]))", "not exported"),
        ('sum(tenantry_drift_corrections_total{organization="acme"})', "has no label 'organization'"),
        ("sum by (organization) (tenantry_drift_corrections_total)", "unknown label 'organization'"),
        ('tenantry_organizations{ready="false"} > 0', "ready is never 'false'"),
        ('rate(tenantry_reconcile_total{result="failed"}[5m])', "result is never 'failed'"),
        ('tenantry_queue_depth{le="1"}', "has no label 'le'"),  # le only on a histogram's _bucket
        ("rate(tenantry_reconcile_total[5m]", "unbalanced"),
    ],
)
def test_problems_catches_what_the_code_does_not_export(expr: str, complaint: str) -> None:
    found = problems(expr)
    assert any(complaint in p for p in found), found


# ---------------------------------------------------------------------------------------------
# Dashboards
# ---------------------------------------------------------------------------------------------


def load_dashboard(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panels(panel)  # rows (collapsed or not) keep their own panels


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}


def variable_query(variable: dict[str, Any]) -> str:
    query = variable.get("query", "")
    return str(query.get("query", "") if isinstance(query, dict) else query)


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every Prometheus template variable."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield f"panel {panel.get('id')} {panel.get('title')!r} {target.get('refId')}", target["expr"]
    for name, variable in variables(dashboard).items():
        if variable.get("type") != "query":
            continue
        query = variable_query(variable).strip()
        if match := re.fullmatch(r"label_values\((.+),\s*(\w+)\s*\)", query, re.DOTALL):
            # Checks the metric and that it has the label: the same rules as `group by (label) (metric)`.
            yield f"variable {name}", f"group by ({match[2]}) ({match[1]})"
        elif match := re.fullmatch(r"query_result\((.+)\)", query, re.DOTALL):
            yield f"variable {name}", match[1]
        else:
            raise AssertionError(f"variable {name}: cannot check {query!r}")


@pytest.fixture(params=DASHBOARD_FILES, ids=lambda p: p.name)
def dashboard(request: pytest.FixtureRequest) -> dict[str, Any]:
    path: Path = request.param
    return load_dashboard(path)


def test_the_expected_dashboards_exist() -> None:
    assert {p.name for p in DASHBOARD_FILES} >= {"cluster-overview.json", "organization.json"}


def test_every_dashboard_query_uses_exported_metrics(dashboard: dict[str, Any]) -> None:
    queries = list(dashboard_queries(dashboard))
    assert len(queries) >= 5, "the walker found (almost) no query: is the dashboard layout different?"
    found = [f"{where}: {p}" for where, expr in queries for p in problems(expr)]
    assert found == []


def test_dashboard_structure(dashboard: dict[str, Any]) -> None:
    ids = [p.get("id") for p in panels(dashboard)]
    assert None not in ids, "every panel needs an id"
    assert len(ids) == len(set(ids)), (
        f"duplicate panel ids: {sorted({str(i) for i in ids if ids.count(i) > 1})}"
    )
    assert dashboard["uid"] and len(dashboard["uid"]) <= 40
    defined = variables(dashboard)
    assert defined["datasource"]["type"] == "datasource"
    assert defined["datasource"]["query"] == "prometheus"
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row" or "targets" not in panel:
            continue
        # A data source chosen by the variable, so the dashboard works in any Grafana.
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]


def test_dashboard_variables_are_defined(dashboard: dict[str, Any]) -> None:
    """A typo in `$organization` matches nothing: every variable used is defined (built-ins aside)."""
    defined = set(variables(dashboard))
    texts = [expr for _, expr in dashboard_queries(dashboard)]
    texts += [p.get("title", "") for p in panels(dashboard)]
    texts += [p.get("options", {}).get("content", "") for p in panels(dashboard)]
    used = {next(g for g in m.groups() if g) for text in texts for m in _VARIABLE.finditer(text)}
    assert {u for u in used if not u.startswith("__")} <= defined


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:  # top level: rows are open, their panels follow them here
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_dashboard_uids_are_unique() -> None:
    uids = [load_dashboard(p)["uid"] for p in DASHBOARD_FILES]
    assert len(uids) == len(set(uids))


def test_overview_shows_every_exported_metric() -> None:
    """A metric nobody looks at is a metric nobody notices when it goes wrong."""
    used = {
        EXPORTED[m].name
        for _, expr in dashboard_queries(load_dashboard(DASHBOARDS / "cluster-overview.json"))
        for m in scan(expr).metrics
        if m in EXPORTED
    }
    assert {f.name for f in EXPORTED.values()} - used == set()


def test_organization_dashboard_is_about_one_organization() -> None:
    board = load_dashboard(DASHBOARDS / "organization.json")
    defined = variables(board)
    assert variable_query(defined["organization"]) == "label_values(tenantry_quota_use_ratio, organization)"
    assert defined["organization"].get("multi") is not True
    environment = variable_query(defined["environment"])
    assert 'organization="$organization"' in environment
    # Every per-organization series is filtered to the chosen organization and environments,
    # or the panel silently mixes tenants.
    checked = 0
    for where, expr in dashboard_queries(board):
        for selector in scan(expr).selectors:
            if selector.metric == "tenantry_quota_use_ratio" and where.startswith("panel"):
                assert ("organization", "=", "$organization") in selector.matchers, where
                assert ("environment", "=~", "$environment") in selector.matchers, where
                checked += 1
    assert checked >= 3


# ---------------------------------------------------------------------------------------------
# Alerts
# ---------------------------------------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    rule = yaml.safe_load(RULES.read_text())
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def test_every_alert_uses_exported_metrics() -> None:
    found = [f"{r['alert']}: {p}" for r in alert_rules() for p in problems(r["expr"])]
    assert found == []


def test_alerts_are_actionable() -> None:
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), rule["alert"]
        assert re.fullmatch(r"docs/troubleshooting\.md#[a-z0-9-]+", annotations["runbook_url"]), rule["alert"]
        if "for" in rule:
            assert re.fullmatch(r"(\d+[smh])+", rule["for"]), rule["alert"]


def test_the_alerts_cover_the_issue() -> None:
    """Quota, drift, failing reconciles, readiness, the operator itself and API errors."""
    by_metric: dict[str, set[str]] = {}
    severity: dict[str, str] = {}
    for rule in alert_rules():
        severity[rule["alert"]] = rule["labels"]["severity"]
        for metric in scan(rule["expr"]).metrics:
            by_metric.setdefault(metric, set()).add(rule["alert"])
    assert set(by_metric) >= {
        "tenantry_quota_use_ratio",
        "tenantry_drift_corrections_total",
        "tenantry_reconcile_total",
        "tenantry_organizations",
        "tenantry_api_errors_total",
        "up",
    }
    assert "critical" in {severity[a] for a in by_metric["up"]}
    quota = next(r for r in alert_rules() if "tenantry_quota_use_ratio" in scan(r["expr"]).metrics)
    assert re.search(r">\s*0\.8\b", quota["expr"])


def test_runbook_anchors_exist() -> None:
    text = TROUBLESHOOTING.read_text()
    anchors = set(re.findall(r"""<a\s+(?:id|name)=["']([^"']+)["']""", text))
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.MULTILINE):
        anchors.add(re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-"))  # GitHub's slugs
    missing = {r["annotations"]["runbook_url"] for r in alert_rules()} - {
        f"docs/troubleshooting.md#{a}" for a in anchors
    }
    assert missing == set()


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian: prometheus)")
def test_promtool_checks_the_rules_and_their_behaviour(tmp_path: Path) -> None:
    """The real PromQL parser accepts every rule, and the alert expressions select what they should."""
    assert PROMTOOL is not None
    groups = yaml.safe_load(RULES.read_text())["spec"]["groups"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    checked = subprocess.run([PROMTOOL, "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()

    expr = {r["alert"]: r["expr"] for r in alert_rules()}
    drift = 'tenantry_drift_corrections_total{kind="NetworkPolicy", change="deleted", pod="a"}'
    tests: list[dict[str, Any]] = [
        {  # the first correction of a kind creates the series at 1: it must still be seen
            "interval": "1m",
            "input_series": [{"series": drift, "values": "_x20 1x40"}],
            "promql_expr_test": [
                {"expr": expr["TenantryDriftCorrected"], "eval_time": "10m", "exp_samples": []},
                {
                    "expr": expr["TenantryDriftCorrected"],
                    "eval_time": "22m",
                    "exp_samples": [{"labels": '{kind="NetworkPolicy", change="deleted"}', "value": 1}],
                },
                {"expr": expr["TenantryDriftCorrected"], "eval_time": "50m", "exp_samples": []},
            ],
        },
        {  # no target at all, then every target down: the operator is down either way
            "interval": "1m",
            "input_series": [{"series": 'up{job="tenantry", pod="a"}', "values": "_x5 1x5 0x5"}],
            "promql_expr_test": [
                {"expr": expr["TenantryOperatorDown"], "eval_time": t, "exp_samples": samples}
                for t, samples in (("2m", [{"labels": "{}", "value": 1}]), ("8m", []))
            ]
            + [
                {
                    "expr": expr["TenantryOperatorDown"],
                    "eval_time": "13m",
                    "exp_samples": [{"labels": "{}", "value": 1}],
                }
            ],
        },
        {  # 404 is an answer, not an error; 403 is an error
            "interval": "1m",
            "input_series": [
                {"series": 'tenantry_api_errors_total{verb="get", code="404"}', "values": "0+5x20"},
                {"series": 'tenantry_api_errors_total{verb="apply", code="403"}', "values": "0+1x20"},
            ],
            "promql_expr_test": [
                {
                    "expr": expr["TenantryApiErrors"],
                    "eval_time": "10m",
                    "exp_samples": [{"labels": '{verb="apply", code="403"}', "value": 1 / 60}],
                }
            ],
        },
        {
            "interval": "1m",
            "input_series": [
                {
                    "series": 'tenantry_quota_use_ratio{organization="acme", environment="prod", '
                    'resource="pods", pod="a"}',
                    "values": "0.9x5",
                },
                {
                    "series": 'tenantry_quota_use_ratio{organization="acme", environment="dev", '
                    'resource="pods", pod="a"}',
                    "values": "0.8x5",
                },
            ],
            "promql_expr_test": [
                {
                    "expr": expr["TenantryQuotaUseHigh"],
                    "eval_time": "3m",
                    "exp_samples": [
                        {
                            "labels": '{organization="acme", environment="prod", resource="pods"}',
                            "value": 0.9,
                        }
                    ],
                }
            ],
        },
        {  # exhausted 1 for an organization and resource; 0 elsewhere (one series per replica)
            "interval": "1m",
            "input_series": [
                {
                    "series": 'tenantry_quota_pool_exhausted{organization="acme", resource="pods", pod="a"}',
                    "values": "1x5",
                },
                {
                    "series": 'tenantry_quota_pool_exhausted{organization="beta", resource="pods", pod="a"}',
                    "values": "0x5",
                },
            ],
            "promql_expr_test": [
                {
                    "expr": expr["TenantryQuotaPoolExhausted"],
                    "eval_time": "3m",
                    "exp_samples": [{"labels": '{organization="acme", resource="pods"}', "value": 1}],
                }
            ],
        },
    ]
    (tmp_path / "tests.yaml").write_text(
        yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests})
    )
    ran = subprocess.run([PROMTOOL, "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True)
    assert ran.returncode == 0, ran.stdout.decode() + ran.stderr.decode()


# ---------------------------------------------------------------------------------------------
# Scraping and packaging
# ---------------------------------------------------------------------------------------------


def test_service_monitor_targets_the_operator_metrics_port() -> None:
    monitor = yaml.safe_load(SERVICE_MONITOR.read_text())
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "ServiceMonitor"
    spec = monitor["spec"]
    assert spec["namespaceSelector"] == {"matchNames": ["tenantry-system"]}
    assert spec["selector"] == {"matchLabels": {"app.kubernetes.io/name": "tenantry"}}
    assert [e["port"] for e in spec["endpoints"]] == ["metrics"]
    # job="tenantry", which the alerts' job=~".*tenantry.*" matches whatever the Service's name.
    assert spec["jobLabel"] in spec["selector"]["matchLabels"]


def _operator_manifests() -> Iterator[dict[str, Any]]:
    for path in sorted((ROOT / "manifests").rglob("*.yaml")):
        if MONITORING in path.parents or (ROOT / "manifests" / "argocd") in path.parents:
            continue
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError:
            continue
        yield from (d for d in docs if isinstance(d, dict))


def test_service_monitor_matches_the_operator_service() -> None:
    monitor = yaml.safe_load(SERVICE_MONITOR.read_text())["spec"]
    wanted = monitor["selector"]["matchLabels"]
    namespaces = monitor["namespaceSelector"]["matchNames"]
    services = [
        d
        for d in _operator_manifests()
        if d.get("kind") == "Service"
        and d.get("metadata", {}).get("namespace", "tenantry-system") in namespaces
        and wanted.items() <= (d.get("metadata", {}).get("labels") or {}).items()
    ]
    assert services, "the ServiceMonitor selects no Service of manifests/base"
    ports = {p.get("name") for s in services for p in s["spec"]["ports"]}
    assert {e["port"] for e in monitor["endpoints"]} <= ports


def test_kustomization_ships_every_dashboard_to_the_grafana_sidecar() -> None:
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {"servicemonitor.yaml", "prometheusrule.yaml"}
    (generator,) = kustomization["configMapGenerator"]
    assert sorted(generator["files"]) == [f"dashboards/{p.name}" for p in DASHBOARD_FILES]
    assert generator["options"]["labels"]["grafana_dashboard"] == "1"
    assert kustomization["generatorOptions"]["disableNameSuffixHash"] is True


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomize_build() -> None:
    kubectl = shutil.which("kubectl")
    assert kubectl is not None
    built = subprocess.run([kubectl, "kustomize", str(MONITORING)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    objects = {d["kind"]: d for d in yaml.safe_load_all(built.stdout)}
    assert set(objects) == {"ConfigMap", "PrometheusRule", "ServiceMonitor"}
    assert {d["metadata"]["namespace"] for d in objects.values()} == {"tenantry-system"}
    config_map = objects["ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["data"] == {p.name: p.read_text() for p in DASHBOARD_FILES}
    # kubectl apply (client-side) copies it into an annotation, limited to 256 KiB.
    assert len(json.dumps(config_map["data"])) < 200_000
