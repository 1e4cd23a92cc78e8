"""The node agent's threads (cni_ipam.agent.KeptThreads): kept for the next connection, as many as calls at
once, ended when idle; driven over a real Unix socket with a handler of the test's own."""

import socket
import socketserver
import threading
import time

from cni_ipam.agent import KeptThreads
from waiting import wait_until


class Server(KeptThreads, socketserver.UnixStreamServer):
    request_queue_size = 128  # as AgentServer: with 5, a sixth connect at once fails (EAGAIN) instead of waiting
    def __init__(self, path: str, handle) -> None:
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer.served_by.append(threading.current_thread().name)  # unique, unlike a reused ident
                handle(self.request)

        self.served_by = []
        super().__init__(path, Handler)


def echo(connection) -> None:
    connection.sendall(connection.recv(100))


def ask(path: str, data: bytes = b"ping") -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(data)
        return sock.recv(100)


def running(server_class, path: str, handle):
    server = server_class(path, handle)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def test_connections_one_after_another_are_served_by_kept_threads(tmp_path):
    server = running(Server, str(tmp_path / "s.sock"), echo)
    try:
        for i in range(50):
            assert ask(server.server_address, b"%d" % i) == b"%d" % i
        # A client may connect again before the thread that answered it is back waiting: then one more
        # starts, and stays.  A thread per connection would make 50.
        assert len(set(server.served_by)) <= 3, set(server.served_by)
    finally:
        server.shutdown()
        server.server_close()


def test_connections_at_once_each_get_a_thread_so_none_waits_on_another(tmp_path):
    """Every handler of the first 12 waits until all 12 are in: with fewer threads than connections the
    barrier breaks.  Later connections are served by those 12 threads."""
    barrier = threading.Barrier(12, timeout=10)

    def meet_then_echo(connection) -> None:
        if len(server.served_by) <= 12:
            barrier.wait()
        echo(connection)

    server = running(Server, str(tmp_path / "s.sock"), meet_then_echo)
    try:
        answers = []
        clients = [threading.Thread(target=lambda: answers.append(ask(server.server_address))) for _ in range(12)]
        for client in clients:
            client.start()
        for client in clients:
            client.join(15)
        assert answers == [b"ping"] * 12 and not barrier.broken
        first = set(server.served_by)
        assert len(first) == 12
        for _ in range(30):
            assert ask(server.server_address) == b"ping"
        assert set(server.served_by) == first and len(server.served_by) == 42
    finally:
        server.shutdown()
        server.server_close()


class QuicklyIdle(Server):
    idle_exit = 0.2


def test_a_thread_idle_for_idle_exit_ends_and_the_next_connection_still_gets_one(tmp_path):
    before = threading.active_count()
    server = running(QuicklyIdle, str(tmp_path / "s.sock"), echo)
    try:
        serving = threading.active_count()  # with serve_forever's own thread
        clients = [threading.Thread(target=ask, args=(server.server_address,)) for _ in range(4)]
        for client in clients:
            client.start()
        for client in clients:
            client.join(10)
        wait_until(lambda: threading.active_count() == serving, "the idle threads end", 10)
        assert ask(server.server_address, b"again") == b"again"
        assert len(server.served_by) == 5
    finally:
        server.shutdown()
        server.server_close()
    wait_until(lambda: threading.active_count() == before, "every thread ends", 10)
