"""The layering drawn in docs/architecture.md, enforced on every module of ``src/cni_ipam``.

The test reads the table of parts in docs/architecture.md ("part | modules |
may import") and checks each import in the source, read with ``ast`` so that
lazy imports inside functions and imports on paths no test takes count too.
An import inside one part is always allowed; across parts, only what the
part's row names.  So the drawing cannot drift from the code: changing one
without the other fails here.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import cni_ipam

SRC = pathlib.Path(cni_ipam.__file__).parent
DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
TOP_LEVEL = {p.stem for p in SRC.glob("*.py")} | {p.name for p in SRC.iterdir() if (p / "__init__.py").exists()}


def read_table(text: str) -> list:
    """``[(part, [module prefixes], [allowed prefixes] or None for everything)]`` from the doc's table."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or "`" not in cells[1]:
            continue
        names = lambda cell: [n.strip().strip("`") for n in cell.split(",") if n.strip()]  # noqa: E731
        rows.append((cells[0], names(cells[1]), None if cells[2] == "everything" else names(cells[2])))
    return rows


def module_name(path: pathlib.Path) -> str:
    """``store.sqlite`` for src/cni_ipam/store/sqlite.py; ``__init__`` for the package itself."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def imports_of(path: pathlib.Path) -> set:
    """Every cni_ipam module (or name in one) that ``path`` imports, as ``store.sqlite``, ``__init__``...;
    other packages as ``!name`` (``!cni_ipam_lab`` for the lab)."""
    package = ["cni_ipam"] + list(path.relative_to(SRC).parent.parts)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names = [f"{module}.{alias.name}" for alias in node.names]  # the alias may be a submodule
            if node.module:
                names.append(module)
        for name in names:
            first, _, rest = name.partition(".")
            if first != "cni_ipam":
                found.add("!" + first)
            elif not rest or rest.split(".")[0] not in TOP_LEVEL:
                found.add("__init__")  # the package itself (__version__)
            else:
                found.add(rest)
    return found


def within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


TABLE = read_table(DOC.read_text())
SOURCES = sorted(SRC.rglob("*.py"))


def part_of(module: str):
    for part, modules, allowed in TABLE:
        if within(module, modules):
            return part, modules, allowed
    return None


def test_the_table_was_read_and_covers_every_module():
    assert len(TABLE) >= 10, "docs/architecture.md lost its table of parts"
    unplaced = [module_name(p) for p in SOURCES if part_of(module_name(p)) is None]
    assert unplaced == [], f"modules in no part of docs/architecture.md: {unplaced}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_follow_the_drawing(path):
    me = module_name(path)
    part, own, allowed = part_of(me)
    ours = {m for m in imports_of(path) if not m.startswith("!") and m != "__init__"}  # the version: any part
    wrong = sorted(m for m in ours if not within(m, own) and allowed is not None and not within(m, allowed))
    assert wrong == [], f"{me} ({part}) imports {wrong}, which docs/architecture.md does not allow"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SRC)))
def test_the_product_never_imports_the_lab(path):
    if module_name(path) == "cli":
        return  # cni-ipam demo: lazily, and with a clear message where the lab is not installed
    assert "!cni_ipam_lab" not in imports_of(path)


def test_the_checker_sees_every_spelling(tmp_path, monkeypatch):
    """Absolute, relative, lazy, ``from .. import x`` and the package itself all count."""
    fake = SRC / "net" / "_architecture_probe.py"
    source = ("import cni_ipam.store.sqlite\nfrom ..cni.errors import invalid_config\nfrom .. import config\n"
              "from . import addr\nfrom .. import __version__\ndef f():\n    from cni_ipam.allocator import core\n"
              "    import cni_ipam_lab.demo\n")
    monkeypatch.setattr(pathlib.Path, "read_text", lambda self, *a, **k: source)
    found = imports_of(fake)
    assert {"store.sqlite", "cni.errors", "config", "net.addr", "__init__", "allocator", "!cni_ipam_lab"} <= found
    part, own, allowed = part_of(module_name(fake))
    assert part == "address math"
    assert sorted(m for m in found if not m.startswith("!") and not within(m, own + allowed)) == [
        "__init__", "allocator", "allocator.core", "cni.errors", "cni.errors.invalid_config", "config",
        "store.sqlite"]


def test_the_table_parser_reads_rows_and_everything():
    rows = read_table("| part | modules | may import |\n|---|---|---|\n| a | `x`, `y.z` | `jsonlite` |\n"
                      "| top | `cli` | everything |\n| prose | no code here | nothing |\n")
    assert rows == [("a", ["x", "y.z"], ["jsonlite"]), ("top", ["cli"], None)]


def names_imported_from_our_modules(path: pathlib.Path) -> set:
    """``(module, name)`` for each ``from <cni_ipam module> import name`` in ``path``, lazy ones included."""
    package = ["cni_ipam"] + list(path.relative_to(SRC).parent.parts)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("cni_ipam")):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            if module.split(".")[0] == "cni_ipam":
                found.update((module, alias.name) for alias in node.names)
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SRC)))
def test_every_name_imported_from_our_modules_exists(path):
    """A lazy import of a name that moved fails only when its path runs (an error path, often): find it here."""
    import importlib

    missing = []
    for module, name in sorted(names_imported_from_our_modules(path)):
        if name == "*" or hasattr(importlib.import_module(module), name):
            continue
        try:
            importlib.import_module(f"{module}.{name}")
        except ModuleNotFoundError:
            missing.append(f"from {module} import {name}")
    assert missing == [], f"{module_name(path)} imports names that do not exist: {missing}"
