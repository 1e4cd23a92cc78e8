"""The native forwarder (native/cni-ipam-forward.c): the Python launcher's answers, byte for byte, sooner.

It is built here with warnings as errors, and with AddressSanitizer and
UndefinedBehaviorSanitizer for every behaviour test.  Each test installs it as
``whereabouts`` with the Python launcher beside it (``cni-ipam install --native``'s
layout) and compares it with the Python launcher: through a real ``cni-ipam
agent``, through fake agents the test runs (capturing the request line, or
answering what the test wants), and without any agent, where the forwarder
hands the call, with its original stdin, to the Python plugin.

Both ask for the answer in bytes (``"answer": "bytes"``): the agent frames
it with ``cni_ipam.agent.answer_bytes``, encoded as the launcher's
``sys.stdout`` and ``sys.stderr`` would in the C locale, and both write those
bytes as they come.  They run with no locale variables, as a container
runtime runs a plugin.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time

import pytest

from cni_ipam.agent import answer_bytes
from cni_ipam.agent_client import MAX_MESSAGE
from cni_ipam.cni.request import MAX_STDIN
from cni_ipam.install import package_parent, python_launcher_name, write_launchers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, "native", "build.sh")
SANITIZERS = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g")
SANITIZER_ENV = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=86",
                 "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1:exitcode=86"}
SHORT_TIMEOUTS = ("-DANSWER_TIMEOUT_MS=1500", "-DCONNECT_TIMEOUT_S=1")


def build(out: str, *flags: str) -> str:
    done = subprocess.run(["sh", BUILD, out, *flags], capture_output=True, text=True)
    assert done.returncode == 0, f"native/build.sh {out} {' '.join(flags)} failed:\n{done.stderr}"
    return out


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict:
    """Bin dirs, each with a forwarder build as ``whereabouts`` and ``.whereabouts-py`` beside it."""
    root = tmp_path_factory.mktemp("native")
    flavours = {"plain": (), "asan": SANITIZERS, "asan-short": SANITIZERS + SHORT_TIMEOUTS}
    dirs = {}
    for name, flags in flavours.items():
        with open(build(str(root / f"forward-{name}"), *flags), "rb") as f:
            forwarder = f.read()
        dirs[name] = str(root / name)
        write_launchers(dirs[name], sys.executable, package_parent(), ["whereabouts"], native=forwarder)
    return dirs


def run(executable: str, env: dict, stdin: bytes, timeout: float = 60) -> tuple:
    """(exit code, stdout, stderr) as bytes; the sanitizers' own reports fail the test."""
    done = subprocess.run([executable], input=stdin, env={**env, **SANITIZER_ENV}, capture_output=True,
                          timeout=timeout)
    assert b"Sanitizer" not in done.stderr and b"runtime error" not in done.stderr, done.stderr.decode("utf-8", "replace")
    assert done.returncode != 86, done
    return done.returncode, done.stdout, done.stderr


def native(bin_dir: str) -> str:
    return os.path.join(bin_dir, "whereabouts")


def python(bin_dir: str) -> str:
    return os.path.join(bin_dir, python_launcher_name("whereabouts"))


def cni_env(command: str, socket_path, container_id: str = "c1", **extra) -> dict:
    """A runtime's environment: no locale, no inherited variables; ``socket_path`` None leaves the default."""
    env = {"PATH": "/usr/bin:/bin", "CNI_COMMAND": command, "CNI_CONTAINERID": container_id,
           "CNI_NETNS": "/run/netns/none", "CNI_IFNAME": "net1", "CNI_PATH": "/opt/cni/bin", **extra}
    if socket_path is not None:
        env["CNI_IPAM_AGENT_SOCKET"] = socket_path
    return env


def config(tmp_path, **top) -> bytes:
    return json.dumps({"cniVersion": "1.0.0", "name": "native-net", "type": "bridge",
                       "ipam": {"type": "whereabouts", "range": "10.40.0.0/24", "sqlite_path": str(tmp_path / "wb.db"),
                                "configuration_path": str(tmp_path / "none.conf")}, **top}).encode()


# --- a real agent --------------------------------------------------------------------------------

def agent_calls(log_path) -> int:
    return sum('"event": "call"' in line for line in log_path.read_text().splitlines())


def logged_calls(log_path, expected: int) -> int:
    """The calls the agent logged, once ``expected`` are there or 5 s passed (it logs after it answers)."""
    deadline = time.monotonic() + 5
    while agent_calls(log_path) < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return agent_calls(log_path)


FORWARDED = ("ADD", "DEL", "CHECK", "GC", "STATUS")


@pytest.mark.parametrize("flavour", ["plain", "asan"])
def test_through_the_agent_every_command_answers_as_the_python_launcher(builds, tmp_path, agent, flavour):
    socket_path, log_path = agent
    bin_dir = builds[flavour]
    conf = config(tmp_path)
    gc = config(tmp_path, **{"cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "net1"}]})
    calls = [("ADD", "c1", conf), ("ADD", "c2", conf), ("CHECK", "c1", conf), ("CHECK", "none", conf),
             ("GC", "", gc), ("STATUS", "", conf), ("DEL", "c1", conf), ("DEL", "c1", conf),
             ("ADD", "c3", config(tmp_path, ipam={"type": "whereabouts", "range": "10.40.0.0/33"})),
             ("ADD", "c4", b"{not json"), ("VERSION", "", b""), ("", "", b""), ("NOPE", "c1", conf)]
    for command, cid, stdin in calls:
        env = cni_env(command, socket_path, cid)
        expected = agent_calls(log_path) + (command in FORWARDED)
        ours = run(native(bin_dir), env, stdin)
        # ADD, DEL, CHECK, GC and STATUS go to the agent; VERSION, nothing and the unknown do not.
        assert logged_calls(log_path, expected) == expected, command
        assert ours == run(python(bin_dir), env, stdin), (command, cid)
        logged_calls(log_path, expected + (command in FORWARDED))
    time.sleep(0.2)
    assert agent_calls(log_path) == 20
    assert json.loads(run(native(bin_dir), cni_env("ADD", socket_path, "c2"), conf)[1])["ips"][0]["address"] == \
        "10.40.0.2/24"


# Bytes that make UTF-8 decoding interesting: lead bytes of every length, the bounds of the
# overlong, surrogate and above-U+10FFFF ranges, continuation bytes and invalid starts.
TRICKY = [0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xe1, 0xec, 0xed, 0xee, 0xef,
          0xf0, 0xf1, 0xf3, 0xf4, 0xf5, 0xff, 0x00, 0x01, 0x1f, 0x22, 0x5c, 0x7f, 0x41]


def fuzz_bytes(rng: random.Random, n: int, nul: bool = True) -> bytes:
    """Random bytes, mostly valid UTF-8 pieces and the bytes around its edges."""
    out = bytearray()
    while len(out) < n:
        pick = rng.random()
        if pick < 0.4:
            out += bytes(rng.choice(TRICKY) for _ in range(rng.randint(1, 4)))
        elif pick < 0.7:
            out += chr(rng.choice([rng.randint(0x20, 0x7e), rng.randint(0x80, 0x7ff), rng.randint(0x800, 0xd7ff),
                                   rng.randint(0xe000, 0xffff), rng.randint(0x10000, 0x10ffff)])).encode()
        else:
            out += bytes(rng.randrange(256) for _ in range(rng.randint(1, 3)))
    return bytes(out[:n]) if nul else bytes(out[:n]).replace(b"\0", b"")


def fuzz_env(rng: random.Random, command: str, socket_path: str) -> dict:
    env = {b"PATH": b"/usr/bin:/bin", b"CNI_COMMAND": command.encode(), b"CNI_IPAM_AGENT_SOCKET": socket_path.encode()}
    for key in (b"CNI_CONTAINERID", b"CNI_IFNAME", b"CNI_ARGS", b"CNI_NETNS", b"CNI_PATH"):
        if rng.random() < 0.8:
            env[key] = fuzz_bytes(rng, rng.randint(0, 24), nul=False)
    for _ in range(rng.randint(0, 3)):  # names of any bytes too (no "=" or NUL, which no environment holds)
        key = b"CNI_" + fuzz_bytes(rng, rng.randint(0, 8), nul=False).replace(b"=", b"")
        env[key] = fuzz_bytes(rng, rng.randint(0, 16), nul=False)
    env[b"NOT_CNI"] = fuzz_bytes(rng, 8, nul=False)
    return env


def fuzz_stdin(rng: random.Random, tmp_path) -> bytes:
    if rng.random() < 0.5:
        return fuzz_bytes(rng, rng.randint(0, 300))
    # a config the plugin reads far enough to echo our bytes back in its answer or error
    name = fuzz_bytes(rng, rng.randint(0, 20)).decode("utf-8", "surrogateescape")
    text = json.dumps({"cniVersion": "1.0.0", "name": name, "ipam": {"type": "whereabouts", "range": name,
                       "sqlite_path": str(tmp_path / "wb.db")}}, ensure_ascii=rng.random() < 0.5)
    return text.encode("utf-8", "surrogateescape")


def test_fuzzed_env_and_stdin_through_the_agent_answer_as_the_python_launcher(builds, tmp_path, agent):
    socket_path, log_path = agent
    rng = random.Random(17)
    for i in range(40):
        command = rng.choice(["ADD", "DEL", "CHECK", "GC", "STATUS"])
        env, stdin = fuzz_env(rng, command, socket_path), fuzz_stdin(rng, tmp_path)
        expected = agent_calls(log_path) + 1
        ours = run(native(builds["asan"]), env, stdin)
        assert logged_calls(log_path, expected) == expected, (i, ours)
        assert ours == run(python(builds["asan"]), env, stdin), (i, env, stdin)
        logged_calls(log_path, expected + 1)


# --- fake agents ---------------------------------------------------------------------------------

class FakeAgent:
    """A Unix socket server of the test's own: ``serve(connection)`` handles each connection, in a thread."""

    def __init__(self, path: str, serve) -> None:
        self.path, self.serve = path, serve
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(path)
        self.listener.listen(16)
        self.connections = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(connection)
            threading.Thread(target=self.serve, args=(connection,), daemon=True).start()

    def close(self) -> None:
        self.listener.close()
        for connection in self.connections:
            connection.close()


def read_line(connection) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = connection.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture
def fake_agent(tmp_path):
    """Start fake agents: ``fake_agent(serve)`` returns the socket path."""
    started = []

    def start(serve) -> str:
        started.append(FakeAgent(str(tmp_path / f"fake{len(started)}.sock"), serve))
        return started[-1].path

    yield start
    for agent in started:
        agent.close()


def test_the_request_line_is_the_python_clients_byte_for_byte(builds, tmp_path, fake_agent):
    lines = []

    def capture(connection):
        lines.append(read_line(connection))
        connection.sendall(b"0 0 0\n")  # an empty answer, framed
        connection.close()

    socket_path = fake_agent(capture)
    rng = random.Random(1717)
    for i in range(150):
        env, stdin = fuzz_env(rng, rng.choice(["ADD", "DEL"]), socket_path), fuzz_stdin(rng, tmp_path)
        assert run(native(builds["asan"]), env, stdin) == (0, b"", b"")
        assert run(python(builds["asan"]), env, stdin) == (0, b"", b"")
        ours, theirs = lines[-2:]
        # The Python client writes its line itself (cni_ipam.agent_client.quote): the two lines are one.
        assert ours == theirs, (i, env, stdin)
        assert json.loads(ours)["answer"] == "bytes"
    assert len(lines) == 300


def fuzz_text(rng: random.Random, n: int, surrogates) -> str:
    chars = []
    for _ in range(n):
        pick = rng.random()
        if pick < 0.3:
            chars.append(chr(rng.choice(surrogates)))
        elif pick < 0.5:
            chars.append(chr(rng.randint(0, 0x7f)))
        else:
            chars.append(chr(rng.choice([rng.randint(0x80, 0xd7ff), rng.randint(0xe000, 0x10ffff)])))
    return "".join(chars)


def test_answers_are_printed_as_the_python_launcher_prints_them(builds, tmp_path, fake_agent):
    """The agent's answer_bytes of fuzzed answers: stdout with the surrogates surrogateescape can write
    (U+DC80..U+DCFF, raw bytes), stderr with any (backslash-escaped), some outputs larger than one read;
    the exit code is the agent's, as sys.exit gives it."""
    rng = random.Random(71)
    framed = []

    def answer(connection):
        assert json.loads(read_line(connection))["answer"] == "bytes"
        connection.sendall(framed[-1])
        connection.close()

    socket_path = fake_agent(answer)
    conf = config(tmp_path)
    for i in range(63):
        out_length, err_length = (rng.choice([rng.randint(0, 40), rng.randint(0, 100_000)]) for _ in "oe")
        message = {"stdout": fuzz_text(rng, out_length, range(0xdc80, 0xdd00)),
                   "stderr": fuzz_text(rng, err_length, range(0xd800, 0xe000)), "exit": rng.randint(-300, 300)}
        if i >= 60:  # the ends of a C int, which the forwarder takes
            message["exit"] = [-(1 << 31), (1 << 31) - 1, 256][i - 60]
        framed.append(answer_bytes(message))
        ours = run(native(builds["asan"]), cni_env("ADD", socket_path), conf)
        assert ours == run(python(builds["asan"]), cni_env("ADD", socket_path), conf), (i, framed[-1][:200])
        assert ours[0] == message["exit"] % 256
        assert len(framed[-1]) - framed[-1].index(b"\n") - 1 == len(ours[1]) + len(ours[2])


# --- falling back to the Python plugin ------------------------------------------------------------

def closes_early(connection):
    connection.recv(10)
    connection.close()


def hangs(connection):
    time.sleep(30)  # never answers; the forwarder gives up well before


def answers(line: bytes):
    def serve(connection):
        read_line(connection)
        try:
            connection.sendall(line)
        except OSError:
            pass  # the forwarder stopped reading an answer that long
        connection.close()

    return serve


# Answers cni_ipam.agent.answer_bytes never frames ("<exit> <stdout length> <stderr length>\n", then the bytes).
GARBAGE = [b"\n", b"x 0 0\n", b"0 1\n", b"0 0 0 0\n", b"0  0 0\n", b" 0 0 0\n", b"0 0 0 \n", b"0 0 0\r\n",
           b"0 -1 0\n", b"0 0 -1\n", b"0 +1 0\n", b"+0 0 0\n", b"- 0 0\n", b"--1 0 0\n", b"0 1_0 0\n", b"0x1 0 0\n",
           b"0 \xd9\xa1 0\n",  # a digit, but not ASCII
           b"0 3 0\nab", b"0 1 1\na", b"0 1 0\nab", b"0 0 0\nx",  # the body shorter, or longer, than announced
           b'{"stdout":"","stderr":"","exit":0}\n',  # the JSON answer, which neither asks for
           b"0 %d 1\n" % MAX_MESSAGE, b"0 1 %d\n" % MAX_MESSAGE, b"0 99999999999999999999999 0\n",
           b"0 0 0", b"0" * 62 + b"1 0 0\n",  # no newline; a first line of 65 bytes (at most 64)
           b"0" * 100_000 + b" 0 0\n", b"x" * ((16 << 20) + 70000)]


def test_without_a_working_agent_the_python_plugin_does_the_call_with_the_original_stdin(builds, tmp_path,
                                                                                        fake_agent):
    stale = str(tmp_path / "stale.sock")  # a socket file nobody listens on: refused
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(stale)
    listener.close()
    hanging = fake_agent(hangs)
    agents = [str(tmp_path / "missing.sock"), stale, "", fake_agent(closes_early), hanging,
              *(fake_agent(answers(line)) for line in GARBAGE)]
    padding = "x" * 300_000  # more than a pipe holds
    for i, socket_path in enumerate(agents):
        conf = config(tmp_path, padding=padding[:i * 20_000])
        env = cni_env("ADD", socket_path, f"c{i}")
        started = time.monotonic()
        ours = run(native(builds["asan-short"]), env, conf)
        assert time.monotonic() - started < 10, socket_path
        alone = run(python(builds["asan-short"]), {**env, "CNI_IPAM_AGENT_SOCKET": ""}, conf)
        assert ours == alone, socket_path
        if socket_path != hanging:  # (the Python launcher waits 60 s for an answer)
            assert run(python(builds["asan-short"]), env, conf) == alone, socket_path  # it falls back too
        assert ours[0] == 0 and json.loads(ours[1])["ips"][0]["address"] == f"10.40.0.{i + 1}/24"


@pytest.mark.parametrize("size", [0, 1000, 300_000, MAX_STDIN, MAX_STDIN + 1, MAX_STDIN + 70_000, 17 << 20])
def test_the_fallback_gets_every_byte_of_stdin_and_no_agent(builds, tmp_path, size):
    """A stand-in for the Python launcher prints the hash of its stdin and its CNI_IPAM_AGENT_SOCKET."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    with open(native(builds["asan"]), "rb") as f:
        (bin_dir / "whereabouts").write_bytes(f.read())
    (bin_dir / ".whereabouts-py").write_text('#!/bin/sh\nsha256sum\necho "[$CNI_IPAM_AGENT_SOCKET]"\n')
    for name in ("whereabouts", ".whereabouts-py"):
        (bin_dir / name).chmod(0o755)
    stdin = random.Random(size).randbytes(size)
    code, out, _ = run(str(bin_dir / "whereabouts"), cni_env("ADD", str(tmp_path / "missing.sock")), stdin)
    assert (code, out) == (0, f"{hashlib.sha256(stdin).hexdigest()}  -\n[]\n".encode())


@pytest.mark.parametrize("size", [MAX_STDIN, MAX_STDIN + 1, 17 << 20])
def test_a_stdin_beyond_the_plugins_bound_goes_whole_to_the_python_plugin_not_the_agent(builds, tmp_path,
                                                                                        fake_agent, size):
    """Every plugin refuses a stdin over MAX_STDIN (code 6): the forwarder reads one byte more, no agent is
    asked, and the Python plugin answers as it does alone.  At the bound the agent is asked; this one closes
    without answering, and the Python plugin does the ADD with the whole stdin."""
    requests = []

    def closes(connection):
        requests.append(read_line(connection))
        connection.close()

    socket_path = fake_agent(closes)
    conf = config(tmp_path, padding="y" * (size - len(config(tmp_path, padding=""))))
    assert len(conf) == size
    env = cni_env("ADD", socket_path)
    ours = run(native(builds["asan-short"]), env, conf)
    assert ours == run(python(builds["asan-short"]), {**env, "CNI_IPAM_AGENT_SOCKET": ""}, conf)
    if size <= MAX_STDIN:
        assert ours[0] == 0 and json.loads(ours[1])["ips"][0]["address"] == "10.40.0.1/24"
        assert [len(json.loads(line)["stdin"]) for line in requests] == [size]
    else:
        assert ours[0] == 1 and json.loads(ours[1])["code"] == 6 and requests == []  # not even asked


def test_without_its_python_launcher_the_forwarder_says_so_in_cni_form(builds, tmp_path):
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    with open(native(builds["asan"]), "rb") as f:
        (lonely / "whereabouts").write_bytes(f.read())
    (lonely / "whereabouts").chmod(0o755)
    code, out, err = run(str(lonely / "whereabouts"), cni_env("VERSION", None), b"")
    assert code == 1 and json.loads(out) == {
        "code": 999, "msg": f"cni-ipam forwarder: cannot run {lonely}/.whereabouts-py: No such file or directory"}


# --- installed ------------------------------------------------------------------------------------

def test_install_native_writes_the_forwarder_and_the_python_launcher_beside_it(tmp_path):
    from cni_ipam.install import NATIVE_FORWARDER

    done = subprocess.run([sys.executable, "-m", "cni_ipam.cli", "install", "--native", "--cni-bin-dir",
                           str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["installed " + str(tmp_path / name)
                                          for name in ("static", ".whereabouts-py", "whereabouts")]
    with open(NATIVE_FORWARDER, "rb") as f:
        assert (tmp_path / "whereabouts").read_bytes() == f.read()
    assert (tmp_path / ".whereabouts-py").read_text().startswith(f"#!{sys.executable} -IS\n")
    version = subprocess.run([str(tmp_path / "whereabouts")], env={"CNI_COMMAND": "VERSION"}, capture_output=True)
    assert json.loads(version.stdout)["cniVersion"] == "1.1.0"


@pytest.mark.root
def test_on_a_node_without_python_the_bundled_forwarder_falls_back_to_the_bundled_runtime(tmp_path):
    """``--runtime-dir``: the forwarder is copied into the version and loads its loader and libc, as the
    interpreter does; with no agent on the node, the call is the Python plugin's."""
    from node_root import (CHROOT, NODE_BIN, NODE_RUNTIME, WHEREABOUTS_NET, make_node_root, need_patchelf,
                           need_root)

    need_patchelf()
    need_root()
    root = str(tmp_path / "rootfs")
    make_node_root(root)
    done = subprocess.run([sys.executable, "-m", "cni_ipam.cli", "install", "--native", "--cni-bin-dir",
                           root + NODE_BIN, "--runtime-dir", root + NODE_RUNTIME, "--host-root", root],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    forwarder = root + NODE_BIN + "/whereabouts"
    interpreter = subprocess.run(["patchelf", "--print-interpreter", forwarder], capture_output=True, text=True)
    assert interpreter.stdout.startswith(NODE_RUNTIME + "/v"), interpreter
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "pod-a", "CNI_NETNS": "/proc/1/ns/net", "CNI_IFNAME": "eth0",
           "CNI_PATH": NODE_BIN, "CNI_IPAM_AGENT_SOCKET": "/run/cni-ipam/none.sock"}
    added = subprocess.run([CHROOT, root, NODE_BIN + "/whereabouts"], input=json.dumps(WHEREABOUTS_NET).encode(),
                           env=env, capture_output=True, timeout=60)
    assert added.returncode == 0, added
    assert json.loads(added.stdout)["ips"] == [{"address": "192.168.2.225/28"}]
