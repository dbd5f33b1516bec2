"""`mnnrepro doctor`: checks and explains the environment, each problem with the command that fixes it."""

from __future__ import annotations

import ctypes
import glob
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from . import fixtures, source, swiftshader
from .errors import MnnReproError
from .settings import Settings

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass
class Finding:
    status: str
    what: str
    detail: str
    fix: str = ""


def _cmd(argv: list[str], env: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, str]:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
        return res.returncode, res.stdout + res.stderr
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)


def _vulkan_device(manifest: str | None) -> tuple[bool, str]:
    if shutil.which("vulkaninfo") is None:
        return False, "vulkaninfo missing (apt-get install vulkan-tools) to list devices"
    env = {"VK_ICD_FILENAMES": manifest, "VK_DRIVER_FILES": manifest} if manifest else {}
    code, out = _cmd(["vulkaninfo", "--summary"], env)
    names = [line.split("=", 1)[1].strip() for line in out.splitlines() if line.strip().startswith("deviceName")]
    return (code == 0 and bool(names)), (
        ", ".join(names)
        if names
        else out.strip().splitlines()[-1:][0][:160]
        if out.strip()
        else f"vulkaninfo exit {code}"
    )


def check(settings: Settings) -> list[Finding]:
    f: list[Finding] = []
    # Docker
    try:
        from . import image

        client = image.connect()
        f.append(Finding(OK, "docker engine", f"answers (server {client.version().get('Version', '?')})"))
        tags = sorted(t for i in client.images.list(name=image.IMAGE_REPO) for t in i.tags)
        f.append(
            Finding(
                OK if tags else WARN,
                "toolchain image",
                ", ".join(tags) or "not built yet",
                "" if tags else "python -m mnnrepro image build (bootstraps the base if no registry)",
            )
        )
    except MnnReproError as exc:
        f.append(Finding(WARN, "docker engine", exc.message, "start dockerd (or use --runner host)"))
    # Host toolchain (for --runner host)
    missing = [t for t in ("c++", "cmake", "ninja", "gdb", "ccache") if shutil.which(t) is None]
    f.append(
        Finding(
            OK if not missing else WARN,
            "host toolchain",
            "complete" if not missing else f"missing {missing}",
            "apt-get install build-essential cmake ninja-build gdb ccache" if missing else "",
        )
    )
    # The unversioned libvulkan.so that MNN dlopens
    try:
        ctypes.CDLL("libvulkan.so")
        f.append(Finding(OK, "libvulkan.so (unversioned)", "loadable"))
    except OSError as exc:
        f.append(
            Finding(
                FAIL if settings.runner == "host" else WARN,
                "libvulkan.so (unversioned)",
                f"not loadable: MNN's Vulkan backend would silently use the CPU ({exc})",
                "apt-get install libvulkan-dev (or: ln -s libvulkan.so.1 <libdir>/libvulkan.so)",
            )
        )
    # ICDs
    lvp = sorted(glob.glob("/usr/share/vulkan/icd.d/lvp_icd*.json"))
    if lvp:
        ok, names = _vulkan_device(lvp[0])
        f.append(Finding(OK if ok else WARN, "ICD lavapipe", f"{lvp[0]}: {names}"))
    else:
        f.append(Finding(WARN, "ICD lavapipe", "not installed on the host", "apt-get install mesa-vulkan-drivers"))
    ss = swiftshader.manifest_path(settings.cache_dir)
    if ss.is_file():
        ok, names = _vulkan_device(str(ss))
        f.append(Finding(OK if ok else WARN, "ICD swiftshader", f"{ss}: {names}"))
    else:
        f.append(
            Finding(
                WARN,
                "ICD swiftshader",
                "not fetched yet",
                "python -m mnnrepro swiftshader fetch (needs npm)"
                if shutil.which("npm")
                else "install npm, then python -m mnnrepro swiftshader fetch",
            )
        )
    ok, names = _vulkan_device(None)
    f.append(
        Finding(
            OK if ok else WARN,
            "ICD host (installed drivers)",
            names,
            "" if ok else "a real GPU needs its vendor's Vulkan driver (e.g. NVIDIA 580 + nvidia_icd.json)",
        )
    )
    # OpenCL
    if shutil.which("clinfo"):
        _, out = _cmd(["clinfo", "--list"])
        _, gpu_out = _cmd(["clinfo", "--raw"])
        types = {line.split()[-1] for line in gpu_out.splitlines() if "CL_DEVICE_TYPE" in line and "]" in line}
        has_gpu = any("GPU" in t for t in types)
        f.append(
            Finding(
                OK if has_gpu else WARN,
                "OpenCL",
                (out.strip().replace("\n", "; ")[:200] or "no platforms")
                + f" | device types {sorted(types) or 'none'}",
                ""
                if has_gpu
                else "MNN accepts only GPU-type OpenCL devices: `opencl` cells will be "
                "NOT-EXERCISED here (PoCL is a CPU device)",
            )
        )
    else:
        f.append(Finding(WARN, "OpenCL", "clinfo missing", "apt-get install clinfo ocl-icd-libopencl1"))
    # Disk
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(settings.cache_dir).free / 2**30
    f.append(
        Finding(
            OK if free >= 10 else (WARN if free >= 3 else FAIL),
            "free disk",
            f"{free:.1f} GiB at {settings.cache_dir}",
            "" if free >= 10 else "free space (a ref needs ~3 GiB)",
        )
    )
    # MNN sources
    for ref in fixtures.load_matrix().refs:
        try:
            tree = source.resolve(
                ref, source=None, cache_dir=settings.cache_dir, git_url=settings.git_url, allow_clone=False
            )
            f.append(Finding(OK, f"MNN source {ref}", tree.describe()))
        except MnnReproError as exc:
            f.append(
                Finding(
                    WARN,
                    f"MNN source {ref}",
                    exc.message,
                    f"python -m mnnrepro source fetch --ref {ref} (or source import --git-dir DIR)",
                )
            )
    return f


def report(findings: list[Finding], say: Callable[[str], None] = print) -> int:
    width = max(len(x.what) for x in findings)
    for x in findings:
        say(f"[{x.status:>4}] {x.what.ljust(width)}  {x.detail}")
        if x.fix:
            say(f"       {' ' * width}  fix: {x.fix}")
    fails = sum(x.status == FAIL for x in findings)
    warns = sum(x.status == WARN for x in findings)
    say(f"\ndoctor: {fails} problem(s), {warns} warning(s)")
    return 6 if fails else 0
