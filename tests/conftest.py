"""Fixtures shared by every test directory."""

import pytest


@pytest.fixture(scope="session")
def plugin_bin_dir(tmp_path_factory) -> str:
    """A CNI bin dir holding our launchers (static, whereabouts, dhcp), as ``cni-ipam install`` writes them."""
    from cni_ipam.install import install

    bin_dir = tmp_path_factory.mktemp("cni-bin")
    install(str(bin_dir))
    return str(bin_dir)
