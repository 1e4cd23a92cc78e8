"""The YAML that kubeconfigs are written in, read without PyYAML (plugin processes
cannot afford to import it).

Kubeconfigs are written by kubectl (client-go ``clientcmd.Write``), by
whereabouts' installer (k8snetworkplumbingwg/whereabouts script/lib.sh) and by
OpenShift's cluster-network-operator (bindata/network/multus/multus.yaml) as
block mappings and block sequences of one-line scalars.  This reads exactly that:

* block mappings (``key: value``; plain or quoted keys) and block sequences
  (``- item``, ``- key: value``, also at the same indentation as their key);
* plain, 'single-quoted' and "double-quoted" one-line scalars, with YAML's
  escapes in double quotes; ``# comments``; blank lines; one ``---`` start and
  ``...`` end;
* flow collections that are JSON on one line (kubectl's ``preferences: {}``),
  and whole documents in JSON (JSON is YAML).

Plain scalars become ``None`` (empty, ``~``, ``null``), ``True``/``False``
(true, yes, on and their Title/UPPER forms, as YAML 1.1 readers do), ``int``
(plain decimal) and ``float`` (``1.5``); everything else is a string.

Refused, with a :class:`YAMLError` naming the line (the reader never guesses):
anchors (&), aliases (*), tags (!), block scalars (| and >), scalars spanning
lines, directives (%), complex (?) and merge (<<) keys, flow collections that
are not one-line JSON, tabs in indentation, duplicate keys, more than one
document, and plain scalars that YAML readers disagree on or read as numbers or
dates in forms other than the two above (``0x1F``, ``012``, ``1e3``, ``1_000``,
``1:30``, ``2024-01-01``, ``y``, ``.inf``...): quote those.
"""

from __future__ import annotations

from cni_ipam import jsonlite

_NULLS = frozenset(("", "~", "null", "Null", "NULL"))
_TRUES = frozenset(("true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"))
_FALSES = frozenset(("false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"))
# Booleans to Go's yaml.v2 but strings to PyYAML: quoting is the only reading both share.
_DISPUTED = frozenset(("y", "Y", "n", "N"))
_REFUSED_STARTS = {
    "&": "anchors (&)", "*": "aliases (*)", "!": "tags (!)",
    "|": "block scalars (|)", ">": "folded block scalars (>)",
    "%": "directives (%)", "?": "complex keys (?)",
    "@": "the reserved indicator @", "`": "the reserved indicator `",
}
_ESCAPES = {
    "0": "\0", "a": "\a", "b": "\b", "t": "\t", "\t": "\t", "n": "\n", "v": "\v",
    "f": "\f", "r": "\r", "e": "\x1b", " ": " ", '"': '"', "/": "/", "\\": "\\",
    "N": "\x85", "_": "\xa0", "L": "\u2028", "P": "\u2029",
}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}
_DIGITS = frozenset("0123456789")
_HEXDIGITS = frozenset("0123456789abcdefABCDEF")


class YAMLError(ValueError):
    """Text this reader refuses or cannot read; ``line`` is 1-based."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


class _Line:
    __slots__ = ("number", "indent", "text")

    def __init__(self, number: int, indent: int, text: str) -> None:
        self.number = number
        self.indent = indent
        self.text = text


def loads(data):
    """The one document in ``data`` (str or UTF-8 bytes) as dicts, lists, str,
    int, float, bool and None; an empty document is None."""
    text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    raw = text.lstrip("\ufeff").split("\n")
    lines = _content_lines(raw)
    if not lines:
        return None
    first = lines[0]
    if first.text[0] in "{[":
        return _json_document(raw, first)
    reader = _Reader(lines)
    value = _node(reader)
    if reader.peek() is not None:
        line = reader.peek()
        raise YAMLError(line.number, f"unexpected indentation or content {_show(line.text)}")
    return value


def _show(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _content_lines(raw: list) -> list:
    """The lines that carry content, with document markers checked and removed."""
    lines, started, ended = [], False, False
    for number, line in enumerate(raw, 1):
        line = line.rstrip("\r")
        stripped = line.lstrip(" ")
        if not stripped.strip() or stripped.startswith("#"):
            continue
        if stripped[0] == "\t" or (stripped[0].isspace() and stripped.strip()):
            raise YAMLError(number, "tabs are not allowed in indentation")
        if ended:
            raise YAMLError(number, "content after the end of the document (...); "
                            "only one document is read")
        if line == "---" or line.startswith("--- ") or line.startswith("---\t"):
            if started or line[3:].strip() and not line[3:].strip().startswith("#"):
                raise YAMLError(number, "only one document is read, with nothing after its ---")
            started = True
            continue
        if line == "..." or line.startswith("... "):
            ended = True
            continue
        if line.startswith("%"):
            raise YAMLError(number, "directives (%) are not supported")
        started = True
        lines.append(_Line(number, len(line) - len(stripped), stripped.rstrip(" \t")))
    return lines


def _json_document(raw: list, first: _Line):
    """A document written as JSON, from its first line to the end."""
    text = "\n".join(raw[first.number - 1:])
    try:
        return jsonlite.loads(text)
    except ValueError as exc:
        raise YAMLError(first.number, f"a document starting with {first.text[0]} must be JSON: {exc}") from None


class _Reader:
    __slots__ = ("lines", "pos")

    def __init__(self, lines: list) -> None:
        self.lines = lines
        self.pos = 0

    def peek(self):
        return self.lines[self.pos] if self.pos < len(self.lines) else None


def _is_entry(text: str) -> bool:
    return text == "-" or text.startswith("- ")


def _node(reader: _Reader):
    """The block node that starts at the next line."""
    line = reader.peek()
    if _is_entry(line.text):
        return _sequence(reader, line.indent)
    if _key_end(line) is not None:
        return _mapping(reader, line.indent)
    reader.pos += 1
    value = _scalar(line.text, line.number)
    _no_continuation(reader, line.indent)
    return value


def _no_continuation(reader: _Reader, indent: int) -> None:
    after = reader.peek()
    if after is not None and after.indent > indent:
        raise YAMLError(after.number, "scalars spanning several lines are not supported "
                        "(or the indentation is wrong)")


def _nested(reader: _Reader, indent: int, sequence_here: bool):
    """The value of a key or entry with nothing after it on its line."""
    after = reader.peek()
    if after is None:
        return None
    if after.indent > indent:
        return _node(reader)
    if sequence_here and after.indent == indent and _is_entry(after.text):
        return _sequence(reader, indent)
    return None


def _sequence(reader: _Reader, indent: int) -> list:
    items = []
    while True:
        line = reader.peek()
        if line is None or line.indent != indent or not _is_entry(line.text):
            break
        rest = line.text[1:]
        content = rest.lstrip(" ")
        if not content or content.startswith("#"):
            reader.pos += 1
            items.append(_nested(reader, indent, False))
            continue
        # The entry's content is a node of its own, starting at its column.
        line.indent += 1 + len(rest) - len(content)
        line.text = content
        items.append(_node(reader))
    return items


def _mapping(reader: _Reader, indent: int) -> dict:
    out = {}
    while True:
        line = reader.peek()
        if line is None or line.indent != indent:
            break
        if _is_entry(line.text):
            raise YAMLError(line.number, "a sequence entry (-) where a mapping key was expected")
        end = _key_end(line)
        if end is None:
            raise YAMLError(line.number, f"expected 'key: value', got {_show(line.text)}")
        key_text, rest = line.text[:end], line.text[end + 1:].strip(" \t")
        key = _key(key_text.rstrip(" \t"), line.number)
        if key in out:
            raise YAMLError(line.number, f"duplicate key {key!r}")
        reader.pos += 1
        if not rest or rest.startswith("#"):
            out[key] = _nested(reader, indent, True)
        else:
            out[key] = _scalar(rest, line.number)
            _no_continuation(reader, indent)
    return out


def _key_end(line: _Line):
    """The index of the ``:`` that ends the line's key, or None if it has no key."""
    text = line.text
    if text[0] in "\"'":
        _, end = _quoted(text, 0, line.number)
        while end < len(text) and text[end] in " \t":
            end += 1
        return end if text[end:end + 1] == ":" and text[end + 1:end + 2] in ("", " ", "\t") else None
    if text[0] in "[{":
        return None
    i = 0
    while True:
        i = text.find(":", i)
        if i < 0:
            return None
        if text.find(" #", 0, i) >= 0 or text.find("\t#", 0, i) >= 0:
            return None
        if i + 1 == len(text) or text[i + 1] in " \t":
            return i
        i += 1


def _key(text: str, number: int):
    if text == "<<":
        raise YAMLError(number, "merge keys (<<) are not supported")
    if not text:
        raise YAMLError(number, "empty keys are not supported")
    if text[0] in "\"'":
        return _quoted(text, 0, number)[0]
    return _plain(text, number)


def _scalar(text: str, number: int):
    """The value written on one line: quoted, one-line JSON flow, or plain."""
    if text[0] in "\"'":
        value, end = _quoted(text, 0, number)
        tail = text[end:].lstrip(" \t")
        if tail and not (tail.startswith("#") and end < len(text) and text[end] in " \t"):
            raise YAMLError(number, f"unexpected text after the quoted scalar: {_show(tail)}")
        return value
    if text[0] in "[{":
        return _flow(text, number)
    if _is_entry(text):
        raise YAMLError(number, "a sequence entry (-) is not allowed here")
    for mark in (" #", "\t#"):
        cut = text.find(mark)
        if cut >= 0:
            text = text[:cut].rstrip(" \t")
    if text.endswith(":") or ": " in text or ":\t" in text:
        raise YAMLError(number, f"a mapping inside a plain scalar: {_show(text)}; quote the value")
    return _plain(text, number)


def _flow(text: str, number: int):
    """A flow collection: JSON on one line, with an optional trailing comment."""
    cuts = [len(text)] + [i for i in range(1, len(text)) if text[i] == "#" and text[i - 1] in " \t"]
    for cut in cuts:
        try:
            return jsonlite.loads(text[:cut])
        except ValueError:
            continue
    raise YAMLError(number, f"flow collections must be JSON on one line (like {{}} or "
                    f"[\"a\"]), got {_show(text)}")


def _plain(text: str, number: int):
    first = text[0]
    if first in _REFUSED_STARTS:
        raise YAMLError(number, f"{_REFUSED_STARTS[first]} are not supported")
    if text in _NULLS:
        return None
    if text in _TRUES:
        return True
    if text in _FALSES:
        return False
    if text in _DISPUTED:
        raise YAMLError(number, f"{text!r} is a boolean to some YAML readers and a string to others; quote it")
    return _number(text, number)


def _number(text: str, number: int):
    """A plain decimal int or ``digits.digits`` float; anything some YAML reader
    takes as another number or a date is refused; the rest stays a string."""
    body = text[1:] if text[0] in "+-" else text
    if body.lower() in (".inf", ".nan"):
        raise YAMLError(number, f"{text!r} is a special float to YAML readers; quote it if it is a string")
    if not body or not (body[0] in _DIGITS or body[0] == "." and body[1:2] in _DIGITS):
        return text
    if _DIGITS.issuperset(body) and (body == "0" or body[0] != "0"):
        return int(text)
    whole, dot, fraction = body.partition(".")
    if dot and whole and _DIGITS.issuperset(whole) and _DIGITS.issuperset(fraction):
        return float(text)
    if _numeric_to_someone(body):
        raise YAMLError(number, f"{text!r} is a number or a date to some YAML readers; quote it")
    return text


def _numeric_to_someone(body: str) -> bool:
    """Octal, hex, binary, underscored, exponent and sexagesimal numbers, and
    timestamps: YAML 1.1 (PyYAML) and Go's yaml.v2 read these as non-strings."""
    plain = body.replace("_", "")
    if body[:4].isdigit() and body[4:5] == "-":
        return True
    if ":" in body and set(plain) <= _DIGITS | {":", "."}:
        return True
    if body[0] == "0" and len(plain) > 1 and plain[1] in "xXoObB":
        return all(c in _HEXDIGITS for c in plain[2:])
    if plain.isdigit():
        return True
    try:
        float(plain)
    except ValueError:
        return False
    return True


def _quoted(text: str, start: int, number: int):
    """The quoted scalar opening at ``text[start]``: (value, index after the closing quote)."""
    quote = text[start]
    out = []
    i = start + 1
    while i < len(text):
        c = text[i]
        if quote == "'":
            if c == "'":
                if text[i + 1:i + 2] == "'":
                    out.append("'")
                    i += 2
                    continue
                return "".join(out), i + 1
        elif c == '"':
            return "".join(out), i + 1
        elif c == "\\":
            i = _escape(text, i, number, out)
            continue
        out.append(c)
        i += 1
    raise YAMLError(number, "quoted scalars must close on the line they open")


def _escape(text: str, i: int, number: int, out: list) -> int:
    """Append the escape at ``text[i]`` (a backslash) to ``out``; the index after it."""
    code = text[i + 1:i + 2]
    if code in _ESCAPES:
        out.append(_ESCAPES[code])
        return i + 2
    width = _HEX_ESCAPES.get(code)
    digits = text[i + 2:i + 2 + width] if width else ""
    if not width or len(digits) != width or not _HEXDIGITS.issuperset(digits):
        raise YAMLError(number, f"invalid escape {text[i:i + 2 + (width or 0)]!r} in a double-quoted scalar")
    if int(digits, 16) > 0x10FFFF:
        raise YAMLError(number, f"escape {text[i:i + 2 + width]!r} is beyond Unicode")
    out.append(chr(int(digits, 16)))
    return i + 2 + width
