"""Fixtures for the integration tests."""

import os
import shutil
import signal

import pytest


@pytest.fixture
def agent(tmp_path):
    """A running ``cni-ipam agent`` of this test's own; yields (socket path, log file path)."""
    from agent_process import start_agent

    socket_path, log_path = str(tmp_path / "agent.sock"), tmp_path / "agent.log"
    process = start_agent(socket_path, log_path)
    try:
        yield socket_path, log_path
    finally:
        process.terminate()
        process.wait(10)


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


@pytest.fixture(scope="module")
def fault_cluster(tmp_path_factory):
    """A 3-member etcd cluster of the test module's own (ports free from 25790 up), for tests that kill members:
    never the shared ``etcd_cluster``.  Stopped at the end of the module."""
    from cni_ipam_lab.etcd_cluster import free_base_port, ETCD, EtcdCluster

    if not os.access(ETCD, os.X_OK):
        pytest.skip(f"etcd is not installed ({ETCD}); apt-get install etcd-server")
    directory = tmp_path_factory.mktemp("etcd-faults")
    cluster = EtcdCluster(str(directory), base_port=free_base_port(25790, 3), token="cni-ipam-faults")
    try:
        cluster.start()
        yield cluster
    finally:
        for member in cluster.members:  # a member left stopped would ignore SIGTERM
            if member.pid:
                try:
                    os.kill(member.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def healthy(fault_cluster):
    """The fault cluster with every member running and a leader, whatever an earlier test did to it."""
    for member in fault_cluster.members:
        if not member.pid:
            fault_cluster.start_member(member)
    fault_cluster.wait_healthy(30)
    return fault_cluster
