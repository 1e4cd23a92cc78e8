"""All leases: one :class:`~.worker.Worker` per attachment, and the daemon's answers to add, check, del, gc, list."""

from __future__ import annotations

import logging
import threading
import time

from ...cni.errors import INVALID_CONFIG, TRY_AGAIN_LATER, UNKNOWN_CONTAINER
from .. import client as dhcp_client
from .. import netio, netns
from ..lease import Lease, LeaseError, cni_view
from .logs import emit
from .requests import RequestError, Spec, netns_refused, text_field
from .worker import Worker, mono_of

ADD_MARGIN = 3.0    # link set-up and carrier wait, on top of -timeout
RELEASE_WAIT = 3.0  # how long DEL waits for the RELEASE to be sent


class Manager:
    """The workers by attachment key; ``daemon`` is the :class:`~.server.Daemon` whose parts they share."""

    def __init__(self, daemon):
        self.d = daemon
        self.lock = threading.Lock()
        self.workers = {}  # key -> Worker

    def finished(self, worker: Worker) -> None:
        """A thread ended: forget it unless it holds what CHECK should still report (expired, lost)."""
        with self.lock:
            if self.workers.get(worker.spec.key) is worker and (worker.error or worker.dropped or (
                    worker.client is not None and worker.client.state in (dhcp_client.RELEASED,))):
                del self.workers[worker.spec.key]

    def forget(self, worker: Worker) -> None:
        with self.lock:
            if self.workers.get(worker.spec.key) is worker:
                del self.workers[worker.spec.key]

    def count_by_state(self) -> dict:
        with self.lock:
            workers = list(self.workers.values())
        counts = {}
        for worker in workers:
            counts[worker.state] = counts.get(worker.state, 0) + 1
        return counts

    def resume_all(self) -> int:
        resumed = 0
        for path, record, error in self.d.store.load_all():
            if record is None:
                emit(logging.ERROR, "lease.unreadable", f"lease file {path} cannot be read ({error}): moved aside")
                self.d.store.quarantine(path)
                continue
            try:
                spec = Spec.from_record(record["spec"])
                lease = Lease.from_record(record["lease"], mono_of)
                bytes.fromhex(record["mac"])
            except (KeyError, TypeError, ValueError, AttributeError, LeaseError) as exc:
                emit(logging.ERROR, "lease.unreadable", f"lease file {path} is not valid ({exc}): moved aside")
                self.d.store.quarantine(path)
                continue
            worker = Worker(self.d, spec, lease, record)
            with self.lock:
                self.workers[spec.key] = worker
            worker.start()
            resumed += 1
        return resumed

    def add(self, request: dict) -> dict:
        spec = Spec.from_request(request)
        try:
            identity, mac = netio.link_identity(self.d.settings.netns_path(spec.netns), spec.ifname)
        except netns.Refused as exc:
            raise netns_refused(spec.netns, exc) from None
        except netio.Gone as exc:
            raise RequestError(UNKNOWN_CONTAINER, str(exc), "the pod's network namespace or interface is missing") \
                from None
        except OSError as exc:  # a passing shortage (EMFILE, ENOMEM): not a verdict on the request
            raise RequestError(TRY_AGAIN_LATER, f"dhcp: cannot open CNI_NETNS {spec.netns!r}: {exc}") from None
        for _ in range(3):  # more rounds only if an existing lease ended or was replaced while we looked
            created = False
            replaced = None
            with self.lock:
                worker = self.workers.get(spec.key)
                if worker is not None and worker.holding() and (
                        worker.spec.netns != spec.netns or worker.mac != mac
                        or (worker.identity and tuple(worker.identity) != identity)):
                    # The same attachment on another interface (a new namespace, or a new
                    # link): that lease is of no use.  No RELEASE: it carries the same client
                    # identifier, so a late one would free the lease acquired now.
                    del self.workers[spec.key]
                    replaced = worker
            if replaced is not None:
                replaced.command("stop")
                replaced.finished.wait(RELEASE_WAIT)
                self.d.store.delete(spec.key)
                emit(logging.INFO, "lease.replaced", "the attachment's interface changed: acquiring afresh",
                     **spec.fields())
                continue
            with self.lock:
                worker = self.workers.get(spec.key)
                if worker is None or worker.finished.is_set() or worker.state in dhcp_client.TERMINAL:
                    worker = Worker(self.d, spec)
                    self.workers[spec.key] = worker
                    worker.start()
                    created = True
            if not worker.settled.wait(self.d.settings.timeout + ADD_MARGIN):
                raise RequestError(TRY_AGAIN_LATER, f"dhcp: no lease for {spec.ifname} within "
                                                    f"{self.d.settings.timeout + ADD_MARGIN:g}s")
            if worker.holding():
                try:
                    return {"ok": True, "lease": cni_view(worker.client.lease)}
                except LeaseError as exc:
                    self.release(request)
                    raise RequestError(TRY_AGAIN_LATER, f"dhcp: {exc}", "check the DHCP server's options") from None
            if worker.error is not None:
                self.forget(worker)
                code, msg, details = worker.error
                raise RequestError(code, msg, details)
            if not created and (worker.dropped or worker.state in dhcp_client.TERMINAL):
                continue  # it ended (expired) between our look and now: acquire afresh
            raise RequestError(TRY_AGAIN_LATER, f"dhcp: the lease for {spec.key} ended while it was acquired "
                                                f"({worker.state})")
        raise RequestError(TRY_AGAIN_LATER, f"dhcp: no lease for {spec.key}")

    def check(self, request: dict) -> dict:
        spec = Spec.from_request(request, with_options=False)
        with self.lock:
            worker = self.workers.get(spec.key)
        if worker is None:
            raise RequestError(UNKNOWN_CONTAINER, f"dhcp: no DHCP lease is held for {spec.key}",
                               "the daemon never got one, or it was released")
        if worker.holding():
            try:
                return {"ok": True, "lease": cni_view(worker.client.lease), "state": worker.state}
            except LeaseError as exc:
                raise RequestError(TRY_AGAIN_LATER, f"dhcp: {exc}", "check the DHCP server's options") from None
        if worker.state in (dhcp_client.INIT, dhcp_client.SELECTING, dhcp_client.REQUESTING):
            raise RequestError(TRY_AGAIN_LATER, f"dhcp: the lease for {spec.key} is still being acquired")
        reason = worker.dropped or worker.last_reason or worker.state
        raise RequestError(UNKNOWN_CONTAINER, f"dhcp: the lease for {spec.key} is {worker.state}: {reason}")

    def release(self, request: dict) -> dict:
        spec = Spec.from_request(request, with_options=False)
        with self.lock:
            worker = self.workers.pop(spec.key, None)
        if worker is None:
            self.d.store.delete(spec.key)
            return {"ok": True, "released": False, "note": f"no lease was held for {spec.key}"}
        worker.command("release")
        worker.finished.wait(RELEASE_WAIT)
        self.d.store.delete(spec.key)
        note = worker.release_note or ("" if worker.release_sent else "no lease was held")
        return {"ok": True, "released": worker.release_sent, "note": note}

    def gc(self, request: dict) -> dict:
        network = text_field(request, "network")
        valid = request.get("valid")
        if not isinstance(valid, list):
            raise RequestError(INVALID_CONFIG, "gc: 'valid' must be a list of [containerID, ifname]")
        keep = {(v[0], v[1]) for v in valid if isinstance(v, list) and len(v) == 2}
        with self.lock:
            doomed = [w for w in self.workers.values()
                      if w.spec.network == network and (w.spec.container_id, w.spec.ifname) not in keep]
        released = []
        for worker in doomed:
            self.release({"containerID": worker.spec.container_id, "network": network,
                          "ifname": worker.spec.ifname})
            released.append(worker.spec.key)
        return {"ok": True, "released": released}

    def listing(self) -> dict:
        with self.lock:
            workers = list(self.workers.values())
        return {"ok": True, "leases": [w.snapshot() for w in workers]}

    def stop_all(self) -> None:
        with self.lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.command("stop")
        deadline = time.monotonic() + 5
        for worker in workers:
            worker.finished.wait(max(0.0, deadline - time.monotonic()))
