"""The node agent on the etcd store: its concurrent calls on one range pass by what the others are claiming
(cni_ipam.store.claims), so N ADDs at once cost about N claim transactions, not several each."""

from __future__ import annotations

import ipaddress
import json
import os
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from cni_ipam_lab.namespaces import cni_env, run_plugin

ADDS = 24


def etcd_txns(cluster) -> float:
    """Txn requests the members have served (their /metrics), summed: reads of several ranges are Txns too."""
    total = 0.0
    for member in cluster.members:
        with urllib.request.urlopen(member.client_url + "/metrics", timeout=5) as answer:
            for line in answer.read().decode().splitlines():
                if (line.startswith("grpc_server_handled_total{") and 'grpc_service="etcdserverpb.KV"' in line
                        and 'grpc_method="Txn"' in line):
                    total += float(line.rsplit(" ", 1)[1])
    return total


def test_concurrent_adds_through_one_agent_make_about_one_claim_each(plugin_bin_dir, tmp_path, agent, etcd_cluster,
                                                                     etcd_prefix):
    socket_path, _ = agent
    flat = tmp_path / "whereabouts.conf"
    flat.write_text(json.dumps({"datastore": "etcd", "etcd_endpoints": list(etcd_cluster.endpoints),
                                "etcd_prefix": etcd_prefix}))
    conf = {"cniVersion": "1.0.0", "name": "agent-etcd", "type": "bridge",
            "ipam": {"type": "whereabouts", "range": "10.31.0.0/16", "configuration_path": str(flat)}}

    def add(cid: str):
        env = cni_env("ADD", cid, "/run/netns/none", "net1", "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=" + cid,
                      plugin_bin_dir, extra={"CNI_IPAM_AGENT_SOCKET": socket_path})
        return run_plugin(os.path.join(plugin_bin_dir, "whereabouts"), env, conf)

    assert add("warm").ok  # the agent opens its first store and the range's hint exists
    before = etcd_txns(etcd_cluster)
    with ThreadPoolExecutor(ADDS) as pool:
        results = list(pool.map(add, [f"c{n}" for n in range(ADDS)]))
    txns = etcd_txns(etcd_cluster) - before
    assert all(r.ok for r in results), [r for r in results if not r.ok][:2]
    got = [ipaddress.ip_interface(r.output["ips"][0]["address"]).ip for r in results]
    assert len(set(got)) == ADDS
    # Per ADD: one read (what the attachment holds, the hint), one claim; a few more for lost hint races.
    # Without the agent's shared claims, its calls all claim the hint's address: 5-7 Txns per ADD.
    claims = txns - ADDS
    assert claims <= ADDS + 6, f"{txns:g} etcd Txns for {ADDS} ADDs: {claims:g} claims"
