"""The code bundle: this package's modules, compiled, in one file that plugin launchers import from.

A launcher's import of one of our modules normally stats the directories on
its path, then opens, reads and checks the module's ``.pyc`` through
importlib's Python-level path machinery: about 0.03 ms of CPU per module
beyond unmarshalling and running its code, and a whereabouts ADD imports
about 25 of them (issue 17).  ``cni-ipam install`` writes this file once
(:func:`write`, from :func:`cni_ipam.install.compile_package` and for the
runtime copy of :mod:`cni_ipam.runtime_bundle`), and in a launcher
``cni_ipam/__init__.py`` puts a finder in front of that machinery which
serves each module's code from it, after one ``stat`` of the module's
source (docs/install.md, "The code bundle").

The file, ``cni_ipam/__pycache__/bundle.<cache tag>.bin``, beside the
``.pyc`` files and for the same interpreter::

    bytes 0-3    importlib's magic number (the bytecode version, as in a .pyc)
    bytes 4-7    FORMAT, this layout's version
    bytes 8-11   where the index starts, little-endian
    bytes 12-15  the index's length, little-endian
    then         each module's code object, marshalled as in a .pyc
    then         the index, marshalled: {module name: (is package, source path relative to the package
                 directory, the source's st_mtime_ns, its st_size, where the code starts, its length)}

Source paths are relative so that one file serves the package wherever it is
seen from (an installer writes a runtime copy under the node's root, the node
runs it under its own path): the finder joins them to the package's
``__path__``, as a normal import would find them.  ``cni_ipam/__init__.py``
itself is not in the file: it is imported before the finder exists.
"""

from __future__ import annotations

import marshal
import os
import sys

PACKAGE = "cni_ipam"
FORMAT = b"cnb1"
HEADER_SIZE = 16


def bundle_path(package_dir: str) -> str:
    """Where the bundle of ``package_dir`` (the ``cni_ipam`` directory) is, for this interpreter."""
    return os.path.join(package_dir, "__pycache__", f"bundle.{sys.implementation.cache_tag}.bin")


def write(package_dir: str, seen_as: str | None = None) -> str:
    """Compile every module of ``package_dir`` and write the bundle, whole (through a rename); its path.

    ``seen_as`` is the package directory as the launchers will see it, when
    that is not ``package_dir`` (a runtime copy): the code objects name their
    files by it, as ``compileall``'s ``ddir`` does for the ``.pyc`` files.
    """
    modules = []
    for relative in sorted(module_files(package_dir)):
        compiled = compile_module(os.path.join(package_dir, relative), os.path.join(seen_as or package_dir, relative))
        if compiled is not None:
            modules.append((module_name(relative), relative, *compiled))
    path = bundle_path(package_dir)
    write_whole(path, bundle_bytes(modules))
    return path


def module_files(package_dir: str):
    """The ``.py`` files a normal import could load as ``cni_ipam.*``, relative to ``package_dir``:
    in regular packages (a directory with an ``__init__.py``), named as identifiers."""
    for directory, dirs, files in os.walk(package_dir):
        dirs[:] = [d for d in dirs if d.isidentifier() and os.path.exists(os.path.join(directory, d, "__init__.py"))]
        for name in files:
            relative = os.path.relpath(os.path.join(directory, name), package_dir)
            if name.endswith(".py") and name[:-3].isidentifier() and relative != "__init__.py":
                yield relative.replace(os.sep, "/")


def module_name(relative: str) -> str:
    """``plugins/whereabouts.py`` -> ``cni_ipam.plugins.whereabouts``; ``cni/__init__.py`` -> ``cni_ipam.cni``."""
    parts = relative[:-len(".py")].split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE, *parts])


def compile_module(source_path: str, filename: str) -> tuple | None:
    """``(st_mtime_ns, st_size, marshalled code)`` of one source, its code naming ``filename``; None when it does
    not compile (the launcher's normal import then reports the error, as without the bundle).

    The stat is taken before the read: a source edited after it no longer matches, so its stale code is never used.
    Optimization level 0, as launchers run (``-IS``, no ``-O``).
    """
    with open(source_path, "rb") as f:
        stat = os.fstat(f.fileno())
        source = f.read()
    try:
        code = compile(source, filename, "exec", dont_inherit=True, optimize=0)
    except (SyntaxError, ValueError):
        return None
    return stat.st_mtime_ns, stat.st_size, marshal.dumps(code)


def bundle_bytes(modules: list) -> bytes:
    """The file's bytes for ``modules``, each ``(name, relative path, mtime_ns, size, marshalled code)``."""
    from importlib.util import MAGIC_NUMBER

    index, codes, offset = {}, [], HEADER_SIZE
    for name, relative, mtime_ns, size, code in modules:
        index[name] = (relative.endswith("/__init__.py"), relative, mtime_ns, size, offset, len(code))
        codes.append(code)
        offset += len(code)
    index_bytes = marshal.dumps(index)
    header = MAGIC_NUMBER + FORMAT + offset.to_bytes(4, "little") + len(index_bytes).to_bytes(4, "little")
    return b"".join([header, *codes, index_bytes])


def write_whole(path: str, data: bytes) -> None:
    """Through a temporary file and a rename, mode 0644 (as ``.pyc`` files): a launcher reads the old file or
    the new one, never half of one.  Not synced, as ``.pyc`` files are not: a file a crash truncates is ignored."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
