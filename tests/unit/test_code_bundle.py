"""The code bundle (cni_ipam.code_bundle): launchers import our modules from it, and only while it is right.

Each test installs a copy of the package (``compile_package``, as ``cni-ipam
install`` does) and runs real interpreters on it: a launcher call, or
``-IS -c`` (isolated as launchers are) printing what the imported modules
look like, next to a normal import (``-S``, not isolated: the bundle is
not used there).  A module's ``__spec__.loader`` says where it came from.
"""

from __future__ import annotations

import json
import marshal
import os
import re
import shutil
import subprocess
import sys
import uuid

import pytest

import cni_ipam
from cni_ipam import code_bundle
from cni_ipam.cni import versions
from cni_ipam.install import compile_package, write_launchers

SOURCE_PACKAGE = os.path.dirname(cni_ipam.__file__)
# A package, plain modules, and the ones a whereabouts ADD on SQLite runs.
PROBED = ["cni_ipam.cni", "cni_ipam.cni.versions", "cni_ipam.cni.skel", "cni_ipam.plugins.whereabouts",
          "cni_ipam.store.sqlite", "cni_ipam.net.addr"]
BUNDLE, SOURCE = "_CodeBundle", "SourceFileLoader"  # the loaders' type names

# Prints, per module named on the command line, what a test compares; argv[1] is the dir holding cni_ipam.
PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
out = {}
for name in sys.argv[2:]:
    __import__(name)
    module = sys.modules[name]
    functions = [v for v in vars(module).values() if type(v).__name__ == "function" and v.__module__ == name]
    out[name] = {"loader": type(module.__spec__.loader).__name__, "__name__": module.__name__,
                 "__file__": module.__file__, "origin": module.__spec__.origin, "__cached__": module.__cached__,
                 "__path__": getattr(module, "__path__", None), "__package__": module.__package__,
                 "parent": module.__spec__.parent, "has_location": module.__spec__.has_location,
                 "names": sorted(vars(module)), "edited": getattr(module, "EDITED", None),
                 "co_filenames": sorted({f.__code__.co_filename for f in functions})}
print(json.dumps(out))
"""


def probe(parent: str, modules=PROBED, isolated: bool = True, flags: tuple = ()) -> dict:
    """Import ``modules`` from ``parent`` in a fresh interpreter, isolated (as a launcher) or not."""
    done = subprocess.run([sys.executable, "-IS" if isolated else "-S", *flags, "-c", PROBE, parent, *modules],
                          capture_output=True, text=True, env={}, cwd=parent, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def loaders(found: dict) -> dict:
    return {name: attributes["loader"] for name, attributes in found.items()}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> str:
    """A copy of the package, compiled and bundled as ``cni-ipam install`` does; the dir holding it."""
    parent = tmp_path_factory.mktemp("installed")
    shutil.copytree(SOURCE_PACKAGE, parent / "cni_ipam", ignore=shutil.ignore_patterns("__pycache__"))
    umask = os.umask(0o077)  # an installer's own; the bundle is still 0644, for launchers run by other users
    try:
        compile_package(str(parent))
    finally:
        os.umask(umask)
    return str(parent)


@pytest.fixture
def package(installed, tmp_path) -> str:
    """A copy of ``installed`` of the test's own, to change: ``copy2`` keeps the sources' times, so its
    bundle still matches them."""
    shutil.copytree(installed, tmp_path / "lib")
    return str(tmp_path / "lib")


def bundle_of(parent: str) -> str:
    return code_bundle.bundle_path(os.path.join(parent, "cni_ipam"))


def read_bundle(parent: str) -> tuple:
    """(bytes, index) of ``parent``'s bundle."""
    with open(bundle_of(parent), "rb") as f:
        data = f.read()
    start, length = int.from_bytes(data[8:12], "little"), int.from_bytes(data[12:16], "little")
    return data, marshal.loads(data[start:start + length])


def whereabouts_add(parent: str, tmp: str, flags: tuple = ()) -> subprocess.CompletedProcess:
    """One whereabouts ADD on SQLite through a launcher of ``parent``, as a runtime execs it (with ``flags``,
    through its shebang's interpreter, as test_plugin_imports.py does)."""
    bin_dir, store = os.path.join(tmp, "bin"), os.path.join(tmp, "store")
    if not os.path.exists(bin_dir):
        write_launchers(bin_dir, sys.executable, parent, ["whereabouts"])
        os.makedirs(store, mode=0o700)
        with open(os.path.join(store, "whereabouts.conf"), "w") as f:
            json.dump({"datastore": "sqlite", "sqlite_path": os.path.join(store, "db", "whereabouts.db")}, f)
    tag = uuid.uuid4().hex[:12]
    conf = {"cniVersion": "1.0.0", "name": "bundle", "type": "bridge",
            "ipam": {"type": "whereabouts", "range": "192.168.2.225/28",
                     "configuration_path": os.path.join(store, "whereabouts.conf")}}
    env = {"CNI_COMMAND": "ADD", "CNI_PATH": "/nonexistent", "CNI_IPAM_AGENT_SOCKET": "", "CNI_CONTAINERID": tag,
           "CNI_NETNS": "/run/netns/bundle-none", "CNI_IFNAME": "net1",
           "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p{tag}"}
    launcher = os.path.join(bin_dir, "whereabouts")
    argv = [sys.executable, *flags, "-IS", launcher] if flags else [launcher]
    done = subprocess.run(argv, input=json.dumps(conf).encode(), env=env, capture_output=True, timeout=60)
    assert done.returncode == 0 and json.loads(done.stdout)["ips"], done
    return done


# --- what install writes --------------------------------------------------------------------------

def test_install_writes_one_bundle_of_every_module(installed):
    package_dir = os.path.join(installed, "cni_ipam")
    path = bundle_of(installed)
    assert path == os.path.join(package_dir, "__pycache__", f"bundle.{sys.implementation.cache_tag}.bin")
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert not [name for name in os.listdir(os.path.dirname(path)) if name.endswith(".tmp")]
    data, index = read_bundle(installed)
    assert data[:8] == sys.modules["_frozen_importlib_external"].MAGIC_NUMBER + code_bundle.FORMAT
    sources = {os.path.relpath(os.path.join(d, f), package_dir) for d, _, files in os.walk(package_dir)
               for f in files if f.endswith(".py")} - {"__init__.py"}
    assert {entry[1] for entry in index.values()} == sources and len(sources) > 50
    for name, (is_package, relative, mtime_ns, size, offset, length) in index.items():
        source = os.stat(os.path.join(package_dir, relative))
        assert (source.st_mtime_ns, source.st_size) == (mtime_ns, size), name
        assert is_package == relative.endswith("/__init__.py")
        assert name == "cni_ipam." + relative[:-3].replace("/__init__", "").replace("/", ".")
        assert marshal.loads(data[offset:offset + length]).co_filename == os.path.join(package_dir, relative)


def test_the_bundle_is_replaced_whole_and_can_name_other_paths(package):
    """A rewrite is a new file renamed into place (a launcher holding the old one reads it to the end);
    ``seen_as`` names the sources as the node will see them (the runtime copy)."""
    package_dir = os.path.join(package, "cni_ipam")
    before = os.stat(bundle_of(package)).st_ino
    code_bundle.write(package_dir, seen_as="/node/lib/cni-ipam/cni_ipam")
    assert os.stat(bundle_of(package)).st_ino != before
    data, index = read_bundle(package)
    _, relative, _, _, offset, length = index["cni_ipam.store.sqlite"]
    assert marshal.loads(data[offset:offset + length]).co_filename == "/node/lib/cni-ipam/cni_ipam/store/sqlite.py"


def test_an_install_that_cannot_write_the_bundle_says_so_and_goes_on(package, tmp_path, capsys):
    """The .pyc files are enough to run: the launchers import from them."""
    path = bundle_of(package)
    os.unlink(path)
    os.mkdir(path)  # what cannot be replaced by a file, even by root
    compile_package(package)
    assert "no code bundle in" in capsys.readouterr().err
    assert set(loaders(probe(package)).values()) == {SOURCE}
    whereabouts_add(package, str(tmp_path))


# --- launchers use it, and get what a normal import gives -----------------------------------------

def test_a_launcher_call_imports_our_modules_from_the_bundle(installed, tmp_path):
    """Under ``-v`` the finder says each module it serves; no .pyc of ours is read but the package's own."""
    done = whereabouts_add(installed, str(tmp_path), flags=("-v",))
    stderr = done.stderr.decode()
    served = dict(re.findall(r"^# (cni_ipam[\w.]*): code object from '([^']+)'$", stderr, re.M))
    assert {"cni_ipam.plugins.whereabouts", "cni_ipam.store.sqlite", "cni_ipam.cni.skel"} <= served.keys(), stderr
    assert set(served.values()) == {bundle_of(installed)}
    ours = [path for path in re.findall(r"^# code object from '([^']+)'$", stderr, re.M)
            if path.startswith(os.path.join(installed, "cni_ipam") + "/")]
    assert [os.path.basename(path) for path in ours] == [f"__init__.{sys.implementation.cache_tag}.pyc"], ours


def test_modules_from_the_bundle_are_those_of_a_normal_import(installed):
    from_bundle, normal = probe(installed), probe(installed, isolated=False)
    assert set(loaders(from_bundle).values()) == {BUNDLE} and set(loaders(normal).values()) == {SOURCE}
    for name in PROBED:
        assert {**from_bundle[name], "loader": None} == {**normal[name], "loader": None}, name
    assert from_bundle["cni_ipam.cni"]["__path__"] == [os.path.join(installed, "cni_ipam", "cni")]
    assert from_bundle["cni_ipam.store.sqlite"]["co_filenames"] == [
        os.path.join(installed, "cni_ipam", "store", "sqlite.py")]


def test_a_moved_package_names_its_new_paths(package, tmp_path):
    """Copied with its caches (``copy2`` keeps the sources' times), the package is served from its bundle
    under its new paths, as importlib fixes a moved .pyc's file names (``_imp._fix_co_filename``)."""
    moved = str(tmp_path / "moved")
    shutil.copytree(package, moved)
    found = probe(moved, ["cni_ipam.store.sqlite"])["cni_ipam.store.sqlite"]
    assert found["loader"] == BUNDLE
    assert found["__file__"] == found["co_filenames"][0] == os.path.join(moved, "cni_ipam", "store", "sqlite.py")


def test_runpy_runs_a_module_from_the_bundle(installed):
    """``python -I -m cni_ipam.x`` asks the loader for the code (runpy)."""
    code = ("import sys, runpy; sys.path.insert(0, sys.argv[1]); "
            "found = runpy.run_module('cni_ipam.cni.versions'); print(found['LATEST'], found['__file__'])")
    done = subprocess.run([sys.executable, "-v", "-IS", "-c", code, installed], capture_output=True, text=True,
                          env={}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [versions.LATEST,
                                   os.path.join(installed, "cni_ipam", "cni", "versions.py")]
    assert f"# cni_ipam.cni.versions: code object from '{bundle_of(installed)}'" in done.stderr


def test_nothing_but_launchers_uses_it(installed):
    """Tests, daemons and the CLI import normally: not isolated, or optimized (the bundle has no -O code)."""
    assert not [finder for finder in sys.meta_path if type(finder).__name__ == BUNDLE]
    assert set(loaders(probe(installed, isolated=False)).values()) == {SOURCE}
    assert set(loaders(probe(installed, flags=("-O",))).values()) == {SOURCE}


# --- stale or broken: the normal import runs ------------------------------------------------------

def append_line(path: str, keep_mtime: bool) -> None:
    mtime_ns = os.stat(path).st_mtime_ns
    with open(path, "a") as f:
        f.write("EDITED = True\n")
    if keep_mtime:
        os.utime(path, ns=(mtime_ns, mtime_ns))


@pytest.mark.parametrize("edit", ["rewritten", "same mtime, other size", "touched"])
def test_an_edited_source_is_imported_from_it(package, tmp_path, edit):
    path = os.path.join(package, "cni_ipam", "cni", "versions.py")
    if edit == "touched":  # the same bytes, a new time: as make and editors leave a file
        later = os.stat(path).st_mtime_ns + 1_000_000
        os.utime(path, ns=(later, later))
    else:
        append_line(path, keep_mtime=edit != "rewritten")
    found = probe(package)
    assert loaders(found) == {**{name: BUNDLE for name in PROBED}, "cni_ipam.cni.versions": SOURCE}
    assert found["cni_ipam.cni.versions"]["edited"] is (None if edit == "touched" else True)
    whereabouts_add(package, str(tmp_path))


def rewrite_index(parent: str, change) -> None:
    """The bundle with its index changed by ``change(index, data)`` (which may return bytes to append, for
    entries to point at), written after the codes as :func:`code_bundle.bundle_bytes` lays it out."""
    data, index = read_bundle(parent)
    start = int.from_bytes(data[8:12], "little")
    extra = change(index, start) or b""
    index_bytes = marshal.dumps(index)
    header = data[:8] + (start + len(extra)).to_bytes(4, "little") + len(index_bytes).to_bytes(4, "little")
    with open(bundle_of(parent), "wb") as f:
        f.write(header + data[16:start] + extra + index_bytes)


def overwrite(parent: str, offset: int, replacement: bytes) -> None:
    with open(bundle_of(parent), "r+b") as f:
        f.seek(offset)
        f.write(replacement)


def truncate(parent: str, size) -> None:
    with open(bundle_of(parent), "r+b") as f:
        f.truncate(size(os.fstat(f.fileno()).st_size))


def entry(parent: str, name: str) -> tuple:
    return read_bundle(parent)[1][name]


WHOLE_FILE_DAMAGE = {
    "missing": lambda p: os.unlink(bundle_of(p)),
    "empty": lambda p: truncate(p, lambda size: 0),
    "cut in its header": lambda p: truncate(p, lambda size: 10),
    "cut in the codes": lambda p: truncate(p, lambda size: size // 2),
    "cut in its index": lambda p: truncate(p, lambda size: size - 10),
    "another interpreter's magic": lambda p: overwrite(p, 0, b"\x00\x00\r\n"),
    "another layout": lambda p: overwrite(p, 4, b"cnb0"),
    "garbage index": lambda p: overwrite(p, int.from_bytes(read_bundle(p)[0][8:12], "little"), b"\xff" * 64),
    "index not a dict": lambda p: overwrite(p, int.from_bytes(read_bundle(p)[0][8:12], "little"),
                                            marshal.dumps(["cni_ipam.cni"])),
}
ONE_MODULE_DAMAGE = {  # of cni_ipam.plugins.whereabouts
    "garbage code": lambda p: overwrite(p, entry(p, NAME)[4], b"\xff" * 32),
    "an integer for code": lambda p: rewrite_index(
        p, lambda index, end: index.update({NAME: (*index[NAME][:4], end, len(marshal.dumps(7)))})
        or marshal.dumps(7)),
    "an entry past the end": lambda p: rewrite_index(
        p, lambda index, end: index.update({NAME: (*index[NAME][:4], end + 10_000_000, 500)})),
    "an entry too short": lambda p: rewrite_index(p, lambda index, end: index.update({NAME: index[NAME][:3]})),
    "an entry of other types": lambda p: rewrite_index(p, lambda index, end: index.update({NAME: ("x",) * 6})),
}
NAME = "cni_ipam.plugins.whereabouts"


@pytest.mark.parametrize("damage", sorted(WHOLE_FILE_DAMAGE))
def test_a_broken_bundle_is_ignored(package, tmp_path, damage):
    WHOLE_FILE_DAMAGE[damage](package)
    assert set(loaders(probe(package)).values()) == {SOURCE}
    whereabouts_add(package, str(tmp_path))


@pytest.mark.parametrize("damage", sorted(ONE_MODULE_DAMAGE))
def test_a_broken_entry_is_imported_from_source(package, tmp_path, damage):
    ONE_MODULE_DAMAGE[damage](package)
    assert loaders(probe(package)) == {**{name: BUNDLE for name in PROBED}, NAME: SOURCE}
    whereabouts_add(package, str(tmp_path))
