"""Kubeconfig settings, from the kubeconfigs that installers and kubectl really write.

Every text is also read with PyYAML, and must come out the same as from our reader.
"""

import base64
import os
import subprocess

import pytest
import yaml

from cni_ipam.kube import kubeconfig, miniyaml
from cni_ipam.kube.kubeconfig import KubeconfigError

# The heredoc of k8snetworkplumbingwg/whereabouts script/lib.sh generateKubeConfig
# @ v0.9.4 (3a262bd0cd873e13d9b379342f8251b852a89b8f), verbatim.
WHEREABOUTS_HEREDOC = """cat <<EOF
# Kubeconfig file for the Whereabouts CNI plugin.
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: ${KUBERNETES_SERVICE_PROTOCOL:-https}://${KUBERNETES_SERVICE_HOST_WRAP}:${KUBERNETES_SERVICE_PORT}
    $TLS_CFG
users:
- name: whereabouts
  user:
    token: "${SERVICE_ACCOUNT_TOKEN}"
contexts:
- name: whereabouts-context
  context:
    cluster: local
    user: whereabouts
    namespace: ${WHEREABOUTS_NAMESPACE}
current-context: whereabouts-context
EOF
"""

# The heredoc of the whereabouts-token-watcher container in openshift/cluster-network-operator
# bindata/network/multus/multus.yaml @ 2a6a57fef3ac1c8fde00e85b603e9f73ef29b75c (the kubeconfig
# behind CNO's flat file), verbatim apart from the YAML block's indentation.
CNO_TOKEN_WATCHER_HEREDOC = """cat <<EOF
# Kubeconfig file for the Whereabouts CNI plugin.
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: ${KUBERNETES_SERVICE_PROTOCOL:-https}://${KUBERNETES_SERVICE_HOST_WRAP}:${KUBERNETES_SERVICE_PORT}
    $TLS_CFG
users:
- name: whereabouts
  user:
    token: "$(cat $SERVICE_ACCOUNT_TOKEN_PATH)"
contexts:
- name: whereabouts-context
  context:
    cluster: local
    user: whereabouts
    namespace: ${WHEREABOUTS_NAMESPACE}
current-context: whereabouts-context
EOF
"""

CA_PEM = b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
TOKEN = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2ln"


def _render(heredoc, tmp_path, **env):
    """Run the installer's heredoc through /bin/sh, as the installer does."""
    token_path = tmp_path / "token"
    token_path.write_text(TOKEN)
    full = {"PATH": os.environ["PATH"], "SERVICE_ACCOUNT_TOKEN": TOKEN,
            "SERVICE_ACCOUNT_TOKEN_PATH": str(token_path), "KUBERNETES_SERVICE_HOST_WRAP": "10.96.0.1",
            "KUBERNETES_SERVICE_PORT": "443", "TLS_CFG": "", "WHEREABOUTS_NAMESPACE": "", **env}
    return subprocess.run(["sh", "-c", heredoc], env=full, check=True, capture_output=True, text=True).stdout


def _parse(text, tmp_path, name="whereabouts.kubeconfig"):
    assert miniyaml.loads(text) == yaml.safe_load(text)
    path = tmp_path / name
    path.write_text(text)
    return kubeconfig.load(str(path))


CA_DATA = "certificate-authority-data: " + base64.b64encode(CA_PEM).decode()


@pytest.mark.parametrize("heredoc", [WHEREABOUTS_HEREDOC, CNO_TOKEN_WATCHER_HEREDOC], ids=["upstream", "cno"])
def test_installer_kubeconfig_with_ca_and_namespace(heredoc, tmp_path):
    text = _render(heredoc, tmp_path, TLS_CFG=CA_DATA, WHEREABOUTS_NAMESPACE="openshift-multus")
    s = _parse(text, tmp_path)
    assert (s.scheme, s.host, s.port, s.base_path) == ("https", "10.96.0.1", 443, "")
    assert s.ca_data == CA_PEM and not s.ca_file and not s.insecure
    assert s.token == TOKEN and s.bearer_token() == TOKEN
    assert s.namespace == "openshift-multus"
    assert s.context == "whereabouts-context"
    assert s.tls


@pytest.mark.parametrize("heredoc", [WHEREABOUTS_HEREDOC, CNO_TOKEN_WATCHER_HEREDOC], ids=["upstream", "cno"])
def test_installer_kubeconfig_insecure_without_namespace(heredoc, tmp_path):
    # namespace: left empty by the installer -> null -> whereabouts' default
    text = _render(heredoc, tmp_path, TLS_CFG="insecure-skip-tls-verify: true",
                   KUBERNETES_SERVICE_HOST_WRAP="[fd00::1]", KUBERNETES_SERVICE_PORT="6443")
    s = _parse(text, tmp_path)
    assert s.namespace == "kube-system"
    assert s.insecure and s.ca_data is None
    assert (s.host, s.port) == ("fd00::1", 6443)


def test_installer_kubeconfig_plain_http_without_tls_lines(tmp_path):
    text = _render(WHEREABOUTS_HEREDOC, tmp_path, KUBERNETES_SERVICE_PROTOCOL="http",
                   KUBERNETES_SERVICE_PORT="8080")
    s = _parse(text, tmp_path)
    assert (s.scheme, s.port, s.tls) == ("http", 8080, False)


KUBECTL = """apiVersion: v1
clusters:
- cluster:
    certificate-authority: pki/ca.crt
    server: https://api.example.test:6443/prefix/
    tls-server-name: kubernetes.default
  name: prod
- cluster:
    insecure-skip-tls-verify: true
    server: https://other:6443
  name: other
contexts:
- context:
    cluster: prod
    namespace: whereabouts
    user: admin
  name: admin@prod
- context:
    cluster: other
    user: robot
  name: robot@other
current-context: admin@prod
kind: Config
preferences: {}
users:
- name: admin
  user:
    client-certificate: pki/admin.crt
    client-key: /abs/admin.key
- name: robot
  user:
    tokenFile: tokens/robot
"""


def test_kubectl_style_files_resolved_against_the_kubeconfig_dir(tmp_path):
    (tmp_path / "conf").mkdir()
    s = _parse(KUBECTL, tmp_path / "conf", name="config")
    base = str(tmp_path / "conf")
    assert s.ca_file == os.path.join(base, "pki/ca.crt")
    assert s.cert_file == os.path.join(base, "pki/admin.crt")
    assert s.key_file == "/abs/admin.key"
    assert (s.host, s.port, s.base_path, s.tls_server_name) == ("api.example.test", 6443, "/prefix",
                                                                 "kubernetes.default")
    assert s.namespace == "whereabouts"
    assert s.bearer_token() == ""


def test_token_file_read_when_asked_and_wins_over_token(tmp_path):
    text = KUBECTL.replace("current-context: admin@prod", "current-context: robot@other")
    text = text.replace("    tokenFile: tokens/robot", "    tokenFile: tokens/robot\n    token: inline")
    s = _parse(text, tmp_path)
    assert s.token_file == str(tmp_path / "tokens" / "robot")
    assert s.bearer_token() == "inline"  # the file is missing: the inline token
    (tmp_path / "tokens").mkdir()
    (tmp_path / "tokens" / "robot").write_text("from-file\n")
    assert s.bearer_token() == "from-file"
    assert "inline" not in repr(s)


def test_token_file_missing_without_token(tmp_path):
    text = KUBECTL.replace("current-context: admin@prod", "current-context: robot@other")
    s = _parse(text, tmp_path)
    with pytest.raises(KubeconfigError, match="cannot read tokenFile"):
        s.bearer_token()


def test_json_kubeconfig_with_cert_data(tmp_path):
    cert = base64.b64encode(b"CERT").decode()
    key = base64.b64encode(b"KEY").decode()
    text = ('{"apiVersion":"v1","kind":"Config","current-context":"c",'
            '"clusters":[{"name":"k","cluster":{"server":"10.0.0.1:6443","certificate-authority-data":"'
            + base64.b64encode(CA_PEM).decode() + '"}}],'
            '"users":[{"name":"u","user":{"client-certificate-data":"' + cert + '","client-key-data":"' + key + '"}}],'
            '"contexts":[{"name":"c","context":{"cluster":"k","user":"u"}}]}')
    s = _parse(text, tmp_path)
    assert (s.cert_data, s.key_data, s.ca_data) == (b"CERT", b"KEY", CA_PEM)
    # no scheme, TLS configured: https (client-go defaultServerUrlFor)
    assert (s.scheme, s.host, s.port) == ("https", "10.0.0.1", 6443)


def _minimal(cluster="server: https://h", user="token: t", context="cluster: k\n    user: u", current="c"):
    return (f"current-context: {current}\nclusters:\n- name: k\n  cluster:\n    {cluster}\n"
            f"users:\n- name: u\n  user:\n    {user}\ncontexts:\n- name: c\n  context:\n    {context}\n")


def test_last_entry_of_a_name_wins(tmp_path):
    text = _minimal() + "- name: c\n  context:\n    cluster: k\n    user: u\n    namespace: later\n"
    assert _parse(text, tmp_path).namespace == "later"


def test_basic_auth(tmp_path):
    s = _parse(_minimal(user="username: admin\n    password: secret"), tmp_path)
    assert (s.username, s.password, s.token) == ("admin", "secret", "")
    assert "secret" not in repr(s)


@pytest.mark.parametrize("text,words", [
    ("", "empty"),
    (_minimal(current='""'), "current-context is not set"),
    (_minimal(current="nope"), "no context named 'nope'"),
    (_minimal(context="cluster: k"), "user was not specified"),
    (_minimal(context="user: u"), "cluster was not specified"),
    (_minimal(context="cluster: missing\n    user: u"), "no cluster named 'missing'"),
    (_minimal(context="cluster: k\n    user: u\n    namespace: Bad_NS"), "not a valid namespace"),
    (_minimal(cluster="insecure-skip-tls-verify: true"), "no server found"),
    (_minimal(cluster="server: https://h\n    certificate-authority: ca\n    certificate-authority-data: QQ=="),
     "both specified"),
    (_minimal(cluster="server: https://h\n    certificate-authority-data: not*base64"), "not valid base64"),
    (_minimal(cluster="server: https://h\n    insecure-skip-tls-verify: \"true\""), "expected true or false"),
    (_minimal(cluster="server: https://h\n    proxy-url: http://proxy:3128"), "proxies are not supported"),
    (_minimal(cluster="server: ftp://h"), "expected http or https"),
    (_minimal(cluster="server: https://fd00::1:6443"), "without brackets"),
    (_minimal(cluster="server: https://h:99999"), "invalid port"),
    (_minimal(user="client-certificate: c"), "client-key must be specified"),
    (_minimal(user="client-certificate: c\n    client-key: k\n    client-key-data: QQ=="), "both specified"),
    (_minimal(user="client-certificate: c\n    client-certificate-data: QQ==\n    client-key: k"), "both specified"),
    (_minimal(user="token: t\n    username: u"), "more than one authentication method"),
    (_minimal(user="token: 12345"), "expected a string"),
    (_minimal(user='exec: {"command": "aws"}'), "exec credential plugins are not supported"),
    (_minimal(user='auth-provider: {"name": "gcp"}'), "auth-provider"),
    (_minimal(user="as: someone"), "impersonation"),
    ("a: &x 1\n", "line 1: anchors"),
    ("- a\n", "expected a mapping"),
])
def test_refused_with_a_reason(text, words, tmp_path):
    path = tmp_path / "kc"
    path.write_text(text)
    with pytest.raises(KubeconfigError) as info:
        kubeconfig.load(str(path))
    assert words in str(info.value)
    assert str(info.value).startswith(str(path))


def test_missing_file():
    with pytest.raises(KubeconfigError, match="cannot read kubeconfig /nonexistent/kc"):
        kubeconfig.load("/nonexistent/kc")


@pytest.mark.parametrize("server,tls,expected", [
    ("https://h", False, ("https", "h", 443, "")),
    ("http://h", True, ("http", "h", 80, "")),
    ("h:8443", False, ("http", "h", 8443, "")),
    ("h", True, ("https", "h", 443, "")),
    ("HTTPS://[::1]/", False, ("https", "::1", 443, "")),
    ("https://[::1]:6443/a/b/", False, ("https", "::1", 6443, "/a/b")),
])
def test_split_server(server, tls, expected):
    assert kubeconfig.split_server(server, tls) == expected
