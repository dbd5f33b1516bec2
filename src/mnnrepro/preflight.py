"""Preflight: what a session needs, checked in seconds before anything is built (and by `mnnrepro doctor`).

Without it a missing driver shows up only after a 6-minute MNN build. Each check returns Findings; `run`
gathers the ones a session needs (its ICDs, OpenCL or not, its runner) and `require` raises one
EnvironmentProblem listing every failure, with one `apt-get install` for all the missing Debian packages.

Libraries are dlopened in a child process with a time limit: loading a driver runs its constructors, which can
hang or crash. The failures that matter are silent in MNN (alibaba/MNN#3129 is about a backend that must
really be active): no unversioned libvulkan.so, or no GPU-type OpenCL device, and MNN quietly uses the CPU.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from . import fixtures, icd, image, swiftshader
from .docker_runner import AS_ROOT, DockerRunner
from .errors import EnvironmentProblem, MnnReproError
from .image import docker_sdk as docker_sdk  # re-exported: checks call it through this module
from .runner import HostRunner
from .settings import Settings

OK, WARN, FAIL = "ok", "warn", "FAIL"
RUNNERS = ("host", "docker")
PROBE_TIMEOUT_S = 8.0
DISK_FAIL_GIB, DISK_WARN_GIB = 3.0, 10.0

# MNN dlopens the unversioned name (source/backend/vulkan/runtime/vulkan_wrapper.cpp).
VULKAN_LOADER = "libvulkan.so"
# The Linux list of source/backend/opencl/core/runtime/OpenCLWrapper.cpp (3.3.0), tried in this order.
MNN_OPENCL_PATHS = (
    "/usr/lib/libOpenCL.so",
    "/usr/local/lib/libOpenCL.so",
    "/usr/local/lib/libpocl.so",
    "/usr/lib64/libOpenCL.so",
    "/usr/lib32/libOpenCL.so",
    "libOpenCL.so",
)
OPENCL_VENDOR_DIR = Path("/etc/OpenCL/vendors")  # read by the ICD loader (ocl-icd); OCL_ICD_VENDORS overrides
NVIDIA_OPENCL = "libnvidia-opencl.so.1"
NVIDIA_PROC = Path("/proc/driver/nvidia/version")
# Where the Vulkan loader looks for driver manifests when VK_DRIVER_FILES / VK_ICD_FILENAMES are not set.
VULKAN_ICD_DIRS = (
    "/etc/vulkan/icd.d",
    "/usr/local/etc/vulkan/icd.d",
    "/usr/local/share/vulkan/icd.d",
    "/usr/share/vulkan/icd.d",
)

# Debian 12 package of each shared library a driver commonly needs (checked with dpkg -S on bookworm).
SONAME_PACKAGES = {
    "libGLdispatch.so.0": "libglvnd0",
    "libGLX.so.0": "libglx0",
    "libEGL.so.1": "libegl1",
    "libOpenGL.so.0": "libopengl0",
    "libGL.so.1": "libgl1",
    "libX11.so.6": "libx11-6",
    "libXext.so.6": "libxext6",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxcb.so.1": "libxcb1",
    "libxcb-dri3.so.0": "libxcb-dri3-0",
    "libxcb-present.so.0": "libxcb-present0",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxshmfence.so.1": "libxshmfence1",
    "libwayland-client.so.0": "libwayland-client0",
    "libdrm.so.2": "libdrm2",
    "libz.so.1": "zlib1g",
    "libzstd.so.1": "libzstd1",
    "libexpat.so.1": "libexpat1",
    "libelf.so.1": "libelf1",
    "libsensors.so.5": "libsensors5",
    "libstdc++.so.6": "libstdc++6",
    "libLLVM-15.so.1": "libllvm15",
    "libvulkan.so.1": "libvulkan1",
    "libvulkan.so": "libvulkan-dev",
    "libOpenCL.so.1": "ocl-icd-libopencl1",
    "libOpenCL.so": "ocl-icd-opencl-dev",
}
# NVIDIA's libGLX_nvidia.so.0 (named by its Vulkan manifest) is a glvnd vendor library.
GLVND = ("libGLdispatch.so.0", "libGLX.so.0", "libEGL.so.1")
GLVND_PACKAGES = ("libglvnd0", "libglx0", "libegl1")


@dataclass(frozen=True)
class Finding:
    status: str  # OK, WARN or FAIL
    what: str
    detail: str
    fix: str = ""
    packages: tuple[str, ...] = ()  # Debian packages whose installation fixes it


def _apt(packages: Iterable[str]) -> str:
    return "apt-get install " + " ".join(dict.fromkeys(packages))


# --- loading libraries in a child process ------------------------------------------------------------------

_DLOPEN = """import ctypes, os, sys
try:
    ctypes.CDLL(sys.argv[1], mode=os.RTLD_NOW | os.RTLD_LOCAL)
except OSError as e:
    print(e)
    sys.exit(3)
"""

# Counts the platforms and GPU-type devices the OpenCL ICD loader sees: MNN asks for CL_DEVICE_TYPE_GPU only.
_CL_DEVICES = """import ctypes, json, os, sys
cl = ctypes.CDLL(sys.argv[1], mode=os.RTLD_NOW | os.RTLD_LOCAL)
n = ctypes.c_uint32(0)
rc = cl.clGetPlatformIDs(0, None, ctypes.byref(n))
out = {"rc": rc, "platforms": []}
if rc == 0 and n.value:
    ids = (ctypes.c_void_p * n.value)()
    cl.clGetPlatformIDs(n.value, ids, None)
    for p in ids:
        name = ctypes.create_string_buffer(256)
        cl.clGetPlatformInfo(ctypes.c_void_p(p), 0x0902, 256, name, None)
        row = {"name": name.value.decode(errors="replace")}
        for label, kind in (("gpu", 1 << 2), ("all", 0xFFFFFFFF)):
            c = ctypes.c_uint32(0)
            r = cl.clGetDeviceIDs(ctypes.c_void_p(p), ctypes.c_uint64(kind), 0, None, ctypes.byref(c))
            row[label] = c.value if r == 0 else 0
        out["platforms"].append(row)
print(json.dumps(out))
"""


# vkCreateInstance through the Vulkan loader (the first of argv that loads) and the devices' names: a driver whose
# library loads can still fail here (NVIDIA's opens glvnd's libraries only now, alibaba/MNN#3129 on H100/H200).
_VK_INSTANCE = """import ctypes, json, os, sys
for name in sys.argv[1:]:
    try:
        vk = ctypes.CDLL(name, mode=os.RTLD_NOW | os.RTLD_LOCAL)
        break
    except OSError:
        vk = None
if vk is None:
    print(json.dumps({"rc": None}))
    sys.exit(0)
class Info(ctypes.Structure):
    _fields_ = [("sType", ctypes.c_int), ("pNext", ctypes.c_void_p), ("flags", ctypes.c_uint32),
                ("pApplicationInfo", ctypes.c_void_p), ("enabledLayerCount", ctypes.c_uint32),
                ("ppEnabledLayerNames", ctypes.c_void_p), ("enabledExtensionCount", ctypes.c_uint32),
                ("ppEnabledExtensionNames", ctypes.c_void_p)]
inst = ctypes.c_void_p()
rc = vk.vkCreateInstance(ctypes.byref(Info(1, None, 0, None, 0, None, 0, None)), None, ctypes.byref(inst))
names = []
if rc == 0:
    n = ctypes.c_uint32(0)
    vk.vkEnumeratePhysicalDevices(inst, ctypes.byref(n), None)
    devs = (ctypes.c_void_p * n.value)()
    vk.vkEnumeratePhysicalDevices(inst, ctypes.byref(n), devs)
    for d in devs[: n.value]:
        props = ctypes.create_string_buffer(2048)  # VkPhysicalDeviceProperties; deviceName at offset 20
        vk.vkGetPhysicalDeviceProperties(ctypes.c_void_p(d), props)
        names.append(props.raw[20:276].split(b"\\0", 1)[0].decode(errors="replace"))
    vk.vkDestroyInstance(inst, None)
print(json.dumps({"rc": rc, "devices": names}))
"""
VK_RESULTS = {
    -1: "VK_ERROR_OUT_OF_HOST_MEMORY",
    -3: "VK_ERROR_INITIALIZATION_FAILED",
    -6: "VK_ERROR_LAYER_NOT_PRESENT",
    -7: "VK_ERROR_EXTENSION_NOT_PRESENT",
    -9: "VK_ERROR_INCOMPATIBLE_DRIVER",
}


@dataclass(frozen=True)
class Load:
    name: str
    ok: bool
    error: str = ""  # the dynamic linker's message, or why the probe ended
    missing: tuple[str, ...] = ()  # libraries that could not be found: the library itself or its dependencies

    @property
    def itself_missing(self) -> bool:
        return Path(self.name).name in self.missing


def _python(
    script: str, *args: str, timeout_s: float = PROBE_TIMEOUT_S, env: dict[str, str] | None = None
) -> tuple[int | None, str]:
    """Run a short Python script in a child; (exit status or None when it timed out or died, output)."""
    argv = [sys.executable, "-I", "-S", "-c", script, *args]
    done = HostRunner(kill_grace_s=1.0).run(argv, env=env, timeout_s=timeout_s)
    if done.timed_out:
        return None, f"did not finish in {timeout_s:.0f} s (a driver constructor hanging?)"
    if done.signal_name:
        return None, f"the process loading it died with {done.signal_name}"
    return done.returncode, done.output.strip()


_NOT_FOUND = re.compile(r"([^\s:]+): cannot open shared object file")


def _ld_cache() -> dict[str, str]:
    """soname -> path, from `ldconfig -p`."""
    exe = shutil.which("ldconfig") or "/sbin/ldconfig"
    if not Path(exe).exists():
        return {}
    out = HostRunner().run([exe, "-p"], timeout_s=5).output
    found: dict[str, str] = {}
    for line in out.splitlines():
        m = re.match(r"\s*(\S+) \(([^)]*)\) => (\S+)", line)
        if m and ("64" in m.group(2)) == (sys.maxsize > 2**32):  # this process's word size only
            found.setdefault(m.group(1), m.group(3))
    return found


def _locate(name: str) -> str | None:
    if "/" in name:
        return name if Path(name).exists() else None
    for d in os.environ.get("LD_LIBRARY_PATH", "").split(":"):
        if d and (Path(d) / name).exists():
            return str(Path(d) / name)
    return _ld_cache().get(name)


def _missing_dependencies(path: str) -> list[str]:
    """Every dependency of `path` the dynamic linker cannot find (ldd), not only the first one dlopen names."""
    exe = shutil.which("ldd")
    if exe is None:
        return []
    out = HostRunner(kill_grace_s=1.0).run([exe, path], timeout_s=5).output
    return [m.group(1) for m in re.finditer(r"^\s*(\S+) => not found", out, re.M)]


def load_library(name: str, timeout_s: float = PROBE_TIMEOUT_S) -> Load:
    """dlopen `name` (RTLD_NOW, as MNN and the loaders do) in a child process."""
    code, out = _python(_DLOPEN, name, timeout_s=timeout_s)
    if code == 0:
        return Load(name, True)
    if code is None:
        return Load(name, False, out)
    error = out.splitlines()[-1] if out else f"exit status {code}"
    missing = list(dict.fromkeys(_NOT_FOUND.findall(error)))
    if missing and Path(missing[0]).name != Path(name).name:
        path = _locate(name)
        if path:
            missing += [m for m in _missing_dependencies(path) if m not in missing]
    return Load(name, False, error, tuple(Path(m).name if m.startswith("/") else m for m in missing))


# --- Vulkan ------------------------------------------------------------------------------------------------


def _manifest_library(manifest: Path) -> str:
    """The library a Vulkan ICD manifest names, resolved the way the loader does (relative to the manifest)."""
    data = json.loads(manifest.read_text())
    lib = str(data["ICD"]["library_path"])
    if "/" in lib and not lib.startswith("/"):
        return str((manifest.parent / lib).resolve())
    return lib


def _is_nvidia(library: str) -> bool:
    return "nvidia" in Path(library).name.lower()


@dataclass(frozen=True)
class Instance:
    rc: int  # vkCreateInstance's result: 0, or a VK_ERROR_* code
    devices: tuple[str, ...] = ()

    @property
    def result(self) -> str:
        return f"{self.rc} ({VK_RESULTS.get(self.rc, 'VkResult')})"


def vulkan_instance(manifest: Path | None) -> Instance | str:
    """vkCreateInstance with only this driver (None: the loader's own choice, as --icd host), and its devices;
    or why it could not be tried."""
    env = {"VK_ICD_FILENAMES": str(manifest), "VK_DRIVER_FILES": str(manifest)} if manifest else None
    code, out = _python(_VK_INSTANCE, VULKAN_LOADER, VULKAN_LOADER + ".1", env=env)
    try:
        data: Any = json.loads(out.splitlines()[-1]) if code == 0 and out else None
        if data["rc"] is None:
            return "no Vulkan loader to create an instance with"
        return Instance(int(data["rc"]), tuple(str(d) for d in data["devices"]))
    except (ValueError, KeyError, TypeError, IndexError):
        return f"creating an instance failed: {(out.splitlines() or [f'exit status {code}'])[-1][:160]}"


def _missing_glvnd() -> list[str]:
    return [name for name in GLVND if not load_library(name).ok]


def _nvidia_glvnd(manifest: Path, lib: str, missing: list[str], severity: str, label: str, rc: str = "") -> Finding:
    return Finding(
        severity,
        label,
        f"NVIDIA's Vulkan manifest {manifest} names {lib}, which uses glvnd's libraries, and {', '.join(missing)} "
        f"cannot be loaded: vkCreateInstance returns {rc or '-9 (VK_ERROR_INCOMPATIBLE_DRIVER)'} with this driver "
        "and MNN has no Vulkan device",
        _apt(GLVND_PACKAGES),
        GLVND_PACKAGES,
    )


def check_manifest(label: str, manifest: Path, *, severity: str = FAIL, expect_device: bool = True) -> Finding:
    """A Vulkan ICD manifest: valid JSON, the library it names loads (else: which dependency is missing), and
    an instance with only this driver is created (with a device, when expect_device)."""
    try:
        lib = _manifest_library(manifest)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return Finding(
            severity,
            label,
            f"{manifest}: not a usable ICD manifest ({type(exc).__name__}: {exc})",
            "reinstall the driver that installed it, or remove it",
        )
    load = load_library(lib)
    if load.ok:
        return _instance_finding(label, manifest, lib, severity, expect_device)
    if load.itself_missing:
        return Finding(
            severity,
            label,
            f"{manifest} names {lib}, which does not exist: the loader skips this driver",
            "reinstall the driver that installed the manifest, or remove the stale manifest",
        )
    if not load.missing:
        return Finding(
            severity,
            label,
            f"{manifest} names {lib}, which does not load: {load.error}",
            "reinstall the driver that installed the manifest",
        )
    packages = [SONAME_PACKAGES[m] for m in load.missing if m in SONAME_PACKAGES]
    needs = ", ".join(load.missing)
    if _is_nvidia(lib):
        glvnd = any(m in GLVND for m in load.missing)
        packages = [*(GLVND_PACKAGES if glvnd else ()), *packages]
        detail = (
            f"NVIDIA's Vulkan manifest {manifest} names {lib}, which cannot be loaded: it needs {needs}"
            + (" (glvnd's libraries)" if glvnd else "")
            + ". The Vulkan loader skips the NVIDIA driver and vkCreateInstance returns -9 "
            "(VK_ERROR_INCOMPATIBLE_DRIVER); MNN then has no Vulkan device"
        )
    else:
        detail = f"{manifest} names {lib}, which cannot be loaded: it needs {needs} (not found)"
    unknown = [m for m in load.missing if m not in SONAME_PACKAGES and not (_is_nvidia(lib) and m in GLVND)]
    fix = _apt(packages) if packages else ""
    if unknown:
        fix += ("; " if fix else "") + f"install the package providing {', '.join(unknown)} (apt-file search)"
    return Finding(severity, label, detail, fix, tuple(dict.fromkeys(packages)))


def _instance_finding(label: str, manifest: Path, lib: str, severity: str, expect_device: bool) -> Finding:
    instance = vulkan_instance(manifest)
    if isinstance(instance, str):  # no loader: its own finding says so; glvnd can still be checked now
        missing = _missing_glvnd() if _is_nvidia(lib) else []
        if missing:
            return _nvidia_glvnd(manifest, lib, missing, severity, label)
        return Finding(OK, label, f"{manifest} -> {lib} loads ({instance})")
    if instance.rc != 0:
        missing = _missing_glvnd() if _is_nvidia(lib) else []
        if missing:
            return _nvidia_glvnd(manifest, lib, missing, severity, label, instance.result)
        return Finding(
            severity,
            label,
            f"{manifest} -> {lib} loads, but vkCreateInstance with only this driver returns {instance.result}",
            "reinstall the driver (VK_LOADER_DEBUG=driver shows the loader's reasons)",
        )
    if instance.devices:
        return Finding(OK, label, f"{manifest} -> {', '.join(instance.devices)}")
    return Finding(
        severity if expect_device else OK,
        label,
        f"{manifest} -> {lib} loads, but this driver has no device here",
        "reinstall the driver" if expect_device else "",
    )


def host_manifests() -> list[Path]:
    """The driver manifests the Vulkan loader would read for `--icd host` (no override set by the suite)."""
    override = os.environ.get("VK_DRIVER_FILES") or os.environ.get("VK_ICD_FILENAMES")
    entries = override.split(":") if override else list(VULKAN_ICD_DIRS)
    found: list[Path] = []
    for entry in filter(None, entries):
        path = Path(entry)
        if path.is_dir():
            found += sorted(path.glob("*.json"))
        elif override and path.is_file():
            found.append(path)
    return found


def nvidia_driver() -> str | None:
    """The loaded NVIDIA kernel driver's version (from /proc), or None."""
    try:
        text = NVIDIA_PROC.read_text(errors="replace")
    except OSError:
        return None
    m = re.search(r"Kernel Module\s+(?:for\s+\S+\s+)?(\d+\.\d+(?:\.\d+)?)", text)
    return m.group(1) if m else text.splitlines()[0][:80] if text else "?"


def check_icd(name: str, settings: Settings, runner: str, *, severity: str = FAIL) -> list[Finding]:
    """Resolve one ICD name for this runner, without fetching anything, and check what it names."""
    label = f"ICD {name}"
    if name == "bogus":
        return [Finding(OK, label, "a deliberate fault: its manifest names a missing library (NOT-EXERCISED)")]
    if name not in icd.KNOWN:
        return [Finding(FAIL, label, "unknown ICD", f"choose from {', '.join(icd.KNOWN)}")]
    if runner == "docker":
        if name == "host":
            return [
                Finding(
                    WARN,
                    label,
                    "containers get no GPU: 'host' means the image's own drivers (lavapipe), not this machine's",
                    "use --runner host for a real GPU",
                )
            ]
        return [Finding(OK, label, "in the image (docker/Dockerfile installs it and checks its manifest)")]
    if name == "lavapipe":
        found = sorted(p for g in icd.LAVAPIPE_GLOBS for p in glob.glob(g))
        if not found:
            return [
                Finding(
                    severity,
                    label,
                    f"Mesa lavapipe is not installed (no lvp_icd*.json: {', '.join(icd.LAVAPIPE_GLOBS)})",
                    "apt-get install mesa-vulkan-drivers (or use the docker runner)",
                    ("mesa-vulkan-drivers",),
                )
            ]
        return [check_manifest(label, Path(found[0]), severity=severity)]
    if name == "swiftshader":
        manifest = swiftshader.manifest_path(settings.cache_dir)
        if manifest.is_file():
            return [check_manifest(label, manifest, severity=severity)]
        return [_swiftshader_fetchable(label, severity)]
    return check_host_icd(severity=severity)


def _swiftshader_fetchable(label: str, severity: str) -> Finding:
    """Fetching needs no npm (one HTTPS GET from the npm registry), only a brotli decoder: the brotli module
    (a dependency of the suite) or the brotli CLI."""
    pin = f"{swiftshader.PACKAGE}@{swiftshader.VERSION}"
    if importlib.util.find_spec("brotli") is None and shutil.which("brotli") is None:
        return Finding(
            severity,
            label,
            "SwiftShader is not cached and cannot be unpacked: no brotli decoder (module or CLI)",
            "pip install brotli (a dependency of mnnrepro), or apt-get install brotli",
            ("brotli",),
        )
    return Finding(
        OK, label, f"not cached yet: will be fetched ({pin}, sha256-pinned, from {swiftshader.registry()}) first"
    )


def check_host_icd(*, severity: str = FAIL) -> list[Finding]:
    """`--icd host`: every manifest the loader reads, each library loaded; NVIDIA explained."""
    manifests = host_manifests()
    driver = nvidia_driver()
    if not manifests:
        detail = f"no Vulkan driver manifest in {', '.join(VULKAN_ICD_DIRS)}: vkCreateInstance would return -9"
        fix = "install the GPU vendor's Vulkan driver"
        if driver:
            detail += f"; NVIDIA driver {driver} is loaded, but its Vulkan manifest (nvidia_icd.json) is not installed"
            fix = f"install the Vulkan part of NVIDIA driver {driver} (its nvidia_icd.json and libGLX_nvidia.so.0)"
        return [Finding(severity, "ICD host", detail, fix)]
    findings = [check_manifest(f"ICD host: {m.name}", m, severity=severity, expect_device=False) for m in manifests]
    # What `--icd host` gets: the loader reads every manifest, and MNN takes physical device 0.
    instance = vulkan_instance(None)
    if isinstance(instance, Instance):
        if instance.devices:
            others = f" (of {', '.join(instance.devices)})" if len(instance.devices) > 1 else ""
            findings.append(Finding(OK, "ICD host: device 0", f"MNN would take {instance.devices[0]}{others}"))
        else:
            findings.append(
                Finding(
                    severity,
                    "ICD host: device 0",
                    f"no Vulkan device with the machine's drivers (vkCreateInstance {instance.result})",
                    "see the ICD host lines above",
                )
            )
    if driver and not any(_is_nvidia(_safe_library(m)) for m in manifests):
        findings.append(
            Finding(
                severity,
                "ICD host: NVIDIA",
                f"NVIDIA driver {driver} is loaded, but no manifest names its Vulkan library: the loader would "
                "use only the drivers above",
                f"install the Vulkan part of NVIDIA driver {driver} (nvidia_icd.json naming libGLX_nvidia.so.0)",
            )
        )
    return findings


def _safe_library(manifest: Path) -> str:
    try:
        return _manifest_library(manifest)
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def check_vulkan_loader(*, severity: str = FAIL) -> list[Finding]:
    """The unversioned libvulkan.so that MNN dlopens."""
    what = "libvulkan.so (unversioned)"
    if load_library(VULKAN_LOADER).ok:
        return [Finding(OK, what, "loadable: MNN's Vulkan backend can open the loader")]
    versioned = load_library(VULKAN_LOADER + ".1").ok
    silent = "MNN dlopens the unversioned name; without it Vulkan is never created and MNN silently uses the CPU"
    if versioned:
        return [
            Finding(
                severity,
                what,
                f"not loadable (only {VULKAN_LOADER}.1 is): {silent}",
                "apt-get install libvulkan-dev (or: ln -s libvulkan.so.1 <libdir>/libvulkan.so)",
                ("libvulkan-dev",),
            )
        ]
    return [
        Finding(
            severity,
            what,
            f"no Vulkan loader at all (neither {VULKAN_LOADER} nor .1): {silent}",
            "apt-get install libvulkan1 libvulkan-dev",
            ("libvulkan1", "libvulkan-dev"),
        )
    ]


# --- host toolchain ----------------------------------------------------------------------------------------


def check_toolchain() -> list[Finding]:
    need = {"c++": "build-essential", "cmake": "cmake", "ninja": "ninja-build"}
    missing = [t for t in need if shutil.which(t) is None]
    findings = [
        Finding(
            FAIL,
            "host toolchain",
            f"missing {', '.join(missing)}: MNN cannot be built on this machine",
            _apt(need[t] for t in missing) + " (or use the docker runner)",
            tuple(need[t] for t in missing),
        )
        if missing
        else Finding(OK, "host toolchain", ", ".join(f"{t} {shutil.which(t)}" for t in need))
    ]
    if shutil.which("ccache") is None:
        findings.append(
            Finding(
                WARN, "ccache", "missing: every build of MNN starts from scratch", "apt-get install ccache", ("ccache",)
            )
        )
    return findings


# gdb first; then cuda-gdb, NVIDIA's gdb (GPU servers often have only it), which runs gdb_capture.py the same way
# when it embeds Python: the same probe decides for both.
GDB_CANDIDATES = ("gdb", "cuda-gdb")
GDB_PROBE = "python print('mnnrepro-gdb-ok')"
NO_GDB = "no gdb: crash signatures will be judged by signal only"


def find_gdb() -> tuple[str | None, list[str]]:
    """The first of GDB_CANDIDATES on PATH that runs Python, and why each one tried before it was not taken."""
    why: list[str] = []
    for name in GDB_CANDIDATES:
        exe = shutil.which(name)
        if exe is None:
            why.append(f"{name}: not installed")
            continue
        done = HostRunner(kill_grace_s=1.0).run([exe, "-nx", "-batch", "-ex", GDB_PROBE], timeout_s=PROBE_TIMEOUT_S)
        if "mnnrepro-gdb-ok" in done.output:
            return exe, why
        last = (done.output.strip().splitlines() or [f"exit status {done.returncode}"])[-1][:120]
        why.append(f"{exe} does not run Python ({last})")
    return None, why


def check_gdb(severity: str = WARN) -> list[Finding]:
    """gdb with Python (or cuda-gdb with Python) runs gdb_capture.py; without either, a crash still has its signal
    and stage, not its frames, and the run goes on as with --no-gdb (a warning: verdicts are still possible).
    FAIL where gdb is required (require_gdb, MNNREPRO_REQUIRE_GDB=1: CI, whose image has gdb)."""
    exe, why = find_gdb()
    if exe is not None:
        other = f" ({'; '.join(why)})" if why else ""
        return [Finding(OK, "gdb", f"{exe} runs Python{other}")]
    fix = "apt-get install gdb (Debian's gdb embeds Python)"
    if severity == FAIL:
        detail = f"{'; '.join(why)}: required here (require_gdb, MNNREPRO_REQUIRE_GDB=1), and without it {NO_GDB}"
    else:
        detail = f"{NO_GDB} ({'; '.join(why)}); the run goes on as with --no-gdb"
        fix += "; --no-gdb silences this"
    return [Finding(severity, "gdb", detail, fix, ("gdb",))]


# --- OpenCL ------------------------------------------------------------------------------------------------


def _vendor_files() -> list[Path]:
    override = os.environ.get("OCL_ICD_VENDORS")
    where = Path(override) if override else OPENCL_VENDOR_DIR
    if where.is_file():
        return [where]
    return sorted(where.glob("*.icd")) if where.is_dir() else []


def _vendor_library(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[0] if lines else ""


def mnn_opencl_loader() -> tuple[str | None, list[Load]]:
    """The first library of MNN's list that loads (what MNN's OpenCL backend would use), and the failed tries."""
    tried: list[Load] = []
    for candidate in MNN_OPENCL_PATHS:
        if candidate.startswith("/") and not Path(candidate).exists():
            continue
        load = load_library(candidate)
        if load.ok:
            return candidate, tried
        tried.append(load)
    return None, tried


def check_opencl(*, requested: bool) -> list[Finding]:
    """The OpenCL loader MNN opens, the vendor files it reads, and whether a GPU-type device is there.

    requested: an opencl cell will run, so a setup that can only give NOT-EXERCISED is a failure."""
    severity = FAIL if requested else WARN
    not_exercised = "opencl cells would be NOT-EXERCISED"
    findings: list[Finding] = []
    vendors = _vendor_files()
    vendor_libs = {v: _vendor_library(v) for v in vendors}
    registered = {Path(lib).name for lib in vendor_libs.values()}
    nvidia_unregistered = NVIDIA_OPENCL not in registered and load_library(NVIDIA_OPENCL).ok
    register = f"echo {NVIDIA_OPENCL} > {OPENCL_VENDOR_DIR / 'nvidia.icd'} (as root)"
    loader, _ = mnn_opencl_loader()
    versioned = loader is None and load_library("libOpenCL.so.1").ok
    if loader is None:
        findings.append(
            Finding(
                severity,
                "OpenCL loader (MNN's list)",
                f"none of {', '.join(MNN_OPENCL_PATHS)} loads"
                + (
                    " (libOpenCL.so.1 does, so clinfo may work, but MNN opens only the unversioned name)"
                    if versioned
                    else ""
                )
                + f": MNN's OpenCL backend is never created, {not_exercised}",
                "apt-get install ocl-icd-opencl-dev",
                ("ocl-icd-opencl-dev",),
            )
        )
    else:
        findings.append(Finding(OK, "OpenCL loader (MNN's list)", f"{loader} loads"))
    for vendor, lib in vendor_libs.items():
        load = load_library(lib) if lib else Load(lib, False, "empty vendor file")
        if load.ok:
            findings.append(Finding(OK, f"OpenCL vendor {vendor.name}", f"{vendor} -> {lib} loads"))
            continue
        packages = tuple(SONAME_PACKAGES[m] for m in load.missing if m in SONAME_PACKAGES)
        why = f"needs {', '.join(load.missing)}" if load.missing and not load.itself_missing else load.error
        findings.append(
            Finding(
                WARN,
                f"OpenCL vendor {vendor.name}",
                f"{vendor} names {lib or '(nothing)'}, which does not load ({why}): the loader skips this platform",
                _apt(packages) if packages else f"reinstall the driver that installed {vendor}, or remove it",
                packages,
            )
        )
    if nvidia_unregistered:
        findings.append(
            Finding(
                severity,
                "OpenCL NVIDIA vendor file",
                f"NVIDIA's OpenCL driver {NVIDIA_OPENCL} loads, but no vendor file in {OPENCL_VENDOR_DIR} names it: "
                "the ICD loader MNN opens does not see the GPU (clinfo may still list it through the CUDA toolkit's "
                f"own libOpenCL.so.1), so {not_exercised}",
                register,
            )
        )
    # Without MNN's loader, still say what the versioned one sees: installing the dev package may not be enough.
    probe = loader or ("libOpenCL.so.1" if versioned else None)
    if probe is not None:
        note = "" if loader else f" (seen through {probe}, which MNN does not open)"
        findings.append(_opencl_devices(probe, severity, register if nvidia_unregistered else "", note))
    return findings


def check_opencl_in_docker(*, requested: bool) -> list[Finding]:
    """The image has the ICD loader and PoCL only, and no GPU is passed into containers."""
    return [
        Finding(
            FAIL if requested else WARN,
            "OpenCL (docker runner)",
            "containers see only PoCL, a CPU-type device (no GPU is passed in): MNN accepts only GPU-type OpenCL "
            "devices, so opencl cells would be NOT-EXERCISED",
            "use --runner host on a machine with a GPU OpenCL driver",
        )
    ]


@dataclass(frozen=True)
class Platform:
    name: str
    gpu: int  # CL_DEVICE_TYPE_GPU devices: the only ones MNN's OpenCL backend accepts
    all: int


def opencl_platforms(library: str) -> list[Platform] | str:
    """The platforms an OpenCL ICD loader sees, with their GPU and total device counts; or why not."""
    code, out = _python(_CL_DEVICES, library)
    try:
        data: Any = json.loads(out.splitlines()[-1]) if code == 0 and out else None
        return [Platform(str(p["name"]), int(p["gpu"]), int(p["all"])) for p in data["platforms"]]
    except (ValueError, KeyError, TypeError):
        return (out.splitlines() or [f"exit status {code}"])[-1][:160]


def _opencl_devices(library: str, severity: str, register: str, note: str = "") -> Finding:
    what = "OpenCL GPU device"
    platforms = opencl_platforms(library)
    if isinstance(platforms, str):
        return Finding(WARN, what, f"could not list devices through {library}: {platforms}")
    listed = "; ".join(f"{p.name}: {p.gpu} GPU of {p.all} device(s)" for p in platforms) or "no platform"
    if any(p.gpu for p in platforms):
        return Finding(OK, what, listed + note)
    pocl = any("portable computing language" in p.name.lower() for p in platforms)
    return Finding(
        severity,
        what,
        f"{listed}{note}: MNN accepts only GPU-type OpenCL devices"
        + (" (PoCL is a CPU device)" if pocl else "")
        + ", so opencl cells would be NOT-EXERCISED",
        register or "install the GPU vendor's OpenCL driver and its /etc/OpenCL/vendors/*.icd file",
    )


# --- disk and docker ---------------------------------------------------------------------------------------


def check_disk(cache_dir: Path) -> list[Finding]:
    where = cache_dir
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free / 2**30
    status = OK if free >= DISK_WARN_GIB else WARN if free >= DISK_FAIL_GIB else FAIL
    fix = "" if status == OK else f"free space at {where} (one ref's builds take about {DISK_FAIL_GIB:.0f} GiB)"
    return [Finding(status, "free disk", f"{free:.1f} GiB at {cache_dir}", fix)]


def check_docker(settings: Settings, *, timeout_s: float = 3.0) -> list[Finding]:
    """The SDK, the engine, and whether the toolchain image or a base to build it from is there."""

    try:
        sdk = docker_sdk()
    except EnvironmentProblem as exc:
        return [Finding(FAIL, "docker SDK", exc.message, exc.hint)]
    findings = [Finding(OK, "docker SDK", f"{getattr(sdk, '__version__', '?')} ({Path(sdk.__file__).parent})")]
    try:
        client = image.connect(timeout=timeout_s)
    except EnvironmentProblem as exc:
        return [*findings, Finding(FAIL, "docker engine", exc.message, exc.hint)]
    try:
        version = client.version().get("Version", "?")
        findings.append(Finding(OK, "docker engine", f"answers (server {version})"))
        return findings + _check_image(client, settings) + check_same_paths(client, settings)
    except MnnReproError as exc:
        return [*findings, Finding(FAIL, "docker image", exc.message, exc.hint)]
    except Exception as exc:  # the SDK raises requests' and its own errors alike
        problem = f"{type(exc).__name__}: {str(exc)[:200]}"
        return [*findings, Finding(FAIL, "docker engine", problem, "check the engine's logs")]


def _exists(client: Any, name: str) -> Any:
    try:
        return client.images.get(name)
    except Exception:  # docker.errors.ImageNotFound, or a malformed name
        return None


def _check_image(client: Any, settings: Settings) -> list[Finding]:

    if settings.host_ca is not None and not settings.host_ca.is_file():
        return [Finding(FAIL, "docker image", f"host CA bundle {settings.host_ca} does not exist", "fix --host-ca")]
    base = settings.base_image
    found = _exists(client, base)
    if found is None and base == image.DEFAULT_BASE:
        base, found = image.BOOTSTRAP_IMAGE, _exists(client, image.BOOTSTRAP_IMAGE)
    if found is None:
        can_bootstrap = shutil.which("debootstrap") is not None and os.geteuid() == 0
        detail = f"neither the toolchain image nor its base {settings.base_image} is here: the base will be pulled"
        if settings.base_image != image.DEFAULT_BASE:
            return [
                Finding(WARN, "docker image", detail, f"docker pull {settings.base_image} where a registry answers")
            ]
        return [
            Finding(
                WARN,
                "docker image",
                detail + ("; without a registry it is bootstrapped with debootstrap" if can_bootstrap else ""),
                ""
                if can_bootstrap
                else "without a registry: apt-get install debootstrap, then (root) python -m mnnrepro image bootstrap",
                () if can_bootstrap else ("debootstrap",),
            )
        ]
    ca = settings.host_ca.read_bytes() if settings.host_ca else None
    tag = f"{image.IMAGE_REPO}:{image.image_key(found.id, ca)[:16]}"
    if _exists(client, tag) is not None:
        return [Finding(OK, "docker image", f"{tag} (up to date with docker/, the pins and {base})")]
    building = f"{tag} not built yet: will be built from {base} (a few minutes; apt needs the Debian mirror)"
    if swiftshader.manifest_path(settings.cache_dir).is_file():
        return [Finding(OK, "docker image", building)]
    fetch = _swiftshader_fetchable("docker image", FAIL)
    if fetch.status != OK:
        return [
            Finding(
                FAIL, "docker image", f"{building}, which needs SwiftShader: {fetch.detail}", fetch.fix, fetch.packages
            )
        ]
    return [Finding(OK, "docker image", f"{building}; SwiftShader will be fetched first")]


CONTAINER_MARKERS = (Path("/.dockerenv"), Path("/run/.containerenv"))


def in_container() -> bool:
    return any(m.exists() for m in CONTAINER_MARKERS)


def check_same_paths(client: Any, settings: Settings, *, force: bool = False) -> list[Finding]:
    """Inside a container that drives the host's engine (a mounted Docker socket), the paths the suite mounts must
    be the same paths on the host: each directory (the checkout, the cache, the results) gets a marker file, and a
    container of a local image must read the same markers at the same paths. Outside a container: nothing to do."""
    if not (force or in_container()):
        return []
    img = next((n for n in (settings.base_image, image.BOOTSTRAP_IMAGE) if _exists(client, n) is not None), None)
    if img is None:
        return [Finding(WARN, "same-path mounts", "no local image to probe them with yet (checked on the next run)")]
    dirs = [fixtures.ROOT, settings.cache_dir, settings.results_dir]
    token = os.urandom(8).hex()
    markers: list[Path] = []
    try:  # through the Docker runner: its labels, least privilege, time limit and cleanup
        for d in dirs:  # a read-only checkout cannot take a marker: said below, never a crash of the preflight
            d.mkdir(parents=True, exist_ok=True)
            markers.append(d / f".mnnrepro-same-path-{token}")
            markers[-1].write_text(token + "\n")  # one line each: the probe's output is split on whitespace
        runner = DockerRunner(client, img, read_only=tuple(dirs), home_dir=settings.cache_dir / "container-home")
        script = " ; ".join(f"cat '{m}' 2>/dev/null || echo missing" for m in markers)
        # As root in the container (AS_ROOT): the probe reads what the invoking user owns, whatever its mode (a
        # 0700 results directory, as pytest makes them, is handed over only when a cell writes it).
        seen = runner.run(["sh", "-c", script], env={AS_ROOT: "1"}, timeout_s=60).output.split()
    except Exception as exc:  # the SDK raises requests' and its own errors alike
        return [Finding(WARN, "same-path mounts", f"could not probe them: {type(exc).__name__}: {str(exc)[:160]}")]
    finally:
        for m in markers:
            m.unlink(missing_ok=True)
    seen += ["missing"] * (len(dirs) - len(seen))
    differ = [str(d) for d, got in zip(dirs, seen, strict=False) if got != token]
    if differ:
        return [
            Finding(
                FAIL,
                "same-path mounts",
                "this suite runs in a container, and the Docker engine sees other files at "
                + ", ".join(differ)
                + " (the runner mounts the suite's paths into its containers by name)",
                "mount each of them into this container at its host path (docker run -v P:P), and set TMPDIR to "
                "such a directory for the tests",
            )
        ]
    return [Finding(OK, "same-path mounts", "the checkout, the cache and the results are the same paths on the host")]


# --- the whole preflight -----------------------------------------------------------------------------------


def checks(
    settings: Settings, *, icds: tuple[str, ...], opencl: bool, runner: str
) -> list[Callable[[], list[Finding]]]:
    """The checks a session with these ICDs, OpenCL cells or not, and this runner needs."""
    if runner not in RUNNERS:
        raise ValueError(f"runner {runner!r} is not one of {RUNNERS} (resolve 'auto' first)")
    todo: list[Callable[[], list[Finding]]] = [lambda: check_disk(settings.cache_dir)]
    if runner == "docker":
        todo.append(lambda: check_docker(settings))
        todo += [partial(check_icd, name, settings, runner) for name in icds]
        if opencl:
            todo.append(partial(check_opencl_in_docker, requested=True))
        return todo
    todo.append(check_toolchain)
    if settings.gdb:
        todo.append(partial(check_gdb, FAIL if settings.require_gdb else WARN))
    todo += [partial(check_icd, name, settings, runner) for name in icds]
    if icds:
        todo.append(check_vulkan_loader)
    if opencl:
        todo.append(partial(check_opencl, requested=True))
    return todo


def gather_each(todo: list[Callable[[], list[Finding]]]) -> list[list[Finding]]:
    """Run checks concurrently (each mostly waits on a child process); one list per check, in order."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda check: check(), todo))


def gather(todo: list[Callable[[], list[Finding]]]) -> list[Finding]:
    return [f for found in gather_each(todo) for f in found]


def run(
    settings: Settings,
    *,
    icds: tuple[str, ...],
    opencl: bool,
    runner: str,
    say: Callable[[str], None] = print,
) -> list[Finding]:
    """Everything a session needs before its first build. Says its warnings; `require` raises on failures."""
    t0 = time.monotonic()
    findings = gather(checks(settings, icds=icds, opencl=opencl, runner=runner))
    warns = [f for f in findings if f.status == WARN]
    fails = sum(f.status == FAIL for f in findings)
    say(
        f"preflight ({runner} runner): {len(findings)} checks, {fails} problem(s), {len(warns)} warning(s) "
        f"in {time.monotonic() - t0:.1f} s"
    )
    for f in warns:
        say(f"  warning: {f.what}: {f.detail}" + (f" (fix: {f.fix})" if f.fix else ""))
    return findings


def require(findings: list[Finding]) -> None:
    """Raise one EnvironmentProblem that lists every failing finding, and one apt-get for all their packages."""
    fails = [f for f in findings if f.status == FAIL]
    if not fails:
        return
    lines = [f"{len(fails)} problem(s) found before building anything:"]
    for f in fails:
        lines.append(f"  - {f.what}: {f.detail}")
        if f.fix:
            lines.append(f"    fix: {f.fix}")
    packages = [p for f in fails for p in f.packages]
    hint = (
        f"{_apt(packages)}" + ("; then the other fixes above" if any(not f.packages for f in fails) else "")
        if packages
        else "apply the fixes above (python -m mnnrepro doctor explains each)"
    )
    raise EnvironmentProblem("\n".join(lines), hint=hint)
