"""Shared fixtures for the unit tests. Nothing here needs MNN, docker or a GPU."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from mnnrepro import source

MakeTree = Callable[[Path], Path]


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
