"""JSON for plugin processes, straight from the ``_json`` C accelerator.

``import json`` costs about 8 ms because it imports ``re`` and ``enum``:
a third of a whole CNI call on top of Python's own start-up.  The C
scanner and encoder behind ``json`` need neither, so the plugins use them
directly.  Output is compact; CNI consumers must not depend on layout.
Unlike ``json.loads``, ``NaN`` and ``Infinity`` are refused, as Go refuses them,
and so is a document nested more than :data:`MAX_DEPTH` levels deep: the C
scanner recurses once per level and would raise ``RecursionError`` near
Python's recursion limit, and every later step that walks the value
(quoting it in an error, encoding a reply) recurses as deeply.
"""

import _json

_WHITESPACE = " \t\n\r"
# Go's encoding/json allows 10000 levels; real CNI configs nest fewer than 10.  256 leaves Python's
# stack (a recursion limit of 1000 frames) room for whatever walks the value afterwards.
MAX_DEPTH = 256


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


def loads(data, unicode_only: bool = False):
    """Parse one JSON document (str or UTF-8 bytes); ValueError says where it went wrong.

    With ``unicode_only``, a string holding an unpaired UTF-16 surrogate
    escape (``"\\ud800"``) is refused too: such a string cannot be encoded
    to UTF-8, so it would fail later in a file name, a SQLite row or an
    etcd key (Go's decoder turns it into U+FFFD instead).
    """
    text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except StopIteration as stop:
        raise ValueError(f"Expecting value at character {stop.value}") from None
    except RecursionError:
        raise _too_deep() from None
    except SystemError:
        # The C scanner builds its error from json.decoder, which it only finds
        # once imported: import it (this is the error path) and scan again.
        import json.decoder  # noqa: F401

        value, end = _scan(text, start)
    if text[end:].strip(_WHITESPACE):
        raise ValueError(f"Extra data at character {end}")
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth(value) > MAX_DEPTH:
        raise _too_deep()
    if unicode_only and ("\\ud" in text or "\\uD" in text):
        try:
            dumps(value).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("a string holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff): "
                             "it is not a Unicode character") from None
    return value


def _too_deep() -> ValueError:
    return ValueError(f"nested more than {MAX_DEPTH} levels deep (the limit of this parser)")


def _depth(value) -> int:
    """How deeply lists and objects nest in ``value`` (a scalar is 0), without recursing."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        todo.extend((child, level + 1) for child in children if isinstance(child, (list, dict)))
    return deepest


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
