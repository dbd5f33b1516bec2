"""prepare: gdb as the runner sees it (gdb, else cuda-gdb), and a ref prepared without one (issue 22)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from mnnrepro import fixtures, prepare
from mnnrepro.errors import EnvironmentProblem
from mnnrepro.runner import HostRunner
from mnnrepro.settings import Settings

GDB_OK = 'case "$*" in *python*) echo mnnrepro-gdb-ok;; esac'


def only_these_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tools: dict[str, str]) -> Path:
    """PATH holds the shell and the tools the probe pipes through, plus these fake tools (shell script bodies)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for real in ("sh", "tail", "cut"):
        found = shutil.which(real)
        assert found is not None, real
        (bin_dir / real).symlink_to(found)
    for name, body in tools.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(prepare, "_GDB_SEEN", {})
    return bin_dir


def test_cuda_gdb_is_the_gdb_when_it_runs_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = only_these_tools(tmp_path, monkeypatch, {"cuda-gdb": GDB_OK})
    said: list[str] = []
    assert prepare.usable_gdb(HostRunner(), said.append) == str(bin_dir / "cuda-gdb")
    assert not said


def test_gdb_comes_before_cuda_gdb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = only_these_tools(tmp_path, monkeypatch, {"gdb": GDB_OK, "cuda-gdb": GDB_OK})
    assert prepare.usable_gdb(HostRunner(), lambda _: None) == str(bin_dir / "gdb")


def _prepare(settings: Settings, monkeypatch: pytest.MonkeyPatch, said: list[str]) -> prepare.Prepared:
    unused: Any = None  # prepare reads only the runner of the build here (cpu: no ICDs)
    built = prepare.Built("3.3.0", unused, unused, HostRunner(), unused, unused, Path("driver"), {}, 0.0)
    monkeypatch.setattr(prepare, "build_ref", lambda ref, names, settings, matrix, say: built)
    return prepare.prepare("3.3.0", ("cpu",), settings, fixtures.load_matrix(), said.append)


def test_no_usable_gdb_goes_on_as_no_gdb_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No gdb, and a cuda-gdb without Python: the ref is prepared as with --no-gdb (gdb_path None), the reason
    is recorded for the reports (gdb_absent, signal_only) and said."""
    only_these_tools(tmp_path, monkeypatch, {"cuda-gdb": 'echo "Python scripting is not supported"'})
    said: list[str] = []
    prepared = _prepare(Settings(cache_dir=tmp_path), monkeypatch, said)
    assert prepared.gdb_path is None and prepared.signal_only
    assert prepared.gdb_absent.startswith("no usable gdb with Python for the host runner")
    assert "gdb: not installed" in prepared.gdb_absent and "cuda-gdb does not run Python" in prepared.gdb_absent
    assert any(line.startswith("WARNING: no gdb: crash signatures will be judged by signal only") for line in said)
    opted_out = _prepare(Settings(cache_dir=tmp_path, gdb=False), monkeypatch, said)
    assert opted_out.gdb_path is None and opted_out.gdb_absent == "--no-gdb"


def test_required_gdb_stops_the_preparation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """require_gdb (MNNREPRO_REQUIRE_GDB=1, set by CI): the runner (the Docker image, too) must have gdb."""
    only_these_tools(tmp_path, monkeypatch, {})
    with pytest.raises(EnvironmentProblem, match="MNNREPRO_REQUIRE_GDB=1"):
        _prepare(Settings(cache_dir=tmp_path, require_gdb=True), monkeypatch, [])


def test_a_gdb_found_is_recorded_as_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = only_these_tools(tmp_path, monkeypatch, {"gdb": GDB_OK})
    prepared = _prepare(Settings(cache_dir=tmp_path, require_gdb=True), monkeypatch, [])
    assert prepared.gdb_path == str(bin_dir / "gdb") and prepared.gdb_absent == "" and not prepared.signal_only
