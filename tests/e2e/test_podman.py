"""Our plugins driven by a real container runtime: Debian's podman 4.3 with its CNI backend.

podman runs Debian's ``bridge`` plugin, which execs our IPAM plugin (found
first in ``cni_plugin_dirs``); we look at what a container got with
``ip addr`` inside it, and at the whereabouts SQLite store after stop/rm.
The environment (config, vfs storage, busybox image) is the session's own:
see ``podman_support.py``.
"""

from __future__ import annotations

import sqlite3

import pytest

from podman_support import IMAGE, PodmanEnv, unavailable

pytestmark = pytest.mark.root

_why = unavailable()
if _why:
    pytest.skip(f"podman e2e: {_why}", allow_module_level=True)


@pytest.fixture(scope="module")
def podman(plugin_bin_dir, tmp_path_factory):
    env = PodmanEnv(str(tmp_path_factory.mktemp("podman")), plugin_bin_dir)
    try:
        env.import_image()
        done = env.podman("run", "--rm", "--network", "none", IMAGE, "true")
        if done.returncode != 0:
            pytest.skip(f"podman e2e: podman cannot run a container here: {done.stderr.strip()}")
        yield env
    finally:
        env.close()


def whereabouts(db, **ipam) -> dict:
    return dict(ipam, type="whereabouts", sqlite_path=str(db))


def held(db) -> list:
    with sqlite3.connect(str(db)) as conn:
        return conn.execute("SELECT container_id FROM allocations").fetchall()


# -- static -------------------------------------------------------------------

def test_static_address_from_conflist(podman):
    net = podman.network("pm-static", {"type": "static", "addresses": [{"address": "10.89.1.40/24"}]})
    assert podman.run_addresses(net) == ["10.89.1.40/24"]


def test_static_address_from_podman_ip_option(podman):
    """podman --ip sends CNI_ARGS IP=<address> without a prefix: a host prefix when no subnet is configured."""
    net = podman.network("pm-static-ip", {"type": "static"})
    assert podman.run_addresses(net, "--ip", "10.89.1.50") == ["10.89.1.50/32"]


# -- whereabouts: the MISSION.md examples -------------------------------------

def test_whereabouts_exclude_example(podman, tmp_path):
    db = tmp_path / "wb.db"
    net = podman.network("pm-excl", whereabouts(db, range="192.0.2.192/27",
                                                exclude=["192.0.2.192/30", "192.0.2.196/32"]))
    first = podman.start("excl1", net)
    assert podman.addresses(first) == ["192.0.2.197/27"]
    assert podman.run_addresses(net) == ["192.0.2.198/27"]
    podman.ok("rm", "-f", "-t", "0", first)
    assert held(db) == []


def test_whereabouts_two_networks_sharing_example_net_common(podman, tmp_path):
    db = tmp_path / "wb.db"
    nad1 = podman.network("pm-nad1", whereabouts(db, range="192.0.2.192/29", network_name="example_net_common"))
    nad2 = podman.network("pm-nad2", whereabouts(db, range="192.0.2.192/24", network_name="example_net_common"))
    containers = [podman.start(f"common{i}", (nad1, nad2)[i % 2]) for i in range(4)]
    got = [podman.addresses(c) for c in containers]
    assert all(len(a) == 1 for a in got), got
    ips = [a[0].split("/")[0] for a in got]
    assert len(set(ips)) == 4, f"the two networks share example_net_common, yet an address was given twice: {got}"
    assert got[0][0].endswith("/29") and got[1][0].endswith("/24")
    podman.ok("rm", "-f", "-t", "0", *containers)
    assert held(db) == []


def test_whereabouts_dual_stack_ip_ranges(podman, tmp_path):
    db = tmp_path / "wb.db"
    net = podman.network("pm-dual", whereabouts(db, ipRanges=[{"range": "192.168.10.0/24"}, {"range": "fd00::/64"}]))
    assert sorted(podman.run_addresses(net)) == ["192.168.10.1/24", "fd00::1/64"]
    assert held(db) == []  # --rm: DEL from conmon released both


# -- lifecycle ----------------------------------------------------------------

def test_stop_and_rm_release_the_address(podman, tmp_path):
    db = tmp_path / "wb.db"
    net = podman.network("pm-life", whereabouts(db, range="10.89.3.0/29"))
    one = podman.start("life1", net)
    two = podman.start("life2", net)
    assert podman.addresses(one) == ["10.89.3.1/29"]
    assert podman.addresses(two) == ["10.89.3.2/29"]
    podman.ok("stop", "-t", "0", one)
    assert len(held(db)) == 1  # stop -> DEL from conmon
    assert podman.run_addresses(net) == ["10.89.3.1/29"]  # the freed address again
    podman.ok("rm", "-f", "-t", "0", two)
    assert held(db) == []
    assert podman.run_addresses(net) == ["10.89.3.1/29"]
    podman.ok("rm", one)


def test_failed_add_holds_nothing(podman, tmp_path):
    db = tmp_path / "wb.db"
    # whereabouts allocates, then the chain's next plugin fails: podman's DEL must free it.
    net = podman.network("pm-fail", whereabouts(db, range="10.89.4.0/29"),
                         extra_plugins=({"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.no_such_knob": "1"}},))
    done = podman.podman("run", "--rm", "--network", net, IMAGE, "true")
    assert done.returncode != 0, done
    assert 'plugin type="tuning" failed' in done.stderr, done.stderr  # whereabouts' ADD itself went through
    assert held(db) == []


def test_failed_add_on_a_full_range_holds_nothing_more(podman, tmp_path):
    db = tmp_path / "wb.db"
    net = podman.network("pm-full", whereabouts(db, range="10.89.5.0/30"))  # .1 and .2 only
    one, two = podman.start("full1", net), podman.start("full2", net)
    before = sorted(held(db))
    assert len(before) == 2
    done = podman.podman("run", "--rm", "--network", net, IMAGE, "true")
    assert done.returncode != 0, done
    assert sorted(held(db)) == before
    podman.ok("rm", "-f", "-t", "0", one, two)
    assert held(db) == []

