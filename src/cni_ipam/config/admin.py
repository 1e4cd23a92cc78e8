"""Which store (and which networks) the daemons and admin commands work on.

``cni-ipam`` commands and the reconciler take ``--config FILE``: a
whereabouts flat file (``whereabouts.conf``: top-level keys), a network
configuration (its ``ipam`` object) or a conflist (the first plugin with an
``ipam``).  Without it they read the flat file from whereabouts' standard
locations, like the plugin does; with neither, the embedded default store.
"""

from __future__ import annotations

from .whereabouts import FLAT_FILE_PATHS


class ConfigFileError(Exception):
    """The file named with --config cannot be used; the message says why."""


def ipam_of(document: dict) -> dict:
    """The IPAM settings inside any of the three file shapes."""
    if isinstance(document.get("plugins"), list):
        for plugin in document["plugins"]:
            if isinstance(plugin, dict) and isinstance(plugin.get("ipam"), dict):
                return plugin["ipam"]
        raise ConfigFileError("the conflist has no plugin with an ipam section")
    if isinstance(document.get("ipam"), dict):
        return document["ipam"]
    return document


def read_config(path: str | None = None) -> tuple:
    """(ipam settings, the file they came from or None)."""
    from ..jsonlite import loads

    candidates = [path] if path else list(FLAT_FILE_PATHS)
    for candidate in candidates:
        try:
            with open(candidate, "rb") as handle:
                document = loads(handle.read())
        except FileNotFoundError:
            if path:
                raise ConfigFileError(f"{path}: no such file") from None
            continue
        except (OSError, ValueError) as exc:
            raise ConfigFileError(f"{candidate}: {exc}") from None
        if not isinstance(document, dict):
            raise ConfigFileError(f"{candidate}: expected a JSON object")
        return ipam_of(document), candidate
    return {}, None
