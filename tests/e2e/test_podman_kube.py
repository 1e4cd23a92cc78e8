"""The whereabouts examples under podman with ``"datastore": "kubernetes"``, against the test API server.

podman (Debian's 4.3, CNI backend) runs Debian's ``bridge``, which execs our
``whereabouts``; the allocations land in upstream whereabouts' objects on
tests/kubeapi (real etcd underneath).  We read the objects back over HTTP
and compare them with upstream's shape: an IPPool per range (and
``network_name``) whose ``spec.allocations`` maps the address's offset to
``{id, podref, ifname}``, and an OverlappingRangeIPReservation per address
(k8snetworkplumbingwg/whereabouts pkg/storage/kubernetes/ipam.go @ v0.9.4,
3a262bd0cd873e13d9b379342f8251b852a89b8f).  podman sends ``K8S_POD_NAME``
(the container's name) and no namespace, so ``podref`` is the bare name.

Each podman run costs seconds: one container per example, a few for the
lifecycle and overlap tests.
"""

from __future__ import annotations

import json
import os

import pytest
from kubeapi.kubeconfig import write_kubeconfig

from cni_ipam_lab.podman import IMAGE, unavailable

pytestmark = pytest.mark.root

_why = unavailable()
if _why:
    pytest.skip(f"podman e2e: {_why}", allow_module_level=True)

GROUP = "/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces"


@pytest.fixture
def pm(podman):
    """The module's podman, with no ``NODENAME`` reaching the plugins (it would win over the nodename file)."""
    podman.env.pop("NODENAME", None)
    return podman


def kube_ipam(kubeconfig: str, **ipam) -> dict:
    return dict(ipam, type="whereabouts", datastore="kubernetes", kubernetes={"kubeconfig": kubeconfig})


@pytest.fixture
def kubeconfig(kube_api, tmp_path) -> str:
    """A kubeconfig for ``kube_api`` whose context names no namespace: the objects go to kube-system."""
    return write_kubeconfig(kube_api, str(tmp_path / "whereabouts.kubeconfig"))


def objects(server, resource: str, namespace: str = "kube-system") -> dict:
    code, _, body = server.request("GET", f"{GROUP}/{namespace}/{resource}")
    assert code == 200, body
    return {item["metadata"]["name"]: item for item in body["items"]}


def allocations(server, namespace: str = "kube-system") -> dict:
    """``{IPPool name: spec.allocations}``, pools with nothing held included (``{}``)."""
    return {name: pool["spec"].get("allocations") or {} for name, pool in objects(server, "ippools", namespace).items()}


def held(server, namespace: str = "kube-system") -> dict:
    """Only the pools that hold something."""
    return {name: a for name, a in allocations(server, namespace).items() if a}


def reservations(server, namespace: str = "kube-system") -> dict:
    return {name: r["spec"] for name, r in objects(server, "overlappingrangeipreservations", namespace).items()}


def container_id(podman, name: str) -> str:
    return podman.ok("inspect", "--format", "{{.Id}}", name).strip()


def entry(podman, name: str, ifname: str = "eth0") -> dict:
    """The ``spec.allocations`` value upstream writes for this container's interface."""
    return {"id": container_id(podman, name), "podref": name, "ifname": ifname}


# -- the examples of docs/whereabouts.md and MISSION.md, one container each ---------------------------

EXAMPLES = [
    # ipam (beside type/datastore/kubernetes), podman options, addresses, {IPPool: (spec.range, offset held)}
    pytest.param({"range": "192.0.2.192/27", "exclude": ["192.0.2.192/30", "192.0.2.196/32"]}, (),
                 ["192.0.2.197/27"], {"192.0.2.192-27": ("192.0.2.192/27", "5")}, id="exclude"),
    pytest.param({"range": "10.89.41.0/24", "range_start": "10.89.41.10", "range_end": "10.89.41.20"}, (),
                 ["10.89.41.10/24"], {"10.89.41.0-24": ("10.89.41.0/24", "10")}, id="range_start-range_end"),
    pytest.param({"range": "fd00:42::/64"}, (), ["fd00:42::1/64"], {"fd00-42---64": ("fd00:42::/64", "1")},
                 id="ipv6"),
    pytest.param({"ipRanges": [{"range": "192.168.10.0/24"}, {"range": "fd00::/64"}]}, (),
                 ["192.168.10.1/24", "fd00::1/64"],
                 {"192.168.10.0-24": ("192.168.10.0/24", "1"), "fd00---64": ("fd00::/64", "1")}, id="dual-stack"),
    pytest.param({"range": "10.89.43.0/24"}, ("--ip", "10.89.43.50"), ["10.89.43.50/24"],
                 {"10.89.43.0-24": ("10.89.43.0/24", "50")}, id="requested-ip"),
]


@pytest.mark.parametrize("ipam, options, addresses, pools", EXAMPLES)
def test_example_on_the_kubernetes_datastore(pm, kube_api, kubeconfig, ipam, options, addresses, pools):
    """The container gets the example's address(es); the IPPools hold them as upstream writes them, each
    with its reservation; ``podman rm`` (DEL from conmon) empties both."""
    net = pm.network("pk-ex", kube_ipam(kubeconfig, **ipam))
    box = pm.start("pk-ex", net, *options)
    assert sorted(pm.addresses(box)) == sorted(addresses)
    mine = entry(pm, box)
    found = objects(kube_api, "ippools")
    assert {name: pool["spec"] for name, pool in found.items()} == {
        name: {"range": cidr, "allocations": {offset: mine}} for name, (cidr, offset) in pools.items()}
    assert reservations(kube_api) == {a.split("/")[0].replace(":", "-"): {"podref": box, "ifname": "eth0",
                                                                          "containerid": mine["id"]}
                                      for a in addresses}
    pm.ok("rm", "-f", "-t", "0", box)
    assert held(kube_api) == {} and reservations(kube_api) == {}
    assert sorted(allocations(kube_api)) == sorted(pools)  # the pools stay, empty, as upstream leaves them
