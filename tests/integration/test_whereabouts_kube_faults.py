"""The ``whereabouts`` executables on the Kubernetes store under faults: answers lost after a write
committed, the API server killed (SIGKILL) and restarted, an etcd leader killed, 409/422/429 storms.

What must hold whatever fails (as for the etcd store, tests/integration/test_etcd_faults.py):

* no address is ever held twice, and every ADD that answered with a result
  is in the IPPool with exactly that address (zero lost allocations);
* an ADD that fails does so with code 11 and holds nothing afterwards: no
  pool entry and no OverlappingRangeIPReservation of its container;
* the faults hit the run: the server's fault counters, and kill times that
  fall inside the calls' spans.
"""

from __future__ import annotations

import ipaddress
import threading
import time

import pytest
from kube_nodes import Node, failed, ips, ok, pools, reservations

RANGE = "10.80.0.0/24"
POOL = "10.80.0.0-24"
NODES, PER_NODE = 4, 8


def held(server) -> dict:
    """Container ID -> [addresses] the pool holds for it (read over HTTP until the server answers)."""
    give_up = time.monotonic() + 30
    while True:
        try:
            pool = pools(server).get(POOL)
            break
        except (OSError, TypeError):  # the server is down (killed) just now
            if time.monotonic() > give_up:
                raise
            time.sleep(0.1)
    found = {}
    for key, value in ((pool or {}).get("spec", {}).get("allocations") or {}).items():
        found.setdefault(value["id"], []).append(str(ipaddress.ip_address(RANGE.split("/")[0]) + int(key)))
    return found


def reserved_by(server) -> dict:
    """Container ID -> [reservation names] (ours record the container)."""
    found = {}
    for name, spec in reservations(server).items():
        found.setdefault(spec.get("containerid", ""), []).append(name)
    return found


# --- an answer lost after the write committed ---

@pytest.mark.parametrize("verb,resource", [("patch", "ippools"), ("create", "ippools"),
                                           ("create", "overlappingrangeipreservations")])
def test_a_write_whose_answer_is_lost_is_recognised_as_ours(bin_dir, kube_api, tmp_path, verb, resource):
    """The client retries a request whose connection dropped; if the first one committed, the retry meets our
    own write (422 on the pool's ``test``, 409 AlreadyExists): that is ours, not a lost race."""
    node = Node(bin_dir, kube_api, tmp_path / "node")
    config = node.net(range=RANGE)
    if verb == "patch":
        ok(node.run("ADD", config, cid="first", args="K8S_POD_NAMESPACE=ns;K8S_POD_NAME=first"))
    kube_api.faults([{"verbs": [verb], "resources": [resource], "status": "drop", "after": True, "count": 1}])
    got = ips(ok(node.run("ADD", config, cid="c1")))
    assert kube_api.faults()["faults"] == {"0": 1}
    assert held(kube_api)["c1"] == got  # one address, the one answered
    assert reserved_by(kube_api)["c1"] == got
    assert ok(node.run("DEL", config, cid="c1")) is None
    assert "c1" not in held(kube_api) and "c1" not in reserved_by(kube_api)


def test_a_release_whose_answer_is_lost_frees_the_reservation(bin_dir, kube_api, tmp_path):
    node = Node(bin_dir, kube_api, tmp_path / "node")
    config = node.net(range=RANGE)
    ok(node.run("ADD", config, cid="c1"))
    kube_api.faults([{"verbs": ["patch"], "resources": ["ippools"], "status": "drop", "after": True, "count": 1}])
    assert ok(node.run("DEL", config, cid="c1")) is None
    assert kube_api.faults()["faults"] == {"0": 1}
    assert held(kube_api) == {} and reserved_by(kube_api) == {}
