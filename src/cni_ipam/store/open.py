"""Opening the store a config names (:class:`cni_ipam.config.datastore.StoreSettings`).

Backends are imported only when opened, so a plugin process loads the one
it uses and no other (SQLite alone costs 4-5 ms per call).  Who keeps a
store open, and for how long, is the caller's choice: a plugin process
opens one per command (:class:`OpenPerCall`), the node agent keeps each
thread's stores open between calls (:class:`KeptPerThread`).
"""

from __future__ import annotations


def open_store(settings):
    """The store the settings name (raises StoreError when it cannot be opened or reached)."""
    if settings.datastore == "etcd":
        from .etcd import EtcdStore
        from .etcd_client import EtcdClient

        client = EtcdClient(settings.endpoints, timeout=settings.timeout, deadline=max(3 * settings.timeout, 10.0),
                            username=settings.username, password=settings.password, ca_file=settings.ca_file,
                            cert_file=settings.cert_file, key_file=settings.key_file)
        return EtcdStore(client, settings.prefix)
    if settings.datastore == "kubernetes":
        return _kubernetes(settings)
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


def _kubernetes(settings):
    """The Kubernetes store; a kubeconfig not there (yet: the installer writes it) is worth a retry, one
    that does not parse is not."""
    import os

    from ..kube.client import KubeClient
    from ..kube.kubeconfig import KubeconfigError, load
    from .base import StoreError, StoreRefused
    from .kubernetes import KubernetesStore

    try:
        kube = load(settings.kubeconfig)
    except KubeconfigError as exc:
        if not os.path.exists(settings.kubeconfig):
            raise StoreError(f"{exc} (ipam.kubernetes.kubeconfig)", retry=True) from None
        raise StoreRefused(f"{exc} (ipam.kubernetes.kubeconfig)") from None
    return KubernetesStore(KubeClient(kube, timeout=settings.timeout, deadline=max(3 * settings.timeout, 10.0)))


def never_created(settings) -> bool:
    """True when nothing was ever stored where the settings point (an embedded SQLite file that is not there).

    Commands that only read or free (DEL, the reconciler, the admin
    commands) then have nothing to do, and must not create the store.
    """
    import os

    return settings.datastore == "sqlite" and not os.path.exists(settings.sqlite_path)


class OpenPerCall:
    """A plugin process: open the store for one command, close it after."""

    def open(self, settings):
        return open_store(settings)

    def done(self, store) -> None:
        store.close()


class KeptPerThread:
    """The node agent: each thread keeps the stores it opened instead of closing them after a call.

    One per thread because a SQLite connection belongs to the thread that
    opened it; the agent serves each connection on a thread of its own.
    """

    def __init__(self) -> None:
        import threading

        self._local = threading.local()

    def open(self, settings):
        stores = self._local.__dict__.setdefault("stores", {})
        key = tuple(tuple(v) if isinstance(v, list) else v for v in (getattr(settings, n) for n in settings.__slots__))
        if key not in stores:
            stores[key] = open_store(settings)
        return stores[key]

    def done(self, store) -> None:
        """Kept open for the thread's next call."""
