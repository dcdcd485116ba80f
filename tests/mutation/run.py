"""A small mutation check: does each promise's test fail when the code behind it is removed?

Each mutant is a named, minimal source edit (the code behind one promise, taken out) and the
tests that must notice it. For each mutant the script

1. copies the repository (the working tree's tracked and untracked-but-not-ignored files, or
   with ``--ref`` a commit, via ``git archive``) into a temporary directory: the working tree
   is never edited, as other people run tests in it at the same time;
2. applies the edit there; a target text that is not found exactly ``count`` times is an
   error (exit 2), so a refactor cannot silently turn a mutant into a no-op: update the mutant;
3. runs ``python -m pytest -x -q -p no:cacheprovider <tests>`` in the copy, with
   ``cwd`` = the copy and ``PYTHONPATH=<copy>/operator:<copy>`` (checked: the copy's
   ``tenantry`` is the one imported, not the editable install of the working tree);
4. reports the mutant as killed (the tests failed) or survived (they passed).

Before the mutants, the union of their tests runs once on an unmutated copy: a test that
fails anyway would "kill" every mutant and prove nothing (exit 2).

Exit status: 0 every mutant killed, 1 some mutant survived, 2 the check itself is broken
(a mutant does not apply, the baseline fails, the wrong package is imported).

Not part of the default pytest run (it runs the chosen tests once per mutant). Run it from
the repository root with the project's interpreter:

    .venv/bin/python tests/mutation/run.py             # every mutant, about a minute
    .venv/bin/python tests/mutation/run.py -k queue    # mutants whose name contains "queue"
    .venv/bin/python tests/mutation/run.py --list      # names, targets and tests
    .venv/bin/python tests/mutation/run.py --ref HEAD  # mutate a commit, not the working tree
    .venv/bin/python tests/mutation/run.py -j 2        # two mutants at a time

(Measured on 2026-12-05 after issues 15, 16, 17, 18, 20, 21 and 22: 87 mutants, all killed, 233 s
with -j 2 on a 2-CPU machine. The quota pool's property-based mutants take the longest, since
hypothesis may need many examples to find them, and then the integration mutants: the
terminating-namespace one waits for two 2-second requeues, ~17 s.)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

ONBOARDING = "tests/integration/test_onboarding.py"
LIFECYCLE = "tests/integration/test_lifecycle.py"
PROMISES = "tests/integration/test_promises.py"
RBAC = "tests/unit/test_render_rbac.py"
GUARDRAILS = "tests/unit/test_admission_guardrails.py"
DRIFT = "tests/integration/test_drift.py"
OWNERSHIP = "tests/integration/test_ownership.py"
QUOTA_IN_FORCE = "tests/integration/test_quota_in_force.py"
NO_OP_RESYNC = f"{ONBOARDING}::test_a_no_op_resync_makes_zero_writes"
RESTART = f"{LIFECYCLE}::test_restart_converges_with_zero_writes"
BAD_DAYS = "tests/integration/test_bad_days.py"
UNIT_BAD_DAYS = "tests/unit/test_bad_days.py"
INVALID_ACCESS = "tests/integration/test_invalid_access.py"
PERMITTED = "tests/unit/test_render_permitted.py"
SELF_SERVICE = "tests/unit/test_admission_self_service.py"
POOL_CORE = "tests/unit/test_pool_core.py"
POOL = "tests/integration/test_quota_pool.py"
POLICY_BINDING = "tests/integration/test_policy_binding.py"


@dataclasses.dataclass(frozen=True)
class Mutant:
    name: str
    promise: str
    path: str  # relative to the repository root
    old: str
    new: str
    tests: tuple[str, ...]
    count: int = 1  # how often `old` must occur (all occurrences are replaced)


MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "in_sync-always-false",
        "a no-op resync and a restart make zero writes",
        "operator/tenantry/kube/drift.py",
        '    """Would applying `desired` change `live`? (False means: write.)"""\n',
        '    """Would applying `desired` change `live`? (False means: write.)"""\n    return False\n',
        (NO_OP_RESYNC, RESTART),
    ),
    Mutant(
        "same_status-always-false",
        "the status is written only when it changed (zero writes on a no-op resync)",
        "operator/tenantry/reconcile/status.py",
        '    a = {k: v for k, v in (a or {}).items() if k != "kopf"}\n',
        "    return False\n",
        (NO_OP_RESYNC, RESTART),
    ),
    Mutant(
        "applied-before-forgotten",
        "drift while the operator was down is recognised (status.appliedObjects) and reported",
        "operator/tenantry/reconcile/organization.py",
        'applied_before = (body.get("status") or {}).get("appliedObjects") == fingerprint',
        "applied_before = False",
        (f"{PROMISES}::test_drift_while_the_operator_was_down_is_reported_in_events_and_metrics",),
    ),
    Mutant(
        "apply-waves-ignored",
        "a Namespace before its objects, guardrails before what they guard, roles before bindings",
        "operator/tenantry/reconcile/organization.py",
        'wave = res.kind_of(obj["apiVersion"], obj["kind"]).wave',
        "wave = 0",
        (f"{ONBOARDING}::test_objects_are_applied_in_waves_namespace_guardrails_rest_bindings",),
    ),
    Mutant(
        "no-yield-between-reconciles",
        "drift found during a pass over every Organization is not held until the pass ends",
        "operator/tenantry/reconcile/workers.py",
        "            await asyncio.sleep(0)\n            self.progress = time.monotonic()\n",
        "            self.progress = time.monotonic()\n",
        (f"{PROMISES}::test_drift_during_a_pass_over_every_organization_is_healed_before_the_pass_ends",),
    ),
    Mutant(
        "appliedObjects-not-kept",
        "status.appliedObjects is written, so it survives a restart",
        "operator/tenantry/reconcile/status.py",
        "    if applied:\n",
        "    if False:\n",
        (
            f"{PROMISES}::test_drift_while_the_operator_was_down_is_reported_in_events_and_metrics",
            "tests/unit/test_status.py",
        ),
    ),
    Mutant(
        "spec-change-is-drift",
        "an object that changes because the spec changed is not reported as drift",
        "operator/tenantry/reconcile/organization.py",
        "        if live is not None and applied_before:\n",
        "        if live is not None:\n",
        (f"{PROMISES}::test_a_spec_change_is_not_reported_as_drift",),
    ),
    Mutant(
        "expected_deletions-add-removed",
        "our own deletions are not drift (no DriftCorrected Event, no drift metric)",
        "operator/tenantry/reconcile/organization.py",
        "        self.cluster.expected_deletions.add(key)\n",
        "",
        (f"{PROMISES}::test_our_own_prune_is_not_reported_as_drift",),
    ),
    Mutant(
        "expected-deletion-tombstone-kept",
        "our own deletions leave no tombstone (re-creating the environment is not drift)",
        "operator/tenantry/reconcile/events.py",
        "                inventory.forget_tombstone(key)\n",
        "",
        (
            "tests/unit/test_runtime_events.py",
            f"{PROMISES}::test_our_own_prune_is_not_reported_as_drift",
        ),
    ),
    Mutant(
        "drifted_before_seen-ignored",
        "drift seen before its Organization (start-up) is healed first",
        "operator/tenantry/reconcile/events.py",
        "drifted = name in self.drifted_before_seen",
        "drifted = False",
        ("tests/unit/test_runtime_events.py",),
    ),
    Mutant(
        "crd-deletion-carries-out-the-deletion-policy",
        "an Organization deleted with its CRD leaves its namespaces untouched",
        "operator/tenantry/reconcile/organization.py",
        "        if await self.cluster.crd_going_away(res.ORGANIZATION_CRD):\n",
        "        if False:\n",
        ("tests/integration/test_crd_lifecycle.py",),
    ),
    Mutant(
        "namespace-contents-deletion-is-drift",
        "what the namespace controller deletes inside a namespace we deleted is not drift",
        "operator/tenantry/reconcile/organization.py",
        "        self.cluster.expected_deletions.update(inside)\n",
        "",
        (f"{PROMISES}::test_our_own_prune_is_not_reported_as_drift",),
    ),
    Mutant(
        "standby-writes",
        "a replica that does not hold the Lease writes nothing",
        # Two guards: workers take names only while `active`, and every write is fenced by the
        # Lease (kube/lease.py); removing one leaves the other, so the mutant unwires both.
        "operator/tenantry/reconcile/runtime.py",
        "            self.active = self.leadership.active\n"
        "            client.fence = self.leadership.write_time_left\n",
        "            self.active.set()\n",
        ("tests/integration/test_leadership.py",),
    ),
    Mutant(
        "terminating-namespace-not-requeued",
        "a terminating namespace is requeued, and re-created once gone",
        "operator/tenantry/reconcile/organization.py",
        '            raise Requeue(2.0, "namespace terminating")\n',
        "            pass\n",
        (f"{PROMISES}::test_a_terminating_namespace_is_requeued_and_re_created_once_gone",),
    ),
    Mutant(
        "relist-emits-no-deleted",
        "a relist after 410 Gone reports what was deleted meanwhile (synthetic DELETED)",
        "operator/tenantry/kube/informer.py",
        "        self._emit_deleted(set(before) - set(seen))\n",
        "",
        (
            "tests/unit/test_informer.py",
            f"{PROMISES}::test_a_deletion_missed_while_the_watch_was_broken_is_healed_after_410",
        ),
    ),
    Mutant(
        "not-served-emits-no-deleted",
        "a resource that stops being served reports its objects as deleted",
        "operator/tenantry/kube/informer.py",
        "        self._emit_deleted(set(self._versions))\n",
        "",
        ("tests/unit/test_informer.py",),
    ),
    Mutant(
        "tombstone-not-recorded",
        "a deletion by someone else is remembered (drift, not a new object)",
        "operator/tenantry/kube/inventory.py",
        "            self._tombstones[key] = owner\n",
        "            pass\n",
        ("tests/unit/test_inventory.py",),
    ),
    Mutant(
        "queue-no-priority-upgrade",
        "a pending name moves up when a more urgent reason arrives (DRIFT > CHANGE > ...)",
        "operator/tenantry/reconcile/queue.py",
        "        if current is not None and current <= priority:\n",
        "        if current is not None:\n",
        ("tests/unit/test_queue.py",),
    ),
    Mutant(
        "queue-two-workers-per-name",
        "one name is never reconciled by two workers at once",
        "operator/tenantry/reconcile/queue.py",
        "        if name in self._active:\n",
        "        if False:\n",
        ("tests/unit/test_queue.py",),
    ),
    Mutant(
        "condition-transition-time-always-now",
        "lastTransitionTime moves only when a condition's status does",
        "operator/tenantry/reconcile/status.py",
        'since = old.get("lastTransitionTime") if old and old.get("status") == value else now',
        "since = now",
        ("tests/unit/test_status.py",),
    ),
    Mutant(
        "mfa-star-beside-star-slash-star",
        "manifests/admission passes the API server's validation (validation.go, modelled offline)",
        "manifests/admission/access/mfa.yaml",
        'resources: ["*/*"]',
        'resources: ["*", "*/*"]',
        ("tests/unit/test_admission_validation.py",),
    ),
    Mutant(
        "binding-deny-and-warn",
        "manifests/admission passes the API server's validation (validation.go, modelled offline)",
        "manifests/admission/quota-approval.yaml",
        "validationActions: [Deny]",
        "validationActions: [Deny, Warn]",
        ("tests/unit/test_admission_validation.py",),
    ),
    Mutant(
        "param-ref-without-not-found-action",
        "manifests/admission passes the API server's validation (validation.go, modelled offline)",
        "manifests/admission/quota-approval.yaml",
        "    parameterNotFoundAction: Allow\n",
        "",
        ("tests/unit/test_admission_validation.py",),
    ),
    Mutant(
        "owned-by-another-organization-check-removed",
        "a namespace another Organization owns is refused, nothing written into it",
        "operator/tenantry/reconcile/organization.py",
        '        if lbl.owner_of(live["metadata"].get("labels")) != org:\n            return "Refused"\n',
        "",
        (f"{OWNERSHIP}::test_a_namespace_of_another_organization_is_refused",),
    ),
    Mutant(
        "quota-approval-at-the-default",
        "only a quota above the policy default needs spec.quotaApproval",
        "operator/tenantry/render/checks.py",
        "parse_quantity(value) > parse_quantity(default)",
        "parse_quantity(value) >= parse_quantity(default)",
        ("tests/unit/test_render_namespaces_quota.py",),
    ),
    Mutant(
        "namespace-record-ignored",
        "a namespace is orphaned or deleted only if it is in the Organization's record",
        "operator/tenantry/reconcile/organization.py",
        'unrecorded = kind == "Namespace" and (name, obj["metadata"].get("uid")) not in recorded',
        "unrecorded = False",
        (f"{OWNERSHIP}::test_a_lookalike_namespace_is_not_deleted_with_its_organization",),
    ),
    Mutant(
        "namespace-contents-record-ignored",
        "what carries our labels inside a namespace we never recorded is never deleted",
        "operator/tenantry/reconcile/organization.py",
        "                and namespace not in recorded_names\n",
        "                and False\n",
        (f"{OWNERSHIP}::test_a_lookalike_namespace_is_not_orphaned_and_its_contents_stay",),
    ),
    Mutant(
        "drift-is-a-subset-test",
        "a field someone added inside what we own is drift (not only a changed or missing one)",
        "operator/tenantry/kube/drift.py",
        "            if key not in have or key not in want:\n",
        "            if key not in have:\n",
        (
            "tests/unit/test_drift.py",
            f"{DRIFT}::test_a_narrowed_default_deny_is_restored_and_reported_with_its_field_path",
        ),
    ),
    Mutant(
        "applied-record-ignored",
        "a namespace label we applied and no longer render is removed",
        "operator/tenantry/kube/drift.py",
        "        ours_too = set(applied.get(part, ()))\n",
        "        ours_too: set[str] = set()\n",
        (f"{DRIFT}::test_a_namespace_label_dropped_from_the_policy_goes_and_others_labels_stay",),
    ),
    Mutant(
        "foreign-fields-left-after-apply",
        "what another manager added in a granular map is removed after the forced apply",
        "operator/tenantry/reconcile/organization.py",
        "        patch = drift.leftovers(obj, applied)\n",
        "        patch = None\n",
        (f"{DRIFT}::test_a_key_another_manager_added_to_our_quota_is_removed",),
    ),
    Mutant(
        "invalid-organization-keeps-its-access",
        "an Organization made invalid keeps no access the current policy and spec forbid",
        "operator/tenantry/reconcile/organization.py",
        """        name = body["metadata"]["name"]
        if org is None:
            objects: list""",
        """        name = body["metadata"]["name"]
        if org is not None or org is None:
            return
        if org is None:
            objects: list""",
        (INVALID_ACCESS,),
    ),
    Mutant(
        "invalid-organization-keeps-forbidden-bindings",
        "what the policy forbids now is deleted, not only rewritten",
        "operator/tenantry/reconcile/organization.py",
        'if obj["kind"] in ACCESS_KINDS and await self._delete(obj):',
        'if obj["kind"] in () and await self._delete(obj):',
        (INVALID_ACCESS,),
    ),
    Mutant(
        "permitted-ignores-mfa",
        "a User or ServiceAccount keeps no binding where MFA is required",
        "operator/tenantry/render/permitted.py",
        'if mfa is not None and subject.kind != "Group":',
        "if False:",
        (PERMITTED,),
    ),
    Mutant(
        "member-environments-ignored",
        "a member listing its environments is bound in those only (CI kept out of MFA environments)",
        "operator/tenantry/api/organization.py",
        "return self.environments is None or env in self.environments",
        "return True",
        (PERMITTED,),
    ),
    Mutant(
        "quota-pacing-forgets-the-last-write",
        "usage alone is written at most once per interval after any status write (no burst at restart)",
        "operator/tenantry/reconcile/cluster.py",
        "if last is None and ready_age is not None:",
        "if False:",
        ("tests/unit/test_quota_pacing.py",),
    ),
    Mutant(
        "events-only-in-default",
        "members read an Event for each status change in their own namespace",
        "operator/tenantry/reconcile/organization.py",
        "for namespace in (self.cluster.event_namespace, *([home] if home else [])):",
        "for namespace in (self.cluster.event_namespace,):",
        ("tests/integration/test_tenant_events.py",),
    ),
    Mutant(
        "validate-stops-at-schema-errors",
        "validate reports schema, cross-field and policy problems in one run",
        "operator/tenantry/api/repair.py",
        "        if not _remove(current, errors, reduction):",
        "        if True:",
        ("tests/unit/test_validate_every_problem.py",),
    ),
    Mutant(
        "validate-reindexes-nothing",
        "an entry after a removed one keeps its index in every message",
        "operator/tenantry/api/repair.py",
        '                    path = f"{prefix}{indices[int(digits)]}]{rest}"',
        "                    pass",
        ("tests/unit/test_validate_every_problem.py",),
    ),
    Mutant(
        "plain-404-is-a-missing-object",
        "a text/plain 404 means 'not served', not 'no such object'",
        "operator/tenantry/kube/client.py",
        "        return ApiError(404, NOT_SERVED,",
        '        return ApiError(404, "NotFound",',
        ("tests/unit/test_client.py",),
    ),
    # Issue 21: the paths around the box.
    Mutant(
        "endpoints-writable-by-tenants",
        "tenant roles read Endpoints but never write them (CVE-2021-25740)",
        "operator/tenantry/render/rbac.py",
        '("", ["pods", "services", "configmaps",',
        '("", ["pods", "services", "endpoints", "configmaps",',
        (f"{RBAC}::test_tenant_roles_read_endpoints_but_never_write_them",),
    ),
    Mutant(
        "hosts-any-host-allowed",
        "an Ingress or route may use only the hosts its Organization owns",
        "manifests/admission/guardrails/hosts.yaml",
        "!variables.hosts.exists(p, p == h ||",
        "!variables.hosts.exists(p, true ||",
        (f"{GUARDRAILS}::test_an_organization_uses_only_its_own_hosts",),
    ),
    Mutant(
        "hosts-wildcard-reaches-look-alikes",
        "*.acme.<domain> covers names under acme.<domain>, not xacme.<domain>",
        "manifests/admission/guardrails/hosts.yaml",
        "h.endsWith(p.substring(1))",
        "h.endsWith(p.substring(2))",
        (f"{GUARDRAILS}::test_an_organization_uses_only_its_own_hosts",),
    ),
    Mutant(
        "hosts-default-backend-allowed",
        "an Ingress defaultBackend (a catch-all) is refused",
        "manifests/admission/guardrails/hosts.yaml",
        '    - expression: "!variables.newDefaultBackend"',
        '    - expression: "true"',
        (f"{GUARDRAILS}::test_no_host_a_default_backend_and_foreign_tls_hosts_are_refused",),
    ),
    Mutant(
        "hosts-of-another-organization-approvable",
        "no approval gives one Organization another Organization's hosts",
        "operator/tenantry/render/guardrails.py",
        "        if in_shared and not host_inside(host, tuple(own)):",
        "        if False:",
        ("tests/unit/test_render_guardrails.py::test_no_approval_gives_one_organization_another_ones_hosts",),
    ),
    Mutant(
        "task-supervision-removed",
        "a long-running task that fails or returns is restarted with backoff, never silently gone",
        "operator/tenantry/reconcile/supervisor.py",
        "            await asyncio.sleep(delay)\n            delay = min(delay * 2, self.max_delay)\n",
        "            return\n",
        (f"{UNIT_BAD_DAYS}::test_a_long_running_task_that_fails_is_restarted_with_growing_capped_delays",),
    ),
    Mutant(
        "failed-apply-not-retried",
        "a refused write fails the reconcile, so the Organization is retried with backoff",
        "operator/tenantry/reconcile/organization.py",
        "        if outcome.failed_writes:\n",
        "        if False:\n",
        (f"{BAD_DAYS}::test_an_admission_refusal_is_retried_with_backoff_and_healed_when_lifted",),
    ),
    Mutant(
        "retry-after-ignored",
        "a throttled request is retried no sooner than the API server's Retry-After",
        "operator/tenantry/kube/client.py",
        "await asyncio.sleep(max(pause, wait) if wait is not None else pause)",
        "await asyncio.sleep(pause)",
        (f"{UNIT_BAD_DAYS}::test_a_429_is_retried_no_sooner_than_its_retry_after",),
    ),
    Mutant(
        "stale-response-guard-removed",
        "an apply response older than what the watch delivered never replaces it in the inventory",
        "operator/tenantry/kube/inventory.py",
        "        if older(obj, previous):\n",
        "        if False:\n",
        (f"{UNIT_BAD_DAYS}::test_an_apply_response_older_than_the_watch_is_ignored",),
    ),
    Mutant(
        "write-fence-removed",
        "a replica that may no longer write sends no write",
        "operator/tenantry/kube/client.py",
        "                if left <= 0:\n",
        "                if False:\n",
        (f"{UNIT_BAD_DAYS}::test_a_fenced_client_sends_no_write_and_still_reads",),
    ),
    Mutant(
        "lease-deadline-not-enforced",
        "a leader that cannot renew stops writing at its renew deadline, before the Lease can be taken",
        "operator/tenantry/kube/lease.py",
        "        self._expiry = loop.call_at(",
        "        self._expiry = None and loop.call_at(",
        (f"{BAD_DAYS}::test_a_leader_that_cannot_renew_stops_writing_before_the_lease_can_be_taken",),
    ),
    Mutant(
        "refused-namespace-not-blocked",
        "nothing is written into a namespace whose create was refused",
        "operator/tenantry/reconcile/organization.py",
        "                    blocked.add(namespace)\n",
        "                    pass\n",
        (f"{BAD_DAYS}::test_nothing_is_written_into_a_namespace_whose_create_was_refused",),
    ),
    Mutant(
        "relist-delivers-everything",
        "a relist reports only what changed (memory stays bounded after an API-server restart)",
        "operator/tenantry/kube/informer.py",
        "            return None if before.get(ident) == version else self._relist_transform(item)\n",
        "            return self._relist_transform(item)\n",
        (
            "tests/unit/test_informer.py::test_a_relist_reports_only_changed_objects_slimmed_as_they_are_decoded",
        ),
    ),
    Mutant(
        "namespace-ownership-check-removed",
        "a namespace that exists without our ownership labels is never adopted",
        "operator/tenantry/reconcile/organization.py",
        '            if owner is None or owner != org:\n                return "Refused"\n',
        "",
        (f"{LIFECYCLE}::test_pre_existing_namespace_is_never_adopted",),
    ),
    Mutant(
        "netpol-peer-outside-the-organization-accepted",
        "a tenant NetworkPolicy's namespaceSelector must pin its own Organization",
        "manifests/admission/guardrails/network-policies.yaml",
        '    - expression: "!variables.unpinned"\n',
        '    - expression: "true"\n',
        (f"{SELF_SERVICE}::test_a_namespace_selector_reaching_outside_the_organization_is_refused",),
    ),
    Mutant(
        "netpol-rule-without-peers-accepted",
        "a tenant NetworkPolicy rule without from/to (everyone) is refused",
        "manifests/admission/guardrails/network-policies.yaml",
        "    - expression: size(variables.open) == 0\n",
        '    - expression: "true"\n',
        (f"{SELF_SERVICE}::test_a_rule_without_peers_is_everyone_and_refused",),
    ),
    Mutant(
        "netpol-except-ignored",
        "an ipBlock's except carves protected ranges out only where it covers them",
        "manifests/admission/guardrails/network-policies.yaml",
        "        !es.exists(e, e[1] <= (x[1] < r[1] ? r[1] : x[1]) &&\n",
        "        !es.exists(e, e[1] <= 32 &&\n",
        (
            f"{SELF_SERVICE}::test_ip_blocks_covering_pods_services_or_metadata_are_refused",
            f"{SELF_SERVICE}::test_the_ipv4_arithmetic_agrees_with_pythons_ipaddress",
        ),
    ),
    Mutant(
        "netpol-ip-block-covering-pods-accepted",
        "a tenant ipBlock may not cover the cluster's pod or service ranges or metadata",
        "manifests/admission/guardrails/network-policies.yaml",
        "    - expression: size(variables.refusedBlocks) == 0\n",
        '    - expression: "true"\n',
        (f"{SELF_SERVICE}::test_ip_blocks_covering_pods_services_or_metadata_are_refused",),
    ),
    Mutant(
        "rolebinding-to-a-forbidden-role-accepted",
        "a tenant RoleBinding references only its namespace's Roles and the tenant ClusterRoles",
        "manifests/admission/guardrails/rbac.yaml",
        '    - expression: "!variables.refusedRole"\n',
        '    - expression: "true"\n',
        (f"{SELF_SERVICE}::test_no_other_cluster_role_is_bound",),
    ),
    Mutant(
        "rolebinding-foreign-service-account-accepted",
        "a tenant RoleBinding binds ServiceAccounts of its own Organization only",
        "manifests/admission/guardrails/rbac.yaml",
        "    - expression: size(variables.foreignServiceAccounts) == 0\n",
        '    - expression: "true"\n',
        (f"{SELF_SERVICE}::test_subjects_stay_inside_the_organization",),
    ),
    Mutant(
        "rolebinding-system-group-accepted",
        "a tenant RoleBinding never binds system:authenticated and the other system: identities",
        "manifests/admission/guardrails/rbac.yaml",
        "    - expression: size(variables.systemSubjects) == 0\n",
        '    - expression: "true"\n',
        (f"{SELF_SERVICE}::test_subjects_stay_inside_the_organization",),
    ),
    Mutant(
        "rolebinding-without-mfa-accepted",
        "in an MFA environment a tenant RoleBinding binds only the MFA form of groups",
        "manifests/admission/guardrails/rbac.yaml",
        "    - expression: size(variables.withoutMFA) == 0\n",
        '    - expression: "true"\n',
        (f"{SELF_SERVICE}::test_in_an_mfa_environment_only_the_mfa_form_of_groups",),
    ),
    Mutant(
        "self-service-switch-ignored",
        "rbac.organizationAdminSelfService: false leaves admins read-only on RBAC and NetworkPolicies",
        "operator/tenantry/render/rbac.py",
        "            admins if self_service else [],\n",
        "            admins,\n",
        ("tests/unit/test_render_rbac.py::test_one_policy_switch_turns_self_service_off",),
    ),
    Mutant(
        "image-pulls-not-refused",
        "without the mutation, a container that does not pull Always is refused",
        "manifests/admission/guardrails/image-pulls.yaml",
        "    - expression: size(variables.refused) == 0\n",
        '    - expression: "true"\n',
        (f"{SELF_SERVICE}::test_without_the_mutation_the_validating_guardrail_says_what_to_set",),
    ),
    Mutant(
        "image-pulls-mutation-skips-init-containers",
        "the mutation sets init containers too",
        "manifests/admission/image-pulls/image-pulls.yaml",
        "          (has(variables.spec.initContainers) ?",
        "          (false ?",
        (f"{SELF_SERVICE}::test_the_mutation_makes_every_container_of_a_new_pod_pull",),
    ),
    Mutant(
        "pool-grow-counts-spec-not-status",
        "a grow waits until the quota controller has copied a shrink into status.hard",
        "operator/tenantry/render/pool.py",
        "        effective = {m.namespace: m.effective(r) for m in members}\n",
        "        effective = {m.namespace: float(m.spec.get(r) or 0) for m in members}\n",
        (
            f"{POOL_CORE}::test_the_pool_is_never_exceeded_whatever_the_order_of_events",
            f"{POOL}::test_pods_in_both_namespaces_at_once_with_a_lagging_quota_controller",
        ),
    ),
    Mutant(
        "pool-target-below-used",
        "a pooled hard is never lowered below what is used",
        "operator/tenantry/render/pool.py",
        "    wanted = {m.namespace: m.used.get(resource, 0) for m in members}\n",
        "    wanted = {m.namespace: 0 for m in members}\n",
        (f"{POOL_CORE}::test_the_pool_is_never_exceeded_whatever_the_order_of_events",),
    ),
    Mutant(
        "pool-grow-with-shrinks-pending",
        "shrink before grow: no grow while a shrink is due",
        "operator/tenantry/render/pool.py",
        "    if shrinks:\n",
        "    if False:\n",
        (POOL_CORE,),
    ),
    Mutant(
        "pool-apply-writes-the-initial-split",
        "server-side apply carries the live split: a rebalance is never undone or healed as drift",
        "operator/tenantry/reconcile/pool.py",
        "        pool = effective_pool(org, policy)\n        if pool is None:\n            return objects\n",
        "        return objects\n",
        (f"{POOL}::test_a_rebalanced_split_survives_a_restart_without_a_write",),
    ),
    Mutant(
        "pool-retained-namespace-keeps-its-share",
        "a namespace retained under deletionPolicy: Retain gives its share back to the pool",
        "operator/tenantry/reconcile/organization.py",
        '        await self.pools.release(body, namespace_obj["metadata"]["name"])\n',
        "",
        (f"{POOL}::test_a_retained_namespace_leaves_the_pool_and_gives_its_share_back",),
    ),
    Mutant(
        "fake-quota-requires-every-resource",
        "the test double's quota admission requires only cpu and memory, as the real pod evaluator",
        "tests/fakeapi/quota.py",
        "if any(v is None for v in values) and name in _REQUIRED:",
        "if any(v is None for v in values):",
        ("tests/unit/test_fake_quota.py",),
    ),
    Mutant(
        "role-hands-out-exec-where-developers-may-not",
        "a tenant Role grants no exec, attach or port-forward where the policy's developerExec is false",
        "manifests/admission/guardrails/rbac.yaml",
        "    - expression: variables.execAllowed || size(variables.execGranted) == 0\n",
        '    - expression: "true"\n',
        (
            "tests/unit/test_admission_self_service.py::test_no_role_hands_out_exec_where_developers_may_not_exec",
        ),
    ),
    Mutant(
        "invalid-status-forgets-what-exists",
        "while an Organization is invalid, status.namespaces and status.quota keep saying what exists",
        "operator/tenantry/reconcile/organization.py",
        "            self._report_existing(body, outcome)\n",
        "            pass\n",
        (
            f"{INVALID_ACCESS}::test_while_invalid_status_keeps_saying_which_namespaces_exist_and_their_quota_use",
        ),
    ),
    Mutant(
        "deleted-policy-keeps-platform-admins",
        "a TenancyPolicy deleted while the operator runs takes its platform-admin binding with it",
        "operator/tenantry/reconcile/events.py",
        '            await self.queue.put(f"{POLICY_KEY_PREFIX}{name}", Priority.CHANGE)\n        else:\n',
        "        else:\n",
        (f"{POLICY_BINDING}::test_a_deleted_policy_takes_its_platform_admin_binding_with_it",),
    ),
    Mutant(
        "platform-admin-binding-not-ours-deleted",
        "a platform-admin binding we did not create (no server-side apply of ours) is never deleted",
        "operator/tenantry/reconcile/policy.py",
        '        entry.get("manager") == FIELD_MANAGER\n'
        '        and entry.get("operation") == "Apply"\n'
        '        and not entry.get("subresource")\n',
        "        True\n",
        (f"{POLICY_BINDING}::test_a_binding_we_did_not_create_is_never_deleted",),
    ),
    Mutant(
        "ready-before-quota-in-force",
        "an Organization is Ready only once each of its quotas is in force (status.hard)",
        "operator/tenantry/reconcile/organization.py",
        "        self._check_quota_in_force(objects, blocked, outcome)\n",
        "",
        (f"{QUOTA_IN_FORCE}::test_ready_only_once_every_quota_is_in_force_with_one_status_write",),
    ),
    Mutant(
        "quota-pending-status-not-held",
        "onboarding writes an Organization's status once (not Progressing, then Ready)",
        "operator/tenantry/reconcile/organization.py",
        '            raise Requeue(left, "quota not yet in force")\n',
        "            pass\n",
        (f"{QUOTA_IN_FORCE}::test_ready_only_once_every_quota_is_in_force_with_one_status_write",),
    ),
    Mutant(
        "quota-pending-held-forever",
        "a quota still not in force after the grace is reported in status (QuotaNotInForce)",
        "operator/tenantry/reconcile/organization.py",
        "        left = min(grace - stalled, 10 * grace - (now - since))\n",
        "        left = 3600.0\n",
        (f"{QUOTA_IN_FORCE}::test_a_quota_not_in_force_after_the_grace_is_reported_then_ready_when_it_is",),
    ),
    Mutant(
        "finalizer-always-patched",
        "an Organization created with its finalizer (the admission policy) gets no finalizer write",
        "operator/tenantry/reconcile/organization.py",
        '        if FINALIZER not in (body["metadata"].get("finalizers") or []):\n'
        "            body = await self._add_finalizer(body)\n",
        "        body = await self._add_finalizer(body)\n",
        (f"{ONBOARDING}::test_an_organization_created_with_its_finalizer_gets_no_finalizer_write",),
    ),
    Mutant(
        "grant-events-before-the-status-that-records-them",
        "a grant's Event is posted once, with the status write that records it",
        "operator/tenantry/reconcile/organization.py",
        "        self._hold_for_quota(body, outcome)\n"
        "        await self._write_status(body, outcome, generation)\n"
        "        await self._report_grants(body, outcome)\n",
        "        await self._report_grants(body, outcome)\n"
        "        self._hold_for_quota(body, outcome)\n"
        "        await self._write_status(body, outcome, generation)\n",
        (
            "tests/integration/test_access.py::test_a_grant_is_reported_once_when_the_status_waited_for_a_quota",
        ),
    ),
    Mutant(
        "quota-progress-written-per-quota",
        "past the grace, a quota wait is reported once, not once per quota coming into force",
        "operator/tenantry/reconcile/organization.py",
        '        if reported and current.get("observedGeneration") == body["metadata"].get("generation"):\n',
        "        if False:\n",
        (f"{QUOTA_IN_FORCE}::test_past_the_grace_the_wait_is_reported_once_not_per_quota_coming_into_force",),
    ),
    Mutant(
        "quota-grace-ignores-progress",
        "while kube-controller-manager works through a backlog, a waiting Organization writes nothing",
        "operator/tenantry/reconcile/organization.py",
        "        stalled = now - max(since, self.cluster.quota_progress)\n",
        "        stalled = now - since\n",
        (f"{QUOTA_IN_FORCE}::test_while_the_quota_controller_works_through_a_backlog_nothing_is_written",),
    ),
    Mutant(
        "start-up-retried-after-a-minute",
        "a replica started while the API server is down starts within seconds of its return",
        "operator/tenantry/reconcile/frame.py",
        '    @kopf.on.startup(registry=registry, id="tenantry-startup", backoff=STARTUP_RETRY_SECONDS)\n',
        '    @kopf.on.startup(registry=registry, id="tenantry-startup")\n',
        (f"{BAD_DAYS}::test_a_replica_started_while_the_api_server_is_down_starts_once_it_is_back",),
    ),
    Mutant(
        "failed-start-up-keeps-its-session",
        "a failed start-up attempt closes what it opened before it is retried",
        "operator/tenantry/reconcile/runtime.py",
        "                await self._client.close()\n",
        "                pass\n",
        (f"{BAD_DAYS}::test_a_failed_start_up_leaves_nothing_running_for_the_retry",),
    ),
    Mutant(
        "quota-wait-uncapped",
        "a wait for a quota is reported after ten graces even while others' quotas come into force",
        "operator/tenantry/reconcile/organization.py",
        "        left = min(grace - stalled, 10 * grace - (now - since))\n",
        "        left = grace - stalled\n",
        (
            f"{QUOTA_IN_FORCE}::"
            "test_a_wait_is_reported_after_ten_graces_even_while_the_controller_makes_progress",
        ),
    ),
    Mutant(
        "no-drift-lane",
        "a drift is healed while every worker is busy onboarding (the drift lane)",
        "operator/tenantry/reconcile/runtime.py",
        '        keep(lambda: workers.work(Priority.DRIFT), "tenantry drift lane")\n',
        "",
        (f"{DRIFT}::test_a_drift_is_healed_while_every_worker_waits_on_a_loaded_api_server",),
    ),
    Mutant(
        "queue-wakes-one-waiter",
        "a change is never left waiting because the drift lane was the waiter woken",
        "operator/tenantry/reconcile/queue.py",
        "self._ready.notify_all()",
        "self._ready.notify()",
        (
            "tests/unit/test_queue.py::test_the_drift_lane_takes_drift_only_and_never_keeps_work_from_the_others",
        ),
        count=3,
    ),
    Mutant(
        "quota-in-force-not-prompt",
        "a quota coming into force is followed up before resyncs (Ready is waiting for it)",
        "operator/tenantry/reconcile/events.py",
        "                prompt = pooled_keys(obj) or hard_changed\n",
        "                prompt = pooled_keys(obj)\n",
        (
            "tests/unit/test_runtime_events.py::"
            "test_a_quota_coming_into_force_is_queued_before_resyncs_and_usage_alone_after",
        ),
    ),
)


class BrokenCheckError(Exception):
    """The check cannot be trusted (exit 2)."""


def copy_repository(dest: Path, ref: str | None) -> None:
    if ref is not None:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", ref], check=True, capture_output=True
        )
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
        return
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        source = ROOT / rel
        if not source.is_file():  # deleted in the working tree, or a submodule
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def apply(mutant: Mutant, copy: Path) -> None:
    path = copy / mutant.path
    if not path.is_file():
        raise BrokenCheckError(f"{mutant.name}: {mutant.path} does not exist")
    text = path.read_text()
    found = text.count(mutant.old)
    if found != mutant.count:
        raise BrokenCheckError(
            f"{mutant.name}: target text found {found} times in {mutant.path} (expected "
            f"{mutant.count}); the code moved, update the mutant:\n{mutant.old!r}"
        )
    path.write_text(text.replace(mutant.old, mutant.new))


def environment(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(copy / "operator"), str(copy)])
    env.pop("PYTEST_ADDOPTS", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def check_import(copy: Path) -> None:
    found = subprocess.run(
        [sys.executable, "-c", "import tenantry, tests; print(tenantry.__file__); print(tests.__file__)"],
        cwd=copy,
        env=environment(copy),
        capture_output=True,
        text=True,
    )
    paths = found.stdout.split()
    if found.returncode != 0 or len(paths) != 2 or not all(Path(p).is_relative_to(copy) for p in paths):
        raise BrokenCheckError(f"the copy's packages are not the ones imported: {found.stdout}{found.stderr}")


def run_tests(copy: Path, tests: tuple[str, ...]) -> tuple[bool, str, float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
        cwd=copy,
        env=environment(copy),
        capture_output=True,
        text=True,
    )
    output = result.stdout + result.stderr
    if result.returncode not in (0, 1):  # 1: tests failed; anything else: they did not run
        raise BrokenCheckError(f"pytest exited {result.returncode} for {' '.join(tests)}:\n{output[-3000:]}")
    return result.returncode == 0, output, time.monotonic() - started


def first_failure(output: str) -> str:
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line
    return output.strip().splitlines()[-1] if output.strip() else "(no output)"


def in_a_copy(ref: str | None, mutant: Mutant | None, tests: tuple[str, ...]) -> tuple[bool, str, float]:
    with tempfile.TemporaryDirectory(prefix="tenantry-mutant-") as tmp:
        copy = Path(tmp)
        copy_repository(copy, ref)
        check_import(copy)
        if mutant is not None:
            apply(mutant, copy)
        return run_tests(copy, tests)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", dest="pattern", help="only mutants whose name contains this")
    parser.add_argument("--ref", help="mutate this commit (git archive) instead of the working tree")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="mutants run at a time")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    args = parser.parse_args(argv)

    mutants = [m for m in MUTANTS if not args.pattern or args.pattern in m.name]
    if args.list:
        for m in mutants:
            print(f"{m.name}\n  promise: {m.promise}\n  edit:    {m.path}\n  tests:   {' '.join(m.tests)}")
        return 0
    if not mutants:
        print(f"no mutant matches {args.pattern!r}", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        if not args.no_baseline:
            union = tuple(dict.fromkeys(t for m in mutants for t in m.tests))
            passed, output, seconds = in_a_copy(args.ref, None, union)
            if not passed:
                raise BrokenCheckError(f"the tests fail without any mutant ({seconds:.0f}s):\n{output}")
            print(f"baseline: {len(union)} test selections pass unmutated ({seconds:.0f}s)")
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = {m: pool.submit(in_a_copy, args.ref, m, m.tests) for m in mutants}
            survived = []
            for m, future in futures.items():
                passed, output, seconds = future.result()  # BrokenCheckError propagates
                if passed:
                    survived.append(m)
                    print(f"SURVIVED {m.name} ({seconds:.0f}s): {m.promise}\n  tests: {' '.join(m.tests)}")
                else:
                    print(f"killed   {m.name} ({seconds:.0f}s) by {first_failure(output)}")
    except BrokenCheckError as exc:
        print(f"BROKEN CHECK: {exc}", file=sys.stderr)
        return 2
    total = time.monotonic() - started
    print(f"{len(mutants) - len(survived)}/{len(mutants)} mutants killed in {total:.0f}s")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
