"""``cni-ipam`` administration: see what the stores hold and repair them (pools, allocations, release,
verify, export, import).  :mod:`.commands` is the command-line face; :mod:`.state` and :mod:`.verify`
work on a store and return plain values, so tests drive them without a terminal."""
