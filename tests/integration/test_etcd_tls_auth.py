"""Cluster mode against an etcd that wants TLS client certificates and a user with a password.

A CA, a server certificate (SAN IP:127.0.0.1) and a client certificate are
made with ``openssl`` in tmp; one etcd member serves https on loopback with
``--client-cert-auth``; ``etcdctl`` creates ``root`` and a user ``ipam``
whose role may only read and write the test's prefix, then enables auth.

Two facts of etcd 3.4's JSON gateway shape the certificates (both checked
here, both in docs/etcd.md):

* with client-cert auth and RBAC both on, the gateway refuses every request
  whose client certificate has a CommonName ("CommonName of client sending
  a request against gateway will be ignored and not used as expected"): the
  gateway cannot pass a CN-derived identity on, so the plugin's certificate
  must have no CN and the user is given by ``etcd_username``/``etcd_password``;
* the gateway calls etcd's own gRPC port with the server certificate, so that
  certificate needs the clientAuth extended key usage as well as serverAuth.

Error codes: a wrong password, a user outside its role's prefix and a TLS
handshake that fails over certificates are not transient, so they are code 5
(I/O failure: the store refused us), with etcd's reason in the message and
no retrying until the deadline; only an unreachable cluster is code 11.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess

import pytest

from cni_ipam_lab.namespaces import cni_env, run_plugin

NETWORK = "tls-net"
IFNAME = "net1"
ROOT_PASSWORD = "root-secret"
USER, PASSWORD = "ipam", "ipam-secret"


def free_port_pair(start: int) -> int:
    for base in range(start, start + 2000, 100):
        ok = True
        for port in (base, base + 1):
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
        if ok:
            return base
    raise RuntimeError(f"no free port pair from {start}")


def openssl(directory, *args) -> None:
    done = subprocess.run(["openssl", *args], cwd=directory, capture_output=True, text=True)
    assert done.returncode == 0, f"openssl {' '.join(args)}: {done.stderr}"


def make_certificates(directory) -> dict:
    """CA, server (SAN IP:127.0.0.1, server+client auth) and a client certificate without a CommonName."""
    openssl(directory, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-days", "2", "-subj", "/CN=cni-ipam test CA")
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    (directory / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, subject in (("server", "/CN=etcd-server"), ("client", "/O=cni-ipam")):
        openssl(directory, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", subject)
        openssl(directory, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")
    # a client certificate from another CA: well-formed, but the server does not trust it
    openssl(directory, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "rogue.key", "-out", "rogue.crt",
            "-days", "2", "-subj", "/O=rogue")
    return {name: str(directory / name) for name in
            ("ca.crt", "server.crt", "server.key", "client.crt", "client.key", "rogue.crt", "rogue.key")}


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory):
    """One https etcd member with client-cert auth and RBAC: (cluster, certificate paths, prefix the user may use)."""
    from cni_ipam_lab.etcd_cluster import ETCD, EtcdCluster

    if not os.access(ETCD, os.X_OK):
        pytest.skip(f"etcd is not installed ({ETCD}); apt-get install etcd-server")
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed; apt-get install openssl")
    if shutil.which("etcdctl") is None:
        pytest.skip("etcdctl is not installed (needed to create users); apt-get install etcd-client")
    directory = tmp_path_factory.mktemp("etcd-tls")
    certs = make_certificates(directory)
    cluster = EtcdCluster(
        str(directory / "cluster"), members=1, base_port=free_port_pair(25890), token="cni-ipam-tls", scheme="https",
        extra_args=["--cert-file", certs["server.crt"], "--key-file", certs["server.key"],
                    "--trusted-ca-file", certs["ca.crt"], "--client-cert-auth"],
        tls={"ca_file": certs["ca.crt"], "cert_file": certs["client.crt"], "key_file": certs["client.key"]})
    prefix = "/tls-ipam/"
    try:
        cluster.start()
        etcdctl = ["etcdctl", "--endpoints", cluster.endpoints[0], "--cacert", certs["ca.crt"],
                   "--cert", certs["client.crt"], "--key", certs["client.key"], "--dial-timeout", "5s"]
        for args in (["user", "add", "root", f"--new-user-password={ROOT_PASSWORD}"],
                     ["user", "grant-role", "root", "root"],
                     ["role", "add", "ipam"],
                     ["role", "grant-permission", "ipam", "--prefix=true", "readwrite", prefix],
                     ["user", "add", USER, f"--new-user-password={PASSWORD}"],
                     ["user", "grant-role", USER, "ipam"],
                     ["auth", "enable"]):
            done = subprocess.run(etcdctl + args, capture_output=True, text=True, timeout=30,
                                  env=dict(os.environ, ETCDCTL_API="3"))
            assert done.returncode == 0, f"etcdctl {' '.join(args)}: {done.stdout} {done.stderr}"
        yield cluster, certs, prefix
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)


def netconf(cluster, certs: dict, prefix: str, **overrides) -> dict:
    ipam = {"type": "whereabouts", "range": "10.70.0.0/24", "datastore": "etcd",
            "etcd_endpoints": list(cluster.endpoints), "etcd_prefix": prefix,
            "etcd_ca_cert_file": certs["ca.crt"], "etcd_cert_file": certs["client.crt"],
            "etcd_key_file": certs["client.key"], "etcd_username": USER, "etcd_password": PASSWORD,
            "etcd_timeout": 2}
    ipam.update(overrides)
    for key in [k for k, v in ipam.items() if v is None]:
        del ipam[key]
    return {"cniVersion": "1.1.0", "name": NETWORK, "type": "whereabouts", "ipam": ipam}


def call(bin_dir: str, command: str, container_id: str, config: dict):
    env = cni_env(command, container_id, f"/var/run/netns/{container_id}", IFNAME, cni_path=bin_dir)
    return run_plugin(os.path.join(bin_dir, "whereabouts"), env, config, timeout=120)


def stored(cluster, certs: dict, prefix: str) -> list:
    """Keys under the prefix, read as the user through TLS (our client, outside the plugin)."""
    from cni_ipam.store.etcd_client import EtcdClient

    client = EtcdClient(cluster.endpoints, username=USER, password=PASSWORD, ca_file=certs["ca.crt"],
                        cert_file=certs["client.crt"], key_file=certs["client.key"])
    try:
        client.authenticate()
        return [kv["key"].decode() for kv in client.prefix(prefix.encode())]
    finally:
        client.close()


def test_add_del_over_tls_with_user_and_password(plugin_bin_dir, tls_etcd):
    cluster, certs, prefix = tls_etcd
    assert cluster.endpoints[0].startswith("https://127.0.0.1:")
    config = netconf(cluster, certs, prefix)
    first = call(plugin_bin_dir, "ADD", "tls-one", config)
    second = call(plugin_bin_dir, "ADD", "tls-two", config)
    assert first.ok, first
    assert second.ok, second
    got = [ipaddress.ip_interface(c.output["ips"][0]["address"]) for c in (first, second)]
    assert [str(g) for g in got] == ["10.70.0.1/24", "10.70.0.2/24"]
    keys = stored(cluster, certs, prefix)
    assert any("/tls-one/" in key for key in keys) and any("/tls-two/" in key for key in keys), keys

    check = call(plugin_bin_dir, "CHECK", "tls-one", dict(config, prevResult=first.output))
    assert check.ok, check
    for cid in ("tls-one", "tls-two"):
        done = call(plugin_bin_dir, "DEL", cid, config)
        assert done.ok, done
    left = stored(cluster, certs, prefix)
    assert [key for key in left if not key.startswith((prefix + "hints/", prefix + "hint-spaces/"))] == []


def test_host_port_without_scheme_means_https_when_tls_files_are_given(plugin_bin_dir, tls_etcd):
    """whereabouts' ``etcd_host: host:port`` form: with TLS files set it is https."""
    cluster, certs, prefix = tls_etcd
    host_port = cluster.endpoints[0].split("://", 1)[1]
    config = netconf(cluster, certs, prefix, etcd_endpoints=None, etcd_host=host_port)
    added = call(plugin_bin_dir, "ADD", "tls-host", config)
    assert added.ok, added
    done = call(plugin_bin_dir, "DEL", "tls-host", config)
    assert done.ok, done


def test_wrong_password_is_code_5_naming_the_failure(plugin_bin_dir, tls_etcd):
    cluster, certs, prefix = tls_etcd
    result = call(plugin_bin_dir, "ADD", "tls-badpw", netconf(cluster, certs, prefix, etcd_password="wrong"))
    assert not result.ok, result
    assert result.output["code"] == 5, result
    assert "authentication failed" in result.output["msg"], result
    assert not any("/tls-badpw/" in key for key in stored(cluster, certs, prefix))


def test_prefix_outside_the_users_role_is_code_5_permission_denied(plugin_bin_dir, tls_etcd):
    cluster, certs, prefix = tls_etcd
    result = call(plugin_bin_dir, "ADD", "tls-elsewhere", netconf(cluster, certs, prefix, etcd_prefix="/elsewhere/"))
    assert not result.ok, result
    assert result.output["code"] == 5, result
    assert "permission denied" in result.output["msg"], result


def test_no_password_is_refused(plugin_bin_dir, tls_etcd):
    """Certificate but no user: the certificate names nobody, so etcd grants nothing."""
    cluster, certs, prefix = tls_etcd
    result = call(plugin_bin_dir, "ADD", "tls-nouser",
                  netconf(cluster, certs, prefix, etcd_username=None, etcd_password=None))
    assert not result.ok, result
    assert result.output["code"] == 5, result
    assert "etcd" in result.output["msg"], result


@pytest.mark.parametrize("overrides, reason", [
    ({"etcd_cert_file": None, "etcd_key_file": None}, "ALERT"),  # no client certificate
    ({"etcd_cert_file": "rogue.crt", "etcd_key_file": "rogue.key"}, "ALERT"),  # one the server does not trust
    ({"etcd_ca_cert_file": None}, "CERTIFICATE_VERIFY_FAILED"),  # we cannot verify the server
], ids=["no-client-cert", "untrusted-client-cert", "no-ca"])
def test_tls_failures_are_code_5_at_once(plugin_bin_dir, tls_etcd, overrides, reason):
    """A handshake refused over certificates is a config error: code 5 with the TLS reason, not code 11."""
    cluster, certs, prefix = tls_etcd
    overrides = {k: (certs[v] if v in certs else v) for k, v in overrides.items()}
    result = call(plugin_bin_dir, "ADD", "tls-bad", netconf(cluster, certs, prefix, **overrides))
    assert not result.ok, result
    assert result.output["code"] == 5, result
    assert "TLS handshake with etcd failed" in result.output["msg"], result
    assert reason in result.output["msg"].upper(), result


def test_missing_certificate_file_is_code_5_naming_it(plugin_bin_dir, tls_etcd, tmp_path):
    cluster, certs, prefix = tls_etcd
    missing = str(tmp_path / "nope.crt")
    result = call(plugin_bin_dir, "ADD", "tls-missing", netconf(cluster, certs, prefix, etcd_cert_file=missing))
    assert not result.ok, result
    assert result.output["code"] == 5, result
    assert missing in result.output["msg"], result
