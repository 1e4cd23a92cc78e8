"""The plugin side of the node agent: hand the CNI call to the agent if one is listening.

A whereabouts call in a fresh process spends most of its time starting
Python and importing the store (SQLite alone is 4-5 ms); the node agent
(:mod:`cni_ipam.agent`) has all that loaded and its stores open.  The
plugin still starts, but only to pass its environment and stdin over a
Unix socket and print the answer.  Anything wrong with the agent (no
socket, refused, closed early, too slow) means the plugin does the work
itself: every command is idempotent, so a call the agent half-did is
simply done again.  A dead agent never blocks a pod.

The forwarding path imports nothing but this module and ``_socket``: every
module costs each call 0.1-0.3 ms of CPU (the ``_json`` C module alone 0.3),
against a whole call of about 1.5 ms through the agent.  So the request line
is written here with :func:`quote`, and the agent answers in bytes
(``"answer": "bytes"``, :func:`read_answer`) rather than in JSON.
"""

DEFAULT_SOCKET = "/run/cni-ipam/agent.sock"
ENV_SOCKET = "CNI_IPAM_AGENT_SOCKET"  # set to "" to never use the agent
TIMEOUT = 60.0
# The bound on one message either way: a request carries the plugin's whole stdin (the network config,
# with any prevResult), so it is generous.
MAX_MESSAGE = 16 << 20
# cni.MAX_STDIN, named here so the forwarding path imports no more of the package
# (tests/unit/test_agent_client.py holds the two equal).
MAX_STDIN = 4 << 20
# The answer's first line, newline excluded (its three integers take at most 30 bytes); the native forwarder
# (native/cni-ipam-forward.c) takes the same.
MAX_HEAD = 64
FORWARDED = ("ADD", "DEL", "CHECK", "GC", "STATUS")

# The characters a JSON string may not hold as they are (RFC 8259, section 7), and DEL, escaped as Python's
# json.dumps escapes them (and native/cni-ipam-forward.c, put_json_char: the two request lines are the same).
_ESCAPES = {**{code: f"\\u{code:04x}" for code in range(0x20)}, 0x7F: "\\u007f", ord('"'): '\\"', ord("\\"): "\\\\",
            ord("\b"): "\\b", ord("\f"): "\\f", ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}


def quote(text: str) -> str:
    """``text`` as a JSON string of ASCII characters only, so that a request line is valid UTF-8 whatever the
    environment and stdin held (bytes that are not UTF-8 arrive here as surrogates, from surrogateescape)."""
    text = text.translate(_ESCAPES)
    if not text.isascii():
        text = "".join(c if c < "\x80" else _escaped(ord(c)) for c in text)
    return f'"{text}"'


def _escaped(code: int) -> str:
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # beyond the basic plane: a UTF-16 surrogate pair, as JSON spells it
    return f"\\u{0xD800 | code >> 10:04x}\\u{0xDC00 | code & 0x3FF:04x}"


def request_line(plugin: str, env: dict, stdin: bytes) -> bytes:
    """The request (``cni_ipam.agent.parse_request``): the plugin's name, its ``CNI_*`` variables and stdin."""
    pairs = ",".join(f"{quote(k)}:{quote(v)}" for k, v in env.items() if k.startswith("CNI_"))
    text = quote(stdin.decode("utf-8", "surrogateescape"))
    return f'{{"plugin":{quote(plugin)},"env":{{{pairs}}},"stdin":{text},"answer":"bytes"}}\n'.encode()


def read_answer(sock) -> tuple:
    """``(stdout bytes, stderr bytes, exit code)`` off the socket, as ``cni_ipam.agent.answer_bytes`` frames
    them: a line ``<exit> <stdout length> <stderr length>``, then the two outputs.  ValueError for anything else,
    OSError (a timeout too) from the socket."""
    data = b""
    while b"\n" not in data:
        chunk = sock.recv(4096)
        if not chunk or len(data) > MAX_HEAD:
            raise ValueError("no answer line")
        data += chunk
    head, _, body = data.partition(b"\n")
    if len(head) > MAX_HEAD:
        raise ValueError(f"an answer line of {len(head)} bytes")
    fields = head.split(b" ")
    if len(fields) != 3 or not all(f.isdigit() for f in (fields[0].removeprefix(b"-"), *fields[1:])):
        raise ValueError(f"not an answer line: {head[:64]!r}")
    code, out_length, err_length = (int(f) for f in fields)
    if not -(1 << 31) <= code < 1 << 31:  # an exit status the process can pass on (a C int)
        raise ValueError(f"exit code {code}")
    want = out_length + err_length
    if want > MAX_MESSAGE:
        raise ValueError(f"an answer of {want} bytes")
    chunks, have = [body], len(body)
    while have < want:
        chunk = sock.recv(min(want - have, 1 << 20))
        if not chunk:
            raise ValueError("the answer ended early")
        chunks.append(chunk)
        have += len(chunk)
    if have != want:
        raise ValueError("more than the answer")
    body = b"".join(chunks)
    return body[:out_length], body[out_length:], code


def _socket_path(env: dict) -> str:
    path = env.get(ENV_SOCKET)
    return DEFAULT_SOCKET if path is None else path


def ask_agent(plugin: str, env: dict, stdin: bytes):
    """The agent's answer ``(stdout bytes, stderr bytes, exit code)``, or None to do the work here."""
    path = _socket_path(env)
    if not path:
        return None
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(TIMEOUT)
        sock.connect(path)
        sock.sendall(request_line(plugin, env, stdin))
        return read_answer(sock)
    except (OSError, ValueError):
        return None
    finally:
        sock.close()


def _forwarded(name: str):
    """Ask the agent; print its answer and exit if it gave one, else return stdin (None: not read)."""
    import posix  # loaded at start-up, unlike os
    import sys

    env = {k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape")
           for k, v in posix.environ.items() if k.startswith(b"CNI_")}
    if env.get("CNI_COMMAND", "") not in FORWARDED:
        return None
    stdin = sys.stdin.buffer.read(MAX_STDIN + 1)  # whoever answers refuses more than MAX_STDIN
    answer = ask_agent(name, env, stdin)
    if answer is not None:
        stdout, stderr, code = answer
        sys.stdout.buffer.write(stdout)
        sys.stdout.flush()
        sys.stderr.buffer.write(stderr)
        sys.stderr.flush()
        if sys.flags.isolated:  # a launcher (cni.skel.in_launcher): the interpreter's teardown would cost 1 ms
            posix._exit(code)
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
