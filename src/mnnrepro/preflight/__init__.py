"""Preflight: what a session needs, checked in seconds before anything is built (and by `mnnrepro doctor`).

Without it a missing driver shows up only after a 6-minute MNN build. Each check returns Findings; `run`
gathers the ones a session needs (its ICDs, OpenCL or not, its runner) and `require` raises one
EnvironmentProblem listing every failure, with one `apt-get install` for all the missing Debian packages.

Split by what it checks: `base` (Finding, libraries loaded in a child process, disk, toolchain, gdb), `vulkan`
(the loader MNN opens, ICD manifests, the machine's own drivers, Khronos' validation layer), `opencl` (MNN's
OpenCL loader, vendor files, GPU-type devices), `docker` (SDK, engine, image, same-path mounts). This module
gathers them: `check_icd` checks a row of icd.TABLE by its API and how it is found, `checks` picks what a session
needs; doctor calls the same functions. The failures that matter are silent in MNN (alibaba/MNN#3129 is about a
backend that must really be active): no unversioned libvulkan.so, or no GPU-type OpenCL device, and MNN quietly
uses the CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from .. import icd
from ..errors import EnvironmentProblem
from ..settings import Settings
from . import base, docker, opencl, vulkan
from .base import (
    FAIL,
    GDB_CANDIDATES,
    GDB_PROBE,
    NO_GDB,
    OK,
    RUNNERS,
    WARN,
    Finding,
    Load,
    _swiftshader_fetchable,
    apt_install,
    check_disk,
    check_gdb,
    check_toolchain,
    find_gdb,
    load_library,
    nvidia_driver,
)
from .docker import check_docker, check_icd_in_image, check_same_paths, docker_sdk
from .opencl import (
    NVIDIA_OPENCL,
    Platform,
    check_opencl,
    check_opencl_icd,
    check_opencl_in_docker,
    opencl_platforms,
)
from .vulkan import (
    GLVND,
    Instance,
    check_host_icd,
    check_manifest,
    check_validation_in_docker,
    check_validation_layer,
    check_vulkan_loader,
    vulkan_instance,
)

# The names importers use (`preflight.X`): each check where it lives, and the gathering below.
__all__ = [
    "FAIL",
    "GDB_CANDIDATES",
    "GDB_PROBE",
    "GLVND",
    "NO_GDB",
    "NVIDIA_OPENCL",
    "OK",
    "RUNNERS",
    "WARN",
    "Finding",
    "Instance",
    "Load",
    "Platform",
    "base",
    "check_disk",
    "check_docker",
    "check_gdb",
    "check_host_icd",
    "check_icd",
    "check_manifest",
    "check_opencl",
    "check_opencl_icd",
    "check_opencl_in_docker",
    "check_same_paths",
    "check_toolchain",
    "check_validation_in_docker",
    "check_validation_layer",
    "check_vulkan_loader",
    "checks",
    "docker",
    "docker_sdk",
    "find_gdb",
    "gather",
    "gather_each",
    "load_library",
    "nvidia_driver",
    "opencl",
    "opencl_platforms",
    "require",
    "run",
    "vulkan",
    "vulkan_instance",
]


def check_icd(name: str, settings: Settings, runner: str, *, severity: str = FAIL) -> list[Finding]:
    """Check one row of icd.TABLE for this runner, without fetching anything: by how it is found, then by its API."""
    label = f"ICD {name}"
    row = icd.row(name)
    if row is None:
        return [Finding(FAIL, label, "unknown ICD", f"choose from {', '.join(icd.names())}")]
    if isinstance(row.find, icd.Planted):
        return [Finding(OK, label, "a deliberate fault: its manifest names a missing library (NOT-EXERCISED)")]
    if runner == "docker":
        return [check_icd_in_image(row)]
    if isinstance(row.find, icd.Machine):  # no loader variable: what the machine's own configuration gives
        return check_host_icd(severity=severity) if row.api == icd.VULKAN else check_opencl(requested=severity == FAIL)
    found = row.find.locate(settings.cache_dir)
    if found is None and isinstance(row.find, icd.Installed):
        where = ", ".join(row.find.globs())
        return [
            Finding(
                severity, label, f"{row.find.missing} (no {row.find.names()}: {where})", row.find.fix, row.find.packages
            )
        ]
    if found is None:  # Pinned: a run fetches it
        return [_swiftshader_fetchable(label, severity)]
    if row.api == icd.OPENCL:
        return check_opencl_icd(label, found, icd.loader_env(row, found), severity=severity)
    return [check_manifest(label, found, severity=severity)]


def checks(
    settings: Settings, *, icds: tuple[str, ...], opencl: bool, runner: str
) -> list[Callable[[], list[Finding]]]:
    """The checks a session with these ICDs, OpenCL cells or not, and this runner needs."""
    if runner not in RUNNERS:
        raise ValueError(f"runner {runner!r} is not one of {RUNNERS} (resolve 'auto' first)")
    todo: list[Callable[[], list[Finding]]] = [lambda: check_disk(settings.cache_dir)]
    # --vk-validation on|sync with a Vulkan cell: the layer must be there, or validation proves nothing (issue 25).
    validate = settings.vk_validation != "off" and any(_api(name) == icd.VULKAN for name in icds)
    if runner == "docker":
        todo.append(lambda: check_docker(settings))
        todo += [partial(check_icd, name, settings, runner) for name in icds]
        if validate:
            todo.append(partial(check_validation_in_docker, settings.vk_validation))
        if opencl:
            todo.append(partial(check_opencl_in_docker, requested=True))
        return todo
    todo.append(check_toolchain)
    if settings.gdb:
        todo.append(partial(check_gdb, FAIL if settings.require_gdb else WARN))
    todo += [partial(check_icd, name, settings, runner) for name in icds]
    if any(_api(name) == icd.VULKAN for name in icds):
        todo.append(check_vulkan_loader)
    if validate:
        todo.append(check_validation_layer)
    if opencl:
        todo.append(partial(check_opencl, requested=True))
    return todo


def _api(name: str) -> str:
    """The API of an ICD; an unknown name (its own check fails) counts as Vulkan, as every name once did."""
    row = icd.row(name)
    return row.api if row is not None else icd.VULKAN


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
        f"{apt_install(packages)}" + ("; then the other fixes above" if any(not f.packages for f in fails) else "")
        if packages
        else "apply the fixes above (python -m mnnrepro doctor explains each)"
    )
    raise EnvironmentProblem("\n".join(lines), hint=hint)
