"""``cni-ipam verify`` on the SQLite store: rows it cannot read or that break its rules, and the safe repairs.

:meth:`SQLiteStore.check <cni_ipam.store.sqlite.SQLiteStore.check>`, kept
apart so that no plugin command loads it (the store imports it lazily, in
``check`` alone): a plugin process pays for every module it imports, on
every call.  It works on the store's own connection and transactions, as
the method it was.
"""

from __future__ import annotations

from .check import Problem, duplicates, outside_its_pool, tick
from .sqlite import COLUMNS, SPACE_INDEX, _row


def check(store, progress=None) -> list:
    """An allocation and its address-space claim are one row, so what can go wrong is a row outside its
    pool's CIDR, one that breaks the schema, and, once the unique index is gone, duplicates in a space."""
    problems, good = [], []
    rows = store._run(f"SELECT {COLUMNS}, typeof(ip), typeof(created) FROM allocations").fetchall()
    for done, row in enumerate(rows, 1):
        tick(progress, done, len(rows))
        pool, ip, cid = row[0], row[1], row[4]
        wrong = _row_problem(row)
        if wrong:
            problems.append(Problem("bad-row", f"row pool={pool!r} ip={ip!r} container={cid!r}: {wrong}",
                                    repair=_delete_row(store, pool, ip, f"deleted the unreadable row of pool "
                                                                      f"{pool!r} ({wrong})")))
            continue
        a = _row(row[:-2])
        outside = outside_its_pool(a, _delete_row(store, pool, ip, f"deleted {a.address} from {pool}: no range "
                                                                 f"of that pool can hold it"))
        if outside:
            problems.append(outside)
        else:
            good.append(a)
    problems += duplicates(good)
    indexes = {name for (name,) in store._run("SELECT name FROM sqlite_master WHERE type = 'index'")}
    if "allocations_space" not in indexes:
        dup = any(p.kind == "duplicate" for p in problems)
        problems.append(Problem(
            "missing-index", "the unique index allocations_space is gone: two pools of one address space can "
                             "hold one address", repair=None if dup else lambda: _reindex(store),
            hint="free the duplicates first; verify --repair then recreates it" if dup else ""))
    return problems


def _delete_row(store, pool, ip, done: str):
    def repair() -> str:
        with store.transaction():
            store._run("DELETE FROM allocations WHERE pool IS ? AND ip IS ?", (pool, ip))
        return done
    return repair


def _reindex(store) -> str:
    with store.transaction():
        store._run(SPACE_INDEX)
    return "recreated the unique index allocations_space"


def _row_problem(row) -> str:
    """Why a row (:data:`COLUMNS`, then the SQLite types of ip and created) cannot be read, or ""."""
    from ..net import split_pool

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
