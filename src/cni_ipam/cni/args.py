"""``CNI_ARGS``: ``K1=V1;K2=V2`` pairs, parsed as the Go library does.

Go's ``types.LoadArgs`` fails on a pair without exactly one ``=`` and on
keys the plugin does not know, unless ``IgnoreUnknown`` is ``1``/``true``.
Keys are case-sensitive.  Runtimes (kubelet, Multus, podman) always send
``IgnoreUnknown=1`` along with their ``K8S_*`` keys.
"""

from .errors import CNIError, INVALID_ENV


def parse_bool(text: str, key: str) -> bool:
    low = text.lower()
    if low in ("1", "true"):
        return True
    if low in ("0", "false"):
        return False
    raise CNIError(INVALID_ENV, f"CNI_ARGS: {key}={text!r} is not a boolean", "use 1, true, 0 or false")


def parse_cni_args(text: str, known: tuple = ()) -> dict:
    """Return the known pairs of ``CNI_ARGS`` as a dict.

    ``known`` names the keys this plugin understands; any other key is an
    error unless ``IgnoreUnknown`` is true, as in Go.  ``IgnoreUnknown``
    itself is always known.
    """
    if not text:
        return {}
    values = {}
    unknown = []
    for pair in text.split(";"):
        parts = pair.split("=")
        if len(parts) != 2:
            raise CNIError(INVALID_ENV, f"CNI_ARGS: invalid pair {pair!r}", "pairs are KEY=VALUE separated by ';'")
        key, value = parts
        if key == "IgnoreUnknown":
            values[key] = parse_bool(value, key)
        elif key in known:
            values[key] = value
        else:
            unknown.append(pair)
    if unknown and not values.get("IgnoreUnknown", False):
        listed = " ".join(f'"{pair}"' for pair in unknown)  # as Go prints them
        raise CNIError(
            INVALID_ENV,
            f"CNI_ARGS: unknown args [{listed}]",
            "add IgnoreUnknown=1 to CNI_ARGS to pass keys this plugin does not use",
        )
    values.pop("IgnoreUnknown", None)
    return values
