"""``cni-ipam verify``: consistency checks of a store, and the repairs that are safe.

Each finding is a :class:`Problem` with a ``repair`` callable when the fix
cannot take an address from a pod that may still use it, else a ``hint``
saying what the administrator must decide.

SQLite keeps an allocation and its address-space claim in one row, so it can
only hold addresses outside their pool's CIDR, duplicates of one address in
one space (when the unique index is gone), and rows that break the schema.
etcd keeps them in several keys, so it can also hold a space claim without
its record, an index entry without its record, and a record whose space
claim is missing.
"""

from __future__ import annotations

from ..net.pools import in_cidr, split_pool


class Problem:
    __slots__ = ("kind", "detail", "repair", "hint")

    def __init__(self, kind: str, detail: str, repair=None, hint: str = "") -> None:
        self.kind = kind
        self.detail = detail
        self.repair = repair  # () -> str saying what was done, or None when not safe to do automatically
        self.hint = hint

    def to_dict(self) -> dict:
        return {"kind": self.kind, "detail": self.detail, "repairable": self.repair is not None, "hint": self.hint}


DUPLICATE_HINT = ("decide which attachment keeps the address and free the other with "
                  "cni-ipam release --container-id ID --network NETWORK")


def verify(store, progress=None) -> list:
    from ..store.etcd import EtcdStore
    from ..store.sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        return verify_sqlite(store, progress)
    if isinstance(store, EtcdStore):
        return verify_etcd(store, progress)
    raise TypeError(f"verify does not know the store {type(store).__name__}")


def _tick(progress, done, total):
    if progress is not None:
        progress(done, total)


# --- SQLite ----------------------------------------------------------------------------------

def verify_sqlite(store, progress=None) -> list:
    from ..store.sqlite import decode_ip
    from ..store.base import Allocation

    db = store.db
    problems = []
    rows = db.execute("SELECT pool, ip, space, network, container_id, ifname, pod, netns, node, created, "
                      "typeof(ip), typeof(created) FROM allocations").fetchall()
    good = []
    for done, row in enumerate(rows, 1):
        _tick(progress, done, len(rows))
        pool, ip, space, network, cid, ifname, pod, netns, node, created, ip_type, created_type = row
        wrong = _sqlite_row_problem(row)
        if wrong:
            problems.append(Problem("bad-row", f"row pool={pool!r} ip={ip!r} container={cid!r}: {wrong}",
                                    repair=_sqlite_delete(store, pool, ip, f"deleted the unreadable row of pool "
                                                                           f"{pool!r} ({wrong})")))
            continue
        address, version = decode_ip(ip)
        a = Allocation(pool, address, version, network, cid, ifname, space=space, pod=pod, netns=netns, node=node,
                       created=created)
        if not in_cidr(split_pool(pool)[1], address, version):
            problems.append(Problem("outside-cidr", f"{a.address} is outside the CIDR of its pool {pool} "
                                                    f"(held by {network}/{cid}/{ifname})",
                                    repair=_sqlite_delete(store, pool, ip, f"deleted {a.address} from {pool}: "
                                                                           f"no range of that pool can hold it")))
            continue
        good.append(a)
    problems += _duplicates(good)
    indexes = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    if "allocations_space" not in indexes:
        dup = any(p.kind == "duplicate" for p in problems)
        problems.append(Problem(
            "missing-index", "the unique index allocations_space is gone: two pools of one address space can hold "
                             "one address", repair=None if dup else _sqlite_reindex(store),
            hint="free the duplicates first; verify --repair then recreates it" if dup else ""))
    return problems


def _sqlite_row_problem(row) -> str:
    pool, ip, space, network, cid, ifname, pod, netns, node, created, ip_type, created_type = row
    if ip_type != "blob" or len(ip) not in (5, 17) or (len(ip), ip[0]) not in ((5, 4), (17, 6)):
        return "ip is not a family byte and a 4- or 16-byte address"
    if created_type not in ("real", "integer"):
        return f"created is a {created_type}, not a time"
    for name, value in (("pool", pool), ("network", network), ("container_id", cid), ("ifname", ifname),
                        ("pod", pod), ("netns", netns), ("node", node)):
        if not isinstance(value, str):
            return f"{name} is not text"
    if space is not None and not isinstance(space, str):
        return "space is neither text nor NULL"
    if split_pool(pool)[1] is None:
        return "pool is not <network_name>/<cidr>"
    return ""


def _sqlite_delete(store, pool, ip, done: str):
    def repair() -> str:
        with store.transaction():
            store.db.execute("DELETE FROM allocations WHERE pool IS ? AND ip IS ?", (pool, ip))
        return done
    return repair


def _sqlite_reindex(store):
    def repair() -> str:
        with store.transaction():
            store.db.execute("CREATE UNIQUE INDEX IF NOT EXISTS allocations_space ON allocations (space, ip) "
                             "WHERE space IS NOT NULL")
        return "recreated the unique index allocations_space"
    return repair


def _duplicates(allocations) -> list:
    groups = {}
    for a in allocations:
        if a.space is not None:
            groups.setdefault((a.space, a.version, a.ip), []).append(a)
    problems = []
    for (space, _version, _ip), holders in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        if len(holders) > 1:
            who = "; ".join(f"{a.pool} by {a.network}/{a.container_id}/{a.ifname}" for a in holders)
            problems.append(Problem("duplicate", f"{holders[0].address} is held twice in address space {space!r}: "
                                                 f"{who}", hint=DUPLICATE_HINT))
    return problems


# --- etcd ------------------------------------------------------------------------------------

def _keys(store, section: str) -> list:
    from ..store import etcd_client as ec
    from ..store.etcd import PAGE

    base = store._k(section) + b"/"
    start, end, found = base, ec.prefix_end(base), []
    while True:
        kvs = store._call(store.client.range, start, end, PAGE)
        found += kvs
        if len(kvs) < PAGE:
            return found
        start = kvs[-1]["key"] + b"\x00"


def verify_etcd(store, progress=None) -> list:
    from .. import jsonlite
    from ..store import etcd_client as ec
    from ..store.base import Allocation
    from ..store.etcd import ip_from_key, ip_key, seg

    problems = []
    pools_base = store._k("pools") + b"/"
    records = {}  # pools key -> (Allocation, mod_revision)
    kvs = _keys(store, "pools")
    for done, kv in enumerate(kvs, 1):
        _tick(progress, done, len(kvs))
        key = kv["key"]
        try:
            a = Allocation.from_dict(jsonlite.loads(kv["value"]))
            pool_seg, ipk = key[len(pools_base):].decode().rsplit("/", 1)
            if pool_seg != seg(a.pool) or ip_from_key(ipk) != (a.ip, a.version):
                raise ValueError("its key names another pool or address than its record")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            problems.append(Problem("bad-record", f"{key.decode(errors='replace')}: unreadable record ({exc})",
                                    hint="read it with etcdctl get; the address stays blocked until it is deleted"))
            continue
        records[key] = (a, kv["mod_revision"])
    allocations = [a for a, _ in records.values()]

    for a, revision in records.values():
        if not in_cidr(split_pool(a.pool)[1], a.ip, a.version):
            problems.append(Problem("outside-cidr", f"{a.address} is outside the CIDR of its pool {a.pool} "
                                                    f"(held by {a.network}/{a.container_id}/{a.ifname})",
                                    repair=_etcd_release(store, a)))

    spaces = {kv["key"]: kv for kv in _keys(store, "spaces")}
    for a, _ in records.values():
        if a.space is None:
            continue
        key = store._k("spaces", seg(a.space), ip_key(a.ip, a.version))
        if key not in spaces:
            problems.append(Problem("missing-space-key",
                                    f"{a.address} of {a.pool} has no claim in address space {a.space!r}: another "
                                    f"pool of that space can hand it out again", repair=_etcd_claim_space(store, a, key)))

    from ..store.base import Reservation
    from ..store.etcd import _unseg

    backed = {(seg(a.space), ip_key(a.ip, a.version)) for a in allocations if a.space is not None}
    spaces_base = store._k("spaces") + b"/"
    unbacked = []
    for key, kv in spaces.items():
        space_seg, ipk = key[len(spaces_base):].decode().rsplit("/", 1)
        if (space_seg, ipk) not in backed:
            ip, version = ip_from_key(ipk)
            unbacked.append(Reservation(_unseg(space_seg), ip, version, kv["value"].decode(errors="replace"),
                                        kv["mod_revision"]))
    for reservation in unbacked:
        problems.append(Problem("unbacked-space-key",
                                f"address space {reservation.space!r} claims {reservation.address} for pool "
                                f"{reservation.pool!r} but no allocation holds it: the address is blocked",
                                repair=_etcd_drop(store, reservation)))

    for section, depth in (("attachments", 5), ("pods", 4)):
        base = store._k(section) + b"/"
        for kv in _keys(store, section):
            parts = kv["key"][len(base):].decode().split("/")
            record = None
            if len(parts) == depth:
                record = records.get(store._k("pools", parts[-2], parts[-1]))
            if record is None:
                problems.append(Problem("orphan-index", f"{kv['key'].decode(errors='replace')}: index entry without "
                                                        f"its allocation record", repair=_etcd_delete(store, kv)))

    problems += _duplicates(allocations)
    return problems


def _etcd_release(store, a):
    def repair() -> str:
        if not store.release(a):
            return f"{a.address} of {a.pool} had changed; left alone (run verify again)"
        return f"released {a.address} from {a.pool}: no range of that pool can hold it"
    return repair


def _etcd_claim_space(store, a, key):
    from ..store import etcd_client as ec

    def repair() -> str:
        done = store._call(store.client.txn, [ec.absent(key)], [ec.put(key, a.pool.encode())])["succeeded"]
        if done:
            return f"restored the claim of {a.address} in address space {a.space!r} for {a.pool}"
        return f"the claim of {a.address} in address space {a.space!r} was written meanwhile; left alone"
    return repair


def _etcd_drop(store, reservation):
    def repair() -> str:
        if store.drop_reservation(reservation):
            return f"deleted the unbacked claim of {reservation.address} in address space {reservation.space!r}"
        return f"the claim of {reservation.address} in {reservation.space!r} changed meanwhile; left alone"
    return repair


def _etcd_delete(store, kv):
    from ..store import etcd_client as ec

    def repair() -> str:
        key = kv["key"]
        if store._call(store.client.txn, [ec.unchanged(key, kv["mod_revision"])], [ec.delete(key)])["succeeded"]:
            return f"deleted the orphan index entry {key.decode(errors='replace')}"
        return f"{key.decode(errors='replace')} changed meanwhile; left alone"
    return repair
