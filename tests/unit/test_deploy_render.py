"""``cni-ipam render``: golden output for each example, configs our plugins accept, bad input refused.

The golden files are the exact expected YAML.  After a deliberate change,
rewrite them with ``CNI_IPAM_UPDATE_GOLDEN=1 pytest tests/unit/test_deploy_render.py``
and read the diff before keeping it.  A run with the switch always fails (it
wrote the files instead of checking them), so no run, in CI or elsewhere,
passes by it: rerun without it to check.
"""

import io
import json
import os
import pathlib
import re

import pytest
import yaml

from cni_ipam.cli import main
from cni_ipam.deploy.manifests import Options, render
from cni_ipam.deploy.networks import RenderError, additional_networks

FIXTURES = pathlib.Path(__file__).parent.parent / "fixtures" / "deploy"
EXAMPLES = ("shim-dhcp", "shim-whereabouts", "macvlan-static", "macvlan-dhcp", "mixed")
UPDATE = os.environ.get("CNI_IPAM_UPDATE_GOLDEN") == "1"


def run(argv, stdin="", monkeypatch=None, capsys=None):
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(["render", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def rendered(name, monkeypatch, capsys, *extra):
    code, out, err = run([str(FIXTURES / f"{name}.yaml"), *extra], monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    return out, err


# (example, golden file, extra flags): each example as is (the node agent by default), and the whereabouts
# shim without the agent.
GOLDEN = [(name, f"{name}.golden.yaml", ()) for name in EXAMPLES] + [
    ("shim-whereabouts", "shim-whereabouts.no-agent.golden.yaml", ("--no-agent",))]


@pytest.mark.parametrize("name,golden,flags", GOLDEN, ids=[g[1] for g in GOLDEN])
def test_golden(name, golden, flags, monkeypatch, capsys):
    out, _ = rendered(name, monkeypatch, capsys, *flags)
    golden = FIXTURES / golden
    if UPDATE:
        changed = not golden.exists() or golden.read_text() != out
        golden.write_text(out)
        pytest.fail(f"{'updated' if changed else 'rewrote (unchanged)'} {golden.name} because CNI_IPAM_UPDATE_GOLDEN=1; "
                    f"rerun without the switch to check it")
    assert out == golden.read_text()


def kinds(text):
    return [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in yaml.safe_load_all(text)]


NADS = "NetworkAttachmentDefinition"
INSTALLER = [("ServiceAccount", "openshift-multus", "cni-ipam-installer"),
             ("DaemonSet", "openshift-multus", "cni-ipam-installer")]
DHCP = [("ServiceAccount", "openshift-multus", "dhcp-daemon"), ("DaemonSet", "openshift-multus", "dhcp-daemon")]
RECONCILER = [("ConfigMap", "openshift-multus", "whereabouts-reconciler-config"),
              ("ServiceAccount", "openshift-multus", "whereabouts-reconciler"),
              ("ClusterRole", None, "cni-ipam-whereabouts-reconciler"),
              ("ClusterRoleBinding", None, "cni-ipam-whereabouts-reconciler"),
              ("DaemonSet", "openshift-multus", "whereabouts-reconciler")]
AGENT = [("ServiceAccount", "openshift-multus", "cni-ipam-agent"), ("DaemonSet", "openshift-multus", "cni-ipam-agent")]


def test_objects_of_each_example(monkeypatch, capsys):
    """Exactly these objects, in this order: NADs by namespace and name, then only the daemons needed."""
    expected = {
        "shim-dhcp": [(NADS, "default", "dhcp-shim")] + INSTALLER + DHCP,
        "shim-whereabouts": [(NADS, "default", "whereabouts-shim")] + INSTALLER + RECONCILER + AGENT,
        "macvlan-static": [(NADS, "apps", "storage")] + INSTALLER,
        "macvlan-dhcp": [(NADS, "default", "lan"), (NADS, "default", "lan-default-ipam")] + INSTALLER + DHCP,
        "mixed": [(NADS, "team-a", "dual"), (NADS, "team-a", "host-local-net"), (NADS, "team-a", "mgmt"),
                  (NADS, "team-a", "tenant-a"), (NADS, "team-b", "tenant-a")] + INSTALLER + DHCP + RECONCILER + AGENT,
    }
    for name, objects in expected.items():
        assert kinds(rendered(name, monkeypatch, capsys)[0]) == objects, name


def test_input_order_does_not_change_output(monkeypatch, capsys):
    resource = yaml.safe_load((FIXTURES / "mixed.yaml").read_text())
    first = render(additional_networks(resource), Options())
    resource["spec"]["additionalNetworks"].reverse()
    assert render(additional_networks(resource), Options()) == first


def test_shims_keep_the_config_as_written(monkeypatch, capsys):
    """The operator copies rawCNIConfig verbatim; so do we."""
    for name in ("shim-dhcp", "shim-whereabouts"):
        source = yaml.safe_load((FIXTURES / f"{name}.yaml").read_text())
        raw = source["spec"]["additionalNetworks"][0]["rawCNIConfig"]
        nad = next(yaml.safe_load_all(rendered(name, monkeypatch, capsys)[0]))
        assert nad["spec"]["config"] == raw


def test_whereabouts_shim_without_range_is_a_note(monkeypatch, capsys):
    _, err = rendered("shim-whereabouts", monkeypatch, capsys)
    assert "whereabouts-shim: ipam names no range" in err


# --- every NAD's config is accepted by our plugin's own parser ----------------------------------------

ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/var/run/netns/p1", "CNI_IFNAME": "net1",
       "CNI_PATH": "/opt/cni/bin"}


def plugin_parse(config: dict):
    from cni_ipam.cni.request import build_request

    data = json.dumps(config).encode()
    request = build_request(dict(ENV), lambda: data)
    kind = config["ipam"]["type"]
    if kind == "static":
        from cni_ipam.config.static import parse

        return parse(request)
    if kind == "dhcp":
        from cni_ipam.dhcp.config import parse

        return parse(request)
    from cni_ipam.config.whereabouts import load

    if not (config["ipam"].get("range") or config["ipam"].get("ipRanges")):
        # A shim: on a node the range comes from the flat file.
        return load(request, lambda path: {"range": "192.0.2.0/24"} if path.endswith("whereabouts.conf") else None)
    return load(request, lambda path: None)


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_nad_config_is_accepted_by_the_plugin(name, monkeypatch, capsys):
    checked = 0
    for doc in yaml.safe_load_all(rendered(name, monkeypatch, capsys)[0]):
        if doc["kind"] != NADS:
            continue
        config = json.loads(doc["spec"]["config"])
        # Multus gives a config without a name the NAD's name (the operator's macvlan configs have none).
        config.setdefault("name", doc["metadata"]["name"])
        assert config["name"] == doc["metadata"]["name"]
        plugins = [{**p, "name": config["name"], "cniVersion": config["cniVersion"]}
                   for p in config.get("plugins", [config])]
        for plugin in plugins:
            if plugin.get("ipam", {}).get("type") in ("static", "dhcp", "whereabouts"):
                assert plugin_parse(plugin) is not None
                checked += 1
    assert checked >= 1


def test_macvlan_static_config_is_what_the_operator_writes(monkeypatch, capsys):
    nad = next(yaml.safe_load_all(rendered("macvlan-static", monkeypatch, capsys)[0]))
    config = json.loads(nad["spec"]["config"])
    assert config == {
        "cniVersion": "0.3.1", "type": "macvlan", "master": "eth1", "mode": "bridge", "mtu": 1500,
        "ipam": {"type": "static",
                 "routes": [{"dst": "192.168.17.0/24", "gw": "10.10.21.254"}],
                 "addresses": [{"address": "10.10.21.10/24", "gateway": "10.10.21.1"}, {"address": "fd00:21::10/64"}],
                 "dns": {"nameservers": ["10.10.21.53"], "domain": "example.com",
                         "search": ["example.com", "svc.example.com"]}}}
    # The operator's key order (its template and Go structs), and no "name": Multus adds the NAD's.
    assert list(config) == ["cniVersion", "type", "master", "mode", "mtu", "ipam"]
    assert list(config["ipam"]) == ["type", "routes", "addresses", "dns"]


def macvlan(conf):
    """The config render writes for one SimpleMacvlan network."""
    item = {"name": "m", "type": "SimpleMacvlan", "simpleMacvlanConfig": conf}
    return json.loads(additional_networks({"kind": "Network", "spec": {"additionalNetworks": [item]}})[0].config)


def test_macvlan_defaults_as_the_operator_has_them():
    """No simpleMacvlanConfig: dhcp; mtu 0 is unset; static without addresses takes them from the runtime."""
    assert macvlan(None) == {"cniVersion": "0.3.1", "type": "macvlan", "ipam": {"type": "dhcp"}}
    assert macvlan({"master": "eth1", "mtu": 0}) == {"cniVersion": "0.3.1", "type": "macvlan", "master": "eth1",
                                                     "ipam": {"type": "dhcp"}}
    assert macvlan({"ipamConfig": {"type": "Static"}})["ipam"] == {"type": "static", "capabilities": ["ips"]}
    assert macvlan({"ipamConfig": {"type": "Static", "staticIPAMConfig": {"dns": {"domain": "example.com"}}}})[
        "ipam"] == {"type": "static", "dns": {"domain": "example.com"}, "capabilities": ["ips"]}


def test_macvlan_routes_and_gateways_as_go_parses_them():
    """Go's ParseCIDR writes a route's destination as its network; ParseIP then String() normalises gateways."""
    static = {"addresses": [{"address": "fd00::5/64", "gateway": "FD00:0::1"}],
              "routes": [{"destination": "192.168.17.5/24"}, {"destination": "::/0", "gateway": "fd00::1"}]}
    ipam = macvlan({"ipamConfig": {"type": "Static", "staticIPAMConfig": static}})["ipam"]
    assert ipam["routes"] == [{"dst": "192.168.17.0/24"}, {"dst": "::/0", "gw": "fd00::1"}]
    assert ipam["addresses"] == [{"address": "fd00::5/64", "gateway": "fd00::1"}]


@pytest.mark.parametrize("conf,reason", [
    ({"mode": "bridge"}, "simpleMacvlanConfig.mode: 'bridge' is not a macvlan mode the operator accepts "
                         "(the API spells it Bridge)"),
    ({"ipamConfig": {"type": "static"}}, "ipamConfig.type: 'static' is not an IPAM type the operator accepts "
                                         "(the API spells it Static)"),
    ({"ipamConfig": {"type": "Static", "staticIPAMConfig": {"routes": [{"dst": "10.0.0.0/8"}]}}},
     "routes[0].dst is not a field here (the API calls it destination)"),
    ({"ipamConfig": {"type": "Static", "staticIPAMConfig": {"routes": [{"destination": "10.0.0.0/33"}]}}},
     "routes[0].destination: '10.0.0.0/33' is not a CIDR"),
    ({"ipamConfig": {"type": "Static", "staticIPAMConfig": {"addresses": [{"gateway": "10.0.0.1"}]}}},
     "addresses[0].address: missing"),
    ({"ipamConfig": {"type": "Static", "staticIPAMConfig": {"addresses": [{"address": "10.0.0.5/24",
                                                                           "gateway": "10.0.0"}]}}},
     "addresses[0].gateway: '10.0.0' is not an IP address"),
    ({"master": "eth1", "vlan": 5}, "simpleMacvlanConfig.vlan is not a field here"),
    ({"mtu": -1}, "simpleMacvlanConfig.mtu: expected a whole number"),
])
def test_macvlan_refuses_what_the_operator_refuses(conf, reason):
    with pytest.raises(RenderError, match=re.escape(reason)):
        macvlan(conf)


# --- options -------------------------------------------------------------------------------------------

def test_namespace_image_and_bin_dir(monkeypatch, capsys):
    out, _ = rendered("mixed", monkeypatch, capsys, "--namespace", "cni-ipam", "--image", "reg.example/cni:1",
                      "--cni-bin-dir", "/var/lib/cni/bin/", "--runtime-dir", "/usr/local/cni-ipam/", "--agent")
    docs = list(yaml.safe_load_all(out))
    for doc in docs:
        if doc["kind"] in ("ServiceAccount", "DaemonSet"):
            assert doc["metadata"]["namespace"] == "cni-ipam"
        if doc["kind"] == "ClusterRoleBinding":
            assert doc["subjects"][0]["namespace"] == "cni-ipam"
        if doc["kind"] == "DaemonSet":
            pod = doc["spec"]["template"]["spec"]
            assert {c["image"] for c in pod["containers"]} == {"reg.example/cni:1"}
            assert "initContainers" not in pod
    daemon_sets = {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in docs if d["kind"] == "DaemonSet"}
    assert list(daemon_sets) == ["cni-ipam-installer", "dhcp-daemon", "whereabouts-reconciler", "cni-ipam-agent"]
    installer = daemon_sets.pop("cni-ipam-installer")
    [install] = installer["containers"]
    assert install["command"] == ["cni-ipam", "install", "--cni-bin-dir", "/host/var/lib/cni/bin",
                                  "--runtime-dir", "/host/usr/local/cni-ipam", "--host-root", "/host", "--native",
                                  "--keep", "2"]
    assert install["volumeMounts"] == [{"name": "cni-bin-dir", "mountPath": "/host/var/lib/cni/bin"},
                                       {"name": "runtime-dir", "mountPath": "/host/usr/local/cni-ipam"}]
    assert installer["volumes"] == [
        {"name": "cni-bin-dir", "hostPath": {"path": "/var/lib/cni/bin", "type": "DirectoryOrCreate"}},
        {"name": "runtime-dir", "hostPath": {"path": "/usr/local/cni-ipam", "type": "DirectoryOrCreate"}}]
    for name, pod in daemon_sets.items():  # only the installer writes the bin and runtime dirs
        assert not {"cni-bin-dir", "runtime-dir"} & {v["name"] for v in pod["volumes"]}, name


def test_the_installer_comes_with_any_of_our_plugins_even_static_alone(monkeypatch, capsys):
    """Without it a node keeps whatever static it has (on OpenShift, the operator's Go one)."""
    for fixture in ("macvlan-static", "shim-dhcp", "shim-whereabouts"):
        docs = list(yaml.safe_load_all(rendered(fixture, monkeypatch, capsys)[0]))
        assert "cni-ipam-installer" in {d["metadata"]["name"] for d in docs if d["kind"] == "DaemonSet"}, fixture


# --- the node agent ------------------------------------------------------------------------------------

def install_command(docs) -> list:
    daemon = next(d for d in docs if d["kind"] == "DaemonSet" and d["metadata"]["name"] == "cni-ipam-installer")
    return daemon["spec"]["template"]["spec"]["containers"][0]["command"]


def test_agent_by_default_with_whereabouts_and_the_native_forwarder_with_it(monkeypatch, capsys):
    """The recommended deployment (issue 17): with a whereabouts network, the agent and the installer's
    --native; --no-agent leaves both out; without whereabouts neither (the agent answers only whereabouts)."""
    for flags in ((), ("--agent",)):
        out = rendered("shim-whereabouts", monkeypatch, capsys, *flags)[0]
        assert kinds(out)[-2:] == AGENT and "--native" in install_command(list(yaml.safe_load_all(out)))
    out = rendered("shim-whereabouts", monkeypatch, capsys, "--no-agent")[0]
    assert not set(AGENT) & set(kinds(out)) and "--native" not in install_command(list(yaml.safe_load_all(out)))
    for fixture in ("shim-dhcp", "macvlan-static"):
        out = rendered(fixture, monkeypatch, capsys, "--agent")[0]
        assert not set(AGENT) & set(kinds(out)) and "--native" not in install_command(list(yaml.safe_load_all(out)))


def test_the_installer_command_parses_with_install_native(monkeypatch, capsys):
    """What the DaemonSet runs is what `cni-ipam install` accepts: --native with --runtime-dir and --keep."""
    from cni_ipam.cli import build_parser

    command = install_command(list(yaml.safe_load_all(rendered("shim-whereabouts", monkeypatch, capsys)[0])))
    args = build_parser().parse_args(command[1:])
    assert (args.native, args.keep, args.runtime_dir) == (True, 2.0, "/host/var/lib/cni-ipam")


def test_agent_listens_on_the_hosts_socket_with_host_paths(monkeypatch, capsys):
    """Plugins on the host connect to its socket and name files by host paths: all mounted at the same paths."""
    docs = list(yaml.safe_load_all(rendered("shim-whereabouts", monkeypatch, capsys)[0]))
    account, daemon = docs[-2:]
    assert account["automountServiceAccountToken"] is False
    pod = daemon["spec"]["template"]["spec"]
    agent = pod["containers"][0]
    assert agent["command"] == ["cni-ipam", "agent", "--socket", "/run/cni-ipam/agent.sock"]
    assert agent["securityContext"] == {"runAsUser": 0}
    volumes = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
    mounts = {m["name"]: m for m in agent["volumeMounts"]}
    assert {volumes[name]: (m["mountPath"], m.get("readOnly", False)) for name, m in mounts.items()} == {
        "/run/cni-ipam": ("/run/cni-ipam", False), "/var/lib/cni/whereabouts": ("/var/lib/cni/whereabouts", False),
        "/etc/cni/net.d": ("/etc/cni/net.d", True), "/etc/kubernetes/cni/net.d": ("/etc/kubernetes/cni/net.d", True)}


def test_reconciler_without_kubernetes_source_has_no_rbac(monkeypatch, capsys):
    out, _ = rendered("shim-whereabouts", monkeypatch, capsys, "--no-kubernetes-source", "--no-agent")
    docs = list(yaml.safe_load_all(out))
    assert kinds(out) == [(NADS, "default", "whereabouts-shim")] + INSTALLER + RECONCILER[:2] + RECONCILER[-1:]
    assert docs[4]["automountServiceAccountToken"] is False
    command = docs[5]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command == ["cni-ipam", "reconciler", "--schedule-file", "/cron-schedule/config",
                       "--config", "/etc/cni-ipam/reconciler/config.json", "--source", "netns"]


def test_reconciler_rbac_is_exactly_what_its_kubernetes_source_and_pod_watch_send(monkeypatch, capsys):
    """pods get and list (liveness), watch (the pod watch), events create (kubeevents.post), nothing more;
    tests/integration/test_deploy_rbac.py runs the reconciler under exactly these."""
    docs = list(yaml.safe_load_all(rendered("shim-whereabouts", monkeypatch, capsys, "--no-agent")[0]))
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
                             {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]
    daemon = docs[-1]["spec"]["template"]["spec"]
    schedule = next(v for v in daemon["volumes"] if v["name"] == "cron-schedule")
    assert schedule["configMap"]["name"] == "whereabouts-config" and schedule["configMap"]["optional"] is True
    assert schedule["configMap"]["items"] == [{"key": "reconciler_cron_expression", "path": "config"}]


def test_stdin_json_and_output_file(monkeypatch, capsys, tmp_path):
    resource = yaml.safe_load((FIXTURES / "shim-dhcp.yaml").read_text())
    target = tmp_path / "out.yaml"
    code, out, err = run(["--output-file", str(target)], stdin=json.dumps(resource), monkeypatch=monkeypatch, capsys=capsys)
    assert (code, out) == (0, "")
    assert target.read_text() == (FIXTURES / "shim-dhcp.golden.yaml").read_text()


def test_no_additional_networks_renders_nothing(monkeypatch, capsys):
    code, out, _ = run(["-"], stdin="kind: Network\nspec: {}\n", monkeypatch=monkeypatch, capsys=capsys)
    assert (code, out) == (0, "")


# --- refused input: the network's name and the reason, exit 2, nothing written ---------------------------

def raw(name, config, namespace="default"):
    return {"name": name, "namespace": namespace, "type": "Raw",
            "rawCNIConfig": config if isinstance(config, str) else json.dumps(config)}


def network(*items):
    return yaml.safe_dump({"apiVersion": "operator.openshift.io/v1", "kind": "Network",
                           "metadata": {"name": "cluster"}, "spec": {"additionalNetworks": list(items)}})


GOOD = raw("good", {"cniVersion": "0.3.1", "name": "good", "type": "bridge", "ipam": {"type": "dhcp"}})
BAD = [
    ("not-json", raw("not-json", '{"name": "not-json", "type": "bridge",'), "rawCNIConfig is not JSON"),
    ("bad-static", raw("bad-static", {"cniVersion": "0.3.1", "name": "bad-static", "type": "bridge",
                                      "ipam": {"type": "static", "addresses": [{"address": "10.0.0.300/24"}]}}),
     "the static plugin would refuse this config"),
    ("bad-range", raw("bad-range", {"cniVersion": "0.3.1", "name": "bad-range", "type": "bridge",
                                    "ipam": {"type": "whereabouts", "range": "192.0.2.0/24",
                                             "rangeStart": "192.0.2.10"}}),
     "did you mean range_start"),
    ("bad-cidr", raw("bad-cidr", {"cniVersion": "0.3.1", "name": "bad-cidr", "type": "bridge",
                                      "ipam": {"type": "whereabouts", "range": "192.0.2.0/33"}}),
     "the whereabouts plugin would refuse this config"),
    ("bad-dhcp", raw("bad-dhcp", {"cniVersion": "0.3.1", "name": "bad-dhcp", "type": "bridge",
                                  "ipam": {"type": "dhcp", "request": [{"option": "no-such-option"}]}}),
     "the dhcp plugin would refuse this config: ipam.request[0].option"),
    ("bad-version", raw("bad-version", {"cniVersion": "9.9.9", "name": "bad-version", "type": "bridge",
                                        "ipam": {"type": "dhcp"}}), "incompatible CNI versions"),
    ("in-list", raw("in-list", {"cniVersion": "1.0.0", "name": "in-list",
                                "plugins": [{"type": "bridge", "ipam": {"type": "static",
                                                                         "addresses": [{"address": "x"}]}}]}),
     "the static plugin would refuse"),
    ("odd-type", {"name": "odd-type", "namespace": "default", "type": "OVNKubernetes"},
     "type 'OVNKubernetes' is not supported; use one of Raw, SimpleMacvlan"),
    ("no-raw", {"name": "no-raw", "type": "Raw"}, "type Raw needs rawCNIConfig"),
    ("Upper_Case", dict(GOOD, name="Upper_Case"), "name: not a valid Kubernetes object name"),
    ("bad-ns", dict(GOOD, name="bad-ns", namespace="Team A"), "namespace: 'Team A' is not a valid namespace name"),
    ("bad-mode", {"name": "bad-mode", "type": "SimpleMacvlan", "simpleMacvlanConfig": {"mode": "Tunnel"}},
     "simpleMacvlanConfig.mode: 'Tunnel' is not a macvlan mode"),
    ("bad-ipam-type", {"name": "bad-ipam-type", "type": "SimpleMacvlan",
                       "simpleMacvlanConfig": {"ipamConfig": {"type": "whereabouts"}}},
     "ipamConfig.type: 'whereabouts' is not an IPAM type the operator accepts; use Static or DHCP"),
    ("bad-static-field", {"name": "bad-static-field", "type": "SimpleMacvlan",
                          "simpleMacvlanConfig": {"ipamConfig": {"type": "Static", "staticIPAMConfig": {
                              "addresses": [{"address": "10.0.0.5/24", "gw": "10.0.0.1"}]}}}},
     "staticIPAMConfig.addresses[0].gw is not a field here; use address, gateway"),
    ("bad-static-address", {"name": "bad-static-address", "type": "SimpleMacvlan",
                            "simpleMacvlanConfig": {"ipamConfig": {"type": "Static", "staticIPAMConfig": {
                                "addresses": [{"address": "10.0.0.5"}]}}}},
     "the static plugin would refuse this config"),
]


@pytest.mark.parametrize("name,item,reason", BAD, ids=[b[0] for b in BAD])
def test_invalid_network_is_refused_before_anything_is_written(name, item, reason, monkeypatch, capsys, tmp_path):
    target = tmp_path / "out.yaml"
    code, out, err = run(["--output-file", str(target)], stdin=network(GOOD, item), monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2
    assert out == "" and not target.exists()
    assert f"network {name}: " in err and reason in err, err


def test_duplicate_name_in_one_namespace_is_refused(monkeypatch, capsys):
    second = dict(GOOD, rawCNIConfig=GOOD["rawCNIConfig"])
    code, out, err = run([], stdin=network(GOOD, second), monkeypatch=monkeypatch, capsys=capsys)
    assert (code, out) == (2, "")
    assert "network good: defined twice in namespace default" in err


def test_same_name_in_two_namespaces_is_fine():
    other = dict(GOOD, namespace="other")
    assert [n.namespace for n in additional_networks(yaml.safe_load(network(GOOD, other)))] == ["default", "other"]


def test_missing_name_is_refused_with_where():
    with pytest.raises(RenderError, match=r"spec.additionalNetworks\[0\].name: missing"):
        additional_networks({"kind": "Network", "spec": {"additionalNetworks": [{"type": "Raw"}]}})


def test_unreadable_input(monkeypatch, capsys, tmp_path):
    code, out, err = run([str(tmp_path / "missing.yaml")], monkeypatch=monkeypatch, capsys=capsys)
    assert (code, out) == (2, "") and "cannot read" in err
    code, out, err = run([], stdin="a: [", monkeypatch=monkeypatch, capsys=capsys)
    assert (code, out) == (2, "") and "is not one YAML or JSON document" in err
    code, out, err = run([], stdin="kind: ConfigMap\n", monkeypatch=monkeypatch, capsys=capsys)
    assert (code, out) == (2, "") and "expected a Network" in err


def test_every_bad_network_is_named_in_one_run(monkeypatch, capsys):
    items = [item for _, item, _ in BAD[:3]]
    code, out, err = run([], stdin=network(GOOD, *items), monkeypatch=monkeypatch, capsys=capsys)
    assert (code, out) == (2, "")
    assert [line.split(": ")[2] for line in err.splitlines()] == [f"network {b[0]}" for b in BAD[:3]]


def _reconciler(docs):
    daemon = next(d for d in docs if d["kind"] == "DaemonSet" and d["metadata"]["name"] == "whereabouts-reconciler")
    return daemon["spec"]["template"]["spec"]


@pytest.mark.parametrize("flags", [(), ("--no-kubernetes-source",)])
def test_rendered_reconciler_arguments_parse_with_the_reconcilers_own_parser(flags, monkeypatch, capsys, tmp_path):
    """The command is what `cni-ipam reconciler` accepts, and its --config is a file the pod has, naming
    the store the networks use: without it the reconciler would read the operator's flat file."""
    from cni_ipam.cli import build_parser
    from cni_ipam.reconciler.commands import _check_config

    docs = list(yaml.safe_load_all(rendered("mixed", monkeypatch, capsys, *flags)[0]))
    pod = _reconciler(docs)
    [container] = pod["containers"]
    assert container["command"][0] == "cni-ipam"
    args = build_parser().parse_args(container["command"][1:])
    assert args.command == "reconciler"
    assert args.source == (["netns"] if flags else ["netns", "kubernetes"])
    mounted = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert os.path.dirname(args.config) == mounted["store-config"]
    assert os.path.dirname(args.schedule_file) == mounted["cron-schedule"]
    volume = next(v for v in pod["volumes"] if v["name"] == "store-config")
    config_map = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == volume["configMap"]["name"])
    text = config_map["data"][os.path.basename(args.config)]
    # The mixed networks name no datastore: on OpenShift they get the operator's flat file's.
    assert json.loads(text) == {"datastore": "kubernetes", "kubernetes": {
        "kubeconfig": "/etc/kubernetes/cni/net.d/whereabouts.d/whereabouts.kubeconfig"}}
    args.config = str(tmp_path / "config.json")  # the file as the pod sees it, here
    (tmp_path / "config.json").write_text(text)
    _check_config(args)  # the reconciler's own start-up check of --config


def test_the_reconciler_gets_the_store_the_networks_name(monkeypatch, capsys):
    wb = {"type": "whereabouts", "range": "192.0.2.0/24", "datastore": "etcd",
          "etcd_endpoints": ["https://10.0.0.1:2379"], "etcd_ca_cert_file": "/etc/cni/net.d/whereabouts.d/ca.crt"}
    resource = {"kind": "Network", "spec": {"additionalNetworks": [
        {"name": f"net{i}", "namespace": "default", "type": "Raw",
         "rawCNIConfig": json.dumps({"cniVersion": "0.3.1", "name": f"net{i}", "type": "macvlan", "ipam": wb})}
        for i in (1, 2)]}}
    code, out, err = run([], json.dumps(resource), monkeypatch, capsys)
    assert code == 0, err
    config_map = next(d for d in yaml.safe_load_all(out) if d["kind"] == "ConfigMap")
    assert json.loads(config_map["data"]["config.json"]) == {
        "datastore": "etcd", "etcd_endpoints": ["https://10.0.0.1:2379"],
        "etcd_ca_cert_file": "/etc/cni/net.d/whereabouts.d/ca.crt"}


def test_networks_naming_different_stores_are_refused(monkeypatch, capsys):
    """One reconciler watches one store: the other network's leaks would never be freed."""
    def network(name, ipam):
        return {"name": name, "namespace": "default", "type": "Raw", "rawCNIConfig": json.dumps(
            {"cniVersion": "0.3.1", "name": name, "type": "macvlan", "ipam": ipam})}
    resource = {"kind": "Network", "spec": {"additionalNetworks": [
        network("a", {"type": "whereabouts", "range": "192.0.2.0/24"}),
        network("b", {"type": "whereabouts", "range": "198.51.100.0/24", "datastore": "sqlite",
                      "sqlite_path": "/var/lib/other.db"})]}}
    code, out, err = run([], json.dumps(resource), monkeypatch, capsys)
    assert code == 2 and out == ""
    assert "different stores" in err and "/var/lib/other.db" in err


def test_o_is_the_output_format_and_never_a_file_name(monkeypatch, capsys, tmp_path):
    """`-o json` means JSON (as for pools and allocations): one v1 List of the same objects, on stdout."""
    monkeypatch.chdir(tmp_path)
    yaml_out, _ = rendered("mixed", monkeypatch, capsys)
    json_out, _ = rendered("mixed", monkeypatch, capsys, "-o", "json")
    listed = json.loads(json_out)
    assert (listed["apiVersion"], listed["kind"]) == ("v1", "List")
    assert listed["items"] == list(yaml.safe_load_all(yaml_out))
    assert list(tmp_path.iterdir()) == []  # no file named json


def test_an_unknown_output_format_is_a_usage_error(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        run([str(FIXTURES / "mixed.yaml"), "-o", "out.yaml"], monkeypatch=monkeypatch, capsys=capsys)
    assert info.value.code == 2
    assert "invalid choice: 'out.yaml'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# --- the Kubernetes store on OpenShift: the operator's flat file (docs/deploying.md, "Kubernetes store") -----

# The flat file exactly as the Cluster Network Operator writes it on every node with Multus (issue 15;
# openshift/cluster-network-operator bindata/network/multus/multus.yaml @ 2a6a57fef3ac1c8fde00e85b603e9f73ef29b75c).
CNO_FLAT_FILE = ('{"datastore":"kubernetes","kubernetes":{"kubeconfig":"/etc/kubernetes/cni/net.d/whereabouts.d/'
                 'whereabouts.kubeconfig"},"reconciler_cron_expression":"30 4 * * *","log_level":"verbose",'
                 '"configuration_path":"/etc/kubernetes/cni/net.d/whereabouts.d"}')
CNO_KUBECONFIG = "/etc/kubernetes/cni/net.d/whereabouts.d/whereabouts.kubeconfig"


def whereabouts_resource(*ipams):
    return {"kind": "Network", "spec": {"additionalNetworks": [
        {"name": f"net{i}", "namespace": "default", "type": "Raw", "rawCNIConfig": json.dumps(
            {"cniVersion": "0.3.1", "name": f"net{i}", "type": "macvlan", "ipam": ipam})}
        for i, ipam in enumerate(ipams)]}}


def test_render_checks_networks_with_the_operators_exact_flat_file():
    from cni_ipam.deploy.networks import OPERATOR_FLAT_FILE

    assert OPERATOR_FLAT_FILE == json.loads(CNO_FLAT_FILE)


def test_a_network_without_datastore_is_on_the_kubernetes_store_and_so_is_the_reconciler():
    """The plugin on the node merges the operator's flat file in (the network's keys win): no datastore of
    its own means the Kubernetes store with the operator's kubeconfig, and the reconciler must watch that."""
    docs = render(additional_networks(whereabouts_resource({"type": "whereabouts", "range": "192.0.2.0/24"})),
                  Options(namespace="cni-ipam"))
    config_map = next(d for d in docs if d["metadata"]["name"] == "whereabouts-reconciler-config")
    assert json.loads(config_map["data"]["config.json"]) == {"datastore": "kubernetes",
                                                             "kubernetes": {"kubeconfig": CNO_KUBECONFIG}}


def test_a_network_naming_its_own_kubeconfig_or_store_keeps_it():
    own = {"type": "whereabouts", "range": "192.0.2.0/24", "kubernetes": {"kubeconfig": "/etc/mine.kubeconfig"}}
    [network] = additional_networks(whereabouts_resource(own))
    assert network.stores == [{"datastore": "kubernetes", "kubernetes": {"kubeconfig": "/etc/mine.kubeconfig"}}]
    [network] = additional_networks(whereabouts_resource({"type": "whereabouts", "range": "192.0.2.0/24",
                                                          "datastore": "sqlite"}))
    assert network.stores == [{"datastore": "sqlite"}]


def test_etcd_keys_without_datastore_are_refused_as_the_plugin_on_openshift_refuses_them(monkeypatch, capsys):
    """With the operator's flat file the datastore is kubernetes, so etcd_* keys in the network alone are an
    error there (each node would otherwise ignore the etcd cluster): render says so before anything is applied."""
    ipam = {"type": "whereabouts", "range": "192.0.2.0/24", "etcd_endpoints": ["https://10.0.0.1:2379"]}
    code, out, err = run([], json.dumps(whereabouts_resource(ipam)), monkeypatch, capsys)
    assert (code, out) == (2, "")
    assert 'network net0: the whereabouts plugin would refuse this config: ipam.etcd_endpoints is set but ' \
           'ipam.datastore is "kubernetes"' in err


def test_a_configuration_path_render_cannot_read_is_a_note(monkeypatch, capsys):
    mine = {"type": "whereabouts", "range": "192.0.2.0/24", "configuration_path": "/etc/mine/whereabouts.conf"}
    operators = dict(mine, configuration_path="/etc/kubernetes/cni/net.d/whereabouts.d")
    code, _, err = run([], json.dumps(whereabouts_resource(mine, operators)), monkeypatch, capsys)
    assert code == 0, err
    assert [line for line in err.splitlines() if "configuration_path" in line] == [
        "cni-ipam render: note: net0: ipam.configuration_path '/etc/mine/whereabouts.conf' is a flat file render "
        "cannot read: checked with the nodes' usual flat file instead, but on a node where that file exists it is "
        "read first (name the datastore in the network to be sure of its store)"]


def test_a_kubernetes_network_gets_no_crds_no_store_rbac_and_the_reconcilers_own_rights():
    """The operator installs the CRDs, writes the nodes' kubeconfig and flat file and binds that kubeconfig's
    account to its whereabouts-cni ClusterRole on every cluster with Multus
    (openshift/cluster-network-operator bindata/network/additional-networks/crd/001-crd.yaml and
    bindata/network/multus/multus.yaml @ 2a6a57fef3ac1c8fde00e85b603e9f73ef29b75c); the reconciler opens the
    store through that same kubeconfig.  Render adds only the reconciler's own pod and event rights."""
    ipam = {"type": "whereabouts", "range": "192.0.2.0/24", "datastore": "kubernetes"}
    docs = render(additional_networks(whereabouts_resource(ipam)), Options(namespace="cni-ipam"))
    found = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert {kind for kind, _, _ in found} == {"NetworkAttachmentDefinition", "ServiceAccount", "DaemonSet",
                                              "ConfigMap", "ClusterRole", "ClusterRoleBinding"}
    assert [name for kind, _, name in found if kind.startswith("ClusterRole")] == [
        "cni-ipam-whereabouts-reconciler", "cni-ipam-whereabouts-reconciler"]
    installer = next(d for d in docs if d["kind"] == "DaemonSet" and d["metadata"]["name"] == "cni-ipam-installer")
    assert [c["name"] for c in installer["spec"]["template"]["spec"]["containers"]] == ["install-cni-ipam"]
    schema = pytest.importorskip("test_deploy_schema", reason="pip install -e '.[test]' (kubernetes-validate)")
    for doc in docs:
        schema.validate_object(doc, schema.VERSIONS[-1])


def test_without_the_kubernetes_source_the_reconciler_has_no_token_even_on_the_kubernetes_store():
    """Its store calls go through the operator's kubeconfig (a file on the node), not its own account."""
    ipam = {"type": "whereabouts", "range": "192.0.2.0/24"}
    docs = render(additional_networks(whereabouts_resource(ipam)), Options(kubernetes_source=False))
    account = next(d for d in docs if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "whereabouts-reconciler")
    assert account["automountServiceAccountToken"] is False
    assert [d for d in docs if d["kind"] in ("Role", "ClusterRole")] == []
