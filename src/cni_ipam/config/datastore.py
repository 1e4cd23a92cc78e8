"""Which store a whereabouts config names, and how to reach it: settings only
(:mod:`cni_ipam.store` opens the store they name).

``datastore`` is ``sqlite`` (the default: one file on this node) or
``etcd`` (the cluster).  With no ``datastore`` key, giving ``etcd_host``
or ``etcd_endpoints`` means etcd (old Go whereabouts defaulted to etcd);
etcd keys beside an explicit ``"datastore": "sqlite"`` are an error, since
each node would then allocate on its own and could hand out duplicates.
The etcd keys are those Go whereabouts once read
(``etcd_host``, ``etcd_username``, ``etcd_password``, ``etcd_key_file``,
``etcd_cert_file``, ``etcd_ca_cert_file``) plus ours: ``etcd_endpoints``
(a list), ``etcd_prefix`` and ``etcd_timeout`` (seconds per request).  An
endpoint without a scheme gets ``https://`` when TLS files are given, else
``http://``, as whereabouts' ``host:port`` values expect.

``kubernetes`` keeps the allocations in upstream whereabouts' own objects
(docs/kubernetes-objects.md): ``kubernetes.kubeconfig`` names the kubeconfig
(required; OpenShift's CNO and upstream's installer write it beside the flat
file), ``kubernetes.timeout`` (ours) the seconds per request.  Upstream's
``kubernetes.k8s_api_root`` is ignored, as upstream ignores it: the
kubeconfig names the server.
"""

from __future__ import annotations

from ..cni.errors import invalid_config
from ..jsonlite import quote

DEFAULT_SQLITE_PATH = "/var/lib/cni/whereabouts/whereabouts.db"
DEFAULT_ETCD_PREFIX = "/cni-ipam/"
DEFAULT_ETCD_TIMEOUT = 5.0
DEFAULT_KUBE_TIMEOUT = 5.0
DATASTORES = ("sqlite", "etcd", "kubernetes")
ETCD_KEYS = ("etcd_host", "etcd_endpoints", "etcd_username", "etcd_password", "etcd_key_file",
             "etcd_cert_file", "etcd_ca_cert_file", "etcd_prefix", "etcd_timeout")


class StoreSettings:
    """Where allocations live: the ``datastore`` and the keys of that backend (the others are None)."""

    __slots__ = ("datastore", "sqlite_path", "endpoints", "username", "password", "key_file", "cert_file",
                 "ca_file", "prefix", "timeout", "kubeconfig")

    def __init__(self, **fields):
        for name in self.__slots__:
            setattr(self, name, fields.get(name))


def _string(ipam: dict, key: str, default: str = "") -> str:
    value = ipam.get(key)
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise invalid_config(f"ipam.{key}: expected a string, got {quote(value)}")
    if "\0" in value:
        raise invalid_config(f"ipam.{key}: {quote(value)} contains a NUL byte")
    return value


def _endpoint(text: str, key: str, tls: bool) -> str:
    text = text.strip()
    if "://" not in text:
        text = ("https://" if tls else "http://") + text
    scheme, _, rest = text.partition("://")
    host, _, port = rest.rstrip("/").rpartition(":")
    if scheme not in ("http", "https") or not host or not port.isdigit() or "/" in rest.rstrip("/"):
        raise invalid_config(f"{key}: {quote(text)} is not an etcd endpoint",
                             "expected host:port, http://host:port or https://host:port")
    return f"{scheme}://{host}:{port}"


def parse(ipam: dict, flat_file: str = "") -> StoreSettings:
    """``flat_file``: the flat file's path when ``datastore`` came from it, named in errors about it."""
    implied = "etcd" if ipam.get("etcd_host") or ipam.get("etcd_endpoints") else "sqlite"
    datastore = _string(ipam, "datastore", implied)
    if datastore not in DATASTORES:
        raise invalid_config(f"ipam.datastore: {quote(datastore)} is not a datastore",
                             f"choose one of {', '.join(DATASTORES)}")
    given = [k for k in ETCD_KEYS if ipam.get(k) not in (None, "", [])]
    if datastore != "etcd" and given:
        raise invalid_config(f"ipam.{given[0]} is set but ipam.datastore is {quote(datastore)}",
                             "set \"datastore\": \"etcd\" to use the cluster store, or remove the etcd_* keys")
    settings = StoreSettings(datastore=datastore, sqlite_path=_string(ipam, "sqlite_path", DEFAULT_SQLITE_PATH))
    if datastore == "etcd":
        _etcd(ipam, settings)
    elif datastore == "kubernetes":
        _kubernetes(ipam, settings, flat_file)
    return settings


def _kubernetes(ipam: dict, settings: StoreSettings, flat_file: str) -> None:
    kube = ipam.get("kubernetes")
    if kube is None:
        kube = {}
    if not isinstance(kube, dict):
        raise invalid_config(f"ipam.kubernetes: expected an object with kubeconfig, got {quote(kube)}")
    source = f" (the datastore comes from the flat file {flat_file})" if flat_file else ""
    value = kube.get("kubeconfig")
    if value is not None and not isinstance(value, str):
        raise invalid_config(f"ipam.kubernetes.kubeconfig: expected a path, got {quote(value)}")
    kubeconfig = (value or "").strip()
    if not kubeconfig:
        raise invalid_config(f"ipam.datastore \"kubernetes\" needs ipam.kubernetes.kubeconfig{source}",
                             "e.g. \"kubernetes\": {\"kubeconfig\": \"/etc/cni/net.d/whereabouts.d/"
                             "whereabouts.kubeconfig\"}, as whereabouts' installer writes it")
    settings.kubeconfig = kubeconfig
    timeout = kube.get("timeout", DEFAULT_KUBE_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 300:
        raise invalid_config(f"ipam.kubernetes.timeout: {quote(timeout)} is not a number of seconds between 0 "
                             f"and 300")
    settings.timeout = float(timeout)


def _etcd(ipam: dict, settings: StoreSettings) -> None:
    settings.key_file = _string(ipam, "etcd_key_file")
    settings.cert_file = _string(ipam, "etcd_cert_file")
    settings.ca_file = _string(ipam, "etcd_ca_cert_file")
    if bool(settings.key_file) != bool(settings.cert_file):
        raise invalid_config("ipam.etcd_cert_file and ipam.etcd_key_file go together",
                             "give both for a client certificate, or neither")
    tls = bool(settings.ca_file or settings.cert_file)
    endpoints = [_endpoint(h, "ipam.etcd_host", tls) for h in _string(ipam, "etcd_host").split(",") if h.strip()]
    listed = ipam.get("etcd_endpoints") or []
    if not isinstance(listed, list):
        raise invalid_config(f"ipam.etcd_endpoints: expected a list of URLs, got {quote(listed)}")
    for i, item in enumerate(listed):
        if not isinstance(item, str):
            raise invalid_config(f"ipam.etcd_endpoints[{i}]: expected a URL string, got {quote(item)}")
        endpoints.append(_endpoint(item, f"ipam.etcd_endpoints[{i}]", tls))
    if not endpoints:
        raise invalid_config("ipam.datastore \"etcd\" needs ipam.etcd_host or ipam.etcd_endpoints",
                             "e.g. \"etcd_endpoints\": [\"http://10.0.0.1:2379\"]; set it once per node in "
                             "the flat file whereabouts.conf")
    settings.endpoints = list(dict.fromkeys(endpoints))
    settings.username = _string(ipam, "etcd_username")
    settings.password = _string(ipam, "etcd_password")
    if settings.password and not settings.username:
        raise invalid_config("ipam.etcd_password is set but ipam.etcd_username is not")
    settings.prefix = _string(ipam, "etcd_prefix", DEFAULT_ETCD_PREFIX)
    if not settings.prefix.startswith("/"):
        raise invalid_config(f"ipam.etcd_prefix: {quote(settings.prefix)} must start with /")
    timeout = ipam.get("etcd_timeout", DEFAULT_ETCD_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 300:
        raise invalid_config(f"ipam.etcd_timeout: {quote(timeout)} is not a number of seconds between 0 and 300")
    settings.timeout = float(timeout)
