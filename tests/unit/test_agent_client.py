"""The Python launcher's side of the agent protocol (cni_ipam.agent_client): its own JSON request line and
the agent's answer in bytes, driven directly and over a real socketpair."""

import json
import random
import socket
import threading

import pytest

from cni_ipam import agent_client, cni
from cni_ipam.agent import BadRequest, answer_bytes, parse_request
from cni_ipam.agent_client import MAX_MESSAGE, quote, read_answer, request_line


def fuzz_text(rng: random.Random, n: int) -> str:
    """Control characters, DEL, quotes, backslashes, lone surrogates (as surrogateescape makes them) and
    characters beyond the basic plane."""
    picks = [lambda: chr(rng.randint(0, 0x20)), lambda: chr(0x7F), lambda: rng.choice('"\\/'),
             lambda: chr(rng.randint(0x21, 0x7E)), lambda: chr(rng.randint(0xD800, 0xDFFF)),
             lambda: chr(rng.randint(0x80, 0xD7FF)), lambda: chr(rng.randint(0x10000, 0x10FFFF))]
    return "".join(rng.choice(picks)() for _ in range(n))


def test_quote_writes_what_json_dumps_writes_with_ascii_escapes():
    rng = random.Random(17)
    for _ in range(2000):
        text = fuzz_text(rng, rng.randint(0, 30))
        assert quote(text) == json.dumps(text), text


def test_the_request_line_carries_the_cni_variables_and_every_byte_of_stdin():
    rng = random.Random(23)
    for _ in range(200):
        stdin = bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
        # the environment as the launcher reads it: any bytes, decoded with surrogateescape
        args = bytes(rng.randrange(1, 256) for _ in range(10)).decode("utf-8", "surrogateescape")
        env = {"CNI_COMMAND": "ADD", "CNI_ARGS": args, "PATH": "/bin", "HOME": fuzz_text(rng, 5)}
        line = request_line("whereabouts", env, stdin)
        assert line.endswith(b"\n") and line.count(b"\n") == 1 and line.isascii()
        message = json.loads(line)
        assert parse_request(message) == ("whereabouts", {"CNI_COMMAND": "ADD", "CNI_ARGS": env["CNI_ARGS"]},
                                          stdin.decode("utf-8", "surrogateescape"))
        assert message["answer"] == "bytes"
        assert message["stdin"].encode("utf-8", "surrogateescape") == stdin


def test_the_agent_refuses_an_answer_form_it_does_not_know():
    with pytest.raises(BadRequest, match='answer: expected "json" or "bytes", got "xml"'):
        parse_request({"plugin": "whereabouts", "answer": "xml"})


def answered(data: bytes, chunk: int = 7):
    """What read_answer makes of ``data`` sent in ``chunk``-byte pieces, then the peer closing."""
    ours, theirs = socket.socketpair()

    def send():
        for i in range(0, len(data), chunk):
            theirs.sendall(data[i:i + chunk])
        theirs.close()

    sender = threading.Thread(target=send)
    sender.start()
    try:
        return read_answer(ours)
    finally:
        sender.join()
        ours.close()


def test_an_answer_comes_back_as_the_launchers_stdout_and_stderr_would_write_it():
    answer = {"stdout": '{"ips":[]}\udcff', "stderr": "warning: \ud800 é\n", "exit": -3}
    out, err, code = answered(answer_bytes(answer))
    assert out == '{"ips":[]}'.encode() + b"\xff"  # surrogateescape: the byte the plugin read
    assert err == "warning: \\ud800 é\n".encode()  # backslashreplace
    assert code == -3


def test_an_answer_in_one_piece_or_many_reads_the_same():
    data = answer_bytes({"stdout": "x" * 100000, "stderr": "", "exit": 0})
    assert answered(data, 1 << 20) == answered(data, 3) == (b"x" * 100000, b"", 0)


@pytest.mark.parametrize("data, why", [
    (b"", "no answer line"),
    (b"0 1 0", "no answer line"),  # the line never ends
    (b"x" * 100, "no answer line"),
    (b'{"stdout":"","stderr":"","exit":0}\n', "not an answer line"),  # a JSON answer: this client asked for bytes
    (b"0 1\n", "not an answer line"),
    (b"0 -1 0\n", "not an answer line"),
    (b"0 1_0 0\n", "not an answer line"),
    (b"0 +1 0\n", "not an answer line"),
    (b"0 3 0\nab", "ended early"),
    (b"0 %d 1\n" % MAX_MESSAGE, "an answer of"),
    (b"2147483648 0 0\n", "exit code"),
    (b"-2147483649 0 0\n", "exit code"),
])
def test_anything_else_is_refused_so_the_launcher_does_the_call_itself(data, why):
    with pytest.raises(ValueError, match=why):
        answered(data)


def test_bytes_beyond_the_answer_that_came_with_it_are_refused():
    """Sent in one piece, so they are read with the answer line (the client stops reading at the answer's
    end, as the forwarder does: later bytes are never read)."""
    with pytest.raises(ValueError, match="more than the answer"):
        answered(b"0 1 0\nab", 1 << 20)


@pytest.mark.parametrize("chunk", [7, 1 << 20])
def test_the_answer_line_is_at_most_64_bytes_however_it_arrives(chunk):
    """The native forwarder takes the same bound (MAX_HEAD): the two clients refuse the same answers."""
    at_most = b"0" * 59 + b"1 1 0\n" + b"x"
    assert answered(at_most, chunk) == (b"x", b"", 1)
    with pytest.raises(ValueError, match="no answer line|an answer line of 65 bytes"):
        answered(b"0" + at_most, chunk)


def test_the_launchers_stdin_bound_is_the_plugins():
    """agent_client names it (one import fewer per forwarded call): it must be cni's."""
    assert agent_client.MAX_STDIN == cni.MAX_STDIN
