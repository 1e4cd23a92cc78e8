"""Leader election on a ``coordination.k8s.io/v1`` Lease, decided as client-go decides it.

Pure: :class:`Elector` is told what the Lease holds and the time, and says
what to write.  Read from kubernetes/client-go tools/leaderelection/leaderelection.go
@ 9a8caafaa5b520682d68111828b297eab42bcab8 (``tryAcquireOrRenew``, ``renew``, ``release``):

* An absent Lease is created holding us (``acquireTime`` = ``renewTime`` = now).
* Another holder's Lease expires ``leaseDurationSeconds`` after we last saw
  it *change*, on our own clock (never its ``renewTime``: clocks differ).
  Until then we wait; after, we take it over, ``leaseTransitions`` + 1.
* Our own Lease is renewed keeping ``acquireTime`` and ``leaseTransitions``.
* A leader that has not renewed for ``renew_deadline`` stops acting as one
  (client-go's ``RenewDeadline``), before anyone else may take over.
* Releasing (``ReleaseOnCancel``) writes an empty holder, so a standby takes
  over at once.
"""

from __future__ import annotations

from datetime import datetime, timezone


def micro_time(moment: datetime) -> str:
    """``metav1.MicroTime`` as Go writes it (RFC 3339, microseconds, ``Z``)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Elector:
    """One candidate's view.  ``step`` -> (``"create"`` | ``"update"`` | ``"wait"``, spec to write);
    after a write succeeds, ``written``."""

    def __init__(self, identity: str, lease_duration: float, renew_deadline: float) -> None:
        if not 0 < renew_deadline < lease_duration:
            raise ValueError("the renew deadline must be shorter than the lease duration")
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.observed = None  # the spec last seen or written
        self.observed_at = None  # our monotonic clock when it last changed
        self.renewed_at = None  # our monotonic clock when we last wrote ourselves as holder

    def _record(self, wall: datetime, acquire_time: str, transitions: int) -> dict:
        return {"holderIdentity": self.identity, "leaseDurationSeconds": max(1, int(self.lease_duration)),
                "acquireTime": acquire_time, "renewTime": micro_time(wall), "leaseTransitions": transitions}

    def step(self, current, wall: datetime, clock: float) -> tuple:
        """What to write, given the Lease's spec (None: no Lease), the wall time and our monotonic clock."""
        if current is None:
            return "create", self._record(wall, micro_time(wall), 0)
        if current != self.observed:
            self.observed, self.observed_at = dict(current), clock
        holder = current.get("holderIdentity") or ""
        if holder == self.identity:
            return "update", self._record(wall, current.get("acquireTime") or micro_time(wall),
                                          current.get("leaseTransitions") or 0)
        if holder and clock < self.observed_at + self.lease_duration:
            self.renewed_at = None
            return "wait", None
        return "update", self._record(wall, micro_time(wall), (current.get("leaseTransitions") or 0) + 1)

    def written(self, spec: dict, clock: float) -> None:
        """The spec from ``step`` (or ``release``) is in the Lease now."""
        self.observed, self.observed_at = dict(spec), clock
        self.renewed_at = clock if spec.get("holderIdentity") == self.identity else None

    def leading(self, clock: float) -> bool:
        """True while we hold the Lease and renewed it less than ``renew_deadline`` ago."""
        return self.renewed_at is not None and clock - self.renewed_at < self.renew_deadline

    def release(self):
        """The spec that gives the Lease up (client-go's ``release``), or None when we do not hold it."""
        if self.renewed_at is None:
            return None
        return {"holderIdentity": "", "leaseDurationSeconds": max(1, int(self.lease_duration)),
                "leaseTransitions": (self.observed or {}).get("leaseTransitions") or 0}
