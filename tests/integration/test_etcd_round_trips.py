"""How many etcd round trips an ADD costs: with one process per CNI call, they are most of its price."""

from __future__ import annotations

from cni_ipam.allocator import hint_key
from cni_ipam.allocator.engine import Owner, assign, release_attachment
from cni_ipam.config.whereabouts import RangeSpec
from cni_ipam.net.addr import ip_address
from cni_ipam.net.ranges import parse_range
from cni_ipam.store.base import MAX_HINTS_PER_POOL
from cni_ipam.store.etcd import EtcdStore
from cni_ipam.store.etcd_client import EtcdClient


class CountingClient(EtcdClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def call(self, path, request):
        self.calls.append(path)
        return super().call(path, request)


def test_an_uncontended_add_costs_one_read_then_per_range_one_claim(etcd_cluster, etcd_prefix):
    client = CountingClient(etcd_cluster.endpoints)
    store = EtcdStore(client, etcd_prefix)
    specs = [RangeSpec("ipam.ipRanges[0]", parse_range("ipam.ipRanges[0]", "10.20.0.0/24"), "rt"),
             RangeSpec("ipam.ipRanges[1]", parse_range("ipam.ipRanges[1]", "fd20::/64"), "rt")]
    for n in range(3):
        client.calls.clear()
        held = assign(store, specs, Owner("net", f"c{n}", "eth0", pod=f"ns/p{n}"))
        assert [a.address for a in held] == [f"10.20.0.{n + 1}", f"fd20::{n + 1}"]
        assert len(client.calls) == 1 + 2, client.calls  # prefetch; per range: the claim (+hint)
    client.calls.clear()
    again = assign(store, specs, Owner("net", "c1", "eth0", pod="ns/p1"))  # a repeated ADD
    assert [a.address for a in again] == ["10.20.0.2", "fd20::2"]
    assert len(client.calls) == 1, client.calls  # the prefetch already holds the answer
    store.close()


def test_an_add_that_takes_its_pool_past_the_hint_bound_prunes_it_for_one_more_read_and_one_delete(
        etcd_cluster, etcd_prefix):
    """The prefetch counts the pool's hints, so pruning (issue 14) costs round trips only past the bound."""
    client = CountingClient(etcd_cluster.endpoints)
    store = EtcdStore(client, etcd_prefix)
    spec = RangeSpec("ipam.range", parse_range("ipam.range", "10.20.0.0/24"), "rt")
    for n in range(MAX_HINTS_PER_POOL):  # other exclude lists of the same pool, each with its hint
        key = f"rt|space|10.20.0.0/24|exclude-{n:02d}"
        store.hint(key, spec.pool, spec.space)
        store.set_hint(key, spec.pool, spec.space, spec.range.start)
    assert len([h for h in store.list_hints() if h[1] == spec.pool]) == MAX_HINTS_PER_POOL
    client.calls.clear()
    assert [a.address for a in assign(store, [spec], Owner("net", "c0", "eth0", pod="ns/p0"))] == ["10.20.0.1"]
    assert len(client.calls) == 1 + 1 + 2, client.calls  # prefetch, claim; then the pool's keys, delete
    assert [h[0] for h in store.list_hints() if h[1] == spec.pool] == [hint_key("rt", True, spec.range)]
    store.close()


def test_an_add_whose_hint_is_stale_reads_what_is_held_in_the_failed_claim_and_still_takes_the_lowest_free(
        etcd_cluster, etcd_prefix):
    """Addresses taken behind the hint's back (Go whereabouts, or another node between our read and claim):
    the claim of the hint's address fails, its transaction reads the held addresses instead, and the next
    claim takes the lowest free one: one round trip more than an uncontended ADD, none for the read."""
    client = CountingClient(etcd_cluster.endpoints)
    store = EtcdStore(client, etcd_prefix)
    spec = RangeSpec("ipam.range", parse_range("ipam.range", "10.21.0.0/24"), "stale")
    assert assign(store, [spec], Owner("net", "c0", "eth0"))[0].address == "10.21.0.1"  # the hint is now .2
    other = EtcdStore(EtcdClient(etcd_cluster.endpoints), etcd_prefix)  # takes .2 and .3 without moving it
    for address in ("10.21.0.2", "10.21.0.3"):
        taken = assign(other, [spec], Owner("net", address, "eth0"), {0: int(ip_address(address))})
        assert taken[0].address == address
    client.calls.clear()
    assert assign(store, [spec], Owner("net", "c1", "eth0"))[0].address == "10.21.0.4"
    assert len(client.calls) == 1 + 2, client.calls  # prefetch; the claim of .2 (fails, reads), the claim of .4
    client.calls.clear()
    assert assign(store, [spec], Owner("net", "c2", "eth0"))[0].address == "10.21.0.5"  # the hint moved past .4
    assert len(client.calls) == 1 + 1, client.calls
    store.close()
    other.close()


def test_a_del_costs_one_find_one_read_one_delete_and_one_hint_update(etcd_cluster, etcd_prefix):
    """The record, its pool's hints and its space's hint pointers are read together; a pointer to a hint of its
    own pool needs no read of its own.  Lowering the hint to the freed address is the fourth round trip."""
    client = CountingClient(etcd_cluster.endpoints)
    store = EtcdStore(client, etcd_prefix)
    spec = RangeSpec("ipam.range", parse_range("ipam.range", "10.22.0.0/24"), "del")
    for n in range(3):
        assign(store, [spec], Owner("net", f"c{n}", "eth0"))
    client.calls.clear()
    assert [a.address for a in release_attachment(store, "net", "c1", "eth0")] == ["10.22.0.2"]
    assert len(client.calls) == 1 + 1 + 1 + 1, client.calls  # find; record and hints; delete; hint lowered
    assert assign(store, [spec], Owner("net", "c3", "eth0"))[0].address == "10.22.0.2"  # the hint was lowered
    client.calls.clear()
    assert [a.address for a in release_attachment(store, "net", "c2", "eth0")] == ["10.22.0.3"]
    assert len(client.calls) == 1 + 1 + 1, client.calls  # c3's claim of .2 moved the hint to .3: nothing to lower
    assert release_attachment(store, "net", "gone", "eth0") == []
    store.close()


def test_in_the_agent_an_add_passes_by_what_its_other_calls_claim_and_still_costs_two_round_trips(
        etcd_cluster, etcd_prefix):
    """Stores sharing the agent's Claims: while one call claims the hint's address, another claims the next
    one without reading (the uncontended price), and an address just claimed reads as held; one released is
    the first candidate again."""
    from cni_ipam.store.claims import Claims

    claims = Claims()
    client = CountingClient(etcd_cluster.endpoints)
    store = EtcdStore(client, etcd_prefix, claims)
    other = EtcdStore(EtcdClient(etcd_cluster.endpoints), etcd_prefix, claims)
    spec = RangeSpec("ipam.range", parse_range("ipam.range", "10.23.0.0/24"), "agent")
    assert assign(store, [spec], Owner("net", "c0", "eth0"))[0].address == "10.23.0.1"
    in_flight = claims.claiming(other._names(spec.pool, spec.space, 4), int(ip_address("10.23.0.2")),
                                exclusive=True)  # another call of the agent is claiming .2 (its hint's address)
    with in_flight:
        client.calls.clear()
        assert assign(store, [spec], Owner("net", "c1", "eth0"))[0].address == "10.23.0.3"
        assert len(client.calls) == 1 + 1, client.calls  # prefetch; the claim of .3, not first of .2
        assert list(store.held(spec.pool, spec.space, spec.range.start, spec.range.end)) == [
            int(ip_address(f"10.23.0.{n}")) for n in (1, 2, 3)]
    assert store.kept() is claims.kept and EtcdStore(client, etcd_prefix).kept() is None
    assert [a.address for a in release_attachment(store, "net", "c1", "eth0")] == ["10.23.0.3"]
    assert claims.pending(("pool", spec.pool)) == {int(ip_address("10.23.0.1"))}  # .3 released: free at once
    store.close()
    other.close()
