"""The ``dhcp`` IPAM plugin: leases from a DHCP server, kept by the cni-ipam DHCP daemon.

A drop-in for Go's ``dhcp`` plugin.  The plugin only talks to the daemon
(:mod:`cni_ipam.dhcp.rpc`): the daemon gets the lease inside the pod's
namespace and renews it for as long as the pod lives.  ``dhcp daemon
[flags]`` starts that daemon, as with Go's binary.

Unlike Go's pair: DEL succeeds when the daemon is down or the lease is
unknown; CHECK never starts a second lease; STATUS says whether the daemon
answers (code 50 if not); ADD never waits past the daemon's timeout.
"""

from ..cni.skel import Plugin, main as _skel_main

DETAILS_START = ("start it with 'dhcp daemon' (or 'cni-ipam dhcp-daemon'), or set ipam.daemonSocketPath "
                 "to the socket it listens on")


def _netns(path: str) -> str:
    """Absolute, as the daemon runs elsewhere (Go's plugin does the same)."""
    if not path or path.startswith("/"):
        return path
    import posix

    return posix.getcwd() + "/" + path


def _attachment(request) -> dict:
    return {"containerID": request.container_id, "network": request.name, "ifname": request.ifname}


def _ask(socket_path: str, message: dict, unavailable=None) -> dict:
    """The daemon's reply; a CNIError (code ``unavailable``, else try again later) when it cannot be had."""
    from ..cni.errors import TRY_AGAIN_LATER, CNIError
    from ..dhcp import rpc

    unavailable = unavailable or TRY_AGAIN_LATER
    try:
        reply = rpc.call(socket_path, message)
    except rpc.Unreachable as exc:
        raise CNIError(unavailable, f"dhcp: cannot reach the DHCP daemon: {exc}", DETAILS_START) from None
    except rpc.NoAnswer as exc:
        raise CNIError(unavailable, f"dhcp: {exc}", "the daemon is running but stuck; see its log") from None
    if not reply.get("ok"):
        code = reply.get("code")
        raise CNIError(code if isinstance(code, int) and not isinstance(code, bool) else TRY_AGAIN_LATER,
                       str(reply.get("msg") or "dhcp: the daemon refused the request"), str(reply.get("details") or ""))
    return reply


def _result(view: dict, priority):
    from ..cni.result import IPConfig, Result, Route
    from ..net.addr import Interface, ip_address, ip_interface

    address = ip_address(view["address"])
    gateway = ip_address(view["gateway"]) if view.get("gateway") else None
    routes = []
    for entry in view.get("routes") or []:
        extras = {"scope": entry["scope"]} if "scope" in entry else {}
        if priority is not None:
            extras["priority"] = priority
        routes.append(Route(ip_interface(entry["dst"]), ip_address(entry["gw"]) if entry.get("gw") else None, extras))
    return Result([IPConfig(Interface(int(address), int(view["prefix"]), 4), gateway)], routes, view.get("dns") or {})


def add(request):
    from ..dhcp.config import parse

    config = parse(request)
    message = dict(_attachment(request), op="add", netns=_netns(request.netns), params=config.params,
                   provide={str(code): value.hex() for code, value in config.provide.items()})
    reply = _ask(config.socket_path, message)
    return _result(reply["lease"], config.priority)


def check(request):
    """The daemon must hold a live lease for this attachment, with the address in ``prevResult``."""
    from ..cni.errors import invalid_config
    from ..cni.result import addresses_in
    from ..dhcp.config import parse

    config = parse(request)
    reply = _ask(config.socket_path, dict(_attachment(request), op="check"))
    held = reply["lease"]["address"]
    found = [address.split("/")[0] for address, _ in addresses_in(request.prev_result)]
    if found and held not in found:
        raise invalid_config(f"dhcp: the lease of {request.container_id}/{request.ifname} is {held}, "
                             f"not in prevResult ({', '.join(found)})")
    return None


def delete(request):
    """Release; never fails (the daemon down or the lease unknown are not errors), says why on stderr."""
    from ..cni.errors import CNIError
    from ..dhcp.config import DEFAULT_SOCKET

    ipam = request.config.get("ipam")
    socket_path = (ipam.get("daemonSocketPath") if isinstance(ipam, dict) else None) or DEFAULT_SOCKET
    if not isinstance(socket_path, str):
        socket_path = DEFAULT_SOCKET
    # The daemon finds the lease by attachment; the namespace is only passed on, when it can be.
    # (Variables that are not UTF-8 never get here: cni.request.check_utf8 answers for every plugin.)
    netns = _netns(request.netns)
    try:
        reply = _ask(socket_path, dict(_attachment(request), op="del", netns=netns))
    except CNIError as exc:
        request.warnings.append(f"lease not released: {exc.msg}; the server frees it when it expires")
        return None
    if reply.get("note"):
        request.warnings.append(str(reply["note"]))
    return None


def gc(request):
    """Release this network's leases whose attachment is not in ``cni.dev/valid-attachments``."""
    from ..cni.errors import CNIError, invalid_config
    from ..dhcp.config import parse

    valid = []
    for i, entry in enumerate(request.config.get("cni.dev/valid-attachments") or []):
        if not isinstance(entry, dict) or "containerID" not in entry or "ifname" not in entry:
            raise invalid_config(f"cni.dev/valid-attachments[{i}]: expected {{containerID, ifname}}, got {entry!r}")
        valid.append([entry["containerID"], entry["ifname"]])
    config = parse(request)
    try:
        reply = _ask(config.socket_path, {"op": "gc", "network": request.name, "valid": valid})
    except CNIError as exc:
        request.warnings.append(f"GC skipped: {exc.msg}")
        return None
    for key in reply.get("released") or []:
        request.warnings.append(f"GC released the lease of {key}")
    return None


def status(request):
    """Ready when the daemon answers (else code 50)."""
    from ..cni.errors import NOT_AVAILABLE
    from ..dhcp.config import parse

    _ask(parse(request).socket_path, {"op": "status"}, unavailable=NOT_AVAILABLE)
    return None


PLUGIN = Plugin("dhcp", "addresses leased from a DHCP server through the cni-ipam DHCP daemon "
                        "('dhcp daemon' runs the daemon)",
                {"ADD": add, "CHECK": check, "DEL": delete, "GC": gc, "STATUS": status})


def main() -> None:
    import sys

    if len(sys.argv) > 1 and sys.argv[1] == "daemon":
        # The daemon, as Go's 'dhcp daemon': the launcher runs with -IS, so
        # turn site-packages back on for its dependencies (prometheus_client).
        import site

        site.main()
        from ..dhcp.daemon import main as daemon_main

        sys.exit(daemon_main(sys.argv[2:]))
    _skel_main(PLUGIN)
