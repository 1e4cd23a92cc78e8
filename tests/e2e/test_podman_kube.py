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

OpenShift's node files (flat file, kubeconfig, ``nodename``) are written as
openshift/cluster-network-operator bindata/network/multus/multus.yaml @
2a6a57fef3ac1c8fde00e85b603e9f73ef29b75c writes them, the paths moved to the
test's directory.

Each podman run costs seconds: one container per example, a few for the
lifecycle and overlap tests, ten for the race.  The API-server-down test
waits out one failing DEL (10 s, the client's shortest deadline).
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
    # ipam (beside type/datastore/kubernetes), podman options, addresses, {IPPool: (spec.range, offset held)},
    # cniVersion (MISSION's dual-stack example is a 0.3.1 bridge)
    pytest.param({"range": "192.0.2.192/27", "exclude": ["192.0.2.192/30", "192.0.2.196/32"]}, (),
                 ["192.0.2.197/27"], {"192.0.2.192-27": ("192.0.2.192/27", "5")}, "1.0.0", id="exclude"),
    pytest.param({"range": "10.89.41.0/24", "range_start": "10.89.41.10", "range_end": "10.89.41.20"}, (),
                 ["10.89.41.10/24"], {"10.89.41.0-24": ("10.89.41.0/24", "10")}, "1.0.0", id="range_start-range_end"),
    pytest.param({"range": "fd00:42::/64"}, (), ["fd00:42::1/64"], {"fd00-42---64": ("fd00:42::/64", "1")}, "1.0.0",
                 id="ipv6"),
    pytest.param({"ipRanges": [{"range": "192.168.10.0/24"}, {"range": "fd00::/64"}]}, (),
                 ["192.168.10.1/24", "fd00::1/64"],
                 {"192.168.10.0-24": ("192.168.10.0/24", "1"), "fd00---64": ("fd00::/64", "1")}, "0.3.1",
                 id="dual-stack"),
    pytest.param({"range": "10.89.43.0/24"}, ("--ip", "10.89.43.50"), ["10.89.43.50/24"],
                 {"10.89.43.0-24": ("10.89.43.0/24", "50")}, "1.0.0", id="requested-ip"),
]


@pytest.mark.parametrize("ipam, options, addresses, pools, version", EXAMPLES)
def test_example_on_the_kubernetes_datastore(pm, kube_api, kubeconfig, ipam, options, addresses, pools, version):
    """The container gets the example's address(es); the IPPools hold them as upstream writes them, each
    with its reservation; ``podman rm`` (DEL from conmon) empties both."""
    net = pm.network("pk-ex", kube_ipam(kubeconfig, **ipam), cni_version=version)
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


# -- lifecycle: restart, network reload, stop, rm --------------------------------------------------

def test_restart_and_network_reload_keep_the_address_and_rm_frees_it(pm, kube_api, kubeconfig):
    """restart (DEL, ADD) and reload (DEL, ADD asking for the current address) keep it, held once in the
    IPPool; stop and rm free it; a freed address is handed out again."""
    net = pm.network("pk-life", kube_ipam(kubeconfig, range="10.89.44.0/29"))
    one, two = pm.start("pk-life1", net), pm.start("pk-life2", net)
    assert (pm.addresses(one), pm.addresses(two)) == (["10.89.44.1/29"], ["10.89.44.2/29"])
    pm.ok("restart", "-t", "0", two)
    assert pm.addresses(two) == ["10.89.44.2/29"]
    assert held(kube_api) == {"10.89.44.0-29": {"1": entry(pm, one), "2": entry(pm, two)}}
    pm.ok("stop", "-t", "0", one)  # DEL from conmon: .1 is free, a plain re-ADD of two would take it
    assert held(kube_api) == {"10.89.44.0-29": {"2": entry(pm, two)}}
    pm.ok("network", "reload", two)
    assert pm.addresses(two) == ["10.89.44.2/29"]
    assert held(kube_api) == {"10.89.44.0-29": {"2": entry(pm, two)}}
    assert sorted(reservations(kube_api)) == ["10.89.44.2"]
    pm.ok("start", one)
    assert pm.addresses(one) == ["10.89.44.1/29"]  # the lowest free address again
    pm.ok("rm", "-f", "-t", "0", one, two)
    assert held(kube_api) == {} and reservations(kube_api) == {}


# -- network_name: overlapping ranges across two networks --------------------------------------------

def test_network_name_shares_one_address_space_across_overlapping_ranges(pm, kube_api, kubeconfig):
    """MISSION's NAD 1 and NAD 2 (a /29 and a /24 over it, one ``network_name``): an address held through
    one is refused through the other (code 101, by the OverlappingRangeIPReservation); another
    ``network_name`` on the same range is its own space and gets it.  The name is MISSION's with ``-``
    for ``_``: an object name may not hold ``_`` (next test)."""
    nad1 = pm.network("pk-nad1", kube_ipam(kubeconfig, range="192.0.2.192/29", network_name="example-net-common"))
    nad2 = pm.network("pk-nad2", kube_ipam(kubeconfig, range="192.0.2.192/24", network_name="example-net-common"))
    other = pm.network("pk-tenant", kube_ipam(kubeconfig, range="192.0.2.192/29", network_name="tenant-b"))
    first = pm.start("pk-common1", nad1)
    assert pm.addresses(first) == ["192.0.2.193/29"]
    done = pm.podman("run", "--rm", "--network", nad2, "--ip", "192.0.2.193", IMAGE, "true")
    assert done.returncode != 0
    assert f"requested address 192.0.2.193 in ipam.range is held by {nad1}/" in done.stderr, done.stderr
    assert f"(pod {first})" in done.stderr, done.stderr
    tenant = pm.start("pk-tenant", other, "--ip", "192.0.2.193")
    assert pm.addresses(tenant) == ["192.0.2.193/29"]  # the same address, in tenant-b's space
    assert held(kube_api) == {"example-net-common-192.0.2.192-29": {"1": entry(pm, first)},
                              "tenant-b-192.0.2.192-29": {"1": entry(pm, tenant)}}
    assert sorted(reservations(kube_api)) == ["example-net-common-192.0.2.193", "tenant-b-192.0.2.193"]
    pm.ok("rm", "-f", "-t", "0", first, tenant)
    assert held(kube_api) == {} and reservations(kube_api) == {}


def test_a_network_name_that_is_no_object_name_is_a_clear_error(pm, kube_api, kubeconfig):
    """MISSION's ``example_net_common`` as it is: upstream's IPPool name ``example_net_common-192.0.2.192-29``
    is no DNS-1123 subdomain, which kube-apiserver refuses (422) to Go whereabouts too; we say so
    before any request (code 7) and write nothing."""
    nad1 = pm.network("pk-nad-us", kube_ipam(kubeconfig, range="192.0.2.192/29", network_name="example_net_common"))
    done = pm.podman("run", "--rm", "--network", nad1, IMAGE, "true")
    assert done.returncode != 0
    assert "IPPool name 'example_net_common-192.0.2.192-29' is not a valid Kubernetes object name" in done.stderr
    assert "check network_name" in done.stderr, done.stderr
    assert objects(kube_api, "ippools") == {} and reservations(kube_api) == {}


# -- OpenShift: the flat file, kubeconfig and nodename exactly as the cluster-network-operator writes them --

CNO_DIR = "/etc/kubernetes/cni/net.d/whereabouts.d"
# The ConfigMap whereabouts-flatfile-config's whereabouts.conf, which the whereabouts container copies
# to the node (``cp /etc/whereabouts/config/whereabouts.conf $WHEREABOUTS_CONF_FILE; chmod 600``).
CNO_FLAT_FILE = """{
  "datastore": "kubernetes",
  "kubernetes": {
    "kubeconfig": "/etc/kubernetes/cni/net.d/whereabouts.d/whereabouts.kubeconfig"
  },
  "reconciler_cron_expression": "30 4 * * *",
  "log_level": "verbose",
  "configuration_path": "/etc/kubernetes/cni/net.d/whereabouts.d"
}
"""
# generateKubeConfig's heredoc, with TLS_CFG for a CA file and WHEREABOUTS_NAMESPACE=openshift-multus.
CNO_KUBECONFIG = """# Kubeconfig file for the Whereabouts CNI plugin.
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: {server}
    certificate-authority-data: {ca_data}
users:
- name: whereabouts
  user:
    token: "{token}"
contexts:
- name: whereabouts-context
  context:
    cluster: local
    user: whereabouts
    namespace: openshift-multus
current-context: whereabouts-context
"""


def write_cno_node(server, directory: str, nodename: str) -> str:
    """A CNO node's whereabouts.d in ``directory`` (for /etc/kubernetes/cni/net.d/whereabouts.d); the flat
    file's path."""
    import base64

    os.makedirs(directory)
    with open(server.ca_file, "rb") as stream:
        ca_data = base64.b64encode(stream.read()).decode()
    texts = {"whereabouts.kubeconfig": CNO_KUBECONFIG.format(server=server.url, ca_data=ca_data, token=server.token),
             "whereabouts.conf": CNO_FLAT_FILE.replace(CNO_DIR, directory),
             "nodename": nodename + "\n"}  # echo $NODENAME > $CNI_CONF_DIR/whereabouts.d/nodename
    for name, text in texts.items():
        path = os.path.join(directory, name)
        with open(path, "w") as stream:
            stream.write(text)
        os.chmod(path, 0o600 if name != "nodename" else 0o644)
    return os.path.join(directory, "whereabouts.conf")


def test_the_openshift_flat_file_as_the_cno_writes_it(pm, kube_api_factory, tmp_path):
    """The node's whereabouts.d as OpenShift's cluster-network-operator writes it: ConfigMap
    ``whereabouts-flatfile-config`` (copied to the node), ``generateKubeConfig`` (https, CA data, token,
    namespace ``openshift-multus``) and the ``nodename`` file, all in
    openshift/cluster-network-operator bindata/network/multus/multus.yaml @
    2a6a57fef3ac1c8fde00e85b603e9f73ef29b75c.  Only the paths move to the test's directory.

    The network (MISSION's ``whereabouts-shim``: bridge + whereabouts) names nothing but its range and, as
    the flat file is not at /etc/kubernetes/cni/net.d/whereabouts.d/whereabouts.conf here, its path in
    ``configuration_path`` (upstream's meaning: the flat file).  The datastore, kubeconfig and node name
    all come from the CNO's files.
    """
    api = kube_api_factory(tls=True)
    directory = str(tmp_path / "whereabouts.d")
    flat_file = write_cno_node(api, directory, "worker-0")
    with open(flat_file) as stream:
        flat = json.load(stream)
    assert flat == {"datastore": "kubernetes",  # the flat file the brief quotes, paths moved
                    "kubernetes": {"kubeconfig": f"{directory}/whereabouts.kubeconfig"},
                    "reconciler_cron_expression": "30 4 * * *", "log_level": "verbose",
                    "configuration_path": directory}
    net = pm.network("whereabouts-shim", {"type": "whereabouts", "range": "10.89.46.0/24",
                                          "configuration_path": flat_file})
    one, two = pm.start("pk-cno1", net), pm.start("pk-cno2", net)
    assert (pm.addresses(one), pm.addresses(two)) == (["10.89.46.1/24"], ["10.89.46.2/24"])
    assert objects(api, "ippools") == {}  # nothing in kube-system: the kubeconfig's namespace is used
    [pool] = objects(api, "ippools", "openshift-multus").values()
    assert pool["metadata"]["name"] == "10.89.46.0-24"
    assert pool["spec"] == {"range": "10.89.46.0/24", "allocations": {"1": entry(pm, one), "2": entry(pm, two)}}
    ours = {name: json.loads(text) for name, text in pool["metadata"]["annotations"].items()}
    assert {name: value[:5] for name, value in ours.items()} == {  # one annotation per allocation key
        "cni-ipam.io/a.1": [container_id(pm, one), "eth0", net, 1, "worker-0"],  # the node from the nodename file
        "cni-ipam.io/a.2": [container_id(pm, two), "eth0", net, 1, "worker-0"]}
    assert sorted(reservations(api, "openshift-multus")) == ["10.89.46.1", "10.89.46.2"]
    pm.ok("rm", "-f", "-t", "0", one)
    pm.ok("network", "reload", two)  # .1 is free: reload must keep .2
    assert pm.addresses(two) == ["10.89.46.2/24"]
    assert held(api, "openshift-multus") == {"10.89.46.0-24": {"2": entry(pm, two)}}
    pm.ok("rm", "-f", "-t", "0", two)
    assert held(api, "openshift-multus") == {} and reservations(api, "openshift-multus") == {}


# -- concurrency and an API server that is down ---------------------------------------------------------

def test_containers_started_at_once_get_distinct_addresses(pm, kube_api, kubeconfig):
    """Ten ADDs race for one IPPool: each patch tests that its key is absent (and each address's reservation
    is created first), so a lost race is a 422 or a 409 and another address, never an address given twice."""
    import concurrent.futures

    net = pm.network("pk-many", kube_ipam(kubeconfig, range="10.89.47.0/28"))
    names = [f"pk-many{i}" for i in range(10)]
    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        started = list(pool.map(lambda n: pm.start(n, net, timeout=240), names))
    got = sorted(a for box in started for a in pm.addresses(box))
    assert got == sorted(f"10.89.47.{n}/28" for n in range(1, 11)), got
    assert held(kube_api) == {"10.89.47.0-28": {a.split("/")[0].rsplit(".", 1)[1]: entry(pm, box)
                                                for box in started for a in pm.addresses(box)}}
    pm.ok("rm", "-f", "-t", "0", *started, timeout=240)
    assert held(kube_api) == {} and reservations(kube_api) == {}


def test_rm_while_the_api_server_is_down_leaks_and_the_reconciler_frees_it(pm, kube_api_factory, tmp_path):
    """podman removes the container although the DEL failed (the API server is down), so the address stays
    held: podman keeps no state to retry with.  ``cni-ipam reconcile`` on the node, with the CNO's flat
    file and its default sources, frees it: the allocation records this node (the nodename file) and a
    network namespace that podman has removed.

    The network's ``kubernetes.timeout`` (merged into the flat file's ``kubernetes`` object) keeps the
    failing DEL to its shortest deadline, 10 s."""
    import subprocess
    import sys

    api = kube_api_factory(tls=True)
    flat_file = write_cno_node(api, str(tmp_path / "whereabouts.d"), "worker-1")
    net = pm.network("pk-down", {"type": "whereabouts", "range": "10.89.48.0/29", "configuration_path": flat_file,
                                 "kubernetes": {"timeout": 1}})
    box = pm.start("pk-down", net)
    leaked = entry(pm, box)
    api.kill()
    pm.ok("rm", "-f", "-t", "0", box)  # its DEL (from rm or from conmon's cleanup) fails; rm goes on
    assert pm.podman("container", "exists", box).returncode == 1  # gone, with its netns
    api.start()
    assert held(api, "openshift-multus") == {"10.89.48.0-29": {"1": leaked}}
    env = {k: v for k, v in os.environ.items() if k != "NODENAME"}
    run = subprocess.run([sys.executable, "-m", "cni_ipam.cli", "reconcile", "--once", "--config", flat_file,
                          "--grace", "0"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in run.stdout.splitlines()]
    assert events[0]["sources"] == ["netns (node worker-1)", "kubernetes"]  # auto, from the CNO's files
    assert [(e["address"], e["node"], e["code"], e["container_id"]) for e in events if e["event"] == "freed"] == [
        ("10.89.48.1", "worker-1", "netns-gone", leaked["id"])]
    assert held(api, "openshift-multus") == {} and reservations(api, "openshift-multus") == {}
