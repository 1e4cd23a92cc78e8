"""A throw-away CA, a server certificate for 127.0.0.1 and a client certificate, made with the openssl command."""

from __future__ import annotations

import os
import subprocess


def _openssl(directory: str, *args) -> None:
    done = subprocess.run(["openssl", *args], cwd=directory, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {done.stderr}")


def make_certificates(directory: str, client_user: str = "cert-user") -> dict:
    """Paths of ``ca``, ``cert``/``key`` (server, SAN IP:127.0.0.1) and ``client_cert``/``client_key`` (CN = user)."""
    os.makedirs(directory, exist_ok=True)
    _openssl(directory, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "2", "-subj", "/CN=kubeapi test CA")
    with open(os.path.join(directory, "server.ext"), "w") as stream:
        stream.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    with open(os.path.join(directory, "client.ext"), "w") as stream:
        stream.write("extendedKeyUsage=clientAuth\n")
    for name, subject in (("server", "/CN=kube-apiserver"), ("client", f"/CN={client_user}/O=system:nodes")):
        _openssl(directory, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", subject)
        _openssl(directory, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")
    files = {"ca": "ca.crt", "cert": "server.crt", "key": "server.key", "client_cert": "client.crt",
             "client_key": "client.key"}
    return {role: os.path.join(directory, name) for role, name in files.items()}
