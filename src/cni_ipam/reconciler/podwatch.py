"""Watching the pods of this node (``fieldSelector=spec.nodeName=<node>``), as an informer does, in a thread.

Every event goes to a handler (:class:`~.podfree.PodFreer`).  The watch
is kept the way client-go's reflector keeps one
(kubernetes/client-go tools/cache/reflector.go: list, then watch from the
list's resourceVersion):

* it **resumes** from the last resourceVersion it saw after a dropped
  connection or an API server restart, so the events in between arrive;
* a watch whose version was compacted away is answered with an ``ERROR``
  event holding a 410 ``Expired`` Status: it then **relists**, and a pod
  it knew that the new list lacks was deleted meanwhile: the handler gets
  it as ``DELETED``, with its last known state (client-go's
  ``DeletedFinalStateUnknown``), so no deletion is missed;
* on any other error it **backs off**: exponential, jittered, capped;
* a deletion it cannot see at all (the process was down) is the next cron
  run's to find: that run judges every allocation.

lightkube's own retry relists on 410 without reporting the pods lost, so
this loop handles errors itself and asks lightkube only for single
watches.
"""

from __future__ import annotations

import random
import threading

from .podgone import DELETED

EXPIRED = 410


class Backoff:
    """Delays after consecutive failures: ``base`` doubling up to ``cap``, each taken at 50-100 % at random
    so that the reconcilers of many nodes do not come back to a restarted API server at the same instant."""

    def __init__(self, base: float = 0.5, cap: float = 30.0, random_fraction=random.random) -> None:
        self.base = base
        self.cap = cap
        self.random_fraction = random_fraction
        self.failures = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * 2 ** self.failures)
        self.failures += 1
        return delay * (0.5 + self.random_fraction() / 2)

    def reset(self) -> None:
        self.failures = 0


def expired(exc: Exception) -> bool:
    """A 410 from the API: the resourceVersion is older than the last compaction."""
    status = getattr(exc, "status", None)
    return getattr(status, "code", None) == EXPIRED


class PodWatch:
    """Lists, then watches, the pods on ``node``; ``handle(kind, PodView)`` gets each event."""

    def __init__(self, client, node: str, handle, log, metrics=None, backoff: Backoff | None = None,
                 server_timeout: int = 300, chunk_size: int = 500) -> None:
        self.client = client  # a lightkube.Client of its own: the watch holds one connection open
        self.node = node
        self.handle = handle
        self.log = log
        self.metrics = metrics
        self.backoff = backoff or Backoff()
        self.server_timeout = server_timeout
        self.chunk_size = chunk_size
        self.known = {}  # uid -> PodView, as last seen
        self.version = None  # resourceVersion to resume from; None: list first

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name="pod-watch", daemon=True)
        thread.start()
        return thread

    def run(self, stop: threading.Event) -> None:
        self.log("pod-watch-started", f"watching the pods of node {self.node}", node=self.node)
        while not stop.is_set():
            try:
                if self.version is None:
                    self.relist()
                self.follow(stop)
            except Exception as exc:  # noqa: BLE001 -- the watch outlives any error
                if stop.is_set():
                    break
                if expired(exc):
                    self._count("watch_relists")
                    self.log("pod-watch-expired", f"the watch from resourceVersion {self.version} expired (410: "
                             f"compacted); listing the pods of node {self.node} again", node=self.node,
                             resource_version=self.version)
                    self.version = None
                    continue
                delay = self.backoff.next()
                self._count("watch_errors")
                self.log("pod-watch-error", f"the pod watch failed: {exc}; trying again in {delay:.1f}s from "
                         f"resourceVersion {self.version}", level="warning", error=str(exc),
                         error_type=type(exc).__name__, retry_in_seconds=round(delay, 3),
                         resource_version=self.version)
                stop.wait(delay)
        self.log("pod-watch-stopped", f"stopped watching the pods of node {self.node}", node=self.node)

    def relist(self) -> None:
        """List the node's pods; the ones known before and not listed now were deleted unseen."""
        from lightkube.resources.core_v1 import Pod

        from .liveness import PodView

        listing = self.client.list(Pod, namespace="*", fields={"spec.nodeName": self.node},
                                   chunk_size=self.chunk_size)
        listed = {}
        for pod in listing:
            view = PodView.from_pod(pod)
            listed[view.uid] = view
        missed = [view for uid, view in self.known.items() if uid not in listed]
        self.known, self.version = listed, listing.resourceVersion
        self.backoff.reset()
        self.log("pod-watch-listed", f"listed {len(listed)} pods of node {self.node} at resourceVersion "
                 f"{self.version}; {len(missed)} known before are gone", node=self.node, pods=len(listed),
                 missed=[view.ref for view in missed], resource_version=self.version)
        for view in missed:
            self._deliver(DELETED, view)
        for view in listed.values():  # one that finished or was marked for deletion meanwhile
            self._deliver("ADDED", view)

    def follow(self, stop: threading.Event) -> None:
        """Watch from :attr:`version` until stopped (lightkube starts a new request when the server ends one)."""
        from lightkube.resources.core_v1 import Pod

        from .liveness import PodView

        events = self.client.watch(Pod, namespace="*", fields={"spec.nodeName": self.node},
                                   resource_version=self.version, server_timeout=self.server_timeout)
        for kind, pod in events:
            self.version = pod.metadata.resourceVersion
            self.backoff.reset()
            if kind in ("ADDED", "MODIFIED", DELETED):
                view = PodView.from_pod(pod)
                if kind == DELETED:
                    self.known.pop(view.uid, None)
                else:
                    self.known[view.uid] = view
                self._deliver(kind, view)
            if stop.is_set():
                return

    def _deliver(self, kind: str, view) -> None:
        try:
            self.handle(kind, view)
        except Exception as exc:  # noqa: BLE001 -- one event's failure must not stop the others
            self.log("pod-watch-handler-error", f"handling {kind} of pod {view.ref} failed: {exc}", level="error",
                     pod=view.ref, error=str(exc), error_type=type(exc).__name__)

    def _count(self, name: str) -> None:
        if self.metrics is not None:
            getattr(self.metrics, name).inc()
