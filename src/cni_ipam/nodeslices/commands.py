"""``cni-ipam node-slices``: the node-slice controller daemon (docs/node-slices.md)."""

from __future__ import annotations

import os
import socket
import sys
import uuid

from ..cliargs import seconds, stop_on_signals

LEASE_NAME = "cni-ipam-node-slices"
# client-go's usual leader election timings (kube-controller-manager's defaults): 15 s, 10 s, 2 s.
LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 15.0, 10.0, 2.0
RESYNC = 30.0  # as upstream's informers resync


def register(sub) -> None:
    p = sub.add_parser(
        "node-slices", help="the node-slice controller: give each node its own slice of node_slice_size networks",
        description="Watches Nodes and NetworkAttachmentDefinitions whose whereabouts IPAM sets node_slice_size, "
                    "and keeps one NodeSlicePool per network assigning each node a slice, as upstream "
                    "whereabouts' node-slice controller does (IPv4 and IPv6, exclude honoured, slices of departed "
                    "nodes freed only when empty). One replica leads, elected on a Lease.",
        epilog="example: cni-ipam node-slices --namespace kube-system")
    p.add_argument("--namespace", default=None, metavar="NS",
                   help="where the NodeSlicePools, IPPools and the Lease live (default $WHEREABOUTS_NAMESPACE, "
                        "else the service account's namespace, else kube-system)")
    p.add_argument("--kubeconfig", default=None, metavar="FILE",
                   help="kubeconfig (default: in-cluster, else $KUBECONFIG)")
    p.add_argument("--identity", default=None, metavar="ID",
                   help="this replica's name in the Lease (default $POD_NAME, else <hostname>_<uuid>)")
    p.add_argument("--lease-name", default=LEASE_NAME, metavar="NAME", help=f"the Lease (default {LEASE_NAME})")
    p.add_argument("--lease-duration", type=seconds(zero_allowed=False), default=LEASE_DURATION, metavar="SECONDS",
                   help=f"how long a standby waits after the leader's last renewal (default {LEASE_DURATION:g})")
    p.add_argument("--renew-deadline", type=seconds(zero_allowed=False), default=RENEW_DEADLINE, metavar="SECONDS",
                   help=f"the leader stops writing when it could not renew for this long (default {RENEW_DEADLINE:g})")
    p.add_argument("--retry-period", type=seconds(zero_allowed=False), default=RETRY_PERIOD, metavar="SECONDS",
                   help=f"how often to acquire or renew the Lease (default {RETRY_PERIOD:g})")
    p.add_argument("--resync", type=seconds(zero_allowed=False), default=RESYNC, metavar="SECONDS",
                   help=f"a full pass at least this often, watch events or not (default {RESYNC:g})")
    p.add_argument("--max-slices-per-node", type=int, default=2, metavar="N",
                   help="a node whose slices are all full gets another, up to N (default 2; 1: never)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    p.set_defaults(func=cmd_node_slices)


def _namespace(args) -> str:
    if args.namespace:
        return args.namespace
    if os.environ.get("WHEREABOUTS_NAMESPACE"):  # what upstream's controller reads
        return os.environ["WHEREABOUTS_NAMESPACE"]
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace", encoding="utf-8") as f:
            return f.read().strip() or "kube-system"
    except OSError:
        return "kube-system"


def _client(args):
    from lightkube import Client
    from lightkube.config.kubeconfig import KubeConfig

    if args.kubeconfig:
        config = KubeConfig.from_file(args.kubeconfig)
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        config = KubeConfig.from_service_account()
    else:
        config = KubeConfig.from_env()
    return Client(config=config, trust_env=False)


def cmd_node_slices(args) -> int:
    import threading

    from ..kube.leases import Elector
    from ..reconciler.log import JsonLog
    from .controller import Controller, LeaseLock, resources, run, watch_to_wake

    if args.max_slices_per_node < 1:
        print("cni-ipam node-slices: --max-slices-per-node must be at least 1", file=sys.stderr)
        return 2
    identity = args.identity or os.environ.get("POD_NAME") or f"{socket.gethostname()}_{uuid.uuid4()}"
    try:
        elector = Elector(identity, args.lease_duration, args.renew_deadline)
        client = _client(args)
    except Exception as exc:  # a bad kubeconfig, or timings that do not fit
        print(f"cni-ipam node-slices: {exc}", file=sys.stderr)
        return 2
    log = JsonLog(level=args.log_level)
    namespace = _namespace(args)
    stop, wake = stop_on_signals(), threading.Event()
    threading.Thread(target=lambda: (stop.wait(), wake.set()), daemon=True).start()
    res = resources()
    from lightkube import ALL_NS

    for kind, scope in (("nodes", None), ("nads", ALL_NS), ("nodeslicepools", namespace), ("ippools", namespace)):
        watch_to_wake(client, res[kind], scope, wake, stop, log)
    log("started", f"node-slice controller {identity} in namespace {namespace}", identity=identity,
        namespace=namespace)
    run(Controller(client, namespace, log, args.max_slices_per_node), LeaseLock(client, namespace, args.lease_name),
        elector, stop, wake, log, args.retry_period, args.resync)
    return 0
