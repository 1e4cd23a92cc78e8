"""The whereabouts plugin executable, run as a runtime runs it: a subprocess, a clean env, JSON on stdin.

Every test has its own SQLite store (``sqlite_path`` in tmp_path) and reads
it back with ``sqlite3`` to see what the plugin really holds.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sqlite3

import pytest

from cni_ipam_lab.namespaces import cni_env, run_plugin

NETNS = "/run/netns/wb-test-pod"  # an IPAM plugin never enters it


class Whereabouts:
    """Runs the installed ``whereabouts`` executable against one store."""

    def __init__(self, bin_dir: str, db: str) -> None:
        self.bin_dir = bin_dir
        self.path = os.path.join(bin_dir, "whereabouts")
        self.db = db

    def net(self, name: str = "net1", version: str = "1.0.0", **ipam) -> dict:
        ipam = dict({"type": "whereabouts", "sqlite_path": self.db}, **ipam)
        return {"cniVersion": version, "name": name, "type": "bridge", "ipam": ipam}

    def run(self, command: str, config: dict, container_id: str = "", ifname: str = "eth0", args: str = ""):
        if command in ("GC", "STATUS"):
            env = cni_env(command, cni_path=self.bin_dir)
        else:
            env = cni_env(command, container_id, NETNS if command != "DEL" else "", ifname, args, self.bin_dir)
        return run_plugin(self.path, env, config)

    def add(self, config, container_id="c1", ifname="eth0", args=""):
        return self.run("ADD", config, container_id, ifname, args)

    def delete(self, config, container_id="c1", ifname="eth0", args=""):
        return self.run("DEL", config, container_id, ifname, args)

    def check(self, config, prev, container_id="c1", ifname="eth0"):
        return self.run("CHECK", dict(config, prevResult=prev), container_id, ifname)

    def rows(self) -> list:
        """Every allocation: (pool, ip, network, container_id, ifname, pod), in store order."""
        if not os.path.exists(self.db):
            return []
        db = sqlite3.connect(self.db)
        try:
            found = db.execute("SELECT pool, ip, network, container_id, ifname, pod FROM allocations "
                               "ORDER BY pool, ip").fetchall()
        finally:
            db.close()
        return [(pool, str(ipaddress.ip_address(int.from_bytes(blob[1:], "big"))), *rest)
                for pool, blob, *rest in found]


@pytest.fixture
def wb(bin_dir, tmp_path) -> Whereabouts:
    return Whereabouts(bin_dir, str(tmp_path / "store" / "whereabouts.db"))


def ok(call) -> dict:
    assert call.exit_code == 0, call
    return call.output


def failed(call, code: int) -> dict:
    assert call.exit_code == 1, call
    assert call.output["code"] == code, call
    return call.output


def addresses(result: dict) -> list:
    return [entry["address"] for entry in result["ips"]]


# --- the examples the demo runs (src/cni_ipam/demo.py), exactly ---

def test_exclude_example_gives_197_then_198(wb):
    config = wb.net(range="192.0.2.192/27", exclude=["192.0.2.192/30", "192.0.2.196/32"])
    assert ok(wb.add(config, "c1")) == {"cniVersion": "1.0.0", "ips": [{"address": "192.0.2.197/27"}]}
    assert ok(wb.add(config, "c2")) == {"cniVersion": "1.0.0", "ips": [{"address": "192.0.2.198/27"}]}
    assert wb.rows() == [("/192.0.2.192/27", "192.0.2.197", "net1", "c1", "eth0", ""),
                         ("/192.0.2.192/27", "192.0.2.198", "net1", "c2", "eth0", "")]


def test_overlapping_nads_with_one_network_name_never_share_an_address(wb):
    nad1 = wb.net("nad-one", range="192.0.2.192/29", network_name="example_net_common")
    nad2 = wb.net("nad-two", range="192.0.2.192/24", network_name="example_net_common")
    # NAD 2's range is 192.0.2.0/24: its lowest free address is far below NAD 1's /29
    assert addresses(ok(wb.add(nad1, "one-0"))) == ["192.0.2.193/29"]
    assert addresses(ok(wb.add(nad2, "two-0"))) == ["192.0.2.1/24"]
    # NAD 2 cannot take what NAD 1 holds, and what NAD 2 takes inside the /29 is skipped by NAD 1
    error = failed(wb.add(nad2, "two-x", args="IP=192.0.2.193"), 101)
    assert "192.0.2.193" in error["msg"] and "nad-one" in error["msg"]
    assert addresses(ok(wb.add(nad2, "two-1", args="IP=192.0.2.195"))) == ["192.0.2.195/24"]
    got1 = [addresses(ok(wb.add(nad1, f"one-{i}")))[0] for i in range(1, 5)]
    assert got1 == ["192.0.2.194/29", "192.0.2.196/29", "192.0.2.197/29", "192.0.2.198/29"]
    # the /29 (.193-.198) is full; the error names the range and its size
    error = failed(wb.add(nad1, "one-5"), 102)
    assert "ipam.range" in error["msg"] and "192.0.2.192/29" in error["msg"]
    assert "all 6 allocatable addresses are held" in error["msg"]
    # NAD 2 goes on
    assert addresses(ok(wb.add(nad2, "two-2"))) == ["192.0.2.2/24"]
    assert addresses(ok(wb.add(nad2, "two-3", args="IP=192.0.2.199"))) == ["192.0.2.199/24"]
    held = [ip for _, ip, *_ in wb.rows()]
    assert len(held) == len(set(held)) == 9
    assert {c for *_, c, _, _ in wb.rows()} == {"one-0", "one-1", "one-2", "one-3", "one-4",
                                                 "two-0", "two-1", "two-2", "two-3"}


def test_overlapping_ranges_allocated_alternately_until_the_small_one_is_full(wb):
    # the same shape with both ranges starting at the same address, so lowest-free walks collide
    nad1 = wb.net("nad-one", range="198.51.100.0/29", network_name="example_net_common")
    nad2 = wb.net("nad-two", range="198.51.100.0/24", network_name="example_net_common")
    got1, got2 = [], []
    for i in range(3):
        got1 += addresses(ok(wb.add(nad1, f"one-{i}")))
        got2 += addresses(ok(wb.add(nad2, f"two-{i}")))
    assert got1 == ["198.51.100.1/29", "198.51.100.3/29", "198.51.100.5/29"]
    assert got2 == ["198.51.100.2/24", "198.51.100.4/24", "198.51.100.6/24"]
    error = failed(wb.add(nad1, "one-3"), 102)
    assert "198.51.100.0/29" in error["msg"] and "all 6 allocatable addresses are held" in error["msg"]
    assert addresses(ok(wb.add(nad2, "two-3"))) == ["198.51.100.7/24"]
    assert addresses(ok(wb.add(nad2, "two-4"))) == ["198.51.100.8/24"]
    # a freed address in the /29 goes to whichever NAD asks first, once
    ok(wb.delete(nad2, "two-1"))
    assert addresses(ok(wb.add(nad1, "one-3"))) == ["198.51.100.4/29"]
    assert addresses(ok(wb.add(nad2, "two-5"))) == ["198.51.100.9/24"]


def test_same_ranges_under_different_network_names_may_give_the_same_address(wb):
    tenant_a = wb.net("nad-a", range="192.0.2.192/29", network_name="tenant-a")
    tenant_b = wb.net("nad-b", range="192.0.2.192/29", network_name="tenant-b")
    tenant_b_wide = wb.net("nad-b2", range="192.0.2.192/24", network_name="tenant-b")
    tenant_c_wide = wb.net("nad-c", range="192.0.2.192/24", network_name="tenant-c")
    assert addresses(ok(wb.add(tenant_a, "a1"))) == ["192.0.2.193/29"]
    assert addresses(ok(wb.add(tenant_b, "b1"))) == ["192.0.2.193/29"]
    assert addresses(ok(wb.add(tenant_b, "b2"))) == ["192.0.2.194/29"]
    # tenant-c does not see tenant-a's or tenant-b's holdings; tenant-b's wide range does see its own
    assert addresses(ok(wb.add(tenant_c_wide, "c1", args="IP=192.0.2.193"))) == ["192.0.2.193/24"]
    failed(wb.add(tenant_b_wide, "b3", args="IP=192.0.2.194"), 101)
    assert sorted(ip for _, ip, *_ in wb.rows()) == ["192.0.2.193"] * 3 + ["192.0.2.194"]


def test_without_overlapping_range_checks_only_the_range_itself_is_unique(wb):
    nad1 = wb.net("nad-one", range="198.51.100.0/29", network_name="shared", enable_overlapping_ranges=False)
    nad2 = wb.net("nad-two", range="198.51.100.0/24", network_name="shared", enable_overlapping_ranges=False)
    assert addresses(ok(wb.add(nad1, "one-0"))) == ["198.51.100.1/29"]
    assert addresses(ok(wb.add(nad2, "two-0"))) == ["198.51.100.1/24"]
    assert addresses(ok(wb.add(nad1, "one-1"))) == ["198.51.100.2/29"]


def test_dual_stack_example(wb):
    config = {"name": "whereabouts-dual-stack", "cniVersion": "0.3.1", "type": "bridge",
              "ipam": {"type": "whereabouts", "sqlite_path": wb.db,
                       "ipRanges": [{"range": "192.168.10.0/24"}, {"range": "fd00::/64"}]}}
    assert ok(wb.add(config)) == {"cniVersion": "0.3.1", "ips": [
        {"version": "4", "address": "192.168.10.1/24"}, {"version": "6", "address": "fd00::1/64"}]}


# --- result format per cniVersion ---

FORMAT_IPAM = {
    "range": "10.0.0.0/24", "range_start": "10.0.0.10", "ipRanges": [{"range": "fd00::/64"}],
    "gateway": "10.0.0.1", "routes": [{"dst": "0.0.0.0/0"}, {"dst": "fd10::/64", "gw": "fd00::1"}],
    "dns": {"nameservers": ["10.0.0.53"], "search": ["lab"]},
}


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_result_with_ip_version_field(wb, version):
    assert ok(wb.add(wb.net(version=version, **FORMAT_IPAM))) == {
        "cniVersion": version,
        "ips": [{"version": "4", "address": "10.0.0.10/24", "gateway": "10.0.0.1"},
                {"version": "6", "address": "fd00::1/64"}],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "fd10::/64", "gw": "fd00::1"}],
        "dns": {"nameservers": ["10.0.0.53"], "search": ["lab"]},
    }


@pytest.mark.parametrize("version", ["1.0.0", "1.1.0"])
def test_result_without_ip_version_field(wb, version):
    assert ok(wb.add(wb.net(version=version, **FORMAT_IPAM))) == {
        "cniVersion": version,
        "ips": [{"address": "10.0.0.10/24", "gateway": "10.0.0.1"}, {"address": "fd00::1/64"}],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "fd10::/64", "gw": "fd00::1"}],
        "dns": {"nameservers": ["10.0.0.53"], "search": ["lab"]},
    }


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_legacy_result_ip4_ip6(wb, version):
    assert ok(wb.add(wb.net(version=version, **FORMAT_IPAM))) == {
        "cniVersion": version,
        "ip4": {"ip": "10.0.0.10/24", "gateway": "10.0.0.1", "routes": [{"dst": "0.0.0.0/0"}]},
        "ip6": {"ip": "fd00::1/64", "routes": [{"dst": "fd10::/64", "gw": "fd00::1"}]},
        "dns": {"nameservers": ["10.0.0.53"], "search": ["lab"]},
    }


def test_static_addresses_follow_the_allocated_ones(wb):
    config = wb.net(range="10.0.0.0/24", addresses=[{"address": "198.51.100.5/24", "gateway": "198.51.100.1"}])
    assert ok(wb.add(config))["ips"] == [{"address": "10.0.0.1/24"},
                                         {"address": "198.51.100.5/24", "gateway": "198.51.100.1"}]
    assert [ip for _, ip, *_ in wb.rows()] == ["10.0.0.1"]  # static addresses are not stored


def test_full_128_bit_ipv6_offsets(wb):
    config = wb.net(range="fd00::/64", range_start="fd00::ffff:ffff:ffff:fffd")
    assert addresses(ok(wb.add(config, "c1"))) == ["fd00::ffff:ffff:ffff:fffd/64"]
    assert addresses(ok(wb.add(config, "c2"))) == ["fd00::ffff:ffff:ffff:fffe/64"]
    error = failed(wb.add(config, "c3"), 102)
    assert "fd00::/64" in error["msg"] and "all 2 allocatable addresses" in error["msg"]


# --- identity ---

def test_repeated_add_returns_the_same_address(wb):
    config = wb.net(ipRanges=[{"range": "10.0.0.0/24"}, {"range": "fd00::/64"}])
    first = ok(wb.add(config, "c1"))
    assert ok(wb.add(config, "c1")) == first
    assert len(wb.rows()) == 2
    assert addresses(ok(wb.add(config, "c2"))) == ["10.0.0.2/24", "fd00::2/64"]


def test_same_pod_and_ifname_under_a_new_container_keeps_its_address(wb):
    config = wb.net(range="10.0.0.0/24")
    pod = "IgnoreUnknown=1;K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=web-0"
    assert addresses(ok(wb.add(config, "sandbox-1", args=pod))) == ["10.0.0.1/24"]
    assert addresses(ok(wb.add(config, "sandbox-2", args=pod))) == ["10.0.0.1/24"]
    assert wb.rows() == [("/10.0.0.0/24", "10.0.0.1", "net1", "sandbox-2", "eth0", "team-a/web-0")]
    # the old sandbox's late DEL must not free what the new one holds
    ok(wb.delete(config, "sandbox-1", args=pod))
    assert [c for _, _, _, c, _, _ in wb.rows()] == ["sandbox-2"]
    # another interface of the pod, or another pod, is another attachment
    assert addresses(ok(wb.add(config, "sandbox-2", ifname="net2", args=pod))) == ["10.0.0.2/24"]
    other = "IgnoreUnknown=1;K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=web-1"
    assert addresses(ok(wb.add(config, "sandbox-3", args=other))) == ["10.0.0.3/24"]


def test_the_wal_stays_between_calls_and_stays_short(wb):
    """Each call leaves the WAL to the next (cni_ipam.store.sqlite, "The WAL between processes") instead of a
    checkpoint and a new WAL per call; the WAL is emptied once it passes WAL_CHECKPOINT_BYTES, its files stay
    0600, and every commit is there for a new reader."""
    from cni_ipam.store.sqlite import WAL_CHECKPOINT_BYTES

    config = wb.net(range="10.0.0.0/24")
    sizes = []
    for n in range(1, 21):
        ok(wb.add(config, f"c{n}"))
        sizes.append(os.path.getsize(wb.db + "-wal"))
        assert {os.stat(wb.db + suffix).st_mode & 0o777 for suffix in ("", "-wal", "-shm")} == {0o600}
    assert 0 in sizes and max(sizes) <= WAL_CHECKPOINT_BYTES + (64 << 10), sizes
    assert sorted(c for _, _, _, c, _, _ in wb.rows()) == sorted(f"c{n}" for n in range(1, 21))


def test_a_database_removed_without_its_wal_is_a_new_empty_store(wb):
    """The WAL a call leaves must not come back into a store created anew in place of a removed database:
    SQLite drops a WAL beside an empty database file (src/pager.c, pagerOpenWalIfPresent)."""
    config = wb.net(range="10.0.0.0/24")
    for n in range(1, 4):
        ok(wb.add(config, f"c{n}"))
    assert os.path.getsize(wb.db + "-wal") > 0
    os.unlink(wb.db)
    assert addresses(ok(wb.add(config, "c9"))) == ["10.0.0.1/24"]
    assert [c for _, _, _, c, _, _ in wb.rows()] == ["c9"]
    db = sqlite3.connect(wb.db)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        db.close()


# --- DEL ---

def test_del_releases_every_range_and_is_idempotent(wb):
    config = wb.net(range="10.0.0.0/24", ipRanges=[{"range": "fd00::/64"}, {"range": "10.1.0.0/24"}])
    assert addresses(ok(wb.add(config, "c1"))) == ["10.0.0.1/24", "fd00::1/64", "10.1.0.1/24"]
    ok(wb.add(config, "c2"))
    assert ok(wb.delete(config, "c1")) is None
    assert {c for _, _, _, c, _, _ in wb.rows()} == {"c2"} and len(wb.rows()) == 3
    assert ok(wb.delete(config, "c1")) is None
    assert len(wb.rows()) == 3
    # the freed addresses are the lowest free ones again
    assert addresses(ok(wb.add(config, "c3"))) == ["10.0.0.1/24", "fd00::1/64", "10.1.0.1/24"]


def test_del_with_nothing_held_succeeds(wb):
    config = wb.net(range="10.0.0.0/24")
    ok(wb.add(config, "c1"))
    assert ok(wb.delete(config, "never-added")) is None
    assert len(wb.rows()) == 1


def test_del_without_a_store_succeeds_and_creates_nothing(wb):
    assert ok(wb.delete(wb.net(range="10.0.0.0/24"), "c1")) is None
    assert not os.path.exists(wb.db)
    assert not os.path.exists(os.path.dirname(wb.db))


def test_del_frees_even_when_the_ranges_no_longer_parse(wb):
    ok(wb.add(wb.net(range="10.0.0.0/24"), "c1"))
    assert ok(wb.delete(wb.net(range="10.0.0.0/33"), "c1")) is None
    assert wb.rows() == []


# --- CHECK ---

def test_check_passes_after_add_and_fails_after_del(wb):
    config = wb.net(ipRanges=[{"range": "10.0.0.0/24"}, {"range": "fd00::/64"}])
    result = ok(wb.add(config))
    assert ok(wb.check(config, result)) is None
    ok(wb.delete(config))
    error = failed(wb.check(config, result), 7)
    assert "c1/eth0" in error["msg"] and "10.0.0.0/24" in error["msg"]


def test_check_fails_when_prev_result_names_an_address_not_held(wb):
    config = wb.net(range="10.0.0.0/24")
    ok(wb.add(config, "c1"))
    error = failed(wb.check(config, {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.77/24"}]}), 7)
    assert "10.0.0.77/24" in error["msg"]


def test_check_needs_prev_result(wb):
    config = wb.net(range="10.0.0.0/24")
    ok(wb.add(config))
    error = failed(wb.run("CHECK", config, "c1"), 7)
    assert "prevResult" in error["msg"]


# --- GC ---

def test_gc_frees_exactly_the_attachments_not_listed(wb):
    config = wb.net("gcnet", range="10.0.0.0/24")
    other = wb.net("othernet", range="10.9.0.0/24")
    for container in ("keep", "stale-1", "stale-2"):
        ok(wb.add(config, container))
    ok(wb.add(config, "keep", ifname="net2"))
    ok(wb.add(other, "elsewhere"))
    gc = dict(config, cniVersion="1.1.0", **{"cni.dev/valid-attachments": [
        {"containerID": "keep", "ifname": "eth0"}, {"containerID": "stale-2", "ifname": "net9"}]})
    call = ok(wb.run("GC", gc))
    assert call is None
    assert sorted((n, c, i) for _, _, n, c, i, _ in wb.rows()) == [
        ("gcnet", "keep", "eth0"), ("othernet", "elsewhere", "eth0")]


def test_gc_with_an_empty_list_frees_the_whole_network(wb):
    config = wb.net("gcnet", range="10.0.0.0/24")
    ok(wb.add(config, "a"))
    ok(wb.add(config, "b"))
    ok(wb.run("GC", dict(config, cniVersion="1.1.0", **{"cni.dev/valid-attachments": []})))
    assert wb.rows() == []


@pytest.mark.parametrize("attachments,where", [(True, "cni.dev/valid-attachments: expected a list"),
                                               ({"containerID": "a"}, "cni.dev/valid-attachments: expected a list"),
                                               ([{"containerID": ["a"], "ifname": "eth0"}],
                                                "cni.dev/valid-attachments[0]: expected")])
def test_gc_refuses_a_malformed_attachment_list_and_frees_nothing(wb, attachments, where):
    """Found by tests/plugin_fuzz.py: a valid-attachments that is not a list of strings' objects was code 999."""
    config = wb.net("gcnet", range="10.0.0.0/24")
    ok(wb.add(config, "a"))
    error = failed(wb.run("GC", dict(config, cniVersion="1.1.0", **{"cni.dev/valid-attachments": attachments})), 7)
    assert where in error["msg"]
    assert [c for _, _, _, c, _, _ in wb.rows()] == ["a"]


# --- STATUS ---

def test_status_ready(wb):
    assert ok(wb.run("STATUS", wb.net(version="1.1.0", range="10.0.0.0/24"))) is None


def test_status_50_when_the_store_cannot_be_opened(wb, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    config = wb.net(version="1.1.0", range="10.0.0.0/24", sqlite_path=str(blocker / "whereabouts.db"))
    error = failed(wb.run("STATUS", config), 50)
    assert "store unavailable" in error["msg"] and str(blocker) in error["msg"]


def test_a_store_in_a_shared_directory_is_refused_with_code_5_and_status_50(wb, tmp_path):
    """Other local users could read or lock a store there (cni_ipam.store.sqlite, "Private to root"); nothing is created."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    (shared / "other-tool.conf").write_text("{}")
    config = wb.net(version="1.1.0", range="10.0.0.0/24", sqlite_path=str(shared / "whereabouts.db"))
    error = failed(wb.add(config), 5)
    assert f"its directory {shared} is mode 0755" in error["msg"] and f"chmod 0700 {shared}" in error["msg"]
    assert "other-tool.conf" in error["msg"]
    assert str(shared / "whereabouts.db") in failed(wb.run("STATUS", config), 50)["msg"]
    assert sorted(os.listdir(shared)) == ["other-tool.conf"]


def test_status_50_when_the_range_is_full(wb):
    config = wb.net(version="1.1.0", range="10.0.0.0/30")
    ok(wb.add(config, "c1"))
    ok(wb.add(config, "c2"))
    error = failed(wb.run("STATUS", config), 50)
    assert "10.0.0.0/30" in error["msg"] and "no free address" in error["msg"]
    ok(wb.delete(config, "c1"))
    assert ok(wb.run("STATUS", config)) is None


# --- invalid input: code 7 naming key and value, store unchanged ---

@pytest.mark.parametrize("ipam, args, key, value", [
    ({"range": "10.0.0.0/24", "exclude": ["10.0.0.300"]}, "", "ipam.exclude[0]", "10.0.0.300"),
    ({"range": "10.0.0.0/33"}, "", "ipam.range", "10.0.0.0/33"),
    ({"range": "10.0.0.0/24", "rangeStart": "10.0.0.5"}, "", "ipam.rangeStart", "range_start"),
    ({"range": "10.0.0.0/24", "range_start": "10.1.0.5"}, "", "ipam.range_start", "10.1.0.5"),
    ({"range": "10.0.0.0/31"}, "", "ipam.range", "10.0.0.0/31"),
    ({"range": "10.0.0.0/24", "exclude": ["10.0.0.0/28"]}, "IP=10.0.0.5", "CNI_ARGS IP", "10.0.0.5"),
    ({"range": "10.0.0.0/24", "datastore": "mongodb"}, "", "ipam.datastore", "mongodb"),
    ({"range": "10.0.0.0/24", "datastore": "sqlite", "etcd_host": "https://etcd:2379"}, "", "ipam.etcd_host", "sqlite"),
    ({"range": "10.0.0.0/24", "datastore": "kubernetes"}, "", "ipam.datastore", "ipam.kubernetes.kubeconfig"),
])
def test_invalid_input_is_code_7_and_changes_nothing(wb, ipam, args, key, value):
    ok(wb.add(wb.net(range="10.0.0.0/24"), "seed"))
    before = wb.rows()
    error = failed(wb.add(wb.net(**ipam), "c2", args=args), 7)
    assert key in error["msg"] and value in error["msg"]
    assert wb.rows() == before


def test_failure_in_a_later_range_gives_back_the_earlier_ones(wb):
    config = wb.net(range="10.0.0.0/24", ipRanges=[{"range": "10.1.0.0/30"}])
    ok(wb.add(config, "c1"))
    ok(wb.add(config, "c2"))
    before = wb.rows()
    error = failed(wb.add(config, "c3"), 102)
    assert "ipam.ipRanges[0]" in error["msg"] and "10.1.0.0/30" in error["msg"]
    assert wb.rows() == before


def test_unknown_keys_warn_on_stderr_and_still_allocate(wb):
    call = wb.add(wb.net(range="10.0.0.0/24", flavour="vanilla", leader_lease_duration=1500))
    assert addresses(ok(call)) == ["10.0.0.1/24"]
    assert "ipam.flavour is not a whereabouts key" in call.stderr
    assert "ipam.leader_lease_duration is ignored" in call.stderr


# --- requested addresses ---

def test_requested_address_and_address_taken(wb):
    config = wb.net(range="10.0.0.0/24")
    assert addresses(ok(wb.add(config, "c1", args="IgnoreUnknown=1;K8S_POD_NAME=a;IP=10.0.0.50"))) == ["10.0.0.50/24"]
    assert addresses(ok(wb.add(config, "c2"))) == ["10.0.0.1/24"]
    before = wb.rows()
    error = failed(wb.add(config, "c3", args="IP=10.0.0.50"), 101)
    assert "10.0.0.50" in error["msg"] and "c1" in error["msg"]
    assert wb.rows() == before


def test_requested_address_outside_the_ranges_is_an_extra_static_address(wb):
    config = dict(wb.net(range="10.0.0.0/24"), runtimeConfig={"ips": ["198.51.100.7/24"]})
    assert addresses(ok(wb.add(config))) == ["10.0.0.1/24", "198.51.100.7/24"]
    assert [ip for _, ip, *_ in wb.rows()] == ["10.0.0.1"]


def test_runtime_config_ips_pick_the_address_in_the_range(wb):
    config = dict(wb.net(ipRanges=[{"range": "10.0.0.0/24"}, {"range": "fd00::/64"}]),
                  runtimeConfig={"ips": ["10.0.0.9/24", "fd00::9/64"]})
    assert addresses(ok(wb.add(config))) == ["10.0.0.9/24", "fd00::9/64"]


# --- the flat file ---

def test_flat_file_via_configuration_path_supplies_the_range(wb, tmp_path):
    flat = tmp_path / "flat.conf"
    flat.write_text(json.dumps({"range": "192.0.2.192/27", "exclude": ["192.0.2.192/30", "192.0.2.196/32"],
                                "network_name": "from-flat"}))
    config = wb.net(configuration_path=str(flat))
    assert addresses(ok(wb.add(config, "c1"))) == ["192.0.2.197/27"]
    assert wb.rows()[0][:2] == ("from-flat/192.0.2.192/27", "192.0.2.197")
    # the network config wins over the flat file
    assert addresses(ok(wb.add(wb.net(configuration_path=str(flat), range="10.0.0.0/24"), "c2"))) == ["10.0.0.1/24"]


def test_flat_file_directory_means_its_whereabouts_conf(wb, tmp_path):
    directory = tmp_path / "whereabouts.d"
    directory.mkdir()
    (directory / "whereabouts.conf").write_text(json.dumps({"ipRanges": [{"range": "fd00:1::/64"}]}))
    assert addresses(ok(wb.add(wb.net(configuration_path=str(directory))))) == ["fd00:1::1/64"]


def test_flat_file_that_is_not_json_is_code_7(wb, tmp_path):
    flat = tmp_path / "flat.conf"
    flat.write_text("{range: ")
    error = failed(wb.add(wb.net(range="10.0.0.0/24", configuration_path=str(flat))), 7)
    assert str(flat) in error["msg"] and "JSON" in error["msg"]
    assert wb.rows() == []


# --- how allocation failures map to CNI codes (in-process: some cannot be provoked from outside) ---

@pytest.mark.parametrize("exception, code", [
    ("RangeFull", 102), ("AddressTaken", 101), ("LostRaces", 11), ("busy", 11), ("broken", 5),
])
def test_allocation_failures_map_to_codes(exception, code):
    from cni_ipam.allocator import engine
    from cni_ipam.cni.errors import CNIError
    from cni_ipam.plugins.whereabouts import _store_errors
    from cni_ipam.store.base import StoreError

    raised = {"busy": StoreError("database is locked", retry=True), "broken": StoreError("disk I/O error")}.get(
        exception) or getattr(engine, exception)(f"{exception} happened")

    def command(request):
        raise raised

    with pytest.raises(CNIError) as info:
        _store_errors(command)(None)
    assert info.value.code == code
    assert str(raised) in info.value.msg


# --- hostile input: a CNI error, never a traceback, never after committing (issue 14) ---

def test_unusable_lock_file_is_code_11_naming_it_and_status_not_ready(wb):
    config = wb.net(version="1.1.0", range="10.0.0.0/24")
    ok(wb.add(config, "c1"))
    before = wb.rows()
    lock = wb.db + ".lock"
    os.unlink(lock)
    os.mkdir(lock)  # cannot be opened for writing, even by root
    for command, call in (("ADD", lambda: wb.add(config, "c2")), ("DEL", lambda: wb.delete(config, "c1")),
                          ("GC", lambda: wb.run("GC", dict(config, **{"cni.dev/valid-attachments": []})))):
        error = failed(call(), 11)
        assert lock in error["msg"] and "lock file" in error["msg"], command
        assert call().stderr == "", command
    error = failed(wb.run("STATUS", config), 50)
    assert lock in error["msg"]
    assert wb.rows() == before


@pytest.mark.parametrize("name", ["CNI_IFNAME", "CNI_NETNS", "CNI_ARGS"])
def test_variables_not_utf8_are_code_4_and_change_nothing(wb, name):
    config = wb.net(range="10.0.0.0/24")
    ok(wb.add(config, "seed"))
    before = wb.rows()
    env = cni_env("ADD", "c2", NETNS, "eth0", "IgnoreUnknown=1", wb.bin_dir)
    env[name] = b"e\xff"
    call = run_plugin(wb.path, env, config)
    error = failed(call, 4)
    assert error["msg"] == f"{name}: b'e\\xff' is not valid UTF-8"
    assert call.stderr == "" and wb.rows() == before


def test_del_of_an_interface_name_not_utf8_succeeds_and_frees_nothing(wb):
    config = wb.net(range="10.0.0.0/24")
    ok(wb.add(config, "c1"))
    before = wb.rows()
    env = cni_env("DEL", "c1", "", "eth0", "", wb.bin_dir)
    env["CNI_IFNAME"] = b"eth\xff"
    call = run_plugin(wb.path, env, config)
    assert call.exit_code == 0 and "not valid UTF-8" in call.stderr
    assert wb.rows() == before


def test_deeply_nested_config_is_code_6_and_changes_nothing(wb):
    ok(wb.add(wb.net(range="10.0.0.0/24"), "seed"))
    before = wb.rows()
    config = json.dumps(wb.net(range="10.0.0.0/24"))[:-1] + ',"x":' + "[" * 1000 + "]" * 1000 + "}"
    error = failed(wb.run("ADD", config.encode(), "c2"), 6)
    assert "nested more than" in error["msg"] and wb.rows() == before
