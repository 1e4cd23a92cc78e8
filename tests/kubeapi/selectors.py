"""``labelSelector`` and ``fieldSelector`` query parameters, parsed into predicates on objects.

The grammar is the subset of kubernetes/apimachinery pkg/labels/selector.go
and pkg/fields/selector.go that clients use: ``k=v``, ``k==v``, ``k!=v``,
``k in (a,b)``, ``k notin (a,b)``, ``k`` and ``!k`` for labels; ``=``,
``==`` and ``!=`` on dotted paths (``metadata.name``, ``spec.nodeName``,
``status.phase``...) for fields.  A term they cannot read is a 400.
"""

from __future__ import annotations

import re

from .status import bad_request

_SET = re.compile(r"^\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQUALITY = re.compile(r"^\s*(!?)([\w./-]+)\s*(?:(==|=|!=)\s*([\w./-]*))?\s*$")


def _terms(text: str) -> list:
    """Split on the commas that are not inside a ``( )`` value set."""
    terms, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        terms.append(current)
    return terms


def label_selector(text: str):
    """A predicate on an object's ``metadata.labels``."""
    tests = []
    for term in _terms(text or ""):
        match = _SET.match(term)
        if match:
            key, operator, values = match.group(1), match.group(2), {v.strip() for v in match.group(3).split(",")}
            if operator == "in":
                tests.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                tests.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
            continue
        match = _EQUALITY.match(term)
        if not match or (match.group(1) and match.group(3)):
            raise bad_request(f'unable to parse requirement: invalid label selector term "{term.strip()}"')
        negated, key, operator, value = match.groups()
        if operator is None:
            tests.append(lambda labels, k=key, absent=bool(negated): (k not in labels) if absent else (k in labels))
        elif operator == "!=":
            tests.append(lambda labels, k=key, v=value: labels.get(k) != v)
        else:
            tests.append(lambda labels, k=key, v=value: labels.get(k) == v)
    return lambda obj: all(test((obj.get("metadata") or {}).get("labels") or {}) for test in tests)


def field_value(obj: dict, path: str) -> str:
    """A field as the field selector compares it: a string, ``""`` when absent."""
    node = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def field_selector(text: str, supported: tuple):
    """A predicate on the fields named in ``supported`` (kube-apiserver's per-resource field label set)."""
    tests = []
    for term in _terms(text or ""):
        match = re.match(r"^\s*([\w.]+)\s*(==|=|!=)\s*([^,]*?)\s*$", term)
        if not match:
            raise bad_request(f'invalid selector: "{term.strip()}"; can\'t understand "{term.strip()}"')
        path, operator, value = match.groups()
        if path not in supported:
            raise bad_request(f'field label not supported: {path}')
        if operator == "!=":
            tests.append(lambda obj, p=path, v=value: field_value(obj, p) != v)
        else:
            tests.append(lambda obj, p=path, v=value: field_value(obj, p) == v)
    return lambda obj: all(test(obj) for test in tests)
