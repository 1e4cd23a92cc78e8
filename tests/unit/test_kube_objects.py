"""whereabouts' objects: names, keys, pools written the way Go whereabouts writes them,
and what we write read back by an independent reimplementation of Go's reading.

Upstream: k8snetworkplumbingwg/whereabouts v0.9.4 (3a262bd0cd873e13d9b379342f8251b852a89b8f).
"""

import ipaddress

import pytest

from cni_ipam.kube import objects
from cni_ipam.kube.objects import Allocation, ObjectError, OffsetTooLarge
from cni_ipam.net import addr
from cni_ipam.net.ip import cidr

V4, V6 = 4, 6


def _int(text):
    return int(ipaddress.ip_address(text))


def _network(text):
    ip, prefixlen = cidr(text)
    return addr.Network(int(ip), prefixlen, ip.version)


# --- an independent reading, by Go's rules (not by our code) --------------------------------------

def go_ip_string(ip: ipaddress._BaseAddress) -> str:
    """Go net.IP.String(): IPv4-mapped IPv6 prints as IPv4."""
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return ip.compressed


def go_parse_int64(key: str):
    """strconv.ParseInt(key, 10, 64): optional sign, ASCII digits, int64 range; None on error."""
    body = key[1:] if key[:1] in "+-" else key
    if not body or any(c not in "0123456789" for c in body):
        return None
    n = int(key)
    return n if -(1 << 63) <= n < (1 << 63) else None


def go_read_pool(obj) -> dict:
    """toIPReservationList (pkg/storage/kubernetes/ipam.go) + IPAddOffset (pkg/iphelpers):
    {address text as Go prints it: (id, podref, ifname)}; unreadable keys are skipped, as Go skips them."""
    first_text = obj["spec"]["range"].split("/")[0]
    first = ipaddress.ip_address(first_text)
    is_v4 = first.version == 4 or first.ipv4_mapped is not None
    first16 = int(ipaddress.IPv6Address(f"::ffff:{first}")) if first.version == 4 else int(first)
    out = {}
    for key, value in obj["spec"]["allocations"].items():
        n = go_parse_int64(key)
        if n is None:
            continue
        offset = n % (1 << 64)
        if is_v4 and offset >= (1 << 32) - 1:
            continue  # IPAddOffset returns nil
        ip = ipaddress.IPv6Address((first16 + offset) % (1 << 128))
        out[go_ip_string(ip)] = (value["id"], value["podref"], value.get("ifname", ""))
    return out


def go_pool_name(range_text, network_name=""):
    """IPPoolName/normalizeRange, applied to Go's IPNet.String()."""
    net = ipaddress.ip_network(range_text, strict=False)
    text = f"{go_ip_string(net.network_address)}/{net.prefixlen}"
    if text.endswith(":"):
        text += "0"
    text = text.replace(":", "-").replace("/", "-")
    return f"{network_name}-{text}" if network_name else text


# --- names ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("range_text,network,node,expected", [
    # pkg/storage/kubernetes/ipam_test.go TestIPPoolName
    ("10.0.0.0/8", "", "", "10.0.0.0-8"),
    ("10.0.0.0/8", "test", "", "test-10.0.0.0-8"),
    ("10.0.0.0/8", "", "testnode", "testnode-10.0.0.0-8"),
    ("10.0.0.0/8", "testnetwork", "testnode", "testnetwork-testnode-10.0.0.0-8"),
    ("fd00:1::/64", "", "", "fd00-1---64"),
    ("2001:db8:0:1::/64", "net-b", "", "net-b-2001-db8-0-1---64"),
])
def test_pool_names(range_text, network, node, expected):
    assert objects.pool_name(range_text, network, node) == expected


@pytest.mark.parametrize("text", ["10.0.0.0/8", "192.168.2.0/24", "fd00:1::/64", "2001:db8::/48",
                                  "2001:db8:0:0:1::/80", "fd00::100/120"])
@pytest.mark.parametrize("network_name", ["", "mynet"])
def test_range_text_and_pool_name_agree_with_go(text, network_name):
    got = objects.pool_name(objects.range_text(_network(text)), network_name)
    assert got == go_pool_name(text, network_name)


def test_range_text_drops_host_bits_as_go_ipnet_string():
    assert objects.range_text(_network("192.168.2.77/24")) == "192.168.2.0/24"
    assert objects.range_text(_network("FD00:0:0:0::5/64")) == "fd00::/64"


@pytest.mark.parametrize("ip,network,expected", [
    ("10.0.0.5", "", "10.0.0.5"),
    ("10.0.0.5", "net1", "net1-10.0.0.5"),
    ("fd00::1", "", "fd00--1"),
    ("fd00:1::", "", "fd00-1--0"),  # NormalizeIP: a trailing ':' gets a '0'
    ("2001:db8::a:0", "net1", "net1-2001-db8--a-0"),
])
def test_reservation_names(ip, network, expected):
    value = _int(ip)
    version = ipaddress.ip_address(ip).version
    assert objects.reservation_name(value, version, network) == expected


def test_go_ip_text_prints_mapped_ipv6_as_ipv4():
    assert objects.go_ip_text(_int("::ffff:10.1.2.3"), V6) == "10.1.2.3"
    assert objects.go_ip_text(_int("fd00::1:0:0:1"), V6) == "fd00::1:0:0:1"


@pytest.mark.parametrize("call", [
    lambda: objects.pool_name("10.0.0.0/24", "MyNet"),
    lambda: objects.pool_name("10.0.0.0/24", "my_net"),
    lambda: objects.reservation_name(1, V6),  # "::1" -> "--1": starts with '-'
    lambda: objects.node_slice_pool_name("", ""),
    lambda: objects.pool_name("10.0.0.0/24", "x" * 250),
])
def test_names_kubernetes_would_refuse_are_refused(call):
    with pytest.raises(ObjectError, match="not a valid Kubernetes object name"):
        call()


def test_node_slice_pool_name_is_network_name_else_conf_name():
    # pkg/storage/kubernetes/ipam.go getNodeSliceName
    assert objects.node_slice_pool_name("", "my-conf") == "my-conf"
    assert objects.node_slice_pool_name("net-a", "my-conf") == "net-a"


# --- keys -----------------------------------------------------------------------------------------

def test_offset_keys_count_from_the_pool_range_ip():
    base = _int("10.0.0.0")
    assert objects.offset_key(base, V4, _int("10.0.0.1")) == "1"
    assert objects.offset_key(base, V4, _int("10.0.1.0")) == "256"
    with pytest.raises(ObjectError, match="below"):
        objects.offset_key(base + 5, V4, base)


def test_ipv6_offsets_of_2_63_or_more_are_refused():
    base = _int("fd00::")
    assert objects.offset_key(base, V6, base + (1 << 63) - 1) == str((1 << 63) - 1)
    with pytest.raises(OffsetTooLarge, match="2\\^63") as info:
        objects.offset_key(base, V6, base + (1 << 63))
    assert "fd00::8000:0:0:0" in str(info.value)


@pytest.mark.parametrize("version,base,key,expected", [
    (V4, "10.0.0.0", "5", "10.0.0.5"),
    (V4, "10.0.0.0", "05", "10.0.0.5"),      # ParseInt takes leading zeros
    (V4, "10.0.0.0", "+5", "10.0.0.5"),      # ...and a sign
    (V4, "10.0.0.0", "-1", None),            # uint64(-1) >= MaxUint32: IPAddOffset gives nil
    (V4, "10.0.0.0", "4294967295", None),
    (V4, "255.255.255.0", "512", None),      # carries out of IPv4
    (V6, "fd00::", "-1", "fd00::ffff:ffff:ffff:ffff"),  # wraps modulo 2^64
    (V6, "fd00::", "9223372036854775808", "fd00::8000:0:0:0"),  # Go cannot read it: we still hold it
    (V6, "fd00::", "99999999999999999999999", "fd00::152d:2c7:e14a:f67f:ffff"),
    (V6, "ffff::", str(1 << 120), None),      # past the end of the address space
    (V4, "10.0.0.0", "abc", None),
    (V4, "10.0.0.0", "", None),
    (V4, "10.0.0.0", "1_0", None),
    (V4, "10.0.0.0", "٣", None),             # a non-ASCII digit
])
def test_key_address_reads_as_go(version, base, key, expected):
    got = objects.key_address(_int(base), version, key)
    assert got == (None if expected is None else _int(expected))


# --- pools as Go whereabouts writes them ----------------------------------------------------------

def _go_pool(name, range_text, allocations, namespace="kube-system", rv="1234"):
    """An IPPool as Go whereabouts leaves it (getPool, then Update's patches), as the API server returns it."""
    return {
        "apiVersion": "whereabouts.cni.cncf.io/v1alpha1",
        "kind": "IPPool",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": rv, "generation": 3,
                     "uid": "4bb1ea0c-7f2a-4e0b-9d55-2b5a5a2d7b60",
                     "creationTimestamp": "2025-03-20T10:04:14Z"},
        "spec": {"range": range_text, "allocations": allocations},
    }


def test_reads_an_ipv4_pool():
    obj = _go_pool("10.10.0.0-16", "10.10.0.0/16", {
        "1": {"id": "c1", "podref": "default/a", "ifname": "net1"},
        "256": {"id": "c2", "podref": "default/b"},  # ifname omitted when empty (omitempty)
    })
    pool = objects.parse_ippool(obj)
    assert (pool.name, pool.namespace, pool.resource_version, pool.version) == ("10.10.0.0-16", "kube-system",
                                                                                "1234", 4)
    assert {a: [e.allocation for e in es] for a, es in pool.held.items()} == {
        _int("10.10.0.1"): [Allocation("c1", "default/a", "net1")],
        _int("10.10.1.0"): [Allocation("c2", "default/b", "")],
    }
    assert pool.unknown == ()


def test_reads_an_ipv6_pool_with_network_name_and_odd_keys():
    obj = _go_pool("blue-fd00-10---64", "fd00:10::/64", {
        "1": {"id": "c1", "podref": "ns/a", "ifname": "eth1"},
        "01": {"id": "c9", "podref": "ns/z", "ifname": "eth1"},
        "18446744073709551615": {"id": "c2", "podref": "ns/b"},  # Go's own unreadable key
        "garbage": {"id": "c3", "podref": "ns/c"},
    })
    pool = objects.parse_ippool(obj)
    assert [e.key for e in pool.held[_int("fd00:10::1")]] == ["1", "01"]
    assert pool.held[_int("fd00:10::ffff:ffff:ffff:ffff")][0].allocation.podref == "ns/b"
    assert [e.key for e in pool.unknown] == ["garbage"]


def test_a_pool_range_with_host_bits_counts_from_the_written_ip():
    # net.ParseCIDR returns the IP as written: IPGetOffset counts from it
    pool = objects.parse_ippool(_go_pool("x", "10.0.0.8/24", {"2": {"id": "c", "podref": "n/p"}}))
    assert list(pool.held) == [_int("10.0.0.10")]
    assert pool.key_for(_int("10.0.0.10")) == "2"


def test_a_pool_in_ipv4_mapped_ipv6_reads_as_ipv4():
    pool = objects.parse_ippool(_go_pool("x", "::ffff:10.0.0.0/120", {"3": {"id": "c", "podref": "n/p"}}))
    assert (pool.version, list(pool.held)) == (4, [_int("10.0.0.3")])


@pytest.mark.parametrize("obj,words", [
    ({"spec": {"range": "nope", "allocations": {}}}, "not a CIDR"),
    ({"spec": {"allocations": {}}}, "not a CIDR"),
    ({"spec": {"range": "10.0.0.0/24", "allocations": []}}, "not an object"),
    ({"spec": "x"}, "spec is not an object"),
    ([], "must be a JSON object"),
])
def test_unreadable_pools(obj, words):
    with pytest.raises(ObjectError, match=words):
        objects.parse_ippool(obj)


def test_a_pool_without_allocations_is_read_empty():
    pool = objects.parse_ippool({"metadata": {"name": "p"}, "spec": {"range": "10.0.0.0/24"}})
    assert (pool.entries, pool.has_allocations) == ((), False)


# --- what we write, read back by Go's rules ------------------------------------------------------

@pytest.mark.parametrize("range_text,addresses,network_name", [
    ("10.10.0.0/16", ["10.10.0.1", "10.10.0.255", "10.10.255.254"], ""),
    ("192.168.2.0/24", ["192.168.2.5"], "net-a"),
    ("fd00:10::/64", ["fd00:10::1", "fd00:10::ffff", "fd00:10::7fff:ffff:ffff:ffff"], "blue"),
    ("2001:db8::/48", ["2001:db8::1234:5678:9abc:def0"], ""),
])
def test_written_pool_round_trips_through_go_rules(range_text, addresses, network_name):
    rng = objects.range_text(_network(range_text))
    version, base = objects.pool_base(rng)
    allocations = {objects.offset_key(base, version, _int(a)): Allocation(f"c{i}", f"ns/p{i}", "net1" if i else "")
                   for i, a in enumerate(addresses)}
    obj = objects.ippool_object(objects.pool_name(rng, network_name), "kube-system", rng, allocations)
    assert obj["metadata"]["name"] == go_pool_name(range_text, network_name)
    expected = {go_ip_string(ipaddress.ip_address(a)): (f"c{i}", f"ns/p{i}", "net1" if i else "")
                for i, a in enumerate(addresses)}
    assert go_read_pool(obj) == expected
    # ...and our reader agrees with Go's
    pool = objects.parse_ippool(obj)
    assert {objects.go_ip_text(a, version): (es[0].allocation.container_id, es[0].allocation.podref,
                                             es[0].allocation.ifname)
            for a, es in pool.held.items()} == expected


# --- the CRDs' required fields (doc/crds/whereabouts.cni.cncf.io_*.yaml) ------------------------

def _check_ippool_crd(obj):
    spec = obj["spec"]
    assert isinstance(spec["range"], str) and isinstance(spec["allocations"], dict)
    for value in spec["allocations"].values():
        assert isinstance(value["id"], str) and isinstance(value["podref"], str)
        assert set(value) <= {"id", "podref", "ifname"}
        assert all(isinstance(v, str) for v in value.values())


def test_objects_carry_what_the_crds_require():
    pool = objects.ippool_object("10.0.0.0-24", "kube-system", "10.0.0.0/24",
                                 {"1": Allocation("c", "ns/p", "eth0"), "2": Allocation("d", "ns/q")})
    assert pool["apiVersion"] == "whereabouts.cni.cncf.io/v1alpha1" and pool["kind"] == "IPPool"
    _check_ippool_crd(pool)
    _check_ippool_crd(objects.ippool_object("10.0.0.0-24", "kube-system", "10.0.0.0/24"))
    orip = objects.reservation_object("10.0.0.1", "kube-system", "ns/p")
    assert orip["spec"] == {"podref": "ns/p"}  # as UpdateOverlappingRangeAllocation writes it, minus ifname
    nsp = objects.node_slice_pool_object("net", "kube-system", "10.0.0.0/16", "/24",
                                         [("node-a", "10.0.0.0/24"), ("", "10.0.1.0/24")])
    assert set(nsp["spec"]) == {"range", "sliceSize"}
    assert all(set(a) == {"nodeName", "sliceRange"} for a in nsp["status"]["allocations"])


# --- the patch ------------------------------------------------------------------------------------

def _apply(doc, ops):
    """The patch applied as the API server applies it (the test API server's model of evanphx/json-patch v4,
    tests/kubeapi/patching.py); a failed test raises AssertionError (the server answers 422 Invalid)."""
    from kubeapi.patching import PatchFailed, apply_json_patch

    try:
        return apply_json_patch(doc, ops)
    except PatchFailed as exc:
        raise AssertionError(str(exc)) from None


def test_patch_guards_each_key_it_touches_and_applies():
    obj = _go_pool("10.0.0.0-24", "10.0.0.0/24", {"1": {"id": "c1", "podref": "ns/a", "ifname": "eth0"},
                                                   "a/b~c": {"id": "x", "podref": "ns/x"}})
    pool = objects.parse_ippool(obj)
    ops = objects.pool_patch(pool, add={"2": Allocation("c2", "ns/b", "eth0")}, remove=["a/b~c"],
                             replace={"1": Allocation("c9", "ns/a", "eth0")})
    assert ops == [
        {"op": "test", "path": "/spec/allocations/2", "value": None},
        {"op": "test", "path": "/spec/allocations/a~1b~0c/id", "value": "x"},
        {"op": "test", "path": "/spec/allocations/a~1b~0c/ifname", "value": None},  # absent, as read
        {"op": "test", "path": "/spec/allocations/1/id", "value": "c1"},
        {"op": "test", "path": "/spec/allocations/1/ifname", "value": "eth0"},
        {"op": "remove", "path": "/spec/allocations/a~1b~0c"},
        {"op": "replace", "path": "/spec/allocations/1", "value": {"id": "c9", "podref": "ns/a", "ifname": "eth0"}},
        {"op": "add", "path": "/spec/allocations/2", "value": {"id": "c2", "podref": "ns/b", "ifname": "eth0"}},
    ]
    after = _apply(obj, ops)
    assert after["spec"]["allocations"] == {"1": {"id": "c9", "podref": "ns/a", "ifname": "eth0"},
                                            "2": {"id": "c2", "podref": "ns/b", "ifname": "eth0"}}


def test_patch_applies_over_a_concurrent_write_of_other_keys():
    """No resourceVersion test: another writer's add and remove of other keys since our read leave ours valid."""
    obj = _go_pool("p", "10.0.0.0/24", {"1": {"id": "c1", "podref": "ns/a"}, "5": {"id": "c5", "podref": "ns/e"}})
    pool = objects.parse_ippool(obj)
    ops = objects.pool_patch(pool, add={"2": Allocation("c2", "ns/b"), "3": Allocation("c3", "ns/c")}, remove=["1"])
    assert not any(op["path"] == "/metadata/resourceVersion" for op in ops)
    meanwhile = _go_pool("p", "10.0.0.0/24", {"1": {"id": "c1", "podref": "ns/a"}, "4": {"id": "c4", "podref": "ns/d"}},
                         rv="1240")
    assert _apply(meanwhile, ops)["spec"]["allocations"] == {
        "2": {"id": "c2", "podref": "ns/b"}, "3": {"id": "c3", "podref": "ns/c"}, "4": {"id": "c4", "podref": "ns/d"}}


def test_patch_fails_on_a_taken_key_or_a_key_held_by_another():
    obj = _go_pool("p", "10.0.0.0/24", {"1": {"id": "c1", "podref": "ns/a", "ifname": "eth0"}})
    pool = objects.parse_ippool(obj)
    adding = objects.pool_patch(pool, add={"2": Allocation("c2", "ns/b"), "3": Allocation("c3", "ns/c")})
    taken = _go_pool("p", "10.0.0.0/24", {"1": obj["spec"]["allocations"]["1"], "3": {"id": "other", "podref": "ns/o"}})
    with pytest.raises(AssertionError):  # one taken key of several: nothing applies
        _apply(taken, adding)
    removing = objects.pool_patch(pool, remove=["1"])
    for other in ({"id": "c7", "podref": "ns/a", "ifname": "eth0"},  # released and claimed again since our read
                  {"id": "c1", "podref": "ns/a", "ifname": "net1"},  # same container, another interface
                  {"id": "c1", "podref": "ns/a"}):  # ifname gone
        with pytest.raises(AssertionError):
            _apply(_go_pool("p", "10.0.0.0/24", {"1": other}), removing)
    with pytest.raises(AssertionError):  # gone altogether
        _apply(_go_pool("p", "10.0.0.0/24", {}), removing)


@pytest.mark.parametrize("value", [
    {"id": "c1", "podref": "ns/a", "ifname": "a<b"},  # Go writes "a\u003cb": json-patch v4 compares bytes
    {"id": "c\u00e91", "podref": "ns/a"},
    {"id": 5, "podref": "ns/a"},
    "not an object",
])
def test_patch_of_a_key_it_cannot_guard_exactly_tests_the_resource_version(value):
    obj = _go_pool("p", "10.0.0.0/24", {"1": value})
    ops = objects.pool_patch(objects.parse_ippool(obj), remove=["1"])
    assert ops == [{"op": "test", "path": "/metadata/resourceVersion", "value": "1234"},
                   {"op": "remove", "path": "/spec/allocations/1"}]
    assert _apply(obj, ops)["spec"]["allocations"] == {}
    with pytest.raises(AssertionError):
        _apply({**obj, "metadata": {**obj["metadata"], "resourceVersion": "1235"}}, ops)


def test_plain_values_are_those_any_server_compares_as_written():
    assert objects.plain(None) and objects.plain("eth0") and objects.plain('["a\\"b",1]')
    assert not any(objects.plain(v) for v in ("a<b", "a>b", "a&b", "caf\u00e9", "a\x7fb", "a\nb", 5))


def test_patch_of_a_pool_without_allocations_adds_the_map():
    obj = {"metadata": {"name": "p", "resourceVersion": "7"}, "spec": {"range": "10.0.0.0/24"}}
    ops = objects.pool_patch(objects.parse_ippool(obj), add={"3": Allocation("c", "ns/p")})
    assert _apply(obj, ops)["spec"]["allocations"] == {"3": {"id": "c", "podref": "ns/p"}}


# --- reservations and node slices ----------------------------------------------------------------

def test_reservation_as_go_writes_it_round_trips():
    go_written = {"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "OverlappingRangeIPReservation",
                  "metadata": {"name": "net1-fd00--5", "namespace": "kube-system", "resourceVersion": "9"},
                  "spec": {"podref": "ns/a", "ifname": "net1"}}
    r = objects.parse_reservation(go_written)
    assert (r.name, r.podref, r.ifname, r.container_id, r.resource_version) == ("net1-fd00--5", "ns/a", "net1", "",
                                                                               "9")
    ours = objects.reservation_object("net1-fd00--5", "kube-system", "ns/a", "net1", "cid")
    assert ours["spec"] == {"podref": "ns/a", "ifname": "net1", "containerid": "cid"}
    assert objects.parse_reservation(ours).container_id == "cid"


def test_node_slice_pool_as_the_node_controller_writes_it():
    # pkg/node-controller/controller.go: slices from DivideRangeBySize, nodes assigned in order
    obj = {"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "NodeSlicePool",
           "metadata": {"name": "net-a", "namespace": "kube-system", "resourceVersion": "3"},
           "spec": {"range": "10.0.0.0/16", "sliceSize": "/24"},
           "status": {"allocations": [{"nodeName": "node-a", "sliceRange": "10.0.0.0/24"},
                                      {"nodeName": "", "sliceRange": "10.0.1.0/24"}]}}
    nsp = objects.parse_node_slice_pool(obj)
    assert (nsp.range, nsp.slice_size) == ("10.0.0.0/16", "/24")
    assert nsp.slice_for("node-a") == "10.0.0.0/24"
    assert nsp.slice_for("node-b") is None
    # the node's pool: IPPoolName with NodeName set
    assert objects.pool_name(nsp.slice_for("node-a"), "net-a", "node-a") == "net-a-node-a-10.0.0.0-24"
    built = objects.node_slice_pool_object("net-a", "kube-system", "10.0.0.0/16", "/24", nsp.allocations)
    assert built["spec"] == obj["spec"] and built["status"] == obj["status"]


def test_every_key_we_write_is_one_go_reads_back():
    import random

    rng = random.Random(15)
    base = _int("fd00:10::")
    for _ in range(2000):
        address = base + rng.randrange(1 << 64)
        try:
            key = objects.offset_key(base, V6, address)
        except OffsetTooLarge:
            assert address - base >= 1 << 63
            continue
        assert go_parse_int64(key) == address - base
