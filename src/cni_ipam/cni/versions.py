"""CNI spec versions: which we speak, and what each one allows.

Version strings are compared as semver triples, as the Go library does; a
string that is not ``X.Y.Z`` cannot be compared and is a decode error.
"""

from .errors import CNIError, DECODE_FAILURE

SUPPORTED = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST = SUPPORTED[-1]
# A config with no cniVersion is 0.1.0, as the Go library decodes it.
DEFAULT = "0.1.0"


def parse(version: str) -> tuple:
    """``"0.3.1"`` -> ``(0, 3, 1)``; anything else is code 6."""
    parts = version.split(".") if isinstance(version, str) else ()
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise CNIError(DECODE_FAILURE, f"cniVersion: {version!r} is not a version of the form X.Y.Z")
    return tuple(int(p) for p in parts)


def at_least(version: str, minimum: str) -> bool:
    return parse(version) >= parse(minimum)


def has_ip_version_field(version: str) -> bool:
    """0.3.x and 0.4.0 results carry ``ips[].version``; 1.0.0 dropped it."""
    return (0, 3, 0) <= parse(version) < (1, 0, 0)


def is_legacy_result(version: str) -> bool:
    """0.1.0 and 0.2.0 results use ``ip4``/``ip6`` instead of ``ips``."""
    return parse(version) < (0, 3, 0)
