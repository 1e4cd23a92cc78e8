"""The Store backends that the contract suite runs against.

Adding a backend is one entry in ``BACKENDS``: a name, a factory that takes
pytest's ``tmp_path`` and the test's ``request`` (for fixtures such as
``etcd_cluster``) and returns an open store (it may ``pytest.skip`` when
its server is not available here), and, if the backend's ``transaction()``
does not roll back, the reason why.
"""

from __future__ import annotations

import pytest


class Backend:
    """How to make one store, and what its ``transaction()`` promises."""

    def __init__(self, factory, no_rollback: str = "") -> None:
        self.factory = factory
        self.no_rollback = no_rollback  # "" when a failed transaction() undoes its writes, else why not


def memory_store(tmp_path, request):
    from memory_store import MemoryStore

    return MemoryStore()


def sqlite_store(tmp_path, request):
    from cni_ipam.store.sqlite import SQLiteStore

    return SQLiteStore(str(tmp_path / "ipam.db"))


def etcd_store(tmp_path, request):
    from cni_ipam.store.etcd import EtcdStore
    from cni_ipam.store.etcd_client import EtcdClient

    cluster = request.getfixturevalue("etcd_cluster")
    return EtcdStore(EtcdClient(cluster.endpoints), request.getfixturevalue("etcd_prefix"))


BACKENDS = {
    "memory": Backend(memory_store, no_rollback="MemoryStore.transaction() is a null context: "
                                                "the in-memory test double keeps no undo log"),
    "sqlite": Backend(sqlite_store),
    "etcd": Backend(etcd_store, no_rollback="etcd claims are atomic one by one; "
                                            "the engine gives back what a failed ADD claimed"),
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request) -> Backend:
    return BACKENDS[request.param]


@pytest.fixture
def store(backend, tmp_path, request):
    opened = backend.factory(tmp_path, request)
    yield opened
    opened.close()
