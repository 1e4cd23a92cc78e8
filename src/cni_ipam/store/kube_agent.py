"""What the Kubernetes store does only in the node agent: read the pools from the agent's watched copy, write a
batch of IPPool claims, and check a claim decided on that copy.

Kept apart from :mod:`.kubernetes`, which a plugin process loads for each
command: a plugin process has no batches and no watched copy, so it never
loads this module.  In the agent, :class:`~.kubernetes.KubernetesStore`
reads an ADD's pools through :func:`parse` (from :mod:`.kube_cache`, whose
watch has a client of its own, :func:`watch_client`), calls
:func:`commit_batch` as the leader of one pool's batch (:mod:`.kube_batch`
decides, purely, which queued claims go in), and
:func:`check_cached_decision` after a claim whose ADD read the watched
copy.  These work on the store's own state, reads and writes, as the
methods they were.
"""

from __future__ import annotations

from ..kube import objects as ko
from ..kube.client import KubeError
from .base import Allocation, StoreError
from .kube_pools import annotation_ops, note_row, upstream
from .kubernetes import ATTEMPTS, GV, _pause


def parse(store, objects: dict) -> dict:
    """IPPool name -> Pool of the agent's copy, reusing what an earlier call parsed of unchanged objects."""
    pools = {}
    for name, obj in objects.items():
        try:
            pools[name] = store._parse(name, obj)
        except (ko.ObjectError, ValueError, IndexError):
            continue  # verify reports it; nothing here can allocate from it
    for name in [n for n in store._parsed if n not in objects]:
        del store._parsed[name]
    return pools


def watch_client(client):
    """A client of its own for the agent's IPPool watch (a watch holds its connection)."""
    from ..kube.client import KubeClient

    return KubeClient(client.settings, timeout=client.timeout, deadline=client.deadline)


def commit_batch(store, name: str, wants: list) -> None:
    """The leader's write of one batch of claims (:mod:`.kube_batch`): one patch of the pool as cached,
    every claim :func:`~.kube_batch.plan` lets through in it.  A conflict reads the pool again and, after
    a jittered pause, writes what is left; a refusal that is not a conflict (the pool unchanged) is
    retried claim by claim, so it reaches only the claim it is about."""
    from .kube_batch import COMMITTED, GONE, LOST, plan

    cached = store.batches.cached(name)
    pool = store._parse(name, cached) if cached is not None else store._pool(name)
    fresh = False  # a cached pool, or our own list: a held address is read again before it decides
    for attempt in range(ATTEMPTS):
        if pool is None:
            for want in wants:
                want.outcome = GONE
            return
        decided = plan(pool.holding, wants, fresh)
        if decided.recheck:  # held in the pool as cached: read it before losing or keeping a claim
            pool, fresh = _reread(store, name), True
            continue
        for want in decided.lost:
            want.outcome, want.pool = LOST, pool.obj
        for want in decided.done:
            want.outcome, want.pool = COMMITTED, pool.obj
        wants = decided.write
        if not wants:
            return
        extras = dict(pool.extras)
        extras.update((w.key, note_row(w.allocation)) for w in wants)
        ops = ko.pool_patch(pool.parsed, add={w.key: upstream(w.allocation) for w in wants})
        try:
            written = store._call(store.client.json_patch, GV, ko.IPPOOLS, name, ops + annotation_ops(pool, extras))
        except KubeError as exc:  # 404, 409, 422 (_call turned the others into StoreError)
            tested = pool.parsed.resource_version
            pool, fresh = _reread(store, name), True
            if exc.code != 404 and pool is not None and pool.parsed.resource_version == tested and len(wants) > 1:
                return _one_by_one(store, name, wants)  # not a conflict: refused for one claim's sake
            if exc.code != 404:
                _pause(store.client, attempt)
            continue
        except StoreError as exc:
            if not exc.retry and len(wants) > 1:
                return _one_by_one(store, name, wants)
            for want in wants:
                want.error = StoreError(str(exc), retry=exc.retry)
            return
        store.batches.seen(name, written)
        for want in wants:
            want.outcome, want.pool = COMMITTED, written
        return
    for want in wants:
        want.error = StoreError(f"IPPool {name} kept changing under {ATTEMPTS} attempts to claim "
                                f"{want.allocation.address}; try again", retry=True)


def _one_by_one(store, name: str, wants: list) -> None:
    for want in wants:
        commit_batch(store, name, [want])


def _reread(store, name: str):
    """The pool read afresh (None: gone), remembered here and in the agent's cache."""
    pool = store._fetch(name)
    store.batches.seen(name, pool.obj if pool is not None else None)
    return pool


def check_cached_decision(store, name: str, allocation: Allocation) -> None:
    """An ADD decided on the agent's copy found nothing held for its attachment; the claim's answer is the
    pool as committed, after anything written before this call.  If it shows the attachment (or its pod's
    interface) already held another address there (written by a plugin without the agent, or by Go
    whereabouts, that the watch had not delivered yet), give this claim back and raise StaleRead: the
    ADD is decided again on a fresh LIST, so it returns (or moves) what is held, as without the agent.
    Addresses the agent's other calls are claiming are left out: of two calls of one attachment at once,
    only one can see the other as done (each holds its ``claiming`` mark until it has looked)."""
    from .base import StaleRead
    from .kube_cache import held_elsewhere

    pool = (store._pools or {}).get(name)
    found = held_elsewhere(pool, allocation, store.batches.pending(name)) if pool is not None else []
    if not found:
        return
    store.release(allocation)
    store._distrust = True
    raise StaleRead(f"{allocation.container_id[:12]}/{allocation.ifname} already holds {found[0].address} in "
                    f"IPPool {name}, written after the agent's copy was read; deciding again on a fresh read")
