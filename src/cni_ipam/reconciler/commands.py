"""``cni-ipam reconcile`` (one run) and ``cni-ipam reconciler`` (the daemon)."""

from __future__ import annotations

import os
import sys

from ..cliargs import seconds, stop_on_signals

DEFAULT_GRACE = 600.0  # seconds an allocation (or a starting pod) is never robbed
SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
SOURCES = ("auto", "netns", "attachments", "kubernetes")


class UsageError(Exception):
    """A command-line or configuration problem: printed to stderr, exit code 2."""


def register(sub) -> None:
    p = sub.add_parser(
        "reconcile", help="free addresses left behind by pods that died without a DEL, once",
        description="One reconcile run: examine every allocation of the configured store, free those whose "
                    "attachment is gone, and log each decision as a JSON line on stdout.",
        epilog="example: cni-ipam reconcile --once --dry-run --config /etc/cni/net.d/whereabouts.d/whereabouts.conf")
    p.add_argument("--once", action="store_true", help="run once and exit (what this command always does)")
    _common(p)
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser(
        "reconciler", help="the reconciler daemon: reconcile on a cron schedule",
        description="Runs reconcile passes on a 5-field cron schedule read from the mounted ConfigMap "
                    "whereabouts-config, else from reconciler_cron_expression in the flat file, else "
                    "\"30 4 * * *\" (daily, UTC). A changed schedule takes effect without a restart. With the "
                    "kubernetes source it also watches the pods of its node and frees the addresses of those "
                    "that go away at once.",
        epilog="example: cni-ipam reconciler --schedule-file /cron-schedule/config --metrics-port 9413")
    p.add_argument("--schedule-file", default=None, metavar="PATH",
                   help="where the ConfigMap's schedule is mounted: a file holding the expression, or a directory "
                        "with reconciler_cron_expression or cron-expression (default /cron-schedule/config)")
    p.add_argument("--poll", type=seconds(zero_allowed=False), default=None, metavar="SECONDS",
                   help="how often to look for a changed schedule (default 5)")
    p.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="serve Prometheus metrics on this port (default 9413; 0: any free port, logged)")
    p.add_argument("--metrics-address", default="0.0.0.0", metavar="ADDR",
                   help="address for the metrics endpoint (default 0.0.0.0)")
    p.add_argument("--no-metrics", action="store_true", help="serve no metrics")
    p.add_argument("--tick", type=seconds(zero_allowed=False), default=None, metavar="SECONDS",
                   help="run the clock fast, a cron minute lasting SECONDS (for tests and demos)")
    p.add_argument("--max-runs", type=int, default=None, metavar="N", help="stop after N runs")
    p.add_argument("--no-pod-watch", action="store_true",
                   help="do not watch this node's pods (by default, with the kubernetes source, the addresses of a "
                        "pod that is deleted, finished or evicted from an unreachable node are freed within "
                        "seconds, between the scheduled runs)")
    _common(p)
    p.set_defaults(func=cmd_reconciler)


def _common(p) -> None:
    p.add_argument("--config", default=None, metavar="FILE",
                   help="a whereabouts flat file, or a network config naming the store (default: the flat file "
                        "from whereabouts' standard locations, else the SQLite store's default path)")
    p.add_argument("--dry-run", action="store_true", help="decide and log, but free nothing")
    p.add_argument("--source", action="append", choices=SOURCES, default=None,
                   help="a liveness source (repeatable). auto (the default): netns, plus kubernetes inside a pod "
                        "or when the flat file names a kubeconfig")
    p.add_argument("--node", default=None, metavar="NAME",
                   help="this node's name, as the plugin records it (default $NODENAME, else the nodename file beside "
                        "the flat file, else the host name)")
    p.add_argument("--grace", type=seconds(zero_allowed=True), default=DEFAULT_GRACE, metavar="SECONDS",
                   help=f"never free an allocation younger than this, nor one of a pod created less than this "
                        f"ago (default {DEFAULT_GRACE:.0f})")
    p.add_argument("--valid-attachments", action="append", default=None, metavar="FILE",
                   help="the runtime's live attachments: a CNI GC config with cni.dev/valid-attachments, or a "
                        "list of {containerID, ifname} (repeatable; implies --source attachments)")
    p.add_argument("--kubeconfig", default=None, metavar="FILE",
                   help="kubeconfig for the kubernetes source (default: in-cluster, then the flat file's "
                        "kubernetes.kubeconfig, then $KUBECONFIG; implies --source kubernetes)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info",
                   help="debug also logs every allocation kept and why")


# --- sources ------------------------------------------------------------------------------------

def node_name(args) -> str:
    """The name the plugin records on this node: ``--node``, else ``NODENAME``, else the ``nodename`` file
    beside the flat file (as the plugin looks it up), else the host name."""
    if args.node or os.environ.get("NODENAME"):
        return args.node or os.environ["NODENAME"]
    from ..config.admin import ConfigFileError, read_config
    from ..config.whereabouts import written_nodename

    try:
        ipam, flat_file = read_config(args.config)
    except ConfigFileError:
        ipam, flat_file = {}, None
    return written_nodename(ipam, flat_file) or os.uname().nodename


def _flat_kubeconfig(config_path):
    from ..config.admin import ConfigFileError, read_config

    try:
        ipam, _ = read_config(config_path)
    except ConfigFileError:
        return None
    kube = ipam.get("kubernetes")
    path = kube.get("kubeconfig") if isinstance(kube, dict) else None
    return path if isinstance(path, str) and path and os.path.exists(path) else None


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists(os.path.join(SERVICE_ACCOUNT, "token"))


def chosen_sources(args) -> list:
    names = list(args.source or ["auto"])
    if args.valid_attachments and "attachments" not in names:
        names.append("attachments")
    if args.kubeconfig and "kubernetes" not in names:
        names.append("kubernetes")
    out = []
    for name in names:
        if name == "auto":
            out.append("netns")
            if _in_cluster() or _flat_kubeconfig(args.config):
                out.append("kubernetes")
        else:
            out.append(name)
    return list(dict.fromkeys(out))


def build_sources(args) -> list:
    from .liveness import AttachmentsSource, NetnsSource

    node = node_name(args)
    sources = []
    for name in chosen_sources(args):
        if name == "netns":
            sources.append(NetnsSource(node))
        elif name == "attachments":
            sources.append(AttachmentsSource(node, _valid_attachments(args.valid_attachments or [])))
        elif name == "kubernetes":
            from .liveness import KubernetesSource

            sources.append(KubernetesSource(kube_client(args), args.grace))
    return sources


def _valid_attachments(paths) -> dict:
    import json

    from .liveness import parse_valid_attachments

    if not paths:
        raise UsageError("--source attachments needs --valid-attachments FILE (the runtime's live attachments)")
    valid = {}
    for path in paths:
        try:
            with open(path, "rb") as handle:
                document = json.loads(handle.read())
            found = parse_valid_attachments(document, path)
        except OSError as exc:
            raise UsageError(f"--valid-attachments {path}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise UsageError(f"--valid-attachments {path}: {exc}") from None
        for network, entries in found.items():
            valid.setdefault(network, set()).update(entries)
    return valid


def kube_client(args):
    """A lightkube client: --kubeconfig, else in-cluster, else the flat file's kubeconfig, else $KUBECONFIG."""
    from lightkube import Client
    from lightkube.config.kubeconfig import KubeConfig
    from lightkube.core.exceptions import ConfigError

    try:
        if args.kubeconfig:
            config = KubeConfig.from_file(args.kubeconfig)
        elif _in_cluster():
            config = KubeConfig.from_service_account()
        elif _flat_kubeconfig(args.config):
            config = KubeConfig.from_file(_flat_kubeconfig(args.config))
        else:
            config = KubeConfig.from_env()
        return Client(config=config, trust_env=False)
    except (ConfigError, OSError, ValueError) as exc:
        raise UsageError(f"the kubernetes source cannot be configured: {exc}") from None


def _opener(args, log):
    """Opens the configured store for one run, or returns None when there is none yet: a SQLite store that
    does not exist is not created, since nothing was ever allocated on this node."""
    from ..config.admin import read_config
    from ..config.whereabouts import store_settings
    from ..store import never_created, open_store

    def open_configured():
        settings = store_settings(read_config(args.config)[0])  # read again each run: the file may have changed
        if never_created(settings):
            log("no-store", f"no SQLite store at {settings.sqlite_path} yet: nothing to reconcile",
                path=settings.sqlite_path)
            return None
        return open_store(settings)
    return open_configured


def _pool_observer(metrics, log):
    """Refreshes the per-pool gauges from the run's open store (None, no store yet: no pools); a failure only
    costs this refresh."""
    from ..admin.state import pool_stats

    def observe(store) -> None:
        try:
            metrics.observe_pools(pool_stats(store.allocations(), store.list_hints()) if store is not None else [])
        except Exception as exc:  # metrics must never fail a run
            log("metrics-error", f"could not count the pools for the metrics: {exc}", error=str(exc))
    return observe


def _start_pod_watch(args, log, metrics, stop):
    """The watch on this node's pods, in a thread of the daemon, with a client of its own."""
    from .podfree import PodFreer
    from .podwatch import PodWatch

    client = kube_client(args)
    freer = PodFreer(_opener(args, log), client, node_name(args), log, metrics, dry_run=args.dry_run)
    return PodWatch(client, node_name(args), freer, log, metrics).start(stop)


def _check_config(args) -> None:
    """Fail at start, not at the first run, when --config cannot be read or names no usable store."""
    from ..cni.errors import CNIError
    from ..config.admin import ConfigFileError, read_config
    from ..config.whereabouts import store_settings

    try:
        ipam, source = read_config(args.config)
        store_settings(ipam)
    except ConfigFileError as exc:
        raise UsageError(f"--config: {exc}") from None
    except CNIError as exc:
        where = source or "the default settings"
        raise UsageError(f"{where}: {exc.msg}" + (f" ({exc.details})" if exc.details else "")) from None


# --- commands -----------------------------------------------------------------------------------

def cmd_reconcile(args) -> int:
    from .log import JsonLog
    from .run import reconcile

    log = JsonLog(level=args.log_level)
    try:
        _check_config(args)
        sources = build_sources(args)
    except UsageError as exc:
        print(f"cni-ipam reconcile: {exc}", file=sys.stderr)
        return 2
    report = reconcile(_opener(args, log), sources, log, args.grace, dry_run=args.dry_run)
    return 0 if report.ok else 1


def cmd_reconciler(args) -> int:
    from .daemon import DEFAULT_METRICS_PORT, DEFAULT_POLL, Daemon, FastClock, Metrics, RealClock
    from .log import JsonLog
    from .run import reconcile
    from .schedule import DEFAULT_SCHEDULE_FILE, ScheduleSources, ScheduleWatcher

    clock = FastClock(args.tick) if args.tick else RealClock()
    log = JsonLog(clock=clock.now, level=args.log_level)
    try:
        _check_config(args)
        sources = build_sources(args)
    except UsageError as exc:
        print(f"cni-ipam reconciler: {exc}", file=sys.stderr)
        return 2
    watcher = ScheduleWatcher(ScheduleSources(args.schedule_file or DEFAULT_SCHEDULE_FILE, args.config), log)
    watcher.load()
    metrics = None
    if not args.no_metrics:
        metrics = Metrics()
        port = DEFAULT_METRICS_PORT if args.metrics_port is None else args.metrics_port
        try:
            _server, port = metrics.serve(port, args.metrics_address)
        except OSError as exc:
            print(f"cni-ipam reconciler: cannot serve metrics on {args.metrics_address}:{port}: {exc.strerror or exc}"
                  f"; choose another --metrics-port, or --no-metrics", file=sys.stderr)
            return 2
        log("metrics", f"Prometheus metrics on http://{args.metrics_address}:{port}/metrics",
            address=args.metrics_address, port=port)
    log("started", f"reconciler started on node {node_name(args)} with sources "
        f"{', '.join(s.describe() for s in sources)}{' (dry run)' if args.dry_run else ''}",
        node=node_name(args), sources=[s.describe() for s in sources], dry_run=args.dry_run,
        tick_seconds=args.tick)
    stop = stop_on_signals()

    observe = _pool_observer(metrics, log) if metrics is not None else None

    def run_pass():
        return reconcile(_opener(args, log), sources, log, args.grace, dry_run=args.dry_run, clock=clock.now,
                         after=observe)

    if "kubernetes" in chosen_sources(args) and not args.no_pod_watch:
        _start_pod_watch(args, log, metrics, stop)
    daemon = Daemon(watcher, run_pass, clock, log, metrics, poll=args.poll or DEFAULT_POLL)
    daemon.run(stop, max_runs=args.max_runs)
    return 0
