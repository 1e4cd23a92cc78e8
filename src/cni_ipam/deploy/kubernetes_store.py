"""The objects the Kubernetes store (``"datastore": "kubernetes"``) needs: CRDs, RBAC, the nodes' flat file.

The CRDs are upstream whereabouts' own, vendored unchanged in ``crds/``
(each file's header names its source).  The RBAC grants exactly the verbs
the store, the reconciler and the node agent send, and no more:

* Plugins and the node agent, through the node's kubeconfig (the plain
  installer's service account): ``ippools`` and
  ``overlappingrangeipreservations`` get, list, watch, create, patch
  (JSON Patch with a ``test`` of ``resourceVersion``) and delete;
  ``nodeslicepools`` get, list, watch (read only: their controller writes
  them).  A Role in the namespace holding the objects, not a ClusterRole:
  the store keeps every object in its kubeconfig's namespace.
* The reconciler: the same Role, plus cluster-wide ``pods`` and ``nodes``
  get, list, watch (whose pods and nodes are gone) and ``events`` create,
  patch (what it released, on the pod's namespace; core and
  ``events.k8s.io``).

Upstream grants more (k8snetworkplumbingwg/whereabouts doc/crds/daemonset-install.yaml
@ 3a262bd0cd873e13d9b379342f8251b852a89b8f, v0.9.4: ``update`` on its
objects, writes on ``nodeslicepools``, all verbs on ``leases``,
``network-attachment-definitions`` reads, events ``update`` and ``get``),
and so does OpenShift (openshift/cluster-network-operator
bindata/network/multus/002-rbac.yaml @ 2a6a57fef3ac1c8fde00e85b603e9f73ef29b75c,
ClusterRole ``whereabouts-cni``); docs/deploying.md lists why we need none
of it.
"""

from __future__ import annotations

import os

from .manifests import Options, object_meta

GROUP = "whereabouts.cni.cncf.io"
CRD_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crds")
CRD_FILES = ("whereabouts.cni.cncf.io_ippools.yaml", "whereabouts.cni.cncf.io_overlappingrangeipreservations.yaml",
             "whereabouts.cni.cncf.io_nodeslicepools.yaml")
STORE_ROLE = "cni-ipam-kubernetes-store"
RECONCILER_ROLE = "cni-ipam-kubernetes-store-reconciler"
RBAC = "rbac.authorization.k8s.io"
# What the store sends (GET, LIST, WATCH, POST, PATCH, DELETE); never PUT, so no "update".
OBJECT_VERBS = ["get", "list", "watch", "create", "patch", "delete"]
READ_VERBS = ["get", "list", "watch"]


def crds() -> list:
    """The three CRDs as upstream ships them (their source in each file's header comment)."""
    import yaml

    found = []
    for name in CRD_FILES:
        with open(os.path.join(CRD_DIR, name), encoding="utf-8") as f:
            found += [doc for doc in yaml.safe_load_all(f) if doc is not None]
    return found


def store_rules() -> list:
    return [{"apiGroups": [GROUP], "resources": ["ippools", "overlappingrangeipreservations"], "verbs": OBJECT_VERBS},
            {"apiGroups": [GROUP], "resources": ["nodeslicepools"], "verbs": READ_VERBS}]


def reconciler_rules() -> list:
    return [{"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": READ_VERBS},
            {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}]


def _subjects(accounts, options: Options) -> list:
    return [{"kind": "ServiceAccount", "name": name, "namespace": options.namespace} for name in accounts]


def _binding(kind: str, name: str, meta: dict, subjects: list) -> dict:
    return {"apiVersion": f"{RBAC}/v1", "kind": f"{kind}Binding", "metadata": meta,
            "roleRef": {"apiGroup": RBAC, "kind": kind, "name": name}, "subjects": subjects}


def store_rbac(options: Options, store_namespace: str, accounts, reconciler: str | None) -> list:
    """The Role on the objects in ``store_namespace`` for the service ``accounts`` (and ``reconciler``), and
    with a ``reconciler``, its ClusterRole on pods, nodes and events."""
    def role_meta():
        return {**object_meta(STORE_ROLE, options), "namespace": store_namespace}

    everyone = list(accounts) + ([reconciler] if reconciler else [])
    objects = [{"apiVersion": f"{RBAC}/v1", "kind": "Role", "metadata": role_meta(), "rules": store_rules()},
               _binding("Role", STORE_ROLE, role_meta(), _subjects(everyone, options))]
    if reconciler:
        objects += [{"apiVersion": f"{RBAC}/v1", "kind": "ClusterRole",
                     "metadata": object_meta(RECONCILER_ROLE, options, namespaced=False), "rules": reconciler_rules()},
                    _binding("ClusterRole", RECONCILER_ROLE, object_meta(RECONCILER_ROLE, options, namespaced=False),
                             _subjects([reconciler], options))]
    return objects


def flat_file(directory: str) -> dict:
    """The nodes' whereabouts.conf for the Kubernetes store, as upstream's installer writes it
    (script/lib.sh ``generateWhereaboutsConf``), the kubeconfig beside it."""
    return {"datastore": "kubernetes",
            "kubernetes": {"kubeconfig": f"{directory}/whereabouts.kubeconfig"},
            "configuration_path": directory}
