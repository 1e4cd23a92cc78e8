"""``make demo``: the plugins at work, as a newcomer would want to see them.

The whereabouts part runs three example networks (exclusions, two networks
sharing a ``network_name``, dual stack) on the embedded SQLite store.

Three ways, the first that works here:

1. podman (Debian's, CNI backend): real containers on networks whose
   ``bridge`` calls our IPAM plugins; we print ``ip addr`` from inside each
   container, ping between them, remove them and show the store is empty.
2. As root without podman: pods (network namespaces) on a Linux bridge made
   by Debian's ``bridge`` plugin; the same prints, then CHECK and DEL.
3. Without root: the IPAM plugins are called directly and their results
   printed.
"""

from __future__ import annotations

import json
import os
import tempfile

from .namespaces import GO_PLUGIN_DIR, Attachment, Lab, can_make_netns, cni_env, run_plugin
from .podman import PodmanEnv, PodmanError, unavailable

STATIC_PODS = (
    ("pod-a", [{"address": "10.10.21.10/24", "gateway": "10.10.21.1"}, {"address": "fd00:21::10/64"}]),
    ("pod-b", [{"address": "10.10.21.11/24", "gateway": "10.10.21.1"}, {"address": "fd00:21::11/64"}]),
)


def static_config(addresses) -> dict:
    return {
        "cniVersion": "1.0.0", "name": "demo-static", "type": "bridge", "bridge": "cni-demo0",
        "ipam": {"type": "static", "addresses": addresses,
                 "routes": [{"dst": "192.168.17.0/24", "gw": "10.10.21.1"}],
                 "dns": {"nameservers": ["10.10.21.1"], "domain": "example.com", "search": ["example.com"]}},
    }


def say(text: str = "") -> None:
    print(text, flush=True)


def demo_static_in_namespaces(bin_dir: str) -> int:
    cni_path = f"{bin_dir}:{GO_PLUGIN_DIR}"
    failures = 0
    with Lab("demo") as lab:
        node = lab.netns("node")
        say(f"== static: two pods on bridge cni-demo0 in node namespace {node}")
        pods = []
        for name, addresses in STATIC_PODS:
            pod = lab.netns(name)
            att = Attachment(lab, node, pod, static_config(addresses), cni_path)
            done = att.add()
            if not done.ok:
                say(f"   {name}: ADD failed: {done.output or done.stderr}")
                failures += 1
                continue
            # CHECK right away: bridge's CHECK compares the bridge's MAC, which
            # changes as ports come and go.
            check = att.check()
            failures += not check.ok
            pods.append((name, pod, att))
            say(f"   {name}: ADD -> {json.dumps(done.output.get('ips'))}; CHECK {'ok' if check.ok else check.output}")
            say(f"   {name}: ip addr net1 -> {', '.join(lab.addresses(pod, 'net1'))}")
        if len(pods) == 2:
            target = STATIC_PODS[1][1][0]["address"].split("/")[0]
            ping = lab.exec(pods[0][1], "ping", "-c", "1", "-W", "2", target)
            say(f"   pod-a pings {target}: {'ok' if ping.returncode == 0 else 'FAILED'}")
            failures += ping.returncode != 0
        for name, pod, att in pods:
            delete = att.delete()
            again = att.delete()
            left = lab.addresses(pod, "net1") if _has_link(lab, pod, "net1") else []
            say(f"   {name}: DEL {'ok' if delete.ok else delete.output}; "
                f"second DEL {'ok' if again.ok else again.output}; addresses left: {left or 'none'}")
            failures += (not delete.ok) + (not again.ok)
    return failures


def _has_link(lab: Lab, pod: str, ifname: str) -> bool:
    return lab.exec(pod, "ip", "link", "show", ifname).returncode == 0


def demo_static_plugin_only(bin_dir: str) -> int:
    say("== static (IPAM only, not root: no namespaces): the plugin's answer for pod-a")
    env = cni_env("ADD", "demo-container", "/run/netns/none", "net1", cni_path=bin_dir)
    done = run_plugin(os.path.join(bin_dir, "static"), env, static_config(STATIC_PODS[0][1]))
    say(json.dumps(done.output, indent=2))
    return 0 if done.ok else 1


def whereabouts_networks(db: str) -> list:
    """The whereabouts examples, each as (title, [(pod, network config)])."""
    def net(name, bridge, ipam):
        ipam = dict(ipam, type="whereabouts", sqlite_path=db)
        return {"cniVersion": "0.3.1", "name": name, "type": "bridge", "bridge": bridge, "ipam": ipam}

    exclude = net("wb-exclude", "cni-wb0", {"range": "192.0.2.192/27",
                                            "exclude": ["192.0.2.192/30", "192.0.2.196/32"]})
    nad1 = net("wb-nad1", "cni-wb1", {"range": "192.0.2.192/29", "network_name": "example_net_common"})
    nad2 = net("wb-nad2", "cni-wb1", {"range": "192.0.2.192/24", "network_name": "example_net_common"})
    dual = net("whereabouts-dual-stack", "cni-wb2",
               {"ipRanges": [{"range": "192.168.10.0/24"}, {"range": "fd00::/64"}]})
    return [
        ("range 192.0.2.192/27 excluding 192.0.2.192/30 and 192.0.2.196/32: first address is .197",
         [("wb-x1", exclude), ("wb-x2", exclude)]),
        ("two NADs, overlapping ranges, network_name example_net_common: never the same address",
         [("wb-c1", nad1), ("wb-c2", nad2), ("wb-c3", nad1), ("wb-c4", nad2)]),
        ("dual stack with ipRanges: one IPv4 and one IPv6 address per pod",
         [("wb-d1", dual), ("wb-d2", dual)]),
    ]


def demo_whereabouts_in_namespaces(bin_dir: str, db: str) -> int:
    cni_path = f"{bin_dir}:{GO_PLUGIN_DIR}"
    failures = 0
    with Lab("demo") as lab:
        node = lab.netns("node")
        for title, pods in whereabouts_networks(db):
            say(f"== whereabouts: {title}")
            attached = []
            for name, config in pods:
                pod = lab.netns(name)
                att = Attachment(lab, node, pod, config, cni_path, args=f"IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME={name}")
                done = att.add()
                if not done.ok:
                    say(f"   {name} ({config['name']}): ADD failed: {done.output or done.stderr}")
                    failures += 1
                    continue
                attached.append((name, pod, att))
                say(f"   {name} ({config['name']}): ip addr net1 -> {', '.join(lab.addresses(pod, 'net1'))}")
            failures += _ping_first_peer(
                [(name, att.config, pod) for name, pod, att in attached],
                lambda pod: lab.addresses(pod, "net1"),
                lambda pod, ip: lab.exec(pod, "ping", "-c", "1", "-W", "2", ip).returncode == 0)
            deleted = sum(att.delete().ok for _, _, att in attached)
            failures += len(attached) - deleted
            failures += _store_left(db, f"DEL of {deleted}/{len(attached)} pods ok")
    return failures


def _ping_first_peer(members: list, addresses, ping) -> int:
    """Ping from the first member to the next one on the same network (and subnet), every family.

    ``members`` are ``(name, network config, handle)``; ``addresses(handle)`` lists a member's
    ``ip/prefix``, ``ping(handle, ip)`` says whether one ping got through.  The failures are counted.
    """
    if not members:
        return 0
    first_name, first_config, first = members[0]
    peer = next(((n, h) for n, cfg, h in members[1:] if cfg is first_config), None)
    if peer is None:
        return 0
    failures = 0
    for address in addresses(peer[1]):
        target = address.split("/")[0]
        ok = ping(first, target)
        say(f"   {first_name} pings {peer[0]} at {target}: {'ok' if ok else 'FAILED'}")
        failures += not ok
    return failures


def _store_left(db: str, what: str) -> int:
    """Say what the store holds after every pod of a network is gone: one failure if anything."""
    held = _held(db)
    say(f"   {what}; addresses held in the store now: {held}"
        + ("" if held == 0 else " -- FAILED: every DEL must free its address"))
    return 1 if held else 0


def _held(db: str) -> int:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM allocations").fetchone()[0]


def demo_whereabouts_plugin_only(bin_dir: str, db: str) -> int:
    failures = 0
    for title, pods in whereabouts_networks(db):
        say(f"== whereabouts (IPAM only): {title}")
        for name, config in pods:
            env = cni_env("ADD", f"demo-{name}", "/run/netns/none", "net1", cni_path=bin_dir)
            done = run_plugin(os.path.join(bin_dir, "whereabouts"), env, config)
            failures += not done.ok
            ips = [ip["address"] for ip in (done.output or {}).get("ips", [])]
            say(f"   {name} ({config['name']}): {', '.join(ips) if done.ok else done.output}")
    return failures


def demo_in_podman(env, db: str) -> int:
    """The static example and the whereabouts examples as podman containers."""
    failures = 0
    say("== static: a container on a podman network whose IPAM is our static plugin")
    static = env.network("demo-static", static_config(STATIC_PODS[0][1])["ipam"])
    box = env.start("pod-a", static)
    say(f"   pod-a: ip addr eth0 -> {', '.join(env.addresses(box))}")
    routes = env.ok("exec", box, "ip", "route", "show", "192.168.17.0/24").strip()
    say(f"   pod-a: route from the config -> {routes or 'MISSING'}")
    failures += not routes
    env.ok("rm", "-f", "-t", "0", box)
    for title, pods in whereabouts_networks(db):
        say(f"== whereabouts: {title}")
        networks: dict = {}  # our network name -> podman's
        started = []
        for name, config in pods:
            if config["name"] not in networks:
                networks[config["name"]] = env.network(config["name"], config["ipam"], config["cniVersion"])
            try:
                container = env.start(name, networks[config["name"]])
            except PodmanError as exc:
                say(f"   {name} ({config['name']}): {exc}")
                failures += 1
                continue
            started.append((name, config, container))
            say(f"   {name} ({config['name']}): ip addr eth0 -> {', '.join(env.addresses(container))}")
        failures += _ping_first_peer(
            started, env.addresses,
            lambda box, ip: env.podman("exec", box, "ping", "-c", "1", "-W", "2", ip).returncode == 0)
        removed = env.podman("rm", "-f", "-t", "0", *(c for _, _, c in started)) if started else None
        failures += removed is not None and removed.returncode != 0
        failures += _store_left(db, f"removed {len(started)} containers")
    return failures


def podman_demo(bin_dir: str, db: str, workdir: str) -> int | None:
    """Run the podman demo; None (after saying why) when podman cannot run containers here."""
    why = unavailable()
    if why:
        say(f"(podman: {why}; using plain network namespaces)")
        return None
    env = PodmanEnv(workdir, bin_dir)
    try:
        try:
            env.import_image()
            why = env.usable()
        except PodmanError as exc:
            why = str(exc)
        if why:
            say(f"({why}; using plain network namespaces)")
            return None
        say(f"podman {env.ok('version', '--format', '{{.Client.Version}}').strip()} (CNI backend) "
            f"runs busybox containers; our plugin dir is first in its CNI path")
        try:
            return demo_in_podman(env, db)
        except PodmanError as exc:  # a step the demo cannot go on without
            say(f"   FAILED: {exc}")
            return 1
    finally:
        env.close()


def run_demo(bin_dir: str | None = None) -> int:
    from cni_ipam.install import install

    with tempfile.TemporaryDirectory(prefix="cni-ipam-demo-") as tmp:
        if bin_dir is None:
            bin_dir = os.path.join(tmp, "bin")
            install(bin_dir)
            say(f"installed our plugins into {bin_dir}")
        db = os.path.join(tmp, "whereabouts.db")
        say(f"whereabouts uses the embedded SQLite store at {db}")
        failures = _run_best_demo(bin_dir, db, tmp)
    say("demo finished: all steps ok" if failures == 0 else f"demo finished with {failures} failure(s)")
    return 0 if failures == 0 else 1


def _run_best_demo(bin_dir: str, db: str, tmp: str) -> int:
    """podman containers, else namespaces, else the IPAM plugins alone: the first that runs here."""
    ok, why = can_make_netns()
    if ok:
        failures = podman_demo(bin_dir, db, os.path.join(tmp, "podman"))
        if failures is not None:
            return failures
    if ok and os.access(os.path.join(GO_PLUGIN_DIR, "bridge"), os.X_OK):
        return demo_static_in_namespaces(bin_dir) + demo_whereabouts_in_namespaces(bin_dir, db)
    say(f"(namespaces unavailable: {why or 'Debian bridge plugin missing'}; showing IPAM only)")
    return demo_static_plugin_only(bin_dir) + demo_whereabouts_plugin_only(bin_dir, db)
