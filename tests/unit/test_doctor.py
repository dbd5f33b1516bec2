"""doctor: every problem comes with a fix, and a missing libvulkan.so fails a host-runner setup."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from mnnrepro import doctor
from mnnrepro.settings import Settings


def test_missing_unversioned_libvulkan_is_a_problem_with_a_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = ctypes.CDLL

    def fake(name: str, *args: object, **kwargs: object) -> object:
        if name == "libvulkan.so":
            raise OSError("libvulkan.so: cannot open shared object file")
        return real(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ctypes, "CDLL", fake)
    findings = doctor.check(Settings(cache_dir=tmp_path, runner="host"))
    lib = next(f for f in findings if f.what.startswith("libvulkan.so"))
    assert lib.status == doctor.FAIL
    assert "libvulkan-dev" in lib.fix
    lines: list[str] = []
    assert doctor.report(findings, lines.append) == 6
    assert any("fix: apt-get install libvulkan-dev" in line for line in lines)


def test_every_warning_or_failure_names_a_fix(tmp_path: Path) -> None:
    findings = doctor.check(Settings(cache_dir=tmp_path, runner="host"))
    assert {f.what for f in findings} >= {"free disk", "ICD swiftshader", "host toolchain"}
    for f in findings:
        if f.status != doctor.OK and f.what != "ICD host (installed drivers)" and not f.what.startswith("ICD lav"):
            assert f.fix, f
