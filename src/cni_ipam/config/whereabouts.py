"""The ``whereabouts`` IPAM config: every key Go whereabouts reads, merged with its flat file.

Pure: the caller passes a function that reads a JSON file, so every rule is
tested with plain values.  Differences from Go whereabouts, on purpose:

* a missing flat file is not an error;
* a bad ``range_start``/``range_end`` is an error, not silently ignored;
* a key that looks like a misspelt whereabouts key (``rangeStart``,
  ``range-end``, ``subnet``) is an error, because Go ignores it and the pod
  then gets an address from the wrong place (whereabouts issue #601); any
  other unknown key is a warning;
* ``gateway`` is given only to addresses of its own family, and is never
  handed out as a pod's address (Go gives it to the first pod, #601);
* an address asked for with ``CNI_ARGS`` ``IP=`` or ``runtimeConfig.ips``
  that lies in a range is allocated from that range (exactly that address)
  instead of being added as a second, static address (whereabouts #111);
  one asked for twice is one request, one that ``ipam.addresses`` lists is
  that address, and a bare one outside the ranges takes the prefix of the
  ``ipam.addresses`` subnet that holds it (podman's ``network reload``).
"""

from __future__ import annotations

from ..cni.request import parse_cni_args
from ..cni.errors import invalid_config
from ..jsonlite import quote
from ..cni.result import IPConfig
from ..net.ip import parse_interface, parse_ip
from .common import (
    address_errors_as_invalid_config, expect, give_gateways, items, parse_addresses, parse_dns, parse_routes,
)

FLAT_FILE_PATHS = (
    "/etc/kubernetes/cni/net.d/whereabouts.d/whereabouts.conf",
    "/etc/cni/net.d/whereabouts.d/whereabouts.conf",
    "/host/etc/cni/net.d/whereabouts.d/whereabouts.conf",
)
FLAT_FILE_NAME = "whereabouts.conf"
LOG_LEVELS = ("debug", "verbose", "error", "panic")

# Entries of one range's ``exclude`` list.  Go whereabouts has no bound; real lists hold a handful of
# CIDRs, and each entry costs parsing and memory on every call (300,000 took 5 s and 142 MB).
MAX_EXCLUDE = 1024
RANGE_KEYS = ("range", "range_start", "range_end", "exclude")
KNOWN_KEYS = RANGE_KEYS + (
    "type", "name", "ipRanges", "gateway", "routes", "dns", "addresses", "network_name",
    "enable_overlapping_ranges", "log_file", "log_level", "configuration_path", "datastore", "sqlite_path",
    "kubernetes", "etcd_host", "etcd_endpoints", "etcd_username", "etcd_password", "etcd_key_file",
    "etcd_cert_file", "etcd_ca_cert_file", "etcd_prefix", "etcd_timeout",
    "leader_lease_duration", "leader_renew_deadline", "leader_retry_period", "sleep_for_race",
    "node_slice_size", "reconciler_cron_expression",
)
IGNORED_KEYS = {
    "leader_lease_duration": "cni-ipam needs no leader election",
    "leader_renew_deadline": "cni-ipam needs no leader election",
    "leader_retry_period": "cni-ipam needs no leader election",
    "sleep_for_race": "it only slows allocation down for race testing",
}
# Names from other IPAM plugins (host-local) that users paste by mistake.
ALIASES = {"subnet": "range", "ranges": "ipRanges", "excludes": "exclude", "rangestart": "range_start",
           "rangeend": "range_end", "networkname": "network_name", "ipranges": "ipRanges"}
POD_ARGS = ("K8S_POD_NAME", "K8S_POD_NAMESPACE", "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID", "IP", "GATEWAY", "MAC")


def _norm(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "")


def _intended(key: str, known) -> str | None:
    """The known key that ``key`` most likely misspells, or None."""
    norm = _norm(key)
    for candidate in known:
        if _norm(candidate) == norm:
            return candidate
    target = ALIASES.get(norm)
    return target if target in known else None


def check_keys(obj: dict, where: str, known, warnings: list) -> None:
    for key in obj:
        if key in known:
            continue
        intended = _intended(key, known)
        if intended:
            raise invalid_config(f"{where}.{key} is not a whereabouts key; did you mean {intended}?",
                                 f"Go whereabouts silently ignores {quote(key)}; rename it to {quote(intended)}")
        warnings.append(f"{where}.{key} is not a whereabouts key; it is ignored")


def flat_file_candidates(ipam: dict) -> list:
    """Where to look for ``whereabouts.conf``, in whereabouts' order."""
    paths = list(FLAT_FILE_PATHS)
    if ipam.get("configuration_path"):
        paths.insert(0, ipam["configuration_path"])
    return paths


def _zero(value) -> bool:
    return value is None or value == "" or value == [] or value == {} or value is False or value == 0


def merge_flat(ipam: dict, flat: dict) -> dict:
    """Flat-file values fill what the network config leaves empty (the network config wins).

    As in whereabouts (mergo), except that ``enable_overlapping_ranges``
    comes only from the network config.
    """
    merged = dict(ipam)
    for key, value in flat.items():
        if key == "enable_overlapping_ranges":
            continue
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_flat(merged[key], value)
        elif _zero(merged.get(key)):
            merged[key] = value
    return merged


class WhereaboutsConfig:
    """A validated whereabouts config: what to allocate from, where to store it, what to return."""

    __slots__ = ("network", "ranges", "requested", "gateway", "routes", "dns", "addresses", "network_name",
                 "overlapping", "store", "log_file", "log_level", "pod", "flat_file", "ipam", "node_slices")

    def __init__(self, **fields):
        for name in self.__slots__:
            setattr(self, name, fields.get(name))


class RangeSpec:
    """One range of the config, with the pool and address space it draws from: plain values the allocator
    takes as they are.  With overlapping-range checks on (the default), every range of one ``network_name``
    shares that name's address space.  ``node``: a node's slice of a range (``node_slice_size``), whose pool
    is named after the node too, as upstream names node IPPools (:mod:`.node_slices`)."""

    __slots__ = ("key", "range", "network_name", "overlapping", "node")

    def __init__(self, key, rng, network_name="", overlapping=True, node=""):
        self.key = key  # the config key, for messages: "ipam.range", "ipam.ipRanges[1]"
        self.range = rng
        self.network_name = network_name
        self.overlapping = overlapping
        self.node = node

    @property
    def pool(self) -> str:
        from ..net import pool_name

        return pool_name("-".join(p for p in (self.network_name, self.node) if p), self.range.cidr)

    @property
    def space(self):
        return self.network_name if self.overlapping else None


def _without_gateway(rng, gateway, parse):
    """The range again with the gateway excluded, when the gateway is one of its addresses.

    Go whereabouts hands the gateway out to the first pod (its issue #601).
    """
    if gateway is None or gateway.version != rng.version or not rng.is_allocatable(int(gateway)):
        return rng
    return parse(str(gateway))


def _plus(exclude, extra, key):
    """``exclude`` with the extra entries; a malformed ``exclude`` is left for the parser to name."""
    if isinstance(exclude, (list, tuple)) and len(exclude) > MAX_EXCLUDE:
        raise invalid_config(f"{key}.exclude: {len(exclude)} entries, more than the {MAX_EXCLUDE} allowed",
                             "exclude whole subnets (a CIDR per block) instead of single addresses")
    return list(exclude) + list(extra) if extra and isinstance(exclude, (list, tuple)) else exclude


def range_of(key: str, entry: dict, gateway=None):
    """One range entry (``range``, ``range_start``, ``range_end``, ``exclude``) as the plugin allocates from
    it: without the gateway (the node-slice controller counts a slice's addresses with this too)."""
    from ..net.ranges import parse_range

    def parse(*extra):
        return parse_range(key, entry["range"], entry.get("range_start"), entry.get("range_end"),
                           _plus(entry.get("exclude") or (), extra, key))
    return _without_gateway(parse(), gateway, parse)


def _ranges(ipam: dict, network_name: str, overlapping: bool, warnings: list, gateway=None) -> list:
    specs = []
    if ipam.get("range"):
        specs.append(RangeSpec("ipam.range", range_of("ipam", ipam, gateway), network_name, overlapping))
    for key, entry in items(ipam.get("ipRanges") or [], "ipam.ipRanges", "a list of ranges"):
        expect(entry, dict, key, "an object with range, range_start, range_end, exclude")
        check_keys(entry, key, RANGE_KEYS, warnings)
        if not entry.get("range"):
            raise invalid_config(f"{key}.range: missing", "each ipRanges entry needs a range, e.g. 192.168.10.0/24")
        specs.append(RangeSpec(key, range_of(key, entry, gateway), network_name, overlapping))
    return specs


class NodeSlicing:
    """``node_slice_size``: the first range is cut into slices, and this node allocates only from its own
    (the NodeSlicePool ``pool_name`` says which).  ``prefixlen``: the slices' prefix length."""

    __slots__ = ("pool_name", "prefixlen", "size_text")

    def __init__(self, pool_name: str, prefixlen: int, size_text: str) -> None:
        self.pool_name = pool_name
        self.prefixlen = prefixlen
        self.size_text = size_text


def _node_slicing(ipam: dict, conf_name: str, network_name: str, specs: list, datastore: str):
    """The ``node_slice_size`` of a config, checked as the node-slice controller checks it
    (:mod:`cni_ipam.nodeslices.networks`); None without it."""
    size = ipam.get("node_slice_size")
    if not size:
        return None
    if datastore != "kubernetes":
        raise invalid_config(f"ipam.node_slice_size needs \"datastore\": \"kubernetes\" (the datastore is "
                             f"{quote(datastore)})", "node slices are NodeSlicePool objects that the node-slice "
                             "controller (cni-ipam node-slices) writes in the Kubernetes API; remove "
                             "node_slice_size to allocate from the whole range")
    if not specs:
        raise invalid_config("ipam.node_slice_size is set but there is no range to slice",
                             "set ipam.range (the first range is the one cut into slices)")
    from ..kube.names import subdomain_problem
    from ..kube.slices import SliceError, parse_slice_size

    first = specs[0]
    try:
        prefixlen = parse_slice_size(size, first.range.version, first.range.prefixlen)
    except SliceError as exc:
        raise invalid_config(f"ipam.{exc} ({first.key} is {first.range.cidr})") from None
    pool = network_name or conf_name
    problem = subdomain_problem(pool)
    if problem:
        raise invalid_config(f"ipam.node_slice_size: the NodeSlicePool is named {quote(pool)} (network_name, else "
                             f"the configuration's name), which is not a Kubernetes object name: {problem}",
                             "set network_name to lower-case letters, digits, '-' and '.'")
    return NodeSlicing(pool, prefixlen, str(size))


def _comma_list(text: str) -> list:
    """The non-empty items of a CNI_ARGS value such as ``IP=10.0.0.5,fd00::5``."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _requested_text(request, cni_args: dict) -> list:
    """(key, text) of addresses asked for: CNI_ARGS ``IP=`` then ``runtimeConfig.ips``."""
    asked = [("CNI_ARGS IP", item) for item in _comma_list(cni_args.get("IP", ""))]
    return asked + items(request.runtime_config.get("ips") or [], "runtimeConfig.ips", "a list")


def _already_asked(ip, asked_ips: set, statics: list) -> bool:
    """Whether ``ip`` was asked for before in this request, or is one of ``ipam.addresses``.

    podman 4.3's ``network reload`` asks again for every address the
    container had, ``--ip`` twice over (``runtimeConfig.ips ["A", "A"]``):
    identical requests are one, and a configured address is that address.
    """
    if ip in asked_ips or any(ip == static.address.ip for static in statics):
        return True
    asked_ips.add(ip)
    return False


def _bare_static(key: str, text: str, ip, specs: list, statics: list):
    """A bare address outside every range, with the prefix of the ``ipam.addresses`` subnet that holds it.

    podman's ``--ip`` cannot send a prefix length, so without such a subnet
    the message says what to do instead.
    """
    from ..net.addr import Interface

    for static in statics:
        if ip in static.address.network:
            return IPConfig(Interface(int(ip), static.address.prefixlen, ip.version))
    ranges = ", ".join(f"{spec.key} {spec.range.cidr}" for spec in specs) or "no ranges"
    raise invalid_config(f"{key}: {quote(text)} is in none of the ranges ({ranges}), and as an extra static "
                         f"address it needs a prefix length (e.g. {text}/24)",
                         "ask for an address inside a range, add a range that holds it, or list it with its prefix "
                         "in ipam.addresses; podman's --ip cannot send a prefix length, other runtimes can send "
                         f"{text}/<prefix>")


def _place_requests(asked: list, specs: list, statics: list) -> dict:
    """Give each asked-for address to the range that holds it; others become static addresses."""
    requested = {}
    asked_ips = set()
    for key, text in asked:
        address = parse_interface(text, key) if "/" in str(text) else None
        ip = address.ip if address is not None else parse_ip(text, key)
        if _already_asked(ip, asked_ips, statics):
            continue
        for index, spec in enumerate(specs):
            rng = spec.range
            if ip.version != rng.version or ip not in rng.network:
                continue
            if not rng.is_allocatable(int(ip)):
                raise invalid_config(f"{key}: {quote(text)} is in {spec.key} {rng.cidr} but excluded or outside "
                                     f"range_start..range_end")
            if index in requested:
                raise invalid_config(f"{key}: {quote(text)}: a second address asked for in {spec.key}",
                                     "whereabouts gives one address per range")
            requested[index] = int(ip)
            break
        else:
            statics.append(IPConfig(address) if address is not None else _bare_static(key, text, ip, specs, statics))
    return requested


def _check_legacy_version(cni_version: str, families: list) -> None:
    """CNI 0.1.0/0.2.0 results hold one address per family: refuse a config that needs more."""
    from ..cni import versions

    if versions.is_legacy_result(cni_version) and (families.count(4) > 1 or families.count(6) > 1):
        raise invalid_config(f"CNI version {cni_version} does not support more than 1 address per family",
                             "use cniVersion 0.3.0 or later for several ranges of one family")


def pod_ref(cni_args: dict) -> str:
    """The pod as recorded: ``namespace/name`` from kubelet or Multus; podman sends
    ``K8S_POD_NAME`` alone, recorded as it is; "" when there is no name."""
    name = cni_args.get("K8S_POD_NAME", "")
    namespace = cni_args.get("K8S_POD_NAMESPACE", "")
    return f"{namespace}/{name}" if name and namespace else name


def nodename_files(ipam: dict, flat_file) -> list:
    """Where the node's name may be written: ``nodename`` beside the flat file (``configuration_path``, a
    directory or the file itself, else where the flat file was found), as upstream's installer and
    OpenShift's CNO write it."""
    from ..oslite import dirname, join

    places = []
    path = ipam.get("configuration_path")
    if isinstance(path, str) and path:
        places.append(path if not path.endswith(".conf") else dirname(path))
    if flat_file:
        places.append(dirname(flat_file))
    return [join(p, "nodename") for p in dict.fromkeys(places)]


def written_nodename(ipam: dict, flat_file) -> str:
    """The node name from the first non-empty ``nodename`` file (:func:`nodename_files`), else ""."""
    for path in nodename_files(ipam, flat_file):
        try:
            with open(path, encoding="utf-8") as handle:
                name = handle.read().strip()
        except (OSError, ValueError):
            continue
        if name:
            return name
    return ""


def datastore_source(request, flat_path) -> str:
    """The flat file's path when it, not the network config, names the datastore; else ""."""
    return flat_path if flat_path and not request.ipam.get("datastore") else ""


def with_flat_file(request, read_json) -> tuple:
    """The request's ipam merged with the first flat file found: (ipam, path or None).

    ``read_json(path)`` returns the parsed object, or None if there is no file there.
    """
    ipam = request.ipam
    for path in flat_file_candidates(ipam):
        flat = read_json(path)
        if flat is not None:
            if not isinstance(flat, dict):
                raise invalid_config(f"flat file {path}: expected a JSON object")
            return merge_flat(ipam, flat), path
    return dict(ipam), None


@address_errors_as_invalid_config
def load(request, read_json) -> WhereaboutsConfig:
    """Validate the whole config for ADD, CHECK, GC and STATUS."""
    ipam, flat_path = with_flat_file(request, read_json)
    warnings = request.warnings
    check_keys(ipam, "ipam", KNOWN_KEYS, warnings)
    for key, why in IGNORED_KEYS.items():
        if ipam.get(key):
            warnings.append(f"ipam.{key} is ignored: {why}")
    store = store_settings(ipam, datastore_source(request, flat_path))
    if ipam.get("kubernetes") and store.datastore != "kubernetes":
        warnings.append(f"ipam.kubernetes is ignored: the datastore is {store.datastore}")
    network_name = expect(ipam.get("network_name") or "", str, "ipam.network_name", "a string")
    overlapping = request.ipam.get("enable_overlapping_ranges", True)
    expect(overlapping, bool, "ipam.enable_overlapping_ranges", "true or false")
    gateway = parse_ip(ipam["gateway"], "ipam.gateway") if ipam.get("gateway") else None
    specs = _ranges(ipam, network_name, overlapping, warnings, gateway)
    statics = parse_addresses(ipam.get("addresses"), "ipam.addresses")
    cni_args = parse_cni_args(request.args, POD_ARGS)
    requested = _place_requests(_requested_text(request, cni_args), specs, statics)
    give_gateways(_comma_list(cni_args.get("GATEWAY", "")), statics)
    _check_legacy_version(request.cni_version, [s.range.version for s in specs] + [ip.version for ip in statics])
    if not specs and not statics:
        raise invalid_config("ipam: no range to allocate from",
                             "set ipam.range (e.g. 192.0.2.192/27) or ipam.ipRanges")
    log_file = ipam.get("log_file") or None
    if log_file is not None and "\0" in expect(log_file, str, "ipam.log_file", "a file path"):
        raise invalid_config(f"ipam.log_file: {quote(log_file)} contains a NUL byte")  # before anything commits
    log_level = ipam.get("log_level") or "debug"
    if log_level not in LOG_LEVELS:
        warnings.append(f"ipam.log_level {quote(log_level)} is not one of {', '.join(LOG_LEVELS)}; using debug")
        log_level = "debug"
    return WhereaboutsConfig(
        network=request.name, ranges=specs, requested=requested, gateway=gateway,
        routes=parse_routes(ipam.get("routes"), "ipam.routes"), dns=parse_dns(ipam.get("dns"), "ipam.dns"),
        addresses=statics, network_name=network_name, overlapping=overlapping, store=store,
        log_file=log_file, log_level=log_level, pod=pod_ref(cni_args),
        flat_file=flat_path, ipam=ipam,
        node_slices=_node_slicing(ipam, request.name, network_name, specs, store.datastore),
    )


# -- The datastore ---------------------------------------------------------------------------------------------------
#
# Which store a whereabouts config names, and how to reach it: settings only
# (:mod:`cni_ipam.store` opens the store they name).
#
# ``datastore`` is ``sqlite`` (the default: one file on this node) or
# ``etcd`` (the cluster).  With no ``datastore`` key, giving ``etcd_host``
# or ``etcd_endpoints`` means etcd (old Go whereabouts defaulted to etcd);
# etcd keys beside an explicit ``"datastore": "sqlite"`` are an error, since
# each node would then allocate on its own and could hand out duplicates.
# The etcd keys are those Go whereabouts once read
# (``etcd_host``, ``etcd_username``, ``etcd_password``, ``etcd_key_file``,
# ``etcd_cert_file``, ``etcd_ca_cert_file``) plus ours: ``etcd_endpoints``
# (a list), ``etcd_prefix`` and ``etcd_timeout`` (seconds per request).  An
# endpoint without a scheme gets ``https://`` when TLS files are given, else
# ``http://``, as whereabouts' ``host:port`` values expect.
#
# ``kubernetes`` keeps the allocations in upstream whereabouts' own objects
# (docs/kubernetes-objects.md): ``kubernetes.kubeconfig`` names the kubeconfig
# (required; OpenShift's CNO and upstream's installer write it beside the flat
# file), ``kubernetes.timeout`` (ours) the seconds per request.  Upstream's
# ``kubernetes.k8s_api_root`` is ignored, as upstream ignores it: the
# kubeconfig names the server.

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


def store_settings(ipam: dict, flat_file: str = "") -> StoreSettings:
    """Where allocations live: all DEL needs, so DEL works when ranges no longer parse.

    ``flat_file``: the flat file's path when ``datastore`` came from it (:func:`datastore_source`), named in
    errors about it.
    """
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
