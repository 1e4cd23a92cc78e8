"""Moving the whole state from the SQLite store to an empty etcd prefix with ``cni-ipam export``/``import``."""

from __future__ import annotations

import json
import os

from cni_ipam.cli import main
from cni_ipam_lab.namespaces import cni_env, run_plugin


def add(bin_dir, flat, pod, rng="192.0.2.0/28", network_name=""):
    config = {"cniVersion": "1.0.0", "name": "net-a", "type": "macvlan",
              "ipam": {"type": "whereabouts", "range": rng, "network_name": network_name,
                       "configuration_path": flat}}
    env = cni_env("ADD", f"cid-{pod}", f"/run/netns/{pod}", "net1", f"K8S_POD_NAMESPACE=apps;K8S_POD_NAME={pod}",
                  bin_dir)
    call = run_plugin(os.path.join(bin_dir, "whereabouts"), env, config)
    assert call.ok, call
    return call.output["ips"][0]["address"]


def json_of(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_export_from_sqlite_then_import_into_an_empty_etcd_keeps_every_address(
        bin_dir, etcd_cluster, etcd_prefix, tmp_path, capsys):
    sqlite_flat = tmp_path / "sqlite.conf"
    sqlite_flat.write_text(json.dumps({"datastore": "sqlite", "sqlite_path": str(tmp_path / "w.db")}))
    etcd_flat = tmp_path / "etcd.conf"
    etcd_flat.write_text(json.dumps({"datastore": "etcd", "etcd_endpoints": etcd_cluster.endpoints,
                                     "etcd_prefix": etcd_prefix}))
    for pod in ("a", "b", "c"):
        add(bin_dir, str(sqlite_flat), pod)
    add(bin_dir, str(sqlite_flat), "v6", rng="2001:db8::/64", network_name="blue")
    add(bin_dir, str(sqlite_flat), "b2", rng="2001:db8::/64", network_name="blue")

    state = tmp_path / "state.json"
    assert main(["export", "--config", str(sqlite_flat), "--file", str(state)]) == 0
    capsys.readouterr()
    assert main(["import", str(state), "--config", str(etcd_flat), "--progress"]) == 0
    out, err = capsys.readouterr()
    assert "imported 5 allocation(s) and 2 hint(s)" in out and "import: 5/5" in err

    before = json_of(capsys, "allocations", "--config", str(sqlite_flat), "-o", "json")
    after = json_of(capsys, "allocations", "--config", str(etcd_flat), "-o", "json")
    assert len(before) == 5 and after == before  # every field, the creation time included
    assert json_of(capsys, "pools", "--config", str(etcd_flat), "-o", "json") == json_of(
        capsys, "pools", "--config", str(sqlite_flat), "-o", "json")  # hints came along: sizes from the range

    assert main(["import", str(state), "--config", str(etcd_flat)]) == 0  # again: nothing changes
    assert "imported 0 allocation(s)" in capsys.readouterr().out
    assert json_of(capsys, "allocations", "--config", str(etcd_flat), "-o", "json") == before
    assert main(["verify", "--config", str(etcd_flat)]) == 0
    capsys.readouterr()
    # the plugin on etcd carries on after the last imported address
    assert add(bin_dir, str(etcd_flat), "d") == "192.0.2.4/28"
