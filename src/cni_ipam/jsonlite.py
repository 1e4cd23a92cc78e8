"""JSON for plugin processes, straight from the ``_json`` C accelerator.

``import json`` costs about 8 ms because it imports ``re`` and ``enum``:
a third of a whole CNI call on top of Python's own start-up.  The C
scanner and encoder behind ``json`` need neither, so the plugins use them
directly.  Output is compact; CNI consumers must not depend on layout.
Unlike ``json.loads``, ``NaN`` and ``Infinity`` are refused, as Go refuses them.
"""

import _json

_WHITESPACE = " \t\n\r"


def _no_constant(name):
    raise ValueError(f"{name} is not valid JSON")


class _Options:
    """What the C scanner reads off its context object (the attributes of json.JSONDecoder)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_no_constant)


_scan = _json.make_scanner(_Options())
_encode = _json.make_encoder(None, None, _json.encode_basestring, None, ":", ",", False, False, False)
_encode_ascii = _json.make_encoder(None, None, _json.encode_basestring_ascii, None, ":", ",", False, False, False)


def loads(data):
    """Parse one JSON document (str or UTF-8 bytes); ValueError says where it went wrong."""
    text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except StopIteration as stop:
        raise ValueError(f"Expecting value at character {stop.value}") from None
    except SystemError:
        # The C scanner builds its error from json.decoder, which it only finds
        # once imported: import it (this is the error path) and scan again.
        import json.decoder  # noqa: F401

        value, end = _scan(text, start)
    if text[end:].strip(_WHITESPACE):
        raise ValueError(f"Extra data at character {end}")
    return value


def dumps(value, ascii: bool = False) -> str:
    """Compact JSON; non-ASCII characters kept as they are, or escaped with ``ascii=True``
    (error messages: a look-alike digit then shows as ``\\u0661``)."""
    return "".join((_encode_ascii if ascii else _encode)(value, 0))


def quote(value) -> str:
    """A value as it looked in the JSON config (``"10.0.0.1"``, ``true``), so the user can find it in an error."""
    try:
        return dumps(value if isinstance(value, (str, int, float, bool, list, dict, type(None))) else str(value),
                     ascii=True)
    except (TypeError, ValueError):
        return repr(value)
