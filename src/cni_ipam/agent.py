"""The node agent: answers whereabouts CNI calls for the plugin processes of this node.

Started as ``cni-ipam agent``.  It runs the very same command handlers as
the plugin (:func:`cni_ipam.cni.skel.dispatch` on the forwarded environment
and stdin), so its answers are the plugin's answers; what it saves is the
interpreter start-up, the imports and opening the store on every call
(the server holds a :class:`~cni_ipam.store.KeptOpen`: stores stay
open between calls, each lent to one call at a time).  Only root reaches
it: its socket is mode 0600 from the moment it exists (:func:`listen`).
Plugins fall back to doing the work themselves when the agent is not there
(:mod:`cni_ipam.agent_client`).
"""

from __future__ import annotations

import os
import socketserver
import sys

from .agent_client import DEFAULT_SOCKET, MAX_MESSAGE
from .plugins.table import SERVED_BY_AGENT

READ_TIMEOUT = 10.0  # seconds for a whole request: a plugin sends its request as soon as it connects


class BadRequest(ValueError):
    """A request that is JSON but not ``{"plugin": <name>, "env": {<string>: <string>}, "stdin": <string>}``
    (with ``"answer": "bytes"`` if it wants :func:`answer_bytes`)."""


def parse_request(message: dict) -> tuple:
    """``(plugin, env, stdin)`` of one forwarded call (``env`` and ``stdin`` may be left out), or BadRequest
    naming the key and what it held."""
    name, env, stdin = message.get("plugin"), message.get("env", {}), message.get("stdin", "")
    if message.get("answer", "json") not in ("json", "bytes"):
        raise BadRequest(f"answer: expected \"json\" or \"bytes\", got {_shown(message.get('answer'))}")
    if not isinstance(name, str) or name not in SERVED_BY_AGENT:
        raise BadRequest(f"plugin: expected one of {sorted(SERVED_BY_AGENT)}, got {_shown(name)}")
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise BadRequest(f"env: expected an object of strings, got {_shown(env)}")
    if not isinstance(stdin, str):
        raise BadRequest(f"stdin: expected a string, got {_shown(stdin)}")
    return name, env, stdin


def _shown(value) -> str:
    """A value as it was in the request, cut short for an error message."""
    from .jsonlite import quote

    text = quote(value)
    return text if len(text) <= 80 else text[:77] + "..."


def handle(call: tuple, stores) -> dict:
    """One forwarded call (:func:`parse_request`) in, ``{"stdout", "stderr", "exit"}`` out; the plugin opens its
    stores through ``stores``."""
    import importlib

    from .cni.skel import dispatch

    name, env, stdin = call
    plugin = importlib.import_module(SERVED_BY_AGENT[name]).plugin(stores)
    data = stdin.encode("utf-8", "surrogateescape")
    outcome = dispatch(plugin, dict(env), lambda: data)
    return {"stdout": outcome.stdout, "stderr": outcome.stderr, "exit": outcome.exit_code}


def answer_bytes(answer: dict) -> bytes:
    """``{"stdout", "stderr", "exit"}`` framed for the Python launcher (:func:`cni_ipam.agent_client.read_answer`)
    and the native forwarder (native/cni-ipam-forward.c, which reads it the same way):
    ``<exit> <stdout length> <stderr length>``, a newline, then both outputs encoded as the launcher's
    ``sys.stdout`` (UTF-8, surrogateescape) and ``sys.stderr`` (UTF-8, backslashreplace) would encode them.
    Neither client then needs a JSON decoder.  UnicodeEncodeError where that ``sys.stdout`` would raise too."""
    out = answer["stdout"].encode("utf-8", "surrogateescape")
    err = answer["stderr"].encode("utf-8", "backslashreplace")
    return b"%d %d %d\n" % (answer["exit"], len(out), len(err)) + out + err


def refused(exc: ValueError) -> dict:
    """The answer to a request the agent cannot read: a CNI error (code 6, could not decode), as the plugin
    would print it."""
    from .cni import versions
    from .cni.errors import DECODE_FAILURE, CNIError
    from .cni.skel import error_outcome

    message = f"cni-ipam agent: bad request: {exc}"
    outcome = error_outcome(CNIError(DECODE_FAILURE, message), versions.LATEST, message + "\n")
    return {"stdout": outcome.stdout, "stderr": outcome.stderr, "exit": outcome.exit_code}


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        import time

        from .linejson import Closed, Reader, send

        call, started, message = None, time.monotonic(), {}
        try:
            message = Reader(self.request, MAX_MESSAGE).read(deadline=started + self.server.read_timeout)
            started = time.monotonic()
            call = parse_request(message)
            answer = handle(call, self.server.stores)
        except Closed:
            return  # the plugin gave up before it asked: it does the work itself
        except TimeoutError:
            self.server.note("dropped", why=f"no whole request within {self.server.read_timeout:g} s")
            return
        except ValueError as exc:  # linejson's BadMessage and our BadRequest
            answer = refused(exc)
        except OSError:
            return  # the connection broke while the request came: the plugin does the work itself
        try:
            if message.get("answer") == "bytes":
                self.request.sendall(answer_bytes(answer))
            else:
                send(self.request, answer)
        except UnicodeEncodeError:  # stdout with a surrogate: the plugin does the work and fails as it would here
            self.server.note("dropped", why="an answer its launcher could not print")
            return
        except OSError as exc:
            self.server.note("dropped", why=f"the plugin left before the answer: {exc}")
        self.server.log(call, answer, time.monotonic() - started)


class KeptThreads:
    """A socketserver mix-in serving each connection on a thread that stays for the next one.

    socketserver's ThreadingMixIn starts a thread per connection, and a
    thread's start and end cost about 0.1 ms of CPU: a tenth of what the
    agent spends on a call.  Here a connection goes to a thread waiting for
    one, or, when none waits, to a new thread, so there are as many threads
    as calls at once (a call waiting on etcd or the API server never holds
    up another).  A thread with nothing to do for ``idle_exit`` seconds ends.
    """

    idle_exit = 60.0

    def __init__(self, *args, **kwargs) -> None:
        import queue
        import threading

        self._connections = queue.SimpleQueue()
        self._waiting = 0  # threads waiting for a connection that none is promised to yet
        self._lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address) -> None:
        with self._lock:
            if self._waiting:
                self._waiting -= 1  # promised to one of them: put under the lock, so it is there when it looks
                self._connections.put((request, client_address))
                return
        import threading

        threading.Thread(target=self._serve, args=(request, client_address), daemon=True).start()

    def _serve(self, request, client_address) -> None:
        import queue

        while True:
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)
            with self._lock:
                self._waiting += 1
            while True:
                try:
                    request, client_address = self._connections.get(timeout=self.idle_exit)
                    break
                except queue.Empty:
                    with self._lock:
                        if self._waiting:  # no connection is promised to this thread: it may end
                            self._waiting -= 1
                            return
                    # every waiting thread is promised one, this one too: it is in the queue


class AgentServer(KeptThreads, socketserver.UnixStreamServer):
    request_queue_size = 128  # listen() backlog: socketserver's 5 made a burst's 6th plugin fall back (its
    # connect, with a timeout, gets EAGAIN from a full Unix socket backlog instead of waiting)

    def __init__(self, path: str, stores, log_file=None, read_timeout: float = READ_TIMEOUT) -> None:
        self.stores = stores  # the open stores the plugin commands reuse (cni_ipam.store)
        self.log_file = log_file
        self.read_timeout = read_timeout
        super().__init__(path, _Handler)

    def note(self, event: str, **fields) -> None:
        """One JSON line on the log: ``event`` and its fields."""
        import json
        import time

        out = self.log_file or sys.stderr
        out.write(json.dumps({"ts": round(time.time(), 3), "event": event, **fields}) + "\n")  # one write: threads
        out.flush()  # log at once, and print()'s separate newline could land after another thread's line

    def log(self, call, answer: dict, seconds: float) -> None:
        """The call's line; ``call`` is None for a request that could not be read."""
        name, env, _ = call or (None, {}, "")
        self.note("call", plugin=name, command=env.get("CNI_COMMAND"), container_id=env.get("CNI_CONTAINERID"),
                  ifname=env.get("CNI_IFNAME"), exit=answer.get("exit"), ms=round(seconds * 1000, 2))


def listen(path: str, stores, read_timeout: float = READ_TIMEOUT) -> AgentServer:
    """The server bound to ``path``, a socket file only root can use from its first moment: it is created
    under umask 0177 (mode 0600), as a chmod after ``listen()`` would leave a moment in which any local user
    could connect and allocate or free addresses."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    if os.path.exists(path):
        os.unlink(path)  # a stale socket file from an earlier run
    umask = os.umask(0o177)  # the agent has no other thread yet
    try:
        return AgentServer(path, stores, read_timeout=read_timeout)
    finally:
        os.umask(umask)


def serve(path: str = DEFAULT_SOCKET, read_timeout: float = READ_TIMEOUT) -> None:
    """Listen on ``path`` until SIGTERM/SIGINT."""
    import signal

    from .store import KeptOpen

    server = None

    def opened(settings) -> None:
        where = settings.sqlite_path if settings.datastore == "sqlite" else settings.endpoints
        server.note("store-opened", datastore=settings.datastore, where=where)

    stores = KeptOpen(opened=opened, note=lambda event, **fields: server.note(event, **fields))
    server = listen(path, stores, read_timeout)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    server.note("listening", socket=path)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        stores.close()
        if os.path.exists(path):
            os.unlink(path)


def register(sub) -> None:
    p = sub.add_parser("agent", help="serve this node's whereabouts calls from one warm process",
                       description="The node agent: plugin processes hand their CNI call to it over a Unix "
                                   "socket and print its answer; without it they do the work themselves.",
                       epilog=f"example: cni-ipam agent --socket {DEFAULT_SOCKET}")
    p.add_argument("--socket", default=DEFAULT_SOCKET, metavar="PATH",
                   help=f"where plugins find the agent (default {DEFAULT_SOCKET}; plugins read "
                        f"CNI_IPAM_AGENT_SOCKET to look elsewhere)")
    p.add_argument("--read-timeout", type=float, default=READ_TIMEOUT, metavar="SECONDS",
                   help=f"drop a connection that has not sent its whole request by then (default {READ_TIMEOUT:g}); "
                        f"its plugin does the work itself")
    p.set_defaults(func=lambda args: serve(args.socket, args.read_timeout) or 0)
