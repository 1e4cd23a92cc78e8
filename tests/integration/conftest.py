"""Fixtures for the integration tests."""

import pytest


@pytest.fixture(scope="session")
def bin_dir(plugin_bin_dir) -> str:
    """Our launchers (``plugin_bin_dir`` of tests/conftest.py), under the name these tests use."""
    return plugin_bin_dir


@pytest.fixture
def etcd_flat_file(etcd_cluster, etcd_prefix, tmp_path) -> str:
    """A whereabouts flat file naming the test cluster and this test's own key prefix."""
    import json

    path = tmp_path / "whereabouts.conf"
    path.write_text(json.dumps({"datastore": "etcd", "etcd_endpoints": etcd_cluster.endpoints,
                                "etcd_prefix": etcd_prefix}))
    return str(path)


@pytest.fixture
def client(etcd_cluster):
    """A client of the test cluster, to read and plant keys directly."""
    from cni_ipam.store.etcd_client import EtcdClient

    opened = EtcdClient(etcd_cluster.endpoints)
    yield opened
    opened.close()
