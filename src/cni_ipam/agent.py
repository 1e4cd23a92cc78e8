"""The node agent: answers whereabouts CNI calls for the plugin processes of this node.

Started as ``cni-ipam agent``.  It runs the very same command handlers as
the plugin (:func:`cni_ipam.cni.skel.dispatch` on the forwarded environment
and stdin), so its answers are the plugin's answers; what it saves is the
interpreter start-up, the imports and opening the store on every call
(the server holds a :class:`~cni_ipam.store.open.KeptPerThread`: each
connection's thread keeps its stores open).  Plugins fall back to
doing the work themselves when the agent is not there
(:mod:`cni_ipam.agent_client`).
"""

from __future__ import annotations

import os
import socketserver
import sys

from .agent_client import DEFAULT_SOCKET, MAX_MESSAGE
from .plugins.table import SERVED_BY_AGENT


def handle(request: dict, stores) -> dict:
    """One forwarded call: ``{"plugin", "env", "stdin"}`` in, ``{"stdout", "stderr", "exit"}`` out; the plugin
    opens its stores through ``stores``."""
    import importlib

    from .cni.skel import dispatch

    name = request.get("plugin")
    if name not in SERVED_BY_AGENT:
        return {"stdout": "", "stderr": f"cni-ipam agent: no plugin {name!r}\n", "exit": 1}
    plugin = importlib.import_module(SERVED_BY_AGENT[name]).plugin(stores)
    stdin = request.get("stdin", "").encode("utf-8", "surrogateescape")
    outcome = dispatch(plugin, dict(request.get("env") or {}), lambda: stdin)
    return {"stdout": outcome.stdout, "stderr": outcome.stderr, "exit": outcome.exit_code}


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        import time

        from .linejson import Closed, Reader, send

        request, started = {}, time.monotonic()
        try:
            request = Reader(self.request, MAX_MESSAGE).read()
            started = time.monotonic()
            answer = handle(request, self.server.stores)
        except Closed:
            return  # the plugin gave up before it asked: it does the work itself
        except ValueError as exc:  # linejson's BadMessage among them
            answer = {"stdout": "", "stderr": f"cni-ipam agent: bad request: {exc}\n", "exit": 1}
        send(self.request, answer)
        self.server.log(request, answer, time.monotonic() - started)


class AgentServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, stores, log_file=None) -> None:
        self.stores = stores  # the open stores the plugin commands reuse (cni_ipam.store.open)
        self.log_file = log_file
        super().__init__(path, _Handler)

    def log(self, request: dict, answer: dict, seconds: float) -> None:
        import json
        import time

        env = request.get("env") or {}
        line = {"ts": round(time.time(), 3), "event": "call", "plugin": request.get("plugin"),
                "command": env.get("CNI_COMMAND"), "container_id": env.get("CNI_CONTAINERID"),
                "ifname": env.get("CNI_IFNAME"), "exit": answer.get("exit"), "ms": round(seconds * 1000, 2)}
        print(json.dumps(line), file=self.log_file or sys.stderr, flush=True)


def serve(path: str = DEFAULT_SOCKET) -> None:
    """Listen on ``path`` until SIGTERM/SIGINT; a stale socket file from an earlier run is replaced."""
    import signal

    from .store.open import KeptPerThread

    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    if os.path.exists(path):
        os.unlink(path)
    server = AgentServer(path, KeptPerThread())
    os.chmod(path, 0o600)  # plugins run as root; nobody else may allocate
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    print(f'{{"event": "listening", "socket": "{path}"}}', file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
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
    p.set_defaults(func=lambda args: serve(args.socket) or 0)
