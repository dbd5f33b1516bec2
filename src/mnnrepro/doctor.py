"""`mnnrepro doctor`: the preflight checks of both runners, explained, each problem with the command that fixes it.

It says which runner can produce a verdict and exits 6 when none can (or when the configured one cannot). The
real-GPU cases met on NVIDIA machines are explained where they are found: a Vulkan manifest whose library lacks
glvnd's libraries (vkCreateInstance -9), an NVIDIA OpenCL driver that no vendor file registers with the ICD
loader MNN opens, no unversioned libvulkan.so (MNN silently uses the CPU). Device names come from the preflight's
own vkCreateInstance; vulkaninfo, when installed, adds its view; nothing is decided on it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from . import fixtures, icd, preflight, source, swiftshader
from .errors import MnnReproError
from .preflight import FAIL, OK, RUNNERS, WARN, Finding
from .runner import HostRunner
from .settings import Settings

__all__ = ["FAIL", "OK", "WARN", "Diagnosis", "Finding", "check", "report"]

Check = Callable[[], list[Finding]]


@dataclass
class Diagnosis:
    sections: list[tuple[str, list[Finding]]]  # (title, findings), printed in this order
    blocking: dict[str, list[Finding]]  # runner -> the failures that stop it; empty: it can produce a verdict
    runner: str  # the runner setting: auto, host or docker
    packages: tuple[str, ...] = ()  # every Debian package a host-runner finding asks for, failures and warnings


def _vulkaninfo(label: str, manifest: Path | None) -> list[Finding]:
    """Device names through one ICD (None: the loader's own choice, as `--icd host`)."""
    exe = shutil.which("vulkaninfo")
    if exe is None:
        return []
    env = {"VK_ICD_FILENAMES": str(manifest), "VK_DRIVER_FILES": str(manifest)} if manifest else {}
    done = HostRunner(kill_grace_s=1.0).run([exe, "--summary"], env=env, timeout_s=20)
    names = [line.split("=", 1)[1].strip() for line in done.output.splitlines() if "deviceName" in line and "=" in line]
    what = f"devices {label} (vulkaninfo)"
    if done.returncode == 0 and names:
        return [Finding(OK, what, ", ".join(dict.fromkeys(names)))]
    tail = [line.strip() for line in done.output.splitlines() if line.strip()]
    return [Finding(WARN, what, (tail[-1] if tail else f"exit status {done.returncode}")[:160])]


def _device_checks(settings: Settings) -> list[Check]:
    """vulkaninfo's view, where it is installed; the preflight's own vkCreateInstance already names devices."""
    if shutil.which("vulkaninfo") is None:
        return []
    todo: list[Check] = []
    lvp = sorted(p for g in icd.LAVAPIPE_GLOBS for p in Path("/").glob(g.lstrip("/")))
    if lvp:
        todo.append(partial(_vulkaninfo, "lavapipe", lvp[0]))
    if swiftshader.manifest_path(settings.cache_dir).is_file():
        todo.append(partial(_vulkaninfo, "swiftshader", swiftshader.manifest_path(settings.cache_dir)))
    todo.append(partial(_vulkaninfo, "host", None))
    return todo


def _gpu_note() -> list[Finding]:
    driver = preflight.nvidia_driver()
    if driver is None:
        return []
    return [
        Finding(
            OK,
            "NVIDIA driver",
            f"{driver} loaded; real-GPU cells (--icd host, opencl) need --runner host: containers get no GPU",
        )
    ]


def _sources(settings: Settings) -> list[Finding]:
    found = []
    for ref in fixtures.load_matrix().refs:
        try:
            tree = source.resolve(
                ref, source=None, cache_dir=settings.cache_dir, git_url=settings.git_url, allow_clone=False
            )
            found.append(Finding(OK, f"MNN source {ref}", tree.describe()))
        except MnnReproError as exc:
            found.append(
                Finding(
                    WARN,
                    f"MNN source {ref}",
                    exc.message,
                    f"python -m mnnrepro source fetch --ref {ref} (or source import --git-dir DIR)",
                )
            )
    return found


def check(settings: Settings) -> Diagnosis:
    """The same checks as a session's preflight, for both runners, plus what only explains (devices, GPUs)."""
    host = preflight.checks(settings, icds=settings.icds, opencl=False, runner="host")
    host.append(partial(preflight.check_opencl, requested=False))  # a warning here: no opencl cell is asked for
    docker = preflight.checks(settings, icds=settings.icds, opencl=False, runner="docker")
    docker.append(partial(preflight.check_opencl_in_docker, requested=False))
    gpu: list[Check] = [_gpu_note]
    if "host" not in settings.icds:  # not asked for: the machine's own drivers are explained, never blocking
        gpu.append(partial(preflight.check_host_icd, severity=WARN))
    gpu += _device_checks(settings)
    results = preflight.gather_each([*host, *docker, *gpu, partial(_sources, settings)])

    def flat(part: list[list[Finding]]) -> list[Finding]:
        return [f for found in part for f in found]

    host_f = flat(results[: len(host)])
    docker_f = flat(results[len(host) : len(host) + len(docker)])
    gpu_f = flat(results[len(host) + len(docker) : -1])
    both = [f for f in host_f if f in docker_f]
    packages = tuple(dict.fromkeys(p for f in host_f + gpu_f if f.status != OK for p in f.packages))
    return Diagnosis(
        sections=[
            ("both runners", both),
            ("docker runner", [f for f in docker_f if f not in both]),
            ("host runner", [f for f in host_f if f not in both]),
            ("real GPUs and devices (information)", gpu_f),
            ("MNN sources", results[-1]),
        ],
        blocking={"host": [f for f in host_f if f.status == FAIL], "docker": [f for f in docker_f if f.status == FAIL]},
        runner=settings.runner,
        packages=packages,
    )


def report(diagnosis: Diagnosis, say: Callable[[str], None] = print) -> int:
    """Print the findings in sections, then which runner can produce a verdict. Exit 6 when none can (or the
    configured runner cannot), else 0."""
    findings = [f for _, part in diagnosis.sections for f in part]
    width = max((len(x.what) for x in findings), default=0)
    for title, part in diagnosis.sections:
        if not part:
            continue
        say(f"{title}:")
        for x in part:
            say(f"[{x.status:>4}] {x.what.ljust(width)}  {x.detail}")
            if x.fix:
                say(f"       {' ' * width}  fix: {x.fix}")
        say("")
    usable = [r for r in RUNNERS if not diagnosis.blocking[r]]
    for r in RUNNERS:
        stops = diagnosis.blocking[r]
        say(
            f"runner {r}: "
            + (
                "can produce a verdict"
                if not stops
                else "cannot produce a verdict: " + ", ".join(f.what for f in stops)
            )
        )
    if diagnosis.packages:
        say(f"every package the host runner asks for: apt-get install {' '.join(diagnosis.packages)}")
    fails = sum(x.status == FAIL for x in findings)
    warns = sum(x.status == WARN for x in findings)
    wanted = diagnosis.runner
    ok = wanted in usable if wanted in RUNNERS else bool(usable)
    verdict = (
        f"runner {wanted} {'can' if ok else 'cannot'} produce a verdict"
        if wanted in RUNNERS
        else f"runner auto: {' and '.join(usable) or 'no runner'} can produce a verdict"
    )
    say(f"\ndoctor: {fails} problem(s), {warns} warning(s); {verdict}")
    return 0 if ok else 6
