"""The ``whereabouts`` IPAM plugin: addresses from ranges, unique across the address space.

A drop-in for Go whereabouts' plugin: the same config keys and results, on
our own stores (SQLite by default).  Each command loads the config, opens
the store through ``stores`` (:mod:`cni_ipam.store`: one per call in a
plugin process, kept open in the node agent), and hands the decision to
:mod:`cni_ipam.allocator.engine`.
"""

from ..cni.skel import Plugin

ADDRESS_TAKEN = 101  # plugin-specific codes (100+ are ours by the spec)
RANGE_FULL = 102


def _read_json(path):
    """A flat file's JSON object; None if no file is there.  A directory means its whereabouts.conf."""
    from ..cni.errors import invalid_config
    from ..jsonlite import loads
    from ..oslite import isdir, join

    if isdir(path):
        path = join(path, "whereabouts.conf")
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise invalid_config(f"flat file {path}: cannot read it: {exc.strerror or exc}") from None
    try:
        return loads(data, unicode_only=True)
    except ValueError as exc:
        raise invalid_config(f"flat file {path}: not valid JSON: {exc}") from None


def _store_errors(function):
    """Turn store and allocation failures into CNI errors with their messages."""
    def wrapped(*args):
        from ..allocator.engine import AddressTaken, LostRaces, RangeFull
        from ..cni.errors import CNIError, INVALID_CONFIG, IO_FAILURE, TRY_AGAIN_LATER
        from ..store.base import StoreError, StoreRefused

        try:
            return function(*args)
        except StoreRefused as exc:
            raise CNIError(INVALID_CONFIG, str(exc)) from None
        except StoreError as exc:
            raise CNIError(TRY_AGAIN_LATER if exc.retry else IO_FAILURE, str(exc)) from None
        except RangeFull as exc:
            raise CNIError(RANGE_FULL, str(exc), "free addresses (DEL, or the reconciler) or widen the range") from None
        except AddressTaken as exc:
            raise CNIError(ADDRESS_TAKEN, str(exc)) from None
        except LostRaces as exc:
            raise CNIError(TRY_AGAIN_LATER, str(exc), "other allocators kept taking the free addresses") from None
    wrapped.__doc__ = function.__doc__
    return wrapped


def _owner(request, config):
    from ..allocator.engine import Owner

    return Owner(request.name, request.container_id, request.ifname, pod=config.pod, netns=request.netns,
                 node=_node_name(config))


def _node_name(config) -> str:
    """``NODENAME`` (whereabouts' daemon sets and reads it), else the ``nodename`` file beside the flat file,
    else the host name."""
    import posix

    from ..config.whereabouts import written_nodename
    from ..oslite import getenv

    return getenv("NODENAME") or written_nodename(config.ipam, config.flat_file) or posix.uname().nodename


def _sliced(store, config, node=None) -> list:
    """What to allocate from: the config's ranges, the first as this node's slices of it with
    ``node_slice_size`` (:mod:`cni_ipam.config.node_slices`; one read of the NodeSlicePool).  ``node``: this
    node's name, looked up here when None and needed (without slices it is not: CHECK and STATUS skip the
    nodename file and uname)."""
    if config.node_slices is None:
        return config.ranges
    if node is None:
        node = _node_name(config)
    from ..allocator.engine import Choices
    from ..config.node_slices import node_specs

    where, allocations = store.node_slices(config.node_slices.pool_name, config.network_name)
    return [Choices(*node_specs(config.ranges[0], config.node_slices, node, allocations, where))] + config.ranges[1:]


def _name_node_pools(store, request, ipam: dict) -> None:
    """DEL and GC with ``node_slice_size``: read the NodeSlicePool, so that node IPPools are read as of the
    network's address space (their reservations are named after it)."""
    if ipam.get("node_slice_size") and hasattr(store, "node_slices"):
        network_name = ipam.get("network_name") if isinstance(ipam.get("network_name"), str) else ""
        store.node_slices(network_name or request.name, network_name)


def _requested_in_slices(config, specs: list, node: str) -> None:
    """An address asked for in the sliced range must be in one of this node's slices."""
    ip = config.requested.get(0) if config.node_slices is not None else None
    if ip is not None and not any(s.range.is_allocatable(ip) for s in specs[0].specs):
        from ..cni.errors import invalid_config

        spec = config.ranges[0]
        slices = ", ".join(s.range.cidr for s in specs[0].specs)
        raise invalid_config(f"{spec.key}: the requested address {spec.range.to_text(ip)} is not in node {node}'s "
                             f"slice(s) ({slices})", "with node_slice_size a pod can ask only for an address of "
                                                     "its node's slices")


@_store_errors
def add(request, stores, read_json):
    from ..allocator.engine import assign
    from ..cni.result import IPConfig, Result
    from ..config.whereabouts import load
    from ..store.base import StaleRead

    config = load(request, read_json)
    store = stores.open(config.store)
    try:
        owner = _owner(request, config)
        specs = _sliced(store, config, owner.node)
        _requested_in_slices(config, specs, owner.node)
        try:
            held = assign(store, specs, owner, config.requested)
        except StaleRead:  # the node agent's cached IPPools missed what this attachment holds: decide again, on a
            held = assign(store, specs, owner, config.requested)  # fresh read (store/kube_cache.py)
    finally:
        stores.done(store)
    from ..net.addr import Interface

    ips = []
    for spec, allocation in zip(config.ranges, held):
        address = Interface(allocation.ip, spec.range.prefixlen, spec.range.version)
        gateway = config.gateway if config.gateway is not None and config.gateway.version == address.version else None
        ips.append(IPConfig(address, gateway))
    return Result(ips + config.addresses, config.routes, config.dns)


@_store_errors
def delete(request, stores, read_json):
    """Free every address of this attachment; succeed when nothing is held or the config no longer parses."""
    from ..allocator.engine import release_attachment
    from ..config.whereabouts import store_settings, with_flat_file
    from ..store import never_created

    ipam, _ = with_flat_file(request, read_json)
    settings = store_settings(ipam)
    if never_created(settings):
        return None  # nothing was ever stored here
    store = stores.open(settings)
    try:
        _name_node_pools(store, request, ipam)
        release_attachment(store, request.name, request.container_id, request.ifname)
    finally:
        stores.done(store)
    return None


@_store_errors
def check(request, stores, read_json):
    """The attachment must still hold one address per range, and those of ``prevResult``."""
    from ..cni.errors import invalid_config
    from ..cni.result import addresses_in
    from ..config.whereabouts import load

    config = load(request, read_json)
    if not request.prev_result:
        raise invalid_config("Required prevResult missing", "CHECK compares the store with the ADD result in prevResult")
    store = stores.open(config.store)
    try:
        groups = _sliced(store, config)
        held = store.find(network=request.name, container_id=request.container_id, ifname=request.ifname)
    finally:
        stores.done(store)
    held_text = {a.address for a in held}
    for spec, group in zip(config.ranges, groups):
        pools = {s.pool for s in getattr(group, "specs", (group,))}  # a node's slices, with node_slice_size
        if not any(a.pool in pools for a in held):
            raise invalid_config(f"whereabouts: {request.container_id}/{request.ifname} holds no address in "
                                 f"{spec.key} {spec.range.cidr}")
    for address, _gateway in addresses_in(request.prev_result):
        ip = address.split("/")[0]
        in_ranges = any(_in_range(spec, ip) for spec in config.ranges)
        if in_ranges and _canonical(ip) not in held_text:
            raise invalid_config(f"whereabouts: address {address} from prevResult is not held by "
                                 f"{request.container_id}/{request.ifname}")
    return None


def _canonical(text):
    from ..net.addr import ip_address

    try:
        return str(ip_address(text))
    except ValueError:
        return text


def _in_range(spec, text) -> bool:
    from ..net.addr import ip_address

    try:
        ip = ip_address(text)
    except ValueError:
        return False
    return ip.version == spec.range.version and ip in spec.range.network


@_store_errors
def gc(request, stores, read_json):
    """Free this network's allocations whose attachment is not in ``cni.dev/valid-attachments``."""
    from ..allocator.engine import garbage_collect
    from ..cni.errors import invalid_config
    from ..config.whereabouts import store_settings, with_flat_file

    valid = set()
    attachments = request.config.get("cni.dev/valid-attachments")
    if attachments is not None and not isinstance(attachments, list):  # found by tests/plugin_fuzz.py: was 999
        raise invalid_config(f"cni.dev/valid-attachments: expected a list of {{containerID, ifname}}, "
                             f"got {attachments!r}")
    for i, entry in enumerate(attachments or []):
        if not isinstance(entry, dict) or not isinstance(entry.get("containerID"), str) \
                or not isinstance(entry.get("ifname"), str):
            raise invalid_config(f"cni.dev/valid-attachments[{i}]: expected {{containerID, ifname}} strings, "
                                 f"got {entry!r}")
        valid.add((entry["containerID"], entry["ifname"]))
    ipam, _ = with_flat_file(request, read_json)
    store = stores.open(store_settings(ipam))
    try:
        _name_node_pools(store, request, ipam)
        freed = garbage_collect(store, request.name, valid)
    finally:
        stores.done(store)
    for allocation in freed:
        request.warnings.append(f"GC freed {allocation.address} of {allocation.container_id}/{allocation.ifname}")
    return None


def status(request, stores, read_json):
    """Ready when the store opens, a write transaction can begin (SQLite: its lock file opens), and every
    range has a free address (else code 50, saying why)."""
    from ..allocator.engine import has_free
    from ..config.node_slices import SliceWait
    from ..cni.errors import CNIError, NOT_AVAILABLE
    from ..config.whereabouts import load
    from ..store.base import StoreError

    config = load(request, read_json)
    try:
        store = stores.open(config.store)
    except StoreError as exc:
        raise CNIError(NOT_AVAILABLE, f"whereabouts: store unavailable: {exc}") from None
    try:
        with store.transaction():  # ADD and DEL need one; nothing is written in it
            pass
        for spec, group in zip(config.ranges, _sliced(store, config)):
            if not any(has_free(store, s) for s in getattr(group, "specs", (group,))):
                raise CNIError(NOT_AVAILABLE, f"whereabouts: {spec.key} {spec.range.cidr} has no free address"
                                              + (" in this node's slices" if group is not spec else ""))
    except SliceWait as exc:
        raise CNIError(NOT_AVAILABLE, str(exc)) from None
    except CNIError:
        raise
    except Exception as exc:
        raise CNIError(NOT_AVAILABLE, f"whereabouts: store unavailable: {exc}") from None
    finally:
        stores.done(store)
    return None


LOG_LEVELS = ("debug", "verbose", "error", "panic")  # whereabouts' levels, most verbose first


class _FlatFiles:
    """Reads flat files (:func:`_read_json`) for one call, each once: its command and its log line both need
    them, and a second read cost every call 0.03-0.05 ms."""

    def __init__(self) -> None:
        self._read = {}

    def __call__(self, path):
        if path not in self._read:
            self._read[path] = _read_json(path)
        return self._read[path]


def _log_call(request, command, result, error, read_json) -> None:
    """One JSON line per call appended to ``log_file`` (whereabouts' key): at ``log_level`` debug or verbose
    every call, at error only failures, at panic nothing."""
    import posix
    import time

    from ..config.whereabouts import with_flat_file
    from ..jsonlite import dumps

    try:
        ipam, _ = with_flat_file(request, read_json)
    except Exception:  # a config that does not parse: its own keys may still name the log
        ipam = request.config.get("ipam") if isinstance(request.config.get("ipam"), dict) else {}
    path, level = ipam.get("log_file"), ipam.get("log_level") or "debug"
    if not path or not isinstance(path, str):
        return
    level = level if level in LOG_LEVELS else "debug"
    if level == "panic" or (level == "error" and error is None):
        return
    now = time.time()
    line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z",
            "level": "error" if error is not None else "verbose", "command": command,
            "containerID": request.container_id, "ifname": request.ifname, "network": request.name}
    if error is not None:
        line["code"] = getattr(error, "code", 999)
        line["msg"] = getattr(error, "msg", None) or str(error)
    elif result is not None and getattr(result, "ips", None) is not None:
        line["ips"] = [str(ip.address) for ip in result.ips]
    from ..trusted_paths import UntrustedPath, open_log

    try:
        fd = open_log(path)  # never through another user's symbolic link: see trusted_paths
        try:
            posix.write(fd, (dumps(line) + "\n").encode())  # one write of one line: calls never interleave
        finally:
            posix.close(fd)
    except UntrustedPath as exc:
        request.warnings.append(f"ipam.log_file {path!r} refused, not written: {exc}")
    except OSError as exc:
        request.warnings.append(f"ipam.log_file {path!r}: cannot write: {exc.strerror or exc}")


def plugin(stores=None) -> Plugin:
    """The plugin, its commands opening stores through ``stores`` (``open(settings)``, then ``done(store)``);
    None, in a plugin process: :class:`cni_ipam.store.OpenPerCall`.  The node agent passes its own."""
    def command(name, function):
        def call(request):
            from ..cni.skel import in_launcher
            from ..store import OpenPerCall

            read_json = _FlatFiles()
            try:
                result = function(request, stores or OpenPerCall(exits=in_launcher()), read_json)
            except Exception as exc:
                _log_call(request, name, None, exc, read_json)
                raise
            _log_call(request, name, result, None, read_json)
            return result
        call.__doc__ = function.__doc__
        return call

    return Plugin("whereabouts", "cluster-wide unique addresses from ranges (Go whereabouts compatible)",
                  {name: command(name, f) for name, f in
                   (("ADD", add), ("DEL", delete), ("CHECK", check), ("GC", gc), ("STATUS", status))})


PLUGIN = plugin()

