"""``cni-ipam node-kubeconfig``: the kubeconfig the plugins on a node use for the Kubernetes store.

The plugins run on the host, outside any pod, so they cannot read a service
account token themselves; a pod must put one on the host's disk.  As
upstream's installer does (k8snetworkplumbingwg/whereabouts script/lib.sh
``generateKubeConfig`` and script/token-watcher.sh @ 3a262bd0cd873e13d9b379342f8251b852a89b8f,
tag v0.9.4), the plain installer DaemonSet (``deploy/``) runs this as one of
its containers and writes, into the node's ``whereabouts.d`` directory:

* ``whereabouts.kubeconfig``: the API server from ``KUBERNETES_SERVICE_HOST``
  and ``KUBERNETES_SERVICE_PORT``, the CA and the token of the pod's
  projected service-account volume, the token inline (a ``tokenFile`` would
  name a path inside the pod, which the host does not have), and the pod's
  namespace as the context's, where the store keeps its objects;
* ``nodename`` (from ``NODENAME``): the node's name as the API server knows
  it, which whereabouts reads from its ``configuration_path``;
* ``whereabouts.conf``, the flat file naming ``"datastore": "kubernetes"``
  and that kubeconfig, copied from ``--flat-file`` only when the node has
  no flat file yet: one written by hand or from the etcd Secret stays.

Projected tokens rotate (the kubelet renews them before they expire), so it
looks again every ``--every`` seconds and rewrites whatever changed.  Every
file is written whole, mode 0600 (it holds a credential), through a
temporary file and a rename, so a plugin never reads half of one.  Nothing
is written while ``--flat-file`` is missing: the plain set mounts it from
an optional ConfigMap that only ``deploy/kubernetes-store/`` creates, so a
cluster that does not opt in gets no token on its nodes.

On OpenShift the operator writes all three files itself (the
multus-additional-cni-plugins DaemonSet), so ``cni-ipam render`` never runs
this (docs/deploying.md, "Kubernetes store").
"""

from __future__ import annotations

import base64
import json
import os
import sys

from ..cliargs import seconds, stop_on_signals
from .syncfiles import current_bytes, write_private

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
KUBECONFIG_NAME = "whereabouts.kubeconfig"
FLAT_FILE_NAME = "whereabouts.conf"
NODENAME_NAME = "nodename"
DEFAULT_EVERY = 2.0


class MissingInput(Exception):
    """Something the kubeconfig needs is not there (yet): the round writes nothing and says what."""


def server_url(host: str, port: str) -> str:
    """``https://host:port``, an IPv6 host in brackets (as upstream's ``KUBERNETES_SERVICE_HOST_WRAP``)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"https://{host}:{port}"


def kubeconfig_text(server: str, ca_data: bytes, token: str, namespace: str) -> str:
    """The kubeconfig, laid out as upstream's and the operator's (one cluster, user and context).

    Every value is a JSON string, which YAML reads as the same string, so no
    token, server or namespace can break the layout.
    """
    q = json.dumps
    ca = base64.b64encode(ca_data).decode()
    return ("# Written by 'cni-ipam node-kubeconfig' for the whereabouts plugin; rewritten when the token rotates.\n"
            "apiVersion: v1\n"
            "kind: Config\n"
            "clusters:\n"
            "- name: local\n"
            "  cluster:\n"
            f"    server: {q(server)}\n"
            f"    certificate-authority-data: {q(ca)}\n"
            "users:\n"
            "- name: whereabouts\n"
            "  user:\n"
            f"    token: {q(token)}\n"
            "contexts:\n"
            "- name: whereabouts-context\n"
            "  context:\n"
            "    cluster: local\n"
            "    user: whereabouts\n"
            f"    namespace: {q(namespace)}\n"
            "current-context: whereabouts-context\n")


def node_files(env: dict, service_account: dict) -> dict:
    """``{file name: bytes}`` for the node but the flat file, from the environment and the service-account
    volume's files (``token``, ``ca.crt``, ``namespace``); raises MissingInput naming what is missing."""
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise MissingInput("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set (not in a pod?)")
    missing = [name for name in ("token", "ca.crt", "namespace") if not service_account.get(name)]
    if missing:
        raise MissingInput(f"the service-account volume has no {', '.join(missing)}")
    text = kubeconfig_text(server_url(host, port), service_account["ca.crt"],
                           service_account["token"].decode().strip(), service_account["namespace"].decode().strip())
    files = {KUBECONFIG_NAME: text.encode()}
    if env.get("NODENAME"):
        files[NODENAME_NAME] = env["NODENAME"].encode()
    return files


def read_service_account(directory: str) -> dict:
    """The volume's ``token``, ``ca.crt`` and ``namespace``, those present."""
    found = {}
    for name in ("token", "ca.crt", "namespace"):
        data = current_bytes(os.path.join(directory, name))
        if data is not None:
            found[name] = data
    return found


def write_round(target: str, files: dict, flat_file: bytes) -> list:
    """Write each of ``files`` that differs, and ``flat_file`` unless the node has a flat file; the names
    written, so a quiet round logs nothing."""
    written = []
    os.makedirs(target, exist_ok=True)
    for name, data in files.items():
        if current_bytes(os.path.join(target, name)) != data:
            write_private(os.path.join(target, name), data)
            written.append(name)
    flat_path = os.path.join(target, FLAT_FILE_NAME)
    if not os.path.lexists(flat_path):
        write_private(flat_path, flat_file)
        written.append(FLAT_FILE_NAME)
    return written


def one_round(target: str, flat_file_path: str, service_account_dir: str, env: dict) -> list:
    """Read the inputs and write; nothing at all while the opt-in flat file is missing."""
    flat_file = current_bytes(flat_file_path)
    if flat_file is None:
        return []
    return write_round(target, node_files(env, read_service_account(service_account_dir)), flat_file)


def keep_node_files(target: str, flat_file_path: str, service_account_dir: str, env: dict, every: float,
                    stop, report) -> None:
    """A round now, then one every ``every`` seconds until ``stop`` (a threading.Event) is set (``every``
    0: one round).  ``report(name)`` is told each file written, ``report(None, error)`` each failed round."""
    while True:
        try:
            for name in one_round(target, flat_file_path, service_account_dir, env):
                report(name)
        except (OSError, MissingInput) as exc:
            report(None, exc)
        if every <= 0 or stop.wait(every):
            return


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "node-kubeconfig", help="keep a kubeconfig for the whereabouts plugin on the node (the plain installer)",
        description="Writes whereabouts.kubeconfig (this pod's service-account token, CA and namespace; the API "
                    "server from KUBERNETES_SERVICE_HOST/PORT) and nodename (NODENAME) into --to, and the flat file "
                    "--flat-file as whereabouts.conf unless --to has one, mode 0600, replaced atomically; again "
                    "every --every seconds, so a rotated token reaches the node. Nothing while --flat-file is "
                    "missing.",
        epilog="example: cni-ipam node-kubeconfig --to /host/etc/cni/net.d/whereabouts.d "
               "--flat-file /etc/cni-ipam/kubernetes-store/whereabouts.conf")
    p.add_argument("--to", dest="target", required=True, metavar="DIR", help="the node's whereabouts.d, as mounted")
    p.add_argument("--flat-file", required=True, metavar="FILE",
                   help="the flat file to give nodes that have none (from the optional ConfigMap: the opt-in)")
    p.add_argument("--service-account", default=SERVICE_ACCOUNT_DIR, metavar="DIR",
                   help=f"the projected service-account volume (default {SERVICE_ACCOUNT_DIR})")
    p.add_argument("--every", type=seconds(zero_allowed=True, most=3600), default=DEFAULT_EVERY, metavar="SECONDS",
                   help=f"seconds between looks (default {DEFAULT_EVERY:g}; 0: once, then exit)")
    p.set_defaults(func=cmd_node_kubeconfig)


def cmd_node_kubeconfig(args) -> int:
    failed = False

    def report(name, error=None):
        nonlocal failed
        if error is None:
            print(f"cni-ipam node-kubeconfig: wrote {os.path.join(args.target, name)}", file=sys.stderr, flush=True)
        else:
            failed = True
            again = f"; trying again in {args.every:g} s" if args.every > 0 else ""
            print(f"cni-ipam node-kubeconfig: {error}{again}", file=sys.stderr, flush=True)

    keep_node_files(args.target, args.flat_file, args.service_account, dict(os.environ), args.every,
                    stop_on_signals(), report)
    return 1 if failed and args.every <= 0 else 0
