"""The Kubernetes objects to apply: NADs, and the daemon sets only the networks need.

Order is fixed so output diffs well: NetworkAttachmentDefinitions by
namespace then name, then the DHCP daemon's objects, then the reconciler's,
then the node agent's; each group ServiceAccount, RBAC, DaemonSet.

Privileges, and why:

* DHCP daemon: ``privileged`` and ``hostNetwork``, because it enters every
  pod's network namespace (``setns`` needs CAP_SYS_ADMIN) and sends raw
  DHCP packets there (CAP_NET_RAW/NET_ADMIN).  It never calls the API
  server: its ServiceAccount has no role and mounts no token.
* Reconciler: root (to write the store under ``/var/lib/cni``), not
  privileged.  With the ``kubernetes`` liveness source it sends, as its
  own ServiceAccount, exactly: ``list`` and ``get`` on ``pods`` (the run's
  snapshot, the fresh look before each release), ``watch`` on ``pods``
  (its node's, between runs) and ``create`` on ``events`` (one per address
  the watch frees or fails to free, in the pod's namespace): a ClusterRole,
  since pods of every namespace hold addresses.  Nothing at all without
  that source.
* Node agent (rendered by default with a whereabouts network; not with
  ``--no-agent``): root (it writes the SQLite store the plugins share), not
  privileged, no API token.  It listens on the host's
  ``/run/cni-ipam/agent.sock`` and reads flat files and the store at the
  paths the plugins name, so those directories are mounted at the same
  paths as on the host (the CNI config dirs read-only).  With it the
  installer puts the native forwarder in place of the ``whereabouts``
  launcher (``install --native``), which hands the call to the Python
  plugin whenever the agent does not answer.
* Kubernetes store (``"datastore": "kubernetes"``, which every network
  without a ``datastore`` of its own gets from the operator's flat file):
  the plugins, the agent and the reconciler reach the objects through the
  kubeconfig the flat file names, the operator's, with its rights.  The
  CRDs, that RBAC, the nodes' kubeconfig and flat file are the operator's,
  which installs and writes them on every cluster with Multus: render
  emits none of them, so it never fights the operator.
* Host namespaces' directory ``/var/run/netns`` is mounted
  ``HostToContainer``, so netns mounts made after the pod started are seen;
  no daemon makes mounts the host must see, so none is ``Bidirectional``.
"""

from __future__ import annotations

DEFAULT_IMAGE = "quay.io/example/cni-ipam:latest"  # a placeholder: build and push your own image
DEFAULT_NAMESPACE = "openshift-multus"
DEFAULT_CNI_BIN_DIR = "/var/lib/cni/bin"  # where OpenShift's Multus runs plugins from
DEFAULT_RUNTIME_DIR = "/var/lib/cni-ipam"  # writable on RHCOS, beside the bin dir
DHCP_NAME = "dhcp-daemon"
RECONCILER_NAME = "whereabouts-reconciler"
AGENT_NAME = "cni-ipam-agent"
AGENT_SOCKET_DIR = "/run/cni-ipam"
STORE_DIR = "/var/lib/cni/whereabouts"
CNI_CONF_DIRS = (("cni-net-dir", "/etc/kubernetes/cni/net.d"), ("cni-net-dir-upstream", "/etc/cni/net.d"))
CONFIGMAP = "whereabouts-config"
RECONCILER_CONFIG = "whereabouts-reconciler-config"  # the store the rendered networks use (render only)
RECONCILER_CONFIG_DIR = "/etc/cni-ipam/reconciler"
RECONCILER_CONFIG_FILE = "config.json"
INSTALLER_NAME = "cni-ipam-installer"
HOST = "/host"


class Options:
    """What the command line can change."""

    __slots__ = ("namespace", "image", "cni_bin_dir", "kubernetes_source", "runtime_dir", "agent")

    def __init__(self, namespace=DEFAULT_NAMESPACE, image=DEFAULT_IMAGE, cni_bin_dir=DEFAULT_CNI_BIN_DIR,
                 kubernetes_source=True, runtime_dir=DEFAULT_RUNTIME_DIR, agent=False):
        self.namespace = namespace
        self.image = image
        self.cni_bin_dir = cni_bin_dir
        self.kubernetes_source = kubernetes_source
        self.runtime_dir = runtime_dir
        self.agent = agent  # the node agent (and the native forwarder), when a network uses whereabouts


OUR_PLUGINS = frozenset(("static", "dhcp", "whereabouts"))


def render(networks: list, options: Options) -> list:
    objects = [nad(n) for n in sorted(networks, key=lambda n: (n.namespace, n.name))]
    used = set().union(*(n.ipam_types for n in networks))
    agent = options.agent and "whereabouts" in used
    if used & OUR_PLUGINS:  # also for static alone: else the node keeps whatever static it has
        objects += installer_objects(options, native=agent)
    if "dhcp" in used:
        objects += dhcp_objects(options)
    if "whereabouts" in used:
        objects += reconciler_objects(options, reconciler_config(networks))
        if agent:
            objects += agent_objects(options)
    return objects


def nad(network) -> dict:
    return {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": network.name, "namespace": network.namespace},
        "spec": {"config": network.config},
    }


def object_meta(name: str, options: Options, namespaced=True) -> dict:
    meta = {"name": name}
    if namespaced:
        meta["namespace"] = options.namespace
    meta["labels"] = {"app": name, "app.kubernetes.io/part-of": "cni-ipam"}
    return meta


def service_account(name: str, options: Options, token: bool) -> dict:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": object_meta(name, options),
            "automountServiceAccountToken": token}


def host_path(name: str, path: str, kind: str) -> dict:
    return {"name": name, "hostPath": {"path": path, "type": kind}}


KEEP_EVERY = "2"  # seconds between the installer's looks at the launchers


def install_container(options: Options, native: bool = False) -> dict:
    """Puts our launchers and the Python runtime they run on the node, then keeps the launchers there.

    ``cni-ipam install --runtime-dir`` copies the image's interpreter, its
    libraries and our package to the runtime dir; the launchers in the CNI
    bin dir name it by its path on the node (``--host-root`` stripped), so
    nodes need no Python.  ``--keep`` then puts our launchers back whenever
    something overwrites them: on OpenShift the operator's
    multus-additional-cni-plugins pods copy Go's static, dhcp and
    whereabouts into the same dir each time they start.  ``native`` (the
    node agent is deployed): ``whereabouts`` is the native forwarder to the
    agent, its Python launcher beside it for when the agent does not answer.
    """
    return {
        "name": "install-cni-ipam",
        "image": options.image,
        "command": ["cni-ipam", "install", "--cni-bin-dir", HOST + options.cni_bin_dir,
                    "--runtime-dir", HOST + options.runtime_dir, "--host-root", HOST,
                    *(["--native"] if native else []), "--keep", KEEP_EVERY],
        "securityContext": {"runAsUser": 0},
        "resources": {"requests": {"cpu": "1m", "memory": "20Mi"}},
        "volumeMounts": [{"name": "cni-bin-dir", "mountPath": HOST + options.cni_bin_dir},
                         {"name": "runtime-dir", "mountPath": HOST + options.runtime_dir}],
    }


def installer_objects(options: Options, containers=(), volumes=(), native: bool = False) -> list:
    """The one DaemonSet that installs: ``cni-ipam-installer``, plus any ``containers`` of the plain set;
    ``native`` with the node agent (:func:`install_container`)."""
    pod = {"containers": [install_container(options, native), *containers],
           "volumes": install_volumes(options) + list(volumes)}
    return [service_account(INSTALLER_NAME, options, token=False), daemon_set(INSTALLER_NAME, options, pod)]


def install_volumes(options: Options) -> list:
    """The host dirs the install container writes."""
    return [host_path("cni-bin-dir", options.cni_bin_dir, "DirectoryOrCreate"),
            host_path("runtime-dir", options.runtime_dir, "DirectoryOrCreate")]


def daemon_set(name: str, options: Options, pod_spec: dict) -> dict:
    """One pod on every Linux node, whatever its taints."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": object_meta(name, options),
        "spec": {
            "selector": {"matchLabels": labels},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}},
            "template": {
                "metadata": {"labels": {**labels, "app.kubernetes.io/part-of": "cni-ipam"}},
                "spec": {
                    "serviceAccountName": name,
                    "hostNetwork": True,
                    "priorityClassName": "system-node-critical",
                    "tolerations": [{"operator": "Exists"}],
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    **pod_spec,
                },
            },
        },
    }


def dhcp_objects(options: Options) -> list:
    mounts = [
        {"name": "socket-dir", "mountPath": HOST + "/run/cni"},
        {"name": "netns", "mountPath": HOST + "/var/run/netns", "mountPropagation": "HostToContainer"},
        {"name": "proc", "mountPath": HOST + "/proc", "readOnly": True},
        {"name": "lease-dir", "mountPath": HOST + "/var/lib/cni/dhcp"},
    ]
    container = {
        "name": "dhcp-daemon",
        "image": options.image,
        # 'cni-ipam dhcp-daemon' is 'dhcp daemon' (same flags); the image has
        # cni-ipam on its PATH, the dhcp launcher only in the node's bin dir.
        "command": ["cni-ipam", "dhcp-daemon", "-hostprefix", HOST],
        "securityContext": {"privileged": True},
        "resources": {"requests": {"cpu": "10m", "memory": "50Mi"}},
        "volumeMounts": mounts,
    }
    volumes = [
        host_path("socket-dir", "/run/cni", "DirectoryOrCreate"),
        host_path("netns", "/var/run/netns", "DirectoryOrCreate"),
        host_path("proc", "/proc", "Directory"),
        host_path("lease-dir", "/var/lib/cni/dhcp", "DirectoryOrCreate"),
    ]
    return [service_account(DHCP_NAME, options, token=False),
            daemon_set(DHCP_NAME, options, {"containers": [container], "volumes": volumes})]


def reconciler_config(networks: list) -> dict:
    """The store the whereabouts networks use on a node, for the reconciler's ``--config``.

    Each network's store is the one its plugin opens on a node with the
    operator's flat file (``Network.stores``): a network without a
    ``datastore`` of its own is on the Kubernetes store, with the
    operator's kubeconfig.  One reconciler watches one store, so networks
    using different stores are refused.
    """
    import json

    from .networks import RenderError

    found = {}
    for network in networks:
        for store in network.stores:
            found.setdefault(json.dumps(store, sort_keys=True), network.name)
    if len(found) > 1:
        stores = "; ".join(f"{name}: {text}" for text, name in found.items())
        raise RenderError("", f"the whereabouts networks use different stores ({stores}); the one reconciler "
                              "watches one store: give them the same datastore settings")
    return json.loads(next(iter(found)))


def reconciler_config_map(options: Options, config: dict) -> dict:
    import json

    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": object_meta(RECONCILER_CONFIG, options),
            "data": {RECONCILER_CONFIG_FILE: json.dumps(config, indent=2, sort_keys=True) + "\n"}}


def reconciler_objects(options: Options, config: dict | None = None) -> list:
    """The reconciler; with ``config`` (render) it reads that store settings file, else (the plain set, whose
    nodes get their flat file from the etcd Secret) the node's flat file."""
    sources = ["netns", "kubernetes"] if options.kubernetes_source else ["netns"]
    command = ["cni-ipam", "reconciler", "--schedule-file", "/cron-schedule/config"]
    if config is not None:
        command += ["--config", f"{RECONCILER_CONFIG_DIR}/{RECONCILER_CONFIG_FILE}"]
    for source in sources:
        command += ["--source", source]
    mounts = [
        {"name": "cron-schedule", "mountPath": "/cron-schedule", "readOnly": True},
        *({"name": name, "mountPath": path, "readOnly": True} for name, path in CNI_CONF_DIRS),
        {"name": "store", "mountPath": STORE_DIR},
        {"name": "netns", "mountPath": "/var/run/netns", "mountPropagation": "HostToContainer", "readOnly": True},
        {"name": "run-netns", "mountPath": "/run/netns", "mountPropagation": "HostToContainer", "readOnly": True},
    ]
    if config is not None:
        mounts.insert(1, {"name": "store-config", "mountPath": RECONCILER_CONFIG_DIR, "readOnly": True})
    container = {
        "name": "whereabouts-reconciler",
        "image": options.image,
        "command": command,
        # The pod watch and the netns source judge the allocations recorded under this node's name; upstream's
        # DaemonSet sets it the same way for its ip-control-loop (k8snetworkplumbingwg/whereabouts
        # doc/crds/daemonset-install.yaml @03a7bb49).
        "env": [{"name": "NODENAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}}}],
        "securityContext": {"runAsUser": 0},
        "resources": {"requests": {"cpu": "10m", "memory": "50Mi"}},
        "ports": [{"name": "metrics", "containerPort": 9413}],
        "volumeMounts": mounts,
    }
    volumes = [
        # Optional: without the ConfigMap the default schedule (daily) applies.
        {"name": "cron-schedule", "configMap": {"name": CONFIGMAP, "optional": True, "defaultMode": 0o644,
                                                "items": [{"key": "reconciler_cron_expression",
                                                           "path": "config"}]}},
        *(host_path(name, path, "DirectoryOrCreate") for name, path in CNI_CONF_DIRS),
        host_path("store", STORE_DIR, "DirectoryOrCreate"),
        host_path("netns", "/var/run/netns", "DirectoryOrCreate"),
        host_path("run-netns", "/run/netns", "DirectoryOrCreate"),
    ]
    objects = [service_account(RECONCILER_NAME, options, token=options.kubernetes_source)]
    if config is not None:
        volumes.insert(1, {"name": "store-config", "configMap": {"name": RECONCILER_CONFIG, "defaultMode": 0o644}})
        objects.insert(0, reconciler_config_map(options, config))
    if options.kubernetes_source:
        objects += reconciler_rbac(options)
    objects.append(daemon_set(RECONCILER_NAME, options, {"containers": [container], "volumes": volumes}))
    return objects


# What the reconciler sends as its own ServiceAccount with the kubernetes source, and no more: pods get
# (liveness.KubernetesSource.get, podfree.PodFreer._current), list (KubernetesSource.prepare,
# podwatch.PodWatch.relist), watch (PodWatch.follow); core/v1 events create (kubeevents.post; never
# patched: each Event is new).  Its store calls go through the kubeconfig the store's settings name.
RECONCILER_RULES = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
                    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]


def reconciler_rbac(options: Options) -> list:
    """:data:`RECONCILER_RULES`, cluster-wide: pods of every namespace hold addresses, and each Event goes to
    its pod's namespace."""
    name = f"cni-ipam-{RECONCILER_NAME}"
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": object_meta(name, options, namespaced=False), "rules": RECONCILER_RULES}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": object_meta(name, options, namespaced=False),
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
               "subjects": [{"kind": "ServiceAccount", "name": RECONCILER_NAME, "namespace": options.namespace}]}
    return [role, binding]


def agent_objects(options: Options) -> list:
    """The node agent: answers the node's whereabouts calls on the host's socket (docs/agent.md).

    ``hostNetwork`` (as every daemon here) also gives it the node's host
    name, which the etcd store records with each allocation.
    """
    socket = f"{AGENT_SOCKET_DIR}/agent.sock"
    mounts = [{"name": "socket-dir", "mountPath": AGENT_SOCKET_DIR},
              {"name": "store", "mountPath": STORE_DIR}]
    mounts += [{"name": name, "mountPath": path, "readOnly": True} for name, path in CNI_CONF_DIRS]
    container = {
        "name": "agent",
        "image": options.image,
        "command": ["cni-ipam", "agent", "--socket", socket],
        "securityContext": {"runAsUser": 0},
        "resources": {"requests": {"cpu": "10m", "memory": "50Mi"}},
        "volumeMounts": mounts,
    }
    # Same paths as on the host: plugins on the host connect to this socket, and name
    # flat files, TLS files and the store by their host paths.
    volumes = [host_path("socket-dir", AGENT_SOCKET_DIR, "DirectoryOrCreate"),
               host_path("store", STORE_DIR, "DirectoryOrCreate")]
    volumes += [host_path(name, path, "DirectoryOrCreate") for name, path in CNI_CONF_DIRS]
    return [service_account(AGENT_NAME, options, token=False),
            daemon_set(AGENT_NAME, options, {"containers": [container], "volumes": volumes})]
