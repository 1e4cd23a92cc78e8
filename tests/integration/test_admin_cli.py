"""``cni-ipam`` admin commands on both real stores, with allocations made by the real plugin executable."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

from cni_ipam.cli import main
from cni_ipam_lab.namespaces import cni_env, run_plugin

RANGE = "192.0.2.0/28"  # 14 usable; 192.0.2.1 excluded: 13 allocatable
STORES = ("sqlite", "etcd")


@pytest.fixture(params=STORES)
def flat(request, tmp_path) -> str:
    """A flat file naming a fresh store of each kind."""
    if request.param == "etcd":
        cluster = request.getfixturevalue("etcd_cluster")
        settings = {"datastore": "etcd", "etcd_endpoints": cluster.endpoints,
                    "etcd_prefix": request.getfixturevalue("etcd_prefix")}
    else:
        settings = {"datastore": "sqlite", "sqlite_path": str(tmp_path / "whereabouts.db")}
    path = tmp_path / "whereabouts.conf"
    path.write_text(json.dumps(settings))
    return str(path)


def add(bin_dir, flat, pod, netns=None, network="net-a", rng=RANGE, node=None, ifname="net1") -> str:
    config = {"cniVersion": "1.0.0", "name": network, "type": "macvlan",
              "ipam": {"type": "whereabouts", "range": rng, "exclude": ["192.0.2.1/32"], "configuration_path": flat}}
    env = cni_env("ADD", f"cid-{pod}", netns or f"/run/netns/none-{pod}", ifname,
                  f"K8S_POD_NAMESPACE=apps;K8S_POD_NAME={pod}", bin_dir, extra={"NODENAME": node} if node else None)
    call = run_plugin(os.path.join(bin_dir, "whereabouts"), env, config)
    assert call.ok, call
    return call.output["ips"][0]["address"].split("/")[0]


def cli(capsys, *argv) -> tuple:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def held(capsys, flat) -> list:
    code, out, err = cli(capsys, "allocations", "--config", flat, "--output", "json")
    assert code == 0, err
    return sorted(r["ip"] for r in json.loads(out))


# --- pools ---------------------------------------------------------------------------------

def test_pools_table_json_and_yaml_count_from_the_range_definition(bin_dir, flat, capsys):
    for pod in ("p0", "p1", "p2"):
        add(bin_dir, flat, pod)
    code, out, err = cli(capsys, "pools", "--config", flat, "--output", "json")
    assert code == 0, err
    [row] = json.loads(out)
    assert (row["pool"], row["cidr"], row["range"], row["excluded"]) == (
        "/" + RANGE, RANGE, "192.0.2.1-192.0.2.14", ["192.0.2.1-192.0.2.1"])
    assert (row["size"], row["size_from"], row["held"], row["free"], row["percent_used"]) == (13, "range", 3, 10, 23.1)

    code, out, _ = cli(capsys, "pools", "--config", flat)
    header, line = out.splitlines()
    assert header.split()[:7] == ["POOL", "SPACE", "RANGE", "SIZE", "HELD", "FREE", "USED"]
    assert line.split()[:7] == ["/" + RANGE, '""', "192.0.2.1-192.0.2.14", "13", "3", "10", "23.1%"]
    assert "[#####...............]" in line and line.endswith("range")

    code, out, _ = cli(capsys, "pools", "--config", flat, "-o", "yaml")
    assert yaml.safe_load(out)[0]["free"] == 10


def test_pools_of_an_empty_store_is_just_the_header(flat, capsys):
    if "sqlite" in open(flat).read():  # no file yet: the command says so instead of creating one
        code, out, err = cli(capsys, "pools", "--config", flat)
        assert code == 2 and "no SQLite store" in err and "--config" in err
        return
    code, out, err = cli(capsys, "pools", "--config", flat)
    assert code == 0 and out.split() == ["POOL", "SPACE", "RANGE", "SIZE", "HELD", "FREE", "USED", "SIZE", "FROM"]


# --- allocations ---------------------------------------------------------------------------

def test_allocations_lists_who_holds_what_and_filters(bin_dir, flat, capsys):
    a0 = add(bin_dir, flat, "p0")
    a1 = add(bin_dir, flat, "p1", node="node-b")
    b0 = add(bin_dir, flat, "q0", network="net-b", rng="198.51.100.0/28")
    code, out, err = cli(capsys, "allocations", "--config", flat, "-o", "json")
    assert code == 0, err
    rows = {r["ip"]: r for r in json.loads(out)}
    assert set(rows) == {a0, a1, b0}
    assert rows[a1]["pod"] == "apps/p1" and rows[a1]["node"] == "node-b" and rows[a1]["container_id"] == "cid-p1"
    assert rows[a0]["node"] == os.uname().nodename and rows[a0]["since"].endswith("Z")

    code, out, _ = cli(capsys, "allocations", "--config", flat)
    lines = out.splitlines()
    assert lines[0].split() == ["ADDRESS", "POOL", "NETWORK", "POD", "CONTAINER", "IFNAME", "NODE", "SINCE"]
    assert sorted(line.split()[0] for line in lines[1:]) == sorted([a0, a1, b0])
    assert [line.split()[6] for line in lines[1:] if line.startswith(a1 + " ")] == ["node-b"]

    def only(*extra):
        code, out, err = cli(capsys, "allocations", "--config", flat, "-o", "json", *extra)
        assert code == 0, err
        return sorted(r["ip"] for r in json.loads(out))
    assert only("--network", "net-b") == [b0]
    assert only("--range", "198.51.100.0/28") == [b0]
    assert only("--range", "/" + RANGE) == sorted([a0, a1])
    assert only("--pod", "apps/p1") == [a1]
    assert only("--ip", a0) == [a0]
    assert only("--ip", a0, "--network", "net-b") == []
    code, _, err = cli(capsys, "allocations", "--config", flat, "--ip", "192.0.2.x")
    assert code == 2 and "not an IP address" in err


# --- release -------------------------------------------------------------------------------

def test_release_refuses_a_live_pod_unless_forced_and_frees_a_gone_one(bin_dir, flat, capsys, tmp_path):
    alive_ns = tmp_path / "netns-alive"  # a plain file stands in for the pod's netns path
    alive_ns.write_text("")
    alive = add(bin_dir, flat, "alive", netns=str(alive_ns))
    gone = add(bin_dir, flat, "gone", netns=str(tmp_path / "netns-gone"))

    code, out, err = cli(capsys, "release", alive, "--config", flat)
    assert code == 1 and "refused" in err and str(alive_ns) in err and "--force" in err
    assert held(capsys, flat) == sorted([alive, gone])

    code, out, err = cli(capsys, "release", gone, "--config", flat, "--dry-run")
    assert code == 0 and out.startswith(f"would free {gone}")
    assert held(capsys, flat) == sorted([alive, gone])

    code, out, err = cli(capsys, "release", gone, "--config", flat, "--output", "json")
    assert code == 0, err
    assert [(r["ip"], r["action"], r["pod_state"]) for r in json.loads(out)] == [(gone, "released", "gone")]
    assert held(capsys, flat) == [alive]

    code, out, err = cli(capsys, "release", alive, "--config", flat, "--force")
    assert code == 0 and out.startswith(f"freed {alive}")
    assert held(capsys, flat) == []
    assert add(bin_dir, flat, "next") == "192.0.2.2"  # the freed address is handed out again


def test_release_on_another_node_needs_force_and_says_why(bin_dir, flat, capsys):
    ip = add(bin_dir, flat, "far", node="node-b")
    code, out, err = cli(capsys, "release", ip, "--config", flat)
    assert code == 1 and "node-b" in err and "cannot be told from here" in err
    assert held(capsys, flat) == [ip]
    code, out, err = cli(capsys, "release", ip, "--config", flat, "--force")
    assert code == 0 and held(capsys, flat) == []


def test_release_by_container_id_and_ifname(bin_dir, flat, capsys, tmp_path):
    one = add(bin_dir, flat, "multi", netns=str(tmp_path / "gone"), ifname="net1")
    two = add(bin_dir, flat, "multi", netns=str(tmp_path / "gone"), ifname="net2")
    code, out, err = cli(capsys, "release", "--container-id", "cid-multi", "--ifname", "net2", "--config", flat)
    assert code == 0, err
    assert held(capsys, flat) == [one]
    code, out, err = cli(capsys, "release", "--container-id", "cid-nobody", "--config", flat)
    assert code == 1 and "nothing is allocated to container cid-nobody" in err
    code, out, err = cli(capsys, "release", "--config", flat)
    assert code == 2 and "--container-id" in err
    assert two not in held(capsys, flat)


@pytest.mark.skipif(os.geteuid() != 0, reason="ip netns add needs root")
def test_release_refuses_a_pod_in_a_real_network_namespace(bin_dir, flat, capsys):
    name = f"cni-ipam-admin-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        ip = add(bin_dir, flat, "real", netns=f"/run/netns/{name}")
        code, out, err = cli(capsys, "release", ip, "--config", flat)
        assert code == 1 and f"/run/netns/{name} still exists" in err
        assert held(capsys, flat) == [ip]
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)
    code, out, err = cli(capsys, "release", ip, "--config", flat)
    assert code == 0 and held(capsys, flat) == []


# --- verify, export, import ----------------------------------------------------------------

def test_verify_says_a_clean_store_is_consistent(bin_dir, flat, capsys):
    add(bin_dir, flat, "p0")
    code, out, err = cli(capsys, "verify", "--config", flat)
    assert code == 0 and "store is consistent" in out
    code, out, err = cli(capsys, "verify", "--config", flat, "--output", "json")
    assert code == 0 and json.loads(out)["problems"] == []


def test_export_then_import_into_the_same_store_is_idempotent_and_conflicts_are_refused(
        bin_dir, flat, capsys, tmp_path):
    add(bin_dir, flat, "p0")
    add(bin_dir, flat, "p1")
    code, out, err = cli(capsys, "export", "--config", flat)
    assert code == 0, err
    state = json.loads(out)
    assert [a["ip"] for a in state["allocations"]] == ["192.0.2.2", "192.0.2.3"]
    assert [h["key"] for h in state["hints"]] == ["|space|192.0.2.0/28|192.0.2.1-192.0.2.14|192.0.2.1-192.0.2.1"]
    path = tmp_path / "state.json"
    path.write_text(out)
    code, out, err = cli(capsys, "import", str(path), "--config", flat, "--dry-run")
    assert code == 0 and out == "would import 0 allocation(s); 2 already there\n"
    code, out, err = cli(capsys, "import", str(path), "--config", flat)
    assert code == 0 and "imported 0 allocation(s)" in out and "2 already there" in out

    state["allocations"][0]["container_id"] = "cid-intruder"  # 192.0.2.2 for someone else: a conflict
    state["allocations"].append(dict(state["allocations"][1], ip="192.0.2.9", container_id="cid-new"))
    path.write_text(json.dumps(state))
    before = held(capsys, flat)
    code, out, err = cli(capsys, "import", str(path), "--config", flat)
    assert code == 1 and "conflict: 192.0.2.2" in err and "cid-intruder" in err and "nothing imported" in err
    assert held(capsys, flat) == before  # 192.0.2.9 was not written either

    del state["allocations"][0]  # without the conflict, the new one goes in
    path.write_text(json.dumps(state))
    code, out, err = cli(capsys, "import", str(path), "--config", flat, "--dry-run")
    assert code == 0 and out == "would import 1 allocation(s); 1 already there\n"
    assert held(capsys, flat) == before
    code, out, err = cli(capsys, "import", str(path), "--config", flat)
    assert code == 0 and held(capsys, flat) == before + ["192.0.2.9"]


def test_import_rejects_a_file_that_is_not_an_export(flat, capsys, tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"allocations": []}))
    code, out, err = cli(capsys, "import", str(path), "--config", flat)
    assert code == 2 and "not a cni-ipam export" in err and "cni-ipam export" in err


def test_export_progress_goes_to_stderr_with_progress(bin_dir, flat, capsys, tmp_path):
    add(bin_dir, flat, "p0")
    out_file = tmp_path / "s.json"
    code, out, err = cli(capsys, "export", "--config", flat, "--file", str(out_file), "--progress")
    assert code == 0 and out == ""
    assert "export: 1/1" in err and json.loads(out_file.read_text())["allocations"][0]["ip"] == "192.0.2.2"
    code, out, err = cli(capsys, "export", "--config", flat, "--file", str(out_file))
    assert "export: 1/1" not in err  # not a terminal, no --progress: quiet


def test_config_errors_say_what_to_change(capsys, tmp_path):
    code, out, err = cli(capsys, "pools", "--config", str(tmp_path / "missing.conf"))
    assert code == 2 and "missing.conf: no such file" in err
    bad = tmp_path / "bad.conf"
    bad.write_text(json.dumps({"datastore": "mysql"}))
    code, out, err = cli(capsys, "allocations", "--config", str(bad))
    assert code == 2 and '"mysql" is not a datastore' in err and "sqlite" in err


def test_every_admin_command_has_help_with_examples(capsys):
    for command in ("pools", "allocations", "release", "verify", "export", "import"):
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        out = capsys.readouterr().out
        assert done.value.code == 0 and "--config" in out and f"examples:\n  cni-ipam {command}" in out
