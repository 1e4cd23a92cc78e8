"""Connection settings from a kubeconfig, read the way client-go and whereabouts read it.

* current-context -> its context -> its cluster and user, as client-go's clientcmd does;
  list entries with the same name: the last one wins (client-go's v1 conversion fills a map).
* Namespace: the context's, else ``kube-system``; a kubeconfig without a usable
  current context is refused (k8snetworkplumbingwg/whereabouts
  pkg/storage/kubernetes/ipam.go ``NewKubernetesIPAM`` and ``wbNamespaceFromCtx``
  @ v0.9.4, 3a262bd0cd873e13d9b379342f8251b852a89b8f).
* Relative ``certificate-authority``, ``client-certificate``, ``client-key`` and
  ``tokenFile`` are resolved against the kubeconfig's directory (client-go
  tools/clientcmd/loader.go ``ResolveLocalPaths``: ``GetClusterFileReferences``,
  ``GetAuthInfoFileReferences``).
* What client-go's validation refuses is refused with its reasons (kubernetes/client-go
  tools/clientcmd/validation.go @ efb421c4f9a4e42601dd0a7fa2894d57744c9d64): no
  server; CA data and CA file both set; client certificate data and file both set,
  or key data and file, or a certificate without a key; a token together with
  basic auth; a namespace that is not a DNS-1123 label.
* A server without a scheme gets ``https`` when a CA, client certificate or
  ``insecure-skip-tls-verify`` is set, else ``http`` (client-go rest/url_utils.go
  ``defaultServerUrlFor``).

Refused because obeying them is beyond a plugin and ignoring them would connect
as someone else or some other way: ``exec`` and ``auth-provider`` credential
plugins, impersonation (``as``, ``as-groups``, ``as-uid``, ``as-user-extra``),
``proxy-url``.  Everything else client-go ignores is ignored here too.

:func:`parse` is pure; :func:`load` reads the file and :meth:`KubeSettings.bearer_token`
reads the token file.
"""

from __future__ import annotations

from .. import oslite
from . import miniyaml
from .names import label_problem

DEFAULT_NAMESPACE = "kube-system"
_UNSUPPORTED_USER_KEYS = {
    "exec": "exec credential plugins",
    "auth-provider": "auth-provider credential plugins",
    "as": "impersonation (as)",
    "as-groups": "impersonation (as-groups)",
    "as-uid": "impersonation (as-uid)",
    "as-user-extra": "impersonation (as-user-extra)",
}


class KubeconfigError(ValueError):
    """A kubeconfig we cannot use; the message names the file and the field."""


class KubeSettings:
    """Where the API server is, how to trust it, who we are, and the namespace for
    whereabouts' objects.  File paths are absolute; ``*_data`` fields are the decoded
    bytes (PEM); empty strings and None mean "not set"."""

    __slots__ = ("path", "context", "server", "scheme", "host", "port", "base_path",
                 "ca_file", "ca_data", "insecure", "tls_server_name",
                 "token", "token_file", "cert_file", "cert_data", "key_file", "key_data",
                 "username", "password", "namespace")

    def __init__(self, **fields) -> None:
        for name in self.__slots__:
            setattr(self, name, fields.pop(name))
        if fields:
            raise TypeError(f"unknown fields {sorted(fields)}")

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    def bearer_token(self) -> str:
        """The token to send: ``tokenFile``'s contents (re-read at each call, as
        client-go's cached file token source re-reads it) when the file is readable,
        else ``token``; "" without either."""
        if self.token_file:
            try:
                with open(self.token_file, encoding="utf-8") as f:
                    return f.read().strip()
            except OSError as exc:
                if not self.token:
                    raise KubeconfigError(f"{self.path}: cannot read tokenFile {self.token_file}: "
                                          f"{exc.strerror}") from None
        return self.token

    def __repr__(self) -> str:
        secret = ("token", "password", "key_data")
        shown = ", ".join(f"{name}={'<hidden>' if name in secret and getattr(self, name) else getattr(self, name)!r}"
                          for name in self.__slots__)
        return f"KubeSettings({shown})"


def load(path: str) -> KubeSettings:
    """Read and :func:`parse` the kubeconfig at ``path``."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise KubeconfigError(f"cannot read kubeconfig {path}: {exc.strerror}") from None
    return parse(data, path)


def parse(data, path: str) -> KubeSettings:
    """The settings in kubeconfig text ``data`` (str or bytes); ``path`` is where it
    was read from (relative file references are resolved against its directory)."""
    path = oslite.abspath(path)
    try:
        doc = miniyaml.loads(data)
    except UnicodeDecodeError:
        raise KubeconfigError(f"{path}: not UTF-8 text") from None
    except miniyaml.YAMLError as exc:
        raise KubeconfigError(f"{path}: {exc}") from None
    return _Reader(path, doc).settings()


class _Reader:
    """One kubeconfig document: typed field access with errors naming the field."""

    def __init__(self, path: str, doc) -> None:
        if doc is None:
            raise KubeconfigError(f"{path}: the kubeconfig is empty")
        self.path = path
        self.base = oslite.dirname(path)
        self.doc = self._mapping(doc, "the kubeconfig")

    def fail(self, message: str):
        return KubeconfigError(f"{self.path}: {message}")

    def _mapping(self, value, where: str) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(f"{where}: expected a mapping, got {type(value).__name__}")
        return value

    def string(self, section: dict, key: str, where: str) -> str:
        value = section.get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self.fail(f"{where}.{key}: expected a string, got {value!r} (quote it)")
        return value

    def flag(self, section: dict, key: str, where: str) -> bool:
        value = section.get(key)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise self.fail(f"{where}.{key}: expected true or false, got {value!r}")
        return value

    def file(self, section: dict, key: str, where: str) -> str:
        value = self.string(section, key, where)
        return oslite.normpath(oslite.join(self.base, value)) if value else ""

    def data(self, section: dict, key: str, where: str):
        """A ``*-data`` field: base64 as Go's encoding/json decodes []byte (line breaks ignored)."""
        value = self.string(section, key, where)
        if not value:
            return None
        import binascii

        try:
            return binascii.a2b_base64(value.replace("\n", "").replace("\r", ""), strict_mode=True)
        except binascii.Error as exc:
            raise self.fail(f"{where}.{key}: not valid base64 ({exc})") from None

    def named(self, list_key: str, item_key: str, name: str, where: str) -> dict:
        """The ``item_key`` mapping of the entry called ``name`` in the list ``list_key``."""
        entries = self.doc.get(list_key) or []
        if not isinstance(entries, list):
            raise self.fail(f"{list_key}: expected a list, got {type(entries).__name__}")
        found = None
        for i, entry in enumerate(entries):
            entry = self._mapping(entry, f"{list_key}[{i}]")
            if entry.get("name") == name:
                found = entry  # the last one wins, as in client-go
        if found is None:
            raise self.fail(f"{where}: there is no {item_key} named {name!r} in {list_key}")
        return self._mapping(found.get(item_key), f"{list_key}[{name}].{item_key}")

    def settings(self) -> KubeSettings:
        current = self.string(self.doc, "current-context", "")
        if not current:
            raise self.fail("current-context is not set; whereabouts reads the namespace and "
                            "the credentials from the current context")
        context = self.named("contexts", "context", current, "current-context")
        where = f"contexts[{current}].context"
        cluster_name = self.string(context, "cluster", where)
        user_name = self.string(context, "user", where)
        if not cluster_name:
            raise self.fail(f"{where}: cluster was not specified")
        if not user_name:
            raise self.fail(f"{where}: user was not specified")
        namespace = self.string(context, "namespace", where) or DEFAULT_NAMESPACE
        problem = label_problem(namespace)
        if problem:
            raise self.fail(f"{where}.namespace: {namespace!r} is not a valid namespace: {problem}")
        cluster = self.named("clusters", "cluster", cluster_name, f"{where}.cluster")
        user = self.named("users", "user", user_name, f"{where}.user")
        fields = {"path": self.path, "context": current, "namespace": namespace}
        fields.update(self._cluster(cluster, f"clusters[{cluster_name}].cluster"))
        fields.update(self._user(user, f"users[{user_name}].user"))
        tls_configured = bool(fields["ca_file"] or fields["ca_data"] or fields["cert_file"]
                              or fields["cert_data"] or fields["insecure"])
        server = fields["server"]
        try:
            fields.update(zip(("scheme", "host", "port", "base_path"), split_server(server, tls_configured)))
        except ValueError as exc:
            raise self.fail(f"clusters[{cluster_name}].cluster.server: {server!r} {exc}") from None
        return KubeSettings(**fields)

    def _cluster(self, cluster: dict, where: str) -> dict:
        out = {
            "server": self.string(cluster, "server", where),
            "ca_file": self.file(cluster, "certificate-authority", where),
            "ca_data": self.data(cluster, "certificate-authority-data", where),
            "insecure": self.flag(cluster, "insecure-skip-tls-verify", where),
            "tls_server_name": self.string(cluster, "tls-server-name", where),
        }
        if not out["server"]:
            raise self.fail(f"{where}: no server found")
        if out["ca_file"] and out["ca_data"]:
            raise self.fail(f"{where}: certificate-authority-data and certificate-authority are both "
                            "specified; keep one")
        if self.string(cluster, "proxy-url", where):
            raise self.fail(f"{where}.proxy-url: proxies are not supported; connect to the API server directly")
        return out

    def _user(self, user: dict, where: str) -> dict:
        for key, what in _UNSUPPORTED_USER_KEYS.items():
            if user.get(key):
                raise self.fail(f"{where}.{key}: {what} are not supported; use a token, tokenFile "
                                "or a client certificate")
        out = {
            "token": self.string(user, "token", where),
            "token_file": self.file(user, "tokenFile", where),
            "cert_file": self.file(user, "client-certificate", where),
            "cert_data": self.data(user, "client-certificate-data", where),
            "key_file": self.file(user, "client-key", where),
            "key_data": self.data(user, "client-key-data", where),
            "username": self.string(user, "username", where),
            "password": self.string(user, "password", where),
        }
        if out["cert_file"] or out["cert_data"]:
            if out["cert_file"] and out["cert_data"]:
                raise self.fail(f"{where}: client-certificate-data and client-certificate are both specified; keep one")
            if out["key_file"] and out["key_data"]:
                raise self.fail(f"{where}: client-key-data and client-key are both specified; keep one")
            if not (out["key_file"] or out["key_data"]):
                raise self.fail(f"{where}: client-key-data or client-key must be specified "
                                "with a client certificate")
        if out["token"] and (out["username"] or out["password"]):
            raise self.fail(f"{where}: more than one authentication method (token and basic auth); "
                            "only one is allowed")
        return out


def split_server(server: str, tls_configured: bool) -> tuple:
    """``(scheme, host, port, base_path)`` of a kubeconfig ``server`` URL; ``host``
    has no brackets, ``base_path`` is "" or ``/prefix`` without a trailing slash.
    ValueError says what is wrong."""
    scheme, sep, rest = server.partition("://")
    if not sep:
        scheme, rest = ("https" if tls_configured else "http"), server
    scheme = scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"has scheme {scheme!r}; expected http or https")
    if "?" in rest or "#" in rest:
        raise ValueError("has a query or fragment; expected scheme://host:port[/path]")
    hostport, slash, path = rest.partition("/")
    if "@" in hostport:
        raise ValueError("has user information; put credentials in the user section")
    if hostport.startswith("["):
        host, bracket, port = hostport[1:].partition("]")
        if not bracket or port and not port.startswith(":"):
            raise ValueError("has a malformed [IPv6] host")
        port = port[1:]
    elif hostport.count(":") > 1:
        raise ValueError("has an IPv6 host without brackets; write https://[addr]:port")
    else:
        host, _, port = hostport.partition(":")
    if not host:
        raise ValueError("has no host")
    if port:
        if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            raise ValueError(f"has an invalid port {port!r}")
        number = int(port)
    else:
        number = 443 if scheme == "https" else 80
    return scheme, host, number, ("/" + path).rstrip("/") if slash else ""
