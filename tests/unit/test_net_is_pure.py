"""The address math (``cni_ipam.net``) imports none of the layers that use it.

``net/`` is pure: it raises its own ``AddressError`` and ``config/`` turns
that into CNI's "invalid config" error.  So no module of ``net/`` may import
the CNI protocol, the config readers, the stores or the allocator, not even
lazily inside a function.  The source is read with ``ast``, so an import on
a path the tests never take still counts.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import cni_ipam.net

NET_DIR = pathlib.Path(cni_ipam.net.__file__).parent
FORBIDDEN = ("cni_ipam.cni", "cni_ipam.config", "cni_ipam.store", "cni_ipam.allocator")


def imported_modules(path: pathlib.Path) -> set:
    """Every module ``path`` imports, relative imports resolved against ``cni_ipam.net``."""
    package = ["cni_ipam", "net"]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.add(module)
            # ``from .. import cni`` names the subpackage in the alias, not in the module.
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def forbidden(modules) -> list:
    return sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))


def test_resolution_catches_each_spelling(tmp_path):
    """The checker itself: absolute, relative, lazy and ``from .. import`` forms all count."""
    source = tmp_path / "sample.py"
    source.write_text("import cni_ipam.store.sqlite\n"
                      "from ..cni.errors import invalid_config\n"
                      "from .. import config\n"
                      "from . import addr\n"
                      "def f():\n"
                      "    from cni_ipam.allocator import core\n")
    assert forbidden(imported_modules(source)) == [
        "cni_ipam.allocator", "cni_ipam.allocator.core", "cni_ipam.cni.errors", "cni_ipam.cni.errors.invalid_config",
        "cni_ipam.config", "cni_ipam.store.sqlite"]
    assert "cni_ipam.net.addr" in imported_modules(source)


@pytest.mark.parametrize("path", sorted(NET_DIR.glob("*.py")), ids=lambda p: p.name)
def test_net_module_imports_no_upper_layer(path):
    assert forbidden(imported_modules(path)) == [], f"{path.name} must stay free of cni/config/store/allocator"
