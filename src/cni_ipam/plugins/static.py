"""The ``static`` IPAM plugin: hands out the addresses its config names.

A drop-in for the Go ``static`` plugin.  It holds no state, so DEL, GC and
STATUS have nothing to do; CHECK compares the config with ``prevResult``.
"""

from ..cni.skel import Plugin, main as _skel_main


def add(request):
    from ..cni.result import Result
    from ..config.static import parse

    config = parse(request)
    return Result(config.addresses, config.routes, config.dns)


def check(request):
    """Every configured address must be in ``prevResult``, with the configured gateway."""
    from ..cni.errors import invalid_config
    from ..cni.result import addresses_in
    from ..config.static import parse

    config = parse(request)
    prev = request.prev_result
    if prev is None:
        raise invalid_config("Required prevResult missing", "CHECK compares the config with the ADD result in prevResult")
    if not isinstance(prev, dict):
        raise invalid_config(f"prevResult: expected an object, got {prev!r}")
    held = {}
    for address, gateway in addresses_in(prev):
        held[_canonical(address.split("/")[0])] = _canonical(gateway)
    for ip in config.addresses:
        text = str(ip.address.ip)
        if text not in held:
            raise invalid_config(f"static: address {ip.address} is not in prevResult on interface {request.ifname}")
        if ip.gateway is not None and held[text] != str(ip.gateway):
            raise invalid_config(f"static: Failed to match addr {text} on interface {request.ifname}",
                                 f"config gateway {ip.gateway}, prevResult gateway {held[text] or 'none'}")
    return None


def _canonical(text):
    """An address as Python prints it, so ``2001:DB8::1`` and ``2001:db8::1`` compare equal."""
    from ..net.addr import ip_address

    try:
        return str(ip_address(text))
    except (TypeError, ValueError):
        return text


def nothing(request):
    """DEL, GC and STATUS: a static plugin holds nothing, so there is nothing to do."""
    return None


PLUGIN = Plugin(
    "static",
    "hands out the addresses, routes and DNS settings its config names",
    {"ADD": add, "CHECK": check, "DEL": nothing, "GC": nothing, "STATUS": nothing},
)


def main() -> None:
    _skel_main(PLUGIN)
