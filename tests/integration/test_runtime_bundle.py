"""``cni-ipam install --runtime-dir``: plugins that run on a node without Python.

The node is a directory holding only Debian's static busybox (no libc, no
Python, no /lib); the installer writes into it through ``--host-root``, as
an init container writes into ``/host``, and the plugins are then run
inside it with ``chroot`` (root only).  /proc is not mounted there: the
plugins do not need it, and the interpreter must not need it either.
"""

from __future__ import annotations

import importlib.util
import json
import marshal
import os
import re
import subprocess
import sys

import pytest

from cni_ipam import code_bundle
from cni_ipam.install import PLUGINS, install
from cni_ipam.runtime_bundle import CURRENT, MARKER, PYTHON_NAME, BundleError
from node_root import (CHROOT, NODE_BIN, NODE_RUNTIME, STATIC_NET, STATIC_RESULT, SUPPORTED, WHEREABOUTS_NET,
                       make_node_root, need_patchelf, need_root, run_in_node)


def version_dirs(runtime_dir: str) -> list:
    """The version dirs (``current`` links to one of them; it is not one)."""
    return sorted(name for name in os.listdir(runtime_dir) if not os.path.islink(os.path.join(runtime_dir, name))
                  and os.path.isfile(os.path.join(runtime_dir, name, MARKER)))


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """The node's root, after ``cni-ipam install`` (the CLI a DaemonSet runs) wrote into it via --host-root."""
    need_patchelf()
    root = str(tmp_path_factory.mktemp("node") / "rootfs")
    make_node_root(root)
    done = subprocess.run([sys.executable, "-m", "cni_ipam.cli", "install",
                           "--cni-bin-dir", root + NODE_BIN, "--runtime-dir", root + NODE_RUNTIME,
                           "--host-root", root], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [w for name in PLUGINS for w in ("installed", f"{root}{NODE_BIN}/{name}")]
    return root


# --- the launchers and the layout -----------------------------------------------------------------

def test_launchers_name_the_version_by_its_node_path(node):
    runtime = node + NODE_RUNTIME
    (version,) = version_dirs(runtime)
    assert os.readlink(os.path.join(runtime, CURRENT)) == version
    node_version = f"{NODE_RUNTIME}/{version}"
    for name, entry in PLUGINS.items():
        with open(f"{node}{NODE_BIN}/{name}") as f:
            lines = f.read().splitlines()
        assert lines[0] == f"#!{node_version}/bin/{PYTHON_NAME} -IS"
        assert f"sys.path.insert(0, '{node_version}/lib/cni-ipam')" in lines
        assert f"from {entry.replace(':', ' import ')}" in lines


# --- plugins on a node without Python (chroot) ----------------------------------------------------

@pytest.mark.root
def test_static_add_on_a_node_without_python(node):
    need_root()
    assert run_in_node(node, "static", "ADD", STATIC_NET) == STATIC_RESULT


@pytest.mark.root
@pytest.mark.parametrize("plugin", sorted(PLUGINS))
def test_version_on_a_node_without_python(node, plugin):
    need_root()
    assert run_in_node(node, plugin, "VERSION") == {"cniVersion": "1.1.0", "supportedVersions": SUPPORTED}


@pytest.mark.root
def test_whereabouts_add_del_with_the_bundled_sqlite(node):
    need_root()
    first = run_in_node(node, "whereabouts", "ADD", WHEREABOUTS_NET, "pod-a")
    assert first == {"cniVersion": "1.0.0", "ips": [{"address": "192.168.2.225/28"}]}
    assert os.path.exists(os.path.join(node, "tmp", "wb.db"))
    second = run_in_node(node, "whereabouts", "ADD", WHEREABOUTS_NET, "pod-b")
    assert second["ips"] == [{"address": "192.168.2.226/28"}]
    assert run_in_node(node, "whereabouts", "DEL", WHEREABOUTS_NET, "pod-a") is None
    again = run_in_node(node, "whereabouts", "ADD", WHEREABOUTS_NET, "pod-c")
    assert again["ips"] == [{"address": "192.168.2.225/28"}], "DEL did not free the first address"


# --- what the bundle refers to --------------------------------------------------------------------

def elves(directory: str) -> list:
    found = []
    for parent, _, files in os.walk(directory):
        for name in files:
            with open(os.path.join(parent, name), "rb") as f:
                if f.read(4) == b"\x7fELF":
                    found.append(os.path.join(parent, name))
    return found


def patchelf(option: str, path: str):
    done = subprocess.run(["patchelf", option, path], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def test_every_elf_refers_only_to_the_runtime(node):
    """PT_INTERP inside the node's runtime dir; RUNPATH $ORIGIN-relative (staying inside the version) or there too."""
    runtime = node + NODE_RUNTIME
    (version,) = version_dirs(runtime)
    here, node_version = os.path.join(runtime, version), f"{NODE_RUNTIME}/{version}"
    found = elves(here)
    python = os.path.join(here, "bin", PYTHON_NAME)
    assert len(found) > 20 and python in found
    loader = patchelf("--print-interpreter", python)
    assert loader.startswith(f"{node_version}/lib/") and node + loader in found
    for path in found:
        interpreter = patchelf("--print-interpreter", path)
        assert interpreter in (None, loader), f"{path}: PT_INTERP {interpreter}"
        if path == node + loader:
            continue  # the loader itself loads nothing
        rpath = patchelf("--print-rpath", path)
        assert rpath, f"{path} has no RUNPATH: it would load the node's libraries"
        for entry in rpath.split(":"):
            if entry.startswith("$ORIGIN"):
                resolved = os.path.normpath(entry.replace("$ORIGIN", os.path.dirname(path)))
                assert resolved.startswith(here + "/"), (path, entry)
            else:
                assert entry.startswith(f"{node_version}/"), (path, entry)


def test_every_needed_library_is_in_the_bundle(node):
    runtime = node + NODE_RUNTIME
    (version,) = version_dirs(runtime)
    lib = os.path.join(runtime, version, "lib")
    for path in elves(os.path.join(runtime, version)):
        for needed in (patchelf("--print-needed", path) or "").split():
            assert os.path.exists(os.path.join(lib, needed)), f"{path} needs {needed}, not in {lib}"


def test_the_copied_package_has_its_own_code_bundle(node):
    """Built for the copy's sources (their times and sizes), its code naming them by their node paths."""
    runtime = node + NODE_RUNTIME
    (version,) = version_dirs(runtime)
    package_dir = os.path.join(runtime, version, "lib", "cni-ipam", "cni_ipam")
    with open(code_bundle.bundle_path(package_dir), "rb") as f:
        data = f.read()
    start, length = int.from_bytes(data[8:12], "little"), int.from_bytes(data[12:16], "little")
    index = marshal.loads(data[start:start + length])
    assert "cni_ipam.plugins.whereabouts" in index
    for name, (_, relative, mtime_ns, size, offset, length) in index.items():
        source = os.stat(os.path.join(package_dir, relative))
        assert (source.st_mtime_ns, source.st_size) == (mtime_ns, size), name
        code = marshal.loads(data[offset:offset + length])
        assert code.co_filename == f"{NODE_RUNTIME}/{version}/lib/cni-ipam/cni_ipam/{relative}", name


@pytest.mark.root
def test_plugins_on_the_node_import_from_the_bundle(node):
    """The node's interpreter, isolated as a launcher, serves our modules from the copy's bundle."""
    need_root()
    (version,) = version_dirs(node + NODE_RUNTIME)
    parent = f"{NODE_RUNTIME}/{version}/lib/cni-ipam"
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import cni_ipam.plugins.whereabouts as m; "
            "print(type(m.__spec__.loader).__name__, m.__file__, m.add.__code__.co_filename)")
    done = subprocess.run([CHROOT, node, f"{NODE_RUNTIME}/{version}/bin/{PYTHON_NAME}", "-IS", "-c", code, parent],
                          capture_output=True, text=True, env={}, timeout=60)
    assert done.returncode == 0, done.stderr
    source = f"{parent}/cni_ipam/plugins/whereabouts.py"
    assert done.stdout.split() == ["_CodeBundle", source, source]


def test_launchers_name_no_path_of_the_image(node):
    for name in PLUGINS:
        with open(f"{node}{NODE_BIN}/{name}") as f:
            text = f.read()
        assert node not in text and sys.prefix not in text and "/usr/" not in text


def test_the_bundle_holds_the_product_and_no_lab_module(node):
    """Only ``cni_ipam`` goes to the node: the test and demo harnesses (``cni_ipam_lab``) stay in the checkout,
    and only ``cni-ipam demo`` names them, importing them when it runs (it says they are missing on a node)."""
    runtime = node + NODE_RUNTIME
    (version,) = version_dirs(runtime)
    package_dir = os.path.join(runtime, version, "lib", "cni-ipam")
    assert os.listdir(package_dir) == ["cni_ipam"]
    naming = set()
    for parent, _, files in os.walk(package_dir):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(parent, name)) as f:
                    if "cni_ipam_lab" in f.read():
                        naming.add(os.path.relpath(os.path.join(parent, name), package_dir))
    assert naming == {"cni_ipam/cli.py"}
    done = subprocess.run([sys.executable, "-IS", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                           "from cni_ipam.cli import main; sys.exit(main(['demo']))", package_dir],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "needs the cni_ipam_lab package" in done.stderr, done


# --- upgrades -------------------------------------------------------------------------------------

def test_a_second_install_of_the_same_runtime_copies_nothing(tmp_path):
    """A restarted installer pod: current is made of the same interpreter, sources and paths."""
    need_patchelf()
    runtime, bin_dir = str(tmp_path / "rt"), str(tmp_path / "bin")
    install(bin_dir, runtime_dir=runtime)
    (first,) = version_dirs(runtime)
    made = os.stat(os.path.join(runtime, first, MARKER)).st_mtime_ns
    install(bin_dir, runtime_dir=runtime)
    assert version_dirs(runtime) == [first]
    assert os.stat(os.path.join(runtime, first, MARKER)).st_mtime_ns == made


def test_upgrade_switches_and_keeps_only_the_version_before(tmp_path, monkeypatch):
    """A plugin started from the old version just before the switch can still finish: that one stays,
    older ones, half-copied ones and what is not ours are handled as they should be."""
    need_patchelf()
    from cni_ipam import runtime_bundle

    runtime, bin_dir = str(tmp_path / "rt"), str(tmp_path / "bin")
    made_of = runtime_bundle.identity
    install(bin_dir, runtime_dir=runtime)
    (first,) = version_dirs(runtime)
    # What a killed installer leaves (a marked, half-copied version) is removed;
    # what is not ours is not touched.
    os.makedirs(os.path.join(runtime, "v0.0.0-crashed"))
    open(os.path.join(runtime, "v0.0.0-crashed", MARKER), "w").close()
    os.makedirs(os.path.join(runtime, "not-ours"))

    monkeypatch.setattr(runtime_bundle, "identity", lambda *a: made_of(*a) + "upgrade 1\n")
    install(bin_dir, runtime_dir=runtime)
    second = os.readlink(os.path.join(runtime, CURRENT))
    assert second != first
    assert sorted(os.listdir(runtime)) == sorted([".lock", CURRENT, first, second, "not-ours"])
    with open(os.path.join(bin_dir, "static")) as f:
        assert f.readline() == f"#!{runtime}/{second}/bin/{PYTHON_NAME} -IS\n"
    done = subprocess.run([os.path.join(bin_dir, "static")], env={"CNI_COMMAND": "VERSION"},
                          capture_output=True, text=True, timeout=60)
    assert json.loads(done.stdout)["supportedVersions"] == SUPPORTED

    monkeypatch.setattr(runtime_bundle, "identity", lambda *a: made_of(*a) + "upgrade 2\n")
    install(bin_dir, runtime_dir=runtime)
    third = os.readlink(os.path.join(runtime, CURRENT))
    assert sorted(version_dirs(runtime)) == sorted([second, third])


def test_a_broken_version_is_never_switched_to(tmp_path, monkeypatch):
    """The smoke check fails (no _sqlite3): the new version is removed, the old one stays in use."""
    need_patchelf()
    from cni_ipam import runtime_bundle

    runtime, bin_dir = str(tmp_path / "rt"), str(tmp_path / "bin")
    install(bin_dir, runtime_dir=runtime)
    (first,) = version_dirs(runtime)
    with open(os.path.join(bin_dir, "whereabouts")) as f:
        launcher = f.read()
    monkeypatch.setattr(runtime_bundle, "LEFT_OUT_EXTENSIONS", runtime_bundle.LEFT_OUT_EXTENSIONS + ("_sqlite3",))
    with pytest.raises(BundleError, match="_sqlite3"):
        install(bin_dir, runtime_dir=runtime)
    assert version_dirs(runtime) == [first]
    assert os.readlink(os.path.join(runtime, CURRENT)) == first
    with open(os.path.join(bin_dir, "whereabouts")) as f:
        assert f.read() == launcher


def test_bad_calls_are_refused_before_anything_is_written(tmp_path):
    need_patchelf()
    with pytest.raises(BundleError, match="not inside --host-root"):
        install(str(tmp_path / "bin"), runtime_dir=str(tmp_path / "rt"), host_root=str(tmp_path / "host"))
    with pytest.raises(ValueError, match="exclude each other"):
        install(str(tmp_path / "bin"), python="/usr/bin/python3", runtime_dir=str(tmp_path / "rt"))
    with pytest.raises(ValueError, match="needs --runtime-dir"):
        install(str(tmp_path / "bin"), host_root="/host")
    assert os.listdir(tmp_path) == []


# --- imports: the guard of tests/unit/test_plugin_imports.py, run on the bundle ------------------

def _load_import_guard():
    """tests/unit/test_plugin_imports.py as a module of its own (tests/unit is not a package)."""
    path = os.path.join(os.path.dirname(__file__), os.pardir, "unit", "test_plugin_imports.py")
    spec = importlib.util.spec_from_file_location("plugin_import_guard", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


guard = _load_import_guard()


@pytest.fixture(scope="module")
def plugin_bin_dir(tmp_path_factory):
    """Overrides tests/conftest.py's: launchers of a bundle installed in place (no host root),
    so the guard's fixture and test below run the bundled interpreter directly."""
    need_patchelf()
    directory = tmp_path_factory.mktemp("bundle-in-place")
    install(str(directory / "bin"), runtime_dir=str(directory / "rt"))
    return str(directory / "bin")


interpreter = guard.interpreter  # the guard's fixtures, now over the bundle's launchers
whereabouts_etcd, whereabouts_kube, dhcp_world = guard.whereabouts_etcd, guard.whereabouts_kube, guard.dhcp_world
test_bundled_plugin_imports_only_what_its_command_needs = guard.test_plugin_imports_only_what_its_command_needs

# The guard's backend whose ADD each plugin makes: whereabouts on SQLite, whose _sqlite3 the bundle carries.
ADD_BACKEND = {"static": "static", "whereabouts": "whereabouts sqlite", "dhcp": "dhcp"}
# What python -v says of each module file it loads: a .pyc, an extension module, or (for our modules) the code
# bundle (cni_ipam.code_bundle), with the module's name first.
LOADED_FROM = re.compile(r"^# (?:code object from|extension module '[^']+' loaded from|[\w.]+: code object from) "
                         r"'([^']+)'$", re.M)


@pytest.mark.parametrize("plugin", sorted(PLUGINS))
def test_bundled_plugin_loads_code_only_from_its_version(plugin, plugin_bin_dir, tmp_path, request):
    """Every module file a successful ADD loads (``python -v``) is inside the launcher's version dir."""
    launcher = os.path.join(plugin_bin_dir, plugin)
    python = guard.shebang_python(launcher)
    version = os.path.dirname(os.path.dirname(python))
    world = guard.world_for(ADD_BACKEND[plugin], request, str(tmp_path))
    env, stdin = guard.request_for("ADD", "1.0.0", guard.POD_ARGS, world, guard.new_attachment(world, "ADD"))
    done = subprocess.run([python, "-v", "-IS", launcher], input=stdin, env=env, capture_output=True,
                          timeout=60)
    assert done.returncode == 0 and json.loads(done.stdout)["ips"], f"{plugin} ADD did not succeed: {done.stdout!r}"
    stderr = done.stderr.decode(errors="replace")
    loaded = LOADED_FROM.findall(stderr)
    bundle = f"{version}/lib/cni-ipam/cni_ipam/__pycache__/bundle.{sys.implementation.cache_tag}.bin"
    assert f"# cni_ipam.plugins.{plugin}: code object from '{bundle}'" in stderr, "the plugin is not from its bundle"
    assert any("/lib-dynload/" in path for path in loaded), "no extension module was loaded: the check proves little"
    outside = [path for path in loaded if not path.startswith(version + "/")]
    assert not outside, f"{plugin} ADD loaded code from outside {version}: {outside}"
