"""How many etcd round trips an ADD costs: with one process per CNI call, they are most of its price."""

from __future__ import annotations

from cni_ipam.allocator.engine import Owner, assign
from cni_ipam.config.whereabouts import RangeSpec
from cni_ipam.net.ranges import parse_range
from cni_ipam.store.etcd import EtcdStore
from cni_ipam.store.etcd_client import EtcdClient


class CountingClient(EtcdClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def call(self, path, request):
        self.calls.append(path)
        return super().call(path, request)


def test_an_uncontended_add_costs_one_read_then_per_range_one_read_and_one_claim(etcd_cluster, etcd_prefix):
    client = CountingClient(etcd_cluster.endpoints)
    store = EtcdStore(client, etcd_prefix)
    specs = [RangeSpec("ipam.ipRanges[0]", parse_range("ipam.ipRanges[0]", "10.20.0.0/24"), "rt"),
             RangeSpec("ipam.ipRanges[1]", parse_range("ipam.ipRanges[1]", "fd20::/64"), "rt")]
    for n in range(3):
        client.calls.clear()
        held = assign(store, specs, Owner("net", f"c{n}", "eth0", pod=f"ns/p{n}"))
        assert [a.address for a in held] == [f"10.20.0.{n + 1}", f"fd20::{n + 1}"]
        assert len(client.calls) == 1 + 2 * 2, client.calls  # prefetch; per range: held page, claim (+hint)
    client.calls.clear()
    again = assign(store, specs, Owner("net", "c1", "eth0", pod="ns/p1"))  # a repeated ADD
    assert [a.address for a in again] == ["10.20.0.2", "fd20::2"]
    assert len(client.calls) == 1, client.calls  # the prefetch already holds the answer
    store.close()
