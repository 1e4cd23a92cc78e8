"""Liveness sources: node-local netns, the runtime's valid attachments, and Kubernetes pods.

The Kubernetes source runs the real lightkube client against recorded API
responses served over HTTP (tests/fixtures/k8s/, where their shapes come
from is in its README).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
from datetime import datetime, timezone

import pytest

from cni_ipam.reconciler.liveness import (AttachmentsSource, KubernetesSource, NetnsSource, PodView,
                                          judge_pod, network_status_ips, parse_valid_attachments)
from cni_ipam.store.base import Allocation

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "k8s")
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc).timestamp()
GRACE = 600.0


def fakeapi():
    spec = importlib.util.spec_from_file_location("k8s_fakeapi", os.path.join(FIXTURES, "fakeapi.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def alloc(address, pod="", netns="", node="node-a", cid="c1", ifname="net1", network="macvlan-net"):
    ip = ipaddress.ip_address(address)
    cidr = "192.0.2.0/24" if ip.version == 4 else "2001:db8::/64"
    return Allocation(f"/{cidr}", int(ip), ip.version, network, cid, ifname, space="", pod=pod, netns=netns,
                      node=node, created=NOW - 7200)


# --- node-local netns ---

def test_netns_source_judges_this_nodes_allocations_by_their_path(tmp_path):
    live = tmp_path / "netns" / "cni-live"
    live.parent.mkdir()
    live.write_text("")  # a plain file stands in for a bind-mounted namespace
    source = NetnsSource("node-a")
    verdict = source.judge(alloc("192.0.2.1", netns=str(live)))
    assert (verdict.alive, verdict.code) == (True, "netns-present")
    verdict = source.judge(alloc("192.0.2.2", netns=str(live.parent / "cni-gone")))
    assert (verdict.alive, verdict.code) == (False, "netns-gone")
    assert str(live.parent / "cni-gone") in verdict.reason and "node-a" in verdict.reason


def test_netns_source_keeps_quiet_about_other_nodes_and_unknown_paths(tmp_path):
    source = NetnsSource("node-a")
    assert source.judge(alloc("192.0.2.1", netns=str(tmp_path / "gone"), node="node-b")) is None
    assert source.judge(alloc("192.0.2.1", netns="")) is None
    # a directory this machine does not have (the host's /run/netns not mounted here): cannot tell
    assert source.judge(alloc("192.0.2.1", netns=str(tmp_path / "no-such-dir" / "cni-x"))) is None


def test_netns_source_reads_proc_paths_by_pid():
    source = NetnsSource("node-a")
    assert source.judge(alloc("192.0.2.1", netns=f"/proc/{os.getpid()}/ns/net")).alive is True
    gone = source.judge(alloc("192.0.2.1", netns="/proc/999999999/ns/net"))
    assert (gone.alive, gone.code) == (False, "netns-gone")


def test_netns_source_confirm_looks_again(tmp_path):
    path = tmp_path / "cni-x"
    source = NetnsSource("node-a")
    a = alloc("192.0.2.1", netns=str(path))
    assert source.judge(a).alive is False
    path.write_text("")  # the namespace came back (a new sandbox at the same path)
    assert source.confirm(a, NOW).alive is True


# --- the runtime's valid attachments ---

def test_attachments_source_per_network_and_for_all(tmp_path):
    valid = parse_valid_attachments([
        {"cniVersion": "1.1.0", "name": "macvlan-net", "cni.dev/valid-attachments": [
            {"containerID": "c1", "ifname": "net1"}]},
        {"name": "other", "cni.dev/valid-attachments": []},
    ])
    source = AttachmentsSource("node-a", valid)
    assert source.judge(alloc("192.0.2.1", cid="c1")).alive is True
    stale = source.judge(alloc("192.0.2.2", cid="c2"))
    assert (stale.alive, stale.code) == (False, "attachment-unknown")
    assert source.judge(alloc("192.0.2.3", cid="c1", network="other")).alive is False
    assert source.judge(alloc("192.0.2.4", cid="c1", network="unlisted")) is None  # no list for it: no opinion
    assert source.judge(alloc("192.0.2.5", cid="c9", node="node-b")) is None  # another node's runtime
    everywhere = AttachmentsSource("node-a", parse_valid_attachments([{"containerID": "c1", "ifname": "net1"}]))
    assert everywhere.judge(alloc("192.0.2.4", cid="c1", network="unlisted")).alive is True
    assert everywhere.judge(alloc("192.0.2.4", cid="c1", ifname="net2", network="unlisted")).alive is False


@pytest.mark.parametrize("document, words", [
    ({"name": "n"}, "has no cni.dev/valid-attachments"),
    ({"cni.dev/valid-attachments": [{"containerID": "c1"}]}, "[0]: expected"),
    ({"cni.dev/valid-attachments": "c1"}, "expected a list"),
    ("c1", "expected a JSON object or list"),
    ([1], "[0]: expected a network config object"),
])
def test_bad_valid_attachments_files_say_what_is_wrong(document, words):
    with pytest.raises(ValueError) as caught:
        parse_valid_attachments(document, "f.json")
    assert words in str(caught.value) and "f.json" in str(caught.value)


# --- Kubernetes: the pure rules ---

def view(**fields) -> PodView:
    return PodView(**dict({"ref": "apps/p", "phase": "Running", "created": NOW - 86400, "ips": frozenset(),
                           "has_status": True}, **fields))


def test_network_status_reads_every_entry_and_drops_prefixes():
    ips, error = network_status_ips('[{"name":"a","ips":["10.0.0.1"],"default":true},'
                                    '{"name":"b","ips":["192.0.2.5/24","2001:DB8:0::5","junk"]}]')
    assert (ips, error) == ({"10.0.0.1", "192.0.2.5", "2001:db8::5"}, "")
    assert network_status_ips("{")[1].startswith("network-status is not JSON")
    assert network_status_ips('{"a": 1}')[1] == "network-status is not a list"


def test_pod_rules_in_order():
    a = alloc("192.0.2.5", pod="apps/p")
    assert judge_pod(a, None, NOW, GRACE).code == "pod-gone"
    # the taint manager's deletion beats everything, even the address being listed
    assert judge_pod(a, view(taint_deleted=True, ips=frozenset({"192.0.2.5"})), NOW, GRACE).code == "pod-taint-deleted"
    assert judge_pod(a, view(phase="Failed", ips=frozenset({"192.0.2.5"})), NOW, GRACE).code == "pod-finished"
    assert judge_pod(a, view(ips=frozenset({"192.0.2.5"})), NOW, GRACE).alive is True
    young = judge_pod(a, view(phase="Pending", created=NOW - 599, has_status=False), NOW, GRACE)
    assert (young.alive, young.code) == (True, "pod-starting")
    assert judge_pod(a, view(phase="Running", created=NOW - 10), NOW, GRACE).code == "pod-starting"
    old = judge_pod(a, view(phase="Pending", created=NOW - 601), NOW, GRACE)
    assert (old.alive, old.code) == (False, "pod-lacks-address")
    assert judge_pod(a, view(has_status=False), NOW, GRACE) is None  # no network-status: cannot tell


# --- Kubernetes: lightkube against the recorded responses ---

@pytest.fixture
def api():
    server = fakeapi().FakeAPI().start()
    yield server
    server.stop()


@pytest.fixture
def kube(api, tmp_path):
    from lightkube import Client
    from lightkube.config.kubeconfig import KubeConfig

    client = Client(config=KubeConfig.from_file(api.kubeconfig(str(tmp_path / "kubeconfig"))), trust_env=False)
    yield client
    client.close()


EXPECTED = {  # allocation address, pod -> (alive, code); see tests/fixtures/k8s/README.md
    ("192.0.2.10", "apps/web-0"): (True, "pod-has-address"),
    ("2001:db8::a", "apps/web-0"): (True, "pod-has-address"),
    ("192.0.2.11", "apps/web-1"): (False, "pod-lacks-address"),
    ("192.0.2.12", "apps/web-2"): (True, "pod-starting"),
    ("192.0.2.13", "apps/db-0"): (False, "pod-taint-deleted"),
    ("192.0.2.14", "apps/job-x"): (False, "pod-finished"),
    ("192.0.2.15", "apps/legacy-0"): (True, "pod-has-address"),
    ("192.0.2.16", "default/plain-0"): None,
    ("192.0.2.17", "apps/stuck-0"): (False, "pod-lacks-address"),
    ("192.0.2.18", "apps/gone-0"): (False, "pod-gone"),
}


def test_kubernetes_source_against_recorded_pod_lists(api, kube):
    source = KubernetesSource(kube, GRACE, chunk_size=5)
    source.prepare(NOW)
    assert len(source.pods) == 8  # both pages were read
    assert [r.split("?")[0] for r in api.requests] == ["/api/v1/pods", "/api/v1/pods"]
    assert "limit=5" in api.requests[0] and "continue=" in api.requests[1]
    found = {}
    for (address, pod) in EXPECTED:
        verdict = source.judge(alloc(address, pod=pod))
        found[(address, pod)] = None if verdict is None else (verdict.alive, verdict.code)
    assert found == EXPECTED
    assert source.judge(alloc("192.0.2.99", pod="")) is None  # no pod recorded: not this source's business
    assert source.judge(alloc("192.0.2.99", pod="web-0")) is None  # podman's name alone: not a Kubernetes pod
    assert source.confirm(alloc("192.0.2.99", pod="web-0"), NOW) is None


def test_reasons_name_the_pod_and_the_address(api, kube):
    source = KubernetesSource(kube, GRACE)
    source.prepare(NOW)
    lacks = source.judge(alloc("192.0.2.11", pod="apps/web-1"))
    assert lacks.reason == ("pod apps/web-1 (Running) does not list 192.0.2.11 in its network-status "
                            "(it lists 10.128.2.16, 192.0.2.50)")
    starting = source.judge(alloc("192.0.2.12", pod="apps/web-2"))
    assert "created 90s ago, within the 600s grace period" in starting.reason
    assert "taint manager" in source.judge(alloc("192.0.2.13", pod="apps/db-0")).reason


def test_the_pending_pod_is_stale_once_the_grace_period_is_over(api, kube):
    source = KubernetesSource(kube, GRACE)
    source.prepare(NOW + 600)  # web-2 was created 11:58:30; 690 s later it still has no network-status
    # it has no network-status at all: the source cannot tell (Multus never annotated it)
    assert source.judge(alloc("192.0.2.12", pod="apps/web-2")) is None
    api.pod("apps", "web-2")["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"] = "[]"
    source.prepare(NOW + 600)
    assert source.judge(alloc("192.0.2.12", pod="apps/web-2")).code == "pod-lacks-address"


def test_confirm_gets_the_pod_again(api, kube):
    source = KubernetesSource(kube, GRACE)
    source.prepare(NOW)
    a = alloc("192.0.2.11", pod="apps/web-1")
    assert source.judge(a).alive is False
    # between the LIST and the release, Multus updated the annotation with the address
    pod = api.pod("apps", "web-1")
    pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"] = (
        '[{"name":"apps/macvlan-net","interface":"net1","ips":["192.0.2.11"]}]')
    assert source.confirm(a, NOW).alive is True
    assert api.requests[-1] == "/api/v1/namespaces/apps/pods/web-1"
    api.remove("apps", "web-1")
    gone = source.confirm(a, NOW)
    assert (gone.alive, gone.code) == (False, "pod-gone")


def test_a_failing_list_raises_so_the_run_frees_nothing(api, kube):
    from lightkube import ApiError

    api.fail_lists = 1
    source = KubernetesSource(kube, GRACE)
    with pytest.raises(ApiError):
        source.prepare(NOW)
    assert source.pods is None
    assert source.judge(alloc("192.0.2.18", pod="apps/gone-0")) is None
