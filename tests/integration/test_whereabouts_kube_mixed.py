"""Our ``whereabouts`` executables and Go whereabouts writers on the same IPPool at once.

The Go writers are ``kubeapi.upstream_writer.UpstreamWriter``: upstream's
algorithm step by step (k8snetworkplumbingwg/whereabouts v0.9.4,
3a262bd0cd873e13d9b379342f8251b852a89b8f: pkg/storage/kubernetes/ipam.go
``IPManagement`` and ``IPManagementKubernetesUpdate``, pkg/allocate/allocate.go
``AssignIP``): the Lease ``whereabouts``, GET the pool, the lowest free
address, JSON Patch with a ``test`` of ``resourceVersion``, then the
OverlappingRangeIPReservation, the Lease given back.

Ours: 4 simulated nodes (``NODENAME`` differs) x 8 plugin processes, each
doing ROUNDS ADDs one after another.  A first Go writer takes the Lease
before our first round and keeps it, between its read of the pool and its
patch (upstream's ``SleepForRace``), until every process has finished its
first ADD: our writers take no Lease, so none waits for it, and the Go
writer's patch, now stale, fails its ``test`` and is retried on a fresh
read.  A second Go writer waits for the Lease meanwhile, then both allocate
in turn while our later rounds run.
"""

from __future__ import annotations

import ipaddress
import threading
import time

from kube_nodes import Node, ips, pools, reservations
from kubeapi.upstream_writer import LEASE_NAME, UpstreamError, UpstreamWriter

RANGE = "10.90.0.0/24"
POOL = "10.90.0.0-24"
NODES, PER_NODE, ROUNDS = 4, 8, 3


def test_go_whereabouts_writers_and_ours_hand_out_no_address_twice(bin_dir, kube_api, tmp_path):
    nodes = [Node(bin_dir, kube_api, tmp_path / f"node{n}", name=f"node-{n}", env={"NODENAME": f"node-{n}"})
             for n in range(NODES)]
    lock = threading.Lock()
    ours = []  # (round, cid, start, end, CNICall)
    go = {}  # cid -> address, Go writers' successful ADDs
    go_failed = []  # (cid, error): ADDs upstream fails (its DEL then ran, as the runtime's would)
    first_round = {"left": NODES * PER_NODE}
    first_round_done, lease_taken, ours_done = threading.Event(), threading.Event(), threading.Event()

    def our_slot(node, slot):
        lease_taken.wait(30)
        for r in range(ROUNDS):
            cid = f"{node.env['NODENAME']}-p{slot}-r{r}"
            start = time.monotonic()
            call = node.run("ADD", node.net(range=RANGE), cid=cid, args=f"K8S_POD_NAMESPACE=ns;K8S_POD_NAME={cid}")
            with lock:
                ours.append((r, cid, start, time.monotonic(), call))
                if r == 0:
                    first_round["left"] -= 1
                    if not first_round["left"]:
                        first_round_done.set()

    def go_writer(writer, tag, hold):
        n = 0
        while n < 3 or not ours_done.is_set():
            cid, pod = f"go-{tag}-{n}", f"ns/go-{tag}-{n}"

            def race_pause():
                if hold and n == 0:
                    lease_taken.set()  # we hold the Lease and have read the pool: let ours go
                    assert first_round_done.wait(60)

            try:
                address = writer.add(RANGE, cid, pod, race_pause=race_pause)
                with lock:
                    go[cid] = address
            except UpstreamError as exc:
                go_failed.append((cid, str(exc)))
                for _ in range(3):  # the runtime's DEL after a failed ADD, retried while it fails
                    try:
                        writer.delete(RANGE, cid, pod)
                        break
                    except UpstreamError:
                        continue
            n += 1

    holder, waiter = UpstreamWriter(kube_api), UpstreamWriter(kube_api)
    threads = [threading.Thread(target=go_writer, args=(holder, "a", True)),
               threading.Thread(target=go_writer, args=(waiter, "b", False))]
    threads[0].start()
    assert lease_taken.wait(30)
    threads[1].start()
    slots = [threading.Thread(target=our_slot, args=(node, p)) for node in nodes for p in range(PER_NODE)]
    for thread in slots:
        thread.start()
    for thread in slots:
        thread.join()
    ours_done.set()
    for thread in threads:
        thread.join(120)

    # Our writers were never blocked by the Go writer's Lease: every first-round ADD ran start to end while
    # the first Go writer held it (its Lease span covers them), and none failed.
    hold = holder.held[0]
    first = [(start, end) for r, _, start, end, _ in ours if r == 0]
    assert len(first) == NODES * PER_NODE and all(hold[0] < start and end < hold[1] for start, end in first)
    assert holder.retries >= 1, "the Go writer's stale patch was not refused"
    assert waiter.lease_waits >= 1, "the second Go writer never waited for the Lease"
    code, _, lease = kube_api.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{LEASE_NAME}")
    assert code == 200 and lease["spec"]["holderIdentity"] == ""  # given back (ReleaseOnCancel)
    # Go's ADDs that failed: only on our transient reservation of the address it had just won (see below).
    assert all("AlreadyExists" in error for _, error in go_failed), go_failed

    # Every writer's results: ours succeeded, or (on 2 loaded cores, a claim outrun by the other writers every
    # time it tried) failed with code 11 holding nothing (the pool check below); no address twice across writers.
    won = {cid: ips(call.output)[0] for _, cid, _, _, call in ours if call.ok}
    gave_up = [call for *_, call in ours if not call.ok]
    assert all(call.output and call.output["code"] == 11 for call in gave_up), gave_up
    assert len(gave_up) <= len(ours) // 10, gave_up
    assert len(go) + len(go_failed) >= 6
    everyone = list(won.values()) + list(go.values())
    assert len(set(everyone)) == len(everyone), "an address was handed out twice"
    # The final IPPool holds exactly every success (Go's failed ADDs were undone by their DEL).
    allocations = pools(kube_api)[POOL]["spec"]["allocations"]
    held = {v["id"]: str(ipaddress.ip_address("10.90.0.0") + int(k)) for k, v in allocations.items()}
    assert held == {**won, **go}
    # Reservations: none that no allocation backs.  One may be missing only where Go whereabouts made it so:
    # a Go writer that wins the pool while our claim's reservation of that address still exists fails to
    # create its own (409), its ADD fails, and its DEL deletes the reservation by name, whoever's it is.
    missing = sorted(set(everyone) - set(reservations(kube_api)))
    assert set(reservations(kube_api)) <= set(everyone), "a reservation no allocation backs"
    assert not missing or go_failed, missing
    print(f"ours {len(won)}, Go {len(go)} (failed {len(go_failed)}: {go_failed[:2]}), "
          f"Go retries {holder.retries + waiter.retries}, Lease waits {holder.lease_waits + waiter.lease_waits}")
