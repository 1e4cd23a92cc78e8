"""Our ``dhcp`` IPAM and its daemon under Debian's Go ``bridge`` and ``macvlan``, against dnsmasq.

dnsmasq runs in a server namespace, wired to a bridge in the node
namespace (:mod:`cni_ipam_lab.dhcp`); the daemon runs in the node
namespace and the Go main plugins call our plugin from there.  Leases are
2 minutes (dnsmasq's minimum) with T1/T2 of a few seconds, so renewals
happen while a test waits.  What the server thinks is read from dnsmasq's
lease file; what the daemon did, from its JSON log and its ``list`` answer.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import signal
import subprocess
import time

import pytest

from cni_ipam_lab.dhcp import BRIDGE, MACVLAN_PARENT, SERVER_IP, DaemonProcess, Setups, client_id_text, wait_until
from cni_ipam_lab.namespaces import Attachment

pytestmark = pytest.mark.root

IFNAME = "net1"
RANGE = (ipaddress.ip_address("192.0.2.100"), ipaddress.ip_address("192.0.2.199"))


@pytest.fixture
def dhcp(lab, tmp_path):
    """``dhcp(...)`` makes the server and node namespaces, dnsmasq and our daemon
    (:meth:`cni_ipam_lab.dhcp.Setups.make`); all stopped at teardown."""
    setups = Setups(lab, str(tmp_path))
    yield setups.make
    setups.close()


def network(kind: str, daemon: DaemonProcess, version: str = "1.0.0", name: str | None = None, **ipam) -> dict:
    config = {"cniVersion": version, "name": name or f"dhcp-{kind}", "type": kind,
              "ipam": dict({"type": "dhcp", "daemonSocketPath": daemon.socket_path}, **ipam)}
    if kind == "bridge":
        config["bridge"] = BRIDGE
    else:
        config.update(master=MACVLAN_PARENT, mode="bridge")
    return config


def attach(lab, net, cni_path, config, name="pod", args="") -> Attachment:
    return Attachment(lab, net.node, lab.netns(name), config, cni_path, ifname=IFNAME, args=args)


def leased(output: dict) -> str:
    [ip] = output["ips"]
    return ip["address"]


def in_range(address: str) -> bool:
    ip = ipaddress.ip_interface(address)
    return RANGE[0] <= ip.ip <= RANGE[1] and ip.network == ipaddress.ip_network("192.0.2.0/24")


def server_leases(net) -> dict:
    """``{client id: ip}`` in dnsmasq's lease file."""
    return {entry["client_id"]: entry["ip"] for entry in net.dnsmasq.leases()}


def ping(lab, pod, address=SERVER_IP) -> bool:
    return lab.exec(pod, "ping", "-c", "1", "-W", "2", address, timeout=10).returncode == 0


# --- a pod gets a lease, reaches the server, DEL releases ---------------------------------------

@pytest.mark.parametrize("version", ["0.3.1", "1.0.0"])
def test_macvlan_pod_gets_a_lease_pings_the_server_and_del_releases_it(lab, cni_path, dhcp, version):
    net, daemon = dhcp()
    att = attach(lab, net, cni_path, network("macvlan", daemon, version))
    add = att.add()
    assert add.ok, f"ADD failed: {add}\n{daemon.log_text()[-2000:]}"
    address = leased(add.output)
    assert in_range(address), address
    assert add.output["ips"][0]["gateway"] == SERVER_IP
    assert {"dst": "0.0.0.0/0", "gw": SERVER_IP} in add.output["routes"]
    assert lab.addresses(att.pod, IFNAME) == [address]
    assert ping(lab, att.pod), "the pod cannot reach the DHCP server"
    cid = client_id_text(att.container_id, "dhcp-macvlan", IFNAME)
    assert server_leases(net) == {cid: address.split("/")[0]}
    delete = att.delete()
    assert delete.ok, delete
    wait_until(lambda: server_leases(net) == {}, 5, "dnsmasq still holds the lease after DEL")
    assert "DHCPRELEASE" in net.dnsmasq.log()
    assert daemon.leases() == []
    again = att.delete()
    assert again.ok and "no lease was held" in again.stderr


def test_bridge_pod_gets_a_lease_and_del_succeeds_although_bridge_deleted_the_veth_first(lab, cni_path, dhcp):
    net, daemon = dhcp()
    att = attach(lab, net, cni_path, network("bridge", daemon))
    add = att.add()
    assert add.ok, add
    address = leased(add.output)
    assert in_range(address) and lab.addresses(att.pod, IFNAME) == [address]
    assert ping(lab, att.pod)
    check = att.check()
    assert check.ok, check
    delete = att.delete()
    # Go's bridge deletes the pod's veth before it calls IPAM DEL, so no
    # DHCPRELEASE can leave the pod: DEL succeeds, says so, and the daemon
    # forgets the lease (the server frees it at expiry).
    assert delete.ok, delete
    assert "DHCPRELEASE not sent" in delete.stderr
    assert daemon.leases() == []
    assert list(server_leases(net).values()) == [address.split("/")[0]]


def test_check_five_times_keeps_exactly_one_lease(lab, cni_path, dhcp):
    net, daemon = dhcp()
    att = attach(lab, net, cni_path, network("macvlan", daemon))
    add = att.add()
    assert add.ok, add
    for _ in range(5):
        check = att.check()
        assert check.ok, check
    assert len(net.dnsmasq.leases()) == 1
    assert len(daemon.leases()) == 1
    assert len(daemon.events("lease.bound")) == 1
    assert net.dnsmasq.log().count("DHCPDISCOVER") == 1


def test_twenty_pods_at_once_get_distinct_leases(lab, cni_path, dhcp):
    net, daemon = dhcp()
    config = network("bridge", daemon)
    pods = [attach(lab, net, cni_path, config, name=f"p{i}") for i in range(20)]
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda att: att.add(), pods))
    took = time.monotonic() - started
    failed = [r for r in results if not r.ok]
    assert not failed, f"{len(failed)} ADDs failed: {failed[:3]}"
    addresses = [leased(r.output) for r in results]
    assert len(set(addresses)) == 20 and all(in_range(a) for a in addresses)
    assert sorted(server_leases(net).values()) == sorted(a.split("/")[0] for a in addresses)
    assert len(daemon.leases()) == 20
    assert took < 20, f"20 concurrent ADDs took {took:.1f}s"
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        deletes = list(pool.map(lambda att: att.delete(), pods))
    assert all(d.ok for d in deletes)
    assert daemon.leases() == []


# --- renewal, restart, outage ------------------------------------------------------------------

def test_renewal_keeps_the_address_and_continues_after_a_daemon_restart(lab, cni_path, dhcp):
    net, daemon = dhcp(t1=2, t2=5)  # dnsmasq raises T1 to 3 s
    att = attach(lab, net, cni_path, network("macvlan", daemon))
    add = att.add()
    assert add.ok, add
    address = leased(add.output).split("/")[0]
    first_expiry = net.dnsmasq.leases()[0]["expiry"]
    daemon.wait_for("lease.renewed", timeout=10)
    assert [l["address"] for l in daemon.leases()] == [address]
    wait_until(lambda: net.dnsmasq.leases()[0]["expiry"] > first_expiry, 5, "dnsmasq saw no renewal")
    assert lab.addresses(att.pod, IFNAME) == [f"{address}/24"]

    # SIGKILL: the lease must survive without a clean shutdown (and the stale socket is replaced).
    daemon.stop(signal.SIGKILL)
    renewed = len(daemon.events("lease.renewed"))
    daemon.start()
    daemon.wait_for("lease.resumed", address=address)
    daemon.wait_for("lease.renewed", count=renewed + 1, timeout=10)
    assert [(l["address"], l["state"]) for l in daemon.leases()] == [(address, "bound")]
    assert [e["ip"] for e in net.dnsmasq.leases()] == [address]

    # ...and the restarted daemon can still release it (Go's forgets it).
    delete = att.delete()
    assert delete.ok, delete
    wait_until(lambda: net.dnsmasq.leases() == [], 5, "the lease was not released after the restart")


def test_server_outage_past_t2_is_reported_and_the_lease_recovers(lab, cni_path, dhcp):
    net, daemon = dhcp(t1=2, t2=5, daemon_args=("-resendmax", "1s", "--metrics-port", "19655",
                                                "--metrics-address", "127.0.0.1"))
    att = attach(lab, net, cni_path, network("macvlan", daemon))
    add = att.add()
    assert add.ok, add
    address = leased(add.output).split("/")[0]
    net.dnsmasq.stop()
    [rebinding] = daemon.wait_for("lease.rebinding", timeout=10)
    assert rebinding["level"] == "warning" and rebinding["address"] == address
    assert [l["state"] for l in daemon.leases()] == ["rebinding"]
    metrics = lab.exec(net.node, "python3", "-c", "import urllib.request as u; "
                       "print(u.urlopen('http://127.0.0.1:19655/metrics').read().decode())").stdout
    assert "cni_ipam_dhcp_renew_failures_total 1.0" in metrics, metrics
    assert 'cni_ipam_dhcp_leases{state="rebinding"} 1.0' in metrics

    net.dnsmasq.start()
    daemon.wait_for("lease.rebound", timeout=10, address=address)
    assert [(l["address"], l["state"]) for l in daemon.leases()] == [(address, "bound")]
    assert lab.addresses(att.pod, IFNAME) == [f"{address}/24"] and ping(lab, att.pod)
    assert att.delete().ok


def test_a_lease_whose_pod_namespace_vanished_is_dropped_without_spinning(lab, cni_path, dhcp):
    net, daemon = dhcp(daemon_args=("--check-interval", "0.3s"))
    att = attach(lab, net, cni_path, network("bridge", daemon))
    assert att.add().ok
    subprocess.run(["ip", "netns", "del", att.pod], check=True)  # no DEL: the runtime lost track
    [dropped] = daemon.wait_for("lease.dropped", timeout=5)
    assert "does not exist" in dropped["msg"]
    assert daemon.leases() == []
    lines = len(daemon.log_text().splitlines())
    time.sleep(1.0)
    assert len(daemon.log_text().splitlines()) == lines, "the daemon kept logging about a dropped lease"
    assert att.delete().ok  # DEL after the fact still succeeds


# --- errors ----------------------------------------------------------------------------------

def test_daemon_down_add_fails_with_code_11_and_del_succeeds(lab, cni_path, dhcp):
    net, daemon = dhcp()
    daemon.stop()
    att = attach(lab, net, cni_path, network("bridge", daemon))
    add = att.add()
    assert not add.ok and add.output["code"] == 11, add
    assert "cannot reach the DHCP daemon" in add.output["msg"]
    delete = att.delete()
    assert delete.ok, delete


def test_no_server_answers_add_fails_with_code_11_within_the_timeout(lab, cni_path, dhcp):
    net, daemon = dhcp(start_server=False, timeout="2s")
    att = attach(lab, net, cni_path, network("bridge", daemon))
    started = time.monotonic()
    add = att.add()
    took = time.monotonic() - started
    assert not add.ok and add.output["code"] == 11, add
    assert "no DHCP server answered" in add.output["msg"] and "within 2s" in add.output["msg"], add.output
    assert took < 6, f"ADD took {took:.1f}s with a 2s timeout"
    assert daemon.leases() == []


def test_bad_options_are_code_7(lab, cni_path, dhcp):
    net, daemon = dhcp()
    for ipam in ({"request": [{"option": "classless_static_routes"}]},
                 {"provide": [{"option": "300", "value": "x"}]},
                 {"provide": [{"option": "host-name", "value": "x" * 256}]}):
        att = attach(lab, net, cni_path, network("bridge", daemon, **ipam), name=f"bad{len(str(ipam))}")
        add = att.add()
        assert not add.ok and add.output["code"] == 7, (ipam, add)
    assert daemon.leases() == [] and net.dnsmasq.leases() == []


def test_host_name_from_the_pod_name(lab, cni_path, dhcp):
    net, daemon = dhcp()
    config = network("macvlan", daemon, provide=[{"option": "host-name", "fromArg": "K8S_POD_NAME"}])
    att = attach(lab, net, cni_path, config, args="IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0")
    assert att.add().ok
    assert [e["hostname"] for e in net.dnsmasq.leases()] == ["web-0"]
    assert att.delete().ok
