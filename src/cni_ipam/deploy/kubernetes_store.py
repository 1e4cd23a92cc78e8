"""The objects the Kubernetes store (``"datastore": "kubernetes"``) needs: CRDs, RBAC, the nodes' flat file.

The CRDs are upstream whereabouts' own, vendored unchanged in ``crds/``
(each file's header names its source).  The RBAC grants exactly the verbs
the store sends, and no more, to whoever holds the node's kubeconfig (the
plain installer's service account, whose token the installer writes
there): the plugins, the node agent and the reconciler, which all open
the store through that kubeconfig.  ``ippools`` and
``overlappingrangeipreservations``: get, list, watch, create, patch (JSON
Patch with a ``test`` of ``resourceVersion``) and delete;
``nodeslicepools``: get, list, watch (read only: their controller writes
them).  A Role in the namespace holding the objects, not a ClusterRole:
the store keeps every object in its kubeconfig's namespace.  The
reconciler's own calls (pods, events) are granted beside it, with or
without this store (``manifests.reconciler_rbac``).

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


def _subjects(accounts, options: Options) -> list:
    return [{"kind": "ServiceAccount", "name": name, "namespace": options.namespace} for name in accounts]


def _binding(kind: str, name: str, meta: dict, subjects: list) -> dict:
    return {"apiVersion": f"{RBAC}/v1", "kind": f"{kind}Binding", "metadata": meta,
            "roleRef": {"apiGroup": RBAC, "kind": kind, "name": name}, "subjects": subjects}


def store_rbac(options: Options, store_namespace: str, accounts) -> list:
    """The Role on the objects in ``store_namespace``, bound to the service ``accounts``."""
    def role_meta():
        return {**object_meta(STORE_ROLE, options), "namespace": store_namespace}

    return [{"apiVersion": f"{RBAC}/v1", "kind": "Role", "metadata": role_meta(), "rules": store_rules()},
            _binding("Role", STORE_ROLE, role_meta(), _subjects(accounts, options))]


def flat_file(directory: str) -> dict:
    """The nodes' whereabouts.conf for the Kubernetes store, as upstream's installer writes it
    (script/lib.sh ``generateWhereaboutsConf``), the kubeconfig beside it."""
    return {"datastore": "kubernetes",
            "kubernetes": {"kubeconfig": f"{directory}/whereabouts.kubeconfig"},
            "configuration_path": directory}
