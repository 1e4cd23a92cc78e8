"""What a plugin ADD asks of the SQLite store, kept cheap (issue 17).

An ADD claims the hint's address without reading its range first
(``claim_else_held``), and its lookup of the pod's earlier address searches
the pod index: its work does not grow with the allocations of the network.
"""

from __future__ import annotations

from cni_ipam.store.base import Allocation
from cni_ipam.store.sqlite import SQLiteStore

POOL, SPACE = "net1/10.0.0.0/16", "net1"


def _allocation(ip_low: int, container: str, pod: str = "") -> Allocation:
    return Allocation(POOL, 0x0A000000 + ip_low, 4, "net1", container, "eth0", space=SPACE, pod=pod)


def test_claim_else_held_claims_a_free_address_and_moves_the_hint(tmp_path):
    store = SQLiteStore(str(tmp_path / "wa.db"))
    try:
        with store.transaction():
            assert store.claim_else_held(_allocation(1, "c1"), ("k", 0x0A000002), 0x0A000001, 0x0A0000FE) \
                == (True, None)
        assert [a.container_id for a in store.find(network="net1")] == ["c1"]
        assert store.hint("k", POOL, SPACE) == 0x0A000002
    finally:
        store.close()


def test_claim_else_held_reads_the_range_when_the_address_is_held_and_the_transaction_goes_on(tmp_path):
    store = SQLiteStore(str(tmp_path / "wa.db"))
    try:
        with store.transaction():
            assert store.claim(_allocation(1, "c1"))
            assert store.claim(_allocation(3, "c3"))
        with store.transaction():
            claimed, held = store.claim_else_held(_allocation(1, "c2"), ("k", 0x0A000002), 0x0A000001, 0x0A0000FE)
            assert not claimed
            assert list(held) == [0x0A000001, 0x0A000003]  # as the failed INSERT found them
            assert store.claim(_allocation(2, "c2"))  # the failed INSERT ended its statement only
        assert [(a.ip & 0xFF, a.container_id) for a in store.find(network="net1")] == [(1, "c1"), (2, "c2"), (3, "c3")]
        assert store.hint("k", POOL, SPACE) is None  # a lost claim does not move the hint
    finally:
        store.close()


def _steps_of_find_by_pod(store) -> int:
    """SQLite virtual machine steps (in thousands, rounded up) that looking up a pod's interface takes."""
    steps = [0]

    def count():
        steps[0] += 1
        return 0

    store.db.set_progress_handler(count, 1000)
    try:
        assert store.find(network="net1", pod="default/wanted", ifname="eth0") == []
    finally:
        store.db.set_progress_handler(None, 0)
    return steps[0]


def test_finding_a_pods_address_does_not_read_the_whole_network(tmp_path):
    store = SQLiteStore(str(tmp_path / "wa.db"))
    try:
        with store.transaction():
            for i in range(1, 11):
                assert store.claim(_allocation(i, f"c{i}", pod=f"default/pod{i}"))
        few = _steps_of_find_by_pod(store)
        with store.transaction():
            for i in range(11, 3011):
                assert store.claim(_allocation(i, f"c{i}", pod=f"default/pod{i}"))
        many = _steps_of_find_by_pod(store)
        # Through the pod index both take a few steps; reading each of the network's rows took ~300x more.
        assert many <= few + 1, (few, many)
    finally:
        store.close()
