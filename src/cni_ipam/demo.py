"""``make demo``: the plugins at work, as a newcomer would want to see them.

The whereabouts part runs the examples of MISSION.md section 1.3 on the
embedded SQLite store.

As root: pods (network namespaces) on a Linux bridge made by Debian's
``bridge`` plugin, which calls our IPAM plugins; we print what each pod got
(``ip addr`` inside it), ping between pods, then CHECK and DEL.  Without
root: the IPAM plugins are called directly and their results printed.
"""

from __future__ import annotations

import json
import os
import tempfile

from .lab import GO_PLUGIN_DIR, Attachment, Lab, can_make_netns, cni_env, run_plugin

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
    """The MISSION.md whereabouts examples, each as (title, [(pod, network config)])."""
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
            failures += _ping_same_network(lab, attached)
            deleted = sum(att.delete().ok for _, _, att in attached)
            failures += len(attached) - deleted
            say(f"   DEL of {deleted}/{len(attached)} pods ok; addresses held in the store now: {_held(db)}")
    return failures


def _ping_same_network(lab: Lab, attached: list) -> int:
    """Ping from the first pod to the next one on the same network (and subnet), every family."""
    first_name, first_pod, first_att = attached[0]
    peer = next(((n, p) for n, p, a in attached[1:] if a.config is first_att.config), None)
    if peer is None:
        return 0
    failures = 0
    for address in lab.addresses(peer[1], "net1"):
        target = address.split("/")[0]
        ping = lab.exec(first_pod, "ping", "-c", "1", "-W", "2", target)
        say(f"   {first_name} pings {peer[0]} at {target}: {'ok' if ping.returncode == 0 else 'FAILED'}")
        failures += ping.returncode != 0
    return failures


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


def run_demo(bin_dir: str | None = None) -> int:
    from .install import install

    with tempfile.TemporaryDirectory(prefix="cni-ipam-demo-") as tmp:
        if bin_dir is None:
            bin_dir = os.path.join(tmp, "bin")
            install(bin_dir)
            say(f"installed our plugins into {bin_dir}")
        ok, why = can_make_netns()
        db = os.path.join(tmp, "whereabouts.db")
        say(f"whereabouts uses the embedded SQLite store at {db}")
        if ok and os.access(os.path.join(GO_PLUGIN_DIR, "bridge"), os.X_OK):
            failures = demo_static_in_namespaces(bin_dir)
            failures += demo_whereabouts_in_namespaces(bin_dir, db)
        else:
            say(f"(namespaces unavailable: {why or 'Debian bridge plugin missing'}; showing IPAM only)")
            failures = demo_static_plugin_only(bin_dir)
            failures += demo_whereabouts_plugin_only(bin_dir, db)
    say("demo finished: all steps ok" if failures == 0 else f"demo finished with {failures} failure(s)")
    return 0 if failures == 0 else 1
