"""The ``dhcp`` IPAM plugin (leases from a DHCP server, kept by our daemon).

Not implemented yet: every command answers with a CNI error so a runtime
sees a clear message instead of a crash.
"""

from ..cni.skel import Plugin, main as _skel_main


def not_yet(request):
    """ADD/CHECK: refuse clearly (code 7: retrying cannot help)."""
    from ..cni.errors import invalid_config

    raise invalid_config("ipam.type dhcp: not implemented yet in this cni-ipam build",
                         "use the Go dhcp plugin until cni-ipam ships it")


def status(request):
    from ..cni.errors import CNIError, NOT_AVAILABLE

    raise CNIError(NOT_AVAILABLE, "dhcp: not implemented yet in this cni-ipam build")


def nothing(request):
    """DEL and GC: nothing was ever held, so releasing succeeds."""
    return None


PLUGIN = Plugin("dhcp", "addresses leased from a DHCP server through the cni-ipam DHCP daemon (not implemented yet)",
                {"ADD": not_yet, "CHECK": not_yet, "DEL": nothing, "GC": nothing, "STATUS": status})


def main() -> None:
    _skel_main(PLUGIN)
