"""The Kubernetes objects to apply: NADs, and the daemon sets only the networks need.

Order is fixed so output diffs well: NetworkAttachmentDefinitions by
namespace then name, then the DHCP daemon's objects, then the reconciler's;
each group ServiceAccount, RBAC, DaemonSet.

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
* Host namespaces' directory ``/var/run/netns`` is mounted
  ``HostToContainer``, so netns mounts made after the pod started are seen;
  neither daemon makes mounts the host must see, so none is ``Bidirectional``.
"""

from __future__ import annotations

DEFAULT_IMAGE = "quay.io/example/cni-ipam:latest"  # a placeholder: build and push your own image
DEFAULT_NAMESPACE = "openshift-multus"
DEFAULT_CNI_BIN_DIR = "/opt/cni/bin"
DHCP_NAME = "dhcp-daemon"
RECONCILER_NAME = "whereabouts-reconciler"
CONFIGMAP = "whereabouts-config"
HOST = "/host"


class Options:
    """What the command line can change."""

    __slots__ = ("namespace", "image", "cni_bin_dir", "kubernetes_source")

    def __init__(self, namespace=DEFAULT_NAMESPACE, image=DEFAULT_IMAGE, cni_bin_dir=DEFAULT_CNI_BIN_DIR,
                 kubernetes_source=True):
        self.namespace = namespace
        self.image = image
        self.cni_bin_dir = cni_bin_dir
        self.kubernetes_source = kubernetes_source


def render(networks: list, options: Options) -> list:
    objects = [nad(n) for n in sorted(networks, key=lambda n: (n.namespace, n.name))]
    used = set().union(*(n.ipam_types for n in networks))
    if "dhcp" in used:
        objects += dhcp_objects(options)
    if "whereabouts" in used:
        objects += reconciler_objects(options)
    return objects


def nad(network) -> dict:
    return {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": network.name, "namespace": network.namespace},
        "spec": {"config": network.config},
    }


def _meta(name: str, options: Options, namespaced=True) -> dict:
    meta = {"name": name}
    if namespaced:
        meta["namespace"] = options.namespace
    meta["labels"] = {"app": name, "app.kubernetes.io/part-of": "cni-ipam"}
    return meta


def service_account(name: str, options: Options, token: bool) -> dict:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(name, options),
            "automountServiceAccountToken": token}


def host_path(name: str, path: str, kind: str) -> dict:
    return {"name": name, "hostPath": {"path": path, "type": kind}}


def install_container(options: Options) -> dict:
    """Puts our launchers (static, whereabouts, dhcp) into the node's CNI bin dir before the daemon starts."""
    return {
        "name": "install-cni-ipam",
        "image": options.image,
        "command": ["cni-ipam", "install", "--cni-bin-dir", HOST + options.cni_bin_dir],
        "securityContext": {"runAsUser": 0},
        "volumeMounts": [{"name": "cni-bin-dir", "mountPath": HOST + options.cni_bin_dir}],
    }


def daemon_set(name: str, options: Options, pod_spec: dict) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": _meta(name, options),
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
                    "initContainers": [install_container(options)],
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
        host_path("cni-bin-dir", options.cni_bin_dir, "DirectoryOrCreate"),
        host_path("socket-dir", "/run/cni", "DirectoryOrCreate"),
        host_path("netns", "/var/run/netns", "DirectoryOrCreate"),
        host_path("proc", "/proc", "Directory"),
        host_path("lease-dir", "/var/lib/cni/dhcp", "DirectoryOrCreate"),
    ]
    return [service_account(DHCP_NAME, options, token=False),
            daemon_set(DHCP_NAME, options, {"containers": [container], "volumes": volumes})]


def reconciler_objects(options: Options) -> list:
    sources = ["netns", "kubernetes"] if options.kubernetes_source else ["netns"]
    command = ["cni-ipam", "reconciler", "--schedule-file", "/cron-schedule/config"]
    for source in sources:
        command += ["--source", source]
    mounts = [
        {"name": "cron-schedule", "mountPath": "/cron-schedule", "readOnly": True},
        {"name": "cni-net-dir", "mountPath": "/etc/kubernetes/cni/net.d", "readOnly": True},
        {"name": "cni-net-dir-upstream", "mountPath": "/etc/cni/net.d", "readOnly": True},
        {"name": "store", "mountPath": "/var/lib/cni/whereabouts"},
        {"name": "netns", "mountPath": "/var/run/netns", "mountPropagation": "HostToContainer", "readOnly": True},
        {"name": "run-netns", "mountPath": "/run/netns", "mountPropagation": "HostToContainer", "readOnly": True},
    ]
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
        host_path("cni-bin-dir", options.cni_bin_dir, "DirectoryOrCreate"),
        # Optional: without the ConfigMap the default schedule (daily) applies.
        {"name": "cron-schedule", "configMap": {"name": CONFIGMAP, "optional": True, "defaultMode": 0o644,
                                                "items": [{"key": "reconciler_cron_expression",
                                                           "path": "config"}]}},
        host_path("cni-net-dir", "/etc/kubernetes/cni/net.d", "DirectoryOrCreate"),
        host_path("cni-net-dir-upstream", "/etc/cni/net.d", "DirectoryOrCreate"),
        host_path("store", "/var/lib/cni/whereabouts", "DirectoryOrCreate"),
        host_path("netns", "/var/run/netns", "DirectoryOrCreate"),
        host_path("run-netns", "/run/netns", "DirectoryOrCreate"),
    ]
    objects = [service_account(RECONCILER_NAME, options, token=options.kubernetes_source)]
    if options.kubernetes_source:
        objects += pod_reader(options)
    objects.append(daemon_set(RECONCILER_NAME, options, {"containers": [container], "volumes": volumes}))
    return objects


def pod_reader(options: Options) -> list:
    """get and list pods, cluster-wide: all the kubernetes liveness source asks the API server."""
    name = f"cni-ipam-{RECONCILER_NAME}"
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": _meta(name, options, namespaced=False),
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": _meta(name, options, namespaced=False),
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
               "subjects": [{"kind": "ServiceAccount", "name": RECONCILER_NAME, "namespace": options.namespace}]}
    return [role, binding]
