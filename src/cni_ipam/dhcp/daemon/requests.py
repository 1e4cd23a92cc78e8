"""What the plugin asks the daemon, checked: :class:`Spec` (which attachment, which options) and :class:`RequestError`.

The requests themselves are described in :mod:`cni_ipam.dhcp.rpc`.  A
request the daemon refuses is answered with the CNI code and message of
:class:`RequestError`, which the plugin passes on to the runtime.
"""

from __future__ import annotations

from ...cni.errors import INVALID_CONFIG, INVALID_ENV, CNIError
from ..names import RESERVED

NETNS_RULES = ("the daemon enters only a pod's network namespace: an absolute path without '..' (under "
               "-hostprefix), to a namespace file of type net that is not the daemon's own")


class RequestError(CNIError):
    """A request the daemon refuses or cannot fulfil; its code and message go back to the plugin."""


def _is_utf8(text: str) -> bool:
    """False for the lone surrogates that JSON escapes (and surrogateescape) can carry."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def text_field(request: dict, key: str) -> str:
    """``request[key]``, which must be a non-empty string of valid UTF-8."""
    value = request.get(key, "")
    if not isinstance(value, str) or not value:
        raise RequestError(INVALID_CONFIG, f"request field {key!r} must be a non-empty string, got {value!r}")
    if not _is_utf8(value):
        raise RequestError(INVALID_CONFIG, f"request field {key!r} is not valid UTF-8: {value!r}")
    return value


def check_netns(netns) -> str:
    """The request's ``netns`` if the daemon may try it: absolute, valid UTF-8, no ``..`` component.

    ``..`` is refused outright: with ``-hostprefix`` it would climb out of
    the host's tree, and no runtime names a namespace that way.  What the path
    leads to is checked when it is opened (:func:`cni_ipam.dhcp.netns.open_net`).
    """
    if not isinstance(netns, str) or not netns.startswith("/"):
        raise RequestError(INVALID_CONFIG, f"netns must be an absolute path, got {netns!r}")
    if not _is_utf8(netns):
        raise RequestError(INVALID_ENV, f"dhcp: CNI_NETNS {netns!r} is not valid UTF-8", NETNS_RULES)
    if ".." in netns.split("/"):
        raise RequestError(INVALID_ENV, f"dhcp: CNI_NETNS {netns!r} has a '..' component: refused", NETNS_RULES)
    return netns


def netns_refused(netns: str, why: Exception) -> RequestError:
    """The answer to a request whose namespace :func:`cni_ipam.dhcp.netns.open_net` refused."""
    return RequestError(INVALID_ENV, f"dhcp: CNI_NETNS {netns!r} refused: {why}", NETNS_RULES)


class Spec:
    """Which attachment a lease is for and what to ask the server."""

    __slots__ = ("key", "container_id", "network", "ifname", "netns", "params", "extra")

    def __init__(self, container_id, network, ifname, netns="", params=(), extra=None):
        self.container_id = container_id
        self.network = network
        self.ifname = ifname
        self.netns = netns
        self.key = f"{container_id}/{network}/{ifname}"
        self.params = tuple(params)
        self.extra = dict(extra or {})

    @classmethod
    def from_request(cls, request: dict, with_options: bool = True) -> "Spec":
        spec = cls(text_field(request, "containerID"), text_field(request, "network"), text_field(request, "ifname"),
                   request.get("netns") or "")
        if not with_options:
            return spec
        check_netns(spec.netns)
        params = request.get("params", [1, 3])
        if not isinstance(params, list) or not all(isinstance(p, int) and 1 <= p <= 254 for p in params):
            raise RequestError(INVALID_CONFIG, f"params must be a list of option codes 1-254, got {params!r}")
        spec.params = tuple(params)
        provide = request.get("provide", {})
        if not isinstance(provide, dict):
            raise RequestError(INVALID_CONFIG, f"provide must be an object, got {provide!r}")
        for code, value in provide.items():
            try:
                number, data = int(code), bytes.fromhex(value)
            except (TypeError, ValueError):
                raise RequestError(INVALID_CONFIG, f"provide: {code!r}: {value!r} is not code: hex bytes") from None
            if not 1 <= number <= 254 or number in RESERVED or len(data) > 255:
                raise RequestError(INVALID_CONFIG, f"provide: option {code} cannot be sent (reserved, out of "
                                                   f"range or longer than 255 bytes)")
            spec.extra[number] = data
        return spec

    def to_record(self) -> dict:
        return {"container_id": self.container_id, "network": self.network, "ifname": self.ifname,
                "netns": self.netns, "params": list(self.params),
                "extra": {str(k): v.hex() for k, v in self.extra.items()}}

    @classmethod
    def from_record(cls, record: dict) -> "Spec":
        return cls(record["container_id"], record["network"], record["ifname"], record["netns"], record["params"],
                   {int(k): bytes.fromhex(v) for k, v in record["extra"].items()})

    def fields(self) -> dict:
        return {"lease": self.key, "container_id": self.container_id, "network": self.network,
                "ifname": self.ifname}
