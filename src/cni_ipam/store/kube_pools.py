"""The Kubernetes store's reading and writing of its objects, without I/O: IPPools and our annotations on them.

An IPPool as read (:class:`Pool`: its allocations, and what our per-key
annotations ``cni-ipam.io/a.<key>`` add to them), the JSON Patch operations
that make those annotations say what a write needs (:func:`annotation_ops`),
an allocation's key and row, and the readings of an
OverlappingRangeIPReservation's name.  Where each is kept and why:
:mod:`cni_ipam.store.kubernetes`, which reads and writes them.
"""

from __future__ import annotations

from .. import jsonlite as json
from ..kube import objects as ko
from ..net import pool_name
from .base import Allocation, StoreRefused

NOTE = "cni-ipam.io/a."  # + an allocation key: that allocation's annotation
ANNOTATION = "cni-ipam.io/attachments"  # before notes: one annotation for all keys, still read
ANNOTATION_BUDGET = 200 * 1024  # kube-apiserver refuses more than 256 KiB of annotations per object
_NOTE_KEY_DIGITS = 63 - len(NOTE.split("/", 1)[1])  # an annotation's name (after the prefix) has at most 63 characters


class Pool:
    """One IPPool as read: the parsed object, our pool name for it, its allocations, and our annotations
    (``notes``: allocation key -> its annotation's text as read; ``blob``: the old single annotation's text)."""

    __slots__ = ("name", "obj", "parsed", "network_name", "network", "pool", "extras", "stale", "allocations",
                 "annotations", "notes", "blob")

    def __init__(self, obj: dict, node_pools=None) -> None:
        self.obj = obj
        self.parsed = ko.parse_ippool(obj)
        self.name = self.parsed.name
        from ..net.addr import Network

        version, base = ko.pool_base(self.parsed.range)
        prefixlen = int(self.parsed.range.rsplit("/", 1)[1])
        prefixlen -= 96 if version == 4 and ":" in self.parsed.range else 0  # an IPv4-mapped range read as IPv4
        self.network = Network(base, prefixlen, version)
        named = _network_name(self.name, self.network)  # a node's pool: "<network_name>-<node>"
        self.network_name = (node_pools or {}).get(self.name, named)  # the address space's network name
        self.pool = pool_name(named, str(self.network))
        annotations = (obj.get("metadata") or {}).get("annotations")
        self.annotations = annotations if isinstance(annotations, dict) else None
        self.notes = {name[len(NOTE):]: text for name, text in (self.annotations or {}).items()
                      if name.startswith(NOTE) and isinstance(text, str)}
        blob = (self.annotations or {}).get(ANNOTATION)
        self.blob = blob if isinstance(blob, str) else None
        holders = {e.key: [e.allocation.container_id, e.allocation.ifname] for e in self.parsed.entries}
        self.extras, self.stale = {}, {}  # entries of the keys' current holders; the others (key gone or re-held)
        for key, row in _read_extras(obj).items():
            (self.extras if holders.get(key) == row[:2] else self.stale)[key] = row
        self.allocations = [self._allocation(e) for e in self.parsed.entries if e.address is not None]

    def _allocation(self, entry) -> Allocation:
        held = entry.allocation
        extra = self.extras.get(entry.key)
        row = list(extra) + [None] * (7 - len(extra)) if extra is not None else [None] * 7
        network, in_space, node, netns, created = row[2:7]
        return Allocation(self.pool, entry.address, self.parsed.version, _str(network), held.container_id,
                          held.ifname, space=None if in_space == 0 else self.network_name, pod=held.podref,
                          netns=_str(netns), node=_str(node),
                          created=float(created) if isinstance(created, (int, float)) else 0.0)

    def holding(self, address: int) -> list:
        return [a for a in self.allocations if a.ip == address]


def _str(value) -> str:
    return value if isinstance(value, str) else ""


def _network_name(name: str, network) -> str:
    """The ``network_name`` an IPPool's name carries before its normalized range ("" when none)."""
    suffix = ko.pool_name(ko.range_text(network))
    if name == suffix:
        return ""
    return name[:-len(suffix) - 1] if name.endswith("-" + suffix) else name


def _row(text):
    """An annotation's row, or None when it is not one."""
    try:
        row = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None
    return row if isinstance(row, list) and len(row) >= 2 else None


def _read_extras(obj: dict) -> dict:
    """Our annotations: offset key -> ``[id, ifname, network, in-space, node, netns, created]``, from each key's
    own (``cni-ipam.io/a.<key>``), else from the single one objects written before them have."""
    annotations = (obj.get("metadata") or {}).get("annotations")
    if not isinstance(annotations, dict):
        return {}
    try:
        blob = json.loads(annotations.get(ANNOTATION) or "{}")
    except (ValueError, TypeError):
        blob = {}
    extras = {k: v for k, v in blob.items() if isinstance(v, list) and len(v) >= 2} if isinstance(blob, dict) else {}
    for name, text in annotations.items():
        row = _row(text) if name.startswith(NOTE) else None
        if row is not None:
            extras[name[len(NOTE):]] = row
    return extras


def note_row(a: Allocation, full: bool = True) -> list:
    """The allocation's annotation row; without node, netns and time unless ``full``."""
    row = [a.container_id, a.ifname, a.network, 1 if a.space is not None else 0]
    return row + [a.node, a.netns, a.created] if full else row


def note_name(key: str):
    """The annotation of allocation key ``key`` (``cni-ipam.io/a.<key>``: a qualified name, whose part after
    the prefix is at most 63 characters of ``[A-Za-z0-9-_.]`` beginning and ending alphanumeric), or None for
    a key that cannot name one (only decimal keys, as :func:`~cni_ipam.kube.objects.offset_key` writes, get one)."""
    return NOTE + key if key.isdigit() and key.isascii() and len(key) <= _NOTE_KEY_DIGITS else None


def note_text(row: list) -> str:
    """A row as its annotation's text: JSON in printable ASCII without ``<>&`` (escaped inside its strings), so
    a later ``test`` of it compares equal on any server (:func:`~cni_ipam.kube.objects.plain`)."""
    text = json.dumps(row, ascii=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").replace("\x7f", "\\u007f")


def _size(name: str, text: str) -> int:
    """What an annotation counts toward the API server's limit (``ValidateAnnotationsSize``: key and value lengths)."""
    return len(name.encode()) + len(text.encode())


def annotation_ops(pool: Pool, extras: dict) -> list:
    """JSON Patch operations that make our annotations say ``extras`` (key -> row), given the pool as read:
    one annotation per allocation key, added (``test`` absent), replaced or removed (``test`` of its text as
    read) only where its text changes, so writers of different keys do not conflict.  Built from
    ``pool.extras``, which holds only the entries of keys the pool still holds for the same attachment, so a
    write also drops the annotations another writer made stale (Go writers remove keys and leave annotations
    alone).  The old single annotation, when present, is removed (``test`` of its text) and its current entries
    are written as notes.  Past :data:`ANNOTATION_BUDGET` bytes of annotations (all of the object's, as read)
    a new row loses its node, netns and time, then is left out (its allocation then reads as Go-written).  A
    text that cannot be tested exactly (not :func:`~cni_ipam.kube.objects.plain`) makes the patch test
    ``resourceVersion`` instead."""
    annotations = pool.annotations or {}
    used = sum(_size(k, v) for k, v in annotations.items() if isinstance(k, str) and isinstance(v, str))
    ops, added, whole = [], {}, False

    def guarded(name: str, text: str) -> list:
        nonlocal whole
        whole = whole or not ko.plain(text)
        return [{"op": "test", "path": ko.pointer("metadata", "annotations", name), "value": text}]

    def removed(name: str, text: str) -> list:
        return guarded(name, text) + [{"op": "remove", "path": ko.pointer("metadata", "annotations", name)}]

    if pool.blob is not None:
        ops += removed(ANNOTATION, pool.blob)
        used -= _size(ANNOTATION, pool.blob)
    for key, old in sorted(pool.notes.items()):
        if key not in extras or note_name(key) is None:
            ops += removed(NOTE + key, old)
            used -= _size(NOTE + key, old)
    for key, row in extras.items():
        name, old = note_name(key), pool.notes.get(key)
        if name is None or old is not None and _row(old) == list(row):
            continue
        if old is not None:
            used -= _size(name, old)
        text = next((t for t in (note_text(row), note_text(row[:4])) if used + _size(name, t) <= ANNOTATION_BUDGET),
                    None)
        path = ko.pointer("metadata", "annotations", name)
        if text is None:
            if old is not None:
                ops += removed(name, old)
            continue
        used += _size(name, text)
        if old is not None:
            ops += guarded(name, old) + [{"op": "replace", "path": path, "value": text}]
        elif pool.annotations is None:
            added[name] = text
        else:
            ops += [{"op": "test", "path": path, "value": None}, {"op": "add", "path": path, "value": text}]
    if added:  # no annotations at all: add the map, tested absent (a concurrent creator of it makes us read again)
        ops += [{"op": "test", "path": "/metadata/annotations", "value": None},
                {"op": "add", "path": "/metadata/annotations", "value": added}]
    if whole:
        ops.insert(0, ko.version_test(pool.parsed))
    return ops


def upstream(a: Allocation) -> "ko.Allocation":
    """The allocation as upstream's ``spec.allocations`` entry holds it."""
    return ko.Allocation(a.container_id, a.pod, a.ifname)


def allocation_key(network, allocation: Allocation, pool=None) -> str:
    """The allocation's key in its pool (StoreRefused when Go whereabouts could not read it)."""
    try:
        if pool is not None:
            return pool.parsed.key_for(allocation.ip)
        return ko.offset_key(int(network.network_address), allocation.version, allocation.ip)
    except ko.ObjectError as exc:  # OffsetTooLarge included
        raise StoreRefused(f"{allocation.pool}: {exc}") from None


def reservation_name(a: Allocation) -> str:
    """The name of the allocation's OverlappingRangeIPReservation (StoreRefused when it cannot have one)."""
    try:
        return ko.reservation_name(a.ip, a.version, a.space or "")
    except ko.ObjectError as exc:
        raise StoreRefused(str(exc)) from None


def keys_of(pool, allocation: Allocation) -> list:
    """The allocation keys of ``pool`` that hold ``allocation``'s address for its container and interface."""
    return [e.key for e in pool.parsed.held[allocation.ip]
            if (e.allocation.container_id, e.allocation.ifname) == (allocation.container_id, allocation.ifname)]


def same_attachment(held: Allocation, asked: Allocation) -> bool:
    """``held`` belongs to ``asked``'s attachment; a Go-written one (no network) matches any network."""
    return (held.container_id, held.ifname) == (asked.container_id, asked.ifname) and held.network in ("",
                                                                                                        asked.network)


def reservation_of(r, held: Allocation) -> bool:
    """Whether reservation ``r`` is ``held``'s: the same container (ours record it), else the same pod and
    interface (Go's record only those; a pod keeps them across a sandbox restart)."""
    if r.ifname != held.ifname:
        return False
    return bool(r.container_id and r.container_id == held.container_id or r.podref and r.podref == held.pod)


def reservation_readings(name: str) -> list:
    """Every ``(space, version, ip)`` a reservation's name can stand for: ``<network_name>-<address>`` or
    ``<address>``, the address with ``:`` written as ``-`` (``NormalizeIP``).  A name can be read more than one
    way (``beef-fd00--1``: ``beef:fd00::1``, or ``fd00::1`` of network ``beef``); longest space last."""
    from ..net.addr import ip_address

    readings = []
    cuts = [-1] + [i for i, c in enumerate(name) if c == "-"]
    for cut in cuts:
        space, text = ("", name) if cut < 0 else (name[:cut], name[cut + 1:])
        if cut >= 0 and not space:
            continue
        try:
            ip = ip_address(text if "." in text and "-" not in text else text.replace("-", ":"))
        except ValueError:
            continue
        try:
            if ko.reservation_name(int(ip), ip.version, space) == name:
                readings.append((space, ip.version, int(ip)))
        except ko.ObjectError:
            continue
    return readings


def created_at(obj: dict) -> float:
    """``metadata.creationTimestamp`` (RFC 3339, UTC, as kube-apiserver writes it) in seconds; 0 when absent."""
    import calendar
    import time

    text = (obj.get("metadata") or {}).get("creationTimestamp")
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except (TypeError, ValueError):
        return 0.0
