"""``make demo``: the plugins at work, as a newcomer would want to see them.

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
            pods.append((name, pod, att))
            say(f"   {name}: ADD -> {json.dumps(done.output.get('ips'))}")
            say(f"   {name}: ip addr net1 -> {', '.join(lab.addresses(pod, 'net1'))}")
        if len(pods) == 2:
            target = STATIC_PODS[1][1][0]["address"].split("/")[0]
            ping = lab.exec(pods[0][1], "ping", "-c", "1", "-W", "2", target)
            say(f"   pod-a pings {target}: {'ok' if ping.returncode == 0 else 'FAILED'}")
            failures += ping.returncode != 0
        # CHECK every pod before any DEL: bridge's CHECK compares the bridge's MAC,
        # which changes when a port leaves it.
        checks = [att.check() for _, _, att in pods]
        for (name, pod, att), check in zip(pods, checks):
            delete = att.delete()
            again = att.delete()
            left = lab.addresses(pod, "net1") if _has_link(lab, pod, "net1") else []
            say(f"   {name}: CHECK {'ok' if check.ok else check.output}; DEL {'ok' if delete.ok else delete.output}; "
                f"second DEL {'ok' if again.ok else again.output}; addresses left: {left or 'none'}")
            failures += (not check.ok) + (not delete.ok) + (not again.ok)
    return failures


def _has_link(lab: Lab, pod: str, ifname: str) -> bool:
    return lab.exec(pod, "ip", "link", "show", ifname).returncode == 0


def demo_static_plugin_only(bin_dir: str) -> int:
    say("== static (IPAM only, not root: no namespaces): the plugin's answer for pod-a")
    env = cni_env("ADD", "demo-container", "/run/netns/none", "net1", cni_path=bin_dir)
    done = run_plugin(os.path.join(bin_dir, "static"), env, static_config(STATIC_PODS[0][1]))
    say(json.dumps(done.output, indent=2))
    return 0 if done.ok else 1


def run_demo(bin_dir: str | None = None) -> int:
    from .install import install

    with tempfile.TemporaryDirectory(prefix="cni-ipam-demo-") as tmp:
        if bin_dir is None:
            bin_dir = os.path.join(tmp, "bin")
            install(bin_dir)
            say(f"installed our plugins into {bin_dir}")
        ok, why = can_make_netns()
        if ok and os.access(os.path.join(GO_PLUGIN_DIR, "bridge"), os.X_OK):
            failures = demo_static_in_namespaces(bin_dir)
        else:
            say(f"(namespaces unavailable: {why or 'Debian bridge plugin missing'}; showing IPAM only)")
            failures = demo_static_plugin_only(bin_dir)
    say("demo finished: all steps ok" if failures == 0 else f"demo finished with {failures} failure(s)")
    return 0 if failures == 0 else 1
