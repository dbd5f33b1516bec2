"""`mnnrepro build --optest` (issue 26): CI's build job makes mnn_optest too and packs it with the variants, so the
op shards that unpack the build compile nothing; without the flag nothing but the core, driver and plugins."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mnnrepro import cli, prepare
from mnnrepro.workloads.ops import optest


def _fake_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Any]:
    core = SimpleNamespace(key="c" * 24, lib_dir=tmp_path / "lib", variant_dir=tmp_path)
    built = SimpleNamespace(core=core, builder="the builder", driver=tmp_path / "d", plugins={}, build_s=0.0)
    monkeypatch.setattr(prepare, "preflight_for", lambda settings, *a, **k: (settings, None))
    monkeypatch.setattr(prepare, "build_ref", lambda *a, **k: built)
    calls: list[Any] = []

    def build_binary(builder: Any, c: Any) -> Any:
        calls.append((builder, c))
        return SimpleNamespace(path=tmp_path / "optest" / "mnn_optest")

    monkeypatch.setattr(optest, "build_binary", build_binary)
    return calls


def test_build_optest_builds_mnn_optest_against_the_core(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = _fake_build(monkeypatch, tmp_path)
    assert cli.main(["build", "--ref", "3.3.0", "--variants", "cpu", "--optest"]) == 0
    assert len(calls) == 1 and calls[0][0] == "the builder" and calls[0][1].key == "c" * 24
    assert "mnn_optest: " in capsys.readouterr().out


def test_build_without_optest_builds_no_tests(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = _fake_build(monkeypatch, tmp_path)
    assert cli.main(["build", "--ref", "3.3.0", "--variants", "cpu"]) == 0
    assert calls == []
