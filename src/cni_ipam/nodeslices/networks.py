"""Which networks are cut into node slices: read from NetworkAttachmentDefinitions, as upstream reads them.

Pure: a NAD (a decoded ``k8s.cni.cncf.io/v1`` object) in, a :class:`SliceNetwork` out.
Read from k8snetworkplumbingwg/whereabouts v0.9.4 (3a262bd0cd873e13d9b379342f8251b852a89b8f):

* pkg/node-controller/controller.go ``syncHandler``: only whereabouts IPAM
  with ``node_slice_size`` and a range counts; only the first range is
  sliced; the NodeSlicePool is named ``getSliceName`` (``network_name``, else
  the configuration's ``name``); NADs naming one network must agree on range
  and slice size (``checkForMultiNadMismatch``).
* pkg/config/config.go ``LoadIPAMConfiguration``: ``range`` comes before
  ``ipRanges``, ``spec.range`` is Go's ``IPNet.String()`` (host bits dropped).

Unlike upstream, ``exclude``, ``range_start``, ``range_end`` and the
``gateway`` are read (and honoured by :mod:`cni_ipam.kube.slices`), as the
plugin reads them (:func:`cni_ipam.config.whereabouts.range_of`), so that a
slice is full for the controller when it is full for the plugin.  The nodes' flat file
(whereabouts.conf), which upstream's controller merges in when mounted, is not
read: put the slicing keys in the NAD.
"""

from __future__ import annotations

import json

from cni_ipam.cni.errors import CNIError
from cni_ipam.config.whereabouts import range_of
from cni_ipam.kube.names import subdomain_problem
from cni_ipam.kube.slices import SliceError, SliceLayout
from cni_ipam.net import AddressError
from cni_ipam.net.ip import parse_ip


class NetworkError(ValueError):
    """A NAD asking for node slices that cannot have them; the message names the NAD and why."""


class SliceNetwork:
    """One network cut into node slices: the NodeSlicePool's name, the
    ``network_name`` node pools are named after, the layout, and the NADs
    (``namespace/name``, with their uid) asking for it."""

    __slots__ = ("pool_name", "network_name", "layout", "sources")

    def __init__(self, pool_name: str, network_name: str, layout: SliceLayout, sources) -> None:
        self.pool_name = pool_name
        self.network_name = network_name
        self.layout = layout
        self.sources = list(sources)


def _ipam(config: dict):
    """The whereabouts ``ipam`` section and the configuration's ``name`` (a plugin or a plugin list)."""
    candidates = [config] + [p for p in config.get("plugins") or [] if isinstance(p, dict)]
    for plugin in candidates:
        ipam = plugin.get("ipam")
        if isinstance(ipam, dict) and ipam.get("type") == "whereabouts":
            return ipam, config.get("name") or plugin.get("name") or ""
    return None, ""


def from_nad(nad: dict):
    """The network a NAD slices, or None when it asks for no node slices."""
    meta = nad.get("metadata") or {}
    where = f"NetworkAttachmentDefinition {meta.get('namespace', '')}/{meta.get('name', '')}"
    text = (nad.get("spec") or {}).get("config")
    try:
        config = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None  # not JSON: upstream skips it too (not a whereabouts configuration)
    if not isinstance(config, dict):
        return None
    ipam, conf_name = _ipam(config)
    if ipam is None or not ipam.get("node_slice_size"):
        return None
    first = ipam if ipam.get("range") else next(iter(ipam.get("ipRanges") or []), None)
    if not isinstance(first, dict) or not first.get("range"):
        raise NetworkError(f"{where}: node_slice_size is set but there is no range to slice")
    try:
        gateway = parse_ip(ipam["gateway"], "ipam.gateway") if ipam.get("gateway") else None
        whole = range_of("ipam", first, gateway)
        layout = SliceLayout(whole, str(ipam["node_slice_size"]))
    except CNIError as exc:
        raise NetworkError(f"{where}: {exc.msg}") from None
    except (AddressError, SliceError, ValueError) as exc:
        raise NetworkError(f"{where}: {exc}") from None
    network_name = ipam.get("network_name") or ""
    pool_name = network_name or conf_name
    problem = subdomain_problem(pool_name)
    if problem:
        raise NetworkError(f"{where}: the NodeSlicePool would be named {pool_name!r}, which is not a valid "
                           f"Kubernetes object name: {problem} (set network_name)")
    source = {"name": meta.get("name", ""), "namespace": meta.get("namespace", ""), "uid": meta.get("uid", "")}
    return SliceNetwork(pool_name, network_name, layout, [source])


def collect(nads) -> tuple:
    """``({pool name: SliceNetwork}, [problems])`` from every NAD.  NADs naming one
    NodeSlicePool must agree on network_name, range, bounds, exclusions and slice
    size; the first (by namespace/name) wins and each other is a problem."""
    networks, problems = {}, []
    for nad in sorted(nads, key=lambda n: ((n.get("metadata") or {}).get("namespace", ""),
                                           (n.get("metadata") or {}).get("name", ""))):
        try:
            network = from_nad(nad)
        except NetworkError as exc:
            problems.append(str(exc))
            continue
        if network is None:
            continue
        known = networks.get(network.pool_name)
        if known is None:
            networks[network.pool_name] = network
        elif (known.network_name, known.layout.whole, known.layout.size_text) == \
                (network.network_name, network.layout.whole, network.layout.size_text):
            known.sources += network.sources
        else:
            source = network.sources[0]
            problems.append(f"NetworkAttachmentDefinition {source['namespace']}/{source['name']}: its node slices "
                            f"for {network.pool_name!r} differ from those of "
                            f"{known.sources[0]['namespace']}/{known.sources[0]['name']}: ignored")
    return networks, problems
