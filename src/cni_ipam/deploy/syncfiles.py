"""``cni-ipam sync-files``: keep a node directory's copies of a mounted Secret's files.

The plugins run on the host and read etcd's settings (whereabouts' flat
file and the TLS files it names) from the host's disk; a Secret reaches the
host only through a pod.  The plain installer DaemonSet (``deploy/``) runs
this as its long-lived container: at start and every ``--every`` seconds it
copies each file of ``--from`` whose content differs into ``--to``, mode
0600, through a temporary file and a rename, so a plugin never reads half a
file.  Files are added or replaced, never removed: a key taken out of the
Secret stays on the node until someone removes it.  An empty or missing
``--from`` (the Secret volume is optional) copies nothing.
"""

from __future__ import annotations

import os
import sys

from ..cliargs import seconds, stop_on_signals

DEFAULT_EVERY = 60.0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sync-files", help="keep copies of a mounted Secret's files in a host directory (the plain installer)",
        description="Copies every file of --from whose content differs into --to (mode 0600, replaced "
                    "atomically), now and every --every seconds, until SIGTERM. Nothing is ever removed.",
        epilog="example: cni-ipam sync-files --from /etc/cni-ipam/etcd --to /host/etc/cni/net.d/whereabouts.d")
    p.add_argument("--from", dest="source", required=True, metavar="DIR", help="the mounted Secret")
    p.add_argument("--to", dest="target", required=True, metavar="DIR", help="the host directory")
    p.add_argument("--every", type=seconds(zero_allowed=True, most=3600), default=DEFAULT_EVERY, metavar="SECONDS",
                   help=f"seconds between looks (default {DEFAULT_EVERY:g}; 0: once, then exit)")
    p.set_defaults(func=cmd_sync_files)


def source_files(source: str) -> dict:
    """The Secret's files by name.  The kubelet's ``..data`` link and timestamped dirs start with a dot."""
    try:
        names = sorted(os.listdir(source))
    except FileNotFoundError:
        return {}
    files = {}
    for name in names:
        path = os.path.join(source, name)
        if not name.startswith(".") and os.path.isfile(path):
            with open(path, "rb") as f:
                files[name] = f.read()
    return files


def current_bytes(path: str):
    """The file's bytes, or None when it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def write_private(path: str, data: bytes) -> None:
    """Mode 0600 from the first byte (keys and passwords), and renamed into place whole."""
    tmp = f"{os.path.join(os.path.dirname(path), '.' + os.path.basename(path))}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def sync_once(source: str, target: str) -> list:
    """Copy what differs; the names written, so the log says what changed and quiet runs say nothing."""
    written = []
    for name, data in source_files(source).items():
        path = os.path.join(target, name)
        if current_bytes(path) != data:
            os.makedirs(target, exist_ok=True)
            write_private(path, data)
            written.append(name)
    return written


def cmd_sync_files(args) -> int:
    stop = stop_on_signals()
    while True:
        try:
            for name in sync_once(args.source, args.target):
                print(f"cni-ipam sync-files: wrote {os.path.join(args.target, name)}", file=sys.stderr, flush=True)
        except OSError as exc:
            again = f"; trying again in {args.every:g} s" if args.every > 0 else ""
            print(f"cni-ipam sync-files: {exc}{again}", file=sys.stderr, flush=True)
            if args.every <= 0:
                return 1
        if args.every <= 0 or stop.wait(args.every):
            return 0
