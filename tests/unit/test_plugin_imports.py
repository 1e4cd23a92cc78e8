"""What each plugin executable imports, per CNI command.

A CNI plugin is exec'd once per interface, so every module it imports is
paid for on every pod (measured with ``python -X importtime`` here:
``json`` 8 ms, ``asyncio`` 39 ms, ``typing`` 10 ms...; see bench/README.md).  Each installed launcher is run for
each command, as a runtime runs it but under ``python -X importtime -IS``
(the interpreter of its shebang), and the modules it imported are checked
against the rules below.  Modules the interpreter loads at start-up, before
the launcher runs, are not counted: they are measured once with
``-c pass`` as a baseline.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest

# --- the rules, as data ---------------------------------------------------------------------------

# Top-level names a plugin may import besides the standard library: only our
# own package.  Plugins run with -IS (no site-packages), so anything else
# would have to be vendored onto sys.path; the launcher must not need that.
ALLOWED_NON_STDLIB = {"cni_ipam"}

# VERSION answers with a constant string: it may import our package and
# posix (the dispatcher reads posix.environ; it is loaded at start-up anyway), nothing else.
VERSION_MAY_IMPORT = ("posix",)
# ...and these in particular, named so that a failure says what went wrong:
# they are the costly ones the ADD path uses (json pulls in re, enum...).
VERSION_NEVER = {"json", "ipaddress", "sqlite3", "socket", "logging", "asyncio", "typing", "dataclasses", "re"}

# static holds no state and talks to nobody: no store, no network, no
# subprocess.  Its ADD/CHECK need _json and cni_ipam.net.addr and little
# more: not ipaddress (3-5 ms with functools and collections), not os (1.5 ms;
# the environment comes from posix).
STATIC_ADD_CHECK_NEVER = {"sqlite3", "socket", "ssl", "http", "logging", "asyncio", "subprocess", "typing",
                          "dataclasses", "ipaddress", "functools", "collections", "os"}

# No command of any plugin: asyncio (39 ms) and logging (12.5 ms) belong in
# daemons; dataclasses (14 ms) and typing (10 ms) are replaced by plain
# classes with __slots__ and annotations that are never evaluated; json
# (8 ms, as it imports re and enum) by cni_ipam.jsonlite over the _json C
# module.  logging may be allowed later for a configured log file; no test
# config sets one.
NEVER = {"asyncio", "typing", "dataclasses", "logging", "json", "re", "enum"}

# Budgets on the hot path: (our cni_ipam modules, all modules) a command may load beyond the interpreter's
# start-up, on its success path.  Each module costs about 0.1-0.2 ms per call (bench/hot_path.py prints them).
# They are what the code loads now (issue 17: os, bisect and heapq off the path, small modules folded into
# their packages); raise one only with a reason in the commit message (a module the command needs and cannot
# get more cheaply), and lower it when you cut.
BUDGETS = {
    ("whereabouts sqlite", "ADD"): (25, 33), ("whereabouts sqlite", "CHECK"): (25, 31),
    ("whereabouts sqlite", "DEL"): (24, 30),
    ("whereabouts etcd", "ADD"): (26, 32), ("whereabouts etcd", "CHECK"): (26, 32),
    ("whereabouts etcd", "DEL"): (25, 30),
    ("whereabouts kube", "ADD"): (32, 38), ("whereabouts kube", "CHECK"): (32, 38),
    ("whereabouts kube", "DEL"): (31, 36),
    ("dhcp", "ADD"): (18, 21), ("dhcp", "CHECK"): (16, 19), ("dhcp", "DEL"): (15, 18),
}

# --- the calls ------------------------------------------------------------------------------------
#
# Each command is judged on its success path: the call must exit 0 with no
# warning (DEL and GC of dhcp "succeed" with a warning when the daemon is
# down; that path is not the one judged).  CHECK and DEL come after an ADD
# of the same attachment, CHECK with that ADD's result as prevResult.

STATIC_IPAM = {
    "type": "static",
    "addresses": [{"address": "10.1.1.2/24", "gateway": "10.1.1.1"}, {"address": "fd00:1::2/64", "gateway": "fd00:1::1"}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.1.1"}, {"dst": "192.168.17.0/24"}, {"dst": "::/0"}],
    "dns": {"nameservers": ["10.1.1.1"], "domain": "example.com", "search": ["example.com"]},
}
POD_ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=imports"
NO_NETNS = "/run/netns/imports-none"  # static and whereabouts never enter the pod's namespace


class World:
    """Where one backend's calls go: its ``ipam`` config and the pod namespace of a new attachment."""

    def __init__(self, ipam: dict, new_pod=lambda: NO_NETNS):
        self.ipam = ipam
        self.new_pod = new_pod


def whereabouts_sqlite(tmp: str) -> World:
    # Our own flat file (found first, so none of this machine's is read) and a
    # store in the test's tmp dir, never the default /var/lib path.
    db = os.path.join(tmp, "whereabouts.db")
    flat = os.path.join(tmp, "whereabouts.conf")
    with open(flat, "w") as f:
        json.dump({"datastore": "sqlite", "sqlite_path": db}, f)
    return World({"type": "whereabouts", "range": "192.168.2.225/28", "configuration_path": flat,
                  "datastore": "sqlite", "sqlite_path": db})


@pytest.fixture
def whereabouts_etcd(tmp_path, request):
    cluster = request.getfixturevalue("etcd_cluster")
    prefix = request.getfixturevalue("etcd_prefix")
    flat = tmp_path / "whereabouts.conf"
    flat.write_text(json.dumps({"datastore": "etcd"}))
    return World({"type": "whereabouts", "range": "192.168.2.225/28", "configuration_path": str(flat),
                  "datastore": "etcd", "etcd_endpoints": cluster.endpoints, "etcd_prefix": prefix})


@pytest.fixture
def whereabouts_kube(tmp_path, request):
    """The test API server (tests/kubeapi) over TLS, as a cluster serves, and a CNO-style whereabouts.d
    (flat file, kubeconfig with a tokenFile, nodename) in the test's tmp dir."""
    from kubeapi.kubeconfig import write_kubeconfig

    server = request.getfixturevalue("kube_api_factory")(tls=True)
    directory = tmp_path / "whereabouts.d"
    directory.mkdir()
    kubeconfig = write_kubeconfig(server, str(directory / "whereabouts.kubeconfig"), token_file=True)
    (directory / "whereabouts.conf").write_text(json.dumps({"datastore": "kubernetes",
                                                            "kubernetes": {"kubeconfig": kubeconfig}}))
    (directory / "nodename").write_text("node-a\n")
    return World({"type": "whereabouts", "range": "192.168.2.225/28", "configuration_path": str(directory)})


@pytest.fixture(scope="module")
def dhcp_world(tmp_path_factory):
    """Our daemon in a node namespace behind which dnsmasq serves leases; each pod a veth on its bridge
    (the topology of cni_ipam_lab.dhcp; root)."""
    from cni_ipam_lab.dhcp import Setups
    from cni_ipam_lab.namespaces import Lab, can_make_netns

    ok, why = can_make_netns()
    if not ok:
        pytest.skip(f"dhcp success paths need a DHCP server in network namespaces: {why}")
    if not os.access("/usr/sbin/dnsmasq", os.X_OK):
        pytest.skip("dhcp success paths: dnsmasq is not installed (apt-get install dnsmasq-base)")
    lab = Lab("imports")
    setups = Setups(lab, str(tmp_path_factory.mktemp("dhcp")))
    try:
        net, daemon = setups.make()
        pods = iter(range(1000))
        yield World({"type": "dhcp", "daemonSocketPath": daemon.socket_path},
                    lambda: Lab.path(net.veth_pod(f"p{next(pods)}")))
    finally:
        setups.close()
        lab.close()


# (backend, command, cniVersion or None for VERSION, CNI_ARGS); the plugin is the backend's first word.
CASES = [
    ("static", "VERSION", None, ""),
    ("static", "ADD", "1.0.0", ""),
    ("static", "ADD", "0.3.1", ""),
    ("static", "ADD", "1.0.0", POD_ARGS + ";IP=10.1.2.3/24"),
    ("static", "CHECK", "1.0.0", ""),
    ("static", "DEL", "1.0.0", ""),
    ("static", "GC", "1.1.0", ""),
    ("static", "STATUS", "1.1.0", ""),
    ("whereabouts", "VERSION", None, ""),
    *[(f"whereabouts {store}", command, version, POD_ARGS if command in ("ADD", "CHECK", "DEL") else "")
      for store in ("sqlite", "etcd", "kube")
      for command, version in (("ADD", "1.0.0"), ("CHECK", "1.0.0"), ("DEL", "1.0.0"), ("GC", "1.1.0"),
                               ("STATUS", "1.1.0"))],
    ("dhcp", "VERSION", None, ""),
    ("dhcp", "ADD", "1.0.0", POD_ARGS),
    ("dhcp", "CHECK", "1.0.0", POD_ARGS),
    ("dhcp", "DEL", "1.0.0", POD_ARGS),
    ("dhcp", "GC", "1.1.0", ""),
    ("dhcp", "STATUS", "1.1.0", ""),
]


def case_id(case) -> str:
    backend, command, version, args = case
    return "-".join(p for p in (backend.replace(" ", "-"), command, version, "args" if args else "") if p)


def world_for(backend: str, request, tmp: str) -> World:
    if backend == "static":
        return World(STATIC_IPAM)
    if backend == "whereabouts sqlite":
        return whereabouts_sqlite(tmp)
    return request.getfixturevalue({"whereabouts etcd": "whereabouts_etcd", "whereabouts kube": "whereabouts_kube",
                                    "dhcp": "dhcp_world"}[backend])


def new_attachment(world: World, command: str) -> tuple:
    """(network name, container ID, netns) of a new attachment, distinct per call so a GC never sees another
    test's attachments; only ADD, CHECK and DEL get a pod namespace."""
    tag = uuid.uuid4().hex[:12]
    return f"imports-{tag}", f"imports-{tag}", world.new_pod() if command in ("ADD", "CHECK", "DEL") else ""


def request_for(command: str, version: str | None, args: str, world: World, attachment: tuple,
                prev_result=None) -> tuple:
    """(environment, stdin) for one call, as a runtime would make them, for ``attachment``
    (:func:`new_attachment`)."""
    network, container_id, netns = attachment
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command, "CNI_PATH": "/nonexistent",
           "CNI_IPAM_AGENT_SOCKET": ""}  # never a node agent that happens to listen on the default socket
    if command in ("ADD", "CHECK", "DEL"):
        env.update(CNI_CONTAINERID=container_id, CNI_NETNS=netns, CNI_IFNAME="net1")
    if args:
        env["CNI_ARGS"] = args
    if version is None:
        return env, b""
    conf = {"cniVersion": version, "name": network, "type": "bridge", "ipam": world.ipam}
    if prev_result is not None:
        conf["prevResult"] = prev_result
    if command == "GC":
        conf["cni.dev/valid-attachments"] = []
    return env, json.dumps(conf).encode()


# --- running a launcher under -X importtime -------------------------------------------------------

def parse_importtime(stderr: str) -> list:
    """Module names, in import order, from ``-X importtime`` lines on stderr."""
    names = []
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name and name != "imported package":
                names.append(name)
    return names


def top(name: str) -> str:
    return name.split(".", 1)[0]


def shebang_python(launcher: str) -> str:
    with open(launcher) as f:
        first = f.readline().rstrip("\n")
    assert first.startswith("#!"), f"{launcher}: no shebang"
    parts = first[2:].split()
    assert parts[1:] == ["-IS"], f"{launcher}: shebang must run the interpreter with exactly '-IS', got {first!r}"
    return parts[0]


def run_importtime(python: str, argv: list, env: dict | None = None, stdin: bytes = b"") -> tuple:
    done = subprocess.run([python, "-X", "importtime", "-IS", *argv], input=stdin, env=env or {},
                          capture_output=True, timeout=60)
    return done, parse_importtime(done.stderr.decode(errors="replace"))


@pytest.fixture(scope="module")
def interpreter(plugin_bin_dir):
    """The shebang interpreter, its start-up modules, its stdlib names and the closure of VERSION_MAY_IMPORT."""
    python = shebang_python(os.path.join(plugin_bin_dir, "static"))
    for name in ("whereabouts", "dhcp"):
        assert shebang_python(os.path.join(plugin_bin_dir, name)) == python
    _, baseline = run_importtime(python, ["-c", "pass"])
    assert baseline, "no -X importtime output from the interpreter: the parser or the interpreter changed"
    names = subprocess.run([python, "-IS", "-c", "import sys; print('\\n'.join(sys.stdlib_module_names))"],
                           capture_output=True, text=True, check=True).stdout.split()
    _, with_os = run_importtime(python, ["-c", f"import {', '.join(VERSION_MAY_IMPORT)}"])
    return {"python": python, "baseline": set(baseline), "stdlib": set(names),
            "version_extra": set(with_os) - set(baseline)}


# --- the checks (pure, so they are tested on made-up input below) ---------------------------------

def violations(plugin: str, command: str, imported: list, stdlib: set, version_extra: set) -> list:
    """Every rule ``imported`` (modules the launcher loaded, start-up excluded) breaks."""
    found = []
    tops = {top(m) for m in imported}
    outside = sorted(t for t in tops if t not in stdlib and t not in ALLOWED_NON_STDLIB)
    if outside:
        found.append(f"imports modules outside the standard library: {outside}")
    banned = sorted(tops & NEVER)
    if banned:
        found.append(f"imports {banned}, which no plugin command may import")
    if command == "VERSION":
        bad = sorted(tops & VERSION_NEVER)
        if bad:
            found.append(f"VERSION imports {bad}")
        extra = sorted(m for m in imported if top(m) not in ALLOWED_NON_STDLIB and m not in version_extra)
        if extra:
            found.append(f"VERSION imports {extra}, beyond our package and {list(VERSION_MAY_IMPORT)}")
    if plugin == "static" and command in ("ADD", "CHECK"):
        bad = sorted(tops & STATIC_ADD_CHECK_NEVER)
        if bad:
            found.append(f"static {command} imports {bad}")
    return found


def over_budget(budget, imported: list) -> list:
    """The budget ``(ours, all)`` that ``imported`` exceeds, said; [] within it or without a budget."""
    if budget is None:
        return []
    ours = sum(1 for m in imported if top(m) in ALLOWED_NON_STDLIB)
    if ours > budget[0] or len(imported) > budget[1]:
        return [f"loads {ours} of our modules and {len(imported)} in all, over its budget of {budget[0]} and "
                f"{budget[1]} (BUDGETS)"]
    return []


def test_budget_counts_our_modules_and_all():
    assert over_budget(None, ["x"] * 99) == []
    assert over_budget((2, 3), ["cni_ipam", "cni_ipam.cni", "posix"]) == []
    assert over_budget((1, 3), ["cni_ipam", "cni_ipam.cni", "posix"]) != []
    assert over_budget((2, 2), ["cni_ipam", "cni_ipam.cni", "posix"]) != []


def test_rule_lists_name_real_stdlib_modules(interpreter):
    """A typo in a deny list would silently allow the module it meant."""
    for name in VERSION_NEVER | STATIC_ADD_CHECK_NEVER | NEVER | set(VERSION_MAY_IMPORT):
        assert name in interpreter["stdlib"], name


def test_parse_importtime_and_rules_catch_violations():
    stderr = ("import time: self [us] | cumulative | imported package\n"
              "import time:       100 |        100 |   cni_ipam.cni.skel\n"
              "import time:        50 |         50 |     _json\n"
              "import time:       200 |        250 |   json.decoder\n"
              "static: warning: something\n"
              "import time:      3000 |       3000 | pydantic\n"
              "import time:       900 |        900 | typing\n")
    imported = parse_importtime(stderr)
    assert imported == ["cni_ipam.cni.skel", "_json", "json.decoder", "pydantic", "typing"]
    found = violations("static", "VERSION", imported, {"json", "_json", "typing", "os"}, {"os"})
    text = "\n".join(found)
    assert "outside the standard library: ['pydantic']" in text
    assert "no plugin command may import" in text and "'typing'" in text
    assert "VERSION imports ['json', 'typing']" in text
    assert violations("static", "VERSION", ["cni_ipam", "os"], {"os"}, {"os"}) == []
    assert violations("static", "ADD", ["sqlite3", "bisect"], {"sqlite3", "bisect"}, set()) == [
        "static ADD imports ['sqlite3']"]


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_plugin_imports_only_what_its_command_needs(case, plugin_bin_dir, interpreter, tmp_path, request):
    backend, command, version, args = case
    plugin = backend.split()[0]
    launcher = os.path.join(plugin_bin_dir, plugin)
    world = World({}) if command == "VERSION" else world_for(backend, request, str(tmp_path))
    attachment = new_attachment(world, command)

    prev_result = None
    if backend == "whereabouts sqlite" and command == "ADD":
        # Another pod's ADD first: the judged one finds the store made, as every ADD on a node but its first
        # (making the store's directory and checking its filesystem import os, once per node).
        env, stdin = request_for("ADD", version, args, world, new_attachment(world, command))
        added = subprocess.run([launcher], input=stdin, env=env, capture_output=True, timeout=60)
        assert added.returncode == 0, f"{plugin} first ADD failed: {added.stdout!r} {added.stderr!r}"
    if command in ("CHECK", "DEL"):  # the attachment exists first, as a runtime would have made it
        env, stdin = request_for("ADD", version, args, world, attachment)
        added = subprocess.run([launcher], input=stdin, env=env, capture_output=True, timeout=60)
        assert added.returncode == 0, f"{plugin} ADD before {command} failed: {added.stdout!r} {added.stderr!r}"
        prev_result = json.loads(added.stdout) if command == "CHECK" else None
    env, stdin = request_for(command, version, args, world, attachment, prev_result)
    done, names = run_importtime(interpreter["python"], [launcher], env, stdin)
    stdout = done.stdout.decode(errors="replace")
    stderr = "\n".join(line for line in done.stderr.decode(errors="replace").splitlines()
                       if not line.startswith("import time:"))

    # The call did what its command does, without a warning (else its imports prove nothing).
    assert done.returncode == 0 and not stderr, f"{backend} {command} did not succeed: {stdout}{stderr}"
    if command == "VERSION":
        assert "supportedVersions" in json.loads(stdout)
    if command == "ADD":
        assert json.loads(stdout)["ips"], stdout

    imported = [m for m in names if m not in interpreter["baseline"]]
    assert f"cni_ipam.plugins.{plugin}" in imported, f"the launcher did not load the plugin: {imported}"
    found = violations(plugin, command, imported, interpreter["stdlib"], interpreter["version_extra"])
    found += over_budget(BUDGETS.get((backend, command)), imported)
    assert not found, f"{plugin} {command} ({case_id(case)}): " + "; ".join(found) + f"\nimported: {imported}"
