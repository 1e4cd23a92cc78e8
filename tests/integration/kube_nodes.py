"""Simulated nodes for the ``whereabouts`` executables on the Kubernetes store, and reading objects back over HTTP.

A node is a CNO-style whereabouts.d directory (flat file, kubeconfig,
``nodename``) as OpenShift's cluster-network-operator writes it
(bindata/network/multus/multus.yaml @ 2a6a57fef3ac1c8fde00e85b603e9f73ef29b75c).
"""

from __future__ import annotations

import json
import os

from kubeapi.kubeconfig import write_kubeconfig

from cni_ipam_lab.namespaces import cni_env, run_plugin

GV = "/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces/kube-system"
POOLS = f"{GV}/ippools"
RESERVATIONS = f"{GV}/overlappingrangeipreservations"


class Node:
    """One simulated node: a CNO-style whereabouts.d directory (flat file, kubeconfig, nodename) and its calls."""

    def __init__(self, bin_dir, server, directory, name="node-a", env=None, **kubeconfig) -> None:
        os.makedirs(directory, exist_ok=True)
        self.bin_dir = bin_dir
        self.env = dict(env or {})  # added to each call's environment (NODENAME...)
        self.directory = str(directory)
        self.kubeconfig = write_kubeconfig(server, os.path.join(self.directory, "whereabouts.kubeconfig"),
                                           token_file=True, **kubeconfig)
        flat = {"datastore": "kubernetes", "kubernetes": {"kubeconfig": self.kubeconfig},
                "reconciler_cron_expression": "30 4 * * *", "log_level": "verbose",
                "configuration_path": self.directory}
        with open(os.path.join(self.directory, "whereabouts.conf"), "w") as stream:
            stream.write(json.dumps(flat, separators=(",", ":")))
        with open(os.path.join(self.directory, "nodename"), "w") as stream:
            stream.write(name + "\n")

    def net(self, net="kube-net", version="1.0.0", **ipam) -> dict:
        ipam = {"type": "whereabouts", "configuration_path": self.directory, **ipam}
        ipam.setdefault("range", "10.40.0.0/24")
        return {"cniVersion": version, "name": net, "type": "whereabouts", "ipam": ipam}

    def run(self, command, config, cid="c1", ifname="eth0", args="K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod"):
        env = cni_env(command, cid, f"/var/run/netns/{cid}", ifname, args, cni_path=self.bin_dir, extra=self.env)
        return run_plugin(os.path.join(self.bin_dir, "whereabouts"), env, config, timeout=120)


def ok(call):
    assert call.ok, call
    return call.output


def failed(call, code):
    assert not call.ok and call.output["code"] == code, call
    return call.output


def ips(output) -> list:
    return [ip["address"].split("/")[0] for ip in output["ips"]]


def get(server, path):
    code, _, body = server.request("GET", path)
    return body if code == 200 else None


def pools(server) -> dict:
    return {p["metadata"]["name"]: p for p in get(server, POOLS)["items"]}


def reservations(server) -> dict:
    return {r["metadata"]["name"]: r["spec"] for r in get(server, RESERVATIONS)["items"]}
