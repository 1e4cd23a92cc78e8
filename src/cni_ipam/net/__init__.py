"""Address math (``addr``, ``ip``, ``ranges``, ``pools``); here, the one error it raises: a config value that is
not a usable address, CIDR or range (in the package itself, as every module of it needs it).

``net/`` knows nothing of CNI; the config readers (:mod:`cni_ipam.config.common`)
turn an :class:`AddressError` into CNI's "invalid config" error, keeping
its ``msg`` and ``details`` as they are.
"""

from __future__ import annotations

from ..jsonlite import quote


class AddressError(ValueError):
    """``<key>: "<value as in the JSON>" <problem>``, with the reason or the fix in ``details``.

    ``key`` is where the value sits in the config (``ipam.ipRanges[1].range``),
    ``value`` the value as given.  ``part`` names the piece of the value the
    problem is about (``start 10.0.0.5`` of a dash range): the message then
    reads ``<key>: "<value>": <part> <problem>``.
    """

    def __init__(self, key: str, value, problem: str, details: str = "", part: str = "") -> None:
        subject = f"{quote(value)}: {part}" if part else quote(value)
        self.msg = f"{key}: {subject} {problem}"
        super().__init__(self.msg)
        self.key = key
        self.value = value
        self.details = details
