"""Copy a self-contained Python runtime, with our package, onto a node.

The installer usually runs in a container image with the node's root
mounted at ``--host-root`` (``/host``); a launcher naming the image's
interpreter would not run on the node (RHCOS has no Python at all).  So we
copy the running interpreter, the shared libraries it and its extension
modules load, the dynamic loader, a trimmed standard library and
``cni_ipam`` into the node, then ``patchelf`` the copies so that they load
only each other: ``PT_INTERP`` names the copied loader by its path on the
node, and every ``RUNPATH`` names the copied ``lib/`` ($ORIGIN-relative).

Layout on the node (``RUNTIME`` is ``--runtime-dir`` without the host root)::

    RUNTIME/.lock                      flock: one installer at a time
    RUNTIME/current -> VERSION         for people and tools; plugins do not use it
    RUNTIME/VERSION/bin/python3.11     the interpreter (PT_INTERP, RUNPATH patched)
    RUNTIME/VERSION/lib/               ld-linux-*.so.2, libc.so.6, libssl.so.3, ...
    RUNTIME/VERSION/lib/python3.11/    the standard library (its os.py is the
                                       landmark from which Python finds its prefix)
    RUNTIME/VERSION/lib/cni-ipam/      the cni_ipam package, compiled
    RUNTIME/VERSION/bin/cni-ipam-forward  the native forwarder, when built (patched like the interpreter)

Each install writes a new ``VERSION`` directory, checks it, switches
``current`` and the launchers to it, then removes older versions but the
one before it: a plugin started from that one just before the switch can
finish its imports.  Launchers name ``VERSION`` itself, not ``current``: a
plugin process uses one version from its first byte to its last import,
never a mix.  An install that finds ``current`` already made from the same
interpreter, package and paths (its :func:`identity`, kept in the MARKER
file) copies nothing: a restarted installer pod costs no churn.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from .install import NATIVE_FORWARDER
from .plugins.table import PLUGINS, SERVED_BY_AGENT

MARKER = ".cni-ipam-runtime"  # in every version dir (only such dirs are ever removed); holds its identity
CURRENT = "current"
PYTHON_NAME = f"python{sys.version_info.major}.{sys.version_info.minor}"
STDLIB = os.path.join(sys.platlibdir, PYTHON_NAME)  # lib/python3.11: where getpath looks for os.py
PACKAGE_DIR = os.path.join("lib", "cni-ipam")

# Parts of the standard library no plugin imports: tests, GUIs, build files,
# installers and third-party packages (which -S would not see anyway).
LEFT_OUT_DIRS = {"test", "tests", "idle_test", "idlelib", "tkinter", "turtledemo", "ensurepip",
                 "lib2to3", "pydoc_data", "site-packages", "dist-packages"}
LEFT_OUT_DIR_PREFIXES = ("config-",)  # config-3.11-x86_64-linux-gnu: libpython*.a, Makefile (25 MB)
# Extension modules: test and GUI ones, and those for terminals (readline,
# curses) and old databases (dbm, NIS), which alone pull in 4.5 MB of
# libraries (ncurses, Berkeley DB, Kerberos, TI-RPC).
LEFT_OUT_EXTENSIONS = ("_test", "_ctypes_test", "_xxtestfuzz", "xxlimited", "_tkinter",
                       "readline", "_curses", "_dbm", "nis")

# Imported by the smoke check of a new version before anything points at it:
# the C modules the plugins use, each launcher's entry module, and each plugin
# the agent serves (its launcher imports it only when the agent does not answer).
SMOKE_IMPORTS = ("_json", "_socket", "_sqlite3", "_ssl", "select", "fcntl", "_struct",
                 *sorted({entry.split(":")[0] for entry in PLUGINS.values()} | set(SERVED_BY_AGENT.values())))


class BundleError(Exception):
    """The runtime could not be copied; the message says what to change."""


class Version:
    """One version directory, as the installer sees it and as the node sees it."""

    def __init__(self, path: str, node_path: str) -> None:
        self.path = path
        self.node_path = node_path

    @property
    def python(self) -> str:
        """The interpreter, by its path on the node (the launchers' shebang)."""
        return os.path.join(self.node_path, "bin", PYTHON_NAME)

    @property
    def native_forwarder(self) -> str:
        """The native forwarder's copy, by its path in the installer."""
        return os.path.join(self.path, "bin", os.path.basename(NATIVE_FORWARDER))

    @property
    def package_parent(self) -> str:
        """The directory holding ``cni_ipam``, by its path on the node."""
        return os.path.join(self.node_path, PACKAGE_DIR)


# --- paths ----------------------------------------------------------------------------------------

def node_path(path: str, host_root: str) -> str:
    """``path`` as the node sees it: the host root stripped, so ``/host/opt/x`` is ``/opt/x``."""
    path = os.path.abspath(path)
    if not host_root:
        return path
    root = os.path.abspath(host_root).rstrip("/")
    if not path.startswith(root + "/"):
        raise BundleError(f"--runtime-dir {path} is not inside --host-root {host_root}: "
                          f"give the runtime dir with the host root in front, e.g. {root}/var/lib/cni-ipam")
    return path[len(root):]


@contextlib.contextmanager
def locked(runtime_dir: str):
    """Hold ``RUNTIME/.lock``: two installers on one node (an old and a new pod) must not remove each
    other's version."""
    import fcntl

    os.makedirs(runtime_dir, exist_ok=True)
    fd = os.open(os.path.join(runtime_dir, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --- the whole build ------------------------------------------------------------------------------

def preflight(runtime_dir: str, host_root: str) -> str:
    """Refuse a bad call before anything is written; return the runtime dir's path on the node."""
    if shutil.which("patchelf") is None:
        raise BundleError("patchelf is not installed in the installer's image (apt-get install patchelf)")
    return node_path(runtime_dir, host_root)


def identity(package_parent: str, node_runtime: str) -> str:
    """What a version is made of: the interpreter, what is left out, the package's sources and the node path
    baked into the copies.  Two installs with the same identity would write the same version."""
    import hashlib

    from . import __version__

    digest = hashlib.sha256()
    package = os.path.join(package_parent, "cni_ipam")
    for directory, dirs, files in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(directory, name)
            digest.update(os.path.relpath(path, package).encode() + b"\0")
            with open(path, "rb") as f:
                digest.update(f.read() + b"\0")
    if os.path.exists(NATIVE_FORWARDER):
        with open(NATIVE_FORWARDER, "rb") as f:
            digest.update(b"native forwarder\0" + f.read())
    return "\n".join([f"cni-ipam {__version__}", f"python {sys.version.split()[0]} {os.path.realpath(sys.executable)}",
                      f"node {node_runtime}", f"left out {sorted(LEFT_OUT_DIRS)} {LEFT_OUT_DIR_PREFIXES} "
                      f"{LEFT_OUT_EXTENSIONS}", f"sources {digest.hexdigest()}"]) + "\n"


def stamp(path: str) -> str:
    """A version dir's identity ("" for a half-copied one: the MARKER is written empty first)."""
    try:
        with open(os.path.join(path, MARKER)) as f:
            return f.read()
    except OSError:
        return ""


def current_version(runtime_dir: str, host_root: str) -> Version | None:
    """The version ``current`` points at, if it is a whole one of ours."""
    try:
        name = os.readlink(os.path.join(runtime_dir, CURRENT))
    except OSError:
        return None
    path = os.path.join(os.path.abspath(runtime_dir), name)
    if "/" in name or not stamp(path):
        return None
    return Version(path, os.path.join(node_path(runtime_dir, host_root), name))


def build(runtime_dir: str, host_root: str, package_parent: str, made_of: str) -> Version:
    """Copy, patch, compile and check a new version dir; nothing points at it yet.

    ``package_parent`` holds the ``cni_ipam`` to copy (the one this process
    runs); ``made_of`` (its :func:`identity`) goes into the MARKER once the
    version has passed its check.
    """
    node_runtime = node_path(runtime_dir, host_root)
    path = tempfile.mkdtemp(prefix=version_prefix(), dir=os.path.abspath(runtime_dir))
    os.chmod(path, 0o755)
    open(os.path.join(path, MARKER), "w").close()  # first, so a half-copied version is removed later too
    version = Version(path, os.path.join(node_runtime, os.path.basename(path)))
    try:
        python = copy_interpreter(path)
        extensions = copy_stdlib(path)
        loader = copy_libraries(path, [python, *extensions])
        patch(version, python, loader, extensions)
        copy_native_forwarder(version, loader)
        copy_package(package_parent, version)
        compile_tree(version, STDLIB)
        smoke_check(version, loader)
        with open(os.path.join(path, MARKER), "w") as f:
            f.write(made_of)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return version


def version_prefix() -> str:
    """``v0.1.0-``: the package version, then mkdtemp's random suffix keeps every install apart."""
    from . import __version__

    return f"v{__version__}-"


def switch(runtime_dir: str, version: Version) -> None:
    """Point ``current`` at ``version`` with one rename: readers see the old or the new link."""
    tmp = os.path.join(runtime_dir, f".{CURRENT}.tmp.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(os.path.basename(version.path), tmp)  # relative: right in the container and on the node
    os.replace(tmp, os.path.join(runtime_dir, CURRENT))


def remove_old(runtime_dir: str, keep: Version) -> list:
    """Remove our version dirs (those holding MARKER) but ``keep`` and the newest other whole one,
    and stray temporary links; the dirs removed."""
    others = []
    for name in sorted(os.listdir(runtime_dir)):
        path = os.path.join(runtime_dir, name)
        if name.startswith(f".{CURRENT}.tmp."):
            os.unlink(path)  # left by an installer that died before its rename
        elif path != keep.path and not os.path.islink(path) and os.path.isfile(os.path.join(path, MARKER)):
            others.append(path)
    whole = [p for p in others if stamp(p)]  # a half-copied one (empty MARKER) is never kept
    previous = max(whole, key=lambda p: os.stat(os.path.join(p, MARKER)).st_mtime, default=None)
    removed = []
    for path in others:
        if path != previous:
            shutil.rmtree(path)
            removed.append(path)
    return removed


# --- copying --------------------------------------------------------------------------------------

def copy_interpreter(dest: str) -> str:
    """The real interpreter binary (a venv's python is only a symlink to it)."""
    os.makedirs(os.path.join(dest, "bin"))
    target = os.path.join(dest, "bin", PYTHON_NAME)
    shutil.copy2(os.path.realpath(sys.executable), target)
    return target


def copy_stdlib(dest: str) -> list:
    """Copy the trimmed standard library; return the extension modules copied."""
    source = sysconfig.get_path("stdlib")
    target = os.path.join(dest, STDLIB)
    for directory, dirs, files in os.walk(source):
        dirs[:] = [d for d in dirs if keep_dir(d)]
        relative = os.path.relpath(directory, source)
        if relative == "lib-dynload":
            continue  # copy_extensions: the interpreter's own, filtered
        if os.path.basename(directory) == "__pycache__":
            files = [f for f in files if keep_pyc(f, os.path.dirname(directory))]
        for name in files:
            copy_file(os.path.join(directory, name), os.path.join(target, relative, name), source)
    return copy_extensions(target)


def keep_dir(name: str) -> bool:
    return name not in LEFT_OUT_DIRS and not name.startswith(LEFT_OUT_DIR_PREFIXES)


def keep_pyc(name: str, source_dir: str) -> bool:
    """The plain ``.pyc`` of a module we copy; not ``.opt-1``/``.opt-2`` (plugins never run with -O)."""
    module, _, rest = name.partition(".")
    return rest == f"{sys.implementation.cache_tag}.pyc" and os.path.exists(os.path.join(source_dir, module + ".py"))


def copy_file(source: str, target: str, root: str) -> None:
    """Copy with times (so Debian's ``.pyc`` files stay valid); a symlink out of ``root`` is left out.

    (Debian's ``sitecustomize.py`` links to /etc; ``-S`` never imports it.)
    """
    real = os.path.realpath(source)
    if not real.startswith(os.path.realpath(root) + "/") or not os.path.isfile(real):
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copy2(real, target)


def copy_extensions(stdlib_target: str) -> list:
    """The C extension modules of ``lib-dynload``, less the test and GUI ones."""
    source = dynload_dir()
    target = os.path.join(stdlib_target, "lib-dynload")
    os.makedirs(target, exist_ok=True)
    copied = []
    for name in sorted(os.listdir(source)):
        if name.endswith(".so") and not name.startswith(LEFT_OUT_EXTENSIONS):
            shutil.copy2(os.path.join(source, name), os.path.join(target, name))
            copied.append(os.path.join(target, name))
    return copied


def dynload_dir() -> str:
    """The interpreter's own ``lib-dynload`` (in a venv, sysconfig's paths name the venv)."""
    for path in sys.path:
        if os.path.basename(path) == "lib-dynload" and os.path.isdir(path):
            return path
    raise BundleError(f"no lib-dynload directory on sys.path {sys.path}: cannot find the extension modules")


def copy_libraries(dest: str, elves: list) -> str:
    """Copy the loader of ``elves[0]`` and the shared-library closure of ``elves``; return the loader's name.

    Each library is copied under the name it is asked for (``libc.so.6``), from the file that name resolves to.
    """
    lib = os.path.join(dest, "lib")
    loader = run_patchelf("--print-interpreter", elves[0]).strip()
    shutil.copy2(os.path.realpath(loader), os.path.join(lib, os.path.basename(loader)))
    for soname, path in sorted(library_closure(elves).items()):
        if soname != os.path.basename(loader):
            shutil.copy2(os.path.realpath(path), os.path.join(lib, soname))
    return os.path.basename(loader)


def library_closure(elves: list) -> dict:
    """``{soname: path}`` for every library ``elves`` load, directly or not, read from ``ldd``."""
    done = subprocess.run(["ldd", *elves], capture_output=True, text=True)
    libraries, missing = {}, []
    for line in done.stdout.splitlines():
        soname, arrow, rest = line.strip().partition(" => ")
        if not arrow:
            continue  # "file:" headers, linux-vdso.so.1, the loader's own line
        if rest.startswith("not found"):
            missing.append(soname)
        else:
            libraries[soname] = rest.rsplit(" (", 1)[0]
    if missing or done.returncode != 0:
        raise BundleError(f"ldd cannot resolve the libraries of the interpreter or its extension modules "
                          f"(missing: {sorted(set(missing))}): {done.stderr.strip()}; "
                          "install them in the installer's image")
    return libraries


def copy_package(package_parent: str, version: Version) -> None:
    """``cni_ipam`` without its caches, then compiled for the node's paths: ``.pyc`` files and its own code
    bundle (cni_ipam.code_bundle), whose code names the sources by their node paths too."""
    from . import code_bundle

    source = os.path.join(package_parent, "cni_ipam")
    target = os.path.join(version.path, PACKAGE_DIR, "cni_ipam")
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    compile_tree(version, PACKAGE_DIR)
    code_bundle.write(target, seen_as=os.path.join(version.node_path, PACKAGE_DIR, "cni_ipam"))


def compile_tree(version: Version, relative: str) -> None:
    """Write ``.pyc`` files now (the node's copy may be read-only), naming sources by their node path."""
    import compileall

    ok = compileall.compile_dir(os.path.join(version.path, relative), quiet=1, workers=0,
                                ddir=os.path.join(version.node_path, relative))
    if not ok:
        raise BundleError(f"could not compile {relative} in {version.path}")


# --- patching and checking ------------------------------------------------------------------------

def run_patchelf(*args: str) -> str:
    done = subprocess.run(["patchelf", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise BundleError(f"patchelf {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def patch(version: Version, python: str, loader_name: str, extensions: list) -> None:
    """Make every copied ELF load the copied loader and libraries, never the node's.

    The interpreter's RUNPATH also names ``lib`` by its absolute node path:
    glibc finds an executable's $ORIGIN in /proc/self/exe, and a plugin may
    run where /proc is not mounted.  Libraries find theirs from their own path.
    """
    lib = os.path.join(version.path, "lib")
    loader = os.path.join(version.node_path, "lib", loader_name)
    run_patchelf("--set-interpreter", loader,
                 "--set-rpath", f"{origin_rpath(python, lib)}:{os.path.join(version.node_path, 'lib')}", python)
    libraries = [os.path.join(lib, name) for name in sorted(os.listdir(lib))
                 if ".so" in name and name != loader_name and os.path.isfile(os.path.join(lib, name))]
    for path in libraries + extensions:
        run_patchelf("--set-rpath", origin_rpath(path, lib), path)
        if has_interpreter(path):  # libc.so.6 is also a program (it prints its version)
            run_patchelf("--set-interpreter", loader, path)


def copy_native_forwarder(version: Version, loader_name: str) -> None:
    """Copy the native forwarder, when built, to load the copied loader and libc: the node's glibc may be
    older than the image's.  Like the interpreter, it names ``lib`` by its absolute node path."""
    if not os.path.exists(NATIVE_FORWARDER):
        return
    shutil.copy2(NATIVE_FORWARDER, version.native_forwarder)
    run_patchelf("--set-interpreter", os.path.join(version.node_path, "lib", loader_name),
                 "--set-rpath", os.path.join(version.node_path, "lib"), version.native_forwarder)


def has_interpreter(elf: str) -> bool:
    return subprocess.run(["patchelf", "--print-interpreter", elf], capture_output=True).returncode == 0


def origin_rpath(elf: str, lib: str) -> str:
    relative = os.path.relpath(lib, os.path.dirname(elf))
    return "$ORIGIN" if relative == "." else f"$ORIGIN/{relative}"


def smoke_check(version: Version, loader_name: str) -> None:
    """Run the new interpreter (through its copied loader) and import what the plugins need.

    A version that cannot do this is removed before anything points at it.
    (The node paths of PT_INTERP need not exist in the installer's container, so the loader is run by hand.)
    """
    loader = os.path.join(version.path, "lib", loader_name)
    code = (f"import sys; sys.path.insert(0, {os.path.join(version.path, PACKAGE_DIR)!r}); "
            f"import {', '.join(SMOKE_IMPORTS)}; print(sys.prefix)")
    python = os.path.join(version.path, "bin", PYTHON_NAME)
    done = subprocess.run([loader, "--inhibit-cache", python, "-IS", "-c", code], capture_output=True, text=True, env={})
    if done.returncode != 0 or done.stdout.strip() != version.path:
        raise BundleError(f"the copied runtime in {version.path} does not work "
                          f"(prefix {done.stdout.strip()!r}): {done.stderr.strip()[-2000:]}")
