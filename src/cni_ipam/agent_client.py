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


def _socket_path(env: dict) -> str:
    path = env.get(ENV_SOCKET)
    return DEFAULT_SOCKET if path is None else path


def ask_agent(plugin: str, env: dict, stdin: bytes):
    """The agent's answer ``(stdout, stderr, exit code)``, or None to do the work here."""
    import _socket

    path = _socket_path(env)
    if not path:
        return None
    from .jsonlite import dumps, loads

    request = dumps({"plugin": plugin, "env": {k: v for k, v in env.items() if k.startswith("CNI_")},
                     "stdin": stdin.decode("utf-8", "surrogateescape")}).encode() + b"\n"
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(TIMEOUT)
        sock.connect(path)
        sock.sendall(request)
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                return None
            data += chunk
        answer = loads(data)
        return answer["stdout"], answer["stderr"], int(answer["exit"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    finally:
        sock.close()


FORWARDED = ("ADD", "DEL", "CHECK", "GC", "STATUS")


def _forwarded(name: str):
    """Ask the agent; print its answer and exit if it gave one, else return stdin (None: not read)."""
    import sys

    from .cni.environ import environment

    env = environment()
    if env.get("CNI_COMMAND", "") not in FORWARDED:
        return None
    stdin = sys.stdin.buffer.read()
    answer = ask_agent(name, env, stdin)
    if answer is not None:
        stdout, stderr, code = answer
        sys.stdout.write(stdout)
        sys.stdout.flush()
        sys.stderr.write(stderr)
        sys.exit(code)
    return stdin


def whereabouts_main() -> None:
    """The whereabouts executable: the agent first, before anything of the plugin is imported."""
    stdin = _forwarded("whereabouts")
    from .cni.skel import main
    from .plugins.whereabouts import PLUGIN

    main(PLUGIN, stdin=stdin)


def main_via_agent(plugin) -> None:
    """A plugin's main: through the agent when it answers, else in this process."""
    from .cni.skel import main

    main(plugin, stdin=_forwarded(plugin.name))
