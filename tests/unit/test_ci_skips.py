"""The CI rule of tests/conftest.py: with ``CI=true`` a skip fails the run unless it says "not applicable:".

Each case runs pytest in a subprocess on a tiny generated test file, next
to a copy of the real tests/conftest.py, and judges its exit code and
summary.
"""

import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest

CONFTEST = pathlib.Path(__file__).parent.parent / "conftest.py"


def run_pytest(tmp_path, source: str, ci: str | None) -> subprocess.CompletedProcess:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_generated.py").write_text(textwrap.dedent(source))
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                           str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


MISSING_TOOL = """
    import pytest

    def test_runs():
        pass

    def test_needs_etcd():
        pytest.skip("etcd is not installed (/usr/bin/etcd)")

    def test_not_for_this_backend():
        pytest.skip("not applicable: this backend has no rollback")
"""


def test_a_skip_for_a_missing_tool_fails_a_ci_run(tmp_path):
    done = run_pytest(tmp_path, MISSING_TOOL, "true")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "SKIPPED IN CI test_generated.py::test_needs_etcd: etcd is not installed" in done.stdout
    assert "test_not_for_this_backend" not in done.stdout.split("skips that fail a CI run")[1]
    assert "1 tests skipped for a reason other than" in done.stdout


def test_outside_ci_the_same_skip_passes(tmp_path):
    done = run_pytest(tmp_path, MISSING_TOOL, None)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "skips that fail a CI run" not in done.stdout


def test_not_applicable_skips_pass_a_ci_run(tmp_path):
    done = run_pytest(tmp_path, """
        import pytest

        @pytest.mark.parametrize("backend", ["memory", "sqlite"])
        def test_rollback(backend):
            if backend == "memory":
                pytest.skip("not applicable: the memory store has no rollback")
    """, "true")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("source", [
    """
    import os, pytest

    @pytest.mark.skipif(True, reason="ip netns add needs root")
    def test_root():
        pass
    """,
    """
    import pytest

    pytest.skip("podman e2e: podman is not installed", allow_module_level=True)

    def test_podman():
        pass
    """,
    """
    import pytest

    @pytest.fixture
    def dnsmasq():
        pytest.skip("dnsmasq is not installed")

    def test_lease(dnsmasq):
        pass
    """,
], ids=["skipif-marker", "module-level", "fixture"])
def test_every_kind_of_skip_counts(tmp_path, source):
    done = run_pytest(tmp_path, source, "true")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "SKIPPED IN CI" in done.stdout


def test_a_failure_keeps_its_own_exit_code(tmp_path):
    done = run_pytest(tmp_path, """
        import pytest

        def test_fails():
            assert False

        def test_skipped():
            pytest.skip("etcd is not installed")
    """, "true")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed" in done.stdout and "SKIPPED IN CI" in done.stdout
