"""An in-memory store, for tests only: the allocator's unit tests run on it (host-local's fake store,
containernetworking/plugins plugins/ipam/host-local/backend/testing/fake_store.go).

It follows the same contract as the real backends and passes the same
contract suite, so a test that passes here tests the allocator, not a quirk.
Tests import it as ``memory_store`` (tests/conftest.py puts tests/ on the path).
"""

from __future__ import annotations

import contextlib

from cni_ipam.net import pool_version
from cni_ipam.store.base import MAX_HINTS_PER_POOL, Allocation, Store


class MemoryStore(Store):
    def __init__(self) -> None:
        self.rows = {}  # (pool, ip) -> Allocation
        self.spaces = {}  # (space, version, ip) -> Allocation
        self.hints = {}  # key -> (pool, space, value)

    def transaction(self):
        return contextlib.nullcontext(self)

    def held(self, pool, space, lo, hi):
        found = {ip for (p, ip) in self.rows if p == pool and lo <= ip <= hi}
        if space is not None:  # the family from the name: an empty pool has no rows to tell it
            version = pool_version(pool)
            found |= {ip for (s, v, ip) in self.spaces if s == space and v == version and lo <= ip <= hi}
        return iter(sorted(found))

    def claim(self, allocation: Allocation, hint=None) -> bool:
        space_key = (allocation.space, allocation.version, allocation.ip)
        if (allocation.pool, allocation.ip) in self.rows:
            return False
        if allocation.space is not None and space_key in self.spaces:
            return False
        self.rows[(allocation.pool, allocation.ip)] = allocation
        if allocation.space is not None:
            self.spaces[space_key] = allocation
        if hint is not None:
            self.set_hint(hint[0], allocation.pool, allocation.space, hint[1])
        return True

    def release(self, allocation: Allocation) -> bool:
        held = self.rows.get((allocation.pool, allocation.ip))
        if held is None or held.attachment != allocation.attachment:
            return False
        del self.rows[(allocation.pool, allocation.ip)]
        if held.space is not None:
            self.spaces.pop((held.space, held.version, held.ip), None)
        for key, (pool, space, value) in list(self.hints.items()):  # a space mixes families: match it
            if value > held.ip and pool_version(pool) == held.version and (
                    pool == held.pool or (space is not None and space == held.space)):
                self.hints[key] = (pool, space, held.ip)
        return True

    def update_owner(self, allocation, container_id, netns):
        held = self.rows.get((allocation.pool, allocation.ip))
        if held is None or held.attachment != allocation.attachment:  # released meanwhile, as in the other stores
            return False
        held.container_id = allocation.container_id = container_id  # the caller's copy too, like SQLite
        held.netns = allocation.netns = netns
        return True

    def find(self, network=None, container_id=None, ifname=None, pod=None):
        return [a for a in self.allocations()
                if (network is None or a.network == network) and (container_id is None or a.container_id == container_id)
                and (ifname is None or a.ifname == ifname) and (pod is None or a.pod == pod)]

    def allocations(self):
        return [self.rows[k] for k in sorted(self.rows)]

    def hint(self, key, pool, space):
        entry = self.hints.get(key)
        return entry[2] if entry else None

    def set_hint(self, key, pool, space, value):
        new = key not in self.hints
        self.hints[key] = (pool, space, value)
        if new and sum(p == pool for p, _, _ in self.hints.values()) > MAX_HINTS_PER_POOL:
            self.hints = {k: h for k, h in self.hints.items() if h[0] != pool or k == key}

    def list_hints(self):
        return [(key, *self.hints[key]) for key in sorted(self.hints)]

    def check(self, progress=None):
        """What its own verbs let in: an address outside its pool's CIDR (claim does not look)."""
        from cni_ipam.store.check import duplicates, outside_its_pool, tick

        def release(a):
            return lambda: f"released {a.address} from {a.pool}" if self.release(a) else f"{a.address} was gone"

        rows = self.allocations()
        problems = []
        for done, a in enumerate(rows, 1):
            tick(progress, done, len(rows))
            problems.append(outside_its_pool(a, release(a)))
        return [p for p in problems if p is not None] + duplicates(rows)
