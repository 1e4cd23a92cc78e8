"""The admin commands of ``cni-ipam``: pools, allocations, release, verify, export, import.

Every command takes ``--config FILE`` (a whereabouts flat file, a network
configuration or a conflist: the store it names) or reads the flat file from
whereabouts' standard locations.  Exit codes: 0 done, 1 something is wrong
(found, refused or failed: the message says what), 2 a usage or config error.
"""

from __future__ import annotations

import argparse
import sys

from .output import FORMATS, Progress, bar, render
from .state import AdminError

CONFIG_HELP = ("a whereabouts flat file, network configuration or conflist naming the store "
               "(default: the flat file from whereabouts' standard locations, else the SQLite default)")


def register(sub) -> None:
    p = _parser(sub, "pools", "every pool with its size, held and free addresses",
                "One row per pool (a range of a network_name) and its address space. SIZE counts the "
                "allocatable addresses of the range definition when the store has seen it (SIZE FROM range), "
                "else the usable addresses of the CIDR (SIZE FROM cidr). HELD counts addresses of the range that "
                "are taken, by this pool or by another pool of its address space.",
                ["cni-ipam pools", "cni-ipam pools --output json --config /etc/cni/net.d/whereabouts.d/whereabouts.conf"])
    _output(p)
    p.set_defaults(func=cmd_pools)

    p = _parser(sub, "allocations", "who holds which address, since when, on which node",
                "List allocations, filtered by every option given.",
                ["cni-ipam allocations", "cni-ipam allocations --network macvlan-conf --pod default/web-0",
                 "cni-ipam allocations --ip 192.0.2.10 --output yaml"])
    p.add_argument("--network", metavar="N", help="CNI network name or whereabouts network_name")
    p.add_argument("--range", metavar="R", dest="rng", help="range CIDR (192.0.2.0/24) or pool name (name/CIDR)")
    p.add_argument("--pod", metavar="NS/NAME", help="the pod, as namespace/name")
    p.add_argument("--ip", metavar="IP", help="one address")
    _output(p)
    p.set_defaults(func=cmd_allocations)

    p = _parser(sub, "release", "free an address (or an attachment's addresses) by hand",
                "Free an address by hand. An address whose pod looks alive (its network namespace still exists on "
                "this node) is refused without --force; so is one allocated on another node or with no recorded "
                "namespace, since there its pod cannot be checked from here.",
                ["cni-ipam release 192.0.2.10 --dry-run", "cni-ipam release --container-id 0123abcd --ifname net1",
                 "cni-ipam release 192.0.2.10 --network blue --force"])
    p.add_argument("ip", nargs="?", metavar="IP", help="the address to free")
    p.add_argument("--container-id", metavar="ID", help="free every address of this container")
    p.add_argument("--ifname", metavar="IF", help="with --container-id: only this interface")
    p.add_argument("--network", metavar="N", help="only in this CNI network name or network_name")
    p.add_argument("--dry-run", action="store_true", help="say what would be freed, free nothing")
    p.add_argument("--force", action="store_true", help="free even when the pod looks alive or cannot be checked")
    p.add_argument("--output", "-o", choices=("text", "json"), default="text", help="text (default) or json")
    p.set_defaults(func=cmd_release)

    p = _parser(sub, "verify", "check the store's consistency (exit 1 when something is wrong)",
                "Checks for duplicate addresses in an address space, addresses outside their pool's CIDR, "
                "rows that break the schema (SQLite), and on etcd: address-space claims without an allocation, "
                "index entries without their allocation, allocations whose address-space claim is missing; on "
                "kubernetes: OverlappingRangeIPReservations without an allocation, allocations without their "
                "reservation, stale annotation entries, unreadable IPPools and keys. "
                "--repair fixes what it safely can and says what it did; what needs a decision is left, with a hint.",
                ["cni-ipam verify", "cni-ipam verify --repair --config /etc/cni/net.d/whereabouts.d/whereabouts.conf"])
    p.add_argument("--repair", action="store_true", help="fix what can be fixed safely")
    p.add_argument("--output", "-o", choices=("text", "json"), default="text", help="text (default) or json")
    _progress(p)
    p.set_defaults(func=cmd_verify)

    p = _parser(sub, "export", "write the whole state (allocations and range hints) as JSON",
                "Write every allocation and range hint as one JSON document, for cni-ipam import into another "
                "store (SQLite, etcd, kubernetes, either way) or as a backup.",
                ["cni-ipam export > state.json", "cni-ipam export --file state.json --config sqlite.conf"])
    p.add_argument("--file", metavar="PATH", default="-", help="where to write (default: stdout)")
    _progress(p)
    p.set_defaults(func=cmd_export)

    p = _parser(sub, "import", "load a cni-ipam export into the configured store",
                "Load an export. Refuses (writing nothing) when an address in it is held in the store by another "
                "attachment; allocations already there with the same attachment are skipped, so importing twice "
                "changes nothing.",
                ["cni-ipam import state.json --config etcd.conf", "cni-ipam import state.json --dry-run"])
    p.add_argument("file", metavar="FILE", help="an export (- for stdin)")
    p.add_argument("--dry-run", action="store_true", help="check for conflicts and say what would be written")
    _progress(p)
    p.set_defaults(func=cmd_import)


def _parser(sub, name, help_text, description, examples):
    epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples)
    p = sub.add_parser(name, help=help_text, description=description, epilog=epilog, formatter_class=_Formatter)
    p.add_argument("--config", metavar="FILE", default=None, help=CONFIG_HELP)
    return p


class _Formatter(argparse.HelpFormatter):
    """Wraps the description as usual; keeps the examples one a line."""

    def _fill_text(self, text, width, indent):
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _output(p) -> None:
    p.add_argument("--output", "-o", choices=FORMATS, default="table", help="table (default), json or yaml")


def _progress(p) -> None:
    p.add_argument("--progress", action="store_true", help="report progress on stderr even when it is not a terminal")


# --- running a command ------------------------------------------------------------------------

def _run(args, body, create: bool = False) -> int:
    """Open the store, run ``body(store, settings)``, turn every known failure into a message and exit code."""
    from ..cni.errors import CNIError
    from ..config.admin import ConfigFileError, read_config
    from ..config.whereabouts import store_settings
    from ..store.base import StoreError
    from ..store import never_created, open_store

    try:
        ipam, source = read_config(args.config)
        settings = store_settings(ipam)
        if not create and never_created(settings):
            where = f"{source} names" if source else "no --config given and no flat file found; the default is"
            raise AdminError(f"no SQLite store at {settings.sqlite_path} ({where} it): nothing was allocated there; "
                             f"pass --config FILE naming the store the plugins use", 2)
        store = open_store(settings)
    except ConfigFileError as exc:
        return _fail(f"--config: {exc}", 2)
    except CNIError as exc:
        return _fail(f"{args.config or 'config'}: {exc.msg}" + (f" ({exc.details})" if exc.details else ""), 2)
    except StoreError as exc:
        return _fail(f"cannot open the store: {exc}", 1)
    except AdminError as exc:
        return _fail(str(exc), exc.code)
    try:
        return body(store, settings)
    except AdminError as exc:
        return _fail(str(exc), exc.code)
    except StoreError as exc:
        return _fail(f"store: {exc}" + (" (try again)" if exc.retry else ""), 1)
    except ValueError as exc:  # a record that does not decode (etcd: written by hand or by another tool)
        return _fail(f"the store holds an unreadable record ({exc}); find it with cni-ipam verify", 1)
    finally:
        store.close()


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"cni-ipam: error: {message}\n")
    return code


# --- pools --------------------------------------------------------------------------------

POOL_COLUMNS = [
    ("POOL", lambda r: r["pool"]),
    ("SPACE", lambda r: "-" if r["space"] is None else (r["space"] or '""')),
    ("RANGE", lambda r: r["range"] or r["cidr"] or "?"),
    ("SIZE", lambda r: r["size"]),
    ("HELD", lambda r: r["held"]),
    ("FREE", lambda r: r["free"]),
    ("USED", lambda r: f"{r['percent_used']:.1f}%"),
    ("", lambda r: bar(r["percent_used"])),
    ("SIZE FROM", lambda r: r["size_from"]),
]


def cmd_pools(args) -> int:
    from .state import pool_stats

    def body(store, settings):
        render(pool_stats(store.allocations(), store.list_hints()), POOL_COLUMNS, args.output)
        return 0
    return _run(args, body)


# --- allocations --------------------------------------------------------------------------

ALLOCATION_COLUMNS = [
    ("ADDRESS", lambda r: r["ip"]),
    ("POOL", lambda r: r["pool"]),
    ("NETWORK", lambda r: r["network"]),
    ("POD", lambda r: r["pod"] or "-"),
    ("CONTAINER", lambda r: r["container_id"][:12]),
    ("IFNAME", lambda r: r["ifname"]),
    ("NODE", lambda r: r["node"] or "-"),
    ("SINCE", lambda r: r["since"] or "-"),
]


def cmd_allocations(args) -> int:
    from .state import allocation_row, canonical_ip, matches

    try:
        ip = canonical_ip(args.ip) if args.ip else None
    except AdminError as exc:
        return _fail(str(exc), exc.code)

    def body(store, settings):
        rows = [allocation_row(a) for a in store.allocations()
                if matches(a, network=args.network, rng=args.rng, pod=args.pod, ip=ip)]
        render(rows, ALLOCATION_COLUMNS, args.output)
        return 0
    return _run(args, body)


# --- release ------------------------------------------------------------------------------

def cmd_release(args) -> int:
    from .state import canonical_ip, describe, liveness, matches

    if bool(args.ip) == bool(args.container_id):
        return _fail("release needs an IP address or --container-id ID (one of them): "
                     "cni-ipam release 192.0.2.10, or cni-ipam release --container-id ID", 2)
    if args.ifname and not args.container_id:
        return _fail("--ifname goes with --container-id", 2)
    try:
        ip = canonical_ip(args.ip) if args.ip else None
    except AdminError as exc:
        return _fail(str(exc), exc.code)

    def body(store, settings):
        import json

        if ip is not None:
            chosen = [a for a in store.allocations() if matches(a, network=args.network, ip=ip)]
            attachments = {a.attachment for a in chosen}
            if len(attachments) > 1:
                held = "; ".join(describe(a) for a in chosen)
                raise AdminError(f"{ip} is held by more than one attachment ({held}); add --network to choose one, "
                                 f"or use --container-id")
        else:
            chosen = [a for a in store.find(container_id=args.container_id, ifname=args.ifname)
                      if matches(a, network=args.network)]
        if not chosen:
            what = ip or f"container {args.container_id}" + (f" interface {args.ifname}" if args.ifname else "")
            within = f" in network {args.network}" if args.network else ""
            raise AdminError(f"nothing is allocated to {what}{within}; list what is held with cni-ipam allocations")
        results, code = [], 0
        for a in chosen:
            state, why = liveness(a)
            entry = {"ip": a.address, "pool": a.pool, "network": a.network, "container_id": a.container_id,
                     "ifname": a.ifname, "pod": a.pod, "pod_state": state, "why": why}
            if state != "gone" and not args.force:
                entry["action"] = "refused"
                entry["message"] = (f"refused to free {describe(a)}: {why}; pass --force to free it anyway"
                                    + (" (only if the pod is really gone)" if state == "unknown" else
                                       " (the pod would keep using an address that may be handed out again)"))
                code = 1
            elif args.dry_run:
                entry["action"] = "would-release"
                entry["message"] = f"would free {describe(a)} ({why})"
            else:
                with store.transaction():
                    released = store.release(a)
                entry["action"] = "released" if released else "gone"
                entry["message"] = (f"freed {describe(a)}" if released else
                                    f"{a.address} of {a.pool} was freed or changed meanwhile; nothing done")
            results.append(entry)
        if args.output == "json":
            sys.stdout.write(json.dumps(results, indent=2, sort_keys=True) + "\n")
        else:
            for entry in results:
                stream = sys.stderr if entry["action"] == "refused" else sys.stdout
                stream.write(entry["message"] + "\n")
        return code
    return _run(args, body)


# --- verify -------------------------------------------------------------------------------

def cmd_verify(args) -> int:
    def body(store, settings):
        import json

        report = store.verify(args.repair, Progress("verify", args.progress))
        problems, repaired = report.problems, report.repaired
        if args.output == "json":
            sys.stdout.write(json.dumps({"datastore": settings.datastore, "repaired": repaired,
                                         "problems": [p.to_dict() for p in problems]}, indent=2, sort_keys=True) + "\n")
        else:
            for line in repaired:
                sys.stdout.write(f"repaired: {line}\n")
            for p in problems:
                advice = " (verify --repair fixes this)" if p.repair is not None else (f" ({p.hint})" if p.hint else "")
                sys.stdout.write(f"{p.kind}: {p.detail}{advice}\n")
            if problems:
                sys.stdout.write(f"{len(problems)} problem(s) found in the {settings.datastore} store\n")
            else:
                sys.stdout.write(f"the {settings.datastore} store is consistent\n")
        return 1 if problems else 0
    return _run(args, body)


# --- export and import --------------------------------------------------------------------

def cmd_export(args) -> int:
    from .state import export_state

    def body(store, settings):
        import json

        progress = Progress("export", args.progress)
        state = export_state(store, settings.datastore)
        progress(len(state["allocations"]), len(state["allocations"]))
        text = json.dumps(state, indent=2, sort_keys=True) + "\n"
        if args.file == "-":
            sys.stdout.write(text)
        else:
            with open(args.file, "w") as handle:
                handle.write(text)
            sys.stderr.write(f"exported {len(state['allocations'])} allocation(s) and {len(state['hints'])} "
                             f"hint(s) to {args.file}\n")
        return 0
    return _run(args, body)


def cmd_import(args) -> int:
    from .state import describe, parse_state, plan_import

    try:
        import json

        text = sys.stdin.read() if args.file == "-" else open(args.file).read()
        incoming, hints = parse_state(json.loads(text))
    except OSError as exc:
        return _fail(f"{args.file}: {exc.strerror or exc}", 2)
    except ValueError as exc:
        return _fail(f"{args.file}: not JSON ({exc}); give a file written by cni-ipam export", 2)
    except AdminError as exc:
        return _fail(f"{args.file}: {exc}", 2)

    def body(store, settings):
        write, present, conflicts = plan_import(store.allocations(), incoming)
        if conflicts:
            for a, held in conflicts:
                sys.stderr.write(f"conflict: {describe(a)} in the export, but the store (or an earlier entry) has "
                                 f"{describe(held)}\n")
            raise AdminError(f"{len(conflicts)} conflict(s): nothing imported; free those addresses (cni-ipam "
                             f"release) or remove them from {args.file}")
        if args.dry_run:
            sys.stdout.write(f"would import {len(write)} allocation(s); {len(present)} already there\n")
            return 0
        progress = Progress("import", args.progress)
        lost = []
        with store.transaction():
            for done, a in enumerate(write, 1):
                if not store.claim(a):
                    lost.append(a)
                progress(done, len(write))
            hinted = 0
            for key, pool, space, value in hints:
                if store.hint(key, pool, space) is None:
                    store.set_hint(key, pool, space, value)
                    hinted += store.hint(key, pool, space) is not None  # the Kubernetes store keeps none
        if hints and not store.list_hints():
            sys.stdout.write(f"the {settings.datastore} store keeps no range hints: {len(hints)} left out "
                             f"(cni-ipam pools learns the ranges from the allocations)\n")
        sys.stdout.write(f"imported {len(write) - len(lost)} allocation(s) and {hinted} hint(s); "
                         f"{len(present)} already there\n")
        if lost:
            for a in lost:
                sys.stderr.write(f"not imported: {describe(a)}: the address was taken while importing\n")
            raise AdminError(f"{len(lost)} allocation(s) not imported (taken meanwhile); run import again to see "
                             f"the conflicts")
        return 0
    return _run(args, body, create=True)
