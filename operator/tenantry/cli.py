"""`tenantry`: render and validate Organizations offline, print CRDs, run the operator.

Exit codes: 0 success, 1 invalid input, 2 usage error (bad flags, unreadable file).
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
from typing import Any, TextIO

from tenantry import __version__
from tenantry.api.crd import all_crds
from tenantry.api.documents import Documents, Located, dump_yaml, parse_documents
from tenantry.api.policy import TenancyPolicy, select_policy
from tenantry.api.problems import InvalidObjectError, Problem
from tenantry.render import render_organization, render_policy_objects, render_shared_cluster_roles
from tenantry.render.crosstenant import unmatched_exceptions

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A problem with how the command was called, not with the objects (exit code 2)."""


def _read(paths: Sequence[str]) -> Documents:
    merged = Documents()
    for path in paths:
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
        docs = parse_documents(text, "<stdin>" if path == "-" else path)
        merged.organizations += docs.organizations
        merged.policies += docs.policies
        merged.problems += docs.problems
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


def _render_all(
    docs: Documents, policies: dict[str, TenancyPolicy], today: dt.date
) -> tuple[list[dict[str, Any]], list[Located]]:
    objects: list[dict[str, Any]] = []
    problems: list[Located] = []
    for source, org in docs.organizations:
        where = f"Organization/{org.name}"
        policy = select_policy(org.spec.policy, policies)
        if policy is None:
            known = ", ".join(sorted({*policies, "default"}))
            problems.append(
                Located(
                    source,
                    where,
                    Problem(
                        "spec.policy",
                        f"TenancyPolicy {org.spec.policy!r} was not given "
                        f"(pass it with --policy; known: {known})",
                    ),
                )
            )
            continue
        try:
            rendering = render_organization(org, policy, today)
        except InvalidObjectError as exc:
            problems += [Located(source, where, p) for p in exc.problems]
            continue
        objects += rendering.objects
        problems += [Located(source, where, w) for w in rendering.warnings]
    sources = {org.name: source for source, org in docs.organizations}
    for name, warnings in unmatched_exceptions([o for _, o in docs.organizations], today).items():
        problems += [Located(sources[name], f"Organization/{name}", w) for w in warnings]
    return objects, problems


def _report(problems: list[Located], stream: TextIO) -> bool:
    """Print problems; True when any is an error."""
    for located in problems:
        print(located, file=stream)
    return any(p.problem.severity == "error" for p in problems)


def cmd_render(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    docs = _read([*args.filename, *args.policy])
    policies, dupes = _policies(docs)
    objects, problems = _render_all(docs, policies, _today(args.today))
    if args.include_cluster_objects:
        objects = (
            render_shared_cluster_roles()
            + [o for p in policies.values() for o in render_policy_objects(p)]
            + objects
        )
    failed = _report([*docs.problems, *dupes, *problems], err)
    if not docs.organizations and not args.include_cluster_objects and not failed:
        raise UsageError("no Organization found in the given files")
    if failed:
        print("render: nothing written, fix the errors above", file=err)
        return EXIT_INVALID
    out.write(dump_yaml(objects))
    return EXIT_OK


def cmd_validate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    docs = _read(args.filename)
    policies, dupes = _policies(docs)
    _, problems = _render_all(docs, policies, _today(args.today))
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
    if args.output_dir:
        target = Path(args.output_dir)
        target.mkdir(parents=True, exist_ok=True)
        for crd in crds:
            path = target / f"{crd['metadata']['name']}.yaml"
            path.write_text(dump_yaml([crd]), encoding="utf-8")
            print(f"wrote {path}", file=err)
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
    from tenantry.reconcile.runtime import Config, Runtime, register

    configure(args.log_level, json_logs=None if args.log_format == "auto" else args.log_format == "json")
    try:
        connection = load_connection(args.kubeconfig)
    except CredentialsError as exc:
        raise UsageError(str(exc)) from exc
    if args.metrics_port:
        from prometheus_client import start_http_server

        from tenantry.observe.metrics import REGISTRY

        start_http_server(args.metrics_port, registry=REGISTRY)
    # Kopf freezes replicas of equal priority; a random draw keeps Deployment replicas distinct.
    priority = args.priority if args.priority is not None else random.randint(1, 2**31 - 1)
    identity = f"{socket.gethostname()}-{os.getpid()}-{random.randrange(16**6):06x}"
    runtime = Runtime(
        connection,
        Config(
            reload_credentials=lambda: load_connection(args.kubeconfig),
            workers=args.workers,
            resync_seconds=args.resync_seconds,
            operator_namespace=args.operator_namespace,
            peering=None if args.standalone else args.peering,
            priority=priority,
            identity=identity,
        ),
    )
    registry = kopf.OperatorRegistry()
    register(registry, runtime)
    kopf.run(
        registry=registry,
        clusterwide=True,
        standalone=args.standalone,
        peering_name=None if args.standalone else args.peering,
        priority=priority,
        identity=identity,  # type: ignore[arg-type]  # kopf does not export its Identity NewType
        liveness_endpoint=args.liveness,
    )
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tenantry", description="Multi-tenancy for Kubernetes from one constitution."
    )
    parser.add_argument("--version", action="version", version=f"tenantry {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    render = sub.add_parser("render", help="print the objects Organizations render to (YAML)")
    render.add_argument(
        "-f", "--filename", action="append", default=[], required=True, help="file or - (repeatable)"
    )
    render.add_argument("--policy", action="append", default=[], help="TenancyPolicy file (repeatable)")
    render.add_argument("--today", help="date for exception expiry (YYYY-MM-DD; default: today)")
    render.add_argument(
        "--include-cluster-objects",
        action="store_true",
        help="also print the shared tenant ClusterRoles and the policies' platform-admin bindings",
    )
    render.set_defaults(handler=cmd_render)

    validate = sub.add_parser("validate", help="check Organizations and TenancyPolicies")
    validate.add_argument("-f", "--filename", action="append", default=[], required=True)
    validate.add_argument("--today", help="date for exception expiry (YYYY-MM-DD; default: today)")
    validate.set_defaults(handler=cmd_validate)

    crds = sub.add_parser("crds", help="print the CustomResourceDefinitions")
    crds.add_argument("--output-dir", help="write one file per CRD into this directory")
    crds.set_defaults(handler=cmd_crds)

    run = sub.add_parser("run", help="run the operator against the cluster")
    run.add_argument(
        "--kubeconfig", help="kubeconfig file (default: in-cluster, then $KUBECONFIG/~/.kube/config)"
    )
    run.add_argument("--workers", type=int, default=4)
    run.add_argument("--resync-seconds", type=float, default=300.0)
    run.add_argument("--operator-namespace", default="tenantry-system")
    run.add_argument("--peering", default="tenantry", help="Kopf peering name (hot standby replicas)")
    run.add_argument(
        "--priority",
        type=int,
        default=None,
        help="distinct per replica; the highest is active (default: random, so replicas differ)",
    )
    run.add_argument("--standalone", action="store_true", help="no peering (single replica)")
    run.add_argument("--liveness", default="http://0.0.0.0:8080/healthz")
    run.add_argument("--metrics-port", type=int, default=9090)
    run.add_argument("--log-level", default="INFO")
    run.add_argument("--log-format", choices=["auto", "json", "console"], default="auto")
    run.set_defaults(handler=cmd_run)

    roles = sub.add_parser("roles", help="print the shared tenant ClusterRoles")
    roles.set_defaults(handler=cmd_roles)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args, out, err)
    except UsageError as exc:
        print(f"tenantry: error: {exc}", file=err)
        return EXIT_USAGE
    return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
