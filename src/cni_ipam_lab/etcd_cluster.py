"""A throw-away etcd cluster on loopback, for tests, benchmarks and demos.

``python -m cni_ipam_lab.etcd_cluster start --dir D`` starts members from
Debian's ``etcd`` binary and writes ``D/cluster.json`` (endpoints, members,
pids); ``stop --dir D`` ends them.  ``.ci/run`` (through ``make test``)
starts one for the whole test run; tests attach to it through the
``CNI_IPAM_ETCD_CLUSTER`` variable, or start their own when it is unset.
Members run with ``--unsafe-no-fsync``: test data need not survive a power
cut, and fsync would make the tests measure the disk.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

ETCD = "/usr/bin/etcd"


class Member:
    def __init__(self, name: str, client_port: int, peer_port: int, data_dir: str, pid: int = 0,
                 scheme: str = "http") -> None:
        self.name = name
        self.client_port = client_port
        self.peer_port = peer_port
        self.data_dir = data_dir
        self.pid = pid
        self.scheme = scheme  # of the client URL; "https" when the members get --cert-file etc. in extra_args

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def to_dict(self) -> dict:
        return dict(name=self.name, client_port=self.client_port, peer_port=self.peer_port,
                    data_dir=self.data_dir, pid=self.pid, scheme=self.scheme)


class EtcdCluster:
    """Members on 127.0.0.1 ports ``base, base+1`` (member 0), ``base+10, base+11`` (member 1)...

    ``scheme="https"`` serves clients over TLS: pass the server's
    ``--cert-file``/``--key-file`` (and ``--trusted-ca-file``,
    ``--client-cert-auth``) in ``extra_args``, and in ``tls`` the
    ``ca_file``/``cert_file``/``key_file`` that this class uses itself to
    ask members for their health and leader.  Peers always talk plain http.
    """

    def __init__(self, directory: str, members: int = 3, base_port: int = 23790, token: str = "cni-ipam-test",
                 extra_args=(), scheme: str = "http", tls=None, fsync: bool = False) -> None:
        self.directory = directory
        self.fsync = fsync  # False: --unsafe-no-fsync, for tests; True: what a real etcd does (benchmarks)
        self.token = token
        self.extra_args = list(extra_args)
        self.scheme = scheme
        self.tls = dict(tls or {})
        self.members = [Member(f"m{i}", base_port + 10 * i, base_port + 10 * i + 1,
                               os.path.join(directory, f"m{i}.data"), scheme=scheme) for i in range(members)]

    @property
    def endpoints(self) -> list:
        return [m.client_url for m in self.members]

    @property
    def state_file(self) -> str:
        return os.path.join(self.directory, "cluster.json")

    def _argv(self, member: Member) -> list:
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        return [ETCD, "--name", member.name, "--data-dir", member.data_dir,
                "--listen-client-urls", member.client_url, "--advertise-client-urls", member.client_url,
                "--listen-peer-urls", member.peer_url, "--initial-advertise-peer-urls", member.peer_url,
                "--initial-cluster", initial, "--initial-cluster-token", self.token,
                "--initial-cluster-state", "new", *([] if self.fsync else ["--unsafe-no-fsync"]),
                "--logger", "zap", "--log-level", "error", *self.extra_args]

    def start_member(self, member: Member) -> None:
        log = open(os.path.join(self.directory, f"{member.name}.log"), "ab")
        process = subprocess.Popen(self._argv(member), stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        member.pid = process.pid
        self.save()

    def start(self, timeout: float = 20.0) -> "EtcdCluster":
        os.makedirs(self.directory, exist_ok=True)
        for member in self.members:
            self.start_member(member)
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 20.0, members=None) -> None:
        """Until every member (or those given) answers ``/health`` with a leader elected."""
        import urllib.request

        context = None
        if self.scheme == "https":
            import ssl

            context = ssl.create_default_context(cafile=self.tls.get("ca_file") or None)
            if self.tls.get("cert_file"):
                context.load_cert_chain(self.tls["cert_file"], self.tls.get("key_file") or None)
        give_up = time.monotonic() + timeout
        for member in members or self.members:
            while True:
                try:
                    with urllib.request.urlopen(member.client_url + "/health", timeout=1, context=context) as answer:
                        if json.loads(answer.read()).get("health") == "true":
                            break
                except (OSError, ValueError):
                    pass
                if time.monotonic() > give_up:
                    raise TimeoutError(f"etcd member {member.name} not healthy after {timeout}s; see "
                                       f"{self.directory}/{member.name}.log")
                time.sleep(0.1)

    def leader(self) -> Member:
        """The member that is leader now, asked of the running members themselves (one killed is not asked:
        its refused connections would cost the client's whole deadline)."""
        from cni_ipam.store.etcd_client import EtcdClient

        for member in (m for m in self.members if m.pid):
            try:
                client = EtcdClient([member.client_url], timeout=1, deadline=1, **self.tls)
                status = client.call("maintenance/status", {})
                client.close()
            except Exception:
                continue
            leader_id = status.get("leader")
            if leader_id and leader_id == status.get("header", {}).get("member_id"):
                return member
        raise RuntimeError("no etcd member says it is the leader")

    def kill(self, member: Member) -> None:
        if member.pid:
            try:
                os.kill(member.pid, signal.SIGKILL)
                os.waitpid(member.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            member.pid = 0
            self.save()

    def stop(self) -> None:
        for member in self.members:
            if member.pid:
                try:
                    os.kill(member.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for member in self.members:
            if member.pid:
                for _ in range(50):
                    try:
                        os.kill(member.pid, 0)
                    except ProcessLookupError:
                        break
                    try:
                        if os.waitpid(member.pid, os.WNOHANG)[0]:
                            break
                    except ChildProcessError:
                        pass
                    time.sleep(0.05)
                else:
                    self.kill(member)
                member.pid = 0
        self.save()

    def save(self) -> None:
        with open(self.state_file, "w") as out:
            json.dump({"token": self.token, "endpoints": self.endpoints, "scheme": self.scheme, "tls": self.tls,
                       "members": [m.to_dict() for m in self.members], "extra_args": self.extra_args}, out)

    @classmethod
    def load(cls, state_file: str) -> "EtcdCluster":
        with open(state_file) as handle:
            state = json.load(handle)
        cluster = cls(os.path.dirname(state_file), 0, token=state["token"], extra_args=state.get("extra_args", ()),
                      scheme=state.get("scheme", "http"), tls=state.get("tls"))
        cluster.members = [Member(**m) for m in state["members"]]
        return cluster


def port_free(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_base_port(start: int, members: int = 3) -> int:
    """The first base port from ``start`` (in steps of 100) whose client and peer ports are all free.

    A second cluster on ports already in use would fail to bind, and its
    health check would then be answered by the first one: never share.
    """
    for base in range(start, start + 5000, 100):
        if all(port_free(base + 10 * i + j) for i in range(members) for j in (0, 1)):
            return base
    raise RuntimeError(f"no free loopback ports for {members} etcd members from {start}")


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m cni_ipam_lab.etcd_cluster",
                                     description="Start or stop a throw-away etcd cluster on loopback.")
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("--dir", required=True, help="where data, logs and cluster.json go")
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--base-port", type=int, default=23790,
                        help="first port to try; the next free block (steps of 100) is used")
    args = parser.parse_args(argv)
    if args.action == "start":
        cluster = EtcdCluster(args.dir, args.members, free_base_port(args.base_port, args.members)).start()
        print(f"etcd cluster up: {','.join(cluster.endpoints)} (state in {cluster.state_file})")
    else:
        state = os.path.join(args.dir, "cluster.json")
        if os.path.exists(state):
            EtcdCluster.load(state).stop()
            print("etcd cluster stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
