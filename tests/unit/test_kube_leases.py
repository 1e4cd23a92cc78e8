"""Leader election decisions, as client-go's tryAcquireOrRenew makes them
(kubernetes/client-go tools/leaderelection/leaderelection.go @ 9a8caafaa5b520682d68111828b297eab42bcab8)."""

from datetime import datetime, timezone

import pytest

from cni_ipam.kube.leases import Elector, micro_time

T0 = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)


def test_micro_time_is_gos_rfc3339_with_microseconds():
    assert micro_time(T0) == "2024-05-06T07:08:09.123456Z"


def test_an_absent_lease_is_created_holding_us():
    me = Elector("me", 15, 10)
    action, spec = me.step(None, T0, 100.0)
    assert action == "create"
    assert spec == {"holderIdentity": "me", "leaseDurationSeconds": 15, "acquireTime": micro_time(T0),
                    "renewTime": micro_time(T0), "leaseTransitions": 0}
    assert not me.leading(100.0)
    me.written(spec, 100.0)
    assert me.leading(109.9) and not me.leading(110.0)  # the renew deadline


def test_renewing_keeps_acquire_time_and_transitions():
    me = Elector("me", 15, 10)
    held = {"holderIdentity": "me", "leaseDurationSeconds": 15, "acquireTime": "A", "renewTime": "R",
            "leaseTransitions": 4}
    action, spec = me.step(held, T0, 5.0)
    assert action == "update" and spec["acquireTime"] == "A" and spec["leaseTransitions"] == 4
    assert spec["renewTime"] == micro_time(T0)


def test_another_holder_is_waited_for_until_the_lease_expires_on_our_clock():
    me = Elector("me", 15, 10)
    theirs = {"holderIdentity": "them", "leaseDurationSeconds": 15, "acquireTime": "A",
              "renewTime": "2000-01-01T00:00:00.000000Z", "leaseTransitions": 2}  # an old renewTime does not count
    assert me.step(theirs, T0, 100.0) == ("wait", None)
    assert me.step(dict(theirs), T0, 114.9) == ("wait", None)  # unchanged since 100.0
    renewed = {**theirs, "renewTime": "later"}
    assert me.step(renewed, T0, 114.95) == ("wait", None)  # it changed: the 15 s start again
    assert me.step(renewed, T0, 129.9) == ("wait", None)
    action, spec = me.step(renewed, T0, 130.0)
    assert action == "update" and spec["holderIdentity"] == "me" and spec["leaseTransitions"] == 3
    assert spec["acquireTime"] == micro_time(T0)


def test_a_released_lease_is_taken_at_once_and_release_gives_ours_up():
    me = Elector("me", 15, 10)
    action, spec = me.step({"holderIdentity": "", "leaseDurationSeconds": 15, "leaseTransitions": 7}, T0, 1.0)
    assert action == "update" and spec["leaseTransitions"] == 8
    me.written(spec, 1.0)
    assert me.release() == {"holderIdentity": "", "leaseDurationSeconds": 15, "leaseTransitions": 8}
    me.written(me.release(), 2.0)
    assert not me.leading(2.0) and me.release() is None


def test_losing_the_lease_stops_leading():
    me = Elector("me", 15, 10)
    me.written(me.step(None, T0, 0.0)[1], 0.0)
    assert me.step({"holderIdentity": "them", "leaseTransitions": 1}, T0, 1.0) == ("wait", None)
    assert not me.leading(1.0)


def test_the_renew_deadline_must_be_shorter_than_the_lease():
    with pytest.raises(ValueError):
        Elector("me", 10, 10)
