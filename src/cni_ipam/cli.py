"""``cni-ipam``: the administrator's command (install, demo, and more to come)."""

from __future__ import annotations

import argparse
import sys

from .cliargs import seconds, stop_on_signals


def cmd_install(args) -> int:
    from .install import install_launchers
    from .runtime_bundle import BundleError

    try:
        written = install_launchers(args.cni_bin_dir, args.python, runtime_dir=args.runtime_dir,
                                    host_root=args.host_root, native=args.native)
    except (BundleError, ValueError, OSError) as e:
        print(f"cni-ipam install: {e}", file=sys.stderr)
        return 2
    for path in written:
        print(f"installed {path}", flush=True)
    if args.keep is None:
        return 0
    return _keep_installed(written, args.keep)


def _keep_installed(written: dict, every: float) -> int:
    """--keep: stay and put our launchers back whenever something else replaces them, until SIGTERM."""
    from .install import keep_installed

    def report(path, error=None):
        if error is None:
            print(f"cni-ipam install: restored {path}: something else had replaced it", file=sys.stderr, flush=True)
        else:
            print(f"cni-ipam install: cannot restore {path}: {error}", file=sys.stderr, flush=True)

    stop = stop_on_signals()
    keep_installed(written, every, stop, report)
    return 0


def cmd_demo(args) -> int:
    """The demo lives in the lab package (cni_ipam_lab), which a checkout's venv has and an image or node has not."""
    try:
        from cni_ipam_lab.demo import run_demo
    except ModuleNotFoundError as e:
        if e.name != "cni_ipam_lab":
            raise
        print("cni-ipam demo: the demo needs the cni_ipam_lab package, which only a checkout installs "
              "(run 'make demo' there); it is not in the image nor on nodes", file=sys.stderr)
        return 2
    return run_demo(args.cni_bin_dir)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .install import DEFAULT_BIN_DIR

    parser = argparse.ArgumentParser(
        prog="cni-ipam",
        description="IP address management for the secondary networks of pods: "
                    "drop-in static, dhcp and whereabouts CNI IPAM plugins.",
    )
    parser.add_argument("--version", action="version", version=f"cni-ipam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("install", help="write the plugin executables into a CNI bin directory",
                       description="Write launchers named static, whereabouts and dhcp into DIR.",
                       epilog="example: cni-ipam install --cni-bin-dir /opt/cni/bin")
    p.add_argument("--cni-bin-dir", default=DEFAULT_BIN_DIR, metavar="DIR",
                   help=f"where the runtime looks for CNI plugins (default {DEFAULT_BIN_DIR})")
    p.add_argument("--python", default=None, metavar="PATH",
                   help="interpreter for the launchers (default: this one; not with --runtime-dir)")
    p.add_argument("--runtime-dir", default=None, metavar="PATH",
                   help="copy a self-contained Python runtime and this package into PATH and make the "
                        "launchers use it, so the node needs no Python (for an installer in a container "
                        "image; PATH as the installer sees it, e.g. /host/var/lib/cni-ipam); see docs/install.md")
    p.add_argument("--host-root", default="", metavar="ROOT",
                   help="where the node's root is mounted in the installer, e.g. /host: stripped from "
                        "--runtime-dir for the paths written into the runtime and launchers "
                        "(default: \"\", the installer runs on the node)")
    p.add_argument("--native", action="store_true",
                   help="install whereabouts as the native forwarder to the node agent, its Python launcher "
                        "beside it as .whereabouts-py for when the agent does not answer (docs/agent.md)")
    p.add_argument("--keep", type=seconds(zero_allowed=False, most=3600), default=None, metavar="SECONDS",
                   help="after installing, stay and check the launchers every SECONDS, putting ours back when "
                        "something else replaced them (OpenShift's multus-additional-cni-plugins copies Go's "
                        "static, dhcp and whereabouts into the same dir); until SIGTERM")
    p.set_defaults(func=cmd_install)

    p = sub.add_parser("demo", help="show the plugins at work: podman containers, else throw-away namespaces",
                       description="Runs static and whereabouts example networks as podman containers (else as pods made of "
                                   "network namespaces) on bridges calling our IPAM plugins, and prints "
                                   "their addresses; without root, runs the plugins alone.",
                       epilog="example: sudo cni-ipam demo")
    p.add_argument("--cni-bin-dir", default=None, metavar="DIR",
                   help="use plugins already installed here (default: install into a temporary dir)")
    p.set_defaults(func=cmd_demo)

    for module in COMMAND_MODULES:
        _register(module, sub)
    return parser


# Modules that add their own subcommands with a ``register(subparsers)``
# function, so each feature keeps its command-line face beside its code.
COMMAND_MODULES = ("cni_ipam.agent", "cni_ipam.reconciler.commands", "cni_ipam.dhcp.commands",
                   "cni_ipam.admin.commands", "cni_ipam.deploy.commands", "cni_ipam.nodeslices.commands",)


def _register(module: str, sub) -> None:
    import importlib

    importlib.import_module(module).register(sub)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
