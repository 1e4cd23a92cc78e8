"""``cni-ipam verify`` finds damage planted directly in each store, and ``--repair`` fixes what it claims to."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest

from cni_ipam.cli import main
from cni_ipam_lab.namespaces import cni_env, run_plugin
from cni_ipam.store.base import Allocation
from cni_ipam.store.etcd import ip_key, seg
from cni_ipam.store.etcd_client import delete, put
from cni_ipam.store.sqlite import encode_ip

POOL = "/192.0.2.0/28"  # network_name "" and its range: the pool the plugin fills
WIDE = "/192.0.2.0/24"  # another range of the same address space ""


def add(bin_dir, flat, pod) -> str:
    config = {"cniVersion": "1.0.0", "name": "net-a", "type": "macvlan",
              "ipam": {"type": "whereabouts", "range": "192.0.2.0/28", "configuration_path": flat}}
    env = cni_env("ADD", f"cid-{pod}", f"/run/netns/{pod}", "net1", f"K8S_POD_NAMESPACE=apps;K8S_POD_NAME={pod}",
                  bin_dir)
    call = run_plugin(os.path.join(bin_dir, "whereabouts"), env, config)
    assert call.ok, call
    return call.output["ips"][0]["address"].split("/")[0]


def verify(capsys, flat, *extra) -> tuple:
    code = main(["verify", "--config", flat, "--output", "json", *extra])
    report = json.loads(capsys.readouterr().out)
    return code, report


def kinds(report) -> list:
    return sorted(p["kind"] for p in report["problems"])


# --- SQLite --------------------------------------------------------------------------------

@pytest.fixture
def sqlite_flat(bin_dir, tmp_path) -> tuple:
    db = str(tmp_path / "whereabouts.db")
    path = tmp_path / "whereabouts.conf"
    path.write_text(json.dumps({"datastore": "sqlite", "sqlite_path": db}))
    add(bin_dir, str(path), "p0")  # 192.0.2.1
    return str(path), db


def raw_row(db, pool, ip: bytes, cid="cid-planted", space="", created=1.0):
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO allocations VALUES (?,?,?,?,?,?,?,?,?,?)",
                     (pool, ip, space, "net-a", cid, "net1", "", "", "", created))


def test_sqlite_an_address_outside_its_pool_is_found_and_deleted_by_repair(sqlite_flat, capsys):
    flat, db = sqlite_flat
    raw_row(db, POOL, encode_ip(0x0A000005, 4))  # 10.0.0.5 in 192.0.2.0/28
    code, report = verify(capsys, flat)
    assert code == 1 and kinds(report) == ["outside-cidr"]
    assert "10.0.0.5 is outside the CIDR of its pool /192.0.2.0/28" in report["problems"][0]["detail"]
    code, report = verify(capsys, flat, "--repair")
    assert code == 0 and report["problems"] == [] and "deleted 10.0.0.5" in report["repaired"][0]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM allocations").fetchone() == (1,)


@pytest.mark.parametrize("ip, created, why", [
    (b"\x04\xc0\x00", 1.0, "family byte"),  # truncated address
    (encode_ip(0xC0000205, 4), "yesterday", "created is a text"),
])
def test_sqlite_rows_that_break_the_schema_are_found_and_deleted_by_repair(sqlite_flat, capsys, ip, created, why):
    flat, db = sqlite_flat
    raw_row(db, POOL, ip, created=created)
    code, report = verify(capsys, flat)
    assert code == 1 and kinds(report) == ["bad-row"] and why in report["problems"][0]["detail"]
    code, report = verify(capsys, flat, "--repair")
    assert code == 0 and len(report["repaired"]) == 1
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT container_id FROM allocations").fetchall() == [("cid-p0",)]


def test_sqlite_a_duplicate_in_one_space_is_found_and_left_for_a_decision(sqlite_flat, capsys):
    flat, db = sqlite_flat
    with sqlite3.connect(db) as conn:
        conn.execute("DROP INDEX allocations_space")  # what lets a duplicate in
    raw_row(db, WIDE, encode_ip(0xC0000201, 4))  # 192.0.2.1 again, in another pool of space ""
    code, report = verify(capsys, flat)
    assert code == 1 and kinds(report) == ["duplicate", "missing-index"]
    duplicate = next(p for p in report["problems"] if p["kind"] == "duplicate")
    assert "192.0.2.1 is held twice" in duplicate["detail"] and "cid-planted" in duplicate["detail"]
    assert not duplicate["repairable"] and "cni-ipam release --container-id" in duplicate["hint"]
    code, report = verify(capsys, flat, "--repair")  # nothing safe to do while the duplicate stays
    assert code == 1 and report["repaired"] == [] and kinds(report) == ["duplicate", "missing-index"]

    assert main(["release", "--container-id", "cid-planted", "--config", flat, "--force"]) == 0
    capsys.readouterr()
    code, report = verify(capsys, flat, "--repair")  # now the index comes back
    assert code == 0 and report["repaired"] == ["recreated the unique index allocations_space"]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'allocations_space'").fetchone() == (1,)


def test_sqlite_verify_text_output_names_the_problem_and_the_fix(sqlite_flat, capsys):
    flat, db = sqlite_flat
    raw_row(db, POOL, encode_ip(0x0A000005, 4))
    assert main(["verify", "--config", flat]) == 1
    out = capsys.readouterr().out
    assert "outside-cidr: 10.0.0.5" in out and "(verify --repair fixes this)" in out and "1 problem(s)" in out


# --- etcd ----------------------------------------------------------------------------------

@pytest.fixture
def etcd_flat(bin_dir, etcd_flat_file) -> str:
    add(bin_dir, etcd_flat_file, "p0")  # 192.0.2.1
    return etcd_flat_file


def record(pool, ip, cid="cid-planted", space="") -> bytes:
    return json.dumps(Allocation(pool, ip, 4, "net-a", cid, "net1", space=space, created=1.0).to_dict()).encode()


def test_etcd_a_space_key_without_its_record_is_found_and_deleted(etcd_flat, client, etcd_prefix, capsys):
    leaked = f"{etcd_prefix}spaces/{seg('')}/{ip_key(0xC0000207, 4)}".encode()
    client.txn([], [put(leaked, POOL.encode())])
    code, report = verify(capsys, etcd_flat)
    assert code == 1 and kinds(report) == ["unbacked-space-key"] and "192.0.2.7" in report["problems"][0]["detail"]
    code, report = verify(capsys, etcd_flat, "--repair")
    assert code == 0 and "deleted the unbacked claim of 192.0.2.7" in report["repaired"][0]
    assert client.get(leaked) is None


@pytest.mark.parametrize("section", ["attachments", "pods"])
def test_etcd_an_index_entry_without_its_record_is_found_and_deleted(etcd_flat, client, etcd_prefix, capsys,
                                                                        section):
    ipk = ip_key(0xC0000208, 4)
    path = f"net-a/cid-gone/net1/{seg(POOL)}/{ipk}" if section == "attachments" else f"apps%2Fgone/net1/{seg(POOL)}/{ipk}"
    orphan = f"{etcd_prefix}{section}/{path}".encode()
    client.txn([], [put(orphan, record(POOL, 0xC0000208))])
    code, report = verify(capsys, etcd_flat)
    assert code == 1 and kinds(report) == ["orphan-index"]
    code, report = verify(capsys, etcd_flat, "--repair")
    assert code == 0 and report["repaired"][0].startswith("deleted the orphan index entry")
    assert client.get(orphan) is None


def test_etcd_a_record_whose_space_key_is_missing_gets_it_back(etcd_flat, client, etcd_prefix, capsys):
    claim = f"{etcd_prefix}spaces/{seg('')}/{ip_key(0xC0000201, 4)}".encode()
    assert client.get(claim) is not None  # the plugin wrote it
    client.txn([], [delete(claim)])
    code, report = verify(capsys, etcd_flat)
    assert code == 1 and kinds(report) == ["missing-space-key"]
    code, report = verify(capsys, etcd_flat, "--repair")
    assert code == 0 and "restored the claim of 192.0.2.1" in report["repaired"][0]
    assert client.get(claim)["value"] == POOL.encode()


def test_etcd_a_record_outside_its_pool_is_found_and_released(etcd_flat, client, etcd_prefix, capsys):
    key = f"{etcd_prefix}pools/{seg(POOL)}/{ip_key(0x0A000005, 4)}".encode()
    client.txn([], [put(key, record(POOL, 0x0A000005, space=None))])
    code, report = verify(capsys, etcd_flat)
    assert code == 1 and kinds(report) == ["outside-cidr"] and "10.0.0.5" in report["problems"][0]["detail"]
    code, report = verify(capsys, etcd_flat, "--repair")
    assert code == 0 and "released 10.0.0.5" in report["repaired"][0]
    assert client.get(key) is None


def test_etcd_a_duplicate_across_pools_of_one_space_is_found_and_left(etcd_flat, client, etcd_prefix, capsys):
    key = f"{etcd_prefix}pools/{seg(WIDE)}/{ip_key(0xC0000201, 4)}".encode()  # 192.0.2.1 again, another pool
    client.txn([], [put(key, record(WIDE, 0xC0000201))])
    code, report = verify(capsys, etcd_flat, "--repair")
    assert code == 1 and kinds(report) == ["duplicate"] and report["repaired"] == []
    assert "/192.0.2.0/24 by net-a/cid-planted/net1" in report["problems"][0]["detail"]
    assert client.get(key) is not None


def test_etcd_an_unreadable_record_is_reported_not_deleted(etcd_flat, client, etcd_prefix, capsys):
    key = f"{etcd_prefix}pools/{seg(POOL)}/{ip_key(0xC0000209, 4)}".encode()
    client.txn([], [put(key, b"{not json")])
    code, report = verify(capsys, etcd_flat, "--repair")
    assert code == 1 and kinds(report) == ["bad-record"] and client.get(key) is not None
    assert main(["allocations", "--config", etcd_flat]) == 1  # the listing says where to look, not a traceback
    assert "unreadable record" in capsys.readouterr().err
