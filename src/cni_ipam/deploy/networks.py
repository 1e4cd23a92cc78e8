"""``spec.additionalNetworks`` of a ``Network.operator.openshift.io`` resource, checked.

Each network becomes a :class:`Network`: its NetworkAttachmentDefinition's
config text and the IPAM types it uses (which decide the daemon sets).  An
IPAM config of ours is checked by the parser the plugin itself runs, so a
NAD that renders is one the plugin accepts; anything wrong is a
:class:`RenderError` naming the network and what to change.
"""

from __future__ import annotations

import json
import re

OUR_IPAM = ("static", "dhcp", "whereabouts")
TYPES = ("Raw", "SimpleMacvlan")
# Spelt as the API spells them; the operator refuses any other spelling.
MACVLAN_MODES = ("Bridge", "Private", "VEPA", "Passthru")
# The CNI version the operator writes into SimpleMacvlan configs.
MACVLAN_CNI_VERSION = "0.3.1"
# What the API server requires of an object's name (a DNS-1123 subdomain) and of a namespace (a label).
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# A made-up attachment: the parsers need a complete ADD request to check a config.
CHECK_ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "cni-ipam-render", "CNI_NETNS": "/var/run/netns/render",
             "CNI_IFNAME": "net1", "CNI_PATH": "/opt/cni/bin"}
# The whereabouts flat file the Cluster Network Operator writes on every OpenShift node with Multus, exactly
# (/etc/kubernetes/cni/net.d/whereabouts.d/whereabouts.conf, the first place whereabouts looks; written by the
# whereabouts-cni init container in openshift/cluster-network-operator bindata/network/multus/multus.yaml
# @ 2a6a57fef3ac1c8fde00e85b603e9f73ef29b75c).  Render checks every network with it, since the plugin on the
# node merges it in: a network without "datastore" gets "kubernetes" from it.
OPERATOR_FLAT_FILE = {"datastore": "kubernetes",
                      "kubernetes": {"kubeconfig": "/etc/kubernetes/cni/net.d/whereabouts.d/whereabouts.kubeconfig"},
                      "reconciler_cron_expression": "30 4 * * *", "log_level": "verbose",
                      "configuration_path": "/etc/kubernetes/cni/net.d/whereabouts.d"}


class RenderError(Exception):
    """A network that cannot be rendered: ``network`` names it (or is empty), ``reason`` says why."""

    def __init__(self, network: str, reason: str) -> None:
        super().__init__(f"network {network}: {reason}" if network else reason)
        self.network = network
        self.reason = reason


class RenderErrors(RenderError):
    """Several networks refused at once, so one run shows everything to fix."""

    def __init__(self, errors: list) -> None:
        super().__init__("", "; ".join(str(e) for e in errors))
        self.errors = errors


class Network:
    __slots__ = ("name", "namespace", "config", "ipam_types", "notes", "stores")

    def __init__(self, name, namespace, config, ipam_types, notes=(), stores=()):
        self.name = name
        self.namespace = namespace
        self.config = config          # the NAD's spec.config, a JSON string
        self.ipam_types = ipam_types  # set of ipam.type values found in it
        self.notes = list(notes)      # warnings worth printing, not errors
        self.stores = list(stores)    # the store settings (store_config) of each whereabouts plugin, on a node


def additional_networks(resource) -> list:
    """Every network of the resource, checked, in input order; refuses them all if any is bad."""
    if not isinstance(resource, dict):
        raise RenderError("", "the input is not a Network resource (expected a YAML or JSON object)")
    kind = resource.get("kind")
    if kind not in (None, "Network"):
        raise RenderError("", f"kind is {kind!r}; expected a Network (operator.openshift.io/v1)")
    spec = resource.get("spec")
    spec = spec if isinstance(spec, dict) else {}
    items = spec.get("additionalNetworks") or []
    if not isinstance(items, list):
        raise RenderError("", "spec.additionalNetworks: expected a list of networks")
    networks, seen, errors = [], {}, []
    for i, item in enumerate(items):
        try:
            network = one_network(item, f"spec.additionalNetworks[{i}]")
        except RenderError as exc:
            errors.append(exc)
            continue
        key = (network.namespace, network.name)
        if key in seen:
            errors.append(RenderError(network.name, f"defined twice in namespace {network.namespace} "
                                                    f"(spec.additionalNetworks[{seen[key]}] and [{i}]); "
                                                    "rename one or put it in another namespace"))
            continue
        seen[key] = i
        networks.append(network)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise RenderErrors(errors)
    return networks


def one_network(item, where: str) -> Network:
    if not isinstance(item, dict):
        raise RenderError("", f"{where}: expected an object with name, namespace and type")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise RenderError("", f"{where}.name: missing; every additional network needs a name")
    if len(name) > 253 or not NAME.match(name):
        raise RenderError(name, "name: not a valid Kubernetes object name (lower-case letters, digits, '-' "
                                "and '.', starting and ending with a letter or digit)")
    namespace = item.get("namespace") or "default"  # the operator's default too
    if not isinstance(namespace, str) or len(namespace) > 63 or not LABEL.match(namespace):
        raise RenderError(name, f"namespace: {namespace!r} is not a valid namespace name (lower-case letters, "
                                "digits and '-', at most 63)")
    kind = item.get("type")
    if kind == "Raw":
        text = item.get("rawCNIConfig")
        if not isinstance(text, str) or not text.strip():
            raise RenderError(name, "type Raw needs rawCNIConfig, the CNI config as a JSON string")
        try:
            config = json.loads(text)
        except ValueError as exc:
            raise RenderError(name, f"rawCNIConfig is not JSON: {exc}") from None
    elif kind == "SimpleMacvlan":
        config = macvlan_config(name, item.get("simpleMacvlanConfig"))
        text = json.dumps(config, indent=2) + "\n"
    else:
        raise RenderError(name, f"type {kind!r} is not supported; use one of {', '.join(TYPES)}")
    if not isinstance(config, dict):
        raise RenderError(name, "the CNI config must be a JSON object")
    types, notes = check_ipam(name, config, OPERATOR_FLAT_FILE)
    return Network(name, namespace, text, types, notes, node_stores(config, OPERATOR_FLAT_FILE))


# --- SimpleMacvlan -----------------------------------------------------------------------------------
#
# As the Cluster Network Operator does it, checked against its source:
# openshift/cluster-network-operator pkg/network/additional_networks.go (renderSimpleMacvlanConfig,
# getIPAMConfigJSON, getStaticIPAMConfigJSON, validateSimpleMacvlanConfig) and
# bindata/network/additional-networks/simplemacvlan/simplemacvlan.yaml at commit
# 2a6a57fef3ac1c8fde00e85b603e9f73ef29b75c, and the field names in openshift/api
# operator/v1/types_network.go at commit 2a3d73913b5a7caec4c57d5c3d04f51106ec4da3:
# the modes and IPAM types are spelt exactly (Bridge, not bridge; Static, not static), the
# config has no "name" (Multus gives it the NAD's name), a 0 mtu means unset, and a static
# config without addresses gets "capabilities": ["ips"] (addresses from the runtime).

def _field(obj, key, kind, name, where, default=None):
    value = obj.get(key, default)
    if value is not None and not isinstance(value, kind):
        raise RenderError(name, f"{where}.{key}: expected {kind.__name__}, got {value!r}")
    return value


def macvlan_config(name: str, conf) -> dict:
    """The macvlan config the operator writes for ``simpleMacvlanConfig`` (no ipamConfig: dhcp)."""
    where = "simpleMacvlanConfig"
    conf = {} if conf is None else conf
    if not isinstance(conf, dict):
        raise RenderError(name, f"{where}: expected an object")
    _only(conf, ("master", "ipamConfig", "mode", "mtu"), name, where)
    config = {"cniVersion": MACVLAN_CNI_VERSION, "type": "macvlan"}
    master = _field(conf, "master", str, name, where)
    if master:
        config["master"] = master
    mode = _field(conf, "mode", str, name, where)
    if mode:
        config["mode"] = _macvlan_mode(name, mode, where)
    mtu = conf.get("mtu")
    if mtu is not None:
        if isinstance(mtu, bool) or not isinstance(mtu, int) or not 0 <= mtu < 2 ** 32:
            raise RenderError(name, f"{where}.mtu: expected a whole number, 0 or more, got {mtu!r}")
        if mtu:  # 0 is the API's "unset": the kernel picks
            config["mtu"] = mtu
    config["ipam"] = ipam_config(name, conf.get("ipamConfig"), f"{where}.ipamConfig")
    return config


def _macvlan_mode(name: str, mode: str, where: str) -> str:
    """The operator accepts the API's spelling only, and writes it in lower case for the macvlan plugin."""
    if mode not in MACVLAN_MODES:
        spelt = _spelt(mode, MACVLAN_MODES)
        hint = f" (the API spells it {spelt})" if spelt else ""
        raise RenderError(name, f"{where}.mode: {mode!r} is not a macvlan mode the operator accepts{hint}; use "
                                "Bridge, Private, VEPA or Passthru")
    return mode.lower()


def _spelt(value: str, allowed) -> str:
    """The allowed value that ``value`` is a mis-cased spelling of, or ''."""
    return next((a for a in allowed if a.lower() == value.lower()), "")


def ipam_config(name: str, conf, where: str) -> dict:
    if conf is None:
        return {"type": "dhcp"}
    if not isinstance(conf, dict):
        raise RenderError(name, f"{where}: expected an object with type Static or DHCP")
    _only(conf, ("type", "staticIPAMConfig"), name, where)
    kind = conf.get("type")
    if kind == "DHCP":
        return {"type": "dhcp"}
    if kind != "Static":
        spelt = _spelt(kind, ("Static", "DHCP")) if isinstance(kind, str) else ""
        hint = f" (the API spells it {spelt})" if spelt else ""
        raise RenderError(name, f"{where}.type: {kind!r} is not an IPAM type the operator accepts{hint}; "
                                "use Static or DHCP")
    return static_config(name, conf.get("staticIPAMConfig"), f"{where}.staticIPAMConfig")


def static_config(name: str, static, where: str) -> dict:
    """The operator's static IPAM config: keys in its order, routes as networks, gateways as parsed IPs."""
    static = {} if static is None else static
    if not isinstance(static, dict):
        raise RenderError(name, f"{where}: expected an object")
    _only(static, ("addresses", "routes", "dns"), name, where)
    ipam = {"type": "static"}
    routes = [_route(r, name, f"{where}.routes[{i}]") for i, r in enumerate(_list(static, "routes", name, where))]
    if routes:
        ipam["routes"] = routes
    addresses = [_address(a, name, f"{where}.addresses[{i}]")
                 for i, a in enumerate(_list(static, "addresses", name, where))]
    if addresses:
        ipam["addresses"] = addresses
    dns = static.get("dns")
    if dns is not None:
        ipam["dns"] = _pick(dns, name, f"{where}.dns", {"nameservers": "nameservers", "domain": "domain",
                                                          "search": "search"})
    if not addresses:  # the addresses come from the runtime (runtimeConfig.ips)
        ipam["capabilities"] = ["ips"]
    return ipam


def _address(obj, name, where) -> dict:
    address = _pick(obj, name, where, {"address": "address", "gateway": "gateway"})
    if "address" not in address:
        raise RenderError(name, f"{where}.address: missing; give the address with its prefix, e.g. 10.0.0.5/24")
    if "gateway" in address:
        address["gateway"] = _ip(address["gateway"], name, f"{where}.gateway")
    return address


def _route(obj, name, where) -> dict:
    """Go's ParseCIDR: the destination becomes its network (10.1.2.3/24 is written 10.1.2.0/24)."""
    import ipaddress

    route = _pick(obj, name, where, {"destination": "dst", "gateway": "gw"},
                  hints={"dst": "destination", "gw": "gateway"})
    if not isinstance(route.get("dst"), str):
        raise RenderError(name, f"{where}.destination: missing; give a CIDR, e.g. 192.168.17.0/24")
    try:
        route["dst"] = ipaddress.ip_network(route["dst"], strict=False).compressed
    except ValueError:
        raise RenderError(name, f"{where}.destination: {route['dst']!r} is not a CIDR "
                                "(e.g. 192.168.17.0/24)") from None
    if "gw" in route:
        route["gw"] = _ip(route["gw"], name, f"{where}.gateway")
    return route


def _ip(value, name, where) -> str:
    """An IP as Go's net.ParseIP then String() writes it (an IPv4-mapped IPv6 address as IPv4)."""
    import ipaddress

    try:
        ip = ipaddress.ip_address(value) if isinstance(value, str) else None
    except ValueError:
        ip = None
    if ip is None:
        raise RenderError(name, f"{where}: {value!r} is not an IP address")
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


def _only(obj: dict, keys, name, where) -> None:
    """Refuse a key the API does not have: the API server would drop it, and the network be wrong."""
    for key in obj:
        if key not in keys:
            raise RenderError(name, f"{where}.{key} is not a field here; use {', '.join(keys)}")


def _list(obj, key, name, where) -> list:
    value = obj.get(key) or []
    if not isinstance(value, list):
        raise RenderError(name, f"{where}.{key}: expected a list")
    return value


def _pick(obj, name, where, keys: dict, hints=None) -> dict:
    """``obj`` with its keys renamed by ``keys``; any other key is refused, naming the ones allowed."""
    if not isinstance(obj, dict):
        raise RenderError(name, f"{where}: expected an object with {', '.join(keys)}")
    out = {}
    for key, value in obj.items():
        if key not in keys:
            hint = f" (the API calls it {hints[key]})" if hints and key in hints else ""
            raise RenderError(name, f"{where}.{key} is not a field here{hint}; use {', '.join(keys)}")
        if value not in (None, "", []):
            out[keys[key]] = value
    return out


# --- IPAM checks -------------------------------------------------------------------------------------

def plugin_configs(config: dict) -> list:
    """The single-plugin configs inside a config or conflist, as the runtime hands them to a plugin."""
    if "plugins" not in config:
        return [config]
    plugins = config["plugins"]
    if not isinstance(plugins, list):
        raise RenderError(config.get("name", ""), "plugins: expected a list of plugin configs")
    found = []
    for plugin in plugins:
        if isinstance(plugin, dict):
            found.append({**plugin, "name": config.get("name"), "cniVersion": config.get("cniVersion")})
    return found


def check_ipam(name: str, config: dict, flat_file=None):
    """The IPAM types the config uses, and notes; refuses a config our plugin would refuse.

    ``flat_file``: the whereabouts.conf the nodes will have (a dict): the
    operator's for render, the etcd Secret's for ``deploy/``'s example.
    """
    types, notes = set(), []
    for plugin in plugin_configs(config):
        ipam = plugin.get("ipam")
        if not isinstance(ipam, dict) or not isinstance(ipam.get("type"), str):
            continue
        types.add(ipam["type"])
        if ipam["type"] in OUR_IPAM:
            notes += check_with_plugin(name, plugin, flat_file)
    return types, notes


def check_with_plugin(name: str, config: dict, flat_file=None) -> list:
    """Run the plugin's own config parser on an ADD for a made-up attachment; return its warnings."""
    from ..cni.errors import CNIError
    from ..cni.request import build_request

    # Multus gives a config without a name the NetworkAttachmentDefinition's name.
    data = json.dumps({**config, "name": name} if not config.get("name") else config).encode()
    kind = config["ipam"]["type"]
    try:
        request = build_request(dict(CHECK_ENV), lambda: data)
        if kind == "static":
            from ..config.static import parse

            parse(request)
        elif kind == "dhcp":
            from ..dhcp.config import parse

            parse(request)
        else:
            _check_whereabouts(request, flat_file)
    except CNIError as exc:
        reason = exc.msg + (f" ({exc.details})" if exc.details else "")
        raise RenderError(name, f"the {kind} plugin would refuse this config: {reason}") from None
    return [f"{name}: {warning}" for warning in request.warnings]


def node_stores(config: dict, flat_file=None) -> list:
    """:func:`store_config` of each whereabouts plugin of ``config`` on a node with ``flat_file``, whose
    values fill what the network leaves empty, as the plugin merges them (the network's keys win)."""
    from ..config.whereabouts import merge_flat

    return [store_config(merge_flat(plugin["ipam"], flat_file or {})) for plugin in plugin_configs(config)
            if isinstance(plugin.get("ipam"), dict) and plugin["ipam"].get("type") == "whereabouts"]


def store_config(ipam: dict) -> dict:
    """The keys of a checked whereabouts ``ipam`` that name its store, ``datastore`` spelt out; only the keys
    of that datastore (a network on etcd keeps the flat file's ``kubernetes`` key, which it ignores)."""
    from ..config.whereabouts import ETCD_KEYS, store_settings

    datastore = store_settings(ipam).datastore
    keys = {"sqlite": ("sqlite_path",), "etcd": ETCD_KEYS, "kubernetes": ("kubernetes",)}[datastore]
    return {"datastore": datastore, **{key: ipam[key] for key in keys if ipam.get(key) not in (None, "", [])}}


def _check_whereabouts(request, flat_file=None) -> None:
    """whereabouts as the plugin loads it, with the given flat file (never this machine's).

    A config without any range is the OpenShift "shim" that only makes the
    operator start the reconciler; on a node its range could still come from
    the flat file, so that alone is a note, not a refusal.  ``load`` checks
    every other key before it looks for a range.
    """
    from ..cni.errors import CNIError
    from ..config.whereabouts import FLAT_FILE_NAME, load

    own = request.ipam.get("configuration_path")
    if flat_file and isinstance(own, str) and own and own.rstrip("/") not in _flat_file_places(flat_file):
        request.warnings.append(f"ipam.configuration_path {own!r} is a flat file render cannot read: checked with "
                                "the nodes' usual flat file instead, but on a node where that file exists it is "
                                "read first (name the datastore in the network to be sure of its store)")
    try:
        load(request, lambda path: flat_file if path.endswith("/" + FLAT_FILE_NAME) else None)
    except CNIError as exc:
        if not exc.msg.startswith("ipam: no range"):
            raise
        request.warnings.append("ipam names no range: pods attached to it get an address only if the "
                                "node's whereabouts.conf flat file gives one (fine for a shim network)")


def _flat_file_places(flat_file: dict) -> tuple:
    """Where ``configuration_path`` may point to reach ``flat_file``: its directory, or the file in it."""
    from ..config.whereabouts import FLAT_FILE_NAME

    directory = str(flat_file.get("configuration_path") or "").rstrip("/")
    return (directory, f"{directory}/{FLAT_FILE_NAME}") if directory else ()
