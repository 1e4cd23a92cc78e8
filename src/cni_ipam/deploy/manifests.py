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
  privileged.  With the ``kubernetes`` liveness source it needs ``get`` and
  ``list`` on ``pods`` in every namespace: ``list`` for its snapshot, ``get``
  for the fresh look before each release.  Nothing else, and nothing at all
  without that source.
* Node agent (``--agent``): root (it writes the SQLite store the plugins
  share), not privileged, no API token.  It listens on the host's
  ``/run/cni-ipam/agent.sock`` and reads flat files and the store at the
  paths the plugins name, so those directories are mounted at the same
  paths as on the host (the CNI config dirs read-only).
* Kubernetes store (a whereabouts network with ``"datastore": "kubernetes"``):
  the reconciler also gets a Role on the whereabouts objects in
  ``openshift-multus`` (where the operator's kubeconfig keeps them) and a
  ClusterRole on pods, nodes and events (:mod:`.kubernetes_store`).  The
  CRDs, the plugins' RBAC, the nodes' kubeconfig and flat file are the
  operator's, which installs and writes them on every cluster with Multus:
  render emits none of them, so it never fights the operator.
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
RECONCILER_CONFIG = "whereabouts-reconciler-config"  # the store the rendered networks name (render only)
RECONCILER_CONFIG_DIR = "/etc/cni-ipam/reconciler"
RECONCILER_CONFIG_FILE = "config.json"
INSTALLER_NAME = "cni-ipam-installer"
# The namespace of the operator's whereabouts kubeconfig (WHEREABOUTS_NAMESPACE in
# openshift/cluster-network-operator bindata/network/multus/multus.yaml @ 2a6a57fef3ac1c8fde00e85b603e9f73ef29b75c):
# the Kubernetes store keeps its objects there on OpenShift.
OPENSHIFT_STORE_NAMESPACE = "openshift-multus"
KUBERNETES = "kubernetes"
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
        self.agent = agent  # the optional node agent, when a network uses whereabouts


OUR_PLUGINS = frozenset(("static", "dhcp", "whereabouts"))


def render(networks: list, options: Options) -> list:
    objects = [nad(n) for n in sorted(networks, key=lambda n: (n.namespace, n.name))]
    used = set().union(*(n.ipam_types for n in networks))
    if used & OUR_PLUGINS:  # also for static alone: else the node keeps whatever static it has
        objects += installer_objects(options)
    if "dhcp" in used:
        objects += dhcp_objects(options)
    if "whereabouts" in used:
        objects += reconciler_objects(options, reconciler_config(networks))
        if options.agent:
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


def install_container(options: Options) -> dict:
    """Puts our launchers and the Python runtime they run on the node, then keeps the launchers there.

    ``cni-ipam install --runtime-dir`` copies the image's interpreter, its
    libraries and our package to the runtime dir; the launchers in the CNI
    bin dir name it by its path on the node (``--host-root`` stripped), so
    nodes need no Python.  ``--keep`` then puts our launchers back whenever
    something overwrites them: on OpenShift the operator's
    multus-additional-cni-plugins pods copy Go's static, dhcp and
    whereabouts into the same dir each time they start.
    """
    return {
        "name": "install-cni-ipam",
        "image": options.image,
        "command": ["cni-ipam", "install", "--cni-bin-dir", HOST + options.cni_bin_dir,
                    "--runtime-dir", HOST + options.runtime_dir, "--host-root", HOST, "--keep", KEEP_EVERY],
        "securityContext": {"runAsUser": 0},
        "resources": {"requests": {"cpu": "1m", "memory": "20Mi"}},
        "volumeMounts": [{"name": "cni-bin-dir", "mountPath": HOST + options.cni_bin_dir},
                         {"name": "runtime-dir", "mountPath": HOST + options.runtime_dir}],
    }


def installer_objects(options: Options, containers=(), volumes=()) -> list:
    """The one DaemonSet that installs: ``cni-ipam-installer``, plus any ``containers`` of the plain set."""
    pod = {"containers": [install_container(options), *containers], "volumes": install_volumes(options) + list(volumes)}
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


def store_config(ipam: dict) -> dict:
    """The keys of a whereabouts ``ipam`` that name its store, ``datastore`` spelt out.

    ``"kubernetes"`` is taken as written: it has no keys to check here but
    ``kubernetes.kubeconfig``, which the plugin's parser checks.
    """
    from ..config.datastore import ETCD_KEYS, parse

    kept = {key: ipam[key] for key in ("sqlite_path", KUBERNETES) + ETCD_KEYS if ipam.get(key) not in (None, "", [])}
    datastore = KUBERNETES if ipam.get("datastore") == KUBERNETES else parse(ipam).datastore
    return {"datastore": datastore, **kept}


def reconciler_config(networks: list) -> dict:
    """The store the whereabouts networks name, for the reconciler's ``--config``.

    Without ``--config`` the reconciler reads the node's flat file, which on
    OpenShift is the operator's (``"datastore": "kubernetes"``) and names a
    store our plugins do not use.  One reconciler watches one store, so
    networks naming different stores are refused.
    """
    import json

    from .networks import RenderError, plugin_configs

    found = {}
    for network in networks:
        for plugin in plugin_configs(json.loads(network.config)):
            ipam = plugin.get("ipam")
            if isinstance(ipam, dict) and ipam.get("type") == "whereabouts":
                found.setdefault(json.dumps(store_config(ipam), sort_keys=True), network.name)
    if len(found) > 1:
        stores = "; ".join(f"{name}: {text}" for text, name in found.items())
        raise RenderError("", f"the whereabouts networks name different stores ({stores}); the one reconciler "
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
    kubernetes_store = config is not None and config["datastore"] == KUBERNETES
    objects = [service_account(RECONCILER_NAME, options, token=options.kubernetes_source or kubernetes_store)]
    if config is not None:
        volumes.insert(1, {"name": "store-config", "configMap": {"name": RECONCILER_CONFIG, "defaultMode": 0o644}})
        objects.insert(0, reconciler_config_map(options, config))
    if options.kubernetes_source:
        objects += pod_reader(options)
    if kubernetes_store:
        from .kubernetes_store import store_rbac

        objects += store_rbac(options, OPENSHIFT_STORE_NAMESPACE, accounts=(), reconciler=RECONCILER_NAME)
    objects.append(daemon_set(RECONCILER_NAME, options, {"containers": [container], "volumes": volumes}))
    return objects


def pod_reader(options: Options) -> list:
    """get and list pods, cluster-wide: all the kubernetes liveness source asks the API server."""
    name = f"cni-ipam-{RECONCILER_NAME}"
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": object_meta(name, options, namespaced=False),
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]}
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
