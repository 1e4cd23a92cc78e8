"""The node-slice controller's objects: its Deployment and RBAC (``deploy/node-slices/``, opt-in).

It needs the Kubernetes store's CRDs (``deploy/kubernetes-store/`` holds the
NodeSlicePool CRD with the others).  The RBAC grants exactly the verbs
``cni-ipam node-slices`` sends (src/cni_ipam/nodeslices/controller.py):

* cluster-wide: ``nodes`` and ``network-attachment-definitions`` list, watch;
* in the store's namespace: ``nodeslicepools`` list, watch, create, update
  (a PUT carrying the resourceVersion it read); ``ippools`` list, watch,
  create (each node's pool, as its plugin would); ``leases`` get, create,
  update (leader election).

Upstream's controller (k8snetworkplumbingwg/whereabouts doc/crds/node-slice-controller.yaml
@ 3a262bd0cd873e13d9b379342f8251b852a89b8f) runs one replica without leader
election under the plugins' own ClusterRole; ours runs under its own account.
"""

from __future__ import annotations

from .kubernetes_store import GROUP, RBAC
from .manifests import Options, object_meta, service_account

NAME = "cni-ipam-node-slices"
WATCH = ["list", "watch"]


def cluster_rules() -> list:
    return [{"apiGroups": [""], "resources": ["nodes"], "verbs": list(WATCH)},
            {"apiGroups": ["k8s.cni.cncf.io"], "resources": ["network-attachment-definitions"], "verbs": list(WATCH)}]


def namespace_rules() -> list:
    return [{"apiGroups": [GROUP], "resources": ["nodeslicepools"], "verbs": WATCH + ["create", "update"]},
            {"apiGroups": [GROUP], "resources": ["ippools"], "verbs": WATCH + ["create"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}]


def _binding(kind: str, meta: dict, options: Options) -> dict:
    return {"apiVersion": f"{RBAC}/v1", "kind": f"{kind}Binding", "metadata": meta,
            "roleRef": {"apiGroup": RBAC, "kind": kind, "name": NAME},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": options.namespace}]}


def rbac(options: Options, store_namespace: str) -> list:
    """The service account, its ClusterRole (nodes, NADs) and its Role in ``store_namespace``."""
    role_meta = {**object_meta(NAME, options), "namespace": store_namespace}
    cluster_meta = object_meta(NAME, options, namespaced=False)
    return [service_account(NAME, options, token=True),
            {"apiVersion": f"{RBAC}/v1", "kind": "ClusterRole", "metadata": cluster_meta, "rules": cluster_rules()},
            _binding("ClusterRole", object_meta(NAME, options, namespaced=False), options),
            {"apiVersion": f"{RBAC}/v1", "kind": "Role", "metadata": role_meta, "rules": namespace_rules()},
            _binding("Role", dict(role_meta), options)]


def deployment(options: Options, store_namespace: str) -> dict:
    """One replica (a second one would wait on the Lease); ``Recreate`` so an update never runs two at once
    for longer than a lease."""
    labels = {"app": NAME}
    container = {
        "name": "node-slices",
        "image": options.image,
        "command": ["cni-ipam", "node-slices", "--namespace", store_namespace],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "resources": {"requests": {"cpu": "10m", "memory": "50Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": object_meta(NAME, options),
            "spec": {"replicas": 1, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": {**labels, "app.kubernetes.io/part-of": "cni-ipam"}},
                                  "spec": {"serviceAccountName": NAME, "containers": [container]}}}}
