"""Fixtures shared by every test directory, and the CI rule on skips.

In CI (``CI=true``) a skipped test fails the run unless its reason starts
with ``not applicable:`` (the test's subject does not exist for that
parameter, e.g. a store without rollback): a missing etcd, dnsmasq or
podman, or not being root, must not let a run pass with the tests that
need them silently left out.
"""

import os
import shutil

import pytest

NOT_APPLICABLE = "not applicable:"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1")


def skip_reason(report) -> str:
    """The reason of a skipped test or collector ("Skipped: " taken off)."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


_unexpected_skips = []  # (node id, reason) of skips that fail a CI run


def _note_skip(report) -> None:
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        reason = skip_reason(report)
        if not reason.startswith(NOT_APPLICABLE):
            _unexpected_skips.append((report.nodeid, reason))


def pytest_runtest_logreport(report):
    _note_skip(report)


def pytest_collectreport(report):
    _note_skip(report)


def pytest_sessionfinish(session, exitstatus):
    if _unexpected_skips and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if _unexpected_skips:
        terminalreporter.section("skips that fail a CI run", sep="=", red=True, bold=True)
        for nodeid, reason in _unexpected_skips:
            terminalreporter.line(f"SKIPPED IN CI {nodeid}: {reason}")
        terminalreporter.line(f"CI=true: {len(_unexpected_skips)} tests skipped for a reason other than "
                              f"'{NOT_APPLICABLE} ...'; install what they need or run as root")


@pytest.fixture(scope="session")
def plugin_bin_dir(tmp_path_factory) -> str:
    """A CNI bin dir holding our launchers (static, whereabouts, dhcp), as ``cni-ipam install`` writes them."""
    from cni_ipam.install import install

    bin_dir = tmp_path_factory.mktemp("cni-bin")
    install(str(bin_dir))
    return str(bin_dir)


@pytest.fixture(scope="session")
def etcd_cluster(tmp_path_factory):
    """A 3-member etcd cluster on loopback.

    ``make test`` (and so CI) starts one for the whole run and names its
    state file in ``CNI_IPAM_ETCD_CLUSTER``; without it, this fixture starts
    its own and stops it at the end of the session.
    """
    from cni_ipam_lab.etcd_cluster import ETCD, EtcdCluster, free_base_port

    state = os.environ.get("CNI_IPAM_ETCD_CLUSTER")
    if state and os.path.exists(state):
        cluster = EtcdCluster.load(state)
        cluster.wait_healthy()
        yield cluster
        return
    if not os.access(ETCD, os.X_OK):
        pytest.skip(f"etcd is not installed ({ETCD}); apt-get install etcd-server")
    directory = tmp_path_factory.mktemp("etcd")
    cluster = EtcdCluster(str(directory), base_port=free_base_port(24790)).start()
    yield cluster
    cluster.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def etcd_prefix(request) -> str:
    """A key prefix of this test's own, so tests sharing one cluster never see each other's keys."""
    import uuid

    return f"/test-{request.node.name[:40]}-{uuid.uuid4().hex[:8]}/".replace("[", "-").replace("]", "-")


@pytest.fixture
def kube_api_factory(etcd_cluster, etcd_prefix, tmp_path):
    """Start test Kubernetes API servers (tests/kubeapi) over the shared etcd cluster, under this test's prefix.

    Call it with ``KubeAPIServer``'s options (``tls``, ``tokens``, ``rbac``);
    every server it started is stopped after the test.
    """
    from kubeapi import KubeAPIServer

    servers = []

    def start(**options):
        directory = tmp_path / f"kubeapi{len(servers)}"
        servers.append(KubeAPIServer(etcd_cluster.endpoints, etcd_prefix, str(directory), **options))
        return servers[-1].start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def kube_api(kube_api_factory):
    """A test Kubernetes API server whose ``token`` is a service account's with every right.

    ``kill()`` and ``restart()`` keep the objects: they are in etcd.
    """
    return kube_api_factory()
