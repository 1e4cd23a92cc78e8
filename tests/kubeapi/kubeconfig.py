"""Kubeconfigs that point at a test API server, written as OpenShift's CNO and upstream's installer write them.

The CNO layout (openshift/cluster-network-operator bindata/network/multus/multus.yaml
@ 2a6a57fef3ac1c8fde00e85b603e9f73ef29b75c): one cluster with ``server`` and
``certificate-authority`` (a file), one user with ``tokenFile``, one context
``whereabouts-context`` with no namespace.
"""

from __future__ import annotations

import os


def write_kubeconfig(server, path: str, token=None, namespace: str = "", ca: str = "file",
                     token_file: bool = False, client_cert: bool = False, insecure: bool = False) -> str:
    """A kubeconfig for ``server`` (a :class:`kubeapi.KubeAPIServer`) at ``path``.

    ``token``: the bearer token (default the server's own; "" for none); ``token_file``: write it to a file
    beside and name it with ``tokenFile``; ``ca``: "file", "data" or "" for how the CA is given (TLS
    servers); ``client_cert``: present the server's client certificate (as data); ``namespace``: the
    context's.
    """
    import base64

    token = server.token if token is None else token
    cluster = [f"    server: {server.url}"]
    if server.tls and ca == "file":
        cluster.append(f"    certificate-authority: {server.ca_file}")
    elif server.tls and ca == "data":
        with open(server.ca_file, "rb") as stream:
            cluster.append(f"    certificate-authority-data: {base64.b64encode(stream.read()).decode()}")
    if insecure:
        cluster.append("    insecure-skip-tls-verify: true")
    user = []
    if token and token_file:
        token_path = path + ".token"
        with open(token_path, "w") as stream:
            stream.write(token + "\n")
        user.append(f"    tokenFile: {token_path}")
    elif token:
        user.append(f"    token: \"{token}\"")
    if client_cert:
        for key, name in (("client-certificate-data", "client_cert"), ("client-key-data", "client_key")):
            with open(server.tls[name], "rb") as stream:
                user.append(f"    {key}: {base64.b64encode(stream.read()).decode()}")
    context = ["    cluster: local", "    user: whereabouts"] + ([f"    namespace: {namespace}"] if namespace else [])
    text = "\n".join(["apiVersion: v1", "kind: Config", "clusters:", "- name: local", "  cluster:", *cluster,
                      "users:", "- name: whereabouts", "  user:", *user,
                      "contexts:", "- name: whereabouts-context", "  context:", *context,
                      "current-context: whereabouts-context", ""])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as stream:
        stream.write(text)
    return path
