"""OpenCL: the loader MNN opens (its own list of paths, unversioned names only), the vendor files the ICD loader
reads, whether a GPU-type device is there (MNN accepts no other type), and an OpenCL ICD row of icd.TABLE.

The failures that matter are silent in MNN (alibaba/MNN#3129 is about a backend that must really be active): with
no GPU-type OpenCL device MNN quietly uses the CPU.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import base
from .base import FAIL, OK, SONAME_PACKAGES, WARN, Finding, Load, apt_install

Env = dict[str, str] | None

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


def _load_vendor(lib: str) -> Load:
    return base.load_library(lib) if lib else Load(lib, False, "empty vendor file")


def _vendor_not_loading(severity: str, label: str, vendor: Path, lib: str, load: Load) -> Finding:
    """A vendor file whose library does not load: the ICD loader skips that platform."""
    packages = tuple(SONAME_PACKAGES[m] for m in load.missing if m in SONAME_PACKAGES)
    why = f"needs {', '.join(load.missing)}" if load.missing and not load.itself_missing else load.error
    return Finding(
        severity,
        label,
        f"{vendor} names {lib or '(nothing)'}, which does not load ({why}): the loader skips this platform",
        apt_install(packages) if packages else f"reinstall the driver that installed {vendor}, or remove it",
        packages,
    )


def mnn_opencl_loader() -> tuple[str | None, list[Load]]:
    """The first library of MNN's list that loads (what MNN's OpenCL backend would use), and the failed tries."""
    tried: list[Load] = []
    for candidate in MNN_OPENCL_PATHS:
        if candidate.startswith("/") and not Path(candidate).exists():
            continue
        load = base.load_library(candidate)
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
    nvidia_unregistered = NVIDIA_OPENCL not in registered and base.load_library(NVIDIA_OPENCL).ok
    register = f"echo {NVIDIA_OPENCL} > {OPENCL_VENDOR_DIR / 'nvidia.icd'} (as root)"
    loader, _ = mnn_opencl_loader()
    versioned = loader is None and base.load_library("libOpenCL.so.1").ok
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
        load = _load_vendor(lib)
        if load.ok:
            findings.append(Finding(OK, f"OpenCL vendor {vendor.name}", f"{vendor} -> {lib} loads"))
            continue
        findings.append(_vendor_not_loading(WARN, f"OpenCL vendor {vendor.name}", vendor, lib, load))
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


def opencl_platforms(library: str, env: dict[str, str] | None = None) -> list[Platform] | str:
    """The platforms an OpenCL ICD loader sees (with `env`: these loader variables set), with their GPU and total
    device counts; or why not."""
    code, out = base.probe(_CL_DEVICES, library, env=env)
    try:
        data: Any = json.loads(out.splitlines()[-1]) if code == 0 and out else None
        return [Platform(str(p["name"]), int(p["gpu"]), int(p["all"])) for p in data["platforms"]]
    except (ValueError, KeyError, TypeError):
        return (out.splitlines() or [f"exit status {code}"])[-1][:160]


def _opencl_devices(
    library: str, severity: str, register: str, note: str = "", *, what: str = "OpenCL GPU device", env: Env = None
) -> Finding:
    platforms = opencl_platforms(library, env) if env else opencl_platforms(library)
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


def check_opencl_icd(label: str, found: Path, env: dict[str, str], *, severity: str = FAIL) -> list[Finding]:
    """An OpenCL row of icd.TABLE, found at `found` (a vendor .icd file, or the driver library itself): its library
    loads, and MNN's OpenCL loader, with only the row's loader variables (`env`), sees a GPU-type device."""
    lib = _vendor_library(found) if found.suffix == ".icd" else str(found)
    load = _load_vendor(lib)
    if not load.ok:
        return [_vendor_not_loading(severity, label, found, lib, load)]
    loader, _ = mnn_opencl_loader()
    if loader is None:
        return [
            Finding(
                severity,
                label,
                f"none of {', '.join(MNN_OPENCL_PATHS)} loads: MNN's OpenCL backend is never created",
                "apt-get install ocl-icd-opencl-dev",
                ("ocl-icd-opencl-dev",),
            )
        ]
    return [_opencl_devices(loader, severity, "", f" (with {', '.join(sorted(env))} set)", what=label, env=env)]
