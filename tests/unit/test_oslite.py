"""cni_ipam.oslite gives what os and os.path give, without importing os (the plugins' hot paths)."""

from __future__ import annotations

import os
import posixpath

import pytest

from cni_ipam import oslite

PATHS = ["", "/", "//", "///", "a", "a/", "a//", "/a", "/a/", "/a/b", "/a//b/", "a/b/c", "./a", "../a", "a/..",
         "a/../..", "/..", "/a/../..", "a/./b/../c", "//a/b", "///a/b", "/a/b/..", ".", "..", "../../a/./b//"]


@pytest.mark.parametrize("path", PATHS)
def test_path_functions_match_posixpath(path):
    assert oslite.dirname(path) == posixpath.dirname(path)
    assert oslite.basename(path) == posixpath.basename(path)
    assert oslite.normpath(path) == posixpath.normpath(path)
    if path:
        assert oslite.abspath(path) == posixpath.abspath(path)


@pytest.mark.parametrize("parts", [("a", "b"), ("a/", "b"), ("", "b"), ("a", "/b", "c"), ("/", "x"), ("a", ""),
                                   ("a", "b/", "c")])
def test_join_matches_posixpath(parts):
    assert oslite.join(*parts) == posixpath.join(*parts)


def test_files_and_environment(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    assert oslite.isdir(str(tmp_path)) and not oslite.isdir(str(tmp_path / "f"))
    assert oslite.exists(str(tmp_path / "f")) and not oslite.exists(str(tmp_path / "missing"))
    assert not oslite.isdir(str(tmp_path / "missing")) and not oslite.exists("nul\0byte")
    monkeypatch.setenv("CNI_IPAM_OSLITE_TEST", "yes")  # os is loaded here: its environ is the one read
    assert oslite.getenv("CNI_IPAM_OSLITE_TEST") == "yes"
    monkeypatch.delenv("CNI_IPAM_OSLITE_TEST")
    assert oslite.getenv("CNI_IPAM_OSLITE_TEST") is None
    assert os.environ.get("PATH") == oslite.getenv("PATH")
