"""whereabouts' objects (``whereabouts.cni.cncf.io/v1alpha1``), built and read exactly
as Go whereabouts builds and reads them, so both can share one cluster's pools.

Read from k8snetworkplumbingwg/whereabouts v0.9.4 (3a262bd0cd873e13d9b379342f8251b852a89b8f):

* pkg/api/whereabouts.cni.cncf.io/v1alpha1/{ippool,overlappingrangeipreservation,
  nodeslicepool}_types.go: the fields and their JSON names (``ifname`` and
  ``containerid`` are left out when empty);
* doc/crds/*.yaml: what must be present (IPPool ``spec.range`` and
  ``spec.allocations``, each allocation's ``id`` and ``podref``; a reservation's
  ``spec.podref``; NodeSlicePool ``spec.range``, ``spec.sliceSize``, and each
  ``status.allocations[]`` entry's ``nodeName`` and ``sliceRange``);
* pkg/config/config.go: a pool's range is Go's ``IPNet.String()`` of the configured
  CIDR (host bits dropped);
* pkg/storage/kubernetes/ipam.go: ``IPPoolName``/``normalizeRange`` (pool names),
  ``NormalizeIP`` (reservation names), ``getPool`` (a new pool: ``spec.range`` and
  empty allocations), ``toAllocationMap``/``toIPReservationList`` (allocation keys),
  ``Update`` (the JSON Patch), ``getNodeSliceName``;
* pkg/iphelpers/iphelpers.go: ``IPGetOffset``/``IPAddOffset``: a key is the decimal
  offset of the address from the IP written in ``spec.range`` (as ``net.ParseCIDR``
  returns it: the network address in every pool whereabouts creates).

What upstream's format cannot express (Go reads keys with ``strconv.ParseInt(key, 10, 64)``):

* An offset of 2**63 or more.  Go could not read such a key: it would hand the
  address out again and drop the key at its next update.  :func:`offset_key`
  refuses it with :class:`OffsetTooLarge`, so only the first 2**63 addresses of a
  range can be allocated (all of any range of /65 or longer).
* Keys written by others are read as Go reads them (a sign and leading zeros
  allowed; negatives wrap modulo 2**64).  Decimal keys of 2**63 or more (Go's own
  writer makes them, then cannot read them) hold the address they name.  Any other
  key holds an address we cannot tell (:attr:`IPPool.unknown`): never free, and
  never removed by a patch built here unless asked for by its exact key.
"""

from __future__ import annotations

from cni_ipam.net.ip import cidr

from .names import subdomain_problem

GROUP = "whereabouts.cni.cncf.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
IPPOOLS = "ippools"
RESERVATIONS = "overlappingrangeipreservations"
NODE_SLICE_POOLS = "nodeslicepools"
MAX_OFFSET = (1 << 63) - 1
_SPACE = {4: 1 << 32, 6: 1 << 128}
_DIGITS = frozenset("0123456789")


class ObjectError(ValueError):
    """An object or name that cannot be built or read; the message says which and why."""


class OffsetTooLarge(ObjectError):
    """An address too far past its pool's first IP for Go whereabouts to read its key."""


# --- names ---

def go_ip_text(value: int, version: int) -> str:
    """Go's ``net.IP.String()``: RFC 5952 for IPv6, except that IPv4-mapped
    addresses (``::ffff:a.b.c.d``) print as plain IPv4."""
    if version == 6 and value >> 32 == 0xFFFF:
        value, version = value & 0xFFFFFFFF, 4
    if version == 4:
        return f"{value >> 24}.{value >> 16 & 255}.{value >> 8 & 255}.{value & 255}"
    from cni_ipam.net.addr import Address

    return str(Address(value, 6))


def range_text(network) -> str:
    """``spec.range`` for a range's network (a :class:`cni_ipam.net.addr.Network`):
    Go's ``IPNet.String()``, as whereabouts' config leaves every range."""
    return f"{go_ip_text(int(network.network_address), network.version)}/{network.prefixlen}"


def _checked_name(name: str, what: str) -> str:
    problem = subdomain_problem(name)
    if problem:
        raise ObjectError(f"{what} name {name!r} is not a valid Kubernetes object name: {problem}"
                          " (check network_name: lower-case letters, digits, '-' and '.')")
    return name


def _normalize(text: str) -> str:
    """Upstream's ``normalizeRange``/``NormalizeIP``: a trailing ``:`` gets a ``0``,
    then ``:`` and ``/`` become ``-``."""
    if text.endswith(":"):
        text += "0"
    return text.replace(":", "-").replace("/", "-")


def pool_name(range_text: str, network_name: str = "", node_name: str = "") -> str:
    """The IPPool's name for ``range_text`` (``IPPoolName``): the normalized range,
    after ``<network_name>-`` when set, after ``<node_name>-`` for node-slice pools."""
    parts = [p for p in (network_name, node_name) if p] + [_normalize(range_text)]
    return _checked_name("-".join(parts), "IPPool")


def reservation_name(value: int, version: int, network_name: str = "") -> str:
    """The OverlappingRangeIPReservation's name for an address (``NormalizeIP``)."""
    name = _normalize(go_ip_text(value, version))
    return _checked_name(f"{network_name}-{name}" if network_name else name,
                         "OverlappingRangeIPReservation")


def node_slice_pool_name(network_name: str, conf_name: str) -> str:
    """The NodeSlicePool's name (``getNodeSliceName``): ``network_name``, else the
    network configuration's ``name``."""
    return _checked_name(network_name or conf_name, "NodeSlicePool")


# --- allocation keys ---

def offset_key(base: int, version: int, address: int) -> str:
    """The ``spec.allocations`` key for ``address`` in a pool whose ``spec.range``
    IP is ``base``.  OffsetTooLarge when Go could not read it back."""
    offset = address - base
    if offset < 0:
        raise ObjectError(f"{go_ip_text(address, version)} is below {go_ip_text(base, version)}, "
                          "the first IP of its pool")
    if offset > MAX_OFFSET:
        raise OffsetTooLarge(
            f"{go_ip_text(address, version)} is 2^63 or more addresses past "
            f"{go_ip_text(base, version)}, the first IP of its pool: Go whereabouts reads "
            "allocation offsets as 64-bit signed integers and could not see it; allocate "
            "from the first 2^63 addresses of the range (set range_end, or use a /65 or longer)")
    return str(offset)


def key_address(base: int, version: int, key: str):
    """The address a ``spec.allocations`` key holds in a pool whose ``spec.range`` IP
    is ``base``, or None when it names none we can tell (see the module's notes)."""
    digits = key[1:] if key[:1] in ("+", "-") else key
    if not digits or not _DIGITS.issuperset(digits):
        return None
    number = int(key)
    if number < -(1 << 63):
        return None
    if number > MAX_OFFSET:  # Go cannot read it: it holds the address it names, if any
        address = base + number
        return address if address < _SPACE[version] else None
    number %= 1 << 64  # Go: uint64(numOffset)
    if version == 4:
        if number >= (1 << 32) - 1:
            return None  # IPAddOffset returns nil for IPv4 offsets of MaxUint32 or more
        return base + number if base + number < _SPACE[4] else None  # else carried out of IPv4
    return (base + number) % _SPACE[6]  # byteSliceAdd drops the last carry


# --- values ---

class Allocation:
    """Who holds an address: ``id`` (container ID), ``podref`` (``namespace/name``), ``ifname``."""

    __slots__ = ("container_id", "podref", "ifname")

    def __init__(self, container_id: str, podref: str, ifname: str = "") -> None:
        self.container_id = container_id
        self.podref = podref
        self.ifname = ifname

    def to_json(self) -> dict:
        """The value under its key (``IPAllocation``; ``ifname`` omitted when empty)."""
        out = {"id": self.container_id, "podref": self.podref}
        if self.ifname:
            out["ifname"] = self.ifname
        return out

    @classmethod
    def from_json(cls, value) -> "Allocation":
        """Read as Go decodes it; a value that is not an object holds its address with no owner."""
        if not isinstance(value, dict):
            return cls("", "", "")
        return cls(*(_text(value.get(k)) for k in ("id", "podref", "ifname")))

    def _key(self) -> tuple:
        return self.container_id, self.podref, self.ifname

    def __eq__(self, other) -> bool:
        return isinstance(other, Allocation) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Allocation{self._key()!r}"


def _text(value) -> str:
    return value if isinstance(value, str) else ""


def _metadata(obj, kind: str) -> tuple:
    if not isinstance(obj, dict):
        raise ObjectError(f"a {kind} must be a JSON object, got {type(obj).__name__}")
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    return _text(meta.get("name")), _text(meta.get("namespace")), _text(meta.get("resourceVersion"))


def _spec(obj, name: str, kind: str) -> dict:
    spec = obj.get("spec")
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise ObjectError(f"{kind} {name}: spec is not an object")
    return spec


def _object(kind: str, name: str, namespace: str, **parts) -> dict:
    return {"apiVersion": API_VERSION, "kind": kind,
            "metadata": {"name": name, "namespace": namespace}, **parts}


class PoolEntry:
    """One ``spec.allocations`` entry: its key as stored, the address it holds (None
    when unknown), its allocation, and ``raw``: the value as read (what a patch's
    guard of the key tests)."""

    __slots__ = ("key", "address", "allocation", "raw")

    def __init__(self, key: str, address, allocation: Allocation, raw=None) -> None:
        self.key = key
        self.address = address
        self.allocation = allocation
        self.raw = raw

    def __repr__(self) -> str:
        return f"PoolEntry({self.key!r}, {self.address!r}, {self.allocation!r})"


class IPPool:
    """An IPPool as read: the base its keys count from, and its entries.

    ``held`` maps each address to its entries (several keys can name one address,
    e.g. ``5`` and ``05``); ``unknown`` lists the entries whose address we cannot
    tell.  ``has_allocations`` is False when ``spec.allocations`` is absent or null.
    """

    __slots__ = ("name", "namespace", "resource_version", "range", "version", "base",
                 "entries", "held", "unknown", "has_allocations")

    def __init__(self, name, namespace, resource_version, range_, version, base, entries,
                 has_allocations=True) -> None:
        self.name = name
        self.namespace = namespace
        self.resource_version = resource_version
        self.range = range_
        self.version = version
        self.base = base
        self.entries = tuple(entries)
        self.has_allocations = has_allocations
        self.held = {}
        for entry in self.entries:
            if entry.address is not None:
                self.held.setdefault(entry.address, []).append(entry)
        self.unknown = tuple(e for e in self.entries if e.address is None)

    def key_for(self, address: int) -> str:
        """The key to write for ``address`` in this pool (see :func:`offset_key`)."""
        return offset_key(self.base, self.version, address)


def pool_base(range_text: str) -> tuple:
    """``(version, base)`` of a ``spec.range``: the IP as written, as Go's
    ``net.ParseCIDR`` returns it (IPv4-mapped IPv6 counts as IPv4, as ``To4`` does)."""
    ip, _ = cidr(range_text)
    mapped = ip.ipv4_mapped
    if mapped is not None:
        return 4, int(mapped)
    return ip.version, int(ip)


def parse_ippool(obj) -> IPPool:
    """Read an IPPool object (a decoded JSON dict) as Go whereabouts reads it."""
    name, namespace, resource_version = _metadata(obj, "IPPool")
    spec = _spec(obj, name, "IPPool")
    text = spec.get("range")
    try:
        version, base = pool_base(text)
    except ValueError as exc:
        raise ObjectError(f"IPPool {namespace}/{name}: spec.range {text!r} is not a CIDR ({exc})") from None
    allocations = spec.get("allocations")
    if allocations is not None and not isinstance(allocations, dict):
        raise ObjectError(f"IPPool {namespace}/{name}: spec.allocations is not an object")
    entries = [PoolEntry(key, key_address(base, version, key), Allocation.from_json(value), value)
               for key, value in (allocations or {}).items()]
    return IPPool(name, namespace, resource_version, text, version, base, entries,
                  has_allocations=allocations is not None)


def ippool_object(name: str, namespace: str, range_text: str, allocations=None) -> dict:
    """A new IPPool (``getPool``), with ``allocations``: key -> :class:`Allocation`."""
    values = {key: a.to_json() for key, a in (allocations or {}).items()}
    return _object("IPPool", name, namespace, spec={"range": range_text, "allocations": values})


def pointer(*tokens: str) -> str:
    """The JSON Pointer (RFC 6901) to ``tokens`` (``~`` and ``/`` escaped)."""
    return "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in tokens)


def _pointer(key: str) -> str:
    """The JSON Pointer to an allocation key."""
    return pointer("spec", "allocations", key)


_PLAIN = frozenset(chr(c) for c in range(0x20, 0x7F)) - frozenset("<>&")


def plain(value) -> bool:
    """Whether a ``test`` of this value means the same on any kube-apiserver: None, or a
    string of printable ASCII without ``<``, ``>``, ``&``.  json-patch v4 compares two
    strings by their JSON bytes (evanphx/json-patch patch.go, the v4 module at the root,
    @ 05f34fdf2933e1f1a21191dbbb7919ed94ca569c, ``lazyNode.equal``:
    ``bytes.Equal(n.compact(), o.compact())``), and Go's encoder writes ``<>&`` as
    ``\\u003c``-style escapes and other characters as UTF-8, where ours may differ;
    such a test could fail on an unchanged value, forever."""
    return value is None or isinstance(value, str) and _PLAIN.issuperset(value)


def holder_test(entry) -> list:
    """The ``test`` operations that key ``entry.key`` still holds the ``id`` and
    ``ifname`` it was read with (an absent ``ifname`` tests ``null``, which passes on
    an absent member); None when that cannot be tested exactly (not read, not an
    object, or values that are not :func:`plain`)."""
    raw = getattr(entry, "raw", None)
    if not isinstance(raw, dict):
        return None
    values = [raw.get("id"), raw.get("ifname")]
    if not all(plain(v) for v in values):
        return None
    return [{"op": "test", "path": pointer("spec", "allocations", entry.key, field), "value": value}
            for field, value in zip(("id", "ifname"), values)]


def version_test(pool: IPPool) -> dict:
    """Upstream's guard of a whole write: a ``test`` of ``/metadata/resourceVersion``."""
    return {"op": "test", "path": "/metadata/resourceVersion", "value": pool.resource_version}


def pool_patch(pool: IPPool, add=None, remove=(), replace=None) -> list:
    """The JSON Patch (RFC 6902) of a change to ``pool``, each key guarded by its own
    ``test``: an added key is tested absent (``null``, as upstream's ``Update`` tests
    it), a removed or replaced key is tested to hold the ``id`` and ``ifname`` it was
    read with (:func:`holder_test`).  ``add``/``replace``: key -> :class:`Allocation`;
    ``remove``: keys; several of each in one patch are fine.

    No ``test`` of ``/metadata/resourceVersion``: kube-apiserver applies the patch to
    the object as it is when it commits, and applies it again when a concurrent write
    commits first (k8s.io/apiserver pkg/endpoints/handlers/patch.go, ``applyPatch``
    inside the storage's ``GuaranteedUpdate``), so writers of different keys do not
    fail each other; a write of one of our keys fails our test (422, nothing applied).
    Only when a removed or replaced key cannot be guarded exactly does the patch test
    ``resourceVersion`` as upstream's does.  Go's writers keep their
    ``resourceVersion`` test, which every write of ours changes."""
    add = add or {}
    replace = replace or {}
    by_key = {e.key: e for e in pool.entries}
    guards, whole = [], False
    for key in [*remove, *replace]:
        tests = holder_test(by_key.get(key))
        whole = whole or tests is None
        guards += tests or []
    ops = [version_test(pool)] if whole else []
    if add and not pool.has_allocations:
        values = {key: a.to_json() for key, a in add.items()}
        ops += [{"op": "test", "path": "/spec/allocations", "value": None},
                {"op": "add", "path": "/spec/allocations", "value": values}]
        add = {}
    ops += [{"op": "test", "path": _pointer(key), "value": None} for key in add]
    ops += guards
    ops += [{"op": "remove", "path": _pointer(key)} for key in remove]
    ops += [{"op": "replace", "path": _pointer(key), "value": a.to_json()} for key, a in replace.items()]
    ops += [{"op": "add", "path": _pointer(key), "value": a.to_json()} for key, a in add.items()]
    return ops


# --- OverlappingRangeIPReservation ---

class Reservation:
    """An OverlappingRangeIPReservation as read: who holds the address it is named after."""

    __slots__ = ("name", "namespace", "resource_version", "podref", "ifname", "container_id")

    def __init__(self, name, namespace, resource_version, podref, ifname="", container_id="") -> None:
        self.name = name
        self.namespace = namespace
        self.resource_version = resource_version
        self.podref = podref
        self.ifname = ifname
        self.container_id = container_id

    def __repr__(self) -> str:
        return (f"Reservation({self.namespace}/{self.name}, podref={self.podref!r}, "
                f"ifname={self.ifname!r}, container_id={self.container_id!r})")


def parse_reservation(obj) -> Reservation:
    name, namespace, resource_version = _metadata(obj, "OverlappingRangeIPReservation")
    spec = _spec(obj, name, "OverlappingRangeIPReservation")
    return Reservation(name, namespace, resource_version, _text(spec.get("podref")),
                       _text(spec.get("ifname")), _text(spec.get("containerid")))


def reservation_object(name: str, namespace: str, podref: str, ifname: str = "",
                       container_id: str = "") -> dict:
    """A new reservation.  Upstream's writer (``UpdateOverlappingRangeAllocation``)
    sets ``podref`` and ``ifname`` only; ``containerid`` is in its type and CRD and
    left out when empty, as Go leaves it out."""
    spec = {"podref": podref}
    if ifname:
        spec["ifname"] = ifname
    if container_id:
        spec["containerid"] = container_id
    return _object("OverlappingRangeIPReservation", name, namespace, spec=spec)


# --- NodeSlicePool ---

class NodeSlicePool:
    """A NodeSlicePool as read: the whole range, the slice size, and
    ``allocations``: (node name, slice range) pairs, "" for a free slice."""

    __slots__ = ("name", "namespace", "resource_version", "range", "slice_size", "allocations")

    def __init__(self, name, namespace, resource_version, range_, slice_size, allocations) -> None:
        self.name = name
        self.namespace = namespace
        self.resource_version = resource_version
        self.range = range_
        self.slice_size = slice_size
        self.allocations = tuple(allocations)

    def slice_for(self, node_name: str):
        """The slice range assigned to ``node_name`` (the first, as
        ``GetNodeSlicePoolRange`` takes it), or None."""
        for node, slice_range in self.allocations:
            if node == node_name:
                return slice_range
        return None


def parse_node_slice_pool(obj) -> NodeSlicePool:
    name, namespace, resource_version = _metadata(obj, "NodeSlicePool")
    spec = _spec(obj, name, "NodeSlicePool")
    status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
    entries = status.get("allocations") if isinstance(status.get("allocations"), list) else []
    allocations = [(_text(e.get("nodeName")), _text(e.get("sliceRange")))
                   for e in entries if isinstance(e, dict)]
    return NodeSlicePool(name, namespace, resource_version, _text(spec.get("range")),
                         _text(spec.get("sliceSize")), allocations)


def node_slice_pool_object(name: str, namespace: str, range_text: str, slice_size: str,
                           allocations=()) -> dict:
    """A NodeSlicePool as upstream's node controller creates it (without its owner
    references): ``allocations`` are (node name, slice range) pairs."""
    status = {"allocations": [{"nodeName": node, "sliceRange": slice_range}
                              for node, slice_range in allocations]}
    return _object("NodeSlicePool", name, namespace,
                   spec={"range": range_text, "sliceSize": slice_size}, status=status)
