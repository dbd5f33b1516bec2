"""Planted faults, for proving that the suite notices them (never a pass when the backend is not active).

plant-crash / plant-hang: the driver crashes (a null write of its own) at sgd_step[0], or hangs at forward[1].

hide-libvulkan: the unversioned ``libvulkan.so`` vanishes for the driver while ``libvulkan.so.1`` stays,
which is exactly what a machine without the loader's dev package looks like (MNN dlopens the unversioned
name). On the host this takes a private mount namespace with an overlay whiteout, so root is needed.
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

from .errors import ConfigError, EnvironmentProblem
from .runner import host_command

KNOWN = ("hide-libvulkan", "plant-crash", "plant-hang")
# Faults the driver plants in itself (native/src/run.cpp, maybePlant): a crash with the bug's signal and stage
# but not its signature, and a hang at a known stage, to prove UNEXPECTED-CRASH and HANG are told apart.
DRIVER_PLANTS = {"plant-crash": "crash@sgd_step:0", "plant-hang": "hang@forward:1"}


def driver_env(faults: tuple[str, ...]) -> dict[str, str]:
    plants = [DRIVER_PLANTS[f] for f in faults if f in DRIVER_PLANTS]
    return {"MNNREPRO_PLANT": plants[0]} if plants else {}


LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")


def validate(faults: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [f for f in faults if f not in KNOWN]
    if unknown:
        raise ConfigError(f"unknown fault(s): {', '.join(unknown)}", hint=f"known: {', '.join(KNOWN)}")
    return faults


def check_can_plant(faults: tuple[str, ...], runner: str) -> None:
    """Before anything is built: a planted fault that this machine cannot plant is an environment problem, not
    a failed cell (hide-libvulkan on the host runner needs root and a private mount namespace; an unprivileged
    container has no CAP_SYS_ADMIN for one)."""
    if "hide-libvulkan" not in faults or runner != "host":
        return
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        raise EnvironmentProblem("the hide-libvulkan fault needs root and unshare(1) on the host runner")
    probe = host_command(
        ["unshare", "--mount", "true"], timeout_s=30, what="probing a private mount namespace", check=False
    )
    if probe.returncode != 0:
        raise EnvironmentProblem(
            "the hide-libvulkan fault needs a private mount namespace, which this machine does not allow "
            f"(unshare --mount: {probe.stderr.strip()[:160]}); a container without CAP_SYS_ADMIN cannot plant it",
            hint="plant it with the Docker runner (--runner docker), or run where unshare --mount works",
        )


def hide_libvulkan(argv: list[str], scratch: Path, runner: str = "host") -> tuple[list[str], dict[str, str]]:
    """Return (argv, extra environment) that run ``argv`` with the unversioned libvulkan.so gone."""
    if runner == "docker":
        # The container is thrown away afterwards: delete the file in it (as root, see docker_runner.AS_ROOT).
        targets = " ".join(shlex.quote(os.path.join(d, "libvulkan.so")) for d in LIB_DIRS)
        return ["sh", "-c", f'rm -f {targets} && exec "$@"', "sh", *argv], {"MNNREPRO_CONTAINER_AS_ROOT": "1"}
    dirs = [d for d in LIB_DIRS if os.path.lexists(os.path.join(d, "libvulkan.so"))]
    if not dirs:
        return argv, {}  # already absent: the fault is the machine's own state
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        raise EnvironmentProblem("the hide-libvulkan fault needs root and unshare(1) on the host runner")
    mounts = []
    for i, d in enumerate(dirs):
        upper, work = scratch / f"upper{i}", scratch / f"work{i}"
        for p in (upper, work):
            if p.exists():
                shutil.rmtree(p)
            p.mkdir(parents=True)
        os.mknod(upper / "libvulkan.so", 0o600 | 0o020000, os.makedev(0, 0))  # an overlay whiteout
        opts = f"lowerdir={d},upperdir={upper},workdir={work}"
        mounts.append(f"mount -t overlay overlay -o {shlex.quote(opts)} {shlex.quote(d)}")
    script = " && ".join(mounts) + ' && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv], {}
