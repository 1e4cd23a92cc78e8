"""Node slices: a range cut into slices of ``node_slice_size``, and which node gets which.

Pure (no I/O): values in, decisions out.  The controller (``cni-ipam
node-slices``) feeds it what it lists and writes what it returns.

Read from k8snetworkplumbingwg/whereabouts v0.9.4 (3a262bd0cd873e13d9b379342f8251b852a89b8f):

* pkg/iphelpers/iphelpers.go ``DivideRangeBySize``: slices are the subnets of
  ``slice_size`` in the range, in address order, written ``<network>/<size>``
  (IPv4 only upstream; here IPv4 and IPv6, computed on demand, never listed
  whole).
* pkg/node-controller/controller.go: ``status.allocations`` lists every slice,
  ``nodeName`` "" for a free one; ``assignNodeToSlice`` gives a node the first
  free slice; ``removeUnusedNodes`` frees a departed node's slice at once.
* pkg/storage/kubernetes/ipam.go ``IPManagementKubernetesUpdate``: a node
  allocates from ``FirstUsableIP``..``LastUsableIP`` of its slice (the
  network and last address are never handed out) and, with
  ``GetNodeSlicePoolRange``, takes the first entry naming it.

What differs, and why:

* ``exclude``, ``range_start`` and ``range_end`` count: a slice with no usable
  address left is never assigned (upstream ignores ``exclude``, its issue 666);
  the plugin still applies ``exclude`` inside a slice.
* A departed node's slice is freed only when no IPPool of that node for that
  slice holds an allocation, and no slice overlapping a non-empty IPPool of
  another node (or of an older range or size) is ever handed out.
* A node whose slices are all full (its pools hold as many allocations as
  the slices have usable addresses) gets one more, up to ``max_slices``; a
  slice is never taken back from a live node (its plugin may be allocating
  from it right now).
* Ranges with more than :data:`LIST_ALL_LIMIT` slices list only assigned
  slices (upstream's issue 497: a /8 in /27 slices is 524288 entries, over
  etcd's 1.5 MiB object limit).  Up to that, every slice is listed as
  upstream lists them, so upstream's controller can take over.
"""

from __future__ import annotations

from bisect import bisect_left

from cni_ipam.net.ip import cidr

from .objects import go_ip_text

# At most this many slices are all listed (about 70 bytes each in JSON: ~290 KiB, well under etcd's 1.5 MiB).
LIST_ALL_LIMIT = 4096


class SliceError(ValueError):
    """A slice size that cannot cut its range; the message says why."""


def parse_slice_size(text, version: int, range_prefix: int) -> int:
    """The prefix length of ``node_slice_size`` (``"/27"`` or ``"27"``, as upstream
    trims a leading ``/``), checked against the range it cuts."""
    if not isinstance(text, str) or not text.lstrip("/").isdigit():
        raise SliceError(f"node_slice_size {text!r} is not a prefix length such as \"/27\"")
    size = int(text.lstrip("/"))
    most = 32 if version == 4 else 128
    if not range_prefix <= size <= most:
        raise SliceError(f"node_slice_size {text!r} must be between /{range_prefix} (the range's own prefix) "
                         f"and /{most}")
    return size


class SliceLayout:
    """A range (a :class:`cni_ipam.net.ranges.AddressRange`: bounds and
    exclusions) cut into slices of ``/prefixlen``; slice ``i`` starts at
    ``network + i * slice width``."""

    __slots__ = ("whole", "prefixlen", "size_text", "range_text", "count", "_width", "_base", "_ends")

    def __init__(self, whole, size_text: str) -> None:
        self.whole = whole
        self.size_text = size_text
        self.prefixlen = parse_slice_size(size_text, whole.version, whole.prefixlen)
        self._base = int(whole.network.network_address)
        self.range_text = f"{go_ip_text(self._base, whole.version)}/{whole.prefixlen}"
        self.count = 1 << (self.prefixlen - whole.prefixlen)
        self._width = 1 << ((32 if whole.version == 4 else 128) - self.prefixlen)
        self._ends = [hi for _, hi in whole.excluded]

    def bounds(self, index: int) -> tuple:
        """First and last address of slice ``index``."""
        lo = self._base + index * self._width
        return lo, lo + self._width - 1

    def text(self, index: int) -> str:
        """The slice as upstream writes it in ``sliceRange``."""
        return f"{go_ip_text(self.bounds(index)[0], self.whole.version)}/{self.prefixlen}"

    def index_of_address(self, address: int) -> int:
        return (address - self._base) // self._width

    def index_of(self, text: str):
        """The index of the slice written ``text``, or None when it is not one of this layout's."""
        try:
            ip, prefixlen = cidr(text)
        except ValueError:
            return None
        lo, hi = self.bounds(0)[0], self.bounds(self.count - 1)[1]
        if ip.version != self.whole.version or prefixlen != self.prefixlen or not lo <= int(ip) <= hi:
            return None
        index = self.index_of_address(int(ip))
        return index if self.bounds(index)[0] == int(ip) else None

    def usable(self, index: int) -> int:
        """How many addresses of slice ``index`` a node may hand out: the slice
        without its first and last address (as upstream's plugin), within the
        range's bounds, less what ``exclude`` removes."""
        lo, hi = self.bounds(index)
        a, b = max(lo + 1, self.whole.start), min(hi - 1, self.whole.end)
        if a > b:
            return 0
        count = b - a + 1
        i = bisect_left(self._ends, a)  # the first exclusion ending at or after a
        for x_lo, x_hi in self.whole.excluded[i:]:
            if x_lo > b:
                break
            count -= min(x_hi, b) - max(x_lo, a) + 1
        return count

    def next_usable(self, index: int):
        """The lowest index >= ``index`` of a slice with a usable address, or
        None; jumps over excluded runs instead of walking them."""
        if self._width <= 2:
            return None  # /31, /32, /127, /128: no address but the first and last
        while index < self.count:
            lo, hi = self.bounds(index)
            found = self.whole.next_allocatable(lo + 1)
            if found is None:
                return None
            if found <= hi - 1:
                return index
            index = max(index + 1, self.index_of_address(found))
        return None


class NodePool:
    """A node's IPPool as the controller lists it: its node, its ``spec.range``
    and how many allocations it holds."""

    __slots__ = ("node", "range", "held")

    def __init__(self, node: str, range_: str, held: int) -> None:
        self.node = node
        self.range = range_
        self.held = held

    def __repr__(self) -> str:
        return f"NodePool({self.node!r}, {self.range!r}, {self.held})"


class Plan:
    """What the controller writes: ``allocations`` for ``status.allocations``
    ((node, slice) pairs, node "" for a listed free slice), whether they
    differ from what was read, the node pools to create, and ``decisions``:
    (what, node, slice, why) for the log."""

    __slots__ = ("allocations", "changed", "create_pools", "decisions")

    def __init__(self, allocations, changed, create_pools, decisions) -> None:
        self.allocations = tuple(allocations)
        self.changed = changed
        self.create_pools = tuple(create_pools)
        self.decisions = tuple(decisions)


def _block_of(text: str):
    try:
        ip, prefixlen = cidr(text)
    except ValueError:
        return None
    host = (1 << (ip.max_prefixlen - prefixlen)) - 1
    lo = int(ip) & ~host
    return ip.version, lo, lo | host


class _Occupied:
    """Non-empty node pools by address block: a slice overlapping one is free
    only for the pool's own (node, slice)."""

    def __init__(self, layout: SliceLayout, pools) -> None:
        self.layout = layout
        self.blocks = []
        for pool in pools:
            block = _block_of(pool.range) if pool.held else None
            if block and block[0] == layout.whole.version:
                self.blocks.append((block[1], block[2], pool.node, pool.range))

    def free_for(self, node: str, index: int) -> bool:
        lo, hi = self.layout.bounds(index)
        text = self.layout.text(index)
        return all((owner, rng) == (node, text) for b_lo, b_hi, owner, rng in self.blocks if b_lo <= hi and lo <= b_hi)


def plan(layout: SliceLayout, listed, nodes, pools, max_slices: int = 2) -> Plan:
    """Decide ``status.allocations`` from what is listed (``(node, slice)``
    pairs as read), the live ``nodes``, and the node pools (:class:`NodePool`).

    Deterministic: nodes are served in name order, each the lowest free usable slice.
    """
    live = set(nodes)
    held = {(p.node, p.range): p.held for p in pools}
    occupied = _Occupied(layout, pools)
    decisions = []
    owner = {}  # slice index -> node

    for node, text in listed:
        if not node:
            continue
        index = layout.index_of(text)
        if index is None:
            decisions.append(("dropped", node, text, f"not a {layout.size_text} slice of {layout.range_text}"))
        elif index in owner:
            decisions.append(("dropped", node, text, f"listed for {owner[index]} before"))
        elif node in live:
            owner[index] = node
        elif held.get((node, text)):
            owner[index] = node
            decisions.append(("kept", node, text, f"the node is gone but its IPPool holds {held[node, text]} "
                                                  "allocation(s)"))
        else:
            decisions.append(("freed", node, text, "the node is gone and its IPPool holds no allocation"))

    def take(node: str, why: str) -> bool:
        index = layout.next_usable(0)
        while index is not None:
            if index not in owner and occupied.free_for(node, index):
                owner[index] = node
                decisions.append(("assigned", node, layout.text(index), why))
                return True
            index = layout.next_usable(index + 1)
        decisions.append(("no-free-slice", node, "", f"every usable {layout.size_text} slice of "
                                                     f"{layout.range_text} is taken"))
        return False

    by_node = {}
    for index in sorted(owner):
        by_node.setdefault(owner[index], []).append(index)
    for node in sorted(live):
        mine = by_node.get(node, [])
        if not mine:
            take(node, "the node has no slice")
        elif len(mine) < max_slices and all(held.get((node, layout.text(i)), 0) >= layout.usable(i) for i in mine):
            take(node, f"its {len(mine)} slice(s) are full")

    allocations = _listing(layout, owner)
    creates = [(node, layout.text(i)) for i, node in sorted(owner.items())
               if node in live and (node, layout.text(i)) not in held]
    changed = [tuple(pair) for pair in listed] != allocations
    return Plan(allocations, changed, creates, decisions)


def _listing(layout: SliceLayout, owner: dict) -> list:
    """Every slice in order when there are at most LIST_ALL_LIMIT (upstream's shape), else only the assigned ones."""
    if layout.count <= LIST_ALL_LIMIT:
        return [(owner.get(i, ""), layout.text(i)) for i in range(layout.count)]
    return [(owner[i], layout.text(i)) for i in sorted(owner)]

