"""`mnnrepro doctor`: the preflight checks of both runners, explained, each problem with the command that fixes it.

It says which runner can produce a verdict, and with which ICD: each one the settings name, and on the host runner
the machine's own Vulkan driver (`--icd host`) too, so a GPU machine without lavapipe, SwiftShader or Docker is
not told that nothing works (issue 22). Exit 6 when no runner can (or when the configured one cannot). The
real-GPU cases met on NVIDIA machines are explained where they are found: a Vulkan manifest whose library lacks
glvnd's libraries (vkCreateInstance -9), an NVIDIA OpenCL driver that no vendor file registers with the ICD
loader MNN opens, no unversioned libvulkan.so (MNN silently uses the CPU). Device names come from the preflight's
own vkCreateInstance; vulkaninfo, when installed, adds its view; nothing is decided on it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial

from . import fixtures, icd, preflight, source
from .errors import MnnReproError
from .preflight import FAIL, OK, RUNNERS, WARN, Finding
from .runner import HostRunner
from .settings import Settings

__all__ = ["FAIL", "OK", "WARN", "Diagnosis", "Finding", "check", "report"]

Check = Callable[[], list[Finding]]


@dataclass
class Diagnosis:
    sections: list[tuple[str, list[Finding]]]  # (title, findings), printed in this order
    blocking: dict[str, list[Finding]]  # runner -> the failures that stop it as configured (its settings' ICDs)
    runner: str  # the runner setting: auto, host or docker
    packages: tuple[str, ...] = ()  # every Debian package a host-runner finding asks for, failures and warnings
    # runner -> the failures that stop it whatever the ICD (toolchain, engine, Vulkan loader, a required gdb)
    common: dict[str, list[Finding]] = field(default_factory=dict)
    # runner -> ICD -> that ICD's failures (empty: it works), for the settings' ICDs and, on the host runner, `host`
    # (the machine's own Vulkan driver, VK_ICD_FILENAMES unset): a GPU machine without lavapipe or SwiftShader
    # gives every verdict with --icd host (issue 22)
    icds: dict[str, dict[str, list[Finding]]] = field(default_factory=dict)
    configured: tuple[str, ...] = ()  # the settings' ICDs

    def working_icds(self, runner: str) -> list[str]:
        return [name for name, fails in self.icds.get(runner, {}).items() if not fails]

    def can_verdict(self, runner: str) -> bool:
        """The runner can produce a verdict: nothing common stops it, and some ICD works (or none is needed)."""
        if self.common.get(runner, self.blocking[runner]):
            return False
        return not self.icds.get(runner) or bool(self.working_icds(runner))


def _vulkaninfo(label: str, env: dict[str, str]) -> list[Finding]:
    """Device names through one ICD, with its loader variables (none: the loader's own choice, as `--icd host`)."""
    exe = shutil.which("vulkaninfo")
    if exe is None:
        return []
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
    for row in icd.TABLE[icd.VULKAN].values():  # each Vulkan ICD that is here now (nothing fetched or written)
        found = row.find.locate(settings.cache_dir)
        if found is not None or isinstance(row.find, icd.Machine):
            todo.append(partial(_vulkaninfo, row.name, icd.loader_env(row, found)))
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


def _candidates(settings: Settings, runner: str) -> tuple[str, ...]:
    """The ICDs doctor tries on a runner: the settings' ones, and on the host runner the machine's own (`host`)."""
    extra = ("host",) if runner == "host" and "host" not in settings.icds else ()
    return (*settings.icds, *extra)


def _validation_checks(settings: Settings, common: dict[str, list[Check]]) -> list[Check]:
    """Khronos' validation layer (issue 25), always shown: with --vk-validation on|sync it blocks like a session's
    preflight (the host runner's layer; the image on the docker runner, which has none yet); otherwise information
    only (status ok, found or not), which never fails doctor or adds to its apt-get line."""
    mode = settings.vk_validation
    if mode == "off":
        return [partial(preflight.check_validation_layer, severity=OK)]
    common["host"].append(preflight.check_validation_layer)
    if any((row := icd.row(name)) is None or row.api == icd.VULKAN for name in settings.icds):
        common["docker"].append(partial(preflight.check_validation_in_docker, mode))
    return []


def check(settings: Settings) -> Diagnosis:
    """The same checks as a session's preflight, for both runners and each ICD, plus what only explains."""
    common: dict[str, list[Check]] = {}
    for r in RUNNERS:
        common[r] = preflight.checks(settings, icds=(), opencl=False, runner=r)
    if _candidates(settings, "host"):
        common["host"].append(preflight.check_vulkan_loader)  # MNN's Vulkan backend, whichever the ICD
    common["host"].append(partial(preflight.check_opencl, requested=False))  # a warning: no opencl cell asked for
    common["docker"].append(partial(preflight.check_opencl_in_docker, requested=False))
    gpu: list[Check] = [_gpu_note, *_device_checks(settings)]
    info = _validation_checks(settings, common)
    per_icd = [(r, name) for r in RUNNERS for name in _candidates(settings, r)]
    icd_checks: list[Check] = [partial(preflight.check_icd, name, settings, r) for r, name in per_icd]
    todo: list[Check] = [*common["host"], *common["docker"], *icd_checks, *gpu, *info, partial(_sources, settings)]
    results = iter(preflight.gather_each(todo))

    def take(n: int) -> list[Finding]:
        return [f for _ in range(n) for f in next(results)]

    common_f = {r: take(len(common[r])) for r in RUNNERS}
    icd_f: dict[str, dict[str, list[Finding]]] = {r: {} for r in RUNNERS}
    for r, name in per_icd:
        icd_f[r][name] = take(1)
    gpu_f = take(len(gpu))
    info_f = take(len(info))
    sources = take(1)
    # An ICD the settings do not name blocks nothing: its failures are shown as warnings (what it lacks).
    extra = [replace(f, status=WARN) if f.status == FAIL else f for f in icd_f["host"].get("host", [])]
    if "host" in settings.icds:
        extra = []
    runner_f = {r: common_f[r] + [f for name in settings.icds for f in icd_f[r][name]] for r in RUNNERS}
    host_f, docker_f = runner_f["host"], runner_f["docker"]
    gpu_f = [*gpu_f[:1], *extra, *gpu_f[1:], *info_f]
    both = [f for f in host_f if f in docker_f]
    packages = tuple(dict.fromkeys(p for f in host_f + gpu_f if f.status != OK for p in f.packages))
    return Diagnosis(
        sections=[
            ("both runners", both),
            ("docker runner", [f for f in docker_f if f not in both]),
            ("host runner", [f for f in host_f if f not in both]),
            ("real GPUs and devices (information)", gpu_f),
            ("MNN sources", sources),
        ],
        blocking={r: [f for f in runner_f[r] if f.status == FAIL] for r in RUNNERS},
        runner=settings.runner,
        packages=packages,
        common={r: [f for f in common_f[r] if f.status == FAIL] for r in RUNNERS},
        icds={r: {n: [f for f in found if f.status == FAIL] for n, found in icd_f[r].items()} for r in RUNNERS},
        configured=settings.icds,
    )


def _runner_lines(diagnosis: Diagnosis, runner: str) -> list[str]:
    """Whether the runner can produce a verdict, and with which ICDs (each one: works, or what stops it)."""
    common = diagnosis.common.get(runner, diagnosis.blocking[runner])
    working = diagnosis.working_icds(runner)
    if common:
        head = "cannot produce a verdict: " + ", ".join(f.what for f in common)
    elif not diagnosis.can_verdict(runner):
        head = "cannot produce a verdict: no ICD works"
    elif diagnosis.blocking[runner] and working:  # the settings' ICDs do not all work, another does
        head = (
            f"can produce a verdict with --icd {','.join(working)} (not as configured: "
            + ", ".join(f.what for f in diagnosis.blocking[runner])
            + ")"
        )
    else:
        head = "can produce a verdict"
    lines = [f"runner {runner}: {head}"]
    for name, fails in diagnosis.icds.get(runner, {}).items():
        how = "works" if not fails else "does not work: " + "; ".join(f"{f.what}: {f.detail}"[:200] for f in fails)
        asked = "" if name in diagnosis.configured else " (not in the settings' ICDs)"
        lines.append(f"  ICD {name}{asked}: {how}")
    return lines


def report(diagnosis: Diagnosis, say: Callable[[str], None] = print) -> int:
    """Print the findings in sections, then which runner can produce a verdict, with which ICDs. Exit 6 when none
    can (or the configured runner cannot), else 0."""
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
    usable = [r for r in RUNNERS if diagnosis.can_verdict(r)]
    for r in RUNNERS:
        for line in _runner_lines(diagnosis, r):
            say(line)
    if diagnosis.packages:
        say(f"every package the host runner asks for: apt-get install {' '.join(diagnosis.packages)}")
    fails = sum(x.status == FAIL for x in findings)
    warns = sum(x.status == WARN for x in findings)
    wanted = diagnosis.runner
    ok = wanted in usable if wanted in RUNNERS else bool(usable)

    def named(r: str) -> str:
        icds = diagnosis.working_icds(r)
        return f"{r} (with --icd {','.join(icds)})" if diagnosis.blocking[r] and icds else r

    verdict = (
        f"runner {named(wanted) if ok else wanted} {'can' if ok else 'cannot'} produce a verdict"
        if wanted in RUNNERS
        else f"runner auto: {' and '.join(named(r) for r in usable) or 'no runner'} can produce a verdict"
    )
    say(f"\ndoctor: {fails} problem(s), {warns} warning(s); {verdict}")
    return 0 if ok else 6
