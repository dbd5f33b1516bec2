"""Shared fixtures for the unit tests. Nothing here needs MNN, docker or a GPU."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from mnnrepro import doctor, preflight, source
from mnnrepro.preflight import FAIL, OK, Finding, Load
from mnnrepro.settings import Settings

MakeTree = Callable[[Path], Path]
FakeLoads = Callable[[dict[str, Load]], list[str]]  # results by library name -> the names asked for
FakeDoctorChecks = Callable[[dict[str, list[Finding]]], None]  # findings per runner
RunDoctor = Callable[[Settings], tuple[int, list[str]]]  # settings -> (exit code, lines)


@pytest.fixture(autouse=True)
def _no_mnnrepro_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """settings.load reads MNNREPRO_* from os.environ; the caller's variables must not leak into a test."""
    for key in list(os.environ):
        if key.startswith("MNNREPRO_"):
            monkeypatch.delenv(key)


def write_mnn_tree(root: Path, marker: str = "") -> Path:
    """A directory holding every file source.REQUIRED names (enough for check_tree, not for a build)."""
    for rel in source.REQUIRED:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"// {rel} {marker}\n")
    return root


@pytest.fixture
def make_mnn_tree() -> MakeTree:
    return write_mnn_tree


def git(repo: Path, *args: str) -> str:
    res = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True)
    return res.stdout.strip()


@pytest.fixture
def isolated_git(monkeypatch: pytest.MonkeyPatch) -> None:
    """No user/system git configuration (signing, hooks, templates) and a fixed identity."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GIT_AUTHOR", "GIT_COMMITTER"):
        monkeypatch.setenv(f"{var}_NAME", "Unit Test")
        monkeypatch.setenv(f"{var}_EMAIL", "unit@example.invalid")
        monkeypatch.setenv(f"{var}_DATE", "2024-01-01T00:00:00Z")


@pytest.fixture
def mnn_git_repo(tmp_path: Path, isolated_git: None) -> Path:
    """A tiny git repository: commit 1 (tagged 1.0) is a minimal MNN tree; commit 2 (HEAD) changes a file."""
    repo = tmp_path / "mnn-repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write_mnn_tree(repo, "v1.0")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "one")
    git(repo, "tag", "1.0")
    (repo / "CMakeLists.txt").write_text("# changed after 1.0\n")
    git(repo, "commit", "-q", "-am", "two")
    return repo


@pytest.fixture
def fake_loads(monkeypatch: pytest.MonkeyPatch) -> FakeLoads:
    """preflight's load_library answers from `results`; any other name is missing. Returns the names asked for."""

    def install(results: dict[str, Load]) -> list[str]:
        asked: list[str] = []

        def load(name: str, timeout_s: float = 0) -> Load:
            asked.append(name)
            return results.get(name, Load(name, False, f"{name}: cannot open shared object file", (Path(name).name,)))

        monkeypatch.setattr(preflight.base, "load_library", load)
        return asked

    return install


@pytest.fixture
def fake_doctor_checks(monkeypatch: pytest.MonkeyPatch) -> FakeDoctorChecks:
    """doctor with preflight.checks answering `by_runner`'s findings per runner (plus a shared disk finding), and
    every other check it makes answered empty (no ICD, OpenCL, loader, device or source checks); what doctor
    adds itself (the validation layer's check) still runs."""

    def install(by_runner: dict[str, list[Finding]]) -> None:
        disk = Finding(OK, "free disk", "50.0 GiB")

        def checks(
            settings: Settings, *, icds: tuple[str, ...], opencl: bool, runner: str
        ) -> list[Callable[[], list[Finding]]]:
            return [lambda: [disk], lambda: list(by_runner[runner])]

        monkeypatch.setattr(preflight, "checks", checks)
        monkeypatch.setattr(preflight, "check_opencl", lambda requested: [])
        monkeypatch.setattr(preflight, "check_opencl_in_docker", lambda requested: [])
        monkeypatch.setattr(preflight, "check_host_icd", lambda severity: [])
        monkeypatch.setattr(preflight, "check_icd", lambda name, settings, runner, severity=FAIL: [])
        monkeypatch.setattr(preflight, "check_vulkan_loader", lambda severity=FAIL: [])
        monkeypatch.setattr(doctor, "_device_checks", lambda settings: [])
        monkeypatch.setattr(doctor, "_sources", lambda settings: [])

    return install


@pytest.fixture
def run_doctor() -> RunDoctor:
    """doctor's check and report for these settings: (exit code, the lines it printed)."""

    def run(settings: Settings) -> tuple[int, list[str]]:
        lines: list[str] = []
        return doctor.report(doctor.check(settings), lines.append), lines

    return run
