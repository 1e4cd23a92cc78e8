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
    """How to make one store, and what it promises beyond the common contract.

    Each promise is "" when the backend keeps it, else the reason why not,
    which the cases that rely on it give when they skip.
    """

    def __init__(self, factory, no_rollback: str = "", no_hints: str = "", no_far_offsets: str = "",
                 kube_names: str = "") -> None:
        self.factory = factory
        self.no_rollback = no_rollback  # a failed transaction() undoes its writes
        self.no_hints = no_hints  # hints are kept
        self.no_far_offsets = no_far_offsets  # any address of the family can be held in any pool
        self.kube_names = kube_names  # any network name can be stored


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


def kubernetes_store(tmp_path, request, batches=None):
    from kubeapi.kubeconfig import write_kubeconfig

    from cni_ipam.kube.client import KubeClient
    from cni_ipam.kube.kubeconfig import load
    from cni_ipam.store.kubernetes import KubernetesStore

    server = request.getfixturevalue("kube_api")
    return KubernetesStore(KubeClient(load(write_kubeconfig(server, str(tmp_path / "kubeconfig")))), batches)


def kubernetes_agent_store(tmp_path, request):
    """As the node agent opens it: claims go through the agent's group commit and its cached pools, and an ADD's
    prefetch reads the IPPools from the copy its watch keeps (store/kube_cache.py)."""
    from cni_ipam.store.kube_batch import PoolBatches

    batches = PoolBatches(watch=True)
    request.addfinalizer(batches.close)
    return kubernetes_store(tmp_path, request, batches)


BACKENDS = {
    "memory": Backend(memory_store, no_rollback="MemoryStore.transaction() is a null context: "
                                                "the in-memory test double keeps no undo log"),
    "sqlite": Backend(sqlite_store),
    "etcd": Backend(etcd_store, no_rollback="etcd claims are atomic one by one; "
                                            "the engine gives back what a failed ADD claimed"),
    **{name: Backend(
        factory,
        no_rollback="each claim is its own pool patch; the engine gives back what a failed ADD claimed",
        no_hints="upstream's objects have no place for hints, and the pools are read whole anyway "
                 "(store/kubernetes.py)",
        no_far_offsets="an IPPool keys an address by its offset from the range's first IP, which Go whereabouts "
                       "reads as a signed 64-bit number: nothing below the range or 2^63 past it",
        kube_names="network names become parts of Kubernetes object names (DNS-1123)")
       for name, factory in (("kubernetes", kubernetes_store), ("kubernetes-agent", kubernetes_agent_store))},
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request) -> Backend:
    return BACKENDS[request.param]


@pytest.fixture
def store(backend, tmp_path, request):
    opened = backend.factory(tmp_path, request)
    yield opened
    opened.close()
