"""store.base.merge_unique: the pool's and the space's held addresses as one ascending stream, each once."""

from __future__ import annotations

import random

from cni_ipam.store.base import merge_unique


def test_merges_ascending_sources_each_address_once():
    assert list(merge_unique([])) == []
    assert list(merge_unique([[], []])) == []
    assert list(merge_unique([[1, 2, 5], [2, 3, 5, 9], []])) == [1, 2, 3, 5, 9]
    rng = random.Random(17)
    for _ in range(200):
        sources = [sorted(rng.sample(range(60), rng.randrange(0, 20))) for _ in range(rng.randrange(1, 4))]
        assert list(merge_unique(sources)) == sorted(set().union(*sources))


def test_reads_its_sources_lazily():
    read = []

    def source(values):
        for v in values:
            read.append(v)
            yield v
    merged = merge_unique([source([1, 4, 100]), source([2, 3, 200])])
    assert [next(merged), next(merged)] == [1, 2]
    assert 100 not in read and 200 not in read
