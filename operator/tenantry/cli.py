"""`tenantry`: render and validate Organizations offline, print CRDs, run the operator.

Exit codes: 0 success, 1 invalid input, 2 usage or I/O error (bad flags, unreadable file,
output that cannot be written). No other exit code, and no traceback, for any input.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from tenantry import __version__
from tenantry.api.access import parse_timestamp
from tenantry.api.crd import all_crds
from tenantry.api.documents import (
    MAX_INPUT_BYTES,
    Documents,
    Located,
    decode,
    dump_yaml,
    parse_documents,
)
from tenantry.api.policy import TenancyPolicy, select_policy
from tenantry.api.problems import InvalidObjectError, Problem, escape
from tenantry.render import (
    render_organization,
    render_policy_objects,
    render_shared_cluster_roles,
    start_of,
)
from tenantry.render.checks import collisions, with_policy_environments
from tenantry.render.crosstenant import unmatched_exceptions

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A problem with how the command was called, not with the objects (exit code 2)."""


def _read_bytes(path: str) -> bytes:
    """At most MAX_INPUT_BYTES + 1 bytes of a file or stdin (so /dev/zero ends, refused)."""
    if path == "-":
        stream = getattr(sys.stdin, "buffer", None)
        if stream is not None:
            return bytes(stream.read(MAX_INPUT_BYTES + 1))
        return sys.stdin.read(MAX_INPUT_BYTES + 1).encode("utf-8", "surrogateescape")
    if not path:
        raise UsageError("-f needs a file name (or - for standard input), got an empty string")
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"cannot read {escape(path)}: it is a directory; name the YAML files in it")
    try:
        with target.open("rb") as handle:
            return handle.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {escape(path)}: {exc.strerror or exc}") from exc


def _read(paths: Sequence[str]) -> Documents:
    merged = Documents()
    if list(paths).count("-") > 1:
        raise UsageError("standard input (-) can be read only once; name it in one -f or --policy")
    for path in paths:
        data = _read_bytes(path)
        source = "<stdin>" if path == "-" else path
        if len(data) > MAX_INPUT_BYTES:
            merged.problems.append(
                Located(
                    source,
                    "file",
                    Problem(
                        "",
                        f"is larger than {MAX_INPUT_BYTES // (1024 * 1024)} MiB, the limit of one input; "
                        "split it into several files (each -f may be that large)",
                    ),
                )
            )
            continue
        text = decode(data)
        if isinstance(text, Problem):
            merged.problems.append(Located(source, "file", text))
            continue
        docs = parse_documents(text, source)
        merged.organizations += docs.organizations
        merged.policies += docs.policies
        merged.problems += docs.problems
        merged.partial += docs.partial
    return merged


def _policies(docs: Documents) -> tuple[dict[str, TenancyPolicy], list[Located]]:
    found: dict[str, TenancyPolicy] = {}
    problems: list[Located] = []
    for source, policy in docs.policies:
        if policy.name in found:
            problems.append(
                Located(
                    source, f"TenancyPolicy/{policy.name}", Problem("metadata.name", "defined more than once")
                )
            )
        found[policy.name] = policy
    return found, problems


def _today(value: str | None) -> dt.date:
    if value is None:
        return dt.date.today()
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise UsageError(f"--today {value!r} is not a date (YYYY-MM-DD)") from exc


def _clock(args: argparse.Namespace) -> tuple[dt.date, dt.datetime]:
    """(today, now): `--now` (RFC 3339) decides which grants are in force; without it, the start
    of `--today` (UTC) when given, else the current time. `--today` defaults to `--now`'s date."""
    now: dt.datetime | None = None
    if getattr(args, "now", None) is not None:
        try:
            now = parse_timestamp(args.now)
        except ValueError as exc:
            raise UsageError(f"--now {args.now!r} is not an RFC 3339 time (2026-11-26T18:00:00Z)") from exc
    if args.today is None and now is not None:
        return now.date(), now
    today = _today(args.today)
    if now is None:
        now = start_of(today) if args.today is not None else dt.datetime.now(dt.UTC)
    return today, now


def _render_all(
    docs: Documents,
    policies: dict[str, TenancyPolicy],
    today: dt.date,
    policy_hint: str,
    now: dt.datetime | None = None,
) -> tuple[list[str], list[Located]]:
    """The Organizations that render, and every problem (the objects are not kept)."""
    rendered: list[str] = []
    problems: list[Located] = []
    chosen: dict[str, TenancyPolicy | None] = {}
    for _, org in docs.organizations:
        if org.spec.policy not in chosen:
            chosen[org.spec.policy] = select_policy(org.spec.policy, policies)
    # Cross-Organization checks see the namespaces each will have: the policy's environments
    # for an Organization that names none.
    orgs = [
        with_policy_environments(org, policy) if (policy := chosen[org.spec.policy]) else org
        for _, org in docs.organizations
    ]
    clashes = collisions(orgs)
    for index, (source, org) in enumerate(docs.organizations):
        where = f"Organization/{org.name}"
        problems += [Located(source, where, p) for p in clashes.get(index, [])]
        policy = chosen[org.spec.policy]
        if policy is None:
            known = ", ".join(sorted({*policies, "default"}))
            problems.append(
                Located(
                    source,
                    where,
                    Problem(
                        "spec.policy",
                        f"TenancyPolicy {org.spec.policy!r} was not given ({policy_hint}; known: {known})",
                    ),
                )
            )
            continue
        try:
            rendering = render_organization(org, policy, today, now)
        except InvalidObjectError as exc:
            problems += [Located(source, where, p) for p in exc.problems]
            continue
        rendered.append(org.name)
        problems += [Located(source, where, w) for w in rendering.warnings]
    sources = {org.name: source for source, org in docs.organizations}
    for name, warnings in unmatched_exceptions(orgs, today).items():
        problems += [Located(sources[name], f"Organization/{name}", w) for w in warnings]
    problems += _check_partial(docs, policies, today, now)
    return rendered, problems


def _check_partial(
    docs: Documents, policies: dict[str, TenancyPolicy], today: dt.date, now: dt.datetime | None
) -> list[Located]:
    """The policy's problems of Organizations that also have schema errors, in one run with
    those (what the schema refused was left out; api/repair.py). A missing policy was or will
    be reported with the schema errors' fix; it is not repeated here."""
    problems: list[Located] = []
    for partial in docs.partial:
        org = partial.organization
        policy = select_policy(org.spec.policy, policies)
        if policy is None:
            continue
        try:
            rendering = render_organization(org, policy, today, now)
            found = rendering.warnings
        except InvalidObjectError as exc:
            found = exc.problems
        for problem in found:
            located = partial.reduction.locate(problem)
            if located is not None and located.severity != "note":
                problems.append(Located(partial.source, f"Organization/{org.name}", located))
    return problems


def _report(problems: list[Located], stream: TextIO) -> bool:
    """Print problems; True when any is an error."""
    for located in problems:
        print(located, file=stream)
    return any(p.problem.severity == "error" for p in problems)


def _read_with_policies(args: argparse.Namespace, verb: str) -> Documents:
    """The -f files, plus the TenancyPolicies of the --policy files (render and validate alike)."""
    if [*args.filename, *args.policy].count("-") > 1:
        raise UsageError("standard input (-) can be read only once; name it in one -f or --policy")
    docs = _read(args.filename)
    policy_docs = _read(args.policy)
    docs.policies += policy_docs.policies
    docs.problems += policy_docs.problems
    docs.problems += [
        Located(
            source,
            f"Organization/{org.name}",
            Problem("", f"is in a --policy file, so it is not {verb}; pass Organizations with -f"),
        )
        for source, org in [
            *policy_docs.organizations,
            *((p.source, p.organization) for p in policy_docs.partial),
        ]
    ]
    return docs


def cmd_render(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    docs = _read_with_policies(args, "rendered")
    policies, dupes = _policies(docs)
    today, now = _clock(args)
    _, problems = _render_all(docs, policies, today, "pass its file with --policy or -f", now)
    failed = _report([*docs.problems, *dupes, *problems], err)
    if not docs.organizations and not args.include_cluster_objects and not failed:
        raise UsageError("no Organization found in the given files")
    if failed:
        print("render: nothing written, fix the errors above", file=err)
        return EXIT_INVALID
    if args.include_cluster_objects:
        out.write(dump_yaml(render_shared_cluster_roles()))
        for policy in policies.values():
            out.write(dump_yaml(render_policy_objects(policy)))
    # Written one Organization at a time: the first pass kept no objects, so memory stays that
    # of the parsed models however many Organizations there are.
    chosen: dict[str, TenancyPolicy | None] = {}
    for _, org in docs.organizations:
        if org.spec.policy not in chosen:
            chosen[org.spec.policy] = select_policy(org.spec.policy, policies)
        selected = chosen[org.spec.policy]
        assert selected is not None  # the first pass refused a missing policy
        out.write(dump_yaml(render_organization(org, selected, today, now).objects))
    return EXIT_OK


def cmd_validate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    docs = _read_with_policies(args, "validated")
    policies, dupes = _policies(docs)
    today, now = _clock(args)
    _, problems = _render_all(docs, policies, today, "add its file with --policy or another -f", now)
    failed = _report([*docs.problems, *dupes, *problems], err)
    count = len(docs.organizations) + len(docs.policies)
    if failed:
        errors = sum(1 for p in [*docs.problems, *dupes, *problems] if p.problem.severity == "error")
        print(f"invalid: {errors} error(s)", file=err)
        return EXIT_INVALID
    print(
        f"valid: {len(docs.organizations)} Organization(s), {len(docs.policies)} TenancyPolicy(ies)", file=out
    )
    return EXIT_OK if count else EXIT_INVALID


def cmd_crds(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    crds = all_crds()
    if args.output_dir is not None:
        target = Path(args.output_dir)
        if not args.output_dir or (target.exists() and not target.is_dir()):
            raise UsageError(f"--output-dir {escape(args.output_dir)!r} is not a directory")
        try:
            target.mkdir(parents=True, exist_ok=True)
            for crd in crds:
                path = target / f"{crd['metadata']['name']}.yaml"
                path.write_text(dump_yaml([crd]), encoding="utf-8")
                print(f"wrote {escape(str(path))}", file=err)
        except OSError as exc:
            raise UsageError(f"cannot write into {escape(args.output_dir)}: {exc.strerror or exc}") from exc
        return EXIT_OK
    out.write(dump_yaml(crds))
    return EXIT_OK


def cmd_roles(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    out.write(dump_yaml(render_shared_cluster_roles()))
    return EXIT_OK


def cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run the operator (imports the shell lazily: render/validate need no Kopf start-up)."""
    import kopf

    from tenantry.kube.credentials import CredentialsError, load_connection
    from tenantry.observe.logging import configure
    from tenantry.reconcile.config import Config
    from tenantry.reconcile.frame import register
    from tenantry.reconcile.runtime import Runtime

    configure(args.log_level, json_logs=None if args.log_format == "auto" else args.log_format == "json")
    try:
        connection = load_connection(args.kubeconfig)
    except CredentialsError as exc:
        raise UsageError(str(exc)) from exc
    if args.metrics_port:
        from prometheus_client import start_http_server

        from tenantry.observe.metrics import REGISTRY

        start_http_server(args.metrics_port, registry=REGISTRY)
    identity = f"{socket.gethostname()}-{os.getpid()}-{random.randrange(16**6):06x}"
    runtime = Runtime(
        connection,
        Config(
            reload_credentials=lambda: load_connection(args.kubeconfig),
            workers=args.workers,
            applies_in_flight=args.applies_in_flight,
            resync_seconds=args.resync_seconds,
            operator_namespace=args.operator_namespace,
            leader_election=not args.standalone,
            lease_name=args.lease_name,
            identity=identity,
            max_backoff=args.max_backoff_seconds,
        ),
    )
    registry = kopf.OperatorRegistry()
    register(registry, runtime)
    # Kopf runs standalone in every replica: it watches nothing (the informers do), and which
    # replica writes is decided by the Lease, so Kopf's peering CRDs are not needed.
    kopf.run(
        registry=registry,
        clusterwide=True,
        standalone=True,
        liveness_endpoint=args.liveness,
    )
    return EXIT_OK


EPILOG = """exit codes:
  0  success (validate: everything valid; warnings are printed but do not fail)
  1  invalid input: the errors are printed, each with file, object, field path and what is allowed
  2  usage or I/O error: bad options, an unreadable file, output that cannot be written"""


def _files_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "-f",
        "--filename",
        action="append",
        default=[],
        required=True,
        metavar="FILE",
        help=f"YAML file with {what} (one or many documents), or - for standard input; repeatable. "
        f"Each file may be at most {MAX_INPUT_BYTES // (1024 * 1024)} MiB, UTF-8.",
    )


def _at_least_one(text: str) -> int:
    """A count for argparse: a whole number of at least 1 (0 would mean: never do anything)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _positive(text: str) -> float:
    """Seconds for argparse: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="tenantry",
        description="Multi-tenancy for Kubernetes from one constitution: render and validate "
        "Organizations and TenancyPolicies offline, print the CRDs, run the operator.",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"tenantry {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    render = sub.add_parser(
        "render",
        help="print the objects Organizations render to (YAML)",
        description="Print, as multi-document YAML, every object the operator would apply for the "
        "given Organizations, byte for byte. Nothing is printed when any input is invalid. An "
        "Organization without spec.environments gets every environment of its policy.",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    _files_option(render, "Organizations (TenancyPolicies in them are used too)")
    render.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="FILE",
        help="YAML file with TenancyPolicies (repeatable); without one, policy 'default' is the "
        "built-in default policy",
    )
    render.add_argument("--today", help="date for exception expiry (YYYY-MM-DD; default: today)")
    render.add_argument(
        "--now",
        help="time for grant expiry (RFC 3339, e.g. 2026-11-26T18:00:00Z; default: now, or the "
        "start of --today)",
    )
    render.add_argument(
        "--include-cluster-objects",
        action="store_true",
        help="also print the shared tenant ClusterRoles and the policies' platform-admin bindings",
    )
    render.set_defaults(handler=cmd_render)

    validate = sub.add_parser(
        "validate",
        help="check Organizations and TenancyPolicies",
        description="Check Organizations and TenancyPolicies as the API server (CRD schema and CEL "
        "rules) and the operator (the policy's rules) would. Give the policies an Organization "
        "names in the same run (--policy, or another -f); 'default' is built in. Prints every problem with "
        "file, object, field path and what is allowed, then a summary line.",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    _files_option(validate, "Organizations and/or TenancyPolicies")
    validate.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="FILE",
        help="YAML file with TenancyPolicies (repeatable); without one, policy 'default' is the "
        "built-in default policy",
    )
    validate.add_argument("--today", help="date for exception expiry (YYYY-MM-DD; default: today)")
    validate.add_argument(
        "--now", help="time for grant expiry (RFC 3339; default: now, or the start of --today)"
    )
    validate.set_defaults(handler=cmd_validate)

    crds = sub.add_parser(
        "crds",
        help="print the CustomResourceDefinitions",
        description="Print the CRDs, generated from the models (or write one file per CRD).",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    crds.add_argument("--output-dir", metavar="DIR", help="write one file per CRD into this directory")
    crds.set_defaults(handler=cmd_crds)

    run = sub.add_parser(
        "run",
        help="run the operator against the cluster",
        description="Watch Organizations and TenancyPolicies and keep the cluster as they render.",
    )
    run.add_argument(
        "--kubeconfig", help="kubeconfig file (default: in-cluster, then $KUBECONFIG/~/.kube/config)"
    )
    run.add_argument("--workers", type=_at_least_one, default=4, help="Organizations reconciled in parallel")
    run.add_argument(
        "--applies-in-flight",
        type=_at_least_one,
        default=8,
        help="writes one reconcile sends at once (the objects of one apply wave)",
    )
    run.add_argument(
        "--resync-seconds", type=float, default=300.0, help="full re-check of every Organization"
    )
    run.add_argument(
        "--max-backoff-seconds",
        type=_positive,
        default=15.0,
        help="longest wait before an Organization whose writes failed is retried (exponential "
        "from 0.5 s; never sooner than the API server's Retry-After)",
    )
    run.add_argument("--operator-namespace", default="tenantry-system", help="where the operator runs")
    run.add_argument(
        "--lease-name",
        default="tenantry",
        help="leader-election Lease in --operator-namespace: only its holder writes (hot standby replicas)",
    )
    run.add_argument(
        "--standalone",
        action="store_true",
        help="no leader election: this process always writes (one replica only, e.g. from a laptop)",
    )
    run.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="liveness endpoint URL")
    run.add_argument("--metrics-port", type=int, default=9090, help="Prometheus metrics (0: off)")
    run.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    run.add_argument("--log-format", choices=["auto", "json", "console"], default="auto", help="log format")
    run.set_defaults(handler=cmd_run)

    roles = sub.add_parser(
        "roles",
        help="print the shared tenant ClusterRoles",
        description="Print the shared tenant ClusterRoles (admin, developer, developer-exec, "
        "viewer) that every Organization's RoleBindings reference.",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    roles.set_defaults(handler=cmd_roles)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args, out, err)
        out.flush()  # a full disk or a closed pipe shows here, not as a traceback at exit
    except UsageError as exc:
        print(f"tenantry: error: {exc}", file=err)
        return EXIT_USAGE
    except BrokenPipeError:
        # `tenantry render ... | head`: the reader left; not an error of ours, nothing to report.
        _silence(out)
        return EXIT_USAGE
    except OSError as exc:
        _silence(out)
        print(f"tenantry: error: cannot write the output: {exc.strerror or exc}", file=err)
        return EXIT_USAGE
    return code


def _silence(stream: TextIO) -> None:
    """Point a failed stdout at /dev/null so the interpreter's final flush does not fail again."""
    if stream is sys.stdout:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):  # pragma: no cover - stdout without a file descriptor
            pass


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
