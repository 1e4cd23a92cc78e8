"""Our plugins driven by a real container runtime: Debian's podman 4.3 with its CNI backend.

podman runs Debian's ``bridge`` plugin, which execs our IPAM plugin (found
first in ``cni_plugin_dirs``); we look at what a container got with
``ip addr`` inside it, and at the whereabouts SQLite store after stop/rm.
The core whereabouts examples (exclude, range_start/range_end, IPv6, dual
stack, stop/rm and restart) run on etcd too, the session's cluster
(tests/conftest.py), each test under its own key prefix.
The environment (config, vfs storage, busybox image) is the session's own:
see :mod:`cni_ipam_lab.podman`.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import json
import sqlite3
import subprocess
import time

import pytest

from cni_ipam_lab.podman import IMAGE, unavailable

pytestmark = pytest.mark.root

_why = unavailable()
if _why:
    pytest.skip(f"podman e2e: {_why}", allow_module_level=True)


def whereabouts(db, **ipam) -> dict:
    return dict(ipam, type="whereabouts", sqlite_path=str(db))


def held(db) -> list:
    with sqlite3.connect(str(db)) as conn:
        return conn.execute("SELECT container_id FROM allocations").fetchall()


def held_pods(db) -> list:
    with sqlite3.connect(str(db)) as conn:
        return [pod for (pod,) in conn.execute("SELECT pod FROM allocations")]


def held_addresses(db) -> dict:
    """``{address: (container id, ifname)}`` from the whereabouts SQLite store."""
    with sqlite3.connect(str(db)) as conn:
        rows = conn.execute("SELECT ip, container_id, ifname FROM allocations").fetchall()
    return {str(ipaddress.ip_address(bytes(ip[1:]))): (cid, ifname) for ip, cid, ifname in rows}  # family byte first


def container_id(podman, name: str) -> str:
    return podman.ok("inspect", "--format", "{{.Id}}", name).strip()


class Store:
    """Where a test's whereabouts networks keep their allocations: its ``ipam`` keys, and what it holds."""

    def __init__(self, keys: dict) -> None:
        self.keys = keys

    def ipam(self, **ipam) -> dict:
        return dict(ipam, type="whereabouts", **self.keys)

    def held(self) -> dict:
        """``{address: (container id, ifname)}``, read through our store (the same reading on each backend)."""
        from cni_ipam.config.whereabouts import store_settings
        from cni_ipam.store import open_store

        store = open_store(store_settings(self.ipam()))
        try:
            return {a.address: (a.container_id, a.ifname) for a in store.allocations()}
        finally:
            store.close()


@pytest.fixture(params=["sqlite", "etcd"])
def store(request, tmp_path) -> Store:
    """A SQLite file in the test's tmp dir, or the session's etcd cluster under the test's own prefix (with
    a flat file of the test's own, so no flat file of this machine is read)."""
    if request.param == "sqlite":
        return Store({"sqlite_path": str(tmp_path / "wb.db")})
    cluster = request.getfixturevalue("etcd_cluster")
    flat = tmp_path / "whereabouts.conf"
    flat.write_text(json.dumps({"datastore": "etcd"}))
    return Store({"datastore": "etcd", "etcd_endpoints": cluster.endpoints,
                  "etcd_prefix": request.getfixturevalue("etcd_prefix"), "configuration_path": str(flat)})


# -- static -------------------------------------------------------------------

def test_static_address_from_conflist(podman):
    net = podman.network("pm-static", {"type": "static", "addresses": [{"address": "10.89.1.40/24"}]})
    assert podman.run_addresses(net) == ["10.89.1.40/24"]


def test_static_address_from_podman_ip_option(podman):
    """podman --ip sends CNI_ARGS IP=<address> without a prefix: a host prefix when no subnet is configured."""
    net = podman.network("pm-static-ip", {"type": "static"})
    assert podman.run_addresses(net, "--ip", "10.89.1.50") == ["10.89.1.50/32"]


# -- whereabouts: exclusions, a network_name shared by two networks, dual stack --------

def test_whereabouts_exclude_example(podman, store):
    net = podman.network("pm-excl", store.ipam(range="192.0.2.192/27", exclude=["192.0.2.192/30", "192.0.2.196/32"]))
    first = podman.start("excl1", net)
    assert podman.addresses(first) == ["192.0.2.197/27"]
    assert store.held() == {"192.0.2.197": (container_id(podman, first), "eth0")}
    assert podman.run_addresses(net) == ["192.0.2.198/27"]
    podman.ok("rm", "-f", "-t", "0", first)
    assert store.held() == {}


@pytest.mark.parametrize("ipam, addresses", [
    ({"range": "10.89.41.0/24", "range_start": "10.89.41.10", "range_end": "10.89.41.11"},
     ["10.89.41.10/24", "10.89.41.11/24"]),
    ({"range": "fd00:42::/64"}, ["fd00:42::1/64", "fd00:42::2/64"]),
], ids=["range_start-range_end", "ipv6"])
def test_whereabouts_range_examples(podman, store, ipam, addresses):
    """range_start/range_end and an IPv6 range: the first address, then the next; rm frees both."""
    net = podman.network("pm-range", store.ipam(**ipam))
    boxes = [podman.start("range1", net), podman.start("range2", net)]
    assert [podman.addresses(b) for b in boxes] == [[a] for a in addresses]
    assert sorted(store.held()) == sorted(a.split("/")[0] for a in addresses)
    if "range_end" in ipam:  # the range is full: a third ADD fails and holds nothing
        assert podman.podman("run", "--rm", "--network", net, IMAGE, "true").returncode != 0
        assert len(store.held()) == 2
    podman.ok("rm", "-f", "-t", "0", *boxes)
    assert store.held() == {}


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


def test_whereabouts_dual_stack_ip_ranges(podman, store):
    net = podman.network("pm-dual", store.ipam(ipRanges=[{"range": "192.168.10.0/24"}, {"range": "fd00::/64"}]))
    assert sorted(podman.run_addresses(net)) == ["192.168.10.1/24", "fd00::1/64"]
    assert store.held() == {}  # --rm: DEL from conmon released both


# -- lifecycle ----------------------------------------------------------------

def test_stop_and_rm_release_the_address(podman, store):
    net = podman.network("pm-life", store.ipam(range="10.89.3.0/29"))
    one = podman.start("life1", net)
    two = podman.start("life2", net)
    assert podman.addresses(one) == ["10.89.3.1/29"]
    assert podman.addresses(two) == ["10.89.3.2/29"]
    podman.ok("stop", "-t", "0", one)
    assert store.held() == {"10.89.3.2": (container_id(podman, two), "eth0")}  # stop -> DEL from conmon
    assert podman.run_addresses(net) == ["10.89.3.1/29"]  # the freed address again
    podman.ok("rm", "-f", "-t", "0", two)
    assert store.held() == {}
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



def test_restart_keeps_the_address(podman, store):
    """restart is DEL then ADD: the container comes back with its address, and holds only that one."""
    net = podman.network("pm-restart", store.ipam(range="10.89.8.0/29"))
    one, two = podman.start("rs1", net), podman.start("rs2", net)
    assert podman.addresses(two) == ["10.89.8.2/29"]
    podman.ok("restart", "-t", "0", two)
    assert podman.addresses(two) == ["10.89.8.2/29"]
    assert store.held() == {"10.89.8.1": (container_id(podman, one), "eth0"),
                            "10.89.8.2": (container_id(podman, two), "eth0")}
    podman.ok("rm", "-f", "-t", "0", one, two)
    assert store.held() == {}


# -- whereabouts and the addresses podman asks for (issue #111 of Go whereabouts) ----------------

def test_whereabouts_grants_the_address_asked_for_with_ip(podman, tmp_path):
    """--ip A inside the range is a request for exactly A: granted when free, code 101 when held."""
    db = tmp_path / "wb.db"
    net = podman.network("pm-ipreq", whereabouts(db, range="10.89.6.0/24"))
    asked = podman.start("ipreq1", net, "--ip", "10.89.6.50")
    assert podman.addresses(asked) == ["10.89.6.50/24"]  # exactly the address, not .1 plus a static .50
    assert podman.run_addresses(net) == ["10.89.6.1/24"]  # the others still get the lowest free one
    done = podman.podman("run", "--rm", "--network", net, "--ip", "10.89.6.50", IMAGE, "true")
    assert done.returncode != 0
    assert "10.89.6.50" in done.stderr and "held by" in done.stderr, done.stderr
    assert list(held_addresses(db)) == ["10.89.6.50"]  # the refused ADD took nothing
    podman.ok("rm", "-f", "-t", "0", asked)
    assert held(db) == []


def test_whereabouts_grants_both_addresses_asked_for_with_runtime_config_ips(podman, tmp_path):
    """Two --network ...:ip= addresses arrive as runtimeConfig.ips: one per range of the dual stack."""
    db = tmp_path / "wb.db"
    net = podman.network("pm-ips", whereabouts(db, ipRanges=[{"range": "192.168.11.0/24"}, {"range": "fd00:11::/64"}]))
    got = podman.run_addresses(f"{net}:ip=192.168.11.77,ip=fd00:11::77")
    assert sorted(got) == ["192.168.11.77/24", "fd00:11::77/64"]
    assert held(db) == []


def test_network_reload_keeps_the_address(podman, tmp_path):
    """network reload is DEL then ADD with IP=<current address>: same address, held once."""
    db = tmp_path / "wb.db"
    net = podman.network("pm-reload", whereabouts(db, range="10.89.9.0/29"))
    one, two = podman.start("rl1", net), podman.start("rl2", net)
    podman.ok("rm", "-f", "-t", "0", one)  # .1 is free again: a plain re-ADD of two would take it
    podman.ok("network", "reload", two)
    assert podman.addresses(two) == ["10.89.9.2/29"]
    cid = container_id(podman, two)
    assert held_addresses(db) == {"10.89.9.2": (cid, "eth0")}
    podman.ok("rm", "-f", "-t", "0", two)
    assert held(db) == []


def reload_keeps(podman, box) -> list:
    """``podman network reload`` (DEL, then ADD asking for the container's addresses again): the
    addresses after it, which must be those before it, each once."""
    before = podman.addresses(box)
    podman.ok("network", "reload", box)
    after = podman.addresses(box)
    assert sorted(after) == sorted(before), f"reload changed the addresses: {before} -> {after}"
    assert len(set(after)) == len(after), after
    return after


def test_network_reload_after_ip_keeps_the_address(podman, tmp_path):
    """--ip A: reload sends runtimeConfig.ips ["A", "A"], one request for A."""
    db = tmp_path / "wb.db"
    net = podman.network("pm-reload-ip", whereabouts(db, range="10.89.14.0/24"))
    box = podman.start("rlip", net, "--ip", "10.89.14.50")
    assert reload_keeps(podman, box) == ["10.89.14.50/24"]
    assert held_addresses(db) == {"10.89.14.50": (container_id(podman, box), "eth0")}
    assert held_pods(db) == [box]  # podman's K8S_POD_NAME, without a namespace
    podman.ok("rm", "-f", "-t", "0", box)
    assert held(db) == []


def test_network_reload_dual_stack_keeps_both_addresses(podman, tmp_path):
    """--ip and --ip6 on a dual-stack network: reload asks for each address twice, bare."""
    db = tmp_path / "wb.db"
    net = podman.network("pm-reload-dual", whereabouts(db, ipRanges=[{"range": "10.89.15.0/24"}, {"range": "fd00:15::/64"}]))
    asked = podman.start("rld1", net, "--ip", "10.89.15.9", "--ip6", "fd00:15::9")
    plain = podman.start("rld2", net)
    assert sorted(reload_keeps(podman, asked)) == ["10.89.15.9/24", "fd00:15::9/64"]
    assert sorted(reload_keeps(podman, plain)) == ["10.89.15.1/24", "fd00:15::1/64"]
    owners = held_addresses(db)
    assert sorted(owners) == ["10.89.15.1", "10.89.15.9", "fd00:15::1", "fd00:15::9"]
    assert owners["10.89.15.9"] == owners["fd00:15::9"] == (container_id(podman, asked), "eth0")
    podman.ok("rm", "-f", "-t", "0", asked, plain)
    assert held(db) == []


def test_network_reload_static_with_one_address(podman):
    """Reload sends IP=<the configured address>: that address, not a second copy of it."""
    net = podman.network("pm-reload-s1", {"type": "static", "addresses": [{"address": "10.89.16.5/24", "gateway": "10.89.16.1"}]})
    box = podman.start("rls1", net)
    assert reload_keeps(podman, box) == ["10.89.16.5/24"]


def test_network_reload_static_with_several_addresses(podman):
    """Reload sends the addresses bare in runtimeConfig.ips: each takes its configured prefix."""
    net = podman.network("pm-reload-s2", {"type": "static", "addresses": [{"address": "10.89.17.5/24"},
                                                                          {"address": "fd00:17::5/64"}]})
    box = podman.start("rls2", net)
    assert sorted(reload_keeps(podman, box)) == ["10.89.17.5/24", "fd00:17::5/64"]


def test_network_reload_static_after_ip(podman):
    """--ip on static: reload asks for [the --ip address, the current addresses...]."""
    with_config = podman.network("pm-reload-s3", {"type": "static", "addresses": [{"address": "10.89.18.5/24"}]})
    without = podman.network("pm-reload-s4", {"type": "static"})
    one = podman.start("rls3", with_config, "--ip", "10.89.18.9")
    two = podman.start("rls4", without, "--ip", "10.89.19.9")
    assert sorted(reload_keeps(podman, one)) == ["10.89.18.5/24", "10.89.18.9/24"]
    assert reload_keeps(podman, two) == ["10.89.19.9/32"]


def test_ip_outside_the_ranges_takes_the_prefix_of_a_configured_subnet(podman, tmp_path):
    db = tmp_path / "wb.db"
    net = podman.network("pm-ipout", whereabouts(db, range="10.89.20.0/28", addresses=[{"address": "10.89.21.5/24"}]))
    got = podman.run_addresses(net, "--ip", "10.89.21.9")
    assert sorted(got) == ["10.89.20.1/28", "10.89.21.5/24", "10.89.21.9/24"]
    done = podman.podman("run", "--rm", "--network", net, "--ip", "10.89.22.9", IMAGE, "true")
    assert done.returncode != 0
    assert "10.89.22.9" in done.stderr and "podman's --ip cannot send a prefix length" in done.stderr, done.stderr


def test_network_connect_and_disconnect_add_and_free_a_second_interface(podman, tmp_path):
    db = tmp_path / "wb.db"
    first = podman.network("pm-conn1", whereabouts(db, range="10.89.10.0/29"))
    second = podman.network("pm-conn2", whereabouts(db, range="10.89.11.0/29"))
    box = podman.start("conn", first)
    podman.ok("network", "connect", second, box)
    assert podman.addresses(box, "eth0") == ["10.89.10.1/29"]
    assert podman.addresses(box, "eth1") == ["10.89.11.1/29"]
    cid = container_id(podman, box)
    assert held_addresses(db) == {"10.89.10.1": (cid, "eth0"), "10.89.11.1": (cid, "eth1")}
    podman.ok("network", "disconnect", second, box)
    assert held_addresses(db) == {"10.89.10.1": (cid, "eth0")}
    assert podman.run_addresses(second) == ["10.89.11.1/29"]  # the freed address is handed out again
    podman.ok("rm", "-f", "-t", "0", box)
    assert held(db) == []


def test_thirty_containers_started_at_once_get_distinct_addresses_and_all_are_released(podman, tmp_path):
    db = tmp_path / "wb.db"
    net = podman.network("pm-thirty", whereabouts(db, range="10.89.12.0/26"))
    names = [f"many{i}" for i in range(30)]
    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        started = list(pool.map(lambda n: podman.start(n, net, timeout=240), names))
    got = [podman.addresses(c) for c in started]
    assert all(len(a) == 1 for a in got), got
    ips = sorted(a[0] for a in got)
    assert len(set(ips)) == 30, f"an address was handed out twice: {ips}"
    assert {ipaddress.ip_interface(i).ip for i in ips} == {ipaddress.ip_address(f"10.89.12.{n}") for n in range(1, 31)}
    assert len(held(db)) == 30
    podman.ok("rm", "-f", "-t", "0", *started, timeout=240)
    assert held(db) == []


# -- dhcp: dnsmasq in a server namespace on the network's bridge ------------------------------------

DHCP_SERVER = "10.89.13.1"


def ip_link(*args) -> None:
    subprocess.run(["ip", "link", *args], check=True, capture_output=True)


@pytest.fixture
def dhcp_network(podman, tmp_path):
    """``dhcp_network(main)``: a podman network whose main plugin is ``bridge`` or ``macvlan`` and whose IPAM
    is our ``dhcp``; dnsmasq serves it from a namespace wired to the Linux bridge the network ends on.

    For ``bridge`` that is the network's own bridge, made here before podman's
    ``bridge`` plugin finds and uses it.  For ``macvlan`` the master is one
    end of a veth pair whose other end is on a bridge of ours.  Our daemon runs
    in the host namespace, like the DHCP daemon set.
    """
    from cni_ipam_lab.dhcp import DaemonProcess, Dnsmasq
    from cni_ipam_lab.namespaces import Lab

    lab = Lab("pm")
    made_links, running = [], []

    def make(main: str):
        daemon = DaemonProcess(None, str(tmp_path), timeout="10s", name=f"daemon-{main}")
        ipam = {"type": "dhcp", "daemonSocketPath": daemon.socket_path}
        if main == "bridge":
            net = podman.network("pm-dhcp", ipam)
            bridge = podman.bridge_of[net]
        else:
            bridge, master = f"pmbr{podman.tag}", f"pmmv{podman.tag}"
            net = podman.network("pm-dhcp-mv", ipam, macvlan_master=master)
        ip_link("add", bridge, "type", "bridge")
        made_links.append(bridge)
        ip_link("set", bridge, "up")
        if main == "macvlan":
            ip_link("add", master, "type", "veth", "peer", "name", f"pmmp{podman.tag}")
            made_links.append(master)
            ip_link("set", f"pmmp{podman.tag}", "master", bridge, "up")
            ip_link("set", master, "up")
        server = lab.netns(f"srv-{main}")
        ip_link("add", f"pmsrv{podman.tag}{main[0]}", "type", "veth", "peer", "name", "srv0", "netns", server)
        ip_link("set", f"pmsrv{podman.tag}{main[0]}", "master", bridge, "up")
        lab.ip(server, "addr", "add", f"{DHCP_SERVER}/24", "dev", "srv0")
        lab.ip(server, "link", "set", "srv0", "up")
        dnsmasq = Dnsmasq(server, "srv0", str(tmp_path), first="10.89.13.100", last="10.89.13.199",
                          lease_time="2m")
        running.append(dnsmasq.start())
        running.append(daemon.start())
        return net, dnsmasq, daemon

    try:
        yield make
    finally:
        for thing in reversed(running):
            thing.stop()
        podman.podman("rm", "-a", "-f", "-t", "0", timeout=120)  # before the master link goes
        lab.close()  # the server namespaces, and with them the servers' veth pairs
        for link in made_links:
            subprocess.run(["ip", "link", "del", link], capture_output=True)


def test_dhcp_container_gets_a_lease_from_dnsmasq_and_rm_ends_it(podman, dhcp_network):
    net, dnsmasq, daemon = dhcp_network("bridge")
    box = podman.start("dhcp1", net)
    [address] = podman.addresses(box)
    ip = ipaddress.ip_interface(address)
    assert ip.network == ipaddress.ip_network("10.89.13.0/24")
    assert ipaddress.ip_address("10.89.13.100") <= ip.ip <= ipaddress.ip_address("10.89.13.199"), address
    assert [lease["ip"] for lease in dnsmasq.leases()] == [str(ip.ip)]
    assert podman.podman("exec", box, "ping", "-c", "1", "-W", "2", DHCP_SERVER).returncode == 0
    assert [lease["address"] for lease in daemon.leases()] == [str(ip.ip)]
    podman.ok("rm", "-f", "-t", "0", box)  # DEL from conmon, with its minimal environment
    # The daemon ends the lease (no more renewals).  Debian's bridge deletes the
    # veth before it calls IPAM DEL, so no DHCPRELEASE can leave the container:
    # dnsmasq frees the address when the lease expires (docs/dhcp.md).
    daemon.wait_for("lease.released", timeout=10)
    assert daemon.leases() == []
    other = podman.start("dhcp2", net)
    [again] = podman.addresses(other)
    assert again != address, "dnsmasq gave the still-leased address to another client"
    assert [lease["address"] for lease in daemon.leases()] == [again.split("/")[0]]
    podman.ok("rm", "-f", "-t", "0", other)
    daemon.wait_for("lease.released", count=2, timeout=10)
    assert daemon.leases() == []


def test_dhcp_on_macvlan_rm_releases_the_lease_at_the_server(podman, dhcp_network):
    """macvlan calls IPAM DEL while the interface is still there: our daemon sends DHCPRELEASE, and the
    server frees the address at once (Go's daemon, on the same path, releases too; with bridge nobody can)."""
    net, dnsmasq, daemon = dhcp_network("macvlan")
    box = podman.start("dhcpmv", net)
    [address] = podman.addresses(box)
    ip = ipaddress.ip_interface(address)
    assert ip.network == ipaddress.ip_network("10.89.13.0/24")
    assert [lease["ip"] for lease in dnsmasq.leases()] == [str(ip.ip)]
    assert podman.podman("exec", box, "ping", "-c", "1", "-W", "2", DHCP_SERVER).returncode == 0
    podman.ok("rm", "-f", "-t", "0", box)  # DEL from conmon
    daemon.wait_for("lease.released", timeout=10)
    deadline = time.monotonic() + 5
    while dnsmasq.leases() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dnsmasq.leases() == [], "dnsmasq still holds the lease: no DHCPRELEASE reached it"
    assert f"DHCPRELEASE(srv0) {ip.ip}" in dnsmasq.log()
    assert daemon.leases() == []
