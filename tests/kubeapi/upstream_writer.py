"""Go whereabouts' allocation, reimplemented for tests: a second writer on the same IPPools as ours.

Follows k8snetworkplumbingwg/whereabouts v0.9.4 (3a262bd0cd873e13d9b379342f8251b852a89b8f) step by step:

* ``pkg/storage/kubernetes/ipam.go`` ``IPManagement``: every ADD and DEL runs
  under leader election (``newLeaderElector``) on the Lease named
  ``whereabouts`` in the pools' namespace, identity ``<podNamespace>/<podName>``,
  ``ReleaseOnCancel``; timings from ``pkg/types`` defaults (LeaseDuration
  1500 ms, RenewDeadline 1000 ms, RetryPeriod 500 ms).  The election is
  client-go's (tools/leaderelection/leaderelection.go: acquire every
  RetryPeriod with jitter factor 1.2, renew every RetryPeriod while leading,
  release by writing an empty holder), decided by :class:`cni_ipam.kube.leases.Elector`,
  which models it.
* ``IPManagementKubernetesUpdate``: LIST the pools (``Status``), then up to
  ``DatastoreRetries`` (100, ``pkg/storage/storage.go``) times: GET the pool
  (``getPool``: absent -> create it empty and retry), pick the address
  (``pkg/allocate/allocate.go`` ``AssignIP``: the pod's own if it has one,
  else the lowest free between the first and last usable address), GET its
  OverlappingRangeIPReservation (held for another pod: remember it as a dummy
  reservation and retry), ``SleepForRace``, then ``Update``: a JSON Patch of
  the allocations, led by a ``test`` of ``metadata.resourceVersion`` and a
  ``test`` of ``null`` before each ``add``; 422 Invalid -> retry.  After the
  loop: create the reservation (ADD) or delete it (DEL).
* ``toIPReservationList`` / ``toAllocationMap``: keys are read with
  ``strconv.ParseInt(key, 10, 64)`` (unreadable keys are skipped, so the
  patch drops them) and written back as ``%d``.

Where upstream goes on after an error it cannot retry (a failed patch that is
not 422, retries used up) this writer raises instead: the tests count such an
ADD as failed, as the runtime would see it.
"""

from __future__ import annotations

import ipaddress
import random
import re
import threading
import time
from datetime import datetime, timezone

from cni_ipam.kube.leases import Elector

GROUP = "/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces/{namespace}"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
LEASE_NAME = "whereabouts"  # newLeaderElector, without node slices
LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 1.5, 1.0, 0.5  # pkg/types DefaultLeader*
JITTER_FACTOR = 1.2  # client-go leaderelection.JitterFactor
DATASTORE_RETRIES = 100
INT64 = re.compile(r"[+-]?[0-9]+\Z")


class UpstreamError(Exception):
    """The ADD or DEL failed, as upstream's IPManagement would return an error."""


def normalize_range(cidr: str) -> str:
    """``normalizeRange``: ``:`` and ``/`` become ``-`` (a trailing ``:`` gets a ``0`` first)."""
    cidr = cidr + "0" if cidr.endswith(":") else cidr
    return cidr.replace(":", "-").replace("/", "-")


def normalize_ip(ip, network_name: str = "") -> str:
    """``NormalizeIP``: the reservation's name."""
    text = str(ip)
    text = (text + "0" if text.endswith(":") else text).replace(":", "-")
    return f"{network_name}-{text}" if network_name else text


def pool_name(cidr: str, network_name: str = "") -> str:
    """``IPPoolName`` without node slices."""
    return f"{network_name}-{normalize_range(cidr)}" if network_name else normalize_range(cidr)


def reservations_of(pool: dict) -> dict:
    """``toIPReservationList``: address -> allocation, keys read as Go's ParseInt reads them."""
    first = ipaddress.ip_interface(pool["spec"]["range"]).ip
    found = {}
    for key, value in (pool["spec"].get("allocations") or {}).items():
        if not INT64.match(key) or not -2 ** 63 <= int(key) < 2 ** 63:
            continue  # "allocations that are invalid int64s should be ignored"
        found[first + (int(key) % 2 ** 64)] = dict(value)
    return found


def allocation_map(reservations: dict, first) -> dict:
    """``toAllocationMap``: ``%d`` keys of the offsets from the range's first IP."""
    return {str(int(ip) - int(first)): value for ip, value in reservations.items()}


def update_patch(pool: dict, allocations: dict) -> list:
    """``KubernetesIPPool.Update``: the diff of the allocations (jsonpatch.CreatePatch), led by the tests."""
    old = pool["spec"].get("allocations") or {}
    diff = [{"op": "remove", "path": f"/spec/allocations/{k}"} for k in old if k not in allocations]
    diff += [{"op": "replace", "path": f"/spec/allocations/{k}", "value": v}
             for k, v in allocations.items() if k in old and old[k] != v]
    diff += [{"op": "add", "path": f"/spec/allocations/{k}", "value": v}
             for k, v in allocations.items() if k not in old]
    tests = [{"op": "test", "path": "/metadata/resourceVersion", "value": pool["metadata"]["resourceVersion"]}]
    tests += [{"op": "test", "path": op["path"], "value": None} for op in diff if op["op"] == "add"]
    return tests + diff


def lowest_free(cidr: str, reserved) -> "ipaddress._BaseAddress":
    """``IterateForAssignment`` without range_start/range_end/exclude: the lowest usable address not reserved."""
    network = ipaddress.ip_network(cidr, strict=False)
    first, last = int(network.network_address) + 1, int(network.broadcast_address) - (network.version == 4)
    for value in range(first, last + 1):
        ip = ipaddress.ip_address(value)
        if ip not in reserved:
            return ip
    raise UpstreamError(f"Could not allocate IP in range: {cidr}")


class UpstreamWriter:
    """One Go whereabouts plugin's view: ``add`` and ``delete`` for pods on ``server`` (a KubeAPIServer).

    ``race_pause``: called between reading the pool and patching it (upstream's ``SleepForRace``).
    Counters: ``lease_waits`` (acquire attempts that found the Lease held), ``retries`` (pool reads
    again after a 422 or a reservation held by another pod), ``held`` ([start, end] monotonic spans
    during which this writer held the Lease).
    """

    def __init__(self, server, namespace: str = "kube-system", network_name: str = "", overlapping: bool = True,
                 timings=(LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD)) -> None:
        self.server = server
        self.namespace = namespace
        self.network_name = network_name
        self.overlapping = overlapping
        self.timings = timings
        self.group = GROUP.format(namespace=namespace)
        self.lease_path = LEASES.format(namespace=namespace) + "/" + LEASE_NAME
        self.lease_waits = 0
        self.retries = 0
        self.held = []

    # -- API ------------------------------------------------------------------------------

    def _request(self, method, path, body=None, content_type="application/json"):
        return self.server.request(method, path, body, content_type=content_type)

    def _expect(self, answer, *codes):
        code, _, body = answer
        if code not in codes:
            raise UpstreamError(f"{code}: {body}")
        return code, body

    # -- leader election (client-go, decided by Elector) ------------------------------------

    def _try_acquire_or_renew(self, elector: Elector) -> bool:
        code, body = self._expect(self._request("GET", self.lease_path), 200, 404)
        wall, clock = datetime.now(timezone.utc), time.monotonic()
        action, spec = elector.step(body["spec"] if code == 200 else None, wall, clock)
        if action == "wait":
            return False
        if action == "create":
            obj = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                   "metadata": {"name": LEASE_NAME, "namespace": self.namespace}, "spec": spec}
            code, _ = self._expect(self._request("POST", self.lease_path.rsplit("/", 1)[0], obj), 201, 409)
        else:
            code, _ = self._expect(self._request("PUT", self.lease_path, dict(body, spec=spec)), 200, 409)
        if code == 409:
            return False  # another candidate wrote first
        elector.written(spec, clock)
        return True

    def _release(self, elector: Elector) -> None:
        spec = elector.release()
        if spec is None:
            return
        code, body = self._expect(self._request("GET", self.lease_path), 200, 404)
        if code == 200 and body["spec"].get("holderIdentity") == elector.identity:
            self._expect(self._request("PUT", self.lease_path, dict(body, spec=spec)), 200, 409)

    def _leading(self, identity: str, work):
        """``IPManagement``: acquire, run ``work`` while a renew loop keeps the Lease, release on return."""
        duration, deadline, period = self.timings
        elector = Elector(identity, duration, deadline)
        while not self._try_acquire_or_renew(elector):
            self.lease_waits += 1
            time.sleep(period + random.random() * JITTER_FACTOR * period)
        span = [time.monotonic(), None]
        stop = threading.Event()

        def renew():
            while not stop.wait(period):
                try:
                    self._try_acquire_or_renew(elector)
                except (OSError, UpstreamError):
                    pass  # client-go retries until RenewDeadline; the tests run no faults on leases

        renewer = threading.Thread(target=renew, daemon=True)
        renewer.start()
        try:
            return work()
        finally:
            stop.set()
            renewer.join()
            span[1] = time.monotonic()
            self._release(elector)
            self.held.append(span)

    # -- IPManagementKubernetesUpdate ------------------------------------------------------------

    def add(self, cidr: str, container_id: str, pod: str, ifname: str = "eth0", race_pause=None):
        """Allocate for ``pod`` (``namespace/name``): the address, as upstream's ADD returns it."""
        return self._leading(pod, lambda: self._update("add", cidr, container_id, pod, ifname, race_pause))

    def delete(self, cidr: str, container_id: str, pod: str, ifname: str = "eth0"):
        """Release what ``container_id``/``ifname`` holds: the address, or None when it held none."""
        return self._leading(pod, lambda: self._update("del", cidr, container_id, pod, ifname, None))

    def _get_pool(self, name: str, cidr: str):
        code, body = self._expect(self._request("GET", f"{self.group}/ippools/{name}"), 200, 404)
        if code == 200:
            return body
        obj = {"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "IPPool", "metadata": {"name": name},
               "spec": {"range": cidr, "allocations": {}}}
        self._expect(self._request("POST", f"{self.group}/ippools", obj), 201, 409)
        return None  # "the pool was just created -- allow retry"

    def _update(self, mode, cidr, container_id, pod, ifname, race_pause):
        self._expect(self._request("GET", f"{self.group}/ippools"), 200)  # Status: connectivity first
        name, dummies, skip_reservation, ip = pool_name(cidr, self.network_name), set(), False, None
        for _ in range(DATASTORE_RETRIES):
            pool = self._get_pool(name, cidr)
            if pool is None:
                continue
            first = ipaddress.ip_interface(pool["spec"]["range"]).ip
            reservations = reservations_of(pool)
            if mode == "add":
                own = [a for a, v in reservations.items() if v.get("podref") == pod and v.get("ifname", "") == ifname]
                ip = own[0] if own else lowest_free(cidr, set(reservations) | dummies)
                if own:
                    reservations[ip]["id"] = container_id
                else:
                    reservations[ip] = {"id": container_id, "podref": pod, "ifname": ifname}
                if self.overlapping:
                    code, body = self._expect(self._request(
                        "GET", f"{self.group}/overlappingrangeipreservations/{normalize_ip(ip, self.network_name)}"),
                        200, 404)
                    if code == 200 and body["spec"].get("podref") != pod:
                        dummies.add(ip)
                        self.retries += 1
                        continue
                    skip_reservation = code == 200
            else:
                mine = [a for a, v in reservations.items() if v.get("id") == container_id
                        and v.get("ifname", "") == ifname]
                if not mine:
                    return None  # "Do not fail if allocation was not found"
                ip = mine[0]
                del reservations[ip]
            if race_pause:
                race_pause()
            answer = self._request("PATCH", f"{self.group}/ippools/{name}",
                                   update_patch(pool, allocation_map(reservations, first)),
                                   content_type="application/json-patch+json")
            if answer[0] == 422:
                self.retries += 1
                continue
            self._expect(answer, 200)
            break
        else:
            raise UpstreamError(f"IPPool {name}: {DATASTORE_RETRIES} retries used up")
        if self.overlapping and not skip_reservation:
            path = f"{self.group}/overlappingrangeipreservations"
            if mode == "add":
                obj = {"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "OverlappingRangeIPReservation",
                       "metadata": {"name": normalize_ip(ip, self.network_name), "namespace": self.namespace},
                       "spec": {"podref": pod, "ifname": ifname}}
                self._expect(self._request("POST", path, obj), 201)
            else:
                self._expect(self._request("DELETE", f"{path}/{normalize_ip(ip, self.network_name)}"), 200)
        return str(ip)
