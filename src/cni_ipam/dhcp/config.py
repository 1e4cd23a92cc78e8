"""The ``ipam`` section of a ``dhcp`` network, checked as the plugin needs it.

Pure: a :class:`~cni_ipam.cni.request.Request` in, :class:`DHCPConfig` or a
code-7 :class:`~cni_ipam.cni.errors.CNIError` out.  Imported by the plugin
executable, so it uses nothing beyond our own light modules.

Keys (all optional; ``{"type": "dhcp"}`` works as is):

* ``daemonSocketPath``: the daemon's socket (default ``/run/cni/dhcp.sock``);
* ``request``: ``[{"option": name or code, "skipDefault": bool}]``, options to
  ask the server for; any ``skipDefault: true`` drops the defaults;
* ``provide``: ``[{"option": name or code, "value": str, "fromArg": CNI_ARGS key}]``,
  options to send (``fromArg`` wins when the key is in ``CNI_ARGS``);
* ``priority``: a route metric put on every route (shown in CNI 1.1.0 results).
"""

from ..cni.errors import invalid_config
from .names import DEFAULT_REQUEST, RESERVED, option_code, option_name

KNOWN_KEYS = ("type", "daemonSocketPath", "request", "provide", "priority")
DEFAULT_SOCKET = "/run/cni/dhcp.sock"


class DHCPConfig:
    __slots__ = ("socket_path", "params", "provide", "priority")

    def __init__(self, socket_path=DEFAULT_SOCKET, params=DEFAULT_REQUEST, provide=None, priority=None):
        self.socket_path = socket_path
        self.params = list(params)
        self.provide = dict(provide or {})  # code -> bytes
        self.priority = priority


def lenient_args(text: str) -> dict:
    """``CNI_ARGS`` as Go's dhcp plugin reads it for ``fromArg``: every ``K=V`` pair, nothing refused."""
    found = {}
    for pair in (text or "").split(";"):
        key, sep, value = pair.partition("=")
        if sep:
            found[key] = value
    return found


def _code(entry, where: str) -> int:
    if not isinstance(entry, dict):
        raise invalid_config(f"{where}: expected an object like {{\"option\": \"routers\"}}, got {entry!r}")
    try:
        return option_code(entry.get("option", ""))
    except ValueError as exc:
        raise invalid_config(f"{where}.option: {exc}") from None


def parse(request) -> DHCPConfig:
    ipam = request.ipam
    for key in ipam:
        if key not in KNOWN_KEYS:
            request.warnings.append(f"ipam.{key} is not a dhcp IPAM key; it is ignored")
    socket_path = ipam.get("daemonSocketPath") or DEFAULT_SOCKET
    if not isinstance(socket_path, str):
        raise invalid_config(f"ipam.daemonSocketPath: expected a path, got {socket_path!r}")

    wanted = ipam.get("request") or []
    if not isinstance(wanted, list):
        raise invalid_config(f"ipam.request: expected a list, got {wanted!r}")
    requested, skip_default = [], False
    for i, entry in enumerate(wanted):
        code = _code(entry, f"ipam.request[{i}]")
        skip = entry.get("skipDefault", False)
        if not isinstance(skip, bool):
            raise invalid_config(f"ipam.request[{i}].skipDefault: expected true or false, got {skip!r}")
        skip_default = skip_default or skip
        if code in RESERVED:
            raise invalid_config(f"ipam.request[{i}].option: {option_name(code)} ({code}) is not an option "
                                 "a server sends on request")
        requested.append(code)
    params = [] if skip_default else list(DEFAULT_REQUEST)
    for code in requested:
        if code not in params:
            params.append(code)

    offered = ipam.get("provide") or []
    if not isinstance(offered, list):
        raise invalid_config(f"ipam.provide: expected a list, got {offered!r}")
    args = lenient_args(request.args)
    provide = {}
    for i, entry in enumerate(offered):
        where = f"ipam.provide[{i}]"
        code = _code(entry, where)
        if code in RESERVED:
            raise invalid_config(f"{where}.option: the daemon sets {option_name(code)} ({code}) itself")
        value, from_arg = entry.get("value", ""), entry.get("fromArg", "")
        if not isinstance(value, str) or not isinstance(from_arg, str):
            raise invalid_config(f"{where}: value and fromArg must be strings")
        if value:
            provide[code] = _bytes(value, f"{where}.value")
        if from_arg and from_arg in args:
            provide[code] = _bytes(args[from_arg], f"{where}: CNI_ARGS {from_arg}")
    priority = ipam.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int) or priority < 0):
        raise invalid_config(f"ipam.priority: expected a non-negative integer, got {priority!r}")
    return DHCPConfig(socket_path, params, provide, priority)


def _bytes(text: str, where: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > 255:
        raise invalid_config(f"{where}: {len(data)} bytes is too long for a DHCP option (255 at most)")
    return data
