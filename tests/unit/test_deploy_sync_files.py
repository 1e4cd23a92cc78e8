"""``cni-ipam sync-files``: the plain installer's copy of the etcd Secret onto the node."""

import os
import signal
import subprocess
import sys
import time

import pytest

from cni_ipam.cli import main
from cni_ipam.deploy.syncfiles import source_files, sync_once


def secret_volume(directory, files: dict, version="..2025_01_01_00_00_00.1"):
    """A Secret volume as the kubelet lays it out: the files in a dated dir, ``..data`` to it, a link per key."""
    data = directory / version
    data.mkdir(parents=True)
    for name, text in files.items():
        (data / name).write_text(text)
    link = directory / "..data_tmp"
    link.symlink_to(version)
    os.replace(link, directory / "..data")
    for name in files:
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"..data/{name}")
    return directory


def test_copies_every_key_private_and_skips_the_kubelets_dot_entries(tmp_path):
    source = secret_volume(tmp_path / "secret", {"whereabouts.conf": '{"datastore": "etcd"}', "etcd-ca.crt": "CA"})
    target = tmp_path / "host" / "whereabouts.d"
    assert sync_once(str(source), str(target)) == ["etcd-ca.crt", "whereabouts.conf"]
    assert sorted(os.listdir(target)) == ["etcd-ca.crt", "whereabouts.conf"]
    assert (target / "whereabouts.conf").read_text() == '{"datastore": "etcd"}'
    for name in os.listdir(target):
        assert not (target / name).is_symlink()
        assert (target / name).stat().st_mode & 0o777 == 0o600


def test_writes_only_what_changed_and_removes_nothing(tmp_path):
    source = secret_volume(tmp_path / "secret", {"a": "1", "b": "2"})
    target = tmp_path / "target"
    sync_once(str(source), str(target))
    (target / "mine").write_text("left alone")
    assert sync_once(str(source), str(target)) == []
    # The kubelet swaps ..data to a new dated dir when the Secret changes.
    (source / "..2025_01_02_00_00_00.2").mkdir()
    (source / "..2025_01_02_00_00_00.2" / "a").write_text("1")
    (source / "..2025_01_02_00_00_00.2" / "b").write_text("3")
    os.symlink("..2025_01_02_00_00_00.2", source / "..data_tmp")
    os.replace(source / "..data_tmp", source / "..data")
    assert sync_once(str(source), str(target)) == ["b"]
    assert (target / "b").read_text() == "3" and (target / "mine").read_text() == "left alone"


def test_no_secret_copies_nothing(tmp_path):
    """The Secret volume is optional: an empty or missing dir is not an error."""
    assert source_files(str(tmp_path / "missing")) == {}
    (tmp_path / "empty").mkdir()
    assert sync_once(str(tmp_path / "empty"), str(tmp_path / "target")) == []
    assert not (tmp_path / "target").exists()


def test_once_from_the_command_line(tmp_path, capsys):
    source = secret_volume(tmp_path / "secret", {"whereabouts.conf": "{}"})
    target = tmp_path / "target"
    assert main(["sync-files", "--from", str(source), "--to", str(target), "--every", "0"]) == 0
    assert (target / "whereabouts.conf").read_text() == "{}"
    assert f"wrote {target / 'whereabouts.conf'}" in capsys.readouterr().err


def test_runs_until_sigterm_and_then_exits_0(tmp_path):
    """As the installer pod's long-lived container: it must stop at once when the pod is deleted."""
    source = secret_volume(tmp_path / "secret", {"k": "v"})
    target = tmp_path / "target"
    process = subprocess.Popen([sys.executable, "-m", "cni_ipam.cli", "sync-files", "--from", str(source),
                                "--to", str(target), "--every", "30"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (target / "k").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (target / "k").read_text() == "v"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize("every", ["-1", "x", "3601"])
def test_every_out_of_range_is_refused(every, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["sync-files", "--from", str(tmp_path), "--to", str(tmp_path / "t"), "--every", every])
    assert exit.value.code == 2
    assert "--every" in capsys.readouterr().err
