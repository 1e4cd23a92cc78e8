"""The few ``os`` and ``os.path`` functions the plugins' hot paths use, on ``posix``, the C module ``os`` wraps.

Why: ``import os`` costs about 1.5 ms per plugin process (it loads ``stat``,
``posixpath``, ``genericpath`` and ``_collections_abc``), on every CNI call;
``posix`` is loaded at interpreter start-up and ``_stat`` is a small C module.
Everything else of ``posix`` (``open``, ``stat``, ``chmod``...) is used
directly; these are the pure-Python parts of ``os.path`` that have no C
twin, written for ``str`` paths as configs give them, with the same results
(tests/unit/test_oslite.py compares them with ``posixpath``).
"""

import posix
from _stat import S_IMODE, S_ISDIR, S_ISLNK, S_ISREG, S_ISVTX, S_IWOTH  # noqa: F401  (for our callers)


def getenv(name: str):
    """One environment variable: from ``os.environ`` when ``os`` is loaded (a daemon or a test may have
    changed it), else from ``posix``'s copy of the process environment."""
    import sys

    os = sys.modules.get("os")
    if os is not None:
        return os.environ.get(name)
    value = posix.environ.get(name.encode("utf-8", "surrogateescape"))
    return None if value is None else value.decode("utf-8", "surrogateescape")


def exists(path: str) -> bool:
    """``os.path.exists``."""
    try:
        posix.stat(path)
    except (OSError, ValueError):
        return False
    return True


def isdir(path: str) -> bool:
    """``os.path.isdir``."""
    try:
        return S_ISDIR(posix.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def join(path: str, *parts: str) -> str:
    """``os.path.join``: an absolute part starts over."""
    for part in parts:
        if part.startswith("/"):
            path = part
        elif not path or path.endswith("/"):
            path += part
        else:
            path += "/" + part
    return path


def dirname(path: str) -> str:
    """``os.path.dirname``: all before the last slash, without trailing slashes unless it is all slashes."""
    head = path[:path.rfind("/") + 1]
    return head.rstrip("/") or head


def basename(path: str) -> str:
    """``os.path.basename``."""
    return path[path.rfind("/") + 1:]


def normpath(path: str) -> str:
    """``os.path.normpath``: no ``.``, no empty parts, ``..`` taken back where it can be (POSIX keeps exactly
    two leading slashes)."""
    if not path:
        return "."
    lead = 2 if path.startswith("//") and not path.startswith("///") else 1 if path.startswith("/") else 0
    parts = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part != ".." or (not lead and not parts) or (parts and parts[-1] == ".."):
            parts.append(part)
        elif parts:
            parts.pop()
    return "/" * lead + "/".join(parts) or "."


def abspath(path: str) -> str:
    """``os.path.abspath``."""
    return normpath(path if path.startswith("/") else join(posix.getcwd(), path))
