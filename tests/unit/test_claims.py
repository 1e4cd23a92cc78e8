"""cni_ipam.store.claims: what the node agent's calls share about their claims, whatever the store."""

from __future__ import annotations

import pytest

from cni_ipam.store.claims import RECENT, RECENT_MAX, Claims

POOL, SPACE = ("pool", "net/10.0.0.0/24"), ("space", "net", 4)


def test_an_address_reads_as_pending_under_each_name_for_the_whole_of_its_claim():
    claims = Claims()
    with claims.claiming((POOL, SPACE), 5, exclusive=True):
        assert claims.pending(POOL) == claims.pending(SPACE) == {5}
        assert claims.pending(("pool", "other")) == set()
    assert claims.pending(POOL) == claims.pending(SPACE) == set()  # a failed claim: free again at once
    with pytest.raises(RuntimeError), claims.claiming((POOL,), 6):
        raise RuntimeError("the store failed")
    assert claims.pending(POOL) == set()


def test_an_exclusive_claim_of_an_address_another_call_is_claiming_or_just_claimed_is_refused():
    claims = Claims()
    with claims.claiming((POOL, SPACE), 5, exclusive=True):
        assert claims.claiming((SPACE,), 5, exclusive=True) is None  # the same address in the space: refused
        with claims.claiming((POOL,), 5):  # not exclusive (the Kubernetes batches decide): registered
            assert claims.pending(POOL) == {5}
        other = claims.claiming((POOL,), 6, exclusive=True)  # another address: registered, until it is done
        with other:
            assert claims.pending(POOL) == {5, 6}
        claims.claimed((POOL, SPACE), 5, now=100.0)
    assert claims.claiming((POOL,), 5, exclusive=True) is None  # just claimed: still passed by
    claims.forget((POOL, SPACE), 5)  # released: free at once
    assert claims.pending(POOL, now=100.0) == set()
    again = claims.claiming((POOL,), 5, exclusive=True)
    with again:
        assert claims.pending(POOL, now=100.0) == {5}


def test_a_claimed_address_reads_as_pending_for_recent_seconds_and_memory_stays_bounded():
    claims = Claims()
    claims.claimed((POOL,), 7, now=100.0)
    claims.claimed((POOL,), 8, now=101.0)
    assert claims.pending(POOL, now=100.0 + RECENT - 0.01) == {7, 8}
    assert claims.pending(POOL, now=100.0 + RECENT) == {8}
    assert claims.pending(POOL, now=101.0 + RECENT) == set()
    for ip in range(RECENT_MAX + 10):
        claims.claimed((POOL,), ip, now=200.0)
    assert claims.pending(POOL, now=200.0) == set(range(10, RECENT_MAX + 10))  # the newest kept
