"""Kubernetes' rules for names, checked before a request rather than learnt from a 422.

From k8s.io/apimachinery pkg/util/validation/validation.go: a namespace is a
DNS-1123 label (``IsDNS1123Label``), a custom object's name a DNS-1123
subdomain (``IsDNS1123Subdomain``).  Each function returns what is wrong, or
None when the name is fine.
"""

from __future__ import annotations

_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_LABEL_CHARS = _ALNUM | {"-"}


def _part_problem(part: str):
    if not part:
        return "it has an empty part"
    if not _LABEL_CHARS.issuperset(part):
        return "it may hold only lower-case letters, digits, '-' and '.'"
    if part[0] not in _ALNUM or part[-1] not in _ALNUM:
        return "each part must start and end with a lower-case letter or digit"
    return None


def label_problem(name: str):
    """Why ``name`` is not a DNS-1123 label (at most 63 of [a-z0-9-], alphanumeric at both ends), or None."""
    if len(name) > 63:
        return f"it is {len(name)} characters long, more than 63"
    if "." in name:
        return "it may hold only lower-case letters, digits and '-'"
    return _part_problem(name)


def subdomain_problem(name: str):
    """Why ``name`` is not a DNS-1123 subdomain (at most 253 characters, dot-separated
    parts of [a-z0-9-] that start and end alphanumeric), or None."""
    if len(name) > 253:
        return f"it is {len(name)} characters long, more than 253"
    for part in name.split("."):
        problem = _part_problem(part)
        if problem:
            return problem
    return None
