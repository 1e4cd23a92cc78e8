"""Injected latency and failures, and the counters that show they hit.

Tests set rules at run time through the server's control endpoint
(``PUT /_control/faults`` with the admin token).  A rule is a dict:

``verbs`` / ``resources``
    lists to match (kube verbs: get, list, watch, create, update, patch,
    delete); absent means every one.
``latency``
    seconds added before the request is served (every matching rule adds).
``status``
    an answer in place of the real one: 409, 422, 429, 500, 503, 504, or
    ``"drop"`` (the connection is closed without an answer).
``probability`` (default 1) and ``count`` (default unlimited)
    how often the rule fires; ``count`` goes down each time it does.
``after``
    true: serve the request first (the write is committed), then answer
    the failure, as a kube-apiserver timeout after etcd committed would.
``delay_events``
    watch rules only: seconds each batch of events waits before it is sent,
    read as events come, so it slows watches that were open before the rule
    (a watch that lags behind the writes).
``retry_after``
    seconds for 429's Retry-After (default 1).
``text``
    true for 429: a plain-text body as priority-and-fairness sends, not a Status.

Counters: ``requests`` by ``verb resource`` and ``faults`` by rule index.
"""

from __future__ import annotations

import random
import threading
from collections import Counter

STATUSES = (409, 422, 429, 500, 503, 504, "drop")


class Faults:
    def __init__(self, seed=None) -> None:
        self.lock = threading.Lock()
        self.rules = []
        self.requests = Counter()
        self.faults = Counter()
        self.refused = Counter()  # "verb resource" -> requests answered 409 or 422 (a lost race, a failed test)
        self.random = random.Random(seed)

    def set_rules(self, rules: list) -> None:
        for rule in rules:
            if "status" in rule and rule["status"] not in STATUSES:
                raise ValueError(f"fault status {rule['status']!r} is not one of {STATUSES}")
        with self.lock:
            self.rules = [dict(rule) for rule in rules]
            self.faults.clear()

    def reset_counters(self) -> None:
        with self.lock:
            self.requests.clear()
            self.faults.clear()
            self.refused.clear()

    def snapshot(self) -> dict:
        with self.lock:
            return {"rules": [dict(r) for r in self.rules], "requests": dict(self.requests), "refused": dict(self.refused),
                    "faults": {str(k): v for k, v in self.faults.items()}}

    def note_refused(self, verb: str, resource: str) -> None:
        with self.lock:
            self.refused[f"{verb} {resource}"] += 1

    @staticmethod
    def _matches(rule: dict, verb: str, resource: str) -> bool:
        return verb in rule.get("verbs", (verb,)) and resource in rule.get("resources", (resource,))

    def event_delay(self, resource: str) -> float:
        """Seconds a watch of ``resource`` waits before sending the events it just read."""
        with self.lock:
            return sum(float(r.get("delay_events", 0)) for r in self.rules if self._matches(r, "watch", resource))

    def decide(self, verb: str, resource: str) -> tuple:
        """Count the request; return (added latency in seconds, the fault rule that fires or None)."""
        latency, fired = 0.0, None
        with self.lock:
            self.requests[f"{verb} {resource}"] += 1
            for index, rule in enumerate(self.rules):
                if not self._matches(rule, verb, resource):
                    continue
                latency += float(rule.get("latency", 0))
                if fired is None and "status" in rule and rule.get("count", 1) > 0 \
                        and self.random.random() < float(rule.get("probability", 1)):
                    if "count" in rule:
                        rule["count"] -= 1
                    self.faults[index] += 1
                    fired = dict(rule)
        return latency, fired
