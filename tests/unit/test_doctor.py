"""doctor: the preflight of both runners, which runner can produce a verdict (exit 6 when none), every
problem with a fix, and the real-GPU cases explained."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from mnnrepro import doctor, icd, preflight
from mnnrepro.preflight import FAIL, OK, WARN, Finding, Load
from mnnrepro.settings import Settings

# conftest.py's fixtures
FakeDoctorChecks = Callable[[dict[str, list[Finding]]], None]
RunDoctor = Callable[[Settings], tuple[int, list[str]]]

NO_ENGINE = Finding(FAIL, "docker engine", "no Docker engine answers", "start it")
NO_LIBVULKAN = Finding(
    FAIL, "libvulkan.so (unversioned)", "missing", "apt-get install libvulkan-dev", ("libvulkan-dev",)
)


def test_no_runner_can_produce_a_verdict_exits_6(
    tmp_path: Path, fake_doctor_checks: FakeDoctorChecks, run_doctor: RunDoctor
) -> None:
    fake_doctor_checks({"host": [NO_LIBVULKAN], "docker": [NO_ENGINE]})
    code, lines = run_doctor(Settings(cache_dir=tmp_path))
    assert code == 6
    assert "runner host: cannot produce a verdict: libvulkan.so (unversioned)" in lines
    assert "runner docker: cannot produce a verdict: docker engine" in lines
    assert any(line.strip() == "fix: apt-get install libvulkan-dev" for line in lines)
    assert any(line.endswith("no runner can produce a verdict") for line in lines)
    # The shared finding is printed once, under "both runners".
    assert sum("free disk" in line for line in lines) == 1
    assert lines[0] == "both runners:"


@pytest.mark.parametrize(("runner", "code"), [("auto", 0), ("host", 0), ("docker", 6)])
def test_one_usable_runner(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    runner: str,
    code: int,
    fake_doctor_checks: FakeDoctorChecks,
    run_doctor: RunDoctor,
) -> None:
    fake_doctor_checks({"host": [Finding(WARN, "ccache", "missing", "apt-get install ccache")], "docker": [NO_ENGINE]})
    got, lines = run_doctor(Settings(cache_dir=tmp_path, runner=runner))
    assert got == code
    assert "runner host: can produce a verdict" in lines


def test_the_real_doctor_shadowed_sdk_and_missing_libvulkan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_doctor: RunDoctor
) -> None:
    """End to end on this machine's checks: a Docker SDK shadowed by the repository's docker/ folder and no
    unversioned libvulkan.so leave no runner: exit 6, each with its real fix."""
    monkeypatch.setattr(preflight.docker, "docker_sdk", _shadowed)
    monkeypatch.setattr(preflight.vulkan, "VULKAN_LOADER", "libmnnrepro_no_vulkan.so")
    code, lines = run_doctor(Settings(cache_dir=tmp_path, runner="auto"))
    text = "\n".join(lines)
    assert code == 6, text
    assert "fix: pip install docker" in text
    assert "start dockerd" not in text and "has no attribute 'from_env'" not in text
    assert "fix: apt-get install libvulkan1 libvulkan-dev" in text
    assert "silently uses the CPU" in text


def _shadowed() -> object:
    from mnnrepro.errors import EnvironmentProblem

    raise EnvironmentProblem(
        "the Docker SDK for Python is not installed (`import docker` found /repo/docker, not the SDK)",
        hint="pip install docker",
    )


def test_every_warning_or_failure_names_a_fix(tmp_path: Path) -> None:
    diagnosis = doctor.check(Settings(cache_dir=tmp_path, runner="host"))
    findings = [f for _, part in diagnosis.sections for f in part]
    assert {f.what for f in findings} >= {"free disk", "ICD swiftshader", "host toolchain"}
    for f in findings:
        if f.status != OK:
            assert f.fix, f


def test_real_gpu_cases_are_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The NVIDIA machine: a Vulkan manifest whose library lacks glvnd, and an OpenCL driver with no vendor file.
    Neither blocks the default sessions (no --icd host, no opencl cell); both are said with their fixes."""
    icd_dir = tmp_path / "icd.d"
    icd_dir.mkdir()
    (icd_dir / "nvidia_icd.json").write_text(json.dumps({"ICD": {"library_path": "libGLX_nvidia.so.0"}}))
    vendors = tmp_path / "vendors"
    vendors.mkdir()
    proc = tmp_path / "nvidia-version"
    proc.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.95.05  Thu Sep 25 2025\n")
    monkeypatch.setattr(preflight.vulkan, "VULKAN_ICD_DIRS", (str(icd_dir),))
    monkeypatch.setattr(preflight.opencl, "OPENCL_VENDOR_DIR", vendors)
    monkeypatch.setattr(preflight.base, "NVIDIA_PROC", proc)
    monkeypatch.setattr(preflight.opencl, "MNN_OPENCL_PATHS", ("libOpenCL.so",))
    for var in ("VK_DRIVER_FILES", "VK_ICD_FILENAMES", "OCL_ICD_VENDORS"):
        monkeypatch.delenv(var, raising=False)
    real = preflight.load_library
    fakes = {
        "libGLX_nvidia.so.0": Load(
            "libGLX_nvidia.so.0", False, "libGLdispatch.so.0: cannot open", ("libGLdispatch.so.0", "libGLX.so.0")
        ),
        "libnvidia-opencl.so.1": Load("libnvidia-opencl.so.1", True),
        "libOpenCL.so": Load("libOpenCL.so", True),
    }
    monkeypatch.setattr(preflight.base, "load_library", lambda name, timeout_s=8.0: fakes.get(name) or real(name))
    monkeypatch.setattr(preflight.opencl, "opencl_platforms", lambda library: [])
    monkeypatch.setattr(preflight.vulkan, "vulkan_instance", lambda manifest: preflight.Instance(-9))
    monkeypatch.setattr(preflight.docker, "docker_sdk", _shadowed)
    # Only the GPU explanations are under test: the host's own toolchain and loader are whatever this machine has.
    monkeypatch.setattr(preflight, "check_toolchain", lambda: [])
    monkeypatch.setattr(preflight, "check_gdb", lambda severity=preflight.FAIL: [])
    monkeypatch.setattr(preflight, "check_vulkan_loader", lambda severity=preflight.FAIL: [])
    diagnosis = doctor.check(Settings(cache_dir=tmp_path, runner="host", icds=("bogus",)))
    lines: list[str] = []
    doctor.report(diagnosis, lines.append)
    text = "\n".join(lines)
    assert "vkCreateInstance returns -9 (VK_ERROR_INCOMPATIBLE_DRIVER)" in text
    assert "fix: apt-get install libglvnd0 libglx0 libegl1" in text
    assert f"fix: echo libnvidia-opencl.so.1 > {vendors / 'nvidia.icd'}" in text
    assert "580.95.05 loaded; real-GPU cells (--icd host, opencl) need --runner host" in text
    assert not diagnosis.blocking["host"], diagnosis.blocking["host"]  # explained, not blocking
    assert "libglvnd0" in diagnosis.packages
    gpu = dict(diagnosis.sections)["real GPUs and devices (information)"]
    assert {f.status for f in gpu if f.what.startswith("ICD host")} == {WARN}


def plant_gpu_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, glvnd: bool) -> None:
    """The H100 of issue 22: no Docker engine, no lavapipe, SwiftShader not cached and not fetchable, gdb there;
    NVIDIA's Vulkan driver is the machine's own (`--icd host`), loading when glvnd's libraries are installed."""
    icd_dir = tmp_path / "icd.d"
    icd_dir.mkdir()
    (icd_dir / "nvidia_icd.json").write_text(json.dumps({"ICD": {"library_path": "libGLX_nvidia.so.0"}}))
    proc = tmp_path / "nvidia-version"
    proc.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.159.04  Thu Sep 25 2025\n")
    monkeypatch.setattr(preflight.vulkan, "VULKAN_ICD_DIRS", (str(icd_dir),))
    monkeypatch.setattr(preflight.base, "NVIDIA_PROC", proc)
    monkeypatch.setattr(icd, "LAVAPIPE_GLOBS", (str(tmp_path / "none" / "lvp_icd*.json"),))
    for var in ("VK_DRIVER_FILES", "VK_ICD_FILENAMES"):
        monkeypatch.delenv(var, raising=False)
    unfetchable = Finding(FAIL, "ICD swiftshader", "not cached, and the npm registry does not answer", "fetch it")
    monkeypatch.setattr(preflight, "_swiftshader_fetchable", lambda label, severity: unfetchable)
    glx = (
        Load("libGLX_nvidia.so.0", True) if glvnd else Load("libGLX_nvidia.so.0", False, "cannot open", preflight.GLVND)
    )
    monkeypatch.setattr(
        preflight.base, "load_library", lambda name, timeout_s=8.0: glx if "nvidia" in name else Load(name, glvnd)
    )
    instance = preflight.Instance(0, ("NVIDIA H100 80GB HBM3",)) if glvnd else preflight.Instance(-9)
    monkeypatch.setattr(preflight.vulkan, "vulkan_instance", lambda manifest: instance)
    monkeypatch.setattr(preflight.docker, "docker_sdk", _shadowed)
    monkeypatch.setattr(preflight, "check_disk", lambda cache_dir: [Finding(OK, "free disk", "50.0 GiB")])
    monkeypatch.setattr(preflight, "check_toolchain", lambda: [Finding(OK, "host toolchain", "c++, cmake, ninja")])
    monkeypatch.setattr(preflight, "check_gdb", lambda severity=preflight.FAIL: [Finding(OK, "gdb", "runs Python")])
    monkeypatch.setattr(preflight, "check_vulkan_loader", lambda severity=preflight.FAIL: [])
    monkeypatch.setattr(preflight, "check_opencl", lambda requested: [])
    monkeypatch.setattr(doctor, "_device_checks", lambda settings: [])
    monkeypatch.setattr(doctor, "_sources", lambda settings: [])


@pytest.mark.parametrize("runner", ["auto", "host"])
def test_a_gpu_machine_gives_verdicts_with_the_host_icd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runner: str, run_doctor: RunDoctor
) -> None:
    """Issue 22: doctor exited 6 ("no runner can produce a verdict") on the H100, where --icd host gives every
    verdict: the machine's own Vulkan driver counts, and each ICD says whether it works."""
    plant_gpu_machine(tmp_path, monkeypatch, glvnd=True)
    code, lines = run_doctor(Settings(cache_dir=tmp_path, runner=runner))
    text = "\n".join(lines)
    assert code == 0, text
    assert (
        "runner host: can produce a verdict with --icd host (not as configured: ICD lavapipe, ICD swiftshader)" in lines
    )
    assert "  ICD host (not in the settings' ICDs): works" in lines
    assert any(
        line.startswith("  ICD lavapipe: does not work: ICD lavapipe: Mesa lavapipe is not installed") for line in lines
    )
    assert any(line.startswith("  ICD swiftshader: does not work: ICD swiftshader: not cached") for line in lines)
    assert "runner docker: cannot produce a verdict: docker SDK" in lines
    assert lines[-1].endswith("host (with --icd host) can produce a verdict"), lines[-1]
    assert "MNN would take NVIDIA H100 80GB HBM3" in text


def test_a_gpu_machine_without_glvnd_still_cannot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_doctor: RunDoctor
) -> None:
    """The same machine before glvnd is installed: NVIDIA's driver does not load, so no ICD works: exit 6, and
    the host ICD's failure (shown as a warning: the settings do not name it) says what to install."""
    plant_gpu_machine(tmp_path, monkeypatch, glvnd=False)
    code, lines = run_doctor(Settings(cache_dir=tmp_path, runner="auto"))
    text = "\n".join(lines)
    assert code == 6, text
    assert "runner host: cannot produce a verdict: no ICD works" in lines
    assert any(line.startswith("  ICD host (not in the settings' ICDs): does not work: ICD host") for line in lines)
    assert "libglvnd0" in text


def test_the_host_icd_named_in_the_settings_blocks_as_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_doctor: RunDoctor
) -> None:
    """--icd host on the GPU machine: works, and no 'with --icd' note (the settings already say it)."""
    plant_gpu_machine(tmp_path, monkeypatch, glvnd=True)
    code, lines = run_doctor(Settings(cache_dir=tmp_path, runner="host", icds=("host",)))
    assert code == 0
    assert "runner host: can produce a verdict" in lines and "  ICD host: works" in lines
