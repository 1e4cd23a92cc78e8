"""``cni-ipam node-kubeconfig``: the node's kubeconfig and flat file for the Kubernetes store.

The layout checked is upstream's (k8snetworkplumbingwg/whereabouts script/lib.sh
``generateKubeConfig`` @ 3a262bd0cd873e13d9b379342f8251b852a89b8f, v0.9.4), which
OpenShift's operator writes too; the rotation test plays the kubelet renewing a
projected token the way it does (a new ``..data`` directory swapped in by rename).
"""

import base64
import json
import os
import stat
import threading
import time

import pytest
import yaml

from cni_ipam.cli import main
from cni_ipam.deploy.kubeconfig_writer import (MissingInput, keep_node_files, kubeconfig_text, node_files, one_round,
                                               server_url)

CA = b"-----BEGIN CERTIFICATE-----\nMIIB the cluster CA\n-----END CERTIFICATE-----\n"
ENV = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443", "NODENAME": "worker-0.example.com"}
FLAT = b'{"datastore": "kubernetes"}\n'


def test_server_url_wraps_an_ipv6_host():
    assert server_url("10.96.0.1", "443") == "https://10.96.0.1:443"
    assert server_url("fd00:10:96::1", "6443") == "https://[fd00:10:96::1]:6443"
    assert server_url("api.example.com", "6443") == "https://api.example.com:6443"


def test_the_kubeconfig_has_upstreams_layout_and_our_values():
    config = yaml.safe_load(kubeconfig_text("https://[fd00::1]:443", CA, 'ey"J:#x', "cni-ipam"))
    assert config == {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": "https://[fd00::1]:443",
                                                   "certificate-authority-data": base64.b64encode(CA).decode()}}],
        "users": [{"name": "whereabouts", "user": {"token": 'ey"J:#x'}}],
        "contexts": [{"name": "whereabouts-context",
                      "context": {"cluster": "local", "user": "whereabouts", "namespace": "cni-ipam"}}],
        "current-context": "whereabouts-context"}


def service_account(tmp_path, token="token-1", ca=CA, namespace="cni-ipam"):
    """A projected volume as the kubelet lays it out: files are links into ``..data``, swapped whole."""
    root = tmp_path / "sa"
    root.mkdir(exist_ok=True)
    data = root / f"..{time.monotonic_ns()}"
    data.mkdir()
    for name, value in (("token", token), ("ca.crt", ca), ("namespace", namespace)):
        if value is not None:
            (data / name).write_bytes(value if isinstance(value, bytes) else value.encode())
            if not (root / name).is_symlink():
                (root / name).symlink_to(f"..data/{name}")
    (root / "..data_tmp").symlink_to(data.name)
    os.replace(root / "..data_tmp", root / "..data")
    return str(root)


def test_node_files_say_what_is_missing(tmp_path):
    with pytest.raises(MissingInput, match="KUBERNETES_SERVICE_HOST"):
        node_files({}, {"token": b"t", "ca.crt": CA, "namespace": b"ns"})
    with pytest.raises(MissingInput, match="no token"):
        node_files(ENV, {"ca.crt": CA, "namespace": b"ns"})
    assert set(node_files({**ENV, "NODENAME": ""}, {"token": b"t", "ca.crt": CA, "namespace": b"ns"})) == {
        "whereabouts.kubeconfig"}


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_round_writes_nothing_until_the_flat_file_is_there(tmp_path):
    sa, target, flat = service_account(tmp_path), tmp_path / "whereabouts.d", tmp_path / "whereabouts.conf"
    assert one_round(str(target), str(flat), sa, ENV) == []
    assert not target.exists()
    flat.write_bytes(FLAT)
    assert sorted(one_round(str(target), str(flat), sa, ENV)) == ["nodename", "whereabouts.conf",
                                                                  "whereabouts.kubeconfig"]
    assert sorted(p.name for p in target.iterdir()) == ["nodename", "whereabouts.conf", "whereabouts.kubeconfig"]
    for path in target.iterdir():
        assert mode(path) == 0o600, path
    config = yaml.safe_load((target / "whereabouts.kubeconfig").read_text())
    assert config["users"][0]["user"]["token"] == "token-1"
    assert config["clusters"][0]["cluster"]["server"] == "https://10.96.0.1:443"
    assert (target / "nodename").read_text() == "worker-0.example.com"
    assert (target / "whereabouts.conf").read_bytes() == FLAT
    assert one_round(str(target), str(flat), sa, ENV) == []  # nothing changed: nothing written


def test_a_flat_file_on_the_node_is_kept(tmp_path):
    sa, target, flat = service_account(tmp_path), tmp_path / "whereabouts.d", tmp_path / "whereabouts.conf"
    flat.write_bytes(FLAT)
    target.mkdir()
    ours = b'{"datastore": "etcd", "etcd_endpoints": ["https://10.0.0.11:2379"]}\n'
    (target / "whereabouts.conf").write_bytes(ours)
    assert sorted(one_round(str(target), str(flat), sa, ENV)) == ["nodename", "whereabouts.kubeconfig"]
    assert (target / "whereabouts.conf").read_bytes() == ours


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not within the timeout"
        time.sleep(0.02)


def test_the_loop_rewrites_the_kubeconfig_when_the_token_rotates(tmp_path):
    sa, target, flat = service_account(tmp_path), tmp_path / "whereabouts.d", tmp_path / "whereabouts.conf"
    flat.write_bytes(FLAT)
    kubeconfig = target / "whereabouts.kubeconfig"
    stop, reports = threading.Event(), []
    keeper = threading.Thread(target=keep_node_files,
                              args=(str(target), str(flat), sa, ENV, 0.05, stop, lambda *a: reports.append(a)))
    keeper.start()
    try:
        wait_for(lambda: kubeconfig.exists())

        def token():
            return yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"]

        assert token() == "token-1"
        service_account(tmp_path, token="token-2")  # the kubelet renews the token
        wait_for(lambda: token() == "token-2")
        (target / "whereabouts.conf").write_bytes(b"{}")  # someone else's flat file now: left alone
        service_account(tmp_path, token="token-3", ca=b"a new CA\n")
        wait_for(lambda: token() == "token-3")
    finally:
        stop.set()
        keeper.join(5)
    assert not keeper.is_alive()
    assert (target / "whereabouts.conf").read_bytes() == b"{}"
    assert yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["certificate-authority-data"] == \
        base64.b64encode(b"a new CA\n").decode()
    assert [r for r in reports if len(r) > 1] == []  # no failed round
    assert [r[0] for r in reports] == ["whereabouts.kubeconfig", "nodename", "whereabouts.conf",
                                       "whereabouts.kubeconfig", "whereabouts.kubeconfig"]


def test_the_command_once(tmp_path, monkeypatch, capsys):
    sa, target, flat = service_account(tmp_path), tmp_path / "whereabouts.d", tmp_path / "whereabouts.conf"
    flat.write_bytes(json.dumps({"datastore": "kubernetes"}).encode())
    argv = ["node-kubeconfig", "--to", str(target), "--flat-file", str(flat), "--service-account", sa, "--every", "0"]
    for name in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert main(argv) == 1
    assert "KUBERNETES_SERVICE_HOST" in capsys.readouterr().err
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    assert main(argv) == 0
    assert capsys.readouterr().err.count("wrote ") == 3
    assert json.loads((target / "whereabouts.conf").read_text()) == {"datastore": "kubernetes"}


def test_the_plugins_own_reader_takes_what_the_installer_writes():
    """What lands on the node is read by cni_ipam.kube.kubeconfig, the stdlib reader the plugin uses."""
    from cni_ipam.kube.kubeconfig import parse

    ca = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    settings = parse(kubeconfig_text("https://[fd00::1]:6443", ca, "tok.en-123", "cni-ipam"),
                     "/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig")
    assert (settings.scheme, settings.host, settings.port) == ("https", "fd00::1", 6443)
    assert (settings.ca_data, settings.token, settings.namespace) == (ca, "tok.en-123", "cni-ipam")
