"""The type stubs match the native module, and the package type-checks."""

import subprocess
import sys

import pytest

pytest.importorskip("mypy", reason="dev-setup installs mypy")


def run_mypy(args, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.timeout(300)
def test_the_native_stubs_match_the_module(tmp_path):
    run_mypy(["mypy.stubtest", "exoservice._native", "--mypy-config-file", "/dev/null"], tmp_path)


@pytest.mark.timeout(300)
def test_the_package_passes_strict_type_checking(tmp_path):
    run_mypy(["mypy", "--strict", "--cache-dir", str(tmp_path / "cache"), "-p", "exoservice"], tmp_path)
