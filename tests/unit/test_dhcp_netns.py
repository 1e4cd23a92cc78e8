"""What the DHCP daemon agrees to enter (cni_ipam.dhcp.netns.open_net), on real files: no root needed.

Every refusal here happens before any ``setns``: the checks look at the
opened file, never at what the request says it is.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from cni_ipam.dhcp import netns


def refusal(path: str) -> str:
    with pytest.raises(netns.Refused) as caught:
        fd, _ = netns.open_net(path)
        os.close(fd)
    return str(caught.value)


def test_a_fifo_is_refused_at_once(tmp_path):
    """A plain open of a FIFO with no writer blocks forever; O_PATH never runs the FIFO's open."""
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    found = []
    opener = threading.Thread(target=lambda: found.append(refusal(fifo)), daemon=True)
    started = time.monotonic()
    opener.start()
    opener.join(5)
    assert not opener.is_alive(), "opening a FIFO as a netns blocked"
    assert time.monotonic() - started < 5
    assert found == [f"{fifo} is a FIFO, not a network namespace"]


@pytest.mark.parametrize("make,kind", [
    (lambda p: open(p, "w").close(), "a file"),
    (os.mkdir, "a directory"),
])
def test_files_that_are_no_namespace_are_refused(tmp_path, make, kind):
    path = str(tmp_path / "thing")
    make(path)
    assert refusal(path) == f"{path} is {kind}, not a network namespace"


def test_a_device_is_refused_without_opening_it():
    assert refusal("/dev/null") == "/dev/null is a device, not a network namespace"


def test_another_type_of_namespace_is_refused():
    assert refusal("/proc/self/ns/mnt") == "/proc/self/ns/mnt is a mount namespace, not a network namespace"


@pytest.mark.parametrize("path", ["/proc/self/ns/net", f"/proc/{os.getpid()}/ns/net", "/proc/thread-self/ns/net"])
def test_the_daemons_own_namespace_is_refused_by_any_path(path):
    assert refusal(path) == (f"{path} is the DHCP daemon's own network namespace: "
                             "the daemon only enters pods' namespaces")


def test_a_symlink_is_judged_by_what_it_leads_to(tmp_path):
    link = str(tmp_path / "link")
    os.symlink("/proc/self/ns/net", link)
    assert "own network namespace" in refusal(link)
    loop = str(tmp_path / "loop")
    os.symlink(loop, loop)
    assert refusal(loop).startswith(f"network namespace {loop} cannot be opened: ")


def test_a_missing_path_is_gone_not_refused(tmp_path):
    for path in (str(tmp_path / "none"), "/etc/hostname/x"):
        with pytest.raises(netns.NetnsGone, match="does not exist"):
            netns.open_net(path)
