"""The stores (``base``, ``sqlite``, ``etcd``, ``kubernetes``); here, opening the one a config names
(:class:`cni_ipam.config.whereabouts.StoreSettings`), in the package itself since every command does.

Backends are imported only when opened, so a plugin process loads the one
it uses and no other (SQLite alone costs 4-5 ms per call).  Who keeps a
store open, and for how long, is the caller's choice: a plugin process
opens one per command (:class:`OpenPerCall`), the node agent keeps stores
open between calls (:class:`KeptOpen`).
"""

from __future__ import annotations


def open_store(settings, shared=None):
    """The store the settings name (raises StoreError when it cannot be opened or reached).  ``shared``: what
    the node agent's stores of these settings share, :class:`~cni_ipam.store.kube_batch.PoolBatches`
    (Kubernetes) or :class:`~cni_ipam.store.claims.Claims` (etcd); None: a store alone (the plugin)."""
    if settings.datastore == "etcd":
        from .etcd import EtcdStore
        from .etcd_client import EtcdClient

        client = EtcdClient(settings.endpoints, timeout=settings.timeout, deadline=max(3 * settings.timeout, 10.0),
                            username=settings.username, password=settings.password, ca_file=settings.ca_file,
                            cert_file=settings.cert_file, key_file=settings.key_file)
        return EtcdStore(client, settings.prefix, shared)
    if settings.datastore == "kubernetes":
        return _kubernetes(settings, shared)
    from ..trusted_paths import UntrustedPath, check_store_path
    from .base import StoreError

    try:
        check_store_path(settings.sqlite_path)
    except UntrustedPath as exc:
        raise StoreError(f"sqlite_path {settings.sqlite_path!r} refused: {exc}") from None
    except OSError as exc:
        raise StoreError(f"cannot open the SQLite store {settings.sqlite_path!r}: {exc.strerror or exc}") from None
    from .sqlite import SQLiteStore

    return SQLiteStore(settings.sqlite_path)


def _kubernetes(settings, batches=None):
    """The Kubernetes store; a kubeconfig not there (yet: the installer writes it) is worth a retry, one
    that does not parse is not."""
    from ..kube.client import KubeClient
    from ..kube.kubeconfig import KubeconfigError, load
    from .base import StoreError, StoreRefused
    from .kubernetes import KubernetesStore
    from ..oslite import exists

    try:
        kube = load(settings.kubeconfig)
    except KubeconfigError as exc:
        if not exists(settings.kubeconfig):
            raise StoreError(f"{exc} (ipam.kubernetes.kubeconfig)", retry=True) from None
        raise StoreRefused(f"{exc} (ipam.kubernetes.kubeconfig)") from None
    return KubernetesStore(KubeClient(kube, timeout=settings.timeout, deadline=max(3 * settings.timeout, 10.0)),
                           batches)


def never_created(settings) -> bool:
    """True when nothing was ever stored where the settings point (an embedded SQLite file that is not there).

    Commands that only read or free (DEL, the reconciler, the admin
    commands) then have nothing to do, and must not create the store.
    """
    from ..oslite import exists

    return settings.datastore == "sqlite" and not exists(settings.sqlite_path)


class OpenPerCall:
    """A plugin process: open the store for one command, close it after; with ``exits``, a process that ends
    with ``_exit`` after this command (an installed plugin): then the store is left as such a process leaves
    it (:meth:`~cni_ipam.store.base.Store.leave_open`)."""

    def __init__(self, exits: bool = False) -> None:
        self.exits = exits

    def open(self, settings):
        return open_store(settings)

    def done(self, store) -> None:
        if self.exits:
            store.leave_open()
        else:
            store.close()


class KeptOpen:
    """The node agent: stores stay open between calls, each lent to one call at a time.

    ``open`` lends an idle store opened with equal settings, or opens one;
    ``done`` takes it back.  A store is never used by two calls at once, so no
    backend needs to be thread-safe (a SQLite connection may move between
    threads, not be shared by them; an etcd client keeps one connection per
    endpoint).  At most ``idle`` stores wait between calls, across all
    settings: the least recently used is closed first, so the agent's open
    files stay bounded however many networks it serves.  A stale store (its
    file replaced meanwhile, :meth:`~cni_ipam.store.base.Store.stale`) is
    closed and opened anew.  ``opened(settings)`` is called after each open.

    Stores opened with equal settings share what their calls claim
    (:class:`~cni_ipam.store.claims.Claims`: an address one call claims, the
    others pass by) and the allocator's memory; Kubernetes ones share it as
    :class:`~cni_ipam.store.kube_batch.PoolBatches`: claims that calls make
    at once on one IPPool are written in one patch, on the pool as cached,
    and ADDs read the IPPools from a copy a LIST+WATCH keeps current
    (:mod:`~cni_ipam.store.kube_cache`) instead of listing them each time.
    SQLite stores share nothing (their calls are serialized anyway).
    """

    def __init__(self, idle: int = 16, opened=None, note=None) -> None:
        import threading

        self.idle = idle
        self.opened = opened or (lambda settings: None)
        self.note = note  # note(event, **fields): the agent's log, for the IPPool watches
        self._lock = threading.Lock()
        self._waiting = []  # (settings key, store), least recently used first
        self._keys = {}  # id(store) -> settings key, for every store lent out or waiting
        self._shared = {}  # settings key -> Claims (etcd) or PoolBatches (Kubernetes)

    def open(self, settings):
        key = tuple(tuple(v) if isinstance(v, list) else v for v in (getattr(settings, n) for n in settings.__slots__))
        store = None
        with self._lock:
            for i in reversed(range(len(self._waiting))):  # the most recently used first
                if self._waiting[i][0] == key:
                    store = self._waiting.pop(i)[1]
                    break
        if store is not None and store.stale():
            self._forget(store)
            store = None
        if store is None:
            store = open_store(settings, self._shared_for(key, settings.datastore))
            self.opened(settings)
            with self._lock:
                self._keys[id(store)] = key
        return store

    def _shared_for(self, key, datastore: str):
        """What the stores of these settings share (kept while the agent runs): the claims under way and just
        made, and for Kubernetes the claim queues and the pool cache (a few pool objects per network)."""
        if datastore == "kubernetes":
            from .kube_batch import PoolBatches as shared
        elif datastore == "etcd":
            from .claims import Claims as shared
        else:
            return None
        with self._lock:
            if key not in self._shared:
                self._shared[key] = shared(watch=True, note=self.note) if datastore == "kubernetes" else shared()
            return self._shared[key]

    def done(self, store) -> None:
        """Back to wait for the next call with the same settings (without what it read for this one: a CHECK
        reads outside any transaction); the least recently used beyond ``idle`` closes."""
        store.forget_reads()
        with self._lock:
            self._waiting.append((self._keys[id(store)], store))
            evicted = self._waiting.pop(0)[1] if len(self._waiting) > self.idle else None
        if evicted is not None:
            self._forget(evicted)

    def close(self) -> None:
        """Close every waiting store and stop the IPPool watches (the agent stops)."""
        with self._lock:
            waiting, self._waiting = self._waiting, []
            shared, self._shared = list(self._shared.values()), {}
        for _, store in waiting:
            self._forget(store)
        for each in shared:
            each.close()

    def _forget(self, store) -> None:
        with self._lock:
            del self._keys[id(store)]
        store.close()
