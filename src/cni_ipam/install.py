"""Put our plugin executables into a CNI bin directory.

Each executable is a tiny launcher run by this environment's interpreter
with ``-IS`` (isolated, no ``site``): no ``.pth`` hooks, no user site, no
``PYTHON*`` variables, so a CNI call pays for Python start-up and the
modules its command needs, nothing more.  The absolute interpreter path
matters because runtimes (conmon's DEL) call plugins with almost no PATH.

An installer in a container image passes ``runtime_dir`` (and the node's
root, ``host_root``): the launchers then run a copy of the interpreter,
its libraries and this package on the node (docs/install.md).
"""

from __future__ import annotations

import os
import sys

from .plugins.table import PLUGINS, SERVED_BY_AGENT

DEFAULT_BIN_DIR = "/opt/cni/bin"
MARKER = "# cni-ipam launcher, written by 'cni-ipam install'; do not edit."
# The native forwarder to the node agent (native/cni-ipam-forward.c), where `make setup` and the
# Containerfile build it: beside this environment's interpreter.
NATIVE_FORWARDER = os.path.join(sys.prefix, "libexec", "cni-ipam", "cni-ipam-forward")


def python_launcher_name(name: str) -> str:
    """With ``--native``, the Python launcher's name beside the forwarder (which execs it when the agent
    does not answer: native/cni-ipam-forward.c, launcher_path)."""
    return f".{name}-py"


def read_native_forwarder(path: str = NATIVE_FORWARDER) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ValueError(f"no native forwarder at {path}: build it with 'make setup' "
                         f"(or native/build.sh {path})") from None


def package_parent() -> str:
    """The directory holding the ``cni_ipam`` package (``src/`` in a checkout)."""
    import cni_ipam

    return os.path.dirname(os.path.dirname(os.path.abspath(cni_ipam.__file__)))


def launcher_text(python: str, parent: str, entry: str) -> str:
    module, function = entry.split(":")
    return (f"#!{python} -IS\n"
            f"{MARKER}\n"
            f"import sys\n"
            f"sys.path.insert(0, {parent!r})\n"
            f"from {module} import {function}\n"
            f"{function}()\n")


def compile_package(parent: str) -> None:
    """Write ``.pyc`` files and the code bundle now: at run time the bin and lib dirs may be read-only.

    Without the bundle (a package dir this user cannot write) the launchers import from the ``.pyc``
    files, about 1 ms more CPU per whereabouts call (docs/install.md): said on stderr, not an error.
    """
    import compileall

    from . import code_bundle

    package_dir = os.path.join(parent, "cni_ipam")
    compileall.compile_dir(package_dir, quiet=1)
    try:
        code_bundle.write(package_dir)
    except OSError as exc:
        print(f"cni-ipam install: no code bundle in {package_dir} ({exc}): plugins will import from .pyc files",
              file=sys.stderr)


def install(bin_dir: str = DEFAULT_BIN_DIR, python: str | None = None, names=None,
            runtime_dir: str | None = None, host_root: str = "", native: bool = False) -> list:
    """Write the launchers (their paths are returned); see :func:`install_launchers`."""
    return list(install_launchers(bin_dir, python, names, runtime_dir, host_root, native))


def install_launchers(bin_dir: str = DEFAULT_BIN_DIR, python: str | None = None, names=None,
                      runtime_dir: str | None = None, host_root: str = "", native: bool = False) -> dict:
    """Write the launchers, ``{path: bytes written}``; with ``runtime_dir``, first copy a runtime for them.

    Without ``runtime_dir`` the launchers run this environment's interpreter
    and package in place.  With it (an installer in a container image),
    they run a copy the node can run by itself: see :mod:`cni_ipam.runtime_bundle`.
    With ``native``, the plugins the agent serves are the native forwarder, their Python launchers beside it.
    """
    if runtime_dir is None:
        if host_root:
            raise ValueError("host_root only applies with runtime_dir (--host-root needs --runtime-dir)")
        parent = package_parent()
        written = write_launchers(bin_dir, python or sys.executable, parent, names,
                                  read_native_forwarder() if native else None)
        compile_package(parent)
        return written
    if python:
        raise ValueError("python and runtime_dir exclude each other: the runtime brings its own interpreter")
    if native:
        read_native_forwarder()  # refuse before anything is copied
    return install_with_runtime(bin_dir, runtime_dir, host_root, names, native)


def install_with_runtime(bin_dir: str, runtime_dir: str, host_root: str, names=None, native: bool = False) -> dict:
    """Copy a new runtime version unless ``current`` is already the same, switch to it, write the
    launchers, then drop older versions but the one before (under a lock: one installer at a time)."""
    from . import runtime_bundle

    node_runtime = runtime_bundle.preflight(runtime_dir, host_root)
    with runtime_bundle.locked(runtime_dir):
        made_of = runtime_bundle.identity(package_parent(), node_runtime)
        version = runtime_bundle.current_version(runtime_dir, host_root)
        if version is None or runtime_bundle.stamp(version.path) != made_of:
            version = runtime_bundle.build(runtime_dir, host_root, package_parent(), made_of)
            runtime_bundle.switch(runtime_dir, version)
        forwarder = read_native_forwarder(version.native_forwarder) if native else None
        written = write_launchers(bin_dir, version.python, version.package_parent, names, forwarder)
        runtime_bundle.remove_old(runtime_dir, keep=version)
    return written


def write_launchers(bin_dir: str, python: str, parent: str, names=None, native: bytes | None = None) -> dict:
    """Write the launchers, each whole (a running plugin never sees half a file); ``{path: bytes}``.

    With ``native`` (the forwarder's bytes), a plugin the agent serves gets its Python launcher under
    :func:`python_launcher_name` first, then the forwarder under its own name.
    """
    os.makedirs(bin_dir, exist_ok=True)
    written = {}
    for name in names or PLUGINS:
        launcher = launcher_text(python, parent, PLUGINS[name]).encode()
        if native is not None and name in SERVED_BY_AGENT:
            written[os.path.join(bin_dir, python_launcher_name(name))] = launcher
            written[os.path.join(bin_dir, name)] = native
        else:
            written[os.path.join(bin_dir, name)] = launcher
    for path, data in written.items():
        write_executable(path, data)
    return written


def write_executable(path: str, data: bytes) -> None:
    """Through a temporary file and a rename, mode 0755."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as out:
        out.write(data)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)


def restore_launchers(expected: dict) -> list:
    """Write back every launcher whose content is not ours any more (replaced or removed); the paths restored.

    On OpenShift, the operator's ``multus-additional-cni-plugins`` pods copy
    Go's ``static``, ``dhcp`` and ``whereabouts`` into the same bin dir each
    time they start; a Go whereabouts then serving some pods next to ours
    would hand out addresses ours holds.
    """
    restored = []
    for path, data in expected.items():
        try:
            with open(path, "rb") as f:
                if f.read() == data:
                    continue
        except FileNotFoundError:
            pass
        write_executable(path, data)
        restored.append(path)
    return restored


def keep_installed(expected: dict, every: float, stop, report) -> None:
    """Every ``every`` seconds until ``stop`` (a threading.Event) is set, restore what was replaced;
    ``report(path)`` is told each restore, and ``report(path, error)`` each failure to restore."""
    while not stop.wait(every):
        try:
            for path in restore_launchers(expected):
                report(path)
        except OSError as exc:
            report(getattr(exc, "filename", None) or "?", exc)
