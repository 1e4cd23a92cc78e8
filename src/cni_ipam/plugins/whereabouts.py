"""The ``whereabouts`` IPAM plugin (cluster-wide unique addresses from ranges).

Not implemented yet: every command answers with a CNI error so a runtime
sees a clear message instead of a crash.
"""

from ..cni.skel import Plugin, main as _skel_main


def not_yet(request):
    """ADD/CHECK: refuse clearly (code 7: retrying cannot help)."""
    from ..cni.errors import invalid_config

    raise invalid_config("ipam.type whereabouts: not implemented yet in this cni-ipam build",
                         "use the Go whereabouts plugin until cni-ipam ships it")


def status(request):
    from ..cni.errors import CNIError, NOT_AVAILABLE

    raise CNIError(NOT_AVAILABLE, "whereabouts: not implemented yet in this cni-ipam build")


def nothing(request):
    """DEL and GC: nothing was ever held, so releasing succeeds."""
    return None


PLUGIN = Plugin("whereabouts", "cluster-wide unique addresses from ranges (not implemented yet)",
                {"ADD": not_yet, "CHECK": not_yet, "DEL": nothing, "GC": nothing, "STATUS": status})


def main() -> None:
    _skel_main(PLUGIN)
