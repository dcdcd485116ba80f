"""Quota keys: every key Kubernetes 1.36 accepts in a ResourceQuota's spec.hard is valid in a
policy and an Organization, and nothing else is; the CRD's CEL rule and the Python check agree.

Kubernetes' rule (pkg/apis/core/validation/validation.go ValidateResourceQuotaResourceName,
pkg/apis/core/helper/helpers.go IsStandardQuotaResourceName, IsIntegerResourceName): a qualified
name; without "/" one of the standard quota names or hugepages-*/requests.hugepages-*; with "/"
any qualified name. Object counts, and "/" keys outside requests. and kubernetes.io/, are whole.
"""

from __future__ import annotations

import copy

import pytest

from tenantry.api.base import is_integer_resource, is_quota_resource
from tenantry.api.organization import Organization
from tests.unit.test_bad_inputs import BASE
from tests.unit.test_crds import api_server_rejects

ACCEPTED = [
    "requests.cpu",
    "limits.memory",
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.ephemeral-storage",
    "limits.ephemeral-storage",
    "requests.storage",
    "pods",
    "services",
    "services.nodeports",
    "services.loadbalancers",
    "secrets",
    "configmaps",
    "replicationcontrollers",
    "resourcequotas",
    "persistentvolumeclaims",
    "hugepages-1Gi",
    "hugepages-2Mi",
    "requests.hugepages-1Gi",
    "requests.nvidia.com/gpu",
    "requests.amd.com/gpu",
    "nvidia.com/gpu",  # accepted by validation; no quota evaluator tracks it (only requests.*)
    "count/deployments.apps",
    "count/secrets",
    "count/widgets.example.com",
    "gold.storageclass.storage.k8s.io/requests.storage",
    "gold.storageclass.storage.k8s.io/persistentvolumeclaims",
    "requests.deviceclass.resource.kubernetes.io/gpu.example.com",
]
REFUSED = [
    "storage",  # a standard resource name, but not one a quota takes
    "gpus",
    "limits.hugepages-2Mi",
    "requests.nvidia.com/",
    "a/b/c",
    "Count/x",
    "count/",
    "-cpu",
    "requests.nvidia.com/" + "g" * 64,
]


@pytest.mark.parametrize("key", ACCEPTED)
def test_every_key_kubernetes_accepts_is_valid(key: str) -> None:
    assert is_quota_resource(key)
    doc = copy.deepcopy(BASE)
    doc["spec"]["quota"] = {"prod": {key: "0"}}
    Organization.model_validate(doc)
    assert api_server_rejects(doc) == []


@pytest.mark.parametrize("key", REFUSED)
def test_keys_kubernetes_refuses_are_refused(key: str) -> None:
    assert not is_quota_resource(key)
    doc = copy.deepcopy(BASE)
    doc["spec"]["quota"] = {"prod": {key: "0"}}
    with pytest.raises(ValueError, match="not a quota resource Kubernetes accepts"):
        Organization.model_validate(doc)
    if len(key.rpartition("/")[2]) <= 63:  # the CRD leaves the part lengths to Kubernetes
        assert api_server_rejects(doc), key


@pytest.mark.parametrize(
    ("key", "whole"),
    [
        ("pods", True),
        ("secrets", True),
        ("count/jobs.batch", True),
        ("nvidia.com/gpu", True),
        ("gold.storageclass.storage.k8s.io/requests.storage", True),
        ("requests.nvidia.com/gpu", False),
        ("requests.cpu", False),
        ("hugepages-2Mi", False),
        ("requests.deviceclass.resource.kubernetes.io/x", False),
    ],
)
def test_whole_numbers_where_kubernetes_wants_them(key: str, whole: bool) -> None:
    assert is_integer_resource(key) == whole
    doc = copy.deepcopy(BASE)
    doc["spec"]["quota"] = {"prod": {key: "500m"}}
    if whole:
        with pytest.raises(ValueError, match="must be whole numbers"):
            Organization.model_validate(doc)
    else:
        Organization.model_validate(doc)
