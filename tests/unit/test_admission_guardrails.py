"""The guardrail admission policies (manifests/admission/guardrails/, manifests/admission/placement/),
evaluated with cel-python on the real YAML, in the API server's order.

`submit()` replays one request through every guardrail the way the API server does
(k8s.io/apiserver .../admission/plugin/policy/{generic,validating,mutating}, .../cel):

1. mutating admission first, then validating: the MutatingAdmissionPolicy's JSON patch is applied
   to the object before any ValidatingAdmissionPolicy sees it;
2. per policy, matchConstraints: resource rules (`*`, subresources, resourceNames, scope) and the
   namespaceSelector, matched against the labels of the request's namespace;
3. per binding of the policy, its matchResources (resource rules and excludeResourceRules), then
   its parameter: paramRef names ConfigMap `tenantry-guardrails` without a namespace, and a
   namespaced paramKind resolves it in the request's namespace; none found means
   parameterNotFoundAction decides, before any expression runs;
4. matchConditions (no `variables`), then validations with lazy `variables`, as in
   tests/unit/test_admission_policies.py (whose evaluator, with cel-go's has(), is reused).

cel-python has no strings extension: `split`, `join` and `replace` are added with cel-go's
semantics (Go's strings.Split, strings.Join, strings.ReplaceAll), and `JSONPatch{...}` builds the
patch operation a mutation returns. The parameter is what the renderer writes
(render/guardrails.py) for an Organization under a policy, so the lists under test are the lists
the operator would apply.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kubernetes_validate
import pytest
import yaml
from celpy import celtypes
from celpy.adapter import json_to_cel

from tenantry.api.organization import Organization
from tenantry.api.policy import TenancyPolicy
from tenantry.kube import resources as res
from tenantry.reconcile.deletion import when_released
from tenantry.render import render_organization
from tenantry.render.guardrails import GUARDRAILS_NAME
from tests.conftest import ROOT
from tests.unit.admission_cel import EvaluationError, LazyVariables
from tests.unit.admission_cel import condition as _condition
from tests.unit.admission_cel import conditions_hold as _all_conditions_hold
from tests.unit.admission_cel import evaluate as _evaluate
from tests.unit.test_admission_policies import OPERATOR, TENANT, Who, service_account

Json = dict[str, Any]
ADMISSION = ROOT / "manifests" / "admission"
TODAY = dt.date(2026, 11, 26)


# --- the manifests -------------------------------------------------------------------------


def _docs(*dirs: str) -> list[Json]:
    out: list[Json] = []
    for name in dirs:
        for path in sorted((ADMISSION / name).glob("*.yaml")):
            if path.name != "kustomization.yaml":
                out += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return out


DOCS = _docs("guardrails", "placement", "image-pulls")
VALIDATING = [d for d in DOCS if d["kind"] == "ValidatingAdmissionPolicy"]
MUTATING = [d for d in DOCS if d["kind"] == "MutatingAdmissionPolicy"]
BINDINGS = [d for d in DOCS if d["kind"].endswith("AdmissionPolicyBinding")]


def _bindings(policy: Json) -> list[Json]:
    return [b for b in BINDINGS if b["spec"]["policyName"] == policy["metadata"]["name"]]


# --- the cluster and the request -----------------------------------------------------------


@dataclass
class Cluster:
    """Namespaces (name -> labels) and ConfigMaps (namespace -> the tenantry-guardrails one)."""

    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)
    params: dict[str, Json] = field(default_factory=dict)
    # Namespace annotations (the MFA rule of the RBAC guardrail reads them on namespaceObject).
    annotations: dict[str, dict[str, str]] = field(default_factory=dict)

    def namespace_object(self, name: str) -> Json:
        return {
            "metadata": {
                "name": name,
                "labels": self.namespaces.get(name, {}),
                "annotations": self.annotations.get(name, {}),
            }
        }


RESOURCES = {
    "Pod": ("", "v1", "pods"),
    "Deployment": ("apps", "v1", "deployments"),
    "StatefulSet": ("apps", "v1", "statefulsets"),
    "DaemonSet": ("apps", "v1", "daemonsets"),
    "ReplicaSet": ("apps", "v1", "replicasets"),
    "Job": ("batch", "v1", "jobs"),
    "CronJob": ("batch", "v1", "cronjobs"),
    "Service": ("", "v1", "services"),
    "Ingress": ("networking.k8s.io", "v1", "ingresses"),
    "Gateway": ("gateway.networking.k8s.io", "v1", "gateways"),
    "PersistentVolumeClaim": ("", "v1", "persistentvolumeclaims"),
    "ConfigMap": ("", "v1", "configmaps"),
    "ResourceQuota": ("", "v1", "resourcequotas"),
    "HTTPRoute": ("gateway.networking.k8s.io", "v1", "httproutes"),
    "GRPCRoute": ("gateway.networking.k8s.io", "v1", "grpcroutes"),
    "TLSRoute": ("gateway.networking.k8s.io", "v1alpha2", "tlsroutes"),
    "Secret": ("", "v1", "secrets"),
    "ReplicationController": ("", "v1", "replicationcontrollers"),
    "PodTemplate": ("", "v1", "podtemplates"),
    "Role": ("rbac.authorization.k8s.io", "v1", "roles"),
    "RoleBinding": ("rbac.authorization.k8s.io", "v1", "rolebindings"),
    "NetworkPolicy": ("networking.k8s.io", "v1", "networkpolicies"),
}


@dataclass(frozen=True)
class Request:
    operation: str
    who: Who
    object: Json | None
    old_object: Json | None = None
    sub_resource: str = ""

    @property
    def body(self) -> Json:
        body = self.object if self.object is not None else self.old_object
        assert body is not None
        return body

    def admission_request(self) -> Json:
        group, version, resource = RESOURCES[self.body["kind"]]
        meta = self.body["metadata"]
        request: Json = {
            "kind": {"group": group, "version": version, "kind": self.body["kind"]},
            "resource": {"group": group, "version": version, "resource": resource},
            "requestKind": {"group": group, "version": version, "kind": self.body["kind"]},
            "requestResource": {"group": group, "version": version, "resource": resource},
            "name": meta["name"],
            "namespace": meta["namespace"],
            "operation": self.operation,
            "userInfo": {"username": self.who.username, "groups": list(self.who.groups)},
            "dryRun": False,
        }
        # Absent, not empty, without a subresource: on 1.36.2 `request.subResource` is then
        # "no such key" (a runtime error); read it with has().
        if self.sub_resource:
            request["subResource"] = request["requestSubResource"] = self.sub_resource
        return request


@dataclass(frozen=True)
class Decision:
    allowed: bool
    why: str
    policy: str = ""
    object: Json | None = None


def _rule_matches(rule: Json, request: Json, name: str) -> bool:
    resource = request["resource"]["resource"] + (
        f"/{request['subResource']}" if request.get("subResource") else ""
    )
    ops = rule["operations"]
    resources = rule["resources"]
    return (
        ("*" in ops or request["operation"] in ops)
        and ("*" in rule["apiGroups"] or request["resource"]["group"] in rule["apiGroups"])
        and ("*" in rule["apiVersions"] or request["resource"]["version"] in rule["apiVersions"])
        # `*`: every resource, no subresource; `*/*`: every resource and subresource.
        and (resource in resources or ("*" in resources and "/" not in resource) or "*/*" in resources)
        and (not rule.get("resourceNames") or name in rule["resourceNames"])
        and rule.get("scope", "*") in ("*", "Namespaced")  # every kind here is namespaced
    )


def _selector_matches(selector: Json, labels: Mapping[str, str]) -> bool:
    assert set(selector) <= {"matchExpressions", "matchLabels"}, "replica does not model this"
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, op = expression["key"], expression["operator"]
        if op == "In" and labels.get(key) not in expression["values"]:
            return False
        if op == "Exists" and key not in labels:
            return False
        assert op in ("In", "Exists"), "replica does not model this"
    return True


def _matches(resources: Json, request: Json, namespace_labels: Mapping[str, str], *, required: bool) -> bool:
    name = request["name"]
    rules = resources.get("resourceRules")
    matched = not required if rules is None else any(_rule_matches(r, request, name) for r in rules)
    excluded = any(_rule_matches(r, request, name) for r in resources.get("excludeResourceRules", []))
    selector = resources.get("namespaceSelector")
    in_namespace = selector is None or _selector_matches(selector, namespace_labels)
    return matched and not excluded and in_namespace


def _activation(req: Request, obj: Json | None, param: Json | None, namespace: Json) -> dict[str, Any]:
    return {
        "request": json_to_cel(req.admission_request()),
        "object": json_to_cel(obj),
        "oldObject": json_to_cel(req.old_object),
        "params": json_to_cel(param),
        "namespaceObject": json_to_cel(namespace),
    }


def _message(validation: Json, activation: Mapping[str, Any]) -> str:
    try:
        result = _evaluate(validation["messageExpression"], activation)
    except EvaluationError:
        result = None
    if isinstance(result, str) and result.strip() and "\n" not in result.strip():
        return result.strip()
    return validation["message"].strip()


def _evaluations(
    policy: Json, req: Request, obj: Json | None, cluster: Cluster
) -> list[Json | None] | Decision:
    """The parameters the policy is evaluated with (one per matching binding), or a decision."""
    request = req.admission_request()
    namespace = request["namespace"]
    labels = cluster.namespaces.get(namespace, {})
    if not _matches(policy["spec"]["matchConstraints"], request, labels, required=True):
        return []
    params: list[Json | None] = []
    for binding in _bindings(policy):
        spec = binding["spec"]
        if not _matches(spec.get("matchResources", {}), request, labels, required=False):
            continue
        ref = spec.get("paramRef")
        if ref is None:
            params.append(None)
            continue
        assert set(ref) == {"name", "parameterNotFoundAction"}, (
            "replica models a named, per-namespace paramRef"
        )
        found = cluster.params.get(namespace) if ref["name"] == GUARDRAILS_NAME else None
        if found is not None:
            params.append(found)
        elif ref["parameterNotFoundAction"] == "Deny":
            return Decision(
                False,
                "failed to configure binding: no params found for policy binding with `Deny` "
                "parameterNotFoundAction",
                policy["metadata"]["name"],
            )
    return params


def _conditions_hold(policy: Json, activation: Mapping[str, Any]) -> bool:
    return _all_conditions_hold(policy["spec"].get("matchConditions", []), activation)


def _with_variables(policy: Json, activation: dict[str, Any]) -> dict[str, Any]:
    expressions = {v["name"]: v["expression"] for v in policy["spec"].get("variables", [])}
    full = dict(activation)
    full["variables"] = LazyVariables(expressions, full)
    return full


def _to_json(value: Any) -> Any:
    if isinstance(value, celtypes.MapType | dict):
        return {str(k): _to_json(v) for k, v in value.items() if str(k) != "_jsonpatch"}
    if isinstance(value, celtypes.ListType | list):
        return [_to_json(v) for v in value]
    if isinstance(value, celtypes.BoolType):
        return bool(value)
    if isinstance(value, celtypes.IntType):
        return int(value)
    if isinstance(value, celtypes.StringType):
        return str(value)
    return value


def _pointer(path: str) -> list[str]:
    assert path.startswith("/")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _apply_patch(obj: Json, operations: list[Json]) -> Json:
    """RFC 6902 `add`, the only operation the placement mutation uses."""
    out = copy.deepcopy(obj)
    for op in operations:
        assert op["op"] == "add", "replica models add only"
        *parents, last = _pointer(op["path"])
        target: Any = out
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]  # missing: patch fails
        if isinstance(target, list):
            target.append(op["value"]) if last == "-" else target.insert(int(last), op["value"])
        else:
            target[last] = op["value"]
    return out


def _mutate(req: Request, cluster: Cluster) -> Json | None:
    obj = req.object
    for policy in MUTATING:
        evaluations = _evaluations(policy, req, obj, cluster)
        assert not isinstance(evaluations, Decision), "the placement binding allows a missing parameter"
        for param in evaluations:
            namespace = cluster.namespace_object(req.body["metadata"]["namespace"])
            activation = _activation(req, obj, param, namespace)
            if not _conditions_hold(policy, activation):
                continue
            full = _with_variables(policy, activation)
            for mutation in policy["spec"]["mutations"]:
                patch = _to_json(_evaluate(mutation["jsonPatch"]["expression"], full))
                assert obj is not None
                obj = _apply_patch(obj, patch)
                full = _with_variables(policy, _activation(req, obj, param, namespace))
    return obj


def submit(req: Request, cluster: Cluster) -> Decision:
    """Would the API server admit `req`? Mutating policies first, then every validating one."""
    obj = _mutate(req, cluster)
    for policy in VALIDATING:
        evaluations = _evaluations(policy, req, obj, cluster)
        if isinstance(evaluations, Decision):
            return evaluations
        for param in evaluations:
            namespace = cluster.namespace_object(req.body["metadata"]["namespace"])
            activation = _activation(req, obj, param, namespace)
            if not _conditions_hold(policy, activation):
                continue
            full = _with_variables(policy, activation)
            for validation in policy["spec"]["validations"]:
                if not _condition(validation["expression"], full):
                    return Decision(False, _message(validation, full), policy["metadata"]["name"], obj)
    return Decision(True, "admitted", object=obj)


# --- what the operator renders ---------------------------------------------------------------

POLICY = TenancyPolicy.model_validate(
    {
        "apiVersion": "tenantry.dev/v1alpha1",
        "kind": "TenancyPolicy",
        "metadata": {"name": "default"},
        "spec": {
            "environments": [
                {"name": "prod", "quota": {"pods": "10"}},
                {
                    "name": "dev",
                    "quota": {"pods": "10"},
                    "guardrails": {"nodePorts": True, "storageClasses": ["standard", "scratch"]},
                },
            ],
            "guardrails": {
                "ingressClasses": ["nginx", "internal"],
                "gatewayClasses": ["shared"],
                "storageClasses": ["standard", "fast"],
                "priorityClasses": ["tenant-low", "tenant-high"],
                "runtimeClasses": ["gvisor"],
                "registries": ["ghcr.io/acme/", "registry.example.com/"],
                "nodePorts": False,
                "loadBalancers": False,
                "deniedLabelKeys": ["example.com/billing", "security.example.com/"],
                "hosts": ["*.{organization}.apps.example.com", "{organization}.example.com"],
                "externalNames": ["api.stripe.com", "*.amazonaws.com"],
                "persistentVolumes": ["{organization}-{environment}-*"],
                "placement": {
                    "nodeSelector": {"pool": "tenants"},
                    "tolerations": [{"key": "dedicated", "value": "tenants", "effect": "NoSchedule"}],
                },
            },
        },
    }
)


def organization(**guardrails: Any) -> Organization:
    spec: Json = {"environments": ["prod", "dev"]}
    if guardrails:
        spec["guardrails"] = guardrails
    return Organization.model_validate(
        {
            "apiVersion": "tenantry.dev/v1alpha1",
            "kind": "Organization",
            "metadata": {"name": "acme"},
            "spec": spec,
        }
    )


def cluster_for(org: Organization, policy: TenancyPolicy = POLICY) -> Cluster:
    rendering = render_organization(org, policy, TODAY)
    cluster = Cluster(
        namespaces={"kube-system": {}, "tenantry-system": {"app.kubernetes.io/name": "tenantry"}}
    )
    for obj in rendering.objects:
        if obj["kind"] == "Namespace":
            cluster.namespaces[obj["metadata"]["name"]] = obj["metadata"]["labels"]
            cluster.annotations[obj["metadata"]["name"]] = obj["metadata"].get("annotations", {})
        elif obj["kind"] == "ConfigMap":
            cluster.params[obj["metadata"]["namespace"]] = obj
    return cluster


ACME = cluster_for(organization())


def pod(namespace: str = "acme-prod", **spec: Any) -> Json:
    body: Json = {"containers": [{"name": "app", "image": "ghcr.io/acme/app:1"}]}
    body.update(spec)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": namespace},
        "spec": body,
    }


def placed(obj: Json) -> Json:
    """A pod as the placement mutation leaves it."""
    out = copy.deepcopy(obj)
    out["spec"].setdefault("nodeSelector", {})["pool"] = "tenants"
    out["spec"].setdefault("tolerations", []).append(
        {"key": "dedicated", "operator": "Equal", "value": "tenants", "effect": "NoSchedule"}
    )
    return out


def workload(kind: str, namespace: str = "acme-prod", **pod_spec: Any) -> Json:
    template = {"metadata": {"labels": {"app": "x"}}, "spec": pod(namespace, **pod_spec)["spec"]}
    group, version, _ = RESOURCES[kind]
    api = f"{group}/{version}" if group else version
    meta = {"name": "w", "namespace": namespace}
    if kind == "CronJob":
        spec: Json = {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}
    else:
        spec = {"selector": {"matchLabels": {"app": "x"}}, "template": template}
    return {"apiVersion": api, "kind": kind, "metadata": meta, "spec": spec}


def obj(kind: str, spec: Json, namespace: str = "acme-prod", **meta: Any) -> Json:
    group, version, _ = RESOURCES[kind]
    api = f"{group}/{version}" if group else version
    return {
        "apiVersion": api,
        "kind": kind,
        "metadata": {"name": "x", "namespace": namespace, **meta},
        "spec": spec,
    }


def create(body: Json, who: Who = TENANT, cluster: Cluster = ACME) -> Decision:
    return submit(Request("CREATE", who, body), cluster)


def update(new: Json, old: Json, who: Who = TENANT, cluster: Cluster = ACME, sub: str = "") -> Decision:
    return submit(Request("UPDATE", who, new, old, sub), cluster)


REPLICASET_CONTROLLER = service_account("kube-system", "replicaset-controller")
WORKLOAD_KINDS = ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"]


# === the manifests ===========================================================================


def test_every_guardrail_policy_has_a_fail_closed_binding_for_new_objects() -> None:
    for policy in VALIDATING + MUTATING:
        assert policy["spec"]["failurePolicy"] == "Fail"
        bindings = _bindings(policy)
        assert bindings, policy["metadata"]["name"]
        if "paramKind" in policy["spec"]:
            assert policy["spec"]["paramKind"] == {"apiVersion": "v1", "kind": "ConfigMap"}
            for binding in bindings:
                assert binding["spec"]["paramRef"]["name"] == GUARDRAILS_NAME
                assert "namespace" not in binding["spec"]["paramRef"]  # the request's namespace


@pytest.mark.parametrize("policy", VALIDATING + MUTATING, ids=lambda p: p["metadata"]["name"])
def test_only_tenant_namespaces_are_matched(policy: Json) -> None:
    assert policy["spec"]["matchConstraints"]["namespaceSelector"] == {
        "matchExpressions": [
            {"key": "app.kubernetes.io/managed-by", "operator": "In", "values": ["tenantry"]},
            {"key": "tenantry.dev/organization", "operator": "Exists"},
        ]
    }


@pytest.mark.parametrize(
    "doc", [d for d in DOCS if d["kind"].startswith("Validating")], ids=lambda d: d["metadata"]["name"]
)
def test_validating_manifests_are_valid_v1_at_1_30(doc: Json) -> None:
    kubernetes_validate.validate(doc, "1.30", strict=True)


@pytest.mark.parametrize("policy", VALIDATING, ids=lambda p: p["metadata"]["name"])
def test_every_validation_names_its_guardrail_and_rule(policy: Json) -> None:
    name = policy["metadata"]["name"]
    for validation in policy["spec"]["validations"]:
        assert validation["reason"] == "Forbidden"
        assert name in validation["message"] and f"Guardrail {name}" in validation["messageExpression"]


def test_kube_system_and_the_operators_namespace_are_never_affected() -> None:
    for namespace in ("kube-system", "tenantry-system"):
        anything = pod(namespace, nodeName="n1", containers=[{"name": "a", "image": "quay.io/x:1"}])
        assert create(anything) == Decision(True, "admitted", object=anything)
        service = obj("Service", {"type": "LoadBalancer", "externalIPs": ["1.2.3.4"]}, namespace)
        assert create(service).allowed


# === classes =================================================================================


def test_ingress_classes() -> None:
    assert create(obj("Ingress", {"ingressClassName": "nginx"})).allowed
    refused = create(obj("Ingress", {"ingressClassName": "public"}))
    assert not refused.allowed and refused.policy == "tenantry-guardrail-classes"
    assert refused.why == (
        "Ingress acme-prod/x: IngressClass public is not allowed in acme-prod (Organization acme, "
        "environment "
        "prod, TenancyPolicy default). Allowed: nginx, internal (spec.guardrails.ingressClasses). "
        "Guardrail tenantry-guardrail-classes, rule ingress-class."
    )
    legacy = obj("Ingress", {}, annotations={"kubernetes.io/ingress.class": "public"})
    assert "IngressClass public is not allowed" in create(legacy).why
    assert create(obj("Ingress", {}, annotations={"kubernetes.io/ingress.class": "internal"})).allowed
    classless = create(obj("Ingress", {}))
    assert not classless.allowed and "no IngressClass" in classless.why


def test_gateway_and_storage_classes() -> None:
    assert create(obj("Gateway", {"gatewayClassName": "shared"})).allowed
    assert "GatewayClass own is not allowed" in create(obj("Gateway", {"gatewayClassName": "own"})).why
    assert create(obj("PersistentVolumeClaim", {"storageClassName": "fast"})).allowed
    refused = create(obj("PersistentVolumeClaim", {"storageClassName": "premium"}))
    assert "StorageClass premium (if you set none: the cluster default) is not allowed" in refused.why
    assert "set spec.storageClassName to one of them" in refused.why
    # No default StorageClass in the cluster (or ""), so the claim is still class-less: refused.
    assert "no StorageClass" in create(obj("PersistentVolumeClaim", {})).why
    # Per environment: dev has its own list.
    assert create(obj("PersistentVolumeClaim", {"storageClassName": "scratch"}, "acme-dev")).allowed
    assert not create(obj("PersistentVolumeClaim", {"storageClassName": "fast"}, "acme-dev")).allowed


def test_a_class_removed_from_the_policy_keeps_working_for_existing_objects() -> None:
    """Only what a write adds is checked: an Ingress on a class the policy no longer lists can
    still be updated, as long as the update does not move it to another refused class."""
    old = obj("Ingress", {"ingressClassName": "legacy", "rules": []})
    new = obj("Ingress", {"ingressClassName": "legacy", "rules": [{"host": "a.acme.apps.example.com"}]})
    assert update(new, old).allowed
    assert not update(obj("Ingress", {"ingressClassName": "other"}), old).allowed
    gateway = obj("Gateway", {"gatewayClassName": "legacy"})
    assert update(gateway, gateway).allowed


# === images, priority and runtime classes ======================================================


def test_images_from_allowed_registries_only() -> None:
    assert create(placed(pod())).allowed
    bad = placed(pod(initContainers=[{"name": "i", "image": "docker.io/evil/x:1"}]))
    refused = create(bad)
    assert refused.policy == "tenantry-guardrail-workloads"
    assert refused.why.startswith(
        "Pod acme-prod/p: image docker.io/evil/x:1 is not from an allowed registry in acme-prod "
        "(Organization acme"
    )
    assert "Allowed prefixes: ghcr.io/acme/, registry.example.com/" in refused.why
    # A prefix is a prefix of the whole reference: ghcr.io/acme/ does not admit ghcr.io/acme-evil/.
    assert not create(placed(pod(containers=[{"name": "a", "image": "ghcr.io/acme-evil/x:1"}]))).allowed
    # Short names are compared as written.
    assert not create(placed(pod(containers=[{"name": "a", "image": "nginx"}]))).allowed


@pytest.mark.parametrize("kind", WORKLOAD_KINDS)
def test_pod_templates_of_every_workload_are_checked(kind: str) -> None:
    assert create(workload(kind)).allowed
    refused = create(workload(kind, containers=[{"name": "a", "image": "quay.io/x:1"}]))
    assert not refused.allowed and refused.why.startswith(f"{kind} acme-prod/w: image quay.io/x:1")


def test_ephemeral_containers_are_checked() -> None:
    running = placed(pod())
    debug = copy.deepcopy(running)
    debug["spec"]["ephemeralContainers"] = [{"name": "d", "image": "busybox"}]
    refused = update(debug, running, sub="ephemeralcontainers")
    assert not refused.allowed and "image busybox" in refused.why
    debug["spec"]["ephemeralContainers"][0]["image"] = "ghcr.io/acme/debug:1"
    assert update(debug, running, sub="ephemeralcontainers").allowed


def test_a_registry_removed_from_the_policy_keeps_existing_workloads_running() -> None:
    old = workload("Deployment", containers=[{"name": "a", "image": "old.example/x:1"}])
    scaled = copy.deepcopy(old)
    scaled["spec"]["replicas"] = 5
    assert update(scaled, old).allowed
    # Kubernetes' controllers create the pods of a template that was checked when it was written.
    assert create(pod(containers=[{"name": "a", "image": "old.example/x:1"}]), REPLICASET_CONTROLLER).allowed
    changed = workload("Deployment", containers=[{"name": "a", "image": "old.example/x:2"}])
    assert not update(changed, old).allowed


def test_priority_and_runtime_classes() -> None:
    assert create(placed(pod(priorityClassName="tenant-low", runtimeClassName="gvisor"))).allowed
    refused = create(placed(pod(priorityClassName="system-cluster-critical")))
    assert "PriorityClass system-cluster-critical (if you set none: the cluster globalDefault)" in refused.why
    assert "Allowed: tenant-low, tenant-high" in refused.why
    assert (
        "RuntimeClass runc-privileged is not allowed"
        in create(placed(pod(runtimeClassName="runc-privileged"))).why
    )
    assert not create(workload("Job", priorityClassName="system-node-critical")).allowed


# === services ===============================================================================


def test_node_ports_and_load_balancers_per_environment() -> None:
    assert create(obj("Service", {"ports": [{"port": 80}]})).allowed
    refused = create(obj("Service", {"type": "NodePort"}))
    assert refused.why.startswith("Service acme-prod/x: type NodePort is not allowed in acme-prod")
    assert "rule node-port" in refused.why
    assert create(obj("Service", {"type": "NodePort"}, "acme-dev")).allowed  # dev allows them
    assert (
        "type LoadBalancer is not allowed" in create(obj("Service", {"type": "LoadBalancer"}, "acme-dev")).why
    )
    existing = obj("Service", {"type": "NodePort", "ports": [{"port": 80}]})
    assert update(obj("Service", {"type": "NodePort", "ports": [{"port": 81}]}), existing).allowed


def test_external_ips_are_always_refused() -> None:
    refused = create(obj("Service", {"externalIPs": ["10.0.0.1"]}, "acme-dev"))
    assert "spec.externalIPs (10.0.0.1) is never allowed" in refused.why and "CVE-2020-8554" in refused.why
    assert not update(obj("Service", {"externalIPs": ["10.0.0.1"]}), obj("Service", {})).allowed


# === labels and annotations =================================================================


def test_denied_label_and_annotation_keys() -> None:
    ours = obj("Service", {}, labels={"tenantry.dev/organization": "beta"})
    refused = create(ours)
    assert refused.policy == "tenantry-guardrail-labels"
    assert refused.why.startswith(
        "Service acme-prod/x: key tenantry.dev/organization may not be set by tenants"
    )
    assert "Refused keys: tenantry.dev/*, example.com/billing, security.example.com/*" in refused.why
    assert not create(obj("Service", {}, annotations={"security.example.com/exempt": "true"})).allowed
    assert not create(obj("Service", {}, labels={"example.com/billing": "free"})).allowed
    assert create(obj("Service", {}, labels={"example.com/team": "a", "app": "x"})).allowed
    claimed = create(obj("Service", {}, labels={"app.kubernetes.io/managed-by": "tenantry"}))
    assert "rule ownership" in claimed.why
    assert create(obj("Service", {}, labels={"app.kubernetes.io/managed-by": "Helm"})).allowed


def test_existing_keys_may_stay_and_the_operator_writes_its_own() -> None:
    old = obj("Service", {}, labels={"example.com/billing": "legacy"})
    assert update(obj("Service", {"ports": []}, labels={"example.com/billing": "legacy"}), old).allowed
    quota = obj("ResourceQuota", {"hard": {}}, labels={"tenantry.dev/organization": "acme"})
    assert create(quota, OPERATOR).allowed


# === node placement ==========================================================================


def test_the_mutation_puts_every_pod_on_its_pool() -> None:
    decision = create(pod())
    assert decision.allowed and decision.object is not None
    assert decision.object["spec"]["nodeSelector"] == {"pool": "tenants"}
    assert decision.object["spec"]["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "tenants", "effect": "NoSchedule"}
    ]
    own = pod(nodeSelector={"disk": "ssd"}, tolerations=[{"key": "x", "operator": "Exists"}])
    mutated = create(own).object
    assert mutated is not None
    assert mutated["spec"]["nodeSelector"] == {"disk": "ssd", "pool": "tenants"}
    assert len(mutated["spec"]["tolerations"]) == 2


def test_pods_may_not_leave_their_pool() -> None:
    other = create(pod(nodeSelector={"pool": "system"}))
    assert not other.allowed and other.policy == "tenantry-guardrail-placement"
    assert other.why.startswith("Pod acme-prod/p: nodeSelector pool=system leaves the node pool of acme-prod")
    named = create(pod(nodeName="node-1"))
    assert "spec.nodeName node-1 bypasses the scheduler" in named.why
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["gpu"]}]}
                ]
            }
        }
    }
    assert "rule node-affinity" in create(pod(affinity=affinity)).why
    same = copy.deepcopy(affinity)
    same["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0][
        "matchExpressions"
    ][0]["values"] = ["tenants", "gpu"]
    assert create(pod(affinity=same)).allowed


def test_without_the_mutation_a_pod_must_carry_its_pool_itself() -> None:
    """Kubernetes 1.30 to 1.35 (no MutatingAdmissionPolicy v1): the validating rule alone."""
    req = Request("CREATE", TENANT, pod())
    for policy in VALIDATING:
        if policy["metadata"]["name"] == "tenantry-guardrail-placement":
            params = _evaluations(policy, req, req.object, ACME)
            assert params and not isinstance(params, Decision)
            full = _with_variables(policy, _activation(req, req.object, params[0], {}))
            assert not _condition(policy["spec"]["validations"][0]["expression"], full)
            assert "nodeSelector pool is missing from the node pool" in _message(
                policy["spec"]["validations"][0], full
            )


def test_workload_templates_may_not_ask_for_another_pool() -> None:
    assert create(workload("Deployment")).allowed
    assert not create(workload("Deployment", nodeSelector={"pool": "gpu"})).allowed
    assert not create(workload("CronJob", nodeName="n1")).allowed


def test_an_organization_narrows_its_placement_and_classes() -> None:
    narrowed = cluster_for(
        organization(
            ingressClasses=["internal"],
            registries=["ghcr.io/acme/team/"],
            placement={"nodeSelector": {"zone": "a"}},
        )
    )
    assert "Allowed: internal" in create(obj("Ingress", {"ingressClassName": "nginx"}), cluster=narrowed).why
    assert not create(placed(pod()), cluster=narrowed).allowed  # ghcr.io/acme/app is outside team/
    mutated = create(pod(containers=[{"name": "a", "image": "ghcr.io/acme/team/x"}]), cluster=narrowed).object
    assert mutated is not None and mutated["spec"]["nodeSelector"] == {"pool": "tenants", "zone": "a"}


# === failure modes ===========================================================================


def test_without_the_parameter_new_objects_are_refused_and_updates_pass() -> None:
    """A namespace whose ConfigMap is missing (created an instant ago, or being deleted): new
    objects are refused before any expression runs; updates pass, so the controllers emptying a
    terminating namespace are never blocked."""
    missing = Cluster(namespaces=dict(ACME.namespaces), params={})
    refused = create(pod(), cluster=missing)
    assert not refused.allowed and "no params found" in refused.why
    assert not create(obj("Service", {}), cluster=missing).allowed
    running = placed(pod())
    finishing = copy.deepcopy(running)
    finishing["metadata"]["finalizers"] = []
    assert update(finishing, running, service_account("kube-system", "job-controller"), missing).allowed
    assert update(obj("Ingress", {"ingressClassName": "x"}), obj("Ingress", {}), cluster=missing).allowed


def test_only_the_operator_creates_the_parameter() -> None:
    """Even while it is missing, nobody else can make a ConfigMap of that name the guardrails."""
    missing = Cluster(namespaces=dict(ACME.namespaces), params={})
    fake = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": GUARDRAILS_NAME, "namespace": "acme-prod"},
        "data": {"registries": "*"},
    }
    for cluster in (missing, ACME):
        refused = create(fake, cluster=cluster)
        assert not refused.allowed and refused.policy == "tenantry-guardrail-parameter"
    assert create(ACME.params["acme-prod"], OPERATOR, missing).allowed


def test_an_organization_deleted_mid_flight_leaves_the_guardrails_in_force() -> None:
    """Retain: the namespace and its ConfigMap stay (a guardrail, kind table), so nothing changes
    for what runs there; Delete: the namespace goes, and a terminating namespace takes no new
    objects anyway (covered above for updates)."""
    assert when_released(res.GUARDRAILS, "Retain") == "keep"
    assert not create(obj("Service", {"type": "NodePort"})).allowed


def test_the_rendered_parameter_is_what_the_policies_read() -> None:
    data = ACME.params["acme-prod"]["data"]
    assert data["ingressClasses"] == "nginx,internal"
    assert data["nodeSelector"] == "pool=tenants"
    assert data["tolerations"] == "dedicated=tenants:NoSchedule"
    assert data["deniedLabelKeys"] == "tenantry.dev/,example.com/billing,security.example.com/"
    assert ACME.params["acme-dev"]["data"]["storageClasses"] == "standard,scratch"


# === hosts (issue 21) ==========================================================================

BETA = cluster_for(
    Organization.model_validate({**organization().model_dump(by_alias=True), "metadata": {"name": "beta"}})
)


def ingress(*hosts: str, namespace: str = "acme-prod", tls: list[str] | None = None, **meta: Any) -> Json:
    spec: Json = {
        "ingressClassName": "nginx",
        "rules": [
            {"host": h, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": BACKEND}]}}
            if h
            else {"http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": BACKEND}]}}
            for h in hosts
        ],
    }
    if tls is not None:
        spec["tls"] = [{"hosts": tls, "secretName": "cert"}]
    return obj("Ingress", spec, namespace, **meta)


BACKEND = {"service": {"name": "web", "port": {"number": 80}}}


def test_an_organization_uses_only_its_own_hosts() -> None:
    assert create(ingress("shop.acme.apps.example.com", "acme.example.com")).allowed
    assert create(ingress("*.api.acme.apps.example.com")).allowed  # a wildcard inside its own
    refused = create(ingress("billing.beta.apps.example.com"))
    assert refused.policy == "tenantry-guardrail-hosts"
    assert refused.why == (
        "Ingress acme-prod/x: host billing.beta.apps.example.com is not one of the hosts of acme-prod "
        "(Organization acme, environment prod, TenancyPolicy default). Allowed hosts: "
        "*.acme.apps.example.com, acme.example.com (a *. host covers every name under it; TenancyPolicy "
        "spec.guardrails.hosts, or spec.guardrails.hosts of the Organization). Guardrail "
        "tenantry-guardrail-hosts, rule hosts."
    )
    # beta may use it: ownership comes from each namespace's own parameter.
    assert create(ingress("billing.beta.apps.example.com", namespace="beta-prod"), cluster=BETA).allowed
    # A wildcard beyond its own, the apex of a wildcard, and a look-alike suffix.
    for host in (
        "*.apps.example.com",
        "*.beta.apps.example.com",
        "acme.apps.example.com",
        "xacme.apps.example.com",
    ):
        assert "is not one of the hosts" in create(ingress(host)).why, host


def test_no_host_a_default_backend_and_foreign_tls_hosts_are_refused() -> None:
    hostless = create(ingress(""))
    assert "a rule without a host catches the traffic of every host nobody claimed" in hostless.why
    catch_all = create(obj("Ingress", {"ingressClassName": "nginx", "defaultBackend": BACKEND}))
    assert catch_all.why.startswith(
        "Ingress acme-prod/x: spec.defaultBackend catches the traffic of every host"
    )
    assert "rule default-backend" in catch_all.why
    cert = create(ingress("shop.acme.apps.example.com", tls=["billing.beta.apps.example.com"]))
    assert "host billing.beta.apps.example.com is not one of the hosts" in cert.why
    assert create(ingress("shop.acme.apps.example.com", tls=["shop.acme.apps.example.com"])).allowed


def test_hosts_an_ingress_already_has_stay_allowed() -> None:
    """A host the policy has since taken away keeps working; adding one is checked."""
    old = ingress("legacy.example.org")
    assert update(ingress("legacy.example.org", "shop.acme.apps.example.com"), old).allowed
    assert not update(ingress("legacy.example.org", "other.example.org"), old).allowed


@pytest.mark.parametrize("kind", ["HTTPRoute", "GRPCRoute", "TLSRoute"])
def test_gateway_api_routes_use_only_their_own_hostnames(kind: str) -> None:
    assert create(obj(kind, {"hostnames": ["shop.acme.apps.example.com"]})).allowed
    refused = create(
        obj(kind, {"hostnames": ["shop.acme.apps.example.com", "billing.beta.apps.example.com"]})
    )
    assert refused.why.startswith(f"{kind} acme-prod/x: host billing.beta.apps.example.com is not one of")
    everything = create(obj(kind, {"parentRefs": [{"name": "shared"}]}))
    assert "a route without spec.hostnames takes every host of the listeners" in everything.why


def test_a_policy_may_allow_any_host() -> None:
    any_host = TenancyPolicy.model_validate(
        {**POLICY.model_dump(by_alias=True, exclude_none=True), "spec": {"guardrails": {"hosts": ["*"]}}}
    )
    anything = cluster_for(organization(), any_host)
    assert create(ingress("billing.beta.apps.example.com"), cluster=anything).allowed
    assert create(
        obj("Ingress", {"ingressClassName": "nginx", "defaultBackend": BACKEND}), cluster=anything
    ).allowed


def test_dangerous_ingress_annotations_are_refused() -> None:
    snippet = create(
        ingress("shop.acme.apps.example.com", annotations={"nginx.ingress.kubernetes.io/server-snippet": "x"})
    )
    assert snippet.why.startswith(
        "Ingress acme-prod/x: annotation nginx.ingress.kubernetes.io/server-snippet is not allowed in "
        "acme-prod"
    )
    assert "rule annotations" in snippet.why and "*-snippet" in snippet.why
    for key in ("haproxy.org/backend-config-snippet", "nginx.ingress.kubernetes.io/auth-tls-secret"):
        assert not create(ingress("shop.acme.apps.example.com", annotations={key: "beta-prod/ca"})).allowed, (
            key
        )
    fine = {"nginx.ingress.kubernetes.io/rewrite-target": "/"}
    assert create(ingress("shop.acme.apps.example.com", annotations=fine)).allowed
    # Already there: the policy changed since; editing something else stays possible.
    old = ingress("shop.acme.apps.example.com", annotations={"nginx.ingress.kubernetes.io/auth-url": "x"})
    assert update(
        ingress("a.acme.apps.example.com", annotations={"nginx.ingress.kubernetes.io/auth-url": "x"}), old
    ).allowed


# === ExternalName ================================================================================


def external(name: str, namespace: str = "acme-prod") -> Json:
    return obj("Service", {"type": "ExternalName", "externalName": name}, namespace)


def test_external_names_only_to_listed_targets_never_inside_the_cluster() -> None:
    assert create(external("api.stripe.com")).allowed
    assert create(external("s3.eu-west-1.amazonaws.com.")).allowed  # under *.amazonaws.com, FQDN
    two_labels = cluster_for(
        organization(),
        TenancyPolicy.model_validate(
            {"metadata": {"name": "default"}, "spec": {"guardrails": {"externalNames": ["stripe.com"]}}}
        ),
    )
    assert create(external("stripe.com."), cluster=two_labels).allowed  # fully qualified
    assert (
        "write example.com. with the trailing dot" in create(external("stripe.com"), cluster=two_labels).why
    )
    refused = create(external("evil.example.net"))
    assert refused.why == (
        "Service acme-prod/x: type ExternalName to evil.example.net is not allowed in acme-prod "
        "(Organization "
        "acme, environment prod, TenancyPolicy default): it is not among the allowed targets. Allowed: "
        "api.stripe.com, *.amazonaws.com (spec.guardrails.externalNames). Guardrail "
        "tenantry-guardrail-services, rule external-name."
    )
    for target in (
        "billing.beta-prod.svc",
        "billing.beta-prod.svc.cluster.local",
        "kubernetes.default.svc.cluster.local.",
        "169.254.169.254",
        "10.244.2.17",
        "localhost",
        "billing",  # the search path: billing.<namespace>.svc.cluster.local
        "billing.beta-prod",  # billing.beta-prod.svc.cluster.local
    ):
        why = create(external(target)).why
        assert "it is an IP address or a cluster-internal name" in why, target


def test_external_names_are_refused_where_the_policy_lists_none() -> None:
    none = cluster_for(organization(), TenancyPolicy.model_validate({"metadata": {"name": "default"}}))
    assert "Allowed: none" in create(external("api.stripe.com"), cluster=none).why
    existing = external("legacy.example.org")
    assert update(existing, existing, cluster=none).allowed  # kept from before


# === labels in templates ==========================================================================

TEMPLATE_KINDS = [
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
    "ReplicationController",
]


def _with_template_labels(body: Json, labels: dict[str, str]) -> Json:
    out = copy.deepcopy(body)
    spec = out["spec"]["jobTemplate"]["spec"] if out["kind"] == "CronJob" else out["spec"]
    spec["template"]["metadata"]["labels"].update(labels)
    return out


def _workload(kind: str) -> Json:
    if kind == "ReplicationController":
        body = workload("ReplicaSet")
        body.update(apiVersion="v1", kind=kind)
        body["spec"]["selector"] = {"app": "x"}
        return body
    return workload(kind)


@pytest.mark.parametrize("kind", TEMPLATE_KINDS)
def test_denied_keys_are_refused_in_pod_templates(kind: str) -> None:
    body = _workload(kind)
    assert create(body).allowed
    spoofed = create(_with_template_labels(body, {"tenantry.dev/organization": "beta"}))
    assert spoofed.policy == "tenantry-guardrail-labels"
    assert spoofed.why.startswith(f"{kind} acme-prod/w: key tenantry.dev/organization in a template")
    owned = create(_with_template_labels(body, {"app.kubernetes.io/managed-by": "tenantry"}))
    assert "label app.kubernetes.io/managed-by=tenantry in a template" in owned.why
    assert not create(_with_template_labels(body, {"example.com/billing": "free"})).allowed


def test_every_template_kubernetes_copies_is_checked() -> None:
    cron = workload("CronJob")
    cron["spec"]["jobTemplate"]["metadata"] = {"annotations": {"security.example.com/exempt": "yes"}}
    assert "key security.example.com/exempt in a template" in create(cron).why
    claims = workload("StatefulSet")
    claims["spec"]["volumeClaimTemplates"] = [{"metadata": {"name": "d", "labels": {"tenantry.dev/x": "y"}}}]
    assert "key tenantry.dev/x in a template" in create(claims).why
    template = {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": "t", "namespace": "acme-prod"},
        "template": {"metadata": {"labels": {"tenantry.dev/organization": "beta"}}, "spec": pod()["spec"]},
    }
    assert "key tenantry.dev/organization in a template" in create(template).why


def test_template_keys_already_there_may_stay() -> None:
    old = _with_template_labels(workload("Deployment"), {"example.com/billing": "legacy"})
    scaled = copy.deepcopy(old)
    scaled["spec"]["replicas"] = 3
    assert update(scaled, old).allowed
    assert not update(_with_template_labels(old, {"example.com/billing": "free"}), old).allowed
    # The controllers copying a checked template are not checked again.
    replicas = _with_template_labels(workload("ReplicaSet"), {"example.com/billing": "legacy"})
    assert create(replicas, service_account("kube-system", "deployment-controller")).allowed


# === volumes and tokens ===========================================================================


def claim(volume: str | None, namespace: str = "acme-prod") -> Json:
    spec: Json = {"storageClassName": "fast"}
    if volume is not None:
        spec["volumeName"] = volume
    return obj("PersistentVolumeClaim", spec, namespace)


def test_a_claim_names_only_the_organizations_volumes() -> None:
    assert create(claim(None)).allowed
    assert create(claim("acme-prod-data")).allowed
    refused = create(claim("beta-data-pv"))
    assert refused.policy == "tenantry-guardrail-volumes"
    assert refused.why.startswith(
        "PersistentVolumeClaim acme-prod/x: spec.volumeName beta-data-pv names a PersistentVolume not "
        "declared for the Organization of acme-prod"
    )
    assert "Allowed: acme-prod-* (spec.guardrails.persistentVolumes; name* is a prefix)" in refused.why
    assert not create(claim("acme-dev-data")).allowed  # another environment's
    # The PV controller binds claims by setting volumeName: never checked.
    bound = claim("pvc-4f1e")
    binder = service_account("kube-system", "persistent-volume-binder")
    assert update(bound, claim(None), binder).allowed
    assert not update(bound, claim(None)).allowed


def test_legacy_service_account_token_secrets_are_refused() -> None:
    token = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/service-account-token",
        "metadata": {
            "name": "t",
            "namespace": "acme-dev",
            "annotations": {"kubernetes.io/service-account.name": "default"},
        },
    }
    refused = create(token)
    assert refused.policy == "tenantry-guardrail-tokens"
    assert refused.why.startswith("Secret acme-dev/t: type kubernetes.io/service-account-token gets a")
    # It needs no parameter, so it also holds where the ConfigMap is missing.
    (tokens,) = [p for p in VALIDATING if p["metadata"]["name"] == "tenantry-guardrail-tokens"]
    assert "paramKind" not in tokens["spec"]
    opaque = {**token, "type": "Opaque"}
    assert create(opaque).allowed
