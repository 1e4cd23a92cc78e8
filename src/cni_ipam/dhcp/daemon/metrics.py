"""The daemon's counters, and the Prometheus endpoint that reads them (when a metrics port is given)."""

from __future__ import annotations

import threading

from .. import client as dhcp_client


class Metrics:
    """Counters the daemon keeps; exported by prometheus_client when a metrics port is given."""

    def __init__(self):
        self.lock = threading.Lock()
        self.events = {}
        self.renew_failures = 0
        self.acquire_seconds = []

    def event(self, kind: str) -> None:
        with self.lock:
            self.events[kind] = self.events.get(kind, 0) + 1
            if kind in ("rebinding", "expired", "nak"):
                self.renew_failures += 1

    def acquired(self, seconds: float) -> None:
        with self.lock:
            self.acquire_seconds.append(seconds)
            del self.acquire_seconds[:-1000]

    def serve(self, manager, address: str, port: int):
        """Start prometheus_client's HTTP server with a collector reading this object and the manager."""
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        metrics = self

        class Collector:
            def collect(self):
                states = manager.count_by_state()
                active = GaugeMetricFamily("cni_ipam_dhcp_leases", "Leases the daemon keeps, by client state",
                                           labels=["state"])
                for state in dhcp_client.TRANSITIONS:
                    active.add_metric([state], states.get(state, 0))
                yield active
                yield GaugeMetricFamily("cni_ipam_dhcp_active_leases", "Leases held (bound, renewing or rebinding)",
                                        value=sum(states.get(s, 0) for s in dhcp_client.HOLDING))
                with metrics.lock:
                    failures = metrics.renew_failures
                    events = dict(metrics.events)
                    samples = list(metrics.acquire_seconds)
                yield CounterMetricFamily("cni_ipam_dhcp_renew_failures", "Renewals that failed: rebinding "
                                          "started, or the lease expired or was refused", value=failures)
                family = CounterMetricFamily("cni_ipam_dhcp_lease_events", "Lease events by kind", labels=["event"])
                for kind, count in sorted(events.items()):
                    family.add_metric([kind], count)
                yield family
                if samples:
                    yield GaugeMetricFamily("cni_ipam_dhcp_last_acquire_seconds",
                                            "Time the most recent acquisition took", value=samples[-1])

        registry = CollectorRegistry()
        registry.register(Collector())
        return start_http_server(port, addr=address, registry=registry)
