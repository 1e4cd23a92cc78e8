"""The plugin side of the node agent: hand the CNI call to the agent if one is listening.

A whereabouts call in a fresh process spends most of its time starting
Python and importing the store (SQLite alone is 4-5 ms); the node agent
(:mod:`cni_ipam.agent`) has all that loaded and its stores open.  The
plugin still starts, but only to pass its environment and stdin over a
Unix socket and print the answer.  Anything wrong with the agent (no
socket, refused, closed early, too slow) means the plugin does the work
itself: every command is idempotent, so a call the agent half-did is
simply done again.  A dead agent never blocks a pod.
"""

DEFAULT_SOCKET = "/run/cni-ipam/agent.sock"
ENV_SOCKET = "CNI_IPAM_AGENT_SOCKET"  # set to "" to never use the agent
TIMEOUT = 60.0
# The bound on one message either way: a request carries the plugin's whole stdin (the network config,
# with any prevResult), so it is generous.
MAX_MESSAGE = 16 << 20


def _socket_path(env: dict) -> str:
    path = env.get(ENV_SOCKET)
    return DEFAULT_SOCKET if path is None else path


def ask_agent(plugin: str, env: dict, stdin: bytes):
    """The agent's answer ``(stdout, stderr, exit code)``, or None to do the work here."""
    path = _socket_path(env)
    if not path:
        return None
    import _socket

    from .linejson import Closed, Reader, send

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(TIMEOUT)
        sock.connect(path)
        send(sock, {"plugin": plugin, "env": {k: v for k, v in env.items() if k.startswith("CNI_")},
                    "stdin": stdin.decode("utf-8", "surrogateescape")})
        answer = Reader(sock, MAX_MESSAGE).read()
        return answer["stdout"], answer["stderr"], int(answer["exit"])
    except (OSError, Closed, ValueError, KeyError, TypeError):  # linejson's BadMessage is a ValueError
        return None
    finally:
        sock.close()


FORWARDED = ("ADD", "DEL", "CHECK", "GC", "STATUS")


def _forwarded(name: str):
    """Ask the agent; print its answer and exit if it gave one, else return stdin (None: not read)."""
    import sys

    from .cni import MAX_STDIN, environment  # the package only: cni.request and its imports wait for the fallback

    env = environment()
    if env.get("CNI_COMMAND", "") not in FORWARDED:
        return None
    stdin = sys.stdin.buffer.read(MAX_STDIN + 1)  # whoever answers refuses more than MAX_STDIN
    answer = ask_agent(name, env, stdin)
    if answer is not None:
        stdout, stderr, code = answer
        sys.stdout.write(stdout)
        sys.stdout.flush()
        sys.stderr.write(stderr)
        sys.exit(code)
    return stdin


def main_via_agent(name: str, module: str) -> None:
    """The executable of a plugin the agent serves: the agent first, before anything of the plugin is
    imported; else the plugin (``module``, its entry in :data:`cni_ipam.plugins.table.SERVED_BY_AGENT`) runs
    in this process."""
    stdin = _forwarded(name)
    from .cni.skel import main

    main(__import__(module, fromlist=["PLUGIN"]).PLUGIN, stdin=stdin)


def whereabouts_main() -> None:
    """The whereabouts executable (its entry point in :mod:`cni_ipam.plugins.table`).  Its module is named
    here, not read from the table: one module fewer per call (tests/unit/test_plugin_table.py holds the two
    equal)."""
    main_via_agent("whereabouts", "cni_ipam.plugins.whereabouts")
