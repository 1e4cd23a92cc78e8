"""Start, kill and restart a test API server process, and talk to it.

The server runs as its own process so that tests can kill -9 it and
benchmarks can count its CPU; its state is in etcd, so a restart (on the
same port) finds every object and resourceVersion as they were.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import uuid

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_USER = "system:serviceaccount:kube-system:whereabouts"


class KubeAPIServer:
    """One server over ``etcd_endpoints`` with its objects under ``prefix``.

    ``tokens`` maps bearer tokens to users (default: one token for
    :data:`DEFAULT_USER`, in :attr:`token`); ``rbac`` maps users to the
    ``"verb resource"`` pairs they may use (users not named may do
    anything); ``tls`` is a :func:`certs.make_certificates` result (or
    true to make one in ``directory``).
    """

    def __init__(self, etcd_endpoints, prefix: str, directory: str, tls=None, tokens=None, rbac=None) -> None:
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.token = uuid.uuid4().hex
        self.admin_token = uuid.uuid4().hex
        if tls is True:
            from .certs import make_certificates

            tls = make_certificates(os.path.join(directory, "pki"))
        self.tls = tls or None
        self.config = {
            "etcd": list(etcd_endpoints), "prefix": prefix, "host": "127.0.0.1", "port": 0,
            "tokens": tokens if tokens is not None else {self.token: DEFAULT_USER}, "rbac": rbac or {},
            "admin_token": self.admin_token, "ready_file": os.path.join(directory, "ready.json"),
            "tls": {"cert": tls["cert"], "key": tls["key"], "client_ca": tls["ca"]} if tls else None,
        }
        self.process = None

    # -- process -------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self.process.pid if self.process else 0

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.config['port']}"

    @property
    def ca_file(self) -> str:
        return self.tls["ca"] if self.tls else ""

    def start(self, timeout: float = 15.0) -> "KubeAPIServer":
        ready = self.config["ready_file"]
        if os.path.exists(ready):
            os.unlink(ready)
        path = os.path.join(self.directory, "config.json")
        with open(path, "w") as stream:
            json.dump(self.config, stream)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [TESTS_DIR, os.environ.get("PYTHONPATH")])))
        log = open(os.path.join(self.directory, "server.log"), "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "kubeapi", "--config", path], env=env, stdout=log,
                                        stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        give_up = time.monotonic() + timeout
        while not os.path.exists(ready):
            if self.process.poll() is not None or time.monotonic() > give_up:
                raise RuntimeError(f"the test API server did not start; see {self.directory}/server.log")
            time.sleep(0.02)
        with open(ready) as stream:
            self.config["port"] = json.load(stream)["port"]  # kept: a restart listens on the same port
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash: no cleanup, open connections and watches cut."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def restart(self) -> "KubeAPIServer":
        self.kill()
        return self.start()

    def _signal(self, number: int) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(number)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    # -- client helpers for tests ------------------------------------------

    def connection(self, timeout: float = 10.0, client_cert: bool = False):
        if not self.tls:
            return http.client.HTTPConnection("127.0.0.1", self.config["port"], timeout=timeout)
        context = ssl.create_default_context(cafile=self.tls["ca"])
        if client_cert:
            context.load_cert_chain(self.tls["client_cert"], self.tls["client_key"])
        return http.client.HTTPSConnection("127.0.0.1", self.config["port"], timeout=timeout, context=context)

    def request(self, method: str, path: str, body=None, token=None, content_type: str = "application/json",
                connection=None) -> tuple:
        """(status, headers, parsed JSON body or text) of one request; ``token=""`` sends none."""
        own = connection is None
        connection = connection or self.connection()
        headers = {"Accept": "application/json"}
        token = self.token if token is None else token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        try:
            connection.request(method, path, body=data, headers=headers)
            answer = connection.getresponse()
            raw = answer.read()
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = raw.decode(errors="replace")
            return answer.status, dict(answer.getheaders()), parsed
        finally:
            if own:
                connection.close()

    def faults(self, rules=None, reset: bool = False) -> dict:
        """Set the fault rules (when given), reset the counters (when asked); the rules and counters now."""
        if rules is not None:
            self._control("PUT", rules)
        if reset:
            self._control("DELETE", None)
        return self._control("GET", None)

    def _control(self, method: str, body) -> dict:
        code, _, answer = self.request(method, "/_control/faults", body, token=self.admin_token)
        if code != 200:
            raise RuntimeError(f"control {method}: {code} {answer}")
        return answer
