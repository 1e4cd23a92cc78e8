"""Liveness sources: is the attachment behind an allocation still there?

Each source answers for the allocations it knows about and keeps quiet
(``None``) about the rest:

* :class:`NetnsSource` -- node-local: an allocation made on this node whose
  recorded network namespace path no longer exists;
* :class:`AttachmentsSource` -- the runtime's own list of live attachments,
  as CNI GC passes it (``cni.dev/valid-attachments``), for this node;
* :class:`KubernetesSource` -- the pod is gone (or being deleted by the taint
  manager, or finished), or alive without that address in its
  ``k8s.v1.cni.cncf.io/network-status`` annotation once the grace period
  for a pod that is still starting is over.

:func:`cni_ipam.reconciler.run.decide` combines the answers: any source
that sees the attachment alive keeps it; otherwise one that sees it gone
makes it stale.  Every source can ``confirm`` its answer right before a
release with a fresh look (a new ``stat``, a new GET of the pod).
"""

from __future__ import annotations

import os


class Verdict:
    """One source's answer: ``alive`` or not, a short ``code`` and the ``reason`` in words."""

    __slots__ = ("alive", "code", "reason", "source")

    def __init__(self, alive: bool, code: str, reason: str, source: str = "") -> None:
        self.alive = alive
        self.code = code
        self.reason = reason
        self.source = source

    def __repr__(self):
        return f"Verdict({'alive' if self.alive else 'stale'}, {self.code}, {self.reason!r})"


def alive(code: str, reason: str) -> Verdict:
    return Verdict(True, code, reason)


def stale(code: str, reason: str) -> Verdict:
    return Verdict(False, code, reason)


class Source:
    """The interface: ``prepare`` once per run (after the store was read), then ``judge`` each allocation."""

    name = "source"

    def prepare(self, now: float) -> None:
        """Take this run's snapshot (e.g. list the pods).  Raising aborts the run before anything is freed."""

    def judge(self, allocation):
        """A :class:`Verdict`, or None when this source knows nothing about ``allocation``."""
        raise NotImplementedError

    def confirm(self, allocation, now: float):
        """A fresh verdict just before ``allocation`` is freed (default: judge it again)."""
        return self.judge(allocation)

    def describe(self) -> str:
        return self.name


# --- node-local: the network namespace --------------------------------------------------------

class NetnsSource(Source):
    """An allocation of this node whose netns path is gone is stale; one whose path exists is alive.

    Paths under ``/proc/<pid>/`` are judged by whether ``/proc`` is
    mounted; other paths only when their directory exists here (a
    reconciler in a container that does not see the host's ``/run/netns``
    must not take every namespace for gone).
    """

    name = "netns"

    def __init__(self, node: str) -> None:
        self.node = node

    def judge(self, allocation):
        path = allocation.netns
        if allocation.node != self.node or not path:
            return None
        if path.startswith("/proc/"):
            visible = os.path.exists("/proc/self/ns/net")
        else:
            visible = os.path.isdir(os.path.dirname(path))
        if not visible:
            return None
        if os.path.exists(path):
            return alive("netns-present", f"network namespace {path} exists")
        return stale("netns-gone", f"network namespace {path} no longer exists on node {self.node}")

    def describe(self) -> str:
        return f"netns (node {self.node})"


# --- the runtime's valid attachments ---------------------------------------------------------

class AttachmentsSource(Source):
    """The runtime's live attachments (``{containerID, ifname}``) on this node, per network or for all."""

    name = "attachments"

    def __init__(self, node: str, valid: dict) -> None:
        self.node = node
        self.valid = valid  # network name (None: every network) -> set of (container_id, ifname)

    def judge(self, allocation):
        if allocation.node != self.node:
            return None
        entries = self.valid.get(allocation.network, self.valid.get(None))
        if entries is None:
            return None
        if (allocation.container_id, allocation.ifname) in entries:
            return alive("attachment-valid", "the runtime lists the attachment as valid")
        return stale("attachment-unknown", f"the runtime's valid attachments for network {allocation.network!r} "
                                           f"do not include {allocation.container_id[:12]}/{allocation.ifname}")

    def describe(self) -> str:
        networks = sorted("*" if n is None else n for n in self.valid)
        return f"attachments (node {self.node}; networks {', '.join(networks)})"


def parse_valid_attachments(document, where: str = "valid attachments") -> dict:
    """Read a valid-attachments file: a GC request config (``name`` and ``cni.dev/valid-attachments``),
    a list of such configs, or a bare list of ``{containerID, ifname}`` (for every network)."""
    out = {}

    def entries(items, network, at):
        if not isinstance(items, list):
            raise ValueError(f"{at}: expected a list of {{containerID, ifname}}, got {items!r}")
        found = set()
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("containerID"), str) \
                    or not isinstance(item.get("ifname"), str):
                raise ValueError(f"{at}[{i}]: expected {{\"containerID\": ..., \"ifname\": ...}}, got {item!r}")
            found.add((item["containerID"], item["ifname"]))
        out.setdefault(network, set()).update(found)

    def config(obj, at):
        if "cni.dev/valid-attachments" not in obj:
            raise ValueError(f"{at}: has no cni.dev/valid-attachments")
        network = obj.get("name")
        if network is not None and not isinstance(network, str):
            raise ValueError(f"{at}.name: expected a network name, got {network!r}")
        entries(obj["cni.dev/valid-attachments"], network, f"{at}.cni.dev/valid-attachments")

    if isinstance(document, dict):
        config(document, where)
    elif isinstance(document, list) and all(isinstance(x, dict) and "containerID" in x for x in document):
        entries(document, None, where)
    elif isinstance(document, list):
        for i, obj in enumerate(document):
            if not isinstance(obj, dict):
                raise ValueError(f"{where}[{i}]: expected a network config object, got {obj!r}")
            config(obj, f"{where}[{i}]")
    else:
        raise ValueError(f"{where}: expected a JSON object or list, got {type(document).__name__}")
    return out


# --- Kubernetes pods ---------------------------------------------------------------------

NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"
OLD_NETWORK_STATUS = "k8s.v1.cni.cncf.io/networks-status"  # older Multus, and whereabouts before 2023
TERMINAL_PHASES = ("Succeeded", "Failed")


class PodView:
    """What the reconciler needs from a pod, taken from lightkube's model.

    ``attachments`` maps each (interface, address) that the pod's
    network-status lists to the name of its network there (``namespace/name``
    of the NetworkAttachmentDefinition, or the default network's name);
    ``ips`` is the set of those addresses.
    """

    __slots__ = ("ref", "phase", "created", "ips", "has_status", "taint_deleted", "status_error", "uid", "node",
                 "attachments")

    def __init__(self, ref, phase="", created=0.0, ips=None, has_status=False, taint_deleted=False,
                 status_error="", uid="", node="", attachments=None):
        self.ref = ref
        self.phase = phase
        self.created = created
        self.attachments = dict(attachments or {})
        self.ips = frozenset(ips) if ips is not None else frozenset(ip for _, ip in self.attachments)
        self.has_status = has_status
        self.taint_deleted = taint_deleted
        self.status_error = status_error
        self.uid = uid
        self.node = node

    @classmethod
    def from_pod(cls, pod) -> "PodView":
        meta = pod.metadata
        status = pod.status
        annotations = meta.annotations or {}
        raw = annotations.get(NETWORK_STATUS) or annotations.get(OLD_NETWORK_STATUS)
        attachments, error = network_status_attachments(raw) if raw else ({}, "")
        created = meta.creationTimestamp.timestamp() if meta.creationTimestamp is not None else 0.0
        taint = any(c.type == "DisruptionTarget" and c.status == "True" and c.reason == "DeletionByTaintManager"
                    for c in (status.conditions or [] if status else []))
        return cls(f"{meta.namespace}/{meta.name}", (status.phase or "") if status else "", created,
                   has_status=bool(raw) and not error, taint_deleted=taint, status_error=error, uid=meta.uid or "",
                   node=(pod.spec.nodeName or "") if pod.spec else "", attachments=attachments)


def network_status_attachments(raw: str) -> tuple:
    """({(interface, canonical address): network name} of a network-status annotation, "" or why it could
    not be read).

    Every entry counts, the default network's too: an address there is in
    use as much as on a secondary interface.  Entries may carry a prefix
    length (``10.1.1.5/24``); it is dropped.  An entry without ``interface``
    (older Multus) is kept under the interface ``""``.
    """
    import ipaddress
    import json

    try:
        entries = json.loads(raw)
    except ValueError as exc:
        return {}, f"network-status is not JSON: {exc}"
    if not isinstance(entries, list):
        return {}, "network-status is not a list"
    found = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        interface = entry.get("interface") if isinstance(entry.get("interface"), str) else ""
        network = entry.get("name") if isinstance(entry.get("name"), str) else ""
        for text in entry.get("ips") or ():
            try:
                found[(interface, str(ipaddress.ip_interface(str(text)).ip))] = network
            except ValueError:
                continue
    return found, ""


def network_status_ips(raw: str) -> tuple:
    """(canonical addresses in a network-status annotation, "" or why it could not be read)."""
    attachments, error = network_status_attachments(raw)
    return frozenset(ip for _, ip in attachments), error


def judge_pod(allocation, pod, now: float, grace: float):
    """The Kubernetes verdict for ``allocation`` given its pod (None when the pod does not exist)."""
    ref = allocation.pod
    if pod is None:
        return stale("pod-gone", f"pod {ref} no longer exists")
    if pod.taint_deleted:
        return stale("pod-taint-deleted", f"pod {ref} is being deleted by the taint manager (DisruptionTarget: "
                                          f"DeletionByTaintManager; its node is unreachable)")
    if pod.phase in TERMINAL_PHASES:
        return stale("pod-finished", f"pod {ref} has finished (phase {pod.phase}) and will not run again")
    address = allocation.address
    if address in pod.ips:
        return alive("pod-has-address", f"pod {ref} lists {address} in its network-status")
    age = now - pod.created
    if age < grace:
        return alive("pod-starting", f"pod {ref} ({pod.phase or 'no phase'}) was created {age:.0f}s ago, within the "
                                     f"{grace:.0f}s grace period; its network-status may not list {address} yet")
    if not pod.has_status:
        return None  # no (readable) network-status at all: Multus did not annotate it, so it cannot tell
    return stale("pod-lacks-address", f"pod {ref} ({pod.phase}) does not list {address} in its network-status "
                                      f"(it lists {', '.join(sorted(pod.ips)) or 'no addresses'})")


class KubernetesSource(Source):
    """Pods from the API (lightkube): one LIST per run, a fresh GET before each release."""

    name = "kubernetes"

    def __init__(self, client, grace: float, chunk_size: int = 500) -> None:
        self.client = client  # a lightkube.Client
        self.grace = grace
        self.chunk_size = chunk_size
        self.pods = None
        self.now = 0.0

    def prepare(self, now: float) -> None:
        from lightkube.resources.core_v1 import Pod

        self.now = now
        pods = {}
        for pod in self.client.list(Pod, namespace="*", chunk_size=self.chunk_size):
            view = PodView.from_pod(pod)
            pods[view.ref] = view
        self.pods = pods

    def judge(self, allocation):
        if "/" not in allocation.pod or self.pods is None:  # no pod, or podman's name alone: not a Kubernetes pod
            return None
        return judge_pod(allocation, self.pods.get(allocation.pod), self.now, self.grace)

    def confirm(self, allocation, now: float):
        if "/" not in allocation.pod:
            return None
        return judge_pod(allocation, self.get(allocation.pod), now, self.grace)

    def get(self, ref: str):
        """The pod ``namespace/name`` as it is now, or None if it does not exist."""
        return get_pod(self.client, ref)


def get_pod(client, ref: str):
    """The pod ``namespace/name`` as it is now (a :class:`PodView`), or None if it does not exist."""
    from lightkube import ApiError
    from lightkube.resources.core_v1 import Pod

    namespace, _, name = ref.partition("/")
    try:
        return PodView.from_pod(client.get(Pod, name, namespace=namespace))
    except ApiError as exc:
        if exc.status.code == 404:
            return None
        raise

    def describe(self) -> str:
        return f"kubernetes (grace {self.grace:.0f}s)"
