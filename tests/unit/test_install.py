"""The installer's check that a cached llama-server really runs (a cache copied from another build folder
keeps a RUNPATH that points nowhere: the file exists and is executable, but cannot start)."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install.py"


@pytest.fixture(scope="module")
def install():
    spec = importlib.util.spec_from_file_location("install", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_program(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


def test_a_binary_that_answers_version_runs(install, tmp_path):
    assert install.runs(make_program(tmp_path / "ok", 'test "$1" = --version && echo "version: 1" && exit 0; exit 9'))


def test_a_binary_whose_libraries_are_missing_does_not_run(install, tmp_path):
    # what the dynamic loader does when a shared library is not found: message on stderr, status 127
    broken = make_program(tmp_path / "broken", "echo 'error while loading shared libraries' >&2; exit 127")
    assert not install.runs(broken)


def test_missing_or_non_executable_files_do_not_run(install, tmp_path):
    assert not install.runs(tmp_path / "absent")
    plain = tmp_path / "plain"
    plain.write_text("not a program")
    assert not install.runs(plain)
