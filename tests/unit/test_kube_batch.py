"""store/kube_batch.py: which queued claims go in a pool's patch (pure), and the agent's per-pool queues."""

from __future__ import annotations

import threading
import time

import pytest

from cni_ipam.store.base import Allocation, StoreError
from cni_ipam.store.kube_batch import COMMITTED, LOST, PoolBatches, Want, plan

POOL = "net-10.0.0.0/24"


def want(ip: int, cid: str, network: str = "net", ifname: str = "eth0") -> Want:
    return Want(Allocation(POOL, ip, 4, network, cid, ifname), str(ip))


def held_by(**holders):
    """``holding(ip)`` of a pool whose addresses ``holders`` maps (``ip5=("c9", "net")``) to their holder."""
    table = {int(k[2:]): [Allocation(POOL, int(k[2:]), 4, net, cid, "eth0")] for k, (cid, net) in holders.items()}
    return lambda ip: table.get(ip, [])


def ids(wants) -> list:
    return [w.allocation.container_id for w in wants]


# --- plan: what goes in the patch ---

def test_free_addresses_are_all_written_in_one_patch():
    out = plan(held_by(), [want(1, "a"), want(2, "b"), want(3, "c")], fresh=False)
    assert ids(out.write) == ["a", "b", "c"] and not (out.lost or out.done or out.recheck)


def test_two_claims_of_one_address_in_a_batch_the_first_is_written_the_second_lost():
    out = plan(held_by(), [want(5, "a"), want(6, "b"), want(5, "c")], fresh=True)
    assert ids(out.write) == ["a", "b"] and ids(out.lost) == ["c"]


def test_on_a_fresh_pool_an_address_held_by_another_is_lost_and_our_own_is_done():
    holding = held_by(ip5=("other", "net"), ip6=("b", "net"), ip7=("c", ""))  # ip7: written by Go (no network)
    out = plan(holding, [want(5, "a"), want(6, "b"), want(7, "c"), want(8, "d")], fresh=True)
    assert ids(out.lost) == ["a"] and ids(out.done) == ["b", "c"] and ids(out.write) == ["d"]


def test_the_same_container_and_interface_on_another_network_is_not_our_own():
    out = plan(held_by(ip6=("b", "other-net")), [want(6, "b")], fresh=True)
    assert ids(out.lost) == ["b"] and not out.done


def test_on_a_cached_pool_a_held_address_is_read_again_before_anything_is_decided():
    """A cached pool may show an address released since: "done" there would hand out an address nothing holds."""
    out = plan(held_by(ip5=("a", "net"), ip6=("x", "net")), [want(5, "a"), want(6, "b"), want(7, "c")], fresh=False)
    assert ids(out.recheck) == ["a", "b"] and not (out.lost or out.done)


# --- PoolBatches: one leader per pool, the others queue for the next batch ---

def run(batches: PoolBatches, name: str, w: Want, commit) -> threading.Thread:
    thread = threading.Thread(target=batches.submit, args=(name, w, commit), daemon=True)
    thread.start()
    return thread


def wait_for(condition) -> None:
    for _ in range(1000):
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError("condition never held")


def test_claims_queued_while_a_batch_is_written_go_out_together_in_the_next_one():
    batches, written, release = PoolBatches(), [], threading.Event()

    def commit(name, wants):
        written.append(sorted(ids(wants)))
        if len(written) == 1:
            release.wait(10)  # the first batch's write is slow: the others queue behind it
        for w in wants:
            w.outcome = COMMITTED

    first = want(1, "a")
    threads = [run(batches, POOL, first, commit)]
    wait_for(lambda: written)
    later = [want(ip, cid) for ip, cid in ((2, "b"), (3, "c"), (4, "d"))]
    threads += [run(batches, POOL, w, commit) for w in later]
    wait_for(lambda: sum(len(q) for q in batches._queues.values()) == 3)  # queued behind the write
    release.set()
    for thread in threads:
        thread.join(10)
    assert written == [["a"], ["b", "c", "d"]]
    assert all(w.outcome == COMMITTED for w in [first] + later)


def test_other_pools_are_not_held_up_by_a_pool_being_written():
    batches, release = PoolBatches(), threading.Event()

    def slow(name, wants):
        release.wait(10)
        for w in wants:
            w.outcome = COMMITTED

    def quick(name, wants):
        for w in wants:
            w.outcome = LOST

    stuck = run(batches, "a", want(1, "a"), slow)
    wait_for(lambda: "a" in batches._writing)
    other = batches.submit("b", want(1, "b"), quick)
    assert other.outcome == LOST and stuck.is_alive()
    release.set()
    stuck.join(10)


def test_an_error_while_writing_reaches_the_undecided_claims_of_that_batch_only():
    batches = PoolBatches()

    def commit(name, wants):
        wants[0].outcome = LOST  # decided before the failure: keeps its outcome
        raise StoreError("Kubernetes API: boom", retry=True)

    w1, w2 = want(1, "a"), want(2, "b")
    batches._queues[POOL] = [w1]  # queued by another call, as if it came first
    done = batches.submit(POOL, w2, commit)
    assert done is w2 and w1.outcome == LOST and w1.error is None
    assert isinstance(w2.error, StoreError) and "boom" in str(w2.error) and w2.error.retry
    later = batches.submit(POOL, want(3, "c"), lambda name, wants: setattr(wants[0], "outcome", COMMITTED))
    assert later.outcome == COMMITTED  # the pool is not left marked as being written


def test_a_claim_the_writer_left_undecided_is_an_error_never_a_wait():
    batches = PoolBatches()
    w = batches.submit(POOL, want(1, "a"), lambda name, wants: None)
    assert isinstance(w.error, StoreError) and w.error.retry and "not decided" in str(w.error)


def test_the_cache_holds_the_pool_as_last_seen_and_forgets_a_gone_one():
    batches = PoolBatches()
    batches.seen(POOL, {"metadata": {"resourceVersion": "7"}})
    assert batches.cached(POOL) == {"metadata": {"resourceVersion": "7"}}
    batches.seen(POOL, None)
    assert batches.cached(POOL) is None


@pytest.mark.parametrize("outcome", [COMMITTED, LOST])
def test_submit_returns_the_callers_own_claim_decided(outcome):
    batches = PoolBatches()

    def commit(name, wants):
        for w in wants:
            w.outcome = outcome

    w = want(1, "a")
    assert batches.submit(POOL, w, commit) is w and w.outcome == outcome and w.error is None


def test_an_address_reads_as_pending_for_the_whole_of_its_claim_and_once_per_claim():
    batches = PoolBatches()
    with batches.claiming((POOL,), 5):
        with batches.claiming((POOL,), 5):  # a second call claiming it too (one of them will lose)
            assert batches.pending(POOL) == {5} and batches.pending("other") == set()
        assert batches.pending(POOL) == {5}
    assert batches.pending(POOL) == set()
    with pytest.raises(RuntimeError), batches.claiming((POOL,), 6):
        raise RuntimeError("a failed claim")
    assert batches.pending(POOL) == set()
