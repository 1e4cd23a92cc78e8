"""Probing as another local user: what an unprivileged process on the node can reach of our files and sockets.

The tests run as root (plugins do); :func:`as_nobody` forks, drops to
uid/gid 65534 (``nobody``) and runs a probe there.  Probed paths must sit in
directories that ``nobody`` may traverse (:func:`open_directory`), else the
probe is kept out by the path and proves nothing about the file.
"""

from __future__ import annotations

import json
import os
import tempfile

import pytest

NOBODY = 65534


def as_nobody(probe, *args):
    """``probe(*args)`` run as uid and gid 65534 in a child process; what it returns must be JSON."""
    return start_as_nobody(probe, *args)()


def start_as_nobody(probe, *args):
    """Start ``probe(*args)`` as uid and gid 65534 in a child process; returns a function that waits for its
    JSON answer.

    Call it from the only thread that starts processes: a fork while another
    thread is inside ``subprocess.Popen`` would inherit Popen's status pipe,
    and Popen would wait for the probe to end.
    """
    if os.geteuid() != 0:
        pytest.skip("not applicable: becoming another user needs root")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            answer = probe(*args)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the test
            answer = {"probe raised": f"{type(exc).__name__}: {exc}"}
        os.write(write_end, json.dumps(answer).encode())
        os._exit(0)
    os.close(write_end)

    def answer():
        with os.fdopen(read_end, "rb") as pipe:
            data = pipe.read()
        os.waitpid(pid, 0)
        return json.loads(data)

    return answer


def open_directory() -> str:
    """A new directory (mode 0755, under the system's temporary directory) that every user may traverse.

    pytest's ``tmp_path`` is mode 0700, which would keep ``nobody`` out of
    everything inside it whatever the files' own modes.
    """
    path = tempfile.mkdtemp(prefix="cni-ipam-probe-")
    os.chmod(path, 0o755)
    return path


def outcome(action, *args) -> str:
    """"ok", or the name of the OSError ``action(*args)`` raised (``EACCES``, ``ENOENT``...)."""
    import errno

    try:
        action(*args)
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc))
    return "ok"
