"""The one framing of our local protocols (cni_ipam.linejson), driven over a real socketpair."""

import socket

import pytest

from cni_ipam import linejson


def pair():
    a, b = socket.socketpair()
    a.settimeout(2)
    b.settimeout(2)
    return a, b


def test_messages_round_trip_in_order_across_chunk_boundaries():
    a, b = pair()
    data = linejson.encode({"n": 1, "text": "é\n"}) + linejson.encode({"n": 2})
    for i in range(len(data)):  # one byte at a time: a message split anywhere is still whole
        a.sendall(data[i:i + 1])
    reader = linejson.Reader(b)
    assert reader.read() == {"n": 1, "text": "é\n"}
    assert reader.read() == {"n": 2}


def test_encoded_line_is_ascii_and_has_one_newline():
    line = linejson.encode({"s": "a\nb\u2028c\udcff"})
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    assert line.isascii()


def test_closed_before_a_whole_line():
    a, b = pair()
    a.sendall(b'{"partial": ')
    a.close()
    with pytest.raises(linejson.Closed):
        linejson.Reader(b).read()


@pytest.mark.parametrize("line, why", [
    (b"[1, 2]\n", "expected a JSON object"),
    (b"{nope\n", "not JSON"),
    (b"\xff\xfe\n", "not JSON"),
    (b"[" * 100000 + b"\n", "not JSON"),
])
def test_bad_lines_are_bad_messages(line, why):
    a, b = pair()
    a.sendall(line)
    with pytest.raises(linejson.BadMessage, match=why):
        linejson.Reader(b).read()


def test_a_line_over_the_limit_is_refused_without_reading_on():
    a, b = pair()
    a.sendall(b"x" * 5000)  # no newline ever comes: the reader must stop at its bound, not wait
    with pytest.raises(linejson.BadMessage, match="longer than 1000 bytes"):
        linejson.Reader(b, limit=1000).read()


def test_a_timeout_keeps_what_was_read():
    a, b = pair()
    b.settimeout(0.05)
    reader = linejson.Reader(b)
    a.sendall(b'{"a": ')
    with pytest.raises(TimeoutError):
        reader.read()
    a.sendall(b'1}\n')
    assert reader.read() == {"a": 1}


def test_a_deadline_bounds_the_whole_message_not_each_recv():
    """A peer sending a byte now and then never lets one recv time out; the deadline still ends the read."""
    import threading
    import time

    a, b = pair()
    stop = threading.Event()

    def trickle():
        while not stop.is_set():
            a.sendall(b" ")
            time.sleep(0.05)

    sender = threading.Thread(target=trickle)
    sender.start()
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            linejson.Reader(b).read(deadline=started + 0.4)
    finally:
        stop.set()
        sender.join()
    assert 0.35 < time.monotonic() - started < 1.5
