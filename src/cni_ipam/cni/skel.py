"""The dispatch loop every plugin executable runs (Go's ``skel``).

:func:`dispatch` is pure: environment and a stdin reader in; the text for
stdout and stderr and the exit code out.  :func:`main` is the only place
that touches the process.  Nothing is imported at module level beyond what
VERSION needs, so ``CNI_COMMAND=VERSION`` costs no more than Python start-up.
"""

from . import versions
from .errors import INTERNAL, CNIError


class Plugin:
    """A plugin's name, its ``--help``-like about line, and its command handlers.

    ``commands`` maps ``ADD``/``DEL``/``CHECK``/``GC``/``STATUS`` to a
    function taking a :class:`~cni_ipam.cni.request.Request` and returning a
    :class:`~cni_ipam.cni.result.Result` (ADD) or ``None``.  A handler imports
    what it needs when it runs.
    """

    __slots__ = ("name", "about", "commands")

    def __init__(self, name: str, about: str, commands: dict) -> None:
        self.name = name
        self.about = about
        self.commands = commands


class Outcome:
    """What the process prints and how it exits."""

    __slots__ = ("stdout", "stderr", "exit_code")

    def __init__(self, stdout: str = "", stderr: str = "", exit_code: int = 0) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.exit_code = exit_code

    def __repr__(self):
        return f"Outcome(exit={self.exit_code}, stdout={self.stdout!r}, stderr={self.stderr!r})"


def version_text() -> str:
    """VERSION's answer, built without importing json."""
    supported = ",".join(f'"{v}"' for v in versions.SUPPORTED)
    return f'{{"cniVersion":"{versions.LATEST}","supportedVersions":[{supported}]}}\n'


def about_text(plugin: Plugin) -> str:
    from cni_ipam import __version__

    return (f"CNI {plugin.name} plugin (cni-ipam {__version__}): {plugin.about}\n"
            f"CNI protocol versions supported: {', '.join(versions.SUPPORTED)}\n")


def error_outcome(error: CNIError, cni_version: str, stderr: str = "") -> Outcome:
    from ..jsonlite import dumps

    return Outcome(dumps(error.as_dict(cni_version)) + "\n", stderr, 1)


def dispatch(plugin: Plugin, env: dict, read_stdin) -> Outcome:
    """Run one CNI call and say what to print."""
    if not env.get("CNI_COMMAND"):
        return Outcome(stderr=about_text(plugin))
    if env.get("CNI_COMMAND") == "VERSION":
        return Outcome(version_text())
    from .request import NothingToDo, build_request

    cni_version = versions.LATEST
    request = None
    try:
        request = build_request(env, read_stdin)
        cni_version = request.cni_version
        handler = plugin.commands.get(request.command)
        if handler is None:  # a command this plugin has nothing to do for
            return Outcome()
        result = handler(request)
        warnings = "".join(f"{plugin.name}: warning: {w}\n" for w in request.warnings)
        if result is None:
            return Outcome(stderr=warnings)
        from ..jsonlite import dumps
        from .result import to_dict

        return Outcome(dumps(to_dict(result, cni_version)) + "\n", warnings)
    except NothingToDo as done:
        return Outcome(stderr=f"{plugin.name}: warning: {done}\n")
    except CNIError as error:
        warnings = "".join(f"{plugin.name}: warning: {w}\n" for w in request.warnings) if request else ""
        return error_outcome(error, cni_version if cni_version in versions.SUPPORTED else versions.LATEST, warnings)
    except Exception as exc:  # a bug: still answer in CNI form, with the traceback on stderr
        import traceback

        error = CNIError(INTERNAL, f"internal error: {type(exc).__name__}: {exc}",
                         "this is a bug in cni-ipam; the traceback is on stderr")
        return error_outcome(error, cni_version if cni_version in versions.SUPPORTED else versions.LATEST,
                             traceback.format_exc())


def main(plugin: Plugin, stdin: "bytes | None" = None) -> None:
    """Run one CNI call in this process; ``stdin`` when it was read already."""
    import sys

    def read_stdin() -> bytes:
        if stdin is not None:
            return stdin
        try:
            from . import MAX_STDIN

            return sys.stdin.buffer.read(MAX_STDIN + 1)  # one byte more tells a larger stdin apart
        except OSError as exc:
            from .errors import IO_FAILURE

            raise CNIError(IO_FAILURE, f"error reading from stdin: {exc}") from None

    from . import environment

    outcome = dispatch(plugin, environment(), read_stdin)
    if outcome.stdout:
        sys.stdout.write(outcome.stdout)
        sys.stdout.flush()
    if outcome.stderr:
        sys.stderr.write(outcome.stderr)
    if in_launcher():
        sys.stderr.flush()
        import posix

        posix._exit(outcome.exit_code)  # nothing left to tidy: see in_launcher
    sys.exit(outcome.exit_code)


def in_launcher() -> bool:
    """True in a plugin executable: ``cni-ipam install`` writes launchers that run the interpreter with
    ``-IS``, and nothing else runs :func:`main` isolated.

    :func:`main` then ends the process with ``_exit`` once the answer is
    written: the interpreter's teardown frees every object one by one (1-2
    ms of CPU) for a process the kernel is about to reclaim.  Stores are
    done with by the commands themselves, before the answer is written (a
    SQLite store's connection is left open then, for its WAL:
    cni_ipam.store.sqlite, "The WAL between processes").
    """
    import sys

    return bool(sys.flags.isolated)
