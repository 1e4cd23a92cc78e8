"""Our ``whereabouts`` under Debian's Go ``bridge`` and ``macvlan`` plugins, in real namespaces.

Pods are namespaces in a lab; the Go main plugin runs in a "node"
namespace and calls our IPAM plugin, which keeps its allocations in a
SQLite file of the test's own.  We look at what each pod got with
``ip -j addr``, ping between pods, and check the store after DEL.
"""

from __future__ import annotations

import sqlite3

import pytest

from cni_ipam_lab.namespaces import Attachment

pytestmark = pytest.mark.root

IFNAME = "net1"


def network(name: str, db: str, ipam: dict, bridge: str = "cni-wbe0", version: str = "0.3.1") -> dict:
    return {"cniVersion": version, "name": name, "type": "bridge", "bridge": bridge,
            "ipam": dict(ipam, type="whereabouts", sqlite_path=db)}


def held(db: str) -> list:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT container_id FROM allocations").fetchall()


def attach(lab, node, cni_path, name, config) -> tuple:
    pod = lab.netns(name)
    att = Attachment(lab, node, pod, config, cni_path, ifname=IFNAME,
                     args=f"IgnoreUnknown=1;K8S_POD_NAMESPACE=e2e;K8S_POD_NAME={name}")
    done = att.add()
    assert done.ok, done
    return pod, att


def ping(lab, pod, address) -> bool:
    return lab.exec(pod, "ping", "-c", "1", "-W", "3", address).returncode == 0


def test_dual_stack_pods_get_one_address_per_family_and_reach_each_other(lab, cni_path, tmp_path):
    db = str(tmp_path / "wb.db")
    config = network("whereabouts-dual-stack", db, {"ipRanges": [{"range": "192.168.10.0/24"}, {"range": "fd00::/64"}]})
    node = lab.netns("node")
    pods = [attach(lab, node, cni_path, f"pod{i}", config) for i in range(3)]
    for i, (pod, _) in enumerate(pods):
        assert sorted(lab.addresses(pod, IFNAME)) == sorted([f"192.168.10.{i + 1}/24", f"fd00::{i + 1}/64"])
    for address in ("192.168.10.3", "fd00::3", "192.168.10.2", "fd00::2"):
        assert ping(lab, pods[0][0], address), f"pod0 cannot reach {address}"
    assert len(held(db)) == 6
    for pod, att in pods:
        assert att.delete().ok
        assert att.delete().ok  # a second DEL succeeds
    assert held(db) == []


def test_exclude_example_and_freed_addresses_are_reused(lab, cni_path, tmp_path):
    db = str(tmp_path / "wb.db")
    config = network("wb-exclude", db, {"range": "192.0.2.192/27", "exclude": ["192.0.2.192/30", "192.0.2.196/32"]})
    node = lab.netns("node")
    (pod1, att1), (pod2, att2) = (attach(lab, node, cni_path, name, config) for name in ("x1", "x2"))
    assert lab.addresses(pod1, IFNAME) == ["192.0.2.197/27"]
    assert lab.addresses(pod2, IFNAME) == ["192.0.2.198/27"]
    assert ping(lab, pod1, "192.0.2.198")
    assert att1.delete().ok
    pod3, att3 = attach(lab, node, cni_path, "x3", config)
    assert lab.addresses(pod3, IFNAME) == ["192.0.2.197/27"]  # the lowest free again
    for att in (att2, att3):
        assert att.delete().ok
    assert held(db) == []


def test_two_nads_sharing_a_network_name_never_share_an_address(lab, cni_path, tmp_path):
    db = str(tmp_path / "wb.db")
    # Ranges that start at the same address, so both NADs want the same ones first.
    nad1 = network("nad1", db, {"range": "198.51.100.0/29", "network_name": "example_net_common"})
    nad2 = network("nad2", db, {"range": "198.51.100.0/24", "network_name": "example_net_common"})
    node = lab.netns("node")
    pods = [attach(lab, node, cni_path, f"c{i}", nad1 if i % 2 == 0 else nad2) for i in range(6)]
    addresses = [lab.addresses(pod, IFNAME)[0].split("/")[0] for pod, _ in pods]
    assert len(set(addresses)) == 6, addresses
    assert sorted(addresses) == [f"198.51.100.{i}" for i in range(1, 7)]
    assert ping(lab, pods[0][0], addresses[2])  # both /29 pods on one bridge
    for _, att in pods:
        assert att.delete().ok
    assert held(db) == []


def test_macvlan_pods_get_whereabouts_addresses(lab, cni_path, tmp_path):
    db = str(tmp_path / "wb.db")
    node = lab.netns("node")
    lab.veth(node, "parent0", "parent0p")  # no dummy links in this kernel: a veth end is the master
    config = {"cniVersion": "1.0.0", "name": "wb-macvlan", "type": "macvlan", "master": "parent0", "mode": "bridge",
              "ipam": {"type": "whereabouts", "sqlite_path": db, "range": "10.77.0.0/24", "gateway": "10.77.0.1",
                       "routes": [{"dst": "192.168.99.0/24", "gw": "10.77.0.254"}]}}
    (pod1, att1), (pod2, att2) = (attach(lab, node, cni_path, name, config) for name in ("m1", "m2"))
    assert lab.addresses(pod1, IFNAME) == ["10.77.0.2/24"]  # .1 is the gateway: never handed out
    assert lab.addresses(pod2, IFNAME) == ["10.77.0.3/24"]
    routes = {r["dst"]: r.get("gateway") for r in lab.routes(pod1)}
    assert routes.get("192.168.99.0/24") == "10.77.0.254"
    assert ping(lab, pod1, "10.77.0.3")
    assert att1.check().ok
    for att in (att1, att2):
        assert att.delete().ok
    assert held(db) == []
