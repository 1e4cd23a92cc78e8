"""JSON Patch (RFC 6902) and JSON Merge Patch (RFC 7386), applied as kube-apiserver applies them.

kube-apiserver uses evanphx/json-patch v4 (gopkg.in/evanphx/json-patch.v4,
kubernetes/apiserver go.mod).  Where that library departs from the RFC we
follow the library, because Go whereabouts' patches rely on it
(evanphx/json-patch patch.go @ 84a4bb100ade42a86fce2647c95a7dbcbf569cb2):

- ``test`` with value ``null`` passes when the member is absent (upstream
  whereabouts tests ``null`` before each ``add``, pkg/storage/kubernetes/ipam.go);
- values compare as JSON: ``1`` and ``"1"`` differ, and so do ``true`` and ``1``.

Any failure raises :class:`PatchFailed`; the server answers it with
:func:`status.patch_rejected` (422).
"""

from __future__ import annotations

import copy


class PatchFailed(Exception):
    """The patch does not apply to this document."""


class BadPatch(Exception):
    """The patch is not a JSON Patch document at all (400)."""


def json_equal(a, b) -> bool:
    """Equality of JSON values, where booleans are not numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def _tokens(pointer: str) -> list:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchFailed(f"path {pointer!r} does not start with /")
    return [part.replace("~1", "/").replace("~0", "~") for part in pointer[1:].split("/")]


def _index(container: list, token: str, adding: bool) -> int:
    if token == "-" and adding:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        raise PatchFailed(f"array index {token!r} is not a number")
    index = int(token)
    if index > len(container) or (index == len(container) and not adding):
        raise PatchFailed(f"array index {index} out of bounds")
    return index


def _parent(document, pointer: str):
    """The container that holds the pointer's last token, and that token."""
    tokens = _tokens(pointer)
    if not tokens:
        raise PatchFailed("the whole document cannot be the target here")
    node = document
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, adding=False)]
        else:
            raise PatchFailed(f"missing path: {pointer}")
    if not isinstance(node, (dict, list)):
        raise PatchFailed(f"missing path: {pointer}")
    return node, tokens[-1]


def _get(document, pointer: str):
    container, token = _parent(document, pointer)
    if isinstance(container, dict):
        if token not in container:
            raise PatchFailed(f"missing value: {pointer}")
        return container[token]
    return container[_index(container, token, adding=False)]


def _add(document, pointer: str, value):
    if pointer == "":
        return value
    container, token = _parent(document, pointer)
    if isinstance(container, dict):
        container[token] = value
    else:
        container.insert(_index(container, token, adding=True), value)
    return document


def _remove(document, pointer: str):
    container, token = _parent(document, pointer)
    if isinstance(container, dict):
        if token not in container:
            raise PatchFailed(f"unable to remove nonexistent key: {pointer}")
        return container.pop(token)
    return container.pop(_index(container, token, adding=False))


def _test(document, pointer: str, value) -> None:
    if pointer == "":
        actual = document
    else:
        container, token = _parent(document, pointer)
        if isinstance(container, dict):
            actual = container.get(token)
        else:
            actual = container[_index(container, token, adding=False)]
    if actual is None and value is None:
        return
    if actual is None or value is None or not json_equal(actual, value):
        raise PatchFailed(f"testing value {pointer} failed")


def apply_json_patch(document: dict, operations) -> dict:
    """The document after every operation, or :class:`PatchFailed`; ``document`` itself is left alone."""
    if not isinstance(operations, list) or not all(isinstance(op, dict) for op in operations):
        raise BadPatch("a JSON Patch is a list of operation objects")
    result = copy.deepcopy(document)
    for op in operations:
        kind, path = op.get("op"), op.get("path")
        if not isinstance(path, str):
            raise BadPatch(f"operation {op!r} has no path")
        if kind in ("add", "replace", "test") and "value" not in op:
            raise BadPatch(f"operation {op!r} has no value")
        value = copy.deepcopy(op.get("value"))
        if kind == "add":
            result = _add(result, path, value)
        elif kind == "remove":
            _remove(result, path)
        elif kind == "replace":
            if path == "":
                result = value
            else:
                _get(result, path)  # v4 refuses to replace a missing member
                container, token = _parent(result, path)
                container[token if isinstance(container, dict) else _index(container, token, False)] = value
        elif kind == "move":
            moved = _remove(result, _from(op))
            result = _add(result, path, moved)
        elif kind == "copy":
            result = _add(result, path, copy.deepcopy(_get(result, _from(op))))
        elif kind == "test":
            _test(result, path, value)
        else:
            raise BadPatch(f"unexpected kind of operation: {kind!r}")
    return result


def _from(op: dict) -> str:
    source = op.get("from")
    if not isinstance(source, str):
        raise BadPatch(f"operation {op!r} has no from")
    return source


def apply_merge_patch(document, patch):
    """RFC 7386: objects merge member by member, ``null`` removes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(document) if isinstance(document, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result
