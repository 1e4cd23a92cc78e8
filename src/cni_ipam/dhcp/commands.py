"""``cni-ipam dhcp-daemon``: the DHCP daemon, with the same flags as ``dhcp daemon``."""

from __future__ import annotations


def cmd_dhcp_daemon(args) -> int:
    from .daemon import run

    return run(args)


def register(subparsers) -> None:
    from .daemon.flags import add_arguments

    parser = subparsers.add_parser(
        "dhcp-daemon", allow_abbrev=False, help="run the DHCP daemon the dhcp plugin talks to",
        description="Acquires, renews and releases DHCP leases for pod interfaces, inside each pod's network "
                    "namespace; the dhcp IPAM plugin asks it over a Unix socket. Same flags as 'dhcp daemon' "
                    "(Go's one-dash spelling or two dashes).",
        epilog="example: cni-ipam dhcp-daemon -hostprefix /host --metrics-port 9655")
    add_arguments(parser)
    parser.set_defaults(func=cmd_dhcp_daemon)
