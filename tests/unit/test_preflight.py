"""preflight: every missing piece is named (the missing library by name) before any build, all at once."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mnnrepro import icd, image, preflight, swiftshader
from mnnrepro.errors import EnvironmentProblem
from mnnrepro.preflight import FAIL, OK, WARN, Finding, Load
from mnnrepro.settings import Settings

MakeLib = Callable[..., Path]
FakeLoads = Callable[[dict[str, Load]], list[str]]  # conftest.py's fake_loads


@pytest.fixture
def make_lib(tmp_path: Path) -> MakeLib:
    """Build a tiny shared library with cc: make_lib(name, source, needs=soname-of-a-library-that-is-gone)."""
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (cc) to build a test library")

    def make(name: str, code: str = "int f(void) { return 1; }\n", needs: tuple[str, ...] = ()) -> Path:
        out = tmp_path / "libs"
        out.mkdir(exist_ok=True)
        deps = []
        for i, soname in enumerate(needs):
            subprocess.run(
                [cc, "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(out / soname), "-x", "c", "-"],
                input=f"int dep{i}(void) {{ return {i}; }}\n",
                text=True,
                check=True,
            )
            deps.append(str(out / soname))
        if needs:
            code = "".join(f"int dep{i}(void);\n" for i in range(len(needs)))
            code += "int f(void) { return " + " + ".join(f"dep{i}()" for i in range(len(needs))) + "; }\n"
        args = [cc, "-shared", "-fPIC", "-o", str(out / name), "-x", "c", "-", "-x", "none", "-Wl,--no-as-needed"]
        subprocess.run([*args, *deps], input=code, text=True, check=True)
        for dep in deps:
            Path(dep).unlink()  # linked against, then removed: the dynamic linker cannot find them
        return out / name

    return make


def write_manifest(path: Path, library: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"file_format_version": "1.0.0", "ICD": {"library_path": library}}))
    return path


# --- loading libraries ---------------------------------------------------------------------------------------


def test_a_missing_dependency_is_named(tmp_path: Path, make_lib: MakeLib) -> None:
    lib = make_lib("libvk_test.so", needs=("libmnnrepro_absent.so.7",))
    load = preflight.load_library(str(lib))
    assert not load.ok
    assert load.missing == ("libmnnrepro_absent.so.7",)
    assert not load.itself_missing
    finding = preflight.check_manifest("ICD x", write_manifest(tmp_path / "x.json", str(lib)))
    assert finding.status == FAIL
    assert "libmnnrepro_absent.so.7" in finding.detail
    assert "apt-file search" in finding.fix  # no Debian package is known for it: say how to find one


def test_every_missing_dependency_is_named_not_only_the_first(make_lib: MakeLib) -> None:
    """dlopen stops at the first missing library; ldd lists the rest, so one apt-get can fix them all."""
    lib = make_lib("libvk_two.so", needs=("libmnnrepro_gone_a.so.1", "libmnnrepro_gone_b.so.2"))
    load = preflight.load_library(str(lib))
    assert set(load.missing) == {"libmnnrepro_gone_a.so.1", "libmnnrepro_gone_b.so.2"}


def test_a_loadable_driver_with_a_device_and_a_relative_path(
    tmp_path: Path, make_lib: MakeLib, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = make_lib("libvk_fine.so")
    assert preflight.load_library(str(lib)).ok
    manifest = write_manifest(lib.parent / "fine.json", "./libvk_fine.so")  # relative to the manifest, as the loader
    asked: list[Path | None] = []

    def instance(m: Path | None) -> preflight.Instance:
        asked.append(m)
        return preflight.Instance(0, ("Fake GPU",))

    monkeypatch.setattr(preflight.vulkan, "vulkan_instance", instance)
    finding = preflight.check_manifest("ICD fine", manifest)
    assert finding.status == OK, finding
    assert "Fake GPU" in finding.detail
    assert asked == [manifest]
    monkeypatch.setattr(preflight.vulkan, "vulkan_instance", lambda m: preflight.Instance(0, ()))
    assert preflight.check_manifest("ICD fine", manifest).status == FAIL  # loads, but no device
    assert preflight.check_manifest("ICD fine", manifest, expect_device=False).status == OK


def test_a_library_that_loads_but_is_no_driver_fails_at_vkcreateinstance(tmp_path: Path, make_lib: MakeLib) -> None:
    """Through the real Vulkan loader: loading is not enough (NVIDIA's driver loads and still returns -9)."""
    if not (preflight.load_library("libvulkan.so").ok or preflight.load_library("libvulkan.so.1").ok):
        pytest.skip("no Vulkan loader on this machine")
    lib = make_lib("libvk_nodriver.so")
    finding = preflight.check_manifest("ICD x", write_manifest(tmp_path / "x.json", str(lib)))
    assert finding.status == FAIL
    assert "vkCreateInstance with only this driver returns -9 (VK_ERROR_INCOMPATIBLE_DRIVER)" in finding.detail


def test_lavapipe_through_the_real_loader_names_its_device() -> None:
    found = sorted(p for g in icd.LAVAPIPE_GLOBS for p in Path("/").glob(g.lstrip("/")))
    if not found or not preflight.load_library("libvulkan.so.1").ok:
        pytest.skip("no lavapipe or no Vulkan loader on this machine")
    instance = preflight.vulkan_instance(found[0])
    assert isinstance(instance, preflight.Instance), instance
    assert instance.rc == 0 and any("llvmpipe" in d for d in instance.devices), instance


def test_a_crashing_or_hanging_driver_does_not_take_preflight_with_it(make_lib: MakeLib) -> None:
    crash = make_lib(
        "libcrash.so", "#include <signal.h>\n__attribute__((constructor)) static void c(void) { raise(SIGSEGV); }\n"
    )
    hang = make_lib(
        "libhang.so", "#include <unistd.h>\n__attribute__((constructor)) static void h(void) { for (;;) pause(); }\n"
    )
    crashed = preflight.load_library(str(crash))
    assert not crashed.ok and "SIGSEGV" in crashed.error
    hung = preflight.load_library(str(hang), timeout_s=1)
    assert not hung.ok and "did not finish" in hung.error


def test_a_manifest_naming_a_missing_library_or_no_json(tmp_path: Path) -> None:
    gone = preflight.check_manifest("ICD a", write_manifest(tmp_path / "a.json", "/nonexistent/libvk_gone.so"))
    assert gone.status == FAIL
    assert "does not exist" in gone.detail
    broken = tmp_path / "b.json"
    broken.write_text("{not json")
    bad = preflight.check_manifest("ICD b", broken, severity=WARN)
    assert bad.status == WARN
    assert "not a usable ICD manifest" in bad.detail


# --- ICD names -----------------------------------------------------------------------------------------------


def test_missing_lavapipe_fails_on_the_host_but_not_in_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(icd, "LAVAPIPE_GLOBS", (str(tmp_path / "none" / "lvp_icd*.json"),))
    settings = Settings(cache_dir=tmp_path)
    (host,) = preflight.check_icd("lavapipe", settings, "host")
    assert host.status == FAIL
    assert host.packages == ("mesa-vulkan-drivers",)
    (docker,) = preflight.check_icd("lavapipe", settings, "docker")
    assert docker.status == OK  # docker/Dockerfile guarantees it


def test_swiftshader_not_cached_needs_only_a_brotli_decoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No npm: the pinned package is one HTTPS GET; unpacking needs the brotli module (a dependency) or CLI."""
    settings = Settings(cache_dir=tmp_path / "cache")
    assert not swiftshader.manifest_path(settings.cache_dir).exists()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))  # no npm, no brotli CLI
    (with_module,) = preflight.check_icd("swiftshader", settings, "host")
    assert with_module.status == OK and "will be fetched" in with_module.detail
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # no brotli module either
    (without,) = preflight.check_icd("swiftshader", settings, "host")
    assert without.status == FAIL and without.packages == ("brotli",) and "npm" not in without.fix
    assert not swiftshader.manifest_path(settings.cache_dir).exists()  # preflight never fetches


def test_host_icd_in_docker_warns_that_containers_get_no_gpu(tmp_path: Path) -> None:
    (f,) = preflight.check_icd("host", Settings(cache_dir=tmp_path), "docker")
    assert f.status == WARN
    assert "--runner host" in f.fix


def nvidia_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    icd_dir = tmp_path / "icd.d"
    manifest = write_manifest(icd_dir / "nvidia_icd.json", "libGLX_nvidia.so.0")
    monkeypatch.setattr(preflight.vulkan, "VULKAN_ICD_DIRS", (str(tmp_path / "etc"), str(icd_dir)))
    monkeypatch.delenv("VK_DRIVER_FILES", raising=False)
    monkeypatch.delenv("VK_ICD_FILENAMES", raising=False)
    return manifest


def test_nvidia_driver_that_cannot_load_names_the_missing_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_loads: FakeLoads
) -> None:
    nvidia_host(tmp_path, monkeypatch)
    missing = Load(
        "libGLX_nvidia.so.0", False, "libGLdispatch.so.0: cannot open shared object file", ("libGLdispatch.so.0",)
    )
    fake_loads({"libGLX_nvidia.so.0": missing})
    monkeypatch.setattr(preflight.vulkan, "vulkan_instance", lambda m: preflight.Instance(-9))
    found = {f.what: f for f in preflight.check_host_icd()}
    f = found["ICD host: nvidia_icd.json"]
    assert f.status == FAIL
    assert "libGLdispatch.so.0" in f.detail
    assert "-9 (VK_ERROR_INCOMPATIBLE_DRIVER)" in f.detail
    assert set(f.packages) >= {"libglvnd0", "libglx0", "libegl1"}
    assert f.fix.startswith("apt-get install libglvnd0 libglx0 libegl1")
    assert found["ICD host: device 0"].status == FAIL


def test_nvidia_driver_that_loads_but_lacks_glvnd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_loads: FakeLoads
) -> None:
    """Seen on H200 (driver 580.159.04, Ubuntu 24.04): libGLX_nvidia.so.0 dlopens fine, and vkCreateInstance
    still returns -9 until glvnd's libraries are installed: the driver opens them only then."""
    manifest = nvidia_host(tmp_path, monkeypatch)
    fake_loads({"libGLX_nvidia.so.0": Load("libGLX_nvidia.so.0", True), "libEGL.so.1": Load("x", True)})
    monkeypatch.setattr(preflight.vulkan, "vulkan_instance", lambda m: preflight.Instance(-9))
    f = preflight.check_manifest("ICD host: nvidia_icd.json", manifest)
    assert f.status == FAIL
    assert "libGLdispatch.so.0, libGLX.so.0 cannot be loaded" in f.detail
    assert "vkCreateInstance returns -9 (VK_ERROR_INCOMPATIBLE_DRIVER)" in f.detail
    assert f.packages == ("libglvnd0", "libglx0", "libegl1")
    # Without a Vulkan loader the instance cannot be tried, and glvnd is still checked: every problem at once.
    monkeypatch.setattr(preflight.vulkan, "vulkan_instance", lambda m: "no Vulkan loader to create an instance with")
    assert preflight.check_manifest("ICD host: nvidia_icd.json", manifest).status == FAIL
    # With glvnd there, the device is named.
    fake_loads({n: Load(n, True) for n in ("libGLX_nvidia.so.0", *preflight.GLVND)})
    monkeypatch.setattr(preflight.vulkan, "vulkan_instance", lambda m: preflight.Instance(0, ("NVIDIA H200",)))
    ok = preflight.check_manifest("ICD host: nvidia_icd.json", manifest)
    assert ok.status == OK and "NVIDIA H200" in ok.detail


def test_nvidia_driver_without_a_vulkan_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proc = tmp_path / "version"
    proc.write_text("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build\n")
    monkeypatch.setattr(preflight.base, "NVIDIA_PROC", proc)
    monkeypatch.setattr(preflight.vulkan, "VULKAN_ICD_DIRS", (str(tmp_path / "empty"),))
    monkeypatch.delenv("VK_DRIVER_FILES", raising=False)
    monkeypatch.delenv("VK_ICD_FILENAMES", raising=False)
    (f,) = preflight.check_host_icd()
    assert f.status == FAIL
    assert "580.95.05" in f.detail and "580.95.05" in f.fix


# --- libvulkan.so, toolchain, gdb, disk ----------------------------------------------------------------------


def test_no_vulkan_loader_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight.vulkan, "VULKAN_LOADER", "libmnnrepro_no_vulkan.so")
    (f,) = preflight.check_vulkan_loader()
    assert f.status == FAIL
    assert f.packages == ("libvulkan1", "libvulkan-dev")
    assert "silently uses the CPU" in f.detail


def test_only_the_versioned_vulkan_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_lib: MakeLib) -> None:
    versioned = make_lib("libfakevulkan.so.1")
    monkeypatch.setattr(preflight.vulkan, "VULKAN_LOADER", str(versioned.parent / "libfakevulkan.so"))
    (f,) = preflight.check_vulkan_loader()
    assert f.status == FAIL
    assert f.packages == ("libvulkan-dev",)
    assert "only" in f.detail


def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tools: dict[str, str]) -> None:
    """PATH holds only these tools, each a shell script body."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in tools.items():
        tool = bin_dir / name
        tool.write_text(f"#!/bin/sh\n{body}\n")
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))


def test_missing_toolchain_fails_with_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_bin(tmp_path, monkeypatch, {"cmake": "exit 0"})
    found = preflight.check_toolchain()
    tools = next(f for f in found if f.what == "host toolchain")
    assert tools.status == FAIL
    assert tools.packages == ("build-essential", "ninja-build")
    ccache = next(f for f in found if f.what == "ccache")
    assert ccache.status == WARN


GDB_OK = 'case "$*" in *python*) echo mnnrepro-gdb-ok;; esac'
GDB_NO_PYTHON = 'echo "Python scripting is not supported in this copy of GDB."'


def test_gdb_without_python_is_a_warning_unless_required(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 22: a missing gdb stopped every run with exit 6 on GPU servers; verdicts are still possible without it
    (judged by signal only), so it is a warning; FAIL only where gdb is required (CI)."""
    fake_bin(tmp_path, monkeypatch, {"gdb": GDB_NO_PYTHON})
    (f,) = preflight.check_gdb()
    assert f.status == WARN
    assert "Python scripting is not supported" in f.detail
    assert f.detail.startswith("no gdb: crash signatures will be judged by signal only")
    assert "--no-gdb" in f.fix and f.packages == ("gdb",)
    required = preflight.check_gdb(FAIL)[0]
    assert required.status == FAIL and "MNNREPRO_REQUIRE_GDB=1" in required.detail
    fake_bin(tmp_path, monkeypatch, {"gdb": GDB_OK})
    (ok,) = preflight.check_gdb(FAIL)
    assert ok.status == OK


def test_cuda_gdb_with_python_is_the_gdb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GPU servers often have only cuda-gdb: the same probe (gdb running Python) decides, and it is used."""
    fake_bin(tmp_path, monkeypatch, {"cuda-gdb": GDB_OK})
    (f,) = preflight.check_gdb(FAIL)
    assert f.status == OK and f.detail.startswith(str(tmp_path / "fakebin" / "cuda-gdb"))
    assert "gdb: not installed" in f.detail
    assert preflight.find_gdb()[0] == str(tmp_path / "fakebin" / "cuda-gdb")
    fake_bin(tmp_path, monkeypatch, {"cuda-gdb": "exit 0"})  # a cuda-gdb without Python is not taken
    (no,) = preflight.check_gdb()
    assert no.status == WARN and no.packages == ("gdb",)
    assert "cuda-gdb does not run Python" in no.detail


@pytest.mark.parametrize(("required", "status"), [(False, WARN), (True, FAIL)])
def test_missing_gdb_stops_the_host_run_only_when_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, required: bool, status: str
) -> None:
    """The preflight of a session (gdb asked for, the default): no gdb and no cuda-gdb stops it only with
    require_gdb (MNNREPRO_REQUIRE_GDB=1, what CI sets); otherwise it is said as a warning and the run goes on."""
    fake_bin(tmp_path, monkeypatch, {"c++": "exit 0", "cmake": "exit 0", "ninja": "exit 0", "ccache": "exit 0"})
    monkeypatch.setattr(preflight, "check_disk", lambda cache_dir: [])
    settings = Settings(cache_dir=tmp_path, require_gdb=required)
    lines: list[str] = []
    found = preflight.run(settings, icds=(), opencl=False, runner="host", say=lines.append)
    assert {f.what: f.status for f in found}["gdb"] == status
    if required:
        with pytest.raises(EnvironmentProblem, match="MNNREPRO_REQUIRE_GDB=1"):
            preflight.require(found)
    else:
        preflight.require(found)
        assert any(
            line.startswith("  warning: gdb: no gdb: crash signatures will be judged by signal only") for line in lines
        )


@pytest.mark.parametrize(("free_gib", "status"), [(1, FAIL), (5, WARN), (50, OK)])
def test_disk_thresholds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, free_gib: int, status: str) -> None:
    seen: list[Path] = []

    def usage(path: Path) -> Any:
        seen.append(Path(path))
        return types.SimpleNamespace(total=0, used=0, free=free_gib * 2**30)

    monkeypatch.setattr(shutil, "disk_usage", usage)
    cache = tmp_path / "not" / "yet"
    (f,) = preflight.check_disk(cache)
    assert f.status == status
    assert seen == [tmp_path]  # the nearest existing parent; nothing created
    assert not cache.exists()


# --- OpenCL --------------------------------------------------------------------------------------------------


@pytest.fixture
def vendors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = tmp_path / "vendors"
    where.mkdir()
    (where / "pocl.icd").write_text("libpocl.so.2\n")
    monkeypatch.setattr(preflight.opencl, "OPENCL_VENDOR_DIR", where)
    monkeypatch.delenv("OCL_ICD_VENDORS", raising=False)
    monkeypatch.setattr(preflight.opencl, "MNN_OPENCL_PATHS", ("libOpenCL.so",))
    return where


POCL_ONLY = [preflight.Platform("Portable Computing Language", 0, 1)]


def test_nvidia_opencl_driver_without_a_vendor_file(
    vendors: Path, monkeypatch: pytest.MonkeyPatch, fake_loads: FakeLoads
) -> None:
    fake_loads({n: Load(n, True) for n in ("libOpenCL.so", "libpocl.so.2", preflight.NVIDIA_OPENCL)})
    monkeypatch.setattr(preflight.opencl, "opencl_platforms", lambda library: POCL_ONLY)
    found = {f.what: f for f in preflight.check_opencl(requested=False)}
    nvidia = found["OpenCL NVIDIA vendor file"]
    assert nvidia.status == WARN
    assert nvidia.fix.startswith(f"echo libnvidia-opencl.so.1 > {vendors / 'nvidia.icd'}")
    assert found["OpenCL GPU device"].fix == nvidia.fix
    (vendors / "nvidia.icd").write_text("libnvidia-opencl.so.1\n")
    assert "OpenCL NVIDIA vendor file" not in {f.what for f in preflight.check_opencl(requested=False)}


def test_pocl_only_warns_unless_opencl_is_requested(
    vendors: Path, monkeypatch: pytest.MonkeyPatch, fake_loads: FakeLoads
) -> None:
    fake_loads({n: Load(n, True) for n in ("libOpenCL.so", "libpocl.so.2")})
    monkeypatch.setattr(preflight.opencl, "opencl_platforms", lambda library: POCL_ONLY)
    for requested, status in ((False, WARN), (True, FAIL)):
        device = next(f for f in preflight.check_opencl(requested=requested) if f.what == "OpenCL GPU device")
        assert device.status == status
        assert "PoCL is a CPU device" in device.detail and "NOT-EXERCISED" in device.detail
    monkeypatch.setattr(preflight.opencl, "opencl_platforms", lambda library: [preflight.Platform("NVIDIA CUDA", 1, 1)])
    device = next(f for f in preflight.check_opencl(requested=True) if f.what == "OpenCL GPU device")
    assert device.status == OK


def test_only_the_versioned_opencl_loader(
    vendors: Path, monkeypatch: pytest.MonkeyPatch, fake_loads: FakeLoads
) -> None:
    """MNN opens the unversioned libOpenCL.so; libOpenCL.so.1 alone (ocl-icd, or CUDA's) is not enough."""
    asked = fake_loads({n: Load(n, True) for n in ("libOpenCL.so.1", "libpocl.so.2")})
    probed: list[str] = []

    def platforms(library: str) -> list[preflight.Platform]:
        probed.append(library)
        return POCL_ONLY

    monkeypatch.setattr(preflight.opencl, "opencl_platforms", platforms)
    found = {f.what: f for f in preflight.check_opencl(requested=True)}
    loader = found["OpenCL loader (MNN's list)"]
    assert loader.status == FAIL
    assert loader.packages == ("ocl-icd-opencl-dev",)
    assert "libOpenCL.so" in asked
    assert probed == ["libOpenCL.so.1"]
    assert "which MNN does not open" in found["OpenCL GPU device"].detail


def test_a_broken_vendor_file_names_its_missing_dependency(
    vendors: Path, monkeypatch: pytest.MonkeyPatch, fake_loads: FakeLoads
) -> None:
    broken = Load("libpocl.so.2", False, "libLLVM-15.so.1: cannot open shared object file", ("libLLVM-15.so.1",))
    fake_loads({"libOpenCL.so": Load("libOpenCL.so", True), "libpocl.so.2": broken})
    monkeypatch.setattr(preflight.opencl, "opencl_platforms", lambda library: [])
    vendor = next(f for f in preflight.check_opencl(requested=False) if f.what == "OpenCL vendor pocl.icd")
    assert vendor.status == WARN
    assert "libLLVM-15.so.1" in vendor.detail
    assert vendor.packages == ("libllvm15",)


def test_the_device_probe_counts_devices_through_a_real_loader() -> None:
    if not preflight.load_library("libOpenCL.so.1").ok:
        pytest.skip("no OpenCL ICD loader on this machine")
    platforms = preflight.opencl_platforms("libOpenCL.so.1")
    assert isinstance(platforms, list), platforms
    assert all(0 <= p.gpu <= p.all and p.name for p in platforms)
    assert isinstance(preflight.opencl_platforms("libmnnrepro_no_opencl.so"), str)


# --- docker --------------------------------------------------------------------------------------------------


def test_a_shadowed_docker_module_says_pip_install_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the SDK, `import docker` from the checkout finds its docker/ folder: a namespace package."""
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "Dockerfile").write_text("FROM scratch\n")
    for name in [m for m in sys.modules if m == "docker" or m.startswith("docker.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "docker", None)  # restored (or removed) at teardown, after the next line
    monkeypatch.delitem(sys.modules, "docker")
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    import importlib

    importlib.invalidate_caches()
    with pytest.raises(EnvironmentProblem) as exc:
        preflight.docker_sdk()
    assert exc.value.hint == "pip install docker"
    assert str(tmp_path / "docker") in exc.value.message
    with pytest.raises(EnvironmentProblem) as by_connect:
        image.connect()
    assert by_connect.value.hint == "pip install docker"  # not "start dockerd"
    (f,) = preflight.check_docker(Settings(cache_dir=tmp_path))
    assert (f.status, f.what, f.fix) == (FAIL, "docker SDK", "pip install docker")


def test_a_fake_namespace_docker_module(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("docker")
    fake.__path__ = ["/work/main/docker"]  # what a namespace package has; no __file__, no from_env
    monkeypatch.setitem(sys.modules, "docker", fake)
    with pytest.raises(EnvironmentProblem) as exc:
        preflight.docker_sdk()
    assert "/work/main/docker" in exc.value.message and exc.value.hint == "pip install docker"


class FakeImages:
    def __init__(self, present: dict[str, str]) -> None:
        self.present = present

    def get(self, name: str) -> Any:
        if name not in self.present:
            raise LookupError(name)
        return types.SimpleNamespace(id=self.present[name])


class FakeClient:
    def __init__(self, present: dict[str, str]) -> None:
        self.images = FakeImages(present)

    def version(self) -> dict[str, str]:
        return {"Version": "99.0"}


def docker_with(monkeypatch: pytest.MonkeyPatch, client: Any) -> None:
    monkeypatch.setattr(
        preflight.docker, "docker_sdk", lambda: types.SimpleNamespace(__version__="7", __file__="/x/d/i.py")
    )
    # These fakes have no containers to probe same-path mounts with (test_same_path_mounts_... covers that).
    monkeypatch.setattr(preflight.docker, "in_container", lambda: False)

    def connect(timeout: float = 30) -> Any:
        if isinstance(client, Exception):
            raise client
        return client

    monkeypatch.setattr(image, "connect", connect)


def test_engine_down_is_a_failure_with_the_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docker_with(monkeypatch, EnvironmentProblem("no Docker engine answers", hint="start it"))
    found = preflight.check_docker(Settings(cache_dir=tmp_path))
    assert [(f.what, f.status) for f in found] == [("docker SDK", OK), ("docker engine", FAIL)]
    assert found[1].fix == "start it"


def test_the_toolchain_image_states(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(cache_dir=tmp_path / "cache")
    tag = f"{image.IMAGE_REPO}:{image.image_key('sha256:base', None)[:16]}"
    docker_with(monkeypatch, FakeClient({settings.base_image: "sha256:base", tag: "sha256:img"}))
    assert preflight.check_docker(settings)[-1].status == OK
    assert tag in preflight.check_docker(settings)[-1].detail

    # Base present, image not built, SwiftShader not cached and no brotli decoder: the image build cannot start.
    docker_with(monkeypatch, FakeClient({settings.base_image: "sha256:base"}))
    fake_bin(tmp_path, monkeypatch, {})
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    last = preflight.check_docker(settings)[-1]
    assert last.status == FAIL
    assert "brotli" in last.packages

    # No base either: it will be pulled (or bootstrapped); a warning, not a failure.
    docker_with(monkeypatch, FakeClient({}))
    last = preflight.check_docker(settings)[-1]
    assert last.status == WARN
    assert "pulled" in last.detail


# --- run and require -----------------------------------------------------------------------------------------


def test_runner_must_be_resolved(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="auto"):
        preflight.checks(Settings(cache_dir=tmp_path), icds=(), opencl=False, runner="auto")


def test_docker_runner_does_not_check_host_drivers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(icd, "LAVAPIPE_GLOBS", (str(tmp_path / "none" / "*.json"),))
    monkeypatch.setattr(preflight.vulkan, "VULKAN_LOADER", "libmnnrepro_no_vulkan.so")
    docker_with(monkeypatch, EnvironmentProblem("down", hint="start it"))
    lines: list[str] = []
    found = preflight.run(
        Settings(cache_dir=tmp_path), icds=("lavapipe",), opencl=True, runner="docker", say=lines.append
    )
    whats = {f.what: f.status for f in found}
    assert whats["ICD lavapipe"] == OK
    assert not any(w.startswith("libvulkan") for w in whats)
    assert whats["OpenCL (docker runner)"] == FAIL  # the image has PoCL only and no GPU is passed in
    assert lines[0].startswith("preflight (docker runner):")


def test_host_runner_lists_every_problem_and_one_apt_get(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(icd, "LAVAPIPE_GLOBS", (str(tmp_path / "none" / "*.json"),))
    monkeypatch.setattr(preflight.vulkan, "VULKAN_LOADER", "libmnnrepro_no_vulkan.so")
    fake_bin(tmp_path, monkeypatch, {"c++": "exit 0", "cmake": "exit 0"})
    lines: list[str] = []
    found = preflight.run(
        Settings(cache_dir=tmp_path, gdb=False), icds=("lavapipe",), opencl=False, runner="host", say=lines.append
    )
    with pytest.raises(EnvironmentProblem) as exc:
        preflight.require(found)
    text = exc.value.render()
    for what in ("host toolchain", "ICD lavapipe", "libvulkan.so (unversioned)"):
        assert f"- {what}:" in text
    assert exc.value.hint == "apt-get install ninja-build mesa-vulkan-drivers libvulkan1 libvulkan-dev"
    assert any(line.startswith("  warning: ccache") for line in lines)
    assert "gdb" not in {f.what for f in found}  # gdb = false: not checked


def test_require_passes_warnings_and_dedups_packages() -> None:
    preflight.require([Finding(OK, "a", "fine"), Finding(WARN, "b", "meh", "apt-get install x", ("x",))])
    fails = [
        Finding(FAIL, "a", "no a", "apt-get install p q", ("p", "q")),
        Finding(FAIL, "b", "no b", "apt-get install q r", ("q", "r")),
        Finding(FAIL, "c", "no c", "echo c > /etc/c"),
    ]
    with pytest.raises(EnvironmentProblem) as exc:
        preflight.require(fails)
    assert exc.value.hint.startswith("apt-get install p q r;")
    assert "fix: echo c > /etc/c" in exc.value.message
    assert exc.value.message.startswith("3 problem(s)")


# -- same-path mounts (the suite inside a container, driving the host's engine) ------------------------------
class _Images:
    def get(self, name: str) -> Any:
        return object()


def _engine_seeing(host: dict[str, str]) -> type:
    """A Docker runner whose containers see the directories marked "same" as this process does, others not."""

    class Runner:
        def __init__(self, client: Any, image_name: str, **kw: Any) -> None:
            self.mounts = kw["read_only"]

        def run(self, argv: list[str], **kw: Any) -> Any:
            from mnnrepro.docker_runner import AS_ROOT
            from mnnrepro.runner import Completed

            as_root = (kw.get("env") or {}).get(AS_ROOT) == "1"
            out = []
            for part in argv[-1].split(" ; "):
                path = Path(part.split("'")[1])
                mounted = any(path.parent == m for m in self.mounts)
                # The image's user cannot read a 0700 directory of the invoking root (pytest makes them so).
                readable = as_root or path.parent.stat().st_mode & 0o005
                seen = mounted and host.get(str(path.parent)) == "same" and readable
                out.append(path.read_text() if seen else "missing\n")
            return Completed(tuple(argv), 0, 0.1, output="".join(out))  # as `cat` prints: each its own line

    return Runner


def test_same_path_mounts_are_probed_inside_a_container_and_a_private_path_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnnrepro import fixtures

    client = types.SimpleNamespace(images=_Images())
    settings = Settings(cache_dir=tmp_path / "cache", results_dir=tmp_path / "results")
    (tmp_path / "results").mkdir(mode=0o700)  # as pytest's tmp_path: private to its owner
    shared = {str(fixtures.ROOT): "same", str(tmp_path / "cache"): "same", str(tmp_path / "results"): "same"}
    monkeypatch.setattr(preflight.docker, "DockerRunner", _engine_seeing(shared))
    ok = preflight.check_same_paths(client, settings, force=True)
    assert [f.status for f in ok] == [preflight.OK]
    private = dict(shared, **{str(tmp_path / "results"): ""})  # the results dir is this container's own
    monkeypatch.setattr(preflight.docker, "DockerRunner", _engine_seeing(private))
    bad = preflight.check_same_paths(client, settings, force=True)
    assert [f.status for f in bad] == [preflight.FAIL]
    assert str(tmp_path / "results") in bad[0].detail and str(tmp_path / "cache") not in bad[0].detail
    assert "TMPDIR" in bad[0].fix
    assert not list((tmp_path / "results").glob(".mnnrepro-same-path-*"))  # markers removed
    monkeypatch.setattr(preflight.docker, "in_container", lambda: False)
    assert preflight.check_same_paths(client, settings) == []  # outside a container: nothing to probe


# --- a new ICD is a row of icd.TABLE -------------------------------------------------------------------------


def test_a_new_opencl_row_is_checked_by_preflight(
    vendors: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_loads: FakeLoads
) -> None:
    """A test-only OpenCL row (as PoCL's or NVIDIA's vendor file would be): found, its library loaded, and MNN's
    loader asked for GPU devices with only the row's loader variable set; no code names it."""
    vendor = vendors / "fakecl.icd"
    found = icd.Installed(
        lambda: (str(vendors / "fakecl*.icd"),), "FakeCL is not installed", "apt-get install x", ("x",)
    )
    monkeypatch.setitem(icd.TABLE[icd.OPENCL], "fakecl", icd.Row(icd.OPENCL, "fakecl", found, ("OCL_ICD_VENDORS",)))
    settings = Settings(cache_dir=tmp_path, icds=("fakecl",))
    (missing,) = preflight.check_icd("fakecl", settings, "host")
    assert (missing.status, missing.what, missing.packages) == (FAIL, "ICD fakecl", ("x",))
    assert missing.detail == f"FakeCL is not installed (no fakecl*.icd: {vendors / 'fakecl*.icd'})"
    vendor.write_text("libfakecl.so\n")
    fake_loads({n: Load(n, True) for n in ("libOpenCL.so", "libfakecl.so")})
    seen: list[dict[str, str] | None] = []

    def platforms(library: str, env: dict[str, str] | None = None) -> list[preflight.Platform]:
        seen.append(env)
        return [preflight.Platform("FakeCL", 1, 1)]

    monkeypatch.setattr(preflight.opencl, "opencl_platforms", platforms)
    for check in ("check_disk", "check_toolchain", "check_gdb", "check_vulkan_loader"):
        monkeypatch.setattr(preflight, check, lambda *a, **k: [])  # only the row's own check is under test
    (ok,) = preflight.run(settings, icds=settings.icds, opencl=False, runner="host", say=lambda line: None)
    assert (ok.status, ok.what) == (OK, "ICD fakecl"), ok
    assert "FakeCL: 1 GPU of 1 device(s) (with OCL_ICD_VENDORS set)" in ok.detail
    assert seen == [{"OCL_ICD_VENDORS": str(vendor)}]
    monkeypatch.setattr(preflight.opencl, "opencl_platforms", lambda library, env=None: POCL_ONLY)
    (cpu_only,) = preflight.check_icd("fakecl", settings, "host")
    assert cpu_only.status == FAIL and "NOT-EXERCISED" in cpu_only.detail  # MNN takes GPU-type devices only
    (docker,) = preflight.check_icd("fakecl", settings, "docker")
    assert docker.status == FAIL and "not in the image" in docker.detail


def test_a_new_vulkan_row_is_checked_as_a_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_loads: FakeLoads
) -> None:
    manifest = write_manifest(tmp_path / "icd.d" / "fakevk_icd.json", "libfakevk.so")
    found = icd.Installed(lambda: (str(manifest),), "FakeVK is not installed", "apt-get install y")
    monkeypatch.setitem(icd.TABLE[icd.VULKAN], "fakevk", icd.Row(icd.VULKAN, "fakevk", found, ("VK_DRIVER_FILES",)))
    fake_loads({"libfakevk.so": Load("libfakevk.so", True)})
    monkeypatch.setattr(preflight.vulkan, "vulkan_instance", lambda m: preflight.Instance(0, (f"Fake GPU of {m}",)))
    (f,) = preflight.check_icd("fakevk", Settings(cache_dir=tmp_path), "host")
    assert (f.status, f.what, f.detail) == (OK, "ICD fakevk", f"{manifest} -> Fake GPU of {manifest}")
    todo = preflight.checks(Settings(cache_dir=tmp_path), icds=("fakevk",), opencl=False, runner="host")
    assert preflight.check_vulkan_loader in todo  # a Vulkan ICD needs the loader MNN opens
