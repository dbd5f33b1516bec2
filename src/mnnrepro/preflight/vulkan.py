"""Vulkan: the loader MNN opens (the unversioned libvulkan.so), ICD manifests (the library each names loads, and an
instance with only that driver has a device), the machine's own drivers for `--icd host`, and Khronos' validation
layer for `--vk-validation on|sync` (issue 25: its manifest where the loader looks, the library it names loads).

The failures that matter are silent in MNN (alibaba/MNN#3129 is about a backend that must really be active): with
no unversioned libvulkan.so, MNN quietly uses the CPU.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import image
from . import base
from .base import FAIL, OK, SONAME_PACKAGES, Finding, apt_install

# MNN dlopens the unversioned name (source/backend/vulkan/runtime/vulkan_wrapper.cpp).
VULKAN_LOADER = "libvulkan.so"
# Where the Vulkan loader looks for driver manifests when VK_DRIVER_FILES / VK_ICD_FILENAMES are not set.
VULKAN_ICD_DIRS = (
    "/etc/vulkan/icd.d",
    "/usr/local/etc/vulkan/icd.d",
    "/usr/local/share/vulkan/icd.d",
    "/usr/share/vulkan/icd.d",
)

# NVIDIA's libGLX_nvidia.so.0 (named by its Vulkan manifest) is a glvnd vendor library.
GLVND = ("libGLdispatch.so.0", "libGLX.so.0", "libEGL.so.1")
GLVND_PACKAGES = ("libglvnd0", "libglx0", "libegl1")


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


# --- Vulkan ------------------------------------------------------------------------------------------------


def _manifest_library(manifest: Path) -> str:
    """The library a Vulkan ICD manifest names, resolved the way the loader does (relative to the manifest)."""
    data = json.loads(manifest.read_text())
    return _relative_to(manifest, str(data["ICD"]["library_path"]))


def _relative_to(manifest: Path, lib: str) -> str:
    """A manifest's library_path as the loader opens it: a relative path with a slash is relative to the manifest;
    a bare name goes to the dynamic linker's search."""
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
    code, out = base.probe(_VK_INSTANCE, VULKAN_LOADER, VULKAN_LOADER + ".1", env=env)
    try:
        data: Any = json.loads(out.splitlines()[-1]) if code == 0 and out else None
        if data["rc"] is None:
            return "no Vulkan loader to create an instance with"
        return Instance(int(data["rc"]), tuple(str(d) for d in data["devices"]))
    except (ValueError, KeyError, TypeError, IndexError):
        return f"creating an instance failed: {(out.splitlines() or [f'exit status {code}'])[-1][:160]}"


def _missing_glvnd() -> list[str]:
    return [name for name in GLVND if not base.load_library(name).ok]


def _nvidia_glvnd(manifest: Path, lib: str, missing: list[str], severity: str, label: str, rc: str = "") -> Finding:
    return Finding(
        severity,
        label,
        f"NVIDIA's Vulkan manifest {manifest} names {lib}, which uses glvnd's libraries, and {', '.join(missing)} "
        f"cannot be loaded: vkCreateInstance returns {rc or '-9 (VK_ERROR_INCOMPATIBLE_DRIVER)'} with this driver "
        "and MNN has no Vulkan device",
        apt_install(GLVND_PACKAGES),
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
    load = base.load_library(lib)
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
    fix = apt_install(packages) if packages else ""
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


def check_host_icd(*, severity: str = FAIL) -> list[Finding]:
    """`--icd host`: every manifest the loader reads, each library loaded; NVIDIA explained."""
    manifests = host_manifests()
    driver = base.nvidia_driver()
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
    if base.load_library(VULKAN_LOADER).ok:
        return [Finding(OK, what, "loadable: MNN's Vulkan backend can open the loader")]
    versioned = base.load_library(VULKAN_LOADER + ".1").ok
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


# --- Khronos' validation layer (issue 25) ----------------------------------------------------------------------

VALIDATION_LAYER = "VK_LAYER_KHRONOS_validation"
VALIDATION_MANIFEST = "VkLayer_khronos_validation.json"
VALIDATION_PACKAGE = "vulkan-validationlayers"  # Debian 12: 1.3.239, beside the loader of the same version
VALIDATION_LABEL = "Vulkan validation layer"
LAYER_SUBDIR = "vulkan/explicit_layer.d"
SYSCONF_DIR = "/etc"  # Debian's loader is built with SYSCONFDIR=/etc
# An apt-get install line of the Dockerfile naming the package: the image has the layer (its key is the file's
# content, so an image built from this Dockerfile has what it installs).
_IMAGE_INSTALLS = re.compile(r"^(?!\s*#).*\b" + re.escape(VALIDATION_PACKAGE) + r"\b", re.M)


def layer_search_path(env: Mapping[str, str] | None = None) -> list[Path]:
    """Where the Vulkan loader looks for explicit layer manifests, in its order (loader 1.3.239, as
    VK_LOADER_DEBUG=layer lists it on Debian 12): VK_LAYER_PATH alone when set (files or folders; VK_ADD_LAYER_PATH
    is then ignored); else VK_ADD_LAYER_PATH first, then $XDG_CONFIG_HOME, $XDG_CONFIG_DIRS, /etc, $XDG_DATA_HOME,
    $XDG_DATA_DIRS, each with vulkan/explicit_layer.d (the XDG defaults where a variable is unset or empty)."""
    env = os.environ if env is None else env

    def entries(value: str) -> list[Path]:
        return [Path(p) for p in value.split(":") if p]

    if env.get("VK_LAYER_PATH"):
        return entries(env["VK_LAYER_PATH"])
    home = env.get("HOME", "")
    dirs = [
        env.get("XDG_CONFIG_HOME") or (f"{home}/.config" if home else ""),
        env.get("XDG_CONFIG_DIRS") or "/etc/xdg",
        SYSCONF_DIR,
        env.get("XDG_DATA_HOME") or (f"{home}/.local/share" if home else ""),
        env.get("XDG_DATA_DIRS") or "/usr/local/share:/usr/share",
    ]
    return [*entries(env.get("VK_ADD_LAYER_PATH", "")), *(d / LAYER_SUBDIR for v in dirs for d in entries(v))]


@dataclass(frozen=True)
class Layer:
    manifest: Path
    library: str  # as the loader opens it (relative paths resolved against the manifest)
    api_version: str
    implementation_version: str


def _layers_in(manifest: Path) -> list[dict[str, Any]]:
    """The layer entries of a manifest: `layer` (file format 1.0.0), or `layers` (1.0.1 on)."""
    data = json.loads(manifest.read_text())
    found = data.get("layers") or [data["layer"]]
    return [entry for entry in found if isinstance(entry, dict)]


def find_validation_layer(env: Mapping[str, str] | None = None) -> tuple[Layer | None, list[str]]:
    """The first manifest on the loader's search path that declares VK_LAYER_KHRONOS_validation (the loader goes by
    the layer's name, not the file's: VkLayer_khronos_validation.json is tried first in each folder), and the
    manifests named like it that could not be read."""
    unreadable: list[str] = []
    for entry in layer_search_path(env):
        if entry.is_dir():
            files = sorted(entry.glob("*.json"), key=lambda m: (m.name != VALIDATION_MANIFEST, m.name))
        else:
            files = [entry] if entry.suffix == ".json" and entry.is_file() else []
        for manifest in files:
            try:
                layers = _layers_in(manifest)
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                if manifest.name == VALIDATION_MANIFEST:
                    unreadable.append(f"{manifest} ({type(exc).__name__}: {exc})")
                continue
            for layer in layers:
                if layer.get("name") == VALIDATION_LAYER and isinstance(layer.get("library_path"), str):
                    return Layer(
                        manifest,
                        _relative_to(manifest, layer["library_path"]),
                        str(layer.get("api_version", "?")),
                        str(layer.get("implementation_version", "?")),
                    ), unreadable
    return None, unreadable


def check_validation_layer(*, severity: str = FAIL) -> list[Finding]:
    """Khronos' validation layer for the host runner: its manifest where the loader looks, and the library it names
    loads. Without it a cell asked to validate would report no messages, which is no evidence (issue 25);
    severity OK: doctor's information, when validation is not asked for."""
    layer, unreadable = find_validation_layer()
    only = " (only --vk-validation on|sync needs it)" if severity == OK else ""
    if layer is None:
        return [_layer_missing(severity, only, unreadable)]
    versions = f"api_version {layer.api_version}, implementation_version {layer.implementation_version}"
    load = base.load_library(layer.library)
    if load.ok:
        return [Finding(OK, VALIDATION_LABEL, f"{layer.manifest} -> {layer.library} loads ({versions})")]
    packages = [VALIDATION_PACKAGE]
    if load.itself_missing:
        why = "which does not exist"
    elif load.missing:
        why = f"which cannot be loaded: it needs {', '.join(load.missing)}"
        packages += [SONAME_PACKAGES[m] for m in load.missing if m in SONAME_PACKAGES]
    else:
        why = f"which cannot be loaded: {load.error}"
    detail = f"{layer.manifest} ({versions}) names {layer.library}, {why}: the loader cannot enable the layer{only}"
    fix = apt_install(packages) + " (--reinstall where it is installed)"
    return [Finding(severity, VALIDATION_LABEL, detail, fix, tuple(dict.fromkeys(packages)))]


def _layer_missing(severity: str, only: str, unreadable: list[str]) -> Finding:
    """No manifest declares the layer: the package is missing, or VK_LAYER_PATH hides where it is installed."""
    where = ", ".join(str(p) for p in layer_search_path())
    override = bool(os.environ.get("VK_LAYER_PATH"))
    detail = f"not found{only}: no {VALIDATION_MANIFEST} declaring {VALIDATION_LAYER} where the Vulkan loader looks"
    detail += (" (VK_LAYER_PATH replaces its own folders)" if override else "") + f": {where}"
    if unreadable:
        detail += f"; unreadable: {', '.join(unreadable)}"
    if not override:
        return Finding(severity, VALIDATION_LABEL, detail, apt_install([VALIDATION_PACKAGE]), (VALIDATION_PACKAGE,))
    hidden, _ = find_validation_layer({k: v for k, v in os.environ.items() if k != "VK_LAYER_PATH"})
    if hidden is not None:  # installed: only the override hides it, and installing again would not help
        detail += f"; without VK_LAYER_PATH the loader finds {hidden.manifest}"
        fix = f"unset VK_LAYER_PATH (or add {hidden.manifest.parent} to it)"
        return Finding(severity, VALIDATION_LABEL, detail, fix)
    fix = apt_install([VALIDATION_PACKAGE]) + f" and unset VK_LAYER_PATH (or add /usr/share/{LAYER_SUBDIR} to it)"
    return Finding(severity, VALIDATION_LABEL, detail, fix, (VALIDATION_PACKAGE,))


def image_has_validation_layer(dockerfile: Path | None = None) -> bool:
    """Whether docker/Dockerfile installs the validation layer's package."""
    path = dockerfile or image.DOCKER_DIR / "Dockerfile"
    try:
        return bool(_IMAGE_INSTALLS.search(path.read_text()))
    except OSError:
        return False


def check_validation_in_docker(mode: str, *, dockerfile: Path | None = None) -> list[Finding]:
    """The docker runner: the suite's image must have the layer (docker/Dockerfile installs it: a Dockerfile
    without it, an older checkout's, is refused before any build)."""
    label = f"{VALIDATION_LABEL} (image)"
    if image_has_validation_layer(dockerfile):
        return [Finding(OK, label, f"docker/Dockerfile installs {VALIDATION_PACKAGE}")]
    return [
        Finding(
            FAIL,
            label,
            f"--vk-validation {mode}: the suite's image (docker/Dockerfile) has no Khronos validation layer yet "
            f"({VALIDATION_PACKAGE} is not installed there)",
            f"--runner host (with {apt_install([VALIDATION_PACKAGE])}), or --vk-validation off",
        )
    ]
